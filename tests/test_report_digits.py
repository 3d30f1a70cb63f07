"""Digit figures: byte-stable, small, grey PNGs that show the pixels given; prior samples."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.config import ModelConfig
from pipeline.models import build_model
from pipeline.report.digits import (GAP, SCALE, digit_grid_png, mosaic, recon_png,
                                    sample_digits)


def _digits(n=32, side=28, seed=0):
    return np.random.default_rng(seed).random((n, side * side))


def _image(png: bytes) -> Image.Image:
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    return Image.open(io.BytesIO(png))


def test_grid_is_byte_stable_grey_and_small():
    d = _digits()
    a = digit_grid_png(d, 28, 8, title="samples")
    assert a == digit_grid_png(d.copy(), 28, 8, title="samples")
    assert a != digit_grid_png(d, 28, 8, title="other title")
    assert b"Software" not in a and b"matplotlib" not in a
    img = _image(a)
    assert img.mode == "L"
    # noise is the worst case for PNG compression: real digits are far smaller
    assert len(a) < 50_000, len(a)
    sparse = (_digits(seed=1) > 0.87).astype(float)   # 13 % ink, like binarised MNIST
    assert len(digit_grid_png(sparse, 28, 8)) < 20_000


def test_grid_draws_ink_black_where_the_pixels_are():
    side, ncols = 14, 4
    d = np.zeros((6, side * side))
    d[0] = 1.0                       # the first digit all ink, the rest blank
    png = digit_grid_png(d, side, ncols)
    img = np.asarray(_image(png))
    zoom = SCALE * 28 // side
    cell = (side + GAP) * zoom
    assert img.shape == (2 * cell - GAP * zoom, ncols * cell - GAP * zoom)
    mid = side * zoom // 2
    assert img[mid, mid] < 10                  # digit 0: black
    assert img[mid, cell + mid] > 245          # digit 1: white
    assert 200 < img[cell + mid, 3 * cell + mid] < 240   # empty 8th cell: light grey
    assert mosaic(d, side, ncols).shape == (2 * (side + GAP) - GAP, ncols * (side + GAP) - GAP)
    with pytest.raises(ValueError, match=r"\(n, 196\)"):
        digit_grid_png(np.zeros((3, 784)), side, ncols)


def test_recon_png_stacks_originals_over_reconstructions():
    side, n = 28, 5
    orig, rec = np.ones((n, side * side)), np.zeros((n, side * side))
    png = recon_png(orig, rec, side, title=None)
    assert png == recon_png(orig, rec, side, title=None)
    img = np.asarray(_image(png))
    cell = (side + GAP) * SCALE
    assert img.shape == (2 * cell - GAP * SCALE, n * cell - GAP * SCALE)
    assert img[:side * SCALE].mean() < img[cell:].mean() - 200
    titled = _image(recon_png(orig, rec, side))
    assert titled.size[1] > img.shape[0]   # the title band sits on top
    with pytest.raises(ValueError, match="differ"):
        recon_png(orig, rec[:3], side)


def test_sample_digits_seeded_binary_and_leaves_global_rng_alone():
    torch.manual_seed(0)
    model = build_model(ModelConfig(data="binary", x_dim=1, output="bernoulli", rnn_dim=8,
                                    emb_dim=4, mlp_dim=8, z_dim=4))
    state = torch.get_rng_state()
    a = sample_digits(model, 3, 7, torch.Generator().manual_seed(4))
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (3, 49) and a.dtype == np.float32 and set(np.unique(a)) == {0.0, 1.0}
    assert np.array_equal(a, sample_digits(model, 3, 7, torch.Generator().manual_seed(4)))
    assert not np.array_equal(a, sample_digits(model, 3, 7, torch.Generator().manual_seed(5)))
    assert model.training
