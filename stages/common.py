"""What every stage script shares: one-line user errors, thread and device setup, atomic
outputs. Stages run from the repository root as `python -m stages.<name>`; nothing under
pipeline/ reads params.yaml (stages/params.py translates it)."""
from __future__ import annotations

import hashlib
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from pipeline.errors import UserError


class StageError(UserError):
    """A user-facing problem found by a stage itself."""


ROOT = Path(__file__).resolve().parents[1]


def code_hash(stage_file) -> str:
    """SHA-256 of the library's code, the stage script and the params reader: the "code"
    in a cell's provenance and its checkpoint key."""
    h = hashlib.sha256()
    for p in sorted((ROOT / "pipeline").rglob("*.py")) + [Path(stage_file).resolve(), ROOT / "stages/params.py"]:
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


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
    """pipeline.datasets.storage.atomic_dir, as a Path: the folder appears whole or not at all."""
    from pipeline.datasets.storage import atomic_dir
    with atomic_dir(out) as tmp:
        yield Path(tmp)


def run(main) -> None:
    """Call main(); a UserError becomes one line on stderr and exit status 2 (outputs are
    written atomically, so nothing computed before is lost). Anything else is a bug and
    keeps its traceback."""
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
