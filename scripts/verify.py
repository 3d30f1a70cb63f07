"""Check a rerun against the committed results: bytes first, then numbers within tolerances.

    dvc repro -f                  # rerun everything: on a GPU, another CPU, another OS
    python scripts/verify.py      # compare with the committed run (--rev to pick another)
    python scripts/verify.py --findings   # a rerun of scripts/findings.sh, within tolerances

The committed numbers are the tables' `metrics/<bench>_cells.json` (summarize@<bench>
writes them from every cell's eval/<bench>/<row>/s<seed>/metrics.json, which lives in DVC's
cache). First, each of them is checked against the hash its own commit's dvc.lock records
for it: a number edited by hand after the run (and committed) is not the run's result, and
comparing with it would prove nothing. Exit status 1 names each such file.

On an x86-64 CPU with AVX2 and the pinned wheels the rerun should match byte for byte:
`dvc.lock` and `reports/` are then unchanged, and that is the whole check. Where bytes
cannot match (GPUs, other architectures, `train.compile`), every metric of every cell is
compared with the committed one within the tolerances below, and the ones that moved are
listed. Exit status 0: identical or within tolerance; 1: something moved beyond it, bytes
differ where they were promised (`numerics: exact` in both runs, every cell on an x86-64
CPU, uncompiled; `fast` promises numbers only), or a committed metrics file is not its
dvc.lock's; 2: a file that cannot be read (one line).

The tolerances are stated, not tuned after the fact: without kernel pinning, a rerun on a
second AVX2 machine moved the default profile's bounds by 0.2-0.8 % (BENCHMARKS.md), so 2 %
leaves room for other hardware while still catching a changed result. KL terms are small
differences of large numbers and move more; active units are counts.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

# metric -> (relative, absolute) tolerance: |now - committed| <= rel * |committed| + abs
TOLERANCE = {"kl": (0.10, 1.0), "kl_per_word": (0.10, 0.01), "active_units": (0.0, 2.0)}
DEFAULT = (0.02, 0.0)


class Unreadable(Exception):
    """A metrics file or dvc.lock that cannot be parsed: the message is the whole report."""


def numbers(cells: dict) -> dict:
    """{cell's metrics file: its metrics} -> {(file, metric): value}, numbers only."""
    return {(path, key): float(value) for path, metrics in cells.items() for key, value in metrics.items()
            if isinstance(value, (int, float)) and not isinstance(value, bool)}


def cell_numbers(files: dict, where: str = "") -> dict:
    """{table file (metrics/<b>_cells.json): its JSON bytes} -> {(cell, metric): value}."""
    out = {}
    for path, raw in files.items():
        try:
            cells = json.loads(raw)
        except ValueError as err:  # bad UTF-8 too
            raise Unreadable(f"{path}{where} is not JSON ({err}); restore it with `git checkout "
                             f"-- {path}` or rerun its stage") from None
        if not (isinstance(cells, dict) and all(isinstance(m, dict) for m in cells.values())):
            raise Unreadable(f"{path}{where}: expected a JSON object of cells' metrics; restore it "
                             f"with `git checkout -- {path}` or rerun its stage")
        out.update(numbers(cells))
    return out


def git(*args: str) -> bytes:
    res = subprocess.run(["git", *args], capture_output=True)
    if res.returncode:
        why = (res.stderr.decode(errors="replace").strip().splitlines() or ["failed"])[0]
        raise Unreadable(f"git {' '.join(args)}: {why}")
    return res.stdout


def git_show(rev: str, path: str) -> bytes:
    return git("show", f"{rev}:{path}")


def committed_tables(rev: str) -> dict:
    """{metrics/<b>.json and metrics/<b>_cells.json: their bytes} in git at `rev`."""
    names = git("ls-tree", "--name-only", rev, "--", "metrics/").decode().split()
    return {n: git_show(rev, n) for n in names if n.endswith(".json")}


def cells_only(files: dict) -> dict:
    return {n: raw for n, raw in files.items() if n.endswith("_cells.json")}


def workspace_cells() -> dict:
    """{metrics/<b>_cells.json: its bytes} of the rerun in the working directory."""
    return {p.as_posix(): p.read_bytes() for p in sorted(Path("metrics").glob("*_cells.json"))}


def workspace_metrics(root=".") -> dict:
    """{eval/<b>/<row>/s<seed>/metrics.json: its bytes} of the run in `root`."""
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(Path(root, "eval").glob("**/metrics.json"))}


def recorded_md5(lock: bytes, where: str) -> dict:
    """{path: md5} of every single-file output dvc.lock records (folders end in .dir)."""
    try:
        stages = (yaml.safe_load(lock) or {}).get("stages", {})
        return {o["path"]: o["md5"] for s in stages.values() for o in s.get("outs", [])
                if "md5" in o and not o["md5"].endswith(".dir")}
    except (yaml.YAMLError, AttributeError, TypeError, KeyError) as err:
        raise Unreadable(f"dvc.lock{where} is not a DVC lock file ({type(err).__name__}); "
                         "restore it with `git checkout -- dvc.lock`") from None


def not_as_recorded(files: dict, lock: bytes, where: str) -> list[str]:
    """The files whose bytes differ from the md5 dvc.lock records for them."""
    md5 = recorded_md5(lock, where)
    return [p for p, raw in files.items() if p in md5 and hashlib.md5(raw).hexdigest() != md5[p]]


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
    committed = subprocess.run(["git", "show", f"{rev}:params.yaml"], capture_output=True, text=True)
    modes = [yaml.safe_load(t).get("numerics", "exact")  # runs before the key were all pinned
             for t in (committed.stdout or "{}",
                       Path("params.yaml").read_text() if Path("params.yaml").exists() else "{}")]
    cells = [json.loads(p.read_text())["settings"] for p in Path("eval").glob("**/info.json")]
    return modes == ["exact", "exact"] and bool(cells) and all(
        s.get("numerics") == {"train": "exact", "eval": "exact"} and s["hardware"]["machine"] == "x86_64"
        and s["hardware"]["train_device"] == s["hardware"]["eval_device"] == "cpu"
        and s["train"].get("compile", "off") == s["eval"].get("compile", "off") == "off" for s in cells)


