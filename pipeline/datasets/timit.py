"""TIMIT protocol (SRNN): fixed file lists, 200-sample frames, 40-frame training rows across
utterance boundaries, whole test utterances. Also used for any corpus given as file lists
(the embedded synthetic corpus, LibriSpeech, CMU ARCTIC)."""
from __future__ import annotations

import os

import numpy as np

from .audio import FRAME, SAMPLE_RATE, BadAudio, BadFiles, BadInput, frame, load_pcm
from .storage import Int16Stream, atomic_dir, copy_frames, moments, save_npy, sha256_file, write_json

SPLITS = ("train", "valid", "test")
ROW_FRAMES = 40
OBTAIN = ("TIMIT (LDC93S1) is licensed: obtain it from https://catalog.ldc.upenn.edu/LDC93S1 "
          "and set benchmarks.timit.data.path to the folder holding TRAIN/ and TEST/")
# SRNN's original split as published by the STCN authors (docs/data.md).
_RAW = "https://raw.githubusercontent.com/emreaksan/stcn/master/experiments_speech/data_scripts_timit/"
PUBLISHED_LISTS = {
    "train": (_RAW + "timit_train_files.txt", "a42f15bcd52561776611b84f99d3bf9225671908a4ce7b2faa1c643d06d8b1c6", 4389),
    "valid": (_RAW + "timit_valid_files.txt", "3f74998c42a8f16dbf412cec6d3905adb7bb097777f461123d06cdc586437a57", 231),
    "test": (_RAW + "timit_test_files.txt", "1e28eda84dd27e5740ee543fc3dc53b298580d75cbf1f4afe1258604e66b8b61", 1680),
}


def list_name(split: str) -> str:
    return f"timit_{split}_files.txt"


def find_corpus_root(path, param="benchmarks.timit.data.path", obtain=OBTAIN) -> str:
    """The folder holding TRAIN/ and TEST/ (either case), at `path` or up to two levels down."""
    if not path or not os.path.isdir(path):
        raise BadInput(f"TIMIT folder {path!r} does not exist. {obtain}")
    level = [path]
    for _ in range(3):
        for d in level:
            if {"TRAIN", "TEST"} <= {s.upper() for s in os.listdir(d)}:
                return d
        level = sorted(os.path.join(d, s) for d in level for s in os.listdir(d)
                       if os.path.isdir(os.path.join(d, s)))
    raise BadInput(f"{path}: wrong layout, no TRAIN/ and TEST/ folders found within two levels "
                   f"(set {param} to the folder that holds them). {obtain}")


def index_files(root) -> dict[str, str]:
    """Upper-cased relative path -> real path, so lists match upper- or lower-case trees."""
    idx = {}
    for d, _, files in os.walk(root):
        for f in files:
            full = os.path.join(d, f)
            idx[os.path.relpath(full, root).replace(os.sep, "/").upper()] = full
    return idx


def read_list(path) -> list[str]:
    with open(path) as f:
        return [ln.strip() for ln in f if ln.strip()]


def resolve(entry: str, idx: dict) -> str | None:
    key = entry.replace("\\", "/").upper()
    # some redistributions add a RIFF copy as X.WAV.wav or convert X.WAV in place
    return idx.get(key) or idx.get(key + ".WAV")


def speaker_of(entry: str) -> str:
    parts = entry.replace("\\", "/").split("/")
    return parts[-2] if len(parts) >= 2 else ""


