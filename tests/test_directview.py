"""End-to-end tests of the Direct interface (``rparallel``'s Client,
DirectView and AsyncResult) through the real ``rparallel`` kernel and a real
cluster, following every example of the tutorial
(``direct-interface.rst``) with ``import rparallel as ipp``.

A cluster of 4 engines is started from the command line
(``rparallel cluster start -n 4 --daemonize``) in a temporary
``RPARALLEL_DIR``; one kernel, started with that ``RPARALLEL_DIR``, connects
to it with ``ipp.Client(profile='e2e')``. Most checks run as assertions
inside the kernel: the test passes when the cell succeeds. The engine-death
test and the in-kernel ``ipp.Cluster`` test use clusters and kernels of
their own. Every cluster is stopped at the end and its processes are checked
to be gone; every wait is bounded.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from cluster_helpers import (
    GONE_TIMEOUT,
    cluster_processes,
    start_cli_cluster,
    stop_cli_cluster,
    wait_cluster_gone,
    wait_gone,
)
from kernel_helpers import (
    engine_blocks,
    Execution,
    IS_RPARALLEL,
    describe,
    drain,
    execute_error,
    execute_ok,
    get_reply,
    interrupt_running,
    kill_pids,
    pid_alive,
    shutdown_and_check,
    start_kernel,
    strip_ansi,
    traceback_text,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(180),
]


# --------------------------------------------------------------------------
# helpers


def run(kc, code: str, timeout: float = 60) -> Execution:
    """Runs ``code`` in the kernel; asserts the cell succeeded."""
    return execute_ok(kc, code, timeout=timeout)


def run_error(kc, code: str, timeout: float = 60) -> Execution:
    """Runs ``code``; asserts it failed with exactly one error message."""
    return execute_error(kc, code, timeout=timeout)


def plain(ex: Execution) -> str:
    return ex.result()["text/plain"]


# --------------------------------------------------------------------------
# fixtures: the shared 4-engine cluster and its kernel


@pytest.fixture(scope="module")
def cluster():
    c = start_cli_cluster("e2e", 4)
    try:
        yield c
    finally:
        stop_cli_cluster(c)


@pytest.fixture(scope="module")
def cluster_kernel(cluster):
    km, kc = start_kernel(cluster.rp_dir)
    try:
        run(
            kc,
            "import os, time\n"
            "import rparallel as ipp\n"
            "rc = ipp.Client(profile='e2e')\n"
            "rc.wait_for_engines(4, timeout=30)\n"
            "dview = rc[:]\n",
        )
        ex = run(kc, "import json\nprint(json.dumps(rc[:].apply_sync(os.getpid)))")
        cluster.more_pids.update(json.loads(ex.stdout))
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def k(cluster_kernel):
    """The shared kernel's client, drained, with ``dview = rc[:]`` fresh
    (non-blocking, all engines), tb_limit back to 5 and no pending work."""
    kc = cluster_kernel[1]
    drain(kc)
    run(
        kc,
        "rc.wait(timeout=60)\n"
        "ipp.CompositeError.tb_limit = 5\n"
        "dview = rc[:]\n"
        "dview.block = False\n",
    )
    return kc


# --------------------------------------------------------------------------
# the cluster and the client


def test_cluster_started_from_cli(cluster, cluster_kernel):
    """`rparallel cluster start -n 4` left a controller and 4 engines running,
    listed by `rparallel cluster list`; the engines the kernel reaches are them."""
    assert pid_alive(cluster.controller_pid)
    engines = set(cluster.more_pids)
    assert len(engines) == 4, engines
    assert engines <= set(cluster.pids), (
        f"engine pids from the kernel {sorted(engines)} not among the cluster's "
        f"processes found in /proc {cluster.pids}"
    )
    assert cluster.controller_pid in cluster.pids
    listed = cluster.cli("cluster", "list")
    assert listed.returncode == 0, listed.stderr
    line = [ln for ln in listed.stdout.splitlines() if ln.split()[:1] == ["e2e"]]
    assert line, f"e2e not in `cluster list`: {listed.stdout!r}"
    assert str(cluster.controller_pid) in line[0], line[0]
    assert "4/4" in line[0], line[0]


def test_client_ids(k):
    ex = run(k, "rc.ids")
    assert plain(ex) == "[0, 1, 2, 3]"
    run(k, "assert rc.ids == [0, 1, 2, 3], rc.ids\nassert len(rc) == 4, len(rc)")


def test_view_repr(k):
    ex = run(k, "view = rc[1:3]\nview")
    assert plain(ex) == "<DirectView [1, 2]>"
    run(k, "assert isinstance(view, ipp.DirectView)\nassert view.targets == [1, 2], view.targets")


def test_view_apply_completion(k):
    """`view.apply<tab>` offers apply, apply_async and apply_sync."""
    run(k, "view = rc[1:3]")
    code = "view.apply"
    msg_id = k.complete(code, len(code))
    reply = get_reply(k, msg_id, timeout=20)["content"]
    assert reply["status"] == "ok", reply
    full = {code[: reply["cursor_start"]] + m for m in reply["matches"]}
    assert {"view.apply", "view.apply_async", "view.apply_sync"} <= full, reply["matches"]


# --------------------------------------------------------------------------
# quick and easy parallelism


def test_map_sync_equals_serial_map(k):
    run(
        k,
        "serial_result = list(map(lambda x: x**10, range(32)))\n"
        "parallel_result = dview.map_sync(lambda x: x**10, range(32))\n"
        "assert serial_result == parallel_result, parallel_result\n",
    )
    ex = run(k, "serial_result == parallel_result")
    assert plain(ex) == "True"


def test_remote_decorator_getpid(k):
    ex = run(
        k,
        "@dview.remote(block=True)\n"
        "def getpid():\n"
        "    import os\n"
        "    return os.getpid()\n"
        "\n"
        "pids = getpid()\n"
        "assert isinstance(pids, list) and len(pids) == 4, pids\n"
        "assert all(isinstance(p, int) for p in pids), pids\n"
        "assert len(set(pids)) == 4, pids\n"
        "assert os.getpid() not in pids\n"
        "print(json.dumps(pids))\n",
    )
    assert len(set(json.loads(ex.stdout))) == 4


def test_parallel_decorator_numpy(k):
    run(
        k,
        "import numpy as np\n"
        "A = np.random.random((64, 48))\n"
        "@dview.parallel(block=True)\n"
        "def pmul(A, B):\n"
        "    return A*B\n"
        "C_local = A*A\n"
        "C_remote = pmul(A, A)\n"
        "assert (C_local == C_remote).all()\n"
        "assert isinstance(C_remote, np.ndarray), type(C_remote)\n"
        "assert C_remote.shape == (64, 48), C_remote.shape\n",
    )
    ex = run(k, "(C_local == C_remote).all()")
    assert plain(ex) in ("True", "np.True_")  # numpy >= 2 reprs np.True_


def test_parallel_echo_vs_map(k):
    run(
        k,
        "@dview.parallel(block=True)\n"
        "def echo(x):\n"
        "    return str(x)\n",
    )
    ex = run(k, "echo(range(5))")
    assert plain(ex) == "['[0, 1]', '[2]', '[3]', '[4]']"
    ex = run(k, "echo.map(range(5))")
    assert plain(ex) == "['0', '1', '2', '3', '4']"
    run(
        k,
        "assert echo(range(5)) == ['[0, 1]', '[2]', '[3]', '[4]'], echo(range(5))\n"
        "assert echo.map(range(5)) == ['0', '1', '2', '3', '4'], echo.map(range(5))\n",
    )


# --------------------------------------------------------------------------
# calling Python functions: apply, execute, block and targets


def test_apply_blocking(k):
    run(
        k,
        "assert dview.block is False, dview.block\n"
        "dview.block = True\n"
        "assert dview.block is True\n"
        "dview['a'] = 5\n"
        "dview['b'] = 10\n",
    )
    ex = run(k, "dview.apply(lambda x: a+b+x, 27)")
    assert plain(ex) == "[42, 42, 42, 42]"
    run(k, "dview.block = False")
    ex = run(k, "dview.apply_sync(lambda x: a+b+x, 27)")
    assert plain(ex) == "[42, 42, 42, 42]"
    run(
        k,
        "ar = dview.apply(lambda x: a+b+x, 27)\n"
        "assert isinstance(ar, ipp.AsyncResult), type(ar)\n"
        "assert ar.get(30) == [42, 42, 42, 42], ar.get(30)\n"
        "ar = dview.apply_async(lambda x, y=0: a+b+x+y, 27, y=1)\n"
        "assert isinstance(ar, ipp.AsyncResult), type(ar)\n"
        "assert ar.get(30) == [43, 43, 43, 43], ar.get(30)\n"
        "dview.block = True\n"
        "assert dview.apply_async(lambda: 1).get(30) == [1, 1, 1, 1]\n"
        "assert dview.apply_sync(lambda: 2) == [2, 2, 2, 2]\n",
    )


def test_execute_on_slices_then_pull(k):
    """rc[::2].execute('c=a+b'); rc[1::2].execute('c=a-b'); dview['c'] —
    non-blocking executes, then a pull that must see their effect."""
    run(k, "dview.push(dict(a=5, b=10), block=True)")
    run(
        k,
        "ar_even = rc[::2].execute('c=a+b')\n"
        "ar_odd = rc[1::2].execute('c=a-b')\n",
    )
    ex = run(k, "dview['c']")
    assert plain(ex) == "[15, -5, 15, -5]"
    run(
        k,
        "assert rc[::2].targets == [0, 2] and rc[1::2].targets == [1, 3]\n"
        "assert dview['c'] == [15, -5, 15, -5], dview['c']\n",
    )


def test_apply_async_wait_and_get(k):
    run(
        k,
        "def wait(t):\n"
        "    import time\n"
        "    tic = time.time()\n"
        "    time.sleep(t)\n"
        "    return time.time()-tic\n"
        "ar = dview.apply_async(wait, 2)\n"
        "r = ar.get(30)\n"
        "assert len(r) == 4 and all(1.9 < t < 5 for t in r), r\n",
    )


def test_get_timeout_raises_timeouterror(k):
    run(
        k,
        "def wait(t):\n"
        "    import time\n"
        "    tic = time.time()\n"
        "    time.sleep(t)\n"
        "    return time.time()-tic\n"
        "ar = dview.apply_async(wait, 4)\n"
        "assert ar.ready() is False\n"
        "try:\n"
        "    ar.get(0.1)\n"
        "except ipp.error.TimeoutError as e:\n"
        "    assert str(e) == 'Result not ready.', repr(e)\n"
        "else:\n"
        "    raise AssertionError('ar.get(0.1) did not raise')\n",
    )
    started = time.monotonic()
    ex = run_error(k, "ar.get(1)")
    took = time.monotonic() - started
    err = ex.error()
    assert err["ename"] == "TimeoutError", err
    assert err["evalue"] == "Result not ready.", err
    assert 0.8 < took < 3.5, f"ar.get(1) took {took:.2f}s"
    # the kernel is fine and the result arrives
    run(k, "r = ar.get(30)\nassert len(r) == 4 and all(3.9 < t < 8 for t in r), r\n")


def test_wait_for_many_async_results(k):
    run(
        k,
        "def wait(t):\n"
        "    import time\n"
        "    tic = time.time()\n"
        "    time.sleep(t)\n"
        "    return time.time()-tic\n"
        "dview.block = False\n"
        "pr_list = [dview.apply_async(wait, 0.3) for i in range(10)]\n"
        "assert dview.wait(pr_list, timeout=60) is True\n"
        "assert all(ar.ready() for ar in pr_list)\n"
        "r = pr_list[0].get()\n"
        "assert len(r) == 4 and all(0.25 < t < 3 for t in r), r\n"
        "assert all(len(ar.r) == 4 for ar in pr_list)\n",
    )


def test_requests_leave_while_the_caller_computes(k):
    """Requests go out at once even when the caller computes instead of
    waiting: the first from the calling thread, the ones behind it from the
    client's I/O thread (a waiting thread drives the client's runtime, so a
    request must not wait for the next wait). Each engine stamps when it ran
    its request; all ran long before the caller stopped computing. The
    long call first lets the client's I/O thread fall asleep (a thread
    waited on the runtime for over a second)."""
    run(
        k,
        "import time\n"
        "rc[0].apply_sync(time.sleep, 1.5)\n"
        "t0 = time.time()\n"
        "ars = [rc[i % 4].apply_async(time.time) for i in range(6)]\n"
        "end = time.time() + 1.0\n"
        "n = 0\n"
        "while time.time() < end:\n"
        "    n += 1\n"
        "ran = [ar.get(30) - t0 for ar in ars]\n"
        "assert max(ran) < 0.5, ran\n",
    )


def test_block_and_targets_attributes(k):
    run(
        k,
        "dview.targets = [0, 2]\n"
        "dview.block = False\n"
        "ar = dview.apply(lambda: 10)\n"
        "assert ar.get(30) == [10, 10], ar.get(30)\n",
    )
    ex = run(k, "ar.get(30)")
    assert plain(ex) == "[10, 10]"
    run(
        k,
        "dview.targets = dview.client.ids\n"
        "dview.block = True\n",
    )
    ex = run(k, "dview.apply(lambda: 42)")
    assert plain(ex) == "[42, 42, 42, 42]"


def test_per_call_block_and_targets(k):
    """Keyword block=/targets= override the attributes for one call only."""
    run(
        k,
        "dview.block = False\n"
        "r = dview.push(dict(q=1), block=True)\n"
        "assert not isinstance(r, ipp.AsyncResult), r\n"
        "assert dview.pull('q', block=True) == [1, 1, 1, 1]\n"
        "assert dview.pull('q', targets=[1, 3], block=True) == [1, 1]\n"
        "ar = dview.pull('q')\n"
        "assert isinstance(ar, ipp.AsyncResult), type(ar)\n"
        "assert ar.get(30) == [1, 1, 1, 1]\n"
        "dview.block = True\n"
        "ar = dview.pull('q', block=False)\n"
        "assert isinstance(ar, ipp.AsyncResult), type(ar)\n"
        "assert ar.get(30) == [1, 1, 1, 1]\n"
        "assert dview.block is True and dview.targets == [0, 1, 2, 3], (dview.block, dview.targets)\n"
        "dview.push(dict(q=2), targets=[0, 2])\n"
        "assert dview.pull('q') == [2, 1, 2, 1], dview.pull('q')\n"
        "dview.execute('q = q * 10', targets=1)\n"
        "assert dview.pull('q') == [2, 10, 2, 1], dview.pull('q')\n"
        "assert dview.targets == [0, 1, 2, 3]\n",
    )


# --------------------------------------------------------------------------
# moving Python objects around


def test_push_pull(k):
    run(k, "dview.block = True")
    ex = run(k, "dview.push(dict(a=1.03234, b=3453))")
    assert plain(ex) == "[None, None, None, None]"
    ex = run(k, "dview.pull('a')")
    assert plain(ex) == "[1.03234, 1.03234, 1.03234, 1.03234]"
    ex = run(k, "dview.pull('b', targets=0)")
    assert plain(ex) == "3453"
    ex = run(k, "dview.pull(('a', 'b'))")
    assert plain(ex) == "[[1.03234, 3453], [1.03234, 3453], [1.03234, 3453], [1.03234, 3453]]"
    ex = run(k, "dview.push(dict(c='speed'))")
    assert plain(ex) == "[None, None, None, None]"
    run(
        k,
        "ar = dview.pull('a', block=False)\n"
        "assert ar.get(30) == [1.03234, 1.03234, 1.03234, 1.03234], ar.get(30)\n"
        "assert dview.pull('c') == ['speed'] * 4\n"
        "assert rc[2].pull('b', block=True) == 3453\n",
    )


def test_dictionary_interface(k):
    run(k, "dview.block = True\ndview['a'] = ['foo', 'bar']")
    ex = run(k, "dview['a']")
    assert plain(ex) == "[['foo', 'bar'], ['foo', 'bar'], ['foo', 'bar'], ['foo', 'bar']]"
    run(
        k,
        "dview.update(dict(u=7, v='x'))\n"
        "assert dview.get('u') == [7, 7, 7, 7], dview.get('u')\n"
        "assert dview.get(('u', 'v')) == [[7, 'x']] * 4, dview.get(('u', 'v'))\n"
        "dview.block = False\n"
        "dview['w'] = 3\n"
        "rc.wait(timeout=30)\n"
        "assert dview['w'] == [3, 3, 3, 3], dview['w']\n"
        "assert dview.get('w') == [3, 3, 3, 3], dview.get('w')\n",
    )


def test_scatter_gather_range(k):
    run(k, "dview.block = True\ndview.scatter('a', range(16))")
    ex = run(k, "dview['a']")
    assert plain(ex) == "[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]"
    ex = run(k, "dview.gather('a')")
    assert plain(ex) == "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]"
    run(
        k,
        "assert dview['a'] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11], [12, 13, 14, 15]]\n"
        "assert dview.gather('a') == list(range(16))\n"
        "dview.block = False\n"
        "ar = dview.gather('a')\n"
        "assert ar.get(30) == list(range(16)), ar.get(30)\n",
    )


def test_scatter_gather_numpy(k):
    run(
        k,
        "import numpy as np\n"
        "dview.block = True\n"
        "X = np.arange(40.0).reshape(20, 2)\n"
        "dview.scatter('x', X)\n"
        "kinds = dview.apply(ipp.interactive(lambda: (type(x).__name__, x.shape)))\n"
        "assert kinds == [('ndarray', (5, 2))] * 4, kinds\n"
        "G = dview.gather('x')\n"
        "assert isinstance(G, np.ndarray), type(G)\n"
        "assert G.shape == X.shape and (G == X).all(), G\n",
    )


def test_parallel_list_comprehension_with_execute(k):
    run(
        k,
        "dview.block = True\n"
        "dview.scatter('x', range(64))\n"
        "dview.execute('y = [i**10 for i in x]')\n"
        "y = dview.gather('y')\n"
        "assert y == [i**10 for i in range(64)], y[:8]\n",
    )


def test_parallel_list_comprehension_with_px(k):
    """The tutorial's `%px y = [i**10 for i in x]` on the client's view."""
    run(k, "dview.block = True\ndview.scatter('x', range(64))")
    run(k, "%px y = [i**10 for i in x]")
    run(k, "y = dview.gather('y')\nassert y == [i**10 for i in range(64)], y[:8]")


# --------------------------------------------------------------------------
# remote imports


def test_sync_imports(k):
    run(k, "dview.execute('globals().pop(\"numpy\", None)', block=True)")
    ex = run(k, "with dview.sync_imports():\n    import numpy\n")
    assert "importing numpy on engine(s)" in ex.stdout, describe(ex.outputs)
    run(
        k,
        "dview.execute('assert \"numpy\" in globals()', block=True)\n"
        "assert 'numpy' in globals()\n",
    )


def test_require_name_and_module(k):
    run(
        k,
        "globals().pop('re', None)\n"
        "@ipp.require('re')\n"
        "def findall(pat, x):\n"
        "    # re is guaranteed to be available\n"
        "    return re.findall(pat, x)\n"
        "r = dview.apply_sync(findall, r'\\d', 'a1b2')\n"
        "assert r == [['1', '2']] * 4, r\n",
    )
    run(
        k,
        "import time\n"
        "@ipp.require(time)\n"
        "def wait(t):\n"
        "    time.sleep(t)\n"
        "    return t\n"
        "r = dview.apply_sync(wait, 0.1)\n"
        "assert r == [0.1] * 4, r\n",
    )


def test_require_missing_module(k):
    run(
        k,
        "@ipp.require('no_such_module_rparallel_e2e')\n"
        "def never():\n"
        "    return 'ran'\n"
        "try:\n"
        "    dview.apply_sync(never)\n"
        "except ipp.CompositeError as e:\n"
        "    assert len(e.elist) == 4, e.elist\n"
        "    assert all(x.ename == 'UnmetDependency' for x in e.elist), [x.ename for x in e.elist]\n"
        "else:\n"
        "    raise AssertionError('no CompositeError')\n",
    )
    ex = run_error(k, "dview.apply_sync(never)")
    err = ex.error()
    tb = traceback_text(err)
    assert err["ename"] == "CompositeError", err["ename"]
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == [0, 1, 2, 3], tb
    for _, _, text in blocks:
        assert "UnmetDependency" in text, tb


# --------------------------------------------------------------------------
# parallel exceptions


def test_composite_error_rendering(k):
    ex = run_error(k, "dview.block = True\ndview.execute('1/0')")
    err = ex.error()
    tb = traceback_text(err)
    assert err["ename"] == "CompositeError", err
    blocks = engine_blocks(tb)
    assert [(b[0], b[1]) for b in blocks] == [(i, "execute") for i in range(4)], tb
    for _, _, text in blocks:
        assert "ZeroDivisionError: division by zero" in text, tb
        assert "----> 1 1/0" in text, tb
    assert "more exceptions" not in tb, tb
    # the same error again with block= on the call
    ex = run_error(k, "dview.block = False\ndview.execute('1/0', block=True)")
    assert [b[0] for b in engine_blocks(traceback_text(ex.error()))] == [0, 1, 2, 3]
    # ... and in non-blocking mode, raised by ar.get()
    run(k, "ar = dview.execute('1/0')")
    ex = run_error(k, "ar.get(30)")
    assert ex.error()["ename"] == "CompositeError", ex.error()
    assert [b[0] for b in engine_blocks(traceback_text(ex.error()))] == [0, 1, 2, 3]


def test_raise_exception(k):
    run(
        k,
        "try:\n"
        "    dview.execute('1/0', block=True)\n"
        "except ipp.error.CompositeError as e:\n"
        "    try:\n"
        "        e.raise_exception()\n"
        "    except ipp.RemoteError as r:\n"
        "        assert not isinstance(r, ipp.CompositeError), type(r)\n"
        "        assert r.ename == 'ZeroDivisionError', r.ename\n"
        "    else:\n"
        "        raise AssertionError('raise_exception did not raise')\n"
        "else:\n"
        "    raise AssertionError('no CompositeError')\n",
    )
    ex = run_error(
        k,
        "try:\n"
        "    dview.execute('1/0', block=True)\n"
        "except ipp.error.CompositeError as e:\n"
        "    e.raise_exception()\n",
    )
    err = ex.error()
    tb = traceback_text(err)
    assert err["ename"] == "RemoteError", err["ename"]
    blocks = engine_blocks(tb)
    assert [(b[0], b[1]) for b in blocks] == [(0, "execute")], tb
    assert "ZeroDivisionError" in blocks[0][2], tb


def test_composite_error_attributes(k):
    ex = run(
        k,
        "try:\n"
        "    dview.execute('1/0', block=True)\n"
        "except ipp.CompositeError as e:\n"
        "    err = e\n"
        "else:\n"
        "    raise AssertionError('no CompositeError')\n"
        "assert repr(err) == 'CompositeError(4)', repr(err)\n"
        "assert str(err).startswith('one or more exceptions raised in: execute'), str(err)\n"
        "assert len(err.elist) == 4, err.elist\n"
        "assert err.ename == 'ZeroDivisionError', err.ename\n"
        "for name in ('elist', 'engine_info', 'ename', 'evalue', 'traceback', 'msg',\n"
        "             'print_traceback', 'raise_exception', 'render_traceback'):\n"
        "    assert hasattr(err, name), name\n"
        "print(str(err))\n",
    )
    lines = ex.stdout.splitlines()
    assert lines[0] == "one or more exceptions raised in: execute", lines
    assert lines[1:5] == [f"[{i}:execute]ZeroDivisionError: division by zero" for i in range(4)], lines
    ex = run(k, "err")
    assert plain(ex) == "CompositeError(4)"


def test_print_traceback(k):
    ex = run(
        k,
        "try:\n"
        "    dview.execute('1/0', block=True)\n"
        "except ipp.CompositeError as e:\n"
        "    err = e\n"
        "err.print_traceback(1)\n",
    )
    out = strip_ansi(ex.stdout)
    blocks = engine_blocks(out)
    assert [(b[0], b[1]) for b in blocks] == [(1, "execute")], out
    assert "ZeroDivisionError" in blocks[0][2], out


def test_tb_limit(k):
    run(k, "dview.block = True\nipp.CompositeError.tb_limit = 1")
    ex = run_error(k, "dview.execute('1/0')")
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [(b[0], b[1]) for b in blocks] == [(0, "execute")], tb
    assert "ZeroDivisionError" in blocks[0][2], tb
    assert "... 3 more exceptions ..." in tb, tb
    # ... and in non-blocking mode, when the result is asked for
    run(k, "dview.block = False\nar = dview.execute('1/0')")
    ex = run_error(k, "ar.get(30)")
    tb = traceback_text(ex.error())
    assert [b[0] for b in engine_blocks(tb)] == [0], tb
    assert "... 3 more exceptions ..." in tb, tb
    # str() is cut the same way
    ex = run(
        k,
        "try:\n"
        "    ar.get(30)\n"
        "except ipp.CompositeError as e:\n"
        "    print(str(e))\n",
    )
    assert ex.stdout.splitlines() == [
        "one or more exceptions raised in: execute",
        "[0:execute]ZeroDivisionError: division by zero",
        "... 3 more exceptions ...",
    ], ex.stdout
    run(k, "ipp.CompositeError.tb_limit = 5")


def test_tb_limit_with_px(k):
    """The tutorial's `%px a=b` with tb_limit = 1: one NameError block."""
    run(
        k,
        "dview.execute('globals().pop(\"b\", None)', block=True)\n"
        "ipp.CompositeError.tb_limit = 1\n",
    )
    try:
        ex = run_error(k, "%px a=b")
        tb = traceback_text(ex.error())
        blocks = engine_blocks(tb)
        assert [(b[0], b[1]) for b in blocks] == [(0, "execute")], tb
        assert "NameError" in blocks[0][2], tb
        assert "... 3 more exceptions ..." in tb, tb
    finally:
        run(k, "ipp.CompositeError.tb_limit = 5")


