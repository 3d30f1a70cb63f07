"""Digit figures for the sequential MNIST page: grids of sampled digits and test digits
above their reconstructions, as compact grey-scale PNG bytes.

Byte-stable like figures.py: matplotlib's object API on Agg, no "Software" metadata, so
the same pixels give the same bytes. The image is drawn with one imshow of a mosaic
(not one axes per digit), which keeps the PNG small and the call fast.
"""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402  (matplotlib's own PNG writer)
import torch  # noqa: E402

SCALE = 3        # screen pixels per digit pixel at side 28 (a 14x14 digit gets twice that)
GAP = 1          # digit pixels between neighbouring digits
SHADE = 0.12     # light grey of gaps and empty cells: MNIST margins are blank, so white gaps hide the grid
TITLE_PX = 18    # height of the title band, in screen pixels
DPI = 100


def mosaic(images: np.ndarray, side: int, ncols: int) -> np.ndarray:
    """(n, side*side) values in [0, 1] -> one (rows*(side+GAP)-GAP, ...) image, filled row
    by row; gaps and empty cells are SHADE."""
    images = np.asarray(images, dtype=np.float64)
    if images.ndim != 2 or images.shape[1] != side * side:
        raise ValueError(f"images must be (n, {side * side}) for side {side}, got {images.shape}")
    if ncols <= 0:
        raise ValueError(f"ncols must be positive, got {ncols}")
    n = len(images)
    rows = max(1, -(-n // ncols))
    cell = side + GAP
    out = np.full((rows * cell - GAP, ncols * cell - GAP), SHADE)
    for i, img in enumerate(images):
        r, c = divmod(i, ncols)
        out[r * cell:r * cell + side, c * cell:c * cell + side] = img.reshape(side, side)
    return np.clip(out, 0.0, 1.0)


def _png(image: np.ndarray, side: int, title: str | None) -> bytes:
    """Draw the mosaic (ink black on white) with an optional title; 8-bit grey PNG bytes."""
    zoom = SCALE * max(1, 28 // side)
    h, w = image.shape[0] * zoom, image.shape[1] * zoom
    top = TITLE_PX if title else 0
    fig = Figure(figsize=(w / DPI, (h + top) / DPI), dpi=DPI)
    ax = fig.add_axes((0.0, 0.0, 1.0, h / (h + top)))
    ax.imshow(image, cmap="gray_r", vmin=0.0, vmax=1.0, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    if title:
        fig.text(0.5, 1.0 - 0.5 * top / (h + top), title, ha="center", va="center", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    # Agg writes RGBA; the figure is grey, so one 8-bit channel carries it at a quarter of the size
    grey = Image.open(io.BytesIO(buf.getvalue())).convert("L")
    out = io.BytesIO()
    grey.save(out, format="PNG", optimize=True)
    return out.getvalue()


def digit_grid_png(images: np.ndarray, side: int, ncols: int, title: str | None = None) -> bytes:
    """A grid of digits, `ncols` a row, as PNG bytes. images: (n, side*side) in [0, 1]
    (0/1 pixels or probabilities), raster order; ink is drawn black."""
    return _png(mosaic(images, side, ncols), side, title)


def recon_png(originals: np.ndarray, recons: np.ndarray, side: int,
              title: str | None = "test digits (top) and their reconstructions (bottom)") -> bytes:
    """Two rows: the test digits and, under each, its reconstruction."""
    originals, recons = np.asarray(originals), np.asarray(recons)
    if originals.shape != recons.shape:
        raise ValueError(f"originals {originals.shape} and reconstructions {recons.shape} differ")
    return _png(mosaic(np.concatenate([originals, recons]), side, len(originals)), side, title)


def sample_digits(model, n: int, side: int, generator: torch.Generator) -> np.ndarray:
    """n digits sampled from the model's prior, (n, side*side) float 0/1 pixels.

    Sampled pixels, not probabilities: generation feeds each output back as the next
    input, and a pixel embedding reads only 0 or 1, so `generate(sample_output=False)`
    would feed back a probability truncated to 0 rather than a draw of the model.
    The draws come from `generator` (the global RNG is restored afterwards), so the
    same generator state gives the same digits.
    """
    seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        was_training = model.training
        model.eval()
        try:
            x = model.generate(n, side * side)
        finally:
            model.train(was_training)
    return x.reshape(n, side * side).float().cpu().numpy()
