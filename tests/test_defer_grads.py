"""The step loop's weight gradients computed once after the loop (layers.StepLinear) are the
gradients plain autograd computes step by step (docs/model.md, "Weight gradients of the
step loops")."""
import dataclasses
from pathlib import Path

import pytest
import torch
import yaml

from pipeline.config import TrainConfig
from pipeline.datasets.batches import Batch
from pipeline.models import build_model
from pipeline.models.layers import StepLinear
from pipeline.train import Stepper, make_optimizer

# (model, flags, weights its step loop reads at every step): Z-Forcing's w_h, posterior's
# second layer and z's two layers into the LSTM; VRNN's phi_z share of the input weights,
# [posterior; W_hh] on g_t, posterior's second layer, phi_z; SRNN's z_{t-1} product and the
# two second layers; the language model's w_h, posterior's second layer, W_1 and W_2
CASES = [("zforcing", {}, 4), ("zforcing", {"cond_ln": True}, 4),
         ("zforcing", {"z_force": False, "use_l2": True}, 4), ("zforcing", {"bwd": 0.5}, 4),
         ("vrnn", {}, 4), ("vrnn_i", {}, 4), ("srnn", {}, 3),
         ("zforcing_lm", {"data": "tokens", "x_dim": 12, "bwd": 0.5}, 4)]
T = 6
ROOT = Path(__file__).resolve().parents[1]


def _batch(B=3, D=4, lengths=(6, 4, 5), dtype=torch.float64, tokens=False):
    g = torch.Generator().manual_seed(0)
    mask = (torch.arange(T) < torch.tensor(lengths).unsqueeze(1)).to(dtype)
    if tokens:
        return Batch(torch.randint(1, 12, (B, T), generator=g),
                     torch.randint(1, 12, (B, T), generator=g), mask)
    return Batch(torch.randn(B, T, D, generator=g, dtype=dtype),
                 torch.randn(B, T, D, generator=g, dtype=dtype), mask)


def _loss(model, batch, noise):
    t = model(batch, noise)
    return (-t.log_px + 0.5 * t.bwd_nll + 0.3 * t.aux + 0.7 * t.kl).mean()


def _graph_nodes(root) -> list[str]:
    seen, todo, names = set(), [root], []
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.append(type(node).__name__)
        todo.extend(n for n, _ in node.next_functions)
    return names


@pytest.mark.parametrize("name, flags, per_step", CASES)
def test_deferred_weight_gradients_are_the_step_by_step_ones(tiny_model_cfg, name, flags, per_step):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(tiny_model_cfg, name=name, **flags)).double()
    batch = _batch(tokens="data" in flags)
    noise = torch.randn(model.noise_shape(batch), generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    got = {}
    model.defer_min_numel = 0  # every weight the loop reads, whatever its size
    for defer in (False, True):
        model.defer_grads = defer
        model.zero_grad(set_to_none=True)
        loss = _loss(model, batch, noise)
        nodes = _graph_nodes(loss.grad_fn)
        # each weight deferred at each step, or none at all
        assert nodes.count("_DeferredLinearBackward") == (per_step * T if defer else 0)
        assert nodes.count("_CollectGradsBackward") == (per_step if defer else 0)
        loss.backward()
        got[defer] = (loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters()
                                      if p.grad is not None})
    # the deferred forward multiplies by a row-major copy of W^T, which MKL may sum in
    # another order than the transposed view (it does under the stages' MKL_CBWR pin, set
    # whenever a test has imported `stages` first)
    assert torch.allclose(got[False][0], got[True][0], rtol=1e-12, atol=0)
    plain, deferred = got[False][1], got[True][1]
    assert plain.keys() == deferred.keys()
    for name, g in plain.items():
        assert torch.allclose(deferred[name], g, rtol=1e-10, atol=1e-12 * g.abs().max()), name
    assert all(plain[n].abs().sum() > 0 for n in ("post.l2.weight", "post.l2.bias")), name


def test_only_weights_of_the_minimum_size_are_deferred(tiny_model_cfg):
    model = build_model(tiny_model_cfg)
    batch = _batch(dtype=torch.float32)
    # w_h is (4 * 16 + 8) x 16 = 1152 elements, z's weight into the LSTM 64 x 8 = 512, the
    # posterior's second layer 8 x 8 and z's projection 8 x 4: fewer
    for min_numel, deferred in ((512, 2), (1153, 0), (type(model).defer_min_numel, 0)):
        model.defer_min_numel = min_numel
        nodes = _graph_nodes(model(batch).kl.sum().grad_fn)
        assert nodes.count("_DeferredLinearBackward") == deferred * T, min_numel


