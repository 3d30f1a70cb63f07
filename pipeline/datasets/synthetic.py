"""The embedded default speech corpus: multi-speaker English synthesised offline by espeak-ng.

The TIMIT stand-in. Written as a TIMIT-like tree (wav/<SPLIT>/<speaker>/<utt>.wav, 16 kHz
16-bit) plus one file list per split, so `prepare` runs the very same TIMIT protocol on it.
Deterministic for a seed: every random choice comes from one seeded generator, utterances
are synthesised one after another in a fixed order, and espeak is re-initialised per corpus
(it keeps hidden state between utterances).
"""
from __future__ import annotations

import ctypes
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np

from .audio import SAMPLE_RATE, to_int16
from .storage import atomic_dir, write_json

ACCENTS = ["en-us", "en", "en-gb-scotland", "en-gb-x-rp", "en-029", "en-us-nyc",
           "en-gb-x-gbclan", "en-gb-x-gbcwmd"]
VARIANTS = ["m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5",
            "adam", "andy", "boris", "david", "ed", "edward", "linda", "steph", "shelby",
            "paul", "robert", "anika", "annie", "aunty", "belinda", "john", "michael", "max"]
# espeak_PARAMETER values (speak_lib.h)
RATE, PITCH, RANGE, WORDGAP = 1, 3, 4, 7


@dataclass
class SyntheticConfig:
    seed: int = 0
    train_minutes: float = 20.0
    valid_fraction: float = 0.10   # valid audio as a fraction of train audio
    test_fraction: float = 0.25    # TIMIT's test set is ~36 % of train; kept smaller for speed
    speakers: tuple = (20, 4, 6)   # train / valid / test, disjoint
    snr_db: tuple = (30.0, 45.0)   # seeded background noise, SNR range
    level_db: tuple = (-32.0, -20.0)  # speech RMS re full scale (random gain)


def sentences() -> list[str]:
    """Plain English sentences from the Python docs (text_sources.pydoc_topics)."""
    from .text_sources import pydoc_topics
    topics = pydoc_topics()
    text = re.sub(r"\s+", " ", " ".join(topics[k] for k in sorted(topics)))
    keep = [s for s in re.split(r"(?<=[.!?])\s+", text)
            if re.fullmatch(r"[A-Z][A-Za-z ,;'-]+[.?!]", s) and 5 <= len(s.split()) <= 20]
    return sorted(set(keep))


class _Espeak:
    """Minimal ctypes binding: synchronous synthesis into a Python buffer."""

    def __init__(self):
        import espeakng_loader
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                     ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.lib, self.data = lib, espeakng_loader.get_data_path().encode()
        self._chunks = []
        cbtype = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
        self._cb = cbtype(self._collect)  # keep a reference: C holds the pointer
        self.reset()

    def _collect(self, wav, n, events):
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        return 0

    def reset(self):
        self.lib.espeak_Terminate()
        self.rate = self.lib.espeak_Initialize(2, 0, self.data, 0)  # 2 = AUDIO_OUTPUT_SYNCHRONOUS
        if self.rate <= 0:
            raise RuntimeError("espeak-ng failed to initialise (espeakng-loader data missing?)")
        self.lib.espeak_SetSynthCallback(self._cb)

    def say(self, text: str, voice: str, rate: int, pitch: int, rng_: int, gap: int,
            seed: int = 0) -> np.ndarray:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng has no voice {voice!r}")
        for p, v in ((RATE, rate), (PITCH, pitch), (RANGE, rng_), (WORDGAP, gap)):
            self.lib.espeak_SetParameter(p, int(v), 0)
        self._chunks = []
        # breathy variants draw noise from espeak's own generator, seeded from the clock
        # unless set: seed it per utterance, right before synthesis
        self.lib.espeak_ng_SetRandSeed(seed)
        b = text.encode()
        if self.lib.espeak_Synth(b, len(b) + 1, 0, 1, 0, 1, None, None) != 0:  # POS_CHARACTER, UTF8
            raise RuntimeError(f"espeak-ng failed on {text!r}")
        self.lib.espeak_Synchronize()
        return np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)


_ENGINE = None


def _engine() -> _Espeak:
    global _ENGINE
    if _ENGINE is None:
        _ENGINE = _Espeak()
    return _ENGINE


def plan_speakers(cfg: SyntheticConfig, rng) -> dict:
    """Distinct (accent, voice variant) pairs plus pitch/range/rate, split disjointly."""
    combos = [(a, v) for a in ACCENTS for v in VARIANTS]
    total = sum(cfg.speakers)
    if total > len(combos):
        raise ValueError(f"at most {len(combos)} distinct speakers, asked for {total}")
    pick = rng.choice(len(combos), size=total, replace=False)
    out, k = {}, 0
    for split, n in zip(("train", "valid", "test"), cfg.speakers):
        out[split] = []
        for _ in range(n):
            accent, variant = combos[pick[k]]
            out[split].append({"id": f"S{k:03d}", "voice": f"{accent}+{variant}",
                               "pitch": int(rng.integers(25, 76)), "range": int(rng.integers(30, 81)),
                               "rate": int(rng.integers(140, 196)), "gap": int(rng.integers(0, 3))})
            k += 1
    return out


