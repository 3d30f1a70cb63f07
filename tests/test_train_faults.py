"""Faults around the training loop: a run killed anywhere and resumed ends with
exactly the history, best state and last state of a run never interrupted; a checkpoint
of another run is refused. The killed runs are tests/fault_child.py in child processes
forked from a forkserver that imports torch once, so nine kills take seconds."""
import dataclasses
import multiprocessing as mp
from multiprocessing import forkserver as mp_forkserver
import os
import random
import signal
from pathlib import Path

import pytest
import torch

import fault_child
from pipeline import checkpoint
from pipeline.checkpoint import CheckpointMismatch
from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.train import train

from toy import sine_loader

TIMING = ("frames_per_s", "ms_per_update")  # wall-clock fields, the only ones allowed to differ
CFG = fault_child.CFG
LAST = CFG.max_updates
assert LAST % CFG.log_every and LAST % CFG.ckpt_every == 0  # the case once lost on resume


def summary(out: dict) -> dict:
    """History without wall-clock fields and the raw bytes of the best and last states."""
    raw = lambda state: {k: (str(v.dtype), tuple(v.shape), v.numpy().tobytes())  # noqa: E731
                         for k, v in state.items()}
    return {"history": [{k: v for k, v in r.items() if k not in TIMING} for r in out["history"]],
            "best": raw(out["best_state"]), "last": raw(out["last_state"])}


def _scenarios():
    """(marker, signal), seeded: SIGKILL before 4 random updates, halfway through a random
    and through the final checkpoint write, and right after the final checkpoint; SIGINT
    halfway through a checkpoint write; SIGTERM before a random update."""
    rng = random.Random(14)
    steps = rng.sample(range(2, LAST + 1), 5)
    saves = rng.sample(range(CFG.ckpt_every, LAST, CFG.ckpt_every), 2)
    return ([(f"step {u}", signal.SIGKILL) for u in steps[:4]]
            + [(f"saving {saves[0]}", signal.SIGKILL), (f"saving {LAST}", signal.SIGKILL),
               (f"saved {LAST}", signal.SIGKILL),
               (f"saving {saves[1]}", signal.SIGINT), (f"step {steps[4]}", signal.SIGTERM)])


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = fault_child.run(tmp_path_factory.mktemp("reference") / "train.pt")
    assert out["position"]["updates"] == LAST
    updates = lambda kind: [r["update"] for r in out["history"] if r["kind"] == kind]  # noqa: E731
    assert updates("train") == [9, 18, LAST] and updates("valid")[-1] == LAST
    # the final validation finds the best state: a resume that lost it would keep another
    assert out["position"]["best_valid"] == out["history"][-1]["valid_elbo_per_seq"]
    assert out["position"]["best_valid"] > max(r["valid_elbo_per_seq"] for r in out["history"]
                                               if r["kind"] == "valid" and r["update"] < LAST)
    return summary(out)


@pytest.fixture(scope="module")
def forkserver():
    """A forkserver that has imported fault_child (and torch) once, not once per child."""
    ctx = mp.get_context("forkserver")
    # torch._dynamo: the first optimiser of a process imports it, for seconds
    ctx.set_forkserver_preload(["fault_child", "torch._dynamo"])
    # the server is a fresh `python -c` that (Python 3.11) imports its preload before it
    # applies our sys.path: PYTHONPATH lets it find fault_child and the pipeline
    here = Path(fault_child.__file__).resolve().parent
    path = [str(here), str(here.parent)] + [p for p in [os.environ.get("PYTHONPATH")] if p]
    with pytest.MonkeyPatch.context() as m:
        m.setenv("PYTHONPATH", os.pathsep.join(path))
        mp_forkserver.ensure_running()
    return ctx


def kill_at(ctx, ckpt, marker: str, sig) -> int:
    """Start the run in a child, signal it when it waits at `marker`; its exit code."""
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=fault_child.child, args=(send, str(ckpt), marker))
    proc.start()
    send.close()
    try:
        assert recv.poll(120), f"the child never reached {marker!r}"
        assert recv.recv() == marker
        os.kill(proc.pid, sig)
        proc.join(60)
    finally:
        if proc.is_alive():
            proc.kill()
            proc.join()
    return proc.exitcode


