"""End to end: the repository copied into a fresh git repo, the tiny profile composed by
Hydra, `dvc repro`, then experiments that must rerun only what reads the changed key.
A second copy checks that `-S` wins over the default profile on one train stage."""
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SKIP = ("data/", "models/", "eval/", "live/", "reports/", ".ckpt/", "dvc.lock", ".venv/")


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


def git_files(*args) -> list:
    out = subprocess.run(["git", "ls-files", *args], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [f for f in out.split("\n") if f]


def copy_repo(dst: Path, profile: str | None = None) -> Path:
    """What a fresh clone holds, with the working tree's edits: that includes the committed
    default run's tables under metrics/ (in git), which other profiles must not trip over."""
    tracked_eval = set(git_files("eval/"))
    for f in git_files("-co", "--exclude-standard"):
        if (f.startswith(SKIP) and f not in tracked_eval) or not (ROOT / f).exists():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dst / f)
    if profile:  # switch for good (conf's defaults list), and compose for plain `dvc repro`
        from dvc.utils.hydra import compose_and_dump
        conf = dst / "conf" / "config.yaml"
        conf.write_text(conf.read_text().replace("  - profile: default\n", f"  - profile: {profile}\n"))
        compose_and_dump(dst / "params.yaml", str(dst / "conf"), None, "config", str(dst), [])
    sh("git init -q && git add -A && git commit -qm init", dst)
    return dst


def ran(out: str) -> set:
    return {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}


def alive_in_group(pgid: int) -> list:
    """PIDs of the process group's members that are not zombies (from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            pids.append(int(stat.parent.name))
    return pids


def params(repo) -> dict:
    return yaml.safe_load((repo / "params.yaml").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    dst = copy_repo(tmp_path_factory.mktemp("repo"), profile="tiny")
    # a cell tiny does not ask for, as another profile's run leaves in a workspace
    stale = dst / "eval/timit/srnn/s0"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "metrics.json").write_text(json.dumps({"bound": -98765.4321}))
    sh("dvc repro", dst)
    sh("git add -A && git commit -qm repro", dst)  # experiments start from a commit
    return dst


@pytest.fixture
def repo(built):
    """The module's repository, put back to its commit after each test, pass or fail, so
    one test's failure cannot leave the next a half-restored workspace."""
    yield built
    sh("git checkout -q -f HEAD -- . && git clean -qfd && dvc checkout -f -q", built)


def cells(repo):
    p = params(repo)
    for bench, b in p["benchmarks"].items():
        for row in b["rows"] + b["aux_rows"]:
            for s in p["seeds"]:
                yield bench, row, s


def test_repro_writes_metrics_for_every_cell(repo):
    found = list(cells(repo))
    assert len(found) >= 10 and {b for b, _, _ in found} == {"timit", "blizzard", "mnist", "imdb"}
    for bench, row, s in found:
        cell = repo / "eval" / bench / row / f"s{s}"
        m = json.loads((cell / "metrics.json").read_text())
        assert list(m)[0] == "bound" and math.isfinite(m["bound"]) and len(m) <= 8
        info = json.loads((cell / "info.json").read_text())
        assert (info["bench"], info["row"], info["seed"]) == (bench, row, s)
        assert info["settings"]["profile"] == "tiny"
        assert info["train_seed"] == params(repo)["train"]["seed"] + s
        assert len(info["provenance"]["model_sha256"]) == 64
        if info["exact"]:
            assert m["kl"] == 0 and info["bound_kind"] == "exact"
        else:  # the importance-weighted bound is at least the ELBO on average
            assert m["bound"] > m["elbo"] - 1e-3 * abs(m["elbo"])
        aux = info["settings"]["aux_weight"]
        assert (aux > 0) == (row.endswith("_aux") or "beta" in row), (row, aux)
    # no output names where this clone or its environment lives: their hashes are in
    # dvc.lock, which must be the same in every clone
    for path in [*repo.glob("data/*/prepared/*.json"), *repo.glob("models/*/*/s*/*.json"),
                 *repo.glob("eval/*/*/s*/*.json")]:
        text = path.read_text()
        assert str(repo) not in text and sys.prefix not in text, path
    seeds = {json.loads((repo / f"models/timit/zforcing_aux/s{s}/model.json").read_text())
             ["train_config"]["seed"] for s in params(repo)["seeds"]}
    assert len(seeds) == len(params(repo)["seeds"])  # each seed index trains its own cell


