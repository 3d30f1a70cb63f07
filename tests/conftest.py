import os
import sys
import tempfile
from pathlib import Path

import pytest

# compiled tests get an inductor cache of their own: the machine-wide one in /tmp outlives
# the run, and one left there by other work (other kernel switches) aborted a compiled test
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", tempfile.mkdtemp(prefix="zf-inductor-"))

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)


@pytest.fixture
def tiny_model_cfg():
    from pipeline.config import ModelConfig
    return ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
