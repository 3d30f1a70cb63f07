"""Z-Forcing (Goyal et al. 2017): a latent z_t per step conditions an LSTM; the posterior
reads a backward LSTM state b_t over the future targets; an auxiliary cost makes z_t
reconstruct b_t. docs/model.md gives the equations; comments name the authors' flags.

Shapes: inputs are batch-first, the recurrence runs time-major. Everything that depends
only on the data (embeddings, the backward LSTM, its share of the posterior, the
input-side LSTM pre-activations) is computed for all steps at once; everything that
depends only on the recurrence's outputs (prior, KL, aux, output likelihood) is computed
after the loop. The loop keeps one fused matmul on h_{t-1}, the posterior and the LSTM
update, with no host synchronisation and no branching on tensor values.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..datasets.batches import Batch
from .base import (Terms, check_batch, first_input, gather_time, latent_terms, output_head,
                   reverse_index, add_shared, samples_in, tile)
from .distributions import BernoulliOutput, GaussianOutput, gaussian_log_prob
from .layers import (DeferredStepGrads, GaussianMLP, LayerNormLSTMInput, cond_ln_hidden,
                     init_lstm_, input_embedding, lrelu, lstm_update, make_lstm)


class ZForcing(DeferredStepGrads, nn.Module):
    exact = False
    folds_samples = True
    # z's two layers into the LSTM are one map from this size of W_ih's z share (4r x m) on:
    # the TIMIT sizes' 2M elements, not the default profile's 32K, whose runs keep their bytes
    fuse_z_min_numel = 2 ** 18
    # the ModelConfig fields it and the trainer read (tests/test_model_reads.py): a training
    # stage depends on these alone, so a change to another model key does not retrain this row
    reads = ("rnn_dim", "emb_dim", "mlp_dim", "z_dim", "dropout", "output", "z_force", "cond_ln",
             "use_l2", "bwd", "bwd_in_aux", "lrelu_head", "lrelu_emb", "lrelu_bwd_head")

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        r, e, m, z = cfg.rnn_dim, cfg.emb_dim, cfg.mlp_dim, cfg.z_dim
        # model.lrelu_emb: the authors' MNIST pixel embedding, with the backward RNN's own layer
        self.emb = input_embedding(cfg, backward=True)
        # backward LSTM over the reversed targets (inference only)
        self.bwd_rnn = make_lstm(e, r)
        self.prior = GaussianMLP(r, m, z)              # p(z_t | h_{t-1})
        self.post = GaussianMLP(2 * r, m, z)           # q(z_t | h_{t-1}, b_t), input [h; b]
        # aux net: z_t only (z_force, paper Eq. 8) or [h_{t-1}; z_t] (authors' code default).
        # The code's z_force multiplies h by 0; dropping those inputs is the same function.
        self.aux = GaussianMLP(z if cfg.z_force else r + z, m, r)
        if cfg.cond_ln:
            # no LSTM biases; input side LN with its own gain/bias, hidden side LN conditioned on z
            self.w_ih = nn.Linear(e, 4 * r, bias=False)
            self.w_hh = nn.Linear(r, 4 * r, bias=False)
            self.ln_in = LayerNormLSTMInput(4 * r)
            self.z_ln = nn.Sequential(nn.Linear(z, m), _LReLU(), nn.Linear(m, 8 * r))
            init_lstm_(self.w_ih.weight, self.w_hh.weight, None, r)
        else:
            self.z_proj = nn.Linear(z, m)                   # z -> mlp, no nonlinearity
            self.w_ih = nn.Linear(e + m, 4 * r)             # LSTM input [emb(x_t); proj(z_t)]
            self.w_hh = nn.Linear(r, 4 * r, bias=False)
            init_lstm_(self.w_ih.weight, self.w_hh.weight, self.w_ih.bias, r)
        self.out = output_head(cfg, r)
        # model.lrelu_head: the head reads lrelu(W h_t + W' emb(x_t)) (lm_lstm_mnist.py)
        self.readout = LReLUReadout(r, e) if cfg.lrelu_head else None
        # optional backward-likelihood head on b_t predicting x_t (--bwd)
        self.bwd_out = output_head(cfg, r) if cfg.bwd > 0 else None
        # model.lrelu_bwd_head: that head reads lrelu(W b_t + W' emb(y_t)) (lm_lstm_mnist.py)
        self.bwd_readout = LReLUReadout(r, e) if cfg.lrelu_bwd_head and cfg.bwd > 0 else None

    # -- pieces shared by training and generation ------------------------------------------
    def _input_preacts(self, ex_t: torch.Tensor) -> torch.Tensor:
        """Input-side LSTM pre-activations for all steps, (T, B, 4r)."""
        e = self.cfg.emb_dim
        if self.cfg.cond_ln:
            return self.ln_in(F.linear(ex_t, self.w_ih.weight))
        return F.linear(ex_t, self.w_ih.weight[:, :e], self.w_ih.bias)

    def _z_weight(self):
        """The z share of the LSTM input weights, sliced once per forward: slicing inside
        the loop would make autograd build a full-size zero gradient for every step."""
        return None if self.cfg.cond_ln else self.w_ih.weight[:, self.cfg.emb_dim:]

    def _step_linears(self, w_h: torch.Tensor | None = None, defer: bool = False) -> dict:
        """The weights every step reads after the fused h_{t-1} product `w_h`, as
        StepLinear: with `defer`, each one's gradient is one product after the loop."""
        def lin(weight, bias=None):
            return self.step_linear(weight, bias, defer)
        step = {"q2": lin(self.post.l2.weight, self.post.l2.bias)}
        if w_h is not None:
            step["h"] = lin(w_h)
        if self.cfg.cond_ln:
            step["ln1"] = lin(self.z_ln[0].weight, self.z_ln[0].bias)
            step["ln2"] = lin(self.z_ln[2].weight, self.z_ln[2].bias)
        else:
            w_z, proj = self._z_weight(), self.z_proj
            if w_z.numel() >= self.fuse_z_min_numel:
                # z_proj and W_ih's z share, two linear maps with nothing between, as one map
                # W_z W_p (4r x z) built once per forward: a step then does B z 4r multiply-adds,
                # not B (z m + m 4r). Same function, other rounding (docs/model.md)
                step["z"] = lin(w_z @ proj.weight, w_z @ proj.bias)
            else:
                zp, wz = lin(proj.weight, proj.bias), lin(w_z)
                step["z"] = lambda z: wz(zp(z))
        return step

    def _gates(self, pre_x, hh, z, step: dict):
        """LSTM pre-activations given the input part, W_hh h_{t-1} and z_t."""
        if self.cfg.cond_ln:
            gain_shift = step["ln2"](lrelu(step["ln1"](z))).clamp(-3.0, 3.0)
            return add_shared(pre_x, cond_ln_hidden(hh, gain_shift))
        return add_shared(pre_x, hh) + step["z"](z)

    def _features(self, h: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        """What the output head reads: h_t, or with model.lrelu_head lrelu(W h_t + W' emb(x_t))."""
        return h if self.readout is None else self.readout(h, ex)

    def _bwd_features(self, b: torch.Tensor, ey: torch.Tensor) -> torch.Tensor:
        """What the backward head reads: b_t, or with model.lrelu_bwd_head
        lrelu(W b_t + W' e(y_t)), e(y_t) the backward RNN's input at the step that made b_t."""
        return b if self.bwd_readout is None else self.bwd_readout(b, ey)

    def noise_shape(self, batch: Batch):
        B, T = batch.mask.shape
        return (B, T, self.cfg.z_dim)

    # -- training / evaluation ---------------------------------------------------------------
    def shared_work(self, batch: Batch):
        """What depends only on the data, time-major: b_t, the input-side LSTM
        pre-activations, the posterior's b_t share (base.py: folding samples) and the
        input embeddings of both paths (views, read by the output heads with
        model.lrelu_head and model.lrelu_bwd_head)."""
        ex, ey = self.emb(batch.x), self.emb.backward_path(batch.y)
        # backward state b_t summarises y_t..y_T; reversing within each length keeps the
        # padding out of every real step (quirk 4 of the official code, corrected)
        rev = reverse_index(batch.mask)
        b_t = gather_time(self.bwd_rnn(gather_time(ey, rev))[0], rev).transpose(0, 1)
        ex_t = ex.transpose(0, 1)
        pre_x = self._input_preacts(ex_t)
        w_q = self.post.l1.weight
        q_b = F.linear(b_t, w_q[:, self.cfg.rnn_dim:], self.post.l1.bias)   # posterior's b_t share
        return b_t, pre_x, q_b, ex_t, ey.transpose(0, 1)

    def forward(self, batch: Batch, noise: torch.Tensor | None = None, shared=None) -> Terms:
        cfg = self.cfg
        check_batch(cfg, batch)
        r = cfg.rnn_dim
        mask = batch.mask
        B, T = mask.shape
        if noise is None:
            noise = torch.randn(B, T, cfg.z_dim, device=mask.device, dtype=self.w_hh.weight.dtype)
        k = samples_in(noise, B)
        b_t, pre_x, q_b, ex_t, ey_t = shared or self.shared_work(batch)
        tm = lambda a: a.transpose(0, 1)  # noqa: E731  batch-first -> time-major view
        eps, w_q = tm(noise), self.post.l1.weight
        # k samples per sequence: the data-only work above is shared, the rest runs on k * B rows
        b_k, mask, y, B = tile(b_t, k, 1), tile(mask, k), tile(batch.y, k), k * B
        w_h = torch.cat([self.w_hh.weight, w_q[:, :r]], 0)       # one matmul on h_{t-1}
        step = self._step_linears(w_h, defer=True)

        h = c = mask.new_zeros(B, r)
        hs, mus, logvars, zs = [], [], [], []
        # unbind, not [t]: indexing would make autograd build a full (T, B, .) zero gradient
        # per step, quadratic in T (MNIST's 784 steps: 53 s an update instead of 3 s)
        for px, qb, e in zip(pre_x.unbind(0), q_b.unbind(0), eps.unbind(0)):
            hh, hq = step["h"](h).split([4 * r, cfg.mlp_dim], dim=-1)
            mu_q, lv_q = self.post.from_hidden(add_shared(qb, hq), step["q2"])
            z = mu_q + torch.exp(0.5 * lv_q) * e
            h, c = lstm_update(self._gates(px, hh, z, step), c)
            hs.append(h), mus.append(mu_q), logvars.append(lv_q), zs.append(z)

        H = torch.stack(hs)                                       # h_1..h_T
        H_prev = torch.cat([H.new_zeros(1, B, r), H[:-1]])        # h_0..h_{T-1}
        mu_q, lv_q, Z = torch.stack(mus), torch.stack(logvars), torch.stack(zs)
        mu_p, lv_p = self.prior(H_prev)

        mu_a, lv_a = self.aux(Z if cfg.z_force else torch.cat([H_prev, Z], -1))
        target = b_k.detach()                                     # aux target gets no gradient
        if cfg.use_l2:
            aux = ((target - torch.tanh(mu_a)) ** 2).sum(-1)
        else:
            aux = -gaussian_log_prob(target, torch.tanh(mu_a), lv_a).sum(-1)

        log_px = self.out.log_prob(self._features(H, tile(ex_t, k, 1)), tm(y))
        bwd = (-self.bwd_out.log_prob(self._bwd_features(b_t, ey_t), tm(batch.x))
               if self.bwd_out is not None else None)
        return latent_terms(mask, log_px, mu_q, lv_q, mu_p, lv_p, Z, aux=aux, bwd_nll=tile(bwd, k, 1))

    # -- generation --------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, n: int, steps: int, first: torch.Tensor | None = None,
                 sample_output: bool = True) -> torch.Tensor:
        """Sample n sequences of `steps` targets from the prior. The first input is `first`
        (n, x_dim) or a zero frame / zero token; each target becomes the next input."""
        cfg = self.cfg
        dev = self.w_hh.weight.device
        h = c = torch.zeros(n, cfg.rnn_dim, device=dev)
        x = first_input(cfg, n, dev, first)
        ys, step = [], self._step_linears()
        for _ in range(steps):
            mu_p, lv_p = self.prior(h)
            z = mu_p + torch.exp(0.5 * lv_p) * torch.randn_like(mu_p)
            ex = self.emb(x)
            pre_x = self._input_preacts(ex.unsqueeze(0))[0]
            h, c = lstm_update(self._gates(pre_x, self.w_hh(h), z, step), c)
            f = self._features(h, ex)
            x = self.out.sample(f) if sample_output else self.out.mean(f)
            ys.append(x)
        return torch.stack(ys, 1)

    # -- reconstruction ----------------------------------------------------------------------
    @torch.no_grad()
    def reconstruct(self, batch: Batch, generator: torch.Generator | None = None,
                    sample_output: bool = True) -> torch.Tensor:
        """Decode the given sequences from latents inferred by the posterior, (B, T) for
        pixels, (B, T, x_dim) for frames.

        Teacher forcing would read the true previous target at every step, so it is not a
        reconstruction. Here only the latents see the data: b_t comes from the backward LSTM
        over the true targets, z_t ~ q(z_t | h_{t-1}, b_t), and the forward recurrence reads
        its own previous output. The first input is the batch's (zero pixel / frame).
        sample_output=True: each output is drawn and fed back, and the draws are returned.
        False: the output means are returned (pixel probabilities, mean frames); the input
        fed back is the mean frame, or for pixels the likelier value (an embedding table
        cannot read a probability). All randomness comes from `generator` when given
        (bernoulli and gaussian outputs; other families need generator=None). Steps past a
        sequence's length hold values of no meaning: read them through batch.mask.
        """
        cfg = self.cfg
        check_batch(cfg, batch)
        if cfg.data == "tokens":
            raise ValueError("reconstruct decodes pixels or audio frames, not tokens")
        r, mask = cfg.rnn_dim, batch.mask
        B, T = mask.shape
        rev = reverse_index(mask)
        b = gather_time(self.bwd_rnn(gather_time(self.emb.backward_path(batch.y), rev))[0],
                        rev).transpose(0, 1)
        h = c = mask.new_zeros(B, r)
        x, step, ys = batch.x[:, 0], self._step_linears(), []
        for t in range(T):
            mu_q, lv_q = self.post(torch.cat([h, b[t]], -1))
            z = mu_q + torch.exp(0.5 * lv_q) * _randn(mu_q, generator)
            ex = self.emb(x)
            pre_x = self._input_preacts(ex.unsqueeze(0))[0]
            h, c = lstm_update(self._gates(pre_x, self.w_hh(h), z, step), c)
            f = self._features(h, ex)
            if sample_output:
                x = y = _draw_output(self.out, f, generator)
            else:
                y = self.out.mean(f)
                x = (y >= 0.5).long() if cfg.data == "binary" else y
            ys.append(y)
        return torch.stack(ys, 1)


