"""Matching parameter budgets across the rows of a table.

The paper's rows differ in size (its baselines come from other papers). With
`ModelConfig.param_budget > 0` a row's rnn_dim is chosen so that the model's parameter count
is as close as possible to the budget, the other sizes kept; `resolve_budget` applies it
and is a no-op when the budget is 0. Counting builds the model on the meta device, so no
memory is allocated and no initialisation runs, even at Blizzard sizes.
"""
from __future__ import annotations

from dataclasses import replace

import torch

from ..config import ConfigError, ModelConfig


def param_count(cfg: ModelConfig) -> int:
    """Parameters of the model `cfg` describes (built on the meta device)."""
    from . import build_model, count_parameters
    with torch.device("meta"):
        return count_parameters(build_model(cfg))


def match_budget(cfg: ModelConfig, target: int, field: str = "rnn_dim", max_dim: int = 1 << 16) -> ModelConfig:
    """cfg with `field` (rnn_dim by default) set so the parameter count is closest to target.

    The count grows with the field, so a bisection over integers finds the two sizes that
    bracket the target; the closer one wins (the smaller one on a tie).
    """
    if target <= 0:
        raise ConfigError(f"parameter budget must be positive, got {target}")
    count = lambda v: param_count(replace(cfg, **{field: v}))  # noqa: E731
    lo = 1
    if count(lo) >= target:
        return replace(cfg, **{field: lo})
    hi = 2
    while count(hi) < target:
        if hi >= max_dim:
            raise ConfigError(f"budget {target} needs {field} > {max_dim}")
        lo, hi = hi, hi * 2
    while hi - lo > 1:                 # invariant: count(lo) < target <= count(hi)
        mid = (lo + hi) // 2
        if count(mid) < target:
            lo = mid
        else:
            hi = mid
    best = lo if target - count(lo) <= count(hi) - target else hi
    return replace(cfg, **{field: best})


def resolve_budget(cfg: ModelConfig) -> ModelConfig:
    """Apply cfg.param_budget (if > 0) by choosing rnn_dim; idempotent."""
    return match_budget(cfg, cfg.param_budget) if cfg.param_budget > 0 else cfg


def budget_like(cfg: ModelConfig, reference: ModelConfig) -> ModelConfig:
    """cfg resized to the parameter count of the `reference` row (e.g. Z-Forcing's)."""
    return match_budget(cfg, param_count(reference))
