"""scripts/restore.py on a toy DVC project with the pipeline's layout: after an experiment
that changes a value and adds a seed, `git status` is clean and the outputs are the
commit's; in a fresh clone (empty cache) it says so in one line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# each cell writes a cached model and a cached eval folder; a summary writes a headline
# metric and every cell's numbers to git, and a report page in git: the same kinds of
# outputs as the real pipeline
STEP = """\
import json, pathlib, sys, yaml
job, seed = sys.argv[1], sys.argv[2:] and sys.argv[2]
w = yaml.safe_load(open("params.yaml"))["w"]
if job == "train":
    pathlib.Path(f"models/s{seed}").write_text(str(w + int(seed)))
elif job == "evaluate":
    pathlib.Path(f"eval/s{seed}").mkdir(parents=True, exist_ok=True)
    pathlib.Path(f"eval/s{seed}/info.txt").write_text("model " + seed)
    pathlib.Path(f"eval/s{seed}/metrics.json").write_text(json.dumps({"bound": w}))
elif job == "summarize":
    pathlib.Path("metrics").mkdir(exist_ok=True)
    cells = {p.as_posix(): json.loads(p.read_text()) for p in sorted(pathlib.Path("eval").glob("*/metrics.json"))}
    pathlib.Path("metrics/table_cells.json").write_text(json.dumps(cells))
    pathlib.Path("metrics/table.json").write_text(json.dumps({k: v["bound"] for k, v in cells.items()}))
else:
    pathlib.Path("reports").mkdir(exist_ok=True)
    pathlib.Path("reports/index.html").write_text(f"w = {w}")
"""
DVC_YAML = """\
stages:
  train:
    matrix:
      seed: ${seeds}
    cmd: python step.py train ${item.seed}
    params: [w]
    outs:
      - models/s${item.seed}
  evaluate:
    matrix:
      seed: ${seeds}
    cmd: python step.py evaluate ${item.seed}
    deps:
      - models/s${item.seed}
    outs:
      - eval/s${item.seed}/info.txt
      - eval/s${item.seed}/metrics.json
  summarize:
    cmd: python step.py summarize
    deps: [eval]
    metrics:
      - metrics/table.json:
          cache: false
    outs:
      - metrics/table_cells.json:
          cache: false
  report:
    cmd: python step.py report
    deps: [eval]
    outs:
      - reports:
          cache: false
"""


def run(cmd, cwd, check=True):
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t.invalid")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    res = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    if check and res.returncode:
        raise AssertionError(f"{cmd}: {res.returncode}\n{res.stdout}\n{res.stderr}")
    return res


RESTORE = f"{sys.executable} scripts/restore.py"


@pytest.fixture
def project(tmp_path):
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/restore.py", repo / "scripts/restore.py")
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "step.py").write_text(STEP)
    (repo / "models").mkdir()
    (repo / "params.yaml").write_text("w: 1\nseeds: [0]\n")
    run("git init -q && dvc init -q && dvc repro -q && git add -A && git commit -qm run", repo)
    return repo


def snapshot(repo):
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in repo.rglob("*")
            if p.is_file() and ".git" not in p.parts and ".dvc" not in p.parts}


def test_restore_after_an_experiment_leaves_git_status_clean(project):
    before = snapshot(project)
    run("dvc exp run -q -S w=5 -S 'seeds=[0,1]'", project)
    assert (project / "models/s1").exists() and run("git status --porcelain", project).stdout
    res = run(RESTORE, project)
    assert "removed" in res.stdout
    assert run("git status --porcelain", project).stdout == ""
    assert snapshot(project) == before
    assert "up to date" in run("dvc status", project).stdout


def test_restore_in_a_fresh_clone_is_one_line(project):
    clone = project.parent / "clone"
    run(f"git clone -q {project} {clone}", project.parent)
    (clone / "params.yaml").write_text("w: 7\nseeds: [0]\n")   # an edit to undo all the same
    res = run(RESTORE, clone, check=False)
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.count("\n") == 1 and "not in the local cache" in res.stderr, res.stderr
    assert "dvc pull" in res.stderr and "dvc repro" in res.stderr
    assert run("git status --porcelain", clone).stdout == ""


def test_restore_keeps_an_unsaved_output_unless_forced(project):
    model = project / "models/s0"
    model.chmod(0o644)
    model.write_text("half written")
    res = run(RESTORE, project, check=False)
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: models/s0: ") and "--force" in res.stderr
    assert model.read_text() == "half written"
    run(f"{RESTORE} --force", project)
    assert model.read_text() == "1" and run("git status --porcelain", project).stdout == ""
