"""The embedded espeak corpus: deterministic, speaker-disjoint, recording-like, prepares end to end."""
import hashlib
import os
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.datasets import open_split
from pipeline.datasets.audio import BadFiles
from pipeline.datasets.synthetic import SyntheticConfig, generate, plan_speakers, read_lists
from pipeline.datasets.timit import prepare_from_lists

TINY = SyntheticConfig(seed=3, train_minutes=0.25, speakers=(4, 2, 2))


def _digest(root):
    h = hashlib.sha256()
    for d, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            h.update(open(os.path.join(d, f), "rb").read())
    return h.hexdigest()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("syn")
    desc = generate(str(d / "a"), TINY)
    return d, desc


def test_data_synthetic_byte_identical_for_a_seed(corpus):
    d, _ = corpus
    generate(str(d / "b"), TINY)
    assert _digest(d / "a") == _digest(d / "b")
    generate(str(d / "c"), SyntheticConfig(seed=4, train_minutes=0.25, speakers=(4, 2, 2)))
    assert _digest(d / "a") != _digest(d / "c")


def test_data_synthetic_looks_like_a_recording(corpus):
    d, desc = corpus
    lists = read_lists(d / "a")
    pcm = []
    for rel in lists["train"]:
        x, sr = sf.read(d / "a/wav" / rel, dtype="int16")
        assert sr == 16000 and x.ndim == 1
        pcm.append(x)
    pcm = np.concatenate(pcm)
    assert (pcm == 0).mean() < 0.01          # background noise: no digital silence
    assert np.abs(pcm).max() < 32767         # gain leaves headroom: no clipping
    assert desc["splits"]["train"]["seconds"] >= 15


def test_data_synthetic_speakers_disjoint_and_default_size():
    spk = plan_speakers(SyntheticConfig(), np.random.default_rng(0))
    ids = {s: {(p["voice"], p["pitch"]) for p in spk[s]} for s in spk}
    assert sum(len(v) for v in ids.values()) >= 20
    assert not (ids["train"] & ids["valid"]) and not (ids["train"] & ids["test"]) and not (ids["valid"] & ids["test"])
    assert len({p["voice"] for s in spk for p in spk[s]}) == sum(len(v) for v in spk.values())


def test_data_synthetic_prepares_with_the_timit_protocol(corpus, tmp_path):
    d, _ = corpus
    m = prepare_from_lists(str(d / "a/wav"), read_lists(d / "a"), str(tmp_path / "p"),
                           dataset="synthetic", bad=BadFiles())
    assert m["kind"] == "audio" and m["x_dim"] == 200 and m["sample_rate"] == 16000
    assert m["splits"]["train"]["speakers"] == 4 and m["splits"]["test"]["speakers"] == 2
    spk = {s: set(m["splits"][s]["speaker_ids"]) for s in ("train", "valid", "test")}
    assert not (spk["train"] & spk["test"]) and not (spk["train"] & spk["valid"])
    b = open_split(tmp_path / "p", "train", batch_size=4, shuffle=True, seed=0).batch(0, 0)
    assert b.x.dtype == b.y.dtype == np.float32 or str(b.x.dtype) == "torch.float32"
    assert abs(float(b.x.mean())) < 0.5 and 0.2 < float(b.x.std()) < 3


def test_corpus_text_does_not_depend_on_the_interpreter(monkeypatch):
    """The speech corpora read the Python docs shipped beside the code, not the interpreter's
    pydoc_data, whose text changes between patch releases (3.11.2 and 3.11.7 differ)."""
    import types
    from pipeline.datasets import longform, synthetic
    before = synthetic.sentences(), longform.reading_text()
    fake = types.ModuleType("pydoc_data.topics")
    fake.topics = {"x": "Another interpreter has another text here."}
    monkeypatch.setitem(sys.modules, "pydoc_data.topics", fake)
    assert (synthetic.sentences(), longform.reading_text()) == before
    assert len(before[0]) > 300 and len(before[1]) > 30
