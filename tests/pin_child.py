"""Child process of tests/test_kernel_pinning.py: train small cells, print JSON.

    python tests/pin_child.py --models zforcing rnn_gmm [--pin] [--threads 1] [--updates 30]

Kernel choice is decided by the environment this process starts with (the test varies it),
and, with --pin, by stages.kernels, called before torch or numpy is imported as the stages do.
Prints {"hashes": {model: {parameter: sha256 of its bytes}}, "ms_per_update": {model: ms},
"numpy": {probe: sha256}, "pinned", "setup"} and, with --repeat, "repeat": the hashes of
a second identical run in the same process. The numpy probes are a float32 exp (numpy's
own SIMD loops) and a float32 matmul (OpenBLAS): both change with the kernels picked.
"""
import argparse
import hashlib
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=["zforcing"])  # none: numpy probes only
    ap.add_argument("--pin", action="store_true")
    ap.add_argument("--repeat", action="store_true", help="train each model twice (determinism)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--updates", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--frames", type=int, default=40)
    ap.add_argument("--rnn", type=int, default=32)
    ap.add_argument("--emb", type=int, default=16)
    ap.add_argument("--mlp", type=int, default=16)
    ap.add_argument("--z", type=int, default=8)
    ap.add_argument("--gmm", type=int, default=5)  # mixture size: same kernels as 20, cheaper
    return ap.parse_args()


def sha(t) -> str:
    return hashlib.sha256(t.tobytes()).hexdigest()


def train_cell(name: str, args):
    """(sha256 per weight, median ms per update after the first log) of one short run."""
    import torch

    from pipeline.config import ModelConfig, TrainConfig
    from pipeline.datasets.batches import ArrayLoader
    from pipeline.models import build_model
    from pipeline.train import train

    # audio-like frames: a fixed random walk per sequence, so targets follow from inputs
    g = torch.Generator().manual_seed(0)
    walk = torch.randn(args.batch * args.updates, args.frames + 1, 200, generator=g).cumsum(1) * 0.1
    loader = ArrayLoader(walk[:, :-1].contiguous(), walk[:, 1:].contiguous(),
                         batch_size=args.batch, shuffle=True, seed=0)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name=name, x_dim=200, rnn_dim=args.rnn, emb_dim=args.emb,
                                    mlp_dim=args.mlp, z_dim=args.z, gmm_components=args.gmm))
    cfg = TrainConfig(max_updates=args.updates, batch_size=args.batch, log_every=10,
                      ckpt_every=10**6, lr=1e-3)
    out = train(model, loader, cfg)
    timed = sorted(r["ms_per_update"] for r in out["history"] if r["kind"] == "train")[1:]
    return ({k: sha(v.contiguous().numpy()) for k, v in out["last_state"].items()},
            timed[len(timed) // 2] if timed else None)


def main():
    args = parse()
    pinned = None
    if args.pin:  # before any torch / numpy import, exactly as a stage process does
        from stages.kernels import pin_cpu_kernels
        pinned = pin_cpu_kernels()
    import numpy as np

    setup = None
    if args.models:  # torch only when training: the numpy-only runs stay cheap
        import torch
        if args.pin:
            from stages.kernels import pinned_torch_setup
            setup = pinned_torch_setup(args.threads)
        else:
            torch.set_num_threads(args.threads)
            setup = {"cpu_capability": torch.backends.cpu.get_cpu_capability()}
    runs = {name: train_cell(name, args) for name in args.models}
    repeat = {name: train_cell(name, args)[0] for name in args.models} if args.repeat else None
    a = np.random.default_rng(0).standard_normal((300, 300)).astype(np.float32)
    print(json.dumps({"hashes": {k: v[0] for k, v in runs.items()}, "repeat": repeat,
                      "ms_per_update": {k: v[1] for k, v in runs.items()},
                      "numpy": {"exp": sha(np.exp(a)), "matmul": sha(a @ a)},
                      "pinned": pinned, "setup": setup}))


if __name__ == "__main__":
    main()
