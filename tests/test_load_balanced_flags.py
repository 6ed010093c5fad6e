"""The flags and the rest of `rc.load_balanced_view()`'s API through
jupyter_client in the rparallel kernel, on a 4-engine cluster the kernel
starts (ipyparallel 9's semantics, docs/source/tutorial/task.md and
`LoadBalancedView` in ipyparallel/client/view.py):

- `timeout` (how long a task may wait in the scheduler's queue before it
  fails with TaskTimeout; a task that started is not affected), `retries`
  (a task that raised runs again on another engine), `label`, unknown
  flags (KeyError), `set_flags` returning the view and `temp_flags`
  restoring the flags even when its block raises;
- `@lv.parallel()` and `@lv.remote()`;
- the executors `lv.executor` and `rc.executor()`
  (`concurrent.futures.Executor`: submit, map, wait, as_completed, `with`);
- `lv.activate()` (`%px` and `%%px` on one engine) and `lv.execute`;
- the scheduler's schemes (`Cluster(scheme=...)`) and `hwm`;
- 1,000 uneven tasks iterated first-come (`ordered=False`) in close to
  total work ÷ engines.

Every wait has a timeout; results come back as JSON through `value()`."""

from __future__ import annotations

import os
import re
import time
from queue import Empty

import pytest

from balanced_helpers import TIMED_OUT, balanced_cluster
from kernel_helpers import IS_RPARALLEL, execute, execute_ok, pids_with_cmdline, start_cell, value

pytestmark = pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own cluster")


VALUE_ERROR = ["error", "ValueError", ["RemoteError"]]

SCHEMES = ["lru", "plainrandom", "twobin", "weighted", "leastload", "pure"]


@pytest.fixture
def lb(kc):
    """A kernel with `c` (4 engines), `rc`, `lv`, `pids` (the engines'
    pids by id) and `outcome()`; the cluster is stopped after."""
    yield from balanced_cluster(kc)


# --------------------------------------------------------------------------
# 1. flags


def test_timeout_fails_a_task_left_in_the_queue(lb):
    """With all 4 engines busy for 1.5 s, a task with `timeout=0.2` fails
    with TaskTimeout after about 0.2 s, long before an engine is free; the
    busy tasks finish; a task that starts at once is not affected by its
    timeout even though it runs longer (0.6 s)."""
    got = value(
        lb,
        """
sleepers = [lv.apply_async(time.sleep, 1.5) for _ in range(4)]
time.sleep(0.3)
t0 = time.monotonic()
with lv.temp_flags(timeout=0.2):
    late = lv.apply_async(lambda: 'late')
res = outcome(late, 5)
took = time.monotonic() - t0
slept = [s.get(timeout=5) for s in sleepers]
with lv.temp_flags(timeout=0.2):
    longer = lv.apply_async(lambda: (time.sleep(0.6), 'finished')[1])
[res, round(took, 3), slept, outcome(longer, 5), lv.apply_async(lambda: 'after').get(timeout=5)]
""",
        timeout=30,
    )
    res, took, slept, longer, after = got
    assert res == TIMED_OUT, got
    assert 0.15 <= took < 0.9, f"TaskTimeout after {took} s (timeout 0.2 s, engines busy for 1.2 s more)"
    assert slept == [None] * 4 and longer == ["ok", "finished"] and after == "after", got


def test_retries_run_a_failed_task_again_elsewhere(lb):
    """A task that raises on its first two attempts (each attempt leaves a
    file named by its engine's pid): with `retries=2` it succeeds on the
    third, the three attempts on three different engines; with
    `retries=1` it fails after two attempts with the original ValueError;
    without retries after one."""
    got = value(
        lb,
        """
def flaky(d, needed):
    import os, uuid
    n = len(os.listdir(d))
    open(os.path.join(d, '%d-%s' % (os.getpid(), uuid.uuid4().hex)), 'w').close()
    if n < needed:
        raise ValueError('attempt %d fails' % (n + 1))
    return n + 1
def attempts(d):
    return [int(f.split('-')[0]) for f in os.listdir(d)]
d2, d1, d0 = tempfile.mkdtemp(), tempfile.mkdtemp(), tempfile.mkdtemp()
with lv.temp_flags(retries=2):
    ok = lv.apply_async(flaky, d2, 2)
with lv.temp_flags(retries=1):
    short = lv.apply_async(flaky, d1, 2)
none = lv.apply_async(flaky, d0, 1)
res = [outcome(ok), outcome(short), outcome(none)]
[res, [len(attempts(d)) for d in (d2, d1, d0)], [len(set(attempts(d))) for d in (d2, d1, d0)], lv.retries]
""",
        timeout=30,
    )
    assert got[0] == [["ok", 3], VALUE_ERROR, VALUE_ERROR], got
    assert got[1] == [3, 2, 1] and got[2] == [3, 2, 1], got
    assert got[3] == 0, got


