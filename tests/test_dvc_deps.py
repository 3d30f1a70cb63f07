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
