"""Keep freed CPU memory inside the process (glibc's malloc), for training and evaluation.

A step loop allocates and frees tensors of megabytes at every step. glibc serves
allocations above its mmap threshold with fresh pages and gives them back to the kernel
when freed, so each step pays page faults again: on the project's 2-core box 40 % of a
whole-utterance IWAE-25 evaluation's time was kernel time, and a TIMIT-size training
update took 41,000 page faults. Raising the mmap threshold (to glibc's 64-bit ceiling,
32 MiB) and the trim threshold lets freed blocks be reused, and growing the heap 64 MiB at
a time takes the update's faults to none (BENCHMARKS.md, "Page faults"). Numbers are
unchanged (torch aligns every block alike); the process keeps its peak memory mapped.
Standard library only; a no-op (False) where the C library is not glibc.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1     # mallopt parameters, from glibc's malloc.h
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20   # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
TRIM_THRESHOLD = 2**31 - 1        # an int: freed heap is (in practice) never trimmed
TOP_PAD = 64 * 2**20              # heap growth per request: 2^26 and 2^29 alike left no faults


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds and its heap padding for this process; True
    when all three were set."""
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all([mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX) == 1,
                mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1, mallopt(M_TOP_PAD, TOP_PAD) == 1])
