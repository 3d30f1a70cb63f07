"""Audio loading, resampling, int16 conversion, framing and the bad-file policy (librosa)."""
from __future__ import annotations

import os
import struct
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import UserError

SAMPLE_RATE = 16000
FRAME = 200
LONG_FILE_S = 1200  # longer files are decoded and resampled in blocks (bounded memory)


class BadAudio(UserError):
    """A single input file that cannot be used; the message names the file and why."""


class BadInput(UserError):
    """A problem with the corpus as a whole (missing folder, wrong layout, nothing usable)."""


@dataclass
class BadFiles:
    """The bad-file policy: 'error' stops the stage, 'skip' counts the file and goes on."""
    policy: str = "error"
    param: str = "data.on_bad_file"
    skipped: list = field(default_factory=list)

    def __post_init__(self):
        if self.policy not in ("error", "skip"):
            raise ValueError(f"{self.param} must be 'error' or 'skip', got {self.policy!r}")

    def handle(self, path, reason: str) -> None:
        if self.policy == "error":
            raise BadAudio(f"{path}: {reason} (set {self.param}: skip to leave such files out)")
        warnings.warn(f"skipping {path}: {reason}")
        self.skipped.append({"file": str(path), "reason": reason})


def to_int16(x: np.ndarray) -> np.ndarray:
    """Float audio in [-1, 1] -> int16; exact inverse of librosa's int16 / 32768 decoding."""
    return np.clip(np.round(np.asarray(x, np.float64) * 32768.0), -32768, 32767).astype(np.int16)


def _check(path, pcm: np.ndarray, min_samples: int) -> np.ndarray:
    if len(pcm) < min_samples:
        raise BadAudio(f"{path}: too short ({len(pcm)} samples at 16 kHz, need {min_samples})")
    if not np.any(pcm):
        raise BadAudio(f"{path}: silent (every sample is zero)")
    return pcm


def declared_frames(path) -> int | None:
    """Frames a RIFF/WAVE or NIST SPHERE header promises (None for other formats).

    libsndfile quietly reads what is left of a file cut short, so a truncated copy would pass
    as a shorter utterance; comparing with the header catches it.
    """
    with open(path, "rb") as f:
        head = f.read(1024)
        size = os.fstat(f.fileno()).st_size
        if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
            pos, channels, width = 12, 1, 2
            while pos + 8 <= size:
                f.seek(pos)
                cid, n = struct.unpack("<4sI", f.read(8))
                if cid == b"fmt ":
                    _, channels, _, _, _, bits = struct.unpack("<HHIIHH", f.read(16))
                    width = max(1, bits // 8)
                elif cid == b"data":
                    return n // (channels * width)
                pos += 8 + n + (n & 1)
            return None
        if head.startswith(b"NIST_1A"):
            fields = dict(line.split(b" ", 2)[::2] for line in head.split(b"\n")[2:]
                          if line.count(b" ") >= 2)
            if b"sample_count" in fields:
                return int(fields[b"sample_count"])
    return None


def _check_header(path, info, channels: int | None) -> None:
    if channels is not None and info.channels != channels:
        raise BadAudio(f"{path}: {info.channels} channels (the protocol takes mono audio; "
                       f"convert the file)")
    promised = declared_frames(path)
    if promised is not None and info.frames < promised:
        raise BadAudio(f"{path}: truncated (its header promises {promised} frames, "
                       f"the file holds {info.frames})")


def load_pcm(path, sr: int = SAMPLE_RATE, native_sr: int | None = None,
             min_samples: int = 2 * FRAME, channels: int | None = 1) -> np.ndarray:
    """Whole file -> mono int16 at `sr`. native_sr: the rate the corpus promises (else error);
    channels: the channel count it promises (None: any, mixed down to mono)."""
    import librosa
    import soundfile as sf
    path = str(path)
    try:
        info = sound_info(path)
        if info is not None:
            _check_header(path, info, channels)
        if native_sr is not None:
            got = (info if info is not None else sf.info(path)).samplerate  # raises: unreadable
            if got != native_sr:
                raise BadAudio(f"{path}: unexpected sample rate {got} Hz (expected {native_sr} Hz)")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # librosa's audioread fallback warning
            x, _ = librosa.load(path, sr=sr, mono=True, res_type="soxr_hq")
    except BadAudio:
        raise
    except Exception as e:  # soundfile/audioread raise many types for corrupt files
        raise BadAudio(f"{path}: unreadable audio ({type(e).__name__}: {e})") from None
    return _check(path, to_int16(x), min_samples)


def iter_pcm(path, sr: int = SAMPLE_RATE, block_s: int = 600):
    """Yield mono int16 blocks at `sr` (any channel count, mixed down: audiobook chapters
    are often stereo); files longer than LONG_FILE_S are streamed.

    Streaming uses soundfile blocks + soxr's streaming resampler (librosa's own resampling
    engine), so a many-hour chapter never sits in RAM and block edges leave no artefacts.
    """
    import soundfile as sf
    path = str(path)
    info = sound_info(path)
    if info is None or info.duration <= LONG_FILE_S:
        yield load_pcm(path, sr, min_samples=1, channels=None)
        return
    import soxr
    try:
        _check_header(path, info, None)
        rs = soxr.ResampleStream(info.samplerate, sr, 1, dtype="float32", quality="HQ")
        total = 0
        with sf.SoundFile(path) as f:
            for block in f.blocks(blocksize=block_s * info.samplerate, dtype="float32", always_2d=True):
                out = rs.resample_chunk(block.mean(axis=1), last=False)
                total += len(out)
                yield to_int16(out)
        tail = rs.resample_chunk(np.zeros(0, np.float32), last=True)
        yield to_int16(tail)
        if total + len(tail) == 0:
            raise BadAudio(f"{path}: no samples decoded")
    except BadAudio:
        raise
    except Exception as e:
        raise BadAudio(f"{path}: unreadable audio ({type(e).__name__}: {e})") from None


def sound_info(path):
    """soundfile's header of the file, or None where soundfile cannot read it (librosa then
    falls back to audioread)."""
    import soundfile as sf
    try:
        return sf.info(str(path))
    except Exception:  # soundfile raises many types for formats it does not know
        return None


def channel_count(path) -> int | None:
    """Channels of a file soundfile can read (None otherwise)."""
    info = sound_info(path)
    return None if info is None else info.channels


def frame(pcm: np.ndarray, frame_size: int = FRAME) -> np.ndarray:
    """(n,) -> (n // frame_size, frame_size); the tail shorter than a frame is dropped."""
    n = len(pcm) // frame_size
    return np.asarray(pcm[:n * frame_size]).reshape(n, frame_size)


def list_audio(root, exts=(".wav", ".flac", ".mp3", ".sph", ".ogg")) -> list[str]:
    """Audio files under root (any case of extension), sorted by relative path."""
    found = []
    for d, _, files in os.walk(root):
        found += [os.path.join(d, f) for f in files if os.path.splitext(f)[1].lower() in exts]
    return sorted(found, key=lambda p: os.path.relpath(p, root))
