"""The download and prepare stage CLIs end to end on the tiny embedded corpus; registry and
params checks (every benchmark x source, one-line errors naming the key)."""
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import yaml

from pipeline.datasets import open_split, read_manifest
from pipeline.datasets.audio import BadFiles
from pipeline.datasets.free_speech import SOURCES as FREE, prepare as prepare_free
from pipeline.datasets.registry import SOURCES, DataConfig
from pipeline.errors import UserError
from stages import params as P

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def params_with(tmp_path, **timit) -> str:
    p = yaml.safe_load(open(os.path.join(ROOT, "params.yaml")))
    p["benchmarks"]["timit"]["data"].update(timit)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(p))
    return str(path)


def run(*args):
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True)


def test_data_stages_embedded_timit_end_to_end(tmp_path):
    params = params_with(tmp_path, seed=1, minutes=0.2, speakers=[3, 2, 2])
    res = run("stages.download", "timit", "--params", params, "--out", str(tmp_path / "raw"))
    assert res.returncode == 0, res.stderr
    res = run("stages.prepare", "timit", "--params", params, "--raw", str(tmp_path / "raw"),
              "--out", str(tmp_path / "prep"))
    assert res.returncode == 0, res.stderr
    m = read_manifest(tmp_path / "prep")
    for key in ("dataset", "kind", "x_dim", "sample_rate", "frame_size", "mean", "std",
                "split_sizes", "protocol", "sources", "skipped", "title_note", "comparable"):
        assert key in m
    assert m["dataset"] == "embedded" and m["generator"]["config"]["seed"] == 1
    assert m["comparable"] is False and "stand-in" in m["title_note"]
    b = next(iter(open_split(tmp_path / "prep", "valid", batch_size=8)))
    assert b.x.shape[1:] == (40, 200)
    assert not any(p.startswith("pipeline") for p in os.listdir(tmp_path))


def test_data_config_rejects_unknown_benchmarks_sources_and_keys(tmp_path):
    with pytest.raises(UserError, match="benchmarks.timit.source"):
        DataConfig(bench="timit", source="timit")  # a source id never repeats a benchmark name
    with pytest.raises(UserError, match="unknown benchmark"):
        DataConfig(bench="cifar")
    assert {b: set(s) for b, s in SOURCES.items()} == {
        "timit": {"embedded", "timit_ldc", "librispeech"},
        "blizzard": {"embedded", "blizzard2013", "ljspeech"},
        "mnist": {"embedded", "binarized_mnist"}, "imdb": {"embedded", "aclimdb", "textfile"}}
    params = P.read(params_with(tmp_path))
    params["benchmarks"]["timit"]["data"]["timit_pth"] = "/x"
    with pytest.raises(UserError, match="benchmarks.timit.data.timit_pth"):
        P.data_config(params, "timit")
    assert all(FREE[n].licence and FREE[n].size for n in FREE)


@pytest.mark.parametrize("edit, key", [
    (("train", "lr", "fast"), "train.lr"),
    (("train", "batch_size", "32"), None),          # a number written as a string is fine
    (("model", "z_force", "false"), "model.z_force"),   # a string is not a boolean
    (("model", "rnn_dim", 12.5), "model.rnn_dim"),
    (("train", "train_limit", -1), "train.train_limit"),
    (("eval", "iwae_k", -2), "eval.iwae_k"),
    (("train", "select", "bset"), "train.select"),
    (("train", "device", "gpu"), "train.device"),
    (("model", "output", "foo"), "model.output"),         # found when the model is built
    (("model", "gmm_components", 0), "gmm_components"),
    ((None, "numerics", "quick"), "numerics"),
])
def test_params_are_type_checked_in_one_line(tmp_path, edit, key):
    from stages.check import check
    p = P.read(params_with(tmp_path))
    section, name, value = edit
    (p[section] if section else p)[name] = value
    if key is None:
        check(p)
        return
    with pytest.raises(UserError, match=key.replace(".", r"\.")) as err:
        check(p)
    assert "\n" not in str(err.value)


def test_missing_licensed_path_names_the_parameter_before_any_network(tmp_path):
    p = yaml.safe_load(open(os.path.join(ROOT, "params.yaml")))
    p["benchmarks"]["timit"]["source"] = "timit_ldc"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(p))
    res = run("stages.download", "timit", "--params", str(path), "--out", str(tmp_path / "raw"))
    assert res.returncode == 2 and "benchmarks.timit.data.path" in res.stderr
    assert res.stderr.strip().count("\n") == 0


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
