"""The environment a benchmark's child process starts with: the stages' kernel pins
(`numerics: exact`) or none of them (`fast`). For the parent only: the pins are read when
torch loads, so each setting needs a process of its own, and importing `stages` pins the
importing process itself."""
from __future__ import annotations

import os


def child_env(pinned: bool) -> dict:
    """os.environ without any of the pins, then with all of them if `pinned`."""
    from stages.kernels import PINS, pin_cpu_kernels
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    if pinned:
        pin_cpu_kernels(env)
    return env
