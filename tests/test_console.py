"""The rparallel kernel under `jupyter console`, driven through a pty.

Notes on the set-up:

* `--simple-prompt` cannot be used for the multi-line test: jupyter_console's
  simple prompt reads one line and runs it ("Multi-line input not
  supported", ptshell.py), so `for i in range(3):` would be sent alone. The
  normal prompt_toolkit prompt is used instead, with TERM=dumb so that
  prompt_toolkit draws plain text that pexpect can match. With this prompt
  every Enter asks the kernel `is_complete` (1 s timeout) to decide whether
  to run the cell or to open a continuation line with the kernel's indent.
* The console gets its own JUPYTER_RUNTIME_DIR, so the kernel it starts can
  be found by its connection file path in /proc/*/cmdline.
* The `%px` session uses `--simple-prompt` (plain `input()`, nothing drawn),
  so every input is one line. The `%%px` cell magic needs several lines and
  runs under the normal prompt instead.
* The cluster that `%px` starts on its own is a controller and its engines,
  children of the kernel (`rparallel controller ...`, `rparallel engine
  ...`). They are found as the kernel's descendants while they run; after
  the console exits none of them may be left, nor any orphaned controller or
  engine (parent gone or init) that was not there before the test. Orphans
  only, so that clusters of tests running at the same time do not count.
"""

from __future__ import annotations

import io
import os
import re
import time
from pathlib import Path

import pexpect
import pytest

from kernel_helpers import (
    JUPYTER,
    KERNEL_NAME,
    kill_pids,
    pid_alive,
    pids_with_cmdline,
    strip_ansi,
    wait_no_process_with,
    wait_pid_gone,
)

pytestmark = pytest.mark.timeout(180)

PROMPT = r"In \[(\d+)\]: "


class Console:
    def __init__(self, tmp_path, simple_prompt: bool = False):
        self.runtime = tmp_path / "runtime"
        self.runtime.mkdir()
        env = dict(os.environ)
        env["TERM"] = "dumb"
        env["JUPYTER_RUNTIME_DIR"] = str(self.runtime)
        env["IPYTHONDIR"] = str(tmp_path / "ipython")
        env.pop("JUPYTER_CONSOLE_TEST", None)
        self.transcript = io.StringIO()
        self.child = pexpect.spawn(
            str(JUPYTER),
            ["console", "--kernel", KERNEL_NAME] + (["--simple-prompt"] if simple_prompt else []),
            env=env,
            encoding="utf-8",
            codec_errors="replace",
            timeout=30,
            dimensions=(50, 200),
        )
        self.child.logfile_read = self.transcript

    def text(self) -> str:
        return strip_ansi(self.transcript.getvalue())

    def expect(self, pattern, timeout=30, what=None):
        try:
            return self.child.expect(pattern, timeout=timeout)
        except (pexpect.TIMEOUT, pexpect.EOF) as e:
            raise AssertionError(
                f"console: {what or pattern!r} not seen within {timeout}s "
                f"({type(e).__name__}); transcript:\n{self.text()[-3000:]}"
            ) from None

    def type_line(self, line: str, pause: float = 0.3) -> None:
        """Type a line and press Enter, like a person would."""
        self.child.send(line)
        time.sleep(0.1)
        self.child.send("\r")
        time.sleep(pause)

    def run(self, line: str, timeout: float = 30, what=None) -> str:
        """Type a one-line cell, wait for the next prompt; return what the
        cell printed (from the echoed input to the prompt), without ANSI."""
        self.type_line(line, pause=0.1)
        self.expect(PROMPT, timeout=timeout, what=what or f"the prompt after {line!r}")
        return strip_ansi(self.child.before)

    def kernel_pids(self) -> list[int]:
        return pids_with_cmdline(str(self.runtime))

    def close(self) -> None:
        if self.child.isalive():
            self.child.terminate(force=True)
        left = wait_no_process_with(str(self.runtime), 10)
        kill_pids(left)


@pytest.fixture
def console(tmp_path):
    c = Console(tmp_path)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def simple_console(tmp_path):
    c = Console(tmp_path, simple_prompt=True)
    try:
        yield c
    finally:
        c.close()


# --------------------------------------------------------------------------
# the cluster processes of the kernel

CLUSTER_FRAGMENTS = ("rparallel controller", "rparallel engine")


def _cluster_pids() -> set[int]:
    """Every live controller or engine process on the machine."""
    return {pid for frag in CLUSTER_FRAGMENTS for pid in pids_with_cmdline(frag + " ")}


