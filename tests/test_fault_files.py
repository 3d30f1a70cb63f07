"""Model files given to the evaluate stage that are cut, edited or from another model:
one line naming the file, never a traceback, and no output folder."""
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest

from pipeline import checkpoint
from pipeline.config import ModelConfig, TrainConfig
from pipeline.datasets.mnist import _write
from pipeline.errors import UserError
from pipeline.models import build_model, count_parameters
from stages import evaluate as stage

ROOT = Path(__file__).resolve().parents[1]
CFG = ModelConfig(name="zforcing", data="binary", x_dim=1, output="bernoulli",
                  rnn_dim=8, emb_dim=4, mlp_dim=8, z_dim=2)


def _model_dir(path: Path, cfg=CFG) -> Path:
    """What the train stage writes, for a tiny untrained model."""
    model = build_model(cfg)
    path.mkdir(parents=True)
    checkpoint.save_npz(model.state_dict(), path / "model.npz")
    (path / "model.json").write_text(json.dumps({
        "model_config": asdict(model.cfg), "train_config": asdict(TrainConfig()), "options": {},
        "params": count_parameters(model), "updates": 1, "skipped": 0, "device": "cpu",
        "best_valid_elbo_per_seq": None}))
    return path


def _edit_json(edit):
    def apply(d: Path):
        saved = json.loads((d / "model.json").read_text())
        (d / "model.json").write_text(json.dumps(edit(saved)))
    return apply


def _cut(name, keep=0.5):
    def apply(d: Path):
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[:int(len(data) * keep)])
    return apply


def _other_weights(cfg):
    def apply(d: Path):
        checkpoint.save_npz(build_model(cfg).state_dict(), d / "model.npz")
    return apply


def _drop_tensor(d: Path):
    state = checkpoint.load_npz(d / "model.npz")
    state.pop(sorted(state)[0])
    checkpoint.save_npz(state, d / "model.npz")


def _set(section, key, value):
    def edit(saved):
        saved[section][key] = value
        return saved
    return _edit_json(edit)


CORRUPT = {
    "json_cut": (_cut("model.json"), "model.json"),
    "json_not_text": (lambda d: (d / "model.json").write_bytes(b"\xff\xfe\x00garbage"), "model.json"),
    "json_a_list": (_edit_json(lambda s: [s]), "model.json"),
    "json_no_model_config": (_edit_json(lambda s: {k: v for k, v in s.items() if k != "model_config"}),
                             "model.json"),
    "json_no_train_seed": (_edit_json(lambda s: {**s, "train_config": {"lr": 1.0}}), "model.json"),
    "json_unknown_key": (_set("model_config", "rnn_size", 8), "model.json"),
    "json_wrong_type": (_set("model_config", "rnn_dim", "eight"), "model.json"),
    "json_impossible": (_set("model_config", "z_dim", -2), "model.json"),
    "json_unknown_model": (_set("model_config", "name", "zforcing_v9"), "model.json"),
    "npz_cut": (_cut("model.npz"), "model.npz"),
    "npz_missing": (lambda d: (d / "model.npz").unlink(), "model.npz"),
    "npz_not_a_zip": (lambda d: (d / "model.npz").write_bytes(os.urandom(3000)), "model.npz"),
    "npz_other_sizes": (_other_weights(ModelConfig(**{**asdict(CFG), "rnn_dim": 12})), "model.npz"),
    "npz_other_model": (_other_weights(ModelConfig(**{**asdict(CFG), "name": "rnn"})), "model.npz"),
    "npz_tensor_dropped": (_drop_tensor, "model.npz"),
}


@pytest.mark.parametrize("case", sorted(CORRUPT))
def test_fault_model_files_are_one_line_naming_the_file(tmp_path, case):
    corrupt, name = CORRUPT[case]
    d = _model_dir(tmp_path / "m")
    corrupt(d)
    with pytest.raises(UserError) as e:
        stage.load_model(d)
    msg = str(e.value)
    assert "\n" not in msg and str(d / name) in msg and len(msg) < 600, msg


def test_fault_model_files_intact_load_the_same_weights(tmp_path):
    d = _model_dir(tmp_path / "m")
    saved, model = stage.load_model(d)
    assert saved["model_config"] == asdict(CFG)
    want = checkpoint.load_npz(d / "model.npz")
    assert all(np.array_equal(v.numpy(), want[k].numpy()) for k, v in model.state_dict().items())


@pytest.mark.parametrize("case", ["json_cut", "npz_other_sizes"])
def test_fault_evaluate_stage_prints_one_line_and_writes_nothing(tmp_path, case):
    rng = np.random.default_rng(0)
    data = tmp_path / "prepared"
    _write(str(data), "mnist_offline", {s: (rng.random((4, 16)) > 0.7).astype(np.uint8)
                                        for s in ("train", "valid", "test")}, {})
    d = _model_dir(tmp_path / "m")
    CORRUPT[case][0](d)
    out = tmp_path / "eval"
    r = subprocess.run([sys.executable, "-m", "stages.evaluate", "mnist", "zforcing", "0",
                        "--params", str(ROOT / "params.yaml"), "--data", str(data), "--model", str(d),
                        "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("error: ")]  # beside the device note
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr
    assert str(d / CORRUPT[case][1]) in errors[0] and not out.exists()
