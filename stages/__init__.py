"""One thin script per DVC stage. Importing this package (every `python -m stages.<name>`)
first checks the interpreter, then pins the CPU kernels before torch is imported, so
`dvc repro` and `dvc exp run` get the same numerics as a hand-run stage (`numerics: fast`
unpins them again in the training and evaluation stages: stages/kernels.py)."""
import importlib.util
import sys

sys.dont_write_bytecode = True  # nothing writes under pipeline/ at run time (no __pycache__)

if importlib.util.find_spec("torch") is None or importlib.util.find_spec("dvc") is None:
    sys.stderr.write(f"error: {sys.executable} has no torch/dvc: activate the project's "
                     "environment first (`. .venv/bin/activate`, created by scripts/reproduce.sh)\n")
    sys.exit(2)

from stages.kernels import pin_cpu_kernels  # noqa: E402

KERNELS = pin_cpu_kernels()
