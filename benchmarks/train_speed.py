"""Training throughput of Z-Forcing: ms per update, frames/s, compile time, peak memory,
for the eager, compiled and graphed training step.

    python benchmarks/train_speed.py --config small --paths eager compiled --threads 1
    python benchmarks/train_speed.py --config timit blizzard --paths eager compiled graphed --device cuda
    python benchmarks/train_speed.py --config small --profile          # where the time goes
    python benchmarks/train_speed.py --config timit --paths eager eager-nodefer --clock thread
    python benchmarks/train_speed.py --config timit --clock thread --keep-freed-memory

Times the full step the trainer runs (forward, backward, clipping, fused Adam with the
on-device skip flag) on random audio-shaped batches. Paths: eager (train.compile=off),
compiled (train.compile=default), graphed (train.compile=max: CUDA graphs, CUDA only);
eager-nodefer is eager with the step loop's weight gradients computed step by step
(ZForcing.defer_grads off; docs/model.md, "Weight gradients of the step loops").
Every path gets its own identically initialised model; after each path's first update
(its compile, reported as compile_s) and warm-up, the paths are timed in alternating
blocks of --updates updates, --repeats rounds, and the fastest block is reported: on a
shared machine the minimum is the least disturbed figure. `--clock thread` times this
thread's CPU time (time.thread_time) instead of wall time: other processes' load stays out
(CPU, --threads 1 only: with more threads the work runs on other threads too).
One JSON line per path.
Results go into BENCHMARKS.md.
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
from pipeline.cpu_memory import keep_freed_memory  # noqa: E402
from pipeline.datasets.batches import Batch  # noqa: E402
from pipeline.models import build_model, count_parameters  # noqa: E402
from pipeline.train import Stepper, make_optimizer  # noqa: E402

CONFIGS = {  # (model sizes, batch, frames)
    "timit": (dict(rnn_dim=1024, emb_dim=512, mlp_dim=512, z_dim=256), 32, 40),
    "blizzard": (dict(rnn_dim=2048, emb_dim=1024, mlp_dim=1024, z_dim=256), 128, 40),
    "small": (dict(rnn_dim=128, emb_dim=64, mlp_dim=64, z_dim=32), 32, 40),
}
PATHS = {"eager": "off", "compiled": "default", "graphed": "max", "eager-nodefer": "off"}


def make_step(sizes, cond_ln, path, precision, dev):
    torch.manual_seed(0)  # every path starts from the same weights
    model = build_model(ModelConfig(x_dim=200, cond_ln=cond_ln, **sizes)).to(dev)
    model.defer_grads = not path.endswith("-nodefer")
    cfg = TrainConfig(lr=1e-3, aux_weight=0.01, kl_anneal=True, compile=PATHS[path],
                      precision=precision)
    return model, Stepper(model, make_optimizer(model, cfg), cfg, dev)


def categories(prof) -> dict:
    """Share of self time by kind of op: matrix products, the backward LSTM, elementwise
    math, and the rest (views, copies, cat/stack, optimiser, autograd bookkeeping)."""
    mats = ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")
    elementwise = ("mul", "add", "sub", "div", "exp", "tanh", "sigmoid", "clamp", "where",
                   "leaky_relu", "pow", "log", "neg", "sum", "mean", "rsub", "ge", "le")
    out = {"matmul": 0.0, "lstm": 0.0, "elementwise": 0.0, "other": 0.0}
    for k in prof.key_averages():
        t = k.self_cpu_time_total
        if k.key in mats:
            out["matmul"] += t
        elif "rnn" in k.key or "lstm" in k.key:
            out["lstm"] += t
        elif k.key.startswith("aten::") and k.key[6:].rstrip("_") in elementwise:
            out["elementwise"] += t
        else:
            out["other"] += t
    total = sum(out.values()) or 1.0
    return {k: round(v / total, 3) for k, v in out.items()}


def profile(step, batch, model, gen, n=5):
    from torch.profiler import ProfilerActivity, profile as torch_profile
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if batch.mask.is_cuda else [])
    with torch_profile(activities=acts) as prof:
        for _ in range(n):
            step(batch, draw_noise(model, batch, gen))
        if batch.mask.is_cuda:
            torch.cuda.synchronize()
    sort = "self_cuda_time_total" if batch.mask.is_cuda else "self_cpu_time_total"
    print(prof.key_averages().table(sort_by=sort, row_limit=20), file=sys.stderr)
    calls = sum(k.count for k in prof.key_averages()) / n
    return {"ops_per_update": round(calls), "self_time_share": categories(prof)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", choices=CONFIGS, default=["small"])
    ap.add_argument("--paths", nargs="+", choices=PATHS, default=["eager"])
    ap.add_argument("--precision", choices=("fp32", "tf32", "bf16"), default="fp32")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--updates", type=int, default=10, help="updates per timed block")
    ap.add_argument("--repeats", type=int, default=3, help="timed blocks per path")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="override the config's batch size")
    ap.add_argument("--cond-ln", action="store_true")
    ap.add_argument("--profile", action="store_true", help="torch.profiler table (stderr) per path")
    ap.add_argument("--clock", choices=("wall", "thread"), default="wall",
                    help="wall time, or this thread's CPU time (CPU, --threads 1)")
    ap.add_argument("--keep-freed-memory", action="store_true",
                    help="glibc reuses freed blocks, as the train stage sets it (pipeline.cpu_memory)")
    args = ap.parse_args()
    kept = keep_freed_memory() if args.keep_freed_memory else False
    if args.clock == "thread" and (args.threads != 1 or args.device != "cpu"):
        ap.error("--clock thread needs --device cpu --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for name in args.config:
        sizes, B, T = CONFIGS[name]
        B = args.batch or B
        g = torch.Generator().manual_seed(0)
        batch = Batch(torch.randn(B, T, 200, generator=g), torch.randn(B, T, 200, generator=g),
                      torch.ones(B, T)).to(dev)
        runs = {}
        for path in args.paths:
            model, step = make_step(sizes, args.cond_ln, path, args.precision, dev)
            gen = torch.Generator(device=dev).manual_seed(0)
            t0 = time.perf_counter()
            step(batch, draw_noise(model, batch, gen))  # compiles, for the compiled paths
            sync()
            first = time.perf_counter() - t0
            for _ in range(args.warmup):
                step(batch, draw_noise(model, batch, gen))
            sync()
            runs[path] = dict(model=model, step=step, gen=gen, first=first, best=float("inf"))
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        for _ in range(args.repeats):
            for path, r in runs.items():  # alternating blocks: load changes hit every path alike
                sync()
                t0 = clock()
                for _ in range(args.updates):
                    r["step"](batch, draw_noise(r["model"], batch, r["gen"]))
                sync()
                r["best"] = min(r["best"], (clock() - t0) / args.updates)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda"
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        base = runs[args.paths[0]]["best"]
        for path, r in runs.items():
            rec = {"config": name, "path": path, "compile": PATHS[path], "precision": args.precision,
                   "cond_ln": args.cond_ln, "device": str(dev),
                   "device_name": (torch.cuda.get_device_name(dev) if dev.type == "cuda"
                                   else platform.processor() or platform.machine()),
                   "threads": args.threads, "params": count_parameters(r["model"]), "batch": B,
                   "frames": T, "clock": args.clock, "ms_per_update": round(1000 * r["best"], 2),
                   "frames_per_s": round(B * T / r["best"], 1),
                   "speedup_vs_" + args.paths[0]: round(base / r["best"], 3),
                   "compile_s": round(max(r["first"] - r["best"], 0.0), 1),
                   "peak_mem_mib": round(peak, 1), "keep_freed_memory": kept,
                   "torch": torch.__version__}
            if args.profile:
                rec["profile"] = profile(r["step"], batch, r["model"], r["gen"])
            print(json.dumps(rec), flush=True)
        del runs
        if dev.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
