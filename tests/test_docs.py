"""The project's documents: nothing cites a document the repository lacks, docs/ links
resolve, and docs/ covers every option and every data source."""
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
TEXT = (".py", ".md", ".yaml", ".yml", ".ipynb", ".sh", ".txt", ".ini", ".cfg", ".toml")
# documents that lived outside the repository, and numbered tickets of a tracker it lacks;
# a quoted "SPEC" (a string a test looks for) is not a citation
MISSING = re.compile(r"\bSPEC\b(?!\")|\bDVC_NOTES\b|\bARCHITECTURE\b|\bSTYLE\.md\b"
                     r"|\b[Ii]ssues? \d+")
DOC_PATH = re.compile(r"\bdocs/[\w./-]+\.md\b")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def text_files():
    names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split("\n")
    me = Path(__file__).relative_to(ROOT).as_posix()
    return [n for n in names if n.endswith(TEXT) and n != me and (ROOT / n).is_file()]


def test_no_reference_to_a_document_the_repository_lacks():
    bad = []
    for name in text_files():
        for no, line in enumerate((ROOT / name).read_text(errors="replace").splitlines(), 1):
            bad += [f"{name}:{no}: {m.group(0)}" for m in MISSING.finditer(line)]
            bad += [f"{name}:{no}: {p}" for p in DOC_PATH.findall(line) if not (ROOT / p).is_file()]
    assert not bad, "cites what the repository does not have:\n" + "\n".join(bad)


def test_links_inside_docs_resolve():
    docs = sorted((ROOT / "docs").glob("*.md"))
    assert {p.name for p in docs} >= {"README.md", "model.md", "data.md"}
    index = (ROOT / "docs/README.md").read_text()
    broken = []
    for doc in docs:
        assert doc.name == "README.md" or f"]({doc.name})" in index, f"docs/README.md omits {doc.name}"
        for target in LINK.findall(doc.read_text()):
            if not target.startswith(("http://", "https://")) and not (doc.parent / target).exists():
                broken.append(f"{doc.name}: {target}")
    assert not broken, broken
    assert "docs/README.md" in (ROOT / "README.md").read_text()


def test_model_doc_names_every_option():
    conf = yaml.safe_load((ROOT / "conf/config.yaml").read_text())
    text = (ROOT / "docs/model.md").read_text()
    missing = [f"{section}.{key}" for section in ("model", "train", "eval")
               for key in conf[section] if not re.search(rf"`({section}\.)?{key}`", text)]
    missing += [key for key in ("aux_weight",) if f"`{key}`" not in text]
    assert not missing, f"docs/model.md does not describe: {', '.join(missing)}"


def test_data_doc_names_every_source_and_data_key():
    from pipeline.datasets.registry import DATA_KEYS, SOURCES
    text = (ROOT / "docs/data.md").read_text()
    sections = dict(re.findall(r"\n## .*?\(`benchmarks\.(\w+)`\)(.*?)(?=\n## |\Z)", text, re.S))
    assert set(sections) == set(SOURCES)
    for bench, sources in SOURCES.items():
        for source in sources:
            assert f"`{source}`" in sections[bench], (bench, source)
    missing = sorted({key for keys in DATA_KEYS.values() for key in keys} - set(
        re.findall(r"`data\.(\w+)`", text)))
    assert not missing, f"docs/data.md does not describe data.{', data.'.join(missing)}"


# run a stage as `python -m`, but stop at parse_args and print the options that lack help
NO_HELP = """
import argparse, runpy, sys
def report(self, *a, **k):
    print(" ".join(x.dest for x in self._actions if not x.help) or "-")
    sys.exit(0)
argparse.ArgumentParser.parse_args = report
runpy.run_module(sys.argv[1], run_name="__main__")
"""


def test_every_stage_option_has_help():
    stages = sorted(p.stem for p in (ROOT / "stages").glob("*.py")
                    if "ArgumentParser(" in p.read_text())
    assert {"check", "download", "prepare", "train", "evaluate", "report"} <= set(stages)
    for stage in stages:
        res = subprocess.run([sys.executable, "-c", NO_HELP, f"stages.{stage}"], cwd=ROOT,
                             capture_output=True, text=True, check=True)
        assert res.stdout.strip() == "-", f"stages/{stage}.py: no help= for {res.stdout.strip()}"


def test_fault_table_names_only_tests_that_exist():
    table = (ROOT / "docs" / "faults.md").read_text()
    named = set(re.findall(r"`(?:test_\w+\.py::)?(test_\w+?)(?:\[[^\]]*\])?`", table))
    named |= set(re.findall(r"`(test_\w+)`,", table))
    source = "\n".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    assert len(named) > 30
    assert not sorted(n for n in named if f"def {n}(" not in source)
