"""Stage `evaluate_<bench>@<row>-<seed>`: bounds, latent usage and samples of one cell.

    python -m stages.evaluate timit zforcing 0 --data data/timit/prepared \
        --model models/timit/zforcing/s0 --out eval/timit/zforcing/s0

Reads eval.* (with benchmarks.<bench>.eval overrides). Writes into --out:
  metrics.json  a handful of numbers, headline first: `bound` (nats per sequence: the
                IWAE-K bound of latent models when eval.iwae_k > 0, else the ELBO; the exact
                log-likelihood of exact models), elbo, kl, per_step, active_units; MNIST adds
                nll (nats per image), IMDB ppl / ppl_elbo / kl_per_word
  info.json     everything behind those numbers: full test/valid results, the authors'
                padded-mean quirk on whole-utterance tests, the effective settings, what the
                data is, and the hashes of what was read (prepared manifest, model, settings)
  latent.json   KL per latent dimension (null for exact models)
  samples.npz   sequences sampled from the model (audio waveforms / digit probabilities)
  text.json     IMDB: sampled sentences, reconstructions, one latent perturbed, and an
                interpolation between two test sentences' posterior means (eval.interp_points)
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
from dataclasses import asdict
from pathlib import Path

from stages import KERNELS, prefork
from stages import params as P
from stages.common import StageError, code_hash, output_dir, run, setup_torch, write_json
from stages.kernels import set_numerics


def sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def headline(test: dict, exact: bool, bench: str) -> tuple[dict, str]:
    kind = "exact" if exact else ("iwae" if "iwae_per_seq" in test else "elbo")
    key = "iwae" if kind == "iwae" else "elbo"
    m = {"bound": test[f"{key}_per_seq"], "elbo": test["elbo_per_seq"], "kl": test["kl_per_seq"],
         "per_step": test[f"{key}_per_step"], "active_units": test.get("active_units")}
    if bench == "mnist":
        m["nll"] = -m["bound"]
    if bench == "imdb":  # perplexity = exp(-sum bound / predicted tokens): an upper bound
        m["ppl"] = math.exp(-test[f"{key}_per_step"])
        m["ppl_elbo"] = math.exp(-test["elbo_per_step"])
        m["kl_per_word"] = test["kl_per_step"]
    return m, kind


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bench", help="timit, blizzard, mnist or imdb")
    ap.add_argument("row", help="a row of the table, e.g. zforcing_aux (pipeline/rows.py)")
    ap.add_argument("seed", type=int, help="seed index, as given to the train stage")
    ap.add_argument("--params", default="params.yaml", help="parameters file (%(default)s)")
    ap.add_argument("--data", required=True, help="prepared data folder, e.g. data/timit/prepared")
    ap.add_argument("--model", required=True, help="folder written by the train stage")
    ap.add_argument("--out", required=True, help="metrics folder, e.g. eval/timit/zforcing/s0")
    args = ap.parse_args()

    params = P.read(args.params)
    numerics = set_numerics(params["numerics"], KERNELS)  # before torch: `fast` unpins the kernels
    prefork.handoff("stages.evaluate", KERNELS)  # the runner's preloaded process, if it has one
    opts = P.eval_settings(params, args.bench)
    row = P.table_rows(params, args.bench).get(args.row)
    if row is None:
        raise StageError(f"{args.bench} trains no row {args.row!r}")
    model_file = Path(args.model) / "model.npz"
    if not model_file.exists():
        raise StageError(f"{model_file} not found: run the train stage of {args.bench}/{args.row} first")
    device = setup_torch(opts.threads, opts.device)
    from pipeline.cpu_memory import keep_freed_memory
    keep_freed_memory()  # each step's freed blocks reused, not faulted in again: same numbers

    import numpy as np
    import torch
    from pipeline import checkpoint
    from pipeline.bounds import evaluate, padded_mean_quirk
    from pipeline.datasets import frames_to_waveform, open_split, read_manifest

    saved, model = load_model(args.model)
    model.to(device).eval()
    from pipeline.compile import eval_forward
    forward = eval_forward(model, opts.compile, opts.precision, device)  # the model when off/fp32
    manifest = read_manifest(args.data)
    per_step = int(manifest.get("frame_size") or 1) if manifest["kind"] == "audio" else 1
    limit = opts.test_limit or None
    cell = f"{args.bench}/{args.row}/s{args.seed}"

    def bounds(split, iwae_k):
        # batches of similar lengths (little padding) and noise keyed per sequence, so the
        # bounds do not depend on how sequences are batched
        loader = open_split(args.data, split, opts.batch_size, limit=limit, bucket=True)
        with _progress(loader.num_sequences, f"{cell} {split}") as bar:
            return evaluate(model, loader, iwae_k=iwae_k, iwae_chunk=opts.iwae_chunk,
                            samples_per_step=per_step, device=device, seed=opts.seed,
                            name=split, noise="sequence", forward=forward, on_batch=bar.update)

    exact = bool(model.exact)
    from pipeline.errors import UserError
    try:
        test = bounds("test", 0 if exact else opts.iwae_k)
        valid = bounds("valid", 0) if opts.valid and "valid" in manifest["splits"] else None
    except UserError as err:  # non-finite data or a diverged model: say which cell and data
        raise StageError(f"{args.bench}/{row.name}/s{args.seed} on {args.data}: {err}") from None
    quirk = padded_mean_quirk(test) if manifest["splits"]["test"].get("layout") == "utterances" else None
    kl_per_dim = test.pop("kl_per_dim", None)
    for res in (quirk, valid):
        if res:
            res.pop("kl_per_dim", None)
    metrics, kind = headline(test, exact, args.bench)

    settings = {"model": saved["model_config"], "train": saved["train_config"],
                "options": saved.get("options", {}), "eval": asdict(opts),
                "aux_weight": saved["train_config"]["aux_weight"], "kla": row.kla,
                "aux": row.aux or row.beta, "profile": params.get("profile_name"),
                "precision": saved["train_config"].get("precision", "fp32"),
                "threads": torch.get_num_threads(), "kernels": _kernels(),
                # exact: pinned kernels (bytes hold across x86-64 CPUs); fast: unpinned (numbers)
                "numerics": {"train": saved.get("numerics", "exact"), "eval": numerics},
                # where the numbers were computed: decides which reproducibility guarantee holds
                "hardware": {"train_device": saved.get("device", "cpu"), "eval_device": device.type,
                             "machine": platform.machine(), "torch": torch.__version__}}
    info = {
        "bench": args.bench, "row": row.name, "seed": args.seed,
        "train_seed": saved["train_config"]["seed"], "paper_name": row.paper_name, "exact": exact,
        "bound_kind": kind, "iwae_k": 0 if exact else opts.iwae_k, "params": saved["params"],
        "test": test, "test_quirk": quirk, "valid": valid, "settings": settings,
        "data": {k: manifest.get(k) for k in ("dataset", "source", "comparable", "title_note",
                                               "protocol", "split_sizes")},
        "train": {"updates": saved["updates"], "skipped": saved["skipped"], "seconds": None,
                  "best_valid": saved["best_valid_elbo_per_seq"]},
        "provenance": {"prepared_manifest_sha256": sha256(Path(args.data) / "manifest.json"),
                       "model_sha256": sha256(model_file),
                       "params_sha256": P.digest(settings), "code_sha256": code_hash(__file__)},
    }

    with output_dir(args.out) as tmp:
        # metrics.json keeps its order (headline first) and holds numbers only
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n")
        write_json(tmp / "info.json", info)
        write_json(tmp / "latent.json", {"kl_per_dim": kl_per_dim})  # null for exact models
        gen = torch.Generator(device=device).manual_seed(opts.seed)
        torch.manual_seed(opts.seed)
        if manifest["kind"] == "audio" and opts.samples:
            steps = max(1, int(opts.sample_seconds * manifest["sample_rate"] / per_step))
            frames = model.generate(opts.samples, steps).cpu()
            wave = np.stack([frames_to_waveform(f, manifest) for f in frames])
            checkpoint.save_npz({"generated": wave, "sample_rate": np.int64(manifest["sample_rate"])},
                                tmp / "samples.npz")
        elif manifest["kind"] == "binary" and opts.samples:
            _digits(model, args.data, manifest, opts, gen, tmp)
        elif manifest["kind"] == "tokens" and opts.samples:
            _sentences(model, args.data, manifest, opts, gen, tmp, kl_per_dim)


# what this stage reads from model.json: checked before any evaluation is spent
SAVED = {"model_config": dict, "train_config": dict, "params": int, "updates": int,
         "skipped": int, "best_valid_elbo_per_seq": (int, float, type(None))}


def load_model(model_dir):
    """model.json and model.npz as the train stage wrote them -> (record, model). A file
    cut short, edited by hand or from another model is one line naming it."""
    from pipeline import checkpoint
    from pipeline.config import ModelConfig
    from pipeline.errors import UserError
    from pipeline.models import build_model
    record, weights = Path(model_dir) / "model.json", Path(model_dir) / "model.npz"
    fix = f"rerun the train stage that wrote {model_dir}"
    try:
        saved = json.loads(record.read_text())
    except FileNotFoundError:
        raise StageError(f"{record} not found: {fix}") from None
    except ValueError as err:  # invalid JSON or not UTF-8
        raise StageError(f"{record} is not valid JSON ({' '.join(str(err).split())}): {fix}") from None
    if not isinstance(saved, dict):
        raise StageError(f"{record} holds a JSON {type(saved).__name__}, not an object: {fix}")
    bad = [k for k, kind in SAVED.items() if not isinstance(saved.get(k), kind)]
    bad = bad or [f"train_config.{k}" for k in ("aux_weight", "seed") if k not in saved["train_config"]]
    if bad:
        raise StageError(f"{record}: {bad[0]} missing or of the wrong type: {fix}")
    try:  # the same type checks as the parameters the config came from
        model = build_model(P.typed(ModelConfig, saved["model_config"], "model_config"))
    except UserError as err:
        raise StageError(f"{record}: {err}: {fix}") from None
    if not weights.exists():
        raise StageError(f"{weights} not found: {fix}")
    state = checkpoint.load_npz(weights)  # a cut or foreign file: one line naming it
    try:
        model.load_state_dict(state)
    except RuntimeError as err:  # missing, extra or reshaped tensors: name the first
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
        why = lines[1] if len(lines) > 1 else lines[0] if lines else type(err).__name__
        why = why if len(why) <= 200 else why[:200] + "..."
        raise StageError(f"{weights} does not fit the model described in {record} ({why}): {fix}") from None
    return saved, model


def _digits(model, data, manifest, opts, gen, tmp):
    import numpy as np
    from pipeline import checkpoint
    from pipeline.datasets import open_split
    steps = int(manifest["protocol"].get("steps") or 784)
    side = int(round(steps ** 0.5))
    # 0/1 samples: generate() feeds its output back as the next pixel, so it must draw them
    pixels = model.generate(max(opts.samples, 8), steps).cpu().numpy()
    arrays = {"generated": pixels.reshape(len(pixels), -1).astype(np.float32), "side": np.int64(side)}
    batch = open_split(data, "test", 8).batch(0, 0)
    arrays["originals"] = batch.y.numpy().astype(np.uint8)
    if hasattr(model, "reconstruct"):
        arrays["recon"] = model.reconstruct(batch.to(next(model.parameters()).device), generator=gen,
                                            sample_output=False).cpu().numpy().astype(np.float32)
    checkpoint.save_npz(arrays, tmp / "samples.npz")


def _sentences(model, data, manifest, opts, gen, tmp, kl_per_dim):
    """Sentences a reader can look at: prior samples, posterior reconstructions, and for a
    latent model one high-KL dimension moved by +-2 prior standard deviations."""
    from pipeline.datasets import open_split
    from pipeline.datasets.text import ids_to_text, read_vocab
    from pipeline.models import lm_probe
    itos = read_vocab(data)
    text = lambda ids: [ids_to_text(row, itos) for row in ids.tolist()]  # noqa: E731
    batch = open_split(data, "test", 4).batch(0, 0).to(next(model.parameters()).device)
    out = {"samples": text(lm_probe.sample_prior(model, max(opts.samples, 4), 20, generator=gen)),
           "originals": text(batch.y)}
    if not model.exact:
        recon = text(lm_probe.reconstruct(model, batch, generator=gen))
        out["reconstructions"] = [{"original": o, "recon": r}
                                  for o, r in zip(out["originals"], recon)]
        dim = max(range(len(kl_per_dim)), key=lambda d: kl_per_dim[d])
        one = type(batch)(batch.x[:1], batch.y[:1], batch.mask[:1])
        rows = []
        for delta in (-2.0, 0.0, 2.0):
            greedy = text(lm_probe.perturb(model, one, dim, delta, greedy=True, generator=gen))[0]
            sample = text(lm_probe.perturb(model, one, dim, delta, greedy=False, generator=gen))[0]
            rows.append({"delta_sd": delta, "greedy": greedy, "sample": sample})
        out["perturb"] = {"dim": dim, "kl": kl_per_dim[dim], "original": out["originals"][0], "rows": rows}
        if opts.interp_points:
            out["interpolation"] = _interpolation(model, data, opts, itos)
    write_json(tmp / "text.json", out)


def _interpolation(model, data, opts, itos):
    """Decodings between the posterior means of two test sentences drawn with eval.seed
    (pipeline/models/interpolate.py); None when the test split holds fewer than two."""
    import torch
    from pipeline.models import interpolate
    from pipeline.datasets import open_split
    from pipeline.datasets.text import ids_to_text
    loader = open_split(data, "test", 1, limit=opts.test_limit or None)
    if loader.num_sequences < 2:
        return None
    pair = interpolate.choose_pair(loader.num_sequences, opts.seed)
    dev = next(model.parameters()).device
    a, b = (loader.batch(0, i).to(dev) for i in pair)
    res = interpolate.interpolate(model, a, b, opts.interp_points,
                                  generator=torch.Generator(device=dev).manual_seed(opts.seed))
    words = lambda ids: ids_to_text(ids, itos)  # noqa: E731
    return {"test_index": list(pair), "sentences": [words(a.y[0].tolist()), words(b.y[0].tolist())],
            "points": [{"alpha": al, "greedy": words(g), "sample": words(s)} for al, g, s in
                       zip(res["alpha"], res["greedy"], res["sample"])]}


def _progress(total, name):
    from tqdm import tqdm
    return tqdm(total=total, desc=name, unit="seq", dynamic_ncols=True, mininterval=2.0)


def _kernels() -> dict:
    import os
    from stages.kernels import PINS
    return {k: os.environ.get(k) for k in PINS}


if __name__ == "__main__":
    run(main)
