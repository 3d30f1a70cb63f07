"""The embedded `blizzard` corpus: one espeak voice reading long-form text, deterministic,
prepared with the Blizzard protocol in both target modes, refusing too many streams."""
import hashlib
import json
import os

import numpy as np
import pytest
import soundfile as sf
import torch

from pipeline.datasets import open_split
from pipeline.datasets.audio import BadFiles, BadInput
from pipeline.datasets.blizzard import PUBLISHED, ROW_SAMPLES
from pipeline.datasets.longform import (LongformConfig, TooLittleAudio, check_streams, check_voice,
                                        generate_longform, prepare_longform, reading_text,
                                        _generate_here)
from pipeline.errors import UserError

# >= 27 s in two chapters: 1 stream leaves >= 3 rows in valid and in test
TINY = LongformConfig(seed=2, minutes=0.45, chapter_minutes=0.25)
PARAM = "benchmarks.blizzard.data.streams"


def _digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(d, f), "rb").read())
    return h.hexdigest()


def _audio(raw):
    return np.concatenate([sf.read(os.path.join(raw, "wav", f), dtype="int16")[0]
                           for f in sorted(os.listdir(os.path.join(raw, "wav")))])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("longform")
    desc = generate_longform(str(d / "a"), TINY)
    return d, desc


@pytest.fixture(scope="module")
def prepared(corpus):
    d, _ = corpus
    return {mode: prepare_longform(str(d / "a"), str(d / mode), BadFiles(), streams=1, target_mode=mode)
            for mode in ("correct", "faithful")}


def test_data_longform_byte_identical_for_a_seed(corpus):
    d, _ = corpus
    generate_longform(str(d / "b"), TINY)
    assert _digest(d / "a") == _digest(d / "b")
    _generate_here(str(d / "c"), LongformConfig(seed=3, minutes=0.05))  # in-process: cheaper
    a = sf.read(d / "a/wav/chapter_0001.wav", dtype="int16")[0]
    c = sf.read(d / "c/wav/chapter_0001.wav", dtype="int16")[0]
    assert not np.array_equal(a[:16000], c[:16000])


