"""Free real speech by download: LJSpeech (single speaker, the Blizzard analogue, Blizzard
protocol) and LibriSpeech dev-clean (40 speakers, the TIMIT analogue, TIMIT protocol with
speaker-disjoint splits)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from .audio import BadFiles, BadInput, list_audio
from .blizzard import prepare_blizzard
from .download import archive_complete, extract, fetch
from .timit import prepare_from_lists


@dataclass(frozen=True)
class Source:
    url: str
    archive: str
    folder: str          # the extracted folder holding the audio
    protocol: str        # "blizzard" | "timit"
    licence: str
    size: str
    md5: str | None = None  # the publisher's checksum where one exists
    bytes: int | None = None  # the archive's documented size: a download stops a margin past it


SOURCES = {
    "ljspeech": Source(
        "https://data.keithito.com/data/speech/LJSpeech-1.1.tar.bz2", "LJSpeech-1.1.tar.bz2",
        "LJSpeech-1.1/wavs", "blizzard", "public domain",
        "2.6 GB download; 13,100 clips, about 24 h, one female US-English reader, 22.05 kHz",
        bytes=2_600_000_000),
    "librispeech_dev_clean": Source(
        "https://www.openslr.org/resources/12/dev-clean.tar.gz", "dev-clean.tar.gz",
        "LibriSpeech/dev-clean", "timit", "CC BY 4.0",
        "337,926,286 bytes; 2,703 utterances, 5.4 h, 40 speakers, 16 kHz FLAC",
        md5="42e2234ba48799c1f50f24a7926300a1", bytes=337_926_286),
}


def download(name: str, raw_dir, progress=True, lock_path=None, pins=None, param=None) -> dict:
    """Fetch and verify the archive (publisher md5, else a pin, else the sha256 learnt into
    lock_path once the archive lists to its end), then extract it. param: the parameter
    that chose this source, named if the host cannot be reached."""
    src = SOURCES[name]
    archive = os.path.join(raw_dir, src.archive)
    hashes = fetch(src.url, archive, md5=src.md5, lock_name=src.archive, progress=progress,
                   lock_path=lock_path, pins=pins, complete=archive_complete, param=param,
                   size=src.bytes)
    target = os.path.join(raw_dir, name)
    if not os.path.isdir(os.path.join(target, src.folder)):
        extract(archive, target)
    return {src.archive: hashes["sha256"]}


def speaker_split(speakers: list, seed: int, n_valid: int, n_test: int) -> dict:
    """Speaker-disjoint split of sorted speaker ids with one seeded shuffle."""
    spk = sorted(speakers)
    if len(spk) < n_valid + n_test + 1:
        raise BadInput(f"{len(spk)} speakers cannot fill valid={n_valid}, test={n_test} and train")
    order = [spk[i] for i in np.random.default_rng(seed).permutation(len(spk))]
    return {"valid": set(order[:n_valid]), "test": set(order[n_valid:n_valid + n_test]),
            "train": set(order[n_valid + n_test:])}


def prepare(name: str, raw_dir, out, bad: BadFiles, *, seed: int = 0, target_mode="correct",
            streams: int = 128, sources: dict | None = None) -> dict:
    src = SOURCES[name]
    root = os.path.join(raw_dir, name, src.folder)
    if not os.path.isdir(root):
        raise BadInput(f"{root} missing: run the download stage with source: {name} "
                       f"({src.url}, {src.size})")
    extra = {"licence": src.licence, "size": src.size, "url": src.url}
    if src.protocol == "blizzard":
        return prepare_blizzard(root, out, bad, streams=streams, target_mode=target_mode,
                                dataset=name, extra=extra, hash_sources=False)
    # LibriSpeech layout: <speaker>/<chapter>/<utt>.flac
    files = [os.path.relpath(f, root).replace(os.sep, "/") for f in list_audio(root)]
    groups = speaker_split({f.split("/")[0] for f in files}, seed, n_valid=2, n_test=6)
    lists = {s: [f for f in files if f.split("/")[0] in groups[s]] for s in groups}
    extra["speaker_split"] = {s: sorted(v) for s, v in groups.items()}
    return prepare_from_lists(root, lists, out, dataset=name, bad=bad, sources=sources or {},
                              extra=extra, speaker=lambda f: f.split("/")[0])
