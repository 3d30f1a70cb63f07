"""Report tables: paper numbers, our bounds, differences, ordering check, provenance.

`make_fixture` writes a small project (eval/, models/, data/prepared, dvc.lock,
params.yaml) following the evaluate/train stages' output contract; the HTML tests reuse it.
"""
import json
import math
import os

import numpy as np
import pytest
import yaml

from pipeline.report import tables
from pipeline.rows import ROWS

SR = 16000

# row -> (elbo_per_seq, iwae_per_seq or None): ordered like the paper except rnn_ar on top
VALUES = {
    "rnn_gauss": (-1500.25, None),
    "rnn_gmm": (1200.5, None),
    "rnn_ar": (9100.75, None),
    "vrnn_gauss": (2500.0, 2550.125),
    "srnn": (4000.0, None),
    "zforcing": (5000.0, None),
    "zforcing_aux": (6000.5, 6100.25),
}
EXACT = {"rnn_gauss", "rnn_gmm", "rnn_ar"}


def _result(elbo, iwae, exact, steps=400, seqs=10, kl_dims=None, quirk=False):
    denom = 11 if quirk else seqs
    total = elbo * seqs
    r = {"sequences": seqs, "steps": steps, "denominator": denom,
         "elbo_per_seq": total / denom, "elbo_per_step": total / steps,
         "elbo_per_sample": total / steps / 200,
         "log_px_per_seq": (total + 30 * seqs) / denom, "log_px_per_step": 0.0,
         "log_px_per_sample": 0.0,
         "kl_per_seq": 0.0 if exact else 30.0, "kl_per_step": 0.0, "kl_per_sample": 0.0,
         "aux_per_seq": 0.0, "aux_per_step": 0.0, "aux_per_sample": 0.0, "exact": exact}
    if exact:
        r["log_px_per_seq"] = r["elbo_per_seq"]
    if iwae is not None:
        r.update(iwae_per_seq=iwae * seqs / denom, iwae_per_step=iwae * seqs / steps,
                 iwae_per_sample=iwae * seqs / steps / 200, iwae_k=8)
    if kl_dims is not None:
        r["active_units"] = int(sum(v > 0.01 for v in kl_dims))
    return r


def _history(seed, latent, n=30):
    rng = np.random.default_rng(seed)
    h = []
    for u in range(1, n + 1):
        h.append({"kind": "train", "update": u * 10, "epoch": u // 10, "loss": 100.0 / u + rng.random(),
                  "nll_per_step": 3.0 / u, "log_px_per_seq": -100.0 / u,
                  "kl_per_seq": (5.0 + u * 0.1) if latent else 0.0,
                  "aux_per_seq": (50.0 / u) if latent else 0.0, "bwd_nll_per_seq": 0.0,
                  "elbo_per_seq": -100.0 / u - 5, "grad_norm": 1.0, "kl_weight": min(1.0, 0.2 + 0.03 * u),
                  "aux_weight": min(0.5, 0.02 * u), "good_updates": u * 10, "skipped_updates": 0,
                  "lr": 1e-3, "frames_per_s": 1000.0, "ms_per_update": 5.0})
        if u % 10 == 0:
            h.append({"kind": "valid", "update": u * 10, "epoch": u // 10,
                      "valid_elbo_per_seq": -90.0 / u, "valid_elbo_per_step": -2.0 / u,
                      "valid_kl_per_seq": 4.0, "lr": 1e-3, "lr_halved": False})
    return {"history": h}


def _lock(rows):
    stages = {"prepare": {"cmd": "python stages/prepare.py", "deps": [
        {"path": "stages/prepare.py", "hash": "md5", "md5": "0" * 32, "size": 10}],
        "outs": [{"path": "data/prepared", "hash": "md5", "md5": "d" * 32 + ".dir", "size": 1, "nfiles": 3}]}}
    for i, r in enumerate(rows):
        stages[f"train@{r}"] = {
            "cmd": f"python stages/train.py --row {r}",
            "deps": [{"path": "data/prepared", "hash": "md5", "md5": "d" * 32 + ".dir"},
                     {"path": "pipeline/models", "hash": "md5", "md5": "c" * 31 + "1.dir"},
                     {"path": "stages/train.py", "hash": "md5", "md5": "e" * 32}],
            "params": {"params.yaml": {"aux_weight": 0.5, "model.rnn_dim": 16, "profile": "default"}},
            "outs": [{"path": f"models/{r}", "hash": "md5", "md5": f"{i:02d}" + "a" * 30 + ".dir"}]}
        stages[f"evaluate@{r}"] = {
            "cmd": f"python stages/evaluate.py --row {r}",
            "deps": [{"path": "data/prepared", "hash": "md5", "md5": "d" * 32 + ".dir"},
                     {"path": f"models/{r}", "hash": "md5", "md5": f"{i:02d}" + "a" * 30 + ".dir"}],
            "params": {"params.yaml": {"evaluate.iwae_k": 8}},
            "outs": [{"path": f"eval/{r}", "hash": "md5", "md5": f"{i:02d}" + "f" * 30 + ".dir"}]}
    return {"schema": "2.0", "stages": stages}


