"""Prepared arrays -> torch batches. Imports only torch, numpy and the standard library.

A `Batch` is batch-first: x and y are (B, T, D) float frames for audio, or (B, T) int64
for discrete data (pixels, tokens); mask is (B, T) float, 1 where the step is scored.
A loader is addressed by (epoch, index) so training can resume at an exact position:
the order of an epoch is a pure function of (seed, epoch).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class Batch:
    x: torch.Tensor
    y: torch.Tensor
    mask: torch.Tensor

    def to(self, device) -> "Batch":
        return Batch(*(t.to(device, non_blocking=True) for t in (self.x, self.y, self.mask)))

    @property
    def size(self) -> int:
        return self.x.shape[0]


def epoch_order(n: int, epoch: int, seed: int, shuffle: bool) -> np.ndarray:
    """Permutation of range(n) used in `epoch`; identical whenever (n, epoch, seed) are."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


class ArrayLoader:
    """In-memory sequences of equal length: x, y of shape (N, T, ...) and optional mask (N, T)."""

    def __init__(self, x, y, mask=None, batch_size: int = 32, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} sequences but y has {len(y)}")
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)
        self.mask = (torch.ones(self.y.shape[:2]) if mask is None
                     else torch.as_tensor(mask, dtype=torch.float32))
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last

    @property
    def num_sequences(self) -> int:
        return len(self.x)

    @property
    def num_batches(self) -> int:
        n, b = self.num_sequences, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def batch(self, epoch: int, index: int) -> Batch:
        order = epoch_order(self.num_sequences, epoch, self.seed, self.shuffle)
        idx = torch.from_numpy(order[index * self.batch_size:(index + 1) * self.batch_size])
        return Batch(self.x[idx], self.y[idx], self.mask[idx])

    def __iter__(self):
        """One pass in file order (evaluation)."""
        for i in range(self.num_batches):
            yield self.batch(0, i)
