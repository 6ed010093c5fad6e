"""End-to-end tests of IPython on the engines, through ``%px``: engine
cells run through IPython's InteractiveShell as the kernel's do, so magics,
``!cmd``, ``IPython.display`` and inline matplotlib work there, with each
engine's output labelled as the README's "Output" section says
(``[stdout:N]``, ``[output:N]`` then the display, ``Out[N:k]``, read with
any ANSI colours stripped; errors as one error of ``[N:execute]:``
blocks).

One kernel (module scope, its own temporary ``RPARALLEL_DIR``) starts a
4-engine cluster inside itself (``ipp.Cluster(n=4).start_and_connect_sync()``).
The fixture then, in this order, records whether an engine that only
served ``apply`` imported IPython (it must not: IPython is loaded on first
need), and runs the module's first three ``%px`` cells (a value, a magic,
a value) for the execution-count check. After the module the kernel is
shut down and no engine or controller of that ``RPARALLEL_DIR`` may be
left. Every wait is bounded.
"""

from __future__ import annotations

import ast
import base64
import json
import re
import shutil
import socket
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass

import pytest

from cluster_helpers import GONE_TIMEOUT, wait_cluster_gone, wait_gone
from kernel_helpers import (
    describe,
    drain,
    engine_blocks,
    execute,
    execute_error,
    execute_ok,
    Execution,
    interrupt_cell_with_children,
    IS_RPARALLEL,
    kill_pids,
    pids_with_cmdline,
    shutdown_and_check,
    start_cell,
    start_kernel,
    strip_ansi,
    traceback_text,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="the %px magics are rparallel's"),
    pytest.mark.timeout(180),
]

N_ENGINES = 4
ALL = list(range(N_ENGINES))
# the first matplotlib import on 4 engines at once may build its font cache
PLOT_TIMEOUT = 120
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


# --------------------------------------------------------------------------
# helpers


def run(kc, code: str, timeout: float = 60) -> Execution:
    return execute_ok(kc, code, timeout=timeout)


LABEL = re.compile(r"\[(stdout|stderr|output):(\d+)\](?: (.*))?")
OUT = re.compile(r"Out\[(\d+):(\d+)\]: (.*)", re.S)


def engine_lines(ex: Execution, name: str = "stdout") -> tuple[dict[int, list[str]], list[str]]:
    """Each engine's lines on stream ``name``, following the labels
    (``[stdout:N] x`` is one line; ``[stdout:N]`` alone: the following
    lines up to the next label), and the unlabelled lines. Consecutive
    stream messages are read as one text."""
    per_engine: dict[int, list[str]] = defaultdict(list)
    stray: list[str] = []
    texts: list[str] = []
    for m in ex.outputs:
        if m["msg_type"] == "stream" and m["content"]["name"] == name:
            text = strip_ansi(m["content"]["text"])
            if texts and texts[-1] is not None:
                texts[-1] += text
            else:
                texts.append(text)
        elif texts and texts[-1] is not None:
            texts.append(None)  # something else between two runs of text
    for text in filter(None, texts):
        current = None
        for line in text.splitlines():
            m = LABEL.fullmatch(line)
            if m and m.group(1) == "output":
                current = None
            elif m:
                assert m.group(1) == name, f"{line!r} on the {name} stream"
                if m.group(3) is None:
                    current = int(m.group(2))
                else:
                    per_engine[int(m.group(2))].append(m.group(3))
                    current = None
            elif current is None:
                stray.append(line)
            else:
                per_engine[current].append(line)
    return dict(per_engine), stray


