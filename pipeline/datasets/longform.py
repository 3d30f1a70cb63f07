"""The embedded default corpus of the `blizzard` benchmark: one espeak-ng voice reading
long-form English, written as a few long WAV chapters and prepared with the Blizzard protocol.

The Blizzard stand-in (an audiobook read by one speaker). The text is Python's own
`pydoc_data.topics` (CPython 3.11.7's, text_sources.pydoc_topics) read in order: one paragraph per topic, its plain sentences in order,
so the reader reads connected prose, pausing between sentences and longer between
paragraphs. Recording treatment (gain, coloured background noise) is the multi-speaker
corpus's, once per chapter. Deterministic for a seed and interpreter (the text's sha256 is
recorded): sentences are synthesised one after another in a fixed order in a fresh process,
and every random choice comes from generators seeded by (seed, purpose).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import re
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .audio import SAMPLE_RATE, BadInput, list_audio
from .blizzard import ROW_SAMPLES, prepare_blizzard, split_rows
from .storage import atomic_dir, sha256_file, write_json
from .synthetic import _engine, _recording, corpus_info, run_fresh

PARAM_PREFIX = "benchmarks.blizzard.data"   # where params.yaml sets this corpus up
MIN_EVAL_ROWS = 3   # rows per stream in valid and in test: fewer make a meaningless score
# plain prose espeak reads well: no code, markup or symbols it would spell out
_PLAIN = re.compile(r"[A-Z][A-Za-z0-9 ,;:'\"()-]+[.?!]")


class TooLittleAudio(BadInput):
    """The corpus has too few 0.5 s rows for the streams asked."""


@dataclass
class LongformConfig:
    seed: int = 0
    minutes: float = 10.0          # total audio (all splits)
    chapter_minutes: float = 2.5   # chapters of at most this length: bounds generation memory
    voice: str = "en-us+f3"        # female like Blizzard 2013's reader; f3 is among the least buzzy
    rate: int = 160                # words per minute: an audiobook's pace
    pitch: int = 45
    pitch_range: int = 50
    gap: int = 0                   # extra pause between words (10 ms units)
    jitter: tuple = (6, 3)         # per-sentence +- rate and +- pitch: a reader's prosody varies
    pause_s: tuple = (0.25, 0.6)   # silence before a sentence
    paragraph_pause_s: tuple = (0.8, 1.4)  # ... and before the first one of a paragraph
    snr_db: tuple = (30.0, 45.0)   # as the multi-speaker corpus: seeded background noise
    level_db: tuple = (-32.0, -20.0)  # speech RMS re full scale (random gain per chapter)

    def __post_init__(self):
        for name in ("minutes", "chapter_minutes"):
            if not getattr(self, name) > 0:
                raise BadInput(f"{PARAM_PREFIX}.{name} must be positive, got {getattr(self, name)!r}")


def reading_text() -> list[list[str]]:
    """One paragraph per pydoc topic (sorted by name): its plain sentences in reading order.
    Headings, code, grammar and sentences with markup are left out."""
    from .text_sources import pydoc_topics
    topics = pydoc_topics()
    paragraphs = []
    for key in sorted(topics):
        text = topics[key].translate({0x201C: '"', 0x201D: '"', 0x2018: "'", 0x2019: "'"})
        keep = []
        for block in re.split(r"\n\s*\n", text):
            if block[:1].isspace() or re.search(r"\n[*=~^-]{3,}\s*$", block):
                continue  # indented code or grammar; a heading with its underline
            block = re.sub(r"\s+", " ", re.sub(r"^(\*|\d+\.) ", "", block))  # list bullet
            keep += [s for s in re.split(r"(?<=[.!?])\s+", block)
                     if _PLAIN.fullmatch(s) and 4 <= len(s.split()) <= 35]
        if keep:
            paragraphs.append(keep)
    return paragraphs


def check_voice(voice: str) -> None:
    """espeak accepts unknown variants silently, so check the variant file as well."""
    es = _engine()  # the shared binding: a second one would steal its synthesis callback
    lang, _, variant = voice.partition("+")
    variants = os.path.join(es.data.decode(), "voices", "!v")
    if es.lib.espeak_SetVoiceByName(lang.encode()) != 0 or (
            variant and not os.path.exists(os.path.join(variants, variant))):
        raise BadInput(f"{PARAM_PREFIX}.voice: espeak-ng has no voice {voice!r} "
                       f"(variants: {', '.join(sorted(os.listdir(variants))[:12])}, ...)")


def generate_longform(out, cfg: LongformConfig) -> dict:
    """Write the corpus to `out` (atomically); returns corpus.json's content plus the time taken.

    Synthesis runs in a fresh interpreter: espeak-ng keeps state across utterances that
    espeak_Terminate does not clear.
    """
    t0 = time.time()
    check_voice(cfg.voice)
    run_fresh("pipeline.datasets.longform", asdict(cfg), out)
    return dict(corpus_info(out), generate_seconds=round(time.time() - t0, 2))


def _generate_here(out, cfg: LongformConfig) -> dict:
    import soundfile as sf
    import soxr
    paragraphs = reading_text()
    script = [(s, j == 0) for p in paragraphs for j, s in enumerate(p)]  # (sentence, starts paragraph)
    n_chapters = math.ceil(cfg.minutes / cfg.chapter_minutes - 1e-9)
    chapter_s = cfg.minutes * 60 / n_chapters
    prosody = np.random.default_rng([cfg.seed, 0])   # a fixed number of draws per sentence
    es = _engine()
    es.reset()
    chapters, k = [], 0
    with atomic_dir(out) as tmp:
        os.makedirs(os.path.join(tmp, "wav"))
        for c in range(n_chapters):
            pieces, samples, first = [], 0, k
            while samples < chapter_s * es.rate:
                text, new_paragraph = script[k % len(script)]  # past the end: the book again
                d_rate = prosody.integers(-cfg.jitter[0], cfg.jitter[0] + 1)
                d_pitch = prosody.integers(-cfg.jitter[1], cfg.jitter[1] + 1)
                seed = int(prosody.integers(1, 2**31 - 1))
                pause = prosody.uniform(*(cfg.paragraph_pause_s if new_paragraph else cfg.pause_s))
                speech = es.say(text, cfg.voice, cfg.rate + d_rate, cfg.pitch + d_pitch,
                                cfg.pitch_range, cfg.gap, seed=seed)
                if len(speech) < es.rate // 10:
                    raise RuntimeError(f"espeak-ng said nothing for sentence {k}: {text!r}")
                pieces += [np.zeros(round(pause * es.rate), np.int16), speech]
                samples += len(pieces[-2]) + len(speech)
                k += 1
            # resample the chapter whole: no edge effects at sentence joins
            y = soxr.resample(np.concatenate(pieces).astype(np.float64) / 32768.0, es.rate,
                              SAMPLE_RATE, quality="HQ")
            pcm = _recording(y, np.random.default_rng([cfg.seed, 1, c]), cfg)
            name = f"wav/chapter_{c + 1:04d}.wav"
            sf.write(os.path.join(tmp, name), pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
            chapters.append({"file": name, "seconds": round(len(pcm) / SAMPLE_RATE, 3),
                             "sentences": [first, k]})
        desc = {"config": asdict(cfg), "voice": cfg.voice, "chapters": chapters,
                "seconds": round(sum(ch["seconds"] for ch in chapters), 3),
                "sentences_read": k, "text_sentences": len(script),
                "text_passes": math.ceil(k / len(script)),
                "text_source": "Python pydoc_data.topics, topics in name order (PSF licence)",
                "text_sha256": hashlib.sha256(json.dumps(paragraphs).encode()).hexdigest(),
                "engine": "espeak-ng via espeakng-loader 0.2.4 (GPL-3, loaded at run time)"}
        write_json(os.path.join(tmp, "corpus.json"), desc)  # deterministic: no timings inside
    return desc


def _eval_rows_per_stream(n_rows: int, streams: int) -> int:
    """Rows each stream gives the smaller of valid and test (0 when it cannot be split)."""
    try:
        sp = split_rows(n_rows, streams)
    except BadInput:
        return 0
    return min((sp[s][1] - sp[s][0]) // streams for s in ("valid", "test"))


def check_streams(n_rows: int, streams: int, param: str = f"{PARAM_PREFIX}.streams") -> None:
    """Refuse (one line naming `param`) when valid or test would get < MIN_EVAL_ROWS rows a stream."""
    if not isinstance(streams, int) or streams < 1:
        raise TooLittleAudio(f"{param} must be a positive integer, got {streams!r}")
    if _eval_rows_per_stream(n_rows, streams) >= MIN_EVAL_ROWS:
        return
    fit = max((s for s in range(1, streams) if _eval_rows_per_stream(n_rows, s) >= MIN_EVAL_ROWS),
              default=0)
    fix = (f"set {param} to at most {fit}" if fit else
           f"no stream count fits: raise {PARAM_PREFIX}.minutes")
    raise TooLittleAudio(f"{param}: {streams} streams need at least {MIN_EVAL_ROWS} rows a stream "
                         f"in valid and test, but the embedded corpus has only {n_rows} rows of "
                         f"0.5 s; {fix}")


def prepare_longform(raw, out, bad, *, streams: int, target_mode: str,
                     param: str = f"{PARAM_PREFIX}.streams") -> dict:
    """The Blizzard protocol on the generated chapters; returns the manifest (also in `out`)."""
    import soundfile as sf
    if target_mode not in ("correct", "faithful"):
        raise BadInput(f"{PARAM_PREFIX}.target_mode must be 'correct' or 'faithful', got {target_mode!r}")
    if not os.path.exists(os.path.join(raw, "corpus.json")):
        raise BadInput(f"{raw} has no generated corpus: run the download stage first")
    info = corpus_info(raw)
    wav = os.path.join(raw, "wav")
    chapters = list_audio(wav)
    if not chapters:
        raise BadInput(f"{wav} holds no chapters: rerun the download stage to regenerate it")
    # every chapter is 16 kHz already, so the headers give the exact row count before decoding
    check_streams(sum(sf.info(f).frames for f in chapters) // ROW_SAMPLES, streams, param)
    extra = {"voice": info["voice"], "corpus_sha256": sha256_file(os.path.join(raw, "corpus.json")),
             "generator": {k: info[k] for k in ("config", "text_source", "text_sha256", "engine",
                                                "chapters", "text_passes")},
             "licence": "generated; espeak-ng is GPL-3 (used as a tool)"}
    return prepare_blizzard(wav, out, bad, streams=streams, target_mode=target_mode,
                            dataset="embedded",
                            obtain="Run the download stage to generate the embedded corpus",
                            extra=extra)


if __name__ == "__main__":  # the fresh process started by generate_longform()
    conf = json.loads(sys.argv[1])
    _generate_here(sys.argv[2], LongformConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in conf.items()}))
