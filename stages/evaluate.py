"""Evaluate one trained row on the test split: bounds, latent usage, generated audio.

    python -m stages.evaluate --row zforcing --model models/zforcing --data data/prepared --out eval/zforcing

Reads params.yaml: profile, profiles, eval.*. Writes into --out:
  metrics.json  test (and valid) bounds in nats per sequence / step / sample, the IWAE bound
                when eval.iwae_k > 0, and every setting that produced them
  latent.json   KL per latent dimension (latent models)
  samples.npz   `generated` waveforms sampled from the model, `sample_rate`
With whole-utterance test sets the authors' padded-mean quirk is computed too
(`test_quirk`), so the report can show both; the corrected number is `test`.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from stages.common import StageError, load_params, run, section, setup_torch, write_json

DEFAULTS = dict(batch_size=32, iwae_k=0, iwae_chunk=8, test_limit=0, valid=True, samples=3,
                sample_seconds=2.0, device="auto", threads=1, seed=0)


def eval_options(params: dict) -> dict:
    e = section(params, "eval")
    unknown = sorted(set(e) - set(DEFAULTS))
    if unknown:
        raise StageError(f"params.yaml eval: unknown keys {', '.join(unknown)} "
                         f"(known: {', '.join(sorted(DEFAULTS))})")
    return {**DEFAULTS, **e}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--row", required=True)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--model", required=True, help="folder written by the train stage")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    params = load_params(args.params)
    opts = eval_options(params)
    device = setup_torch(opts["threads"], opts["device"])

    import numpy as np
    import torch
    from pipeline import checkpoint
    from pipeline.bounds import evaluate, padded_mean_quirk
    from pipeline.config import ModelConfig
    from pipeline.datasets import frames_to_waveform, open_split, read_manifest
    from pipeline.models import build_model

    model_file = Path(args.model) / "model.npz"
    if not model_file.exists():
        raise StageError(f"{model_file} not found: run the train stage for row {args.row} first")
    saved = json.loads((Path(args.model) / "model.json").read_text())
    model = build_model(ModelConfig(**saved["model_config"]))
    model.load_state_dict(checkpoint.load_npz(model_file))
    model.to(device).eval()
    manifest = read_manifest(args.data)
    per_step = int(manifest.get("frame_size") or 1) if manifest["kind"] == "audio" else 1
    limit = opts["test_limit"] or None

    def bounds(split, iwae_k):
        loader = open_split(args.data, split, opts["batch_size"], limit=limit)
        return evaluate(model, loader, iwae_k=iwae_k, iwae_chunk=opts["iwae_chunk"],
                        samples_per_step=per_step, device=device, seed=opts["seed"])

    test = bounds("test", opts["iwae_k"])
    layout = manifest["splits"]["test"].get("layout")
    quirk = padded_mean_quirk(test) if layout == "utterances" else None
    valid = bounds("valid", 0) if opts["valid"] and "valid" in manifest["splits"] else None
    kl_per_dim = test.pop("kl_per_dim", None)
    for res in (quirk, valid):
        if res:
            res.pop("kl_per_dim", None)

    row = saved["row"]
    # which paper column the data stands in for: its protocol (LJSpeech -> blizzard, ...)
    column = ("mnist" if manifest["kind"] == "binary"
              else manifest.get("protocol", {}).get("name", "timit"))
    metrics = {
        "row": row["name"], "model": row["model"], "paper_name": row["paper_name"],
        "dataset": manifest["dataset"], "column": column, "exact": bool(model.exact),
        "params": saved["params"], "profile": params.get("profile", "default"),
        "test": test, "test_quirk": quirk, "valid": valid,
        "settings": {"model": saved["model_config"], "train": saved["train_config"],
                     "row": {"kla": row["kla"], "aux": row["aux"]},
                     "aux_weight": saved["train_config"]["aux_weight"],
                     "protocol": manifest.get("protocol", {}), "selected": saved["selected"],
                     "device": device.type, "threads": torch.get_num_threads(),
                     "eval": {k: opts[k] for k in ("batch_size", "iwae_k", "test_limit", "seed")}},
        "train": {"updates": saved["updates"], "skipped": saved["skipped"],
                  "best_valid_elbo_per_seq": saved["best_valid_elbo_per_seq"]},
    }

    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    write_json(tmp / "metrics.json", metrics)
    if kl_per_dim is not None:
        write_json(tmp / "latent.json", {"kl_per_dim": kl_per_dim})
    if manifest["kind"] == "audio" and opts["samples"]:
        torch.manual_seed(opts["seed"])
        steps = max(1, int(opts["sample_seconds"] * manifest["sample_rate"] / per_step))
        frames = model.generate(opts["samples"], steps).cpu()
        wave = np.stack([frames_to_waveform(f, manifest) for f in frames])
        checkpoint.save_npz({"generated": wave, "sample_rate": np.int64(manifest["sample_rate"])},
                            tmp / "samples.npz")
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


if __name__ == "__main__":
    run(main)
