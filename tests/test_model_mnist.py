"""Sequential binarized MNIST models: the Bernoulli head, the one-step shift between input
and target, and Z-Forcing's reconstruction from the posterior."""
import dataclasses
import math

import numpy as np
import pytest
import torch

from pipeline.config import ModelConfig
from pipeline.datasets.batches import Batch, PixelLoader
from pipeline.models import build_model
from pipeline.models.distributions import BernoulliOutput
from pipeline.models.zforcing import ZForcing

PIXEL_CFG = ModelConfig(name="zforcing", data="binary", x_dim=1, output="bernoulli",
                        rnn_dim=16, emb_dim=8, mlp_dim=16, z_dim=8)


def _pixels(n=3, steps=20, seed=0, ink=0.3):
    return (np.random.default_rng(seed).random((n, steps)) < ink).astype(np.uint8)


def _batch(pixels) -> Batch:
    return PixelLoader(pixels, batch_size=len(pixels), shuffle=False).batch(0, 0)


def test_bernoulli_head_matches_hand_computation_and_clips_logits():
    head = BernoulliOutput(2)
    with torch.no_grad():
        head.proj.weight.copy_(torch.tensor([[1.0, 2.0]]))
        head.proj.bias.fill_(0.5)
    h = torch.tensor([[1.0, 1.0], [10.0, 0.0], [-1.0, -4.0]], dtype=torch.float64)
    head = head.double()
    # logits 3.5, 10.5 -> clipped to 8, -8.5 -> clipped to -8
    y = torch.tensor([1, 0, 1])
    want = [-math.log1p(math.exp(-3.5)), -math.log1p(math.exp(8.0)), -math.log1p(math.exp(8.0))]
    assert torch.allclose(head.log_prob(h, y), torch.tensor(want, dtype=torch.float64), atol=1e-12)
    # unclipped, pixel 2 would cost 10.5 nats, not ~8.0003
    assert abs(head.log_prob(h, y)[1].item() + 10.5) > 2.0
    p = head.mean(h)
    assert torch.allclose(p, torch.tensor([1 / (1 + math.exp(-3.5)), 1 / (1 + math.exp(-8.0)),
                                           1 / (1 + math.exp(8.0))], dtype=torch.float64))
    # log p(1) and log p(0) are the two halves of one distribution
    assert torch.allclose(head.log_prob(h, torch.ones(3)).exp() + head.log_prob(h, torch.zeros(3)).exp(),
                          torch.ones(3, dtype=torch.float64))
    s = head.sample(h.expand(4000, 3, 2))
    assert s.dtype == torch.int64 and set(s.unique().tolist()) <= {0, 1}
    assert abs(s[:, 0].float().mean().item() - p[0].item()) < 0.03


def _step_logits(model, batch, noise):
    """(B, T) clipped output logits of a teacher-forced forward pass, read off the head."""
    seen = []
    hook = model.out.proj.register_forward_hook(lambda m, i, o: seen.append(o.squeeze(-1)))
    try:
        model(batch, noise)
    finally:
        hook.remove()
    logits = seen[0].clamp(-8.0, 8.0)
    return logits.t() if isinstance(model, ZForcing) else logits  # Z-Forcing runs time-major


@pytest.mark.parametrize("name", ["zforcing", "rnn"])
def test_pixel_t_never_seen_when_predicting_it(name):
    torch.manual_seed(0)
    model = build_model(dataclasses.replace(PIXEL_CFG, name=name))
    if name == "zforcing":
        # q also reads b_t, which summarises y_t..y_T: the latent may carry the current
        # pixel (the KL pays for it). Cut that path so only the forward inputs remain.
        with torch.no_grad():
            model.post.l1.weight[:, PIXEL_CFG.rnn_dim:] = 0.0
    pixels = _pixels()
    steps = pixels.shape[1]
    noise = torch.randn(3, steps, PIXEL_CFG.z_dim)
    base = _step_logits(model, _batch(pixels), noise)
    assert base.shape == (3, steps)
    for t in (0, 7, steps - 1):
        flipped = pixels.copy()
        flipped[:, t] ^= 1
        logits = _step_logits(model, _batch(flipped), noise)
        assert torch.equal(logits[:, :t + 1], base[:, :t + 1]), t   # p(p_t | p_<t) unchanged
        if t < steps - 1:
            assert (logits[:, t + 1] != base[:, t + 1]).all(), t   # the next step reads p_t