def test_single_engine_view_raises_remote_error(k):
    run(
        k,
        "try:\n"
        "    rc[0].execute('1/0', block=True)\n"
        "except ipp.CompositeError as e:\n"
        "    raise AssertionError('single engine raised CompositeError: %r' % (e,))\n"
        "except ipp.RemoteError as e:\n"
        "    assert e.ename == 'ZeroDivisionError', e.ename\n"
        "else:\n"
        "    raise AssertionError('no RemoteError')\n",
    )
    ex = run_error(k, "rc[0].execute('1/0', block=True)")
    err = ex.error()
    tb = traceback_text(err)
    assert err["ename"] == "RemoteError", err["ename"]
    assert [(b[0], b[1]) for b in engine_blocks(tb)] == [(0, "execute")], tb
    assert "ZeroDivisionError" in tb, tb


# --------------------------------------------------------------------------
# AsyncResult


def test_async_result_api(k):
    ex = run(
        k,
        "ar = dview.execute('print(\"hello\", 7)\\nimport time\\ntime.sleep(1)')\n"
        "assert isinstance(ar, ipp.AsyncResult), type(ar)\n"
        "assert ar.ready() is False\n"
        "assert ar.done() is False\n"
        "assert len(ar.msg_ids) == 4 and len(set(ar.msg_ids)) == 4, ar.msg_ids\n"
        "assert all(isinstance(m, str) for m in ar.msg_ids), ar.msg_ids\n"
        "assert rc.wait([ar], timeout=30) is True\n"
        "assert ar.ready() is True and ar.done() is True\n"
        "ar.wait(5)\n"
        "assert ar.successful() is True\n"
        "assert ar.stdout == ['hello 7\\n'] * 4, ar.stdout\n"
        "assert ar.elapsed > 0 and ar.wall_time > 0 and ar.serial_time > 0, (ar.elapsed, ar.wall_time, ar.serial_time)\n"
        "assert ar.serial_time >= ar.wall_time * 0.9 or ar.serial_time > 3.5, (ar.serial_time, ar.wall_time)\n"
        "assert ar.wall_time >= 0.9, ar.wall_time\n"
        "print('elapsed', ar.elapsed, 'wall', ar.wall_time, 'serial', ar.serial_time)\n",
    )
    assert "hello 7" not in ex.stdout.replace("elapsed", ""), (
        "engine output of a non-blocking execute leaked into the kernel's stdout: "
        + repr(ex.stdout)
    )
    run(
        k,
        "ar = dview.apply_async(lambda x: x * 2, 21)\n"
        "assert rc.wait([ar], timeout=30) is True\n"
        "assert ar.r == [42] * 4, ar.r\n"
        "assert ar.result() == [42] * 4, ar.result()\n"
        "assert ar.get() == [42] * 4\n"
        "assert ar.successful() and ar.done() and ar.ready()\n"
        "assert ar.elapsed > 0 and ar.wall_time > 0 and ar.serial_time > 0\n"
        "one = rc[2].apply_async(lambda: 'x')\n"
        "assert one.get(30) == 'x' and one.r == 'x'\n"
        "assert len(one.msg_ids) == 1\n"
        "bad = dview.execute('1/0')\n"
        "assert bad.wait(30) in (None, True)\n"
        "assert bad.ready() is True and bad.successful() is False\n",
    )


