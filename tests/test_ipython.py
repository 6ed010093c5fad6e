"""End-to-end tests of the IPython layer of the ``rparallel`` kernel: cells
run through IPython's InteractiveShell as they do in ipykernel, so what a
notebook user expects of IPython works and sends ipykernel's messages.

- magics (``%time``, ``%%time``, ``%timeit``, ``%run``, ``%autoreload``,
  ``%config``, ``%%writefile``, ``%%capture``, ``%%html``, ``%%bash``,
  ``%env``, ``%cd``/``%pwd``, ``%who``/``%whos``, ``%xmode``, ``%history``,
  ``%lsmagic``, ``%pip``), at any indentation, and an unknown magic;
- shell escapes (``!cmd``, ``x = !cmd``, exit status) and interrupting a
  cell that waits for a child process (``!sleep``, ``%%bash``,
  ``os.system``);
- help (``obj?``/``obj??`` pages as ``page`` payloads, ``set_next_input``);
- ``get_ipython()`` and its events; ``_``, ``__``, ``In``, ``Out``,
  execution counts (also across the first magic of a fresh kernel) and
  IPython's coloured tracebacks; tracebacks IPython shows in a cell that
  goes on (``showtraceback()``, failing reprs, failing event callbacks);
- ``IPython.display`` (each MIME type, display ids, ``clear_output``,
  ``_repr_html_``/``_repr_mimebundle_``);
- inline matplotlib as the default backend (png at the end of the cell,
  ``%matplotlib inline``, a ``Figure`` as result, svg through
  ``%config InlineBackend``);
- comms (the ``comm`` package) and ipywidgets: ``comm_info``, comms opened
  by either side, widget views, ``comm_msg`` from the frontend updating a
  widget, binary buffers, ``interact``, tqdm's notebook bar, unknown and
  malformed comm messages;
- bad input (``%load_ext`` of a missing module).

The expected messages are ipykernel's: the tests pass against the
``python3`` kernelspec (``RPARALLEL_TEST_KERNEL=python3``); the
rparallel-only checks (the ``%px`` family in ``%lsmagic``) are skipped
there. Frontend messages other than execute (``comm_open``, ``comm_msg``,
``comm_close``) are sent on the shell channel as a browser does
(``send_shell``). Most tests share one kernel (module scope) and undo what
they change (``%xmode``, ``%cd``, ``%config``, events); tests whose effect
cannot be undone (``%autoreload``, the plot format, the first cells of a
kernel, interrupts) get a fresh kernel. Every wait is bounded.
"""

from __future__ import annotations

import ast
import base64
import os
import re
import time
from queue import Empty

import pytest

from kernel_helpers import (
    collect_iopub,
    describe,
    execute,
    execute_error,
    execute_ok,
    Execution,
    get_reply,
    interrupt_cell_with_children,
    IS_RPARALLEL,
    kill_pids,
    parent_id,
    pids_with_cmdline,
    start_cell,
    strip_ansi,
    traceback_text,
)

pytestmark = pytest.mark.timeout(180)

# the first matplotlib import may build its font cache
PLOT_TIMEOUT = 90
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
# a 1x1 png
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
ANSI = "\x1b["


# --------------------------------------------------------------------------
# helpers


def run(kc, code: str, timeout: float = 30) -> Execution:
    return execute_ok(kc, code, timeout=timeout)


def plain(ex: Execution) -> str:
    """text/plain of the cell's single execute_result."""
    return ex.result()["text/plain"]


def value(kc, expr: str):
    """The value of ``expr`` in the kernel (its repr read back as a literal)."""
    return ast.literal_eval(plain(run(kc, expr)))


def displays(ex: Execution) -> list[dict]:
    return [m["content"] for m in ex.of_type("display_data")]


def unregister_post_run_cell(kc, name: str) -> None:
    """Removes the kernel's post_run_cell callbacks called ``name`` (if any)."""
    run(
        kc,
        "_cbs = get_ipython().events.callbacks['post_run_cell']\n"
        f"_cbs[:] = [c for c in _cbs if getattr(c, '__name__', None) != {name!r}]\n",
    )


def error_outputs(ex: Execution) -> list[tuple[str, str]]:
    """``(ename, evalue)`` of each error output, in order."""
    return [(m["content"]["ename"], m["content"]["evalue"]) for m in ex.of_type("error")]


def kernel_answers(kc) -> None:
    """The kernel still executes cells: ``6 * 7`` gives 42."""
    ex = execute(kc, "6 * 7", timeout=15)
    assert ex.status == "ok" and plain(ex) == "42", f"kernel no longer answers: {ex.summary()}"


def send_shell(kc, msg_type: str, content: dict, timeout: float = 10) -> tuple[Execution, bool]:
    """Sends a ``msg_type`` request on the shell channel as a frontend does
    (e.g. a ``comm_msg`` from a widget in the browser) and records the IOPub
    messages whose parent it is until its ``idle`` status or ``timeout``.
    Returns the recording and whether the ``idle`` arrived."""
    msg = kc.session.msg(msg_type, content)
    kc.shell_channel.send(msg)
    ex = Execution(msg_id=msg["header"]["msg_id"], code=f"<{msg_type} {content!r}>")
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return ex, False
        try:
            m = kc.get_iopub_msg(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if parent_id(m) != ex.msg_id:
            continue
        ex.iopub.append(m)
        ex.arrival.append(time.monotonic())
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return ex, True


def comm_info(kc, target_name: str | None = None) -> dict:
    """The ``comms`` of a comm_info_reply."""
    msg_id = kc.comm_info(target_name=target_name)
    reply = get_reply(kc, msg_id, timeout=10)
    assert reply["msg_type"] == "comm_info_reply", reply
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]["comms"]


def widget_views(ex: Execution) -> list[str]:
    """Model ids of the widget views the cell displayed."""
    return [
        d["data"][WIDGET_VIEW]["model_id"]
        for d in displays(ex) + [m["content"] for m in ex.of_type("execute_result")]
        if WIDGET_VIEW in d["data"]
    ]


# --------------------------------------------------------------------------
# magics


def test_time_line_magic(skc):
    """`%time 1+1` prints CPU and Wall time and returns 2."""
    ex = run(skc, "%time 1+1")
    assert "Wall time" in ex.stdout, describe(ex.outputs)
    assert plain(ex) == "2", describe(ex.outputs)


def test_time_cell_magic(skc):
    """`%%time` runs the cell body and prints Wall time; the body's names
    are defined."""
    ex = run(skc, "%%time\ntimed_var = 21 * 2\n")
    assert "Wall time" in ex.stdout, describe(ex.outputs)
    assert value(skc, "timed_var") == 42