def test_label_set_flags_and_temp_flags(lb):
    """`set_flags` returns the view; `label` is a flag; `temp_flags` sets
    flags inside its block and puts every flag back after, even when the
    block raises; tasks still run after."""
    got = value(
        lb,
        """
def flags():
    return [lv.block, lv.retries, lv.label, lv.timeout, lv.after, lv.follow]
saved = flags()
caught = None
try:
    with lv.temp_flags(block=True, retries=3, label='tmp', timeout=2):
        inside = [lv.block, lv.retries, lv.label, lv.timeout]
        raise RuntimeError('boom')
except RuntimeError as e:
    caught = str(e)
restored = flags() == saved
same = lv.set_flags(label='x') is lv
labelled = lv.apply_async(lambda: 'labelled').get(timeout=10)
chained = lv.set_flags(block=True).apply(lambda: 'chained')
lv.set_flags(block=False)
[inside, caught, restored, same, lv.label, labelled, chained, saved[:2]]
""",
        timeout=30,
    )
    assert got == [[True, 3, "tmp", 2], "boom", True, True, "x", "labelled", "chained",
                   [False, 0]], got


def test_unknown_flag_is_a_key_error(lb):
    """`lv.set_flags(bogus=1)` raises KeyError naming the flag (as
    ipyparallel's View.set_flags), and the view still works."""
    out = execute(lb, "lv.set_flags(bogus=1)")
    assert out.status == "error", out.summary()
    err = out.error()
    assert err["ename"] == "KeyError" and "bogus" in err["evalue"], err
    assert value(lb, "lv.apply_async(lambda: 'ok').get(timeout=10)") == "ok"


@pytest.mark.parametrize(
    "flags",
    ["timeout=-1", "after=42", "follow=[1.5]"],
)
def test_bad_flag_values_are_value_errors(lb, flags):
    """A negative timeout and dependencies that are not msg_ids,
    AsyncResults or Dependency objects are ValueErrors (ipyparallel's
    LoadBalancedView.set_flags)."""
    out = execute(lb, f"lv.set_flags({flags})")
    assert out.status == "error", out.summary()
    assert out.error()["ename"] == "ValueError", out.error()
    assert value(lb, "lv.apply_async(lambda: 'ok').get(timeout=10)") == "ok"


# --------------------------------------------------------------------------
# 2. decorators


def test_parallel_and_remote_decorators(lb):
    """`@lv.parallel(block=True)`: `f.map(range(10))` returns the results in
    order; `@lv.parallel()` (the view's block, False) returns an
    AsyncResult whose `get` gives them; `@lv.remote(block=True)` makes a
    function that runs on an engine when called, with its arguments."""
    got = value(
        lb,
        """
@lv.parallel(block=True)
def square(x):
    return x * x
@lv.parallel()
def cube(x):
    return x ** 3
@lv.remote(block=True)
def where(a, b=0):
    import os
    return [a + b, os.getpid()]
cubes = cube.map(range(10))
r = where(2, b=3)
[square.map(range(10)), hasattr(cubes, 'get'), cubes.get(timeout=10) if hasattr(cubes, 'get') else cubes, r[0], r[1] in pids]
""",
        timeout=30,
    )
    assert got == [[x * x for x in range(10)], True, [x ** 3 for x in range(10)], 5, True], got


# --------------------------------------------------------------------------
# 3. executors