def test_repro_writes_self_contained_reports(repo):
    index = (repo / "reports" / "index.html").read_text()
    for bench in ("timit", "blizzard", "mnist", "imdb"):
        page = repo / "reports" / f"{bench}.html"
        assert page.name in index
        html = page.read_text()
        assert "cdn." not in html and "<script src=\"http" not in html
        assert "data:image/png;base64" in html
        assert page.stat().st_size < 2_000_000
        assert "seeds" in html and "[" in html  # mean [min – max] over the two seeds
    timit = (repo / "reports" / "timit.html").read_text()
    assert any(v in timit for v in ("holds", "does not hold", "not resolved"))
    # cells that tiny does not train (another profile's, left in the workspace) stay off its pages
    from pipeline.report.tables import num
    stale = [json.loads(p.read_text())["bound"] for p in repo.glob("eval/timit/*/s0/metrics.json")
             if p.parent.parent.name not in params(repo)["benchmarks"]["timit"]["rows"]
             + params(repo)["benchmarks"]["timit"]["aux_rows"]]
    assert stale, "the planted cell is missing"
    for bound in stale:
        assert num(bound) not in timit and num(bound, signed=True) not in timit
    assert "data:audio/ogg" in timit


def test_second_repro_is_a_noop_and_status_clean(repo):
    out = sh("dvc repro", repo).stdout
    assert "Running stage" not in out
    assert "up to date" in sh("dvc status", repo).stdout