def test_timeit(skc):
    """`%timeit -n1 -r1 sum(range(10))` prints one `... per loop` line."""
    ex = run(skc, "%timeit -n1 -r1 sum(range(10))")
    assert "per loop" in ex.stdout, describe(ex.outputs)
    assert "1 run, 1 loop each" in ex.stdout, ex.stdout


def test_run_file(skc, tmp_path):
    """`%run file.py` runs it as __main__ and its names land in the
    namespace."""
    script = tmp_path / "runme.py"
    script.write_text(
        "run_defined = 41 + 1\n"
        "def run_func():\n"
        "    return 'from run'\n"
        "print('running', __name__)\n"
    )
    ex = run(skc, f"%run {script}")
    assert ex.stdout == "running __main__\n", describe(ex.outputs)
    assert value(skc, "(run_defined, run_func())") == (42, "from run")


def test_autoreload(kc, tmp_path):
    """`%load_ext autoreload` and `%autoreload 2` work: a module changed on
    disk after its import is reloaded before the next cell runs."""
    mod = tmp_path / "ar_mod_xyz.py"
    mod.write_text("def f():\n    return 'old'\n")
    run(kc, "%load_ext autoreload")
    run(kc, "%autoreload 2")
    run(kc, f"import sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport ar_mod_xyz")
    assert value(kc, "ar_mod_xyz.f()") == "old"
    mod.write_text("def f():\n    return 'new'\n")
    later = time.time() + 5
    os.utime(mod, (later, later))
    assert value(kc, "ar_mod_xyz.f()") == "new", "the changed module was not reloaded"


def test_config(skc):
    """`%config` lists the configurable objects; `%config
    InteractiveShell.ast_node_interactivity = 'all'` shows every
    expression of a cell (and 'last_expr' goes back)."""
    ex = run(skc, "%config")
    assert ex.stdout.startswith("Available objects for config:"), describe(ex.outputs)
    assert "HistoryManager" in ex.stdout, ex.stdout
    try:
        run(skc, "%config InteractiveShell.ast_node_interactivity = 'all'")
        ex = run(skc, "11\n12")
        shown = [
            m["content"]["data"]["text/plain"]
            for m in ex.outputs
            if m["msg_type"] in ("execute_result", "display_data")
        ]
        assert shown == ["11", "12"], describe(ex.outputs)
    finally:
        run(skc, "%config InteractiveShell.ast_node_interactivity = 'last_expr'")
    ex = run(skc, "11\n12")
    assert plain(ex) == "12", describe(ex.outputs)


def test_ast_node_interactivity_all_gives_execute_results(skc):
    """With `ast_node_interactivity = 'all'`, every expression's value is
    an execute_result of the cell's count (as ipykernel sends them: each
    gets its `Out[n]` prompt), not a display_data."""
    try:
        run(skc, "%config InteractiveShell.ast_node_interactivity = 'all'")
        ex = run(skc, "11\n12")
    finally:
        run(skc, "%config InteractiveShell.ast_node_interactivity = 'last_expr'")
    n = ex.content["execution_count"]
    got = [
        (m["msg_type"], m["content"]["data"]["text/plain"], m["content"].get("execution_count"))
        for m in ex.outputs
    ]
    assert got == [("execute_result", "11", n), ("execute_result", "12", n)], describe(ex.outputs)


def test_writefile(skc, tmp_path):
    """`%%writefile path` writes the cell body to path."""
    target = tmp_path / "written.txt"
    ex = run(skc, f"%%writefile {target}\nline one\nline two\n")
    assert ex.stdout == f"Writing {target}\n", describe(ex.outputs)
    assert target.read_text() == "line one\nline two\n"


def test_capture(skc):
    """`%%capture out` captures the body's prints (nothing reaches the
    frontend); `out.stdout` holds them."""
    ex = run(skc, "%%capture cap_out\nprint('captured text')\n")
    assert not ex.of_type("stream"), describe(ex.outputs)
    assert value(skc, "cap_out.stdout") == "captured text\n"


def test_html_cell_magic(skc):
    """`%%html` displays its body as text/html."""
    ex = run(skc, "%%html\n<b>bold</b>\n")
    ds = displays(ex)
    assert len(ds) == 1, describe(ex.outputs)
    assert ds[0]["data"]["text/html"].strip() == "<b>bold</b>", ds[0]


def test_bash_cell_magic(skc):
    """`%%bash` runs its body in bash; its output is streamed."""
    ex = run(skc, "%%bash\necho hi\necho there >&2\n")
    assert ex.stdout == "hi\n", describe(ex.outputs)
    assert ex.stderr == "there\n", describe(ex.outputs)


@pytest.mark.parametrize(
    "code",
    ["%%bash\necho first\nsleep 1.5\necho second", "!echo first; sleep 1.5; echo second"],
    ids=["bash-magic", "bang"],
)
def test_shell_output_is_live(skc, code):
    """`%%bash` and `!cmd` output is streamed while the command runs:
    `first` arrives over a second before the cell ends."""
    ex = run(skc, code)
    assert [line.strip() for line in ex.stdout.splitlines()] == ["first", "second"], describe(ex.outputs)
    firsts = [a for m, a in zip(ex.iopub, ex.arrival) if m["msg_type"] == "stream" and "first" in m["content"]["text"]]
    assert firsts and ex.idle_at - firsts[0] >= 1.0, (
        f"`first` arrived {ex.idle_at - firsts[0]:.2f}s before the end" if firsts else describe(ex.outputs)
    )


def test_env(skc):
    """`%env NAME=value` sets os.environ (seen by child processes too)."""
    ex = run(skc, "%env RP_IPY_TEST_FOO=bar")
    assert ex.stdout == "env: RP_IPY_TEST_FOO=bar\n", describe(ex.outputs)
    assert value(skc, "__import__('os').environ['RP_IPY_TEST_FOO']") == "bar"
    ex = run(skc, "%env RP_IPY_TEST_FOO")
    assert plain(ex) == "'bar'", describe(ex.outputs)


def test_cd_pwd(skc, tmp_path):
    """`%cd DIR` changes the kernel's working directory and prints it;
    `%pwd` returns it."""
    before = value(skc, "__import__('os').getcwd()")
    try:
        ex = run(skc, f"%cd {tmp_path}")
        assert ex.stdout.strip() == str(tmp_path), describe(ex.outputs)
        assert value(skc, "%pwd") == str(tmp_path)
        assert value(skc, "__import__('os').getcwd()") == str(tmp_path)
    finally:
        run(skc, f"import os as _os; _os.chdir({before!r})")
    assert value(skc, "%pwd") == before


