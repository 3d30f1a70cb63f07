"""Figures and audio for the report pages, as self-contained HTML fragments.

Every function returns an HTML string: figures as <img> with a base64 PNG, audio as an
<audio> element with a base64 16-bit WAV, so a page needs no files beside it and no
network. Byte-stable: matplotlib's object API (no pyplot state, no inline backend),
Agg PNGs written without the "Software" metadata, WAVs written by the `wave` module, no
timestamps anywhere; the same inputs give the same bytes.

Inputs: models/<row>/history.json ({"history": [records]}, kind "train" | "valid"),
eval/<row>/latent.json ({"kl_per_dim": [...]}), eval/<row>/samples.npz (generated
(n, samples) float32 waveform in the original amplitude units, sample_rate) and, for the
real test audio, the prepared data read through pipeline.datasets.
"""
from __future__ import annotations

import base64
import html
import io
import json
import os
import wave

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..rows import ROWS  # noqa: E402

INT16_FULL_SCALE = 32768.0


def row_color(row: str) -> str:
    """A fixed colour per row (its position in rows.ROWS), the same on every figure."""
    names = list(ROWS)
    i = names.index(row) if row in names else len(names)
    return matplotlib.colormaps["tab20"](i % 20)


def label(row: str) -> str:
    return ROWS[row].paper_name.split(" (")[0] if row in ROWS else row


def fig_to_html(fig: Figure, dpi: int = 80, alt: str = "figure") -> str:
    """The figure as an <img> with a base64 PNG (no metadata, so the bytes are stable)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"/>'


def note(text: str) -> str:
    return f'<p class="report-note"><em>{html.escape(text)}</em></p>'


# ----------------------------------------------------------------------------- histories

def load_history(models_dir: str, row: str) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(train records, valid records) of models/<row>/history.json, or None when absent."""
    path = os.path.join(models_dir, row, "history.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        records = json.load(f).get("history", [])
    df = pd.DataFrame.from_records(records)
    if df.empty or "kind" not in df:
        return pd.DataFrame(), pd.DataFrame()
    train = df[df["kind"] == "train"].sort_values("update")
    valid = df[df["kind"] == "valid"].sort_values("update")
    return train.reset_index(drop=True), valid.reset_index(drop=True)


def _plot_series(ax, df, key, row, **kw):
    if not df.empty and key in df and df[key].notna().any():
        ax.plot(df["update"], df[key], color=row_color(row), label=label(row), **kw)
        return True
    return False


def learning_curves(histories: dict, dpi: int = 80) -> str:
    """Train loss and ELBO per sequence against updates, validation bound as markers."""
    if not histories:
        return note("No training history found (models/<row>/history.json).")
    fig = Figure(figsize=(11, 3.6))
    ax_loss, ax_elbo, ax_valid = fig.subplots(1, 3)
    for row, (train, valid) in histories.items():
        _plot_series(ax_loss, train, "loss", row, lw=1)
        _plot_series(ax_elbo, train, "elbo_per_seq", row, lw=1)
        _plot_series(ax_valid, valid, "valid_elbo_per_step", row, marker="o", ms=3, lw=1)
    ax_loss.set(title="training loss (per sequence)", xlabel="update")
    ax_elbo.set(title="training ELBO (nats / sequence)", xlabel="update")
    ax_valid.set(title="validation bound (nats / frame)", xlabel="update")
    return _curves_panel(fig, (ax_loss, ax_elbo, ax_valid), dpi, "learning curves")


def _curves_panel(fig, axes, dpi: int, alt: str) -> str:
    """Grid, one shared legend of rows under the panels (taken from the first), and HTML."""
    for ax in axes:
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=min(6, len(labels)), fontsize=8,
                   frameon=False)
    fig.subplots_adjust(left=0.06, right=0.99, top=0.9, bottom=0.3, wspace=0.3)
    return fig_to_html(fig, dpi, alt)


def kl_aux_curves(histories: dict, dpi: int = 80) -> str:
    """KL and aux cost per sequence, and the KL / aux weights, for the latent rows."""
    latent = {r: h for r, h in histories.items()
              if not h[0].empty and "kl_per_seq" in h[0] and (h[0]["kl_per_seq"].abs() > 0).any()}
    if not latent:
        return note("No latent-variable row has a training history.")
    fig = Figure(figsize=(11, 3.6))
    ax_kl, ax_aux, ax_w = fig.subplots(1, 3)
    for row, (train, _) in latent.items():
        _plot_series(ax_kl, train, "kl_per_seq", row, lw=1)
        _plot_series(ax_aux, train, "aux_per_seq", row, lw=1)
        _plot_series(ax_w, train, "kl_weight", row, lw=1.5)
        _plot_series(ax_w, train, "aux_weight", row, lw=1.5, ls="--")
    ax_kl.set(title="KL (nats / sequence)", xlabel="update")
    ax_aux.set(title="aux cost (nats / sequence)", xlabel="update")
    ax_w.set(title="weights: KL (solid), aux (dashed)", xlabel="update")
    return _curves_panel(fig, (ax_kl, ax_aux, ax_w), dpi, "KL and aux curves")


# ----------------------------------------------------------------------------- latents

def load_latent(eval_dir: str, row: str) -> list | None:
    path = os.path.join(eval_dir, row, "latent.json")
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f).get("kl_per_dim")