@pytest.mark.parametrize("marker, sig", _scenarios(), ids=lambda v: getattr(v, "name", v))
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, reference, forkserver, marker, sig):
    ckpt = tmp_path / "train.pt"
    code = kill_at(forkserver, ckpt, marker, sig)
    # Ctrl-C normally ends the child with 130; on a loaded machine it can land inside the
    # exception handling of multiprocessing's target, which exits 1 instead. Either way the
    # resume below must give the uninterrupted result.
    assert code in {signal.SIGINT: (130, 1)}.get(sig, (-sig,))
    where, update = marker.split()
    update = int(update)
    # what the signal left: the last complete checkpoint, and half a write only after SIGKILL
    saved = checkpoint.load(ckpt)["position"]["updates"] if ckpt.exists() else 0
    last_before = (update - 1) // CFG.ckpt_every * CFG.ckpt_every
    assert saved == (update if where == "saved" else last_before)
    litter = list(tmp_path.glob("train.pt.*.tmp"))
    assert len(litter) == (1 if where == "saving" and sig == signal.SIGKILL else 0)

    resumed = fault_child.run(ckpt)
    assert summary(resumed) == reference
    assert list(tmp_path.glob("*.tmp")) == []  # the next write removed the dead one's file


def _epoch_run(ckpt):
    """Epoch-limited run (4 epochs, 12 updates) validated at each epoch end (eval_every 0),
    log_every not dividing the updates."""
    cfg = dataclasses.replace(CFG, max_updates=1000, max_epochs=4, eval_every=0, log_every=5,
                              ckpt_every=2)
    torch.manual_seed(0)
    model = build_model(fault_child.MODEL)
    train_loader, valid = fault_child.loaders()
    return train(model, train_loader, cfg, valid_loader=valid, ckpt_path=ckpt)


def _crash_after_save(n: int):
    """checkpoint.save_atomic that raises right after writing its n-th checkpoint."""
    real, count = checkpoint.save_atomic, [0]

    def save(obj, path):
        out = real(obj, path)
        count[0] += 1
        if count[0] == n:
            raise KeyboardInterrupt
        return out
    return save


