"""VRNN (Chung et al. 2015, "A Recurrent Latent Variable Model for Sequential Data"), the
VRNN-I-Gauss / VRNN-Gauss / VRNN-GMM rows of the speech table (docs/model.md).

Chung et al. write, for targets y_t (their x_t):
    prior      p(z_t | h_{t-1})              (VRNN-I: N(0, I))
    posterior  q(z_t | y_t, h_{t-1})         (filtering: no future targets)
    decoder    p(y_t | z_t, h_{t-1})          output family from cfg.output
    recurrence h_t = LSTM(h_{t-1}; phi_x(y_t), phi_z(z_t))
In the project's batches the input x_t is the previous target y_{t-1} (x_1 the true
previous frame or a zero frame), so the state that conditions step t is
    g_t = LSTM(g_{t-1}; [emb(x_t); phi_z(z_{t-1})]),  g_0 = 0, phi_z(z_0) = 0,
which is Chung's h_{t-1} after reading y_{t-1}, and also reads the first input frame as
every other row of the table does. phi_x is the shared input embedding (same for x and
y), phi_z = LReLU(Linear(z -> mlp)), prior and posterior are the shared Gaussian MLPs
(outputs clamped to [-8, 8]), the decoder is LReLU(Linear([phi_z(z_t); g_t] -> rnn_dim))
followed by the output head, so every row's output head reads a vector of size rnn_dim.

A bound (≥): log_px is log p(y | z) for one z ~ q; Terms carry log p(z), log q(z) and the
closed-form KL for the ELBO and importance-weighted bounds.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..datasets.batches import Batch
from .base import Terms, add_shared, first_input, latent_terms, output_head, samples_in, tile
from .layers import DeferredStepGrads, Embedding, GaussianMLP, init_lstm_, lrelu, lstm_update


class VRNN(DeferredStepGrads, nn.Module):
    exact = False
    folds_samples = True
    reads = ("rnn_dim", "emb_dim", "mlp_dim", "z_dim", "dropout", "output")  # as ZForcing.reads

    def __init__(self, cfg: ModelConfig, standard_prior: bool = False):
        super().__init__()
        self.cfg, self.standard_prior = cfg, standard_prior
        r, e, m, z = cfg.rnn_dim, cfg.emb_dim, cfg.mlp_dim, cfg.z_dim
        self.emb = Embedding(cfg.data, cfg.x_dim, e, cfg.dropout)         # phi_x
        self.phi_z = nn.Linear(z, m)
        self.w_ih = nn.Linear(e + m, 4 * r)                                # [emb(x_t); phi_z(z_{t-1})]
        self.w_hh = nn.Linear(r, 4 * r, bias=False)
        init_lstm_(self.w_ih.weight, self.w_hh.weight, self.w_ih.bias, r)
        self.post = GaussianMLP(e + r, m, z)                               # q(z_t | [emb(y_t); g_t])
        self.prior = None if standard_prior else GaussianMLP(r, m, z)      # p(z_t | g_t)
        self.dec = nn.Linear(m + r, r)                                     # [phi_z(z_t); g_t]
        self.out = output_head(cfg, r)

    def noise_shape(self, batch: Batch):
        B, T = batch.mask.shape
        return (B, T, self.cfg.z_dim)

    def _prior(self, g: torch.Tensor):
        if self.prior is None:
            zero = g.new_zeros(*g.shape[:-1], self.cfg.z_dim)
            return zero, zero
        return self.prior(g)

    def _step(self, pre_x, g, c, phz, w_z):
        """g_t, c_t from the input pre-activations and (g_{t-1}, c_{t-1}, phi_z(z_{t-1})).
        w_z, the phi_z share of the input weights, is sliced once by the caller (a slice
        inside the loop would cost a full-size zero gradient per step in autograd)."""
        return lstm_update(pre_x + self.w_hh(g) + F.linear(phz, w_z), c)

    def shared_work(self, batch: Batch):
        """What depends only on the data, for all steps at once, time-major: the input-side
        LSTM pre-activations and the posterior's share of emb(y_t) (base.py: folding samples)."""
        e, tm = self.cfg.emb_dim, lambda a: a.transpose(0, 1)  # noqa: E731
        pre_x = F.linear(tm(self.emb(batch.x)), self.w_ih.weight[:, :e], self.w_ih.bias)
        q_y = F.linear(tm(self.emb(batch.y)), self.post.l1.weight[:, :e], self.post.l1.bias)
        return pre_x, q_y

    def latents(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> dict:
        """The recurrence and every per-step latent quantity, time-major (T, B, ...); with
        noise for k samples per sequence, (T, k * B, ...)."""
        cfg = self.cfg
        e, r = cfg.emb_dim, cfg.rnn_dim
        mask = batch.mask
        B, T = mask.shape
        if noise is None:
            noise = torch.randn(B, T, cfg.z_dim, device=mask.device, dtype=self.w_hh.weight.dtype)
        eps, w_q = noise.transpose(0, 1), self.post.l1.weight
        pre_x, q_y = shared or self.shared_work(batch)
        k = samples_in(noise, B)                                           # the k samples share the above
        B = k * B
        w_z = self.w_ih.weight[:, e:]                                      # sliced once, not per step
        w_g = torch.cat([w_q[:, e:], self.w_hh.weight], 0)                 # one matmul on g_t

        # the loop's weights, each one's gradient one product after the loop (layers.py)
        lin_z, lin_g = self.step_linear(w_z), self.step_linear(w_g)
        lin_q2 = self.step_linear(self.post.l2.weight, self.post.l2.bias)
        lin_phi = self.step_linear(self.phi_z.weight, self.phi_z.bias)

        g = c = mask.new_zeros(B, r)
        hh = mask.new_zeros(B, 4 * r)                                      # W_hh g_0 = 0
        phz = mask.new_zeros(B, cfg.mlp_dim)                               # phi_z(z_0) = 0
        gs, mus, lvs, zs, phzs = [], [], [], [], []
        # unbind, not [t]: indexing builds a full-size zero gradient per step (quadratic in T)
        for px, qy, e in zip(pre_x.unbind(0), q_y.unbind(0), eps.unbind(0)):
            g, c = lstm_update(add_shared(px, hh) + lin_z(phz), c)
            hq, hh = lin_g(g).split([cfg.mlp_dim, 4 * r], dim=-1)
            mu_q, lv_q = self.post.from_hidden(add_shared(qy, hq), lin_q2)
            z = mu_q + torch.exp(0.5 * lv_q) * e
            phz = lrelu(lin_phi(z))
            gs.append(g), mus.append(mu_q), lvs.append(lv_q), zs.append(z), phzs.append(phz)
        G = torch.stack(gs)
        mu_p, lv_p = self._prior(G)
        return dict(g=G, mu_q=torch.stack(mus), lv_q=torch.stack(lvs), z=torch.stack(zs),
                    phz=torch.stack(phzs), mu_p=mu_p, lv_p=lv_p)

    def forward(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> Terms:
        v = self.latents(batch, noise, shared)
        k = v["z"].shape[1] // batch.size                                  # samples per sequence
        feat = lrelu(self.dec(torch.cat([v["phz"], v["g"]], -1)))
        log_px = self.out.log_prob(feat, tile(batch.y, k).transpose(0, 1))
        return latent_terms(tile(batch.mask, k), log_px, v["mu_q"], v["lv_q"], v["mu_p"], v["lv_p"], v["z"])

    @torch.no_grad()
    def generate(self, n: int, steps: int, first: torch.Tensor | None = None,
                 sample_output: bool = True) -> torch.Tensor:
        """n sequences of `steps` targets with z_t from the prior; each target becomes the
        next input (first input: `first` or a zero frame / token)."""
        cfg = self.cfg
        dev = self.w_hh.weight.device
        g = c = torch.zeros(n, cfg.rnn_dim, device=dev)
        phz = torch.zeros(n, cfg.mlp_dim, device=dev)
        x = first_input(cfg, n, dev, first)
        w_x, w_z = self.w_ih.weight[:, :cfg.emb_dim], self.w_ih.weight[:, cfg.emb_dim:]
        ys = []
        for _ in range(steps):
            pre_x = F.linear(self.emb(x), w_x, self.w_ih.bias)
            g, c = self._step(pre_x, g, c, phz, w_z)
            mu_p, lv_p = self._prior(g)
            z = mu_p + torch.exp(0.5 * lv_p) * torch.randn_like(mu_p)
            phz = lrelu(self.phi_z(z))
            feat = lrelu(self.dec(torch.cat([phz, g], -1)))
            x = self.out.sample(feat) if sample_output else self.out.mean(feat)
            ys.append(x)
        return torch.stack(ys, 1)


def VRNNI(cfg: ModelConfig) -> VRNN:
    """VRNN-I: the prior is a fixed N(0, I) (Chung et al. 2015's VRNN-I)."""
    return VRNN(cfg, standard_prior=True)


VRNNI.reads = VRNN.reads
