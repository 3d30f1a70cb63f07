"""Stage `check`: validate every parameter before any other stage runs.

    python -m stages.check --params params.yaml --out data/params.ok

Every other stage depends on its output, so a bad value (a misspelt key, a wrong type, a
negative size, an unknown benchmark, source or row) stops `dvc repro` / `dvc exp run` here,
with one line, before DVC deletes the outputs of any stage that reads it. The output's bytes
do not depend on the values, so a change that passes invalidates nothing by itself.
"""
import argparse

from stages import params as P
from stages.common import run, write_json

PROTOCOL_KIND = {"timit": ("audio", 200), "blizzard": ("audio", 200), "mnist": ("binary", 1),
                 "imdb": ("tokens", 100)}


def model(params: dict, bench: str, row, kind: str, x_dim: int) -> None:
    """Build the row's model on the meta device (no memory, no initialisation), so a bad
    model value stops here rather than in a training stage."""
    from pipeline.models.budget import param_count, resolve_budget
    from pipeline.models.distributions import OUTPUTS
    cfg = resolve_budget(P.model_settings(params, bench, row, {"kind": kind, "x_dim": x_dim}))
    if cfg.output not in OUTPUTS:
        raise P.ParamError(f"model.output={cfg.output!r} ({bench}/{row.name}): expected one of "
                           f"{', '.join(sorted(OUTPUTS))}")
    param_count(cfg)


def check(params: dict) -> list[str]:
    """Build every setting a stage will build (raises ParamError on the first bad one);
    returns the cells, for the log."""
    P.seeds(params)
    P.report_settings(params)
    from stages.kernels import NUMERICS
    if params["numerics"] not in NUMERICS:
        raise P.ParamError(f"numerics={params['numerics']!r}: expected one of {', '.join(NUMERICS)}")
    P._value(float, params["aux_weight"], "aux_weight")
    if params["aux_weight"] is not None and float(params["aux_weight"]) < 0:
        raise P.ParamError(f"aux_weight={params['aux_weight']}: cannot be negative")
    benches = params.get("benchmarks")
    if not isinstance(benches, dict) or not benches:
        raise P.ParamError("benchmarks: expected a mapping of benchmark -> settings")
    cells = []
    for bench in benches:
        P.data_config(params, bench)
        rows = P.table_rows(params, bench)
        P.eval_settings(params, bench)
        kind, x_dim = PROTOCOL_KIND.get(bench, ("audio", 200))
        for name, row in rows.items():
            P.train_settings(params, bench, row, 0)
            model(params, bench, row, kind, x_dim)
            cells += [f"{bench}/{name}/s{s}" for s in P.seeds(params)]
    return cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--out", default="data/params.ok")
    args = ap.parse_args()
    cells = check(P.read(args.params))
    write_json(args.out, {"checked": True})
    print(f"params ok: {len(cells)} training cells")


if __name__ == "__main__":
    run(main)
