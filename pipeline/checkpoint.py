"""Atomic checkpoint files that load without unpickling arbitrary objects.

save_atomic writes to a temporary file in the same folder, fsyncs it and renames it over
the target, so a crash leaves either the old checkpoint or the new one, never half of one.
load uses torch.load(weights_only=True): tensors, dicts, lists, tuples and plain values only.
Training checkpoints use torch's format; pipeline outputs whose hashes DVC records use
save_npz, whose bytes depend only on the arrays (torch.save stamps a random id).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_atomic(obj, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load(path, map_location="cpu"):
    path = Path(path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # truncated or foreign file: say which one
        raise RuntimeError(f"cannot read checkpoint {path}: {err}. Delete it to start over.") from err


def _stable_npz_bytes(arrays: dict) -> bytes:
    """An .npz whose bytes depend only on the arrays (np.savez stamps the current time)."""
    import io
    import zipfile

    import numpy as np
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            item = io.BytesIO()
            np.save(item, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            zf.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)), item.getvalue())
    return buf.getvalue()


def write_bytes_atomic(data: bytes, path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    with np.load(path, allow_pickle=False) as z:
        return {k: torch.from_numpy(z[k].copy()) for k in z.files}
