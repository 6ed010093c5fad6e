"""Shared helpers for the end-to-end tests of the rparallel kernel: starting
a kernel, executing a cell and collecting its IOPub messages up to ``idle``,
bounded waits, and process checks via ``/proc``.

Everything here talks to a real kernel through jupyter_client; nothing is
mocked. Every wait is bounded: a helper that waits longer than its timeout
raises ``KernelTimeout`` with a description of what did (not) arrive.
Helpers for clusters are in ``cluster_helpers.py``, for raw wire messages in
``wire_helpers.py``.
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from jupyter_client.manager import KernelManager

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
VENV_BIN = VENV / "bin"
VENV_PYTHON = VENV_BIN / "python"
JUPYTER = VENV_BIN / "jupyter"

# The kernel under test. Only ever overridden to check the tests themselves
# against ipykernel (RPARALLEL_TEST_KERNEL=python3); `make test` uses rparallel.
KERNEL_NAME = os.environ.get("RPARALLEL_TEST_KERNEL", "rparallel")
IS_RPARALLEL = KERNEL_NAME == "rparallel"

# how long a kernel may take to start and answer kernel_info
STARTUP_TIMEOUT = 60

ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")


def strip_ansi(text: str) -> str:
    return ANSI_RE.sub("", text)


class KernelTimeout(AssertionError):
    """A bounded wait on the kernel ran out."""


# --------------------------------------------------------------------------
# processes


def pid_alive(pid: int) -> bool:
    """True if a process with this pid exists and is not a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def wait_pid_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def pids_with_cmdline(fragment: str) -> list[int]:
    """Live (non-zombie) processes whose command line contains ``fragment``."""
    found = []
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                "utf-8", "replace"
            )
        except OSError:
            continue
        if fragment in cmdline and pid_alive(pid):
            found.append(pid)
    return found


def wait_until_none(find, timeout: float) -> list:
    """Calls ``find()`` every 0.1 s until it returns nothing or ``timeout``
    passes; returns what it found last (the leftovers)."""
    deadline = time.monotonic() + timeout
    left = find()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = find()
    return left


def wait_no_process_with(fragment: str, timeout: float) -> list[int]:
    """Wait until no process has ``fragment`` in its command line; return leftovers."""
    return wait_until_none(lambda: pids_with_cmdline(fragment), timeout)


def kill_pids(pids: list[int]) -> None:
    import signal

    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


# --------------------------------------------------------------------------
# kernels


def cluster_env(rp_dir: str) -> dict[str, str]:
    """This process's environment with ``RPARALLEL_DIR=rp_dir``: for kernels
    and ``rparallel`` commands that share the clusters of ``rp_dir``."""
    return {**os.environ, "RPARALLEL_DIR": rp_dir}


def start_kernel(rp_dir: str | None = None, *, kernel_name: str = KERNEL_NAME, stderr=None):
    """Starts a kernel and a BlockingKernelClient (channels started, kernel
    ready): ``(km, kc)``. The caller shuts it down (``shutdown_and_check``).

    ``rp_dir``: the kernel's ``RPARALLEL_DIR`` (default: inherited).
    ``stderr``: a file for the kernel's stderr, its log (default: inherited).
    """
    kwargs: dict[str, Any] = {}
    if rp_dir is not None:
        kwargs["env"] = cluster_env(rp_dir)
    if stderr is not None:
        kwargs["stderr"] = stderr
    km = KernelManager(kernel_name=kernel_name)
    km.start_kernel(**kwargs)
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=STARTUP_TIMEOUT)
    except BaseException:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        raise
    return km, kc


# --------------------------------------------------------------------------
# messages