def test_async_result_stdout_single_engine(k):
    run(
        k,
        "ar = rc[3].execute('print(\"only three\")')\n"
        "ar.get(30)\n"
        "assert ar.stdout == 'only three\\n', repr(ar.stdout)\n",
    )


# --------------------------------------------------------------------------
# a cluster started inside the kernel (own kernel and RPARALLEL_DIR)


@pytest.mark.timeout(180)
def test_map_async_iterates_as_results_arrive(k):
    run(
        k,
        "ar = dview.map_async(lambda x: x * 2, range(10))\n"
        "assert list(ar) == [x * 2 for x in range(10)]\n"
        "v = rc.activate(targets=[0, 1], suffix='_pair')\n"
        "assert ipp._helpers.active_views['_pair'] is v and v.block and v.targets == [0, 1]\n"
        # As ipyparallel: one engine's bare value is not a sequence.
        "try:\n"
        "    iter(rc[0].apply_async(lambda: 'bare'))\n"
        "except TypeError as e:\n"
        "    assert 'not iterable' in str(e)\n"
        "else:\n"
        "    raise AssertionError('a single result iterated')\n",
    )


@pytest.mark.parametrize(
    "call, method",
    [("dview.apply_sync(time.sleep, 100)", "apply"), ("dview.map_sync(time.sleep, [100] * 4)", "map")],
)
def test_interrupt_reaches_engines(cluster_kernel, k, call, method):
    """Interrupting the kernel during a blocking apply_sync or map_sync
    stops the remote code too: the cell ends within 2 s with each engine's
    KeyboardInterrupt, and the engines answer at once after, state intact."""
    km = cluster_kernel[0]
    run(k, "dview['marker'] = 11")
    reply, took = interrupt_running(km, k, call)
    assert took < 2.5, took
    assert reply["content"]["status"] == "error"
    # The engines stopped in time, so each reports its KeyboardInterrupt.
    assert reply["content"]["ename"] == "CompositeError", reply["content"]
    tb = traceback_text(reply["content"])
    blocks = engine_blocks(tb)
    assert [(b[0], b[1]) for b in blocks] == [(i, method) for i in range(4)], tb
    assert all("KeyboardInterrupt" in b[2] for b in blocks), tb
    drain(k)
    # The engines were interrupted, not left sleeping: a pull answers now,
    # and their namespaces survived.
    t1 = time.monotonic()
    ex = run(k, "dview.pull('marker', block=True)", timeout=20)
    assert plain(ex) == "[11, 11, 11, 11]"
    assert time.monotonic() - t1 < 5


