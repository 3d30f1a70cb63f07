"""The compiled training step (train.compile) against eager: the same per-sequence terms,
gradients and weights, a non-finite batch skipped alike, and exact resume.

Compile time grows with the sequence length (the graph unrolls the time loop and inductor
builds kernels per step), so the CPU tests use tiny models on 3-step sequences; on a
2-core box the first (cold-cache) run compiles for about a minute, later runs reuse
inductor's on-disk cache. CUDA-graph and bf16 tests run only where CUDA is.
"""
import dataclasses
import os

import pytest
import torch

from pipeline import checkpoint
from pipeline.compile import CompileSettingError, eval_forward, training_forward
from pipeline.config import ConfigError, ModelConfig, TrainConfig
from pipeline.datasets.batches import Batch
from pipeline.models import build_model
from pipeline.train import Stepper, make_optimizer, train

from toy import sine_loader

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs and bf16 autocast need a GPU")
STEPS = 3
CFG = TrainConfig(lr=3e-3, batch_size=8, max_updates=8, log_every=2, ckpt_every=3,
                  kl_anneal=True, kl_start=0.2, kl_step=0.05, aux_weight=0.1,
                  aux_anneal_updates=4, lr_schedule="constant", seed=7)


def tiny(name):
    return ModelConfig(name=name, x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)


def batches(device="cpu"):
    """Three batches and their noise; the second has a NaN target, so its update is skipped."""
    loader = sine_loader(n=24, steps=STEPS, batch_size=8, shuffle=False)
    out, g = [], torch.Generator().manual_seed(3)
    for i in range(3):
        b = loader.batch(0, i)
        if i == 1:
            b = Batch(b.x, b.y.clone().index_fill_(0, torch.tensor([2]), float("nan")), b.mask)
        out.append((b.to(device), torch.randn(8, STEPS, 4, generator=g).to(device)))
    return out


def run_steps(name, compile_mode, precision="fp32", device="cpu"):
    """Per update: the per-sequence terms, the (clipped) gradients and the weights after it."""
    torch.manual_seed(0)
    model = build_model(tiny(name)).to(device)
    cfg = dataclasses.replace(CFG, compile=compile_mode, precision=precision)
    step = Stepper(model, make_optimizer(model, cfg), cfg, device)
    forward, seen = step.forward, []
    step.forward = lambda b, n: seen.append(forward(b, n)) or seen[-1]
    record = []
    for batch, noise in batches(device):
        step(batch, noise)
        t = seen[-1]
        record.append({
            "terms": {k: getattr(t, k).detach().cpu().clone() for k in ("log_px", "kl", "aux", "log_pz", "log_qz")},
            "grads": {n: p.grad.detach().cpu().clone() for n, p in model.named_parameters()},
            "weights": {n: p.detach().cpu().clone() for n, p in model.named_parameters()}})
    return record, (int(step.good), int(step.skipped))


def assert_close(a: torch.Tensor, b: torch.Tensor, what: str, rel=1e-5):
    """Equal NaN pattern; elsewhere within `rel` of the tensor's largest magnitude."""
    assert torch.equal(a.isnan(), b.isnan()), what
    a, b = a.nan_to_num(), b.nan_to_num()
    scale = max(float(b.abs().max()), 1e-6)
    assert float((a - b).abs().max()) <= rel * scale, (what, float((a - b).abs().max()), scale)


@pytest.mark.parametrize("name", ["zforcing", "srnn"])
def test_compiled_step_matches_eager(name):
    eager, counts = run_steps(name, "off")
    compiled, counts_c = run_steps(name, "default")
    assert counts == counts_c == (2, 1)  # the NaN batch was skipped by both
    for i, (e, c) in enumerate(zip(eager, compiled)):
        for group in ("terms", "grads", "weights"):
            for k in e[group]:
                assert_close(c[group][k], e[group][k], f"update {i} {group} {k}")
    # the skipped update moved nothing, in either path
    for k in eager[0]["weights"]:
        assert torch.equal(compiled[1]["weights"][k], compiled[0]["weights"][k]), k
    assert any(g.isnan().any() for g in compiled[1]["grads"].values())  # it was really non-finite


def _history(out):
    return [(r["update"], r["loss"], r["kl_per_seq"], r["aux_per_seq"], r["kl_weight"])
            for r in out["history"] if r["kind"] == "train"]


def test_compiled_run_resumes_exactly(tmp_path):
    cfg = dataclasses.replace(CFG, compile="default")

    def run(ckpt, stop_at=None):
        torch.manual_seed(0)
        model = build_model(tiny("zforcing"))

        def on_log(rec):
            if rec["update"] == stop_at:
                raise KeyboardInterrupt  # a crash after update 4; the last checkpoint is at 3
        return train(model, sine_loader(n=24, steps=STEPS, batch_size=8), cfg,
                     ckpt_path=ckpt, on_log=on_log)

    full = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", stop_at=4)
    assert checkpoint.load(tmp_path / "b.pt")["position"]["updates"] == 3
    resumed = run(tmp_path / "b.pt")
    assert _history(resumed) == _history(full)
    for k, v in full["last_state"].items():
        assert torch.equal(v, resumed["last_state"][k]), k
    # an eager checkpoint is not continued compiled: the numbers would differ
    eager = dataclasses.replace(cfg, compile="off")
    with pytest.raises(checkpoint.CheckpointMismatch, match="compile"):
        train(build_model(tiny("zforcing")), sine_loader(n=24, steps=STEPS, batch_size=8),
              eager, ckpt_path=tmp_path / "b.pt")


