"""The page renderer's kernel: its log noise stays off the stage's output, cell errors do not."""
import nbformat
import papermill
import pytest

from pipeline.report import html


def notebook(root, *sources):
    cells = [nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})]
    cells += [nbformat.v4.new_code_cell(s) for s in sources]
    (root / "notebooks").mkdir()
    meta = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}}
    nbformat.write(nbformat.v4.new_notebook(cells=cells, metadata=meta), str(root / "notebooks" / "t.ipynb"))


LOG = "get_ipython().kernel.log.error('kernel-log-marker')"


@pytest.mark.parametrize("quiet", [True, False])
def test_kernel_log_lines_stay_off_the_output(tmp_path, monkeypatch, capfd, quiet):
    notebook(tmp_path, LOG, "print('cell-output', x)")
    monkeypatch.setattr(html, "REPO_ROOT", str(tmp_path))
    if not quiet:   # the control: the kernel's log does reach the stage's stderr by default
        monkeypatch.setattr(html, "KERNEL_ARGS", [])
    nb = html.execute("t.ipynb", {"x": 2})
    out, err = capfd.readouterr()
    assert ("kernel-log-marker" in out + err) is not quiet
    assert "cell-output 2" in nb.cells[-1].outputs[0]["text"]


def test_an_error_in_a_cell_still_fails_with_its_message(tmp_path, monkeypatch):
    notebook(tmp_path, "raise ValueError('cell-error-marker')")
    monkeypatch.setattr(html, "REPO_ROOT", str(tmp_path))
    with pytest.raises(papermill.PapermillExecutionError, match="cell-error-marker"):
        html.execute("t.ipynb", {})
