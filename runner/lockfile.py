"""Before a run: one driver at a time, no leftovers of a killed run, a readable dvc.lock.

A SIGKILL while DVC writes dvc.lock leaves it empty or cut short. The committed one is
restored from git; DVC's run-cache then restores every stage finished since, without
running it."""
from __future__ import annotations

import fcntl
import os
import subprocess
from pathlib import Path

import yaml

from runner.cell import kill_leftover, state_dir


class Busy(Exception):
    pass


def hold_driver_lock(root: Path):
    """An exclusive lock for this driver's lifetime; the kernel drops it if we die."""
    path = state_dir(root) / "driver.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(path, "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise Busy(f"another runner is working in {root} (it holds {path})") from None
    return handle


def sweep(root: Path) -> int:
    """Kill the stages a killed driver's workers left running; return how many files."""
    pids = sorted((state_dir(root) / "pids").glob("*.json"))
    for pidfile in pids:
        kill_leftover(pidfile)
    return len(pids)


def valid(path: Path) -> bool:
    try:
        data = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError):
        return False
    return isinstance(data, dict) and isinstance(data.get("stages"), dict)


def repair(root: Path) -> str | None:
    """Make dvc.lock readable again; say what was done (None: nothing to do)."""
    path = root / "dvc.lock"
    if not path.exists() or valid(path):
        return None
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "dvc.lock"], cwd=root,
                             capture_output=True).returncode == 0
    if tracked:
        subprocess.run(["git", "checkout", "--", "dvc.lock"], cwd=root, check=True,
                       capture_output=True)
        return "dvc.lock was empty or invalid (a killed run?): restored the committed one"
    path.rename(root / "dvc.lock.invalid")
    return "dvc.lock was empty or invalid and git has none: moved it to dvc.lock.invalid"


def entries(root: Path) -> list[str]:
    """dvc.lock's stage entries in file order (read with DVC's own YAML loader)."""
    from dvc.utils.serialize import parse_yaml_for_update
    path = root / "dvc.lock"
    if not path.exists():
        return []
    return list(parse_yaml_for_update(path.read_text(), str(path)).get("stages") or {})


def entries_before(root: Path) -> list[str]:
    """The entries dvc.lock had before this run's work began: saved at the first start,
    kept if that run is killed, so that its rerun puts the entries in the same order."""
    import json
    saved = state_dir(root) / "order.json"
    if saved.exists():
        return json.loads(saved.read_text())
    names = entries(root)
    saved.write_text(json.dumps(names))
    return names


def forget_order(root: Path) -> None:
    (state_dir(root) / "order.json").unlink(missing_ok=True)


def put_in_order(root: Path, order: list[str]) -> bool:
    """DVC appends a new stage's entry when it first records it, so concurrent stages
    land in the order they finished. Put them in `order` (entries it does not name after,
    as they are), re-dumped by DVC's own YAML dumper into a temporary file that replaces
    dvc.lock in one rename: a kill never leaves it half-written. Call with DVC's
    repository lock held and no stage running."""
    from dvc.utils.serialize import dump_yaml, parse_yaml_for_update
    path = root / "dvc.lock"
    if not path.exists():
        return False
    data = parse_yaml_for_update(path.read_text(), str(path))
    stages = data.get("stages") or {}
    names = [n for n in order if n in stages] + [n for n in stages if n not in order]
    if names == list(stages):
        return False
    ordered = type(stages)()
    for name in names:
        ordered[name] = stages[name]
    data["stages"] = ordered
    tmp = path.with_name(f".dvc.lock.new.{os.getpid()}")  # ignored (.gitignore: .*.new.*)
    dump_yaml(str(tmp), data)
    os.replace(tmp, path)
    return True