def test_cluster_in_kernel_stops_with_kernel():
    rp_dir = tempfile.mkdtemp(prefix="rp-incluster-")
    km, kc = start_kernel(rp_dir)
    pids: list[int] = []
    try:
        ex = run(
            kc,
            "import os, json\n"
            "import rparallel as ipp\n"
            "cluster = ipp.Cluster(n=2)\n"
            "rc = cluster.start_and_connect_sync()\n"
            "assert rc.ids == [0, 1], rc.ids\n"
            "engine_pids = rc[:].apply_sync(os.getpid)\n"
            "assert len(set(engine_pids)) == 2, engine_pids\n"
            "assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]\n"
            "print(json.dumps({'pids': engine_pids, 'profile': cluster.profile}))\n",
            timeout=90,
        )
        info = json.loads(ex.stdout.strip().splitlines()[-1])
        pids = list(info["pids"])
        cluster_json = Path(rp_dir) / f"profile_{info['profile']}" / "pid" / "cluster.json"
        if cluster_json.exists():
            pids.append(int(json.loads(cluster_json.read_text())["controller_pid"]))
        scanned = cluster_processes(rp_dir)
        assert set(info["pids"]) <= set(scanned), (info, scanned)
        pids = sorted(set(pids) | set(scanned))
        assert len(pids) >= 3, f"expected a controller and 2 engines, found {pids}"
    finally:
        shutdown_and_check(km, kc)
        left = wait_gone(pids)
        scanned = wait_cluster_gone(rp_dir, timeout=2)
        kill_pids(sorted(set(left) | set(scanned)))
        # A Cluster without a profile name has a private profile, removed
        # when it stops (here: with the kernel).
        leftover_profiles = sorted(p.name for p in Path(rp_dir).glob("profile_cluster-*"))
        shutil.rmtree(rp_dir, ignore_errors=True)
    assert not leftover_profiles, leftover_profiles
    assert not left, f"cluster processes still alive {GONE_TIMEOUT}s after the kernel shut down: {left}"
    assert not scanned, f"engine/controller processes of {rp_dir} still running: {scanned}"