def _recording(speech16k: np.ndarray, rng, cfg: SyntheticConfig) -> np.ndarray:
    """Random gain plus coloured background noise, so it looks like a recording."""
    from scipy.signal import lfilter
    rms = np.sqrt(np.mean(speech16k ** 2)) + 1e-9
    level = 10 ** (rng.uniform(*cfg.level_db) / 20)
    level = min(level, 0.9 * rms / (np.abs(speech16k).max() + 1e-9))  # no clipping
    x = speech16k * (level / rms)
    snr = rng.uniform(*cfg.snr_db)
    noise = lfilter([1.0], [1.0, -rng.uniform(0.0, 0.9)], rng.standard_normal(len(x)))
    noise *= level / 10 ** (snr / 20) / (np.sqrt(np.mean(noise ** 2)) + 1e-12)
    return to_int16(x + noise)


def generate(out, cfg: SyntheticConfig) -> dict:
    """Write the corpus to `out` (atomically); returns its description (also corpus.json).

    Runs in a fresh interpreter: espeak-ng keeps state across utterances that even
    espeak_Terminate does not clear, so only a fresh process with a fixed order of
    utterances gives byte-identical output.
    """
    t0 = time.time()
    run_fresh("pipeline.datasets.synthetic", asdict(cfg), out)
    return dict(corpus_info(out), generate_seconds=round(time.time() - t0, 2))


def run_fresh(module: str, cfg: dict, out) -> None:
    """`python -m module <cfg as JSON> <out>` in a fresh interpreter (espeak's hidden state)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]))
    subprocess.run([sys.executable, "-m", module, json.dumps(cfg), os.path.abspath(out)],
                   check=True, env=env, cwd=root)


def _generate_here(out, cfg: SyntheticConfig) -> dict:
    import soxr  # librosa's soxr_hq resampler, without librosa's import time
    import soundfile as sf
    rng = np.random.default_rng(cfg.seed)
    texts = sentences()
    spk = plan_speakers(cfg, rng)
    budget = {"train": cfg.train_minutes * 60, "valid": cfg.train_minutes * 60 * cfg.valid_fraction,
              "test": cfg.train_minutes * 60 * cfg.test_fraction}
    es = _engine()
    es.reset()
    lists, stats = {}, {}
    with atomic_dir(out) as tmp:
        for split in ("train", "valid", "test"):
            lists[split], seconds, k = [], 0.0, 0
            # round-robin over the split's speakers until its audio budget is spent;
            # at least one utterance per speaker so every split has all its speakers
            while seconds < budget[split] or k < len(spk[split]):
                s = spk[split][k % len(spk[split])]
                text = texts[int(rng.integers(len(texts)))]
                jitter = rng.integers(-8, 9, size=2)
                raw = es.say(text, s["voice"], s["rate"] + jitter[0], s["pitch"] + jitter[1] // 2,
                             s["range"], s["gap"], seed=int(rng.integers(1, 2**31 - 1)))
                if len(raw) < es.rate // 4:
                    k += 1
                    continue  # espeak said (almost) nothing: never happens for these sentences
                y = soxr.resample(raw.astype(np.float64) / 32768.0, es.rate, SAMPLE_RATE, quality="HQ")
                pcm = _recording(y, rng, cfg)
                rel = f"{split.upper()}/{s['id']}/U{k:05d}.WAV"
                path = os.path.join(tmp, "wav", rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                sf.write(path, pcm, SAMPLE_RATE, subtype="PCM_16", format="WAV")
                lists[split].append(rel)
                seconds += len(pcm) / SAMPLE_RATE
                k += 1
            with open(os.path.join(tmp, f"{split}_files.txt"), "w") as f:
                f.write("\n".join(lists[split]) + "\n")
            stats[split] = {"utterances": len(lists[split]), "seconds": round(seconds, 3),
                            "speakers": len(spk[split])}
        desc = {"config": asdict(cfg), "speakers": spk, "splits": stats,
                "text_source": "Python pydoc_data.topics (PSF licence)",
                "text_sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest(),
                "engine": "espeak-ng via espeakng-loader 0.2.4 (GPL-3, loaded at run time)"}
        write_json(os.path.join(tmp, "corpus.json"), desc)  # deterministic: no timings inside
    return desc


def read_lists(corpus_dir) -> dict:
    out = {}
    for split in ("train", "valid", "test"):
        with open(os.path.join(corpus_dir, f"{split}_files.txt")) as f:
            out[split] = [ln.strip() for ln in f if ln.strip()]
    return out


def corpus_info(corpus_dir) -> dict:
    with open(os.path.join(corpus_dir, "corpus.json")) as f:
        return json.load(f)


if __name__ == "__main__":  # the fresh process started by generate()
    conf = json.loads(sys.argv[1])
    _generate_here(sys.argv[2], SyntheticConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                  for k, v in conf.items()}))
