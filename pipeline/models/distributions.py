"""Densities and output families shared by every model.

An output head maps features h (..., in_dim) to a distribution over one step's target y:
`log_prob(h, y)` sums over the step's dimensions and returns shape h.shape[:-1];
`sample(h)` draws y; `mean(h)` gives its expectation (used for plots). Heads that need
the target inside the step (autoregressive ones) get it through log_prob's y.
New families register with `register_output`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from .layers import lrelu

LOG2PI = math.log(2.0 * math.pi)


def gaussian_log_prob(y, mu, logvar):
    """Elementwise log N(y; mu, exp(logvar))."""
    return -0.5 * (LOG2PI + logvar + (y - mu) ** 2 * torch.exp(-logvar))


def kl_gaussian(mu_q, logvar_q, mu_p, logvar_p):
    """Elementwise closed-form KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p))."""
    return 0.5 * (logvar_p - logvar_q
                  + (torch.exp(logvar_q) + (mu_q - mu_p) ** 2) * torch.exp(-logvar_p) - 1.0)


class GaussianOutput(nn.Module):
    """Diagonal Gaussian over the frame (speech: 200 samples -> 400 outputs, free logvar)."""

    def __init__(self, in_dim: int, x_dim: int, **_):
        super().__init__()
        self.proj = nn.Linear(in_dim, 2 * x_dim)

    def params(self, h):
        return self.proj(h).chunk(2, dim=-1)

    def log_prob(self, h, y):
        mu, logvar = self.params(h)
        return gaussian_log_prob(y, mu, logvar).sum(-1)

    def sample(self, h):
        mu, logvar = self.params(h)
        return mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)

    def mean(self, h):
        return self.params(h)[0]


class BernoulliOutput(nn.Module):
    """One binary value a step (sequential MNIST), logits clipped to [-8, 8]."""

    def __init__(self, in_dim: int, x_dim: int = 1, **_):
        super().__init__()
        self.proj = nn.Linear(in_dim, 1)

    def logits(self, h):
        return self.proj(h).squeeze(-1).clamp(-8.0, 8.0)

    def log_prob(self, h, y):
        return -F.binary_cross_entropy_with_logits(self.logits(h), y.to(h.dtype), reduction="none")

    def sample(self, h):
        return torch.bernoulli(torch.sigmoid(self.logits(h))).long()

    def mean(self, h):
        return torch.sigmoid(self.logits(h))


class CategoricalOutput(nn.Module):
    """Softmax over a vocabulary (language model)."""

    def __init__(self, in_dim: int, x_dim: int, **_):
        super().__init__()
        self.proj = nn.Linear(in_dim, x_dim)

    def log_prob(self, h, y):
        logp = F.log_softmax(self.proj(h), dim=-1)
        return logp.gather(-1, y.long().unsqueeze(-1)).squeeze(-1)

    def sample(self, h):
        return torch.distributions.Categorical(logits=self.proj(h)).sample()

    def mean(self, h):
        return F.softmax(self.proj(h), dim=-1)


OUTPUTS: dict[str, Callable[..., nn.Module]] = {
    "gaussian": GaussianOutput,
    "bernoulli": BernoulliOutput,
    "categorical": CategoricalOutput,
}


def register_output(name: str, builder: Callable[..., nn.Module]):
    OUTPUTS[name] = builder


def make_output(family: str, in_dim: int, x_dim: int, **opts) -> nn.Module:
    if family not in OUTPUTS:
        raise ValueError(f"unknown output family {family!r}; known: {', '.join(sorted(OUTPUTS))}")
    return OUTPUTS[family](in_dim, x_dim, **opts)


# -- families added for the baselines (docs/model.md): usable by every model, Z-Forcing included --

LOGVAR_MIN, LOGVAR_MAX = -12.0, 8.0  # output log-variance range of the GMM and AR families


def bounded_logvar(raw: torch.Tensor) -> torch.Tensor:
    """Output log-variance with a smooth floor at LOGVAR_MIN (softplus: gradient never dies)
    and a hard ceiling at LOGVAR_MAX. The floor stops a component or a well-predicted sample
    from collapsing onto digital silence and sending the likelihood to infinity; in normalised
    audio it is a standard deviation of 0.25 % of the global one, far below real noise floors."""
    return (LOGVAR_MIN + F.softplus(raw - LOGVAR_MIN)).clamp(max=LOGVAR_MAX)


class GMMOutput(nn.Module):
    """Mixture of `components` diagonal Gaussians over the whole frame, one set of mixture
    weights per frame (RNN-GMM / VRNN-GMM, docs/model.md; Chung et al. 2015 use 20 components):

        p(y | h) = sum_k pi_k(h) prod_i N(y_i; mu_ki(h), exp(logvar_ki(h)))
    """

    def __init__(self, in_dim: int, x_dim: int, components: int = 20, **_):
        super().__init__()
        self.k, self.d = components, x_dim
        self.proj = nn.Linear(in_dim, components * (1 + 2 * x_dim))

    def params(self, h):
        """(log mixture weights (..., K), mu (..., K, D), logvar (..., K, D))."""
        k, d = self.k, self.d
        logits, mu, raw = self.proj(h).split([k, k * d, k * d], dim=-1)
        shape = (*h.shape[:-1], k, d)
        return F.log_softmax(logits, -1), mu.reshape(shape), bounded_logvar(raw.reshape(shape))

    def log_prob(self, h, y):
        log_w, mu, logvar = self.params(h)
        comp = gaussian_log_prob(y.unsqueeze(-2), mu, logvar).sum(-1)   # (..., K)
        return torch.logsumexp(log_w + comp, dim=-1)

    def sample(self, h):
        log_w, mu, logvar = self.params(h)
        k = torch.distributions.Categorical(logits=log_w).sample()       # (...,)
        idx = k.view(*k.shape, 1, 1).expand(*k.shape, 1, self.d)
        mu_k = mu.gather(-2, idx).squeeze(-2)
        lv_k = logvar.gather(-2, idx).squeeze(-2)
        return mu_k + torch.exp(0.5 * lv_k) * torch.randn_like(mu_k)

    def mean(self, h):
        log_w, mu, _ = self.params(h)
        return (log_w.exp().unsqueeze(-1) * mu).sum(-2)


class MaskedLinear(nn.Linear):
    """Linear layer whose weight is multiplied by a fixed 0/1 mask (MADE, Germain et al. 2015)."""

    def __init__(self, in_dim: int, out_dim: int, mask: torch.Tensor, bias: bool = True):
        super().__init__(in_dim, out_dim, bias=bias)
        self.register_buffer("mask", mask.to(self.weight.dtype), persistent=False)

    def forward(self, x):
        return F.linear(x, self.weight * self.mask, self.bias)


class ARGaussianOutput(nn.Module):
    """Gaussian output autoregressive inside the frame (after Dai et al. 2019, docs/model.md):

        p(y | h) = prod_i N(y_i; mu_i(h, y_<i), exp(logvar_i(h, y_<i)))

    built as one MADE block: hidden units u = LReLU(A h + M_in y) with degree masks so unit k
    sees y_1..y_{m_k}; (mu, raw logvar) = B h + M_out u + L y, where M_out lets output i read
    only units with m_k < i and L is strictly lower triangular (a linear predictor over the
    frame's earlier samples, the part LPC-like audio needs most). Given the teacher-forced y
    the whole frame is scored in parallel; `sample` runs over the samples one at a time.
    hidden defaults to 2 x_dim units (degrees 1..x_dim-1 in turn).
    """

    def __init__(self, in_dim: int, x_dim: int, hidden: int | None = None, **_):
        super().__init__()
        d = x_dim
        hidden = hidden or 2 * d
        self.d, self.hidden = d, hidden
        # degrees: inputs/outputs 1..d, hidden units cycle through 1..d-1 (0 when d == 1:
        # then the units read no sample and are a plain MLP on h)
        deg_in = torch.arange(1, d + 1)
        deg_h = (torch.arange(hidden) % max(d - 1, 1)) + 1 if d > 1 else torch.zeros(hidden, dtype=torch.long)
        mask_in = (deg_h.unsqueeze(1) >= deg_in.unsqueeze(0))               # (H, D)
        mask_out = (deg_in.unsqueeze(1) > deg_h.unsqueeze(0))               # (D, H)
        mask_out = torch.cat([mask_out, mask_out])                          # mu and logvar rows
        mask_lin = torch.tril(torch.ones(d, d, dtype=torch.bool), diagonal=-1)
        mask_lin = torch.cat([mask_lin, mask_lin])
        self.ctx = nn.Linear(in_dim, hidden + 2 * d)                        # [A h; B h] + biases
        self.inp = MaskedLinear(d, hidden, mask_in, bias=False)
        self.out = MaskedLinear(hidden, 2 * d, mask_out, bias=False)
        self.lin = MaskedLinear(d, 2 * d, mask_lin, bias=False)
        with torch.no_grad():                      # start as a plain Gaussian head: AR parts off
            self.lin.weight.zero_()

    def params(self, h, y):
        """(mu, logvar), each (..., D), of every sample given the frame's earlier samples."""
        a, b = self.ctx(h).split([self.hidden, 2 * self.d], dim=-1)
        u = lrelu(a + self.inp(y))
        mu, raw = (b + self.out(u) + self.lin(y)).chunk(2, dim=-1)
        return mu, bounded_logvar(raw)

    def log_prob(self, h, y):
        mu, logvar = self.params(h, y)
        return gaussian_log_prob(y, mu, logvar).sum(-1)

    def _sequential(self, h, draw: bool):
        """Sample by sample; each sample's pre-activations get one rank-1 update."""
        d, hid = self.d, self.hidden
        a, b = self.ctx(h).split([hid, 2 * d], dim=-1)
        w_in = self.inp.weight * self.inp.mask                  # (H, D)
        w_out = self.out.weight * self.out.mask                 # (2D, H)
        w_lin = self.lin.weight * self.lin.mask                 # (2D, D)
        ys = []
        for i in range(d):
            u = lrelu(a)
            mu_i = b[..., i] + u @ w_out[i]
            lv_i = bounded_logvar(b[..., d + i] + u @ w_out[d + i])
            y_i = mu_i + torch.exp(0.5 * lv_i) * torch.randn_like(mu_i) if draw else mu_i
            ys.append(y_i)
            a = a + y_i.unsqueeze(-1) * w_in[:, i]
            b = b + y_i.unsqueeze(-1) * w_lin[:, i]
        return torch.stack(ys, -1)

    def sample(self, h):
        return self._sequential(h, draw=True)

    def mean(self, h):
        """Greedy frame: each sample set to its conditional mean given the earlier ones."""
        return self._sequential(h, draw=False)


register_output("gmm", GMMOutput)
register_output("ar_gaussian", ARGaussianOutput)
