"""TIMIT protocol on generated trees: SPHERE and RIFF, upper and lower case, framing invariants."""
import hashlib
import os

import numpy as np
import pytest
import soundfile as sf

from pipeline.datasets import open_split, read_manifest
from pipeline.datasets.audio import BadAudio, BadFiles, BadInput
from pipeline.datasets.timit import PUBLISHED_LISTS, prepare_from_lists, prepare_timit, verify_lists

SPK = {"TRAIN": ["DR1/FAAA0", "DR2/MBBB0", "DR1/MCCC0"], "TEST": ["DR3/FDDD0", "DR4/MEEE0"]}
UTTS = ["SA1", "SX10", "SI20"]


def make_tree(root, lower=False, fmt="NIST", seed=0):
    """A fake TIMIT with 9 train and 6 test utterances of 0.2-0.5 s; returns the lists."""
    rng = np.random.default_rng(seed)
    lists = {"train": [], "valid": [], "test": []}
    for part, spks in SPK.items():
        for spk in spks:
            for u in UTTS:
                rel = f"{part}/{spk}/{u}.WAV"
                path = os.path.join(root, "timit", rel.lower() if lower else rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                n = int(rng.integers(3200, 8000))
                pcm = (rng.standard_normal(n) * 2000).astype(np.int16)
                sf.write(path, pcm, 16000, subtype="PCM_16", format=fmt)
                split = "test" if part == "TEST" else ("valid" if spk.endswith("MCCC0") else "train")
                lists[split].append(rel)
    return lists


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    d = tmp_path_factory.mktemp("timit")
    lists = make_tree(d / "raw")
    m = prepare_from_lists(str(d / "raw/timit"), lists, str(d / "prep"), dataset="timit",
                           bad=BadFiles("error"))
    return d, lists, m


def _pcm(path):
    return sf.read(path, dtype="int16")[0]


def test_data_timit_sphere_and_riff_in_both_cases_agree(prepared, tmp_path):
    d, lists, _ = prepared
    assert open(d / "raw/timit/TRAIN/DR1/FAAA0/SA1.WAV", "rb").read(7) == b"NIST_1A"
    make_tree(tmp_path / "raw", lower=True, fmt="WAV")
    assert open(tmp_path / "raw/timit/train/dr1/faaa0/sa1.wav", "rb").read(4) == b"RIFF"
    prepare_timit_like = prepare_from_lists(str(tmp_path / "raw/timit"), lists, str(tmp_path / "p"),
                                            dataset="timit", bad=BadFiles())
    for name in ("train.npy", "valid.npy", "test.npy", "test_offsets.npy"):
        assert np.array_equal(np.load(d / "prep" / name), np.load(tmp_path / "p" / name))
    assert prepare_timit_like["mean"] == read_manifest(d / "prep")["mean"]


def test_data_timit_train_stream_crosses_utterances(prepared):
    d, lists, m = prepared
    raw = np.concatenate([_pcm(d / "raw/timit" / r) for r in lists["train"]])
    frames = np.load(d / "prep/train.npy")
    assert frames.shape == (len(raw) // 200, 200)
    assert np.array_equal(frames.reshape(-1), raw[:frames.size])  # one stream, one tail dropped
    assert m["mean"] == pytest.approx(frames.astype(np.float64).mean())
    assert m["std"] == pytest.approx(frames.astype(np.float64).std())
    assert m["split_sizes"]["train"] == (len(frames) - 1) // 40


def test_data_timit_rows_are_shifted_by_one_frame(prepared):
    d, _, m = prepared
    frames = (np.load(d / "prep/train.npy").astype(np.float32) - m["mean"]) / m["std"]
    loader = open_split(d / "prep", "train", batch_size=2, shuffle=False)
    for i, b in enumerate(loader):
        assert b.x.shape[1:] == (40, 200) and bool((b.mask == 1).all())
        assert np.allclose(b.x[:, 1:], b.y[:, :-1])
        r = 2 * i
        assert np.allclose(b.x[0].numpy(), frames[40 * r:40 * r + 40], atol=1e-5)
        assert np.allclose(b.y[0].numpy(), frames[40 * r + 1:40 * r + 41], atol=1e-5)


def test_data_timit_test_utterances_whole_first_frame_unscored(prepared):
    d, lists, m = prepared
    loader = open_split(d / "prep", "test", batch_size=4, shuffle=False)
    assert loader.num_sequences == len(lists["test"]) == 6
    k = 0
    for b in loader:
        for j in range(b.size):
            pcm = _pcm(d / "raw/timit" / lists["test"][k])
            f = (pcm[:len(pcm) // 200 * 200].reshape(-1, 200).astype(np.float32) - m["mean"]) / m["std"]
            t = int(b.mask[j].sum())
            assert t == len(f) - 1                      # the first frame is never a target
            assert np.allclose(b.x[j, :t].numpy(), f[:-1], atol=1e-5)
            assert np.allclose(b.y[j, :t].numpy(), f[1:], atol=1e-5)
            assert float(b.x[j, t:].abs().sum()) == 0 and float(b.mask[j, t:].sum()) == 0
            k += 1


def test_data_timit_bad_files_error_or_skip(tmp_path):
    lists = make_tree(tmp_path / "raw")
    root = tmp_path / "raw/timit"
    bad = root / lists["train"][1]
    bad.write_bytes(b"NIST_1A garbage")
    sf.write(root / lists["train"][2], np.zeros(4000, np.int16), 16000, format="NIST")
    with pytest.raises(BadAudio) as e:
        prepare_from_lists(str(root), lists, str(tmp_path / "p"), dataset="timit", bad=BadFiles("error"))
    assert str(bad) in str(e.value) and "data.on_bad_file" in str(e.value)
    assert not (tmp_path / "p").exists()  # nothing half-written
    with pytest.warns(UserWarning):
        m = prepare_from_lists(str(root), lists, str(tmp_path / "p"), dataset="timit", bad=BadFiles("skip"))
    reasons = {os.path.basename(s["file"]): s["reason"] for s in m["skipped"]}
    assert m["skipped_count"] == 2 and "silent" in reasons["SI20.WAV"]
    assert m["splits"]["train"]["utterances"] == len(lists["train"]) - 2


def test_data_timit_unexpected_rate_and_layout(tmp_path):
    lists = make_tree(tmp_path / "raw")
    root = tmp_path / "raw/timit"
    sf.write(root / lists["test"][0], np.ones(8000, np.int16), 8000, format="NIST")
    with pytest.raises(BadAudio, match="unexpected sample rate 8000"):
        prepare_from_lists(str(root), lists, str(tmp_path / "p"), dataset="timit", bad=BadFiles())
    with pytest.raises(BadInput, match="benchmarks.timit.data.path"):
        prepare_timit(str(tmp_path / "missing"), str(tmp_path), str(tmp_path / "p"), BadFiles())
    (tmp_path / "empty").mkdir()
    with pytest.raises(BadInput, match="wrong layout"):
        prepare_timit(str(tmp_path / "empty"), str(tmp_path), str(tmp_path / "p"), BadFiles())


def test_data_timit_published_lists_verified(tmp_path):
    for split in ("train", "valid", "test"):
        (tmp_path / f"timit_{split}_files.txt").write_text("TRAIN/DR1/FAAA0/SA1.WAV\n")
    with pytest.raises(BadInput, match=PUBLISHED_LISTS["train"][1]):
        verify_lists(str(tmp_path))
    fake = {s: ("u", hashlib.sha256(b"TRAIN/DR1/FAAA0/SA1.WAV\n").hexdigest(), 1) for s in PUBLISHED_LISTS}
    assert len(verify_lists(str(tmp_path), fake)) == 3


def _riff_cut_in_half(path):
    sf.write(path, (np.random.default_rng(1).standard_normal(6000) * 2000).astype(np.int16), 16000,
             subtype="PCM_16", format="WAV")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _sphere_cut_in_half(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BAD_FILES = {  # one per class of bad audio: how to spoil a file -> what the line must say
    "stereo": (lambda p: sf.write(p, np.ones((6000, 2), np.int16) * 100, 16000, format="NIST"),
               "2 channels"),
    "truncated RIFF": (_riff_cut_in_half, "truncated"),
    "truncated SPHERE": (_sphere_cut_in_half, "truncated"),
    "zero bytes": (lambda p: p.write_bytes(b""), "unreadable"),
    "not audio": (lambda p: p.write_text("hello, I am a text file\n"), "unreadable"),
    "shorter than a frame": (lambda p: sf.write(p, np.ones(150, np.int16), 16000, format="NIST"),
                             "too short"),
    "silent": (lambda p: sf.write(p, np.zeros(6000, np.int16), 16000, format="NIST"), "silent"),
    "NaN": (lambda p: sf.write(p, np.r_[np.ones(3000), np.nan, np.ones(3000)].astype(np.float32) * 0.1,
                               16000, subtype="FLOAT", format="WAV"), "not finite"),
    "wrong rate": (lambda p: sf.write(p, np.ones(6000, np.int16), 8000, format="NIST"),
                   "unexpected sample rate"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_data_timit_each_bad_file_is_named_in_one_line(tmp_path, kind):
    spoil, says = BAD_FILES[kind]
    lists = make_tree(tmp_path / "raw")
    root = tmp_path / "raw/timit"
    bad = root / lists["train"][0]
    spoil(bad)
    out = tmp_path / "p"
    out.mkdir()
    (out / "kept").write_text("computed before")  # a previous result must survive the error
    with pytest.raises(BadAudio) as e:
        prepare_from_lists(str(root), lists, str(out), dataset="timit", bad=BadFiles("error"))
    line = str(e.value)
    assert str(bad) in line and says in line and "data.on_bad_file" in line and "\n" not in line
    assert (out / "kept").read_text() == "computed before"
    with pytest.warns(UserWarning, match=says):
        m = prepare_from_lists(str(root), lists, str(out), dataset="timit", bad=BadFiles("skip"))
    assert m["skipped_count"] == 1 and says in m["skipped"][0]["reason"]


def test_atomic_dir_removes_what_killed_runs_left(tmp_path):
    from pipeline.datasets.storage import atomic_dir
    (tmp_path / ".prepared.new.abc123").mkdir()        # a run killed while building
    (tmp_path / ".prepared.old.999").mkdir()           # ... or while swapping
    (tmp_path / ".prepared_other.new.x").mkdir()       # another output's: not ours
    with atomic_dir(tmp_path / "prepared") as tmp:
        (tmp_path / "prepared").exists() or open(os.path.join(tmp, "a"), "w").close()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".prepared_other.new.x", "prepared"]
    assert oct((tmp_path / "prepared").stat().st_mode & 0o777) == oct(0o755)
