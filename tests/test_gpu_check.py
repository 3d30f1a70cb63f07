"""benchmarks/gpu_check.sh on CPU: its dry run fills every section, and sections that fail,
run out of time or find no budget left are recorded while the script carries on."""
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ["timit_fp32", "timit_bf16", "blizzard_tf32", "blizzard_bf16", "equivalence"]


def run(tmp_path, **env):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry-run", str(out)], cwd=ROOT,
                          env={**os.environ, "PYTHON": sys.executable, **env},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["dry_run"] is True and list(result["sections"]) == SECTIONS
    assert result["env"]["torch"]
    return result["sections"]


def test_dry_run_records_every_section(tmp_path):
    sections = run(tmp_path)
    assert {k: v["status"] for k, v in sections.items()} == dict.fromkeys(SECTIONS, "ok"), \
        {k: v["tail"][-500:] for k, v in sections.items()}
    rec = sections["timit_fp32"]["records"]
    assert [r["path"] for r in rec] == ["eager"] and rec[0]["ms_per_update"] > 0
    assert rec[0]["profile"]["self_time_share"]["matmul"] > 0
    assert sections["blizzard_tf32"]["records"][0]["precision"] == "tf32"
    assert "passed" in sections["equivalence"]["tail"]


def test_sections_out_of_time_or_budget_are_recorded(tmp_path):
    # every section gets 1 s (not enough to import torch): each is stopped, none stops the run
    timed_out = run(tmp_path, GPU_CHECK_SCALE="0.001")
    assert {v["exit"] for v in timed_out.values()} == {124}
    assert {v["status"] for v in timed_out.values()} == {"timeout"}
    skipped = run(tmp_path, GPU_CHECK_BUDGET="0")
    assert {v["status"] for v in skipped.values()} == {"skipped"}