def test_data_longform_one_voice_reading_consecutive_text(corpus):
    d, desc = corpus
    with open(d / "a/corpus.json") as f:
        info = json.load(f)
    assert "generate_seconds" not in info and desc["generate_seconds"] > 0  # timings stay out
    assert info["voice"] == TINY.voice and info["config"]["seed"] == 2
    ch = info["chapters"]
    assert [c["file"] for c in ch] == ["wav/chapter_0001.wav", "wav/chapter_0002.wav"]
    assert ch[0]["sentences"][0] == 0 and ch[0]["sentences"][1] == ch[1]["sentences"][0]  # read in order
    paragraphs = reading_text()
    assert info["text_sha256"] == hashlib.sha256(json.dumps(paragraphs).encode()).hexdigest()
    assert sum(map(len, paragraphs)) > 500  # enough text for the default 10 minutes
    pcm = _audio(d / "a")
    assert info["seconds"] >= 60 * TINY.minutes
    assert len(pcm) / 16000 == pytest.approx(info["seconds"], abs=0.01)
    assert sf.info(d / "a/wav/chapter_0001.wav").samplerate == 16000
    assert sf.info(d / "a/wav/chapter_0001.wav").channels == 1
    assert (pcm == 0).mean() < 0.01          # background noise: no digital silence
    assert np.abs(pcm).max() < 32767         # gain leaves headroom: no clipping
    # pauses between sentences: some 0.1 s windows are far quieter than the speech
    rms = np.sqrt((pcm[:len(pcm) // 1600 * 1600].reshape(-1, 1600).astype(np.float64) ** 2).mean(1))
    assert np.quantile(rms, 0.05) < 0.1 * np.quantile(rms, 0.9)


def test_data_longform_manifest_and_row_splits(corpus, prepared):
    d, _ = corpus
    m = prepared["correct"]
    assert m["dataset"] == "embedded" and m["protocol"]["name"] == "blizzard"
    assert m["voice"] == TINY.voice and m["protocol"]["target_mode"] == "correct"
    assert m["protocol"]["streams"] == 1 and m["files_used"] == 2
    pcm = _audio(d / "a")
    n = len(pcm) // ROW_SAMPLES
    s = m["splits"]
    assert m["protocol"]["rows_total"] == n and s["test"]["stop"] == n
    assert s["train"]["start"] == 0 and s["train"]["stop"] == s["valid"]["start"]
    assert s["valid"]["stop"] == s["test"]["start"]
    # the official row splits' proportions, in whole rows
    assert s["valid"]["rows"] == round(n * (PUBLISHED[1] - PUBLISHED[0]) / PUBLISHED[2]) >= 3
    assert s["test"]["rows"] == round(n * (PUBLISHED[2] - PUBLISHED[1]) / PUBLISHED[2]) >= 3
    rows = np.load(d / "correct/rows.npy", mmap_mode="r")
    assert rows.dtype == np.int16 and np.array_equal(np.asarray(rows).reshape(-1), pcm[:n * ROW_SAMPLES])
    assert m["mean"] == pytest.approx(rows[:s["train"]["stop"]].astype(np.float64).mean())


def test_data_longform_batches_in_both_target_modes(corpus, prepared):
    d, _ = corpus
    m = prepared["correct"]
    rows = torch.from_numpy((np.load(d / "correct/rows.npy").astype(np.float32) - m["mean"]) / m["std"])
    frames = rows.reshape(len(rows), 40, 200)
    v0 = m["splits"]["valid"]["start"]
    bc = open_split(d / "correct", "valid", batch_size=2, shuffle=False).batch(0, 0)
    # correct: x = [0, f1..f39], y = f1..f40 of the same row
    assert torch.equal(bc.x[:, 0], torch.zeros(2, 200))
    assert torch.allclose(bc.x[:, 1:], frames[v0:v0 + 2, :-1]) and torch.allclose(bc.y, frames[v0:v0 + 2])
    mf = prepared["faithful"]
    assert mf["protocol"]["target_mode"] == "faithful"
    assert mf["split_sizes"]["valid"] == m["split_sizes"]["valid"] - 1
    bf = open_split(d / "faithful", "valid", batch_size=2, shuffle=False).batch(0, 0)
    # faithful: x = row r, y = row r + 1
    assert torch.allclose(bf.x, frames[v0:v0 + 2]) and torch.allclose(bf.y, frames[v0 + 1:v0 + 3])
    assert bool((bc.mask == 1).all()) and bool((bf.mask == 1).all())


def test_data_longform_too_many_streams_is_one_line(corpus, tmp_path):
    d, _ = corpus
    with pytest.raises(TooLittleAudio) as e:
        prepare_longform(str(d / "a"), str(tmp_path / "p"), BadFiles(), streams=8, target_mode="correct")
    msg = str(e.value)
    assert isinstance(e.value, UserError) and "\n" not in msg and msg.startswith(PARAM)
    assert msg.endswith("at most 1") and not (tmp_path / "p").exists()
    with pytest.raises(TooLittleAudio, match=f"^{PARAM} must be a positive integer"):
        check_streams(1000, 0)
    # the default profile (10 minutes = 1,200 rows) fits 16 streams; the hint is the largest that fits
    check_streams(1200, 16)
    with pytest.raises(TooLittleAudio, match="at most 23$"):
        check_streams(1200, 64)
    check_streams(1200, 23)
    with pytest.raises(TooLittleAudio):
        check_streams(1200, 24)
    with pytest.raises(TooLittleAudio, match="raise benchmarks.blizzard.data.minutes$"):
        check_streams(40, 2)


def test_data_longform_user_errors(tmp_path):
    with pytest.raises(BadInput, match="target_mode"):
        prepare_longform(str(tmp_path), str(tmp_path / "p"), BadFiles(), streams=1, target_mode="next")
    with pytest.raises(BadInput, match="run the download stage"):
        prepare_longform(str(tmp_path), str(tmp_path / "p"), BadFiles(), streams=1, target_mode="correct")
    with pytest.raises(BadInput, match=r"^benchmarks\.blizzard\.data\.voice: .*'en-us\+nobody'"):
        check_voice("en-us+nobody")
    check_voice(TINY.voice)
    with pytest.raises(BadInput, match="minutes must be positive"):
        LongformConfig(minutes=0)
