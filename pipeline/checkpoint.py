"""Atomic checkpoint files that load without unpickling arbitrary objects.

save_atomic writes to a temporary file in the same folder, fsyncs it and renames it over
the target, so a crash leaves either the old checkpoint or the new one, never half of one.
load uses torch.load(weights_only=True): tensors, dicts, lists, tuples and plain values only.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch


def save_atomic(obj, path, reproducible: bool = False) -> Path:
    """reproducible=True writes PyTorch's legacy format, which (unlike the zip format with
    its random serialization id) gives identical bytes for identical tensors: used for
    pipeline outputs whose hashes DVC records."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f, _use_new_zipfile_serialization=not reproducible)
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
