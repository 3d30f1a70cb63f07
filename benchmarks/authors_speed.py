"""Our Z-Forcing training update against the authors' (benchmarks/authors_zforcing.py, their
model.py and train_timit.py ported to current PyTorch), at the same sizes and flags.

    python benchmarks/authors_speed.py --config small timit timit_cln --modes fast exact
    python benchmarks/authors_speed.py --config timit --modes fast --profile   # where the time goes

Both sides run one full update (forward, backward, global-norm clip 100, Adam eps 1e-5)
on the same random audio-shaped batch (B x T x 200, every frame scored), drawing their
noise inside the update, on the CPU with --threads threads. Ours is the trainer's own
step (build_model, Stepper, make_optimizer; train.compile off, fp32). Times are the
thread CPU time of the timing thread (time.thread_time), which keeps most of the load of
other jobs on a shared machine out; after --warmup updates each side is timed in blocks
of --updates updates and the fastest block is reported.
Modes (each runs in fresh child processes, so the kernel switches are read at torch's load):
  fast   one child with no kernel pins (ours as with `numerics: fast`); the two models
         are timed in alternating blocks, --rounds blocks each.
  exact  ours in a child started with the stages' pins (stages.kernels.pin_cpu_kernels,
         ours as the stages run it with `numerics: exact`), the authors' model in a child
         with none; --rounds pairs of children, alternating, 2 blocks in each child.
  pinned like fast, but both sides pinned (like for like: what the authors' model would
         cost under the same pins)
One JSON line per config and mode: ms per update of each side, authors_over_ours (above 1:
ours is faster), the CPU model, threads and torch version.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CONFIGS = {  # (rnn_dim, emb_dim, mlp_dim, z_dim), batch, frames, cond_ln
    "timit": ((1024, 512, 512, 256), 32, 40, False),
    "timit_cln": ((1024, 512, 512, 256), 32, 40, True),
    "small": ((128, 64, 64, 32), 32, 40, False),
    "tiny": ((16, 8, 8, 4), 4, 5, False),  # for tests/test_authors_speed.py
}
SIDES = ("ours", "authors")


# -- child: builds and times the models --------------------------------------------------------
def _batch(config: str):
    import torch
    _, B, T, _ = CONFIGS[config]
    g = torch.Generator().manual_seed(0)
    return (torch.randn(B, T, 200, generator=g), torch.randn(B, T, 200, generator=g),
            torch.ones(B, T))


def build_ours(config: str, args):
    """Our trainer's step through the public API only; returns a no-argument update."""
    import torch
    from pipeline.bounds import draw_noise
    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.datasets.batches import Batch
    from pipeline.models import build_model
    from pipeline.train import Stepper, make_optimizer
    (r, e, m, z), _, _, cond_ln = CONFIGS[config]
    torch.manual_seed(0)
    model = build_model(ModelConfig(x_dim=200, rnn_dim=r, emb_dim=e, mlp_dim=m, z_dim=z,
                                    cond_ln=cond_ln, z_force=args.z_force, use_l2=args.use_l2,
                                    bwd=args.bwd))
    cfg = TrainConfig(lr=1e-3, aux_weight=args.aux_weight, kl_anneal=True, compile="off",
                      precision="fp32")
    step = Stepper(model, make_optimizer(model, cfg), cfg, torch.device("cpu"))
    batch = Batch(*_batch(config))
    gen = torch.Generator().manual_seed(0)
    return lambda: step(batch, draw_noise(model, batch, gen))


def build_authors(config: str, args):
    """The authors' step (train_timit.py's update) on the same batch, time-major."""
    import torch
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from authors_zforcing import AuthorsStep, AuthorsZForcing
    (r, e, m, z), _, _, cond_ln = CONFIGS[config]
    torch.manual_seed(0)
    model = AuthorsZForcing(200, e, r, z, m, 400, cond_ln=cond_ln, z_force=args.z_force,
                            use_l2=args.use_l2)
    step = AuthorsStep(model, lr=1e-3, bwd=args.bwd, aux_sta=args.aux_weight,
                       aux_end=args.aux_weight)
    x, y, mask = (t.transpose(0, 1).contiguous() for t in _batch(config))
    return lambda: step(x, y, mask)