def labelled_displays(ex: Execution) -> list[tuple[int, dict]]:
    """``(engine, data)`` of each display_data that is not an ``Out[N:k]``
    result, in order. Each must follow (as the very next output) a stdout
    stream whose last line is its ``[output:N]`` label."""
    found = []
    outputs = ex.outputs
    for i, m in enumerate(outputs):
        if m["msg_type"] != "display_data":
            continue
        data = m["content"]["data"]
        if OUT.fullmatch(strip_ansi(data.get("text/plain", ""))):
            continue
        prev = outputs[i - 1] if i else None
        assert prev is not None and prev["msg_type"] == "stream" and prev["content"]["name"] == "stdout", (
            f"display {i} is not preceded by an [output:N] label: {describe(outputs)}"
        )
        last = strip_ansi(prev["content"]["text"]).rstrip("\n").rsplit("\n", 1)[-1]
        label = LABEL.fullmatch(last)
        assert label and label.group(1) == "output" and label.group(3) is None, (
            f"display {i} follows {last!r}, not an [output:N] label: {describe(outputs)}"
        )
        found.append((int(label.group(2)), data))
    return found


def out_labels(ex: Execution) -> list[tuple[int, int, str]]:
    """``(engine, k, value)`` of each ``Out[N:k]: value`` display."""
    found = []
    for m in ex.of_type("display_data"):
        r = OUT.fullmatch(strip_ansi(m["content"]["data"].get("text/plain", "")))
        if r:
            found.append((int(r.group(1)), int(r.group(2)), r.group(3)))
    return found


def out_results(ex: Execution) -> list[tuple[int, str]]:
    """``(engine, value)`` of each ``Out[N:k]: value`` display."""
    found = []
    for m in ex.of_type("display_data"):
        r = OUT.fullmatch(strip_ansi(m["content"]["data"].get("text/plain", "")))
        if r:
            found.append((int(r.group(1)), r.group(3)))
    return found


# --------------------------------------------------------------------------
# the kernel and its cluster


@dataclass
class PxKernel:
    km: object
    kc: object
    # 'IPython' in sys.modules on each engine after it served only apply
    ipython_before: list
    # the first three %px cells of the module: 'first', a magic, 'third'
    first_cells: list


FIRST_CELLS = ["%px 'first'", "%px %time 'second'", "%px 'third'"]


@pytest.fixture(scope="module")
def px_kernel():
    """A kernel (own RPARALLEL_DIR) with `rc`, a 4-engine cluster started
    inside it. Before any `%px` cell it records whether the engines, having
    served only `apply` calls, imported IPython; then it runs the module's
    first three `%px` cells (``FIRST_CELLS``: a value, a magic, a value)
    and keeps their Executions."""
    rp_dir = tempfile.mkdtemp(prefix="rp-px-ipython-")
    km, kc = start_kernel(rp_dir)
    pids: list[int] = []
    try:
        ex = run(
            kc,
            "import os, sys, json\n"
            "import rparallel as ipp\n"
            "cluster = ipp.Cluster(n=4)\n"
            "rc = cluster.start_and_connect_sync()\n"
            "rc.wait_for_engines(4, timeout=30)\n"
            "assert rc.ids == [0, 1, 2, 3], rc.ids\n"
            "assert rc[:].apply_sync(lambda: 1) == [1, 1, 1, 1]\n"
            "ipython_before = rc[:].apply_sync(lambda: 'IPython' in __import__('sys').modules)\n"
            "for i in rc.ids:\n"
            "    rc[i].push({'rank': i}, block=True)\n"
            "print(json.dumps({'pids': rc[:].apply_sync(os.getpid), 'ipython': ipython_before}))\n",
            timeout=90,
        )
        info = json.loads(ex.stdout.strip().splitlines()[-1])
        pids = list(info["pids"])
        first = [execute(kc, code, timeout=60) for code in FIRST_CELLS]
        yield PxKernel(km, kc, info["ipython"], first)
    finally:
        try:
            shutdown_and_check(km, kc)
        finally:
            left = wait_gone(pids, timeout=GONE_TIMEOUT)
            scanned = wait_cluster_gone(rp_dir, timeout=2)
            kill_pids(sorted(set(left) | set(scanned)))
            shutil.rmtree(rp_dir, ignore_errors=True)
    assert not left, f"engines still alive {GONE_TIMEOUT}s after the kernel shut down: {left}"
    assert not scanned, f"engine/controller processes of {rp_dir} still running: {scanned}"


