"""Report stage: evaluation outputs -> self-contained HTML pages in reports/.

    python stages/report.py --params params.yaml --eval eval --models models \
        --prepared data/prepared --out reports [--lock dvc.lock]

Renders one page per paper column that has evaluated rows (eval/<row>/metrics.json
"column": timit -> reports/timit.html, blizzard -> blizzard.html, mnist -> mnist.html)
and reports/index.html linking them, by running notebooks/speech_table.ipynb and
notebooks/index.ipynb with papermill (kernel python3) and exporting them with nbconvert.
The output folder is rendered beside the target and swapped in whole.

params.yaml keys read:
    profile              shown on every page
    aux_weight           shown on every page
    report.audio_examples    (default 2)    real and generated clips per row shown
    report.audio_seconds     (default 3.0)  each clip cut to at most this long
    report.dpi               (default 80)   PNG resolution of the figures
    report.n_mels            (default 64)   mel bands of the spectrograms
    report.active_threshold  (default 0.01) nats/seq line on the latent-usage charts
The `report:` section may be missing (all defaults); an unknown key is an error.

Provenance on the pages comes from --lock (dvc.lock). Do not list dvc.lock as a dependency
of this stage: DVC rewrites it after every stage, and the upstream stages' entries are
recorded before this one runs.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import yaml

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pipeline.config import ConfigError, from_dict  # noqa: E402
from pipeline.report import html, tables  # noqa: E402
from pipeline.report.pages import ReportConfig, config_dict  # noqa: E402


def read_params(path: str) -> tuple[dict, ReportConfig]:
    with open(path, encoding="utf-8") as f:
        params = yaml.safe_load(f) or {}
    section = params.get("report")
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(f"{path}: 'report' must be a mapping, got {type(section).__name__}")
    try:
        cfg = from_dict(ReportConfig, section)
    except ConfigError as e:
        raise ConfigError(f"{path}: report section: {e}") from None
    return params, cfg


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval", default="eval", dest="eval_dir")
    ap.add_argument("--models", default="models")
    ap.add_argument("--prepared", default="data/prepared")
    ap.add_argument("--lock", default="dvc.lock")
    ap.add_argument("--out", default="reports")
    args = ap.parse_args(argv)

    params, cfg = read_params(args.params)
    metrics = tables.load_metrics(args.eval_dir)
    columns = tables.columns_present(metrics)
    common = {"eval_dir": args.eval_dir, "lock_path": args.lock,
              "profile": str(params.get("profile", "")), "aux_weight": params.get("aux_weight")}

    out = os.path.abspath(args.out)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".report-", dir=parent)
    try:
        pages = []
        for column in columns:
            t0 = time.perf_counter()
            name = f"{column}.html"
            html.render(os.path.join(html.NOTEBOOKS, "speech_table.ipynb"),
                        dict(common, column=column, models_dir=args.models,
                             prepared_dir=args.prepared, report=config_dict(cfg)),
                        os.path.join(tmp, name), title=f"Z-Forcing reproduction: {column}")
            pages.append([column, name])
            print(f"report: {name} ({(metrics['column'] == column).sum()} rows) "
                  f"in {time.perf_counter() - t0:.1f} s", flush=True)
        t0 = time.perf_counter()
        html.render(os.path.join(html.NOTEBOOKS, "index.ipynb"), dict(common, pages_list=pages),
                    os.path.join(tmp, "index.html"), title="Z-Forcing reproduction: report")
        print(f"report: index.html in {time.perf_counter() - t0:.1f} s", flush=True)
        old = None
        if os.path.exists(out):
            old = out + ".old"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp, out)
        os.chmod(out, 0o755)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ConfigError as e:
        print(f"report: {e}", file=sys.stderr)
        sys.exit(2)
