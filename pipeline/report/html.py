"""papermill + nbconvert -> self-contained, byte-stable HTML pages.

- papermill runs a template from notebooks/ with explicit parameters and the kernel named
  explicitly ("python3", the environment's own kernel). The kernel runs in `cwd` (paths
  passed as parameters stay relative, so they never put a machine's absolute path into a
  page) and finds `pipeline` through PYTHONPATH.
- The executed notebook is normalised before export: cell ids become cell-<n>, papermill
  and execution-timing metadata are dropped, execution counts cleared, stderr streams
  removed (warnings and logs are not report content and carry machine paths).
- nbconvert's lab template is extended (templates/selfcontained.html.j2) with the
  head-script blocks emptied: no require.js, MathJax, mermaid or widget scripts from a
  CDN. Code cells are hidden; figures and audio are base64 inside the outputs.
- Writes are atomic: a file goes to a temporary sibling and is renamed into place.
"""
from __future__ import annotations

import os
import re
import tempfile

import nbformat
import papermill
from nbconvert import HTMLExporter

KERNEL = "python3"
HERE = os.path.dirname(os.path.abspath(__file__))
TEMPLATES = os.path.join(HERE, "templates")
TEMPLATE_FILE = "selfcontained.html.j2"
REPO_ROOT = os.path.dirname(os.path.dirname(HERE))
NOTEBOOKS = os.path.join(REPO_ROOT, "notebooks")
CDN_PATTERNS = re.compile(r"https?://cdn|<script[^>]+src\s*=", re.IGNORECASE)


def execute(template: str, parameters: dict, cwd: str = ".") -> nbformat.NotebookNode:
    """Run a notebook template with papermill; returns the executed notebook (nothing written)."""
    if not papermill.inspect_notebook(template):
        raise ValueError(f"{template} has no cell tagged 'parameters': papermill would ignore "
                         f"the stage's values")
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = REPO_ROOT + (os.pathsep + old if old else "")
    try:
        nb = papermill.execute_notebook(
            template, None, parameters=parameters, kernel_name=KERNEL, cwd=cwd,
            progress_bar=False, log_output=False, report_mode=False)
    finally:
        if old is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = old
    return nb


def normalise(nb: nbformat.NotebookNode, title: str) -> nbformat.NotebookNode:
    """Make an executed notebook a pure function of its inputs (ids, metadata, counts)."""
    nb.metadata = nbformat.from_dict({
        "kernelspec": {"name": KERNEL, "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
        "title": title,
    })
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
        keep = {k: v for k, v in cell.metadata.items() if k in ("tags",)}
        cell.metadata = nbformat.from_dict(keep)
        if cell.cell_type == "code":
            cell.execution_count = None
            outs = []
            for out in cell.get("outputs", []):
                if out.get("output_type") == "stream" and out.get("name") == "stderr":
                    continue
                if "execution_count" in out:
                    out["execution_count"] = None
                outs.append(out)
            cell.outputs = outs
    return nb


def to_html(nb: nbformat.NotebookNode) -> str:
    exporter = HTMLExporter(template_file=os.path.join(TEMPLATES, TEMPLATE_FILE),
                            exclude_input=True, exclude_input_prompt=True,
                            exclude_output_prompt=True)
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": nb.metadata["title"]}})
    bad = CDN_PATTERNS.search(body)
    if bad:
        raise RuntimeError(f"rendered page references an external script: {bad.group(0)!r}")
    return body


def write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".html", dir=d)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def render(template: str, parameters: dict, out_path: str, title: str, cwd: str = ".") -> str:
    """Execute, normalise and export one page; returns out_path."""
    nb = normalise(execute(template, parameters, cwd), title)
    write_atomic(out_path, to_html(nb))
    return out_path
