"""The rest of the Client's and AsyncResult's API, through jupyter_client in
the rparallel kernel, on a 3-engine cluster the kernel starts with
`rparallel.Cluster(n=3)`. Written from ipyparallel 9's documentation (the
docstrings of `Client`, `AsyncResult`, `Metadata` and `ExecuteReply` in
ipyparallel/client/{client,asyncresult}.py):

- Client: `len`, iteration (one single-engine view per engine), `rc[-1]`,
  `rc[99]`, `direct_view('all')`, `outstanding`, `history`, `wait` with
  every kind of job (AsyncResult, msg_id, index into history, Future),
  `wait_interactive`, `wait_for_engines(block=False)`, `queue_status`,
  `clear`, `send_signal` (SIGINT by name and number, bad signals, SIGTERM
  stopping an engine), `broadcast_view`, the constructor's keywords
  (`bogus=` a TypeError, `cluster_id=`), `with Client(...)`, the purges;
- AsyncResult: `metadata` (every key, its timestamps, captured stdout,
  stderr, display outputs, the error, execute_result), attribute and item
  access to metadata, `get_dict`, `len`, indexing and slicing, `split` and
  `join`, `get(return_exceptions=True)`, `return_when=FIRST_EXCEPTION` for
  `wait` and `get`, `wall_time`/`serial_time`/`elapsed`, `await`, tracked
  sends (`wait_for_send`, `sent`), and `execute(silent=False)`'s
  ExecuteReply objects.

One kernel and one cluster for the module; the SIGTERM test uses a cluster
of its own. Values come back as JSON through `value()`; every wait has a
timeout.
"""

from __future__ import annotations


import pytest

from api_helpers import KERNEL_HELPERS, cluster_in, value

from kernel_helpers import (
    IS_RPARALLEL,
    drain,
    execute,
    execute_ok,
    pid_alive,
    wait_pid_gone,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(120),
]

N = 3




START = f"""
import asyncio, concurrent.futures, datetime, json, os, signal, sys, time
from concurrent.futures import FIRST_EXCEPTION
import rparallel as ipp
c = ipp.Cluster(n={N})
rc = c.start_and_connect_sync()
rc.wait_for_engines({N}, timeout=30)
ids = rc.ids
pids = rc[:].apply_sync(os.getpid)

def ename(e):
    '''The remote exception's name of a RemoteError, else the class name.'''
    return getattr(e, 'ename', None) or type(e).__name__

{KERNEL_HELPERS}
def secs(a, b):
    return (b - a).total_seconds()
"""


@pytest.fixture(scope="module")
def cluster_kc(shared_kernel):
    """The module's kernel with `c` ({N} engines), `rc`, `ids`, `pids` (the
    engines' pids by position) and the helpers of START; after the module
    the cluster is stopped and its engines checked gone."""
    with cluster_in(shared_kernel[1], START, N) as kc:
        yield kc


@pytest.fixture
def k(cluster_kc):
    """The module's kernel, drained, with nothing outstanding and all
    {N} engines answering."""
    drain(cluster_kc)
    execute_ok(
        cluster_kc,
        "assert rc.wait(timeout=30), rc.outstanding\n"
        "assert rc.ids == ids, (rc.ids, ids)\n"
        "assert rc[:].apply_sync(os.getpid) == pids\n",
        timeout=60,
    )
    return cluster_kc


# --------------------------------------------------------------------------
# 1. the Client as a container of engines


def test_len_iteration_and_indexing(k):
    """`len(rc)` is the number of engines; `list(rc)` one single-engine view
    per engine (apply gives a scalar, that engine's pid); `rc[-1]` the last
    engine; `rc[99]` an IndexError; `rc.direct_view('all')` every engine."""
    got = value(
        k,
        """
views = list(rc)
[len(rc), len(views), [v.apply_sync(os.getpid) for v in views],
 rc[-1].apply_sync(os.getpid), raised(lambda: rc[99]),
 rc.direct_view('all').apply_sync(os.getpid), pids, ids]
""",
    )
    n, nviews, each, last, bad, every, pids, ids = got
    assert n == N and nviews == N, got
    assert each == pids, f"list(rc) views gave {each}, engines are {pids}"
    assert last == pids[-1], got
    assert bad is not None and bad[0] == "IndexError", f"rc[99] raised {bad}"
    assert every == pids, got
    assert ids == list(range(N)), ids


# --------------------------------------------------------------------------
# 2. outstanding, history, wait


