"""Every key of params.yaml has a type and range rule (stages/params.py, RULES), and the
check stage turns any bad value into one line that names the dotted key, before any other
stage runs."""
import sys
from pathlib import Path

import pytest
import yaml

from stages import check
from stages import params as P
from stages.common import run

ROOT = Path(__file__).resolve().parents[1]


def composed_files():
    """params.yaml and every file it is composed from (conf/config.yaml, the profiles)."""
    yield "params.yaml", P.read(ROOT / "params.yaml")
    for path in [ROOT / "conf/config.yaml", *sorted((ROOT / "conf/profile").glob("*.yaml"))]:
        tree = yaml.safe_load(path.read_text()) or {}
        tree.pop("defaults", None)
        yield path.relative_to(ROOT).as_posix(), tree


def check_stage(tmp_path, capsys, monkeypatch, params: dict) -> list[str]:
    """Run the check stage's CLI in this process on `params`; its stderr lines (empty when
    the values pass)."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    monkeypatch.setattr(sys, "argv", ["check", "--params", str(path), "--out", str(tmp_path / "ok"),
                                      "--rows", str(tmp_path / "rows")])
    capsys.readouterr()
    try:
        run(check.main)
    except SystemExit as stop:
        assert stop.code == 2
    else:
        assert (tmp_path / "ok").exists()
    return capsys.readouterr().err.splitlines()


def edited(dotted: str, value) -> dict:
    """params.yaml with one key set (created if absent)."""
    params = P.read(ROOT / "params.yaml")
    *path, last = dotted.split(".")
    node = params
    for k in path:
        node = node[k]
    node[last] = value
    return params


def test_every_key_of_params_yaml_has_a_rule_its_value_passes():
    seen = set()
    for name, tree in composed_files():
        for key, value in P.leaves(tree):
            assert P.rule_for(key) is not None, f"{name}: {key} has no rule in stages/params.py RULES"
            P.checked(key, value)
            seen.add(P.pattern(key))
    # and the table holds no rule for a key that no longer exists
    unused = {k for k in P.RULES if k not in seen and f"benchmarks.*.{k}" not in seen}
    assert not unused, f"rules for keys that no params file has: {sorted(unused)}"


def merged(base: dict, over: dict) -> dict:
    """Hydra's composition of a profile over conf/config.yaml: mappings merge, the rest is replaced."""
    for k, v in over.items():
        base[k] = merged(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return base


@pytest.mark.parametrize("profile", sorted(p.stem for p in (ROOT / "conf/profile").glob("*.yaml")))
def test_every_profile_passes_the_check(profile):
    """A rule must not refuse what a profile sets (tiny trains one of imdb's two beta rows)."""
    config = yaml.safe_load((ROOT / "conf/config.yaml").read_text())
    config.pop("defaults")
    over = yaml.safe_load((ROOT / f"conf/profile/{profile}.yaml").read_text()) or {}
    assert check.check(merged(config, over))


def test_a_value_of_the_wrong_type_anywhere_is_one_line_naming_its_key(tmp_path, capsys, monkeypatch):
    keys = [key for key, _ in P.leaves(P.read(ROOT / "params.yaml"))]
    assert len(keys) > 90
    for key in keys:
        lines = check_stage(tmp_path, capsys, monkeypatch, edited(key, {"wrong": "type"}))
        assert len(lines) == 1 and lines[0].startswith(f"error: {key}"), (key, lines)


@pytest.mark.parametrize("key, value, says", [
    ("report.dpi", 0, "must be in [20, 300]"),
    ("report.n_mels", 0, "must be in [8, 256]"),
    ("report.audio_seconds", -1, "must be positive"),
    ("report.audio_examples", -2, "cannot be negative"),
    ("profile_name", [1], "expected a string"),
    ("seeds", [0, 0], "distinct"),
    ("benchmarks.imdb.betas.zforcing_beta_low", 0.01, "not a beta row of this table"),
    ("benchmarks.imdb.betas.zforcing_beta_hi", "lots", "expected a number"),
    ("benchmarks.imdb.betas.zforcing_beta_hi", -0.1, "cannot be negative"),
    ("benchmarks.mnist.train.max_updates", 0, "must be at least 1"),
    ("benchmarks.timit.data.minutes", 0, "must be positive"),
    ("benchmarks.blizzard.data.streams", 0, "must be at least 1"),
    ("model.dropout", 1.0, "[0, 1)"),
    ("train.beta2", 1.0, "(0, 1)"),
    ("train.kl_cap", 2.0, "(0, 1]"),
    ("eval.iwae_chunk", 0, "must be at least 1"),
    ("eval.device", "gpu", "auto, cpu, cuda or cuda:N"),
    # a relation between two keys names the one that was set, then the other
    ("train.lr", 0.00005, "is below train.lr_floor=0.0001"),
    ("train.kl_cap", 0.1, "train.kl_start=0.2 is above train.kl_cap=0.1"),
])
def test_a_value_out_of_range_is_one_line_naming_its_key(tmp_path, capsys, monkeypatch, key, value, says):
    lines = check_stage(tmp_path, capsys, monkeypatch, edited(key, value))
    assert len(lines) == 1, lines
    named = lines[0].startswith(f"error: {key}:") or f" {key}=" in lines[0]  # the key itself, not a longer one
    assert lines[0].startswith("error: ") and named and says in lines[0], lines[0]


def test_lr_below_the_floor_of_one_table_names_that_tables_keys(tmp_path, capsys, monkeypatch):
    params = edited("benchmarks.imdb.train.lr", 0.000001)  # imdb's own floor is 1e-05
    lines = check_stage(tmp_path, capsys, monkeypatch, params)
    assert lines == ["error: benchmarks.imdb.train.lr=1e-06 is below benchmarks.imdb.train.lr_floor=1e-05, "
                     "where the halving schedule stops: lower benchmarks.imdb.train.lr_floor with it "
                     "(or set train.lr_schedule: constant)"]
    params["train"]["lr_schedule"] = "constant"  # no floor without the schedule
    params["benchmarks"]["imdb"]["train"]["lr"] = 0.002
    assert check_stage(tmp_path, capsys, monkeypatch, params) == []
