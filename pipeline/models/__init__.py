"""Model registry: the pipeline grid's `model` values -> builders taking a ModelConfig.

Names (one per row of the paper's speech table, docs/model.md; `model.exact` says = or ≥):
  zforcing       Z-Forcing, output family from cfg.output                      ≥
  zforcing_ar    zforcing with output "ar_gaussian" (same family as rnn_ar)    ≥
  rnn            LSTM baseline, output family from cfg.output                  =
  rnn_gauss      rnn with output "gaussian" (RNN-Gauss)                        =
  rnn_gmm        rnn with output "gmm", cfg.gmm_components (RNN-GMM)           =
  rnn_ar         rnn with output "ar_gaussian" (Dai et al. 2019's fair RNN)    =
  vrnn           VRNN, learned prior, output family from cfg.output            ≥
  vrnn_i         VRNN with prior N(0, I), output family from cfg.output        ≥
  vrnn_i_gauss   vrnn_i with output "gaussian" (VRNN-I-Gauss)                  ≥
  vrnn_gauss     vrnn with output "gaussian" (VRNN-Gauss)                      ≥
  vrnn_gmm       vrnn with output "gmm" (VRNN-GMM)                             ≥
  srnn           SRNN, smoothing posterior + Res_q, output from cfg.output     ≥
  zforcing_lm    Z-Forcing with the authors' language-model cell, softmax      ≥
                 output over the vocabulary (data "tokens", IMDB table)
  rnn_lm         rnn with output "categorical" (the LSTM language model)       =
A name with a family suffix fixes the output family: the builder replaces cfg.output and
the model's `cfg` holds the family actually used (read `model.cfg.output`, not the params).
Budget matching across rows: pipeline.models.budget (cfg.param_budget).

>>> from pipeline.config import ModelConfig
>>> from pipeline.models import build_model
>>> model = build_model(ModelConfig(name="zforcing", x_dim=200, rnn_dim=64, emb_dim=32,
...                                 mlp_dim=32, z_dim=16))
"""
from __future__ import annotations

from dataclasses import fields, replace
from typing import Callable

from torch import nn

from ..config import ConfigError, ModelConfig
from .base import Terms
from .rnn import RNN
from .srnn import SRNN
from .vrnn import VRNN, VRNNI
from .zforcing import ZForcing
from .zforcing_lm import ZForcingLM


def with_output(builder: Callable[[ModelConfig], nn.Module], family: str):
    """A builder that uses `builder` with cfg.output set to `family`."""
    def build(cfg: ModelConfig) -> nn.Module:
        return builder(replace(cfg, output=family))
    build.__name__ = f"{getattr(builder, '__name__', 'model')}_{family}"
    build.family, build.reads = family, tuple(k for k in builder.reads if k != "output")
    return build


MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "zforcing": ZForcing,
    "zforcing_ar": with_output(ZForcing, "ar_gaussian"),
    "rnn": RNN,
    "rnn_gauss": with_output(RNN, "gaussian"),
    "rnn_gmm": with_output(RNN, "gmm"),
    "rnn_ar": with_output(RNN, "ar_gaussian"),
    "vrnn": VRNN,
    "vrnn_i": VRNNI,
    "vrnn_i_gauss": with_output(VRNNI, "gaussian"),
    "vrnn_gauss": with_output(VRNN, "gaussian"),
    "vrnn_gmm": with_output(VRNN, "gmm"),
    "srnn": SRNN,
    "zforcing_lm": with_output(ZForcingLM, "categorical"),
    "rnn_lm": with_output(RNN, "categorical"),
}


# keys an output family reads beyond the model's own
FAMILY_READS = {"gmm": ("gmm_components",), "ar_gaussian": ("ar_hidden",)}


def config_reads(name: str, output: str) -> frozenset:
    """The ModelConfig fields model `name` reads with output family `output` (the family its
    builder fixes, if it fixes one): what a training stage of such a row depends on."""
    builder = MODELS[name]
    family = getattr(builder, "family", output)
    return frozenset(builder.reads) | frozenset(FAMILY_READS.get(family, ()))


def config_record(cfg: ModelConfig) -> dict:
    """The fields of cfg its model reads, and those that say what was built (name, data,
    x_dim, param_budget): a trained cell's record, which the model rebuilds from."""
    keep = config_reads(cfg.name, cfg.output) | {"name", "data", "x_dim", "param_budget"}
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in keep}


def only_reads(cfg: ModelConfig) -> ModelConfig:
    """cfg with every field its model does not read back at its default: the same model,
    whatever the params say of keys this row has no use for."""
    return ModelConfig(**config_record(cfg))


def register_model(name: str, builder: Callable[[ModelConfig], nn.Module]):
    """A new model; its builder's `reads` names the ModelConfig fields it uses (all if absent)."""
    if not hasattr(builder, "reads"):
        builder.reads = tuple(f.name for f in fields(ModelConfig))
    MODELS[name] = builder


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "Terms", "build_model", "config_reads", "config_record", "count_parameters",
           "only_reads", "register_model"]
