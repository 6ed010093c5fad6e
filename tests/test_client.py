"""The rparallel kernel driven by jupyter_client's BlockingKernelClient,
the way notebooks and consoles drive a kernel.

Every wait is bounded (see kernel_helpers); a test that hangs is a failure.
"""

from __future__ import annotations

import base64
import fnmatch
import re
import subprocess
import time
from queue import Empty

import pytest
import zmq
from jupyter_client.session import Session

from kernel_helpers import (
    VENV_PYTHON,
    Execution,
    KernelTimeout,
    collect_iopub,
    describe,
    execute,
    execute_ok,
    get_replies,
    get_reply,
    kernel_pid,
    parent_id,
    pid_alive,
    strip_ansi,
    traceback_text,
    wait_for_stream,
    wait_pid_gone,
)
from wire_helpers import execute_content

pytestmark = pytest.mark.timeout(120)


def text_result(ex: Execution) -> str:
    return ex.result()["text/plain"]


# ===========================================================================
# kernel_info, heartbeat, comm_info


def test_kernel_info_reply(skc):
    kc = skc
    msg_id = kc.kernel_info()
    reply = get_reply(kc, msg_id, 10)
    assert reply["msg_type"] == "kernel_info_reply"
    c = reply["content"]
    assert c["status"] == "ok"

    def version(s):
        return tuple(int(p) for p in s.split(".")[:2])

    assert version(c["protocol_version"]) >= (5, 3), c["protocol_version"]
    assert version(reply["header"]["version"]) >= (5, 3), reply["header"]["version"]
    assert isinstance(c["implementation"], str) and c["implementation"]
    assert isinstance(c["implementation_version"], str) and c["implementation_version"]
    assert isinstance(c["banner"], str) and c["banner"]

    li = c["language_info"]
    assert li["name"] == "python"
    py_version = subprocess.run(
        [str(VENV_PYTHON), "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout.strip()
    assert li["version"] == py_version, "language_info.version is not the embedded Python's"
    assert li["file_extension"] == ".py"
    assert li["mimetype"] == "text/x-python"
    assert li["pygments_lexer"] == "ipython3"
    assert li["nbconvert_exporter"] == "python"
    assert li["codemirror_mode"] in ({"name": "ipython", "version": 3}, "python", "ipython"), li[
        "codemirror_mode"
    ]

    # busy / idle around kernel_info on IOPub (jupyter_client's readiness
    # check depends on an IOPub message answering kernel_info)
    states = []
    deadline = time.monotonic() + 5
    while "idle" not in states and time.monotonic() < deadline:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Empty:
            continue
        if parent_id(msg) == msg_id and msg["msg_type"] == "status":
            states.append(msg["content"]["execution_state"])
    assert states == ["busy", "idle"], f"status messages for kernel_info: {states}"


def test_heartbeat_echoes(shared_kernel):
    km, _ = shared_kernel
    ci = km.get_connection_info()
    if ci["transport"] == "tcp":
        url = f"tcp://{ci['ip']}:{ci['hb_port']}"
    else:
        url = f"ipc://{ci['ip']}-{ci['hb_port']}"
    ctx = zmq.Context()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    try:
        sock.connect(url)
        for payload in (b"ping", b"\x00\xffbinary"):
            sock.send(payload)
            assert sock.poll(3000), "no heartbeat echo within 3 s"
            assert sock.recv() == payload
    finally:
        sock.close()
        ctx.term()


def test_comm_info(skc):
    for target in (None, "jupyter.widget"):
        msg_id = skc.comm_info(target_name=target)
        reply = get_reply(skc, msg_id, 10)
        assert reply["msg_type"] == "comm_info_reply"
        assert reply["content"]["status"] == "ok"
        assert reply["content"]["comms"] == {}


# ===========================================================================
# execution basics


def test_iopub_sequence_and_execution_count(kernel):
    _, kc = kernel
    ex = execute_ok(kc, "6*7")
    types = [m["msg_type"] for m in ex.iopub]
    assert types[0] == "status" and ex.iopub[0]["content"]["execution_state"] == "busy", types
    assert types[-1] == "status" and ex.iopub[-1]["content"]["execution_state"] == "idle", types
    assert types[1] == "execute_input", types
    assert ex.iopub[1]["content"]["code"] == "6*7"
    n = ex.content["execution_count"]
    assert n == 1, "first cell of a fresh kernel must be In[1]"
    assert ex.iopub[1]["content"]["execution_count"] == n
    res = ex.of_type("execute_result")
    assert len(res) == 1 and res[0]["content"]["execution_count"] == n
    assert res[0]["content"]["data"]["text/plain"] == "42"

    # silent and store_history=False cells do not count
    silent = execute_ok(kc, "1 + 1", silent=True)
    assert not silent.of_type("execute_result"), describe(silent.iopub)
    assert not silent.of_type("execute_input"), describe(silent.iopub)
    execute_ok(kc, "2 + 2", store_history=False)
    assert execute_ok(kc, "3 + 3").content["execution_count"] == 2


def test_namespace_persists(kc):
    execute_ok(kc, "import math\ndef area(r):\n    return math.pi * r * r\nradius = 2")
    ex = execute_ok(kc, "round(area(radius), 3)")
    assert text_result(ex) == "12.566"


def test_execute_result_only_for_last_expression(skc):
    assert not execute_ok(skc, "x_assign = 5").of_type("execute_result")
    assert not execute_ok(skc, "None").of_type("execute_result")
    assert not execute_ok(skc, "print('p')").of_type("execute_result")
    ex = execute_ok(skc, "y_val = 1\ny_val + 1\ny_val + 2")
    assert text_result(ex) == "3"


def test_trailing_semicolon_suppresses_result(skc):
    ex = execute_ok(skc, "40 + 2;")
    assert not ex.of_type("execute_result"), describe(ex.outputs)


def test_out_in_and_underscores(kernel):
    _, kc = kernel
    counts = [execute_ok(kc, code).content["execution_count"] for code in ("10", "20", "30")]
    assert text_result(execute_ok(kc, "(_, __, ___)")) == "(30, 20, 10)"
    assert text_result(execute_ok(kc, f"Out[{counts[0]}]")) == "10"
    assert text_result(execute_ok(kc, f"In[{counts[1]}]")) == "'20'"


def test_user_expressions(skc):
    ex = execute_ok(skc, "ue_x = 3", user_expressions={"double": "ue_x * 2", "bad": "1/0"})
    ue = ex.content["user_expressions"]
    assert ue["double"]["status"] == "ok"
    assert ue["double"]["data"]["text/plain"] == "6"
    assert ue["bad"]["status"] == "error"
    assert ue["bad"]["ename"] == "ZeroDivisionError"


@pytest.mark.parametrize("code", ["exit", "quit", "exit()"])
def test_exit_asks_frontend_to_exit(kernel, code):
    _, kc = kernel
    ex = execute_ok(kc, code)
    payloads = ex.content.get("payload", [])
    asks = [p for p in payloads if p.get("source") == "ask_exit"]
    assert len(asks) == 1, f"expected an ask_exit payload for {code!r}, got {payloads}"
    assert not asks[0].get("keepkernel", False)


# ===========================================================================
# streams


def test_unicode_round_trip(skc):
    s = "héllo ✓ 日本 🐍"
    code = f"s_uni = {s!r}\nprint(s_uni)\nimport sys\nprint(s_uni, file=sys.stderr)\ns_uni"
    ex = execute_ok(skc, code)
    assert ex.stdout == s + "\n"
    assert ex.stderr == s + "\n"
    assert text_result(ex) == repr(s)
    assert text_result(execute_ok(skc, "café = 3\ncafé * 2")) == "6"
    err = execute(skc, "raise ValueError('ünï ✓ 🐍')")
    assert err.status == "error"
    assert err.error()["evalue"] == "ünï ✓ 🐍"
    assert err.content["evalue"] == "ünï ✓ 🐍"


def test_fd_level_output_reaches_the_cell(skc):
    """What C code and subprocesses write to fds 1 and 2 lands in the cell
    that ran them (as in ipykernel), on the right stream, before its reply,
    and a large burst arrives whole."""
    ex = execute_ok(
        skc,
        "import os, subprocess, ctypes\n"
        "os.system('echo sys-out; echo sys-err >&2')\n"
        "subprocess.run(['printf', 'sub-%s', 'out'])\n"
        "ctypes.CDLL(None).printf(b'c-printf\\n')\n"
        "None",
    )
    assert "sys-out\n" in ex.stdout and "sub-out" in ex.stdout, ex.stdout
    assert "c-printf\n" in ex.stdout, ex.stdout
    assert "sys-err\n" in ex.stderr and "sys-out" not in ex.stderr, ex.stderr
    big = execute_ok(skc, "os.system('seq 1 200000')")
    assert big.stdout == "".join(f"{i}\n" for i in range(1, 200001))
    # Nothing of it leaks into the next cell.
    assert execute_ok(skc, "print('next')").stdout == "next\n"


def _first_difference(a: str, b: str) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at char {i}: got {a[i - 20:i + 40]!r}, expected {b[i - 20:i + 40]!r}"
    return f"one is a prefix of the other: got {len(a)} chars, expected {len(b)}"


@pytest.mark.timeout(240)
def test_ten_megabyte_stdout_complete_and_in_order(kernel):
    _, kc = kernel
    n = 100_000
    code = f"for i in range({n}):\n    print(f'line {{i:08d}} ' + 'x' * 85)"
    expected = "".join(f"line {i:08d} " + "x" * 85 + "\n" for i in range(n))
    assert len(expected) == 10_000_000
    ex = execute(kc, code, timeout=180)
    assert ex.status == "ok", ex.content
    out = ex.stdout
    assert len(out) == len(expected) and out == expected, _first_difference(out, expected)
    assert ex.stderr == ""
    # still responsive afterwards
    assert text_result(execute_ok(kc, "6*7")) == "42"


def test_large_multibyte_output_not_split_inside_characters(skc):
    # 1.2 M characters, 3.6 MB of UTF-8, no newline until the end: a kernel
    # that cuts its stream buffer at a byte count must not break characters.
    ex = execute_ok(skc, "import sys\nsys.stdout.write('日本✓' * 400000)\nprint()", timeout=60)
    expected = "日本✓" * 400000 + "\n"
    assert ex.stdout == expected, _first_difference(ex.stdout, expected)
    assert "\ufffd" not in ex.stdout


def test_output_without_newline_is_flushed_at_cell_end(skc):
    ex = execute_ok(skc, "import sys\nsys.stdout.write('no newline')\nsys.stderr.write('err no nl')")
    assert ex.stdout == "no newline"
    assert ex.stderr == "err no nl"
    # and it does not leak into the next cell
    nxt = execute_ok(skc, "print('next')")
    assert nxt.stdout == "next\n"


@pytest.mark.parametrize("stream", ["stdout", "stderr"])
def test_streams_are_live(kernel, stream):
    _, kc = kernel
    code = (
        "import sys, time\n"
        "for i in range(5):\n"
        f"    print('tick', i, file=sys.{stream})\n"
        "    time.sleep(0.3)"
    )
    ex = execute_ok(kc, code, timeout=30)
    assert ex.stream(stream) == "".join(f"tick {i}\n" for i in range(5))
    # when did each tick's text reach the client?
    seen_at = {}
    text = ""
    for msg, t in zip(ex.iopub, ex.arrival):
        if msg["msg_type"] == "stream" and msg["content"]["name"] == stream:
            text += msg["content"]["text"]
            for i in range(5):
                if f"tick {i}\n" in text and i not in seen_at:
                    seen_at[i] = t
    end = ex.idle_at
    rel = {i: round(end - t, 2) for i, t in seen_at.items()}
    # the cell runs ~1.5 s; tick 0 is printed at its start, tick 2 at ~0.6 s
    assert end - seen_at[0] >= 0.9, f"seconds before cell end at which ticks arrived: {rel}"
    assert end - seen_at[2] >= 0.3, f"seconds before cell end at which ticks arrived: {rel}"


def test_output_before_error_comes_first(skc):
    ex = execute(skc, "print('before the error')\n1/0")
    assert ex.status == "error"
    types = [m["msg_type"] for m in ex.outputs]
    assert types == ["stream", "error"], describe(ex.outputs)
    assert ex.stdout == "before the error\n"


# ===========================================================================
# rich output


RICH_CLASS = '''
class Rich:
    def __repr__(self):
        return "Rich()"
    def _repr_html_(self):
        return "<b>rich</b>"
    def _repr_markdown_(self):
        return "**rich**"
'''


def test_rich_repr_execute_result(skc):
    execute_ok(skc, RICH_CLASS)
    ex = execute_ok(skc, "Rich()")
    data = ex.result()
    assert data.get("text/plain") == "Rich()"
    assert data.get("text/html") == "<b>rich</b>"
    assert data.get("text/markdown") == "**rich**"


def test_display_builtin(skc):
    execute_ok(skc, RICH_CLASS)
    ex = execute_ok(skc, "r = display(Rich())\ndisplay(1, 'two')\nr is None")
    displays = ex.of_type("display_data")
    assert len(displays) == 3, describe(ex.outputs)
    first = displays[0]["content"]["data"]
    assert first == {"text/plain": "Rich()", "text/html": "<b>rich</b>", "text/markdown": "**rich**"}
    assert displays[1]["content"]["data"] == {"text/plain": "1"}
    assert displays[2]["content"]["data"] == {"text/plain": "'two'"}
    assert text_result(ex) == "True"
    # the displays come before the result
    types = [m["msg_type"] for m in ex.outputs]
    assert types == ["display_data"] * 3 + ["execute_result"], types


def test_more_repr_methods(skc):
    code = '''
class Many:
    PNG = b"\\x89PNG\\r\\n\\x1a\\nnot really a png"
    def _repr_png_(self):
        return self.PNG
    def _repr_svg_(self):
        return "<svg></svg>"
    def _repr_latex_(self):
        return "$x^2$"
    def _repr_json_(self):
        return {"a": [1, 2]}
Many()
'''
    data = execute_ok(skc, code).result()
    assert base64.b64decode(data["image/png"]) == b"\x89PNG\r\n\x1a\nnot really a png"
    assert data["image/svg+xml"] == "<svg></svg>"
    assert data["text/latex"] == "$x^2$"
    assert data["application/json"] == {"a": [1, 2]}
    # repr() (<__main__.Many object at 0x..>) or IPython's pretty form (<__main__.Many at 0x..>)
    assert re.fullmatch(r"<(__main__\.)?Many( object)? at 0x[0-9a-f]+>", data["text/plain"]), data


@pytest.mark.parametrize("wait", [False, True])
def test_clear_output_builtin(skc, wait):
    ex = execute_ok(skc, f"print('a')\nclear_output(wait={wait})\nprint('b')")
    types = [m["msg_type"] for m in ex.outputs]
    assert types == ["stream", "clear_output", "stream"], describe(ex.outputs)
    assert ex.of_type("clear_output")[0]["content"]["wait"] is wait


# ===========================================================================
# errors


def test_traceback_format(skc):
    code = "def f(x):\n    return 1 / x\n\nf(0)"
    ex = execute(skc, code)
    c = ex.content
    assert c["status"] == "error"
    assert c["ename"] == "ZeroDivisionError"
    assert c["evalue"] == "division by zero"
    n = c["execution_count"]
    err = ex.error()
    assert err["ename"] == "ZeroDivisionError" and err["evalue"] == "division by zero"
    assert err["traceback"] == c["traceback"]
    assert [m["msg_type"] for m in ex.outputs] == ["error"], describe(ex.outputs)
    tb = traceback_text(err)
    assert f"Cell In[{n}], line 4" in tb, tb
    assert f"Cell In[{n}], line 2" in tb, tb
    assert re.search(r"^---->\s*4\s+f\(0\)\s*$", tb, re.M), tb
    assert re.search(r"^---->\s*2\s+return 1 / x\s*$", tb, re.M), tb
    last = [line for line in tb.splitlines() if line.strip()][-1]
    assert last == "ZeroDivisionError: division by zero", tb
    # no frames of the kernel's own machinery
    assert not re.search(r'^\s*File ["/<]', tb, re.M), tb


def test_syntax_error_format(skc):
    ex = execute(skc, "x = 1\ndef f(:\n    pass")
    c = ex.content
    assert c["status"] == "error"
    assert c["ename"] == "SyntaxError"
    tb = traceback_text(ex.error())
    assert f"Cell In[{c['execution_count']}], line 2" in tb, tb
    assert "def f(:" in tb, tb
    assert "SyntaxError" in tb


def test_error_in_module_code_shows_module_frame(skc):
    ex = execute(skc, "import json\njson.loads('{')")
    c = ex.content
    assert c["ename"] == "JSONDecodeError"
    tb = traceback_text(ex.error())
    assert f"Cell In[{c['execution_count']}], line 2" in tb
    assert "json" in tb and "decoder.py" in tb, tb


# ===========================================================================
# completion, inspection, is_complete


def _complete(kc, code, cursor_pos=None):
    msg_id = kc.complete(code, cursor_pos)
    reply = get_reply(kc, msg_id, 15)
    c = reply["content"]
    assert c["status"] == "ok", c
    pos = len(code) if cursor_pos is None else cursor_pos
    assert 0 <= c["cursor_start"] <= c["cursor_end"] <= len(code), c
    assert c["cursor_end"] == pos or c["cursor_start"] <= pos <= c["cursor_end"], c
    return {code[: c["cursor_start"]] + m + code[c["cursor_end"] :] for m in c["matches"]}


def test_complete_uses_live_namespace(skc):
    execute_ok(
        skc,
        "my_unique_variable_xyz = 1\n"
        "class _K:\n    attr_alpha = 1\n    attr_beta = 2\n"
        "k_obj = _K()",
    )
    assert "my_unique_variable_xyz" in _complete(skc, "my_unique_var")
    done = _complete(skc, "k_obj.attr_")
    assert {"k_obj.attr_alpha", "k_obj.attr_beta"} <= done, done


def test_complete_module_attribute_and_mid_line_cursor(skc):
    assert "import os\nos.path" in _complete(skc, "import os\nos.pa")
    code = "v = zi\nprint(v)"
    assert "v = zip\nprint(v)" in _complete(skc, code, cursor_pos=6)


def test_complete_cursor_counts_unicode_code_points(skc):
    code = "s_u = 'é✓🐍'; s_u.upp"
    assert "s_u = 'é✓🐍'; s_u.upper" in _complete(skc, code)


def _inspect(kc, code, cursor_pos=None):
    msg_id = kc.inspect(code, cursor_pos)
    reply = get_reply(kc, msg_id, 15)
    assert reply["content"]["status"] == "ok", reply["content"]
    return reply["content"]


def test_inspect(skc):
    c = _inspect(skc, "zip")
    assert c["found"] is True
    text = strip_ansi(c["data"]["text/plain"])
    assert "zip(" in text and "Yield tuples until an input is exhausted" in text, text

    execute_ok(
        skc,
        "def my_documented_func(a, b=2):\n    '''Adds a and b, documented.'''\n    return a + b",
    )
    for code in ("my_documented_func", "x = my_documented_func(1, "):
        c = _inspect(skc, code)
        assert c["found"] is True, code
        text = strip_ansi(c["data"]["text/plain"])
        assert "my_documented_func(a, b=2)" in text, text
        assert "Adds a and b, documented." in text, text

    c = _inspect(skc, "no_such_name_qwerty")
    assert c["found"] is False


@pytest.mark.parametrize(
    "code,status,indent",
    [
        ("x = 1", "complete", None),
        ("for i in range(3):", "incomplete", "    "),
        ("if x:\n    if y:", "incomplete", "        "),
        ("def f(a,", "incomplete", None),
        ("for = 1", "invalid", None),
    ],
)
def test_is_complete(skc, code, status, indent):
    msg_id = skc.is_complete(code)
    reply = get_reply(skc, msg_id, 10)
    assert reply["content"]["status"] == status, reply["content"]
    if indent is not None:
        assert reply["content"]["indent"] == indent, reply["content"]


# ===========================================================================
# history


def test_history_kept_across_cells(kernel):
    _, kc = kernel
    codes = ["hist_a = 'marker_hist_1'", "hist_b = hist_a * 2", "len(hist_b)"]
    counts = [execute_ok(kc, c).content["execution_count"] for c in codes]
    assert counts == list(range(counts[0], counts[0] + 3)), counts

    def history(**kw):
        msg_id = kc.history(raw=True, **kw)
        reply = get_reply(kc, msg_id, 10)
        assert reply["content"]["status"] == "ok", reply["content"]
        return reply["content"]["history"]

    tail = history(hist_access_type="tail", n=3, output=False)
    assert [h[2] for h in tail] == codes, tail
    assert [h[1] for h in tail] == counts, tail
    assert len({h[0] for h in tail}) == 1, tail

    rng = history(
        hist_access_type="range", session=0, start=counts[0], stop=counts[-1] + 1, output=False
    )
    assert [h[2] for h in rng] == codes, rng
    assert [h[1] for h in rng] == counts, rng

    rng_out = history(
        hist_access_type="range", session=0, start=counts[2], stop=counts[2] + 1, output=True
    )
    assert len(rng_out) == 1 and list(rng_out[0][2]) == [codes[2], "26"], rng_out

    found = history(hist_access_type="search", pattern="*marker_hist_1*", output=False)
    sources = [h[2] for h in found]
    assert codes[0] in sources, found
    assert all(fnmatch.fnmatchcase(s, "*marker_hist_1*") for s in sources), found


# ===========================================================================
# stdin


def test_input_over_stdin(kernel):
    _, kc = kernel
    code = "a = input('first? ')\nb = input('second? ')\nprint(a + '+' + b)\nlen(a)"
    msg_id = kc.execute(code, allow_stdin=True)
    answers = {"first? ": "wörld ✓", "second? ": ""}
    for prompt in ("first? ", "second? "):
        req = kc.get_stdin_msg(timeout=15)
        assert req["msg_type"] == "input_request"
        assert parent_id(req) == msg_id
        assert req["content"]["prompt"] == prompt
        assert req["content"]["password"] is False
        kc.input(answers[prompt])
    ex = Execution(msg_id=msg_id, code=code)
    collect_iopub(kc, ex, 15)
    ex.reply = get_reply(kc, msg_id, 10)
    assert ex.status == "ok", ex.summary()
    assert "wörld ✓+\n" in ex.stdout
    assert text_result(ex) == "7"


def test_input_without_stdin_is_a_clear_error(kernel):
    _, kc = kernel
    ex = execute(kc, "input('x? ')", allow_stdin=False, timeout=15)
    c = ex.content
    assert c["status"] == "error"
    assert "stdin" in (c["ename"] + c["evalue"]).lower(), (c["ename"], c["evalue"])
    with pytest.raises(Empty):
        kc.get_stdin_msg(timeout=0.5)
    assert text_result(execute_ok(kc, "1 + 1")) == "2"


# ===========================================================================
# interrupt


INTERRUPT_CODE = {
    "sleep": "import time\nprint('started', flush=True)\ntime.sleep(100)",
    "busy_loop": "print('started', flush=True)\nwhile True:\n    pass",
    "sleep_in_function": (
        "import time\ndef wait():\n    time.sleep(100)\nprint('started', flush=True)\nwait()"
    ),
}


def _check_interrupted(kc, ex: Execution, t0: float) -> None:
    try:
        reply = get_reply(kc, ex.msg_id, 2.0)
    except KernelTimeout:
        raise AssertionError(
            f"no execute_reply within 2 s of the interrupt; IOPub so far: {describe(ex.iopub)}"
        ) from None
    elapsed = time.monotonic() - t0
    ex.reply = reply
    c = reply["content"]
    assert c["status"] == "error", c
    assert c["ename"] == "KeyboardInterrupt", c
    collect_iopub(kc, ex, 5)
    assert ex.error()["ename"] == "KeyboardInterrupt"
    assert elapsed < 2.0


def _check_still_usable(kc) -> None:
    # the namespace survived, and no delayed interrupt hits the next cells
    ex = execute_ok(kc, "import time\ntime.sleep(1.5)\nx + 1", timeout=20)
    assert text_result(ex) == "42"
    assert text_result(execute_ok(kc, "x * 2")) == "82"


@pytest.mark.parametrize("what", sorted(INTERRUPT_CODE))
def test_interrupt_running_cell(kernel, what):
    km, kc = kernel
    execute_ok(kc, "x = 41")
    code = INTERRUPT_CODE[what]
    ex = Execution(msg_id=kc.execute(code, allow_stdin=False), code=code)
    wait_for_stream(kc, ex, "started", 15)
    time.sleep(0.3)
    t0 = time.monotonic()
    km.interrupt_kernel()
    _check_interrupted(kc, ex, t0)
    _check_still_usable(kc)


def test_interrupt_request_message_gets_reply(kernel):
    _, kc = kernel
    execute_ok(kc, "x = 41")
    code = INTERRUPT_CODE["sleep"]
    ex = Execution(msg_id=kc.execute(code, allow_stdin=False), code=code)
    wait_for_stream(kc, ex, "started", 15)
    time.sleep(0.3)
    msg = kc.session.msg("interrupt_request", {})
    t0 = time.monotonic()
    kc.control_channel.send(msg)
    reply = get_reply(kc, msg["header"]["msg_id"], 5, channel="control")
    assert reply["msg_type"] == "interrupt_reply"
    assert reply["content"]["status"] == "ok"
    _check_interrupted(kc, ex, t0)
    _check_still_usable(kc)


def test_interrupt_while_idle_is_harmless(kernel):
    km, kc = kernel
    execute_ok(kc, "x = 41")
    km.interrupt_kernel()
    time.sleep(1.0)
    _check_still_usable(kc)


def test_interrupt_during_input(kernel):
    km, kc = kernel
    execute_ok(kc, "x = 41")
    msg_id = kc.execute("input('waiting: ')", allow_stdin=True)
    req = kc.get_stdin_msg(timeout=15)
    assert req["msg_type"] == "input_request"
    t0 = time.monotonic()
    km.interrupt_kernel()
    _check_interrupted(kc, Execution(msg_id=msg_id, code="input"), t0)
    _check_still_usable(kc)


# ===========================================================================
# stop_on_error


FAILING = "import time\ntime.sleep(1)\nraise ValueError('boom')"


def test_stop_on_error_aborts_queued_requests(kernel):
    _, kc = kernel
    first = kc.execute(FAILING, allow_stdin=False)
    second = kc.execute("a = 1", allow_stdin=False)
    third = kc.execute("b = 2", allow_stdin=False)
    replies = get_replies(kc, [first, second, third], 20)
    assert replies[first]["content"]["status"] == "error"
    assert replies[first]["content"]["ename"] == "ValueError"
    assert replies[second]["content"]["status"] == "aborted", replies[second]["content"]
    assert replies[third]["content"]["status"] == "aborted", replies[third]["content"]
    # none of them ran; requests sent after the error run normally
    ex = execute_ok(kc, "('a' in globals(), 'b' in globals())")
    assert text_result(ex) == "(False, False)"


def test_stop_on_error_false_runs_queued_requests(kernel):
    _, kc = kernel
    first = kc.execute(FAILING, allow_stdin=False, stop_on_error=False)
    second = kc.execute("a = 1", allow_stdin=False)
    third = kc.execute("b = 2", allow_stdin=False)
    replies = get_replies(kc, [first, second, third], 20)
    assert replies[first]["content"]["status"] == "error"
    assert replies[second]["content"]["status"] == "ok", replies[second]["content"]
    assert replies[third]["content"]["status"] == "ok", replies[third]["content"]
    ex = execute_ok(kc, "('a' in globals(), 'b' in globals())")
    assert text_result(ex) == "(True, True)"


# ===========================================================================
# message authentication


def _execute_content(code: str) -> dict:
    return execute_content(code, store_history=True)


def _recv_reply(sock, session: Session, msg_id: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(f"no reply to {msg_id} on the raw shell socket in {timeout}s")
        if not sock.poll(int(remaining * 1000)):
            continue
        frames = sock.recv_multipart()
        _, rest = session.feed_identities(frames)
        msg = session.deserialize(rest)
        if parent_id(msg) == msg_id:
            return msg


@pytest.mark.parametrize("forgery", ["wrong_key", "no_signature", "tampered_content", "replayed"])
def test_forged_messages_are_ignored(kernel, tmp_path, forgery):
    km, kc = kernel
    ci = km.get_connection_info()
    key = ci["key"] if isinstance(ci["key"], bytes) else ci["key"].encode()
    assert key, "the kernel must be started with a signing key"
    scheme = ci["signature_scheme"]
    good = Session(key=key, signature_scheme=scheme, username="tester")
    bad = Session(key=b"definitely-not-the-key", signature_scheme=scheme, username="tester")
    marker = tmp_path / "marker"
    evil = f"open({str(marker)!r}, 'a').write('x')"
    if ci["transport"] == "tcp":
        url = f"tcp://{ci['ip']}:{ci['shell_port']}"
    else:
        url = f"ipc://{ci['ip']}-{ci['shell_port']}"

    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    try:
        sock.connect(url)
        if forgery == "wrong_key":
            bad.send(sock, "execute_request", content=_execute_content(evil))
        elif forgery == "no_signature":
            frames = good.serialize(good.msg("execute_request", content=_execute_content(evil)))
            frames[1] = b""
            sock.send_multipart(frames)
        elif forgery == "tampered_content":
            msg = good.msg("execute_request", content=_execute_content("1 + 1"))
            frames = good.serialize(msg)
            frames[-1] = good.pack(_execute_content(evil))
            sock.send_multipart(frames)
        elif forgery == "replayed":
            msg = good.msg("execute_request", content=_execute_content(evil))
            frames = good.serialize(msg)
            sock.send_multipart(frames)
            reply = _recv_reply(sock, good, msg["header"]["msg_id"], 15)
            assert reply["content"]["status"] == "ok", reply["content"]
            assert marker.read_text() == "x"
            sock.send_multipart(frames)  # the very same signed bytes again

        assert not sock.poll(2000), f"the kernel answered a {forgery} message"
        expected = "x" if forgery == "replayed" else None

        def marker_state():
            return marker.read_text() if marker.exists() else None

        assert marker_state() == expected, f"code of a {forgery} message was executed"

        # the same socket with a properly signed request still works, and the
        # forged request was dropped, not queued
        msg = good.msg("execute_request", content=_execute_content("6*7"))
        sock.send_multipart(good.serialize(msg))
        reply = _recv_reply(sock, good, msg["header"]["msg_id"], 15)
        assert reply["msg_type"] == "execute_reply"
        assert reply["content"]["status"] == "ok", reply["content"]
        assert marker_state() == expected, f"code of a {forgery} message was executed"
    finally:
        sock.close()
        ctx.term()
    assert text_result(execute_ok(kc, "1 + 1")) == "2"


def test_sys_exit_in_a_cell_does_not_end_the_kernel(kernel):
    km, kc = kernel
    execute_ok(kc, "x = 41")
    ex = execute(kc, "import sys\nsys.exit(3)")
    assert ex.status == "error", ex.summary()
    assert ex.content["ename"] == "SystemExit"
    assert km.is_alive()
    assert text_result(execute_ok(kc, "x + 1")) == "42"


# ===========================================================================
# shutdown


@pytest.mark.parametrize("restart", [False, True])
def test_shutdown_request_exits_process(kernel, restart):
    km, kc = kernel
    pid = kernel_pid(km)
    reported = int(execute_ok(kc, "import os\nprint(os.getpid())").stdout)
    msg_id = kc.shutdown(restart=restart)
    reply = get_reply(kc, msg_id, 10, channel="control")
    assert reply["msg_type"] == "shutdown_reply"
    assert reply["content"]["status"] == "ok"
    assert reply["content"]["restart"] is restart
    # the process exits by itself (nobody kills it here), with status 0
    proc = km.provisioner.process
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None, "kernel process still running 10 s after shutdown_reply"
    assert proc.returncode == 0, f"kernel exited with status {proc.returncode}"
    assert wait_pid_gone(pid, 5)
    assert wait_pid_gone(reported, 5), f"process {reported} (os.getpid() in the kernel) still alive"
    assert not pid_alive(pid)


def test_shutdown_runs_atexit_handlers(kernel, tmp_path):
    """Python's normal exit: atexit handlers (user cleanup, multiprocessing's
    semaphore and process cleanup) run when the kernel is shut down."""
    km, kc = kernel
    marker = tmp_path / "atexit-ran"
    execute_ok(kc, f"import atexit\natexit.register(lambda: open({str(marker)!r}, 'w').write('done'))")
    msg_id = kc.shutdown()
    get_reply(kc, msg_id, 10, channel="control")
    proc = km.provisioner.process
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None, "kernel process still running 10 s after shutdown_reply"
    assert marker.exists(), "atexit handlers did not run when the kernel shut down"
    assert marker.read_text() == "done"