def flat(tree, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a parsed YAML tree (lists are leaves)."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in flat(sub, f"{prefix}{key}.").items()} \
        if tree else {prefix: tree}


def params_hint(rev: str) -> str:
    """A line naming the params.yaml keys that differ from `rev`'s (an experiment's `-S`),
    or "" when they match or either file is missing or unreadable."""
    committed = subprocess.run(["git", "show", f"{rev}:params.yaml"], capture_output=True, text=True)
    path = Path("params.yaml")
    if committed.returncode or not path.exists():
        return ""
    try:
        a, b = flat(yaml.safe_load(committed.stdout) or {}), flat(yaml.safe_load(path.read_text()) or {})
    except yaml.YAMLError:
        return ""
    missing = object()
    keys = sorted(k.rstrip(".") for k in set(a) | set(b) if a.get(k, missing) != b.get(k, missing))
    return (f"params.yaml differs from {rev} in: {', '.join(keys)}; an experiment's numbers are "
            "expected to move") if keys else ""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rev", default="HEAD", help="the committed run to compare with (git revision)")
    ap.add_argument("--findings", action="store_true", help="compare findings/metrics.json (a "
                    "rerun of scripts/findings.sh) with the committed one, within the tolerances")
    ap.add_argument("--collect", metavar="RUN", help="write findings/metrics.json from the run "
                    "in folder RUN (scripts/findings.sh does)")
    args = ap.parse_args(argv)
    if args.collect:
        collect_findings(args.collect)
        return 0
    try:
        return verify_findings(args.rev) if args.findings else verify(args.rev)
    except Unreadable as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


def collect_findings(run: str) -> None:
    """findings/metrics.json: every cell's metrics of the findings run in `run`, one file."""
    cells = {path: json.loads(raw) for path, raw in workspace_metrics(run).items()}
    with open("findings/metrics.json", "w") as f:
        json.dump(cells, f, indent=1, sort_keys=True)


def findings_numbers(raw: bytes, where: str) -> dict:
    """findings/metrics.json ({metrics file: its metrics}) -> {(file, metric): value}."""
    try:
        return numbers(json.loads(raw))
    except (ValueError, AttributeError) as err:
        raise Unreadable(f"findings/metrics.json{where} is not the findings run's metrics "
                         f"({type(err).__name__}); rerun `bash scripts/findings.sh`") from None


def verify_findings(rev: str) -> int:
    """The findings run promises numbers, not bytes (numerics: fast): every metric of every
    cell within the tolerances of the committed findings/metrics.json."""
    path = Path("findings/metrics.json")
    if not path.exists():
        raise Unreadable("findings/metrics.json is missing: run `bash scripts/findings.sh` first")
    table = compare(findings_numbers(git_show(rev, path.as_posix()), f" at {rev}"),
                    findings_numbers(path.read_bytes(), " in the workspace"))
    bad = table[~table["ok"]]
    print(f"findings: {int((table['change'].fillna(1) != 0).sum())} of {len(table)} metrics differ "
          f"from {rev}, {len(bad)} beyond tolerance")
    if len(bad):
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(bad.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    return 1 if len(bad) else 0


def verify(rev: str) -> int:
    tables = committed_tables(rev)
    committed, now = cells_only(tables), workspace_cells()
    if not committed:
        raise Unreadable(f"{rev} has no metrics/<bench>_cells.json (a run recorded before they "
                         "existed?): pass a later commit with --rev")
    before, after = cell_numbers(committed, f" at {rev}"), cell_numbers(now, " in the workspace")  # readable?
    # the committed run must be what its dvc.lock says; the rerun in the workspace is what
    # is being checked, so its numbers are compared, not trusted or refused
    edited = not_as_recorded(tables, git_show(rev, "dvc.lock"), f" at {rev}")
    for path in edited:
        print(f"{path} at {rev} is not the file its dvc.lock records (edited after the run?): "
              "its numbers are not the run's", file=sys.stderr)
    if edited:
        return 1
    # dvc.lock holds every cell's hash; metrics/ is in git, so a hand-edited number shows too
    diff = subprocess.run(["git", "diff", "--quiet", rev, "--", "dvc.lock", "reports", "metrics"])
    if diff.returncode == 0:
        print(f"byte for byte: dvc.lock, reports/ and metrics/ match {rev}, and each table's "
              "cells file is the one its dvc.lock records")
        return 0
    table = compare(before, after)
    if table.empty:
        print("no metrics found: run `dvc repro` first", file=sys.stderr)
        return 1
    moved = table[table["change"].fillna(1) != 0]
    bad = table[~table["ok"]]
    print(f"not byte for byte: {len(moved)} of {len(table)} metrics differ from {rev}, "
          f"{len(bad)} beyond tolerance")
    hint = params_hint(rev)
    if hint:
        print(hint)
    if len(moved):
        with pd.option_context("display.max_rows", None, "display.width", 200):
            print(moved.to_string(index=False, float_format=lambda v: f"{v:.6g}"))
    if bytes_promised(rev):
        print("numerics: exact on an x86-64 CPU promises the same bytes, and they differ: "
              "failed (same commit, wheels and thread count? README: What reproduces)")
        return 1
    return 1 if len(bad) else 0


if __name__ == "__main__":
    sys.exit(main())