def test_who_whos(skc):
    """`%who` names the user's variables; `%whos` tabulates them."""
    run(skc, "who_marker_int = 5\nwho_marker_str = 'abc'")
    ex = run(skc, "%who")
    assert "who_marker_int" in ex.stdout and "who_marker_str" in ex.stdout, ex.stdout
    ex = run(skc, "%whos")
    assert re.search(r"^Variable\s+Type\s+Data/Info$", ex.stdout, re.M), ex.stdout
    assert re.search(r"^who_marker_int\s+int\s+5$", ex.stdout, re.M), ex.stdout
    assert re.search(r"^who_marker_str\s+str\s+abc$", ex.stdout, re.M), ex.stdout


def test_xmode(skc):
    """`%xmode Plain` gives plain tracebacks (no `---->` arrows);
    `%xmode Context` brings back the default ones."""
    try:
        ex = run(skc, "%xmode Plain")
        assert ex.stdout == "Exception reporting mode: Plain\n", describe(ex.outputs)
        ex = execute_error(skc, "1/0")
        tb = traceback_text(ex.error())
        assert "Traceback (most recent call last)" in tb, tb
        assert "---->" not in tb, tb
        assert tb.rstrip().endswith("ZeroDivisionError: division by zero"), tb
    finally:
        ex = run(skc, "%xmode Context")
    assert ex.stdout == "Exception reporting mode: Context\n", describe(ex.outputs)
    tb = traceback_text(execute_error(skc, "1/0").error())
    assert "----> 1 1/0" in tb, tb


def test_history_tail(skc):
    """`%history -l 2` prints the last two inputs."""
    run(skc, "hist_a = 1")
    run(skc, "hist_b = 2")
    ex = run(skc, "%history -l 2")
    assert ex.stdout == "hist_a = 1\nhist_b = 2\n", describe(ex.outputs)


def test_lsmagic(skc):
    """`%lsmagic` lists IPython's magics and (rparallel) the `%px` family."""
    ex = run(skc, "%lsmagic")
    text = ex.stdout + "".join(
        m["content"]["data"].get("text/plain", "") for m in ex.of_type("execute_result")
    )
    text = text.replace("\\n", "\n")
    line_part, _, cell_part = text.partition("Available cell magics:")
    assert "Available line magics:" in line_part and cell_part, text[:2000]
    line_magics = set(re.findall(r"(?<![%\w])%\w+", line_part))
    cell_magics = set(re.findall(r"%%\w+", cell_part))
    for name in ("%timeit", "%time", "%run", "%load_ext", "%config", "%matplotlib"):
        assert name in line_magics, (name, sorted(line_magics))
    for name in ("%%timeit", "%%time", "%%bash", "%%capture", "%%writefile", "%%html"):
        assert name in cell_magics, (name, sorted(cell_magics))
    if IS_RPARALLEL:
        for name in ("%px", "%autopx", "%pxresult", "%pxconfig"):
            assert name in line_magics, (name, sorted(line_magics))
        assert "%%px" in cell_magics, sorted(cell_magics)


def test_pip(skc):
    """`%pip --version` runs the kernel environment's pip."""
    ex = run(skc, "%pip --version", timeout=60)
    assert re.search(r"^pip \d+", ex.stdout, re.M), describe(ex.outputs)


def test_magics_at_any_indentation(skc):
    """Magics and shell escapes inside blocks run on each iteration."""
    ex = run(skc, "for i in range(2):\n    %time i\n")
    assert ex.stdout.count("Wall time") == 2, ex.stdout
    ex = run(skc, "if True:\n    for j in range(2):\n        !echo indented $j\n")
    assert [line.strip() for line in ex.stdout.splitlines()] == ["indented 0", "indented 1"], ex.stdout


def test_unknown_magic_is_one_line_usage_error(skc):
    """`%nosuchmagic`: the reply is an error (UsageError, `Line magic
    function `%nosuchmagic` not found.`), shown as one line, either on
    stderr (ipykernel) or as the single error output; the kernel goes on."""
    expected = "UsageError: Line magic function `%nosuchmagic` not found."
    ex = execute(skc, "%nosuchmagic")
    assert ex.status == "error", ex.summary()
    assert ex.content["ename"] == "UsageError", ex.content
    assert ex.content["evalue"] == "Line magic function `%nosuchmagic` not found.", ex.content
    errors = ex.of_type("error")
    if errors:
        assert len(errors) == 1, describe(ex.outputs)
        assert traceback_text(errors[0]["content"]).strip() == expected, errors[0]["content"]
        assert expected not in ex.stderr, describe(ex.outputs)
    else:
        assert ex.stderr.strip() == expected, describe(ex.outputs)
    kernel_answers(skc)


# --------------------------------------------------------------------------
# shell escapes


def test_shell_escape_streams(skc):
    """`!echo hi` streams `hi` on stdout."""
    ex = run(skc, "!echo hi")
    assert ex.stdout.strip() == "hi", describe(ex.outputs)


def test_shell_capture_is_slist(skc):
    """`x = !echo a b` gives an SList of the output's lines."""
    run(skc, "sh_out = !echo a b; echo c")
    assert value(skc, "type(sh_out).__name__") == "SList"
    assert value(skc, "list(sh_out)") == ["a b", "c"]
    assert value(skc, "sh_out[0] == 'a b'") is True


@pytest.mark.parametrize(
    "code",
    [
        "!sleep {t}",
        "%%bash\necho started\nsleep {t}\necho finished",
        "import os\nos.system('sleep {t}')",
    ],
    ids=["bang", "bash-magic", "os-system"],
)
def test_interrupt_stops_shell_children(kernel, code):
    """Interrupting a cell that waits for a child process (`!sleep`,
    `%%bash`, `os.system`) ends the cell within 3 s and stops the child,
    as a terminal's Ctrl-C or ipykernel's interrupt does; the kernel goes
    on. (Own kernel: a cell that is not stopped would block the next ones.)"""
    km, kc = kernel
    seconds = "17.25"  # a sleep this test can find by its command line
    cell = code.format(t=seconds)
    try:
        ex = start_cell(kc, cell)
        interrupt_cell_with_children(km, kc, ex, f"sleep {seconds}", 1)
        kernel_answers(kc)
    finally:
        kill_pids(pids_with_cmdline(f"sleep {seconds}"))


def test_interrupt_spares_detached_processes(kernel):
    """An interrupt does not reach a process the user started in a session
    of its own (`Popen(..., start_new_session=True)`, e.g. a server kept
    running beside the notebook), as with ipykernel."""
    km, kc = kernel
    seconds = "23.25"
    try:
        run(
            kc,
            "import subprocess\n"
            f"detached = subprocess.Popen(['sleep', '{seconds}'], start_new_session=True)\n",
        )
        ex = start_cell(kc, "import time\ntime.sleep(20)")
        time.sleep(0.5)
        km.interrupt_kernel()
        reply = get_reply(kc, ex.msg_id, timeout=8)
        assert reply["content"].get("ename") == "KeyboardInterrupt", reply["content"]
        collect_iopub(kc, ex, timeout=5)
        assert value(kc, "detached.poll() is None") is True, "the detached process was killed by the interrupt"
    finally:
        kill_pids(pids_with_cmdline(f"sleep {seconds}"))


