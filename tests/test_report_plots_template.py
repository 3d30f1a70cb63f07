"""The offline `dvc plots show` template: bundled Vega inline, no CDN, DVC can fill it."""
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_offline_template(tmp_path):
    (tmp_path / ".dvc").mkdir()
    r = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "offline_plots_template.py")],
                       cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "dvc config --local plots.html_template tmp/offline_plots_template.html" in r.stdout
    page = (tmp_path / ".dvc" / "tmp" / "offline_plots_template.html").read_text(encoding="utf-8")
    assert "window.vegaEmbed" in page and not re.search(r"<script[^>]+src\s*=", page)
    from dvc_render.html import HTML
    out = HTML(page).with_scripts('<script src="https://cdn.example/vega.js"></script>') \
        .with_element("<div id='plot'></div>").embed()
    assert "<div id='plot'></div>" in out and "cdn.example" not in out
