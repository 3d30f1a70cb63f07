"""The model's forward, compiled and in reduced precision when asked: train.compile and
train.precision for the training step (the Stepper calls what training_forward returns in
place of the model), eval.compile and eval.precision for the bounds (eval_forward).

compile   off      eager, the default: inductor's generated C++ depends on the CPU's
                   instruction set, so compiled runs are not byte-identical across CPUs.
          default  the model's forward (and with it the backward, through AOTAutograd) in
                   one torch.compile graph: fullgraph=True, dynamic=False (the training
                   batch has one shape, so one compile), nn.LSTM included (Dynamo's
                   allow_rnn). The compiled code is kept in inductor's on-disk cache
                   (TORCHINDUCTOR_CACHE_DIR) and reused by later processes that train the
                   same model at the same sizes and batch shape.
          max      default plus CUDA graphs (mode "reduce-overhead"): the step's small
                   kernels replay as one launch. CUDA only.
precision fp32     fp32 matmuls (TF32 off on CUDA, cuDNN's LSTM included)
          tf32     TF32 matmuls and cuDNN on CUDA (no effect on CPU)
          bf16     the forward under bf16 autocast, CUDA only: matmuls in bf16 while autocast
                   keeps sums, exp and log in fp32, so the per-sequence loss terms are fp32
                   sums; parameters, gradients and Adam stay fp32.
Evaluation batches vary in shape (whole utterances bucketed by length, IWAE chunks), so
eval_forward compiles with dynamic shapes (symbolic batch size and length): one compile
serves every batch. Validation inside training stays eager in fp32.
"""
from __future__ import annotations

from dataclasses import fields

import torch

from .config import COMPILE_MODES, PRECISIONS
from .datasets.batches import Batch
from .errors import UserError
from .models.base import Terms

TERMS = tuple(f.name for f in fields(Terms))


class CompileSettingError(UserError):
    """A compile or precision setting the training device cannot run."""


def check_device(compile_mode: str, precision: str, device, section: str = "train") -> None:
    """CUDA graphs and bf16 autocast need CUDA (this CPU's oneDNN has no bf16 LSTM)."""
    if torch.device(device).type == "cuda":
        return
    if compile_mode == "max":
        raise CompileSettingError(f"{section}.compile=max uses CUDA graphs, which {device} lacks: "
                                  f"use {section}.compile=default (or off) there")
    if precision == "bf16":
        raise CompileSettingError(f"{section}.precision=bf16 needs a CUDA device, not {device}: "
                                  f"use {section}.precision=fp32 there")


def set_precision(precision: str, device) -> None:
    """Process-wide matmul precision: the backward runs outside any context the forward
    could set, so the flags must hold for the whole step."""
    tf32 = precision == "tf32"
    torch.set_float32_matmul_precision("high" if tf32 else "highest")
    if torch.device(device).type == "cuda":
        torch.backends.cudnn.allow_tf32 = tf32


def _terms_function(model):
    """The model's forward on plain tensors, returning the Terms fields as a tuple (what
    Dynamo traces best)."""
    def terms(x, y, mask, noise):
        out = model(Batch(x, y, mask), noise)
        return tuple(getattr(out, name) for name in TERMS)
    return terms


def training_forward(model, compile_mode: str = "off", precision: str = "fp32", device="cpu"):
    """A callable (batch, noise) -> Terms for the Stepper: the model itself when nothing is
    asked, else the compiled and/or autocast forward. Sets the matmul precision."""
    return _wrap(model, compile_mode, precision, device, "train", dynamic=False)


def eval_forward(model, compile_mode: str = "off", precision: str = "fp32", device="cpu"):
    """As training_forward, for the bounds (eval.compile, eval.precision): shapes vary, so
    the compiled graph is dynamic, and no gradients are kept."""
    return _wrap(model, compile_mode, precision, device, "eval", dynamic=True)


def _wrap(model, compile_mode: str, precision: str, device, section: str, dynamic):
    if compile_mode not in COMPILE_MODES:
        raise CompileSettingError(f"{section}.compile={compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if precision not in PRECISIONS:
        raise CompileSettingError(f"{section}.precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    check_device(compile_mode, precision, device, section)
    set_precision(precision, device)
    if compile_mode == "off" and precision != "bf16":
        return model
    fn = _terms_function(model)
    graphs, bf16 = compile_mode == "max", precision == "bf16"
    if compile_mode != "off":
        # dynamic=False: one shape, one compile (training); True (evaluation): sizes are
        # symbolic from the start, so one compile serves every batch size and length
        fn = torch.compile(fn, fullgraph=True, dynamic=dynamic,
                           mode="reduce-overhead" if graphs else None)

    def forward(batch: Batch, noise=None):
        if graphs:  # a new iteration: the last step's graph outputs may be overwritten
            torch.compiler.cudagraph_mark_step_begin()
        # autocast around the compiled call, not inside it: Dynamo then guards on it instead
        # of recording it, and AOTAutograd's cache accepts the graph
        with (torch.autocast(batch.mask.device.type, dtype=torch.bfloat16, enabled=bf16),
              torch._dynamo.config.patch(allow_rnn=True)):  # trace nn.LSTM instead of refusing
            out = fn(batch.x, batch.y, batch.mask, noise)
        # fp32 terms whatever autocast made of them (a no-op in fp32)
        return Terms(*(t.float() if t is not None and t.is_floating_point() else t for t in out))
    return forward