def test_executors(lb):
    """`lv.executor` and `rc.executor()` are concurrent.futures Executors:
    `submit` gives futures that `concurrent.futures.wait` and
    `as_completed` accept, `.result(timeout)` the value and `.exception()`
    the engine's error; `map` yields in order though later items finish
    first; `rc.executor(targets=[1])` runs on engine 1 only; leaving
    `with rc.executor() as ex:` waits for what was submitted."""
    got = value(
        lb,
        """
import concurrent.futures as cf
ex = lv.executor
slow_first = lambda x: (time.sleep(0.03 * (5 - x)), x * x)[1]
futs = [ex.submit(slow_first, x) for x in range(5)]
done, not_done = cf.wait(futs, timeout=10)
completed = sorted(f.result(timeout=1) for f in cf.as_completed(futs, timeout=10))
results = [f.result(timeout=1) for f in futs]
mapped = list(ex.map(slow_first, range(5)))
exc = ex.submit(lambda: 1 / 0).exception(timeout=10)
with rc.executor(targets=[1]) as e1:
    on1 = set(e1.map(lambda _: (time.sleep(0.01), os.getpid())[1], range(6)))
with rc.executor() as ex2:
    plus = list(ex2.map(lambda x: x + 1, range(20)))
    last = ex2.submit(time.sleep, 0.3)
out = [isinstance(ex, cf.Executor), isinstance(ex2, cf.Executor), len(done), len(not_done),
       completed, results, mapped, getattr(exc, 'ename', repr(exc)),
       isinstance(exc, ipp.error.RemoteError), on1 == {pids[1]}, plus, last.done()]
out
""",
        timeout=30,
    )
    squares = [x * x for x in range(5)]
    assert got[0:4] == [True, True, 5, 0], got
    assert got[4] == squares and got[5] == squares and got[6] == squares, got
    assert got[7] == "ZeroDivisionError" and got[8] is True, got
    assert got[9] is True, got
    assert got[10] == list(range(1, 21)) and got[11] is True, got


# --------------------------------------------------------------------------
# 4. activate and execute


def test_activate_px_and_execute_on_one_engine(lb):
    """After `lv.activate()` (with `lv.block = True`), a `%px` line and a
    `%%px` cell each run on exactly one engine (one pid printed, one of the
    engines'); `lv.execute('a = 5', block=True)` sets `a` on one engine
    only."""
    pids = value(lb, "pids")
    execute_ok(lb, "lv.block = True\nlv.activate()")
    ex = execute_ok(lb, "%px import os; print('PID', os.getpid())", timeout=20)
    found = [int(p) for p in re.findall(r"PID (\d+)", ex.stdout)]
    assert len(found) == 1 and found[0] in pids, (found, pids, ex.summary())
    ex = execute_ok(lb, "%%px\nimport os\nprint('PID', os.getpid())\n", timeout=20)
    found = [int(p) for p in re.findall(r"PID (\d+)", ex.stdout)]
    assert len(found) == 1 and found[0] in pids, (found, pids, ex.summary())
    got = value(
        lb,
        "rc[:].execute('a = 0', block=True)\n"
        "lv.execute('a = 5', block=True)\n"
        "sorted(rc[:].pull('a', block=True))",
    )
    assert got == [0, 0, 0, 5], got


# --------------------------------------------------------------------------
# 5. schemes and hwm


def test_schemes_and_hwm(kc):
    """Each scheduler scheme (lru, plainrandom, twobin, weighted, leastload,
    pure) and `hwm` 0 and 2, each on its own 3-engine cluster: a map of
    50 squares is right and 50 tasks of 10 ms use more than one engine;
    an unknown scheme is a ValueError naming the valid ones."""
    got = value(
        kc,
        f"""
import os, time
import rparallel as ipp
out = {{}}
for label, opts in [(s, dict(scheme=s)) for s in {SCHEMES!r}] + [('hwm=0', dict(hwm=0)), ('hwm=2', dict(hwm=2))]:
    cl = ipp.Cluster(n=3, **opts)
    rcx = cl.start_and_connect_sync()
    try:
        v = rcx.load_balanced_view()
        squares = v.map_async(lambda x: x * x, range(50)).get(timeout=20)
        used = v.map_async(lambda x: (time.sleep(0.01), os.getpid())[1], range(50)).get(timeout=20)
        out[label] = [squares == [x * x for x in range(50)], len(set(used))]
    finally:
        cl.stop_cluster_sync()
out
""",
        timeout=120,
    )
    assert sorted(got) == sorted(SCHEMES + ["hwm=0", "hwm=2"]), got
    for label, (right, engines) in got.items():
        assert right is True, (label, got)
        assert engines > 1, (label, got)
    out = execute(kc, "ipp.Cluster(n=1, scheme='nope').start_and_connect_sync()", timeout=30)
    assert out.status == "error", out.summary()
    err = out.error()
    assert err["ename"] == "ValueError", err
    assert "nope" in err["evalue"] and all(s in err["evalue"] for s in SCHEMES), err


