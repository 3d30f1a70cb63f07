"""The CPU a benchmark ran on, from /proc/cpuinfo (its first processor), for its output lines."""
from __future__ import annotations

import platform


def cpu_info() -> dict:
    """The first processor's fields of /proc/cpuinfo; empty where there is none."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_model() -> str:
    """The CPU's model name, or what the platform module knows."""
    return cpu_info().get("model name") or platform.processor() or platform.machine()


def cpu_name() -> str:
    """Vendor, model name and widest vector ISA: two machines whose hashes are compared
    are named by this."""
    info = cpu_info()
    flags = info.get("flags", "").split()
    isa = next((i for i in ("amx_tile", "avx512f", "avx2") if i in flags), "no AVX2")
    return f"{info.get('vendor_id')} {cpu_model()} ({isa})"