def _top_ops(update, n: int = 2, rows: int = 8) -> dict:
    """Share of self CPU time of the costliest ops over n updates (table on stderr)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            update()
    avgs = sorted(prof.key_averages(), key=lambda k: k.self_cpu_time_total, reverse=True)
    total = sum(k.self_cpu_time_total for k in avgs) or 1.0
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows), file=sys.stderr)
    return {"ops_per_update": round(sum(k.count for k in avgs) / n),
            "self_time_share": {k.key: round(k.self_cpu_time_total / total, 3) for k in avgs[:rows]}}


def child(args):
    if args.ours_root:
        sys.path.insert(0, str(Path(args.ours_root).resolve()))
    else:
        sys.path.insert(0, str(ROOT))
    import torch
    torch.set_num_threads(args.threads)
    config = args.config[0]
    sides = SIDES if args.child == "both" else (args.child,)
    build = {"ours": build_ours, "authors": build_authors}
    updates = {s: build[s](config, args) for s in sides}
    for s in sides:
        for _ in range(args.warmup):
            updates[s]()
    best = {s: float("inf") for s in sides}
    for _ in range(args.repeats):
        for s in sides:  # alternating blocks: a change of load hits both sides alike
            t0 = time.thread_time()
            for _ in range(args.updates):
                updates[s]()
            best[s] = min(best[s], (time.thread_time() - t0) / args.updates)
    out = {"ms_per_update": {s: round(1000 * best[s], 2) for s in sides},
           "torch": torch.__version__, "threads": torch.get_num_threads(),
           "cpu_capability": torch.backends.cpu.get_cpu_capability()}
    if args.profile:
        out["profile"] = {s: _top_ops(updates[s]) for s in sides}
    print(json.dumps(out), flush=True)


# -- parent: starts the children ---------------------------------------------------------------
def run_child(side: str, config: str, pinned: bool, repeats: int, args) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", side, "--config", config,
           "--threads", str(args.threads), "--updates", str(args.updates),
           "--warmup", str(args.warmup), "--repeats", str(repeats), "--bwd", str(args.bwd),
           "--aux-weight", str(args.aux_weight),
           "--z-force" if args.z_force else "--no-z-force"]
    cmd += ["--use-l2"] * args.use_l2 + ["--profile"] * args.profile
    cmd += ["--ours-root", args.ours_root] if args.ours_root else []
    sys.path.insert(0, str(ROOT))
    from benchmarks.pins import child_env
    out = subprocess.run(cmd, env=child_env(pinned), capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    if args.profile:
        sys.stderr.write(out.stderr)
    return json.loads(out.stdout.splitlines()[-1])


def measure(config: str, mode: str, args) -> dict:
    if mode in ("fast", "pinned"):
        res = run_child("both", config, mode == "pinned", args.rounds, args)
        best = res["ms_per_update"]
    else:
        best = {s: float("inf") for s in SIDES}
        for _ in range(args.rounds):
            for side in SIDES:
                res = run_child(side, config, side == "ours", 2, args)
                best[side] = min(best[side], res["ms_per_update"][side])
    from benchmarks.machine import cpu_model  # run_child put the repository on sys.path
    (r, e, m, z), B, T, cond_ln = CONFIGS[config]
    rec = {"config": config, "mode": mode, "ms_per_update": best,
           "authors_over_ours": round(best["authors"] / best["ours"], 3),
           "rnn_dim": r, "emb_dim": e, "mlp_dim": m, "z_dim": z, "batch": B, "frames": T,
           "cond_ln": cond_ln, "z_force": args.z_force, "use_l2": args.use_l2, "bwd": args.bwd,
           "ours_pinned": mode != "fast", "authors_pinned": mode == "pinned", "rounds": args.rounds, "updates": args.updates,
           "clock": "thread_time", "machine": cpu_model(), "threads": res["threads"],
           "torch": res["torch"]}
    if args.profile and "profile" in res:
        rec["profile"] = res["profile"]
    return rec


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", nargs="+", choices=CONFIGS, default=["small"],
                    help="sizes: timit (rnn 1024, emb 512, mlp 512, z 256, batch 32 x 40 frames), "
                         "timit_cln (the same with cond_ln), small (rnn 128, emb 64, mlp 64, "
                         "z 32, 32 x 40), tiny (for the test)")
    ap.add_argument("--modes", nargs="+", choices=("fast", "exact", "pinned"), default=["fast"],
                    help="fast: both unpinned in one process; exact: ours pinned, theirs not, "
                         "two processes; pinned: both pinned in one process (see above)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="fast, pinned: timed blocks per side; exact: pairs of child processes")
    ap.add_argument("--updates", type=int, default=3, help="updates per timed block")
    ap.add_argument("--warmup", type=int, default=1, help="untimed updates per side and process")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (intra-op)")
    ap.add_argument("--z-force", action=argparse.BooleanOptionalAction, default=True,
                    help="aux net sees z_t only (both sides; the authors zero h_{t-1})")
    ap.add_argument("--use-l2", action="store_true", help="squared-error aux cost (both sides)")
    ap.add_argument("--bwd", type=float, default=0.0,
                    help="backward-head weight (the authors compute that head at any weight)")
    ap.add_argument("--aux-weight", type=float, default=0.01, help="aux cost weight, constant")
    ap.add_argument("--profile", action="store_true",
                    help="torch.profiler over 2 more updates of each side: top ops (stderr, JSON)")
    ap.add_argument("--ours-root", default="",
                    help="repository root whose pipeline/ is 'ours' (default: this one); the "
                         "pins still come from this repository's stages/kernels.py")
    ap.add_argument("--child", choices=("both",) + SIDES, default=None,
                    help="internal: run as a timing child for one config (what the modes start)")
    ap.add_argument("--repeats", type=int, default=2, help="internal: timed blocks in a child")
    args = ap.parse_args(argv)
    if args.child:
        return child(args)
    for config in args.config:
        for mode in args.modes:
            print(json.dumps(measure(config, mode, args)), flush=True)


if __name__ == "__main__":
    main()
