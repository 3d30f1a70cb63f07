"""dvc.yaml declares every file a stage's script can import, so an edit to any of them
reruns the stage (a missing dep means a stale result that `dvc status` calls up to date)."""
import ast
import json
from pathlib import Path

import yaml

from stage_imports import covered, import_closure

ROOT = Path(__file__).resolve().parents[1]


def stages():
    for name, stage in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        stage = stage.get("do", stage)  # foreach stages
        yield name, stage["cmd"].split()[2], stage.get("deps", [])


def notebook_imports() -> set[str]:
    mods = set()
    for nb in ROOT.glob("notebooks/*.ipynb"):
        for cell in json.loads(nb.read_text())["cells"]:
            if cell["cell_type"] == "code":
                for node in ast.walk(ast.parse("".join(cell["source"]))):
                    if isinstance(node, ast.ImportFrom) and node.module:
                        mods.add(node.module)
    return mods


def test_every_stage_depends_on_the_code_it_imports():
    missing = {}
    for name, module, deps in stages():
        files = import_closure(ROOT, module)
        if module == "stages.report":  # papermill runs the notebooks, which import the library
            for mod in notebook_imports():
                files |= import_closure(ROOT, mod)
        gaps = sorted(f for f in files if not covered(f, deps))
        if gaps:
            missing[name] = gaps
    assert not missing, missing


def test_closure_sees_lazy_and_relative_imports(tmp_path):
    """The check above can fail: a function-level import and a relative one both count."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "a.py").write_text("def f():\n    from .b import g\n")
    (tmp_path / "pkg" / "b.py").write_text("import pkg.c\n")
    (tmp_path / "pkg" / "c.py").write_text("")
    assert import_closure(tmp_path, "pkg.a") == {"pkg/__init__.py", "pkg/a.py", "pkg/b.py", "pkg/c.py"}
    assert not covered("pkg/c.py", ["pkg/a.py", "pkgx"]) and covered("pkg/c.py", ["pkg"])


def resolved_stages() -> dict:
    """DVC's own resolution of dvc.yaml: addressing -> cmd, deps in order, params, outs."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {s.addressing: {"cmd": s.cmd, "deps": [d.def_path for d in s.deps if not d.def_path.endswith(".yaml")],
                               "params": sorted(p for d in s.deps if d.def_path.endswith(".yaml") for p in d.params),
                               "outs": [(o.def_path, o.use_cache, o.metric) for o in s.outs]}
                for s in repo.index.stages}


def test_each_tables_merged_groups_resolve_like_timits_with_its_name():
    """dvc.yaml writes TIMIT's train/evaluate groups out and merges them into the other
    tables' (YAML anchors, a stage-level `vars: bench`): each merged group, as DVC resolves
    it, is TIMIT's with the table's name swapped in (IMDB writes text.json, not samples), and
    names no other table."""
    stages = resolved_stages()
    templates, seen = {}, set()
    for name, s in stages.items():
        group, _, cell = name.partition("@")
        if not group.startswith(("train_", "evaluate_")):
            continue
        kind, bench, *suffix = group.split("_")
        row, seed = cell.rsplit("-", 1)
        text = (json.dumps(s).replace(f"/{row}/s{seed}", "/<cell>").replace(f" {row} {seed} ", " <cell> ")
                .replace(f"data/rows/{bench}/{row}.json", "data/rows/<b>/<row>.json"))
        others = {"timit", "blizzard", "mnist", "imdb"} - {bench}
        assert not any(f"/{o}/" in text or f".{o}." in text for o in others), (name, text)
        text = text.replace(bench, "<b>").replace("text.json", "samples.npz")
        if kind == "train" and suffix == ["beta"]:   # the beta rows read their betas
            assert '"benchmarks.<b>.betas"' in text
            text = text.replace(', "benchmarks.<b>.betas"', "").replace('"benchmarks.<b>.betas", ', "")
        key = (kind, suffix == ["aux"])
        templates.setdefault(key, text)
        assert text == templates[key], (name, text, templates[key])
        seen.add(group)
    assert len(seen) == 18 and len(stages) == 74