@pytest.fixture
def k(px_kernel):
    """The module kernel's client, drained, `%px` back to its defaults."""
    kc = px_kernel.kc
    drain(kc)
    run(kc, "%pxconfig --targets all --block --no-verbose --stream --group-outputs=type\nrc.wait(timeout=30)")
    return kc


# --------------------------------------------------------------------------
# tests


def test_apply_does_not_import_ipython(px_kernel):
    """An engine that only ran `apply` (before any `%px`) has not imported
    IPython: it is loaded for `%px` cells only."""
    assert px_kernel.ipython_before == [False] * N_ENGINES, (
        f"'IPython' in sys.modules on the engines after apply only: {px_kernel.ipython_before}"
    )


def test_first_cells_count_from_one(px_kernel, k):
    """On fresh engines the first `%px` cells (a value, a magic, a value:
    whether or not IPython was loaded yet) are `Out[N:1]`, `Out[N:2]`,
    `Out[N:3]`, as IPython numbers cells; the engines' `In[k]`/`Out[k]`
    agree with those labels."""
    labels = []
    for ex in px_kernel.first_cells:
        assert ex.status == "ok", ex.summary()
        labels.append(out_labels(ex))
    assert labels == [
        [(n, 1, "'first'") for n in ALL],
        [(n, 2, "'second'") for n in ALL],
        [(n, 3, "'third'") for n in ALL],
    ], labels
    ex = run(k, "%px (In[1].strip(), In[3].strip(), 'time' in In[2], Out[1], Out[2], Out[3])")
    expected = "(\"'first'\", \"'third'\", True, 'first', 'second', 'third')"
    assert out_results(ex) == [(n, expected) for n in ALL], describe(ex.outputs)


def test_plot_per_engine(k):
    """A plot on the engines, with no `%matplotlib` line before (the
    engines' default backend is matplotlib_inline): per engine an
    `[output:N]` label, then a display_data with image/png."""
    ex = run(k, "%px import matplotlib; matplotlib.get_backend()", timeout=PLOT_TIMEOUT)
    assert [v for _, v in out_results(ex)] == [f"'{INLINE_BACKEND}'"] * 4, describe(ex.outputs)
    ex = run(k, "%%px\nimport matplotlib.pyplot as plt; plt.plot([1,2])\n", timeout=PLOT_TIMEOUT)
    shown = labelled_displays(ex)
    pngs = [(n, data) for n, data in shown if "image/png" in data]
    assert sorted(n for n, _ in pngs) == ALL, describe(ex.outputs)
    for n, data in pngs:
        assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG"), n
    # the figures were closed once shown: nothing more on the next cell
    ex = run(k, "%px 1")
    assert not labelled_displays(ex), describe(ex.outputs)


def test_matplotlib_inline_magic(k):
    """`%px %matplotlib inline` works on every engine (no error, nothing on
    stderr); the engines' backend is then `inline` (as in ipykernel) and
    plots still show as images."""
    ex = run(k, "%px %matplotlib inline", timeout=PLOT_TIMEOUT)
    assert not ex.of_type("error"), describe(ex.outputs)
    assert ex.stderr == "", describe(ex.outputs)
    ex = run(k, "%px import matplotlib; matplotlib.get_backend()")
    assert [v for _, v in out_results(ex)] == ["'inline'"] * 4, describe(ex.outputs)
    ex = run(k, "%px import matplotlib.pyplot as plt; plt.plot([3, 1]);", timeout=PLOT_TIMEOUT)
    pngs = [n for n, data in labelled_displays(ex) if "image/png" in data]
    assert sorted(pngs) == ALL, describe(ex.outputs)


