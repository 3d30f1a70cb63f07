"""Report stage: evaluated cells -> self-contained HTML pages.

    python -m stages.report --params params.yaml --eval eval --models models --data data \
        --out reports

Writes reports/<bench>.html for every bench under eval/ (notebooks/bench.ipynb) and
reports/index.html (notebooks/index.ipynb), rendered with papermill and nbconvert into a
folder beside --out that then replaces it whole.

params.yaml keys read: profile_name, seeds, benchmarks.<bench>.rows / aux_rows / beta_rows
(the cells shown: only those, so metrics of other profiles' cells in eval/ stay off the
pages), benchmarks.<bench>.source (the index says when the evaluated data no longer matches
it), and the report: section (stages/params.py):
    audio_examples    real clips, and generated clips per row (2)
    audio_seconds     each clip cut to at most this long (3.0)
    dpi               PNG resolution (80); figures are drawn at no less than 80, where their
                      8-pt text is 9 px high (pipeline/report/figures.py)
    n_mels            mel bands of the spectrograms (64)
    active_threshold  nats / seq: the line on the latent-usage charts (0.01)
and all of params.yaml for the page headers' overrides: the keys whose values differ from
conf/ (--conf) composed with profile=<profile_name>, i.e. a run's `-S` settings.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict

from pipeline.errors import UserError
from stages import params as P
from stages.common import run

MAX_PAGE_BYTES = 2_000_000


def overrides(params: dict, conf: str) -> list | None:
    """["key=value", ...] for every setting of params whose value differs from conf/
    composed with profile=<profile_name> (what `dvc exp run -S` changed, or a hand edit);
    None when conf/ cannot be composed (missing, or no such profile)."""
    conf = os.path.abspath(conf)
    if not os.path.isfile(os.path.join(conf, "config.yaml")):
        return None
    from dvc.utils.hydra import compose_and_dump
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "params.yaml")
        try:
            compose_and_dump(out, conf, None, "config", os.path.dirname(conf),
                             [f"profile={params['profile_name']}"])
            base = dict(P.leaves(P.read(out)))
        except Exception:  # noqa: BLE001  hydra's and P's errors alike: the page says "unknown"
            return None
    now, missing = dict(P.leaves(params)), object()
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in now.items()
            if base.get(k, missing) != v] + [f"~{k}" for k in base if k not in now]


def read_params(path: str, conf: str = "conf") -> dict:
    params = P.read(path)
    r = asdict(P.report_settings(params))
    benches = params.get("benchmarks") or {}
    return {"report": r, "profile": str(params["profile_name"]), "overrides": overrides(params, conf),
            "seeds": P.seeds(params), "rows": {b: list(P.table_rows(params, b)) for b in benches},
            "sources": {b: v.get("source") for b, v in (params["benchmarks"] or {}).items()
                        if isinstance(v, dict)}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--eval", default="eval", dest="eval_dir", help="evaluated cells (%(default)s)")
    ap.add_argument("--models", default="models", help="trained cells (%(default)s)")
    ap.add_argument("--data", default="data", help="prepared data, for audio clips (%(default)s)")
    ap.add_argument("--conf", default="conf", help="the folder params.yaml is composed from, "
                    "for the overrides on each page (%(default)s)")
    ap.add_argument("--out", default="reports", help="pages, replaced whole (%(default)s)")
    ap.add_argument("--provenance", default="", help="a line on every page saying what produced "
                    "it, for pages rendered outside DVC (scripts/findings.sh: commit and command)")
    args = ap.parse_args(argv)
    from pipeline.report import html, tables  # after argument parsing: slow imports

    p = read_params(args.params, args.conf)
    benches = tables.benches(tables.load_cells(args.eval_dir, p["rows"], p["seeds"]))
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".report-", dir=os.path.dirname(out))
    try:
        jobs = [(f"{b}.html", "bench.ipynb", {"bench": b, "eval_dir": args.eval_dir,
                                               "models_dir": args.models, "data_dir": args.data,
                                               "report": p["report"], "profile": p["profile"],
                                               "overrides": p["overrides"],
                                               "seeds": p["seeds"], "rows": p["rows"][b],
                                               "provenance": args.provenance})
                for b in benches]
        jobs.append(("index.html", "index.ipynb", {
            "eval_dir": args.eval_dir, "pages": [[b, f"{b}.html"] for b in benches],
            "profile": p["profile"], "overrides": p["overrides"], "seeds": p["seeds"],
            "sources": p["sources"], "rows": p["rows"], "provenance": args.provenance}))
        def render(job):
            name, notebook, params = job
            t0 = time.perf_counter()
            size = html.render(notebook, params, os.path.join(tmp, name),
                               f"Z-Forcing reproduction: {name[:-5]}")
            print(f"report: {name} {size / 1e6:.2f} MB in {time.perf_counter() - t0:.1f} s",
                  flush=True)
            if size > MAX_PAGE_BYTES:
                raise UserError(f"{name} would be {size / 1e6:.1f} MB (limit 2 MB): lower "
                                "report.audio_examples, report.audio_seconds or report.dpi "
                                "(down to 80)")

        # two kernels at a time: a page spends most of its time starting one and importing
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(render, jobs))
        old = out + ".old"
        if os.path.exists(out):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        os.chmod(out, 0o755)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    run(main)
