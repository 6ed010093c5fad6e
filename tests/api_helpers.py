"""Shared by the tests of the client API run inside the rparallel kernel
(test_client_api, test_api_extras, test_task_record, test_api_more,
test_bind_kernel): a
cell's value as JSON, the kernel-side helpers their start-up cells
define, and a kernel with a cluster for a whole module."""

from __future__ import annotations

import ast
import json
import shutil
import tempfile
from contextlib import contextmanager

from kernel_helpers import drain, execute, execute_ok, shutdown_and_check, start_kernel, wait_pid_gone

MARK = "@@value "

# Defined in the kernel by each module's start-up cell.
KERNEL_HELPERS = """
import time

def raised(f, *args, **kwargs):
    '''[class name, str] of what f(*args, **kwargs) raised, or None.'''
    try:
        f(*args, **kwargs)
    except BaseException as e:
        return [type(e).__name__, str(e)]
    return None

def caught(f, *args, **kwargs):
    '''The exception f(*args, **kwargs) raised (None if it returned).'''
    try:
        f(*args, **kwargs)
    except BaseException as e:
        return e
    return None

def wait_for(cond, timeout=10):
    '''Polls cond() until true or timeout; its last value.'''
    t0 = time.monotonic()
    while not cond() and time.monotonic() - t0 < timeout:
        time.sleep(0.05)
    return cond()
"""


def value(kc, code: str, timeout: float = 60):
    """Runs ``code``, whose last statement is an expression (possibly over
    several lines); returns that expression's value, printed as JSON on a
    line of its own after everything else the cell printed."""
    code = code.strip("\n")
    last = ast.parse(code).body[-1]
    assert isinstance(last, ast.Expr), f"the cell does not end with an expression: {code!r}"
    body = "\n".join(code.splitlines()[: last.lineno - 1])
    expr = ast.get_source_segment(code, last)
    cell = f"{body}\n_out = (\n{expr}\n)\nimport json as _json\nprint('\\n{MARK}' + _json.dumps(_out))"
    ex = execute_ok(kc, cell, timeout=timeout)
    lines = [ln for ln in ex.stdout.splitlines() if ln.startswith(MARK)]
    assert lines, f"no value printed: {ex.summary()}"
    return json.loads(lines[-1][len(MARK):])


@contextmanager
def private_dir(prefix: str):
    """A temporary RPARALLEL_DIR, removed afterwards."""
    d = tempfile.mkdtemp(prefix=prefix)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@contextmanager
def cluster_in(kc, start: str, engines: int, stop: str = "c.stop_cluster_sync()"):
    """Runs ``start`` (which starts cluster `c` and sets `pids`, its
    engines' pids) in the kernel of ``kc``; afterwards runs ``stop`` and
    checks the engines are gone."""
    engine_pids: list[int] = []
    try:
        execute_ok(kc, start, timeout=90)
        engine_pids = value(kc, "pids")
        assert len(set(engine_pids)) == engines, engine_pids
        yield kc
    finally:
        drain(kc)
        execute(kc, stop, timeout=30)
        left = [p for p in engine_pids if not wait_pid_gone(p, 10)]
        assert not left, f"engines still running after stop_cluster_sync: {left}"


@contextmanager
def kernel_with_cluster(
    prefix: str, start: str, engines: int, stop: str = "c.stop_cluster_sync()", rp_dir: str | None = None
):
    """``(km, kc)``: a kernel with its own RPARALLEL_DIR (``rp_dir``, or a
    temporary one) and the cluster ``start`` makes (see ``cluster_in``);
    shut down and checked after."""
    if rp_dir is None:
        with private_dir(prefix) as d:
            with kernel_with_cluster(prefix, start, engines, stop, rp_dir=d) as kernel:
                yield kernel
        return
    km, kc = start_kernel(rp_dir)
    try:
        with cluster_in(kc, start, engines, stop):
            yield km, kc
    finally:
        shutdown_and_check(km, kc)
