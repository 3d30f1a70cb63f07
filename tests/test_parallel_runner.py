"""The parallel runner (`python -m runner`) with real processes: a LocalCluster's scheduler
and two worker processes on loopback, on the tiny profile cut down to one table (MNIST,
one seed, an exact row and an aux row: 7 stages). One repository is built for the module;
each test leaves it at the parallel run's end state."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from test_pipeline_e2e import _env, copy_repo, ran, sh

TARGETS = "evaluate_mnist evaluate_mnist_aux"
AUX = "train_mnist_aux@zforcing_aux-0"
RUNNER = f"{sys.executable} -m runner -j 2 {TARGETS}"


def _cut_down(repo: Path) -> None:
    """One seed of MNIST's exact LSTM and Z-Forcing + aux, 40 updates (a checkpoint every
    4), in the profile itself so that `dvc exp run` composes the same."""
    prof = repo / "conf/profile/tiny.yaml"
    conf = yaml.safe_load(prof.read_text())
    conf["seeds"] = [0]
    conf["benchmarks"]["mnist"].update(rows=["lstm"], train={"max_updates": 40})
    prof.write_text("# @package _global_\n" + yaml.safe_dump(conf, sort_keys=False))
    from dvc.utils.hydra import compose_and_dump
    compose_and_dump(repo / "params.yaml", str(repo / "conf"), None, "config", str(repo), [])
    sh("git add -A && git commit -qm 'one table'", repo)


def outputs(repo: Path) -> dict:
    """Every byte the targets produce, and dvc.lock."""
    files = {"dvc.lock": (repo / "dvc.lock").read_bytes()}
    for top in ("data/mnist/prepared", "models/mnist", "eval/mnist", "data/params.ok"):
        for path in sorted([repo / top] if (repo / top).is_file() else (repo / top).rglob("*")):
            if path.is_file():
                files[str(path.relative_to(repo))] = path.read_bytes()
    return files


def forget(repo: Path) -> None:
    """Back to a commit that never ran: no outputs, no dvc.lock, no run-cache."""
    for top in ("data/mnist", "models/mnist", "data/params.ok", ".dvc/cache/runs", "live", ".ckpt"):
        path = repo / top
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    sh("git checkout -q -- eval && git clean -qfd eval", repo)
    (repo / "dvc.lock").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(repository, the bytes of a sequential `dvc repro` of the same commit); the
    repository is left as the parallel runner left it."""
    repo = copy_repo(tmp_path_factory.mktemp("par"), profile="tiny")
    _cut_down(repo)
    sh(f"dvc repro {TARGETS}", repo)
    reference = outputs(repo)
    forget(repo)
    res = sh(RUNNER, repo)
    return repo, reference, res.stdout


@pytest.fixture
def repo(built):
    yield built[0]
    # whatever a test did, leave the parallel run's end state for the next one
    sh(f"git checkout -q -- params.yaml && {RUNNER}", built[0])


def test_parallel_run_is_byte_identical_to_sequential_repro(built):
    repo, reference, out = built
    assert outputs(repo) == reference
    assert "[7/7 done]" in out and "running:" in out, out
    assert "up to date" in sh(f"dvc status {TARGETS}", repo).stdout
    # each stage's output is in a log of its own, not in the driver's
    logs = sorted(p.name for p in (repo / ".dvc/tmp/runner/logs").glob("*.log"))
    assert f"{AUX}.log" in logs and len(logs) == 7, logs
    assert "Running stage" not in out


def test_rerun_is_a_noop_and_plain_repro_agrees(repo):
    out = sh(RUNNER, repo).stdout
    assert "0 stage(s) ran" in out, out
    assert ran(sh(f"dvc repro {TARGETS}", repo).stdout) == set()