def test_outstanding_and_history(k):
    """`rc.outstanding` is a set holding the msg_id of a running `sleep`
    and is empty once it finished; `rc.history` lists msg_ids in the order
    they were submitted, the new ones last."""
    got = value(
        k,
        """
ar = rc[0].apply_async(time.sleep, 1)
ar2 = rc[:].apply_async(os.getpid)
during = rc.outstanding
kind = type(during).__name__
had = set(ar.msg_ids) <= set(during)
hist = list(rc.history)
tail = hist[-(len(ar.msg_ids) + len(ar2.msg_ids)):]
ar.get(timeout=10); ar2.get(timeout=10)
after = rc.outstanding
[kind, had, tail == ar.msg_ids + ar2.msg_ids, len(ar2.msg_ids), sorted(after), ar.msg_ids[0] in rc.history]
""",
    )
    kind, had, in_order, n2, after, still = got
    assert kind == "set", f"rc.outstanding is a {kind}, expected a set"
    assert had, "the running sleep's msg_id was not in rc.outstanding"
    assert in_order, "rc.history does not end with the new msg_ids in submission order"
    assert n2 == N, got
    assert after == [], f"rc.outstanding after the work finished: {after}"
    assert still, "a finished msg_id left rc.history"


def test_wait_on_every_kind_of_job(k):
    """`rc.wait(job, timeout)` is False while the job runs and True once it
    finished, for an AsyncResult, a msg_id, an index into `rc.history`
    (-1) and a Future from `rc.executor().submit`; and a list of them."""
    got = value(
        k,
        """
res = {}
ar = rc[0].apply_async(time.sleep, 0.6)
res['ar'] = [rc.wait(ar, timeout=0.1), rc.wait(ar, timeout=5), ar.ready()]
ar = rc[1].apply_async(time.sleep, 0.6)
res['msg_id'] = [rc.wait(ar.msg_ids[0], timeout=0.1), rc.wait(ar.msg_ids[0], timeout=5), ar.ready()]
ar = rc[2].apply_async(time.sleep, 0.6)
res['index'] = [rc.wait(-1, timeout=0.1), rc.wait(-1, timeout=5), ar.ready()]
ex = rc.executor()
f = ex.submit(time.sleep, 0.6)
res['future'] = [rc.wait(f, timeout=0.1), rc.wait(f, timeout=5), f.done()]
a = rc[0].apply_async(time.sleep, 0.6)
b = rc[1].apply_async(time.sleep, 0.3)
g = ex.submit(time.sleep, 0.3)
res['list'] = [rc.wait([a, b.msg_ids[0], g], timeout=0.1), rc.wait([a, b.msg_ids[0], g], timeout=5),
               a.ready(), b.ready(), g.done()]
res
""",
    )
    expected = [False, True, True]
    for kind in ("ar", "msg_id", "index", "future"):
        assert got[kind] == expected, f"rc.wait({kind}): [timeout 0.1, timeout 5, done] = {got[kind]}"
    assert got["list"] == [False, True, True, True, True], got["list"]


def test_wait_interactive(k):
    """`rc.wait_interactive(jobs, interval=0.1)` returns once the jobs are
    done (not before)."""
    got = value(
        k,
        """
ars = [rc[i].apply_async(time.sleep, 0.5) for i in ids]
t0 = time.monotonic()
rc.wait_interactive(ars, interval=0.1)
took = time.monotonic() - t0
[round(took, 3), [a.ready() for a in ars]]
""",
    )
    took, ready = got
    assert ready == [True] * N, got
    assert 0.3 <= took < 5, f"wait_interactive returned after {took} s for 0.5 s sleeps"


def test_wait_for_engines_nonblocking(k):
    """`rc.wait_for_engines(n, block=False)` returns a
    concurrent.futures.Future: done (result None) when n engines are there;
    for more engines than exist it is pending and fails with a TimeoutError
    after its timeout."""
    got = value(
        k,
        f"""
f = rc.wait_for_engines({N}, block=False)
g = rc.wait_for_engines({N + 2}, block=False, timeout=0.5)
pending = not g.done()
exc = g.exception(timeout=10)
[isinstance(f, concurrent.futures.Future), f.result(timeout=5), isinstance(g, concurrent.futures.Future),
 pending, type(exc).__name__, isinstance(exc, (TimeoutError, ipp.error.TimeoutError))]
""",
    )
    assert got == [True, None, True, True, "TimeoutError", True], got


# --------------------------------------------------------------------------
# 3. queue_status