# --------------------------------------------------------------------------
# 6. many uneven tasks, first-come


def test_thousand_uneven_tasks_first_come(lb):
    """1,000 tasks of 0–20 ms (seeded) iterated with `ordered=False`: every
    result arrives once, not in submission order, on all 4 engines, in
    close to total work ÷ 4."""
    got = value(
        lb,
        """
random.seed(11)
durations = [random.random() * 0.02 for _ in range(1000)]
t = time.perf_counter()
seen, used = [], set()
for pid, d in lv.map(lambda d: (time.sleep(d), (os.getpid(), d))[1], durations, ordered=False):
    seen.append(d)
    used.add(pid)
elapsed = time.perf_counter() - t
[elapsed, sum(durations) / 4, len(seen), sorted(seen) == sorted(durations), seen != durations, len(used)]
""",
        timeout=60,
    )
    elapsed, ideal, n, same, reordered, engines = got
    print(f"1000 uneven tasks, first-come: {elapsed:.3f} s, ideal {ideal:.3f} s")
    assert n == 1000 and same is True and reordered is True, got
    assert engines == 4, got
    assert elapsed < ideal * 1.5 + 0.5, got


def _rss_mb(pid: int) -> float:
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_a_flood_of_tasks_is_held_back_by_the_client(kc):
    """50,000 tasks of 8 KB each (400 MB if they all piled up somewhere)
    submitted at once to 2 engines: the client sends at most its credit
    (10,000 requests) ahead, so the controller and the engines together
    grow by far less than that while the flood runs, and every result
    arrives."""
    execute_ok(
        kc,
        """
import os, rparallel as ipp
c = ipp.Cluster(n=2, hwm=0)
rc = c.start_and_connect_sync()
lv = rc.load_balanced_view()
pids = rc[:].apply_sync(os.getpid)
payload = b"x" * 8192
""",
        timeout=60,
    )
    try:
        controller = pids_with_cmdline("controller --profile " + value(kc, "c.profile"))
        assert len(controller) == 1, controller
        pids = controller + value(kc, "pids")
        base = sum(_rss_mb(p) for p in pids)
        ex = start_cell(kc, "ar = lv.map_async(lambda b: len(b), [payload] * 50_000)\nsum(ar.get()) == 8192 * 50_000")
        peak = base
        peaks = {p: _rss_mb(p) for p in pids}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = {p: _rss_mb(p) for p in pids if os.path.exists(f"/proc/{p}")}
            peak = max(peak, sum(now.values()))
            peaks = {p: max(peaks[p], now.get(p, 0)) for p in pids}
            try:
                msg = kc.get_iopub_msg(timeout=0.05)
            except Empty:
                continue
            ex.iopub.append(msg)
            if (msg["parent_header"].get("msg_id") == ex.msg_id and msg["msg_type"] == "status"
                    and msg["content"]["execution_state"] == "idle"):
                break
        results = [m for m in ex.iopub if m["msg_type"] in ("execute_result", "error")]
        assert results and results[-1]["msg_type"] == "execute_result", results
        assert results[-1]["content"]["data"]["text/plain"] == "True"
        print(f"controller + engines: {base:.0f} MB before, {peak:.0f} MB at most")
        # The credit bounds what is in flight: 10,000 × 8 KB = 80 MB, each
        # request held at up to four places at once (the controller's
        # socket buffer and queue, the engine's socket buffer and queue):
        # 320 MB, plus the allocator's slack (measured 160–325 MB, before
        # and after the task record came). Without the credit the whole
        # 400 MB would pile up in the controller, with its copies: > 800 MB.
        assert peak - base < 360, (base, peak, peaks)
    finally:
        execute(kc, "c.stop_cluster_sync()", timeout=30)
