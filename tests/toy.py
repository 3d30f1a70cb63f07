"""Small synthetic sequence tasks shared by the tests."""
import math

import torch

from pipeline.datasets.batches import ArrayLoader


def sine_sequences(n: int, steps: int, dim: int, seed: int = 0, noise: float = 0.1):
    """Frames of a noisy sinusoid with random frequency and phase: x_t = y_{t-1}, x_1 = 0."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(steps + 1, dtype=torch.float32).view(1, -1, 1)
    k = torch.arange(dim, dtype=torch.float32).view(1, 1, -1)
    freq = 0.3 + 0.4 * torch.rand(n, 1, 1, generator=g)
    phase = 2 * math.pi * torch.rand(n, 1, 1, generator=g)
    seq = torch.sin(freq * (t * dim + k) / dim * 3 + phase)
    seq = seq + noise * torch.randn(seq.shape, generator=g)
    y = seq[:, 1:]
    x = torch.cat([torch.zeros(n, 1, dim), seq[:, 1:-1]], 1)
    return x, y


def sine_loader(n=64, steps=12, dim=4, batch_size=16, seed=0, shuffle=True):
    x, y = sine_sequences(n, steps, dim, seed)
    return ArrayLoader(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)