# --------------------------------------------------------------------------
# an engine dies with work pending (own cluster and kernel; keep LAST)


@pytest.fixture
def kill_cluster():
    c = start_cli_cluster("e2e-kill", 3)
    km = kc = None
    try:
        km, kc = start_kernel(c.rp_dir)
        yield c, kc
    finally:
        try:
            if km is not None:
                shutdown_and_check(km, kc)
        finally:
            stop_cli_cluster(c)


@pytest.mark.timeout(180)
def test_engine_killed_with_pending_task(kill_cluster):
    cluster, kc = kill_cluster
    ex = run(
        kc,
        "import os, time, json\n"
        "import rparallel as ipp\n"
        "rc = ipp.Client(profile='e2e-kill')\n"
        "rc.wait_for_engines(3, timeout=30)\n"
        "assert rc.ids == [0, 1, 2], rc.ids\n"
        "pids = rc[:].apply_sync(os.getpid)\n"
        "ar = rc[1].apply_async(time.sleep, 30)\n"
        "time.sleep(0.5)\n"
        "assert not ar.ready()\n"
        "print(json.dumps(pids))\n",
    )
    pids = json.loads(ex.stdout.strip().splitlines()[-1])
    cluster.more_pids.update(pids)
    victim = pids[1]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    ex = run(
        kc,
        "t0 = time.monotonic()\n"
        "try:\n"
        "    ar.get(20)\n"
        "except Exception as e:\n"
        "    err = e\n"
        "else:\n"
        "    raise AssertionError('ar.get() returned after the engine was killed')\n"
        "took = time.monotonic() - t0\n"
        "text = type(err).__name__ + ' ' + str(err) + ' ' + repr(err)\n"
        "if hasattr(err, 'render_traceback'):\n"
        "    text += ' ' + '\\n'.join(err.render_traceback())\n"
        "print(json.dumps({'took': took, 'type': type(err).__name__, 'text': text,\n"
        "                  'msg_id': ar.msg_ids[0]}))\n"
        "assert not isinstance(err, ipp.error.TimeoutError), text\n",
        timeout=40,
    )
    elapsed = time.monotonic() - killed_at
    info = json.loads(ex.stdout.strip().splitlines()[-1])
    assert elapsed < 5, f"the failure took {elapsed:.1f}s to arrive after the kill: {info}"
    # output-formats.md: "EngineError: Engine N died while running task <msg_id> (signal 9)"
    assert info["type"] == "EngineError", info
    assert "Engine 1 died while running task" in info["text"], info
    assert info["msg_id"] in info["text"], info
    assert "signal 9" in info["text"], info

    # uncaught: the cell's error names the dead engine
    ex = run_error(kc, "ar.get(5)")
    err = ex.error()
    shown = err["ename"] + " " + err["evalue"] + " " + traceback_text(err)
    assert "EngineError" in shown and "Engine 1 died" in shown, shown

    run(
        kc,
        "deadline = time.monotonic() + 5\n"
        "while 1 in rc.ids and time.monotonic() < deadline:\n"
        "    time.sleep(0.1)\n"
        "assert rc.ids == [0, 2], rc.ids\n"
        "assert rc[:].apply_sync(lambda: 5) == [5, 5]\n"
        "assert rc[[0, 2]].apply_sync(os.getpid) == [pids[0], pids[2]]\n"
        "assert rc[0].apply_sync(lambda: 'alive') == 'alive'\n",
        timeout=30,
    )
    assert not pid_alive(victim)