def latent_usage(kl_per_dim: dict, active: dict, threshold: float, dpi: int = 80) -> str:
    """One bar chart per latent row: KL per latent dimension (nats / sequence), sorted
    largest first, with the active-unit threshold and the active count in the title."""
    rows = [r for r, v in kl_per_dim.items() if v]
    if not rows:
        return note("No latent-variable row wrote eval/<row>/latent.json.")
    n = len(rows)
    cols = min(3, n)
    nrows = -(-n // cols)
    fig = Figure(figsize=(3.8 * cols, 2.8 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).ravel()
    for ax, row in zip(axes, rows):
        v = np.sort(np.asarray(kl_per_dim[row], dtype=float))[::-1]
        ax.bar(np.arange(len(v)), np.maximum(v, 1e-6), color=row_color(row), width=1.0)
        ax.axhline(threshold, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        n_active = active.get(row)
        if n_active is None:
            n_active = int((v > threshold).sum())
        ax.set_title(f"{label(row)}: {n_active} of {len(v)} units active", fontsize=9)
        ax.set_xlabel("latent dimension (sorted)", fontsize=8)
        ax.set_ylabel("KL (nats / seq)", fontsize=8)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.15, wspace=0.35, hspace=0.6)
    return fig_to_html(fig, dpi, "KL per latent dimension")


# ----------------------------------------------------------------------------- audio

def to_unit_range(x: np.ndarray) -> np.ndarray:
    """Waveform in [-1, 1]: values beyond ±1 are taken as int16 PCM units and rescaled."""
    x = np.asarray(x, dtype=np.float64).reshape(-1)
    x = np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0)
    if x.size and np.abs(x).max() > 1.0:
        x = x / INT16_FULL_SCALE
    return np.clip(x, -1.0, 1.0)


def wav_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    """16-bit mono WAV of a [-1, 1] waveform (the `wave` module writes no timestamps)."""
    pcm = np.round(to_unit_range(x) * 32767.0).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(sample_rate))
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def audio_html(x: np.ndarray, sample_rate: int) -> str:
    data = base64.b64encode(wav_bytes(x, sample_rate)).decode("ascii")
    return f'<audio controls preload="none" src="data:audio/wav;base64,{data}"></audio>'


def spectrogram_html(x: np.ndarray, sample_rate: int, title: str, n_mels: int = 64,
                     dpi: int = 80) -> str:
    """Log-mel spectrogram (librosa; 25 ms window, 10 ms hop at 16 kHz) as an <img>."""
    import librosa  # imported here: slow to import, only needed for audio pages

    y = to_unit_range(x).astype(np.float32)
    sr = int(sample_rate)
    n_fft = max(64, int(round(0.025 * sr)))
    hop = max(16, int(round(0.010 * sr)))
    if y.size < n_fft:
        y = np.pad(y, (0, n_fft - y.size))
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=n_fft, hop_length=hop,
                                         n_mels=n_mels, power=2.0)
    db = librosa.power_to_db(mel, ref=1.0, top_db=80.0)
    fig = Figure(figsize=(4.2, 2.0))
    ax = fig.subplots()
    seconds = y.size / sr
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", extent=(0, seconds, 0, n_mels))
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("s", fontsize=7)
    ax.set_ylabel("mel band", fontsize=7)
    ax.tick_params(labelsize=6)
    fig.subplots_adjust(left=0.13, right=0.98, top=0.86, bottom=0.22)
    return fig_to_html(fig, dpi, title)


def audio_block(title: str, x: np.ndarray, sample_rate: int, n_mels: int = 64, dpi: int = 80) -> str:
    """Spectrogram above a playable <audio> element, in one inline block."""
    return ('<div class="report-audio" style="display:inline-block;margin:4px;vertical-align:top">'
            + spectrogram_html(x, sample_rate, title, n_mels, dpi) + "<br/>"
            + audio_html(x, sample_rate) + "</div>")


def real_examples(prepared_dir: str, n: int, seconds: float) -> tuple[list, str]:
    """([(title, waveform in [-1, 1], sample_rate)], note) from the prepared test split.

    Empty with a note when the prepared data is absent or not audio (MNIST)."""
    if n <= 0:
        return [], ""
    try:
        from ..datasets import frames_to_waveform, open_split, read_manifest
        manifest = read_manifest(prepared_dir)
    except FileNotFoundError:
        return [], f"Real test audio not shown: no prepared data at {prepared_dir}."
    if manifest.get("kind") != "audio":
        return [], "Real test audio not shown: the prepared data is not audio."
    split = "test" if "test" in manifest.get("splits", {}) else None
    if split is None:
        return [], "Real test audio not shown: the prepared data has no test split."
    sr = int(manifest["sample_rate"])
    limit = int(seconds * sr)
    loader = open_split(prepared_dir, split, batch_size=1, shuffle=False, limit=n)
    out = []
    for i, batch in enumerate(loader):
        if i >= n:
            break
        frames = batch.y[0][batch.mask[0] > 0]
        out.append((f"real test sequence {i + 1}", frames_to_waveform(frames, manifest)[:limit], sr))
    return out, ""


def generated_examples(eval_dir: str, row: str, n: int, seconds: float) -> list:
    """[(title, waveform, sample_rate)] from eval/<row>/samples.npz (empty when absent)."""
    path = os.path.join(eval_dir, row, "samples.npz")
    if n <= 0 or not os.path.isfile(path):
        return []
    with np.load(path) as z:
        gen = np.atleast_2d(z["generated"])
        sr = int(np.asarray(z["sample_rate"]).reshape(-1)[0])
    limit = int(seconds * sr)
    return [(f"{label(row)}: generated {i + 1}", to_unit_range(g)[:limit], sr)
            for i, g in enumerate(gen[:n])]
