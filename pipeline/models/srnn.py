"""SRNN (Fraccaro et al. 2016, "Sequential Neural Models with Stochastic Layers"), the
"SRNN (smooth + Res_q)" row of the speech table (docs/model.md).

    deterministic  d_t = LSTM(d_{t-1}, emb(x_t))            (x_t = y_{t-1}: Fraccaro's u_t)
    prior          p(z_t | z_{t-1}, d_t)                    Gaussian MLP on [z_{t-1}; d_t]
    backward RNN   a_t = LSTM_bwd(a_{t+1}, [d_t; emb(y_t)])  (inference only)
    posterior      q(z_t | z_{t-1}, a_t): smoothing, a_t summarises d_t.., y_t..y_T;
                   Res_q: mean = prior mean + a residual predicted from [z_{t-1}; a_t]
    decoder        p(y_t | z_t, d_t): LReLU(Linear([z_t; d_t] -> rnn_dim)) + output head
with z_0 = 0. d_t and a_t use the shared LSTM init (Fraccaro et al. use GRUs); prior and
posterior are the shared Gaussian MLPs (outputs clamped to [-8, 8], so the posterior mean
lies within ±16). The backward RNN reverses each sequence within its own length
(reverse_index / gather_time), so padding never reaches a real step.

A bound (≥): log_px is log p(y | z) for one z ~ q; Terms carry log p(z), log q(z) and the
closed-form KL (per step, given the sampled z_{t-1}).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..datasets.batches import Batch
from .base import (Terms, add_shared, first_input, gather_time, latent_terms, output_head,
                   reverse_index, samples_in, tile)
from .layers import DeferredStepGrads, Embedding, GaussianMLP, lrelu, make_lstm


class SRNN(DeferredStepGrads, nn.Module):
    exact = False
    folds_samples = True
    reads = ("rnn_dim", "emb_dim", "mlp_dim", "z_dim", "dropout", "output")  # as ZForcing.reads

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        r, e, m, z = cfg.rnn_dim, cfg.emb_dim, cfg.mlp_dim, cfg.z_dim
        self.emb = Embedding(cfg.data, cfg.x_dim, e, cfg.dropout)
        self.fwd_rnn = make_lstm(e, r)                       # d_t
        self.bwd_rnn = make_lstm(r + e, r)                   # a_t over [d_t; emb(y_t)], reversed
        self.prior = GaussianMLP(z + r, m, z)            # [z_{t-1}; d_t]
        self.post = GaussianMLP(z + r, m, z)             # [z_{t-1}; a_t] -> (residual mean, logvar)
        self.dec = nn.Linear(z + r, r)                   # [z_t; d_t]
        self.out = output_head(cfg, r)

    def noise_shape(self, batch: Batch):
        B, T = batch.mask.shape
        return (B, T, self.cfg.z_dim)

    def shared_work(self, batch: Batch):
        """What depends only on the data, time-major: d_t, a_t and their shares of the prior's
        and posterior's first layers (base.py: folding samples)."""
        z_dim = self.cfg.z_dim
        d, _ = self.fwd_rnn(self.emb(batch.x))                               # (B, T, r)
        rev = reverse_index(batch.mask)
        a = gather_time(self.bwd_rnn(gather_time(torch.cat([d, self.emb(batch.y)], -1), rev))[0], rev)
        D, A = d.transpose(0, 1), a.transpose(0, 1)
        # data-only shares of both MLPs' first layers, all steps at once
        w_p, w_q = self.prior.l1.weight, self.post.l1.weight
        p_d = F.linear(D, w_p[:, z_dim:], self.prior.l1.bias)
        q_a = F.linear(A, w_q[:, z_dim:], self.post.l1.bias)
        return D, A, p_d, q_a

    def latents(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> dict:
        """Deterministic states and every per-step latent quantity, time-major (T, B, ...);
        with noise for k samples per sequence, (T, k * B, ...)."""
        cfg = self.cfg
        z_dim, m = cfg.z_dim, cfg.mlp_dim
        mask = batch.mask
        B, T = mask.shape
        if noise is None:
            noise = torch.randn(B, T, z_dim, device=mask.device, dtype=self.dec.weight.dtype)
        D, A, p_d, q_a = shared or self.shared_work(batch)
        eps = noise.transpose(0, 1)
        w_p, w_q = self.prior.l1.weight, self.post.l1.weight
        k = samples_in(noise, B)                                              # the k samples share the above
        D, A = tile(D, k, 1), tile(A, k, 1)
        B = k * B
        w_z = torch.cat([w_p[:, :z_dim], w_q[:, :z_dim]], 0)                 # one matmul on z_{t-1}

        # the loop's weights, each one's gradient one product after the loop (layers.py)
        lin_z = self.step_linear(w_z)
        lin_p2 = self.step_linear(self.prior.l2.weight, self.prior.l2.bias)
        lin_q2 = self.step_linear(self.post.l2.weight, self.post.l2.bias)

        z = mask.new_zeros(B, z_dim)                                          # z_0 = 0
        mps, lps, mqs, lqs, zs = [], [], [], [], []
        # unbind, not [t]: indexing builds a full-size zero gradient per step (quadratic in T)
        for pd, qa, e in zip(p_d.unbind(0), q_a.unbind(0), eps.unbind(0)):
            hp, hq = lin_z(z).split([m, m], dim=-1)
            mu_p, lv_p = self.prior.from_hidden(add_shared(pd, hp), lin_p2)
            dmu, lv_q = self.post.from_hidden(add_shared(qa, hq), lin_q2)
            mu_q = mu_p + dmu                                                 # Res_q
            z = mu_q + torch.exp(0.5 * lv_q) * e
            mps.append(mu_p), lps.append(lv_p), mqs.append(mu_q), lqs.append(lv_q), zs.append(z)
        return dict(d=D, a=A, mu_p=torch.stack(mps), lv_p=torch.stack(lps),
                    mu_q=torch.stack(mqs), lv_q=torch.stack(lqs), z=torch.stack(zs))

    def forward(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> Terms:
        v = self.latents(batch, noise, shared)
        k = v["z"].shape[1] // batch.size                                     # samples per sequence
        feat = lrelu(self.dec(torch.cat([v["z"], v["d"]], -1)))
        log_px = self.out.log_prob(feat, tile(batch.y, k).transpose(0, 1))
        return latent_terms(tile(batch.mask, k), log_px, v["mu_q"], v["lv_q"], v["mu_p"], v["lv_p"], v["z"])

    @torch.no_grad()
    def generate(self, n: int, steps: int, first: torch.Tensor | None = None,
                 sample_output: bool = True) -> torch.Tensor:
        """n sequences of `steps` targets with z_t from the prior; each target becomes the
        next input (first input: `first` or a zero frame / token)."""
        cfg = self.cfg
        dev = self.dec.weight.device
        z = torch.zeros(n, cfg.z_dim, device=dev)
        x = first_input(cfg, n, dev, first)
        state, ys = None, []
        for _ in range(steps):
            d, state = self.fwd_rnn(self.emb(x).unsqueeze(1), state)
            d = d[:, 0]
            mu_p, lv_p = self.prior(torch.cat([z, d], -1))
            z = mu_p + torch.exp(0.5 * lv_p) * torch.randn_like(mu_p)
            feat = lrelu(self.dec(torch.cat([z, d], -1)))
            x = self.out.sample(feat) if sample_output else self.out.mean(feat)
            ys.append(x)
        return torch.stack(ys, 1)
