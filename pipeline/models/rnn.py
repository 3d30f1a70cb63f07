"""Deterministic LSTM baselines of the speech table (docs/model.md): RNN-Gauss, RNN-GMM and,
after Dai et al. 2019 ("Re-examination of the role of latent variables in sequence
modeling"), an RNN whose output is autoregressive inside the 200-sample frame.

    h_t = LSTM(h_{t-1}, emb(x_t)),     p(y_t | h_t) = output family (cfg.output)

The output family is the only difference between the rows: "gaussian" (one diagonal
Gaussian per frame, Chung et al. 2015's RNN-Gauss), "gmm" (20 diagonal components over the
whole frame, RNN-GMM), "ar_gaussian" (MADE-style masked layer, scored in parallel over the
frame). The embedding, LSTM, init and output head are the shared pieces Z-Forcing uses.

Exact: log_px is the exact log-likelihood (=), no latent variables, no noise.
"""
from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig
from ..datasets.batches import Batch
from .base import Terms, deterministic_terms, first_input, masked_sum, output_head
from .layers import input_embedding, make_lstm
from .zforcing import LReLUReadout


class RNN(nn.Module):
    exact = True
    reads = ("rnn_dim", "emb_dim", "dropout", "output", "lrelu_head", "lrelu_emb")  # as ZForcing.reads

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        r = cfg.rnn_dim
        self.emb = input_embedding(cfg)          # model.lrelu_emb: the authors' MNIST embedding
        self.rnn = make_lstm(cfg.emb_dim, r)
        self.out = output_head(cfg, r)
        # model.lrelu_head: the head reads lrelu(W h_t + W' emb(x_t)) (lm_lstm_mnist.py),
        # as Z-Forcing's does, so the MNIST table's LSTM row keeps the same readout
        self.readout = LReLUReadout(r, cfg.emb_dim) if cfg.lrelu_head else None

    def _features(self, h: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        return h if self.readout is None else self.readout(h, ex)

    def noise_shape(self, batch: Batch):
        return None

    def forward(self, batch: Batch, noise: torch.Tensor | None = None) -> Terms:
        # a forward LSTM never reads later steps, so trailing padding cannot reach a real step
        ex = self.emb(batch.x)
        h, _ = self.rnn(ex)                                      # (B, T, r)
        log_px = self.out.log_prob(self._features(h, ex), batch.y)   # (B, T)
        return deterministic_terms(masked_sum(log_px, batch.mask), batch.mask.sum(1))

    @torch.no_grad()
    def generate(self, n: int, steps: int, first: torch.Tensor | None = None,
                 sample_output: bool = True) -> torch.Tensor:
        """n sequences of `steps` targets; each target becomes the next input."""
        cfg = self.cfg
        dev = self.rnn.weight_hh_l0.device
        x = first_input(cfg, n, dev, first)
        state, ys = None, []
        for _ in range(steps):
            ex = self.emb(x)
            h, state = self.rnn(ex.unsqueeze(1), state)
            f = self._features(h[:, 0], ex)
            x = self.out.sample(f) if sample_output else self.out.mean(f)
            ys.append(x)
        return torch.stack(ys, 1)
