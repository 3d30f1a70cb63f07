"""Likelihood bounds for any model, from the per-sequence Terms it returns.

Single-sample ELBO:  log p(y | z) - KL(q || p), closed-form KL, z ~ q.
Importance-weighted bound with K samples (Burda et al.):
    log (1/K) sum_k p(y, z_k) / q(z_k | y),  z_k ~ q,
batched over samples (K samples of each sequence, in chunks to bound memory; a model
that folds samples computes its data-only work once for all K) and computed with
logsumexp. For exact models (no latents) both equal log p(y).
ELBO <= IWAE_K <= IWAE_{K+1} <= log p(y) in expectation.
Noise comes from one generator in batch order (noise="batch"), or from one generator per
sequence (noise="sequence", pipeline.eval_noise), which makes every sequence's bounds
independent of the batching: bucketed evaluation then gives the same per-sequence bounds.
With per-sequence noise the single-sample figures (ELBO, KL, ...) are those of the IWAE's
first sample, which saves the separate pass.
"""
from __future__ import annotations

import math

import torch

from .datasets.batches import Batch
from .errors import UserError
from .eval_noise import SequenceNoise
from .models.base import Terms


class NonFiniteEvaluation(UserError):
    """A split whose bound is NaN or infinite: bad values in its data, or a broken model."""


def repeat_batch(batch: Batch, k: int) -> Batch:
    """The batch stacked k times along the batch axis (sample-major: row s*B + b)."""
    rep = lambda t: t.repeat(k, *([1] * (t.dim() - 1)))  # noqa: E731
    return Batch(rep(batch.x), rep(batch.y), rep(batch.mask))


def draw_noise(model, batch: Batch, generator: torch.Generator | None = None, samples: int = 1):
    """Standard-normal noise of the shape the model asks for (None for exact models), for
    `samples` samples of each sequence: the noise of the batch repeated that many times."""
    shape = model.noise_shape(batch)
    if shape is None:
        return None
    return torch.randn((samples * shape[0], *shape[1:]), generator=generator,
                       device=batch.mask.device)


@torch.no_grad()
def iwae_bound(model, batch: Batch, k: int, chunk: int = 16,
               generator: torch.Generator | None = None,
               noise: SequenceNoise | None = None, forward=None) -> torch.Tensor:
    """Per-sequence importance-weighted bound with k samples, shape (B,). The samples are
    drawn from `noise` when given (per sequence), else from `generator`. forward: what
    computes the terms in place of the model (pipeline.compile.eval_forward)."""
    if k < 1:
        raise ValueError(f"IWAE needs k >= 1 samples, got {k}")
    if getattr(model, "exact", False):
        return (forward or model)(batch, None).log_px
    return _iwae_and_first(model, batch, k, chunk, generator, noise, forward)[0]


def _iwae_and_first(model, batch: Batch, k: int, chunk: int, generator, noise, forward=None):
    """(IWAE bound (B,), Terms of the first sample): the k samples run chunk by chunk, c
    samples of every sequence at a time (rows s * B + b). A model that folds samples
    (models.base) takes the batch once with c samples' noise, and its data-only work is done
    once for all chunks; any other model, and a compiled `forward` (one graph for batch and
    noise of equal rows), gets the batch repeated c times. Same noise, same bound."""
    B = batch.size
    fold = getattr(model, "folds_samples", False) and forward in (None, model)
    if fold:
        shared = model.shared_work(batch)
        forward = lambda b, eps: model(b, eps, shared)  # noqa: E731
    forward = forward or model
    weights, first = [], None
    for start in range(0, k, chunk):
        c = min(chunk, k - start)
        eps = draw_noise(model, batch, generator, c) if noise is None else noise.draw(model, batch, c)
        terms = forward(batch if fold else repeat_batch(batch, c), eps)
        weights.append(terms.log_weight.view(c, B))
        if first is None:  # rows 0..B-1: sample 0 of every sequence
            first = Terms(**{k: v if v is None else v[:B] for k, v in terms.as_dict().items()})
    return torch.logsumexp(torch.cat(weights), dim=0) - math.log(k), first


