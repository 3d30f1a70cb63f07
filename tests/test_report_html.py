"""Report stage end to end: papermill + nbconvert pages from a fixture project.

Renders are slow (a kernel per page), so one module-scoped project is rendered twice and
shared by the checks.
"""
import filecmp
import os
import re
import subprocess
import sys

import papermill
import pytest

from test_report_tables import make_fixture

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGE = os.path.join(ROOT, "stages", "report.py")
ROWS = ("rnn_gauss", "rnn_gmm", "rnn_ar", "vrnn_gauss", "zforcing", "zforcing_aux")


def run_stage(cwd, out="reports", params="params.yaml"):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, STAGE, "--params", params, "--eval", "eval",
                           "--models", "models", "--prepared", "data/prepared", "--out", out],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    root = make_fixture(tmp_path_factory.mktemp("proj"), rows=ROWS,
                        report={"audio_examples": 1, "audio_seconds": 0.5, "dpi": 40})
    for out in ("reports", "reports2"):
        r = run_stage(root, out)
        assert r.returncode == 0, r.stderr[-3000:]
    return root


def read(root, name, out="reports"):
    with open(os.path.join(root, out, name), encoding="utf-8") as f:
        return f.read()


def test_pages_exist_and_only_present_columns(rendered):
    assert sorted(os.listdir(os.path.join(rendered, "reports"))) == ["index.html", "timit.html"]


def test_page_contents(rendered):
    page = read(rendered, "timit.html")
    for ours in ("6,100.25", "-1,500.25", "9,100.75"):        # our numbers
        assert ours in page
    for paper in ("69,530", "68,132", "28,805", "-1,900"):    # the paper's
        assert paper in page
    assert "-63,429.75" in page                               # difference ours - paper
    assert "≥" in page and "IWAE (k=8)" in page and "exact log-likelihood" in page
    assert "padded-batch mean" in page                        # quirk column
    assert "data dddddddddd" in page and "model 05aaaaaaaa" in page   # provenance from dvc.lock
    assert "paper&#x27;s ordering" in page.lower() or "paper's ordering" in page.lower()
    assert "holds for the 5 of its rows" in page
    assert "within-frame autoregressive RNN ranks 1 of 6" in page
    assert "data:image/png;base64," in page and "<audio" in page and "data:audio/wav;base64," in page
    assert "Variational Bi-LSTM" in page and "1711.05411" in page
    assert "z_force" in page and "protocol.eval_context" in page


def test_no_external_scripts(rendered):
    for name in ("timit.html", "index.html"):
        page = read(rendered, name)
        assert "https://cdn" not in page and "http://cdn" not in page
        assert not re.search(r"<script[^>]+src\s*=", page)
        assert "require.js" not in page and "mathjax" not in page.lower().replace("mathjax_", "")


def test_index_links_pages(rendered):
    index = read(rendered, "index.html")
    assert "href='timit.html'" in index or 'href="timit.html"' in index
    assert "holds" in index


def test_renders_are_byte_identical(rendered):
    for name in ("timit.html", "index.html"):
        assert filecmp.cmp(os.path.join(rendered, "reports", name),
                           os.path.join(rendered, "reports2", name), shallow=False), name


def test_notebooks_have_parameters_cell():
    for name in ("speech_table.ipynb", "index.ipynb"):
        params = papermill.inspect_notebook(os.path.join(ROOT, "notebooks", name))
        assert params, name
    assert "column" in papermill.inspect_notebook(os.path.join(ROOT, "notebooks", "speech_table.ipynb"))


def test_unknown_report_key_rejected(tmp_path):
    root = make_fixture(tmp_path, rows=("zforcing",), prepared=False, report={"dpii": 80})
    r = run_stage(root)
    assert r.returncode == 2
    assert "unknown ReportConfig keys: dpii" in r.stderr
    assert not os.path.exists(os.path.join(root, "reports"))


def test_missing_report_section_uses_defaults(tmp_path):
    sys.path.insert(0, os.path.join(ROOT, "stages"))
    try:
        import report as stage
    finally:
        sys.path.pop(0)
    root = make_fixture(tmp_path, rows=("zforcing",), prepared=False)
    params, cfg = stage.read_params(os.path.join(root, "params.yaml"))
    assert cfg.audio_examples == 2 and params["aux_weight"] == 0.5
    with pytest.raises(ValueError, match="dpi"):
        stage.ReportConfig(dpi=0)
