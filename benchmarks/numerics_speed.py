"""Time per training update with `numerics: exact` (pinned kernels) against `fast`.

    python benchmarks/numerics_speed.py --config small timit --rounds 3

The kernel switches are read when torch loads, so each measurement is a child process:
benchmarks/train_speed.py (eager step, 1 thread) started with the stages' pins in its
environment (exact) or with none of them (fast), the two alternating `rounds` times so
the machine's load hits both alike. Prints one JSON line per config with the fastest
ms per update of each mode and their ratio.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.pins import child_env  # noqa: E402


def ms_per_update(mode: str, config: str, args) -> float:
    cmd = [sys.executable, str(ROOT / "benchmarks/train_speed.py"), "--config", config, "--device", "cpu",
           "--threads", "1", "--updates", str(args.updates), "--repeats", "2"]
    out = subprocess.run(cmd, env=child_env(mode == "exact"), capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])["ms_per_update"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", default=["small"], help="train_speed.py configs")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--updates", type=int, default=10, help="updates per timed block")
    args = ap.parse_args()
    for config in args.config:
        best = {"exact": float("inf"), "fast": float("inf")}
        for _ in range(args.rounds):
            for mode in best:
                best[mode] = min(best[mode], ms_per_update(mode, config, args))
        print(json.dumps({"config": config, "ms_per_update": best,
                          "exact_over_fast": round(best["exact"] / best["fast"], 2),
                          "machine": platform.processor() or platform.machine()}), flush=True)


if __name__ == "__main__":
    main()