def test_queue_status(k):
    """`rc.queue_status()`: `{engine_id: {'queue', 'completed', 'tasks'},
    'unassigned': n}`. Two direct requests to engine 0 (one running, one
    waiting) are its queue; a load-balanced task running on engine 1 is its
    'tasks'; `verbose=True` gives the msg_ids; `queue_status(0)` engine 0's
    dict; 'completed' grows by the requests that finished."""
    got = value(
        k,
        """
before = rc.queue_status()
blocker = rc[0].apply_async(time.sleep, 1.0)
queued = rc[0].apply_async(lambda: 1)
lbt = rc.load_balanced_view(targets=[1]).apply_async(time.sleep, 1.0)
time.sleep(0.4)
qs = rc.queue_status()
qv = rc.queue_status(verbose=True)
q0 = rc.queue_status(0)
blocker.get(timeout=10); queued.get(timeout=10); lbt.get(timeout=10)
after = rc.queue_status()
def keys(d):
    return sorted(str(k) for k in d)
[keys(qs), {str(k): v for k, v in qs.items()}, q0,
 sorted(qv[0]['queue']) == sorted(blocker.msg_ids + queued.msg_ids), qv[1]['tasks'] == lbt.msg_ids,
 type(qv['unassigned']).__name__,
 after[0]['completed'] - before[0]['completed'], after[0]['queue'], after[1]['tasks']]
""",
    )
    keys, qs, q0, verbose_queue, verbose_tasks, unassigned_kind, done0, queue_after, tasks_after = got
    assert keys == sorted([str(i) for i in range(N)] + ["unassigned"]), keys
    for eid in map(str, range(N)):
        assert set(qs[eid]) == {"queue", "completed", "tasks"}, qs
    assert qs["0"]["queue"] == 2, f"engine 0's queue with a running and a waiting request: {qs['0']}"
    assert qs["2"]["queue"] == 0 and qs["2"]["tasks"] == 0, qs["2"]
    assert isinstance(qs["unassigned"], int), qs
    assert q0 == qs["0"] or (q0["queue"] == 2 and set(q0) == {"queue", "completed", "tasks"}), q0
    assert verbose_queue, "queue_status(verbose=True)[0]['queue'] is not the two msg_ids"
    assert unassigned_kind == "list", f"verbose 'unassigned' is a {unassigned_kind}"
    assert done0 == 2, f"engine 0's 'completed' grew by {done0}, expected 2"
    assert queue_after == 0 and tasks_after == 0, got
    assert qs["1"]["tasks"] == 1 and qs["unassigned"] == 0, (
        f"a load-balanced task running on engine 1 for 0.4 s: engine 1 {qs['1']}, "
        f"'unassigned' {qs['unassigned']} (expected 'tasks': 1, 'unassigned': 0)"
    )
    assert verbose_tasks, "queue_status(verbose=True)[1]['tasks'] is not the task's msg_id"


# --------------------------------------------------------------------------
# 4. clear, send_signal


def test_clear_empties_namespaces(k):
    """`rc.clear(targets=0, block=True)` empties engine 0's namespace only;
    `rc.clear(block=True)` every engine's: a pushed name is then a
    NameError on pull."""
    got = value(
        k,
        """
rc[:].push({'cleared_name': 5}, block=True)
first = rc[:].pull('cleared_name', block=True)
rc.clear(targets=0, block=True)
def pull_each():
    out = []
    for v in rc:
        try:
            out.append(v.pull('cleared_name', block=True))
        except Exception as e:
            out.append(ename(e))
    return out
one = pull_each()
rc.clear(block=True)
every = pull_each()
rc[:].push({'cleared_name': 6}, block=True)
[first, one, every, rc[:].pull('cleared_name', block=True)]
""",
    )
    assert got == [[5] * N, ["NameError"] + [5] * (N - 1), ["NameError"] * N, [6] * N], got


def test_send_signal_sigint_interrupts(k):
    """`rc.send_signal('SIGINT', targets=[0])` interrupts a running
    `time.sleep(10)` at once (its get raises an error naming
    KeyboardInterrupt) and so does `signal.SIGINT`; the engines work after."""
    got = value(
        k,
        """
out = []
for sig, eid in (('SIGINT', 0), (signal.SIGINT, 1)):
    ar = rc[eid].apply_async(time.sleep, 10)
    time.sleep(0.5)
    t0 = time.monotonic()
    rc.send_signal(sig, targets=[eid], block=True)
    try:
        ar.get(timeout=5)
        err = None
    except Exception as e:
        err = [ename(e), type(e).__name__, str(e)[:300]]
    out.append([err, round(time.monotonic() - t0, 2), rc[eid].apply_sync(lambda: 'alive')])
out
""",
    )
    for (err, took, after), how in zip(got, ("'SIGINT'", "signal.SIGINT")):
        assert err is not None, f"send_signal({how}): the sleep finished without an error"
        assert "KeyboardInterrupt" in (err[0] + err[2]), f"send_signal({how}): {err}"
        assert took < 3, f"send_signal({how}): the sleep ended {took} s after the signal"
        assert after == "alive", got


def test_send_signal_invalid(k):
    """An unknown signal number or name is a ValueError; the engines still
    work."""
    got = value(
        k,
        """
[raised(rc.send_signal, 999, block=True), raised(rc.send_signal, 'SIGFOO', block=True),
 rc[:].apply_sync(lambda: 'ok')]
""",
    )
    bad_number, bad_name, after = got
    assert bad_number is not None and bad_number[0] == "ValueError", f"send_signal(999): {bad_number}"
    assert bad_name is not None and bad_name[0] == "ValueError", f"send_signal('SIGFOO'): {bad_name}"
    assert after == ["ok"] * N, got