def test_shell_exit_status(skc):
    """`!exit 3` does not fail the cell; its status is `_exit_code`; the
    next cell works."""
    ex = run(skc, "!exit 3")
    assert not ex.of_type("error"), describe(ex.outputs)
    assert value(skc, "_exit_code") == 3
    run(skc, "!true")
    assert value(skc, "_exit_code") == 0
    kernel_answers(skc)


# --------------------------------------------------------------------------
# help


def page_payload(ex: Execution) -> str:
    pages = [p for p in ex.content.get("payload", []) if p.get("source") == "page"]
    assert len(pages) == 1, f"expected one page payload: {ex.content.get('payload')!r}"
    return strip_ansi(pages[0]["data"]["text/plain"])


def test_help_page(skc):
    """`len?` and `len??`: an ok reply with a `page` payload showing the
    signature and docstring; nothing else is shown."""
    for code in ("len?", "len??"):
        ex = run(skc, code)
        text = page_payload(ex)
        assert "Signature" in text and "Docstring" in text, text
        assert "Return the number of items" in text, text
        assert not ex.of_type("execute_result") and not ex.of_type("error"), describe(ex.outputs)


def test_help_source(skc):
    """`f??` of a function defined in a cell pages its source."""
    run(skc, "def helped(a):\n    'doc of helped'\n    return a + 1\n")
    text = page_payload(run(skc, "helped??"))
    assert "Source:" in text and "return a + 1" in text, text
    text = page_payload(run(skc, "helped?"))
    assert "doc of helped" in text, text


def test_help_unknown_name(skc):
    """`nosuchname_xyz?` says the object was not found."""
    ex = run(skc, "nosuchname_xyz?")
    assert "Object `nosuchname_xyz` not found." in ex.stdout, describe(ex.outputs)


def test_set_next_input(skc):
    """`get_ipython().set_next_input('x = 1')` gives a `set_next_input`
    payload."""
    ex = run(skc, "get_ipython().set_next_input('x = 1')")
    payload = [p for p in ex.content["payload"] if p.get("source") == "set_next_input"]
    assert len(payload) == 1, ex.content["payload"]
    assert payload[0]["text"] == "x = 1", payload
    assert payload[0].get("replace") is False, payload


# --------------------------------------------------------------------------
# get_ipython()


def test_get_ipython_api(skc):
    """`get_ipython()` is an InteractiveShell: user_ns is the namespace,
    run_line_magic and run_cell_magic run magics."""
    run(skc, "ns_marker = 'in ns'")
    assert value(skc, "get_ipython().user_ns['ns_marker']") == "in ns"
    assert value(skc, "get_ipython().user_ns is globals()") is True
    assert value(
        skc, "from IPython.core.interactiveshell import InteractiveShell\n"
        "isinstance(get_ipython(), InteractiveShell)"
    ) is True
    assert value(skc, "get_ipython().run_line_magic('pwd', '') == __import__('os').getcwd()") is True
    ex = run(skc, "get_ipython().run_cell_magic('capture', 'cap2', 'print(5)')\ncap2.stdout")
    assert plain(ex) == "'5\\n'", describe(ex.outputs)


def test_register_magic_function(skc):
    """Magics registered with `register_magic_function` (line and cell)
    can be called."""
    run(
        skc,
        "def shout(line):\n    return line.upper()\n"
        "get_ipython().register_magic_function(shout)\n"
        "def lower_cell(line, cell):\n    return (line, cell.lower())\n"
        "get_ipython().register_magic_function(lower_cell, 'cell')\n",
    )
    assert plain(run(skc, "%shout hi there")) == "'HI THERE'"
    assert value(skc, "%%lower_cell arg\nABC DEF\n") == ("arg", "abc def\n")


def test_post_run_cell_event(skc):
    """A `post_run_cell` callback runs after each cell (after its result),
    its prints shown with that cell."""
    try:
        run(
            skc,
            "def after_cell(result):\n"
            "    print('post_run_cell', result.success, result.info.raw_cell.strip())\n"
            "get_ipython().events.register('post_run_cell', after_cell)\n",
        )
        ex = run(skc, "40 + 2")
        assert plain(ex) == "42", describe(ex.outputs)
        assert ex.stdout == "post_run_cell True 40 + 2\n", describe(ex.outputs)
        kinds = [m["msg_type"] for m in ex.outputs]
        assert kinds == ["execute_result", "stream"], describe(ex.outputs)
        ex = execute(skc, "1/0")
        assert ex.status == "error"
        assert "post_run_cell False 1/0" in ex.stdout, describe(ex.outputs)
    finally:
        unregister_post_run_cell(skc, "after_cell")
    ex = run(skc, "1")
    assert ex.stdout == "", describe(ex.outputs)


def test_cells_run_again_follow_transformer_changes(skc):
    """A cell run again is transformed again: a cleanup transformer added
    in between applies to it, and `x = %magic` gives the magic's new
    value each time."""
    run(skc, "rerun_x = 1")
    run(skc, "rerun_x = 1")
    try:
        run(
            skc,
            "def rerun_two(lines):\n"
            "    return [l.replace('rerun_x = 1', 'rerun_x = 2') for l in lines]\n"
            "get_ipython().input_transformers_cleanup.append(rerun_two)\n",
        )
        run(skc, "rerun_x = 1")
        assert value(skc, "rerun_x") == 2
    finally:
        run(
            skc,
            "_ts = get_ipython().input_transformers_cleanup\n"
            "_ts[:] = [t for t in _ts if getattr(t, '__name__', None) != 'rerun_two']\n",
        )
    run(skc, "rerun_x = 1")
    assert value(skc, "rerun_x") == 1
    start = value(skc, "__import__('os').getcwd()")
    try:
        run(skc, "rerun_here = %pwd")
        assert value(skc, "rerun_here") == start
        run(skc, "%cd /")
        run(skc, "rerun_here = %pwd")
        assert value(skc, "rerun_here") == "/"
    finally:
        run(skc, f"%cd {start}")


# --------------------------------------------------------------------------
# history, outputs, tracebacks


