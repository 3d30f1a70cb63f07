"""Check a rerun against the committed results: bytes first, then numbers within tolerances.

    dvc repro -f                  # rerun everything: on a GPU, another CPU, another OS
    python scripts/verify.py      # compare with the committed run (--rev to pick another)

On an x86-64 CPU with AVX2 and the pinned wheels the rerun should match byte for byte:
`dvc.lock` and `reports/` are then unchanged, and that is the whole check. Where bytes
cannot match (GPUs, other architectures, `train.compile`), every metric of every cell is
compared with the committed one within the tolerances below, and the ones that moved are
listed. Exit status 0: identical or within tolerance; 1: something moved beyond it, or
bytes differ where they were promised (`numerics: exact` in both runs, every cell on an
x86-64 CPU, uncompiled; `fast` promises numbers only).

The tolerances are stated, not tuned after the fact: without kernel pinning, a rerun on a
second AVX2 machine moved the default profile's bounds by 0.2-0.8 % (BENCHMARKS.md), so 2 %
leaves room for other hardware while still catching a changed result. KL terms are small
differences of large numbers and move more; active units are counts.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

# metric -> (relative, absolute) tolerance: |now - committed| <= rel * |committed| + abs
TOLERANCE = {"kl": (0.10, 1.0), "kl_per_word": (0.10, 0.01), "active_units": (0.0, 2.0)}
DEFAULT = (0.02, 0.0)


def numbers(files: dict) -> dict:
    """{metrics file: its JSON text} -> {(file, metric): value}, numbers only."""
    out = {}
    for path, text in files.items():
        for key, value in json.loads(text).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                out[(path, key)] = float(value)
    return out


def committed_metrics(rev: str) -> dict:
    """Every eval/**/metrics.json in git at `rev` (they are in git: cache: false)."""
    names = subprocess.run(["git", "ls-tree", "-r", "--name-only", rev, "--", "eval"],
                           capture_output=True, text=True, check=True).stdout.split()
    return {n: subprocess.run(["git", "show", f"{rev}:{n}"], capture_output=True, text=True,
                              check=True).stdout for n in names if n.endswith("/metrics.json")}


def workspace_metrics() -> dict:
    return {p.as_posix(): p.read_text() for p in sorted(Path("eval").glob("**/metrics.json"))}


def compare(committed: dict, now: dict) -> pd.DataFrame:
    """One row per (file, metric) in either run; `ok` says whether it is within tolerance."""
    rows = []
    for path, key in sorted(set(committed) | set(now)):
        a, b = committed.get((path, key)), now.get((path, key))
        rel, tol_abs = TOLERANCE.get(key, DEFAULT)
        if a is None or b is None:
            ok, change = False, None
        else:
            ok, change = abs(b - a) <= rel * abs(a) + tol_abs, b - a
        rows.append({"file": path, "metric": key, "committed": a, "now": b, "change": change,
                     "tolerance": f"{rel:.0%} + {tol_abs:g}", "ok": ok})
    return pd.DataFrame(rows, columns=["file", "metric", "committed", "now", "change", "tolerance", "ok"])


def bytes_promised(rev: str) -> bool:
    """Whether bytes, not tolerances, are the check: `numerics: exact` in the committed and
    the current params.yaml, and every rerun cell on an x86-64 CPU, uncompiled (README)."""
    import yaml
    committed = subprocess.run(["git", "show", f"{rev}:params.yaml"], capture_output=True, text=True)
    modes = [yaml.safe_load(t).get("numerics", "exact")  # runs before the key were all pinned
             for t in (committed.stdout or "{}", Path("params.yaml").read_text())]
    cells = [json.loads(p.read_text())["settings"] for p in Path("eval").glob("**/info.json")]
    return modes == ["exact", "exact"] and bool(cells) and all(
        s.get("numerics") == {"train": "exact", "eval": "exact"} and s["hardware"]["machine"] == "x86_64"
        and s["hardware"]["train_device"] == s["hardware"]["eval_device"] == "cpu"
        and s["train"].get("compile", "off") == s["eval"].get("compile", "off") == "off" for s in cells)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the committed run to compare with (git revision)")
    args = ap.parse_args(argv)
    # metrics.json files are in git (cache: false), so a hand-edited number shows here too
    diff = subprocess.run(["git", "diff", "--quiet", args.rev, "--", "dvc.lock", "reports", "eval"])
    if diff.returncode == 0:
        print(f"byte for byte: dvc.lock, reports/ and the metrics match {args.rev}")
        return 0
    table = compare(numbers(committed_metrics(args.rev)), numbers(workspace_metrics()))
    if table.empty:
        print("no metrics found: run `dvc repro` first", file=sys.stderr)
        return 1
    moved = table[table["change"].fillna(1) != 0]
    bad = table[~table["ok"]]
    print(f"not byte for byte: {len(moved)} of {len(table)} metrics differ from {args.rev}, "
          f"{len(bad)} beyond tolerance")
    if len(moved):
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(moved.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if bytes_promised(args.rev):
        print("numerics: exact on an x86-64 CPU promises the same bytes, and they differ: "
              "failed (same commit, wheels and thread count? README: What reproduces)")
        return 1
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
