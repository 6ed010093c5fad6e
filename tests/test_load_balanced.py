"""`rc.load_balanced_view()` through jupyter_client in the rparallel
kernel, on a 4-engine cluster the kernel starts: tasks go to whichever
engine is free (the controller's scheduler), uneven work spreads out, an
engine killed mid-map fails only its task (or its task runs again with
`retries`), `targets` restricts, and bad input is a clear error."""

from __future__ import annotations

import pytest

from kernel_helpers import IS_RPARALLEL, execute, execute_ok, value

pytestmark = pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own cluster")

START = """
import os, random, signal, time
import rparallel as ipp
c = ipp.Cluster(n=4)
rc = c.start_and_connect_sync()
lv = rc.load_balanced_view()
"""


@pytest.fixture
def lb(kc):
    """A kernel with `c` (4 engines), `rc` and `lv`; stopped afterwards."""
    execute_ok(kc, START, timeout=60)
    yield kc
    execute(kc, "c.stop_cluster_sync()", timeout=30)


def test_apply_and_map(lb):
    """apply (value, AsyncResult, blocking flag), map in chunks, results in
    order, the repr."""
    assert value(lb, "lv.apply_sync(lambda x: x + 1, 41)") == 42
    assert value(lb, "lv.apply_async(pow, 2, 10).get(timeout=10)") == 1024
    assert value(lb, "repr(lv)") == "<LoadBalancedView None>"
    assert value(lb, "lv.map(lambda x: x * x, range(10), chunksize=3).get()") == [
        x * x for x in range(10)
    ]
    assert value(lb, "lv.map_sync(lambda a, b: a - b, range(7), range(0, 14, 2))") == [
        a - b for a, b in zip(range(7), range(0, 14, 2))
    ]
    assert value(lb, "lv.set_flags(block=True)\nlv.apply(lambda: 'blocked')") == "blocked"


def test_iteration_in_order_or_first_come(lb):
    """Iterating a map's result yields the items in order, or with
    `ordered=False` as their tasks finish; `get()` is in order either way."""
    got = value(
        lb,
        """
slow_first = [0.6, 0.4, 0.2, 0.0]
f = lambda d: (time.sleep(d), d)[1]
in_order = list(lv.map(f, slow_first))
first_come = list(lv.map(f, slow_first, ordered=False))
[in_order, first_come, lv.map(f, slow_first, ordered=False).get()]
""",
    )
    assert got == [[0.6, 0.4, 0.2, 0.0], [0.0, 0.2, 0.4, 0.6], [0.6, 0.4, 0.2, 0.0]]


def test_imap_over_an_endless_generator(lb):
    """`imap` over `itertools.count()`: results in order, never more than
    `max_outstanding` tasks ahead; `cancel()` stops it after the tasks
    already sent; first-come with `ordered=False`; a bad bound is a
    ValueError."""
    got = value(
        lb,
        """
import itertools
it = lv.imap(lambda x: x * 2, itertools.count(), max_outstanding=5)
first, most = [], 0
for _ in range(20):
    first.append(next(it))
    most = max(most, it.outstanding)
it.cancel()
rest = list(it)
unordered = sorted(lv.imap(lambda x: x + 1, range(10), ordered=False))
[first, most, len(rest) <= 5, rest == [2 * x for x in range(20, 20 + len(rest))], unordered]
""",
    )
    assert got[0] == [2 * x for x in range(20)]
    assert got[1] <= 5 and got[2] is True and got[3] is True, got
    assert got[4] == list(range(1, 11))
    out = execute(lb, "lv.imap(abs, range(3), max_outstanding=-1)")
    assert out.status == "error" and out.error()["ename"] == "ValueError", out.summary()


def test_uneven_tasks_spread_over_the_engines(lb):
    """300 tasks of 0–20 ms each (seeded): done in close to total work /
    engines, and every engine took some."""
    got = value(
        lb,
        """
random.seed(7)
durations = [random.random() * 0.02 for _ in range(300)]
t = time.perf_counter()
pids = lv.map_sync(lambda d: (time.sleep(d), os.getpid())[1], durations)
[time.perf_counter() - t, sum(durations) / 4, len(set(pids))]
""",
        timeout=60,
    )
    elapsed, ideal, engines = got
    print(f"300 uneven tasks: {elapsed:.3f} s, ideal {ideal:.3f} s")
    assert engines == 4
    assert elapsed < ideal * 1.5 + 0.3, got


