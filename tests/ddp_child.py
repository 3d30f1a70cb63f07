"""A tiny data-parallel training run for tests/test_distributed.py, started by torchrun.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_child.py OUT [PAUSE]

Every rank writes its pid to OUT/pid.<rank>, then trains the tiny Z-Forcing of MODEL on
its shard of each global batch of loaders() (noisy sinusoids, one sequence NaN so every
epoch has an update that must be skipped on all ranks alike), checkpointing into
OUT/train.pt. Rank 0 writes OUT/result.pt: last weights, history, skips. With PAUSE = U,
rank 0 writes OUT/paused after update U's log and waits there while that file exists (the
last checkpoint before it is at update 8); with PAUSE = start, each rank writes
OUT/start.<rank> and waits likewise before it joins the group. The tests start ranks with
worker() (forked, torchrun's environment variables), torchrun agents with agent()
(torchrun's own main, in a forked process), and the stage's launch with launch() (a
process that becomes torchrun by exec, as stages/train.py does).
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository
sys.path.insert(0, str(Path(__file__).resolve().parent))       # toy.py

from pipeline import checkpoint, distributed  # noqa: E402
from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.train import train  # noqa: E402
from toy import sine_sequences  # noqa: E402
from pipeline.datasets.batches import ArrayLoader  # noqa: E402

WORLD = 2  # ranks of launch()
MODEL = ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
# logs (every 3) fall between checkpoints (every 4), so a checkpoint holds partial sums
CFG = TrainConfig(lr=3e-3, batch_size=8, max_updates=14, log_every=3, eval_every=5,
                  ckpt_every=4, kl_anneal=True, kl_step=0.02, aux_weight=0.1,
                  aux_anneal_updates=6, lr_schedule="halve", lr_floor=1e-4, seed=5)


def loaders():
    """(train, valid): 3 global batches of 8 an epoch; training sequence 5 is NaN."""
    x, y = sine_sequences(24, 8, 4, seed=0)
    x[5] = float("nan")
    vx, vy = sine_sequences(16, 8, 4, seed=1)
    return (ArrayLoader(x, y, batch_size=CFG.batch_size, seed=0, drop_last=True),
            ArrayLoader(vx, vy, batch_size=8, shuffle=False))


def run(ckpt=None, ddp=None, on_log=None) -> dict:
    torch.manual_seed(0)
    model = build_model(MODEL)
    loader, valid = loaders()
    return train(model, loader, CFG, valid_loader=valid, ckpt_path=ckpt, on_log=on_log, ddp=ddp)


def hold(marker: Path):
    """Write `marker` and wait while it exists: the test acts, then removes it."""
    marker.write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while marker.exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"nobody removed {marker}")
        time.sleep(0.05)


def main(out: Path, pause_at: int | str | None):
    torch.set_num_threads(1)
    rank = os.environ.get("RANK", "0")
    (out / f"pid.{rank}").write_text(str(os.getpid()))
    if pause_at == "start":
        hold(out / f"start.{rank}")
    ddp = distributed.from_env("cpu")
    main_rank = ddp is None or ddp.is_main

    def on_log(rec):
        if main_rank and rec["update"] == pause_at:
            hold(out / "paused")

    res = run(out / "train.pt", ddp, on_log)
    if main_rank:
        checkpoint.save_atomic({"state": res["last_state"], "history": res["history"],
                                "skipped": res["skipped"],
                                "world": ddp.world if ddp else 1}, out / "result.pt")
    if ddp is not None:
        ddp.close()


def worker(rank: int, world: int, port: int, out: str, pause_at: int | str | None = None):
    """One rank with the environment torchrun gives its workers."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    main(Path(out), pause_at)


def launch(out: str, pause_at: str):
    """The stage's data-parallel launch: this process becomes torchrun running 2 ranks."""
    distributed.exec_torchrun(WORLD, "ddp_child", [out, pause_at], dict(os.environ))


def agent(argv: list[str]):
    """`torchrun ARGV`: the elastic agent, which starts fresh worker processes."""
    from torch.distributed.run import main as torchrun
    torchrun(argv)


if __name__ == "__main__":
    pause = sys.argv[2] if len(sys.argv) > 2 else None
    main(Path(sys.argv[1]), int(pause) if pause and pause.isdigit() else pause)
