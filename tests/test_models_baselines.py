"""Baselines of the speech table (issue 5, SPEC §2): output families, RNN, VRNN, SRNN,
parameter budgets. Tiny sizes throughout; one thread (the CI box is shared)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.config import ConfigError, ModelConfig
from pipeline.datasets.batches import Batch
from pipeline.models import MODELS, build_model, count_parameters
from pipeline.models.base import Terms
from pipeline.models.distributions import (ARGaussianOutput, GMMOutput, LOGVAR_MIN, gaussian_log_prob,
                                           make_output)

torch.set_num_threads(1)

BASELINES = ["rnn_gauss", "rnn_gmm", "rnn_ar", "vrnn_i_gauss", "vrnn_gauss", "vrnn_gmm", "srnn"]
LATENT = ["vrnn_i_gauss", "vrnn_gauss", "vrnn_gmm", "srnn"]


def tiny_cfg(name, **kw):
    base = dict(name=name, x_dim=6, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4, gmm_components=3)
    base.update(kw)
    return ModelConfig(**base)


def toy_batch(b=3, t=7, d=6, seed=0, ragged=True):
    g = torch.Generator().manual_seed(seed)
    seq = torch.randn(b, t + 1, d, generator=g)
    x, y = seq[:, :-1].clone(), seq[:, 1:].clone()
    mask = torch.ones(b, t)
    if ragged:
        for i, n in enumerate(torch.linspace(t, max(2, t // 2), b).round().long()):
            mask[i, n:] = 0
    return Batch(x, y, mask)


# -- output families ---------------------------------------------------------------------

def test_models_baselines_gmm_log_density_matches_torch_distributions():
    torch.manual_seed(0)
    head = GMMOutput(5, 4, components=3)
    h, y = torch.randn(2, 6, 5), torch.randn(2, 6, 4)
    log_w, mu, logvar = head.params(h)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_w),
        torch.distributions.Independent(torch.distributions.Normal(mu, torch.exp(0.5 * logvar)), 1))
    torch.testing.assert_close(head.log_prob(h, y), ref.log_prob(y), rtol=1e-5, atol=1e-4)
    assert head.log_prob(h, y).shape == (2, 6)
    # one component collapses to the plain diagonal Gaussian
    one = GMMOutput(5, 4, components=1)
    _, mu1, lv1 = one.params(h)
    torch.testing.assert_close(one.log_prob(h, y),
                               gaussian_log_prob(y, mu1[..., 0, :], lv1[..., 0, :]).sum(-1))


def test_models_baselines_gmm_logvar_floor_and_sampling():
    head = GMMOutput(3, 4, components=2)
    with torch.no_grad():
        head.proj.bias.fill_(-1e3)                     # would be exp(-1000) variances unclamped
    h = torch.zeros(5, 3)
    assert (head.params(h)[2] >= LOGVAR_MIN).all()
    assert torch.isfinite(head.log_prob(h, torch.zeros(5, 4))).all()
    assert head.sample(torch.randn(7, 2, 3)).shape == (7, 2, 4)
    assert head.mean(torch.randn(7, 3)).shape == (7, 4)


def _slow_ar_params(head: ARGaussianOutput, h, y):
    """Sample-by-sample reference: (mu_i, logvar_i) computed from y_<i alone, with the
    weights read one connection at a time through the degree rule (not the stored masks)."""
    d, hid = head.d, head.hidden
    a_all, b_all = head.ctx(h).split([hid, 2 * d], dim=-1)
    deg = [(k % (d - 1)) + 1 for k in range(hid)]
    mus, lvs = [], []
    for i in range(d):                                   # sample i + 1 in 1-based degrees
        prev = y[..., :i]
        u = []
        for k in range(hid):
            pre = a_all[..., k]
            for j in range(min(i, deg[k])):              # unit k reads samples 1..deg[k]
                pre = pre + head.inp.weight[k, j] * prev[..., j]
            u.append(torch.nn.functional.leaky_relu(pre, 1 / 3).clamp(-3, 3))
        out = []
        for row in (i, d + i):
            v = b_all[..., row]
            for k in range(hid):
                if deg[k] < i + 1:                       # output i+1 reads units of lower degree
                    v = v + head.out.weight[row, k] * u[k]
            for j in range(i):
                v = v + head.lin.weight[row, j] * prev[..., j]
            out.append(v)
        mus.append(out[0])
        lvs.append(out[1])
    from pipeline.models.distributions import bounded_logvar
    return torch.stack(mus, -1), bounded_logvar(torch.stack(lvs, -1))


def test_models_baselines_ar_output_matches_slow_sample_by_sample_evaluation():
    torch.manual_seed(1)
    head = ARGaussianOutput(3, 5, hidden=7)
    with torch.no_grad():
        head.lin.weight.normal_()                          # switch on the linear AR path
    h, y = torch.randn(4, 3), torch.randn(4, 5)
    mu, lv = head.params(h, y)
    mu_s, lv_s = _slow_ar_params(head, h, y)
    torch.testing.assert_close(mu, mu_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lv, lv_s, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(head.log_prob(h, y), gaussian_log_prob(y, mu_s, lv_s).sum(-1))
    # causality: changing samples >= i never moves the parameters of samples <= i
    for i in range(5):
        y2 = y.clone()
        y2[:, i:] += torch.randn(4, 5 - i)
        mu2, lv2 = head.params(h, y2)
        torch.testing.assert_close(mu2[:, :i + 1], mu[:, :i + 1])
        torch.testing.assert_close(lv2[:, :i + 1], lv[:, :i + 1])
        if i + 1 < 5:
            assert not torch.allclose(mu2[:, i + 1:], mu[:, i + 1:])


def test_models_baselines_ar_output_sequential_sampling_agrees_with_parallel_density():
    torch.manual_seed(2)
    head = ARGaussianOutput(3, 6)
    with torch.no_grad():
        head.lin.weight.normal_(std=0.3)
        head.out.weight.normal_(std=0.3)
    h = torch.randn(5, 3)
    # greedy frame is a fixed point of the parallel means
    g = head.mean(h)
    torch.testing.assert_close(head.params(h, g)[0], g, rtol=1e-5, atol=1e-5)
    # a sample's standardised residuals under the parallel parameters are the drawn noise
    torch.manual_seed(7)
    s = head.sample(h)
    torch.manual_seed(7)
    eps = torch.stack([torch.randn(5) for _ in range(6)], -1)
    mu, lv = head.params(h, s)
    torch.testing.assert_close((s - mu) * torch.exp(-0.5 * lv), eps, rtol=1e-4, atol=1e-4)


def test_models_baselines_output_families_registered_and_usable_by_zforcing():
    for fam in ("gmm", "ar_gaussian"):
        assert make_output(fam, 4, 6, components=2) is not None
        cfg = tiny_cfg("zforcing", output=fam)
        terms = build_model(cfg)(toy_batch(), torch.randn(3, 7, 4))
        assert torch.isfinite(terms.elbo).all()
