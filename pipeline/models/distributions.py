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
