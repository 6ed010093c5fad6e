"""End-to-end fault tests: what happens when an engine, the controller or
the kernel dies, engine restarts, and aborting or timing out queued and
running work — through the real ``rparallel`` kernel driven by
``jupyter_client``, with processes killed by ``SIGKILL`` from outside.

Most tests share one kernel (module scope, its own ``RPARALLEL_DIR``) and
get a fresh cluster started in it (``ipp.Cluster(n=N)``, the ``cluster``
fixture), stopped at the end of the test and checked to be gone. Tests
that kill the kernel, or need a cluster started from the command line,
have kernels of their own. Detection and recovery times are printed
(``pytest -s`` shows them) and asserted against the deadlines below.
Every wait is bounded; every kernel, controller and engine is checked gone.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cluster_helpers import (
    cluster_processes,
    start_cli_cluster,
    wait_cluster_gone,
    wait_gone,
)
from kernel_helpers import (
    strip_ansi,
    engine_blocks,
    start_cell,
    Execution,
    IS_RPARALLEL,
    KernelTimeout,
    collect_iopub,
    describe,
    drain,
    execute,
    execute_ok,
    get_reply,
    kernel_pid,
    kill_pids,
    pid_alive,
    shutdown_and_check,
    start_kernel,
    traceback_text,
    wait_for_stream,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own cluster"),
    pytest.mark.timeout(120),
]

# An engine killed with work pending: its results fail with EngineError
# within this many seconds of the kill (the controller started the engine
# and sees its exit at once).
DEATH_DEADLINE = 2.0
# The controller killed or hung: pending results and new calls fail within
# this (at the latest through the client's heartbeat: no reply for 3
# periods of 1 s).
CONTROLLER_DEADLINE = 15.0
# ... and its engines exit on their own within this.
ENGINES_EXIT_DEADLINE = 15.0
# The kernel killed or shut down: its clusters are gone within this.
KERNEL_GONE_DEADLINE = 10.0
# A stopped cluster's processes are gone within this.
GONE_TIMEOUT = 15.0


def report(what: str, seconds: float) -> None:
    """Prints a measured time (shown with ``pytest -s``)."""
    print(f"\n[faults] {what}: {seconds:.3f}s", flush=True)


# --------------------------------------------------------------------------
# helpers


def run(kc, code: str, timeout: float = 60) -> Execution:
    """Runs ``code``; asserts the cell succeeded."""
    return execute_ok(kc, code, timeout=timeout)


def last_json(ex: Execution):
    """The JSON a cell printed on its last line of stdout."""
    lines = ex.stdout.strip().splitlines()
    assert lines, f"the cell printed nothing: {ex.summary()}"
    return json.loads(lines[-1])


OUT = re.compile(r"Out\[(\d+):\d+\]: (\d+)")


def finish_cell(kc, ex: Execution, timeout: float) -> Execution:
    """Waits for the rest of a cell started with ``start_cell``."""
    collect_iopub(kc, ex, timeout)
    ex.reply = get_reply(kc, ex.msg_id, timeout=10)
    return ex


def wait_for_file(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise KernelTimeout(f"{path} was not created within {timeout}s")
        time.sleep(0.02)


def kill9(pid: int) -> float:
    """SIGKILLs ``pid``; returns the monotonic time of the kill."""
    os.kill(pid, signal.SIGKILL)
    return time.monotonic()


def controller_pid_of(rp_dir: str, profile: str) -> int:
    info = Path(rp_dir) / f"profile_{profile}" / "pid" / "cluster.json"
    return int(json.loads(info.read_text())["controller_pid"])


# Code run in the kernel to stop the current cluster (if any).
STOP_CLUSTER = (
    "if cluster is not None:\n"
    "    cluster.stop_cluster_sync()\n"
    "cluster = rc = dview = None\n"
    "import gc; gc.collect()\n"
)


# --------------------------------------------------------------------------
# the shared kernel and a fresh cluster per test


@dataclass
class FaultKernel:
    km: object
    kc: object
    rp_dir: str
    # every engine/controller pid seen in this kernel
    seen: set[int] = field(default_factory=set)


@dataclass
class ClusterInfo:
    """A cluster started in the shared kernel: ``cluster``, ``rc`` and
    ``dview = rc[:]`` in the kernel; ``pids`` maps engine id → pid."""

    profile: str
    controller_pid: int
    pids: dict[int, int]

    @property
    def ids(self) -> list[int]:
        return sorted(self.pids)


@pytest.fixture(scope="module")
def fault_kernel():
    rp_dir = tempfile.mkdtemp(prefix="rp-faults-")
    km, kc = start_kernel(rp_dir)
    fk = FaultKernel(km, kc, rp_dir)
    left: list[int] = []
    scanned: list[int] = []
    try:
        run(kc, "import os, time, json\nimport rparallel as ipp\ncluster = rc = dview = None\n")
        yield fk
    finally:
        try:
            shutdown_and_check(km, kc)
        finally:
            left = wait_gone(sorted(fk.seen), timeout=GONE_TIMEOUT)
            scanned = wait_cluster_gone(rp_dir, timeout=2)
            kill_pids(sorted(set(left) | set(scanned)))
            shutil.rmtree(rp_dir, ignore_errors=True)
    assert not left, f"cluster processes still alive after the kernel shut down: {left}"
    assert not scanned, f"engine/controller processes of {rp_dir} still running: {scanned}"


def _ensure_idle(fk: FaultKernel) -> None:
    """Makes sure the shared kernel answers (interrupting a cell a failed
    test may have left running)."""
    drain(fk.kc)
    try:
        execute(fk.kc, "pass", timeout=10)
    except KernelTimeout:
        fk.km.interrupt_kernel()
        execute(fk.kc, "pass", timeout=20)
    drain(fk.kc)


@pytest.fixture
def cluster(fault_kernel, tmp_path):
    """A function ``start(n, **options) -> ClusterInfo`` that starts a fresh
    cluster in the shared kernel; stopped and checked gone at the end."""
    fk = fault_kernel
    _ensure_idle(fk)

    def start(n: int, **options) -> ClusterInfo:
        opts = "".join(f", {k}={v!r}" for k, v in options.items())
        ex = run(
            fk.kc,
            STOP_CLUSTER
            + f"cluster = ipp.Cluster(n={n}{opts})\n"
            "rc = cluster.start_and_connect_sync()\n"
            f"rc.wait_for_engines({n}, timeout=30)\n"
            "dview = rc[:]\n"
            "dview.execute('import os, time', block=True)\n"
            "ipp.CompositeError.tb_limit = 10\n"
            "_pids = dict(zip(rc.ids, rc[:].apply_sync(os.getpid)))\n"
            "print(json.dumps({'profile': cluster.profile, 'pids': _pids}))\n",
            timeout=90,
        )
        info = last_json(ex)
        pids = {int(k): v for k, v in info["pids"].items()}
        assert sorted(pids) == list(range(n)), pids
        c = ClusterInfo(info["profile"], controller_pid_of(fk.rp_dir, info["profile"]), pids)
        fk.seen.update(pids.values())
        fk.seen.add(c.controller_pid)
        return c

    start.kernel = fk
    start.tmp = tmp_path
    yield start
    _ensure_idle(fk)
    run(fk.kc, STOP_CLUSTER, timeout=60)
    left = wait_cluster_gone(fk.rp_dir, timeout=GONE_TIMEOUT)
    kill_pids(left)
    assert not left, f"processes of the test's cluster still alive after stop: {left}"


# --------------------------------------------------------------------------
# 1. an engine dies (kill -9) with work pending


def test_engine_killed_during_apply_async(cluster):
    """Engine 1 is killed while running ``time.sleep(30)`` with two more
    requests queued behind it: all three results fail at once with
    ``EngineError`` naming engine 1 and signal 9; engine 0's work
    finishes normally; ``rc.ids`` drops 1; the other engines keep working."""
    c = cluster(3)
    kc = cluster.kernel.kc
    run(
        kc,
        "running = rc[1].apply_async(time.sleep, 30)\n"
        "queued = [rc[1].apply_async(lambda: 'never') for _ in range(2)]\n"
        "other = rc[0].apply_async(lambda: (time.sleep(1), 'zero')[1])\n"
        "time.sleep(0.5)\n"
        "assert not running.ready()\n",
    )
    killed_at = kill9(c.pids[1])
    ex = run(
        kc,
        "t0 = time.monotonic()\n"
        "failures = []\n"
        "for ar in [running] + queued:\n"
        "    try:\n"
        "        ar.get(20)\n"
        "    except Exception as e:\n"
        "        failures.append({'type': type(e).__name__, 'text': str(e),\n"
        "                         'engine': getattr(e, 'engine_info', {}).get('engine_id'),\n"
        "                         'took': time.monotonic() - t0, 'msg_id': ar.msg_ids[0]})\n"
        "    else:\n"
        "        failures.append({'type': None, 'text': 'returned'})\n"
        "print(json.dumps(failures))\n",
        timeout=40,
    )
    detected = ex.idle_at - killed_at
    report("engine death -> EngineError of apply_async (kill to cell end)", detected)
    failures = last_json(ex)
    assert len(failures) == 3, failures
    for f in failures:
        assert f["type"] == "EngineError", failures
        assert "Engine 1" in f["text"] and "signal 9" in f["text"], failures
        assert f["msg_id"] in f["text"], failures
    assert failures[0]["engine"] == 1, failures
    assert detected < DEATH_DEADLINE, f"EngineError {detected:.2f}s after the kill: {failures}"

    run(
        kc,
        "assert other.get(10) == 'zero'\n"
        "deadline = time.monotonic() + 5\n"
        "while 1 in rc.ids and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "assert rc.ids == [0, 2], rc.ids\n"
        f"assert rc[:].apply_sync(os.getpid) == [{c.pids[0]}, {c.pids[2]}]\n"
        "assert rc[[0, 2]].map_sync(lambda x: x * 3, range(6)) == [0, 3, 6, 9, 12, 15]\n"
        "assert rc[:].execute('y = 5', block=True).get() is not None\n"
        "assert rc[:].pull('y', block=True) == [5, 5]\n",
        timeout=30,
    )
    assert not pid_alive(c.pids[1])


def test_calls_to_a_dead_engine_fail(cluster):
    """After engine 1 died (killed while idle; ``rc.ids`` drops it within
    the deadline), a call addressed to engine 1 fails at once: through a
    view made before its death, through ``rc[1]``, through ``targets=[1]``.
    None of them may run on another engine."""
    c = cluster(3)
    kc = cluster.kernel.kc
    run(kc, "v1 = rc[1]\nassert v1.apply_sync(os.getpid) == %d\n" % c.pids[1])
    killed_at = kill9(c.pids[1])
    ex = run(
        kc,
        "deadline = time.monotonic() + 10\n"
        "while 1 in rc.ids and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps(rc.ids))\n",
        timeout=20,
    )
    gone_after = ex.idle_at - killed_at
    report("idle engine death -> dropped from rc.ids (kill to cell end)", gone_after)
    assert last_json(ex) == [0, 2]
    assert gone_after < DEATH_DEADLINE

    ex = run(
        kc,
        "outcomes = {}\n"
        "calls = {\n"
        "    'view made before': lambda: v1.apply_sync(os.getpid),\n"
        "    'rc[1]': lambda: rc[1].apply_sync(os.getpid),\n"
        "    'rc[[1]]': lambda: rc[[1]].apply_sync(os.getpid),\n"
        "    'targets=[1]': lambda: rc[:].execute('x = 1', targets=[1], block=True),\n"
        "}\n"
        "for name, call in calls.items():\n"
        "    t0 = time.monotonic()\n"
        "    try:\n"
        "        value = call()\n"
        "    except Exception as e:\n"
        "        outcomes[name] = ['raised', type(e).__name__, str(e), time.monotonic() - t0]\n"
        "    else:\n"
        "        outcomes[name] = ['returned', repr(value), '', time.monotonic() - t0]\n"
        "print(json.dumps(outcomes))\n",
        timeout=30,
    )
    outcomes = last_json(ex)
    for name, (what, kind, text, took) in outcomes.items():
        assert what == "raised", (
            f"{name}: a call to dead engine 1 returned {kind} (pids of the others: "
            f"{c.pids[0]}, {c.pids[2]}) instead of failing: {outcomes}"
        )
        assert "1" in text, outcomes
        assert took < 2, outcomes


def test_engine_killed_during_blocking_px(cluster):
    """``%px`` on 3 engines, each printing ``before`` and then sleeping (the
    victim 30 s, the others 0.3 s): the victim is killed once every
    ``[stdout:N] before`` arrived. The cell ends within the deadline of the
    kill with one ``[V:execute]`` EngineError block (engine V, signal 9),
    the victim's ``before`` is kept, and the next ``%px`` runs on the two
    survivors."""
    c = cluster(3)
    kc = cluster.kernel.kc
    victim = 1
    vpid = c.pids[victim]
    code = (
        "%px import time, os; print('before', flush=True); "
        f"time.sleep(30 if os.getpid() == {vpid} else 0.3)"
    )
    ex = start_cell(kc, code)
    for n in c.ids:
        wait_for_stream(kc, ex, f"[stdout:{n}] before", timeout=15)
    killed_at = kill9(vpid)
    finish_cell(kc, ex, timeout=40)
    took = ex.idle_at - killed_at
    report("engine death during blocking %px -> cell end (kill to idle)", took)
    assert ex.status == "error", ex.summary()
    err = ex.error()
    tb = traceback_text(err)
    blocks = engine_blocks(tb)
    assert [(b[0], b[1]) for b in blocks] == [(victim, "execute")], tb
    text = blocks[0][2]
    assert "EngineError" in text and f"Engine {victim}" in text and "signal 9" in text, tb
    lines = ex.stdout.splitlines()
    for n in c.ids:
        assert lines.count(f"[stdout:{n}] before") == 1, ex.stdout
    kinds = [m["msg_type"] for m in ex.outputs]
    assert kinds[-1] == "error" and kinds.count("error") == 1, describe(ex.outputs)
    assert took < DEATH_DEADLINE, f"the cell ended {took:.2f}s after the kill"

    ex = run(kc, "%px os.getpid()", timeout=20)
    outs = [
        OUT.fullmatch(strip_ansi(m["content"]["data"]["text/plain"]))
        for m in ex.of_type("display_data")
    ]
    assert all(outs), describe(ex.outputs)
    assert [(int(m.group(1)), int(m.group(2))) for m in outs] == [
        (0, c.pids[0]),
        (2, c.pids[2]),
    ], describe(ex.outputs)
    run(kc, "assert rc.ids == [0, 2], rc.ids\nassert rc[:].apply_sync(lambda: 1) == [1, 1]\n")


@pytest.mark.parametrize("kind", ["px", "px-stream", "map_sync"])
def test_engine_killed_fails_the_call_at_once(cluster, kind):
    """Fail fast: all 3 engines work in a blocking call — ``%%px
    --no-stream`` or ``%px`` (each printing ``before`` first), or
    ``dview.map_sync(nap, [4] * 3)`` — and one is killed: the call ends within 2 s of the kill,
    not when the others finish, with one EngineError block for the dead
    engine (signal 9); with ``%%px``, what every engine printed so far is
    shown. The others go on: ``%pxresult`` then waits for them and shows
    their outputs with the dead engine's error; their namespaces are
    intact."""
    c = cluster(3)
    fk = cluster.kernel
    kc = fk.kc
    marks = cluster.tmp
    started = f"open(os.path.join({str(marks)!r}, 'started-%d' % os.getpid()), 'w').close()"
    run(kc, "%px marker = os.getpid()")
    if kind == "px":
        code = (
            "%%px --no-stream\n"
            "import time, os\n"
            "print('before', flush=True)\n"
            f"{started}\n"
            "time.sleep(4)\n"
            "print('after', flush=True)\n"
        )
    elif kind == "px-stream":
        code = f"%px import time, os; print('before', flush=True); {started}; time.sleep(4)"
    else:
        code = (
            "def nap(t):\n"
            "    import os, time\n"
            f"    {started}\n"
            "    time.sleep(t)\n"
            "dview.map_sync(nap, [4] * 3)\n"
        )
    ex = start_cell(kc, code)
    for pid in c.pids.values():
        wait_for_file(marks / f"started-{pid}", timeout=15)
    time.sleep(0.5)  # the flushed line leaves the engine
    killed_at = kill9(c.pids[2])
    finish_cell(kc, ex, timeout=30)
    took = ex.idle_at - killed_at
    report(f"engine death during a blocking {kind} with the others busy -> call fails", took)
    assert ex.status == "error", ex.summary()
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == [2], tb
    assert "EngineError" in blocks[0][2] and "signal 9" in blocks[0][2], tb
    assert took < DEATH_DEADLINE, f"the call failed {took:.2f}s after the kill"
    if kind == "px-stream":
        # streamed live while it waited
        assert sorted(ex.stdout.splitlines()) == [f"[stdout:{n}] before" for n in c.ids], ex.stdout
    if kind == "px":
        # what each engine printed before the failure, grouped (--no-stream)
        assert ex.stdout.splitlines() == [f"[stdout:{n}] before" for n in c.ids], ex.stdout
        ex = execute(kc, "%pxresult", timeout=30)
        assert ex.status == "error", ex.summary()
        blocks = engine_blocks(traceback_text(ex.error()))
        assert [b[0] for b in blocks] == [2], blocks
        # the survivors finished: their whole output, the dead engine's line
        assert ex.stdout == (
            "[stdout:0]\nbefore\nafter\n[stdout:1]\nbefore\nafter\n[stdout:2] before\n"
        ), ex.stdout
    run(
        kc,
        f"assert rc[:].pull('marker', block=True) == [{c.pids[0]}, {c.pids[1]}]\n"
        "assert rc.ids == [0, 1], rc.ids\n",
        timeout=20,
    )


def test_engine_killed_during_map_sync(cluster):
    """``rc[:].map_sync(nap, [1, 30, 1])`` — engine 1 gets the 30 s item
    and is killed mid-sleep: the call fails within the deadline with one
    EngineError (engine 1, signal 9); then map works on the survivors."""
    c = cluster(3)
    kc = cluster.kernel.kc
    ex = start_cell(
        kc,
        "def nap(t):\n"
        "    import time\n"
        "    time.sleep(t)\n"
        "    return t\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    rc[:].map_sync(nap, [1, 30, 1])\n"
        "except Exception as e:\n"
        "    err = e\n"
        "else:\n"
        "    err = None\n"
        "took = time.monotonic() - t0\n"
        "raise err if err is not None else AssertionError('map_sync returned')\n",
    )
    time.sleep(0.8)
    killed_at = kill9(c.pids[1])
    finish_cell(kc, ex, timeout=40)
    took = ex.idle_at - killed_at
    report("engine death during map_sync -> call fails (kill to cell end)", took)
    assert ex.status == "error", ex.summary()
    err = ex.error()
    tb = traceback_text(err)
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == [1], tb
    assert "EngineError" in blocks[0][2] and "Engine 1" in blocks[0][2], tb
    assert "signal 9" in blocks[0][2], tb
    assert took < DEATH_DEADLINE, f"map_sync failed {took:.2f}s after the kill"
    run(
        kc,
        "assert rc.ids == [0, 2], rc.ids\n"
        "assert rc[:].map_sync(nap, [0, 0.1, 0, 0.1]) == [0, 0.1, 0, 0.1]\n"
        "assert rc[:].map_sync(lambda x: x ** 2, range(7)) == [x ** 2 for x in range(7)]\n",
        timeout=30,
    )


# --------------------------------------------------------------------------
# 2. the controller dies


def test_controller_killed_in_kernel_cluster(cluster):
    """kill -9 of the controller of a cluster started in the kernel, with
    work pending on every engine: the pending results fail within the
    deadline with an error naming the controller (not a TimeoutError);
    new calls fail at once; the engines exit on their own; the kernel
    stays usable and a new cluster starts in it and works (``%px`` too)."""
    c = cluster(2)
    fk = cluster.kernel
    kc = fk.kc
    run(
        kc,
        "one = rc[0].apply_async(time.sleep, 30)\n"
        "both = rc[:].apply_async(time.sleep, 30)\n"
        "time.sleep(0.3)\n",
    )
    killed_at = kill9(c.controller_pid)
    ex = run(
        kc,
        "found = {}\n"
        "for name, ar in [('one', one), ('both', both)]:\n"
        "    t0 = time.monotonic()\n"
        "    try:\n"
        "        ar.get(40)\n"
        "    except Exception as e:\n"
        "        found[name] = [type(e).__name__, str(e)]\n"
        "    else:\n"
        "        found[name] = [None, 'returned']\n"
        "t0 = time.monotonic()\n"
        "try:\n"
        "    rc[:].apply_sync(lambda: 1)\n"
        "except Exception as e:\n"
        "    found['new'] = [type(e).__name__, str(e), time.monotonic() - t0]\n"
        "else:\n"
        "    found['new'] = [None, 'returned', time.monotonic() - t0]\n"
        "print(json.dumps(found))\n",
        timeout=60,
    )
    detected = ex.idle_at - killed_at
    report("controller death -> pending results fail (kill to cell end)", detected)
    found = last_json(ex)
    for name in ("one", "both"):
        kind, text = found[name]
        assert kind not in (None, "TimeoutError"), found
        assert "controller" in text.lower(), found
    assert found["one"][0] == "EngineError", found
    assert found["new"][0] is not None and found["new"][2] < 2, found
    assert detected < CONTROLLER_DEADLINE, f"pending results failed {detected:.1f}s after the kill"

    engines = list(c.pids.values())
    left = wait_gone(engines, timeout=max(0.1, ENGINES_EXIT_DEADLINE - (time.monotonic() - killed_at)))
    report("controller death -> engines exited (kill to last exit, upper bound)", time.monotonic() - killed_at)
    kill_pids(left)
    assert not left, f"engines still alive {ENGINES_EXIT_DEADLINE}s after their controller was killed: {left}"

    ex = run(kc, "1 + 1")
    assert ex.result()["text/plain"] == "2"
    ex = run(
        kc,
        "cluster.stop_cluster_sync()\n"
        "cluster = ipp.Cluster(n=2)\n"
        "rc = cluster.start_and_connect_sync()\n"
        "assert rc[:].apply_sync(lambda: 6 * 7) == [42, 42]\n"
        "print(json.dumps({'profile': cluster.profile, 'pids': rc[:].apply_sync(os.getpid)}))\n",
        timeout=60,
    )
    info = last_json(ex)
    fk.seen.update(info["pids"])
    fk.seen.add(controller_pid_of(fk.rp_dir, info["profile"]))
    ex = run(kc, "%px import os; os.getpid()")
    shown = " ".join(
        strip_ansi(m["content"]["data"]["text/plain"]) for m in ex.of_type("display_data")
    )
    assert all(str(p) in shown for p in info["pids"]), describe(ex.outputs)


def test_controller_frozen(cluster):
    """The controller stops answering without exiting (SIGSTOP: a hung or
    unreachable controller, seen only through the heartbeat): pending
    results fail within the deadline with an error naming the controller,
    new calls then fail at once, and the engines exit on their own."""
    c = cluster(2)
    fk = cluster.kernel
    kc = fk.kc
    run(kc, "pending = rc[:].apply_async(time.sleep, 60)\ntime.sleep(0.3)\n")
    os.kill(c.controller_pid, signal.SIGSTOP)
    stopped_at = time.monotonic()
    try:
        ex = run(
            kc,
            "try:\n"
            "    pending.get(40)\n"
            "except Exception as e:\n"
            "    err = [type(e).__name__, str(e)]\n"
            "else:\n"
            "    err = [None, 'returned']\n"
            "t0 = time.monotonic()\n"
            "try:\n"
            "    rc[:].apply_sync(lambda: 1)\n"
            "except Exception as e:\n"
            "    new = [type(e).__name__, str(e), time.monotonic() - t0]\n"
            "else:\n"
            "    new = [None, 'returned', time.monotonic() - t0]\n"
            "print(json.dumps({'err': err, 'new': new}))\n",
            timeout=60,
        )
        detected = ex.idle_at - stopped_at
        report("controller frozen (SIGSTOP) -> pending results fail", detected)
        info = last_json(ex)
        kind, text = info["err"]
        assert kind not in (None, "TimeoutError"), info
        assert "controller" in text.lower(), info
        assert info["new"][0] is not None and info["new"][2] < 2, info
        assert detected < CONTROLLER_DEADLINE, detected
        engines = list(c.pids.values())
        left = wait_gone(engines, timeout=max(0.1, ENGINES_EXIT_DEADLINE - (time.monotonic() - stopped_at)))
        report("controller frozen -> engines exited (upper bound)", time.monotonic() - stopped_at)
        assert not left, f"engines alive {ENGINES_EXIT_DEADLINE}s after their controller froze: {left}"
        assert run(kc, "1 + 1").result()["text/plain"] == "2"
    finally:
        kill_pids([c.controller_pid])  # SIGKILL ends a stopped process too


def test_controller_killed_cli_cluster():
    """The same for a cluster from ``rparallel cluster start -n 2
    --daemonize``: pending results fail within the deadline naming the
    controller, the engines exit on their own, the kernel stays usable;
    and new calls fail with an error that says the controller is gone
    (not just "no engines")."""
    cli = start_cli_cluster("faults-ctl", 2)
    km = kc = None
    left: list[int] = []
    try:
        km, kc = start_kernel(cli.rp_dir)
        ex = run(
            kc,
            "import os, time, json\n"
            "import rparallel as ipp\n"
            "rc = ipp.Client(profile='faults-ctl')\n"
            "rc.wait_for_engines(2, timeout=30)\n"
            "pids = rc[:].apply_sync(os.getpid)\n"
            "ar = rc[:].apply_async(time.sleep, 30)\n"
            "time.sleep(0.3)\n"
            "print(json.dumps(pids))\n",
        )
        engines = last_json(ex)
        cli.more_pids.update(engines)
        killed_at = kill9(cli.controller_pid)
        ex = run(
            kc,
            "try:\n"
            "    ar.get(40)\n"
            "except Exception as e:\n"
            "    err = [type(e).__name__, str(e)]\n"
            "else:\n"
            "    err = [None, 'returned']\n"
            "print(json.dumps(err))\n",
            timeout=60,
        )
        detected = ex.idle_at - killed_at
        report("CLI controller death -> pending results fail", detected)
        kind, text = last_json(ex)
        assert kind not in (None, "TimeoutError"), (kind, text)
        assert "controller" in text.lower(), (kind, text)
        assert detected < CONTROLLER_DEADLINE, detected

        left = wait_gone(engines, timeout=max(0.1, ENGINES_EXIT_DEADLINE - (time.monotonic() - killed_at)))
        report("CLI controller death -> engines exited (upper bound)", time.monotonic() - killed_at)
        assert not left, f"engines alive {ENGINES_EXIT_DEADLINE}s after the controller was killed: {left}"

        assert run(kc, "6 * 7").result()["text/plain"] == "42"
        ex = run(
            kc,
            "new = {}\n"
            "for name, call in [('rc[:]', lambda: rc[:].apply_sync(lambda: 1)),\n"
            "                   ('direct_view', lambda: rc.direct_view().apply_sync(lambda: 1)),\n"
            "                   ('rc[0]', lambda: rc[0].apply_sync(lambda: 1))]:\n"
            "    t0 = time.monotonic()\n"
            "    try:\n"
            "        call()\n"
            "    except Exception as e:\n"
            "        new[name] = [type(e).__name__, str(e), time.monotonic() - t0]\n"
            "    else:\n"
            "        new[name] = [None, 'returned', time.monotonic() - t0]\n"
            "print(json.dumps(new))\n",
            timeout=30,
        )
        new = last_json(ex)
        for name, (kind, text, took) in new.items():
            assert kind is not None and took < 2, new
        for name, (kind, text, took) in new.items():
            assert "controller" in text.lower(), (
                f"a new call after the controller died should say so; {name} raised "
                f"{kind}: {text!r} (all: {new})"
            )
    finally:
        try:
            if km is not None:
                shutdown_and_check(km, kc)
        finally:
            known = sorted(set(cli.pids) | cli.more_pids | {cli.controller_pid})
            leftover = wait_gone(known, timeout=2) + wait_cluster_gone(cli.rp_dir, timeout=1)
            kill_pids(sorted(set(leftover)))
            shutil.rmtree(cli.rp_dir, ignore_errors=True)
    assert not leftover, f"processes of the killed cluster left over: {leftover}"


# --------------------------------------------------------------------------
# 3. the kernel dies (test_directview covers a normal shutdown with an idle
#    cluster; here: SIGKILL, and busy engines, two clusters, a restart)


@pytest.mark.parametrize("how", ["sigkill", "shutdown", "restart"])
def test_kernel_death_takes_its_clusters_down(how):
    """A kernel that started two clusters (a private one of 2 engines and
    one with a named profile), with every engine busy in ``time.sleep(100)``,
    is killed with SIGKILL / shut down without stopping them / restarted:
    every engine and controller it started is gone within the deadline."""
    rp_dir = tempfile.mkdtemp(prefix=f"rp-kdeath-{how}-")
    km, kc = start_kernel(rp_dir)
    pids: list[int] = []
    left: list[int] = []
    scanned: list[int] = []
    try:
        ex = run(
            kc,
            "import os, json, time\n"
            "import rparallel as ipp\n"
            "a = ipp.Cluster(n=2)\n"
            "rca = a.start_and_connect_sync()\n"
            "b = ipp.Cluster(n=1, profile='named')\n"
            "rcb = b.start_and_connect_sync()\n"
            "pids = rca[:].apply_sync(os.getpid) + rcb[:].apply_sync(os.getpid)\n"
            "busy = [rca[:].apply_async(time.sleep, 100), rcb[:].apply_async(time.sleep, 100)]\n"
            "time.sleep(0.3)\n"
            "assert not any(ar.ready() for ar in busy)\n"
            "print(json.dumps({'pids': pids, 'profiles': [a.profile, b.profile]}))\n",
            timeout=90,
        )
        info = last_json(ex)
        pids = list(info["pids"]) + [controller_pid_of(rp_dir, p) for p in info["profiles"]]
        scanned = cluster_processes(rp_dir)
        assert set(pids) <= set(scanned), (pids, scanned)
        assert len(pids) == 5, pids
        kpid = kernel_pid(km)
        t0 = time.monotonic()
        if how == "sigkill":
            os.kill(kpid, signal.SIGKILL)
        elif how == "shutdown":
            km.shutdown_kernel(now=False)
        else:
            km.restart_kernel(now=False)
        left = wait_gone(pids, timeout=KERNEL_GONE_DEADLINE)
        took = time.monotonic() - t0
        report(f"kernel {how} -> its clusters gone", took)
        scanned = wait_cluster_gone(rp_dir, timeout=1)
        if how == "restart":
            assert not pid_alive(kpid)
            assert kernel_pid(km) != kpid
            kc.wait_for_ready(timeout=60)
            drain(kc)
            assert run(kc, "1 + 1", timeout=60).result()["text/plain"] == "2"
    finally:
        try:
            shutdown_and_check(km, kc)
        finally:
            stray = wait_gone(pids, timeout=1) + wait_cluster_gone(rp_dir, timeout=1)
            kill_pids(sorted(set(stray)))
            shutil.rmtree(rp_dir, ignore_errors=True)
    assert not left, f"cluster processes alive {KERNEL_GONE_DEADLINE}s after kernel {how}: {left}"
    assert not scanned, f"engine/controller processes of {rp_dir} still running: {scanned}"


# --------------------------------------------------------------------------
# 4. engine restarts (Cluster.restart_engines / restart_engine /
#    restart_engines=True)


def test_restart_engines(cluster):
    """``cluster.restart_engines()`` stops every engine and returns once n
    new ones registered: new ids (never reused), new processes, fresh
    namespaces; the old processes are gone."""
    c = cluster(3)
    fk = cluster.kernel
    kc = fk.kc
    ex = run(
        kc,
        "rc[:].push({'pushed': 7}, block=True)\n"
        "t0 = time.monotonic()\n"
        "cluster.restart_engines()\n"
        "took = time.monotonic() - t0\n"
        "deadline = time.monotonic() + 5\n"
        "while (len(rc.ids) != 3 or set(rc.ids) & {0, 1, 2}) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "new_ids = rc.ids\n"
        "assert len(new_ids) == 3 and not set(new_ids) & {0, 1, 2}, new_ids\n"
        "assert min(new_ids) > 2, new_ids\n"
        "new = rc[:]\n"
        "new_pids = new.apply_sync(os.getpid)\n"
        "try:\n"
        "    new.pull('pushed', block=True)\n"
        "except ipp.RemoteError as e:\n"
        "    errs = getattr(e, 'elist', [e])\n"
        "    assert len(errs) == 3 and all(x.ename == 'NameError' for x in errs), e\n"
        "else:\n"
        "    raise AssertionError('the new engines still have pushed')\n"
        "assert new.apply_sync(lambda: 6 * 7) == [42] * 3\n"
        "print(json.dumps({'took': took, 'ids': new_ids, 'pids': new_pids}))\n",
        timeout=90,
    )
    info = last_json(ex)
    report("restart_engines() of 3 engines", info["took"])
    fk.seen.update(info["pids"])
    assert not set(info["pids"]) & set(c.pids.values()), (info, c.pids)
    left = wait_gone(list(c.pids.values()), timeout=5)
    assert not left, f"old engines still alive after restart_engines(): {left}"
    # ids are never reused: a second restart gives yet newer ids
    ex = run(
        kc,
        "cluster.restart_engines()\n"
        "deadline = time.monotonic() + 5\n"
        "while (len(rc.ids) != 3 or set(rc.ids) & set(new_ids)) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "assert len(rc.ids) == 3 and min(rc.ids) > max(new_ids), (rc.ids, new_ids)\n"
        "assert rc[:].apply_sync(lambda: 1) == [1, 1, 1]\n"
        "print(json.dumps(rc[:].apply_sync(os.getpid)))\n",
        timeout=90,
    )
    fk.seen.update(last_json(ex))


def test_restart_engine(cluster):
    """``new_id = cluster.restart_engine(1)`` replaces engine 1 only: a new
    id, ``rc.ids`` has it and not 1; the new engine's namespace is fresh,
    the others keep theirs and their processes."""
    c = cluster(3)
    fk = cluster.kernel
    kc = fk.kc
    ex = run(
        kc,
        "rc[:].push({'pushed': 7}, block=True)\n"
        "t0 = time.monotonic()\n"
        "new_id = cluster.restart_engine(1)\n"
        "took = time.monotonic() - t0\n"
        "assert isinstance(new_id, int) and new_id not in (0, 1, 2), new_id\n"
        "deadline = time.monotonic() + 5\n"
        "while (1 in rc.ids or new_id not in rc.ids) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "assert rc.ids == [0, 2, new_id], (rc.ids, new_id)\n"
        "assert rc[[0, 2]].pull('pushed', block=True) == [7, 7]\n"
        "try:\n"
        "    rc[[new_id]].pull('pushed', block=True)\n"
        "except ipp.RemoteError as e:\n"
        "    errs = getattr(e, 'elist', [e])\n"
        "    assert [x.ename for x in errs] == ['NameError'], e\n"
        "else:\n"
        "    raise AssertionError('the replacement engine has the old namespace')\n"
        "pids = rc[[0, 2, new_id]].apply_sync(os.getpid)\n"
        "print(json.dumps({'took': took, 'new_id': new_id, 'pids': pids}))\n",
        timeout=60,
    )
    info = last_json(ex)
    report("restart_engine(1)", info["took"])
    fk.seen.update(info["pids"])
    assert info["pids"][:2] == [c.pids[0], c.pids[2]], (info, c.pids)
    assert info["pids"][2] not in c.pids.values(), (info, c.pids)
    assert not wait_gone([c.pids[1]], timeout=5), "engine 1's process is still alive"
    # again: ids are never reused
    ex = run(
        kc,
        "newer = cluster.restart_engine(new_id)\n"
        "assert newer > new_id, (newer, new_id)\n"
        "deadline = time.monotonic() + 5\n"
        "while (new_id in rc.ids or newer not in rc.ids) and time.monotonic() < deadline:\n"
        "    time.sleep(0.05)\n"
        "assert rc.ids == [0, 2, newer], rc.ids\n"
        "print(json.dumps(rc[[newer]].apply_sync(os.getpid)))\n",
        timeout=60,
    )
    fk.seen.update(last_json(ex))


def test_engines_restarted_after_sigkill(cluster):
    """``ipp.Cluster(n=2, restart_engines=True)``: engine 1 killed with
    work pending → that result fails with EngineError (engine 1, signal 9)
    as usual, and a replacement registers with a new id within seconds;
    killing the replacement gives another one."""
    c = cluster(2, restart_engines=True)
    fk = cluster.kernel
    kc = fk.kc
    run(kc, "ar = rc[[1]].apply_async(time.sleep, 30)\ntime.sleep(0.3)\nassert not ar.ready()\n")
    killed_at = kill9(c.pids[1])
    ex = run(
        kc,
        "try:\n"
        "    ar.get(20)\n"
        "except Exception as e:\n"
        "    err = e\n"
        "else:\n"
        "    raise AssertionError('ar.get() returned after the engine was killed')\n"
        "failed_at = time.monotonic()\n"
        "assert type(err).__name__ in ('EngineError', 'CompositeError'), repr(err)\n"
        "assert 'EngineError' in str(err) + type(err).__name__, str(err)\n"
        "assert 'Engine 1' in str(err) and 'signal 9' in str(err), str(err)\n"
        "rc.wait_for_engines(2, timeout=15)\n"
        "deadline = time.monotonic() + 15\n"
        "while (1 in rc.ids or len(rc.ids) != 2) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        "assert len(rc.ids) == 2 and 1 not in rc.ids, rc.ids\n"
        "replacement = max(rc.ids)\n"
        "assert rc.ids == [0, replacement] and replacement > 1, rc.ids\n"
        "rpid = rc[[replacement]].apply_sync(os.getpid)[0]\n"
        "assert rc[:].apply_sync(lambda: 1) == [1, 1]\n"
        "print(json.dumps({'replacement': replacement, 'pid': rpid}))\n",
        timeout=60,
    )
    recovered = ex.idle_at - killed_at
    report("restart_engines=True: kill -9 -> replacement registered and answered", recovered)
    info = last_json(ex)
    fk.seen.add(info["pid"])
    assert info["pid"] not in c.pids.values(), info
    assert recovered < 15, recovered

    killed_at = kill9(info["pid"])
    ex = run(
        kc,
        f"deadline = time.monotonic() + 15\n"
        f"while ({info['replacement']} in rc.ids or len(rc.ids) != 2) and time.monotonic() < deadline:\n"
        "    time.sleep(0.02)\n"
        f"assert len(rc.ids) == 2 and max(rc.ids) > {info['replacement']}, rc.ids\n"
        "print(json.dumps(rc[:].apply_sync(os.getpid)))\n",
        timeout=40,
    )
    report("restart_engines=True: second kill -> replacement", ex.idle_at - killed_at)
    pids = last_json(ex)
    fk.seen.update(pids)
    assert pids[0] == c.pids[0] and pids[1] not in (c.pids[1], info["pid"]), pids


# --------------------------------------------------------------------------
# 5. abort and timeouts (`%%px --timeout` is in test_px.py)


def test_abort_queued_tasks(cluster):
    """Requests queued behind a running ``time.sleep(1.5)`` are aborted —
    on one engine with ``view.abort()``, and across all engines with
    ``view.abort(jobs=ar)``: their ``get()`` raises TaskAborted (or an error
    saying aborted) as soon as the engine reaches them; none of them ran
    (an ``execute`` that would have appended to a list did not); the
    running task finishes normally and the engines keep working."""
    cluster(3)
    kc = cluster.kernel.kc
    ex = run(
        kc,
        "def aborted(err):\n"
        "    return 'abort' in (type(err).__name__ + str(err)).lower()\n"
        "rc[:].execute('ran = []', block=True)\n"
        "e = rc[0]\n"
        "slow = e.apply_async(time.sleep, 1.5)\n"
        "queued = [e.apply_async(lambda: 'ran') for _ in range(3)]\n"
        "queued += [e.execute('ran.append(%d)' % i, block=False) for i in range(3)]\n"
        "t0 = time.monotonic()\n"
        "e.abort(block=True)\n"
        "times = []\n"
        "for ar in queued:\n"
        "    try:\n"
        "        ar.get(10)\n"
        "    except Exception as err:\n"
        "        assert aborted(err), repr(err)\n"
        "        times.append(time.monotonic() - t0)\n"
        "    else:\n"
        "        raise AssertionError('a queued request ran after abort()')\n"
        "assert slow.get(10) is None\n"
        "slow_done = time.monotonic() - t0\n"
        "assert e.pull('ran', block=True) == [], 'an aborted execute ran'\n"
        "assert e.apply_sync(lambda: 'fine') == 'fine'\n"
        # across all engines, by AsyncResult
        "slow = dview.apply_async(time.sleep, 1.5)\n"
        "job = dview.execute('ran.append(99)', block=False)\n"
        "after = dview.apply_async(lambda: 'after')\n"
        "t1 = time.monotonic()\n"
        "dview.abort(jobs=job, block=True)\n"
        "try:\n"
        "    job.get(10)\n"
        "except Exception as err:\n"
        "    errs = getattr(err, 'elist', [err])\n"
        "    assert len(errs) == 3 and all(aborted(x) for x in errs), repr(err)\n"
        "else:\n"
        "    raise AssertionError('the aborted job ran')\n"
        "job_failed = time.monotonic() - t1\n"
        "assert after.get(10) == ['after'] * 3\n"
        "assert dview.pull('ran', block=True) == [[], [], []]\n"
        "print(json.dumps({'times': times, 'slow_done': slow_done, 'job_failed': job_failed}))\n",
        timeout=60,
    )
    info = last_json(ex)
    report("view.abort(): last aborted get() raised after", max(info["times"]))
    # aborted requests fail when the engine reaches them: right after the
    # running task, not after running anything
    assert max(info["times"]) < info["slow_done"] + 1.0, info
    assert max(info["times"]) < 4.0 and info["job_failed"] < 4.0, info


def test_async_result_abort(cluster):
    """``ar.abort()`` aborts that result's tasks that have not started
    (on one engine and on several): their ``get()`` raises the aborted
    error, nothing of them ran, and work submitted before or after is not
    affected."""
    cluster(2)
    kc = cluster.kernel.kc
    run(
        kc,
        "def aborted(err):\n"
        "    return 'abort' in (type(err).__name__ + str(err)).lower()\n"
        "rc[:].execute('ran = []', block=True)\n"
        "e = rc[0]\n"
        "slow = e.apply_async(time.sleep, 1)\n"
        "target = e.execute('ran.append(1)', block=False)\n"
        "keep = e.execute('ran.append(2)', block=False)\n"
        "target.abort()\n"
        "try:\n"
        "    target.get(10)\n"
        "except Exception as err:\n"
        "    assert aborted(err), repr(err)\n"
        "else:\n"
        "    raise AssertionError('the aborted task ran')\n"
        "keep.get(10)\n"
        "assert e.pull('ran', block=True) == [2]\n"
        "slow = dview.apply_async(time.sleep, 1)\n"
        "many = dview.execute('ran.append(3)', block=False)\n"
        "many.abort()\n"
        "try:\n"
        "    many.get(10)\n"
        "except Exception as err:\n"
        "    errs = getattr(err, 'elist', [err])\n"
        "    assert len(errs) == 2 and all(aborted(x) for x in errs), repr(err)\n"
        "else:\n"
        "    raise AssertionError('the aborted tasks ran')\n"
        "assert slow.get(10) == [None, None]\n"
        "assert dview.apply_sync(lambda: 'after') == ['after', 'after']\n"
        "assert dview.pull('ran', block=True) == [[2], []]\n",
        timeout=60,
    )


def test_execute_timeout_interrupts_engines(cluster):
    """``dview.execute(code, block=True, timeout=1)``: after 1 s the engines
    still running are interrupted and the call raises (KeyboardInterrupt per
    engine, or a timeout error) within ~3 s; engines that finished in time
    are not interrupted; the engines stay usable with their namespaces."""
    cluster(3)
    kc = cluster.kernel.kc
    ex = run(
        kc,
        "for i in rc.ids:\n"
        "    rc[[i]].push({'rank': i}, block=True)\n"
        "def timed_out(code):\n"
        "    t0 = time.monotonic()\n"
        "    try:\n"
        "        dview.execute(code, block=True, timeout=1)\n"
        "    except Exception as err:\n"
        "        text = type(err).__name__ + ' ' + str(err)\n"
        "        errs = getattr(err, 'elist', [])\n"
        "        return time.monotonic() - t0, text, [x.engine_info.get('engine_id') for x in errs]\n"
        "    raise AssertionError('execute(timeout=1) of a 30 s sleep returned')\n"
        "took, text, engines = timed_out('import time; time.sleep(30)')\n"
        "low = text.lower()\n"
        "assert 'keyboardinterrupt' in low or 'timed out' in low or 'timeout' in low, text\n"
        "if engines:\n"
        "    assert engines == [0, 1, 2], (engines, text)\n"
        "t1 = time.monotonic()\n"
        "assert dview.pull('rank', block=True) == [0, 1, 2]\n"
        "pull_took = time.monotonic() - t1\n"
        "took2, text2, engines2 = timed_out('import time; time.sleep(30 if rank == 1 else 0.1)')\n"
        "if engines2:\n"
        "    assert engines2 == [1], (engines2, text2)\n"
        "fast = dview.execute('z = rank * 2', block=True, timeout=5)\n"
        "assert dview.pull('z', block=True) == [0, 2, 4]\n"
        "print(json.dumps({'took': took, 'took2': took2, 'pull': pull_took}))\n",
        timeout=60,
    )
    info = last_json(ex)
    report("execute(timeout=1) of a 30 s sleep raised after", info["took"])
    assert 0.9 <= info["took"] < 3.0, info
    assert 0.9 <= info["took2"] < 3.0, info
    assert info["pull"] < 2.0, info
