"""summarize@<bench>: one headline number a cell, every number of every cell in one file, and
each row's validation curve averaged over the seeds that validated at the same updates."""
import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _cell(root: Path, row: str, seed: int, bound: float, valid: dict) -> None:
    ev = root / "eval/mnist" / row / f"s{seed}"
    ev.mkdir(parents=True)
    (ev / "metrics.json").write_text(json.dumps({"bound": bound, "nll": -bound, "kl": 1.0}))
    md = root / "models/mnist" / row / f"s{seed}"
    md.mkdir(parents=True)
    recs = [{"kind": "train", "update": 5, "elbo_per_seq": -9.0}]
    recs += [{"kind": "valid", "update": u, "valid_elbo_per_seq": v} for u, v in valid.items()]
    (md / "history.json").write_text(json.dumps({"history": recs}))


def test_headline_per_cell_and_curves_per_row(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["seeds"] = [0, 1]
    params["benchmarks"]["mnist"].update(rows=["lstm"], aux_rows=["zforcing_aux"])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    _cell(tmp_path, "lstm", 0, -80.0, {10: -90.0, 20: -85.0})
    _cell(tmp_path, "lstm", 1, -82.0, {10: -92.0, 20: -86.0})
    _cell(tmp_path, "zforcing_aux", 0, -79.5, {10: -88.0, 20: -84.0})
    _cell(tmp_path, "zforcing_aux", 1, -81.5, {10: -90.0})     # a seed that stopped early
    _cell(tmp_path, "rnn_gauss", 0, -1.0, {10: -1.0})           # not asked for: left out
    subprocess.run([sys.executable, "-m", "stages.summarize", "mnist"], cwd=tmp_path,
                   env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, check=True)
    # MNIST's headline is the NLL (pipeline/report/paper_numbers.yaml: quantity)
    assert json.loads((tmp_path / "metrics/mnist.json").read_text()) == {
        "lstm": {"s0": 80.0, "s1": 82.0}, "zforcing_aux": {"s0": 79.5, "s1": 81.5}}
    # every number of each cell asked for, keyed by its file: what scripts/verify.py compares
    cells = json.loads((tmp_path / "metrics/mnist_cells.json").read_text())
    assert sorted(cells) == [f"eval/mnist/{r}/s{s}/metrics.json" for r in ("lstm", "zforcing_aux") for s in (0, 1)]
    assert cells["eval/mnist/lstm/s1/metrics.json"] == {"bound": -82.0, "nll": 82.0, "kl": 1.0}
    curves = tmp_path / "metrics/mnist_valid"
    assert sorted(p.name for p in curves.iterdir()) == ["lstm.tsv", "zforcing_aux.tsv"]
    assert (curves / "lstm.tsv").read_text() == \
        "update\tvalid_elbo_per_seq\n10\t-91.0\n20\t-85.5\n"
    assert (curves / "zforcing_aux.tsv").read_text() == "update\tvalid_elbo_per_seq\n10\t-89.0\n"
