"""End to end: the repository copied into a fresh git repo, `dvc repro` on the tiny
profile, then an aux-weight experiment that must retrain only the "+ aux" rows."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.rows import ROWS

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("data/", "models/", "eval/", "live/", "reports/", ".ckpt/", "dvc.lock")


def _env():
    # dvc exp run commits experiments: give git an identity even where none is configured
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1",
               GIT_AUTHOR_NAME="e2e", GIT_AUTHOR_EMAIL="e2e@example.invalid",
               GIT_COMMITTER_NAME="e2e", GIT_COMMITTER_EMAIL="e2e@example.invalid")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PYTHONPATH", None)
    return env


def sh(cmd, cwd, check=True):
    res = subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, shell=True)
    if check and res.returncode:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}")
    return res


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\n")
    for f in filter(None, files):
        if f.startswith(SKIP) or not (ROOT / f).exists():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    params = (dst / "params.yaml").read_text()
    assert "\nprofile: default\n" in params
    (dst / "params.yaml").write_text(params.replace("\nprofile: default\n", "\nprofile: tiny\n"))
    sh("git init -q && git add -A && git commit -qm init", dst)
    sh("dvc repro", dst)
    return dst


def test_repro_writes_metrics_for_every_row(repo):
    for name in ROWS:
        m = json.loads((repo / "eval" / name / "metrics.json").read_text())
        assert m["row"] == name and m["profile"] == "tiny"
        assert math.isfinite(m["test"]["elbo_per_seq"])
        assert m["test"]["sequences"] > 0
        if m["exact"]:
            assert m["test"]["kl_per_seq"] == 0
        else:  # the importance-weighted bound is at least the ELBO on average
            assert m["test"]["iwae_per_seq"] > m["test"]["elbo_per_seq"] - 1e-3 * abs(m["test"]["elbo_per_seq"])
        assert (repo / "models" / name / "model.npz").exists()
    aux = json.loads((repo / "eval/zforcing_aux/metrics.json").read_text())
    assert aux["settings"]["train"]["aux_weight"] > 0
    plain = json.loads((repo / "eval/zforcing/metrics.json").read_text())
    assert plain["settings"]["train"]["aux_weight"] == 0


def test_repro_writes_self_contained_reports(repo):
    index = (repo / "reports" / "index.html").read_text()
    pages = sorted(p.name for p in (repo / "reports").glob("*.html") if p.name != "index.html")
    assert pages, "no table page rendered"
    for page in pages:
        assert page in index
        html = (repo / "reports" / page).read_text()
        assert "cdn." not in html and "<script src=\"http" not in html
        assert "data:image/png;base64" in html


def test_second_repro_is_a_noop_and_status_clean(repo):
    out = sh("dvc repro", repo).stdout
    assert "Running stage" not in out
    assert "up to date" in sh("dvc status", repo).stdout


def test_metrics_show_lists_every_row(repo):
    out = sh("dvc metrics show --json", repo).stdout
    assert all(f"eval/{name}/metrics.json" in out for name in ROWS)


def test_aux_weight_experiment_retrains_only_aux_rows(repo):
    sh("git add -A && git commit -qm repro", repo)
    out = sh("dvc exp run -S aux_weight=0.02", repo).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    aux_rows = {n for n, r in ROWS.items() if r.aux}
    assert {f"train_aux@{n}" for n in aux_rows} <= ran
    assert not any(s.startswith("train@") for s in ran), ran
    assert {s for s in ran if s.startswith("evaluate@")} == {f"evaluate@{n}" for n in aux_rows}
    m = json.loads((repo / "eval/zforcing_aux/metrics.json").read_text())
    assert m["settings"]["aux_weight"] == 0.02


def test_bad_input_is_one_line_and_deletes_nothing(repo):
    before = (repo / "models/zforcing/model.npz").read_bytes()
    res = sh("python -m stages.train --row zforcing_typo --out models/zforcing", repo, check=False)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "zforcing_typo" in res.stderr
    bad = repo / "bad.yaml"
    bad.write_text((repo / "params.yaml").read_text().replace("data.minutes: 0.5", "data.minuts: 0.5"))
    res = sh("python -m stages.prepare --params bad.yaml --out data/prepared", repo, check=False)
    assert res.returncode == 2 and "data.minuts" in res.stderr and res.stderr.strip().count("\n") == 0
    bad.write_text((repo / "params.yaml").read_text().replace("name: synthetic", "name: timitt"))
    res = sh("python -m stages.download --params bad.yaml --out data/raw", repo, check=False)
    assert res.returncode == 2 and "timitt" in res.stderr
    bad.write_text((repo / "params.yaml").read_text().replace("timit_path: null", "timit_path: /nowhere")
                   .replace("name: synthetic", "name: timit"))
    res = sh("python -m stages.prepare --params bad.yaml --raw data/raw --out data/prepared", repo, check=False)
    assert res.returncode == 2 and "timit_path" in res.stderr
    assert (repo / "models/zforcing/model.npz").read_bytes() == before
    assert (repo / "data/prepared/manifest.json").exists()