def test_outputs_and_inputs(skc):
    """`_` and `__` are the last two results, `Out[n]` and `In[n]` the
    result and source of cell n; execution counts go up by one."""
    ex1 = run(skc, "10")
    ex2 = run(skc, "20")
    n1 = ex1.content["execution_count"]
    n2 = ex2.content["execution_count"]
    assert n2 == n1 + 1, (n1, n2)
    assert ex1.of_type("execute_result")[0]["content"]["execution_count"] == n1
    ex3 = run(skc, f"(_, __, Out[{n1}], Out[{n2}], In[{n1}].strip(), In[{n2}].strip())")
    assert ex3.content["execution_count"] == n2 + 1
    assert ast.literal_eval(plain(ex3)) == (20, 10, 10, 20, "10", "20")


def test_history_across_first_magic(kc):
    """In a fresh kernel, cells before and after the first magic form one
    history: execution counts go on by one, `_`/`__`/`___`, `Out[n]` and
    `In[n]` (the transformed source, as IPython keeps it) span both, and a function defined in the first cell fails with
    a traceback naming that cell (`Cell In[n], line 2, in early()`)."""
    ex1 = run(kc, "def early():\n    raise ValueError('early')\n10")
    ex2 = run(kc, "20")
    ex3 = run(kc, "%time 30")
    counts = [ex.content["execution_count"] for ex in (ex1, ex2, ex3)]
    assert counts == [1, 2, 3], counts
    assert "Wall time" in ex3.stdout and plain(ex3) == "30", describe(ex3.outputs)
    assert ex3.of_type("execute_result")[0]["content"]["execution_count"] == 3
    assert value(kc, "(_, __, ___, Out[1], Out[2], Out[3], In[2].strip(), In[3].strip())") == (
        30, 20, 10, 10, 20, 30, "20", "get_ipython().run_line_magic('time', '30')"
    )
    ex = execute_error(kc, "early()")
    n = ex.content["execution_count"]
    assert n == 5, n
    tb = traceback_text(ex.error())
    assert f"Cell In[{n}], line 1" in tb and "----> 1 early()" in tb, tb
    assert "Cell In[1], line 2, in early()" in tb, tb
    assert "----> 2     raise ValueError('early')" in tb, tb


def test_traceback_format(skc):
    """An error's traceback is IPython's: coloured (ANSI codes), naming
    `Cell In[n], line m` for each frame with `---->` at the failing line."""
    ex = execute_error(
        skc,
        "x = 1\n"
        "def failing():\n"
        "    raise ValueError('boom')\n"
        "failing()\n",
    )
    n = ex.content["execution_count"]
    err = ex.error()
    assert err["ename"] == "ValueError" and err["evalue"] == "boom", err
    assert ex.content["ename"] == "ValueError", ex.content
    raw = "\n".join(err["traceback"])
    assert ANSI in raw, f"traceback has no colours: {raw!r}"
    tb = strip_ansi(raw)
    assert f"Cell In[{n}], line 4" in tb, tb
    assert "----> 4 failing()" in tb, tb
    assert f"Cell In[{n}], line 3, in failing()" in tb, tb
    assert "----> 3     raise ValueError('boom')" in tb, tb
    assert tb.rstrip().endswith("ValueError: boom"), tb


def test_showtraceback_in_successful_cell(skc):
    """`get_ipython().showtraceback()` in an `except` block (as libraries
    do) shows the traceback as an error output at that point; the cell
    goes on and succeeds."""
    ex = execute(
        skc,
        "try:\n"
        "    1/0\n"
        "except Exception:\n"
        "    get_ipython().showtraceback()\n"
        "print('went on')\n",
    )
    assert ex.status == "ok", ex.summary()
    assert [m["msg_type"] for m in ex.outputs] == ["error", "stream"], describe(ex.outputs)
    assert error_outputs(ex) == [("ZeroDivisionError", "division by zero")], describe(ex.outputs)
    assert ex.stdout == "went on\n"


def test_shown_traceback_then_failure(skc):
    """A cell that shows a handled exception's traceback and then fails:
    both tracebacks are shown, in order, and the reply names the exception
    that ended the cell (KeyError), not the handled one."""
    ex = execute(
        skc,
        "try:\n"
        "    1/0\n"
        "except Exception:\n"
        "    get_ipython().showtraceback()\n"
        "raise KeyError('final')\n",
    )
    assert ex.status == "error", ex.summary()
    assert ex.content["ename"] == "KeyError", ex.content
    assert error_outputs(ex) == [
        ("ZeroDivisionError", "division by zero"),
        ("KeyError", "'final'"),
    ], describe(ex.outputs)


def test_display_formatter_error_is_shown(skc):
    """`display(obj)` whose `_repr_html_` raises: the formatter's traceback
    is shown (an error output naming the exception), the text/plain is
    still displayed, and the cell goes on and succeeds."""
    ex = execute(
        skc,
        "class BadRepr:\n"
        "    def _repr_html_(self):\n"
        "        raise ValueError('bad repr')\n"
        "    def __repr__(self):\n"
        "        return 'BadRepr()'\n"
        "display(BadRepr())\n"
        "print('after')\n",
    )
    assert ex.status == "ok", ex.summary()
    assert error_outputs(ex) == [("ValueError", "bad repr")], describe(ex.outputs)
    assert "_repr_html_" in traceback_text(ex.of_type("error")[0]["content"])
    assert [d["data"] for d in displays(ex)] == [{"text/plain": "BadRepr()"}], describe(ex.outputs)
    assert ex.stdout == "after\n", describe(ex.outputs)


def test_result_formatter_error_is_shown(skc):
    """The same object as a cell's value: the formatter's traceback is
    shown and the execute_result still has its text/plain."""
    ex = execute(
        skc,
        "class BadRepr2:\n"
        "    def _repr_html_(self):\n"
        "        raise ValueError('bad repr 2')\n"
        "    def __repr__(self):\n"
        "        return 'BadRepr2()'\n"
        "BadRepr2()\n",
    )
    assert error_outputs(ex) == [("ValueError", "bad repr 2")], describe(ex.outputs)
    assert ex.result() == {"text/plain": "BadRepr2()"}, describe(ex.outputs)
    kernel_answers(skc)


def test_event_callback_error_is_shown(skc):
    """A `post_run_cell` callback that raises: IPython's `Error in
    callback` line and the callback's traceback are shown after the
    cell's result; the cell itself succeeds."""
    try:
        # the callback runs (and fails) after this cell already
        execute(
            skc,
            "def failing_cb(result):\n"
            "    raise RuntimeError('in callback')\n"
            "get_ipython().events.register('post_run_cell', failing_cb)\n",
        )
        ex = execute(skc, "5")
    finally:
        unregister_post_run_cell(skc, "failing_cb")
    assert ex.status == "ok", ex.summary()
    assert plain(ex) == "5"
    assert "Error in callback" in ex.stdout, describe(ex.outputs)
    assert error_outputs(ex) == [("RuntimeError", "in callback")], describe(ex.outputs)
    kinds = [m["msg_type"] for m in ex.outputs]
    assert kinds[0] == "execute_result", describe(ex.outputs)


