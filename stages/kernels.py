"""Pin the CPU kernels of every stage, so results are byte-identical across x86-64 CPUs.

torch's own kernels (ATen), MKL (the BLAS behind nn.Linear), oneDNN (behind nn.LSTM),
numpy and OpenBLAS each pick kernels at run time from the instruction set they find.
AVX-512 and AVX2 kernels sum in different orders, and training amplifies the last-bit
differences, so a model trained on an AVX-512 machine did not match one trained on an
AVX2-only machine. Each library has its own switch, an environment variable it reads once,
when it is loaded (numpy, OpenBLAS) or first computes (torch, MKL, oneDNN): `pin_cpu_kernels`
sets them all before torch or numpy is imported; `pinned_torch_setup` then fixes the thread
count and returns what is in effect.
tests/test_kernel_pinning.py shows that each switch it can move on an AVX2 machine changes
the bytes, and that with the pins the bytes no longer depend on the outer environment.

The pins cost time (MKL's reproducible mode above all; BENCHMARKS.md), so they are a
parameter, `numerics`: `exact` keeps them, `fast` hands every switch back to the outer
environment (`set_numerics`, called by the training and evaluation stages once they have
read params.yaml and before they import torch).
"""
from __future__ import annotations

import logging
import os
import sys

from pipeline.errors import UserError

log = logging.getLogger(__name__)

PINS = {
    # torch's vectorised kernels: the AVX2 build even where AVX-512 is there; torch takes the
    # lower of this and what the CPU has
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL's reproducible mode (fixed code branch, deterministic reductions). COMPATIBLE is the
    # only branch MKL honours on non-Intel CPUs: there "AVX2" silently becomes AUTO (this
    # AMD machine's MKL_VERBOSE says CNR:AUTO), which is not the branch an Intel CPU runs
    "MKL_CBWR": "COMPATIBLE",
    # anything MKL runs outside reproducible mode: no AVX-512 (no effect seen on this AMD CPU)
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    # MKL's reproducibility conditions: exactly the threads it is given, on every machine
    "MKL_DYNAMIC": "FALSE",
    "OMP_DYNAMIC": "FALSE",
    # oneDNN (nn.LSTM): at most AVX2 JIT kernels; DNNL_ is the older name of the same switch
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "DNNL_MAX_CPU_ISA": "AVX2",
    # numpy's AVX-512 loops: some (float32 exp, ...) round differently at each ISA level;
    # numpy accepts names the CPU lacks
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR",
}
# OpenBLAS (numpy's BLAS) runs a forced core type without checking the CPU has it, so this
# one is pinned only where AVX2 is known to be there; AMD Zen already runs these kernels
OPENBLAS_PIN = ("OPENBLAS_CORETYPE", "Haswell")


def cpu_has_avx2() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " avx2" in line for line in f)
    except OSError:
        return False


def pin_cpu_kernels(environ=os.environ) -> dict:
    """Set the kernel switches in `environ`; call before torch or numpy is imported.

    Pinned values replace any the outer environment had (a user's ATEN_CPU_CAPABILITY=default
    would change results); each replaced value is logged and returned under "replaced".
    Returns {"env": {variable: value}, "replaced": {variable: outer value},
    "outer": {variable: outer value or None}, "imported_before": [libraries already loaded,
    whose switches may have come too late]}.
    """
    pins = dict(PINS)
    before = {k: environ.get(k) for k in pins}
    # OPENBLAS_PIN stays out: some machines set OPENBLAS_CORETYPE themselves to keep an older
    # OpenBLAS off kernels that crash there, and the trained bytes never go through numpy's
    # BLAS (torch uses MKL and oneDNN); the prepared data reproduced across CPUs without it
    replaced = {k: environ[k] for k, v in pins.items() if k in environ and environ[k] != v}
    environ.update(pins)
    for k, outer in sorted(replaced.items()):
        log.warning("kernel pinning: %s=%s replaces %r from the environment", k, pins[k], outer)
    early = sorted(m for m in ("torch", "numpy") if m in sys.modules)
    if early and not environ.get("ZF_PREFORKED"):  # a fork server's child: loaded under these pins
        log.warning("kernel pinning: %s already imported; its kernels may be chosen already",
                    ", ".join(early))
    return {"env": pins, "replaced": replaced, "outer": before, "imported_before": early}


NUMERICS = ("exact", "fast")


def set_numerics(mode, pinned: dict, environ=os.environ) -> str:
    """Keep the pins (`exact`) or undo them (`fast`): every pinned variable gets back the
    value the outer environment had, or is removed. `pinned` is what pin_cpu_kernels
    returned. Call before torch is imported: torch reads the switches once, when loaded."""
    if mode not in NUMERICS:
        raise UserError(f"numerics={mode!r} in params.yaml: expected one of {', '.join(NUMERICS)}")
    if mode == "fast":
        for k, value in pinned["outer"].items():
            if value is None:
                environ.pop(k, None)
            else:
                environ[k] = value
        if "torch" in sys.modules and not environ.get("ZF_PREFORKED"):
            log.warning("numerics=fast: torch already imported; its kernels may stay pinned")
    return mode


def _library_versions(config: str) -> dict:
    """MKL and oneDNN versions from torch.__config__.show() (torch exposes no other way)."""
    out = {}
    for line in config.splitlines():
        line = line.strip(" -")
        if "Math Kernel Library Version" in line:
            out["mkl_version"] = line.split("Version", 1)[1].strip()
        elif line.startswith("Intel(R) MKL-DNN"):
            out["onednn_version"] = line.split("MKL-DNN", 1)[1].strip()
    return out


def pinned_torch_setup(threads: int) -> dict:
    """After importing torch: fix the thread count; return the settings in effect.

    The result is the same on every AVX2 or AVX-512 machine (same wheels, same `threads`),
    so a stage may write it into its outputs without breaking their reproducibility.
    """
    import torch
    threads = max(1, int(threads))
    torch.set_num_threads(threads)  # also MKL's and OpenMP's count
    try:  # inter-op threads never change a result; set for a fixed load, not reported
        torch.set_num_interop_threads(threads)
    except RuntimeError:  # only allowed before the first inter-op work
        pass
    # fp32 matmuls in full precision whatever the CPU offers (no bf16/tf32 shortcuts)
    torch.set_float32_matmul_precision("highest")
    return {"torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(),
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
            # left as it is: on CPU it changed no byte here, and on CUDA it needs more setup
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "mkl_available": torch.backends.mkl.is_available(),
            "onednn_enabled": (torch.backends.mkldnn.is_available()
                               and torch.backends.mkldnn.enabled),
            **_library_versions(torch.__config__.show()),
            "env": {k: os.environ.get(k) for k in (*PINS, OPENBLAS_PIN[0])}}
