"""Shared helpers for the tests that execute a notebook as `make demo`
does (`jupyter nbconvert --to notebook --execute` on the rparallel
kernel): checking it is stored clean, running it with its clusters in a
temporary RPARALLEL_DIR (and finding what it left running), and reading
its cells' outputs."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import nbformat

from cluster_helpers import wait_cluster_gone
from kernel_helpers import JUPYTER, KERNEL_NAME, kill_pids, wait_no_process_with

KERNELSPEC = {"display_name": "Python 3 (rparallel)", "language": "python", "name": "rparallel"}


def check_clean_notebook(path: Path):
    """The notebook validates, targets the rparallel kernel, and every cell
    has an id and no stored outputs; returns it."""
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"] == KERNELSPEC
    for cell in nb.cells:
        assert cell.get("id"), "every cell has an id"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, (
                f"cell {cell.id} is stored with outputs"
            )
    return nb


def execute_notebook(path: Path, tmp: Path, timeout: float):
    """Runs `path` through nbconvert (no --allow-errors) with its clusters
    in a temporary RPARALLEL_DIR; returns (notebook, process, output path,
    processes left 10 s after (killed), rp_dir)."""
    runtime = tmp / "runtime"
    runtime.mkdir()
    rp_dir = str(tmp / "rparallel")
    env = dict(
        os.environ,
        RPARALLEL_DIR=rp_dir,
        JUPYTER_RUNTIME_DIR=str(runtime),
        IPYTHONDIR=str(tmp / "ipython"),
    )
    cmd = [
        str(JUPYTER),
        "nbconvert",
        "--to",
        "notebook",
        "--execute",
        f"--ExecutePreprocessor.kernel_name={KERNEL_NAME}",
        "--ExecutePreprocessor.timeout=120",
        str(path),
        "--output-dir",
        str(tmp),
    ]
    left = []
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tmp)
    finally:
        # the kernel is found by its connection file, the cluster by its RPARALLEL_DIR
        left = wait_no_process_with(str(runtime), 10) + wait_cluster_gone(rp_dir, 10)
        kill_pids(left)
    assert proc.returncode == 0, f"nbconvert failed:\n{proc.stderr[-6000:]}"
    out = tmp / path.name
    return nbformat.read(out, as_version=4), proc, out, left, rp_dir


def cell(nb, cell_id):
    for c in nb.cells:
        if c.get("id") == cell_id:
            return c
    raise AssertionError(f"no cell with id {cell_id!r} in the notebook")


def text(value):
    return "".join(value) if isinstance(value, list) else value


def stdout(c):
    return "".join(text(o.text) for o in c.outputs if o.output_type == "stream" and o.name == "stdout")


def summary(c):
    """A cell's outputs in one line, for assertion messages."""
    parts = []
    for o in c.outputs:
        if o.output_type == "stream":
            parts.append(f"stream {o.name}: {text(o.text)[:300]!r}")
        elif o.output_type == "error":
            parts.append(f"error {o.ename}: {o.evalue}")
        else:
            parts.append(f"{o.output_type} {sorted(o.get('data', {}))}")
    return "; ".join(parts) or "no outputs"


def check_nothing_left(executed) -> None:
    """No process of the run (kernel, controller, engines) outlived it."""
    from cluster_helpers import cluster_processes

    left, rp_dir = executed[3], executed[4]
    assert not left, f"processes still running 10 s after nbconvert exited: {left}"
    assert not cluster_processes(rp_dir)


def check_cells_ran(nb) -> None:
    """Every code cell ran once, in order, with no error output and no
    error text in its streams."""
    from kernel_helpers import strip_ansi

    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), counts
    for c in code:
        errors = [o for o in c.outputs if o.output_type == "error"]
        assert not errors, f"cell {c.id} raised: {[(e.ename, e.evalue) for e in errors]}"
        streams = strip_ansi("".join(text(o.text) for o in c.outputs if o.output_type == "stream"))
        assert "Error" not in streams and "Traceback" not in streams, f"cell {c.id}: {streams[:2000]}"
