"""The demo notebook executed by `jupyter nbconvert --execute` (nbclient) on
the rparallel kernel, as `make demo` does, and shown by tools/show_notebook.py.

Cells are found by their nbformat cell ids, so sections can be added to the
notebook without touching this test.

The `%px` cells run on the notebook's 4-engine `Cluster(n=4)`, with
`x = range(64)` scattered in parts of 16. Their outputs are labelled per
engine (`[stdout:N] ...`, displays `Out[N:k]: ...`, errors `[N:execute]:`);
the tests check that every labelled output sits in the cell that produced
it, and in no other.
"""

from __future__ import annotations

import ast
import os
import re
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
from notebook_helpers import cell as _cell
from notebook_helpers import text as _text

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


# --------------------------------------------------------------------------
# %px and the other parallel magics

ENGINES = range(4)
# sum(x) on each engine, x being its part of range(64)
PARTIAL_SUMS = {n: str(sum(range(16 * n, 16 * n + 16))) for n in ENGINES}

# every `[stdout:N] ...` line of the notebook, by the cell that prints it
PX_STDOUT = {
    "px-print": [f"[stdout:{n}] my x starts at {16 * n}" for n in ENGINES],
    "px-targets": [f"[stdout:{n}] even engine, x starts at {16 * n}" for n in (0, 2)],
    "pxresult": [f"[stdout:{n}] slept 1 s" for n in ENGINES],
    "autopx-cell": [f"[stdout:{n}] my part of x: {16 * n} to {16 * n + 15}" for n in ENGINES],
    "pxconfig": ["[stdout:1] only engine 1 runs this"],
}

# every per-engine result (`Out[N:k]: value` displays), by cell: {engine: value};
# None: the engines' pids, checked against the @dview.remote getpid() cell
PX_RESULTS = {
    "px-getpid": None,
    "px-targets": {0: "16", 2: "16"},
    "pxresult": PARTIAL_SUMS,
    "autopx-cell": PARTIAL_SUMS,
    "pxconfig-all": {n: "16" for n in ENGINES},
}

ENGINE_RESULT_RE = re.compile(r"Out\[(\d+):(\d+)\]: (.*)", re.S)


def _code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


def _stdout(cell):
    return "".join(_text(o.text) for o in cell.outputs if o.output_type == "stream" and o.name == "stdout")


def _all_text(cell):
    """Every piece of text in the cell's outputs (streams, text/plain, tracebacks)."""
    parts = []
    for o in cell.outputs:
        if o.output_type == "stream":
            parts.append(_text(o.text))
        elif o.output_type in ("display_data", "execute_result"):
            parts.append(strip_ansi(_text(o.data.get("text/plain", ""))))
        elif o.output_type == "error":
            parts.append(strip_ansi("\n".join(o.traceback)))
    return "\n".join(parts)


def _engine_results(cell):
    """The per-engine results displayed by a %px cell: {engine: value}."""
    found = {}
    for o in cell.outputs:
        if o.output_type != "display_data":
            continue
        m = ENGINE_RESULT_RE.fullmatch(strip_ansi(_text(o.data.get("text/plain", ""))))
        if m:
            engine = int(m.group(1))
            assert engine not in found, f"cell {cell.id}: two results of engine {engine}"
            found[engine] = m.group(3)
    return found


def test_tagged_cells_raise_once(executed):
    """Without --allow-errors, the run goes on only past cells tagged
    raises-exception; each of them must really raise (one error output)."""
    nb, proc = executed[0], executed[1]
    assert "--allow-errors" not in proc.args
    tagged = [c for c in _code_cells(nb) if "raises-exception" in c.metadata.get("tags", [])]
    assert {c.id for c in tagged} >= {"error", "composite", "px-error", "tb-limit", "async-error"}
    for cell in tagged:
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert len(errors) == 1, f"cell {cell.id}: expected one error output, got {cell.outputs}"


def test_px_stdout_in_its_own_cell(executed):
    for cell in _code_cells(executed[0]):
        expected = sorted(PX_STDOUT.get(cell.id, []))
        labelled = sorted(line for line in _all_text(cell).splitlines() if "[stdout:" in line)
        assert labelled == expected, f"cell {cell.id}: [stdout:N] lines {labelled}, expected {expected}"
        if expected:
            # nothing but the engines' lines, each one whole
            assert sorted(_stdout(cell).splitlines()) == expected, (cell.id, _stdout(cell))
            assert _stdout(cell).endswith("\n"), (cell.id, _stdout(cell))


