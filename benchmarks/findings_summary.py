"""Every claim's verdict in a findings run, and for each pair the rule tested: the mean
paired difference, its interval, and the seeds its gap and spread would need (80 % power).

    python benchmarks/findings_summary.py .dvc/tmp/findings    # the worktree of scripts/findings.sh

Prints a Markdown table (BENCHMARKS.md, Findings run). Reads the run's params.yaml and eval/;
the same functions render the pages, so the table and the pages agree.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stages.report import read_params  # noqa: E402  (first: stages pins kernels before numpy loads)
from pipeline.report import tables  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", help="a folder with params.yaml and eval/ (the findings worktree)")
    args = ap.parse_args(argv)
    p = read_params(os.path.join(args.run, "params.yaml"), os.path.join(args.run, "conf"))
    cells = tables.load_cells(os.path.join(args.run, "eval"), p["rows"], p["seeds"])
    paper = tables.load_paper()
    print("| table | claim | verdict | pair (paper: behind < ahead) | seeds | mean diff (+: paper's way) "
          "| interval | seeds to resolve |\n|---|---|---|---|---|---|---|---|")
    for bench in tables.benches(cells):
        s = tables.spec(paper, bench)
        for c in tables.claims(tables.bench_cells(cells, bench, s), s):
            shown = [r for r in c.results if r.pair.required or r.outcome == "reversed"]
            t = tables.pairs_table(shown) if shown else None
            if t is None or t.empty:
                print(f"| {bench} | {c.short} | {c.verdict} | | | | | |")
                continue
            mean = "mean difference (+: paper's way)"
            for _, r in t.iterrows():
                print(f"| {bench} | {c.short} | {c.verdict} | {r['paper: behind']} < {r['paper: ahead']} "
                      f"| {r['seeds']} | {r[mean]} | {r['interval']} "
                      f"| {r['seeds to resolve']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
