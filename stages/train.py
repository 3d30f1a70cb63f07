"""Train one row of the paper's tables on a prepared dataset.

    python -m stages.train --row zforcing_aux --data data/prepared --out models/zforcing_aux

Reads params.yaml: profile, profiles, model.*, train.*, and aux_weight (used by the
"+ aux" rows only, so only their dvc.yaml stage lists it). Writes into --out:
  model.npz     weights (best on validation, or last: train.select), pickle-free
  model.json    the model and training configs used, parameter count, updates, skips
  history.json  learning curves (train records every train.log_every updates, valid records)
Everything in --out is a pure function of data, params and code (timings stay out), so
`dvc repro` reproduces its hashes. Timings and live metrics go to dvclive in live/<row>
(git-ignored, shown by `dvc plots show`). The in-progress checkpoint lives in
.ckpt/<hash of params, data manifest and code>/, outside DVC's outputs: an interrupted run
resumes, and no other configuration ever picks it up.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from dataclasses import asdict
from pathlib import Path

from stages.common import (StageError, load_params, run, section, setup_torch, write_json)

ROOT = Path(__file__).resolve().parents[1]
STAGE_KEYS = ("anneal_fraction", "device", "threads", "select", "valid_limit", "train_limit")


def train_config(params: dict, row) -> tuple:
    """(TrainConfig, stage options) for a row: the row decides KL annealing and the aux cost."""
    from pipeline.config import TrainConfig, from_dict
    t = section(params, "train")
    opts = {k: t.pop(k) for k in STAGE_KEYS if k in t}
    t["kl_anneal"] = row.kla
    t["aux_weight"] = float(params.get("aux_weight", 0.0)) if row.aux else 0.0
    if not row.aux:
        t["aux_anneal_updates"] = 0
    frac = float(opts.get("anneal_fraction") or 0)
    if frac:  # short runs: schedules reach their caps at a fixed fraction of the budget
        n = max(1, round(frac * t["max_updates"]))
        t["kl_step"] = (t.get("kl_cap", 1.0) - t.get("kl_start", 0.2)) / n
        if row.aux:
            t["aux_anneal_updates"] = n
    if t["aux_weight"] < 0:
        raise StageError(f"aux_weight={t['aux_weight']} in params.yaml: must be >= 0")
    return from_dict(TrainConfig, t), opts


def model_config(params: dict, row, manifest: dict):
    from pipeline.config import ModelConfig, from_dict
    from pipeline.models.budget import resolve_budget
    m = section(params, "model")
    kind = manifest["kind"]
    m.update(name=row.model, data=kind, x_dim=int(manifest["x_dim"]),
             output=m.get("output", "gaussian") if kind == "audio" else "bernoulli")
    return resolve_budget(from_dict(ModelConfig, m))


def code_hash() -> str:
    h = hashlib.sha256()
    for p in sorted((ROOT / "pipeline").rglob("*.py")) + [Path(__file__)]:
        h.update(p.relative_to(ROOT).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def run_key(row, mcfg, tcfg, opts, manifest_bytes: bytes) -> str:
    blob = json.dumps({"row": row.name, "model": asdict(mcfg), "train": asdict(tcfg),
                       "opts": opts, "code": code_hash()}, sort_keys=True).encode()
    return hashlib.sha256(blob + hashlib.sha256(manifest_bytes).digest()).hexdigest()[:16]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--out", required=True)
    ap.add_argument("--live", default=None, help="dvclive folder (default live/<row>)")
    ap.add_argument("--ckpt-root", default=".ckpt")
    args = ap.parse_args()

    from pipeline.datasets import open_split, read_manifest
    from pipeline.rows import get_row
    try:
        row = get_row(args.row)
    except ValueError as err:
        raise StageError(str(err)) from err
    params = load_params(args.params)
    manifest = read_manifest(args.data)
    tcfg, opts = train_config(params, row)
    mcfg = model_config(params, row, manifest)
    device = setup_torch(opts.get("threads", 1), opts.get("device", "auto"))

    import torch
    from pipeline import checkpoint
    from pipeline.models import build_model, count_parameters
    from pipeline.train import train

    loader = open_split(args.data, "train", tcfg.batch_size, shuffle=True, seed=tcfg.seed,
                        drop_last=True, limit=opts.get("train_limit") or None)
    valid = (open_split(args.data, "valid", tcfg.batch_size, limit=opts.get("valid_limit") or None)
             if "valid" in manifest["splits"] else None)
    if loader.num_batches == 0:
        raise StageError(f"{args.data}: the train split has fewer sequences than "
                         f"train.batch_size={tcfg.batch_size}; lower it or prepare more data")
    torch.manual_seed(tcfg.seed)
    model = build_model(mcfg)

    manifest_bytes = (Path(args.data) / "manifest.json").read_bytes()
    ckpt = Path(args.ckpt_root) / run_key(row, mcfg, tcfg, opts, manifest_bytes) / "train.pt"
    live = _live(args.live or f"live/{row.name}", resume=ckpt.exists())
    bar = _progress(tcfg.max_updates, row.name)

    def on_log(rec):
        bar.update(rec["update"] - bar.n)
        bar.set_postfix(loss=f"{rec['loss']:.4g}", kl=f"{rec['kl_per_seq']:.3g}",
                        skipped=rec["skipped_updates"])
        if live:
            live.step = rec["update"]
            for k, v in rec.items():
                if isinstance(v, (int, float)) and k not in ("update", "epoch", "kind"):
                    live.log_metric(f"train/{k}", v)
            live.next_step()

    def on_eval(rec):
        bar.write(f"[{row.name}] update {rec['update']}: valid ELBO {rec['valid_elbo_per_seq']:.2f} "
                  f"nats/seq, lr {rec['lr']:.2e}")
        if live:
            live.log_metric("valid/elbo_per_seq", rec["valid_elbo_per_seq"])

    t0 = time.perf_counter()
    out = train(model, loader, tcfg, valid_loader=valid, device=device, ckpt_path=ckpt,
                on_log=on_log, on_eval=on_eval)
    bar.close()
    seconds = time.perf_counter() - t0
    if live:
        live.summary.update(seconds=seconds)
        live.end()

    select = opts.get("select", "best")
    if select not in ("best", "last"):
        raise StageError(f"train.select={select!r}: use best or last")
    state = out["best_state"] if select == "best" else out["last_state"]
    dest = Path(args.out)
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    checkpoint.save_npz(state, tmp / "model.npz")
    write_json(tmp / "model.json", {
        # the built model's own config: a registry name may fix the output family
        "model_config": asdict(model.cfg), "train_config": asdict(tcfg), "row": asdict(row),
        "selected": select, "params": count_parameters(model),
        "updates": out["position"]["updates"], "skipped": out["skipped"],
        "best_valid_elbo_per_seq": out["position"]["best_valid"]})
    timing = ("frames_per_s", "ms_per_update")
    write_json(tmp / "history.json", {"history": [{k: v for k, v in r.items() if k not in timing}
                                                  for r in out["history"]]})
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    shutil.rmtree(ckpt.parent, ignore_errors=True)  # finished: the output is the record now
    print(f"[{row.name}] {out['position']['updates']} updates ({out['skipped']} skipped) in "
          f"{seconds:.1f} s -> {dest}", file=sys.stderr)


def _progress(total, name):
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="upd", dynamic_ncols=True, mininterval=2.0)


def _live(path, resume: bool):
    try:
        from dvclive import Live
    except ImportError:
        return None
    return Live(path, dvcyaml=False, save_dvc_exp=False, resume=resume, report=None)


if __name__ == "__main__":
    run(main)
