"""Training throughput of Z-Forcing: ms per update, frames/s, peak memory.

    python benchmarks/train_speed.py --config timit --threads 2 --updates 5
    python benchmarks/train_speed.py --config small --device cuda

Times the full step the trainer runs (forward, backward, clipping, fused Adam with the
on-device skip flag) on random audio-shaped batches. Results go into BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.bounds import draw_noise  # noqa: E402
from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.datasets.batches import Batch  # noqa: E402
from pipeline.models import build_model, count_parameters  # noqa: E402
from pipeline.train import Stepper, make_optimizer  # noqa: E402

CONFIGS = {  # (model sizes, batch, frames)
    "timit": (dict(rnn_dim=1024, emb_dim=512, mlp_dim=512, z_dim=256), 32, 40),
    "small": (dict(rnn_dim=128, emb_dim=64, mlp_dim=64, z_dim=32), 32, 40),
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", choices=CONFIGS, default="small")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--updates", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--cond-ln", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sizes, B, T = CONFIGS[args.config]
    dev = torch.device(args.device)
    model = build_model(ModelConfig(x_dim=200, cond_ln=args.cond_ln, **sizes)).to(dev)
    cfg = TrainConfig(lr=1e-3, aux_weight=0.01, kl_anneal=True)
    step = Stepper(model, make_optimizer(model, cfg), cfg, dev)
    batch = Batch(torch.randn(B, T, 200), torch.randn(B, T, 200), torch.ones(B, T)).to(dev)
    gen = torch.Generator(device=dev).manual_seed(0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(batch, draw_noise(model, batch, gen))
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    for _ in range(args.updates):
        step(batch, draw_noise(model, batch, gen))
    sync()
    dt = (time.perf_counter() - t0) / args.updates
    peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    print(json.dumps({
        "config": args.config, "cond_ln": args.cond_ln, "device": str(dev),
        "device_name": torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or platform.machine(),
        "threads": args.threads, "params": count_parameters(model), "batch": B, "frames": T,
        "ms_per_update": round(1000 * dt, 2), "frames_per_s": round(B * T / dt, 1),
        "peak_mem_mib": round(peak, 1), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
