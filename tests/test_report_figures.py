"""The report's figures and header lines without a kernel: what a small budget draws (one
validation point, grey reconstructions), text size at the page's dpi, log-axis labels, the
profile's overrides, and the runs table."""
import base64
import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Text
from PIL import Image

from pipeline.report import figures, pages, tables
from stages import params as P
from stages import report as stage

STYLE = figures.styles(["zforcing", "lstm"])
PANELS = [("training ELBO", "train", "elbo_per_seq"), ("validation ELBO", "valid", "valid_elbo_per_seq"),
          ("aux cost", "train", "aux_per_seq")]


def history(valid_points: int) -> pd.DataFrame:
    """A tiny run: 4 training records, `valid_points` validations, no aux cost recorded."""
    recs = [{"kind": "train", "update": u, "elbo_per_seq": -90.0 + u} for u in (2, 4, 6, 8)]
    recs += [{"kind": "valid", "update": 8 * (i + 1), "valid_elbo_per_seq": -85.0 + i}
             for i in range(valid_points)]
    return pd.DataFrame.from_records(recs)


def texts(fig):
    """Every piece of text the figure draws (tick labels inside the view only)."""
    fig.draw_without_rendering()
    ticks, shown = set(), []
    for ax in fig.axes:
        for axis, i in ((ax.xaxis, 0), (ax.yaxis, 1)):
            lo, hi = sorted(axis.get_view_interval())
            for t in axis.get_ticklabels(which="both"):
                ticks.add(id(t))
                shown += [t] if lo <= t.get_position()[i] <= hi else []   # outside: not drawn
    return [t for t in [t for t in fig.findobj(Text) if id(t) not in ticks] + shown
            if t.get_visible() and t.get_text().strip() and (not t.axes or t.axes.get_visible())]


@pytest.mark.parametrize("valid_points, markers", [(1, True), (2, True), (3, False)])
def test_a_series_of_fewer_than_three_points_has_markers(valid_points, markers):
    h = {("zforcing", 0): history(valid_points), ("lstm", 0): history(valid_points)}
    fig, empty = figures.curves_figure(h, PANELS, STYLE)
    valid = fig.axes[1]
    assert valid.get_title() == "validation ELBO" and len(valid.lines) == 2
    assert all((ln.get_marker() not in (None, "None", "")) is markers for ln in valid.lines)
    assert all(ln.get_marker() in (None, "None", "") for ln in fig.axes[0].lines)  # 4 points: a line
    # the panel no run has a value for is not drawn as empty axes: a sentence says so
    assert empty == ["aux cost"] and len([a for a in fig.axes if a.get_visible()]) == 2
    assert "Not drawn, no run recorded a value: aux cost." in figures.curves(h, PANELS, STYLE, 80, "c")


def test_no_chart_at_all_when_no_panel_has_data():
    out = figures.curves({("lstm", 0): history(0)}, PANELS[1:], STYLE, 80, "c")
    assert "<img" not in out and "validation ELBO; aux cost" in out


def figures_to_check():
    kl = {("zforcing", 0): np.linspace(0.002, 0.009, 16), ("lstm", 1): np.geomspace(1e-5, 30, 16)}
    h = {("zforcing", 0): history(1), ("lstm", 1): history(5)}
    yield "curves", figures.curves_figure(h, PANELS[:2], STYLE)[0]
    yield "latent", figures.latent_usage_figure(kl, STYLE, 0.01)
    yield "ranges", figures.row_ranges_figure({"lstm": [1.0, 2.0], "rnn_gauss": [3.0]}, "t", True)
    yield "spectrogram", figures.spectrogram_figure(
        "rnn_gauss s0: sample 1", np.sin(np.arange(8000) / 5.0), 16000, 32)


@pytest.mark.parametrize("dpi", [40, 80, 150])
def test_every_text_is_at_least_eight_pixels_at_the_pages_dpi(dpi):
    for name, fig in figures_to_check():
        drawn_at = max(dpi, figures.MIN_DPI)
        small = [(t.get_text(), t.get_fontsize()) for t in texts(fig) if t.get_fontsize() * drawn_at / 72 < 8]
        assert not small, (name, dpi, small)
        png = figures.png(fig, dpi, name)
        data = base64.b64decode(png.split("base64,")[1].split('"')[0])
        w, _ = Image.open(io.BytesIO(data)).size
        assert abs(w - fig.get_figwidth() * drawn_at) <= 1, (name, w)   # a low dpi keeps 80 dpi's pixels


