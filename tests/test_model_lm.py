"""Language models on tokens: perplexity, masking, the Z-Forcing LM cell, bounds, step
alignment, config errors, and the decoding probes of the report page."""
import math

import pytest
import torch

from pipeline.bounds import iwae_bound
from pipeline.config import ConfigError, ModelConfig
from pipeline.datasets.batches import Batch
from pipeline.datasets.text import BOS_ID, EOS_ID, PAD_ID, perplexity
from pipeline.models import build_model
from pipeline.models.base import masked_sum
from pipeline.models.distributions import CategoricalOutput
from pipeline.models.lm_probe import perturb, reconstruct, sample_prior

V = 12


def _cfg(name="zforcing_lm", **kw):
    base = dict(name=name, data="tokens", x_dim=V, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
    base.update(kw)
    return ModelConfig(**base)


def _batch(lengths=(6, 4, 2), seed=0):
    """Sentences x = [<S>, w..], y = [w.., </S>], padded with 0 past each length."""
    g = torch.Generator().manual_seed(seed)
    B, T = len(lengths), max(lengths)
    words = torch.randint(4, V, (B, T + 1), generator=g)
    rows = torch.zeros(B, T + 1, dtype=torch.long)
    mask = torch.zeros(B, T)
    for b, n in enumerate(lengths):
        rows[b, 0], rows[b, 1:n], rows[b, n] = BOS_ID, words[b, 1:n], EOS_ID
        mask[b, :n] = 1
    return Batch(rows[:, :-1], rows[:, 1:], mask)


def test_perplexity_by_hand_on_three_words():
    # fixed distribution p = (1/2, 1/4, 1/4) over a 3-word vocabulary
    head = CategoricalOutput(1, 3)
    with torch.no_grad():
        head.proj.weight.zero_()
        head.proj.bias.copy_(torch.tensor([0.5, 0.25, 0.25]).log())
    y = torch.tensor([[0, 1, 2], [1, 1, 0]])
    mask = torch.tensor([[1.0, 1, 1], [1, 1, 0]])            # the last 0 is padding
    with torch.no_grad():
        total = float(masked_sum(head.log_prob(torch.zeros(2, 3, 1), y), mask).sum())
    # -log p: 1 + 2 + 2 + 2 + 2 bits over 5 tokens
    assert total == pytest.approx(-9 * math.log(2), rel=1e-6)
    assert perplexity(total, float(mask.sum())) == pytest.approx(2 ** (9 / 5), rel=1e-6)
    assert perplexity(-5 * math.log(3), 5) == pytest.approx(3.0)   # uniform over 3 words
    with pytest.raises(ValueError):
        perplexity(-1.0, 0)


@pytest.mark.parametrize("name", ["zforcing_lm", "rnn_lm"])
def test_padded_steps_contribute_exactly_zero(name):
    torch.manual_seed(0)
    model = build_model(_cfg(name, bwd=0.5) if name == "zforcing_lm" else _cfg(name))
    b = _batch()
    noise = torch.randn(b.mask.shape + (4,))
    t1 = model(b, noise)
    # garbage in every padded position of x and y changes nothing
    junk = torch.randint(0, V, b.x.shape)
    pad = b.mask == 0
    b2 = Batch(torch.where(pad, junk, b.x), torch.where(pad, junk.flip(1), b.y), b.mask)
    t2 = model(b2, noise)
    for k in ("log_px", "kl", "aux", "bwd_nll", "log_pz", "log_qz"):
        assert torch.equal(getattr(t1, k), getattr(t2, k)), k
    # a sentence scored alone equals its row in the padded batch
    alone = Batch(b.x[2:, :2], b.y[2:, :2], b.mask[2:, :2])
    t3 = model(alone, noise[2:, :2])
    assert torch.allclose(t3.log_px, t1.log_px[2:], atol=1e-5)
    assert t1.steps.tolist() == [6, 4, 2]


def test_lm_cell_forget_gate_plus_one():
    model = build_model(_cfg())
    r = model.cfg.rnn_dim
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    # the +1 rides on the input-side pre-activations (computed once for all steps)
    pre = model.input_preacts(torch.tensor([5, 6, 7]))
    g = model.gates(pre, torch.zeros(3, 4 * r), torch.randn(3, 4))
    assert (g[:, r:2 * r] == 1).all() and (g[:, :r] == 0).all() and (g[:, 2 * r:] == 0).all()
    # ... so with every weight zero the cell keeps sigmoid(1) of its state
    c = torch.randn(3, r)
    _, c1 = model.cell(pre, torch.zeros(3, r), c, torch.zeros(3, 4))
    assert torch.allclose(c1, torch.sigmoid(torch.tensor(1.0)) * c)
    # the z path is W_2 LReLU(W_1 z + b_1): hidden layer of emb_dim units, W_2 without bias
    assert model.z_hid.out_features == 8 and model.z_gates.bias is None
    assert model.z_gates.out_features == 4 * r


def test_terms_finite_and_iwae_above_elbo():
    torch.manual_seed(1)
    model = build_model(_cfg())
    b = _batch((7, 5, 3, 6))
    t = model(b)
    for k in ("log_px", "log_pz", "log_qz", "kl", "aux"):
        assert torch.isfinite(getattr(t, k)).all(), k
    assert (t.kl >= 0).all() and (t.aux != 0).all()
    assert torch.allclose(t.kl_dims.sum(1), t.kl, rtol=1e-5)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        elbo = torch.stack([model(b, torch.randn(model.noise_shape(b), generator=g)).elbo
                            for _ in range(64)]).mean(0)
    iwae = iwae_bound(model, b, k=64, generator=g)
    assert (iwae >= elbo - 0.05).all(), (iwae, elbo)
    assert (iwae <= 0).all()


def test_output_at_t_depends_on_inputs_up_to_t_only():
    torch.manual_seed(2)
    model = build_model(_cfg())
    r = model.cfg.rnn_dim
    # cut the posterior's view of the future (b_t) so z_t depends on the past only
    with torch.no_grad():
        model.post.l1.weight[:, r:] = 0
    b = _batch((8,))
    zero = torch.zeros(model.noise_shape(b))
    H, *_ = model.posterior_path(b, zero)
    t = 4
    # a different target y_t (and every later token) leaves h_0..h_t, so p(y_t | .), unchanged
    y2 = b.y.clone()
    y2[0, t:] = (y2[0, t:] - 3) % (V - 4) + 4              # every token from t on replaced
    x2 = torch.cat([b.x[:, :1], y2[:, :-1]], 1)
    assert not torch.equal(y2, b.y)
    H2, *_ = model.posterior_path(Batch(x2, y2, b.mask), zero)
    assert torch.equal(H[:t + 1], H2[:t + 1])
    assert not torch.allclose(H[t + 1], H2[t + 1])          # x_{t+1} = y_t is read next
    # the baseline LSTM likewise
    rnn = build_model(_cfg("rnn_lm"))
    h1, _ = rnn.rnn(rnn.emb(b.x))
    h2, _ = rnn.rnn(rnn.emb(x2))
    assert torch.equal(h1[:, :t + 1], h2[:, :t + 1]) and not torch.allclose(h1[:, t + 1], h2[:, t + 1])


def test_stepwise_cell_reproduces_the_fused_pass():
    torch.manual_seed(3)
    model = build_model(_cfg())
    b = _batch((5,))
    H, Z, *_ = model.posterior_path(b, torch.randn(model.noise_shape(b)))
    h = c = torch.zeros(1, model.cfg.rnn_dim)
    for t in range(5):
        h, c = model.cell(model.input_preacts(b.x[:, t]), h, c, Z[t])
        assert torch.allclose(h, H[t], atol=1e-6)


def test_config_errors_are_one_line():
    with pytest.raises(ConfigError) as e:
        build_model(_cfg(data="audio"))
    assert "\n" not in str(e.value) and "tokens" in str(e.value)
    with pytest.raises(ConfigError) as e:
        build_model(_cfg(cond_ln=True))
    assert "cond_ln" in str(e.value)
    assert build_model(_cfg(output="gaussian")).cfg.output == "categorical"
    assert build_model(_cfg(z_force=False)).aux.l1.in_features == 16 + 4


def test_sample_prior_stops_at_eos_and_is_reproducible():
    torch.manual_seed(4)
    for name in ("zforcing_lm", "rnn_lm"):
        model = build_model(_cfg(name))
        a = sample_prior(model, 6, 10, EOS_ID, torch.Generator().manual_seed(1))
        b = sample_prior(model, 6, 10, EOS_ID, torch.Generator().manual_seed(1))
        assert torch.equal(a, b) and a.shape[0] == 6 and a.shape[1] <= 10
        assert not ((a == PAD_ID) & (torch.cumsum(a == EOS_ID, 1) == 0)).any()  # pad only after </S>
        assert not (a == BOS_ID).any()
        for row in a:
            hit = (row == EOS_ID).nonzero()
            if len(hit):
                assert (row[hit[0, 0] + 1:] == PAD_ID).all()
        # an output head that always prefers </S>: every sentence is just </S>
        with torch.no_grad():
            model.out.proj.bias[EOS_ID] = 100.0
        only_eos = sample_prior(model, 3, 10, EOS_ID, torch.Generator().manual_seed(0))
        assert only_eos.tolist() == [[EOS_ID]] * 3


def test_reconstruct_and_perturb():
    torch.manual_seed(5)
    model = build_model(_cfg())
    with torch.no_grad():                     # make z matter for the decoded tokens
        model.z_gates.weight.mul_(40.0)
        model.out.proj.weight.mul_(10.0)
    b = _batch((6, 4, 5))
    rec = reconstruct(model, b, torch.Generator().manual_seed(0))
    assert torch.equal(rec, reconstruct(model, b, torch.Generator().manual_seed(0)))
    assert rec.shape[0] == 3 and rec.shape[1] <= 6
    base = perturb(model, b, dim=0, delta_sd=0.0)
    assert torch.equal(base, perturb(model, b, dim=0, delta_sd=0.0))
    moved = [perturb(model, b, dim=d, delta_sd=s) for d in range(4) for s in (-3.0, 3.0)]
    assert any(m.shape != base.shape or not torch.equal(m, base) for m in moved)
    with pytest.raises(ValueError):
        perturb(model, b, dim=4, delta_sd=1.0)
    with pytest.raises(ValueError):
        reconstruct(build_model(_cfg("rnn_lm")), b)
    assert model.training                     # probes leave the mode as they found it


def test_zforcing_lm_learns_a_toy_language():
    torch.manual_seed(6)
    model = build_model(_cfg(rnn_dim=24, z_dim=2))
    # sentences "a b c d ... </S>" from one of two fixed patterns
    pats = torch.tensor([[4, 5, 6, 7, 8, EOS_ID], [9, 10, 11, 4, 5, EOS_ID]])
    y = pats[torch.arange(16) % 2]
    b = Batch(torch.cat([torch.full((16, 1), BOS_ID), y[:, :-1]], 1), y, torch.ones(16, 6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        t = model(b)
        loss = (-t.log_px + t.kl + 0.01 * t.aux).mean()
        first = first if first is not None else float(loss.detach())
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        ppl = perplexity(float(model(b).elbo.sum()), 16 * 6)
    assert ppl < 1.6 < math.exp(first / 6), (ppl, first)
