"""Training loop, bounds and checkpoints on a tiny model and a toy task."""
import dataclasses
import io
import math
import os
import pickle
import time
import traceback

import numpy as np
import pytest
import torch

from pipeline import checkpoint
from pipeline.bounds import NonFiniteEvaluation, evaluate, iwae_bound
from pipeline.checkpoint import BadCheckpoint
from pipeline.config import ConfigError, TrainConfig
from pipeline.models import build_model
from pipeline.train import NonFiniteTraining, make_optimizer, Stepper, train

from toy import sine_loader

CFG = TrainConfig(lr=3e-3, batch_size=16, max_updates=300, log_every=25, ckpt_every=50,
                  kl_anneal=True, kl_start=0.2, kl_step=0.004, aux_weight=0.1,
                  aux_anneal_updates=100, lr_schedule="constant", seed=7)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from pipeline.config import ModelConfig
    torch.manual_seed(0)
    cfg = ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
    model = build_model(cfg)
    loader = sine_loader(n=64)
    valid = sine_loader(n=32, seed=1, shuffle=False)
    before = evaluate(model, valid, seed=3)
    out = train(model, loader, CFG, valid_loader=valid)
    after = evaluate(model, valid, seed=3)
    return model, valid, before, after, out


def test_tiny_model_learns_toy_task(trained):
    model, valid, before, after, out = trained
    # the bound per step improves by more than 2 nats on a 4-dim frame (clear learning)
    assert after["elbo_per_step"] > before["elbo_per_step"] + 2.0, (before, after)
    train_recs = [r for r in out["history"] if r["kind"] == "train"]
    assert len(train_recs) == CFG.max_updates // CFG.log_every
    assert train_recs[-1]["loss"] < train_recs[0]["loss"]
    # schedules: KL weight annealed from 0.2 to the cap, aux weight to its final value
    assert train_recs[0]["kl_weight"] < 0.4 and train_recs[-1]["kl_weight"] == 1.0
    assert train_recs[-1]["aux_weight"] == pytest.approx(CFG.aux_weight)
    assert out["skipped"] == 0


def test_iwae_bounds_are_ordered(trained):
    model, valid, *_ = trained
    model.eval()
    batch = next(iter(valid))
    gen = torch.Generator().manual_seed(0)
    # the single-sample ELBO averaged over many draws estimates E[ELBO] per sequence
    elbo = torch.stack([model(batch).elbo for _ in range(200)]).mean(0).mean()
    iw1 = torch.stack([iwae_bound(model, batch, 1, generator=gen) for _ in range(200)]).mean()
    iw = {k: iwae_bound(model, batch, k, chunk=50, generator=gen).mean() for k in (10, 100)}
    # IWAE_1 equals E[ELBO] in expectation (closed-form vs sampled KL): agree within noise
    assert abs(iw1 - elbo) < 0.5, (iw1, elbo)
    assert elbo <= iw[10] <= iw[100] + 0.2
    assert iw[100] >= iw1
    res = evaluate(model, valid, iwae_k=10, seed=0)
    assert res["iwae_per_seq"] >= res["elbo_per_seq"]
    assert res["iwae_per_sample"] == pytest.approx(res["iwae_per_step"] / 1)
    # progress: one call per batch with its sequence count, and the bounds unchanged
    done = []
    again = evaluate(model, valid, iwae_k=10, seed=0, on_batch=done.append)
    assert len(done) == len(valid) and sum(done) == res["sequences"]
    assert again == res


def _history(out):
    return [(r["update"], r["loss"], r["kl_per_seq"], r["aux_per_seq"], r["kl_weight"])
            for r in out["history"] if r["kind"] == "train"]


def test_resume_gives_identical_loss_curve(tmp_path, tiny_model_cfg):
    cfg = dataclasses.replace(CFG, max_updates=60, log_every=5, ckpt_every=10, eval_every=20,
                              lr_schedule="halve", lr_floor=1e-4)
    valid = sine_loader(n=16, seed=1, shuffle=False)

    def run(ckpt, stop_at=None):
        torch.manual_seed(0)
        model = build_model(tiny_model_cfg)

        def on_log(rec):
            if stop_at is not None and rec["update"] == stop_at:
                raise KeyboardInterrupt  # simulated crash between checkpoints
        return model, train(model, sine_loader(n=40, batch_size=8), cfg, valid_loader=valid,
                            ckpt_path=ckpt, on_log=on_log)

    _, full = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", stop_at=35)   # last checkpoint at update 30
    assert checkpoint.load(tmp_path / "b.pt")["position"]["updates"] == 30
    model_b, resumed = run(tmp_path / "b.pt")
    assert _history(resumed) == _history(full)
    valid_a = [r["valid_elbo_per_seq"] for r in full["history"] if r["kind"] == "valid"]
    valid_b = [r["valid_elbo_per_seq"] for r in resumed["history"] if r["kind"] == "valid"]
    assert valid_a == valid_b
    for k, v in full["last_state"].items():
        assert torch.equal(v, resumed["last_state"][k]), k