def _prepared(root, n_utts=3):
    """A tiny TIMIT-layout prepared dir (test split only: utterances of int16 frames)."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(0)
    lengths = [12, 9, 15][:n_utts]
    t = np.arange(sum(lengths) * 200) / SR
    pcm = (3000 * np.sin(2 * math.pi * 220 * t) + rng.normal(0, 300, t.shape)).astype(np.int16)
    np.save(os.path.join(root, "test.npy"), pcm.reshape(-1, 200))
    np.save(os.path.join(root, "test_offsets.npy"), np.cumsum([0] + lengths).astype(np.int64))
    manifest = {"dataset": "synthetic", "kind": "audio", "x_dim": 200, "sample_rate": SR,
                "frame_size": 200, "mean": 0.0, "std": 1000.0,
                "splits": {"test": {"layout": "utterances", "file": "test.npy",
                                    "offsets": "test_offsets.npy", "sequences": n_utts}},
                "protocol": {"name": "timit", "target_mode": None}}
    with open(os.path.join(root, "manifest.json"), "w") as f:
        json.dump(manifest, f)


def make_fixture(root, rows=tuple(VALUES), lock=True, quirk=True, prepared=True, column="timit",
                 report=None):
    """Write eval/, models/, data/prepared, dvc.lock and params.yaml under `root`."""
    root = str(root)
    for r in rows:
        row = ROWS[r]
        elbo, iwae = VALUES[r]
        exact = r in EXACT
        d = os.path.join(root, "eval", r)
        os.makedirs(d, exist_ok=True)
        kl_dims = None if exact else [0.0, 0.005, 2.5, 7.25, 0.02, 1.0]
        settings = {"model": {"name": row.model, "rnn_dim": 16, "z_dim": 6, "output": "gaussian",
                              "z_force": True, "cond_ln": False},
                    "train": {"lr": 1e-3, "batch_size": 4, "max_updates": 300, "kl_anneal": row.kla},
                    "row": {"kla": row.kla, "aux": row.aux}, "aux_weight": 0.5 if row.aux else 0.0,
                    "protocol": {"name": "timit", "target_mode": None,
                                 "first_step": "test: first frame only conditioned on",
                                 "eval_context": "whole utterance"},
                    "device": "cpu", "threads": 1}
        metrics = {"row": r, "model": row.model, "paper_name": row.paper_name, "dataset": "synthetic",
                   "column": column, "exact": exact, "params": 1000 + 37 * len(r), "profile": "default",
                   "test": _result(elbo, iwae, exact, kl_dims=kl_dims),
                   "test_quirk": _result(elbo, iwae, exact, quirk=True) if quirk else None,
                   "valid": _result(elbo * 0.9, None, exact), "settings": settings,
                   "train": {"updates": 300, "skipped": 0, "seconds": 12.5,
                             "best_valid_elbo_per_seq": elbo * 0.9}}
        with open(os.path.join(d, "metrics.json"), "w") as f:
            json.dump(metrics, f)
        if not exact:
            with open(os.path.join(d, "latent.json"), "w") as f:
                json.dump({"kl_per_dim": kl_dims}, f)
        rng = np.random.default_rng(len(r))
        np.savez(os.path.join(d, "samples.npz"),
                 generated=(rng.normal(0, 2000, (2, 4000))).astype(np.float32), sample_rate=SR)
        m = os.path.join(root, "models", r)
        os.makedirs(m, exist_ok=True)
        with open(os.path.join(m, "history.json"), "w") as f:
            json.dump(_history(len(r), not exact), f)
    if lock:
        with open(os.path.join(root, "dvc.lock"), "w") as f:
            yaml.safe_dump(_lock(rows), f)
    if prepared:
        _prepared(os.path.join(root, "data", "prepared"))
    params = {"profile": "default", "aux_weight": 0.5}
    if report is not None:
        params["report"] = report
    with open(os.path.join(root, "params.yaml"), "w") as f:
        yaml.safe_dump(params, f)
    return root


@pytest.fixture
def project(tmp_path):
    return make_fixture(tmp_path)


def test_paper_numbers_cover_every_row_name():
    paper = tables.load_paper_numbers()
    names = {r.paper_name for r in ROWS.values()}
    assert set(paper["rows"]) <= names, set(paper["rows"]) - names
    assert paper["rows"]["Z-Forcing + aux"]["timit"]["value"] == 69530
    assert paper["rows"]["RNN-Gauss"]["blizzard"]["kind"] == "="
    assert paper["source"]["arxiv"] == "1711.05411"
    assert {c["name"] for c in paper["context"]} >= {"Variational Bi-LSTM", "DRAW"}


def test_column_table_numbers_signs_and_diff(project):
    m = tables.load_metrics(os.path.join(project, "eval"))
    assert list(m["row"]) == [r for r in ROWS if r in VALUES]  # paper order
    lock = tables.load_lock(os.path.join(project, "dvc.lock"))
    t = tables.column_table(m, "timit", lock=lock).set_index("row")
    assert t.loc["rnn_gauss", "sign"] == "=" and t.loc["rnn_gauss", "bound"] == "exact log-likelihood"
    assert t.loc["zforcing_aux", "sign"] == "≥"
    assert t.loc["zforcing_aux", "ours"] == pytest.approx(6100.25)      # IWAE preferred
    assert t.loc["zforcing_aux", "bound"].startswith("IWAE")
    assert t.loc["zforcing", "bound"].startswith("ELBO")
    assert t.loc["zforcing_aux", "paper"] == 69530
    assert t.loc["zforcing_aux", "diff"] == pytest.approx(6100.25 - 69530)
    assert t.loc["rnn_gauss", "diff"] == pytest.approx(-1500.25 + 1900) and t.loc["rnn_gauss", "better"]
    assert t.loc["rnn_ar", "paper"] is None or math.isnan(t.loc["rnn_ar", "paper"])
    assert t.loc["zforcing", "quirk"] == pytest.approx(5000.0 * 10 / 11)
    assert t.loc["zforcing", "params"] == 1000 + 37 * len("zforcing")
    assert "data dddddddddd" in t.loc["zforcing", "provenance"]
    assert "model " in t.loc["zforcing", "provenance"] and "params " in t.loc["zforcing", "provenance"]


def test_mnist_column_is_nll(tmp_path):
    make_fixture(tmp_path, rows=("zforcing", "zforcing_aux"), column="mnist", prepared=False)
    m = tables.load_metrics(os.path.join(tmp_path, "eval"))
    t = tables.column_table(m, "mnist").set_index("row")
    assert t.loc["zforcing", "ours"] == pytest.approx(-5000.0) and t.loc["zforcing", "sign"] == "≤"
    assert t.loc["zforcing", "paper"] == pytest.approx(80.60)
    assert t.loc["zforcing", "better"]  # lower NLL is better
    assert tables.columns_present(m) == ["mnist"]


def test_ordering_check_and_rnn_ar(project):
    m = tables.load_metrics(os.path.join(project, "eval"))
    t = tables.column_table(m, "timit")
    o = tables.ordering_check(t)
    assert o["holds"] is True and o["missing"] == []
    assert "holds" in o["statement"]
    assert o["ranking"][0] == "rnn_ar"
    assert "ranks 1 of 7" in o["rnn_ar"] and "beats every latent" in o["rnn_ar"]
    t.loc[t["row"] == "srnn", "ours"] = 99999.0
    o = tables.ordering_check(t)
    assert o["holds"] is False and "does not hold" in o["statement"]
    assert ("srnn", "zforcing") in [(a, b) for a, b, _, _ in o["violations"]]


def test_ordering_with_too_few_rows(tmp_path):
    make_fixture(tmp_path, rows=("zforcing",), prepared=False)
    t = tables.column_table(tables.load_metrics(os.path.join(tmp_path, "eval")), "timit")
    o = tables.ordering_check(t)
    assert o["holds"] is None and "cannot be checked" in o["statement"]


def test_provenance_not_yet_recorded(tmp_path):
    make_fixture(tmp_path, rows=("zforcing",), lock=False, prepared=False)
    assert tables.load_lock(os.path.join(tmp_path, "dvc.lock")) is None
    t = tables.column_table(tables.load_metrics(os.path.join(tmp_path, "eval")), "timit")
    assert t.loc[0, "provenance"] == tables.NOT_RECORDED
    # a lock that lacks this row's stages
    lock = {"prepare": {"outs": []}}
    assert tables.row_provenance(lock, "zforcing")["recorded"] is False


def test_provenance_matrix_stage_names():
    lock = {"train_aux@synthetic-zforcing_aux": {"deps": [{"path": "data/prepared", "md5": "1" * 32}],
                                                "params": {"params.yaml": {"aux_weight": 1}},
                                                "outs": [{"path": "models/zforcing_aux", "md5": "2" * 32}]}}
    p = tables.row_provenance(lock, "zforcing_aux")
    assert p["recorded"] and p["train"]["stage"] == "train_aux@synthetic-zforcing_aux"
    assert p["evaluate"] is None
    line = tables.provenance_line(p)
    assert "data 1111111111" in line and "evaluate not yet recorded" in line
    assert tables.row_provenance(lock, "zforcing")["recorded"] is False


def test_settings_tables_split_common_and_differing(project):
    m = tables.load_metrics(os.path.join(project, "eval"))
    common, differ = tables.settings_tables(m, "timit")
    assert "model.rnn_dim" in set(common["setting"])
    assert "row.aux" in differ.index and "model.name" in differ.index


def test_metrics_row_mismatch_rejected(tmp_path):
    make_fixture(tmp_path, rows=("zforcing",), prepared=False)
    os.rename(tmp_path / "eval" / "zforcing", tmp_path / "eval" / "srnn")
    with pytest.raises(ValueError, match="lives in eval/srnn"):
        tables.load_metrics(str(tmp_path / "eval"))
