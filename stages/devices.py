"""Which device a stage runs on; `auto` claims a free GPU so parallel stages spread out.

`dvc queue start -j N` runs N experiments at once, and each stage would otherwise land on
cuda:0. With device `auto` a stage takes the first GPU nobody holds: it locks
<lock dir>/gpu-<id>.lock with fcntl.flock (exclusive, non-blocking) and keeps the file
open for the rest of its life. The kernel drops the lock when the process ends, however
it ends (kill -9 included), so a dead stage never keeps a GPU. While every GPU is held
the stage waits for one; without a GPU it runs on CPU and says so in one line.

A flock lives on the file, not on its name: once a tmp cleaner (or rm -rf) removes the
lock file or its folder, the next stage would create a new file and lock it too. So on
Linux a claim also binds an abstract unix socket named after the lock folder and the GPU:
it has no file to delete, and the kernel frees it, like the flock, when its holder ends.
A stage claims a GPU only when it gets both. (Abstract sockets are per network namespace:
containers sharing one lock folder still rely on the flock alone.)

The lock dir is $ZF_GPU_LOCK_DIR or /tmp/zforcing-gpus: one per machine, shared by every
worker. GPU ids follow CUDA_VISIBLE_DEVICES when it is set, so workers shown different
subsets still lock the same physical GPU under the same name.
Data-parallel ranks (under torchrun) use cuda:LOCAL_RANK: the stage that launches them
claims one GPU per rank and hands them over in CUDA_VISIBLE_DEVICES.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import socket
import sys
import time
from pathlib import Path

from pipeline.errors import UserError
from pipeline.gpus import visible_gpus

LOCK_DIR_ENV = "ZF_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = "/tmp/zforcing-gpus"
POLL_S = 5.0

# lock file -> open descriptors (the file's, the socket's): the claim lasts while they are open
_held: dict[str, tuple[int, ...]] = {}


class DeviceError(UserError):
    """A device setting this machine or this launch cannot honour."""


def lock_dir() -> Path:
    return Path(os.environ.get(LOCK_DIR_ENV) or DEFAULT_LOCK_DIR)


def gpu_names(n_devices: int) -> list[str]:
    """Stable names of the n visible GPUs: CUDA_VISIBLE_DEVICES entries, else indices."""
    visible = visible_gpus() or []
    return visible[:n_devices] if len(visible) >= n_devices else [str(i) for i in range(n_devices)]


def _lock_path(folder: Path, name: str) -> Path:
    return folder / f"gpu-{name.replace('/', '_')}.lock"


def _open_dir(folder: Path) -> Path:
    if not folder.is_dir():
        folder.mkdir(parents=True, exist_ok=True)
        try:  # every user's stages share the machine's GPUs, hence its lock folder
            os.chmod(folder, 0o1777)
        except PermissionError:
            pass
    return folder


def _open_lock(path: Path) -> int:
    try:
        try:
            return os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
        except FileNotFoundError:  # the folder was removed since we looked: make it again
            return os.open(_open_dir(path.parent) / path.name, os.O_RDONLY | os.O_CREAT, 0o666)
    except PermissionError:
        raise DeviceError(f"cannot open GPU lock {path}: set {LOCK_DIR_ENV} to a folder every "
                          f"stage on this machine can write") from None


def _bind_guard(path: Path) -> tuple[int, ...] | None:
    """The descriptor of the abstract socket that guards `path`'s GPU (none where there are
    no abstract sockets), or None when another process holds it."""
    if not sys.platform.startswith("linux"):
        return ()
    key = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(f"\0zforcing-gpu-{key}")
    except OSError as err:
        sock.close()
        if err.errno == errno.EADDRINUSE:  # bound by a live holder
            return None
        raise
    return (sock.detach(),)


def _try_lock(path: Path) -> bool:
    fd = _open_lock(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    guard = _bind_guard(path)
    if guard is None:  # the file is new but the GPU is not free: its old file was removed
        os.close(fd)
        return False
    _held[str(path)] = (fd, *guard)
    return True


def release(path) -> None:
    for fd in _held.pop(str(path), ()):
        os.close(fd)  # closing the only descriptors drops the flock and frees the socket's name


def claim_gpus(count: int, n_devices: int, folder, names: list[str] | None = None) -> list[int] | None:
    """Lock `count` of the n GPUs nobody holds; their indices, or None (nothing kept) when
    fewer are free."""
    folder = _open_dir(Path(folder))
    names = names or [str(i) for i in range(n_devices)]
    got = []
    for i in range(n_devices):
        if len(got) == count:
            break
        if _try_lock(_lock_path(folder, names[i])):
            got.append(i)
    if len(got) < count:
        for i in got:
            release(_lock_path(folder, names[i]))
        return None
    return got


def claim_gpu(n_devices: int, folder, names: list[str] | None = None) -> int | None:
    """The index of a GPU now held by this process, or None when all n are held."""
    got = claim_gpus(1, n_devices, folder, names)
    return got[0] if got else None


def wait_for_gpus(count: int, n_devices: int, folder=None, names=None, poll: float = POLL_S) -> list[int]:
    """claim_gpus, retried every `poll` seconds until enough GPUs are free."""
    folder = Path(folder or lock_dir())
    said = False
    while True:
        got = claim_gpus(count, n_devices, folder, names)
        if got is not None:
            return got
        if not said:
            print(f"waiting for {count} of {n_devices} GPUs: all held by other stages "
                  f"(locks in {folder})", file=sys.stderr, flush=True)
            said = True
        time.sleep(poll)


def _ranked() -> int | None:
    """LOCAL_RANK of a data-parallel rank started by torchrun, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def resolve(device: str) -> str:
    """The torch device for a stage's device setting: auto | cpu | cuda | cuda:N."""
    import torch
    rank = _ranked()
    if rank is not None:
        if device.startswith("cuda:"):
            raise DeviceError(f"device {device!r} pins every data-parallel process to one GPU; "
                              "use auto or cuda with train.nproc > 1")
        if device in ("auto", "cuda") and torch.cuda.is_available():
            return f"cuda:{rank}"
        return "cpu"
    if device != "auto":
        return device
    if not torch.cuda.is_available():
        print("device auto: no CUDA GPU here, running on CPU", file=sys.stderr, flush=True)
        return "cpu"
    n = torch.cuda.device_count()
    return f"cuda:{wait_for_gpus(1, n, names=gpu_names(n))[0]}"


def claim_for_ranks(device: str, nproc: int) -> dict[str, str]:
    """Environment for `nproc` data-parallel ranks launched from this process: with GPUs,
    `auto` claims nproc of them (held until this process and its children end) and shows
    only those to the ranks; `cuda` gives the ranks the first nproc visible GPUs."""
    import torch
    if device.startswith("cuda:"):
        raise DeviceError(f"train.device={device!r} pins every process to one GPU; use auto or "
                          f"cuda with train.nproc={nproc}")
    if device == "cpu" or not torch.cuda.is_available():
        if device == "auto":
            print(f"device auto: no CUDA GPU here, {nproc} processes on CPU", file=sys.stderr, flush=True)
        return {}
    n = torch.cuda.device_count()
    if nproc > n:
        raise DeviceError(f"train.nproc={nproc} but this machine shows {n} GPUs; lower train.nproc "
                          "or set train.device: cpu")
    if device == "cuda":
        return {}
    names = gpu_names(n)
    got = wait_for_gpus(nproc, n, names=names)
    for fds in _held.values():  # torchrun, which this process becomes by exec, keeps them
        for fd in fds:
            os.set_inheritable(fd, True)
    return {"CUDA_VISIBLE_DEVICES": ",".join(names[i] for i in got)}
