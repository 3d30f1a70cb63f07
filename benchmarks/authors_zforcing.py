"""The authors' Z-Forcing model and TIMIT training step, ported to current PyTorch, for
timing only: benchmarks/authors_speed.py runs one update of it beside one of ours.

Follows the authors' PyTorch release, repository sordonia/zforcing at commit 4a7900e:
file model.py (classes LayerNorm, LSTMCell, LReLU, ZForcing) and the update inside
train_timit.py's loop (`AuthorsStep` here). Written anew, not copied; the point is to time
*their* way of computing the same function, so their structure is kept where it costs
time:
- every step of the forward loop computes, inside the loop, the prior MLP on h_{t-1}, the
  posterior MLP on [h_{t-1}; b_t], the KL, the aux MLP on [h_{t-1} (zeroed by z_force);
  z_t] and its cost, the z projection (`gen_mod`), their own LSTM cell (two matmuls on
  weights stored as (in, 4r), optional layer norm of each side, then the pointwise
  update) and log p(z_t), log q(z_t), which training never uses;
- the backward LSTM (nn.LSTM) reads the reversed targets plus one more frame, x_1, and
  the backward output head and its NLL are always computed, whatever the weight `bwd`;
- the loss is assembled as train_timit.py does: fwd + (aux_weight > 0) * bwd * bwd_nll +
  aux_weight * aux + kld_weight * kl, each a batch mean; the host reads the loss to skip a
  non-finite one; Adam (eps 1e-5), global-norm clip 100, KL and aux weights annealed by
  5e-5 an update.
What changed in the port: `Variable` and the deprecated calls are gone; their fused
pointwise LSTM kernel (CUDA only) is aten::_thnn_fused_lstm_cell on CUDA and plain tensor
ops on CPU (their cell asserted CUDA); the noise may be passed in (`eps`) so a test can
feed both models the same draws; an unused Bernoulli draw of theirs is left out.

Benchmark-only: the pipeline never imports this file. Time-major tensors: x, y (T, B, D),
mask (T, B), as their data loader gives them.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F


def log_prob_gaussian(x, mu, log_vars):
    """log N(x; mu, exp(log_vars)) summed over the last dim."""
    lp = -0.5 * math.log(2 * math.pi) - log_vars / 2 - (x - mu) ** 2 / (2 * torch.exp(log_vars))
    return lp.sum(-1)


def gaussian_kld(mu_left, logvar_left, mu_right, logvar_right):
    """KL(N_left || N_right) of diagonal Gaussians, summed over dim 1, in their form."""
    kl = 0.5 * (logvar_right - logvar_left + torch.exp(logvar_left) / torch.exp(logvar_right)
                + (mu_left - mu_right) ** 2 / torch.exp(logvar_right) - 1.0)
    return kl.sum(1)


class LayerNorm(nn.Module):
    """Their layer norm: std = sqrt(unbiased var + eps); gain and bias may be given per call."""

    def __init__(self, features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(1, features))
        self.bias = nn.Parameter(torch.zeros(1, features))

    def forward(self, x, gain=None, bias=None):
        gain = self.gain if gain is None else gain
        bias = self.bias if bias is None else bias
        centred = x - x.mean(-1, keepdim=True)
        return centred / torch.sqrt(x.var(-1, keepdim=True) + self.eps) * gain + bias


class LSTMCell(nn.Module):
    """Their LSTM cell: weights (in, 4r) and (r, 4r), two matmuls, with `use_layernorm` each
    side normalised (no biases), then the pointwise update (gates i, f, g, o)."""

    def __init__(self, input_size: int, hidden_size: int, use_layernorm: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.use_layernorm = use_layernorm
        self.weight_ih = nn.Parameter(torch.empty(input_size, 4 * hidden_size))
        self.weight_hh = nn.Parameter(torch.empty(hidden_size, 4 * hidden_size))
        if use_layernorm:
            self.ln_ih = LayerNorm(4 * hidden_size)
            self.ln_hh = LayerNorm(4 * hidden_size)
        else:
            self.bias_ih = nn.Parameter(torch.zeros(4 * hidden_size))
            self.bias_hh = nn.Parameter(torch.zeros(4 * hidden_size))
        bound = 1.0 / math.sqrt(hidden_size)
        with torch.no_grad():
            self.weight_ih.uniform_(-bound, bound)
            nn.init.orthogonal_(self.weight_hh)  # the whole (r, 4r) matrix, as theirs

    def forward(self, inp, hx, gain_hh=None, bias_hh=None):
        h_0, c_0 = hx
        igates = torch.mm(inp, self.weight_ih)
        hgates = torch.mm(h_0, self.weight_hh)
        if self.use_layernorm:
            igates = self.ln_ih(igates)
            hgates = self.ln_hh(hgates, gain=gain_hh, bias=bias_hh)
            biases = ()
        else:
            biases = (self.bias_ih, self.bias_hh)
        if inp.is_cuda:  # the successor of their fused kernel (rnnFusedPointwise.LSTMFused)
            h_1, c_1, _ = torch.ops.aten._thnn_fused_lstm_cell(igates, hgates, c_0, *biases)
            return h_1, c_1
        gates = igates + hgates
        for b in biases:
            gates = gates + b
        i, f, g, o = gates.chunk(4, 1)
        c_1 = torch.sigmoid(f) * c_0 + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c_1), c_1


class LReLU(nn.Module):
    """Leaky ReLU of slope 1/3 clipped to [-3, 3]."""

    def forward(self, x):
        return torch.clamp(F.leaky_relu(x, 1.0 / 3.0), -3.0, 3.0)


def _mlp(inp: int, hidden: int, out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inp, hidden), LReLU(), nn.Linear(hidden, out))


class AuthorsZForcing(nn.Module):
    """model.py's ZForcing for audio frames (Gaussian output), their module names kept."""

    def __init__(self, inp_dim, emb_dim, rnn_dim, z_dim, mlp_dim, out_dim,
                 cond_ln=False, z_force=False, use_l2=False, dropout=0.0):
        super().__init__()
        self.rnn_dim, self.z_dim = rnn_dim, z_dim
        self.cond_ln, self.z_force, self.use_l2 = cond_ln, z_force, use_l2
        self.emb_mod = nn.Sequential(nn.Linear(inp_dim, emb_dim), nn.Dropout(dropout))
        self.bwd_mod = nn.LSTM(emb_dim, rnn_dim, 1)
        nn.init.orthogonal_(self.bwd_mod.weight_hh_l0.data)
        self.fwd_mod = LSTMCell(emb_dim if cond_ln else emb_dim + mlp_dim, rnn_dim,
                                use_layernorm=cond_ln)
        self.pri_mod = _mlp(rnn_dim, mlp_dim, 2 * z_dim)
        self.inf_mod = _mlp(2 * rnn_dim, mlp_dim, 2 * z_dim)
        self.gen_mod = _mlp(z_dim, mlp_dim, 8 * rnn_dim) if cond_ln else nn.Linear(z_dim, mlp_dim)
        self.aux_mod = _mlp(z_dim + rnn_dim, mlp_dim, 2 * rnn_dim)  # [h; z] even with z_force
        self.fwd_out_mod = nn.Linear(rnn_dim, out_dim)
        self.bwd_out_mod = nn.Linear(rnn_dim, out_dim)

    def init_hidden(self, bsz: int):
        w = next(self.parameters())
        return (w.new_zeros(1, bsz, self.rnn_dim), w.new_zeros(1, bsz, self.rnn_dim))

    def bwd_pass(self, x, y, hidden):
        """States b_t over y_T..y_t (read in reverse, then x_1 as one extra step), and the
        backward head's outputs on them, both back in forward time order."""
        back = torch.arange(y.size(0) - 1, -1, -1, device=y.device)
        x_bwd = self.emb_mod(torch.cat([y.index_select(0, back), x[:1]], 0))
        states, _ = self.bwd_mod(x_bwd, hidden)
        outputs = self.bwd_out_mod(states[:-1])
        return states.index_select(0, back), outputs.index_select(0, back)

    def fwd_pass(self, x_fwd, hidden, bwd_states, eps=None):
        x_fwd = self.emb_mod(x_fwd)
        nsteps = x_fwd.size(0)
        if eps is None:
            eps = x_fwd.new_empty(nsteps, x_fwd.size(1), self.z_dim).normal_()
        h, c = hidden[0][0], hidden[1][0]
        hs, klds, aux_cs, log_pz, log_qz = [], [], [], [], []
        for step in range(nsteps):
            pri_mu, pri_logvar = torch.clamp(self.pri_mod(h), -8.0, 8.0).chunk(2, 1)
            b = bwd_states[step]
            inf_params = torch.clamp(self.inf_mod(torch.cat((h, b), 1)), -8.0, 8.0)
            inf_mu, inf_logvar = inf_params.chunk(2, 1)
            kld = gaussian_kld(inf_mu, inf_logvar, pri_mu, pri_logvar)
            z = eps[step] * torch.exp(0.5 * inf_logvar) + inf_mu
            h_aux = h * 0.0 if self.z_force else h
            aux_mu, aux_logvar = torch.clamp(self.aux_mod(torch.cat((h_aux, z), 1)),
                                             -8.0, 8.0).chunk(2, 1)
            target = b.detach()  # the aux cost sends no gradient into b_t
            if self.use_l2:
                aux = ((target - torch.tanh(aux_mu)) ** 2).sum(1)
            else:
                aux = -log_prob_gaussian(target, torch.tanh(aux_mu), aux_logvar)
            i_step = self.gen_mod(z)
            if self.cond_ln:
                gain_hh, bias_hh = torch.clamp(i_step, -3.0, 3.0).chunk(2, 1)
                h, c = self.fwd_mod(x_fwd[step], (h, c), gain_hh=1.0 + gain_hh, bias_hh=bias_hh)
            else:
                h, c = self.fwd_mod(torch.cat((i_step, x_fwd[step]), 1), (h, c))
            hs.append(h), klds.append(kld), aux_cs.append(aux)
            log_pz.append(log_prob_gaussian(z, pri_mu, pri_logvar))
            log_qz.append(log_prob_gaussian(z, inf_mu, inf_logvar))
        outputs = self.fwd_out_mod(torch.stack(hs, 0))
        return (outputs, torch.stack(klds, 0), torch.stack(aux_cs, 0),
                torch.stack(log_pz, 0), torch.stack(log_qz, 0))

    def forward(self, x, y, x_mask, hidden, eps=None, return_stats=False):
        """Batch means of (fwd_nll, bwd_nll, aux_nll, kld); per sequence with return_stats."""
        bwd_states, bwd_outputs = self.bwd_pass(x, y, hidden)
        outputs, klds, aux_nll, log_pz, log_qz = self.fwd_pass(x, hidden, bwd_states, eps)
        kld = (klds * x_mask).sum(0)
        aux_nll = (aux_nll * x_mask).sum(0)
        log_pz, log_qz = (log_pz * x_mask).sum(0), (log_qz * x_mask).sum(0)
        mu, logvar = outputs.chunk(2, -1)
        fwd_nll = (-log_prob_gaussian(y, mu, logvar) * x_mask).sum(0)
        mu, logvar = bwd_outputs.chunk(2, -1)
        bwd_nll = (-log_prob_gaussian(x, mu, logvar) * x_mask).sum(0)
        if return_stats:
            return fwd_nll, bwd_nll, aux_nll, kld, log_pz, log_qz
        return fwd_nll.mean(), bwd_nll.mean(), aux_nll.mean(), kld.mean()