def test_px_results_in_its_own_cell(executed):
    nb = executed[0]
    for cell in _code_cells(nb):
        results = _engine_results(cell)
        if cell.id not in PX_RESULTS:
            assert not results, f"cell {cell.id} shows engine results: {results}"
            continue
        expected = PX_RESULTS[cell.id]
        if expected is not None:
            assert results == expected, f"cell {cell.id}: {results}, expected {expected}"
    # `%px import os; os.getpid()`: one pid per engine, the engines' own pids
    pids = _engine_results(_cell(nb, "px-getpid"))
    assert sorted(pids) == list(ENGINES), pids
    assert len(_cell(nb, "px-getpid").outputs) == 4, _cell(nb, "px-getpid").outputs
    remote = [o for o in _cell(nb, "remote").outputs if o.output_type == "execute_result"]
    assert len(remote) == 1, _cell(nb, "remote").outputs
    remote_pids = ast.literal_eval(remote[0].data["text/plain"])  # a list of ints
    assert sorted(int(p) for p in pids.values()) == sorted(remote_pids)


def test_px_list_comprehension(executed):
    nb = executed[0]
    assert _cell(nb, "px-list-comp").outputs == []
    cell = _cell(nb, "list-comp")
    assert _stdout(cell) == f"{[i**10 for i in range(9)]}\n"
    results = [o for o in cell.outputs if o.output_type == "execute_result"]
    assert [r.data["text/plain"] for r in results] == ["64"], cell.outputs


def test_px_noblock_then_pxresult(executed):
    nb = executed[0]
    cell = _cell(nb, "px-noblock")
    assert [o.output_type for o in cell.outputs] == ["execute_result"], cell.outputs
    assert cell.outputs[0].data["text/plain"] == "<AsyncResult(%px): pending>"
    assert cell.outputs[0].execution_count == cell.execution_count
    # the output of the engines shows in the %pxresult cell, checked above
    kinds = {o.output_type for o in _cell(nb, "pxresult").outputs}
    assert kinds == {"stream", "display_data"}, _cell(nb, "pxresult").outputs


def test_autopx_on_and_off(executed):
    nb = executed[0]
    assert _stdout(_cell(nb, "autopx-on")) == "%autopx enabled\n"
    assert _stdout(_cell(nb, "autopx-off")) == "%autopx disabled\n"
    # the cell in between ran on the engines (checked above), not locally
    assert not [o for o in _cell(nb, "autopx-cell").outputs if o.output_type == "execute_result"]
    check = _cell(nb, "autopx-check")
    assert [o.data["text/plain"] for o in check.outputs if o.output_type == "execute_result"] == ["True"]


@pytest.mark.parametrize(
    "cell_id, shown, more, error_line",
    [
        pytest.param(cell_id, shown, more, line, id=cell_id)
        for cell_id, shown, more, line in [
            ("composite", [0, 1, 2, 3], 0, "ZeroDivisionError: division by zero"),
            ("px-error", [0, 1, 2, 3], 0, "ZeroDivisionError: division by zero"),
            ("tb-limit", [0], 3, "NameError: name 'not_defined' is not defined"),
            ("async-error", [0], 3, "ZeroDivisionError: division by zero"),
        ]
    ],
)
def test_parallel_exception_cells(executed, cell_id, shown, more, error_line):
    cell = _cell(executed[0], cell_id)
    assert "raises-exception" in cell.metadata.tags
    assert [o.output_type for o in cell.outputs] == ["error"], cell.outputs
    err = cell.outputs[0]
    assert err.ename == "CompositeError", err.ename
    tb = strip_ansi("\n".join(err.traceback))
    assert [int(n) for n in re.findall(r"^\[(\d+):execute\]:", tb, re.M)] == shown, tb
    assert tb.count(error_line) == len(shown), tb
    if more:
        assert f"... {more} more exceptions ..." in tb, tb
    else:
        assert "more exceptions" not in tb, tb


def test_show_notebook_px_cells(executed):
    proc = subprocess.run(
        [sys.executable, str(SHOW), str(executed[2])], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "In [" in text and "%px print(\"my x starts at\", x[0])" in text, text
    for n in ENGINES:
        assert f"\n[stdout:{n}] my x starts at {16 * n}\n" in text, text
        assert f"\nOut[{n}:" in text, text
    assert "[display] Out[" not in text, text
    assert "<AsyncResult(%px): pending>" in text
    assert "%autopx enabled" in text and "%autopx disabled" in text
    assert "\n[0:execute]:\n" in text, text
    assert "... 3 more exceptions ..." in text


def test_show_notebook_missing_file(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SHOW), str(tmp_path / "nope.ipynb")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "no such notebook" in proc.stderr