def test_crash_after_any_checkpoint_of_an_epoch_limited_run(tmp_path, monkeypatch):
    full = summary(_epoch_run(tmp_path / "full.pt"))
    kinds = [(r["kind"], r["update"]) for r in full["history"]]
    assert kinds[-2:] == [("train", 12), ("valid", 12)] and ("valid", 9) in kinds
    for n in range(1, 12 // 2 + 1):  # checkpoints at 2, 4, ..., 12 (the last one final)
        ckpt = tmp_path / f"crash{n}.pt"
        with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
            m.setattr(checkpoint, "save_atomic", _crash_after_save(n))
            _epoch_run(ckpt)
        assert checkpoint.load(ckpt)["position"]["updates"] == 2 * n
        assert summary(_epoch_run(ckpt)) == full, f"crash after checkpoint {n}"


def _short_run(ckpt, model_cfg=fault_child.MODEL, **changes):
    torch.manual_seed(0)
    cfg = dataclasses.replace(CFG, max_updates=4, ckpt_every=2, **changes)
    return train(build_model(model_cfg), sine_loader(n=16, steps=4, batch_size=8), cfg,
                 ckpt_path=ckpt)


def test_checkpoint_of_other_settings_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    first = _short_run(ckpt, lr=1e-3)
    with pytest.raises(CheckpointMismatch) as err:
        _short_run(ckpt, lr=5e-4)
    msg = str(err.value)
    assert str(ckpt) in msg and "train_config.lr" in msg and "0.001" in msg and "0.0005" in msg
    assert "\n" not in msg and "delete it or pass another ckpt_path" in msg
    with pytest.raises(CheckpointMismatch, match="model_config.rnn_dim"):
        _short_run(ckpt, dataclasses.replace(fault_child.MODEL, rnn_dim=8), lr=1e-3)
    with pytest.raises(CheckpointMismatch, match=r"train_config\.extra\.note is absent there"):
        _short_run(ckpt, lr=1e-3, extra={"note": "x"})
    # the same settings resume (here: a finished run returns its own result)
    again = _short_run(ckpt, lr=1e-3)
    assert summary(again) == summary(first)
    # a checkpoint written before fingerprints existed is not trusted either
    old = checkpoint.load(ckpt)
    del old["fingerprint"]
    checkpoint.save_atomic(old, ckpt)
    with pytest.raises(CheckpointMismatch, match="no run fingerprint"):
        _short_run(ckpt, lr=1e-3)


def test_model_of_other_architecture_is_refused(tmp_path):
    ckpt = tmp_path / "run.pt"
    _short_run(ckpt)
    other = ModelConfig(**{**dataclasses.asdict(fault_child.MODEL), "name": "rnn"})
    with pytest.raises(CheckpointMismatch, match="model_class is 'ZForcing' there, 'RNN' now"):
        _short_run(ckpt, other)


def test_resume_key_follows_the_data_bytes_not_the_manifest(tmp_path):
    """Two prepared folders with the same manifest.json and other arrays
    must not share a checkpoint folder; a copy of the same bytes elsewhere does."""
    import numpy as np

    def prepared(name, seed):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "manifest.json").write_text('{"kind": "binary", "splits": {"train": {"file": "train.npy"}}}')
        np.save(folder / "train.npy", np.random.default_rng(seed).integers(0, 2, (8, 16), dtype=np.uint8))
        return folder

    settings = {"cell": "mnist/zforcing/s0", "train": dataclasses.asdict(CFG)}
    a, other, copy = prepared("a", 0), prepared("other", 1), prepared("copy", 0)
    key = checkpoint.resume_key(settings, a)
    assert len(key) == 16 and key == checkpoint.resume_key(settings, copy)
    assert checkpoint.resume_key(settings, other) != key
    assert checkpoint.resume_key({**settings, "cell": "mnist/zforcing/s1"}, a) != key
    (copy / "train.npy").rename(copy / "valid.npy")  # same bytes under another name
    assert checkpoint.resume_key(settings, copy) != key


# The train stage up to pipeline.train.train, which each script replaces (FAKE_TRAIN),
# once per prepared folder given on the command line.
STAGE_RUN = """
import sys
import pipeline.train
from stages import train as stage

class Stop(Exception):
    pass

{fake_train}
pipeline.train.train = fake_train
for data in sys.argv[1:]:
    sys.argv = ["train", "mnist", "zforcing", "0", "--data", data, "--out", data + "-model",
                "--live", data + "-live", "--ckpt-root", data + "-ckpt"]
    try:
        stage.main()
    except Stop:
        pass
"""

STAGE_KEYS = STAGE_RUN.format(fake_train="""
def fake_train(*args, ckpt_path, **kw):
    print("ckpt", ckpt_path)
    raise Stop
""")


def test_train_stage_keys_its_checkpoint_on_the_prepared_arrays(tmp_path):
    """The stage itself (up to the training call): prepared data with the same manifest and
    other arrays gets another checkpoint folder."""
    import subprocess
    import sys

    import numpy as np

    from pipeline.datasets.mnist import _write

    def prepared(name, seed):
        rng = np.random.default_rng(seed)
        splits = {s: rng.integers(0, 2, (40, 16), dtype=np.uint8) for s in ("train", "valid", "test")}
        _write(tmp_path / name, "embedded", splits, {})
        return tmp_path / name

    a, b = prepared("a", 0), prepared("b", 1)
    assert (a / "manifest.json").read_bytes() == (b / "manifest.json").read_bytes()
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", STAGE_KEYS, str(a), str(b)], cwd=root,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    paths = [Path(line.split()[1]) for line in res.stdout.splitlines() if line.startswith("ckpt ")]
    assert len(paths) == 2 and paths[0].parent.name != paths[1].parent.name


