"""What a trained language model does with its latents, for the report page:
sentences from the prior, decodings of posterior latents, and latent perturbations.

Decoding starts from <S>, feeds back its own tokens (never the data's), never emits <pad>
or <S>, and stops a row at </S>. Results are token ids (n, L), </S> included, <pad> (0)
after it; pipeline.datasets.text.ids_to_text turns a row into words. Works on zforcing_lm
and, for sample_prior, on rnn_lm. All randomness comes from `generator` when given.
"""
from __future__ import annotations

import contextlib

import torch

BOS_ID, EOS_ID, PAD_ID = 1, 2, 0  # pipeline.datasets.text specials


@contextlib.contextmanager
def _eval(model):
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(was)


def _randn(shape, like, generator):
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


def _pick(logits: torch.Tensor, greedy: bool, generator) -> torch.Tensor:
    logits = logits.clone()
    logits[:, [PAD_ID, BOS_ID]] = float("-inf")
    if greedy:
        return logits.argmax(-1)
    return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)


def _is_latent(model) -> bool:
    return hasattr(model, "posterior_path")


def _decode(model, n: int, max_len: int, eos: int, generator, greedy: bool,
            z: torch.Tensor | None = None, z_len: torch.Tensor | None = None,
            prior_noise: bool = True) -> torch.Tensor:
    """Token ids (n, <= max_len). z (T, n, z_dim): the latents of steps t < z_len[row];
    other steps draw z_t from the prior p(z_t | h_{t-1}) of the decoding path (its mean
    when prior_noise is False)."""
    p = next(model.parameters())
    r = model.cfg.rnn_dim
    h = c = p.new_zeros(n, r)
    state = None
    x = torch.full((n,), BOS_ID, dtype=torch.long, device=p.device)
    done = torch.zeros(n, dtype=torch.bool, device=p.device)
    out = []
    for t in range(max_len):
        if _is_latent(model):
            mu_p, lv_p = model.prior(h)
            zt = mu_p
            if prior_noise:
                zt = zt + torch.exp(0.5 * lv_p) * _randn(mu_p.shape, mu_p, generator)
            if z is not None and t < z.shape[0]:
                zt = torch.where((t < z_len).unsqueeze(1), z[t], zt)
            h, c = model.cell(model.input_preacts(x), h, c, zt)
        else:  # rnn_lm: the baseline LSTM
            y, state = model.rnn(model.emb(x).unsqueeze(1), state)
            h = y[:, 0]
        tok = _pick(model.out.proj(h), greedy, generator)
        tok = torch.where(done, torch.full_like(tok, PAD_ID), tok)
        out.append(tok)
        done = done | (tok == eos)
        if bool(done.all()):
            break
        x = tok
    return torch.stack(out, 1)


def sample_prior(model, n: int, max_len: int, eos: int = EOS_ID,
                 generator: torch.Generator | None = None, greedy: bool = False) -> torch.Tensor:
    """n sentences from the model: z_t from the prior, tokens drawn (or argmax)."""
    with _eval(model):
        return _decode(model, n, max_len, eos, generator, greedy)


def _require_latent(model):
    if not _is_latent(model):
        raise ValueError(f"{type(model).__name__} has no latent variables to infer")


def reconstruct(model, batch, generator: torch.Generator | None = None,
                max_len: int | None = None, eos: int = EOS_ID) -> torch.Tensor:
    """Greedy decoding driven by posterior samples z_1..z_T of each sentence (the data reach
    the decoder only through z); past a sentence's length z comes from the prior."""
    _require_latent(model)
    with _eval(model):
        noise = _randn(model.noise_shape(batch), batch.mask, generator)
        _, Z, _, _, _ = model.posterior_path(batch, noise)
        lengths = batch.mask.sum(1).long()
        return _decode(model, batch.size, max_len or batch.mask.shape[1], eos, generator,
                       greedy=True, z=Z, z_len=lengths)


def perturb(model, batch, dim: int, delta_sd: float, greedy: bool = True,
            generator: torch.Generator | None = None, max_len: int | None = None,
            eos: int = EOS_ID) -> torch.Tensor:
    """Decode from the posterior means with latent `dim` moved by delta_sd prior standard
    deviations (the prior's on the same teacher-forced path) at every step. greedy: argmax
    tokens and, past a sentence's length, the prior mean, so the result is deterministic;
    otherwise tokens and those latents are drawn."""
    _require_latent(model)
    if not 0 <= dim < model.cfg.z_dim:
        raise ValueError(f"latent dimension {dim} out of range [0, {model.cfg.z_dim})")
    with _eval(model):
        zero = batch.mask.new_zeros(model.noise_shape(batch))
        H, Z, _, _, _ = model.posterior_path(batch, zero)          # zero noise: z = posterior mean
        H_prev = torch.cat([torch.zeros_like(H[:1]), H[:-1]])
        _, lv_p = model.prior(H_prev)
        Z = Z.clone()
        Z[..., dim] += delta_sd * torch.exp(0.5 * lv_p[..., dim])
        lengths = batch.mask.sum(1).long()
        return _decode(model, batch.size, max_len or batch.mask.shape[1], eos, generator,
                       greedy=greedy, z=Z, z_len=lengths, prior_noise=not greedy)
