"""`python -m runner.guard CMD...`: run CMD, and take its whole process group down with the
worker that started it. A SIGKILLed Dask worker cannot clean up; the kernel's parent-death
signal reaches this guard instead, which kills its group (itself, dvc and the stage), so
the retried cell resumes from its checkpoint instead of racing an orphan."""
import ctypes
import os
import signal
import subprocess
import sys

PR_SET_PDEATHSIG = 1


def _die(*_):
    os.killpg(0, signal.SIGKILL)


def main(cmd: list[str]) -> int:
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _die)
    signal.signal(signal.SIGINT, _die)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the worker died before the signal was armed
        _die()
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
