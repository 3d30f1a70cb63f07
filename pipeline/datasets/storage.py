"""Atomic outputs: whole prepared directories, JSON files and streamed int16 arrays; and
the checked opening of a prepared pixel array (numpy and the standard library only)."""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import glob
import hashlib
import json
import os
import shutil
import tempfile

import numpy as np

from ..errors import UserError

CHUNK = 1 << 22  # samples per copy chunk: bounds memory whatever the corpus size


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


class BadArray(UserError):
    """A prepared array that does not hold what its manifest says."""


def open_pixels(path, sequences=None, steps=None) -> np.ndarray:
    """A split of binary images, memory-mapped and checked before anything reads it: an
    integer (sequences, steps) array of 0/1 values, as its manifest says (None: not
    checked). A 2 or 255 would index past the model's two classes, a 0.5 would round to
    0, and a short row would train silently: each is one line naming the file instead."""
    fix = "rerun the prepare stage that wrote it"
    try:
        a = np.load(path, mmap_mode="r")
    except FileNotFoundError:
        raise BadArray(f"{path} is missing: {fix}") from None
    except (ValueError, OSError, EOFError) as e:  # object dtype, not an .npy, cut short
        raise BadArray(f"{path} is not a plain .npy array ({' '.join(str(e).split())}): {fix}") from None
    if a.dtype.kind not in "biu":
        raise BadArray(f"{path}: dtype {a.dtype}, expected uint8 0/1 pixels: {fix}")
    if (a.ndim != 2 or (sequences is not None and a.shape[0] != sequences)
            or (steps is not None and a.shape[1] != steps)):
        want = (sequences if sequences is not None else "N", steps if steps is not None else "steps")
        raise BadArray(f"{path}: shape {a.shape}, but manifest.json says ({want[0]}, {want[1]}): {fix}")
    if a.size and (a.max() > 1 or a.min() < 0):
        i, j = np.argwhere((a > 1) | (a < 0))[0]  # the first bad pixel, in raster order
        raise BadArray(f"{path}: image {i} pixel {j} is {a[i, j]}, expected 0 or 1: {fix}")
    return a


def write_json(path, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def save_npy(path, array) -> None:
    tmp = f"{path}.tmp{os.getpid()}.npy"
    np.save(tmp, array)
    os.replace(tmp, path)


@functools.cache
def _renameat2():
    """libc's renameat2 (Linux, glibc 2.28+), or None."""
    try:
        fn = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def exchange(a, b) -> bool:
    """Swap two existing paths in one step (renameat2 with RENAME_EXCHANGE): every reader
    sees one or the other, never neither. False where the system or filesystem cannot."""
    fn = _renameat2()
    if fn is None:
        return False
    at_cwd, rename_exchange = -100, 2
    if fn(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(a), None, os.fspath(b))


@contextlib.contextmanager
def atomic_dir(out):
    """Build a folder beside `out` (hidden name, so nothing else picks it up) and swap it in
    whole when the block succeeds. A kill at any point leaves either the old folder or the
    new one at `out`, plus at most a hidden leftover that the next call removes. The swap is
    one rename-exchange on Linux; elsewhere (or on a filesystem without it) it takes two
    renames, and a kill between them leaves the old folder under a hidden name, which the
    next call puts back before anything else."""
    out = os.path.abspath(out)
    parent, name = os.path.split(out)
    os.makedirs(parent, exist_ok=True)
    leftovers = glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.*"))
    old = [p for p in leftovers if os.path.basename(p).startswith(f".{name}.old.")]
    if old and not os.path.exists(out):
        os.replace(old[0], out)  # a two-rename swap killed halfway: the old folder is whole
    for stale in glob.glob(os.path.join(glob.escape(parent), f".{glob.escape(name)}.*")):
        shutil.rmtree(stale, ignore_errors=True)  # leftovers of killed runs
    tmp = tempfile.mkdtemp(prefix=f".{name}.new.", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)  # mkdtemp's 0o700 would follow the folder into DVC's cache
        if os.path.exists(out) and exchange(tmp, out):
            pass  # tmp now holds the old folder, removed below
        elif os.path.exists(out):
            old = os.path.join(parent, f".{name}.old.{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class Int16Stream:
    """Append int16 audio to a raw temp file; later turn it into .npy arrays chunk by chunk.

    Keeps memory bounded: nothing but the current utterance is ever in RAM.
    """

    def __init__(self, workdir, name):
        self.path = os.path.join(workdir, f"{name}.raw")
        self._f = open(self.path, "wb")
        self.samples = 0

    def append(self, pcm: np.ndarray) -> None:
        pcm = np.ascontiguousarray(pcm, dtype=np.int16)
        self._f.write(pcm.tobytes())
        self.samples += len(pcm)

    def rollback(self, samples: int) -> None:
        """Forget everything appended after the first `samples` samples."""
        self._f.flush()
        self._f.truncate(samples * 2)
        self._f.seek(samples * 2)
        self.samples = samples

    def close(self) -> np.memmap:
        self._f.close()
        if self.samples == 0:
            return np.zeros(0, np.int16)
        return np.memmap(self.path, dtype=np.int16, mode="r", shape=(self.samples,))

    def discard(self) -> None:
        if not self._f.closed:
            self._f.close()
        if os.path.exists(self.path):
            os.remove(self.path)


def copy_frames(raw: np.ndarray, out_path, frame_size: int) -> int:
    """Write raw[: F*frame_size] as an (F, frame_size) int16 .npy; returns F."""
    n_frames = len(raw) // frame_size
    tmp = f"{out_path}.tmp{os.getpid()}.npy"
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(n_frames, frame_size))
    flat = dst.reshape(-1)
    for a in range(0, n_frames * frame_size, CHUNK):
        b = min(a + CHUNK, n_frames * frame_size)
        flat[a:b] = raw[a:b]
    dst.flush()
    del dst, flat
    os.replace(tmp, out_path)
    return n_frames


def moments(arr: np.ndarray) -> tuple[float, float, int]:
    """Global mean and std of an int16 array of any size, accumulated in float64 chunks."""
    flat = arr.reshape(-1)
    s = ss = 0.0
    for a in range(0, len(flat), CHUNK):
        c = np.asarray(flat[a:a + CHUNK], dtype=np.float64)
        s += c.sum()
        ss += np.dot(c, c)
    n = len(flat)
    if n == 0:
        raise ValueError("no training audio to compute statistics from")
    mean = s / n
    return float(mean), float(np.sqrt(max(ss / n - mean * mean, 0.0))), n