# --------------------------------------------------------------------------
# IPython.display


DISPLAY_CASES = [
    ("HTML('<b>x</b>')", "text/html", "<b>x</b>"),
    ("Markdown('**m**')", "text/markdown", "**m**"),
    (f"Image(data=base64.b64decode({PNG_B64!r}), format='png')", "image/png", PNG_B64),
    ("JSON({'a': 1})", "application/json", {"a": 1}),
    ("Javascript('console.log(1)')", "application/javascript", "console.log(1)"),
    ("Latex('$x^2$')", "text/latex", "$x^2$"),
]


@pytest.mark.parametrize(
    "obj, mime, data", DISPLAY_CASES, ids=[c[1] for c in DISPLAY_CASES]
)
def test_display_mime_types(skc, obj, mime, data):
    """`display(X(...))` for each IPython.display class gives one
    display_data with its MIME type (and text/plain)."""
    ex = run(
        skc,
        "import base64\n"
        "from IPython.display import display, HTML, Markdown, Image, JSON, Javascript, Latex, clear_output\n"
        f"display({obj})\n",
    )
    ds = displays(ex)
    assert len(ds) == 1, describe(ex.outputs)
    assert ds[0]["data"].get(mime) == data, ds[0]
    assert "text/plain" in ds[0]["data"], ds[0]
    assert not ex.of_type("execute_result"), describe(ex.outputs)


def test_display_id_update(skc):
    """`h = display('x', display_id=True); h.update('y')`: a display_data
    and an update_display_data with the same transient display_id."""
    ex = run(
        skc,
        "from IPython.display import display\n"
        "h = display('x', display_id=True)\n"
        "h.update('y')\n",
    )
    kinds = [m["msg_type"] for m in ex.outputs]
    assert kinds == ["display_data", "update_display_data"], describe(ex.outputs)
    shown, updated = (m["content"] for m in ex.outputs)
    display_id = shown.get("transient", {}).get("display_id")
    assert display_id, shown
    assert updated.get("transient", {}).get("display_id") == display_id, updated
    assert shown["data"]["text/plain"] == "'x'", shown
    assert updated["data"]["text/plain"] == "'y'", updated
    # updated again from a later cell
    ex = run(skc, "h.update('z')")
    assert [m["msg_type"] for m in ex.outputs] == ["update_display_data"], describe(ex.outputs)
    assert ex.outputs[0]["content"]["transient"]["display_id"] == display_id


def test_clear_output(skc):
    """`clear_output()` gives clear_output (wait false), `clear_output(wait=True)`
    wait true, in order with the prints around them."""
    ex = run(
        skc,
        "from IPython.display import clear_output\n"
        "print('a', flush=True)\n"
        "clear_output()\n"
        "print('b', flush=True)\n"
        "clear_output(wait=True)\n"
        "print('c')\n",
    )
    seq = [
        (m["msg_type"], m["content"].get("text", m["content"].get("wait")))
        for m in ex.outputs
    ]
    assert seq == [
        ("stream", "a\n"),
        ("clear_output", False),
        ("stream", "b\n"),
        ("clear_output", True),
        ("stream", "c\n"),
    ], describe(ex.outputs)


def test_repr_html_result(skc):
    """An object with `_repr_html_` as the last expression: an
    execute_result with text/html and text/plain."""
    ex = run(
        skc,
        "class WithHtml:\n"
        "    def _repr_html_(self):\n"
        "        return '<i>h</i>'\n"
        "    def __repr__(self):\n"
        "        return 'WithHtml()'\n"
        "WithHtml()\n",
    )
    data = ex.result()
    assert data == {"text/plain": "WithHtml()", "text/html": "<i>h</i>"}, data


def test_repr_mimebundle_result(skc):
    """An object with `_repr_mimebundle_` as the last expression: an
    execute_result with exactly its bundle."""
    ex = run(
        skc,
        "class WithBundle:\n"
        "    def _repr_mimebundle_(self, include=None, exclude=None):\n"
        "        return {'text/plain': 'mm', 'application/x-test': 'tt'}\n"
        "WithBundle()\n",
    )
    assert ex.result() == {"text/plain": "mm", "application/x-test": "tt"}, describe(ex.outputs)


# --------------------------------------------------------------------------
# plots


def test_inline_plot_by_default(skc):
    """With no `%matplotlib` line, the backend is matplotlib_inline and a
    plot is shown as one image/png display_data at the end of the cell;
    the figure is closed, so the next cell shows nothing."""
    ex = run(
        skc,
        "import matplotlib.pyplot as plt\n"
        "plt.plot([1, 2, 3])\n",
        timeout=PLOT_TIMEOUT,
    )
    pngs = [d for d in displays(ex) if "image/png" in d["data"]]
    assert len(pngs) == 1, describe(ex.outputs)
    assert ex.outputs[-1]["msg_type"] == "display_data", describe(ex.outputs)
    assert "image/png" in ex.outputs[-1]["content"]["data"], describe(ex.outputs)
    assert base64.b64decode(pngs[0]["data"]["image/png"]).startswith(b"\x89PNG"), "not a png"
    assert pngs[0]["data"]["text/plain"].startswith("<Figure size"), pngs[0]["data"]["text/plain"]
    assert value(skc, "__import__('matplotlib').get_backend()") == INLINE_BACKEND
    ex = run(skc, "1")
    assert not displays(ex), describe(ex.outputs)


def test_matplotlib_inline_magic(skc):
    """`%matplotlib inline` (as many notebooks start) works and plots stay
    inline: one image/png per figure, in the cell that drew them."""
    ex = run(skc, "%matplotlib inline", timeout=PLOT_TIMEOUT)
    assert not ex.of_type("error") and ex.stderr == "", describe(ex.outputs)
    ex = run(
        skc,
        "import matplotlib.pyplot as plt\n"
        "plt.figure(); plt.plot([1, 2])\n"
        "plt.figure(); plt.plot([2, 1]);\n",
        timeout=PLOT_TIMEOUT,
    )
    pngs = [d for d in displays(ex) if "image/png" in d["data"]]
    assert len(pngs) == 2, describe(ex.outputs)
    assert not ex.of_type("execute_result"), describe(ex.outputs)


def test_figure_as_result(skc):
    """A closed `Figure` as the last expression renders as image/png."""
    ex = run(
        skc,
        "import matplotlib.pyplot as plt\n"
        "fig = plt.figure()\n"
        "fig.gca().plot([1, 2])\n"
        "plt.close(fig)\n"
        "fig\n",
        timeout=PLOT_TIMEOUT,
    )
    data = ex.result()
    assert "image/png" in data, sorted(data)
    assert base64.b64decode(data["image/png"]).startswith(b"\x89PNG")
    assert not displays(ex), describe(ex.outputs)