def _randn(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device, dtype=like.dtype)


def _draw_output(head: nn.Module, h: torch.Tensor, generator: torch.Generator | None):
    """head.sample(h), drawn from `generator`: the heads' own sample() uses the global RNG."""
    if generator is None:
        return head.sample(h)
    if isinstance(head, BernoulliOutput):
        return torch.bernoulli(head.mean(h), generator=generator).long()
    if isinstance(head, GaussianOutput):
        mu, logvar = head.params(h)
        return mu + torch.exp(0.5 * logvar) * _randn(mu, generator)
    raise ValueError(f"reconstruct with a generator supports bernoulli and gaussian outputs, "
                     f"not {type(head).__name__}: pass generator=None")


class LReLUReadout(nn.Module):
    """model.lrelu_head: the features the output head reads, lrelu(W h_t + b + W' emb(x_t) + b'),
    of size rnn_dim: the state after step t and the embedding of its input x_t, each through
    its own linear map (lm_lstm_mnist.py's ff_out_lstm and ff_out_prev, followed there by
    ff_out_mus, our output head). docs/model.md says why it is off by default."""

    def __init__(self, rnn_dim: int, emb_dim: int):
        super().__init__()
        self.state = nn.Linear(rnn_dim, rnn_dim)
        self.input = nn.Linear(emb_dim, rnn_dim)

    def forward(self, h: torch.Tensor, ex: torch.Tensor) -> torch.Tensor:
        return lrelu(self.state(h) + self.input(ex))


class _LReLU(nn.Module):
    def forward(self, x):
        return lrelu(x)
