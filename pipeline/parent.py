"""Die with the parent process: the kernel's parent-death signal (Linux), armed race-free.

Three kinds of process here must not outlive the one that started them: torchrun's ranks
(pipeline/distributed.py), the runner's guard around each stage (runner/guard.py) and each
worker's fork server (stages/prefork.py). Standard library only.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent(parent: int, sig: int = signal.SIGKILL) -> bool:
    """Ask for `sig` when the parent dies; False if `parent` is already gone (the kernel
    only signals deaths that come after the request, so the caller must then stop itself).
    The signal follows the death of the thread that started this process, not of its whole
    process: start such processes from a thread that lives as long as they must."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
    return os.getppid() == parent
