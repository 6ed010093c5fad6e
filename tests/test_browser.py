"""`notebooks/science.ipynb` in JupyterLab, in a real browser, as a person
would use it: Debian's Chromium (``/usr/bin/chromium``, installed by
``make browser``) driven by Playwright, never a browser of Playwright's own.

JupyterLab starts on a free port of 127.0.0.1 with a random token; its
notebooks are a temporary copy of ``notebooks/``, and HOME, the Jupyter
config, data and runtime directories, IPYTHONDIR and RPARALLEL_DIR all point
into the test's temporary directory, so nothing reaches the user's home.
The notebook opens with the rparallel kernel, Run → Run All Cells runs it,
and the tests check what is on the screen: the figures as images (one per
engine in the ``%%px`` cell), the slider of ``interact`` whose moves reach
Python (the text under it changes), and a traceback with ANSI colours in a
cell the test adds (``1/0``). Screenshots go to ``target/browser/``.

At the end the kernel is shut down through the server's REST API and the
server is stopped by its pid; no process the test started (server, kernel,
controller, engines, browser) may be left.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cluster_helpers import cluster_processes, wait_cluster_gone, wait_gone
from kernel_helpers import JUPYTER, REPO, kill_pids, pid_alive, pids_with_cmdline, wait_until_none

pytestmark = pytest.mark.timeout(240)

CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOK = REPO / "notebooks" / "science.ipynb"
SHOTS = REPO / "target" / "browser"
KERNEL_DISPLAY_NAME = "Python 3 (rparallel)"

SERVER_START_TIMEOUT = 60
PAGE_TIMEOUT = 60
RUN_ALL_TIMEOUT = 150  # the notebook takes about 20 s here; a loaded 2-core machine more
OUTPUT_TIMEOUT = 30
GONE_TIMEOUT = 15

# every code cell's prompt, `[ ]:`, `[*]:` or `[12]:`
PROMPTS_JS = """() => Array.from(document.querySelectorAll(
    '.jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-CodeCell .jp-InputArea-prompt'
)).map(p => p.textContent.trim())"""


def _cell_index(cell_id: str) -> int:
    """The position of the cell ``cell_id`` among all cells of the notebook."""
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    for i, cell in enumerate(cells):
        if cell.get("id") == cell_id:
            return i
    raise AssertionError(f"no cell {cell_id!r} in {NOTEBOOK}")


# --------------------------------------------------------------------------
# processes


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> list[int]:
    """The live processes below ``pid`` in the process tree."""
    children = _children_map()
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if pid_alive(child):
                found.append(child)
            todo.append(child)
    return sorted(found)


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return "?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------
# JupyterLab


class JupyterLab:
    """A JupyterLab server of the test's own, with everything it writes
    kept under ``tmp``."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.root = tmp / "notebooks"
        self.rp_dir = str(tmp / "rparallel")
        self.runtime = tmp / "runtime"
        self.token = secrets.token_hex(24)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = SHOTS / "jupyterlab.log"
        self.proc: subprocess.Popen | None = None
        # everything the server started (kernel, controller, engines), seen while it ran
        self.seen: set[int] = set()
        self.stopped = False

    def _settings(self, config: Path) -> None:
        """User settings: every cell rendered (no windowing, so outputs off
        screen are in the page too), no news or update checks (no network)."""
        settings = config / "lab" / "user-settings" / "@jupyterlab"
        (settings / "notebook-extension").mkdir(parents=True)
        (settings / "notebook-extension" / "tracker.jupyterlab-settings").write_text(
            json.dumps({"windowingMode": "none"})
        )
        (settings / "apputils-extension").mkdir(parents=True)
        (settings / "apputils-extension" / "notification.jupyterlab-settings").write_text(
            json.dumps({"fetchNews": "false", "checkForUpdates": False})
        )
        # ipyparallel's extensions (installed by `make bench`) would watch
        # ~/.ipython clusters: off, in the server and in the page
        (config / "labconfig").mkdir(parents=True)
        (config / "labconfig" / "page_config.json").write_text(
            json.dumps({"disabledExtensions": {"ipyparallel-labextension": True}})
        )

    def start(self) -> None:
        home, config = self.tmp / "home", self.tmp / "jupyter-config"
        for d in (home, config, self.runtime, self.tmp / "ipython", Path(self.rp_dir)):
            d.mkdir(parents=True)
        shutil.copytree(NOTEBOOK.parent, self.root)
        self._settings(config)
        env = {
            **os.environ,
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
            "JUPYTER_CONFIG_DIR": str(config),
            "JUPYTER_DATA_DIR": str(self.tmp / "jupyter-data"),
            "JUPYTER_RUNTIME_DIR": str(self.runtime),
            "JUPYTER_PATH": str(REPO / ".venv" / "share" / "jupyter"),  # as the Makefile sets it
            "IPYTHONDIR": str(self.tmp / "ipython"),
            "RPARALLEL_DIR": self.rp_dir,
        }
        env.pop("MPLCONFIGDIR", None)
        SHOTS.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [
                str(JUPYTER), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
                "--port-retries=0", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={self.root}", "--ServerApp.allow_root=True",
                "--ServerApp.jpserver_extensions={'ipyparallel': False}",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            ],
            env=env, cwd=self.root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + SERVER_START_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"jupyter lab exited ({self.proc.returncode}):\n{self.log_tail()}")
            try:
                self.api("GET", "/api/status")
                return
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"jupyter lab did not answer within {SERVER_START_TIMEOUT}s:\n{self.log_tail()}"
                )
            time.sleep(0.2)

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text()[-chars:]
        except OSError:
            return "(no log)"

    def api(self, method: str, path: str):
        req = urllib.request.Request(
            self.url + path, method=method, headers={"Authorization": f"token {self.token}"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            body = r.read()
        return json.loads(body) if body else None

    def page_url(self, name: str) -> str:
        return f"{self.url}/lab/tree/{name}?token={self.token}"

    def note_processes(self) -> None:
        if self.proc is not None:
            self.seen |= set(descendants(self.proc.pid))
        self.seen |= set(cluster_processes(self.rp_dir))

    def stop(self) -> list[str]:
        """Shuts the kernels down through the REST API, stops the server by
        its pid; returns the problems (empty when everything went away)."""
        if self.stopped or self.proc is None:
            return []
        self.stopped = True
        problems = []
        self.note_processes()
        kernel_pids = [p for p in self.seen if " kernel " in cmdline(p)]
        try:
            for session in self.api("GET", "/api/sessions"):
                self.api("DELETE", f"/api/sessions/{session['id']}")
            for kernel in self.api("GET", "/api/kernels"):
                self.api("DELETE", f"/api/kernels/{kernel['id']}")
            left = wait_until_none(lambda: self.api("GET", "/api/kernels"), GONE_TIMEOUT)
            if left:
                problems.append(f"kernels still listed after their shutdown: {left}")
        except (OSError, urllib.error.URLError) as e:
            problems.append(f"REST shutdown of the kernels failed: {e!r}")
        left = wait_gone(kernel_pids, GONE_TIMEOUT)
        if left:
            problems.append(f"kernel processes alive after the REST shutdown: {left}")
        left = wait_cluster_gone(self.rp_dir, GONE_TIMEOUT)
        if left:
            problems.append(f"controller/engines alive after the kernel's shutdown: {left}")
        self.note_processes()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=GONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            problems.append(f"jupyter lab (pid {self.proc.pid}) still running {GONE_TIMEOUT}s after SIGTERM")
            self.proc.kill()
            self.proc.wait(timeout=10)
        left = wait_gone(sorted(self.seen), GONE_TIMEOUT)
        left += [p for p in pids_with_cmdline(str(self.runtime)) if p not in left]
        left += [p for p in cluster_processes(self.rp_dir) if p not in left]
        if left:
            problems.append(
                "processes the server started are still running: "
                + "; ".join(f"{p}: {cmdline(p)[:120]}" for p in left)
            )
            kill_pids(left)
        return problems


# --------------------------------------------------------------------------
# the session in the browser


class Session:
    """JupyterLab, the browser and the notebook's page, set up once for the
    module; the tests below check what the page shows, in order."""

    def __init__(self, tmp: Path):
        self.lab = JupyterLab(tmp)
        self.pw = None
        self.browser = None
        self.page = None
        self.browser_pids: list[int] = []
        self.console: list[str] = []

    def open(self) -> None:
        from playwright.sync_api import sync_playwright

        self.lab.start()
        self.pw = sync_playwright().start()
        self.browser = self.pw.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        self._note_browser_processes()
        self.page = self.browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(OUTPUT_TIMEOUT * 1000)
        self.page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        self.page.goto(self.lab.page_url(NOTEBOOK.name), timeout=PAGE_TIMEOUT * 1000)
        self.page.locator(".jp-Notebook .jp-Cell").first.wait_for(timeout=PAGE_TIMEOUT * 1000)
        self.wait_kernel_idle(PAGE_TIMEOUT)

    def shot(self, name: str, locator=None) -> Path:
        """A screenshot of the page, or of one element (the window made tall
        enough for all of it: the notebook scrolls inside the page)."""
        path = SHOTS / f"{name}.png"
        if locator is None:
            self.page.screenshot(path=str(path))
            return path
        locator.scroll_into_view_if_needed()
        box = locator.bounding_box()
        size = self.page.viewport_size
        if box is None or box["height"] < size["height"] - 200:
            locator.screenshot(path=str(path))
            return path
        self.page.set_viewport_size({"width": size["width"], "height": int(box["height"]) + 300})
        try:
            locator.scroll_into_view_if_needed()
            locator.screenshot(path=str(path))
        finally:
            self.page.set_viewport_size(size)
        return path

    def kernel_status(self) -> str | None:
        """The kernel's status as the notebook's toolbar shows it, once the
        status bar says the kernel is connected (`Python 3 (rparallel) | Idle`,
        `| Busy`); None before."""
        bar = " ".join(self.page.locator(".jp-StatusBar-Widget").all_inner_texts())
        if not re.search(rf"{re.escape(KERNEL_DISPLAY_NAME)} \| (Idle|Busy)", bar):
            return None
        return self.page.locator(
            ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook-ExecutionIndicator"
        ).first.get_attribute("data-status")

    def wait_kernel_idle(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.kernel_status() != "idle":
            if time.monotonic() > deadline:
                self.shot("kernel-not-idle")
                raise AssertionError(
                    f"the kernel is not idle after {timeout}s (status {self.kernel_status()!r}); "
                    f"server log:\n{self.lab.log_tail()}"
                )
            time.sleep(0.2)

    def prompts(self) -> list[str]:
        return self.page.evaluate(PROMPTS_JS)

    def run_all(self) -> float:
        """Run → Run All Cells; waits until no cell is queued or running and
        the kernel is idle; returns the seconds it took."""
        started = time.monotonic()
        self.page.get_by_role("menuitem", name="Run", exact=True).click()
        self.page.get_by_role("menuitem", name="Run All Cells", exact=True).click()
        # the prompts turn `[*]:` once the cells are queued
        deadline = started + OUTPUT_TIMEOUT
        while "[*]:" not in self.prompts() and not all(re.fullmatch(r"\[\d+\]:", p) for p in self.prompts()):
            if time.monotonic() > deadline:
                self.shot("run-all-queued-nothing")
                raise AssertionError(f"Run All Cells queued nothing: prompts {self.prompts()}")
            time.sleep(0.1)
        deadline = started + RUN_ALL_TIMEOUT
        quiet_since = None
        while True:
            busy = "[*]:" in self.prompts() or self.kernel_status() != "idle"
            now = time.monotonic()
            if busy:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= 1.0:
                return now - started
            if now > deadline:
                self.lab.note_processes()
                self.shot("run-all-timeout")
                raise AssertionError(
                    f"Run All Cells not finished after {RUN_ALL_TIMEOUT}s: prompts {self.prompts()}"
                )
            time.sleep(0.2)

    def cell(self, index: int):
        return self.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell").nth(index)

    def error_texts(self) -> list[str]:
        """The text of every error output (a traceback) on the page; stderr
        streams share its MIME type but not its look."""
        texts = self.page.locator(
            ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']"
        ).all_inner_texts()
        return [t for t in texts if "Traceback" in t or re.search(r"^\w*(Error|Exception)\b", t, re.M)]

    def _note_browser_processes(self) -> None:
        """Chromium's processes and Playwright's driver (below this process)."""
        mine = descendants(os.getpid())
        self.browser_pids = sorted(
            set(self.browser_pids) | {p for p in mine if re.search(r"chrom|playwright", cmdline(p))}
        )

    def close_browser(self) -> list[str]:
        problems = []
        self._note_browser_processes()
        try:
            if self.browser is not None:
                self.browser.close()
        finally:
            if self.pw is not None:
                self.pw.stop()
            self.browser = self.pw = None
        left = wait_gone(self.browser_pids, GONE_TIMEOUT)
        if left:
            problems.append(f"browser processes still running after close: {left}")
            kill_pids(left)
        return problems

    def close(self) -> list[str]:
        problems = []
        try:
            if self.page is not None and not self.lab.stopped:
                self.lab.note_processes()
            problems += self.close_browser()
        finally:
            problems += self.lab.stop()
        return problems


def _require_browser() -> None:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium "
            "(`make browser`, which `make test` runs: apt-get install chromium)",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as e:
        pytest.fail(f"Playwright is not installed in .venv ({e}): run `make venv`", pytrace=False)


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    _require_browser()
    s = Session(tmp_path_factory.mktemp("browser"))
    try:
        s.open()
        s.run_all_seconds = s.run_all()
        s.lab.note_processes()
        s.shot("science-after-run-all")
    except BaseException:
        s.close()  # everything stopped all the same; the error above is the story
        raise
    yield s
    problems = s.close()
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------
# the tests, in the order a person would look


def test_notebook_opens_with_the_rparallel_kernel(session):
    name = session.page.locator(
        ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Toolbar-kernelName"
    ).first.inner_text()
    assert name.strip() == KERNEL_DISPLAY_NAME, name
    kernels = session.lab.api("GET", "/api/kernels")
    assert [k["name"] for k in kernels] == ["rparallel"], kernels


def test_run_all_runs_every_cell_without_error(session):
    prompts = session.prompts()
    counts = [int(m.group(1)) for p in prompts if (m := re.fullmatch(r"\[(\d+)\]:", p))]
    assert counts == list(range(1, len(prompts) + 1)), (
        f"not every cell ran, in order: prompts {prompts}; errors shown: {session.error_texts()}"
    )
    assert not session.error_texts(), session.error_texts()
    assert session.run_all_seconds < RUN_ALL_TIMEOUT


def _images(locator) -> list[dict]:
    """The images rendered in the output areas under ``locator``: their
    natural size (0 if the browser could not decode them)."""
    return locator.locator(".jp-OutputArea-output img").evaluate_all(
        "imgs => imgs.map(i => ({w: i.naturalWidth, h: i.naturalHeight, src: i.src.slice(0, 22)}))"
    )


def test_figures_are_images(session):
    images = _images(session.page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"))
    assert len(images) >= 5, images
    assert all(i["w"] > 0 and i["h"] > 0 for i in images), images
    assert all(i["src"] == "data:image/png;base64," for i in images), images
    local = session.cell(_cell_index("plot-local"))
    local_images = _images(local)
    assert len(local_images) == 1, local_images
    session.shot("local-figure", local)


def test_a_figure_per_engine(session):
    cell = session.cell(_cell_index("plot-px"))
    images = _images(cell)
    assert len(images) >= 4 and all(i["w"] > 0 for i in images), images
    text = cell.locator(".jp-OutputArea").inner_text()
    labels = sorted(set(re.findall(r"\[output:(\d+)\]", text)))
    assert labels == ["0", "1", "2", "3"], text
    session.shot("figure-per-engine", cell)


def _interact_output(cell) -> str:
    return cell.locator(".jp-OutputArea .widget-output, .jp-OutputArea .jupyter-widgets-output-area").first.inner_text()


def test_slider_moves_reach_python(session):
    cell = session.cell(_cell_index("interact"))
    slider = cell.locator(".jupyter-widgets.widget-slider")
    slider.first.wait_for(timeout=OUTPUT_TIMEOUT * 1000)
    readout = slider.locator(".widget-readout")
    assert readout.inner_text().strip() == "499", readout.inner_text()
    deadline = time.monotonic() + OUTPUT_TIMEOUT
    while "step 499:" not in _interact_output(cell):
        assert time.monotonic() < deadline, f"interact printed {_interact_output(cell)!r}"
        time.sleep(0.1)
    session.shot("slider-before", cell)
    handle = slider.locator(".noUi-handle").first
    handle.focus()
    for _ in range(3):
        session.page.keyboard.press("ArrowRight")
    deadline = time.monotonic() + OUTPUT_TIMEOUT
    while "step 502:" not in _interact_output(cell):
        assert time.monotonic() < deadline, (
            f"after three → the slider shows {readout.inner_text()!r} and Python printed "
            f"{_interact_output(cell)!r}"
        )
        time.sleep(0.1)
    assert readout.inner_text().strip() == "502"
    assert "step 499:" not in _interact_output(cell)
    session.shot("slider-after", cell)


def test_traceback_in_colour(session):
    """A cell added at the end (not in the notebook file) raises; its
    traceback shows in colour (ANSI colours become `ansi-*` spans)."""
    from playwright.sync_api import expect

    page = session.page
    cells = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook .jp-Cell")
    before = cells.count()
    cells.nth(before - 1).locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # insert a cell below, in command mode
    expect(cells).to_have_count(before + 1, timeout=OUTPUT_TIMEOUT * 1000)
    added = cells.nth(before)
    added.locator(".jp-InputArea-editor").click()
    page.keyboard.type("1/0")
    page.keyboard.press("Shift+Enter")
    error = added.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']")
    error.first.wait_for(timeout=OUTPUT_TIMEOUT * 1000)
    session.wait_kernel_idle(OUTPUT_TIMEOUT)
    text = error.first.inner_text()
    assert "ZeroDivisionError" in text and "division by zero" in text, text
    coloured = error.first.locator("span[class*='ansi-']")
    assert coloured.count() > 0, error.first.inner_html()[:2000]
    session.shot("traceback", added)


def test_shutdown_leaves_nothing_running(session):
    session.lab.note_processes()
    kernels = [p for p in session.lab.seen if " kernel " in cmdline(p)]
    assert kernels, f"no kernel process seen under the server: {sorted(session.lab.seen)}"
    problems = session.close()
    assert not problems, "; ".join(problems)