@dataclass
class Execution:
    """Everything the kernel sent for one execute_request."""

    msg_id: str
    code: str
    reply: dict[str, Any] | None = None
    # IOPub messages whose parent is this request, in arrival order,
    # status messages included.
    iopub: list[dict[str, Any]] = field(default_factory=list)
    # time.monotonic() at which each iopub message was received
    arrival: list[float] = field(default_factory=list)
    sent_at: float = 0.0
    idle_at: float = 0.0

    @property
    def content(self) -> dict[str, Any]:
        assert self.reply is not None, f"no execute_reply for {self.code!r}"
        return self.reply["content"]

    @property
    def status(self) -> str:
        return self.content["status"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        """Output messages: everything but status and execute_input."""
        return [m for m in self.iopub if m["msg_type"] not in ("status", "execute_input")]

    def of_type(self, msg_type: str) -> list[dict[str, Any]]:
        return [m for m in self.iopub if m["msg_type"] == msg_type]

    def stream(self, name: str = "stdout") -> str:
        return "".join(
            m["content"]["text"]
            for m in self.iopub
            if m["msg_type"] == "stream" and m["content"]["name"] == name
        )

    @property
    def stdout(self) -> str:
        return self.stream("stdout")

    @property
    def stderr(self) -> str:
        return self.stream("stderr")

    def result(self) -> dict[str, Any]:
        """The data of the single execute_result."""
        results = self.of_type("execute_result")
        assert len(results) == 1, (
            f"expected exactly one execute_result for {self.code!r}, got "
            f"{len(results)}; outputs: {describe(self.outputs)}"
        )
        return results[0]["content"]["data"]

    def error(self) -> dict[str, Any]:
        errors = self.of_type("error")
        assert len(errors) == 1, (
            f"expected exactly one error message for {self.code!r}, got "
            f"{len(errors)}; outputs: {describe(self.outputs)}"
        )
        return errors[0]["content"]

    def summary(self) -> str:
        return (
            f"code={self.code!r} reply={self.reply and self.reply['content']!r} "
            f"iopub={describe(self.iopub)}"
        )


def describe(msgs: list[dict[str, Any]], limit: int = 400) -> str:
    """Short human-readable list of messages for assertion messages."""
    parts = []
    for m in msgs:
        c = m.get("content", {})
        if m["msg_type"] == "stream":
            text = c.get("text", "")
            detail = f"{c.get('name')}:{text[:60]!r}{'...' if len(text) > 60 else ''}"
        elif m["msg_type"] == "status":
            detail = c.get("execution_state")
        elif m["msg_type"] in ("execute_result", "display_data"):
            detail = f"{sorted(c.get('data', {}))} {str(c.get('data', {}).get('text/plain'))[:60]!r}"
        elif m["msg_type"] == "error":
            detail = f"{c.get('ename')}: {c.get('evalue')}"
        else:
            detail = str(c)[:80]
        parts.append(f"{m['msg_type']}({detail})")
    text = ", ".join(parts)
    return text if len(text) <= limit * 4 else text[: limit * 4] + "..."


def parent_id(msg: dict[str, Any]) -> str | None:
    return (msg.get("parent_header") or {}).get("msg_id")


def collect_iopub(kc, ex: Execution, timeout: float) -> Execution:
    """Read IOPub until the ``idle`` status whose parent is ``ex.msg_id``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(
                f"no IOPub idle for {ex.code[:200]!r} within {timeout}s; "
                f"received so far: {describe(ex.iopub)}"
            )
        try:
            msg = kc.get_iopub_msg(timeout=min(remaining, 0.5))
        except Empty:
            continue
        now = time.monotonic()
        if parent_id(msg) != ex.msg_id:
            continue
        ex.iopub.append(msg)
        ex.arrival.append(now)
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            ex.idle_at = now
            return ex


def get_reply(kc, msg_id: str, timeout: float, channel: str = "shell") -> dict[str, Any]:
    """The reply to ``msg_id`` on ``channel``; other replies are dropped."""
    getter = {"shell": kc.get_shell_msg, "control": kc.get_control_msg}[channel]
    deadline = time.monotonic() + timeout
    seen = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(
                f"no {channel} reply to {msg_id} within {timeout}s; other replies seen: "
                f"{[(m['msg_type'], m['content'].get('status')) for m in seen]}"
            )
        try:
            msg = getter(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if parent_id(msg) == msg_id:
            return msg
        seen.append(msg)


def get_replies(kc, msg_ids: list[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Shell replies to all of ``msg_ids`` (any order)."""
    wanted = set(msg_ids)
    got: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + timeout
    while wanted - set(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(
                f"replies missing after {timeout}s for {sorted(wanted - set(got))}; "
                f"got: {[(k, v['content'].get('status')) for k, v in got.items()]}"
            )
        try:
            msg = kc.get_shell_msg(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if parent_id(msg) in wanted:
            got[parent_id(msg)] = msg
    return got


def execute(kc, code: str, timeout: float = 30, **kwargs: Any) -> Execution:
    """Run ``code``; return its reply and all its IOPub messages.

    ``kwargs`` go to ``kc.execute`` (silent, store_history, allow_stdin,
    stop_on_error, user_expressions). ``allow_stdin`` defaults to False here
    so that a stray ``input()`` cannot hang a test.
    """
    kwargs.setdefault("allow_stdin", False)
    sent = time.monotonic()
    msg_id = kc.execute(code, **kwargs)
    ex = Execution(msg_id=msg_id, code=code, sent_at=sent)
    deadline = sent + timeout
    collect_iopub(kc, ex, timeout)
    ex.reply = get_reply(kc, msg_id, max(0.5, deadline - time.monotonic()))
    return ex


def execute_ok(kc, code: str, timeout: float = 30, **kwargs: Any) -> Execution:
    """``execute`` and assert the cell succeeded."""
    ex = execute(kc, code, timeout=timeout, **kwargs)
    assert ex.status == "ok", f"cell failed: {ex.summary()}"
    return ex


def execute_error(kc, code: str, timeout: float = 30, **kwargs: Any) -> Execution:
    """Runs ``code``; asserts it failed with exactly one ``error`` message."""
    ex = execute(kc, code, timeout=timeout, **kwargs)
    assert ex.status == "error", f"cell should have failed: {ex.summary()}"
    ex.error()  # exactly one
    return ex


def value(kc, code: str, timeout: float = 60):
    """Runs ``code``, whose last line is an expression; returns that
    expression's value, passed back as JSON on stdout."""
    lines = code.strip().splitlines()
    body, last = "\n".join(lines[:-1]), lines[-1]
    ex = execute_ok(kc, f"{body}\nimport json as _json\nprint(_json.dumps({last}))", timeout=timeout)
    return json.loads(ex.stdout.strip().splitlines()[-1])


def drain(kc) -> None:
    """Discards whatever is waiting on the client's channels."""
    for get in (kc.get_iopub_msg, kc.get_shell_msg, kc.get_stdin_msg):
        while True:
            try:
                get(timeout=0.05)
            except Empty:
                break


ENGINE_BLOCK_HEADER = re.compile(r"^\[(\d+):(\w+)\]:$", re.M)


def engine_blocks(tb: str) -> list[tuple[int, str, str]]:
    """Splits a rendered CompositeError/RemoteError (`[n:method]:` blocks)
    into ``(engine, method, text)``."""
    heads = list(ENGINE_BLOCK_HEADER.finditer(tb))
    return [
        (int(m.group(1)), m.group(2), tb[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(tb)])
        for i, m in enumerate(heads)
    ]


def start_cell(kc, code: str, timeout: float = 10) -> Execution:
    """Sends ``code`` and returns once the kernel said it is busy with it."""
    sent = time.monotonic()
    ex = Execution(msg_id=kc.execute(code, allow_stdin=False), code=code, sent_at=sent)
    deadline = sent + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(f"no busy status for {code!r} within {timeout}s")
        try:
            msg = kc.get_iopub_msg(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if parent_id(msg) != ex.msg_id:
            continue
        ex.iopub.append(msg)
        ex.arrival.append(time.monotonic())
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "busy":
            return ex


def wait_for_stream(kc, ex: Execution, needle: str, timeout: float) -> None:
    """Read IOPub (recording into ``ex``) until ``needle`` was printed on stdout."""
    deadline = time.monotonic() + timeout
    while needle not in ex.stdout:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise KernelTimeout(
                f"{needle!r} not printed within {timeout}s; received: {describe(ex.iopub)}"
            )
        try:
            msg = kc.get_iopub_msg(timeout=min(remaining, 0.5))
        except Empty:
            continue
        if parent_id(msg) == ex.msg_id:
            ex.iopub.append(msg)
            ex.arrival.append(time.monotonic())


def traceback_text(error_content: dict[str, Any]) -> str:
    return strip_ansi("\n".join(error_content.get("traceback", [])))


def interrupt_running(km, kc, code: str, after: float = 1.0, timeout: float = 10):
    """Sends ``code``, interrupts the kernel ``after`` seconds later (as a
    frontend's stop button does); returns the cell's reply and the seconds
    from the interrupt to it."""
    msg_id = kc.execute(code)
    time.sleep(after)
    sent = time.monotonic()
    km.interrupt_kernel()
    reply = get_reply(kc, msg_id, timeout=timeout)
    return reply, time.monotonic() - sent


def kernel_pid(km) -> int:
    """The pid of the process jupyter_client launched for the kernel."""
    prov = km.provisioner
    proc = getattr(prov, "process", None)
    assert proc is not None, "kernel has no local process"
    return proc.pid


def shutdown_and_check(km, kc, timeout: float = 15) -> None:
    """Shut the kernel down (politely, as a frontend does) and assert that
    its process and any process holding its connection file are gone."""
    pid = None
    try:
        pid = kernel_pid(km)
    except Exception:
        pass
    conn_file = km.connection_file
    try:
        kc.stop_channels()
    except Exception:
        pass
    if km.has_kernel:
        if km.is_alive():
            km.shutdown_kernel(now=False)
        else:
            try:
                km.cleanup_resources()
            except Exception:
                pass
    problems = []
    if pid is not None and not wait_pid_gone(pid, timeout):
        problems.append(f"kernel process {pid} still alive after shutdown")
        kill_pids([pid])
    if conn_file:
        left = wait_no_process_with(conn_file, 5)
        if left:
            problems.append(f"processes still running with {conn_file}: {left}")
            kill_pids(left)
    assert not problems, "; ".join(problems)


def interrupt_cell_with_children(km, kc, ex: Execution, fragment: str, children: int) -> None:
    """For a started cell `ex` that waits on child processes (their command
    lines contain `fragment`): waits until `children` of them run, interrupts
    the kernel, and asserts the cell ended within 3 s and left none of them
    running (as a terminal's Ctrl-C would)."""
    deadline = time.monotonic() + 10
    while len(pids_with_cmdline(fragment)) < children and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(pids_with_cmdline(fragment)) >= children, f"children never started: {ex.code!r}"
    time.sleep(0.3)
    t0 = time.monotonic()
    km.interrupt_kernel()
    try:
        reply = get_reply(kc, ex.msg_id, timeout=8)
    except KernelTimeout:
        reply = None
    took = time.monotonic() - t0
    leftovers = wait_until_none(lambda: pids_with_cmdline(fragment), 2)
    assert reply is not None, f"no reply within 8 s of the interrupt for {ex.code!r}"
    assert took < 3, f"the cell ended {took:.1f}s after the interrupt"
    assert not leftovers, f"children of {ex.code!r} still running after the interrupt: {leftovers}"
    collect_iopub(kc, ex, timeout=5)
