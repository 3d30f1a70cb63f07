"""Latent interpolation between two sentences, as in the authors' IMDB sampler
(sample_imdb.py --interpolation in their research code): infer the per-step latents
z_1..z_T of two sentences, mix them linearly, z_t(a) = (1 - a) z_t^A + a z_t^B at evenly
spaced a in [0, 1], and decode a sentence from each mixture.

What this module does (docs/model.md, "Latent interpolation", says why where it differs
from the authors):
- z^A, z^B are the posterior means: the teacher-forced posterior path with zero noise, as
  pipeline.models.lm_probe.perturb takes them. a = 0 and a = 1 decode exactly z^A and z^B,
  so the first and last sentences are the two reconstructions (perturb at 0 sd, greedy).
- Past a sentence's own length it has no latent; that side of the mix is the prior mean
  p(z_t | h_{t-1}) on the decoding path (what reconstruction uses there too).
- Each point is decoded twice from <S>: greedy (argmax, deterministic) and with tokens
  drawn from the softmax (all draws from `generator`); <pad> and <S> are never emitted and
  a sentence stops at </S>. One row at a time, so a point's tokens do not depend on how
  many points are decoded.
"""
from __future__ import annotations

import torch

from .lm_probe import EOS_ID, BOS_ID, _eval, _pick, _require_latent


def alphas(points: int) -> list[float]:
    """`points` evenly spaced mixing weights, exactly 0.0 first and 1.0 last."""
    if not isinstance(points, int) or points < 2:
        raise ValueError(f"an interpolation needs at least 2 points, got {points!r}")
    return [i / (points - 1) for i in range(points)]


def choose_pair(n: int, seed: int) -> tuple[int, int]:
    """Two distinct sentence indices in [0, n), drawn from `seed` alone."""
    if n < 2:
        raise ValueError(f"an interpolation needs two sentences, the split has {n}")
    g = torch.Generator().manual_seed(int(seed))
    i, j = torch.randperm(n, generator=g)[:2].tolist()
    return i, j


def posterior_means(model, batch) -> torch.Tensor:
    """(T, B, z_dim): z_t = the posterior mean on the teacher-forced path of zero noise."""
    _require_latent(model)
    with _eval(model):
        zero = batch.mask.new_zeros(model.noise_shape(batch))
        _, Z, _, _, _ = model.posterior_path(batch, zero)
    return Z


def decode_mix(model, za: torch.Tensor, zb: torch.Tensor, alpha: float, max_len: int,
               greedy: bool = True, generator: torch.Generator | None = None,
               eos: int = EOS_ID, latents: list | None = None) -> list[int]:
    """One sentence's token ids (</S> included when emitted) decoded with
    z_t = (1 - alpha) a_t + alpha b_t, a_t = za[t] (za: (La, z_dim)) while t < La, else the
    prior mean; b_t likewise from zb. alpha 0 uses za exactly, alpha 1 zb exactly. `latents`,
    when a list, receives each step's z_t (1, z_dim)."""
    _require_latent(model)
    with _eval(model):
        p = next(model.parameters())
        h = c = p.new_zeros(1, model.cfg.rnn_dim)
        x = torch.full((1,), BOS_ID, dtype=torch.long, device=p.device)
        out = []
        for t in range(max_len):
            mu_p, _ = model.prior(h)
            a = za[t].unsqueeze(0) if t < za.shape[0] else mu_p
            b = zb[t].unsqueeze(0) if t < zb.shape[0] else mu_p
            z = a if alpha == 0 else b if alpha == 1 else (1 - alpha) * a + alpha * b
            if latents is not None:
                latents.append(z)
            h, c = model.cell(model.input_preacts(x), h, c, z)
            x = _pick(model.out.proj(h), greedy, generator)
            out.append(int(x))
            if out[-1] == eos:
                break
        return out


def interpolate(model, batch_a, batch_b, points: int, generator: torch.Generator | None = None,
                max_len: int | None = None, eos: int = EOS_ID) -> dict:
    """Decodings along the line between the posterior means of two one-sentence batches:
    {"alpha": [...], "greedy": [ids, ...], "sample": [ids, ...]}, one entry per point, the
    first decoding sentence A's means, the last B's. max_len defaults to the longer
    sentence's length (the authors decode as many steps as the padded pair has)."""
    for name, bt in (("batch_a", batch_a), ("batch_b", batch_b)):
        if bt.size != 1:
            raise ValueError(f"{name} must hold one sentence, got {bt.size}")
    za = posterior_means(model, batch_a)[:int(batch_a.mask.sum()), 0]
    zb = posterior_means(model, batch_b)[:int(batch_b.mask.sum()), 0]
    steps = max_len or max(za.shape[0], zb.shape[0])
    res = {"alpha": alphas(points), "greedy": [], "sample": []}
    for a in res["alpha"]:
        res["greedy"].append(decode_mix(model, za, zb, a, steps, True, generator, eos))
        res["sample"].append(decode_mix(model, za, zb, a, steps, False, generator, eos))
    return res
