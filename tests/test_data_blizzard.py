"""Blizzard protocol on a generated set: stream layout, row splits, faithful vs correct targets."""
import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.datasets import open_split
from pipeline.datasets.audio import BadAudio, BadFiles, BadInput
from pipeline.datasets.blizzard import ROW_SAMPLES, prepare_blizzard, split_rows

STREAMS = 4


@pytest.fixture(scope="module")
def bliz(tmp_path_factory):
    """Three 'chapters' (mp3, flac, 22.05 kHz wav), ~22 s of audio; 4 streams."""
    d = tmp_path_factory.mktemp("bliz")
    raw = d / "raw" / "book"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(1)
    t = np.arange(16000 * 8) / 16000
    sig = (0.3 * np.sin(2 * np.pi * 220 * t) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
    sf.write(raw / "ch01.mp3", sig, 16000, format="MP3")
    sf.write(raw / "ch02.flac", sig[::-1].copy(), 16000, subtype="PCM_16")
    sf.write(raw / "ch03.wav", rng.standard_normal(22050 * 6).astype(np.float32) * 0.1, 22050)
    m = prepare_blizzard(str(d / "raw"), str(d / "prep"), BadFiles(), streams=STREAMS)
    return d, m


def test_data_blizzard_layout_and_splits(bliz):
    d, m = bliz
    rows = np.load(d / "prep/rows.npy", mmap_mode="r")
    assert rows.dtype == np.int16 and rows.shape[1] == ROW_SAMPLES
    assert isinstance(rows, np.memmap)
    assert m["protocol"]["rows_total"] == len(rows) and len(rows) % STREAMS == 0
    s = m["splits"]
    assert s["train"]["start"] == 0 and s["train"]["stop"] == s["valid"]["start"]
    assert s["valid"]["stop"] == s["test"]["start"] and s["test"]["stop"] == len(rows)
    assert all(s[k]["start"] % STREAMS == 0 for k in s)
    assert m["files_used"] == 3 and m["mean"] == pytest.approx(
        rows[:s["train"]["stop"]].astype(np.float64).mean())


def test_data_blizzard_rows_are_parallel_streams(bliz, tmp_path):
    d, m = bliz
    # rebuild the raw concatenation from the stream layout: stream s = rows s, s+S, s+2S...
    rows = np.load(d / "prep/rows.npy")
    W = len(rows) // STREAMS
    streams = rows.reshape(W, STREAMS, ROW_SAMPLES).transpose(1, 0, 2).reshape(STREAMS, -1)
    flat = streams.reshape(-1)
    decoded = np.round(sf.read(d / "raw/book/ch02.flac")[0] * 32768).astype(np.int16)
    start = int(np.flatnonzero(np.all(np.lib.stride_tricks.sliding_window_view(flat, 50)[:, :]
                                      == decoded[:50], axis=1))[0])
    n = min(len(decoded), len(flat) - start)
    assert np.array_equal(flat[start:start + n], decoded[:n])  # contiguous audio per stream


def test_data_blizzard_faithful_and_correct_differ_as_specified(bliz):
    d, m = bliz
    mean, std = m["mean"], m["std"]
    rows = (np.load(d / "prep/rows.npy").astype(np.float32) - mean) / std
    c = open_split(d / "prep", "train", batch_size=5, shuffle=False)
    f = open_split(d / "prep", "train", batch_size=5, shuffle=False, target_mode="faithful")
    assert m["protocol"]["target_mode"] == "correct"
    assert f.num_sequences == c.num_sequences - 1
    bc, bf = c.batch(0, 0), f.batch(0, 0)
    frames = torch.from_numpy(rows[:6]).reshape(6, 40, 200)
    # correct: one row, input = [0, f1..f39], target = f1..f40, all scored
    assert torch.equal(bc.x[:, 0], torch.zeros(5, 200))
    assert torch.allclose(bc.x[:, 1:], frames[:5, :-1]) and torch.allclose(bc.y, frames[:5])
    # faithful: input row r, target row r+1 (the next stream)
    assert torch.allclose(bf.x, frames[:5]) and torch.allclose(bf.y, frames[1:6])
    assert torch.equal(bf.y[:4], bc.y[1:5])  # faithful target of r = correct target of r+1
    assert bool((bc.mask == 1).all()) and bool((bf.mask == 1).all())
    # faithful never reads across a split boundary
    last = f.batch(0, f.num_batches - 1)
    assert torch.allclose(last.y[-1], torch.from_numpy(rows[m["splits"]["train"]["stop"] - 1]).reshape(40, 200))


def test_data_blizzard_bad_input(tmp_path):
    with pytest.raises(BadInput, match=r"benchmarks\.blizzard\.data\.path"):
        prepare_blizzard(str(tmp_path / "nope"), str(tmp_path / "p"), BadFiles())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="empty folder"):
        prepare_blizzard(str(tmp_path / "empty"), str(tmp_path / "p"), BadFiles())
    (tmp_path / "few").mkdir()
    sf.write(tmp_path / "few/a.wav", np.full(8000, 0.1, np.float32), 16000)
    (tmp_path / "few/b.mp3").write_bytes(b"ID3 this is not an mp3")
    with pytest.raises(BadAudio, match="b.mp3"):
        prepare_blizzard(str(tmp_path / "few"), str(tmp_path / "p"), BadFiles(), streams=2)
    with pytest.raises(BadInput, match="too little audio"), pytest.warns(UserWarning):
        prepare_blizzard(str(tmp_path / "few"), str(tmp_path / "p"), BadFiles("skip"), streams=2)


def test_data_blizzard_published_split_rows():
    s = split_rows(2_300_000, 128)
    assert s["train"] == (0, 2_040_064) and s["valid"] == (2_040_064, 2_152_704)
    assert s["test"] == (2_152_704, 2_266_880)


def test_data_blizzard_long_files_stream_in_blocks(bliz, monkeypatch):
    from pipeline.datasets import audio
    d, _ = bliz
    path = d / "raw/book/ch03.wav"
    whole = audio.load_pcm(path)
    monkeypatch.setattr(audio, "LONG_FILE_S", 1)
    blocks = list(audio.iter_pcm(path, block_s=2))
    assert len(blocks) > 2
    streamed = np.concatenate(blocks)
    assert abs(len(streamed) - len(whole)) <= 2
    n = min(len(streamed), len(whole))
    err = np.abs(streamed[100:n - 100].astype(float) - whole[100:n - 100]).max()
    assert err < 0.02 * np.abs(whole).max()  # same resampler family, no seams
