"""Figures and audio as self-contained, byte-stable HTML fragments: PNGs from matplotlib's
object API, re-encoded by PIL without metadata; Ogg Vorbis clips with the stream serial
number (random in libsndfile) set to 0 and the page checksums redone."""
from __future__ import annotations

import base64
import functools
import html
import io
import struct

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter  # noqa: E402
import numpy as np  # noqa: E402

# Z-Forcing rows: strong, distinct colours, solid lines; baselines: muted, dashed.
STRONG = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
MUTED = ["#7f7f7f", "#bcbd22", "#17becf", "#c49c94", "#aec7e8", "#98df8a", "#c5b0d5", "#ffbb78"]
# Readable text: no font below 8 pt, drawn at no less than 80 dpi (8.9 px a line; at 7 pt
# and 80 dpi "rnn" reads as "mn"). A lower report.dpi keeps the 80-dpi pixels.
FONT, MIN_DPI = 8, 80
MARKERS_BELOW = 3   # a series with fewer points gets markers: one point is no line
CRC = [functools.reduce(lambda r, _: (r << 1) ^ 0x104C11DB7 if r & 0x80000000 else r << 1,
                        range(8), i << 24) for i in range(256)]   # Ogg's CRC-32 (not zlib's)


def styles(rows: list) -> dict:
    """row -> line style; the paper's four Z-Forcing rows keep their colours on every page."""
    zf = ["zforcing", "zforcing_kla", "zforcing_aux", "zforcing_kla_aux"]
    zf += [r for r in rows if r.startswith("zforcing") and r not in zf]
    out = {r: {"color": STRONG[i % 8], "ls": "-"} for i, r in enumerate(zf)}
    out.update({r: {"color": MUTED[i % 8], "ls": "--"}
                for i, r in enumerate(r for r in rows if r not in zf)})
    return out


def img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}"/>'


def png(fig: Figure, dpi: int, alt: str, colours: int = 0) -> str:
    """RGB PNG without metadata; colours > 0: a palette of that many (a spectrogram takes a
    third of the bytes; line plots keep full colour, a palette merges their line colours)."""
    from PIL import Image

    buf, out = io.BytesIO(), io.BytesIO()
    fig.savefig(buf, format="png", dpi=max(dpi, MIN_DPI))
    im = Image.open(buf).convert("RGB")
    (im.quantize(colours) if colours else im).save(out, format="PNG", optimize=True)
    return img(out.getvalue(), alt)


def sentence(text: str) -> str:
    return f"<p><em>{html.escape(text)}</em></p>"


def log_ticks(ax) -> None:
    """Log y labels written plainly (0.002), at 1, 2 and 5 times a power of ten on a short
    range, at powers of ten on a long one: the default labels a short range's minor ticks
    as "2×10⁻³", which fixed margins cut to a column of "10⁻³"."""
    lo, hi = ax.get_ylim()
    a = ax.yaxis
    a.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if hi / lo < 100 else (1.0,),
                                   numticks=8))
    a.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    a.set_minor_formatter(NullFormatter())


def series(df, kind: str, key: str):
    """(updates, values) of one record kind, missing values left out; None if there are none."""
    d = df[df["kind"] == kind]
    if key not in d:
        return None
    d = d[d[key].notna()]
    return (d["update"], d[key]) if len(d) else None