def test_execute_values_are_execute_replies(k):
    """As in ipyparallel, execute's values are ExecuteReply objects: the
    engine's execution count and the last expression's MIME data, shown as
    `Out[N:k]:`."""
    run(
        k,
        "r = dview.execute('6 * 7', silent=False, block=True).get()\n"
        "assert [type(x).__name__ for x in r] == ['ExecuteReply'] * 4, r\n"
        "assert [x.engine_id for x in r] == [0, 1, 2, 3]\n"
        "assert all(x.data['text/plain'] == '42' for x in r), r\n"
        "assert repr(r[0]) == '<ExecuteReply[%d]: 42>' % r[0].execution_count, repr(r[0])\n"
        "quiet = dview.execute('a = 1', block=True).get()\n"
        "assert all(x.data == {} for x in quiet), quiet\n",
    )
    ex = run(k, "r[2]")
    assert re.fullmatch(r"Out\[2:\d+\]: 42", strip_ansi(plain(ex))), plain(ex)


def test_small_call_pickle_cache_is_never_stale(k):
    """Functions whose pickles are reused across calls (code, simple
    defaults and modules only) still see every change that matters: a
    redefinition, new defaults, a global that appears or changes."""
    run(
        k,
        "e = rc[0]\n"
        "def f():\n    return 1\n"
        "assert e.apply_sync(f) == 1\n"
        "def f():\n    return 2\n"
        "assert e.apply_sync(f) == 2\n"
        "assert [e.apply_sync(lambda x=i: x * 10) for i in range(3)] == [0, 10, 20]\n"
        "import math\n"
        "def g():\n    return math.floor(2.5)\n"
        "assert e.apply_sync(g) == 2\n"
        "e.execute('globals().pop(\"later\", None)', block=True)\n"
        "def h():\n    return later\n"
        "try:\n    e.apply_sync(h)\nexcept ipp.RemoteError as err:\n    assert err.ename == 'NameError', err\n"
        "else:\n    raise AssertionError('later should not exist yet')\n"
        "later = 5\n"
        "assert e.apply_sync(h) == 5\n"
        "later = 6\n"
        "assert e.apply_sync(h) == 6\n"
        "math_real, math = math, None\n"
        "try:\n    e.apply_sync(g)\nexcept ipp.RemoteError as err:\n    assert err.ename == 'AttributeError', err\n"
        "else:\n    raise AssertionError('math is None now')\n"
        "math = math_real\n"
        "assert e.apply_sync(g) == 2\n"
        "assert e.apply_sync(lambda a, b=3, **kw: (a, b, kw), 1, c=[2]) == (1, 3, {'c': [2]})\n",
    )


