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
    """One seed of MNIST's exact LSTM and Z-Forcing + aux, 24 updates (a checkpoint every
    4), in the profile itself so that `dvc exp run` composes the same."""
    prof = repo / "conf/profile/tiny.yaml"
    conf = yaml.safe_load(prof.read_text())
    conf["seeds"] = [0]
    conf["benchmarks"]["mnist"].update(rows=["lstm"], train={"max_updates": 24})
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
    """No outputs, no cache: every stage must run again. dvc.lock stays, as a clone's
    committed one does (DVC updates its entries in place; a new entry's place in a fresh
    `dvc repro` follows Python's string hashing, so only in-place bytes can be compared)."""
    for top in ("data/mnist", "models/mnist", "data/params.ok", ".dvc/cache", "live", ".ckpt"):
        path = repo / top
        shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    sh("git checkout -q -- eval && git clean -qfd eval", repo)


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
    sh("git add -A && git commit -qm parallel", repo)  # experiments start from a commit
    return repo, reference, res.stdout


@pytest.fixture
def repo(built):
    yield built[0]
    # whatever a test did, leave the parallel run's end state for the next one: first no
    # process of it left (a failed test may leave one suspended, holding DVC's lock)
    _stop_leftovers(built[0])
    sh("git checkout -q -- params.yaml dvc.lock", built[0])
    if "up to date" not in sh(f"dvc status {TARGETS}", built[0]).stdout:
        sh(RUNNER, built[0])


def test_parallel_run_is_byte_identical_to_sequential_repro(built):
    repo, reference, out = built
    assert outputs(repo) == reference
    assert "[7/7 done]" in out and "running:" in out and "7 stage(s) ran" in out, out
    assert "up to date" in sh(f"dvc status {TARGETS}", repo).stdout
    # each stage's output is in a log of its own, not in the driver's
    logs = sorted(p.name for p in (repo / ".dvc/tmp/runner/logs").glob("*.log"))
    assert f"{AUX}.log" in logs and len(logs) == 7, logs
    assert "Running stage" not in out
    # the training and evaluation stages ran in the workers' fork servers (stages/prefork.py)
    preloaded = [p.stem for p in (repo / ".dvc/tmp/runner/logs").glob("*.log")
                 if "runs in the worker's preloaded process" in p.read_text()]
    assert preloaded and all(s.startswith(("train_", "evaluate_")) for s in preloaded), preloaded


def test_new_entries_land_in_dvc_yaml_order_whatever_order_they_finished(built, tmp_path, monkeypatch):
    """The runner's last step: dvc.lock's new entries, appended as cells finished, are put
    in dvc.yaml's order, the bytes DVC's own dumper writes."""
    from dvc.utils.serialize import dump_yaml, parse_yaml_for_update
    from runner import dag, lockfile
    repo, reference, _ = built
    monkeypatch.chdir(repo)  # DVC resolves targets from the working directory
    data = parse_yaml_for_update(reference["dvc.lock"].decode(), "dvc.lock")
    names = list(data["stages"])
    listed = [s for s in dag.plan(repo, TARGETS.split()).listed if s in names]
    shuffled = type(data["stages"])()
    for name in reversed(names):
        shuffled[name] = data["stages"][name]
    data["stages"] = shuffled
    dump_yaml(str(tmp_path / "dvc.lock"), data)
    assert lockfile.put_in_order(tmp_path, listed)
    assert lockfile.entries(tmp_path) == listed
    again = tmp_path / "again"
    again.mkdir()
    shutil.copy(tmp_path / "dvc.lock", again / "dvc.lock")
    assert not lockfile.put_in_order(again, listed)  # in order already: left alone
    if names == listed:  # the reference's entries happened to come in dvc.yaml's order
        assert (tmp_path / "dvc.lock").read_bytes() == reference["dvc.lock"]


def test_rerun_is_a_noop_and_plain_repro_agrees(repo):
    out = sh(RUNNER, repo).stdout
    assert "0 stage(s) ran" in out, out
    assert ran(sh(f"dvc repro {TARGETS}", repo).stdout) == set()


def test_exp_run_reuses_the_runners_cells(repo):
    """The runner filled DVC's run-cache: an experiment retrains only the aux cell, and
    going back to the committed weight trains nothing."""
    out = sh(f"dvc exp run -S aux_weight=0.02 {TARGETS}", repo).stdout
    assert ran(out) - {"check"} == {AUX, "evaluate_mnist_aux@zforcing_aux-0"}, out
    out = sh(f"dvc exp run -S aux_weight={yaml.safe_load(sh('git show HEAD:params.yaml', repo).stdout)['aux_weight']} {TARGETS}", repo).stdout
    assert ran(out) - {"check"} == set(), out