def test_nonfinite_update_is_skipped_on_device(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg)
    cfg = dataclasses.replace(CFG, kl_anneal=True)
    opt = make_optimizer(model, cfg)
    step = Stepper(model, opt, cfg, "cpu")
    batch = next(iter(sine_loader(n=16)))
    step(batch, None)  # one good update so Adam has moments to protect
    params = {k: v.clone() for k, v in model.state_dict().items()}
    moments = {k: v.clone() for k, v in opt.state[next(iter(model.parameters()))].items()}
    good = step.good.clone()
    kl_w_before = step(batch.__class__(batch.x, batch.y * float("nan"), batch.mask), None)[0]
    for k, v in model.state_dict().items():
        assert torch.equal(v, params[k]), k
    for k, v in opt.state[next(iter(model.parameters()))].items():
        assert torch.equal(v, moments[k]), k
    assert step.good == good and step.skipped == 1
    kl_w_after, _ = step(batch, None)
    assert kl_w_after == kl_w_before  # the schedule did not advance on the skipped update
    assert step.good == good + 1


def test_checkpoint_is_atomic_and_safe(tmp_path):
    path = checkpoint.save_atomic({"w": torch.ones(3), "meta": {"a": 1}}, tmp_path / "c.pt")
    assert checkpoint.load(path)["meta"] == {"a": 1}
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    a = checkpoint.save_npz({"w": torch.arange(4.0), "b": torch.ones(2, 2)}, tmp_path / "r1.npz")
    b = checkpoint.save_npz({"b": torch.ones(2, 2), "w": torch.arange(4.0)}, tmp_path / "r2.npz")
    assert a.read_bytes() == b.read_bytes()
    assert torch.equal(checkpoint.load_npz(a)["w"], torch.arange(4.0))


class _Payload:
    """Unpickling this would create the file `marker`."""
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _flip(data: bytes, inside: bytes) -> bytes:
    """`data` with one byte of the tensor bytes `inside` inverted (CRCs left as they were)."""
    i = data.index(inside) + len(inside) // 2
    return data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1:]


def _assert_one_clean_line(err, path):
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    # not even the suppressed cause may advise unpickling the file anyway
    assert "weights_only" not in "".join(traceback.format_exception(err.value))