class AuthorsStep:
    """One update of train_timit.py's loop: loss assembly, annealing, host-side skip of a
    non-finite loss, backward, global-norm clip 100, Adam with eps 1e-5."""

    def __init__(self, model: AuthorsZForcing, lr=1e-3, bwd=0.0, aux_sta=0.0, aux_end=0.0,
                 kla_sta=0.2, step=5e-5, clip=100.0):
        self.model, self.bwd, self.clip, self.step = model, bwd, clip, step
        self.opt = torch.optim.Adam(model.parameters(), lr=lr, eps=1e-5)
        self.kld_weight, self.aux_weight = kla_sta, aux_sta
        self.aux_sta, self.aux_end = aux_sta, aux_end
        self.hidden = None

    def __call__(self, x, y, x_mask, eps=None):
        if self.hidden is None or self.hidden[0].size(1) != x.size(1):
            self.hidden = self.model.init_hidden(x.size(1))  # made once, as train_timit.py
        self.opt.zero_grad()
        fwd_nll, bwd_nll, aux_nll, kld = self.model(x, y, x_mask, self.hidden, eps)
        bwd_nll = float(self.aux_weight > 0.0) * (self.bwd * bwd_nll)
        loss = fwd_nll + bwd_nll + self.aux_weight * aux_nll + self.kld_weight * kld
        self.kld_weight = min(self.kld_weight + self.step, 1.0)
        if self.aux_sta <= self.aux_end:
            self.aux_weight = min(self.aux_weight + self.step, self.aux_end)
        else:
            self.aux_weight = max(self.aux_weight - self.step, self.aux_end)
        value = loss.item()  # the host reads every loss, as their NaN/inf check does
        if math.isnan(value) or math.isinf(value):
            return value
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip)
        self.opt.step()
        return value
