"""Prepared arrays -> torch batches. Imports only torch, numpy and the standard library.

A `Batch` is batch-first: x and y are (B, T, D) float frames for audio, or (B, T) int64
for discrete data (pixels, tokens); mask is (B, T) float, 1 where the step is scored.
A loader is addressed by (epoch, index) so training can resume at an exact position:
the order of an epoch is a pure function of (seed, epoch). Loaders of sequences of
varied length (utterances, sentences) can bucket: sort sequences by length before
cutting batches, so a batch pads to little more than its own longest sequence
(whole-utterance evaluation). Batch sizes and every sequence's content are unchanged;
only which sequences share a batch is.

Prepared directory layout (written by the protocol modules, read here):

    manifest.json      dataset, kind ("audio" | "binary" | "tokens"), x_dim, sample_rate,
                       frame_size, mean, std (int16 units for audio), split_sizes, protocol, sources,
                       skipped files, and `splits`: one entry per split saying its layout.
    <split>.npy        the split's array; which one depends on the split's layout:
      frame_stream     (F, frame_size) int16: all utterances concatenated then framed.
                       Sequence i: x = frames[iL : iL+L], y = frames[iL+1 : iL+L+1]
                       (L = row_frames; the first input is the true previous frame, so
                       every target frame is scored). TIMIT train/valid.
      utterances       (F, frame_size) int16 plus <split>_offsets.npy (U+1,) int64.
                       Sequence u is utterance u whole: x = frames 0..T-2,
                       y = frames 1..T-1, zero-padded to the longest in the batch, mask 1
                       on real steps (the first frame is only conditioned on). TIMIT test.
      row_blocks       rows.npy (R, row_samples) int16, shared by all splits; a split is
                       the row range [start, stop). VRNN/Blizzard layout: consecutive rows
                       are the same 0.5 s window of different streams. target_mode
                       `correct`: x = [0, f_1..f_{L-1}], y = f_1..f_L of one row;
                       `faithful` (authors' iterator): x = row r, y = row r + 1.
      pixels           (N, 784) uint8 0/1: x = [0, p_1..p_783], y = p_1..p_784 (int64).
      tokens           (N, W) int32 rows [<S>, w_1..w_n, </S>, <pad>...] (pad = 0) plus
                       <split>_lengths.npy (N,) int32 = n + 1, the scored steps. Sentence i:
                       x = [<S>, w_1..w_n], y = [w_1..w_n, </S>] (int64), trimmed to the
                       longest sentence in the batch, mask 1 on the n + 1 real steps.
                       The vocabulary is vocab.json beside the manifest (kind "tokens",
                       x_dim = vocabulary size). Language model (pipeline.datasets.text).
Audio is stored as int16 and normalised with the global training mean/std when batched,
so Blizzard-sized data stays memory-mapped; `frames_to_waveform` undoes it.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np
import torch

from .storage import open_pixels

MANIFEST = "manifest.json"


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


def bucket_order(lengths: np.ndarray, batch_size: int, epoch: int, seed: int,
                 shuffle: bool) -> np.ndarray:
    """Sequences sorted by length, shortest first (ties in index order), so a short last
    batch holds the longest sequences: the least padded area for the fixed batch count.
    With shuffle the full batches (not the sequences) come in a seeded order per epoch;
    the short last batch stays last, so every batch keeps its sequences."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    full = len(order) // batch_size
    if not shuffle or full < 2:
        return order
    blocks = order[:full * batch_size].reshape(full, batch_size)
    return np.concatenate([blocks[epoch_order(full, epoch, seed, True)].reshape(-1),
                           order[full * batch_size:]])


class _Loader:
    """Shared (epoch, index) addressing; subclasses say how many sequences and gather them,
    and loaders that can bucket say how long each sequence is (_sequence_lengths)."""

    def __init__(self, batch_size: int, shuffle: bool, seed: int, drop_last: bool,
                 bucket: bool = False):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size, self.shuffle, self.seed, self.drop_last = batch_size, shuffle, seed, drop_last
        self.bucket = bucket
        self._cached = (None, None)  # (epoch, order): a permutation is O(N), batches are many

    @property
    def num_sequences(self) -> int:
        raise NotImplementedError

    @property
    def num_batches(self) -> int:
        n, b = self.num_sequences, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __len__(self) -> int:
        return self.num_batches

    def order(self, epoch: int) -> np.ndarray:
        if self._cached[0] != epoch:
            if self.bucket:
                order = bucket_order(self._sequence_lengths(), self.batch_size, epoch,
                                     self.seed, self.shuffle)
            else:
                order = epoch_order(self.num_sequences, epoch, self.seed, self.shuffle)
            self._cached = (epoch, order)
        return self._cached[1]

    def _sequence_lengths(self) -> np.ndarray:
        raise ValueError(f"{type(self).__name__} holds sequences of one length: nothing to bucket")

    def ids(self, epoch: int, index: int) -> np.ndarray:
        """Which sequences (file-order indices) batch `index` of `epoch` holds, in row order."""
        if not 0 <= index < self.num_batches:
            raise IndexError(f"batch {index} out of range [0, {self.num_batches})")
        idx = self.order(epoch)[index * self.batch_size:(index + 1) * self.batch_size]
        return np.asarray(idx, dtype=np.int64)

    def batch(self, epoch: int, index: int) -> Batch:
        return self._gather(self.ids(epoch, index))

    def _gather(self, idx: np.ndarray) -> Batch:
        raise NotImplementedError

    def __iter__(self):
        """One pass in file order (evaluation)."""
        for i in range(self.num_batches):
            yield self.batch(0, i)


