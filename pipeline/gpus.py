"""Which GPUs this process may use, as CUDA reads CUDA_VISIBLE_DEVICES. Standard library
only: the runner counts GPUs with it before any torch import, the stages name their locks."""
from __future__ import annotations

import os


def visible_gpus(environ=None) -> list[str] | None:
    """The entries of CUDA_VISIBLE_DEVICES that CUDA honours (those before a "-1", which
    hides itself and every later one), or None when it is unset (all GPUs visible)."""
    value = (os.environ if environ is None else environ).get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    ids = [v.strip() for v in value.split(",") if v.strip()]
    return ids[:ids.index("-1")] if "-1" in ids else ids
