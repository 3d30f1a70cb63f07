"""Datasets: protocols that turn raw corpora into prepared arrays, and batching.

The trainer needs only `open_split` and `read_manifest` (torch/numpy/stdlib, from
batches.py, where the prepared directory layout is documented). `registry` maps a dataset
name to its download and protocol (`DATASETS`, `DataConfig`, `download`, `prepare`); the
protocol modules (timit, blizzard, mnist, synthetic, free_speech) import librosa lazily.
"""
from .batches import (ArrayLoader, Batch, epoch_order, frames_to_waveform,  # noqa: F401
                      open_split, read_manifest)
