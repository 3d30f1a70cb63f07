"""The paper profile's per-benchmark recipes: composed from conf/ as `dvc exp run -S
profile=paper` composes them, every value equals README's "Paper profile recipes" table,
the table lists every value the profile sets for a table, and the settings reach the
training configs."""
import re
from pathlib import Path

import pytest
import yaml

from stages import params as P

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    from dvc.utils.hydra import compose_and_dump
    out = tmp_path_factory.mktemp("paper") / "params.yaml"
    compose_and_dump(out, str(ROOT / "conf"), None, "config", str(ROOT), ["profile=paper"])
    return yaml.safe_load(out.read_text())


def recipe_rows() -> list[tuple[str, str, object]]:
    """(table, key, value) of each row of README's recipes table."""
    text = (ROOT / "README.md").read_text()
    section = text.split("### Paper profile recipes", 1)[1].split("\n#", 1)[0]
    rows = []
    for line in section.splitlines():
        m = re.match(r"\| (\w+) \| `([\w.]+)` \| ([^|]+) \|", line)
        if m:
            rows.append((m[1], m[2], yaml.safe_load(m[3].strip())))
    return rows


def resolved(params: dict, bench: str, key: str):
    """The value a table trains with: its override, else the shared one."""
    if key == "aux_weight":
        own = P.bench_params(params, bench).get("aux_weight")
        return params["aux_weight"] if own is None else own
    section, name = key.split(".")
    return P.section(params, bench, section)[name]


def test_readme_table_equals_the_composed_profile(paper):
    rows = recipe_rows()
    assert len(rows) >= 30
    wrong = [(b, k, v, resolved(paper, b, k)) for b, k, v in rows if resolved(paper, b, k) != v]
    assert not wrong, f"README recipe rows that differ from the paper profile: {wrong}"


def test_readme_table_lists_every_value_the_profile_sets_per_table():
    profile = yaml.safe_load((ROOT / "conf/profile/paper.yaml").read_text())
    listed = {(b, k) for b, k, _ in recipe_rows()}
    missing = []
    for bench, b in profile["benchmarks"].items():
        if "aux_weight" in b:
            missing += [] if (bench, "aux_weight") in listed else [(bench, "aux_weight")]
        for section in ("model", "train", "eval"):
            missing += [(bench, f"{section}.{k}") for k in b.get(section) or {}
                        if (bench, f"{section}.{k}") not in listed]
    assert not missing, f"the README recipes table omits {missing}"


def test_each_table_gets_its_own_recipe(paper):
    aux = {b: resolved(paper, b, "aux_weight") for b in ("timit", "blizzard", "mnist", "imdb")}
    assert aux["imdb"] == 0.0005 and aux["timit"] == 0.015
    assert resolved(paper, "blizzard", "train.kl_skip") == 10000.0
    assert resolved(paper, "timit", "train.kl_skip") == 0.0
    assert resolved(paper, "blizzard", "train.aux_anneal_epochs") == 2.0
    for bench in ("timit", "blizzard"):
        assert (resolved(paper, bench, "train.lr_schedule"), resolved(paper, bench, "train.select")) \
            == ("constant", "last")
    for bench in ("mnist", "imdb"):
        assert resolved(paper, bench, "train.beta2") == 0.99
        assert resolved(paper, bench, "train.aux_anneal_updates") == 0


def test_imdb_recipe_reaches_the_training_configs(paper):
    from pipeline.rows import get_row
    row = get_row("imdb", "zforcing_aux")
    cfg, opts = P.train_settings(paper, "imdb", row, 0)
    assert (cfg.beta2, cfg.aux_weight, cfg.aux_anneal_updates, cfg.valid_iwae_k) == (0.99, 0.0005, 0, 25)
    assert (cfg.lr_schedule, cfg.lr_floor, opts.select) == ("halve", 1e-5, "best")
    model = P.model_settings(paper, "imdb", row, {"kind": "tokens", "x_dim": 100})
    assert model.bwd_in_aux and model.bwd == 0.0
    blizzard, _ = P.train_settings(paper, "blizzard", get_row("blizzard", "zforcing_aux"), 0)
    assert (blizzard.aux_anneal_epochs, blizzard.kl_skip) == (2.0, 10000.0)


def test_bwd_in_aux_is_refused_where_the_model_lacks_it(paper):
    from pipeline.rows import get_row
    params = {**paper, "benchmarks": {**paper["benchmarks"],
                                      "mnist": {**paper["benchmarks"]["mnist"], "model": {"bwd_in_aux": True}}}}
    with pytest.raises(P.ParamError, match=r"^benchmarks\.mnist\.model\.bwd_in_aux: only the language model"):
        P.model_settings(params, "mnist", get_row("mnist", "zforcing_aux"), {"kind": "binary", "x_dim": 1})
    with pytest.raises(P.ParamError, match="train.valid_iwae_k"):
        P.checked("train.valid_iwae_k", -1)
