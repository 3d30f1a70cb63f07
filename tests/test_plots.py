"""`dvc plots show` out of the box: dvc.yaml's top-level plots find dvclive's curves, and the
page renders offline through the committed template that .dvc/config names."""
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def configured_template() -> Path:
    conf = configparser.ConfigParser()
    conf.read(ROOT / ".dvc/config")
    assert conf.has_option("plots", "html_template"), ".dvc/config names no plots.html_template"
    path = Path(conf.get("plots", "html_template"))
    return path if path.is_absolute() else ROOT / ".dvc" / path


def test_config_names_a_committed_offline_template():
    path = configured_template()
    assert path.is_file(), f"{path} is missing: run python scripts/offline_plots_template.py"
    rel = path.relative_to(ROOT).as_posix()
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", rel], cwd=ROOT,
                             capture_output=True, text=True)
    assert tracked.returncode == 0, f"{rel} is not in git: a fresh clone would lack it"
    text = path.read_text(encoding="utf-8")
    assert "{plot_divs}" in text and "{scripts}" not in text  # DVC's CDN tags go to {scripts}
    assert "src=" not in text.split("<script", 1)[0] and 'src="http' not in text
    assert "vegaEmbed" in text


def test_committed_template_is_what_the_script_writes():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import offline_plots_template as tpl
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    assert configured_template().read_text(encoding="utf-8") == tpl.build(), (
        "stale .dvc/plots_template.html: run python scripts/offline_plots_template.py")


@pytest.fixture
def repo(tmp_path):
    """A DVC repository holding this one's plots section, config, template and .dvcignore,
    and the files one training stage's dvclive logger writes."""
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(DVC + ["init", "-q"], cwd=tmp_path, check=True)
    shutil.copy(ROOT / ".dvc/config", tmp_path / ".dvc/config")
    shutil.copy(configured_template(), tmp_path / ".dvc" / configured_template().name)
    shutil.copy(ROOT / ".dvcignore", tmp_path / ".dvcignore")
    plots = yaml.safe_load((ROOT / "dvc.yaml").read_text())["plots"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"plots": plots}))
    cell = tmp_path / "live/mnist/zforcing_aux/s0"
    (cell / "plots/metrics/valid").mkdir(parents=True)
    (cell / "plots/metrics/train").mkdir(parents=True)
    (cell / "plots/metrics/valid/elbo_per_seq.tsv").write_text(
        "step\telbo_per_seq\n30\t-123.4567\n60\t-98.7654\n")
    (cell / "plots/metrics/train/kl_per_seq.tsv").write_text(
        "step\tkl_per_seq\n10\t4.25\n20\t5.5\n")
    (cell / "metrics.json").write_text('{"step": 60, "train": {"kl_per_seq": 5.5}}')  # dvclive's summary
    return tmp_path


def test_plots_show_renders_the_curves_offline(repo):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    out = subprocess.run(DVC + ["plots", "show"], cwd=repo, capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "WARNING" not in out.stderr and "failed" not in out.stderr, out.stderr
    html = (repo / "dvc_plots/index.html").read_text(encoding="utf-8")
    assert 'src="http' not in html and "<script src" not in html
    assert "cdn.jsdelivr" not in html
    for curve in ("valid/elbo_per_seq.tsv", "train/kl_per_seq.tsv"):
        assert f"live/mnist/zforcing_aux/s0/plots/metrics/{curve}" in html
    assert "-98.7654" in html and "5.5" in html and '"step"' in html


def test_history_json_mixes_records_dvc_cannot_plot():
    """What README.md's "Curves" says: history.json's one list mixes train and valid records,
    so DVC finds no data points in it; lists of one kind each would plot."""
    from dvc.render.converter.vega import get_datapoints

    train = [{"kind": "train", "update": u, "elbo_per_seq": -float(u)} for u in (4, 8)]
    valid = [{"kind": "valid", "update": 8, "valid_elbo_per_seq": -9.0}]
    assert get_datapoints({"history": train + valid}) == []
    assert get_datapoints({"history": train}) == train
