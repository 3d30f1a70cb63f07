"""A shared DVC remote, on a three-stage stand-in of the pipeline in a temporary git repo:
`dvc push` sends every output except the download stage's (marked `push: false`, as
licensed raw data must be), and a fresh clone gets the rest with `dvc pull
--allow-missing`, after which `dvc repro --allow-missing` reruns nothing."""
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import yaml

PIPELINE = """\
stages:
  download:                      # stands for download@timit: licensed audio
    cmd: mkdir -p raw && echo licensed-audio > raw/corpus.txt
    outs:
      - raw:
          push: false
  prepare:
    cmd: mkdir -p prepared && tr a-z A-Z < raw/corpus.txt > prepared/frames.txt
    deps: [raw]
    outs: [prepared]
  train:
    cmd: wc -c prepared/frames.txt > model.txt
    deps: [prepared]
    outs: [model.txt]
"""


def sh(cmd: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(cmd, cwd=cwd, env=env, shell=True, capture_output=True, text=True)
    if check and res.returncode:
        raise AssertionError(f"{cmd} failed ({res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res


def ran(res) -> list[str]:
    return [line.split("'")[1] for line in res.stdout.splitlines() if line.startswith("Running stage")]


def remote_hashes(remote: Path) -> set[str]:
    return {p.parent.name + p.name.removesuffix(".dir") for p in (remote / "files" / "md5").rglob("*")
            if p.is_file()}


def out_hash(repo: Path, stage: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return lock["stages"][stage]["outs"][0]["md5"].removesuffix(".dir")


def test_push_skips_licensed_raw_data_and_a_clone_pulls_the_rest_without_rerunning(tmp_path):
    repo, remote, clone = tmp_path / "repo", tmp_path / "remote", tmp_path / "clone"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(PIPELINE)
    sh("git init -q && dvc init -q && dvc repro -q && git add -A && git commit -qm run", repo)
    sh(f"dvc remote add -d shared {remote} && git commit -qam 'shared remote'", repo)
    sh("dvc push", repo)

    pushed = remote_hashes(remote)
    raw_file = hashlib.md5((repo / "raw/corpus.txt").read_bytes()).hexdigest()
    assert out_hash(repo, "download") not in pushed and raw_file not in pushed
    assert {out_hash(repo, "prepare"), out_hash(repo, "train")} <= pushed

    sh(f"git clone -q {repo} {clone}", tmp_path)
    plain = sh("dvc pull", clone, check=False)  # raw is not on the remote: pull says so
    assert plain.returncode != 0 and "raw" in plain.stderr
    sh("dvc pull --allow-missing", clone)
    assert (clone / "model.txt").read_text() == (repo / "model.txt").read_text()
    assert (clone / "prepared/frames.txt").read_text() == "LICENSED-AUDIO\n"
    assert not (clone / "raw").exists()

    assert ran(sh("dvc repro --allow-missing", clone)) == []   # nothing reruns
    # whoever holds the licence recreates raw/; its hash matches, so nothing downstream runs
    assert ran(sh("dvc repro", clone)) == ["download"]
