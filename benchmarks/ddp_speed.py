"""Data-parallel scaling of the training loop: updates/s of the global batch at N processes.

    python benchmarks/ddp_speed.py --config small                      # N = 1
    python -m torch.distributed.run --standalone --nproc_per_node 2 benchmarks/ddp_speed.py --config small

Runs pipeline.train.train (sharded loader, global noise draw, gradient all-reduce, the
skip verdict, logging reads) on random audio-shaped data with the global batch fixed, so
the numbers compare like for like. The first `--every` updates are warm-up and are not
counted. Rank 0 prints one JSON line. Results go into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline import distributed  # noqa: E402
from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.datasets.batches import ArrayLoader  # noqa: E402
from pipeline.models import build_model, count_parameters  # noqa: E402
from pipeline.train import train  # noqa: E402

CONFIGS = {  # (model sizes, global batch, frames): the default profile and the paper's sizes
    "small": (dict(rnn_dim=128, emb_dim=64, mlp_dim=64, z_dim=32), 32, 40),
    "timit": (dict(rnn_dim=1024, emb_dim=512, mlp_dim=512, z_dim=256), 32, 40),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=CONFIGS, default="small")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--every", type=int, default=5, help="updates per timed record")
    ap.add_argument("--records", type=int, default=4, help="timed records after the warm-up one")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(f"cuda:{distributed.local_rank()}" if args.device == "cuda" else args.device)
    ddp = distributed.from_env(dev)
    sizes, B, T = CONFIGS[args.config]
    updates = args.every * (args.records + 1)
    torch.manual_seed(0)
    model = build_model(ModelConfig(x_dim=200, **sizes))
    x = torch.randn(B * updates, T, 200)
    loader = ArrayLoader(x, x.roll(-1, 1), batch_size=B, drop_last=True)
    cfg = TrainConfig(lr=1e-3, batch_size=B, max_updates=updates, log_every=args.every,
                      ckpt_every=updates, aux_weight=0.01, aux_anneal_updates=10, kl_anneal=True)
    recs = []
    train(model, loader, cfg, device=dev, on_log=recs.append, ddp=ddp)
    if ddp is None or ddp.is_main:
        ms = sum(r["ms_per_update"] for r in recs[1:]) / len(recs[1:])
        print(json.dumps({"config": args.config, "params": count_parameters(model),
                          "processes": ddp.world if ddp else 1, "threads": args.threads,
                          "global_batch": B, "frames": T, "ms_per_update": round(ms, 1),
                          "updates_per_s": round(1000.0 / ms, 2),
                          "sequences_per_s": round(1000.0 * B / ms, 1),
                          "device": str(dev), "cpu": platform.processor() or platform.machine(),
                          "torch": torch.__version__}))
    if ddp is not None:
        ddp.close()


if __name__ == "__main__":
    main()