def test_bad_checkpoints_give_one_line_and_run_nothing(tmp_path, tiny_model_cfg):
    marker = tmp_path / "payload-ran"
    weights = torch.arange(64.0)
    good = checkpoint.save_atomic({"w": weights}, tmp_path / "good.pt").read_bytes()
    evil = io.BytesIO()
    torch.save({"w": weights, "x": _Payload(marker)}, evil)
    bad = {"truncated": good[:len(good) // 2], "empty": b"", "flipped": _flip(good, weights.numpy().tobytes()),
           "payload": evil.getvalue(), "raw_pickle": pickle.dumps({"x": _Payload(marker)})}
    for name, data in bad.items():
        path = tmp_path / f"{name}.pt"
        path.write_bytes(data)
        with pytest.raises(BadCheckpoint) as err:
            checkpoint.load(path)
        _assert_one_clean_line(err, path)
    assert "checksum" in str(pytest.raises(BadCheckpoint, checkpoint.load, tmp_path / "flipped.pt").value)
    # the training loop's resume says the same, and nothing is run or overwritten
    with pytest.raises(BadCheckpoint) as err:
        train(build_model(tiny_model_cfg), sine_loader(n=16), CFG, ckpt_path=tmp_path / "payload.pt")
    _assert_one_clean_line(err, tmp_path / "payload.pt")
    assert (tmp_path / "payload.pt").read_bytes() == evil.getvalue()
    assert not marker.exists()


def test_bad_array_files_give_one_line_and_run_nothing(tmp_path):
    marker = tmp_path / "payload-ran"
    weights = torch.arange(64.0)
    good = checkpoint.save_npz({"w": weights}, tmp_path / "good.npz").read_bytes()
    np.savez(tmp_path / "object.npz", w=np.array([_Payload(marker)], dtype=object))
    bad = {"truncated": good[:len(good) // 2], "flipped": _flip(good, weights.numpy().tobytes()),
           "raw_pickle": pickle.dumps({"w": _Payload(marker)}),
           "object": (tmp_path / "object.npz").read_bytes()}
    for name, data in bad.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        with pytest.raises(BadCheckpoint) as err:
            checkpoint.load_npz(path)
        _assert_one_clean_line(err, path)
    assert not marker.exists()


def test_stale_temporaries_are_removed_by_the_next_write(tmp_path):
    old_ns = time.time_ns() - 10 ** 10
    stale = [tmp_path / "c.pt.k3j2h1.tmp", tmp_path / "c.pt.x.y.tmp", tmp_path / "m.npz.q1.tmp"]
    kept = [tmp_path / "d.pt.k3j2h1.tmp", tmp_path / "c.ptx.k3.tmp", tmp_path / "c.pt.tmp",
            tmp_path / "c.pt.writing.tmp"]  # others' patterns, and a write still going on
    for f in stale + kept:
        f.write_bytes(b"half a file")
        os.utime(f, ns=(old_ns, old_ns))
    future = time.time_ns() + 10 ** 10
    os.utime(kept[-1], ns=(future, future))
    checkpoint.save_atomic({"w": torch.ones(2)}, tmp_path / "c.pt")
    checkpoint.save_npz({"w": torch.ones(2)}, tmp_path / "m.npz")
    assert [f.exists() for f in stale] == [False] * len(stale)
    assert [f.exists() for f in kept] == [True] * len(kept)


class _NaNRows:
    """Training data where the sequences `rows` hold a NaN target (all rows: every batch)."""
    def __init__(self, rows, n=40, batch_size=8):
        self.loader = sine_loader(n=n, batch_size=batch_size)
        self.loader.y[list(rows) if rows != "all" else slice(None), 3, 0] = float("nan")
        self.num_batches = self.loader.num_batches

    def batch(self, epoch, index):
        return self.loader.batch(epoch, index)


def test_training_carries_on_after_a_nan_batch(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg)
    valid = sine_loader(n=16, seed=1, shuffle=False)
    before = evaluate(model, valid, seed=3)
    cfg = dataclasses.replace(CFG, max_updates=30, log_every=10, ckpt_every=1000)
    out = train(model, _NaNRows([5]), cfg)  # 5 batches an epoch, one of them with the NaN
    assert out["skipped"] == 6  # once in each of the 6 epochs; the run went on
    recs = [r for r in out["history"] if r["kind"] == "train"]
    assert [(r["good_updates"], r["skipped_updates"]) for r in recs] == [(8, 2), (16, 4), (24, 6)]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in recs)
    assert recs[-1]["loss"] < recs[0]["loss"]
    assert all(torch.isfinite(v).all() for v in out["last_state"].values())
    assert evaluate(model, valid, seed=3)["elbo_per_step"] > before["elbo_per_step"] + 0.5


def test_nonfinite_training_data_stops_the_run(tiny_model_cfg):
    def run(**changes):
        torch.manual_seed(0)
        return train(build_model(tiny_model_cfg), _NaNRows("all"),
                     dataclasses.replace(CFG, ckpt_every=1000, **changes))
    with pytest.raises(NonFiniteTraining) as err:  # judged at the first log from 20 updates
        run(max_updates=100, log_every=5)
    msg = str(err.value)
    assert msg.startswith("20 of 20 updates were skipped") and "\n" not in msg
    assert "max_skip_fraction=0.5" in msg and "lr=0.003" in msg and "NaN/inf" in msg
    # a run shorter than 20 updates is judged at its end
    with pytest.raises(NonFiniteTraining, match="^6 of 6 updates"):
        run(max_updates=6, log_every=50)
    assert run(max_updates=6, log_every=50, max_skip_fraction=1.0)["skipped"] == 6
    with pytest.raises(ConfigError, match="max_skip_fraction"):
        TrainConfig(max_skip_fraction=1.5)


def test_nonfinite_split_is_an_error_not_a_number(tiny_model_cfg):
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg)
    valid = sine_loader(n=16, seed=1, shuffle=False)
    valid.y[9, 2, 1] = float("inf")
    with pytest.raises(NonFiniteEvaluation, match="^the test split gives a non-finite"):
        evaluate(model, valid, name="test")
    cfg = dataclasses.replace(CFG, max_updates=4, eval_every=2, ckpt_every=1000)
    with pytest.raises(NonFiniteEvaluation, match="^the validation split") as err:
        train(model, sine_loader(n=16), cfg, valid_loader=valid)
    assert "\n" not in str(err.value)


def test_padded_mean_quirk_matches_official_timit_denominator():
    from pipeline.bounds import padded_mean_quirk
    res = {"sequences": 1680, "padded_sequences": 1696, "elbo_per_seq": 70000.0,
           "elbo_per_step": 2.0, "iwae_per_seq": 70100.0}
    q = padded_mean_quirk(res)
    assert q["elbo_per_seq"] == pytest.approx(70000.0 * 1680 / 1696)  # 0.9 % smaller
    assert q["iwae_per_seq"] < res["iwae_per_seq"] and q["elbo_per_step"] == 2.0
