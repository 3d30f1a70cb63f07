"""One line a person can read: stages done out of total, the ones running, an ETA from
the measured times of finished stages of the same group (train_timit, evaluate_mnist ...)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field


def group(stage: str) -> str:
    return stage.split("@")[0]


@dataclass
class Progress:
    total: int
    workers: int
    done: int = 0
    running: dict[str, float] = field(default_factory=dict)   # stage -> start (epoch s)
    seconds: dict[str, list[float]] = field(default_factory=dict)  # group -> measured

    def finish(self, stage: str, seconds: float | None = None) -> None:
        """seconds: how long its command ran (None: up to date, or restored by DVC)."""
        self.done += 1
        if seconds is not None:
            self.seconds.setdefault(group(stage), []).append(seconds)

    def estimate(self, stage: str) -> float | None:
        times = self.seconds.get(group(stage)) or [t for ts in self.seconds.values() for t in ts]
        return sum(times) / len(times) if times else None

    def eta(self, waiting: list[str]) -> float | None:
        """Seconds left if the workers stay busy: the work left over the worker count."""
        now = time.time()
        left = 0.0
        for stage in waiting:
            est = self.estimate(stage)
            if est is None:
                return None
            left += est
        for stage, t0 in self.running.items():
            est = self.estimate(stage)
            if est is None:
                return None
            left += max(est - (now - t0), 0.0)
        return left / max(self.workers, 1)

    def line(self, waiting: list[str]) -> str:
        now = time.time()
        names = ", ".join(f"{s} ({now - t0:.0f}s)" for s, t0 in sorted(self.running.items()))
        eta = self.eta(waiting)
        eta_text = "ETA ?" if eta is None else f"ETA {_clock(eta)}"
        return f"[{self.done}/{self.total} done] {eta_text}; running: {names or '-'}"


def _clock(seconds: float) -> str:
    m, s = divmod(int(round(seconds)), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
