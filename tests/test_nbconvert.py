"""The demo notebook executed by `jupyter nbconvert --execute` (nbclient) on
the rparallel kernel, as `make demo` does, and shown by tools/show_notebook.py.

Cells are found by their nbformat cell ids, so sections can be added to the
notebook without touching this test.
"""

from __future__ import annotations

import os
import subprocess
import sys

import nbformat
import pytest

from kernel_helpers import (
    JUPYTER,
    KERNEL_NAME,
    REPO,
    kill_pids,
    strip_ansi,
    wait_no_process_with,
)

pytestmark = pytest.mark.timeout(300)

NOTEBOOK = REPO / "notebooks" / "direct-interface.ipynb"
SHOW = REPO / "tools" / "show_notebook.py"


def test_notebook_is_clean_and_targets_rparallel():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    ks = nb.metadata["kernelspec"]
    assert ks["name"] == "rparallel"
    assert ks["language"] == "python"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {cell.get('id')} is stored with outputs"
            )


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Run the notebook once through nbconvert; yield (notebook, completed process)."""
    tmp = tmp_path_factory.mktemp("nbconvert")
    runtime = tmp / "runtime"
    runtime.mkdir()
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(runtime), IPYTHONDIR=str(tmp / "ipython"))
    cmd = [
        str(JUPYTER),
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        f"--ExecutePreprocessor.kernel_name={KERNEL_NAME}",
        "--ExecutePreprocessor.timeout=120",
        str(NOTEBOOK),
        "--output-dir",
        str(tmp),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=REPO)
    finally:
        # the kernel nbconvert started is identified by its connection file
        left = wait_no_process_with(str(runtime), 10)
        kill_pids(left)
    assert proc.returncode == 0, f"nbconvert failed:\n{proc.stderr[-4000:]}"
    out = tmp / NOTEBOOK.name
    nb = nbformat.read(out, as_version=4)
    yield nb, proc, out, left


def _cell(nb, cell_id):
    for cell in nb.cells:
        if cell.get("id") == cell_id:
            return cell
    raise AssertionError(f"no cell with id {cell_id!r} in the notebook")


def _text(value):
    return "".join(value) if isinstance(value, list) else value


def test_no_kernel_left_running(executed):
    _, _, _, left = executed
    assert not left, f"kernel processes still running 10 s after nbconvert exited: {left}"


def test_all_code_cells_ran_in_order(executed):
    nb = executed[0]
    counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
    assert None not in counts, counts
    assert counts == list(range(1, len(counts) + 1)), counts
    for cell in nb.cells:
        if cell.cell_type != "code" or "raises-exception" in cell.metadata.get("tags", []):
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"cell {cell.get('id')} raised: {errors}"


def test_stream_output(executed):
    cell = _cell(executed[0], "hello")
    stdout = "".join(_text(o.text) for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")
    stderr = "".join(_text(o.text) for o in cell.outputs if o.output_type == "stream" and o.name == "stderr")
    v = sys.version_info  # the venv's Python, the same the kernel embeds
    assert stdout == f"Hello from the rparallel kernel\nPython {v.major}.{v.minor}\n"
    assert stderr == "(this line goes to stderr)\n"


def test_execute_result(executed):
    cell = _cell(executed[0], "compute")
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(results) == 1, cell.outputs
    assert results[0].data["text/plain"] == "285"
    assert results[0].execution_count == cell.execution_count


def test_rich_repr(executed):
    cell = _cell(executed[0], "rich-repr")
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert len(results) == 1, cell.outputs
    data = results[0].data
    assert data["text/plain"] == "Table(4 rows)"
    html = _text(data["text/html"])
    assert html.startswith("<table>") and "<td>3</td><td>9</td>" in html, html
    assert "n²" in html


def test_display_outputs(executed):
    cell = _cell(executed[0], "display")
    kinds = [o.output_type for o in cell.outputs]
    assert kinds == ["display_data", "display_data"], kinds
    assert [o.data["text/plain"] for o in cell.outputs] == ["Table(2 rows)", "Table(3 rows)"]
    assert all("text/html" in o.data for o in cell.outputs)


def test_error_cell(executed):
    cell = _cell(executed[0], "error")
    assert "raises-exception" in cell.metadata.tags
    errors = [o for o in cell.outputs if o.output_type == "error"]
    assert len(errors) == 1 and len(cell.outputs) == 1, cell.outputs
    err = errors[0]
    assert err.ename == "ZeroDivisionError"
    assert err.evalue == "division by zero"
    tb = strip_ansi("\n".join(err.traceback))
    assert f"Cell In[{cell.execution_count}], line 1" in tb, tb
    assert "----> 1 1 / 0" in tb, tb


def test_kernel_continues_after_error(executed):
    cell = _cell(executed[0], "after-error")
    text = "".join(_text(o.text) for o in cell.outputs if o.output_type == "stream")
    assert text == "still running, squares = [0, 1, 4, 9]\n"


def test_show_notebook_tool(executed):
    out_path = executed[2]
    proc = subprocess.run(
        [sys.executable, str(SHOW), str(out_path)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "In [1]: import sys" in text, text
    assert "Hello from the rparallel kernel" in text
    assert "[stderr] (this line goes to stderr)" in text
    assert "Out[2]: 285" in text, text
    assert "Out[3]: Table(4 rows)  [also: text/html]" in text, text
    assert "[display] Table(2 rows)  [also: text/html]" in text, text
    assert "ZeroDivisionError: division by zero" in text
    assert "----> 1 1 / 0" in text
    assert "\x1b[" not in text
    assert "still running, squares = [0, 1, 4, 9]" in text
    # markdown only on request
    assert "Direct interface tutorial" not in text
    md = subprocess.run(
        [sys.executable, str(SHOW), "--markdown", str(out_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "Direct interface tutorial" in md.stdout


def test_show_notebook_missing_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SHOW), str(tmp_path / "nope.ipynb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no such notebook" in proc.stderr