def test_svg_figure_format(kc):
    """`%config InlineBackend.figure_format = 'svg'` (before matplotlib is
    even imported): plots are shown as image/svg+xml."""
    run(kc, "%config InlineBackend.figure_format = 'svg'")
    ex = run(kc, "import matplotlib.pyplot as plt\nplt.plot([1, 2])\n", timeout=PLOT_TIMEOUT)
    ds = displays(ex)
    assert len(ds) == 1, describe(ex.outputs)
    assert "image/svg+xml" in ds[0]["data"], sorted(ds[0]["data"])
    assert "<svg" in ds[0]["data"]["image/svg+xml"]
    assert "image/png" not in ds[0]["data"], sorted(ds[0]["data"])


# --------------------------------------------------------------------------
# comms and widgets


def test_comm_from_kernel(skc):
    """A comm opened in the kernel (`comm.create_comm`) sends comm_open
    and comm_msg, is listed by comm_info (filtered by target name),
    receives the frontend's comm_msg, and is gone after close."""
    ex = run(
        skc,
        "from comm import create_comm\n"
        "kc_comm = create_comm(target_name='rp.test.target', data={'a': 1})\n"
        "kc_comm_got = []\n"
        "kc_comm.on_msg(lambda m: (kc_comm_got.append(m['content']['data']), print('kernel got', m['content']['data'])))\n"
        "kc_comm.send({'x': 1})\n"
        "kc_comm.comm_id\n",
    )
    comm_id = ast.literal_eval(plain(ex))
    opens = ex.of_type("comm_open")
    assert [(m["content"]["comm_id"], m["content"]["target_name"], m["content"]["data"]) for m in opens] == [
        (comm_id, "rp.test.target", {"a": 1})
    ], describe(ex.outputs)
    msgs = ex.of_type("comm_msg")
    assert [(m["content"]["comm_id"], m["content"]["data"]) for m in msgs] == [(comm_id, {"x": 1})]

    assert comm_info(skc).get(comm_id) == {"target_name": "rp.test.target"}
    assert comm_id in comm_info(skc, "rp.test.target")
    assert comm_id not in comm_info(skc, "some.other.target")

    got, idle = send_shell(skc, "comm_msg", {"comm_id": comm_id, "data": {"hello": 2}})
    assert "kernel got {'hello': 2}" in got.stdout, describe(got.iopub)
    assert idle, f"no idle status for the comm_msg: {describe(got.iopub)}"
    assert value(skc, "kc_comm_got") == [{"hello": 2}]

    ex = run(skc, "kc_comm.close()")
    closes = ex.of_type("comm_close")
    assert [m["content"]["comm_id"] for m in closes] == [comm_id], describe(ex.outputs)
    assert comm_id not in comm_info(skc)


def test_comm_from_frontend(skc):
    """The frontend opens a comm to a target registered in the kernel
    (`comm.get_comm_manager().register_target`): the handler runs, the
    comm is listed, messages reach it and its replies come back; comm_close
    removes it."""
    run(
        skc,
        "import comm\n"
        "front_opened = []\n"
        "def front_open(c, msg):\n"
        "    front_opened.append((c.comm_id, msg['content']['data']))\n"
        "    print('opened', msg['content']['data'])\n"
        "    c.on_msg(lambda m: c.send({'echo': m['content']['data']}))\n"
        "comm.get_comm_manager().register_target('rp.front.target', front_open)\n",
    )
    ex, idle = send_shell(
        skc, "comm_open", {"comm_id": "rp-front-1", "target_name": "rp.front.target", "data": {"v": 1}}
    )
    assert "opened {'v': 1}" in ex.stdout, describe(ex.iopub)
    assert idle, describe(ex.iopub)
    assert value(skc, "front_opened") == [("rp-front-1", {"v": 1})]
    assert comm_info(skc).get("rp-front-1") == {"target_name": "rp.front.target"}

    ex, idle = send_shell(skc, "comm_msg", {"comm_id": "rp-front-1", "data": {"ping": 1}})
    echoes = [m["content"] for m in ex.of_type("comm_msg")]
    assert echoes == [{"comm_id": "rp-front-1", "data": {"echo": {"ping": 1}}}], describe(ex.iopub)

    send_shell(skc, "comm_close", {"comm_id": "rp-front-1", "data": {}})
    assert "rp-front-1" not in comm_info(skc)
    kernel_answers(skc)


def test_widget_display_and_frontend_update(skc):
    """`display(IntSlider(value=1))`: comm_open messages (target
    jupyter.widget, one of them the slider's model) and a display_data with
    the widget view; comm_info lists the model. A comm_msg from the
    frontend (`update` of `value` to 7) sets `s.value` to 7 and runs the
    observer registered before (its print shown)."""
    ex = run(
        skc,
        "import ipywidgets as w\n"
        "from IPython.display import display\n"
        "s = w.IntSlider(value=1)\n"
        "def on_value(change):\n"
        "    print('changed', change['new'])\n"
        "s.observe(on_value, names='value')\n"
        "display(s)\n",
        timeout=60,
    )
    model_id = value(skc, "s.model_id")
    opens = ex.of_type("comm_open")
    assert opens, describe(ex.outputs)
    assert all(m["content"]["target_name"] == "jupyter.widget" for m in opens), describe(opens)
    slider_open = [m["content"] for m in opens if m["content"]["comm_id"] == model_id]
    assert len(slider_open) == 1, describe(opens)
    state = slider_open[0]["data"]["state"]
    assert state["_model_name"] == "IntSliderModel" and state["value"] == 1, state
    assert widget_views(ex) == [model_id], describe(ex.outputs)
    view = displays(ex)[-1]["data"]
    assert view["text/plain"] == "IntSlider(value=1)", view
    assert comm_info(skc).get(model_id) == {"target_name": "jupyter.widget"}
    assert model_id in comm_info(skc, "jupyter.widget")

    got, idle = send_shell(
        skc,
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "update", "state": {"value": 7}, "buffer_paths": []}},
    )
    assert value(skc, "s.value") == 7, describe(got.iopub)
    assert "changed 7" in got.stdout, f"the observer did not print: {describe(got.iopub)}"
    echo = [m["content"] for m in got.of_type("comm_msg")]
    assert all(c["comm_id"] == model_id for c in echo), echo
    assert idle, f"no idle status for the comm_msg: {describe(got.iopub)}"

    # and the kernel side changes the frontend's model
    ex = run(skc, "s.value = 3")
    updates = [m["content"] for m in ex.of_type("comm_msg") if m["content"]["comm_id"] == model_id]
    assert any(u["data"].get("state", {}).get("value") == 3 for u in updates), describe(ex.outputs)
    assert "changed 3" in ex.stdout, describe(ex.outputs)