class ArrayLoader(_Loader):
    """In-memory sequences of equal length: x, y of shape (N, T, ...) and optional mask (N, T)."""

    def __init__(self, x, y, mask=None, batch_size: int = 32, shuffle: bool = True,
                 seed: int = 0, drop_last: bool = False):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} sequences but y has {len(y)}")
        super().__init__(batch_size, shuffle, seed, drop_last)
        self.x, self.y = torch.as_tensor(x), torch.as_tensor(y)
        self.mask = (torch.ones(self.y.shape[:2]) if mask is None
                     else torch.as_tensor(mask, dtype=torch.float32))

    @property
    def num_sequences(self) -> int:
        return len(self.x)

    def _gather(self, idx):
        idx = torch.from_numpy(idx)
        return Batch(self.x[idx], self.y[idx], self.mask[idx])


def _normalise(a: np.ndarray, mean: float, std: float) -> torch.Tensor:
    return torch.from_numpy(((a.astype(np.float32) - np.float32(mean)) / np.float32(std)))


class FrameStreamLoader(_Loader):
    """Rows of `row_frames` frames cut from one frame stream; input = target shifted by one."""

    def __init__(self, frames, mean, std, row_frames=40, batch_size=32, shuffle=True,
                 seed=0, drop_last=False, limit=None):
        super().__init__(batch_size, shuffle, seed, drop_last)
        self.frames, self.mean, self.std, self.L = frames, mean, std, row_frames
        n = max(0, (len(frames) - 1) // row_frames)
        self._n = n if limit is None else min(n, limit)

    @property
    def num_sequences(self):
        return self._n

    def _gather(self, idx):
        pos = idx[:, None] * self.L + np.arange(self.L + 1)  # (B, L+1) frame indices
        win = _normalise(self.frames[pos], self.mean, self.std)
        return Batch(win[:, :-1], win[:, 1:], torch.ones(len(idx), self.L))


class UtteranceLoader(_Loader):
    """Whole utterances, padded: x = frames 0..T-2, y = frames 1..T-1, mask on real steps."""

    def __init__(self, frames, offsets, mean, std, batch_size=32, shuffle=False, seed=0,
                 drop_last=False, limit=None, bucket=False):
        super().__init__(batch_size, shuffle, seed, drop_last, bucket)
        self.frames, self.offsets, self.mean, self.std = frames, np.asarray(offsets), mean, std
        n = len(self.offsets) - 1
        self._n = n if limit is None else min(n, limit)

    @property
    def num_sequences(self):
        return self._n

    def lengths(self) -> np.ndarray:
        """Scored steps per utterance (frames - 1)."""
        return np.diff(self.offsets)[:self._n] - 1

    _sequence_lengths = lengths

    def _gather(self, idx):
        starts, stops = self.offsets[idx], self.offsets[idx + 1]
        steps = stops - starts - 1
        t, d = int(steps.max()), self.frames.shape[1]
        x = torch.zeros(len(idx), t, d)
        y = torch.zeros(len(idx), t, d)
        mask = torch.zeros(len(idx), t)
        for b, (s, e) in enumerate(zip(starts, stops)):
            u = _normalise(self.frames[s:e], self.mean, self.std)
            x[b, :e - s - 1], y[b, :e - s - 1] = u[:-1], u[1:]
            mask[b, :e - s - 1] = 1.0
        return Batch(x, y, mask)


class RowBlockLoader(_Loader):
    """Blizzard rows [start, stop) of an int16 (R, row_samples) memmap, in either target mode."""

    def __init__(self, rows, start, stop, mean, std, frame_size=200, target_mode="correct",
                 batch_size=128, shuffle=True, seed=0, drop_last=False, limit=None):
        if target_mode not in ("correct", "faithful"):
            raise ValueError(f"target_mode must be 'correct' or 'faithful', got {target_mode!r}")
        super().__init__(batch_size, shuffle, seed, drop_last)
        self.rows, self.start, self.mean, self.std = rows, start, mean, std
        self.frame_size, self.target_mode = frame_size, target_mode
        # faithful pairs row r with row r+1, so the split's last row is only ever a target
        n = (stop - start) - (1 if target_mode == "faithful" else 0)
        self._n = max(0, n if limit is None else min(n, limit))

    @property
    def num_sequences(self):
        return self._n

    def _frames(self, r):
        return _normalise(self.rows[r], self.mean, self.std).reshape(len(r), -1, self.frame_size)

    def _gather(self, idx):
        r = self.start + idx
        cur = self._frames(r)
        if self.target_mode == "faithful":
            x, y = cur, self._frames(r + 1)
        else:
            x = torch.cat([torch.zeros_like(cur[:, :1]), cur[:, :-1]], dim=1)
            y = cur
        return Batch(x, y, torch.ones(x.shape[:2]))


class PixelLoader(_Loader):
    """Binary images in raster order, one pixel a step: x = [0, p_1..p_{n-1}], y = p."""

    def __init__(self, pixels, batch_size=32, shuffle=True, seed=0, drop_last=False, limit=None):
        super().__init__(batch_size, shuffle, seed, drop_last)
        self.pixels = pixels
        self._n = len(pixels) if limit is None else min(len(pixels), limit)

    @property
    def num_sequences(self):
        return self._n

    def _gather(self, idx):
        y = torch.from_numpy(np.asarray(self.pixels[idx], dtype=np.int64))
        x = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)
        return Batch(x, y, torch.ones(y.shape, dtype=torch.float32))


