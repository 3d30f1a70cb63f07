"""Baselines of the speech table (docs/model.md): output families, RNN, VRNN, SRNN,
parameter budgets. Tiny sizes throughout; one thread (the CI box is shared)."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from pipeline.config import ConfigError, ModelConfig
from pipeline.datasets.batches import Batch
from pipeline.models import MODELS, build_model, count_parameters
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


# -- every baseline: registry, shapes, masks, signs ---------------------------------------

def _run(model, batch, seed=0):
    shape = model.noise_shape(batch)
    noise = None if shape is None else torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    return model(batch, noise), noise


def test_models_baselines_registry_and_exactness():
    for name in BASELINES + ["rnn", "vrnn", "vrnn_i", "zforcing_ar"]:
        assert name in MODELS
    fam = {"rnn_gauss": "gaussian", "rnn_gmm": "gmm", "rnn_ar": "ar_gaussian", "vrnn_i_gauss": "gaussian",
           "vrnn_gauss": "gaussian", "vrnn_gmm": "gmm", "zforcing_ar": "ar_gaussian"}
    for name, family in fam.items():
        model = build_model(tiny_cfg(name, output="gmm" if family != "gmm" else "gaussian"))
        assert model.cfg.output == family                 # the suffix fixes the family
    for name in BASELINES:
        model = build_model(tiny_cfg(name))
        assert model.exact == name.startswith("rnn")
        assert (model.noise_shape(toy_batch()) is None) == model.exact
        assert count_parameters(model) > 0
    with pytest.raises(ConfigError):
        tiny_cfg("rnn", ar_hidden=-1)


@pytest.mark.parametrize("name", BASELINES)
def test_models_baselines_shapes_and_masks(name):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(name))
    batch = toy_batch()
    terms, noise = _run(model, batch)
    B, T = batch.mask.shape
    for k in ("log_px", "log_pz", "log_qz", "kl", "aux", "bwd_nll", "steps"):
        assert getattr(terms, k).shape == (B,), k
    torch.testing.assert_close(terms.steps, batch.mask.sum(1))
    assert torch.isfinite(terms.elbo).all()
    if model.exact:
        assert terms.kl_dims is None
    else:
        assert noise.shape == (B, T, 4)
        assert terms.kl_dims.shape == (B, 4)
        torch.testing.assert_close(terms.kl_dims.sum(1), terms.kl, rtol=1e-5, atol=1e-4)
    # padded steps contribute exactly nothing: garbage there (inputs, targets, noise) is ignored
    pad = batch.mask == 0
    assert pad.any()
    bad = Batch(batch.x.masked_fill(pad.unsqueeze(-1), 1e3), batch.y.masked_fill(pad.unsqueeze(-1), float("nan")),
                batch.mask)
    bad_noise = None if noise is None else noise.masked_fill(pad.unsqueeze(-1), 50.0)
    t2 = model(bad, bad_noise)
    for k in ("log_px", "log_pz", "log_qz", "kl"):
        torch.testing.assert_close(getattr(t2, k), getattr(terms, k), rtol=0, atol=0)
    # and a sequence scored alone, trimmed to its length, gets the same terms
    n = int(batch.mask[-1].sum())
    alone = Batch(batch.x[-1:, :n], batch.y[-1:, :n], batch.mask[-1:, :n])
    t3 = model(alone, None if noise is None else noise[-1:, :n])
    for k in ("log_px", "log_pz", "log_qz", "kl"):
        torch.testing.assert_close(getattr(t3, k), getattr(terms, k)[-1:], rtol=1e-5, atol=1e-4)
    # gradients reach every parameter
    (-terms.elbo.mean()).backward()
    missing = [p for p, w in model.named_parameters() if w.grad is None]
    assert not missing, missing
    # generation from the prior
    gen = model.generate(2, 3)
    assert gen.shape == (2, 3, 6) and torch.isfinite(gen).all()


@pytest.mark.parametrize("name", BASELINES)
def test_models_baselines_bound_sign_conventions(name):
    from pipeline.bounds import iwae_bound
    torch.manual_seed(1)
    model = build_model(tiny_cfg(name)).eval()
    batch = toy_batch(ragged=False)
    terms, _ = _run(model, batch)
    torch.testing.assert_close(terms.elbo, terms.log_px - terms.kl)
    torch.testing.assert_close(terms.log_weight, terms.log_px + terms.log_pz - terms.log_qz)
    with torch.no_grad():
        if model.exact:                                 # "=": log_px is log p(y), nothing else
            for k in ("log_pz", "log_qz", "kl", "aux", "bwd_nll"):
                assert (getattr(terms, k) == 0).all(), k
            torch.testing.assert_close(iwae_bound(model, batch, 4), terms.log_px)
            return
        # "≥": KL >= 0 per dimension; E_q[log q - log p] = KL; ELBO <= IWAE_k on average
        assert (terms.kl_dims >= -1e-6).all()
        big = Batch(batch.x.repeat(200, 1, 1), batch.y.repeat(200, 1, 1), batch.mask.repeat(200, 1))
        t, _ = _run(model, big, seed=3)
        mc = (t.log_qz - t.log_pz).view(200, -1).mean(0)
        kl = t.kl.view(200, -1).mean(0)       # closed form given each sample's history
        torch.testing.assert_close(mc, kl, rtol=0.1, atol=0.5)
        elbo = t.elbo.view(200, -1).mean(0)
        iwae = iwae_bound(model, batch, 64, generator=torch.Generator().manual_seed(4))
        assert (iwae >= elbo - 0.05).all()


def _sine_batch(n=32, steps=10, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps + 1, dtype=torch.float32).view(1, -1, 1)
    k = torch.arange(dim, dtype=torch.float32).view(1, 1, -1)
    freq = 0.3 + 0.4 * torch.rand(n, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    seq = torch.sin(freq * (t * dim + k) / dim * 3 + phase) + 0.1 * torch.randn(n, steps + 1, dim, generator=g)
    return Batch(seq[:, :-1], seq[:, 1:], torch.ones(n, steps))


@pytest.mark.parametrize("name", BASELINES)
def test_models_baselines_tiny_model_learns_toy_task(name):
    torch.manual_seed(0)
    model = build_model(tiny_cfg(name, rnn_dim=24, emb_dim=12, mlp_dim=12))
    batch = _sine_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, eps=1e-5)
    gen = torch.Generator().manual_seed(0)

    def bound():
        shape = model.noise_shape(batch)
        return model(batch, None if shape is None else torch.randn(shape, generator=gen)).elbo.mean()

    with torch.no_grad():
        start = bound() / 10
    for _ in range(150):
        opt.zero_grad()
        (-bound()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 100.0)
        opt.step()
    with torch.no_grad():
        end = sum(bound() for _ in range(4)) / 40
    # per frame of 6 noisy sine samples: from about -9 nats to well above 0
    assert end > start + 6.0, (name, float(start), float(end))


# -- latent structure -----------------------------------------------------------------------

def _future_changed(batch, t):
    """The same batch with every target after step t (and the inputs that copy them) changed."""
    y = batch.y.clone()
    y[:, t + 1:] += 1.0 + torch.randn_like(y[:, t + 1:])
    x = batch.x.clone()
    x[:, 1:] = y[:, :-1]
    return Batch(x, y, batch.mask)


def test_models_baselines_srnn_posterior_uses_the_future():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("srnn"))
    batch = toy_batch(ragged=False)
    batch.x[:, 1:] = batch.y[:, :-1]
    noise = torch.randn(model.noise_shape(batch))
    t = 2
    v1 = model.latents(batch, noise)
    v2 = model.latents(_future_changed(batch, t), noise)
    # q(z_t) moves when only the future moves; the deterministic path d_t and the first
    # prior (z_0 = 0) do not (later priors move only through the sampled z_{t-1})
    for s in range(t + 1):
        assert not torch.allclose(v1["mu_q"][s], v2["mu_q"][s])
        assert not torch.allclose(v1["lv_q"][s], v2["lv_q"][s])
    torch.testing.assert_close(v1["mu_p"][0], v2["mu_p"][0])
    torch.testing.assert_close(v1["d"][:t + 2], v2["d"][:t + 2])
    # Res_q: the posterior mean is the prior mean plus the residual net's output
    hq = torch.cat([torch.cat([torch.zeros_like(v1["z"][:1]), v1["z"][:-1]]), v1["a"]], -1)
    torch.testing.assert_close(v1["mu_q"], v1["mu_p"] + model.post(hq)[0])


def test_models_baselines_vrnn_posterior_is_filtering():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("vrnn_gauss"))
    batch = toy_batch(ragged=False)
    batch.x[:, 1:] = batch.y[:, :-1]
    noise = torch.randn(model.noise_shape(batch))
    t = 2
    v1, v2 = model.latents(batch, noise), model.latents(_future_changed(batch, t), noise)
    torch.testing.assert_close(v1["mu_q"][:t + 1], v2["mu_q"][:t + 1])
    assert not torch.allclose(v1["mu_q"][t + 1], v2["mu_q"][t + 1])


def test_models_baselines_vrnn_i_prior_is_standard_normal():
    torch.manual_seed(0)
    model = build_model(tiny_cfg("vrnn_i_gauss"))
    assert model.prior is None
    assert not any("prior" in n for n, _ in model.named_parameters())
    batch = toy_batch()
    noise = torch.randn(model.noise_shape(batch))
    v = model.latents(batch, noise)
    assert (v["mu_p"] == 0).all() and (v["lv_p"] == 0).all()
    terms = model(batch, noise)
    std = torch.distributions.Normal(0.0, 1.0)
    q = torch.distributions.Normal(v["mu_q"], torch.exp(0.5 * v["lv_q"]))
    m = batch.mask.t()
    log_pz = (std.log_prob(v["z"]).sum(-1) * m).sum(0)
    kl = (torch.distributions.kl_divergence(q, std).sum(-1) * m).sum(0)
    torch.testing.assert_close(terms.log_pz, log_pz, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(terms.kl, kl, rtol=1e-5, atol=1e-4)
    # the learned-prior VRNN has a data-dependent prior
    learned = build_model(tiny_cfg("vrnn_gauss"))
    assert learned.latents(batch, noise)["mu_p"].abs().sum() > 0


# -- parameter budgets ----------------------------------------------------------------------

def test_models_baselines_match_budget_closest_rnn_dim():
    from pipeline.models.budget import budget_like, match_budget, param_count, resolve_budget
    ref = tiny_cfg("zforcing", rnn_dim=32)
    target = param_count(ref)
    assert target == count_parameters(build_model(ref))
    for name in BASELINES:
        cfg = match_budget(tiny_cfg(name), target)
        n = param_count(cfg)
        below = param_count(replace(cfg, rnn_dim=cfg.rnn_dim - 1))
        above = param_count(replace(cfg, rnn_dim=cfg.rnn_dim + 1))
        assert abs(n - target) <= min(abs(below - target), abs(above - target)), name
        assert n == count_parameters(build_model(cfg))
        assert budget_like(tiny_cfg(name), ref) == cfg
    # the config option, and its no-op default
    cfg = tiny_cfg("rnn_gmm", param_budget=target)
    assert resolve_budget(cfg) == match_budget(cfg, target)
    assert resolve_budget(resolve_budget(cfg)) == resolve_budget(cfg)
    assert resolve_budget(tiny_cfg("rnn_gmm")) == tiny_cfg("rnn_gmm")
    with pytest.raises(ConfigError):
        tiny_cfg("rnn", param_budget=-5)