def test_engine_killed_mid_map_fails_only_its_task(lb):
    """kill -9 of an engine during a map: the map ends with one EngineError
    naming that engine, the other tasks' results are there; with
    `retries=1` the same map completes on the others."""
    got = value(
        lb,
        """
pids = rc[:].apply_sync(os.getpid)
ar = lv.map(lambda x: (time.sleep(0.05), x)[1], range(40))
time.sleep(0.2)
os.kill(pids[2], signal.SIGKILL)
try:
    ar.get(timeout=30)
    failed = None
except ipp.CompositeError as e:
    failed = [type(x).__name__ + ': ' + str(x) for x in e.elist] if hasattr(e, 'elist') else str(e)
str(failed)
""",
        timeout=60,
    )
    assert "EngineError" in got and "Engine 2 died" in got, got
    assert got.count("EngineError") == 1, got
    retried = value(
        lb,
        """
lv.set_flags(retries=1)
ar = lv.map(lambda x: (time.sleep(0.05), x)[1], range(40))
time.sleep(0.2)
os.kill(pids[1], signal.SIGKILL)
ar.get(timeout=30) == list(range(40))
""",
        timeout=60,
    )
    assert retried is True


def test_targets_restrict_the_engines(lb):
    """`load_balanced_view(targets=[0])`: every task on engine 0; targets
    naming no live engine raise NoEnginesRegistered at once."""
    got = value(
        lb,
        """
v0 = rc.load_balanced_view(targets=[0])
pid0 = rc[0].apply_sync(os.getpid)
[set(v0.map_sync(lambda x: os.getpid(), range(12))) == {pid0}, repr(v0)]
""",
    )
    assert got == [True, "<LoadBalancedView [0]>"]
    out = execute(lb, "rc.load_balanced_view(targets=[99]).apply_sync(lambda: 1)")
    assert out.status == "error"
    assert out.error()["ename"] in ("NoEnginesRegistered", "IndexError", "KeyError"), out.error()


@pytest.mark.parametrize(
    "code, ename, needle",
    [
        ("lv.map(lambda x: x, range(3), chunksize=0)", "ValueError", "chunksize"),
        ("lv.apply_sync(42)", "TypeError", "callable"),
        ("import threading; lv.apply_sync(lambda l: 1, threading.Lock())", None, "pickle"),
        ("lv.set_flags(bogus=1)", "KeyError", "bogus"),
    ],
)
def test_bad_input_is_a_clear_error(lb, code, ename, needle):
    out = execute(lb, code)
    assert out.status == "error", out.summary()
    err = out.error()
    if ename:
        assert err["ename"] == ename, err
    assert needle in (err["ename"] + err["evalue"]).lower(), err
    # and the view still works
    assert value(lb, "lv.apply_sync(lambda: 'ok')") == "ok"


def test_a_short_task_is_not_held_behind_a_long_one(lb):
    """With every engine busy, the next tasks wait on the engines
    (prefetched); one stuck behind a long task is taken back as soon as
    another engine is free: four quick tasks all finish long before the
    3 s task ends."""
    got = value(
        lb,
        """
t0 = time.time()
busy = [lv.apply_async(time.sleep, 3)] + [lv.apply_async(time.sleep, 0.3) for _ in range(3)]
time.sleep(0.1)
quick = [lv.apply_async(lambda: time.time()) for _ in range(4)]
ends = [q.get(timeout=10) - t0 for q in quick]
[b.get(timeout=10) for b in busy]
[max(ends), time.time() - t0]
""",
        timeout=60,
    )
    latest_quick, total = got
    print(f"quick tasks done by {latest_quick:.2f} s; the long one by {total:.2f} s")
    assert latest_quick < 1.5, got
    assert total >= 3.0, got
