"""`notebooks/science.ipynb` executed by `jupyter nbconvert --execute` on the
rparallel kernel, as `make demo` does: a scientist's session with NumPy on
four engines, `%timeit` here and under `%%px`, a matplotlib figure per engine
and one in the kernel (the inline backend is the default), an ipywidgets
`interact` slider, a `%%px --progress-after` bar, and the cluster stopped at
the end.

Cells are found by their nbformat ids. The saved notebook must hold the
figures as ``image/png`` (one per engine in the `%%px` cell, each after its
``[output:N]`` label), the widget view, and no error; afterwards no process
the run started (kernel, controller, engines) may be left.
"""

from __future__ import annotations

import re
import subprocess
import sys

import nbformat
import pytest

from kernel_helpers import REPO, strip_ansi
from notebook_helpers import cell as _cell
from notebook_helpers import check_cells_ran, check_clean_notebook, check_nothing_left, execute_notebook
from notebook_helpers import stdout as _stdout
from notebook_helpers import summary as _summary
from notebook_helpers import text as _text

pytestmark = pytest.mark.timeout(300)

NOTEBOOK = REPO / "notebooks" / "science.ipynb"
COUNT = REPO / "tools" / "count_outputs.py"
PNG = "image/png"
WIDGET = "application/vnd.jupyter.widget-view+json"
ENGINES = [0, 1, 2, 3]
OUTPUT_LABEL_RE = re.compile(r"^\[output:(\d+)\]$", re.M)


