"""The Python package as a user installs it: the wheel `make wheel` built
(`make test` builds it first) installed into a fresh virtualenv holding
only the wheel and what a test needs (numpy, ipykernel, nbconvert), and
used there:

- a script starts a cluster, maps, pushes a numpy array, gets a
  CompositeError and stops the cluster;
- Ctrl-C (SIGINT to the script's process group, as a terminal sends it)
  during ``apply_sync(time.sleep, 100)`` ends it within 2 s, with the
  engines interrupted and usable after;
- a script that exits without stopping its cluster stops it, and a
  killed script leaves no controller or engine;
- ``Client()`` with no cluster says how to start one, in one line;
  ``Client()`` connects to a cluster the package's ``rparallel cluster
  start`` started, and refuses at once a connection file of another
  cluster protocol;
- terminal IPython: ``%load_ext rparallel``, ``%px`` output, Ctrl-C of a
  ``%px`` cell, nothing left after ``exit``;
- in the standard ipykernel, interrupting the kernel (a notebook's stop
  button) during a blocking call or a ``%px`` cell interrupts the engines;
- the tutorial notebook runs through nbconvert in the standard ``python3``
  ipykernel with ``import rparallel``, and in the kernel the package's own
  ``rparallel install --sys-prefix`` wrote: both give the same engine
  outputs (labels, counts and error names) in the same cells.

Each test has its own ``RPARALLEL_DIR``; no process of it may be left.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pexpect
import pytest
from jupyter_client import KernelManager
from jupyter_client.kernelspec import KernelSpecManager

from cluster_helpers import cluster_processes, wait_cluster_gone
from kernel_helpers import (
    REPO,
    drain,
    engine_blocks,
    execute,
    interrupt_running,
    kill_pids,
    shutdown_and_check,
    strip_ansi,
    traceback_text,
    wait_no_process_with,
)

pytestmark = pytest.mark.timeout(600)

WHEELS = REPO / "target" / "wheels"
NOTEBOOK = REPO / "notebooks" / "direct-interface.ipynb"
# What the tests need besides the wheel (versions as the project pins them).
TEST_PACKAGES = ["numpy", "ipykernel", "nbconvert"]


def run(cmd, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, **kwargs)


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the wheel installed; its directory."""
    wheels = sorted(WHEELS.glob("rparallel-*-abi3-*.whl"))
    assert wheels, f"no wheel in {WHEELS}: run `make wheel` (make test does)"
    venv = tmp_path_factory.mktemp("pkg") / "venv"
    made = run([sys.executable, "-m", "venv", str(venv)], timeout=120)
    assert made.returncode == 0, made.stderr
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = run(
        pip + [str(wheels[-1]), *TEST_PACKAGES, "-c", str(REPO / "requirements.lock")],
        timeout=400,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    return venv


@pytest.fixture
def rp_dir(tmp_path):
    """This test's RPARALLEL_DIR; afterwards no cluster process of it may live."""
    path = str(tmp_path / "rp")
    yield path
    left = wait_cluster_gone(path)
    kill_pids(left)
    assert not left, f"cluster processes left behind: {left}"


def env_for(venv: Path, rp_dir: str, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "JUPYTER_PATH")}
    env.update(
        RPARALLEL_DIR=rp_dir,
        PATH=f"{venv / 'bin'}:{env.get('PATH', '')}",
        JUPYTER_PATH=str(venv / "share" / "jupyter"),
        **extra,
    )
    return env


