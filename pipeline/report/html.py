"""papermill + nbconvert -> one small, self-contained, byte-stable HTML page.

papermill runs a notebook from notebooks/ with the kernel named ("python3", the
environment's own) in the current folder, so paths stay relative and no machine path
reaches a page. The executed notebook is then normalised (cell ids cell-<n>, no papermill
or timing metadata, no execution counts, no stderr: warnings are not report content) and
exported with nbconvert's `basic` template (no notebook CSS, no scripts, code hidden)
inside a minimal page with a few lines of CSS.

The kernel's own log is kept to CRITICAL: jupyter_client interrupts (SIGINT) every kernel it
shuts down, and an ipykernel caught mid-message logs "KeyboardInterrupt caught in kernel"
at ERROR after its page is done. Errors in a cell are not log lines: they come back as
papermill's exception, with their traceback.
"""
from __future__ import annotations

import os
import re

import nbformat
import papermill
from jinja2 import DictLoader
from nbconvert import HTMLExporter

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
KERNEL_ARGS = ["--IPKernelApp.log_level=CRITICAL"]
EXTERNAL = re.compile(r"<script[^>]+src|<link|https?://cdn", re.IGNORECASE)
PAGE = """{%- extends 'index.html.j2' -%}
{%- block header -%}<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"/><title>{{ resources.metadata.name }}</title>
<style>
body { font-family: sans-serif; font-size: 14px; max-width: 1380px; margin: 8px auto; }
table.t { border-collapse: collapse; font-size: 12px; margin: 6px 0; }
table.t th, table.t td { border-bottom: 1px solid #ddd; padding: 2px 7px; text-align: right; }
table.t th { background: #f2f2f2; }
table.t td:first-child, table.t th:first-child, table.txt td { text-align: left; }
table.txt td { font-family: monospace; }
.clip { display: inline-block; margin: 3px; vertical-align: top; }
details { margin: 6px 0; } summary { cursor: pointer; font-weight: bold; }
a.anchor-link { display: none; }
</style></head><body>
{%- endblock header -%}
{%- block footer -%}
</body></html>
{% endblock footer -%}
"""


def execute(notebook: str, parameters: dict) -> nbformat.NotebookNode:
    path = os.path.join(REPO_ROOT, "notebooks", notebook)
    if not papermill.inspect_notebook(path):   # papermill would only warn and ignore the values
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    paths = os.environ.get("PYTHONPATH", "").split(os.pathsep)
    if REPO_ROOT not in paths:   # the kernel imports pipeline.report (idempotent: thread-safe)
        os.environ["PYTHONPATH"] = os.pathsep.join([REPO_ROOT] + [p for p in paths if p])
    return papermill.execute_notebook(path, None, parameters=parameters, kernel_name="python3",
                                      cwd=".", progress_bar=False, log_output=False,
                                      extra_arguments=KERNEL_ARGS)


def normalise(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The executed notebook as a pure function of its inputs."""
    nb.metadata = nbformat.from_dict({})
    for i, cell in enumerate(nb.cells):
        cell.id, cell.metadata = f"cell-{i}", nbformat.from_dict({})
        if cell.cell_type == "code":
            cell.execution_count = None
            cell.outputs = [o for o in cell.outputs if o.get("name") != "stderr"]
            for o in cell.outputs:
                o.pop("execution_count", None)
    return nb


def render(notebook: str, parameters: dict, out_path: str, title: str) -> int:
    """Execute, normalise and export one page; returns its size in bytes."""
    exporter = HTMLExporter(template_name="basic", extra_loaders=[DictLoader({"page.j2": PAGE})],
                            template_file="page.j2", exclude_input=True,
                            exclude_input_prompt=True, exclude_output_prompt=True)
    text, _ = exporter.from_notebook_node(normalise(execute(notebook, parameters)),
                                          resources={"metadata": {"name": title}})
    if EXTERNAL.search(text):
        raise RuntimeError(f"{out_path} would load an external resource: "
                           f"{EXTERNAL.search(text).group(0)!r}")
    with open(out_path, "wb") as f:
        return f.write(text.encode("utf-8"))
