"""What every model returns, and small helpers the models share.

A model is an nn.Module with
  forward(batch, noise=None) -> Terms         per-sequence loss terms
  noise_shape(batch) -> tuple | None          shape of the standard-normal noise it uses
  generate(n, steps, first=None) -> Tensor    sequences sampled from the prior
and a class attribute `exact` (True when log_px is the exact log-likelihood). The bounds,
the trainer and the reports use only this, never the model's type.
A latent model may also fold samples (`folds_samples = True`): given noise for k samples
of each sequence, k * B rows ordered sample-major (row s * B + b), it returns Terms of
k * B rows, the same as for the batch repeated k times, doing the work that depends only on
the data (embeddings, backward RNNs) once. That work is `shared_work(batch)`, and
forward(batch, noise, shared) reuses it across calls on the same batch (the IWAE's chunks).
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class Terms:
    """Per-sequence terms, each of shape (B,), summed over scored steps.

    log_px: log p(y | z, ...) of the targets (exact log-likelihood for deterministic models)
    log_pz, log_qz: log prior / posterior density of the sampled z (0 without latents)
    kl: closed-form KL(q || p) summed over time and z dimensions
    aux: auxiliary cost (Z-Forcing), bwd_nll: backward-head NLL; 0 where not used
    steps: number of scored steps
    kl_dims: KL per latent dimension summed over time, (B, z_dim), or None
    """
    log_px: torch.Tensor
    log_pz: torch.Tensor
    log_qz: torch.Tensor
    kl: torch.Tensor
    aux: torch.Tensor
    bwd_nll: torch.Tensor
    steps: torch.Tensor
    kl_dims: torch.Tensor | None = None

    @property
    def elbo(self) -> torch.Tensor:
        """Single-sample ELBO with the closed-form KL."""
        return self.log_px - self.kl

    @property
    def log_weight(self) -> torch.Tensor:
        """log p(y, z) - log q(z | y) of the sampled z: the importance weight."""
        return self.log_px + self.log_pz - self.log_qz

    def as_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self)}


def deterministic_terms(log_px: torch.Tensor, steps: torch.Tensor) -> Terms:
    zero = torch.zeros_like(log_px)
    return Terms(log_px, zero, zero, zero, zero, zero, steps)


def samples_in(noise: torch.Tensor, batch_size: int) -> int:
    """k, when `noise` holds k samples of each of batch_size sequences (rows s * B + b)."""
    if noise.shape[0] % batch_size:
        raise ValueError(f"noise of {noise.shape[0]} rows for a batch of {batch_size} sequences")
    return noise.shape[0] // batch_size


def tile(x: torch.Tensor | None, k: int, dim: int = 0):
    """x repeated k times along `dim` (sample-major, as samples_in's rows); x when k is 1."""
    if x is None or k == 1:
        return x
    reps = [1] * x.dim()
    reps[dim] = k
    return x.repeat(*reps)


def add_shared(shared: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """shared + x, where x holds k samples of each of shared's rows (rows s * B + b): the
    samples read the same shared values, broadcast rather than copied k times."""
    if shared.shape[0] == x.shape[0]:
        return shared + x
    return (shared + x.view(-1, *shared.shape)).view(x.shape)


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over time of a (B, T) per-step quantity, padded steps contributing exactly 0
    (torch.where, so a NaN in a padded step cannot leak through 0 * NaN)."""
    return torch.where(mask > 0, x, torch.zeros_like(x)).sum(1)


def reverse_index(mask: torch.Tensor) -> torch.Tensor:
    """(B, T) gather index that reverses each sequence within its own length and leaves the
    padding in place. The map is its own inverse. Masks are prefixes (scored steps first)."""
    B, T = mask.shape
    t = torch.arange(T, device=mask.device).expand(B, T)
    length = mask.sum(1, keepdim=True).long()
    return torch.where(t < length, length - 1 - t, t)


def gather_time(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """x (B, T, ...) reordered along time by index (B, T)."""
    idx = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, idx)


def check_batch(cfg, batch) -> None:
    """Clear error when the data does not fit the model (shapes only: no device sync)."""
    want = (batch.mask.dim() + 1) if cfg.data == "audio" else batch.mask.dim()
    if batch.x.dim() != want or batch.y.shape != batch.x.shape or batch.x.shape[:2] != batch.mask.shape:
        raise ValueError(f"batch shapes x{tuple(batch.x.shape)} y{tuple(batch.y.shape)} "
                         f"mask{tuple(batch.mask.shape)} do not fit model data={cfg.data!r}")
    if cfg.data == "audio" and batch.x.shape[-1] != cfg.x_dim:
        raise ValueError(f"input frames have {batch.x.shape[-1]} values but the model has "
                         f"x_dim={cfg.x_dim}: set model x_dim to the prepared frame size")


def output_head(cfg, in_dim: int):
    """The output family named by cfg.output on features of size in_dim, with the family
    options taken from the config (mixture size, MADE hidden units)."""
    from .distributions import make_output
    return make_output(cfg.output, in_dim, cfg.x_dim, components=cfg.gmm_components,
                       hidden=cfg.ar_hidden or None)


def first_input(cfg, n: int, device, first: torch.Tensor | None = None) -> torch.Tensor:
    """The first input of generation: `first`, or a zero frame (audio) / zero token."""
    if first is not None:
        return first
    if cfg.data == "audio":
        return torch.zeros(n, cfg.x_dim, device=device)
    return torch.zeros(n, dtype=torch.long, device=device)


def latent_terms(mask, log_px, mu_q, lv_q, mu_p, lv_p, z, aux=None, bwd_nll=None) -> Terms:
    """Terms of a latent model from its time-major per-step quantities: log_px (T, B) and the
    Gaussian posterior / prior statistics and sample z (T, B, z_dim); aux and bwd_nll (T, B)
    when the model has them. mask is batch-first (B, T)."""
    from .distributions import gaussian_log_prob, kl_gaussian
    kl_el = kl_gaussian(mu_q, lv_q, mu_p, lv_p)                       # (T, B, z)
    s = lambda a: masked_sum(a.transpose(0, 1), mask)  # noqa: E731
    zero = torch.zeros_like(mask[:, 0])
    return Terms(log_px=s(log_px),
                 log_pz=s(gaussian_log_prob(z, mu_p, lv_p).sum(-1)),
                 log_qz=s(gaussian_log_prob(z, mu_q, lv_q).sum(-1)),
                 kl=s(kl_el.sum(-1)),
                 aux=zero if aux is None else s(aux),
                 bwd_nll=zero if bwd_nll is None else s(bwd_nll),
                 steps=mask.sum(1),
                 kl_dims=(kl_el * mask.t().unsqueeze(-1)).sum(0))
