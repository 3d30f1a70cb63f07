"""The download and prepare stage CLIs end to end on the tiny embedded corpus; registry checks."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from pipeline.datasets import open_split, read_manifest
from pipeline.datasets.audio import BadFiles
from pipeline.datasets.free_speech import SOURCES, prepare as prepare_free
from pipeline.datasets.registry import DATASETS, DataConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_data_stages_synthetic_end_to_end(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text("data:\n  name: synthetic\n  seed: 1\n  minutes: 0.2\n  speakers: [3, 2, 2]\n"
                      "  progress: false\nother_section: {x: 1}\n")
    for stage, extra in (("download", []), ("prepare", ["--raw", str(tmp_path / "raw")])):
        out = tmp_path / ("raw" if stage == "download" else "prep")
        subprocess.run([sys.executable, f"stages/{stage}.py", "--params", str(params), "--out",
                        str(out)] + extra, cwd=ROOT, check=True, capture_output=True)
    m = read_manifest(tmp_path / "prep")
    for key in ("dataset", "kind", "x_dim", "sample_rate", "frame_size", "mean", "std",
                "split_sizes", "protocol", "sources", "skipped"):
        assert key in m
    assert m["dataset"] == "synthetic" and m["generator"]["config"]["seed"] == 1
    assert len(m["sources"]) == 4
    b = next(iter(open_split(tmp_path / "prep", "valid", batch_size=8)))
    assert b.x.shape[1:] == (40, 200)


def test_data_stages_config_rejects_typos():
    with pytest.raises(KeyError, match="timit_pth"):
        DataConfig.from_params({"timit_pth": "/x"})
    with pytest.raises(KeyError, match="data.name"):
        DataConfig.from_params({"name": "imdb"})
    assert {"synthetic", "timit", "blizzard", "binarized_mnist", "mnist_offline"} <= set(DATASETS)
    assert all(SOURCES[n].licence and SOURCES[n].size for n in SOURCES)


def test_data_stages_librispeech_layout_speaker_disjoint(tmp_path):
    root = tmp_path / "librispeech_dev_clean/LibriSpeech/dev-clean"
    rng = np.random.default_rng(0)
    for spk in range(10):
        for utt in range(2):
            p = root / f"{100 + spk}/7/{100 + spk}-7-{utt:04d}.flac"
            p.parent.mkdir(parents=True, exist_ok=True)
            sf.write(p, (rng.standard_normal(12000) * 0.1).astype(np.float32), 16000, subtype="PCM_16")
    m = prepare_free("librispeech_dev_clean", str(tmp_path), str(tmp_path / "p"), BadFiles())
    ids = {s: set(m["splits"][s]["speaker_ids"]) for s in ("train", "valid", "test")}
    assert [len(ids[s]) for s in ("train", "valid", "test")] == [2, 2, 6]
    assert not (ids["train"] & ids["test"]) and m["licence"] == "CC BY 4.0"
