"""A small training run for tests/test_train_faults.py, which can be stopped at exact points.

run(ckpt) trains a tiny Z-Forcing on generated audio-like frames (noisy sinusoids),
checkpointing every 3 updates, and returns train()'s result. The run is 24 updates long:
not a multiple of log_every (9), so the last update has its own final log and final
validation (the case once lost on resume), and validation runs every 5 updates.

With pause_at set, the run reports that marker through `notify` and then waits there, so
the test's signal lands at a known place:
    "step U"    before update U starts
    "saving U"  in the middle of writing update U's checkpoint (half its bytes on disk)
    "saved U"   right after update U's checkpoint has been renamed into place
By hand:  python tests/fault_child.py CKPT [MARKER]      (markers are printed)
"""
from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository, when run by hand

from pipeline import checkpoint  # noqa: E402
from pipeline.config import ModelConfig, TrainConfig  # noqa: E402
from pipeline.models import build_model  # noqa: E402
from pipeline.train import train  # noqa: E402
from toy import sine_loader  # noqa: E402

MODEL = ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
CFG = TrainConfig(lr=3e-3, batch_size=8, max_updates=24, log_every=9, eval_every=5,
                  ckpt_every=3, kl_anneal=True, kl_step=0.02, aux_weight=0.1,
                  aux_anneal_updates=10, lr_schedule="halve", lr_floor=1e-4, seed=11)


def loaders():
    """(train, valid): 3 training batches an epoch, so the run crosses epoch ends too."""
    return (sine_loader(n=24, steps=8, batch_size=8, seed=0),
            sine_loader(n=16, steps=8, batch_size=8, seed=1, shuffle=False))


class Pause:
    """Reports the chosen marker and waits there for the test's signal."""

    def __init__(self, at: str, notify):
        self.at, self.notify = at, notify

    def __call__(self, marker: str):
        if marker == self.at:
            self.notify(marker)
            time.sleep(60)
            raise RuntimeError(f"no signal came at {marker!r}")


class PausingLoader:
    """The training loader, pausing before each update (update = epoch * batches + index + 1
    while every epoch runs whole, as here)."""

    def __init__(self, loader, pause: Pause):
        self.loader, self.pause = loader, pause
        self.num_batches = loader.num_batches

    def batch(self, epoch: int, index: int):
        self.pause(f"step {epoch * self.num_batches + index + 1}")
        return self.loader.batch(epoch, index)


def pause_in_saves(pause: Pause):
    """Make checkpoint writes pause halfway through their bytes and after the rename.
    Patches this process only: a child that is about to be killed."""
    real_atomic, real_torch_save = checkpoint.save_atomic, torch.save

    def save_atomic(obj, path):
        update = obj["position"]["updates"]

        def half_then_rest(o, f):
            buf = io.BytesIO()
            real_torch_save(o, buf)
            data = buf.getvalue()
            f.write(data[:len(data) // 2])
            f.flush()
            pause(f"saving {update}")
            f.write(data[len(data) // 2:])

        torch.save = half_then_rest
        try:
            out = real_atomic(obj, path)
        finally:
            torch.save = real_torch_save
        pause(f"saved {update}")
        return out

    checkpoint.save_atomic = save_atomic


def run(ckpt, pause_at: str | None = None, notify=print) -> dict:
    torch.set_num_threads(1)  # same arithmetic in every process
    torch.manual_seed(0)
    model = build_model(MODEL)
    train_loader, valid = loaders()
    if pause_at:
        pause = Pause(pause_at, notify)
        train_loader = PausingLoader(train_loader, pause)
        pause_in_saves(pause)
    return train(model, train_loader, CFG, valid_loader=valid, ckpt_path=ckpt)


def child(conn, ckpt: str, pause_at: str):
    """multiprocessing target: the marker goes back through `conn`; Ctrl-C exits 130."""
    try:
        run(ckpt, pause_at, conn.send)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    result = run(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else None,
                 lambda marker: print(marker, flush=True))
    print("finished at update", result["position"]["updates"])
