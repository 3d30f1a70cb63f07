"""The Dask task: one stage, run as `dvc repro -s <stage>` in the repository.

Its output goes to a log file of its own (printed by the driver on failure), so concurrent
progress bars never interleave. A pid file names the process group while it runs: a retry
of the cell (its worker died) kills what is left of the last attempt before starting."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psutil
from distributed import WorkerPlugin, get_worker

# DVC's repository lock and stage rwlock are held for moments; meeting one is not a failure
BUSY = ("Unable to acquire lock", "is busy, it is being blocked by")
BUSY_TRIES = 12


@dataclass(frozen=True)
class Cell:
    root: str       # the repository (a path every worker sees: a shared filesystem)
    stage: str      # DVC's address, e.g. train_timit@rnn_gauss-0
    force: bool = False


class CellFailed(Exception):
    def __init__(self, stage: str, log: Path, code: int):
        super().__init__(f"{stage} exited {code}; its log: {log}")
        self.stage, self.log, self.code = stage, log, code


def state_dir(root) -> Path:
    return Path(root) / ".dvc" / "tmp" / "runner"


def log_path(root, stage: str) -> Path:
    return state_dir(root) / "logs" / f"{stage}.log"


def pid_path(root, stage: str) -> Path:
    return state_dir(root) / "pids" / f"{stage}.json"


def kill_leftover(pidfile: Path) -> None:
    """Kill the process group a dead attempt left behind (on this host), if still alive."""
    try:
        rec = json.loads(pidfile.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return
    if rec.get("host") == socket.gethostname():
        try:  # the create time guards against a recycled pid
            if psutil.Process(rec["pgid"]).create_time() == rec["created"]:
                os.killpg(rec["pgid"], signal.SIGKILL)
                psutil.Process(rec["pgid"]).wait(timeout=30)
        except (psutil.NoSuchProcess, ProcessLookupError):
            pass
    pidfile.unlink(missing_ok=True)


class Prefork(WorkerPlugin):
    """Each worker's fork server (stages/prefork.py): a cell's training or evaluation runs
    in a child of it, so torch and the rest are imported once a worker, not once a stage."""
    name = "prefork"

    def __init__(self, root: str):
        self.root, self.proc, self.path = root, None, None

    def setup(self, worker):
        self.path = os.path.join(tempfile.gettempdir(), f"zf-prefork-{os.getpid()}.sock")
        log = state_dir(self.root) / f"prefork-{socket.gethostname()}-{os.getpid()}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "stages.prefork", self.path,
                                          str(os.getpid())],
                                         cwd=self.root, stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=subprocess.STDOUT)

    def teardown(self, worker):
        self.proc.kill()
        self.proc.wait()
        Path(self.path).unlink(missing_ok=True)


def _prefork_env() -> dict:
    """The environment of a cell's dvc: its stage hands itself to the worker's fork server."""
    try:
        plugin = get_worker().plugins.get(Prefork.name)
    except ValueError:  # not in a worker (a test calls run_cell directly)
        plugin = None
    return {**os.environ, "ZF_PREFORK": plugin.path} if plugin and plugin.path else None


def _attempt(cell: Cell, log) -> int:
    # --wait-for-lock: a worker meeting the other's repository lock (held while DVC checks
    # and records a stage, not while its command runs) waits for it in the same process,
    # instead of failing after 3 s and paying DVC's start-up again after a back-off
    cmd = ["dvc", "--wait-for-lock", "repro", "-s", *(["-f"] if cell.force else []), cell.stage]
    log.write(f"== {' '.join(cmd)}  (host {socket.gethostname()}, worker pid {os.getpid()}, "
              f"{time.strftime('%H:%M:%S')})\n")
    log.flush()
    proc = subprocess.Popen([sys.executable, "-m", "runner.guard", *cmd], cwd=cell.root,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            start_new_session=True, env=_prefork_env())
    pidfile = pid_path(cell.root, cell.stage)
    pidfile.write_text(json.dumps({"pgid": proc.pid, "host": socket.gethostname(),
                                   "worker": os.getpid(),
                                   "created": psutil.Process(proc.pid).create_time()}))
    code = proc.wait()
    pidfile.unlink(missing_ok=True)
    return code


def run_cell(cell: Cell) -> dict:
    """Run one stage; return how long it took and whether DVC ran its command."""
    log = log_path(cell.root, cell.stage)
    for folder in (log.parent, pid_path(cell.root, cell.stage).parent):
        folder.mkdir(parents=True, exist_ok=True)
    kill_leftover(pid_path(cell.root, cell.stage))
    t0 = time.monotonic()
    with open(log, "a") as out:
        for attempt in range(BUSY_TRIES):
            start = out.tell()
            code = _attempt(cell, out)
            if code == 0:
                break
            out.flush()
            tail = log.read_bytes()[start:].decode(errors="replace")
            if not any(b in tail for b in BUSY):
                raise CellFailed(cell.stage, log, code)
            time.sleep(min(0.5 * 2 ** attempt, 10))  # DVC's lock: back off and try again
        else:
            raise CellFailed(cell.stage, log, code)
    text = log.read_bytes()[start:].decode(errors="replace")  # this run's attempt only
    return {"seconds": time.monotonic() - t0, "ran": f"Running stage '{cell.stage}'" in text}