# --------------------------------------------------------------------------
# 5. views, constructor, context manager, purges


def test_broadcast_view(k):
    """`rc.broadcast_view(is_coalescing=True)` works like a DirectView on
    every engine: apply, push/pull, execute, item access; with `targets`
    only those engines."""
    got = value(
        k,
        """
bv = rc.broadcast_view(is_coalescing=True)
a = bv.apply_sync(os.getpid)
bv.push({'bx': 3}, block=True)
bv.execute('by = bx + 1', block=True)
some = rc.broadcast_view(targets=[0, 2], is_coalescing=True)
[a, bv.pull('bx', block=True), bv['by'], some.apply_sync(os.getpid), pids]
""",
    )
    a, bx, by, some, pids = got
    assert a == pids, got
    assert bx == [3] * N and by == [4] * N, got
    assert some == [pids[0], pids[2]], got


def test_client_constructor_and_context_manager(k):
    """`Client(profile=..., bogus=1)` is a TypeError naming 'bogus';
    `Client(cluster_id=rc.cluster_id)` (the Cluster's cluster_id) reaches
    the same engines;
    `with Client(...) as rc2:` works inside and is closed after (using it
    fails); the first client still works."""
    got = value(
        k,
        """
bad = raised(ipp.Client, profile=c.profile, cluster_id=c.cluster_id, bogus=1)
rc2 = ipp.Client(cluster_id=rc.cluster_id)
rc2.wait_for_engines(len(ids), timeout=10)
same = [rc2.ids, rc2[:].apply_sync(os.getpid)]
rc2.close()
with ipp.Client(profile=c.profile, cluster_id=c.cluster_id) as rc3:
    inside = rc3[0].apply_sync(os.getpid)
closed = raised(lambda: rc3[0].apply_async(os.getpid).get(timeout=5))
[bad, same, inside, closed, rc[:].apply_sync(os.getpid), rc.cluster_id == c.cluster_id]
""",
    )
    bad, (ids2, pids2), inside, closed, still, same_id = got
    assert bad is not None and bad[0] == "TypeError" and "bogus" in bad[1], f"Client(bogus=1): {bad}"
    assert ids2 == list(range(N)) and pids2 == still, got
    assert inside == still[0], got
    assert closed is not None, "a Client used after its `with` block still ran work"
    assert len(still) == N and same_id, got


def test_purges(k):
    """`purge_local_results` refuses outstanding work (RuntimeError), takes
    an AsyncResult or 'all' once it finished; `purge_everything()` empties
    `rc.history`, and new work is recorded again after."""
    got = value(
        k,
        """
ar = rc[0].apply_async(time.sleep, 0.5)
busy = raised(rc.purge_local_results, ar)
ar.get(timeout=5)
done = rc[1].apply_async(lambda: 'x'); done.get(timeout=5)
one = raised(rc.purge_local_results, done)
every = raised(rc.purge_local_results, 'all')
before = len(rc.history)
everything = raised(rc.purge_everything)
emptied = list(rc.history)
new = rc[2].apply_async(lambda: 'y')
[busy, one, every, before > 0, everything, emptied, new.get(timeout=5), rc.history == new.msg_ids]
""",
    )
    busy, one, every, had_history, everything, emptied, new, recorded = got
    assert busy is not None and busy[0] == "RuntimeError", f"purging outstanding work: {busy}"
    assert one is None and every is None and everything is None, got
    assert had_history, got
    assert emptied == [], f"rc.history after purge_everything(): {emptied[:5]}..."
    assert new == "y" and recorded, got


# --------------------------------------------------------------------------
# 6. AsyncResult metadata


WORK = """
def work(x):
    import sys
    from IPython.display import display, HTML
    print('out', x)
    print('err', x, file=sys.stderr)
    display(HTML('<b>%d</b>' % x))
    return x * 2
"""

MD_KEYS = ["msg_id", "submitted", "started", "completed", "received", "engine_id",
           "engine_uuid", "status", "stdout", "stderr", "outputs", "error", "execute_result"]