def test_shell_escape_per_engine(k):
    """`%px !hostname`: one `[stdout:N]` block per engine with the host name."""
    ex = run(k, "%px !hostname")
    per_engine, stray = engine_lines(ex)
    host = socket.gethostname()
    assert {n: [line.strip() for line in lines] for n, lines in per_engine.items()} == {
        n: [host] for n in ALL
    }, describe(ex.outputs)
    assert not [s for s in stray if s.strip()], describe(ex.outputs)


def test_shell_capture_on_engines(k):
    """`%px sh = !echo a b` gives an SList on each engine."""
    run(k, "%px sh = !echo a b")
    ex = run(k, "%px (type(sh).__name__, sh[0])")
    assert out_results(ex) == [(n, "('SList', 'a b')") for n in ALL], describe(ex.outputs)


def test_shell_exit_status_on_engines(k):
    """`%px !exit 3` does not fail the cell; each engine's `_exit_code` is 3."""
    ex = run(k, "%px !exit 3")
    assert not ex.of_type("error"), describe(ex.outputs)
    ex = run(k, "%px _exit_code")
    assert out_results(ex) == [(n, "3") for n in ALL], describe(ex.outputs)


@pytest.mark.parametrize(
    "code",
    ["%px !sleep {t}", "%%px\n%%bash\nsleep {t}", "%px import os; os.system('sleep {t}')"],
    ids=["bang", "bash-magic", "os-system"],
)
def test_interrupt_stops_engine_children(px_kernel, k, code):
    """Interrupting a `%px` cell whose engines wait for child processes
    (`!sleep`, `%%bash`, `os.system`) ends the cell within 3 s and stops
    those children on every engine (as Ctrl-C in a terminal would); the
    engines answer at once after."""
    seconds = "19.75"  # a sleep this test can find by its command line
    cell = code.format(t=seconds)
    try:
        ex = start_cell(k, cell)
        interrupt_cell_with_children(px_kernel.km, k, ex, f"sleep {seconds}", N_ENGINES)
        t1 = time.monotonic()
        ex = run(k, "%px rank", timeout=20)
        assert out_results(ex) == [(n, str(n)) for n in ALL], describe(ex.outputs)
        assert time.monotonic() - t1 < 2, "the engines did not answer at once after the interrupt"
    finally:
        kill_pids(pids_with_cmdline(f"sleep {seconds}"))


def test_timeit_per_engine(k):
    """`%px %timeit -n1 -r1 sum(range(10))` prints `... per loop` on each
    engine."""
    ex = run(k, "%px %timeit -n1 -r1 sum(range(10))")
    per_engine, _ = engine_lines(ex)
    assert sorted(per_engine) == ALL, describe(ex.outputs)
    for n in ALL:
        assert any("per loop" in line for line in per_engine[n]), (n, per_engine[n])


def test_magic_lines_in_px_cell(k):
    """A `%%px` cell whose body has magic lines (`%time x = 1`, `!echo hi`)
    runs them on each engine; `x` is set there."""
    ex = run(k, "%%px\n%time x_magic = 1\n!echo hi\n")
    per_engine, _ = engine_lines(ex)
    assert sorted(per_engine) == ALL, describe(ex.outputs)
    for n in ALL:
        lines = [line.strip() for line in per_engine[n]]
        assert any(line.startswith("Wall time") for line in lines), (n, lines)
        assert lines[-1] == "hi", (n, lines)
    ex = run(k, "%px x_magic")
    assert out_results(ex) == [(n, "1") for n in ALL], describe(ex.outputs)


def test_get_ipython_on_engines(k):
    """`get_ipython()` on the engines is an InteractiveShell whose user_ns
    is the engine's namespace."""
    ex = run(
        k,
        "%px from IPython.core.interactiveshell import InteractiveShell; "
        "(isinstance(get_ipython(), InteractiveShell), get_ipython().user_ns['rank'] == rank)",
    )
    assert out_results(ex) == [(n, "(True, True)") for n in ALL], describe(ex.outputs)