def script(venv: Path, rp_dir: str, code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return run([str(venv / "bin" / "python"), "-c", code], env=env_for(venv, rp_dir),
               timeout=timeout, cwd="/")


def test_package_is_the_wheel_not_the_repo(venv, rp_dir):
    """The venv imports the installed package and has the command."""
    done = script(venv, rp_dir, "import rparallel, sys; print(rparallel.__file__); print(sys.prefix)")
    assert done.returncode == 0, done.stderr
    module, prefix = done.stdout.split()
    assert module.startswith(prefix) and "site-packages" in module, done.stdout
    help_text = run([str(venv / "bin" / "rparallel"), "--help"], timeout=30)
    assert help_text.returncode == 0 and "cluster" in help_text.stdout, help_text
    as_module = run([str(venv / "bin" / "python"), "-m", "rparallel", "--version"], timeout=30)
    assert as_module.returncode == 0 and as_module.stdout.startswith("rparallel "), as_module


def test_script_runs_a_cluster(venv, rp_dir):
    """Cluster as a context manager: map, push/pull of numpy, a
    CompositeError; engines run the venv's Python; stopped on exit."""
    code = (
        "import sys, numpy as np, rparallel as ipp\n"
        "with ipp.Cluster(n=2) as rc:\n"
        "    dv = rc[:]\n"
        "    assert dv.map_sync(lambda x: x * x, range(32)) == [x * x for x in range(32)]\n"
        "    dv.push({'a': np.arange(1000)}, block=True)\n"
        "    assert all((a == np.arange(1000)).all() for a in dv.pull('a', block=True))\n"
        "    try:\n"
        "        dv.execute('1/0', block=True)\n"
        "    except ipp.CompositeError as e:\n"
        "        print('composite', [x.ename for x in e.elist])\n"
        "    print('engines run', set(dv.apply_sync(lambda: __import__('sys').executable)) == {sys.executable})\n"
        "print('done')\n"
    )
    done = script(venv, rp_dir, code)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        "composite ['ZeroDivisionError', 'ZeroDivisionError']",
        "engines run True",
        "done",
    ], done.stdout


def test_ctrl_c_interrupts_the_engines(venv, rp_dir, tmp_path):
    """SIGINT to the script's process group during a blocking apply ends
    the wait within 2 s with KeyboardInterrupt; the engines answer after."""
    code = (
        "import time, rparallel as ipp\n"
        "cluster = ipp.Cluster(n=2)\n"
        "rc = cluster.start_and_connect_sync()\n"
        "rc[:]['marker'] = 7\n"
        "print('ready', flush=True)\n"
        "try:\n"
        "    rc[:].apply_sync(time.sleep, 100)\n"
        "except KeyboardInterrupt as e:\n"
        "    print('interrupted', type(e).__name__, flush=True)\n"
        "print(rc[:].pull('marker', block=True), flush=True)\n"
        "cluster.stop_cluster_sync()\n"
    )
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-c", code], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env_for(venv, rp_dir),
                            start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n", proc.stderr.read()
        time.sleep(1.0)
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        line = proc.stdout.readline()
        waited = time.monotonic() - sent
        assert line == "interrupted CompositeError\n", line + proc.stderr.read()
        assert waited < 2.0, waited
        assert proc.stdout.readline() == "[7, 7]\n"
        assert proc.wait(timeout=30) == 0, proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_script_exit_stops_its_cluster(venv, rp_dir):
    """A script that never stops its cluster: at exit the cluster stops,
    its processes and its profile directory gone."""
    done = script(venv, rp_dir, "import rparallel as ipp\n"
                  "rc = ipp.Cluster(n=2).start_and_connect_sync()\n"
                  "print(rc[:].apply_sync(lambda: 1))\n")
    assert done.returncode == 0 and done.stdout == "[1, 1]\n", done.stdout + done.stderr
    assert not cluster_processes(rp_dir)
    assert not list(Path(rp_dir).glob("profile_*")), list(Path(rp_dir).iterdir())


def test_killed_script_leaves_nothing(venv, rp_dir):
    """SIGKILL to a script that started a cluster: its controller and
    engines go too (the rp_dir fixture checks)."""
    code = (
        "import time, rparallel as ipp\n"
        "rc = ipp.Cluster(n=2).start_and_connect_sync()\n"
        "print('ready', flush=True)\n"
        "time.sleep(100)\n"
    )
    proc = subprocess.Popen([str(venv / "bin" / "python"), "-c", code], stdout=subprocess.PIPE,
                            text=True, env=env_for(venv, rp_dir), start_new_session=True)
    try:
        assert proc.stdout.readline() == "ready\n"
        assert len(cluster_processes(rp_dir)) == 3  # the controller and 2 engines
    finally:
        proc.kill()
        proc.wait()