def test_metadata_of_one_engine(k):
    """A single-engine result's `metadata` is one dict (with attribute
    access) with msg_id, engine_id, engine_uuid, status 'ok', the captured
    stdout/stderr, the display_data bundle, no error; its four timestamps
    are timezone-aware datetimes of now, in the order submitted <= started
    <= completed <= received (5 ms slack: one machine, one clock)."""
    got = value(
        k,
        WORK
        + f"""
ar = rc[1].apply_async(work, 7)
r = ar.get(timeout=10)
md = ar.metadata
stamps = [md[s] for s in ('submitted', 'started', 'completed', 'received')]
now = datetime.datetime.now(datetime.timezone.utc)
out = md['outputs']
[r, isinstance(md, dict), [key for key in {MD_KEYS!r} if key not in md],
 md['msg_id'] == ar.msg_ids[0], md.engine_id, type(md['engine_uuid']).__name__, md['status'],
 md['stdout'], md['stderr'], md['error'], md['execute_result'],
 [type(s).__name__ for s in stamps], [s.tzinfo is not None and s.utcoffset() is not None for s in stamps],
 [secs(stamps[i], stamps[i + 1]) for i in range(3)], secs(stamps[0], now),
 len(out), out[0]['data'].get('text/html') if out else None,
 ar.engine_uuid == md['engine_uuid'], ar['started'] == md['started'], ar.stdout]
""",
    )
    (r, is_dict, missing, msg_id_ok, eid, uuid_kind, status, stdout, stderr, error, exec_result,
     kinds, aware, gaps, age, nout, html, uuid_attr, item, stdout_attr) = got
    assert r == 14, got
    assert is_dict and not missing, f"metadata keys missing: {missing}"
    assert msg_id_ok and eid == 1 and uuid_kind == "str" and status == "ok", got
    assert stdout == "out 7\n" and stderr == "err 7\n", got
    assert error is None and exec_result is None, got
    assert kinds == ["datetime"] * 4 and aware == [True] * 4, got
    assert all(g >= -0.005 for g in gaps), f"timestamps out of order (s between them): {gaps}"
    assert 0 <= age < 30, f"submitted {age} s ago"
    assert nout == 1 and html == "<b>7</b>", got
    assert uuid_attr and item and stdout_attr == "out 7\n", got


def test_metadata_of_many_engines(k):
    """A multi-engine result's `metadata` is a list, one per engine in
    order; `ar.metadata[0].engine_id`, `ar.engine_id`, `ar.engine_uuid`,
    `ar['started']`, `ar.stdout` give per-engine lists; an unknown
    attribute is an AttributeError."""
    got = value(
        k,
        WORK
        + """
ar = rc[:].apply_async(work, 3)
r = ar.get(timeout=10)
md = ar.metadata
[r, type(md).__name__, len(md), [m['engine_id'] for m in md], md[0].engine_id, ar.engine_id,
 [type(u).__name__ for u in ar.engine_uuid], len(set(ar.engine_uuid)),
 [type(s).__name__ for s in ar['started']], ar.stdout, [m['status'] for m in md],
 raised(lambda: ar.no_such_metadata), hasattr(ar, 'no_such_metadata')]
""",
    )
    r, kind, n, eids, eid0, eid_attr, uuid_kinds, distinct, started, stdout, statuses, unknown, has = got
    assert r == [6] * N, got
    assert kind == "list" and n == N, got
    assert eids == list(range(N)) and eid0 == 0 and eid_attr == list(range(N)), got
    assert uuid_kinds == ["str"] * N and distinct == N, got
    assert started == ["datetime"] * N, got
    assert stdout == ["out 3\n"] * N and statuses == ["ok"] * N, got
    assert unknown is not None and unknown[0] == "AttributeError", f"ar.no_such_metadata: {unknown}"
    assert has is False, got


def test_metadata_of_a_failure_and_an_execute_result(k):
    """A failed request's metadata has status 'error' and `error` the
    RemoteError (ZeroDivisionError); `execute('6*7', silent=False)`'s
    metadata has the execute_result with text/plain '42'."""
    got = value(
        k,
        """
bad = rc[1].apply_async(lambda: 1/0)
bad.wait(10)
md = bad.metadata
e = md['error']
ex = rc[0].execute('6*7', silent=False, block=False)
ex.get(timeout=10)
er = ex.metadata['execute_result']
[md['status'], isinstance(e, ipp.error.RemoteError), getattr(e, 'ename', None), md.engine_id,
 er['data']['text/plain'] if er else None, ex.metadata['status']]
""",
    )
    assert got == ["error", True, "ZeroDivisionError", 1, "42", "ok"], got


# --------------------------------------------------------------------------
# 7. get_dict, len, indexing, split/join


def test_get_dict(k):
    """`get_dict()` maps engine id to result; it is a ValueError when two
    results came from one engine (a load-balanced map of 2N single-item
    chunks on N engines; two joined results of engine 0)."""
    got = value(
        k,
        f"""
d = rc[:].apply_async(os.getpid).get_dict(timeout=10)
lb = rc.load_balanced_view().map_async(lambda x: x, range({2 * N}), chunksize=1)
lb.get(timeout=10)
two = ipp.AsyncResult.join(rc[0].apply_async(os.getpid), rc[0].apply_async(os.getpid))
two.get(timeout=10)
[{{str(k): v for k, v in d.items()}}, raised(lb.get_dict), raised(two.get_dict),
 rc[2].apply_async(os.getpid).get_dict(timeout=10) == {{2: pids[2]}}]
""",
    )
    d, lb_err, two_err, single = got
    assert d == {str(i): p for i, p in enumerate(value(k, "pids"))}, d
    assert lb_err is not None and lb_err[0] == "ValueError", f"get_dict of a {2 * N}-task map: {lb_err}"
    assert two_err is not None and two_err[0] == "ValueError", f"get_dict of two results of engine 0: {two_err}"
    assert single, got


