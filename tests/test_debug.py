"""`%debug` after a failed cell: the post-mortem debugger talks through the
frontend's stdin, as in the tutorial's CompositeError example."""

from __future__ import annotations

import time
from queue import Empty

import pytest

from kernel_helpers import IS_RPARALLEL, execute, execute_ok, strip_ansi, traceback_text

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own magic"),
]


def answer_inputs(kc, msg_id: str, answers: list[str], timeout: float = 30) -> dict:
    """Answers each input_request with the next answer; returns the reply."""
    deadline = time.monotonic() + timeout
    answers = list(answers)
    while time.monotonic() < deadline:
        try:
            msg = kc.get_stdin_msg(timeout=0.1)
        except Empty:
            pass
        else:
            assert msg["msg_type"] == "input_request", msg
            kc.input(answers.pop(0) if answers else "q")
        try:
            reply = kc.get_shell_msg(timeout=0.05)
        except Empty:
            continue
        if reply["parent_header"]["msg_id"] == msg_id:
            return reply
    raise AssertionError("no execute_reply to %debug")


def stdout_of(kc, msg_id: str) -> str:
    text = []
    while True:
        try:
            msg = kc.get_iopub_msg(timeout=0.5)
        except Empty:
            return "".join(text)
        if msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "stream":
            text.append(msg["content"]["text"])


def test_debug_inspects_the_last_error(kc):
    """`%debug` (IPython's debugger) shows the failing line; `p` prints
    the cell's variables; `q` returns."""
    ex = execute(kc, "secret = 41\nvalue = secret + 1\n1/0")
    assert ex.reply["content"]["status"] == "error", ex.reply
    msg_id = kc.execute("%debug", allow_stdin=True)
    reply = answer_inputs(kc, msg_id, ["p secret", "p value * 1000", "q"])
    assert reply["content"]["status"] == "ok", traceback_text(reply["content"])
    out = strip_ansi(stdout_of(kc, msg_id))
    assert "----> 3 1/0" in out, out
    assert "41" in out and "42000" in out, out
    execute_ok(kc, "assert value == 42")


def test_debug_without_an_error_says_so(kernel):
    """In a fresh kernel there is nothing to debug: IPython says so."""
    _, kc = kernel
    ex = execute(kc, "%debug")
    assert ex.reply["content"]["status"] == "ok", ex.reply
    text = "".join(m["content"]["text"] for m in ex.outputs if m["msg_type"] == "stream")
    assert "No traceback has been produced, nothing to debug." in text, text