def test_button_click_into_output_widget(skc):
    """A Button's click (a `custom` comm_msg from the frontend) runs its
    `on_click` handler; what the handler prints inside `with out:` is
    routed to the Output widget the way the frontend expects: the widget's
    `msg_id` is set to the comm_msg's id around the print, which is that
    message's child."""
    ex = run(
        skc,
        "import ipywidgets as w\n"
        "from IPython.display import display\n"
        "click_out = w.Output()\n"
        "button = w.Button(description='go')\n"
        "def clicked(btn):\n"
        "    with click_out:\n"
        "        print('clicked!')\n"
        "button.on_click(clicked)\n"
        "display(button, click_out)\n"
        "(button.model_id, click_out.model_id)\n",
        timeout=60,
    )
    button_id, out_id = ast.literal_eval(plain(ex))
    assert sorted(widget_views(ex)) == sorted([button_id, out_id]), describe(ex.outputs)
    got, idle = send_shell(
        skc, "comm_msg", {"comm_id": button_id, "data": {"method": "custom", "content": {"event": "click"}}}
    )
    assert idle, describe(got.iopub)
    seq = []
    for m in got.outputs:
        c = m["content"]
        if m["msg_type"] == "comm_msg" and c["comm_id"] == out_id:
            seq.append(("msg_id", c["data"].get("state", {}).get("msg_id")))
        elif m["msg_type"] == "stream":
            seq.append(("stream", c["text"]))
    assert seq == [("msg_id", got.msg_id), ("stream", "clicked!\n"), ("msg_id", "")], describe(got.iopub)


def test_widget_binary_buffers(skc):
    """Binary widget state travels as message buffers both ways: an
    `Image` widget's comm_open carries its bytes as a buffer (with
    buffer_paths [['value']]); a frontend update with a buffer sets
    `value` to exactly those bytes."""
    png = base64.b64decode(PNG_B64)
    ex = run(
        skc,
        "import base64\n"
        "import ipywidgets as w\n"
        f"img = w.Image(value=base64.b64decode({PNG_B64!r}), format='png')\n"
        "img.model_id\n",
        timeout=60,
    )
    model_id = ast.literal_eval(plain(ex))
    opens = [m for m in ex.of_type("comm_open") if m["content"]["comm_id"] == model_id]
    assert len(opens) == 1, describe(ex.outputs)
    assert opens[0]["content"]["data"]["buffer_paths"] == [["value"]], opens[0]["content"]["data"]
    buffers = [bytes(b) for b in opens[0].get("buffers") or []]
    assert buffers == [png], f"comm_open buffers: {[len(b) for b in buffers]}"

    new = bytes(range(256)) * 4
    msg = skc.session.msg(
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "update", "state": {}, "buffer_paths": [["value"]]}},
    )
    msg["buffers"] = [new]
    skc.shell_channel.send(msg)
    assert value(skc, "bytes(img.value) == bytes(range(256)) * 4") is True, "the buffer did not arrive intact"


def test_interact(skc):
    """`interact(f, x=(0, 10))` shows a widget view and calls f once with
    the middle value."""
    ex = run(
        skc,
        "from ipywidgets import interact\n"
        "def f(x):\n"
        "    print('f called with', x)\n"
        "interact(f, x=(0, 10));\n",
        timeout=60,
    )
    assert ex.of_type("comm_open"), describe(ex.outputs)
    views = widget_views(ex)
    assert len(views) == 1, describe(ex.outputs)
    assert "f called with 5" in ex.stdout, describe(ex.outputs)


def test_tqdm_auto_is_a_widget(skc):
    """`tqdm.auto` in the kernel uses the notebook (widget) bar."""
    ex = run(skc, "from tqdm.auto import tqdm\nlist(tqdm(range(3)))\n", timeout=60)
    assert ex.of_type("comm_open"), describe(ex.outputs)
    assert len(widget_views(ex)) == 1, describe(ex.outputs)
    assert plain(ex) == "[0, 1, 2]"
    assert "|" not in ex.stderr, f"text progress bar on stderr: {ex.stderr!r}"


def test_comm_msg_unknown_id_is_dropped(skc):
    """A comm_msg (and comm_close) for a comm the kernel does not have is
    dropped; the kernel stays alive and answers the next execute."""
    send_shell(skc, "comm_msg", {"comm_id": "no-such-comm", "data": {"method": "update", "state": {}}})
    send_shell(skc, "comm_close", {"comm_id": "no-such-comm", "data": {}})
    kernel_answers(skc)


@pytest.mark.parametrize(
    "content",
    [
        {"comm_id": "<model>", "data": "not a dict"},
        {"comm_id": "<model>", "data": {"method": "update", "state": "not a dict"}},
        {"comm_id": "<model>", "data": {"method": "no_such_method"}},
        {"comm_id": "<model>"},
        {"data": {"method": "update", "state": {"value": 9}}},
        {"comm_id": 12345, "data": None},
        {"comm_id": ["a", "b"], "data": {}},
        {},
    ],
    ids=[
        "data-str", "state-str", "bad-method", "no-data", "no-comm-id", "int-id", "list-id", "empty",
    ],
)
def test_malformed_comm_msg_never_kills_kernel(skc, content):
    """comm_msgs with malformed content (data not a dict, state not a
    dict, unknown method, missing or non-string comm_id, empty) leave the
    kernel alive, the widget's value unchanged and the widget working."""
    run(
        skc,
        "import ipywidgets as w\n"
        "bad_target = w.IntSlider(value=4)\n",
        timeout=60,
    )
    model_id = value(skc, "bad_target.model_id")
    content = {k: (model_id if v == "<model>" else v) for k, v in content.items()}
    send_shell(skc, "comm_msg", content, timeout=5)
    kernel_answers(skc)
    assert value(skc, "bad_target.value") == 4
    send_shell(
        skc,
        "comm_msg",
        {"comm_id": model_id, "data": {"method": "update", "state": {"value": 6}, "buffer_paths": []}},
    )
    assert value(skc, "bad_target.value") == 6


# --------------------------------------------------------------------------
# bad input


def test_load_ext_missing_module(skc):
    """`%load_ext no_such_module_xyz`: a ModuleNotFoundError traceback
    naming the module; the kernel goes on."""
    ex = execute_error(skc, "%load_ext no_such_module_xyz")
    err = ex.error()
    assert err["ename"] == "ModuleNotFoundError", err
    assert "no_such_module_xyz" in err["evalue"], err
    assert "ModuleNotFoundError" in traceback_text(err), err
    kernel_answers(skc)