def test_len_index_slice(k):
    """`len(ar)` is the number of results (one per engine for apply); `ar[0]`,
    `ar[-1]` and `ar[0:2]` index the results (also of a map: its items);
    `ar[0]` before the result is ready raises rparallel.error.TimeoutError."""
    got = value(
        k,
        """
ar = rc[:].apply_async(os.getpid)
ar.get(timeout=10)
m = rc[:].map_async(lambda x: x * 10, range(7))
m.get(timeout=10)
slow = rc[:].apply_async(time.sleep, 1)
early = raised(lambda: slow[0])
early_cls = None
try:
    slow[0]
except Exception as e:
    early_cls = [isinstance(e, ipp.error.TimeoutError), type(e).__module__]
slow.get(timeout=10)
[len(ar), ar[0], ar[-1], ar[0:2], m[0], m[5], m[2:4], early, early_cls, slow[1], pids]
""",
    )
    n, first, last, two, m0, m5, m24, early, early_cls, after, pids = got
    assert n == N and first == pids[0] and last == pids[-1] and two == pids[:2], got
    assert m0 == 0 and m5 == 50 and m24 == [20, 30], got
    assert early is not None and early[0] == "TimeoutError", f"ar[0] before ready: {early}"
    assert early_cls and early_cls[0], f"ar[0] before ready is not rparallel.error.TimeoutError: {early_cls}"
    assert after is None, got


def test_len_of_a_map_counts_its_items(k):
    """`len(ar)` of a DirectView map counts the items mapped, not the
    messages sent (ipyparallel counts each message's chunk size, so that
    `ar.progress / len(ar)` is the fraction done): 7 for 7 items on N
    engines; likewise for a load-balanced map with chunksize 2."""
    got = value(
        k,
        """
m = rc[:].map_async(lambda x: x * 10, range(7))
m.get(timeout=10)
lb = rc.load_balanced_view().map_async(lambda x: x, range(7), chunksize=2)
lb.get(timeout=10)
[len(m), len(m.msg_ids), len(lb), len(lb.msg_ids)]
""",
    )
    assert got == [7, N, 7, 4], f"[len(map of 7), its messages, len(lb map of 7 by 2), its messages] = {got}"


def test_split_and_join(k):
    """`ar.split()` is a tuple of single-engine results (the same tuple
    each time), each with its engine's value and metadata;
    `AsyncResult.join(*parts).get()` equals the original."""
    got = value(
        k,
        """
def nap_pid(t):
    import os, time
    time.sleep(t)
    return os.getpid()
ar = rc[:].apply_async(nap_pid, 0.2)
parts = ar.split()
joined = ipp.AsyncResult.join(*parts)
[type(parts).__name__, len(parts), ar.split() is parts,
 [p.get(timeout=5) for p in parts], [p.metadata['engine_id'] for p in parts],
 joined.get(timeout=5) == ar.get(timeout=5), ar.get(timeout=5) == pids, isinstance(parts[0], ipp.AsyncResult)]
""",
    )
    kind, n, same, values, eids, equal, right, is_ar = got
    assert kind == "tuple" and n == N, got
    assert same, "ar.split() returned a new tuple the second time"
    assert values == value(k, "pids") and eids == list(range(N)), got
    assert equal and right and is_ar, got


def test_split_parts_with_concurrent_futures(k):
    """The parts of `ar.split()` go to `concurrent.futures.wait` and
    `as_completed` ("can be passed to concurrent.futures.wait and friends
    to get partial results"): with one engine sleeping longer, `wait` with
    a shorter timeout gives the quick parts done and the slow one pending;
    `as_completed` gives the slow one last."""
    got = value(
        k,
        """
def nap_pid(slow):
    import os, time
    time.sleep(1.0 if os.getpid() == slow else 0.05)
    return os.getpid()
ar = rc[:].apply_async(nap_pid, pids[0])
parts = ar.split()
try:
    done, pending = concurrent.futures.wait(parts, timeout=0.8, return_when=concurrent.futures.ALL_COMPLETED)
    early = [len(done), len(pending), sorted(p.get(timeout=0) for p in done)]
    order = [f.get(timeout=0) for f in concurrent.futures.as_completed(parts, timeout=10)]
    res = [early, order[-1], sorted(order) == sorted(pids)]
except Exception as e:
    ar.get(timeout=10)
    res = ['raised', type(e).__name__, str(e)]
res
""",
    )
    assert got[0] != "raised", f"concurrent.futures.wait/as_completed on ar.split() raised {got[1]}: {got[2]}"
    early, last, every = got
    pids = value(k, "pids")
    assert early == [N - 1, 1, sorted(pids[1:])], f"concurrent.futures.wait(parts, 0.8 s) gave {early}"
    assert last == pids[0] and every, got


