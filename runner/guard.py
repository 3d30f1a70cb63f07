"""`python -m runner.guard CMD...`: run CMD, and take its whole process group down with the
worker that started it. A SIGKILLed Dask worker cannot clean up; the kernel's parent-death
signal reaches this guard instead, which kills its group (itself, dvc and the stage), so
the retried cell resumes from its checkpoint instead of racing an orphan."""
import os
import signal
import subprocess
import sys

from pipeline.parent import die_with_parent


def _die(*_):
    os.killpg(0, signal.SIGKILL)


def main(cmd: list[str]) -> int:
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _die)
    signal.signal(signal.SIGINT, _die)
    if not die_with_parent(parent, signal.SIGTERM):  # the worker died before it was armed
        _die()
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
