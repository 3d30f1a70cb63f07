"""Stage `check`: validate every parameter before any other stage runs.

    python -m stages.check --params params.yaml --out data/params.ok --rows data/rows

Every other stage depends on its output, so a bad value (a misspelt key, a wrong type, a
value out of its range, an unknown benchmark, source or row) stops `dvc repro` / `dvc exp run` here,
with one line, before DVC deletes the outputs of any stage that reads it. The output's bytes
do not depend on the values, so a change that passes invalidates nothing by itself.

It also writes data/rows/<bench>/<row>.json: the model keys that row's model reads, with
their values (pipeline.models.config_record). A training stage depends on that file instead
of the whole `model` section, so `-S model.gmm_components=...` retrains the GMM rows alone.
"""
import argparse

from stages import params as P
from stages.common import output_dir, run, write_json

PROTOCOL_KIND = {"timit": ("audio", 200), "blizzard": ("audio", 200), "mnist": ("binary", 1),
                 "imdb": ("tokens", 100)}


def model(params: dict, bench: str, row, kind: str, x_dim: int) -> dict:
    """Build the row's model on the meta device (no memory, no initialisation), so a bad
    model value stops here rather than in a training stage; return the model keys the row
    reads, with their values (what the training stage trains with: only_reads)."""
    from pipeline.models import config_record
    from pipeline.models.budget import param_count, resolve_budget
    from pipeline.models.distributions import OUTPUTS
    cfg = P.model_settings(params, bench, row, {"kind": kind, "x_dim": x_dim})
    if cfg.output not in OUTPUTS:
        raise P.ParamError(f"model.output={cfg.output!r} ({bench}/{row.name}): expected one of "
                           f"{', '.join(sorted(OUTPUTS))}")
    param_count(resolve_budget(cfg))
    return {k: v for k, v in config_record(cfg).items() if k not in ("name", "data", "x_dim")}


def check(params: dict) -> tuple[list[str], dict]:
    """Check every key against its rule (stages/params.py, RULES), then build every
    setting a stage will build (raises ParamError on the first bad one); returns the
    cells, for the log, and {bench: {row: the model keys it reads}}."""
    for key, value in P.leaves(params):
        P.checked(key, value)
    P.report_settings(params)
    benches = params.get("benchmarks")
    if not isinstance(benches, dict) or not benches:
        raise P.ParamError("benchmarks: expected a mapping of benchmark -> settings")
    cells, reads = [], {}
    for bench in benches:
        P.data_config(params, bench)
        rows = P.table_rows(params, bench)
        P.eval_settings(params, bench)
        kind, x_dim = PROTOCOL_KIND.get(bench, ("audio", 200))
        for name, row in rows.items():
            P.train_settings(params, bench, row, 0)
            reads.setdefault(bench, {})[name] = model(params, bench, row, kind, x_dim)
            cells += [f"{bench}/{name}/s{s}" for s in P.seeds(params)]
    return cells, reads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--out", default="data/params.ok",
                    help="written when every value passes (%(default)s)")
    ap.add_argument("--rows", default="data/rows",
                    help="folder of <bench>/<row>.json, the model keys each row reads (%(default)s)")
    args = ap.parse_args()
    cells, reads = check(P.read(args.params))
    with output_dir(args.rows) as tmp:
        for bench, rows in reads.items():
            for name, keys in rows.items():
                write_json(tmp / bench / f"{name}.json", keys)
    write_json(args.out, {"checked": True})
    print(f"params ok: {len(cells)} training cells")


if __name__ == "__main__":
    run(main)