@pytest.mark.parametrize("name,extra", [("zforcing", {"cond_ln": True, "bwd": 0.5}), ("vrnn_gmm", {}),
                                        ("rnn_ar", {}), ("zforcing_lm", {})])
def test_models_trace_as_one_graph(name, extra):
    """fullgraph=True holds for every family (Dynamo alone: no code generated)."""
    from pipeline.compile import _terms_function
    tokens = name.endswith("_lm")
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny(name), data="tokens" if tokens else "audio",
                                            x_dim=11 if tokens else 4, gmm_components=2, **extra))
    x, y = ((torch.randint(0, 11, (3, STEPS)), torch.randint(0, 11, (3, STEPS))) if tokens
            else (torch.randn(3, STEPS, 4), torch.randn(3, STEPS, 4)))
    batch = Batch(x, y, torch.ones(3, STEPS))
    shape = model.noise_shape(batch)
    noise = None if shape is None else torch.randn(shape)
    fn = torch.compile(_terms_function(model), backend="eager", fullgraph=True, dynamic=False)
    with torch._dynamo.config.patch(allow_rnn=True):
        out = fn(x, y, batch.mask, noise)  # raises on a graph break
    assert torch.allclose(out[0], model(batch, noise).log_px)


def test_settings_are_checked_and_name_the_parameter():
    with pytest.raises(ConfigError, match="compile='fast'"):
        TrainConfig(compile="fast")
    with pytest.raises(ConfigError, match="precision='fp16'"):
        TrainConfig(precision="fp16")
    model = build_model(tiny("zforcing"))
    assert training_forward(model) is model  # off + fp32: the model itself, nothing wrapped
    if not CUDA:
        for kwargs, key in (({"compile_mode": "max"}, "train.compile=max"),
                            ({"precision": "bf16"}, "train.precision=bf16")):
            with pytest.raises(CompileSettingError, match=key) as err:
                training_forward(model, device="cpu", **kwargs)
            assert "\n" not in str(err.value)
    with pytest.raises(CompileSettingError, match="train.compile='fast'"):
        training_forward(model, compile_mode="fast")
    # the evaluate stage's switches are checked with the other params, before any stage runs
    from stages import params as P
    for key, bad in (("compile", "fast"), ("precision", "fp16")):
        with pytest.raises(P.ParamError, match=f"eval.{key}='{bad}'"):
            P.eval_settings({"benchmarks": {"timit": {}}, "eval": {key: bad}}, "timit")


def test_compiled_evaluation_matches_eager_with_one_compile():
    """eval.compile=default: the same bounds as the eager model (ELBO, KL, IWAE) and one
    compile for batches of 8 and 4 sequences and IWAE chunks of 16 and 8 rows (the batch
    size is symbolic; the length, which the time loop unrolls, is not)."""
    from torch._dynamo.utils import counters

    from pipeline.bounds import evaluate
    torch.manual_seed(0)
    model = build_model(tiny("zforcing")).eval()
    loader = sine_loader(n=20, steps=STEPS, batch_size=8, shuffle=False)   # batches 8, 8, 4
    kw = dict(iwae_k=4, iwae_chunk=2, seed=5)
    eager = evaluate(model, loader, **kw)
    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    compiled = evaluate(model, loader, forward=eval_forward(model, "default"), **kw)
    assert counters["stats"]["unique_graphs"] - before == 1
    for k in ("elbo_per_seq", "kl_per_seq", "aux_per_seq", "iwae_per_seq"):
        assert compiled[k] == pytest.approx(eager[k], rel=1e-5, abs=1e-5), k
    if not CUDA:
        with pytest.raises(CompileSettingError, match="eval.precision=bf16"):
            eval_forward(model, precision="bf16", device="cpu")


@needs_cuda
@pytest.mark.parametrize("name", ["zforcing", "srnn"])
def test_cuda_graphs_match_eager(name):
    eager, counts = run_steps(name, "off", device="cuda")
    graphed, counts_g = run_steps(name, "max", device="cuda")
    assert counts == counts_g == (2, 1)
    for i, (e, g) in enumerate(zip(eager, graphed)):
        for group in ("terms", "grads", "weights"):
            for k in e[group]:
                assert_close(g[group][k], e[group][k], f"update {i} {group} {k}")


@needs_cuda
def test_bf16_keeps_the_sums_in_fp32():
    torch.manual_seed(0)
    model = build_model(tiny("zforcing")).cuda()
    (batch, noise), *_ = batches("cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):  # what the bf16 forward runs under
        raw = model(batch, noise)
    assert raw.log_px.dtype == raw.kl.dtype == torch.float32  # autocast sums in fp32
    ref = model(batch, noise)
    bf16 = training_forward(model, precision="bf16", device="cuda")(batch, noise)
    for k in ("log_px", "kl", "aux"):
        assert_close(getattr(bf16, k).detach().cpu(), getattr(ref, k).detach().cpu(), k, rel=5e-2)
    training_forward(model, precision="fp32", device="cuda")  # restore fp32 matmuls


@pytest.mark.skipif(not os.environ.get("ZF_SLOW_TESTS"), reason="set ZF_SLOW_TESTS=1: compiles a 40-step graph (minutes on CPU)")
def test_compiled_step_matches_eager_at_training_length():
    global STEPS
    STEPS, short = 40, STEPS
    try:
        eager, _ = run_steps("zforcing", "off")
        compiled, _ = run_steps("zforcing", "default")
    finally:
        STEPS = short
    for e, c in zip(eager, compiled):
        for group in ("terms", "grads"):
            for k in e[group]:
                assert_close(c[group][k], e[group][k], f"{group} {k}")
