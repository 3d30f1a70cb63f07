"""keep_freed_memory: a step loop's freed blocks are reused instead of faulted in again."""
import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GLIBC = platform.libc_ver()[0] == "glibc"  # checked without tuning this test process

LOOP = """
import resource, sys, torch
from pipeline.cpu_memory import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
faults = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = faults()
for _ in range(20):  # 64 blocks of 1 MiB made and freed, like one evaluation batch's steps
    steps = [torch.ones(2**18) for _ in range(64)]
    del steps
print(faults() - start)
"""


def page_faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", LOOP, mode], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    return int(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not GLIBC, reason="mallopt is glibc's")
def test_freed_blocks_are_reused_not_faulted_in_again():
    default, kept = page_faults("default"), page_faults("keep")
    assert kept < 0.7 * default, (kept, default)
