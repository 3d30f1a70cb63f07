"""Batching: cached epoch order, (epoch, index) addressing, waveform round trip."""
import numpy as np
import torch

from pipeline.datasets.batches import (ArrayLoader, FrameStreamLoader, PixelLoader, epoch_order,
                                       frames_to_waveform)


def test_data_batches_epoch_order_cached_and_deterministic():
    frames = np.arange(81 * 200 * 3, dtype=np.int16)[:81 * 200 * 2].reshape(-1, 200)
    a = FrameStreamLoader(frames, 0.0, 1.0, row_frames=4, batch_size=3, shuffle=True, seed=5)
    b = FrameStreamLoader(frames, 0.0, 1.0, row_frames=4, batch_size=3, shuffle=True, seed=5)
    assert a.num_sequences == (len(frames) - 1) // 4
    assert torch.equal(a.batch(2, 1).x, b.batch(2, 1).x)
    assert a.order(2) is a.order(2)  # computed once per epoch
    assert np.array_equal(a.order(3), epoch_order(a.num_sequences, 3, 5, True))
    seen = np.concatenate([a.order(0)[i * 3:(i + 1) * 3] for i in range(a.num_batches)])
    assert sorted(seen) == list(range(a.num_sequences))


def test_data_batches_array_loader_unchanged():
    x = torch.randn(10, 5, 2)
    ld = ArrayLoader(x, x, batch_size=4, shuffle=False)
    assert ld.num_batches == 3 and ld.num_sequences == 10
    assert torch.equal(torch.cat([b.x for b in ld]), x)


def test_data_batches_pixels_shift_and_waveform_roundtrip():
    p = (np.random.default_rng(0).random((5, 784)) > 0.5).astype(np.uint8)
    b = PixelLoader(p, batch_size=5, shuffle=False).batch(0, 0)
    assert b.x.dtype == torch.int64 and b.x.shape == (5, 784)
    assert (b.x[:, 0] == 0).all() and torch.equal(b.x[:, 1:], b.y[:, :-1])
    m = {"mean": 10.0, "std": 1000.0}
    pcm = np.arange(-1000, 1000, 5, dtype=np.int16)[:400].reshape(2, 200)
    w = frames_to_waveform(torch.from_numpy((pcm - 10.0) / 1000.0), m)
    assert np.allclose(w * 32768, pcm.reshape(-1), atol=1e-2)
