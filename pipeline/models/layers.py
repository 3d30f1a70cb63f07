"""Shared building blocks: the clipped leaky ReLU, Gaussian MLP heads, input embeddings,
the authors' initialisation and the LSTM step (plain or with conditional layer norm).

LSTM gates follow PyTorch's order (input, forget, cell, output). Input-side
pre-activations depend only on the data, so models compute them for all steps at once and
the recurrent loop only adds the hidden-side part.
"""
from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

CLAMP = 8.0  # prior / posterior / aux outputs are clamped to [-8, 8] (official code)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with slope 1/3, clipped to [-3, 3] (the authors' LReLU)."""
    return F.leaky_relu(x, 1.0 / 3.0).clamp(-3.0, 3.0)


class GaussianMLP(nn.Module):
    """in -> Linear -> LReLU -> Linear -> (mu, logvar), both clamped to [-8, 8]."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.l1 = nn.Linear(in_dim, hidden)
        self.l2 = nn.Linear(hidden, 2 * out_dim)

    def from_hidden(self, pre: torch.Tensor, l2=None):
        """Finish the MLP given the first layer's pre-activation (lets callers fuse l1);
        `l2`: a StepLinear standing in for the second layer in a step loop."""
        mu, logvar = (l2 or self.l2)(lrelu(pre)).clamp(-CLAMP, CLAMP).chunk(2, dim=-1)
        return mu, logvar

    def forward(self, x: torch.Tensor):
        return self.from_hidden(self.l1(x))


class Embedding(nn.Module):
    """Input embedding shared by the forward and backward paths.

    audio: Linear(frame -> emb); binary/tokens: an embedding table. Dropout after both.
    """

    def __init__(self, data: str, x_dim: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.data = data
        if data == "audio":
            self.net = nn.Linear(x_dim, emb_dim)
        else:
            self.net = nn.Embedding(2 if data == "binary" else x_dim, emb_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.data != "audio":
            x = x.long()
        return self.drop(self.net(x))

    def backward_path(self, x: torch.Tensor) -> torch.Tensor:
        """What the backward RNN reads: the same embedding."""
        return self(x)


# lm_lstm_mnist.py: the pixel table Wemb is dim_input wide, train()'s default 200, which
# train_lstm_mnist.py does not change
AUTHORS_PIXEL_TABLE = 200


class LReLUEmbedding(nn.Module):
    """model.lrelu_emb, the authors' MNIST input embedding (lm_lstm_mnist.py): a pixel table
    of width 200 (Wemb), then a leaky-ReLU layer to emb_dim (ff_in_lstm, lrelu of slope 1/3
    clipped to [-3, 3]); the backward RNN reads the same table through a layer of its own
    (ff_in_lstm_r), built only with `backward`. Dropout after the layer, as Embedding's."""

    def __init__(self, emb_dim: int, dropout: float = 0.0, backward: bool = False):
        super().__init__()
        self.table = nn.Embedding(2, AUTHORS_PIXEL_TABLE)
        self.proj = nn.Linear(AUTHORS_PIXEL_TABLE, emb_dim)
        self.proj_bwd = nn.Linear(AUTHORS_PIXEL_TABLE, emb_dim) if backward else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(lrelu(self.proj(self.table(x.long()))))

    def backward_path(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(lrelu(self.proj_bwd(self.table(x.long()))))


def input_embedding(cfg, backward: bool = False) -> nn.Module:
    """The model's input embedding: Embedding, or with cfg.lrelu_emb the authors' MNIST one
    (`backward`: the model has a backward RNN, which reads it through its own layer)."""
    if cfg.lrelu_emb:
        return LReLUEmbedding(cfg.emb_dim, cfg.dropout, backward)
    return Embedding(cfg.data, cfg.x_dim, cfg.emb_dim, cfg.dropout)


def init_lstm_(w_ih: torch.Tensor, w_hh: torch.Tensor, bias: torch.Tensor | None, rnn_dim: int):
    """Authors' init: input weights U(+-1/sqrt(rnn_dim)), recurrent orthogonal (per gate
    block), biases zero."""
    with torch.no_grad():
        bound = 1.0 / math.sqrt(rnn_dim)
        w_ih.uniform_(-bound, bound)
        for block in w_hh.chunk(4, dim=0):
            nn.init.orthogonal_(block)
        if bias is not None:
            bias.zero_()


def make_lstm(in_dim: int, rnn_dim: int) -> nn.LSTM:
    """A batch-first one-layer nn.LSTM (cuDNN / oneDNN kernel) with the authors' init."""
    rnn = nn.LSTM(in_dim, rnn_dim, batch_first=True)
    init_lstm_(rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn_dim)
    nn.init.zeros_(rnn.bias_hh_l0)
    return rnn


def lstm_update(gates: torch.Tensor, c: torch.Tensor):
    """One LSTM state update from the summed pre-activations (B, 4r)."""
    i, f, g, o = gates.chunk(4, dim=-1)
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


def layer_norm(x: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Normalise over the last dim with std = sqrt(unbiased var + eps) (authors' cond LN)."""
    mu = x.mean(-1, keepdim=True)
    var = x.var(-1, keepdim=True, unbiased=True)
    return (x - mu) / torch.sqrt(var + eps)


class LayerNormLSTMInput(nn.Module):
    """Input side of the conditional-LN LSTM: LN(W_ih e) * gain + bias (no LSTM biases)."""

    def __init__(self, gates: int):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(gates))
        self.bias = nn.Parameter(torch.zeros(gates))

    def forward(self, pre: torch.Tensor) -> torch.Tensor:
        return layer_norm(pre) * self.gain + self.bias


def cond_ln_hidden(pre_h: torch.Tensor, gain_shift: torch.Tensor) -> torch.Tensor:
    """Hidden side of the conditional-LN LSTM: LN(W_hh h) * (1 + g) + s, where (g, s) come
    from z_t, already clamped to [-3, 3]."""
    g, s = gain_shift.chunk(2, dim=-1)
    return layer_norm(pre_h) * (1.0 + g) + s


class DeferredStepGrads:
    """For a model with a step loop: `step_linear` gives the loop's StepLinear for a weight,
    deferred when `defer_grads` is on and the weight has at least `defer_min_numel`
    elements. Below that, on the CPU measured, the deferral's per-step Python cost exceeds
    what the single product saves (docs/model.md). Tests and benchmarks/train_speed.py set
    both on an instance."""
    defer_grads = True
    defer_min_numel = 2 ** 18

    def step_linear(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                    defer: bool = True) -> "StepLinear":
        return StepLinear(weight, bias, defer and self.defer_grads
                          and weight.numel() >= self.defer_min_numel)


class StepLinear:
    """x_t W^T + b inside a step loop, called once a step (docs/model.md, "Weight gradients
    of the step loops"); its calls are numbered, so each step's gradient keeps its place.

    Plain autograd computes a weight used at every step its gradient step by step, a
    product over the batch's rows (K = B), and adds each into the weight's gradient. With
    `defer` the per-step backward returns only the input gradient g_t W and keeps g_t; after
    every step's backward has run, one product over all T * B rows gives dW = G^T X (and
    db = the sum of G's rows): the same gradient, summed in another order. It defers only
    while autograd records, outside torch.compile and autocast; otherwise it is F.linear.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, defer: bool = True):
        self.weight, self.bias = weight, bias
        grads = weight.requires_grad or (bias is not None and bias.requires_grad)
        self.defer = (defer and grads and torch.is_grad_enabled()
                      and not torch.compiler.is_compiling()
                      and not torch.is_autocast_enabled(weight.device.type))
        if self.defer:
            w = weight.detach()
            # the forward product reads W^T laid out row-major: a 32-row x W^T on a transposed
            # view runs MKL's slower kernel (3.3 against 2.2 ms at 1024 x 4608, BENCHMARKS.md);
            # the backward's g_t W reads W as it is
            self.stash = {"w": w, "wt": w.t().contiguous(),
                          "b": None if bias is None else bias.detach(), "x": {}, "g": {}}
            self.steps = 0
            # made from W and b and read by every step: autograd counts those edges and runs
            # its backward (the one product) only after every step's backward, even though
            # the steps return no gradient for it (a zero would cost an addition a step)
            self.token = _CollectGrads.apply(self.stash, weight, bias)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.defer:
            return F.linear(x, self.weight, self.bias)
        self.steps += 1
        return _DeferredLinear.apply(x, self.token, self.stash, self.steps)


class _DeferredLinear(torch.autograd.Function):
    """One step's x_t W^T + b: its backward gives x_t's gradient and keeps g_t for W's."""

    @staticmethod
    def forward(ctx, x, token, stash, t):
        ctx.stash, ctx.t = stash, t
        stash["x"][t] = x.detach()
        wt, b = stash["wt"], stash["b"]
        return x.mm(wt) if b is None else torch.addmm(b, x, wt)  # a step's input: (rows, in)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        ctx.stash["g"][ctx.t] = g
        gx = g.matmul(ctx.stash["w"]) if ctx.needs_input_grad[0] else None
        return gx, None, None, None


class _CollectGrads(torch.autograd.Function):
    """A scalar zero made from W (and b): its backward turns the kept step gradients into
    W's and b's in one product over all steps' rows."""

    @staticmethod
    def forward(ctx, stash, weight, bias):
        ctx.stash = stash
        return weight.new_zeros(())

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, _):
        stash = ctx.stash
        steps = sorted(stash["g"])  # steps whose output reached the loss
        G = torch.stack([stash["g"][t] for t in steps]).flatten(0, -2)
        X = torch.stack([stash["x"][t] for t in steps]).flatten(0, -2)
        stash["g"].clear()
        dw = G.t().matmul(X) if ctx.needs_input_grad[1] else None
        db = G.sum(0) if ctx.needs_input_grad[2] else None
        return None, dw, db
