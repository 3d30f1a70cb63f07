"""Datasets: protocols that turn raw corpora into prepared arrays, and batching."""
from .batches import Batch, ArrayLoader, epoch_order, open_split, read_manifest, frames_to_waveform  # noqa: F401