def uncache(repo: Path, *stages: str) -> None:
    """Make these stages run again for real: their outputs gone from the workspace and
    the cache, and no run-cache. The other stages stay up to date."""
    import contextlib
    from dvc.repo import Repo
    with contextlib.chdir(repo), Repo(str(repo)) as dvc:
        for name in stages:
            for out in dvc.stage.collect(name)[0].outs:
                Path(out.cache_path).unlink(missing_ok=True)
                shutil.rmtree(out.fs_path)
    shutil.rmtree(repo / ".dvc/cache/runs")


def _wait_for(what, cond, proc, limit=300):
    deadline = time.monotonic() + limit
    while not cond():
        assert proc.poll() is None, f"the runner ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {limit} s"
        time.sleep(0.05)


@pytest.fixture
def jobqueue_workers(built):
    """The README's Slurm recipe, as far as this machine goes: the driver-side cluster is
    dask-jobqueue's SLURMCluster (its scheduler on loopback, here in the test process), and
    two workers are started by running its generated job script with bash, as sbatch would."""
    from distributed import Client
    from runner.cluster import SlurmJob, slurm
    repo = built[0]
    cluster = slurm(SlurmJob(str(repo), cores=1, memory="2GB", gpus=0, interface="lo",
                             venv=sys.prefix))
    script = cluster.job_script()
    assert f"cd {repo}" in script and "--resources slot=1" in script and "--nanny" in script
    jobs = []
    for i in range(2):  # sbatch would give each job its own name
        path = repo / f".dvc/tmp/job{i}.sh"
        path.write_text(script.replace("dummy-name", f"job-{i}"))
        jobs.append(subprocess.Popen(["bash", str(path)], env=_env(), start_new_session=True,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    try:
        with Client(cluster) as client:
            client.wait_for_workers(2, timeout=120)
        yield cluster.scheduler_address
    finally:
        for job in jobs:
            os.killpg(job.pid, signal.SIGKILL)
            job.wait()
        cluster.close()


def test_worker_killed_mid_cell_resumes_from_its_checkpoint(repo, built, jobqueue_workers):
    """SIGKILL the worker training the aux cell once its first checkpoint is on disk: the
    engine reruns the cell on a worker, which resumes (dvclive keeps the rows the first
    attempt logged), and every byte equals the sequential run's."""
    uncache(repo, AUX)
    proc = subprocess.Popen(f"{sys.executable} -m runner --scheduler {jobqueue_workers} -j 2 {TARGETS}",
                            cwd=repo, env=_env(), shell=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pidfile = repo / f".dvc/tmp/runner/pids/{AUX}.json"
    _wait_for("the aux cell", pidfile.exists, proc)
    held = json.loads(pidfile.read_text())
    # freeze the training process as soon as it exists, then let it run in 50 ms slices
    # until its first checkpoint is on disk: the kill lands mid-cell however fast or busy
    # this machine is; the worker's death takes it down (runner.guard)
    import psutil

    def training():
        # the process that trains: the stage's own python (an argument "stages.train", not
        # a shell whose `-c` string names it) until it hands over to the worker's fork
        # server, then the server's child, which takes the stage's name
        try:
            own = [p for p in psutil.Process(held["pgid"]).children(recursive=True)
                   if "stages.train" in p.cmdline()]
        except psutil.NoSuchProcess:
            own = []
        return own + [p for p in psutil.process_iter(["name"])
                      if p.info["name"] == "stages.train" and _in(p, repo)]

    def each(action):
        for stage in training():
            try:
                getattr(stage, action)()
            except psutil.NoSuchProcess:
                pass
        return True
    _wait_for("a training process", lambda: training() and each("suspend"), proc)
    deadline = time.monotonic() + 300
    while not any(repo.glob(".ckpt/*/train.pt")):
        assert time.monotonic() < deadline, "no checkpoint in 300 s"
        each("resume")
        time.sleep(0.05)
        each("suspend")
    marker = repo / "live/mnist/zforcing_aux/s0/plots/metrics/first-attempt"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text("a fresh start (no resume) would delete this folder")
    # running again, so that a process that watches for its parent's death can see it
    each("resume")
    os.kill(held["worker"], signal.SIGKILL)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "1 stage(s) ran" in out, out  # the evaluation found the same model: up to date
    log = (repo / f".dvc/tmp/runner/logs/{AUX}.log").read_text()
    assert log.count("== dvc --wait-for-lock repro") == 2, log
    assert marker.exists(), "the retried cell started over instead of resuming"
    assert outputs(repo) == built[1]
    assert "up to date" in sh(f"dvc status {TARGETS}", repo).stdout


def test_killed_driver_then_rerun_finishes_the_work(repo, built):
    """SIGKILL the driver while both train cells run, then empty dvc.lock as a kill during
    DVC's write would: the same command again stops the leftovers, restores
    dvc.lock and finishes, to the same bytes."""
    import psutil
    uncache(repo, "train_mnist@lstm-0", AUX)
    proc = subprocess.Popen(RUNNER, cwd=repo, env=_env(), shell=True, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pids = repo / ".dvc/tmp/runner/pids"
    _wait_for("train stage", lambda: len(list(pids.glob("train_*.json"))) == 2, proc)
    driver = [p for p in psutil.Process(proc.pid).children(recursive=True)
              if "runner" in " ".join(p.cmdline())][0]
    driver.kill()
    proc.wait()
    (repo / "dvc.lock").write_text("")
    out = sh(RUNNER, repo).stdout
    assert "restored the committed one" in out, out
    assert outputs(repo) == built[1]
    assert "up to date" in sh(f"dvc status {TARGETS}", repo).stdout
    left = [p.pid for p in psutil.process_iter() if _in(p, repo)]
    assert not left, "processes of the killed run are still alive"


def _stop_leftovers(repo: Path) -> None:
    import psutil
    left = [p for p in psutil.process_iter() if _in(p, repo)]
    for proc in left:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(left, timeout=30)


def _in(proc, repo) -> bool:
    try:
        return proc.cwd() == str(repo) and proc.pid != os.getpid()
    except Exception:  # noqa: BLE001 - gone, or not ours to inspect
        return False


def test_job_script_names_the_recipes_resources():
    out = subprocess.run([sys.executable, "-m", "runner", "--job-script", "--slurm-gpus", "2",
                          "--slurm-partition", "gpu"], capture_output=True, text=True, check=True,
                         env=_env()).stdout
    for line in ("#SBATCH -p gpu", "#SBATCH --gres=gpu:2", ". .venv/bin/activate",
                 "--resources slot=2", "--nanny"):
        assert line in out, out


def test_repair_restores_an_empty_lock_from_git_or_moves_it_aside(tmp_path):
    """A SIGKILL during DVC's write leaves dvc.lock empty; the runner puts
    the committed one back before it starts (or, with none in git, moves it aside)."""
    from runner import lockfile
    good = "schema: '2.0'\nstages:\n  check:\n    cmd: true\n"
    (tmp_path / "dvc.lock").write_text(good)
    sh("git init -q && git add dvc.lock && git commit -qm lock", tmp_path)
    assert lockfile.repair(tmp_path) is None
    for broken in ("", "stages: [", "schema: '2.0'\n"):
        (tmp_path / "dvc.lock").write_text(broken)
        assert "restored" in lockfile.repair(tmp_path)
        assert (tmp_path / "dvc.lock").read_text() == good
    sh("git rm -q --cached dvc.lock && git commit -qm untrack", tmp_path)
    (tmp_path / "dvc.lock").write_text("")
    assert "dvc.lock.invalid" in lockfile.repair(tmp_path)
    assert not (tmp_path / "dvc.lock").exists() and (tmp_path / "dvc.lock.invalid").exists()


def test_workers_default_to_gpus_or_cores_over_threads(tmp_path, monkeypatch):
    from runner import cluster
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"train": {"threads": 1, "nproc": 1},
                                      "eval": {"threads": 2},
                                      "benchmarks": {"timit": {"train": {"nproc": 2}}}}))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2,3")
    shape = cluster.shape(cluster.read_params(tmp_path))
    assert (shape.gpu, shape.slots, shape.per_worker, shape.workers) == (True, 4, 2, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    shape = cluster.shape(cluster.read_params(tmp_path))
    assert not shape.gpu and shape.slots == len(os.sched_getaffinity(0)) // 2
    p = yaml.safe_load(params.read_text())
    assert cluster.slots_for("train_timit_aux@zforcing_aux-0", p) == 2
    assert cluster.slots_for("train_mnist@lstm-0", p) == 1
    assert cluster.slots_for("evaluate_timit@rnn_gauss-0", p) == 1
    p["train"]["nproc"], p["benchmarks"]["timit"]["train"]["nproc"] = 4, None  # null: the shared value
    assert cluster.slots_for("train_timit@rnn_gauss-0", p) == 4


def test_progress_line_counts_and_estimates_from_measured_cells():
    from runner.progress import Progress
    progress = Progress(total=5, workers=2)
    progress.finish("check")                       # up to date: no time to learn from
    assert "ETA ?" in progress.line(["train_timit@a-0"])
    progress.finish("train_timit@a-0", 100.0)
    progress.finish("train_timit@b-0", 60.0)
    line = progress.line(["train_timit@c-0", "train_timit@d-0"])
    assert line.startswith("[3/5 done] ETA 1m20s")  # two cells of 80 s on two workers