def test_apply_function_using_get_ipython(k):
    """A function defined in the kernel that calls `get_ipython()` runs on
    the engines through `apply` and gets each engine's own shell (as with
    ipyparallel, whose functions take their globals on the engine): e.g.
    to run a magic there."""
    ex = run(
        k,
        "def engine_shell():\n"
        "    ip = get_ipython()\n"
        "    return (type(ip).__name__, ip.run_line_magic('env', 'RP_APPLY_MAGIC=1') is None)\n"
        "print(rc[:].apply_sync(engine_shell))\n"
        "print(rc[:].apply_sync(lambda: get_ipython() is not None))\n",
    )
    lines = ex.stdout.strip().splitlines()
    assert len(lines) == 2, describe(ex.outputs)
    shells = ast.literal_eval(lines[0])
    assert len(shells) == N_ENGINES and len(set(shells)) == 1, shells
    assert shells[0][0] not in ("NoneType", "") and shells[0][1] is True, shells
    assert lines[1] == str([True] * N_ENGINES), lines[1]
    ex = run(k, "%px import os; os.environ.get('RP_APPLY_MAGIC')")
    assert out_results(ex) == [(n, "'1'") for n in ALL], describe(ex.outputs)


def test_html_display_per_engine(k):
    """`display(HTML(...))` on the engines: per engine an `[output:N]`
    label, then a display_data with the text/html."""
    ex = run(k, "%px from IPython.display import display, HTML; display(HTML('<b>x</b>'))")
    shown = labelled_displays(ex)
    assert sorted(n for n, _ in shown) == ALL, describe(ex.outputs)
    for n, data in shown:
        assert data.get("text/html") == "<b>x</b>", (n, data)


def test_wait_interactive_shows_a_progress_widget(k):
    """`AsyncResult.wait_interactive()` in a notebook kernel shows tqdm's
    progress widget (as ipyparallel does), updated through its comms while
    the tasks run, ending at 4 of 4 tasks."""
    ex = run(k, "import time\nar = rc[:].apply_async(time.sleep, 1.0)\nar.wait_interactive(interval=0.1)\nar.get()")
    views = [
        m for m in ex.of_type("display_data")
        if "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
    ]
    assert len(views) == 1, describe(ex.outputs)
    assert "wait_interactive" in views[0]["content"]["data"]["text/plain"], views[0]["content"]
    states = [m["content"]["data"].get("state", {}) for m in ex.iopub if m["msg_type"] == "comm_msg"]
    assert any(s.get("value") == 4 for s in states), states
    assert any("4/4" in s["value"] for s in states if isinstance(s.get("value"), str)), states


def test_unknown_magic_on_engines(k):
    """`%px %nosuchmagic`: the cell fails with one error whose
    `[N:execute]:` blocks name UsageError (and the magic) for each
    engine; the engines work after."""
    ex = execute_error(k, "%px %nosuchmagic")
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == ALL, tb
    for n, _, text in blocks:
        assert "UsageError" in text and "nosuchmagic" in text, (n, text)
    ex = run(k, "%px rank")
    assert out_results(ex) == [(n, str(n)) for n in ALL], describe(ex.outputs)


def test_engine_error_traceback_is_ipythons(k):
    """A failing `%px` cell's engine tracebacks are IPython's (`Cell In[...]`
    with `---->` at the failing line)."""
    ex = execute(k, "%%px\ny_err = 1\n1/0\n")
    assert ex.status == "error", ex.summary()
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == ALL, tb
    for n, _, text in blocks:
        assert "ZeroDivisionError" in text, (n, text)
        assert re.search(r"Cell In\[\d+\], line 2", text), (n, text)
        assert "----> 2 1/0" in text, (n, text)
