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
"""

from __future__ import annotations

import io
import os
import time

import pexpect
import pytest

from kernel_helpers import (
    JUPYTER,
    KERNEL_NAME,
    kill_pids,
    pids_with_cmdline,
    strip_ansi,
    wait_no_process_with,
    wait_pid_gone,
)

pytestmark = pytest.mark.timeout(180)

PROMPT = r"In \[(\d+)\]: "


class Console:
    def __init__(self, tmp_path):
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
            ["console", "--kernel", KERNEL_NAME],
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