def test_client_without_cluster_says_how_to_start_one(venv, rp_dir):
    done = script(venv, rp_dir, "import rparallel as ipp\nipp.Client()")
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert "rparallel cluster start" in last, done.stderr


def test_client_of_a_cli_cluster_and_another_protocol(venv, rp_dir):
    """`rparallel cluster start` (the package's command), then `Client()`
    in a script; a connection file of another cluster protocol is refused
    at once, naming both versions."""
    env = env_for(venv, rp_dir)
    rp = str(venv / "bin" / "rparallel")
    started = run([rp, "cluster", "start", "-n", "2", "--daemonize", "--profile", "pkg"],
                  env=env, timeout=120)
    assert started.returncode == 0, started.stdout + started.stderr
    client_file = Path(rp_dir) / "profile_pkg" / "security" / "rparallel-client.json"
    original = client_file.read_text()
    try:
        done = script(venv, rp_dir, "import rparallel as ipp\nrc = ipp.Client(profile='pkg')\n"
                      "rc.wait_for_engines(2, timeout=30)\n"
                      "print(sorted(rc.ids), rc[:].apply_sync(lambda: 6 * 7))")
        assert done.stdout.strip() == "[0, 1] [42, 42]", done.stdout + done.stderr
        info = json.loads(original)
        assert info["protocol"] == 1 and info["rparallel"], info
        client_file.write_text(json.dumps(dict(info, protocol=99, rparallel="9.0.0")))
        asked = time.monotonic()
        done = script(venv, rp_dir, "import rparallel as ipp\nipp.Client(profile='pkg')")
        assert done.returncode != 0 and time.monotonic() - asked < 20, done.stdout
        last = done.stderr.strip().splitlines()[-1]
        assert "rparallel 9.0.0 (cluster protocol 99)" in last, done.stderr
    finally:
        client_file.write_text(original)
        stopped = run([rp, "cluster", "stop", "--profile", "pkg"], env=env, timeout=60)
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr


@pytest.mark.parametrize("cell, method", [
    ("rc[:].apply_sync(time.sleep, 100)", "apply"),
    ("%px import time; time.sleep(100)", "execute"),
])
def test_stop_button_in_ipykernel_reaches_the_engines(venv, rp_dir, tmp_path, cell, method):
    """In the standard ipykernel (its interrupt is a SIGINT to the kernel),
    interrupting a blocking call or a `%px` cell ends it within 2.5 s with
    each engine's KeyboardInterrupt; the engines answer at once after."""
    spec_dir = tmp_path / "kernels" / "venv-python"
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps({
        "argv": [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "venv", "language": "python",
    }))
    km = KernelManager(kernel_name="venv-python",
                       kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path / "kernels")]))
    km.start_kernel(env=env_for(venv, rp_dir))
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    try:
        ready = execute(kc, "import time, rparallel as ipp\n"
                        "cluster = ipp.Cluster(n=2)\nrc = cluster.start_and_connect_sync()\n"
                        "rc[:]['marker'] = 3", timeout=120)
        assert ready.status == "ok", ready.summary()
        reply, took = interrupt_running(km, kc, cell)
        assert took < 2.5, took
        assert reply["content"]["ename"] == "CompositeError", reply["content"]
        blocks = engine_blocks(traceback_text(reply["content"]))
        assert [(b[0], b[1]) for b in blocks] == [(0, method), (1, method)], blocks
        assert all("KeyboardInterrupt" in b[2] for b in blocks), blocks
        drain(kc)
        after = execute(kc, "rc[:].pull('marker', block=True)", timeout=20)
        assert after.result()["text/plain"] == "[3, 3]", after.summary()
        execute(kc, "cluster.stop_cluster_sync()", timeout=60)
    finally:
        shutdown_and_check(km, kc)


