"""What every stage script shares: one-line user errors, thread and device setup, atomic
outputs. Stages run from the repository root as `python -m stages.<name>`; nothing under
pipeline/ reads params.yaml (stages/params.py translates it)."""
from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError


class StageError(UserError):
    """A user-facing problem found by a stage itself."""


def setup_torch(threads: int, device: str = "auto"):
    """Fix the thread count (results depend on it) and pick the device: `auto` claims a
    free GPU for this stage's lifetime, or falls back to CPU (stages/devices.py)."""
    import torch

    from stages import devices
    from stages.kernels import pinned_torch_setup
    pinned_torch_setup(threads)  # thread count, full-precision fp32 matmuls; kernels pinned at import
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise StageError(f"device {device!r} asked for, but CUDA is not available; "
                         "set train.device / eval.device to auto or cpu")
    dev = torch.device(devices.resolve(device))
    if dev.type == "cuda":
        torch.cuda.set_device(dev)  # kernels and NCCL of this process go to the claimed GPU
    return dev


def write_json(path, obj) -> None:
    """Atomic, stable JSON (sorted keys) so identical results give identical bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(obj, f, indent=1, sort_keys=True, allow_nan=False)
        f.write("\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


@contextmanager
def output_dir(out):
    """Build an output folder beside `out` (hidden name, so nothing else picks it up) and
    swap it in whole when the block succeeds. A kill at any point leaves either the old
    folder, or the new one, plus at most a hidden leftover that the next run removes."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.*"):  # leftovers of killed runs
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new.", dir=out.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if out.exists():
            old = out.with_name(f".{out.name}.old.{os.getpid()}")
            os.replace(out, old)
            os.replace(tmp, out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(main) -> None:
    """Call main(); a UserError becomes one line on stderr and exit status 2 (outputs are
    written atomically, so nothing computed before is lost). Anything else is a bug and
    keeps its traceback."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
