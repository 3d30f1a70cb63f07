"""Evaluation noise keyed by sequence rather than by batch.

By default evaluate() draws each batch's noise from one generator in batch order, so the
sample a sequence gets depends on which batch holds it and how far that batch is padded.
Here every sequence has its own generator, seeded from (seed, sequence index), and its
samples are drawn one at a time at the sequence's own length (zeros past it: padded steps
never reach a real one). Draw 0 is the single-sample ELBO's, draws 1..K the IWAE
samples. A sequence's bounds then do not depend on the batching, bucketing, batch size
or IWAE chunk size. Imports only torch and numpy.
"""
from __future__ import annotations

import numpy as np
import torch


def sequence_seed(seed: int, index: int) -> int:
    """A 63-bit seed for sequence `index`, well mixed (neighbouring indices share no bits)."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0] >> np.uint64(1))


class SequenceNoise:
    """The noise of one batch whose rows are the sequences `ids` with `lengths` real steps."""

    def __init__(self, seed: int, ids, lengths):
        self.gens = [torch.Generator().manual_seed(sequence_seed(seed, int(i))) for i in ids]
        self.lengths = [int(n) for n in lengths]

    @classmethod
    def for_batch(cls, seed: int, ids, batch) -> "SequenceNoise":
        # masks are prefixes, so a row's real steps are its mask's sum (one host read a batch)
        return cls(seed, ids, batch.mask.sum(1).round().long().tolist())

    def draw(self, model, batch, samples: int = 1):
        """Noise for `batch` repeated `samples` times (sample-major rows s * B + b), the next
        `samples` draws of every sequence; None for models without noise."""
        shape = model.noise_shape(batch)
        if shape is None:
            return None
        B, T, rest = shape[0], shape[1], tuple(shape[2:])
        if B != len(self.gens):
            raise ValueError(f"batch of {B} rows but noise for {len(self.gens)} sequences")
        out = torch.zeros(samples, B, T, *rest)
        for s in range(samples):
            for b, (gen, n) in enumerate(zip(self.gens, self.lengths)):
                out[s, b, :n] = torch.randn((n, *rest), generator=gen)
        return out.view(samples * B, T, *rest).to(batch.mask.device)
