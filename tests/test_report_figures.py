"""Report figures and audio: base64 PNG / WAV fragments, byte-stable, graceful when data is absent."""
import base64
import io
import os
import re
import wave

import numpy as np

from pipeline.report import figures
from test_report_tables import make_fixture


def test_figures_are_base64_png_and_stable(tmp_path):
    root = make_fixture(tmp_path)
    models = os.path.join(root, "models")
    hist = {r: figures.load_history(models, r) for r in ("rnn_gauss", "zforcing", "zforcing_aux")}
    a = figures.learning_curves(hist) + figures.kl_aux_curves(hist)
    b = figures.learning_curves(hist) + figures.kl_aux_curves(hist)
    assert a == b and a.count("data:image/png;base64,") == 2
    kl = {"zforcing": figures.load_latent(os.path.join(root, "eval"), "zforcing")}
    h = figures.latent_usage(kl, {"zforcing": 4}, 0.01)
    assert "data:image/png;base64," in h
    png = base64.b64decode(re.search(r"base64,([^\"]+)", h).group(1))
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png


def test_audio_and_spectrograms(tmp_path):
    root = make_fixture(tmp_path)
    real, why = figures.real_examples(os.path.join(root, "data", "prepared"), 2, 1.0)
    assert why == "" and len(real) == 2
    title, x, sr = real[0]
    assert sr == 16000 and len(x) == 11 * 200 and np.abs(x).max() <= 1.0  # first frame only conditioned on
    gen = figures.generated_examples(os.path.join(root, "eval"), "zforcing", 1, 0.1)
    assert len(gen) == 1 and len(gen[0][1]) == 1600 and np.abs(gen[0][1]).max() <= 1.0
    block = figures.audio_block(*gen[0])
    assert "<audio" in block and "data:audio/wav;base64," in block and "data:image/png;base64," in block
    wav = base64.b64decode(re.search(r"audio/wav;base64,([^\"]+)", block).group(1))
    with wave.open(io.BytesIO(wav)) as w:
        assert w.getframerate() == 16000 and w.getnframes() == 1600
    assert block == figures.audio_block(*gen[0])


def test_missing_inputs_are_graceful(tmp_path):
    real, why = figures.real_examples(str(tmp_path / "nope"), 2, 1.0)
    assert real == [] and "no prepared data" in why
    assert figures.generated_examples(str(tmp_path), "zforcing", 2, 1.0) == []
    assert figures.load_history(str(tmp_path), "zforcing") is None
    assert "No training history" in figures.learning_curves({})
    assert "latent.json" in figures.latent_usage({}, {}, 0.01)