def test_large_arrays_through_shared_memory(k):
    """Arrays of 1 MiB and more between the kernel and engines on this host
    go through /dev/shm: values are exact both ways, received arrays are
    writable without touching the sender's copy, a result decodes once, and
    no transfer is left behind (the senders' pools of reused files are
    tests/test_shared_memory.py's)."""
    run(
        k,
        "import numpy as np, os, glob\n"
        "def transfers():\n"
        "    return {p for p in glob.glob('/dev/shm/rparallel-*') if not p.startswith('/dev/shm/rparallel-pool-')}\n"
        "before = transfers()\n"
        "big = np.arange(2_000_000, dtype=np.float64)\n"
        "e = rc[0]\n"
        "e.push({'big': big}, block=True)\n"
        "assert e.apply_sync(lambda: (big.flags.writeable, float(big.sum()))) == (True, float(big.sum()))\n"
        "e.execute('big *= 2', block=True)\n"
        "assert big[1] == 1.0, 'the sender keeps its own data'\n"
        "ar = e.pull('big', block=False)\n"
        "back = ar.get(30)\n"
        "assert back is ar.get(30), 'decoded once'\n"
        "assert back.flags.writeable and np.array_equal(back, big * 2)\n"
        "back[0] = -1\n"
        "assert e.apply_sync(lambda: float(big[0])) == 0.0\n"
        "parts = dview.apply_sync(lambda n: np.ones(n), 300_000)\n"
        "assert [p.sum() for p in parts] == [300_000.0] * 4\n"
        "del ar, back, parts\n"
        "leftover = transfers() - before\n"
        "assert not leftover, leftover\n",
    )