# --------------------------------------------------------------------------
# 8. exceptions and return_when


def test_get_return_exceptions(k):
    """With one engine failing, `get()` raises a CompositeError and
    `get(return_exceptions=True)` returns the RemoteError in that engine's
    place and the other engines' values."""
    got = value(
        k,
        """
def maybe(bad):
    import os
    if os.getpid() == bad:
        raise ZeroDivisionError('engine 1 fails')
    return os.getpid()
ar = rc[:].apply_async(maybe, pids[1])
ar.wait(10)
plain = raised(ar.get, timeout=5)
res = ar.get(timeout=5, return_exceptions=True)
[plain[0] if plain else None, [type(r).__name__ for r in res],
 isinstance(res[1], ipp.error.RemoteError), getattr(res[1], 'ename', None),
 res[0] == pids[0] and res[2] == pids[2]]
""",
    )
    plain, kinds, is_remote, en, others = got
    assert plain == "CompositeError", f"get() of a partly failed result raised {plain}"
    assert kinds[0] == "int" and kinds[2] == "int", kinds
    assert is_remote and en == "ZeroDivisionError", got
    assert others, got


def test_return_when_first_exception(k):
    """`ar.wait(return_when=FIRST_EXCEPTION)` returns (done, pending) sets
    as soon as one part failed; `get(return_when=FIRST_EXCEPTION)` raises
    the ZeroDivisionError quickly (< 2 s) while the other part still sleeps
    5 s."""
    got = value(
        k,
        """
ar = ipp.AsyncResult.join(rc[0].apply_async(lambda: 1/0), rc[1].apply_async(time.sleep, 5))
t0 = time.monotonic()
waited = ar.wait(timeout=10, return_when=FIRST_EXCEPTION)
took_wait = time.monotonic() - t0
done, pending = waited
kinds = [isinstance(waited, tuple) and len(waited) == 2, type(done).__name__, type(pending).__name__]
failed = [raised(d.get, timeout=1) for d in done]
ar2 = ipp.AsyncResult.join(rc[0].apply_async(lambda: 1/0), rc[2].apply_async(time.sleep, 5))
t0 = time.monotonic()
try:
    ar2.get(timeout=10, return_when=FIRST_EXCEPTION)
    err = None
except Exception as e:
    err = [ename(e), type(e).__name__, str(e)[:200]]
took_get = time.monotonic() - t0
[kinds, len(done), len(pending), failed, round(took_wait, 2), err, round(took_get, 2)]
""",
        timeout=60,
    )
    kinds, ndone, npending, failed, took_wait, err, took_get = got
    assert kinds == [True, "set", "set"], f"wait(return_when=...) gave [a (done, pending) pair, types]: {kinds}"
    assert ndone == 1 and npending == 1, got
    assert failed[0] is not None, f"the done part did not fail: {failed}"
    assert took_wait < 2, f"wait(return_when=FIRST_EXCEPTION) took {took_wait} s"
    assert err is not None and "ZeroDivisionError" in (err[0] + err[2]), f"get(return_when=FIRST_EXCEPTION): {err}"
    assert took_get < 2, f"get(return_when=FIRST_EXCEPTION) took {took_get} s (the other part sleeps 5 s)"


# --------------------------------------------------------------------------
# 9. timings, await, tracking, ExecuteReply


def test_wall_serial_and_elapsed_time(k):
    """`wall_time` = latest received - earliest submitted; `serial_time` =
    sum of completed - started; `elapsed` grows while a request runs and
    equals `wall_time` after."""
    got = value(
        k,
        """
ar = rc[:].apply_async(time.sleep, 0.3)
ar.get(timeout=10)
md = ar.metadata
wall = max(m['received'] for m in md) - min(m['submitted'] for m in md)
serial = sum((m['completed'] - m['started']).total_seconds() for m in md)
slow = rc[0].apply_async(time.sleep, 1)
time.sleep(0.4)
e1 = slow.elapsed
time.sleep(0.2)
e2 = slow.elapsed
slow.get(timeout=5)
[ar.wall_time, wall.total_seconds(), ar.serial_time, serial, ar.elapsed, e1, e2]
""",
    )
    wall_time, wall, serial_time, serial, elapsed, e1, e2 = got
    assert abs(wall_time - wall) < 0.002, got
    assert abs(serial_time - serial) < 0.002, got
    assert 0.3 <= wall_time < 3, got
    assert N * 0.3 - 0.01 <= serial_time < N * 0.3 + 1, got
    assert abs(elapsed - wall_time) < 0.002, got
    assert 0.35 <= e1 < 1.0 and 0.15 <= e2 - e1 < 0.6, f"elapsed while running: {e1}, then {e2}"