def test_unreached_steps_and_plain_paths():
    torch.manual_seed(0)
    w = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, dtype=torch.float64, requires_grad=True)
    xs = torch.randn(4, 2, 3, dtype=torch.float64, requires_grad=True)
    grads = []
    for defer in (False, True):
        lin = StepLinear(w, b, defer)
        assert lin.defer == defer
        # a recurrence whose first step's output never reaches the loss
        ys = [lin(x) for x in xs.unbind(0)]
        loss = sum(((y[:, :3] + x) ** 2).sum() for y, x in zip(ys[1:], xs[1:].unbind(0)))
        grads.append(torch.autograd.grad(loss, [w, b, xs]))
    for plain, deferred in zip(*grads):
        assert torch.allclose(plain, deferred, rtol=1e-12)
    with torch.no_grad():  # evaluation, the IWAE fold, generation: plain F.linear
        assert not StepLinear(w, b).defer


def test_trainer_step_with_deferred_gradients(tiny_model_cfg):
    """Clip, fused Adam and the skip flag see the same gradients (float32, two updates)."""
    batch = _batch(dtype=torch.float32)
    cfg = TrainConfig(lr=1e-2, aux_weight=0.01, kl_anneal=True)
    after = []
    for defer in (False, True):
        torch.manual_seed(0)
        model = build_model(tiny_model_cfg)
        model.defer_grads, model.defer_min_numel = defer, 0
        step = Stepper(model, make_optimizer(model, cfg), cfg, "cpu")
        gen = torch.Generator().manual_seed(2)
        for _ in range(2):
            step(batch, torch.randn(model.noise_shape(batch), generator=gen))
        assert int(step.good) == 2
        after.append([p.detach().clone() for p in model.parameters()])
    for plain, deferred in zip(*after):
        assert torch.allclose(plain, deferred, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("defer", [False, True])
def test_fused_z_layers_are_the_two_layers(tiny_model_cfg, defer):
    """From `fuse_z_min_numel` on, z_t enters the LSTM through one map W_z W_p, built once
    per forward: the same terms and gradients as z_proj then W_z, in float64."""
    torch.manual_seed(0)
    model = build_model(tiny_model_cfg).double()
    model.defer_grads, model.defer_min_numel = defer, 0
    batch = _batch()
    noise = torch.randn(model.noise_shape(batch), generator=torch.Generator().manual_seed(1),
                        dtype=torch.float64)
    got = {}
    for fuse in (False, True):
        model.fuse_z_min_numel = 0 if fuse else 2 ** 62
        model.zero_grad(set_to_none=True)
        terms = model(batch, noise)
        loss = (-terms.log_px + 0.3 * terms.aux + 0.7 * terms.kl).mean()
        if defer:  # w_h, the posterior's second layer and z's one or two layers, every step
            assert _graph_nodes(loss.grad_fn).count("_DeferredLinearBackward") == (3 if fuse else 4) * T
        loss.backward()
        got[fuse] = ([terms.log_px, terms.kl, terms.aux],
                     {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    for a, b in zip(got[False][0], got[True][0]):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)
    assert got[False][1].keys() == got[True][1].keys()
    for name, g in got[False][1].items():
        assert torch.allclose(got[True][1][name], g, rtol=1e-10, atol=1e-12 * g.abs().max()), name
    assert got[True][1]["z_proj.weight"].abs().sum() > 0


@pytest.mark.parametrize("profile", ["default", "findings"])
def test_z_layers_fuse_from_their_size_on(tiny_model_cfg, profile):
    """W_ih's z share is 4r x m (64 x 8 = 512 here): the committed profiles' models stay under
    the class threshold, so their runs keep their bytes; TIMIT's 4096 x 512 is over it."""
    model = build_model(tiny_model_cfg)
    for min_numel, fused in ((512, True), (513, False)):
        model.fuse_z_min_numel = min_numel
        assert isinstance(model._step_linears()["z"], StepLinear) == fused
    sizes = yaml.safe_load((ROOT / "conf" / "profile" / f"{profile}.yaml").read_text())["model"]
    assert 4 * sizes["rnn_dim"] * sizes["mlp_dim"] < type(model).fuse_z_min_numel <= 4 * 1024 * 512