def clipped(fig) -> list:
    """Texts that stick out of the figure (a cut-off "2×10⁻³" reads as "10⁻³")."""
    box = fig.bbox
    return [t.get_text() for t in texts(fig) if not (
        box.x0 - 1 <= t.get_window_extent().x0 and t.get_window_extent().x1 <= box.x1 + 1
        and box.y0 - 1 <= t.get_window_extent().y0 and t.get_window_extent().y1 <= box.y1 + 1)]


def test_no_text_is_cut_off_at_the_figure_edge():
    for name, fig in figures_to_check():
        assert not clipped(fig), (name, clipped(fig))
    # the check can fail: the latent chart's old fixed margins cut its tick labels off
    old = Figure(figsize=(3.0, 2.3))
    ax = old.subplots()
    ax.bar(np.arange(16), np.linspace(0.002, 0.009, 16))
    ax.set_yscale("log")
    old.subplots_adjust(left=0.07, right=0.98, top=0.88, bottom=0.12)
    assert clipped(old)


def test_log_axis_tick_labels_are_distinct():
    fig = figures.latent_usage_figure({("zforcing", 0): np.linspace(0.002, 0.009, 16),
                                       ("lstm", 0): np.geomspace(1e-5, 30, 16)}, STYLE, 0.01)
    fig.draw_without_rendering()
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        lo, hi = sorted(ax.get_ylim())
        shown = [t.get_text() for t in ax.get_yticklabels() + ax.get_yticklabels(minor=True)
                 if t.get_text() and lo <= t.get_position()[1] <= hi]
        assert len(shown) >= 2 and len(shown) == len(set(shown)), (ax.get_title(), shown)


def test_grey_reconstructions_are_explained_from_their_values():
    rng = np.random.default_rng(0)
    originals = (rng.random((4, 196)) > 0.8) * 1.0
    grey = figures.grey_reconstructions(originals, 0.05 + 0.1 * rng.random((4, 196)))
    assert "none reaches 0.5" in grey and "[0.05, 0.15]" in grey and "too few updates" in grey
    sharp = originals * 0.9 + 0.05
    assert figures.grey_reconstructions(originals, sharp) == ""


def test_overrides_are_the_keys_that_differ_from_the_profile(tmp_path):
    params = P.read(P.Path(stage.__file__).parents[1] / "params.yaml")
    root_conf = str(P.Path(stage.__file__).parents[1] / "conf")
    assert stage.overrides(params, root_conf) == []   # params.yaml is the profile as composed
    params["train"]["lr"] = 0.0005
    params["seeds"] = [0, 1]
    assert stage.overrides(params, root_conf) == ["seeds=[0, 1]", "train.lr=0.0005"]
    assert stage.overrides(params, str(tmp_path / "no-conf")) is None
    params["profile_name"] = "nonesuch"
    assert stage.overrides(params, root_conf) is None


def test_the_header_line_names_the_overrides_or_says_unknown():
    sub = pd.DataFrame({"row": ["lstm"], "info": [{"data": {"title_note": "n"}, "train": {"updates": 8}}]})
    line = pages.data_line(sub, "tiny", [0], ["train.lr=0.0005", "seeds=[0, 1]"])
    assert "profile <b>tiny</b> with overrides <code>train.lr=0.0005</code>, <code>seeds=[0, 1]</code>;" in line
    assert "profile <b>tiny</b> (no overrides);" in pages.data_line(sub, "tiny", [0], [])
    assert "overrides unknown" in pages.data_line(sub, "tiny", [0], None)


def test_runs_table_prints_the_train_seed_plainly_and_has_no_empty_time_column():
    info = {"train_seed": 1234, "train": {"updates": 40, "skipped": 0, "seconds": None, "best_valid": None}}
    t = tables.runs_table(pd.DataFrame({"row": ["lstm"], "seed": [0], "info": [info]}))
    assert t.iloc[0]["train seed"] == "1234" and "seconds" not in t.columns
