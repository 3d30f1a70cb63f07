"""scripts/env.sh with a fake interpreter (no network, no real venv): it creates .venv only
when missing, installs only when requirements.txt changed, and refuses a Python other
than 3.11 in one line."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# logs its arguments; answers the version question from $FAKE_VERSION; `-m venv DIR` makes
# a venv whose python is this same fake; runs other `-c` code for real; `-m pip` is a no-op
FAKE = f"""#!{sys.executable}
import os, shutil, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(" ".join(args) + "\\n")
if args[0] == "-c" and "version_info" in args[1]:
    print(os.environ["FAKE_VERSION"])
elif args[0] == "-c":
    exec(args[1])
elif args[:2] == ["-m", "venv"]:
    os.makedirs(args[2] + "/bin", exist_ok=True)
    shutil.copy(__file__, args[2] + "/bin/python")
    with open(args[2] + "/bin/activate", "w") as f:
        f.write('PATH="$PWD/' + args[2] + '/bin:$PATH"\\n')
"""


def source_env(tmp_path, version="3.11"):
    env = dict(os.environ, FAKE_LOG=str(tmp_path / "log"), FAKE_VERSION=version,
               PATH=f"{tmp_path / 'fakebin'}{os.pathsep}{os.environ['PATH']}")
    env.pop("PYTHON", None)
    (tmp_path / "log").write_text("")
    res = subprocess.run(["bash", "-c", "set -euo pipefail; . scripts/env.sh; echo sourced"],
                         cwd=tmp_path / "repo", env=env, capture_output=True, text=True)
    return res, (tmp_path / "log").read_text()


def setup(tmp_path):
    (tmp_path / "fakebin").mkdir()
    (tmp_path / "fakebin/python3").write_text(FAKE)
    (tmp_path / "fakebin/python3").chmod(0o755)
    (tmp_path / "repo/scripts").mkdir(parents=True)
    shutil.copy(ROOT / "scripts/env.sh", tmp_path / "repo/scripts/env.sh")
    (tmp_path / "repo/requirements.txt").write_text("numpy==2.4.0\n")


def test_env_installs_only_when_requirements_change(tmp_path):
    setup(tmp_path)
    res, log = source_env(tmp_path)
    assert res.stdout == "sourced\n", res.stderr
    assert "-m venv .venv" in log and "-m pip install -q -r requirements.txt" in log
    res, log = source_env(tmp_path)          # nothing changed: no venv, no pip
    assert res.stdout == "sourced\n", res.stderr
    assert "venv" not in log and "pip" not in log
    (tmp_path / "repo/requirements.txt").write_text("numpy==2.4.1\n")
    res, log = source_env(tmp_path)
    assert res.stdout == "sourced\n" and "venv" not in log and "-r requirements.txt" in log


def test_env_refuses_another_python_in_one_line(tmp_path):
    setup(tmp_path)
    res, log = source_env(tmp_path, version="3.12")
    assert res.returncode and res.stdout == ""
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1, res.stderr
    assert "3.12" in res.stderr and "3.11" in res.stderr and "PYTHON=" in res.stderr
    assert not (tmp_path / "repo/.venv").exists() and "pip" not in log


def test_a_venv_symlink_is_ignored(tmp_path):
    """.venv may be a symlink to a shared environment: `.venv/` would match a folder only."""
    shutil.copy(ROOT / ".gitignore", tmp_path / ".gitignore")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / ".venv").symlink_to(tmp_path / "elsewhere")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    assert subprocess.run(["git", "check-ignore", "-q", ".venv"], cwd=tmp_path).returncode == 0
