"""Whole-utterance test evaluation time, padded in file order vs bucketed by length.

    python benchmarks/eval_speed.py --data /tmp/zf/prepared --iwae-k 25 --repeats 3
    python benchmarks/eval_speed.py --data /tmp/zf/prepared --keep-freed-memory
    python benchmarks/eval_speed.py --versus-elbo --model zforcing srnn --size small timit

--versus-elbo: the IWAE-K bound of one batch (--batch-size random frames of --frames
steps, no data needed) against K single-sample ELBO passes of that batch, both with the
samples folded into one pass (what pipeline.bounds does) and with the batch repeated
(before the fold), at each --chunks size, interleaved `repeats` times; prints the minimum
thread CPU times (--threads 1) and their ratios to the K ELBO passes.

Runs pipeline.bounds.evaluate over the test split (ELBO plus the IWAE bound) the way the
evaluate stage does, for each setting in turn, `repeats` times interleaved (the box is
shared: read the minimum). Settings: file order with batch noise (today's stage),
bucketed with per-sequence noise, each at the given IWAE chunk sizes.
--keep-freed-memory applies pipeline.cpu_memory.keep_freed_memory() to the whole process
(it cannot be undone): compare two runs. Prints one JSON line per run and a summary line
with the speed-ups of the minimum times.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.bounds import draw_noise, evaluate, iwae_bound  # noqa: E402
from pipeline.config import ModelConfig  # noqa: E402
from pipeline.cpu_memory import keep_freed_memory  # noqa: E402
from pipeline.datasets.batches import Batch, open_split, read_manifest  # noqa: E402
from pipeline.models import build_model  # noqa: E402

SIZES = {"small": dict(rnn_dim=128, emb_dim=64, mlp_dim=64, z_dim=32),
         "timit": dict(rnn_dim=1024, emb_dim=512, mlp_dim=512, z_dim=256)}


def padding(loader) -> float:
    """Padded steps / real steps over the split."""
    real = padded = 0
    for i in range(loader.num_batches):
        mask = loader.batch(0, i).mask
        real, padded = real + float(mask.sum()), padded + mask.numel()
    return padded / real


@torch.no_grad()
def versus_elbo(name: str, size: str, args) -> dict:
    """Minimum CPU seconds of K ELBO passes and of the IWAE-K bound (folded, repeated) of one batch."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, x_dim=200, **SIZES[size])).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch_size, args.frames, 200, generator=g)
    batch = Batch(x, x.roll(-1, 1), torch.ones(args.batch_size, args.frames))
    k = args.iwae_k

    @torch.no_grad()  # as pipeline.bounds evaluates: no graph recorded
    def elbo_passes():
        for _ in range(k):
            model(batch, draw_noise(model, batch, g))

    def iwae(fold, chunk):
        model.folds_samples = fold  # instance attribute: False is the path before the fold
        return lambda: iwae_bound(model, batch, k, chunk, generator=g)

    variants = {f"elbo_x{k}": elbo_passes}
    for chunk in args.chunks:
        variants[f"iwae{k}_fold_chunk{chunk}"] = (True, chunk)
        variants[f"iwae{k}_repeat_chunk{chunk}"] = (False, chunk)
    best = {}
    for _ in range(args.repeats):
        for key, v in variants.items():
            fn = v if callable(v) else iwae(*v)
            t0 = time.thread_time()  # CPU time of this thread: other processes' load stays out
            fn()
            best[key] = min(best.get(key, math.inf), time.thread_time() - t0)
    base = best[f"elbo_x{k}"]
    return {"model": name, "size": size, "batch": args.batch_size, "frames": args.frames,
            "threads": torch.get_num_threads(), "seconds": {k_: round(v, 4) for k_, v in best.items()},
            "ratio_to_elbo_passes": {k_: round(v / base, 3) for k_, v in best.items()}}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a prepared folder with an utterances test split")
    ap.add_argument("--model", nargs="+", default=["zforcing"])
    ap.add_argument("--size", nargs="+", choices=SIZES, default=["small"])
    ap.add_argument("--versus-elbo", action="store_true")
    ap.add_argument("--frames", type=int, default=40, help="--versus-elbo: steps per sequence")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--iwae-k", type=int, default=25)
    ap.add_argument("--chunks", type=int, nargs="+", default=[5, 25])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--limit", type=int, default=0, help="first N test utterances (0 = all)")
    ap.add_argument("--keep-freed-memory", action="store_true")
    args = ap.parse_args()
    kept = keep_freed_memory() if args.keep_freed_memory else False
    torch.set_num_threads(args.threads)
    if args.versus_elbo:
        for name in args.model:
            for size in args.size:
                print(json.dumps(versus_elbo(name, size, args)), flush=True)
        return
    if not args.data:
        ap.error("--data is needed (except with --versus-elbo)")
    torch.manual_seed(0)
    manifest = read_manifest(args.data)
    args.model, args.size = args.model[0], args.size[0]
    model = build_model(ModelConfig(name=args.model, x_dim=int(manifest["x_dim"]), **SIZES[args.size]))
    model.eval()
    settings = [(bucket, chunk) for bucket in (False, True) for chunk in args.chunks]
    best = {}
    for rep in range(args.repeats):
        for bucket, chunk in settings:
            loader = open_split(args.data, "test", args.batch_size, bucket=bucket, limit=args.limit or None)
            t0 = time.perf_counter()
            res = evaluate(model, loader, iwae_k=args.iwae_k, iwae_chunk=chunk, seed=0,
                           noise="sequence" if bucket else "batch")
            dt = time.perf_counter() - t0
            key = f"{'bucketed' if bucket else 'file_order'}_chunk{chunk}"
            best[key] = min(best.get(key, dt), dt)
            print(json.dumps({"setting": key, "repeat": rep, "seconds": round(dt, 2),
                              "sequences": res["sequences"], "padded_sequences": res["padded_sequences"],
                              "padding": round(padding(loader), 3), "iwae_per_seq": round(res["iwae_per_seq"], 2),
                              "model": args.model, "size": args.size, "iwae_k": args.iwae_k,
                              "threads": args.threads, "keep_freed_memory": kept}), flush=True)
    base = best[f"file_order_chunk{args.chunks[0]}"]
    print(json.dumps({"keep_freed_memory": kept, "summary": {k: round(v, 2) for k, v in best.items()},
                      "speedup_vs_file_order": {k: round(base / v, 2) for k, v in best.items()}}))


if __name__ == "__main__":
    main()