def test_abort_reaches_requests_already_handed_to_python(k):
    """The engine hands the next request to its Python thread while one
    runs; aborting it still works, by id or all at once."""
    run(
        k,
        "import time\n"
        "e = rc[1]\n"
        "slow = e.apply_async(time.sleep, 1)\n"
        "nxt = e.apply_async(lambda: 'ran')\n"
        "after = e.apply_async(lambda: 'ran too')\n"
        "e.abort(nxt, block=True)\n"
        "try:\n    nxt.get(10)\nexcept ipp.RemoteError as err:\n    assert 'Abort' in type(err).__name__ or 'abort' in str(err).lower(), err\n"
        "else:\n    raise AssertionError('the aborted request ran')\n"
        "assert after.get(10) == 'ran too'\n"
        "slow.get(10)\n"
        "slow = e.apply_async(time.sleep, 1)\n"
        "queued = [e.apply_async(lambda: 'ran') for _ in range(3)]\n"
        "e.abort(block=True)\n"
        "for ar in queued:\n"
        "    try:\n        ar.get(10)\n    except ipp.RemoteError:\n        pass\n"
        "    else:\n        raise AssertionError('a queued request ran after abort()')\n"
        "slow.get(10)\n"
        "assert e.apply_sync(lambda: 'fine') == 'fine'\n",
    )


def test_private_profiles_of_killed_kernels_are_removed():
    """A kernel killed with SIGKILL cannot remove its cluster's private
    profile; the next private cluster removes those whose owner is gone
    (and keeps the ones of live processes)."""
    rp_dir = tempfile.mkdtemp(prefix="rp-stale-")
    dead = os.path.join(rp_dir, "profile_cluster-4194303-deadbeef")
    alive = os.path.join(rp_dir, "profile_cluster-%d-livelive" % os.getpid())
    for d in (dead, alive):
        os.makedirs(os.path.join(d, "security"))
    km, kc = start_kernel(rp_dir)
    try:
        run(kc, "import rparallel as ipp\nc = ipp.Cluster(n=1)\nc.start_and_connect_sync()\nc.stop_cluster_sync()")
        assert not os.path.exists(dead)
        assert os.path.exists(alive)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
        shutil.rmtree(rp_dir, ignore_errors=True)
