import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

torch.set_num_threads(1)


@pytest.fixture
def tiny_model_cfg():
    from pipeline.config import ModelConfig
    return ModelConfig(x_dim=4, rnn_dim=16, emb_dim=8, mlp_dim=8, z_dim=4)
