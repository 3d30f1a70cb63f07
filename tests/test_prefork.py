"""The workers' fork server (stages/prefork.py), with real processes: a stage that hands
itself over runs in a child that has torch loaded already, with the stage's streams, exit
status and fate; one whose kernel switches differ, or that finds no server, runs itself."""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]

# a stand-in stage: what it prints says where it ran
PROBE = '''
import os, sys, time
preloaded = "torch" in sys.modules
from stages import KERNELS, prefork
from stages.kernels import set_numerics
set_numerics("exact", KERNELS)
prefork.handoff("probe", KERNELS)
print(f"pid={os.getpid()} preloaded={preloaded} cwd={os.getcwd()}", flush=True)
what = sys.argv[1]
if what == "exit":
    sys.exit(int(sys.argv[2]))
if what == "raise":
    raise RuntimeError("a bug in the stage")
if what == "sleep":
    open("child.pid", "w").write(str(os.getpid()))
    time.sleep(120)
'''


def _env(**extra):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZF_PREFORK", "OMP_"))}
    return {**env, "PYTHONPATH": str(ROOT), **extra}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefork")
    (home / "params.yaml").write_text("numerics: exact\n")
    (home / "probe.py").write_text(PROBE)
    sock = home / "server.sock"
    proc = subprocess.Popen([sys.executable, "-m", "stages.prefork", str(sock)], cwd=home,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 300
    while not sock.exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the server did not listen in 300 s"
        time.sleep(0.1)
    yield home, sock
    proc.kill()
    proc.wait()


def _probe(home, sock, *args, **env):
    return subprocess.run([sys.executable, "-m", "probe", *args], cwd=home, capture_output=True,
                          text=True, env=_env(ZF_PREFORK=str(sock), **env), timeout=300)


def test_stage_runs_in_a_preloaded_child_with_its_streams_and_status(server):
    home, sock = server
    res = _probe(home, sock, "exit", "3")
    assert res.returncode == 3, res.stderr
    assert "preloaded=True" in res.stdout and f"cwd={home}" in res.stdout, res.stdout
    assert "runs in the worker's preloaded process" in res.stderr
    assert "already imported" not in res.stderr  # the server loaded torch under these pins


def test_other_kernel_switches_run_in_the_stage_process(server):
    home, sock = server
    res = _probe(home, sock, "exit", "0", OMP_NUM_THREADS="3")
    assert res.returncode == 0 and "preloaded=False" in res.stdout, res.stdout + res.stderr


def test_no_server_runs_in_the_stage_process(server, tmp_path):
    home, _ = server
    res = _probe(home, tmp_path / "none.sock", "exit", "0")
    assert res.returncode == 0 and "preloaded=False" in res.stdout, res.stdout + res.stderr


def test_a_bug_keeps_its_traceback(server):
    home, sock = server
    res = _probe(home, sock, "raise")
    assert res.returncode == 1
    assert "Traceback" in res.stderr and "RuntimeError: a bug in the stage" in res.stderr


def test_killing_the_stage_process_kills_its_child(server):
    home, sock = server
    (home / "child.pid").unlink(missing_ok=True)
    stage = subprocess.Popen([sys.executable, "-m", "probe", "sleep"], cwd=home,
                             env=_env(ZF_PREFORK=str(sock)), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not (home / "child.pid").exists() or not (home / "child.pid").read_text():
        assert time.monotonic() < deadline and stage.poll() is None
        time.sleep(0.05)
    child = psutil.Process(int((home / "child.pid").read_text()))
    assert child.pid != stage.pid and child.name() == "probe"
    stage.send_signal(signal.SIGKILL)
    stage.wait()
    child.wait(timeout=30)  # psutil.TimeoutExpired if it outlived its stage


def test_server_dies_with_the_process_that_started_it(tmp_path):
    (tmp_path / "params.yaml").write_text("numerics: fast\n")
    starter = subprocess.Popen(
        [sys.executable, "-c", "import os, subprocess, sys, time; "
         f"p = subprocess.Popen([sys.executable, '-m', 'stages.prefork', '{tmp_path}/s.sock', "
         "str(os.getpid())]); "
         "print(p.pid, flush=True); time.sleep(300)"],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, text=True)
    server = psutil.Process(int(starter.stdout.readline()))
    starter.kill()
    starter.wait()
    server.wait(timeout=60)
