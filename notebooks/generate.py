"""Writes the papermill templates of this folder (run after editing; commit the .ipynb files).

    python notebooks/generate.py

The notebooks stay thin: a `parameters` cell (papermill replaces it with the stage's
values), then cells that display sections built by pipeline.report.pages.
"""
import os

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = os.path.dirname(os.path.abspath(__file__))

SETUP = """import warnings
warnings.filterwarnings("ignore")
from IPython.display import HTML, display
from pipeline.report import pages"""


def code(src, tags=()):
    c = new_code_cell(src)
    if tags:
        c.metadata["tags"] = list(tags)
    return c


def speech_table():
    cells = [
        code('# Defaults; the report stage passes every value explicitly.\n'
             'column = "timit"            # paper column: timit | blizzard | mnist\n'
             'eval_dir = "eval"\n'
             'models_dir = "models"\n'
             'prepared_dir = "data/prepared"\n'
             'lock_path = "dvc.lock"\n'
             'profile = ""\n'
             'aux_weight = None\n'
             'report = {}                 # params.yaml report: section (validated by the stage)',
             tags=["parameters"]),
        code(SETUP + "\n\npage = pages.ColumnPage(column, eval_dir, models_dir, prepared_dir, lock_path,\n"
             "                        report, profile, aux_weight)\ndisplay(HTML(page.header()))"),
        new_markdown_cell("## Our numbers beside the paper's"),
        code("display(HTML(page.main_table()))"),
        new_markdown_cell("## Does the paper's ordering hold here?"),
        code("display(HTML(page.ordering()))"),
        new_markdown_cell("## Model, protocol and quirk settings"),
        code("display(HTML(page.settings()))"),
        new_markdown_cell("## Learning curves"),
        code("display(HTML(page.learning_curves()))"),
        new_markdown_cell("## KL and aux curves, and their weights"),
        code("display(HTML(page.kl_aux_curves()))"),
        new_markdown_cell("## Latent usage: KL per latent dimension, active units"),
        code("display(HTML(page.latent_usage()))"),
        new_markdown_cell("## Spectrograms and audio"),
        code("display(HTML(page.audio()))"),
        new_markdown_cell("## Published context (later results, for orientation only)"),
        code("display(HTML(page.context()))"),
        new_markdown_cell("## Provenance"),
        code("display(HTML(page.provenance()))"),
    ]
    return cells


def index():
    return [
        code('eval_dir = "eval"\n'
             'lock_path = "dvc.lock"\n'
             'profile = ""\n'
             'aux_weight = None\n'
             'pages_list = []             # [[column, file name], ...] of the rendered pages',
             tags=["parameters"]),
        code(SETUP + "\n\ndisplay(HTML(pages.index_html(eval_dir, lock_path, pages_list, profile, aux_weight)))"),
    ]


def write(name, cells):
    nb = new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"}})
    for i, c in enumerate(nb.cells):
        c.id = f"cell-{i}"
    nbformat.validate(nb)
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        nbformat.write(nb, f)


if __name__ == "__main__":
    write("speech_table.ipynb", speech_table())
    write("index.ipynb", index())
