"""The stages to run, from DVC itself: its index's DAG, and `stage.changed()` for the
question `dvc repro` asks of each stage once its upstream has run."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Plan:
    order: list[str]                                  # as `dvc repro` runs them
    deps: dict[str, set[str]] = field(default_factory=dict)  # stage -> stages it needs
    listed: list[str] = field(default_factory=list)   # every stage, in dvc.yaml's order


def _open(root):
    from dvc.repo import Repo
    return Repo(root)


def _locked(repo, fn):
    """Run fn under DVC's repository lock, the one `dvc repro` writes dvc.lock under:
    workers hold it for moments, so wait for it."""
    from dvc.lock import LockError
    for attempt in range(60):
        try:
            with repo.lock:
                return fn()
        except LockError:
            time.sleep(min(0.2 * 2 ** attempt, 5))
    raise LockError("the DVC repository lock stayed busy for minutes")


def plan(root, targets: list[str]) -> Plan:
    """The targets (every stage when none) and everything upstream of them, in the order
    `dvc repro` would run them (DVC's own planner)."""
    from dvc.dvcfile import PROJECT_FILE
    from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro
    repo = _open(root)
    try:
        graph = get_active_graph(repo.index.graph)  # edges: a stage -> the stages it needs
        steps = plan_repro(graph, collect_stages(repo, targets or [PROJECT_FILE]))
        wanted = set(steps)
        return Plan([s.addressing for s in steps],
                    {s.addressing: {d.addressing for d in graph.successors(s) if d in wanted}
                     for s in steps},
                    [s.addressing for s in repo.index.stages])
    finally:
        repo.close()


def changed(root, names: list[str]) -> set[str]:
    """Which of these stages `dvc repro` would run now (dvc.lock read afresh)."""
    repo = _open(root)

    def check():
        stages = {s.addressing: s for s in repo.index.stages if s.addressing in names}
        return {n for n, s in stages.items() if s.changed()}
    try:
        return _locked(repo, check)
    finally:
        repo.close()


def under_repo_lock(root, fn):
    repo = _open(root)
    try:
        return _locked(repo, fn)
    finally:
        repo.close()