def prepare_from_lists(root, lists: dict, out, *, dataset: str, bad: BadFiles,
                       native_sr: int | None = SAMPLE_RATE, sources: dict | None = None,
                       extra: dict | None = None, row_frames: int = ROW_FRAMES,
                       frame_size: int = FRAME, speaker=speaker_of) -> dict:
    """Prepare train/valid as frame streams and test as whole utterances; returns the manifest.

    lists: split -> relative paths (as in the published lists); files are found
    case-insensitively under root.
    """
    idx = index_files(root)
    if not idx:
        raise BadInput(f"{root}: empty folder, no files found")
    splits, counts = {}, {}
    with atomic_dir(out) as tmp:
        for split in SPLITS:
            entries = lists[split]
            stream = Int16Stream(tmp, split)
            offsets, speakers, used = [0], set(), 0
            for entry in entries:
                path = resolve(entry, idx)
                if path is None:
                    bad.handle(os.path.join(str(root), entry), f"listed in the {split} list but not found")
                    continue
                try:
                    pcm = load_pcm(path, SAMPLE_RATE, native_sr=native_sr, min_samples=2 * frame_size)
                except BadAudio as e:
                    bad.handle(path, str(e).split(": ", 1)[-1])
                    continue
                if split == "test":  # whole utterances, each framed on its own
                    pcm = frame(pcm, frame_size).reshape(-1)
                    offsets.append(offsets[-1] + len(pcm) // frame_size)
                stream.append(pcm)
                speakers.add(speaker(entry))
                used += 1
            raw = stream.close()
            if used == 0:
                stream.discard()
                raise BadInput(f"{root}: no usable audio for the {split} split "
                               f"({len(entries)} files listed)")
            n_frames = copy_frames(raw, os.path.join(tmp, f"{split}.npy"), frame_size)
            del raw
            stream.discard()
            info = {"file": f"{split}.npy", "frames": n_frames, "utterances": used,
                    "listed": len(entries), "speakers": len(speakers),
                    "seconds": n_frames * frame_size / SAMPLE_RATE}
            if split == "test":
                save_npy(os.path.join(tmp, "test_offsets.npy"), np.asarray(offsets, np.int64))
                info.update(layout="utterances", offsets="test_offsets.npy", sequences=used,
                            scored_frames=n_frames - used)
            else:
                info.update(layout="frame_stream", row_frames=row_frames,
                            sequences=max(0, (n_frames - 1) // row_frames))
                if info["sequences"] == 0:
                    raise BadInput(f"{root}: the {split} split has {n_frames} frames, too few for "
                                   f"one {row_frames}-frame row")
            info["speaker_ids"] = sorted(speakers)
            splits[split] = info
            counts[split] = info["sequences"]
        train = np.load(os.path.join(tmp, "train.npy"), mmap_mode="r")
        mean, std, n = moments(train)
        del train
        manifest = {
            "dataset": dataset, "kind": "audio", "x_dim": frame_size, "sample_rate": SAMPLE_RATE,
            "frame_size": frame_size, "mean": mean, "std": std, "stats_samples": n,
            "stats_units": "int16 PCM", "split_sizes": counts, "splits": splits,
            "protocol": {"name": "timit", "row_frames": row_frames, "target_mode": None,
                         "first_step": "train/valid: true previous frame (all 40 frames scored); "
                                       "test: whole utterance, first frame only conditioned on",
                         "statistics": "global scalar mean/std over all training samples"},
            "sources": sources or {}, "skipped": list(bad.skipped),
            "skipped_count": len(bad.skipped),
        }
        manifest.update(extra or {})
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest


def verify_lists(lists_dir, expected=PUBLISHED_LISTS) -> dict:
    """Check the three list files against their sha256 and line counts; return split -> sha256."""
    hashes = {}
    for split, (url, sha, n) in expected.items():
        path = os.path.join(lists_dir, list_name(split))
        if not os.path.exists(path):
            raise BadInput(f"{path} missing: run the download stage with benchmarks.timit.source: timit_ldc "
                           f"(it fetches {url})")
        got = sha256_file(path)
        if got != sha:
            raise BadInput(f"{path}: sha256 {got} does not match the published {sha}")
        if len(read_list(path)) != n:
            raise BadInput(f"{path}: expected {n} lines")
        hashes[list_name(split)] = got
    return hashes


def prepare_timit(timit_path, lists_dir, out, bad: BadFiles, verify: bool = True,
                  param: str = "benchmarks.timit.data.path") -> dict:
    """The SRNN protocol on a local LDC TIMIT tree with the published 4,389/231/1,680 lists."""
    root = find_corpus_root(timit_path, param=param)
    sources = verify_lists(lists_dir) if verify else {}
    lists = {s: read_list(os.path.join(lists_dir, list_name(s))) for s in SPLITS}
    return prepare_from_lists(root, lists, out, dataset="timit", bad=bad, sources=sources,
                              extra={"licence": "LDC93S1 (LDC user agreement)",
                                     "split_source": "SRNN original split, STCN file lists"})