def test_notebook_is_clean_and_targets_rparallel():
    nb = check_clean_notebook(NOTEBOOK)
    sources = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    # the inline backend is the default: no %matplotlib line
    assert "%matplotlib" not in sources


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Runs the notebook once through nbconvert (no --allow-errors) with its
    clusters in a temporary RPARALLEL_DIR; yields (notebook, process, path,
    leftovers)."""
    yield execute_notebook(NOTEBOOK, tmp_path_factory.mktemp("science"), 240)


def _engine_stdout(text):
    """``[stdout:N] line`` and ``[stdout:N]`` followed by lines, by engine."""
    found, engine = {}, None
    for line in text.splitlines():
        m = re.match(r"\[stdout:(\d+)\] ?(.*)", line)
        if m:
            engine, line = int(m.group(1)), m.group(2)
        assert engine is not None, f"unlabelled output line {line!r} in {text!r}"
        found[engine] = found.get(engine, "") + line + "\n"
    return found


def _with(cell, mime):
    return [o for o in cell.outputs if o.output_type in ("display_data", "execute_result") and mime in o.data]


def test_nothing_left_running(executed):
    check_nothing_left(executed)


def test_every_cell_ran_without_error(executed):
    check_cells_ran(executed[0])


def test_cluster_and_monte_carlo(executed):
    nb = executed[0]
    ids = [o for o in _cell(nb, "start").outputs if o.output_type == "execute_result"]
    assert [o.data["text/plain"] for o in ids] == ["[0, 1, 2, 3]"], _summary(_cell(nb, "start"))
    out = _stdout(_cell(nb, "monte-carlo"))
    m = re.search(r"mean of 4 engines: (\d\.\d+)", out)
    assert m, out
    assert abs(float(m.group(1)) - 3.14159) < 0.01, out
    assert len(re.findall(r"3\.\d{4}", out.splitlines()[0])) == 4, out


def test_timeit_here_and_on_each_engine(executed):
    nb = executed[0]
    local = _stdout(_cell(nb, "timeit-local"))
    assert re.search(r"per loop \(mean ± std\. dev\. of 3 runs, 20 loops each\)", local), local
    cell = _cell(nb, "timeit-px")
    per_engine = _engine_stdout(_stdout(cell))
    assert sorted(per_engine) == ENGINES, _summary(cell)
    for n, text in per_engine.items():
        # one timing per engine (perhaps after IPython's "The slowest run took..." note)
        assert len(re.findall(r"per loop \(mean ± std\. dev\. of 3 runs, 20 loops each\)", text)) == 1, (
            f"engine {n}'s %timeit line missing: {_summary(cell)}"
        )


def test_a_figure_per_engine(executed):
    cell = _cell(executed[0], "plot-px")
    pngs = _with(cell, PNG)
    assert len(pngs) >= len(ENGINES), f"{len(pngs)} PNGs: {_summary(cell)}"
    # each figure follows its engine's `[output:N]` label (a stream line, or
    # a display of its own as in ipyparallel)
    engine, seen = None, []
    for o in cell.outputs:
        if o.output_type == "stream":
            labels = OUTPUT_LABEL_RE.findall(_text(o.text))
            engine = int(labels[-1]) if labels else engine
            continue
        data = o.get("data", {})
        label = OUTPUT_LABEL_RE.fullmatch(strip_ansi(_text(data.get("text/plain", ""))).strip())
        if label and set(data) == {"text/plain"}:
            engine = int(label.group(1))
            continue
        if PNG in data:
            assert engine is not None, f"a figure without [output:N] label: {_summary(cell)}"
            seen.append(engine)
        engine = None
    assert sorted(seen) == ENGINES, f"figures of engines {seen}: {_summary(cell)}"
    for o in pngs:
        assert _text(o.data[PNG]).startswith("iVBORw0KGgo"), "not a base64 PNG"


def test_a_local_figure(executed):
    cell = _cell(executed[0], "plot-local")
    pngs = _with(cell, PNG)
    assert len(pngs) == 1, _summary(cell)
    assert "Figure" in _text(pngs[0].data.get("text/plain", "")), pngs[0].data.get("text/plain")


def test_interact_widget(executed):
    cell = _cell(executed[0], "interact")
    views = _with(cell, WIDGET)
    assert len(views) == 1, _summary(cell)
    assert views[0].data[WIDGET]["model_id"], views[0].data[WIDGET]
    # the trailing `;` hides the return value
    assert not [o for o in cell.outputs if o.output_type == "execute_result"], _summary(cell)
    # nbclient keeps the widget state, so the notebook renders the slider on opening
    state = executed[0].metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    sliders = [m for m in models.values() if m.get("model_name") == "IntSliderModel"]
    assert len(sliders) == 1 and sliders[0]["state"]["value"] == 499, sliders
    assert sliders[0]["state"]["max"] == 999


def test_progress_bar_then_output(executed):
    cell = _cell(executed[0], "progress")
    text = _stdout(cell)
    assert sorted(line for line in text.splitlines() if line.startswith("[stdout:")) == [
        f"[stdout:{n}] done" for n in ENGINES
    ], _summary(cell)
    # The bar is tqdm's widget: its view is in the cell, its final state
    # (4 of 4 engines) in the notebook's saved widget state.
    views = [
        o.data["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in cell.outputs
        if o.output_type == "display_data"
        and "application/vnd.jupyter.widget-view+json" in o.data
        and "%px" in _text(o.data.get("text/plain", ""))
    ]
    assert len(views) == 1, _summary(cell)
    state = executed[0].metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    bars = [m["state"] for m in models.values() if m.get("model_name") == "FloatProgressModel"]
    assert any(b.get("value") == 4 and b.get("max") == 4 for b in bars), bars
    texts = [m["state"].get("value", "") for m in models.values() if m.get("model_name") == "HTMLModel"]
    assert any("4/4" in str(t) for t in texts), texts


def test_count_outputs_tool(executed):
    proc = subprocess.run(
        [sys.executable, str(COUNT), str(executed[2])], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    first = proc.stdout.splitlines()[0]
    m = re.search(r": 5 figure\(s\) as image/png, 4 of them from engines \(engines: 0, 1, 2, 3\); (\d+) widget view", first)
    assert m and int(m.group(1)) >= 1, proc.stdout
    assert "cell plot-px (In [" in proc.stdout and "[output:3]" in proc.stdout, proc.stdout
    assert "cell interact (In [" in proc.stdout, proc.stdout


def test_count_outputs_tool_fails_without_figures(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nb.cells[0].outputs = [nbformat.v4.new_output("execute_result", {"text/plain": "1"}, execution_count=1)]
    path = tmp_path / "plain.ipynb"
    nbformat.write(nb, path)
    proc = subprocess.run([sys.executable, str(COUNT), str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "too few figures" in proc.stderr and "widget views" in proc.stderr, proc.stderr
    missing = subprocess.run(
        [sys.executable, str(COUNT), str(tmp_path / "nope.ipynb")], capture_output=True, text=True, timeout=60
    )
    assert missing.returncode == 2 and "no such notebook" in missing.stderr