def test_terminal_ipython(venv, rp_dir, tmp_path):
    """Terminal IPython (`ipython --simple-prompt` in a pty): `%load_ext
    rparallel` registers the `%px` family, whose first use starts the
    default cluster; `[stdout:N]` and `Out[N:k]` output; Ctrl-C of a `%px`
    cell reaches the engines; after `exit` nothing is left."""
    env = env_for(venv, rp_dir, TERM="dumb", IPYTHONDIR=str(tmp_path / "ipython"))
    child = pexpect.spawn(str(venv / "bin" / "ipython"), ["--simple-prompt", "--no-banner"],
                          env=env, encoding="utf-8", timeout=60, dimensions=(50, 200))
    prompt = r"In \[\d+\]: "
    try:
        child.expect(prompt)
        child.sendline("%load_ext rparallel")
        child.expect(prompt)
        child.sendline("%px import os, time; print('engine', os.getpid())")
        child.expect(prompt, timeout=120)
        assert re.search(r"\[stdout:0\] engine \d+", child.before), child.before
        child.sendline("%px 6 * 7")
        child.expect(prompt)
        assert re.search(r"Out\[0:\d+\]: 42", strip_ansi(child.before)), child.before
        child.sendline("%px time.sleep(100)")
        time.sleep(1.5)
        sent = time.monotonic()
        child.sendintr()
        child.expect(prompt, timeout=10)
        assert time.monotonic() - sent < 2.5
        assert "KeyboardInterrupt" in child.before, child.before
        assert re.search(r"\[0:execute\]", child.before), child.before
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=30)
    finally:
        child.close(force=True)


# --------------------------------------------------------------------------
# the tutorial, in the standard ipykernel and in the package's own kernel

LABEL = re.compile(r"\[(?:stdout|stderr|output):\d+\]|Out\[\d+:\d+\]|\[\d+:\w+\]")


def execute_notebook(venv: Path, rp_dir: str, kernel: str, tmp: Path) -> nbformat.NotebookNode:
    runtime = tmp / f"runtime-{kernel}"
    runtime.mkdir()
    env = env_for(venv, rp_dir, JUPYTER_RUNTIME_DIR=str(runtime), IPYTHONDIR=str(tmp / "ipython"))
    cmd = [str(venv / "bin" / "jupyter"), "nbconvert", "--to", "notebook", "--execute",
           f"--ExecutePreprocessor.kernel_name={kernel}", "--ExecutePreprocessor.timeout=120",
           str(NOTEBOOK), "--output-dir", str(tmp), "--output", f"{kernel}.ipynb"]
    try:
        done = run(cmd, env=env, timeout=300, cwd=str(REPO))
    finally:
        left = wait_no_process_with(str(runtime), 10)
        kill_pids(left)
    assert done.returncode == 0, done.stderr[-4000:]
    assert not left, f"kernel processes left: {left}"
    return nbformat.read(tmp / f"{kernel}.ipynb", as_version=4)


def engine_outputs(nb) -> dict:
    """Per cell id: the engine labels in its outputs, and its errors' names."""
    found = {}
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        labels, errors = [], []
        for out in cell.outputs:
            if out.output_type == "stream":
                text = out.text
            elif out.output_type in ("display_data", "execute_result"):
                text = out.data.get("text/plain", "")
            else:
                text = "\n".join(out.traceback)
                errors.append(out.ename)
            labels += LABEL.findall(strip_ansi(text))
        found[cell.get("id")] = (sorted(labels), errors)
    return found


def test_tutorial_in_ipykernel_and_the_packages_kernel(venv, rp_dir, tmp_path):
    installed = run([str(venv / "bin" / "rparallel"), "install", "--sys-prefix"],
                    env=env_for(venv, rp_dir), timeout=60)
    assert installed.returncode == 0, installed.stderr
    spec = json.loads((venv / "share/jupyter/kernels/rparallel/kernel.json").read_text())
    assert spec["argv"][1:] == ["-m", "rparallel", "kernel", "-f", "{connection_file}"], spec
    assert Path(spec["argv"][0]).parent == venv / "bin", spec

    in_ipykernel = engine_outputs(execute_notebook(venv, rp_dir, "python3", tmp_path))
    in_rparallel = engine_outputs(execute_notebook(venv, rp_dir, "rparallel", tmp_path))
    assert in_ipykernel == in_rparallel
    px_cells = [cell for cell, (labels, _) in in_ipykernel.items() if labels]
    assert len(px_cells) >= 10, in_ipykernel
    errors = [name for _, names in in_ipykernel.values() for name in names]
    assert "CompositeError" in errors, in_ipykernel
