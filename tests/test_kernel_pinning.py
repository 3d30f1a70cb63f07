"""stages.kernels makes trained bytes independent of the kernels a CPU would pick.

A child process (tests/pin_child.py) trains the project's Z-Forcing and RNN-GMM cells for
30 updates and prints the sha256 of every weight, plus two numpy probes. Its environment
sets one library's ISA switch to a lower level this machine can run: a different kernel,
as an AVX-512 machine's would be. Control: unpinned, each switch changes the bytes (and a
clean run repeated does not), so the comparison can see a difference. Pinned: a child
whose outer environment sets every switch at once gives the clean child's bytes.
"""
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from pipeline.errors import UserError
from stages.kernels import OPENBLAS_PIN, PINS, cpu_has_avx2, pin_cpu_kernels, set_numerics

ROOT = Path(__file__).resolve().parents[1]
CHILD = ROOT / "tests" / "pin_child.py"
MODELS = ("zforcing", "rnn_gmm")

# switch -> (outer environment, what it changes: trained weights or a numpy probe)
SWITCHES = {
    "aten": ({"ATEN_CPU_CAPABILITY": "default"}, "weights"),     # non-vectorised ATen
    "onednn": ({"ONEDNN_MAX_CPU_ISA": "SSE41"}, "weights"),      # nn.LSTM's kernels
    # MKL's free choice is CPU-dependent (AUTO is the AVX-512 branch on an AVX-512 Intel CPU,
    # where MKL_CBWR=AUTO then changes nothing): vary it to the branch the pins choose
    "mkl": ({"MKL_CBWR": PINS["MKL_CBWR"]}, "weights"),
    "numpy": ({"NPY_DISABLE_CPU_FEATURES": "X86_V3"}, "exp"),    # SSE4.2 loops
}
# OPENBLAS_CORETYPE is neither pinned nor varied here: machines may set it for safety
# the pinned run also sets oneDNN's older name, which this oneDNN reads only without the new one
ALL_SWITCHES = {"DNNL_MAX_CPU_ISA": "SSE41",
                **{k: v for env, _ in SWITCHES.values() for k, v in env.items()}}

pytestmark = pytest.mark.skipif(not cpu_has_avx2(), reason="the pins target AVX2 machines")


def child(env_extra: dict, flags=(), models=MODELS) -> dict:
    # the outer environment without any pinned variable, then the switch under test
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    env.update(env_extra)
    cmd = [sys.executable, str(CHILD), "--threads", "1", *flags, "--models", *models]
    out = subprocess.run(cmd, env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def runs() -> dict:
    jobs = {"clean": ({}, ["--repeat"]),
            **{name: (env, [], MODELS if what == "weights" else ())
               for name, (env, what) in SWITCHES.items()},
            "pinned": ({}, ["--pin"]), "pinned_all_switches": (ALL_SWITCHES, ["--pin"])}
    with ThreadPoolExecutor(2) as pool:  # two cores; each child uses one thread
        futures = {name: pool.submit(child, *job) for name, job in jobs.items()}
        return {name: f.result() for name, f in futures.items()}


def test_pin_overrides_and_reports_the_outer_environment():
    environ = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "HOME": "/x"}
    got = pin_cpu_kernels(environ)
    assert got["replaced"] == {"ATEN_CPU_CAPABILITY": "default"}  # equal values are no news
    assert environ["ATEN_CPU_CAPABILITY"] == "avx2" and environ["HOME"] == "/x"
    assert all(environ[k] == v for k, v in got["env"].items())
    assert OPENBLAS_PIN[0] not in got["env"]  # left to the machine
    assert "torch" in got["imported_before"]  # pytest's conftest imported it: too late here


def test_fast_numerics_gives_the_outer_environment_back():
    outer = {"ATEN_CPU_CAPABILITY": "default", "MKL_CBWR": "COMPATIBLE", "HOME": "/x"}
    environ = dict(outer)
    pinned = pin_cpu_kernels(environ)
    assert set_numerics("exact", pinned, environ) == "exact" and environ["ATEN_CPU_CAPABILITY"] == "avx2"
    assert set_numerics("fast", pinned, environ) == "fast" and environ == outer
    with pytest.raises(UserError, match="numerics='quick'"):
        set_numerics("quick", pinned, environ)


def _capability_after(mode: str) -> list:
    """torch's kernel level and MKL_CBWR in a child that imports the stages package (the
    pins), applies `mode`, then imports torch, as the training and evaluation stages do."""
    code = ("import os, stages; from stages.kernels import set_numerics; "
            f"set_numerics({mode!r}, stages.KERNELS); import torch; "
            "print(torch.backends.cpu.get_cpu_capability(), os.environ.get('MKL_CBWR'))")
    env = {k: v for k, v in os.environ.items() if k not in PINS}
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_fast_numerics_reaches_torch():
    assert _capability_after("exact") == ["AVX2", "COMPATIBLE"]
    capability, cbwr = _capability_after("fast")
    assert cbwr == "None"
    if " avx512f" in Path("/proc/cpuinfo").read_text():  # else AVX2 is this CPU's own best
        assert capability.startswith("AVX512")


def test_training_is_deterministic_without_pinning(runs):
    # so the differences below come from the kernels, not from run-to-run noise
    assert runs["clean"]["repeat"] == runs["clean"]["hashes"]


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_control_each_switch_changes_the_bytes_unpinned(runs, switch):
    what = SWITCHES[switch][1]
    clean, switched = runs["clean"], runs[switch]
    if switch == "mkl" and all(clean["hashes"][m] == switched["hashes"][m] for m in MODELS):
        pytest.skip(f"MKL_CBWR={PINS['MKL_CBWR']} runs the branch MKL picks by itself on this CPU "
                    "(nothing to show here; the pinned test below still holds)")
    if what == "weights":
        for model in MODELS:
            assert clean["hashes"][model] != switched["hashes"][model], \
                f"{switch} left {model}'s weights unchanged"
    else:
        assert clean["numpy"][what] != switched["numpy"][what]


def test_pinned_bytes_ignore_the_outer_environment(runs):
    clean, switched = runs["pinned"], runs["pinned_all_switches"]
    for model in MODELS:
        assert clean["hashes"][model] == switched["hashes"][model], model
    assert clean["numpy"] == switched["numpy"]
    assert switched["pinned"]["imported_before"] == []  # pinned before torch and numpy
    pinned_env = dict(PINS)
    for k in ALL_SWITCHES:  # the running process saw the pinned value, not the outer one
        assert switched["setup"]["env"][k] == pinned_env[k], k
    assert switched["setup"]["cpu_capability"] == "AVX2"
    assert switched["setup"]["threads"] == 1