def _swap_killed_at(out: Path, step: int, can_exchange: bool) -> int:
    """atomic_dir writing "new" over `out` in a forked child, SIGKILLed just before the
    `step`-th file-system step after its block (an exchange, a rename or a removal);
    the child's exit status (0: it finished before that step)."""
    from pipeline.datasets import storage
    pid = os.fork()
    if pid == 0:  # the child never returns into pytest
        try:
            count = [0]

            def dying(fn):
                def call(*args, **kw):
                    count[0] += 1
                    if count[0] == step:
                        os.kill(os.getpid(), signal.SIGKILL)
                    return fn(*args, **kw)
                return call
            with storage.atomic_dir(out) as tmp:
                (Path(tmp) / "version").write_text("new")
                real = getattr(storage, "exchange", None)
                storage.exchange = dying(real if can_exchange else lambda a, b: False)
                storage.os.replace, storage.shutil.rmtree = dying(os.replace), dying(storage.shutil.rmtree)
        finally:
            os._exit(0)
    return os.waitpid(pid, 0)[1]


@pytest.mark.parametrize("can_exchange", [True, False], ids=["rename-exchange", "two-renames"])
def test_output_folder_swap_killed_anywhere_leaves_the_old_or_the_new(tmp_path, can_exchange):
    """A stage's output folder (stages.common.output_dir) is swapped in by
    atomic_dir. With a rename-exchange, `out` holds the old or the new folder whenever a
    kill lands; with two renames (no exchange), the next call puts the old one back
    before it starts."""
    from pipeline.datasets.storage import atomic_dir, exchange
    if can_exchange:
        (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
        if not exchange(tmp_path / "a", tmp_path / "b"):
            pytest.skip("no rename-exchange on this system or filesystem")
    killed = 0
    for step in range(1, 7):
        out = tmp_path / f"step{step}" / "prepared"
        out.mkdir(parents=True)
        (out / "version").write_text("old")
        status = _swap_killed_at(out, step, can_exchange)
        killed += status != 0
        if not can_exchange:  # the next call's recovery, then a failing block: nothing new
            with pytest.raises(RuntimeError), atomic_dir(out):
                raise RuntimeError
        assert (out / "version").read_text() in ("old", "new"), f"killed at step {step}"
        assert os.listdir(out) == ["version"]
        with atomic_dir(out) as tmp:  # and the next run ends clean
            (Path(tmp) / "version").write_text("next")
        assert os.listdir(out.parent) == ["prepared"] and (out / "version").read_text() == "next"
    assert killed == (2 if can_exchange else 5)  # every step was hit, then the run finished


LIVE_STEPS = STAGE_RUN.format(fake_train="""
def fake_train(*args, on_log, on_eval, **kw):
    on_log({"update": 4, "epoch": 0, "kind": "train", "loss": 1.0, "kl_per_seq": 0.5,
            "skipped_updates": 0})
    on_eval({"update": 4, "valid_elbo_per_seq": -3.0, "lr": 1e-3})
    raise Stop
""")


def test_validation_points_land_on_the_update_validated(tmp_path):
    """dvclive's validation curve: the point of update 4 is at step 4 (the train record's
    next_step had moved the step past it)."""
    import subprocess
    import sys

    import numpy as np

    from pipeline.datasets.mnist import _write
    rng = np.random.default_rng(0)
    _write(tmp_path / "d", "embedded", {s: rng.integers(0, 2, (40, 16), dtype=np.uint8)
                                        for s in ("train", "valid", "test")}, {})
    root = Path(__file__).resolve().parents[1]
    res = subprocess.run([sys.executable, "-c", LIVE_STEPS, str(tmp_path / "d")], cwd=root,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    valid = (tmp_path / "d-live/plots/metrics/valid/elbo_per_seq.tsv").read_text().split()
    train = (tmp_path / "d-live/plots/metrics/train/loss.tsv").read_text().split()
    assert valid[:4] == ["step", "elbo_per_seq", "4", "-3.0"], valid
    assert train[:4] == ["step", "loss", "4", "1.0"], train
