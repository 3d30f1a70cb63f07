"""Z-Forcing language model (Table 3, IMDB) with the authors' language-model cell.

Same latent structure as pipeline/models/zforcing.py (docs/model.md): prior p(z_t | h_{t-1}),
posterior q(z_t | h_{t-1}, b_t) with b_t a backward LSTM state over y_t..y_T (reversed
within each sentence's own length), aux cost -log N(stopgrad(b_t); tanh(mu_a), e^lv_a)
from z_t (z_force) or [h_{t-1}; z_t], softmax output over the vocabulary on h_t.

The cell differs from the speech cell (authors' research code, latent_lstm_layer):

    gates_t = W_hh h_{t-1} + W_ih e_t + b + W_2 LReLU(W_1 z_t + b_1) + [0, 1, 0, 0]

W_1: z_dim -> emb_dim hidden units (with bias), W_2: emb_dim -> 4 rnn_dim (no bias); the
constant +1 on the forget-gate block (PyTorch gate order i, f, g, o) keeps the cell state
by default at the start of training. x is [<S>, w_1..w_n], y = [w_1..w_n, </S>].
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ConfigError, ModelConfig
from ..datasets.batches import Batch
from .base import (Terms, add_shared, check_batch, gather_time, latent_terms, output_head,
                   reverse_index, samples_in, tile)
from .distributions import gaussian_log_prob
from .layers import (DeferredStepGrads, Embedding, GaussianMLP, init_lstm_, lrelu, lstm_update,
                     make_lstm)

BOS_ID = 1  # <S>: the first input of every sentence (pipeline.datasets.text)


class ZForcingLM(DeferredStepGrads, nn.Module):
    exact = False
    folds_samples = True
    # as ZForcing.reads; cond_ln only to refuse it
    reads = ("rnn_dim", "emb_dim", "mlp_dim", "z_dim", "dropout", "output", "z_force", "cond_ln",
             "use_l2", "bwd", "bwd_in_aux")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        if cfg.data != "tokens":
            raise ConfigError(f"model zforcing_lm needs token data (kind 'tokens'), got "
                              f"data={cfg.data!r}: prepare a text dataset or pick another model")
        if cfg.cond_ln:
            raise ConfigError("model.cond_ln=true: the zforcing_lm cell has its own z path; "
                              "set it false")
        self.cfg = cfg
        r, e, m, z = cfg.rnn_dim, cfg.emb_dim, cfg.mlp_dim, cfg.z_dim
        self.emb = Embedding("tokens", cfg.x_dim, e, cfg.dropout)
        self.bwd_rnn = make_lstm(e, r)                 # backward LSTM (inference only)
        self.prior = GaussianMLP(r, m, z)              # p(z_t | h_{t-1})
        self.post = GaussianMLP(2 * r, m, z)           # q(z_t | h_{t-1}, b_t), input [h; b]
        self.aux = GaussianMLP(z if cfg.z_force else r + z, m, r)
        self.w_ih = nn.Linear(e, 4 * r)                # W_ih e_t + b
        self.w_hh = nn.Linear(r, 4 * r, bias=False)
        init_lstm_(self.w_ih.weight, self.w_hh.weight, self.w_ih.bias, r)
        self.z_hid = nn.Linear(z, e)                   # W_1, b_1
        self.z_gates = nn.Linear(e, 4 * r, bias=False)  # W_2
        forget = torch.zeros(4 * r)
        forget[r:2 * r] = 1.0
        self.register_buffer("forget_bias", forget, persistent=False)
        self.out = output_head(cfg, r)
        # the backward language model (lm_lstm_imdb.py's ff_out_mus_r): weighted by model.bwd,
        # plus the aux weight with model.bwd_in_aux (pipeline/train.py)
        self.bwd_out = output_head(cfg, r) if cfg.bwd > 0 or cfg.bwd_in_aux else None

    # -- the cell, shared by training, evaluation and decoding -------------------------------
    def input_preacts(self, x: torch.Tensor) -> torch.Tensor:
        """W_ih emb(x) + b + forget-gate 1, for tokens of any shape (..., ) -> (..., 4r)."""
        return F.linear(self.emb(x), self.w_ih.weight, self.w_ih.bias) + self.forget_bias

    def gates(self, pre_x: torch.Tensor, hh: torch.Tensor, z: torch.Tensor,
              z_hid=None, z_gates=None) -> torch.Tensor:
        """LSTM pre-activations from the input part, W_hh h_{t-1} and z_t; z_hid, z_gates:
        the step loop's StepLinear for those layers (posterior_path), else the layers."""
        z_hid, z_gates = z_hid or self.z_hid, z_gates or self.z_gates
        return add_shared(pre_x, hh) + z_gates(lrelu(z_hid(z)))

    def cell(self, pre_x, h, c, z):
        """One step (h_t, c_t) from the input pre-activations, the previous state and z_t."""
        return lstm_update(self.gates(pre_x, self.w_hh(h), z), c)

    def backward_states(self, batch: Batch) -> torch.Tensor:
        """b_t over y_t..y_T of each sentence, time-major (T, B, r); padding never enters."""
        rev = reverse_index(batch.mask)
        b = gather_time(self.bwd_rnn(gather_time(self.emb(batch.y), rev))[0], rev)
        return b.transpose(0, 1)

    def noise_shape(self, batch: Batch):
        B, T = batch.mask.shape
        return (B, T, self.cfg.z_dim)

    def shared_work(self, batch: Batch):
        """What depends only on the data, time-major: b_t, the input-side pre-activations
        and the posterior's b_t share (base.py: folding samples)."""
        b_t = self.backward_states(batch)
        pre_x = self.input_preacts(batch.x.transpose(0, 1))      # (T, B, 4r)
        q_b = F.linear(b_t, self.post.l1.weight[:, self.cfg.rnn_dim:], self.post.l1.bias)
        return b_t, pre_x, q_b

    def posterior_path(self, batch: Batch, noise: torch.Tensor, shared=None):
        """Teacher-forced pass with z_t ~ q: (H, Z, mu_q, lv_q, b), all time-major; with noise
        for k samples per sequence, k * B columns (b computed once and repeated)."""
        r = self.cfg.rnn_dim
        B, T = batch.mask.shape
        b_t, pre_x, q_b = shared or self.shared_work(batch)
        w_q = self.post.l1.weight
        k = samples_in(noise, B)                                  # the k samples share the above
        b_t, B = tile(b_t, k, 1), k * B
        w_h = torch.cat([self.w_hh.weight, w_q[:, :r]], 0)       # one matmul on h_{t-1}
        eps = noise.transpose(0, 1)
        # the loop's weights, each one's gradient one product after the loop (layers.py)
        lin_h = self.step_linear(w_h)
        lin_q2 = self.step_linear(self.post.l2.weight, self.post.l2.bias)
        lin_hid = self.step_linear(self.z_hid.weight, self.z_hid.bias)
        lin_gates = self.step_linear(self.z_gates.weight)
        h = c = batch.mask.new_zeros(B, r)
        hs, mus, logvars, zs = [], [], [], []
        # unbind, not [t]: indexing builds a full-size zero gradient per step (quadratic in T)
        for px, qb, e in zip(pre_x.unbind(0), q_b.unbind(0), eps.unbind(0)):
            hh, hq = lin_h(h).split([4 * r, self.cfg.mlp_dim], dim=-1)
            mu_q, lv_q = self.post.from_hidden(add_shared(qb, hq), lin_q2)
            z = mu_q + torch.exp(0.5 * lv_q) * e
            h, c = lstm_update(self.gates(px, hh, z, lin_hid, lin_gates), c)
            hs.append(h), mus.append(mu_q), logvars.append(lv_q), zs.append(z)
        return torch.stack(hs), torch.stack(zs), torch.stack(mus), torch.stack(logvars), b_t

    # -- training / evaluation ---------------------------------------------------------------
    def forward(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> Terms:
        cfg = self.cfg
        check_batch(cfg, batch)
        mask = batch.mask
        if noise is None:
            noise = torch.randn(self.noise_shape(batch), device=mask.device,
                                dtype=self.w_hh.weight.dtype)
        H, Z, mu_q, lv_q, b_t = self.posterior_path(batch, noise, shared)
        k = samples_in(noise, mask.shape[0])
        batch = Batch(tile(batch.x, k), tile(batch.y, k), tile(mask, k))
        mask, B = batch.mask, batch.size
        H_prev = torch.cat([H.new_zeros(1, B, cfg.rnn_dim), H[:-1]])   # h_0..h_{T-1}
        mu_p, lv_p = self.prior(H_prev)
        mu_a, lv_a = self.aux(Z if cfg.z_force else torch.cat([H_prev, Z], -1))
        target = b_t.detach()                                           # aux target: no gradient
        if cfg.use_l2:
            aux = ((target - torch.tanh(mu_a)) ** 2).sum(-1)
        else:
            aux = -gaussian_log_prob(target, torch.tanh(mu_a), lv_a).sum(-1)
        log_px = self.out.log_prob(H, batch.y.transpose(0, 1))
        bwd = -self.bwd_out.log_prob(b_t, batch.x.transpose(0, 1)) if self.bwd_out is not None else None
        return latent_terms(mask, log_px, mu_q, lv_q, mu_p, lv_p, Z, aux=aux, bwd_nll=bwd)

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, steps: int, first: torch.Tensor | None = None,
                 sample_output: bool = True) -> torch.Tensor:
        """n token sequences of `steps` targets from the prior, starting from <S> (or
        `first`), each token fed back; no stop at </S> (pipeline.models.lm_probe does)."""
        dev = self.w_hh.weight.device
        h = c = torch.zeros(n, self.cfg.rnn_dim, device=dev)
        x = first if first is not None else torch.full((n,), BOS_ID, dtype=torch.long, device=dev)
        ys = []
        for _ in range(steps):
            mu_p, lv_p = self.prior(h)
            z = mu_p + torch.exp(0.5 * lv_p) * torch.randn_like(mu_p)
            h, c = self.cell(self.input_preacts(x), h, c, z)
            x = self.out.sample(h) if sample_output else self.out.mean(h).argmax(-1)
            ys.append(x)
        return torch.stack(ys, 1)