def _ppid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root: int) -> set[int]:
    """The live descendants of ``root`` (children, grandchildren, ...)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            children.setdefault(_ppid(int(entry.name)), []).append(int(entry.name))
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and pid_alive(child):
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "<gone>"


def _kernel_cluster(kernel: int) -> dict[str, set[int]]:
    """The controller and engine processes started under the kernel ``kernel``."""
    mine = _descendants(kernel) & _cluster_pids()
    return {
        "controller": {p for p in mine if "rparallel controller " in _cmdline(p)},
        "engine": {p for p in mine if "rparallel engine " in _cmdline(p)},
    }


def _orphans(pids: set[int]) -> set[int]:
    """Those of ``pids`` whose parent is gone (re-parented to init)."""
    return {p for p in pids if pid_alive(p) and (_ppid(p) in (None, 0, 1) or not pid_alive(_ppid(p)))}


def _wait_all_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    left = {p for p in pids if pid_alive(p)}
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = {p for p in left if pid_alive(p)}
    return left


def _start(console) -> int:
    console.expect(PROMPT, timeout=60, what="the first prompt In [1]")
    assert console.child.match.group(1) == "1"
    console.type_line("import os; print(os.getpid())")
    console.expect(r"\n(\d+)\r?\n", what="the kernel's pid")
    pid = int(console.child.match.group(1))
    console.expect(PROMPT, what="prompt In [2]")
    assert console.child.match.group(1) == "2"
    assert pid in console.kernel_pids(), (
        f"pid {pid} printed by the kernel is not the process started with the "
        f"console's connection file ({console.kernel_pids()})"
    )
    return pid


def _leave_with_ctrl_d(console, pid: int) -> None:
    """The console's own exit path (independent of the kernel's `exit`)."""
    console.child.sendcontrol("d")
    console.expect(r"exit \(\[y\]/n\)\?", what="the exit confirmation after Ctrl-D")
    console.child.send("y\r")
    console.expect(pexpect.EOF, timeout=30, what="the console exiting after Ctrl-D")
    assert wait_pid_gone(pid, 10), f"kernel process {pid} still alive 10 s after the console exited"


def _check_clean_transcript(console) -> None:
    transcript = console.text()
    assert "did not respond" not in transcript, transcript
    assert "is_complete" not in transcript, transcript
    assert "Traceback" not in transcript, transcript
    assert "SyntaxError" not in transcript, transcript


def test_multiline_for_loop(console):
    pid = _start(console)

    console.type_line("for i in range(3):")
    console.type_line("    print(i * 11)")
    console.type_line("")
    console.expect(r"\n0\r?\n11\r?\n22\r?\n", what="the loop's output 0, 11, 22")
    console.expect(PROMPT, what="prompt In [3]")
    assert console.child.match.group(1) == "3"
    _check_clean_transcript(console)
    _leave_with_ctrl_d(console, pid)


def test_exit_ends_console_and_kernel(console):
    pid = _start(console)
    console.type_line("exit")
    console.expect(pexpect.EOF, timeout=20, what="the console exiting after `exit`")
    console.child.close()
    assert console.child.exitstatus == 0, (console.child.exitstatus, console.text()[-2000:])
    _check_clean_transcript(console)
    assert wait_pid_gone(pid, 10), f"kernel process {pid} still alive 10 s after the console exited"
    left = wait_no_process_with(str(console.runtime), 5)
    assert not left, f"processes left with the console's connection file: {left}"


def test_ctrl_c_interrupts_running_cell(console):
    pid = _start(console)
    console.type_line("x = 41")
    console.expect(PROMPT, what="prompt In [3]")

    console.type_line("import time; time.sleep(100)", pause=1.5)
    t0 = time.monotonic()
    console.child.sendintr()
    console.expect("KeyboardInterrupt", timeout=5, what="KeyboardInterrupt after Ctrl-C")
    console.expect(PROMPT, timeout=5, what="a new prompt after the interrupt")
    assert time.monotonic() - t0 < 5

    console.type_line("print(x + 1)")
    console.expect(r"\n42\r?\n", what="the kernel answering after the interrupt")
    console.expect(PROMPT)
    assert pid in console.kernel_pids()
    _leave_with_ctrl_d(console, pid)


# --------------------------------------------------------------------------
# the %px magics


def _assert_per_engine(out: str, pattern: str, engines=(0, 1)) -> None:
    """``pattern`` (with ``{n}`` for the engine id) appears once per engine."""
    for n in engines:
        needle = pattern.format(n=n)
        assert len(re.findall(needle, out)) == 1, (
            f"expected {needle!r} exactly once in the output:\n{out}"
        )


def test_px_magics_simple_prompt(simple_console):
    """`%px` under `jupyter console --simple-prompt`: output, results and
    errors per engine, Ctrl-C interrupting the engines, and `exit` ending
    the kernel together with the cluster `%px` started."""
    console = simple_console
    before = _cluster_pids()
    pid = _start(console)
    assert not _kernel_cluster(pid)["engine"], "engines running before the first %px"

    out = console.run('%px print("hello")', timeout=60, what="the first %px (starts a cluster)")
    assert out.count("%px: started a local cluster of 2 engines (it stops with the kernel)") == 1, out
    _assert_per_engine(out, r"\[stdout:{n}\] hello\r?\n")

    cluster = _kernel_cluster(pid)
    assert len(cluster["controller"]) == 1 and len(cluster["engine"]) == 2, (
        f"expected a controller and 2 engines under the kernel {pid}: {cluster}; "
        f"its descendants: {[(p, _cmdline(p)) for p in _descendants(pid)]}"
    )
    started = cluster["controller"] | cluster["engine"]
    assert not started & before

    out = console.run("%px 6*7")
    _assert_per_engine(out, r"Out\[{n}:\d+\]: 42\r?\n")
    assert "started a local cluster" not in out, out

    out = console.run("%px 1/0")
    _assert_per_engine(out, r"\[{n}:execute\]")
    assert out.count("ZeroDivisionError: division by zero") == 2, out
    assert "----> 1 1/0" in out, out

    console.type_line("%px import time; time.sleep(100)", pause=1.0)
    assert "[0:execute]" not in strip_ansi(console.child.buffer), "the sleep ended early"
    t0 = time.monotonic()
    console.child.sendintr()
    console.expect(PROMPT, timeout=10, what="a new prompt after Ctrl-C during %px")
    elapsed = time.monotonic() - t0
    out = strip_ansi(console.child.before)
    assert elapsed < 5, f"Ctrl-C took {elapsed:.1f} s to end the %px cell:\n{out}"
    _assert_per_engine(out, r"\[{n}:execute\]")
    assert out.count("KeyboardInterrupt") >= 2, out

    out = console.run('%px print("alive")')
    _assert_per_engine(out, r"\[stdout:{n}\] alive\r?\n")
    assert all(pid_alive(p) for p in started), "a cluster process died after the interrupt"
    assert pid in console.kernel_pids()

    transcript = console.text()
    assert "did not respond" not in transcript, transcript
    assert transcript.count("%px: started a local cluster") == 1, transcript

    cluster = _kernel_cluster(pid)
    started |= cluster["controller"] | cluster["engine"]
    console.type_line("exit")
    console.expect(pexpect.EOF, timeout=20, what="the console exiting after `exit`")
    console.child.close()
    assert console.child.exitstatus == 0, (console.child.exitstatus, console.text()[-2000:])
    t0 = time.monotonic()
    problems = []
    if not wait_pid_gone(pid, 10):
        problems.append(f"kernel {pid} still alive 10 s after the console exited")
    # within 10 s of the console's exit, nothing of the kernel's cluster is left
    left = _wait_all_gone(started, max(0.5, 10 - (time.monotonic() - t0)))
    if left:
        problems.append(f"cluster processes left: {[(p, _cmdline(p)) for p in left]}")
    orphans = _orphans(_cluster_pids() - before - left)
    while orphans and time.monotonic() - t0 < 10:
        time.sleep(0.1)
        orphans = _orphans(orphans)
    if orphans:
        problems.append(f"orphaned controller/engine processes: {[(p, _cmdline(p)) for p in orphans]}")
    kill_pids(sorted(left | orphans))
    assert not problems, "; ".join(problems)


def test_px_cell_magic_and_autopx(console):
    """`%%px --targets ::2` typed over several lines (normal prompt) and
    `%autopx` turning every cell into a `%px` cell until it is turned off."""
    pid = _start(console)
    console.type_line("%%px --targets ::2")
    console.type_line("import os")
    console.type_line('print("even engine", os.getpid())')
    console.type_line("")
    console.expect(PROMPT, timeout=60, what="the prompt after the %%px cell")
    out = strip_ansi(console.child.before)
    assert re.search(r"\[stdout:0\] even engine \d+\r?\n", out), out
    assert "[stdout:1]" not in out, out
    cluster = _kernel_cluster(pid)
    started = cluster["controller"] | cluster["engine"]
    assert len(cluster["engine"]) == 2, cluster

    out = console.run("%autopx")
    assert "%autopx enabled" in out, out
    out = console.run("x = 20 + 1")
    assert out.strip() == "x = 20 + 1", out  # ran on the engines, nothing to show
    out = console.run("x * 2")
    _assert_per_engine(out, r"Out\[{n}:\d+\]: 42\r?\n")
    out = console.run("%autopx")
    assert "%autopx disabled" in out, out
    out = console.run("print('local', 'x' in globals())")
    assert "local False" in out and "[stdout:" not in out, out

    _check_clean_transcript(console)
    _leave_with_ctrl_d(console, pid)
    left = _wait_all_gone(started, 10)
    kill_pids(sorted(left))
    assert not left, f"cluster processes left 10 s after the console exited: {left}"
