"""Datasets: protocols that turn raw corpora into prepared arrays, and batching.

The trainer needs only `open_split` and `read_manifest` (torch/numpy/stdlib, from
batches.py, where the prepared directory layout is documented). `registry` maps a
benchmark and source to its download and protocol (`SOURCES`, `DataConfig`, `download`,
`prepare`); the protocol modules import librosa lazily.
"""
_BATCHES = ("ArrayLoader", "Batch", "epoch_order", "frames_to_waveform", "open_split", "read_manifest")


def __getattr__(name):
    # lazy, so the corpus generators (fresh processes that never batch) skip importing torch
    if name in _BATCHES:
        from . import batches
        return getattr(batches, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = list(_BATCHES)
