"""Blizzard protocol (VRNN): all audio concatenated, cut into 0.5 s rows written as parallel
streams (consecutive rows = the same time window of different streams), int16 on disk,
row-index splits, global training statistics, `faithful` or `correct` targets when batched.

Also used for any single-speaker corpus (LJSpeech). Streams audio through a temp file, so
~300 hours never sit in RAM: memory is bounded by one decode block and one copy chunk.
"""
from __future__ import annotations

import os

import numpy as np

from .audio import FRAME, SAMPLE_RATE, BadAudio, BadFiles, BadInput, channel_count, iter_pcm, list_audio
from .storage import Int16Stream, atomic_dir, moments, sha256_file, write_json

ROW_SAMPLES = 8000      # 0.5 s = 40 frames of 200 samples
STREAMS = 128
PUBLISHED = (2_040_064, 2_152_704, 2_266_880)   # official row boundaries train|valid|test end
OBTAIN = ("Blizzard 2013 (Lessac Technologies audiobooks) needs a licence: apply at "
          "https://www.cstr.ed.ac.uk/projects/blizzard/2013/lessac_blizzard2013/ and set "
          "benchmarks.blizzard.data.path to the folder holding the mp3 chapters")


def split_rows(n_rows: int, streams: int) -> dict:
    """Row ranges: the official ones when the corpus is full size, else 90/5/5 by windows."""
    if streams == STREAMS and n_rows >= PUBLISHED[2]:
        a, b, c = PUBLISHED
        return {"train": (0, a), "valid": (a, b), "test": (b, c), "rule": "published row indices"}
    w = n_rows // streams
    valid_w = max(1, round(w * (PUBLISHED[1] - PUBLISHED[0]) / PUBLISHED[2]))
    test_w = max(1, round(w * (PUBLISHED[2] - PUBLISHED[1]) / PUBLISHED[2]))
    train_w = w - valid_w - test_w
    if train_w < 1:
        raise BadInput(f"too little audio: {n_rows} rows of 0.5 s make {w} windows of {streams} "
                       f"streams, need at least 3 (one per split)")
    a, b = train_w * streams, (train_w + valid_w) * streams
    return {"train": (0, a), "valid": (a, b), "test": (b, w * streams),
            "rule": "published proportions (90/5/5), whole windows of all streams"}


def to_streams(raw: np.ndarray, out_path, streams: int) -> int:
    """Lay raw audio out as rows: row w*streams + s = window w of stream s; returns rows."""
    windows = len(raw) // (ROW_SAMPLES * streams)
    rows = windows * streams
    tmp = f"{out_path}.tmp{os.getpid()}.npy"
    dst = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int16, shape=(rows, ROW_SAMPLES))
    span = windows * ROW_SAMPLES                       # samples per stream
    chunk = max(1, (1 << 25) // (streams * ROW_SAMPLES))  # windows per copy, ~64 MB
    for w0 in range(0, windows, chunk):
        w1 = min(w0 + chunk, windows)
        block = np.stack([np.asarray(raw[s * span + w0 * ROW_SAMPLES: s * span + w1 * ROW_SAMPLES])
                          .reshape(w1 - w0, ROW_SAMPLES) for s in range(streams)], axis=1)
        dst[w0 * streams:w1 * streams] = block.reshape(-1, ROW_SAMPLES)
    dst.flush()
    del dst
    os.replace(tmp, out_path)
    return rows


def prepare_blizzard(path, out, bad: BadFiles, *, streams: int = STREAMS,
                     target_mode: str = "correct", dataset: str = "blizzard",
                     param: str = "benchmarks.blizzard.data.path", obtain: str = OBTAIN,
                     extra: dict | None = None, hash_sources: bool = True) -> dict:
    """Prepare every audio file under `path` (sorted by relative path) with the VRNN layout."""
    if target_mode not in ("correct", "faithful"):
        raise ValueError(f"data.target_mode must be 'correct' or 'faithful', got {target_mode!r}")
    if not path or not os.path.isdir(path):
        raise BadInput(f"{dataset} folder {path!r} does not exist. {obtain}")
    files = list_audio(path)
    if not files:
        raise BadInput(f"{path}: empty folder, no audio files (.mp3/.wav/.flac) found; set {param}")
    sources, used, downmixed = {}, 0, 0
    with atomic_dir(out) as tmp:
        stream = Int16Stream(tmp, "all")
        for f in files:
            start = stream.samples
            try:
                for block in iter_pcm(f, SAMPLE_RATE):
                    stream.append(block)
            except BadAudio as e:
                stream.rollback(start)  # drop what a half-decoded file already wrote
                bad.handle(f, str(e).split(": ", 1)[-1])
                continue
            used += 1
            downmixed += (channel_count(f) or 1) > 1
            rel = os.path.relpath(f, path)
            sources[rel] = sha256_file(f) if hash_sources else os.path.getsize(f)
        raw = stream.close()
        if used == 0:
            raise BadInput(f"{path}: no usable audio ({len(files)} files, all bad)")
        total_s = len(raw) / SAMPLE_RATE
        splits = split_rows(len(raw) // ROW_SAMPLES, streams)
        n_rows = to_streams(raw, os.path.join(tmp, "rows.npy"), streams)
        del raw
        stream.discard()
        rows = np.load(os.path.join(tmp, "rows.npy"), mmap_mode="r")
        mean, std, n = moments(rows[:splits["train"][1]])
        del rows
        layout = {}
        for s in ("train", "valid", "test"):
            a, b = splits[s]
            layout[s] = {"layout": "row_blocks", "file": "rows.npy", "start": a, "stop": b,
                         "rows": b - a, "seconds": (b - a) * ROW_SAMPLES / SAMPLE_RATE,
                         "sequences": (b - a) - (target_mode == "faithful")}
        manifest = {
            "dataset": dataset, "kind": "audio", "x_dim": FRAME, "sample_rate": SAMPLE_RATE,
            "frame_size": FRAME, "mean": mean, "std": std, "stats_samples": n,
            "stats_units": "int16 PCM", "splits": layout,
            "split_sizes": {s: layout[s]["sequences"] for s in layout},
            "protocol": {"name": "blizzard", "row_samples": ROW_SAMPLES, "row_frames": ROW_SAMPLES // FRAME,
                         "streams": streams, "rows_total": n_rows, "split_rule": splits["rule"],
                         "target_mode": target_mode,
                         "first_step": "correct: input [0, f1..f39], target f1..f40, all 40 scored; "
                                       "faithful: input row r, target row r+1 (another stream)",
                         "statistics": "global scalar mean/std over the training rows"},
            "audio_seconds_decoded": total_s, "files": len(files), "files_used": used,
            "files_downmixed_to_mono": downmixed,
            "sources": {"sha256" if hash_sources else "bytes": sources},
            "skipped": list(bad.skipped), "skipped_count": len(bad.skipped),
        }
        manifest.update(extra or {})
        write_json(os.path.join(tmp, "manifest.json"), manifest)
    return manifest