def test_zforcing_posterior_reads_the_current_pixel():
    """The other half of the alignment: with b_t intact, step t's term does move with p_t."""
    torch.manual_seed(0)
    model = build_model(PIXEL_CFG)
    pixels = _pixels()
    noise = torch.randn(3, pixels.shape[1], PIXEL_CFG.z_dim)
    flipped = pixels.copy()
    flipped[:, 7] ^= 1
    a = _step_logits(model, _batch(pixels), noise)
    b = _step_logits(model, _batch(flipped), noise)
    assert (a[:, 7] != b[:, 7]).all()


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_reconstruct_shapes_and_determinism():
    torch.manual_seed(0)
    model = build_model(PIXEL_CFG)
    batch = _batch(_pixels(n=4, steps=15))
    r = model.reconstruct(batch, _gen(3))
    assert r.shape == (4, 15) and r.dtype == torch.int64 and set(r.unique().tolist()) <= {0, 1}
    assert torch.equal(r, model.reconstruct(batch, _gen(3)))
    assert not torch.equal(torch.stack([model.reconstruct(batch, _gen(s)) for s in range(4)]),
                           r.expand(4, 4, 15))
    p = model.reconstruct(batch, _gen(3), sample_output=False)
    assert p.shape == (4, 15) and p.dtype == torch.float32 and ((p > 0) & (p < 1)).all()
    # audio frames: (B, T, x_dim)
    audio = build_model(ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4))
    g = torch.Generator().manual_seed(0)
    frames = Batch(torch.randn(2, 6, 4, generator=g), torch.randn(2, 6, 4, generator=g), torch.ones(2, 6))
    assert audio.reconstruct(frames, _gen(1)).shape == (2, 6, 4)
    means = [audio.reconstruct(frames, _gen(s), sample_output=False) for s in (1, 2)]
    assert not torch.equal(*means)   # the latents are still drawn from q


def test_reconstruct_is_not_teacher_forced_and_starts_from_the_posterior():
    torch.manual_seed(0)
    model = build_model(PIXEL_CFG)
    pixels = _pixels(n=4, steps=15)
    batch = _batch(pixels)
    r = model.reconstruct(batch, _gen(5), sample_output=False)
    # only the targets (through b_t) and the first input matter: other inputs are ignored
    junk = Batch(torch.cat([batch.x[:, :1], 1 - batch.x[:, 1:]], 1), batch.y, batch.mask)
    assert torch.equal(model.reconstruct(junk, _gen(5), sample_output=False), r)
    assert torch.equal(model.reconstruct(junk, _gen(6)), model.reconstruct(batch, _gen(6)))
    # the future targets do matter: q(z_t | h_{t-1}, b_t) reads them
    flipped = pixels.copy()
    flipped[:, -1] ^= 1
    assert not torch.equal(model.reconstruct(_batch(flipped), _gen(5), sample_output=False), r)
    # step 1 is the training forward's step 1 with the same posterior noise
    eps = torch.zeros(model.noise_shape(batch))
    eps[:, 0] = torch.randn(4, PIXEL_CFG.z_dim, generator=_gen(5))
    assert torch.allclose(torch.sigmoid(_step_logits(model, batch, eps)[:, 0]), r[:, 0], atol=1e-6)


def test_reconstruct_rejects_tokens():
    model = build_model(ModelConfig(data="tokens", x_dim=5, output="categorical", rnn_dim=8,
                                    emb_dim=4, mlp_dim=4, z_dim=2))
    b = Batch(torch.zeros(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3))
    with pytest.raises(ValueError, match="not tokens"):
        model.reconstruct(b)


def test_overfit_reconstruction_beats_a_prior_sample():
    """Six random 7x7 patterns learnt by heart: the posterior's latents must carry them.
    KL weight 0.05 (not 1) so that the latents are used within a few updates."""
    torch.manual_seed(0)
    pixels = _pixels(n=6, steps=49, seed=1)
    batch = _batch(pixels)
    model = build_model(PIXEL_CFG)
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(30):
        t = model(batch)
        loss = (-t.log_px + 0.05 * t.kl).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    def err(x):
        return (x.float() - batch.y.float()).abs().mean().item()
    g = _gen(0)
    rec = np.mean([err(model.reconstruct(batch, g)) for _ in range(4)])
    torch.manual_seed(1)
    prior = np.mean([err(model.generate(6, 49)) for _ in range(4)])
    assert rec < 0.5 * prior, (rec, prior)