def test_await_async_result(k):
    """`await ar` (top-level in a cell, and in a coroutine with
    asyncio.gather) gives the result."""
    execute_ok(
        k,
        """
r1 = await rc[1].apply_async(os.getpid)
async def both():
    return await asyncio.gather(rc[0].apply_async(lambda: 'a'), rc[:].apply_async(lambda: 'b'))
r2 = await both()
""",
        timeout=30,
    )
    got = value(k, "[r1 == pids[1], r2]")
    assert got == [True, ["a", ["b"] * N]], got


def test_tracked_send(k):
    """With `view.track = True` (or `set_flags(track=True)`),
    `ar.wait_for_send(5)` returns and `ar.sent` is True; the work runs."""
    got = value(
        k,
        """
v = rc[0]
v.track = True
ar = v.apply_async(len, b'x' * 1000000)
ws = raised(ar.wait_for_send, 5)
sent = ar.sent
dv = rc[:]
dv.set_flags(track=True)
ar2 = dv.apply_async(len, b'y' * 1000)
ws2 = raised(ar2.wait_for_send, 5)
[ws, sent, ar.get(timeout=10), ws2, ar2.sent, ar2.get(timeout=10), v.track, dv.track]
""",
    )
    assert got == [None, True, 1000000, None, True, [1000] * N, True, True], got


def test_execute_reply(k):
    """`execute(code, silent=False, block=True)` returns an AsyncResult
    whose `get()` is one ExecuteReply per engine: `.stdout`,
    `execution_count` (one more per execute) and repr
    `<ExecuteReply[N]: value>`."""
    got = value(
        k,
        """
ar = rc[:].execute('print("hi", 7); 6*7', silent=False, block=True)
replies = ar.get(timeout=10)
ar2 = rc[0].execute('6*7', silent=False, block=True)
r2 = ar2.get(timeout=10)
[type(ar).__name__, isinstance(ar, ipp.AsyncResult), [type(r).__name__ for r in replies],
 [r.stdout for r in replies], [r.execution_count for r in replies], [repr(r) for r in replies],
 [r['engine_id'] for r in replies], r2.execution_count, repr(r2)]
""",
    )
    kind, is_ar, kinds, stdouts, counts, reprs, eids, count2, repr2 = got
    assert is_ar, f"execute(block=True) returned a {kind}"
    assert kinds == ["ExecuteReply"] * N, kinds
    assert stdouts == ["hi 7\n"] * N, stdouts
    assert all(isinstance(c, int) and c >= 1 for c in counts), counts
    assert reprs == [f"<ExecuteReply[{c}]: 42>" for c in counts], reprs
    assert eids == list(range(N)), eids
    assert count2 == counts[0] + 1 and repr2 == f"<ExecuteReply[{count2}]: 42>", got


# --------------------------------------------------------------------------
# 10. SIGTERM stops an engine (a cluster of its own)


def test_send_signal_sigterm_stops_an_engine(cluster_kc):
    """`rc.send_signal(signal.SIGTERM, targets=[1], block=True)` stops
    engine 1 of a 2-engine cluster: its process ends and it leaves
    `rc.ids` within a few seconds; engine 0 still works."""
    kc = cluster_kc
    drain(kc)
    execute_ok(
        kc,
        """
c2 = ipp.Cluster(n=2)
rc2 = c2.start_and_connect_sync()
rc2.wait_for_engines(2, timeout=30)
ids2 = rc2.ids
pids2 = rc2[:].apply_sync(os.getpid)
""",
        timeout=60,
    )
    try:
        got = value(
            kc,
            """
sig = raised(rc2.send_signal, signal.SIGTERM, targets=[ids2[1]], block=True)
t0 = time.monotonic()
while ids2[1] in rc2.ids and time.monotonic() - t0 < 10:
    time.sleep(0.05)
[ids2, sig, rc2.ids, round(time.monotonic() - t0, 2), rc2[ids2[0]].apply_sync(os.getpid) == pids2[0], pids2]
""",
            timeout=30,
        )
        ids2, sig, after, took, alive, pids2 = got
        assert len(ids2) == 2, got
        assert sig is None, f"send_signal(SIGTERM, block=True) raised {sig}"
        assert after == [ids2[0]], f"rc.ids 10 s after SIGTERM to engine {ids2[1]}: {after}"
        assert took < 5, f"engine {ids2[1]} left rc.ids {took} s after SIGTERM"
        assert wait_pid_gone(pids2[1], 5), f"engine {ids2[1]} (pid {pids2[1]}) still running after SIGTERM"
        assert alive and pid_alive(pids2[0]), got
    finally:
        drain(kc)
        execute(kc, "c2.stop_cluster_sync()", timeout=30)
