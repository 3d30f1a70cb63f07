"""scripts/verify.py holds a rerun to its bytes only where `numerics: exact` promises them."""
import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("verify", ROOT / "scripts/verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)


def cell(numerics="exact", device="cpu", compile_="off", machine="x86_64") -> dict:
    return {"settings": {"numerics": {"train": numerics, "eval": numerics},
                         "hardware": {"train_device": device, "eval_device": device, "machine": machine},
                         "train": {"compile": compile_}, "eval": {"compile": "off"}}}


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A git repository whose commit holds params.yaml with `committed` (None: no key)."""
    def make(committed, now, cells):
        def git(*a):
            subprocess.run(["git", *a], cwd=tmp_path, check=True, capture_output=True)
        git("init", "-q")
        key = f"numerics: {committed}\n" if committed else ""
        (tmp_path / "params.yaml").write_text("seeds: [0]\n" + key)
        git("add", "params.yaml")
        git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "run")
        (tmp_path / "params.yaml").write_text(f"seeds: [0]\nnumerics: {now}\n")
        for i, c in enumerate(cells):
            (tmp_path / f"eval/t/r{i}/s0").mkdir(parents=True)
            (tmp_path / f"eval/t/r{i}/s0/info.json").write_text(json.dumps(c))
        monkeypatch.chdir(tmp_path)
    return make


@pytest.mark.parametrize("committed, now, cells, promised", [
    ("exact", "exact", [cell(), cell()], True),
    (None, "exact", [cell()], True),                       # runs before the key were pinned
    ("exact", "fast", [cell("fast")], False),
    ("fast", "exact", [cell()], False),
    ("exact", "exact", [cell(), cell(device="cuda")], False),
    ("exact", "exact", [cell(compile_="default")], False),
    ("exact", "exact", [cell(machine="aarch64")], False),
    ("exact", "exact", [], False),
])
def test_bytes_are_the_check_only_where_promised(repo, committed, now, cells, promised):
    repo(committed, now, cells)
    assert verify.bytes_promised("HEAD") is promised
