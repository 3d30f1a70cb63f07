"""The training forward, compiled and in reduced precision when asked (train.compile,
train.precision). The Stepper calls what training_forward returns in place of the model.

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
Only the training forward is wrapped: validation and evaluation run the eager model in
fp32 (their batch shapes vary: a compiled forward would recompile for each).
"""
from __future__ import annotations

from dataclasses import fields

import torch

from .datasets.batches import Batch
from .errors import UserError
from .models.base import Terms

COMPILE_MODES = ("off", "default", "max")
PRECISIONS = ("fp32", "tf32", "bf16")
TERMS = tuple(f.name for f in fields(Terms))


class CompileSettingError(UserError):
    """A compile or precision setting the training device cannot run."""


def check_device(compile_mode: str, precision: str, device) -> None:
    """CUDA graphs and bf16 autocast need CUDA (this CPU's oneDNN has no bf16 LSTM)."""
    if torch.device(device).type == "cuda":
        return
    if compile_mode == "max":
        raise CompileSettingError(f"train.compile=max uses CUDA graphs, which {device} lacks: "
                                  f"use train.compile=default (or off) there")
    if precision == "bf16":
        raise CompileSettingError(f"train.precision=bf16 needs a CUDA device, not {device}: "
                                  f"use train.precision=fp32 there")


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
    if compile_mode not in COMPILE_MODES:
        raise CompileSettingError(f"train.compile={compile_mode!r}: use one of {', '.join(COMPILE_MODES)}")
    if precision not in PRECISIONS:
        raise CompileSettingError(f"train.precision={precision!r}: use one of {', '.join(PRECISIONS)}")
    check_device(compile_mode, precision, device)
    set_precision(precision, device)
    if compile_mode == "off" and precision != "bf16":
        return model
    fn = _terms_function(model)
    graphs, bf16 = compile_mode == "max", precision == "bf16"
    if compile_mode != "off":
        fn = torch.compile(fn, fullgraph=True, dynamic=False,
                           mode="reduce-overhead" if graphs else None)

    def forward(batch: Batch, noise):
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