def test_killed_repro_leaves_no_partial_output_and_recovers_without_retraining(repo):
    """SIGKILL `dvc repro` (and its stage) mid-training, then empty dvc.lock as a kill during
    its write would: the README's recovery, `git checkout dvc.lock && dvc repro`, restores
    every output from the run-cache, byte for byte, without running a stage."""
    import signal
    import time
    out = repo / "models/timit/rnn_gauss/s0"
    model, lock = (out / "model.npz").read_bytes(), (repo / "dvc.lock").read_text()
    # DVC as this process's own child (no shell), so wait() reaps it: DVC's stage lock names
    # its PID, and an unreaped zombie still "exists" for the next dvc's lock check
    dvc = str(Path(sys.executable).parent / "dvc")
    proc = subprocess.Popen([dvc, "repro", "-f", "-s", "train_timit@rnn_gauss-0"], cwd=repo, env=_env(),
                            start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while subprocess.run(["pgrep", "-f", "stages.train timit rnn_gauss"], capture_output=True).returncode:
        assert time.monotonic() < deadline and proc.poll() is None, "the train stage never started"
        time.sleep(0.05)
    time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    # and the stage's own processes, orphaned by the kill: gone (zombies hold no lock or file)
    deadline = time.monotonic() + 60
    while alive_in_group(proc.pid):
        assert time.monotonic() < deadline, f"still running after SIGKILL: {alive_in_group(proc.pid)}"
        time.sleep(0.05)
    # DVC removed the output before running the stage; our stage swaps in whole folders only
    assert not out.exists() or sorted(p.name for p in out.iterdir()) == ["history.json", "model.json", "model.npz"]
    (repo / "dvc.lock").write_text("")
    res = sh("git checkout dvc.lock && dvc repro", repo)
    assert ran(res.stdout) == set(), res.stdout
    assert (out / "model.npz").read_bytes() == model and (repo / "dvc.lock").read_text() == lock
    assert "up to date" in sh("dvc status", repo).stdout


def test_verify_compares_bytes_then_numbers(repo):
    """scripts/verify.py: identical after a no-op; a moved number is listed, and fails
    beyond its tolerance."""
    assert "byte for byte" in sh("python scripts/verify.py", repo).stdout
    path, cell = repo / "metrics/timit_cells.json", "eval/timit/zforcing_aux/s0/metrics.json"
    table = json.loads(path.read_text())
    table[cell]["bound"] *= 1.001
    path.write_text(json.dumps(table))
    res = sh("python scripts/verify.py", repo, check=False)  # numerics: exact promised bytes
    assert res.returncode == 1 and "promises the same bytes" in res.stdout, res.stdout + res.stderr
    # a `fast` rerun promises numbers only: within tolerance passes, beyond it fails
    p = params(repo)
    p["numerics"] = "fast"
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    for factor, fails in ((1.001, False), (1.05, True)):
        table = json.loads(sh("git show HEAD:metrics/timit_cells.json", repo).stdout)
        table[cell]["bound"] *= factor
        path.write_text(json.dumps(table))
        res = sh("python scripts/verify.py", repo, check=False)
        assert res.returncode == int(fails), res.stdout + res.stderr
        assert cell in res.stdout and "bound" in res.stdout


def test_aux_weight_experiment_reruns_only_aux_cells(repo):
    # which stages read aux_weight, over every table (a dry run lists the stages whose own
    # inputs changed; their evaluations follow from the new models) ...
    p = params(repo)
    p["aux_weight"] = 0.02
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    stages = ran(sh("dvc repro --dry", repo).stdout)
    # check and report read all of params.yaml (report: the page header lists the overrides)
    assert stages - {"check", "report"} == {f"train_{b}_aux@zforcing_aux-{s}" for b in ("timit", "blizzard", "mnist", "imdb")
                                            for s in p["seeds"]}, stages
    sh("git checkout -q params.yaml", repo)
    # ... and, on one cell for real, that the value reaches the model and the page's record
    out = sh("dvc exp run -S aux_weight=0.02 evaluate_timit_aux@zforcing_aux-0", repo).stdout
    assert {s for s in ran(out) if s != "check"} == {"train_timit_aux@zforcing_aux-0",
                                                     "evaluate_timit_aux@zforcing_aux-0"}
    info = json.loads((repo / "eval/timit/zforcing_aux/s0/info.json").read_text())
    assert info["settings"]["aux_weight"] == 0.02
    assert params(repo)["aux_weight"] == 0.02 and params(repo)["profile_name"] == "tiny"
    sh("git checkout -q params.yaml dvc.lock metrics && dvc checkout -q", repo)


def test_a_model_key_reruns_only_the_rows_that_read_it(repo):
    """model.z_force: once the check stage has rewritten data/rows, DVC finds only the
    Z-Forcing rows' training stages out of date, not the LSTM baselines'."""
    p = params(repo)
    p["model"]["z_force"] = not p["model"]["z_force"]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    sh("dvc repro -q check", repo)
    todo = {s for s in json.loads(sh("dvc status --json", repo).stdout) if s.startswith("train_")}
    rows = {s.split("@")[1].rsplit("-", 1)[0] for s in todo}
    assert todo and rows <= {"zforcing_aux", "zforcing_beta_lo"}, todo
    sh("git checkout -q params.yaml && dvc repro -q check && git checkout -q dvc.lock", repo)
    assert "up to date" in sh("dvc status", repo).stdout


def test_adding_a_seed_runs_only_the_new_cells(repo):
    p = params(repo)
    p["seeds"] = p["seeds"] + [max(p["seeds"]) + 1]
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    new = max(p["seeds"])
    todo = set(json.loads(sh("dvc status --json", repo).stdout))  # stages out of date
    cell_stages = {s for s in todo if s.startswith(("train_", "evaluate_"))}
    assert cell_stages and all(s.endswith(f"-{new}") for s in cell_stages), todo
    assert any(s.startswith("train_timit@") for s in cell_stages), todo
    sh("git checkout -q params.yaml", repo)


def test_profile_and_key_compose(repo):
    sh("dvc exp run -S profile=tiny -S model.rnn_dim=24 check", repo)
    p = params(repo)
    assert p["model"]["rnn_dim"] == 24 and p["profile_name"] == "tiny"
    sh("git checkout -q params.yaml dvc.lock metrics && dvc checkout -q", repo)


def test_bad_parameters_are_one_line_and_delete_nothing(repo):
    model = repo / "models/timit/zforcing_aux/s0/model.npz"
    before = model.read_bytes()
    res = sh("dvc exp run -S train.lrr=0.1", repo, check=False)
    assert res.returncode and "lrr" in (res.stdout + res.stderr).splitlines()[0]
    res = sh("dvc exp run -S profile=nonesuch", repo, check=False)
    assert res.returncode and "nonesuch" in (res.stdout + res.stderr)
    sh("git checkout -q params.yaml", repo)
    # the form DVC itself suggests: the check stage refuses it before any stage runs
    res = sh("dvc exp run -S +train.lrr=0.1", repo, check=False)
    assert res.returncode and "error: train.lrr: unknown key" in res.stdout + res.stderr
    assert model.read_bytes() == before
    sh("git checkout -q params.yaml dvc.lock metrics && dvc checkout -q", repo)
    for edit, word in (("lr: 0.001", "lr: fast"), ("z_force: true", "z_force: 'false'"),
                       ("source: embedded", "source: timitt"), ("batch_size: 8", "batch_size: -8")):
        bad = repo / "bad.yaml"
        text = (repo / "params.yaml").read_text()
        assert edit in text, edit
        bad.write_text(text.replace(edit, word, 1))
        res = sh("python -m stages.check --params bad.yaml --out /dev/null", repo, check=False)
        assert res.returncode == 2 and res.stderr.strip().count("\n") == 0, (word, res.stderr)
        assert res.stderr.startswith("error: "), res.stderr
    assert model.read_bytes() == before


def test_stage_errors_are_one_line(repo):
    res = sh("python -m stages.train timit zforcing_typo 0 --data data/timit/prepared --out /tmp/x", repo,
             check=False)
    assert res.returncode == 2 and res.stderr.strip().count("\n") == 0 and "zforcing_typo" in res.stderr
    bad = repo / "bad.yaml"
    text = (repo / "params.yaml").read_text()
    bad.write_text(text.replace("source: embedded", "source: timit_ldc", 1))
    res = sh("python -m stages.download timit --params bad.yaml --out /tmp/x-raw", repo, check=False)
    assert res.returncode == 2 and "benchmarks.timit.data.path" in res.stderr


def test_set_param_wins_over_the_default_profile(tmp_path):
    """The bug that made `dvc exp show` lie: -S must beat the profile (default sets lr 0.002)."""
    dst = copy_repo(tmp_path / "d")
    assert params(dst)["profile_name"] == "default" and params(dst)["train"]["lr"] != 0.0005
    sh("dvc exp run -S train.lr=0.0005 -S train.max_updates=10 -S benchmarks.timit.data.minutes=1 "
       "train_timit@rnn_gauss-0", dst)
    saved = json.loads((dst / "models/timit/rnn_gauss/s0/model.json").read_text())
    assert saved["train_config"]["lr"] == 0.0005 and saved["train_config"]["max_updates"] == 10
    assert params(dst)["train"]["lr"] == 0.0005 and params(dst)["profile_name"] == "default"


def test_restore_after_an_experiment_is_clean(repo):
    """scripts/restore.py after an experiment that adds a seed and changes aux_weight (its
    page edit emulated): params, lock, metrics, pages and .gitignore entries back to the
    commit, the new seed's outputs gone, `git status` and `dvc status` clean."""
    new = max(params(repo)["seeds"]) + 1
    model = repo / "models/timit/zforcing_aux/s0/model.npz"
    before = model.read_bytes()
    sh(f"dvc exp run -S aux_weight=0.03 -S 'seeds=[0,{new}]' "
       f"evaluate_timit_aux@zforcing_aux-{new}", repo)
    with open(repo / "reports/index.html", "a") as page:
        page.write("profile changed")
    assert (repo / f"eval/timit/zforcing_aux/s{new}/metrics.json").exists()
    res = sh("python scripts/restore.py", repo)
    assert "restored" in res.stdout and res.stdout.count("\n") == 1, res.stdout
    assert sh("git status --porcelain", repo).stdout == ""
    assert not (repo / f"models/timit/zforcing_aux/s{new}").exists()
    assert model.read_bytes() == before
    assert "up to date" in sh("dvc status", repo).stdout
