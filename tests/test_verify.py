"""scripts/verify.py: the comparison on constructed numbers (within, beyond, missing), and
the whole script on a tiny committed run: edited committed metrics, unreadable files."""
import hashlib
import importlib.util
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

spec = importlib.util.spec_from_file_location("verify", Path(__file__).resolve().parents[1] / "scripts/verify.py")
verify = importlib.util.module_from_spec(spec)
spec.loader.exec_module(verify)


def test_compare_applies_each_metrics_tolerance():
    f = "eval/timit/zforcing/s0/metrics.json"
    table = {"metrics/timit_cells.json": json.dumps({f: {"bound": -1000.0, "kl": 5.0, "active_units": 10,
                                                         "note": "x"}})}
    committed = verify.cell_numbers(table)
    assert set(committed) == {(f, "bound"), (f, "kl"), (f, "active_units")}  # numbers only
    within = {(f, "bound"): -1019.0, (f, "kl"): 6.4, (f, "active_units"): 12}
    assert verify.compare(committed, within)["ok"].all()
    beyond = {(f, "bound"): -1021.0, (f, "kl"): 6.6, (f, "active_units"): 13}
    assert not verify.compare(committed, beyond)["ok"].any()
    missing = verify.compare(committed, {(f, "bound"): -1000.0})
    assert missing.set_index("metric")["ok"].to_dict() == {"active_units": False, "bound": True, "kl": False}


def git(repo, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@example.invalid",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@example.invalid")
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def run_repo(tmp_path, monkeypatch):
    """A committed run: a table's cells file and headline file (summarize's), and the
    dvc.lock that records their md5."""
    cells = {f"eval/timit/{row}/s0/metrics.json": {"bound": -1000.0 - i, "kl": 5.0}
             for i, row in enumerate(("rnn_gauss", "zforcing"))}
    files = {"metrics/timit_cells.json": json.dumps(cells, indent=1).encode(),
             "metrics/timit.json": json.dumps({"rnn_gauss": {"s0": -1000.0}, "zforcing": {"s0": -1001.0}}).encode()}
    (tmp_path / "metrics").mkdir()
    for path, raw in files.items():
        (tmp_path / path).write_bytes(raw)
    outs = [{"path": p, "hash": "md5", "md5": hashlib.md5(raw).hexdigest(), "size": len(raw)}
            for p, raw in files.items()]
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump({"schema": "2.0", "stages": {
        "summarize@timit": {"cmd": "true", "outs": outs}, "report": {"cmd": "true", "outs": [
            {"path": "reports", "hash": "md5", "md5": "0" * 32 + ".dir"}]}}}))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "run")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_an_untouched_run_is_byte_for_byte(run_repo, capsys):
    assert verify.main([]) == 0
    assert capsys.readouterr().out.startswith("byte for byte")


def test_committed_metrics_edited_after_the_run_are_refused(run_repo, capsys):
    """A number edited and committed with dvc.lock untouched is not the run's;
    the workspace equals the commit, yet verify fails and names the file."""
    for name in ("metrics/timit_cells.json", "metrics/timit.json"):  # the cell, and its headline
        f = run_repo / name
        f.write_text(f.read_text().replace("-1001.0", "-900.0"))
    git(run_repo, "commit", "-qam", "better number")
    assert verify.main([]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == [f"{name} at HEAD is not the file its dvc.lock records (edited after the run?): "
                   "its numbers are not the run's" for name in ("metrics/timit.json", "metrics/timit_cells.json")]
    # against the run before the edit, the edited file is a rerun that moved beyond tolerance
    assert verify.main(["--rev", "HEAD~1"]) == 1
    assert "not byte for byte: 1 of 4 metrics differ from HEAD~1, 1 beyond tolerance" in capsys.readouterr().out


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", "\xff", '{"a": 1}'])
def test_an_unreadable_metrics_file_is_one_line(run_repo, capsys, text):
    f = run_repo / "metrics/timit_cells.json"
    f.write_bytes(text.encode("latin-1"))
    assert verify.main([]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: metrics/timit_cells.json in the workspace")


def test_an_unreadable_lock_or_revision_is_one_line(run_repo, capsys):
    assert verify.main(["--rev", "nonesuch"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    (run_repo / "dvc.lock").write_text("stages: [unclosed")
    git(run_repo, "commit", "-qam", "broken lock")
    assert verify.main([]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: dvc.lock at HEAD is not a DVC lock file (ParserError); restore it with "
                   "`git checkout -- dvc.lock`"]
    git(run_repo, "rm", "-rq", "metrics")  # a run recorded before the cells files existed
    git(run_repo, "commit", "-qm", "no cells")
    assert verify.main([]) == 2
    assert capsys.readouterr().err.splitlines() == [
        "error: HEAD has no metrics/<bench>_cells.json (a run recorded before they existed?): "
        "pass a later commit with --rev"]


def test_findings_rerun_is_checked_within_tolerance(tmp_path, monkeypatch, capsys):
    """`verify.py --findings`: the workspace's findings/metrics.json against the committed one."""
    cells = {"eval/timit/zforcing/s0/metrics.json": {"bound": -1000.0, "kl": 5.0},
             "eval/timit/zforcing/s1/metrics.json": {"bound": -1010.0, "kl": 4.0}}
    (tmp_path / "findings").mkdir()
    path = tmp_path / "findings/metrics.json"
    path.write_text(json.dumps(cells))
    git(tmp_path, "init", "-q")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "findings")
    monkeypatch.chdir(tmp_path)
    cells["eval/timit/zforcing/s1/metrics.json"]["bound"] = -1015.0  # 0.5 %: within
    run = tmp_path / "worktree"  # a rerun's cells, collected as scripts/findings.sh does
    for name, metrics in cells.items():
        (run / name).parent.mkdir(parents=True)
        (run / name).write_text(json.dumps(metrics))
    assert verify.main(["--collect", str(run)]) == 0
    assert json.loads(path.read_text()) == cells
    assert verify.main(["--findings"]) == 0
    assert "1 of 4 metrics differ" in capsys.readouterr().out
    cells["eval/timit/zforcing/s0/metrics.json"]["bound"] = -1100.0  # 10 %: beyond
    path.write_text(json.dumps(cells))
    assert verify.main(["--findings"]) == 1
    assert "s0/metrics.json" in capsys.readouterr().out
    path.write_text("{not json")
    assert verify.main(["--findings"]) == 2


def test_a_rerun_with_other_params_names_the_keys_that_differ(run_repo, capsys):
    """An experiment (`dvc exp run -S ...`) moves numbers on purpose: verify says which
    params.yaml keys differ from the commit, on one line."""
    (run_repo / "params.yaml").write_text(yaml.safe_dump({"seeds": [0], "train": {"lr": 0.001, "beta1": 0.9}}))
    git(run_repo, "add", "params.yaml")
    git(run_repo, "commit", "-qm", "params")
    f = run_repo / "metrics/timit_cells.json"
    f.write_text(f.read_text().replace("-1001.0", "-900.0"))
    assert verify.main([]) == 1
    assert "params.yaml differs" not in capsys.readouterr().out  # same params: no hint
    (run_repo / "params.yaml").write_text(yaml.safe_dump({"seeds": [0], "train": {"lr": 0.002, "beta1": 0.9},
                                                          "aux_weight": 0.5}))
    assert verify.main([]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1] == ("params.yaml differs from HEAD in: aux_weight, train.lr; an experiment's numbers "
                      "are expected to move")