@torch.no_grad()
def evaluate(model, loader, iwae_k: int = 0, iwae_chunk: int = 16, samples_per_step: int = 1,
             device="cpu", seed: int = 0, name: str | None = None, noise: str = "batch",
             forward=None, on_batch=None) -> dict:
    """Bounds over a whole split, in nats per sequence, per step (frame) and per sample.

    samples_per_step: audio samples in one step (200 for speech frames), for per-sample
    figures. `padded_sequences` (batches * batch size) is returned for padded_mean_quirk.
    name: the split's name for the NonFiniteEvaluation raised when a total is not finite
    (a NaN must neither pass validation unnoticed nor reach the metrics).
    noise: "batch" (one generator in batch order) or "sequence" (one per sequence, for
    loaders with ids(): results independent of batching and IWAE chunking).
    forward: what computes the terms in place of the model (pipeline.compile.eval_forward).
    on_batch: called with each batch's number of sequences once it is done (progress).
    """
    if noise not in ("batch", "sequence"):
        raise ValueError(f"noise must be 'batch' or 'sequence', got {noise!r}")
    was_training = model.training
    model.eval()
    forward = forward or model
    gen = torch.Generator(device=device).manual_seed(seed)
    keys = ("elbo", "log_px", "kl", "aux", "log_weight")
    tot = {k: 0.0 for k in keys + ("iwae", "steps")}
    n_seq, n_batches, max_b, kl_dims = 0, 0, 0, None
    for i, batch in enumerate(loader):
        batch = batch.to(device)
        draws = SequenceNoise.for_batch(seed, loader.ids(0, i), batch) if noise == "sequence" else None
        iwae = None
        if draws is not None and iwae_k and not getattr(model, "exact", False):
            iwae, terms = _iwae_and_first(model, batch, iwae_k, iwae_chunk, gen, draws, forward)
        else:
            terms = forward(batch, draw_noise(model, batch, gen) if draws is None else draws.draw(model, batch))
        for k in keys:
            tot[k] += float(getattr(terms, k).sum())
        tot["steps"] += float(terms.steps.sum())
        if terms.kl_dims is not None:
            s = terms.kl_dims.sum(0)
            kl_dims = s if kl_dims is None else kl_dims + s
        if iwae_k:
            if iwae is None:
                iwae = iwae_bound(model, batch, iwae_k, iwae_chunk, gen, draws, forward)
            tot["iwae"] += float(iwae.sum())
        n_seq += batch.size
        n_batches += 1
        max_b = max(max_b, batch.size)
        if on_batch:
            on_batch(batch.size)
    model.train(was_training)
    if n_seq == 0:
        raise ValueError("evaluation split is empty")
    bad = [k for k, v in tot.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteEvaluation(f"the {name or 'evaluated'} split gives a non-finite {bad[0]} "
                                  f"total ({tot[bad[0]]}): its data holds NaN/inf values or the "
                                  f"model's weights are not finite")
    out = {"sequences": n_seq, "steps": int(tot["steps"]), "padded_sequences": n_batches * max_b}
    for k in ("elbo", "log_px", "kl", "aux") + (("iwae",) if iwae_k else ()):
        out[f"{k}_per_seq"] = tot[k] / n_seq
        out[f"{k}_per_step"] = tot[k] / tot["steps"]
        out[f"{k}_per_sample"] = tot[k] / (tot["steps"] * samples_per_step)
    if iwae_k:
        out["iwae_k"] = iwae_k
    if kl_dims is not None:
        per_dim = (kl_dims / n_seq).tolist()
        out["kl_per_dim"] = per_dim
        # a unit is "active" when it carries more than 0.01 nats per sequence on average
        out["active_units"] = int(sum(v > 0.01 for v in per_dim))
    out["exact"] = bool(getattr(model, "exact", False))
    return out


def padded_mean_quirk(res: dict) -> dict:
    """The official TIMIT evaluation's mean (docs/model.md, quirk 2): padded empty utterances of
    the last batch count in the denominator, so per-sequence figures shrink by
    sequences / padded_sequences (1680 / 1696 at batch 32). Other figures are unchanged."""
    scale = res["sequences"] / res["padded_sequences"]
    return {k: (v * scale if k.endswith("_per_seq") else v) for k, v in res.items()}