class TokenLoader(_Loader):
    """Padded sentences: x = row[:T], y = row[1:T+1] with T the longest length in the batch."""

    def __init__(self, tokens, lengths, batch_size=50, shuffle=True, seed=0, drop_last=False,
                 limit=None, bucket=False):
        if len(tokens) != len(lengths):
            raise ValueError(f"{len(tokens)} token rows but {len(lengths)} lengths")
        super().__init__(batch_size, shuffle, seed, drop_last, bucket)
        self.tokens, self.lengths = tokens, np.asarray(lengths, dtype=np.int64)
        self._n = len(tokens) if limit is None else min(len(tokens), limit)

    @property
    def num_sequences(self):
        return self._n

    def _sequence_lengths(self):
        return self.lengths[:self._n]

    def _gather(self, idx):
        steps = self.lengths[idx]
        t = int(steps.max())
        rows = torch.from_numpy(np.asarray(self.tokens[idx, :t + 1], dtype=np.int64))
        mask = (torch.arange(t).unsqueeze(0) < torch.from_numpy(steps).unsqueeze(1)).float()
        return Batch(rows[:, :-1], rows[:, 1:], mask)


def read_manifest(prepared_dir) -> dict:
    path = os.path.join(prepared_dir, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} not found: run the prepare stage first "
                                f"(python stages/prepare.py --params params.yaml --out {prepared_dir})")
    with open(path) as f:
        return json.load(f)


def open_split(prepared_dir, split: str, batch_size: int, shuffle: bool = False, seed: int = 0,
               drop_last: bool = False, target_mode: str | None = None,
               limit: int | None = None, bucket: bool = False) -> _Loader:
    """The trainer's one entry point: a loader over `split` of a prepared dataset.

    target_mode overrides the manifest's Blizzard mode (`correct` | `faithful`);
    limit keeps only the first `limit` sequences (quick runs, smoke tests);
    bucket sorts utterances / sentences by length into batches (other layouts hold
    sequences of one length and ignore it).
    """
    m = read_manifest(prepared_dir)
    if split not in m["splits"]:
        raise KeyError(f"split {split!r} not in {prepared_dir} (has {sorted(m['splits'])})")
    s = m["splits"][split]

    def load(name):  # memory-mapped: large corpora never load whole
        return np.load(os.path.join(prepared_dir, name), mmap_mode="r")

    common = dict(batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last, limit=limit)
    layout = s["layout"]
    if layout == "frame_stream":
        return FrameStreamLoader(load(s["file"]), m["mean"], m["std"], s["row_frames"], **common)
    if layout == "utterances":
        return UtteranceLoader(load(s["file"]), np.load(os.path.join(prepared_dir, s["offsets"])),
                               m["mean"], m["std"], bucket=bucket, **common)
    if layout == "row_blocks":
        mode = target_mode or m["protocol"]["target_mode"]
        return RowBlockLoader(load(s["file"]), s["start"], s["stop"], m["mean"], m["std"],
                              m["frame_size"], mode, **common)
    if layout == "pixels":  # checked against the manifest: a bad value would not fail loudly
        pixels = open_pixels(os.path.join(prepared_dir, s["file"]), s.get("sequences"), m.get("steps"))
        return PixelLoader(pixels, **common)
    if layout == "tokens":
        return TokenLoader(load(s["file"]), np.load(os.path.join(prepared_dir, s["lengths"])),
                           bucket=bucket, **common)
    raise ValueError(f"unknown layout {layout!r} in {prepared_dir}/{MANIFEST}")


def frames_to_waveform(frames, manifest: dict) -> np.ndarray:
    """Normalised (T, frame_size) frames -> float32 waveform in [-1, 1] at manifest['sample_rate']."""
    a = frames.detach().cpu().numpy() if isinstance(frames, torch.Tensor) else np.asarray(frames)
    pcm = a.reshape(-1).astype(np.float64) * manifest["std"] + manifest["mean"]
    return np.clip(pcm / 32768.0, -1.0, 1.0).astype(np.float32)
