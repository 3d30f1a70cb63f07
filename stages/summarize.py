"""Stage `summarize@<bench>`: a table's headline numbers and validation curves, for DVC.

    python -m stages.summarize timit --out metrics

Writes, from the cells params.yaml asks for (benchmarks.<bench>.rows / aux_rows /
beta_rows x seeds):
  metrics/<bench>.json        {row: {s<seed>: the table's headline number}}: the test bound,
                              NLL or perplexity (the `quantity` of the table in
                              pipeline/report/paper_numbers.yaml); what `dvc exp show` and
                              `dvc metrics diff` list, one number a cell
  metrics/<bench>_cells.json  {eval/<bench>/<row>/s<seed>/metrics.json: every number of that
                              file}: the table's cells in git (the per-cell files are in DVC's
                              cache), which scripts/verify.py compares; not a DVC metric, so
                              `dvc exp show` stays one column a cell
  metrics/<bench>_valid/<row>.tsv
                              the row's validation ELBO (nats / seq) at each validation
                              update, mean over its seeds; versioned with the experiment, so
                              `dvc plots diff` draws one experiment's curves over another's
The rest of a cell stays in eval/<bench>/<row>/s<seed>/info.json and
models/<bench>/<row>/s<seed>/history.json.
"""
from __future__ import annotations

import argparse
import json
import os

from stages import params as P
from stages.common import output_dir, run, write_json


def cells(eval_dir: str, bench: str, rows: list, seeds: list) -> dict:
    """{eval/<bench>/<row>/s<seed>/metrics.json: its numbers}, in the order asked for."""
    out = {}
    for row in rows:
        for seed in seeds:
            name = f"eval/{bench}/{row}/s{seed}/metrics.json"
            with open(os.path.join(eval_dir, bench, row, f"s{seed}", "metrics.json")) as f:
                out[name] = json.load(f)
    return out


def headline(cells: dict, quantity: str) -> dict:
    """{row: {s<seed>: the cell's `quantity`}} from cells()."""
    out = {}
    for name, metrics in cells.items():
        _, _, row, seed, _ = name.split("/")
        out.setdefault(row, {})[seed] = metrics[quantity]
    return out


def valid_curve(models_dir: str, bench: str, row: str, seeds: list) -> list:
    """[(update, mean over seeds of the validation ELBO)] at the updates every seed validated."""
    per_seed = []
    for seed in seeds:
        with open(os.path.join(models_dir, bench, row, f"s{seed}", "history.json")) as f:
            recs = json.load(f)["history"]
        per_seed.append({r["update"]: r["valid_elbo_per_seq"] for r in recs if r.get("kind") == "valid"})
    steps = sorted(set.intersection(*(set(s) for s in per_seed))) if per_seed else []
    return [(u, sum(s[u] for s in per_seed) / len(per_seed)) for u in steps]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="timit, blizzard, mnist or imdb")
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--eval", default="eval", dest="eval_dir", help="evaluated cells (%(default)s)")
    ap.add_argument("--models", default="models", help="trained cells (%(default)s)")
    ap.add_argument("--out", default="metrics", help="folder of the files above (%(default)s)")
    args = ap.parse_args()
    from pipeline.report.tables import load_paper, spec

    params = P.read(args.params)
    rows, seeds = list(P.table_rows(params, args.bench)), P.seeds(params)
    quantity = spec(load_paper(), args.bench)["quantity"]
    table = cells(args.eval_dir, args.bench, rows, seeds)
    write_json(os.path.join(args.out, f"{args.bench}.json"), headline(table, quantity))
    write_json(os.path.join(args.out, f"{args.bench}_cells.json"), table)
    with output_dir(os.path.join(args.out, f"{args.bench}_valid")) as tmp:
        for row in rows:
            with open(tmp / f"{row}.tsv", "w") as f:
                f.write("update\tvalid_elbo_per_seq\n")
                f.writelines(f"{u}\t{v!r}\n" for u, v in valid_curve(args.models, args.bench, row, seeds))


if __name__ == "__main__":
    run(main)
