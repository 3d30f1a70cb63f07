"""Atomic checkpoint files that load without unpickling arbitrary objects.

save_atomic writes to a temporary file in the same folder, fsyncs it and renames it over
the target, so a crash leaves either the old checkpoint or the new one, never half of one;
the temporaries of writers killed mid-write are removed by the next write to that path.
load first checks every record's CRC with the standard zipfile module (torch's reader does
not, so flipped bytes would load silently), then uses torch.load(weights_only=True):
tensors, dicts, lists, tuples and plain values only, so a pickled payload is refused
without running. Training checkpoints use torch's format; pipeline outputs whose hashes
DVC records use save_npz, whose bytes depend only on the arrays (torch.save stamps a
random id). fingerprint/check_fingerprint tell a checkpoint of this run from another's;
resume_key names the folder a run checkpoints into, from its settings and its data's bytes.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import pickle
import tempfile
import time
import zipfile
from dataclasses import asdict, is_dataclass
from pathlib import Path

import torch

from .errors import UserError


class BadCheckpoint(UserError):
    """A checkpoint or array file that is truncated, corrupt or holds foreign objects."""


class CheckpointMismatch(UserError):
    """A checkpoint written by a run with other settings or another model."""


def _remove_stale_temps(path: Path, before_ns: int) -> None:
    """Delete `<name>.*.tmp` siblings last written before `before_ns`: leftovers of writers
    killed between mkstemp and rename. Only this file's own pattern is touched."""
    for tmp in path.parent.glob(glob.escape(path.name) + ".*.tmp"):
        try:
            if tmp.is_file() and tmp.stat().st_mtime_ns < before_ns:
                tmp.unlink()
        except FileNotFoundError:  # another process removed it first
            pass


def _write_atomic(path, write) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path, time.time_ns())
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save_atomic(obj, path) -> Path:
    return _write_atomic(path, lambda f: torch.save(obj, f))


def write_bytes_atomic(data: bytes, path) -> Path:
    return _write_atomic(path, lambda f: f.write(data))


def _check_zip(path: Path, fix: str) -> None:
    """Both formats are zip archives with a CRC per record: a truncated, foreign or
    bit-flipped file fails here, before any of its content is interpreted."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
    except (zipfile.BadZipFile, EOFError) as err:
        raise BadCheckpoint(f"{path} is truncated or not written by this pipeline; {fix}") from err
    if bad is not None:
        raise BadCheckpoint(f"{path} is corrupt (record {bad} fails its checksum); {fix}")


def _reason(err: Exception) -> str:
    """The first line of a loader's error, unless it is torch's advice to unpickle anyway."""
    line = (str(err).strip().splitlines() or [""])[0][:200]
    return type(err).__name__ if "weights_only" in line or not line else f"{type(err).__name__}: {line}"


def load(path, map_location="cpu"):
    path = Path(path)
    fix = "delete it to start over"
    _check_zip(path, fix)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        # `from None`: torch's message suggests weights_only=False, i.e. running the payload
        raise BadCheckpoint(f"{path} holds objects other than tensors and plain values, which "
                            f"are never loaded (nothing in it was run); {fix}") from None
    except Exception as err:
        raise BadCheckpoint(f"cannot read checkpoint {path} ({_reason(err)}); {fix}") from None


def _stable_npz_bytes(arrays: dict) -> bytes:
    """An .npz whose bytes depend only on the arrays (np.savez stamps the current time)."""
    import io

    import numpy as np
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            item = io.BytesIO()
            np.save(item, np.asarray(arrays[name], order="C"), allow_pickle=False)  # keeps 0-d scalars 0-d
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), item.getvalue())
    return buf.getvalue()


def save_npz(arrays: dict, path) -> Path:
    """Reproducible, pickle-free array file (final models, generated samples): identical
    arrays give identical bytes, so DVC's recorded hashes reproduce."""
    import numpy as np
    out = {k: (v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v))
           for k, v in arrays.items()}
    return write_bytes_atomic(_stable_npz_bytes(out), path)


def load_npz(path) -> dict:
    """Arrays of a file written by save_npz, as torch tensors (no pickle involved)."""
    import numpy as np
    path = Path(path)
    fix = "delete it and rerun the stage that wrote it"
    _check_zip(path, fix)  # a zip, so np.load below reads it as .npz, never as a pickle
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: torch.from_numpy(z[k].copy()) for k in z.files}
    except (ValueError, EOFError, MemoryError, zipfile.BadZipFile) as err:  # object arrays, bad headers
        raise BadCheckpoint(f"{path} is not an array file written by this pipeline "
                            f"({_reason(err)}); {fix}") from None


def fingerprint(model, train_config) -> dict:
    """What must match for a checkpoint to continue this run: the training settings, the
    model's class and config, and every tensor's name, dtype and shape."""
    mcfg = getattr(model, "cfg", None)
    return {"model_class": type(model).__name__,
            "model_config": asdict(mcfg) if is_dataclass(mcfg) else None,
            "tensors": {k: f"{v.dtype}{list(v.shape)}" for k, v in model.state_dict().items()},
            "train_config": asdict(train_config)}


def _flatten(d: dict, prefix: str = ""):
    for key, value in d.items():
        if isinstance(value, dict) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


_ABSENT = object()


def check_fingerprint(saved: dict | None, current: dict, path) -> None:
    """Raise CheckpointMismatch naming the first field where the checkpoint's run differs."""
    fix = "delete it or pass another ckpt_path"
    if not isinstance(saved, dict):
        raise CheckpointMismatch(f"{path} has no run fingerprint (written by an older version "
                                 f"of the pipeline); {fix}")
    old, new = dict(_flatten(saved)), dict(_flatten(current))
    for key in [*new, *(k for k in old if k not in new)]:
        a, b = old.get(key, _ABSENT), new.get(key, _ABSENT)
        if a != b and repr(a) != repr(b):  # repr: a NaN in `extra` equals itself
            show = lambda v: "absent" if v is _ABSENT else repr(v)  # noqa: E731
            raise CheckpointMismatch(f"{path} was written by another run ({key} is {show(a)} "
                                     f"there, {show(b)} now); {fix}")


def folder_digest(folder) -> str:
    """sha256 over every file under `folder`: its relative path, then its bytes, in sorted
    order. A prepared dataset's content, whatever its manifest says."""
    root, h = Path(folder), hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(p.relative_to(root).as_posix().encode() + b"\0")
        with open(p, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def resume_key(settings: dict, data) -> str:
    """16 hex digits naming a run's checkpoint folder: its settings (JSON-able) and the
    content of its data folder, so a run on other arrays never resumes this checkpoint,
    even when their manifest.json is the same."""
    blob = json.dumps({"settings": settings, "data": folder_digest(data)}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
