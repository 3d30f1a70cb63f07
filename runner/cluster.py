"""Where the workers come from: a LocalCluster on this machine, or Slurm jobs through
dask-jobqueue; the driver's code is the same for both.

A worker owns `slot` resources: one slot is one GPU on a GPU machine, else `threads` CPU
cores. A training stage claims `train.nproc` slots, every other stage one."""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from pipeline.gpus import visible_gpus

RESOURCE = "slot"


@dataclass(frozen=True)
class Shape:
    slots: int       # on this machine: GPUs, or cores over threads
    per_worker: int  # slots one worker owns: the largest train.nproc
    gpu: bool

    @property
    def workers(self) -> int:
        return max(self.slots // self.per_worker, 1)


def train_section(params: dict, bench: str | None, name: str = "train") -> dict:
    """params[name] with a benchmark's non-null overrides on top (as the stages read it)."""
    over = ((params.get("benchmarks") or {}).get(bench) or {}).get(name) or {} if bench else {}
    return {**(params.get(name) or {}), **{k: v for k, v in over.items() if v is not None}}


def _sections(params: dict, name: str) -> list[dict]:
    """params[name] and every benchmark's view of it."""
    return [train_section(params, None, name)] + [train_section(params, b, name)
                                                  for b in (params.get("benchmarks") or {})]


def gpu_count() -> int:
    visible = visible_gpus()
    if visible is not None:
        return len(visible)
    if not shutil.which("nvidia-smi"):
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True)
    return sum(line.startswith("GPU ") for line in out.stdout.splitlines()) if out.returncode == 0 else 0


def read_params(root: Path) -> dict:
    return yaml.safe_load((Path(root) / "params.yaml").read_text()) or {}


def shape(params: dict) -> Shape:
    trains = _sections(params, "train")
    nproc = max(int(t.get("nproc", 1) or 1) for t in trains)
    gpus = gpu_count()
    if gpus and all(t.get("device", "auto") != "cpu" for t in trains):
        return Shape(gpus, nproc, gpu=True)
    threads = max(int(s.get("threads", 1) or 1) for s in trains + _sections(params, "eval"))
    return Shape(len(os.sched_getaffinity(0)) // threads, nproc, gpu=False)


def slots_for(stage: str, params: dict) -> int:
    """train_<bench>[...]@... claims that benchmark's train.nproc; anything else one."""
    if not stage.startswith("train_"):
        return 1
    bench = stage.split("@")[0].split("_")[1]
    return int(train_section(params, bench).get("nproc", 1) or 1)


def local(workers: int, per_worker: int):
    from distributed import LocalCluster
    # one thread per worker: a worker runs one stage at a time, and its stage owns the cores
    # death_timeout: workers whose driver died (and so the scheduler) exit and take their
    # stages with them (runner.guard)
    return LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                        resources={RESOURCE: per_worker}, dashboard_address=None,
                        host="127.0.0.1", death_timeout=30)


@dataclass(frozen=True)
class SlurmJob:
    root: str                  # the repository on the shared filesystem
    cores: int = 4
    memory: str = "32GB"
    gpus: int = 1              # per job; one worker per job owns them all as slots
    walltime: str = "24:00:00"
    queue: str | None = None   # partition
    account: str | None = None
    venv: str = ".venv"        # activated in the job: stage commands call `python` from PATH
    interface: str | None = None  # network interface for scheduler and workers (e.g. ib0)


def slurm(job: SlurmJob):
    from dask_jobqueue import SLURMCluster
    slots = job.gpus or job.cores  # a CPU job: one stage per core (train.threads 1)
    return SLURMCluster(
        cores=job.cores, processes=1, memory=job.memory, walltime=job.walltime,
        queue=job.queue, account=job.account, python="python",
        job_extra_directives=[f"--gres=gpu:{job.gpus}"] if job.gpus else [],
        worker_extra_args=["--resources", f"{RESOURCE}={slots}"],
        # stage commands call `python` from PATH and run in the repository
        job_script_prologue=[f"cd {job.root}", f". {job.venv}/bin/activate"],
        interface=job.interface,
        log_directory=f"{job.root}/.dvc/tmp/runner/slurm")