def curves_figure(histories: dict, panels: list, style: dict) -> tuple:
    """(Figure or None, titles of the panels left out because no run has a value there)."""
    shown = [p for p in panels if any(series(df, p[1], p[2]) is not None for df in histories.values())]
    empty = [p[0] for p in panels if p not in shown]
    if not shown:
        return None, empty
    fig = Figure(figsize=(3.0 * len(shown) + 1.5, 3.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(shown)))
    legend, first = {}, {}
    for row, seed in sorted(histories, key=lambda k: k[1]):
        first.setdefault(row, seed)
    for ax, (title, kind, key) in zip(axes, shown):
        for (row, seed), df in histories.items():
            xy = series(df, kind, key)
            if xy is None:
                continue
            thick = seed == first[row]
            few = len(xy[0]) < MARKERS_BELOW   # a line through one point draws nothing
            line, = ax.plot(*xy, lw=1.4 if thick else 0.7, alpha=1.0 if thick else 0.6,
                            marker="o" if few else None, ms=4 if thick else 3, **style[row])
            legend.setdefault(row, line)
        if "elbo" in key:   # early bounds are orders of magnitude worse: skip them
            ys = np.concatenate([ln.get_ydata()[len(ln.get_ydata()) // 10:] for ln in ax.lines])
            lo, hi = np.nanquantile(ys.astype(float), [0.02, 1.0])
            ax.set_ylim(lo - 0.05 * (hi - lo or 1), hi + 0.05 * (hi - lo or 1))
        ax.set_title(title, fontsize=FONT + 1)
        ax.set_xlabel("update", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
        ax.grid(alpha=0.3)
    fig.legend(list(legend.values()), list(legend), loc="outside right center", fontsize=FONT,
               frameon=False)
    return fig, empty


def curves(histories: dict, panels: list, style: dict, dpi: int, alt: str) -> str:
    """Panels [(title, record kind, key)] side by side, one line per (row, seed) run; a
    row's first seed labelled and drawn thicker; one legend of rows. A series of fewer than
    3 points has markers; a panel no run has a value for is left out, with a sentence."""
    fig, empty = curves_figure(histories, panels, style)
    out = png(fig, dpi, alt) if fig is not None else ""
    if empty:
        out += sentence(f"Not drawn, no run recorded a value: {'; '.join(empty)}.")
    return out


def grey_reconstructions(originals, recon) -> str:
    """Why reconstructions look uniform grey, from their values: they are pixel
    probabilities, drawn as shades; "" when some pixel reaches 0.5 (drawn dark)."""
    r, o = np.asarray(recon, dtype=float), np.asarray(originals, dtype=float)
    if not r.size or r.max() >= 0.5:
        return ""
    return sentence(f"The reconstructions are shades of grey because they are pixel probabilities "
                    f"and none reaches 0.5: they lie in [{r.min():.2f}, {r.max():.2f}] (mean "
                    f"{r.mean():.2f}; ink covers {o.mean():.0%} of the test digits' pixels). The "
                    "model predicts about the average ink everywhere, not the digit's strokes: "
                    "a sign of too few updates, not a drawing error.")


def row_ranges(vals: dict, title: str, higher: bool, dpi: int) -> str:
    """Each row's seeds (dots), mean (bar) and min-max range (line), one line per row in
    the given order (the paper's, worst first); better to the right."""
    if not vals:
        return ""
    return png(row_ranges_figure(vals, title, higher), dpi, title)


def row_ranges_figure(vals: dict, title: str, higher: bool) -> Figure:
    rows = list(vals)
    style = styles(rows)
    fig = Figure(figsize=(6.5, 0.9 + 0.25 * len(rows)), layout="constrained")
    ax = fig.subplots()
    for i, row in enumerate(rows):
        v = np.asarray(vals[row], dtype=float)
        c = style[row]["color"]
        ax.plot([v.min(), v.max()], [i, i], color=c, lw=1.5)
        ax.plot(v, np.full(v.size, i), "o", color=c, ms=3, alpha=0.7)
        ax.plot([v.mean()], [i], "|", color="k", ms=9, mew=1.5)
    ax.set_yticks(range(len(rows)), rows, fontsize=FONT)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    if not higher:
        ax.invert_xaxis()
    ax.set_title(f"{title}, {'higher' if higher else 'lower'} is better: better →", fontsize=FONT)
    ax.tick_params(axis="x", labelsize=FONT)
    ax.grid(axis="x", alpha=0.3)
    return fig


def latent_usage(kl_per_dim: dict, style: dict, threshold: float, dpi: int) -> str:
    """A bar chart per (row, seed): KL per latent dimension, sorted, log scale, threshold."""
    return png(latent_usage_figure(kl_per_dim, style, threshold), dpi, "KL per latent dimension")


def latent_usage_figure(kl_per_dim: dict, style: dict, threshold: float) -> Figure:
    cols = min(4, len(kl_per_dim))
    fig = Figure(figsize=(3.0 * cols, 2.4 * -(-len(kl_per_dim) // cols)), layout="constrained")
    axes = fig.subplots(-(-len(kl_per_dim) // cols), cols, squeeze=False).ravel()
    for ax, ((row, seed), v) in zip(axes, kl_per_dim.items()):
        v = np.sort(np.asarray(v, dtype=float))[::-1]
        ax.bar(np.arange(v.size), np.maximum(v, 1e-6), width=1.0, color=style[row]["color"])
        ax.axhline(threshold, color="k", lw=0.8, ls=":")
        ax.set_yscale("log")
        log_ticks(ax)
        ax.set_title(f"{row} s{seed}: {int((v > threshold).sum())} of {v.size} active", fontsize=FONT)
        ax.tick_params(labelsize=FONT)
    for ax in axes[len(kl_per_dim):]:
        ax.set_visible(False)
    return fig


def ogg_bytes(x: np.ndarray, sample_rate: int) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.clip(np.nan_to_num(np.asarray(x, np.float32)), -1, 1), int(sample_rate),
             format="OGG", subtype="VORBIS")
    out, i = bytearray(buf.getvalue()), 0
    while i < len(out):   # Ogg pages: 27-byte header, segment table, body
        end = i + 27 + out[i + 26] + sum(out[i + 27:i + 27 + out[i + 26]])
        out[i + 14:i + 18] = out[i + 22:i + 26] = bytes(4)   # serial; CRC zeroed to compute it
        crc = 0
        for b in out[i:end]:
            crc = ((crc << 8) & 0xFFFFFFFF) ^ CRC[(crc >> 24) ^ b]
        out[i + 22:i + 26] = struct.pack("<I", crc)
        i = end
    return bytes(out)


def log_mel(y: np.ndarray, sr: int, n_mels: int) -> np.ndarray:
    """(n_mels, frames) log-mel power in dB (25 ms Hann window, 10 ms hop, HTK mel scale).
    Plain numpy: librosa's numba compilation costs tens of seconds in a fresh kernel."""
    n_fft, hop = int(0.025 * sr), int(0.010 * sr)
    y = np.pad(np.asarray(y, float), (0, max(0, n_fft - len(y))))
    frames = np.lib.stride_tricks.sliding_window_view(y, n_fft)[::hop] * np.hanning(n_fft)
    edges = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + sr / 1400), n_mels + 2) / 2595) - 1)
    f, lo, mid, hi = np.fft.rfftfreq(n_fft, 1 / sr), edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bank = np.maximum(0, np.minimum((f - lo) / (mid - lo), (hi - f) / (hi - mid)))
    db = 10 * np.log10(np.maximum(bank @ (np.abs(np.fft.rfft(frames)) ** 2).T, 1e-10))
    return np.maximum(db, db.max() - 80.0)


def audio_block(title: str, x: np.ndarray, sr: int, n_mels: int, dpi: int) -> str:
    """A small spectrogram above the playable clip."""
    return (f'<div class="clip">{png(spectrogram_figure(title, x, sr, n_mels), dpi, title, colours=64)}'
            f'<br/><audio controls preload="none" '
            f'src="data:audio/ogg;base64,{base64.b64encode(ogg_bytes(x, sr)).decode()}"></audio></div>')


def spectrogram_figure(title: str, x: np.ndarray, sr: int, n_mels: int) -> Figure:
    fig = Figure(figsize=(3.2, 1.7), layout="constrained")
    ax = fig.subplots()
    ax.imshow(log_mel(x, sr, n_mels), origin="lower", aspect="auto", cmap="magma",
              extent=(0, len(x) / sr, 0, n_mels))
    ax.set_title(title, fontsize=FONT)
    ax.tick_params(labelsize=FONT)
    return fig


def real_clips(prepared_dir: str, n: int, seconds: float) -> list:
    """[(title, waveform in [-1, 1], sample rate)]: the first n test sequences."""
    from ..datasets import frames_to_waveform, open_split, read_manifest

    manifest = read_manifest(prepared_dir)
    sr, out = int(manifest["sample_rate"]), []
    for i, batch in zip(range(n), open_split(prepared_dir, "test", batch_size=1, limit=n)):
        wave = frames_to_waveform(batch.y[0][batch.mask[0] > 0], manifest)
        out.append((f"real test sequence {i + 1}", wave[:int(seconds * sr)], sr))
    return out
