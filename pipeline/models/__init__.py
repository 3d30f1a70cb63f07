"""Model registry: the pipeline grid's `model` values -> builders taking a ModelConfig.

>>> from pipeline.config import ModelConfig
>>> from pipeline.models import build_model
>>> model = build_model(ModelConfig(name="zforcing", x_dim=200, rnn_dim=64, emb_dim=32,
...                                 mlp_dim=32, z_dim=16))
"""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..config import ConfigError, ModelConfig
from .base import Terms
from .zforcing import ZForcing

MODELS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "zforcing": ZForcing,
}


def register_model(name: str, builder: Callable[[ModelConfig], nn.Module]):
    MODELS[name] = builder


def build_model(cfg: ModelConfig) -> nn.Module:
    if cfg.name not in MODELS:
        raise ConfigError(f"unknown model {cfg.name!r}; known: {', '.join(sorted(MODELS))}")
    return MODELS[cfg.name](cfg)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = ["MODELS", "Terms", "build_model", "count_parameters", "register_model"]
