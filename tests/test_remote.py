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

ROOT = Path(__file__).resolve().parents[1]

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


def readme_remote_recipe(remote: Path) -> str:
    """The README's set-up of a shared remote (its `dvc remote` lines), on `remote`."""
    text = (ROOT / "README.md").read_text()
    block = text[text.index("**A shared remote.**"):].split("```")[1]
    lines = [line.split("#")[0].strip() for line in block.splitlines() if line.startswith("dvc remote")]
    assert lines and "verify true" in lines[-1], block
    return " && ".join(lines).replace("/mnt/team/zforcing-dvc", str(remote))


def test_a_corrupt_object_on_the_remote_is_refused_not_checked_out(tmp_path):
    """One flipped byte in a remote object. With the README's `verify = true`
    the pull drops it and says so; without it, the corrupt bytes are checked out as data."""
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    (repo / "dvc.yaml").write_text(PIPELINE)
    sh("git init -q && dvc init -q && dvc repro -q && git add -A && git commit -qm run", repo)
    sh(f"{readme_remote_recipe(remote)} && git commit -qam 'shared remote' && dvc push -q", repo)
    good = (repo / "prepared/frames.txt").read_bytes()
    obj = remote / "files/md5" / (h := hashlib.md5(good).hexdigest())[:2] / h[2:]
    obj.chmod(0o644)
    obj.write_bytes(b"X" + good[1:])

    clone = tmp_path / "clone"
    sh(f"git clone -q {repo} {clone}", tmp_path)
    res = sh("dvc pull prepared", clone, check=False)
    assert res.returncode == 1
    assert "Checkout failed for following targets:\nprepared\n" in res.stderr, res.stderr
    assert not (clone / "prepared").exists()
    sh("dvc pull --allow-missing", clone)  # skips it, as it skips the raw data ...
    assert not (clone / "prepared").exists()
    assert "not in cache:       prepared" in sh("dvc status", clone).stdout  # ... and says so

    # the control: without verify the same pull checks the corrupt bytes out, silently
    sh("dvc remote modify --local shared verify false && dvc pull prepared", clone)
    assert (clone / "prepared/frames.txt").read_bytes() == b"X" + good[1:]

