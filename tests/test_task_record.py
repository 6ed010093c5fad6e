"""The controller's task record (ipyparallel's "hub database") in the
rparallel kernel, through jupyter_client, on a 2-engine cluster the kernel
starts with `rparallel.Cluster`. Written from ipyparallel 9's documentation
(the docstrings of `Client.hub_history`, `db_query`, `get_result`,
`resubmit`, `purge_local_results`, `purge_hub_results`, `purge_results`
and `purge_everything` in ipyparallel/client/client.py, and
`AsyncHubResult`), and rparallel's documented limits (the last 4,096
requests, 16 MiB of buffers, a message whose buffers exceed 1 MiB keeps
none):

1. `hub_history()`: the msg_ids of every client's requests (this one's and
   a second `Client(profile=c.profile)`'s), in submission order, the same
   seen from either client;
2. `db_query(query, keys)`: `{}` is every record; `$in`, `$nin`, `$ne`,
   equality (msg_id, engine_uuid, label), `$lt/$gt/$lte/$gte` on
   `completed` with aware datetimes (in any timezone); `keys` (msg_id
   always), aware timestamps, `stdout`, `buffers`/`result_buffers` as lists
   of bytes, left out by default ("everything but buffers"); an unknown
   operator a ValueError listing the operators;
3. `get_result`: another client's results (values, stdout, metadata,
   `<AsyncHubResult` repr), by msg_id, list, AsyncResult or history index,
   of an unfinished task (waits), of an unknown msg_id (KeyError),
   `owner=False` (values and metadata in `rc.results`/`rc.metadata`), no
   argument (this client's last request), of an `execute` (ExecuteReply),
   a list argument giving a list, `block=True` still returning the
   AsyncResult;
4. `resubmit`: runs again under new msg_ids (an engine counter increments,
   `time.time` grows; same engine for a direct request), the old record's
   `resubmitted` names the new msg_id; an in-flight task cannot be
   resubmitted or purged;
5. purges: `purge_hub_results(msg_ids or AsyncResults)`, of another
   client's requests, `targets=[0]` (engine 0's finished records only),
   `purge_local_results` then `get_result` fetching from the record again,
   `purge_results` forgetting both, `purge_everything()` (only unfinished
   work left, the client's history and results empty);
6. limits: a 2 MiB result (its record kept, `get_result` elsewhere a
   RuntimeError "too large", the owner still has it) and a 2 MiB argument
   (not resubmittable); 5,000 tiny tasks leave exactly the last 4,096
   records; 200 results of 900 KiB keep at most 16 MiB of buffers (the
   newest), and the controller's RSS stays within that;
7. `Cluster(n=1, db='none')`: `hub_history`/`db_query` are RuntimeErrors
   saying "--db none", work runs as usual.

One kernel for the module, in a temporary RPARALLEL_DIR, with the cluster
`c`, its client `rc` and a second client `rc2`. Each test makes its own
requests and looks only at them (so that the purges do not disturb other
tests). Values come back as JSON through `value()`; every wait has a
timeout.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from api_helpers import KERNEL_HELPERS, kernel_with_cluster, value

from kernel_helpers import (
    IS_RPARALLEL,
    drain,
    execute_ok,
    pids_with_cmdline,
    wait_pid_gone,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(120),
]

N = 2
MIB = 2**20
# rparallel's documented limits of the record
MAX_RECORDS = 4096
MAX_BUFFER_BYTES = 16 * MIB





START = f"""
import datetime, os, time
import numpy as np
import rparallel as ipp
c = ipp.Cluster(n={N})
rc = c.start_and_connect_sync()
rc.wait_for_engines({N}, timeout=30)
rc2 = ipp.Client(profile=c.profile)
rc2.wait_for_engines({N}, timeout=30)
ids = rc.ids
lv = rc.load_balanced_view()
pids = rc[:].apply_sync(os.getpid)
UTC = datetime.timezone.utc

def now():
    return datetime.datetime.now(UTC)

{KERNEL_HELPERS}
def hub_ids(query, **kwargs):
    '''msg_ids of the records matching query.'''
    return [r['msg_id'] for r in rc.db_query(query, **kwargs)]

def aware_utc(d):
    '''d is a timezone-aware datetime (what ipyparallel returns).'''
    return isinstance(d, datetime.datetime) and d.tzinfo is not None and d.utcoffset() is not None

def near_now(d, seconds=120):
    '''d is an aware datetime within `seconds` of now (right timezone).'''
    return aware_utc(d) and abs((now() - d).total_seconds()) < seconds

def recorded(*ars, timeout=10):
    '''Wait until the record holds every request of ars: another client's
    requests reach the controller over their own connection, so a query
    sent right after them may overtake them.'''
    want = set(m for ar in ars for m in ar.msg_ids)
    deadline = time.monotonic() + timeout
    while want - set(hub_ids({{'msg_id': {{'$in': sorted(want)}}}})):
        assert time.monotonic() < deadline, 'not recorded: %s' % sorted(want)
        time.sleep(0.02)

def slow_seven():
    print('begun', flush=True)
    time.sleep(1.5)
    print('ended')
    return 7
"""


def controller_pid(profile: str) -> int:
    """The pid of the controller of the cluster with ``profile``."""
    found = pids_with_cmdline("controller --profile " + profile)
    assert len(found) == 1, f"controller of {profile}: {found}"
    return found[0]


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def kernel_and_cluster():
    """``(km, kc)``: a kernel (its own RPARALLEL_DIR) with `c` ({N}
    engines), `rc`, `rc2` (a second Client of `c`), `ids`, `lv`, `pids`
    and the helpers of START; after the module the cluster is stopped, its
    engines checked gone and the kernel shut down."""
    with kernel_with_cluster("rp-record-", START, N, stop="rc2.close()\nc.stop_cluster_sync()") as kernel:
        yield kernel


@pytest.fixture
def k(kernel_and_cluster):
    """The module's kernel, drained, no request of `rc` or `rc2` still
    running (what a client may wrongly still wait for, a msg_id the record
    does not know or has finished, is the business of the test that caused
    it) and the same engines answering."""
    kc = kernel_and_cluster[1]
    drain(kc)
    execute_ok(
        kc,
        "_running = set(hub_ids({'completed': None}))\n"
        "for _cl in (rc, rc2):\n"
        "    _pending = [m for m in _cl.outstanding if m in _running]\n"
        "    assert not _pending or _cl.wait(_pending, timeout=30), _pending\n"
        "assert rc.ids == ids and rc2.ids == ids, (rc.ids, rc2.ids, ids)\n",
        timeout=60,
    )
    return kc


# --------------------------------------------------------------------------
# 1. hub_history


def test_hub_history_lists_every_clients_requests_in_order(k):
    """Requests of `rc` and of the second client `rc2` (direct, load-
    balanced, execute, multi-engine), each waited for before the next, are
    the last entries of `hub_history()`, in submission order; both clients
    see the same history, a list of str."""
    got = value(
        k,
        """
a1 = rc[0].apply_async(lambda: 1); a1.get(timeout=10)
b1 = rc2[1].apply_async(lambda: 2); b1.get(timeout=10)
a2 = lv.apply_async(lambda: 3); a2.get(timeout=10)
b2 = rc2[:].execute('x_hist = 1'); b2.get(timeout=10)
a3 = rc[:].apply_async(lambda: 4); a3.get(timeout=10)
mine = a1.msg_ids + b1.msg_ids + a2.msg_ids + b2.msg_ids + a3.msg_ids
h = rc.hub_history()
h2 = rc2.hub_history()
[mine, [h.index(m) if m in h else None for m in mine], h[-len(mine):], h == h2,
 type(h).__name__, all(isinstance(m, str) for m in h)]
""",
    )
    mine, where, tail, same, kind, strs = got
    assert len(mine) == 7, mine
    assert None not in where, f"requests missing from hub_history (None): {where}"
    assert where == sorted(where), f"hub_history is not in submission order: {where}"
    assert tail == mine, f"the last requests of hub_history are not these requests: {tail} vs {mine}"
    assert same is True, "rc.hub_history() != rc2.hub_history()"
    assert kind == "list" and strs is True, got


# --------------------------------------------------------------------------
# 2. db_query


def test_db_query_all_in_nin_ne_and_equality(k):
    """`db_query({})` returns every record (the msg_ids of hub_history, once
    each); `{'msg_id': {'$in': ar.msg_ids}}` exactly those, `$nin` all the
    others, `{'msg_id': id}` that one, `$ne` all but it, `$in: []` none."""
    got = value(
        k,
        """
ar = rc[:].apply_async(lambda: 'q'); ar.get(timeout=10)
other = rc[0].apply_async(lambda: 'o'); other.get(timeout=10)
h = rc.hub_history()
everything = hub_ids({})
[h, everything, ar.msg_ids, other.msg_ids,
 hub_ids({'msg_id': {'$in': ar.msg_ids}}),
 hub_ids({'msg_id': {'$nin': ar.msg_ids}}),
 hub_ids({'msg_id': ar.msg_ids[0]}),
 hub_ids({'msg_id': {'$ne': ar.msg_ids[0]}}),
 hub_ids({'msg_id': {'$in': []}})]
""",
    )
    h, everything, ar_ids, other_ids, in_, nin, eq, ne, empty = got
    assert len(everything) == len(set(everything)), "a record twice in db_query({})"
    assert set(everything) == set(h), (
        f"db_query({{}}) vs hub_history: missing {set(h) - set(everything)}, extra {set(everything) - set(h)}"
    )
    assert set(ar_ids + other_ids) <= set(everything), got
    assert sorted(in_) == sorted(ar_ids), f"$in: {in_} vs {ar_ids}"
    assert set(nin) == set(h) - set(ar_ids) and len(nin) == len(h) - len(ar_ids), f"$nin: {nin}"
    assert other_ids[0] in nin, nin
    assert eq == [ar_ids[0]], f"equality on msg_id: {eq}"
    assert set(ne) == set(h) - {ar_ids[0]}, f"$ne on msg_id: {ne}"
    assert empty == [], f"$in [] matched {empty}"


def test_db_query_ne_none_separates_finished_from_running(k):
    """While a task sleeps, `{'completed': {'$ne': None}}` finds a finished
    task and not the sleeping one, `{'completed': None}` the sleeping one
    and not the finished; once it finished, `$ne: None` finds it too."""
    got = value(
        k,
        """
done = rc[1].apply_async(lambda: 'done'); done.get(timeout=10)
running = rc[0].apply_async(time.sleep, 1.5)
recorded(running)
D, R = done.msg_ids[0], running.msg_ids[0]
fin = hub_ids({'completed': {'$ne': None}})
unfin = hub_ids({'completed': None})
running.get(timeout=10)
fin_after = hub_ids({'completed': {'$ne': None}})
[D in fin, R in fin, R in unfin, D in unfin, R in fin_after]
""",
    )
    assert got == [True, False, True, False, True], (
        "[finished in $ne None, running in $ne None, running in == None, "
        f"finished in == None, running in $ne None after it finished]: {got}"
    )


def test_db_query_compares_completed_with_datetimes(k):
    """Three tasks finishing before t1, between t1 and t2, after t2
    (aware datetimes from `datetime.datetime.now(timezone.utc)`):
    `$lt`/`$gt`/`$lte`/`$gte` on `completed` select the right ones, also
    combined, also with the same instant in another timezone (+05:00), and
    at a record's own `completed` (inclusive vs exclusive, to the
    microsecond)."""
    got = value(
        k,
        """
early = rc[0].apply_async(lambda: 'early'); early.get(timeout=10)
time.sleep(0.05)
t1 = now()
time.sleep(0.05)
mid = rc[1].apply_async(lambda: 'mid'); mid.get(timeout=10)
time.sleep(0.05)
t2 = now()
time.sleep(0.05)
late = rc[0].apply_async(lambda: 'late'); late.get(timeout=10)
E, M, L = early.msg_ids[0], mid.msg_ids[0], late.msg_ids[0]
def where(q):
    found = set(hub_ids(q))
    return [x in found for x in (E, M, L)]
stamp = rc.db_query({'msg_id': M}, keys=['completed'])[0]['completed']
plus5 = datetime.timezone(datetime.timedelta(hours=5))
{
 'lt t1': where({'completed': {'$lt': t1}}),
 'gt t2': where({'completed': {'$gt': t2}}),
 'gt t1 lt t2': where({'completed': {'$gt': t1, '$lt': t2}}),
 'gte t1 lte t2': where({'completed': {'$gte': t1, '$lte': t2}}),
 'lt t1 at +05:00': where({'completed': {'$lt': t1.astimezone(plus5)}}),
 'gt t2 at +05:00': where({'completed': {'$gt': t2.astimezone(plus5)}}),
 'lte own': where({'completed': {'$lte': stamp}}),
 'lt own': where({'completed': {'$lt': stamp}}),
 'gte own': where({'completed': {'$gte': stamp}}),
 'gt own': where({'completed': {'$gt': stamp}}),
 'gt t1 and ne M': where({'completed': {'$gt': t1}, 'msg_id': {'$ne': M}}),
}
""",
    )
    expected = {
        "lt t1": [True, False, False],
        "gt t2": [False, False, True],
        "gt t1 lt t2": [False, True, False],
        "gte t1 lte t2": [False, True, False],
        "lt t1 at +05:00": [True, False, False],
        "gt t2 at +05:00": [False, False, True],
        "lte own": [True, True, False],
        "lt own": [True, False, False],
        "gte own": [False, True, True],
        "gt own": [False, False, True],
        "gt t1 and ne M": [False, False, True],
    }
    wrong = {q: got[q] for q in expected if got[q] != expected[q]}
    assert not wrong, (
        "[early, mid, late] selected by each query, where they differ from expected "
        f"{ {q: expected[q] for q in wrong} }: {wrong}"
    )


def test_db_query_by_engine_uuid(k):
    """`{'engine_uuid': u}` (u from an AsyncResult's metadata) finds the
    requests that engine ran, and only records with that engine_uuid."""
    got = value(
        k,
        """
a0 = rc[0].apply_async(os.getpid); a0.get(timeout=10)
a1 = rc[1].apply_async(os.getpid); a1.get(timeout=10)
u0, u1 = a0.metadata['engine_uuid'], a1.metadata['engine_uuid']
recs0 = rc.db_query({'engine_uuid': u0}, keys=['engine_uuid'])
ids1 = hub_ids({'engine_uuid': u1})
[u0, u1, a0.msg_ids[0] in [r['msg_id'] for r in recs0], a1.msg_ids[0] in [r['msg_id'] for r in recs0],
 sorted(set(r['engine_uuid'] for r in recs0)), a1.msg_ids[0] in ids1, a0.msg_ids[0] in ids1]
""",
    )
    u0, u1, a0_in0, a1_in0, uuids0, a1_in1, a0_in1 = got
    assert isinstance(u0, str) and u0 and u0 != u1, got
    assert a0_in0 is True and a1_in0 is False, got
    assert uuids0 == [u0], f"records of another engine matched engine_uuid == {u0}: {uuids0}"
    assert a1_in1 is True and a0_in1 is False, got


def test_db_query_by_label(k):
    """Load-balanced tasks sent with `lv.temp_flags(label='mylabel')` and
    from a view after `set_flags(label='mylabel')` are exactly what
    `{'label': 'mylabel'}` finds; an unlabelled task's label is None; an
    unknown label finds nothing."""
    got = value(
        k,
        """
with lv.temp_flags(label='mylabel'):
    l1 = lv.apply_async(lambda: 'labelled')
lv_l = rc.load_balanced_view()
lv_l.set_flags(label='mylabel')
l2 = lv_l.apply_async(lambda: 'again')
plain = lv.apply_async(lambda: 'plain')
for a in (l1, l2, plain):
    a.get(timeout=10)
[sorted(hub_ids({'label': 'mylabel'})), sorted(l1.msg_ids + l2.msg_ids),
 rc.db_query({'msg_id': plain.msg_ids[0]}, keys=['label'])[0].get('label', 'missing'),
 hub_ids({'label': 'no-such-label'}), lv.label if hasattr(lv, 'label') else None]
""",
    )
    found, labelled, plain_label, none, lv_label = got
    assert found == labelled, f"{{'label': 'mylabel'}} found {found}, labelled {labelled}"
    assert plain_label is None, f"label of an unlabelled task: {plain_label!r}"
    assert none == [], none
    assert lv_label in (None, ""), f"temp_flags left the label: {lv_label!r}"


def test_db_query_keys_timestamps_and_stdout(k):
    """`keys=['msg_id', 'completed', 'stdout']` gives records with exactly
    those keys, `keys=['stdout']` adds msg_id; `stdout` is what the task
    printed; the four timestamps are aware datetimes, near now, in order
    (submitted ≤ started ≤ completed ≤ received), `completed` equal to the
    AsyncResult's metadata."""
    got = value(
        k,
        """
def talk(x):
    print('talking', x)
    return x + 1
ar = rc[:].apply_async(talk, 5); ar.get(timeout=10)
q = {'msg_id': {'$in': ar.msg_ids}}
recs = rc.db_query(q, keys=['msg_id', 'completed', 'stdout'])
recs2 = rc.db_query(q, keys=['stdout'])
stamps = rc.db_query(q, keys=['submitted', 'started', 'completed', 'received'])
meta = {m: ar.metadata[i] for i, m in enumerate(ar.msg_ids)}
T = ('submitted', 'started', 'completed', 'received')
[[sorted(r) for r in recs], [r['stdout'] for r in recs], [sorted(r) for r in recs2],
 [[near_now(r.get(t)) for t in T] for r in stamps],
 [r['submitted'] <= r['started'] <= r['completed'] <= r['received'] for r in stamps],
 [r['completed'] == meta[r['msg_id']]['completed'] for r in stamps],
 [repr(r.get('completed')) for r in stamps]]
""",
    )
    keys, stdouts, keys2, aware, ordered, same_completed, reprs = got
    assert keys == [["completed", "msg_id", "stdout"]] * N, keys
    assert stdouts == ["talking 5\n"] * N, stdouts
    assert keys2 == [["msg_id", "stdout"]] * N, f"msg_id is always included: {keys2}"
    assert aware == [[True] * 4] * N, f"timestamps not aware datetimes near now: {aware} {reprs}"
    assert ordered == [True] * N, f"submitted <= started <= completed <= received: {ordered} {reprs}"
    assert same_completed == [True] * N, f"record's completed != ar.metadata's: {reprs}"


def test_db_query_buffers_are_lists_of_bytes(k):
    """`keys=['buffers', 'result_buffers']`: lists of bytes, the request's
    holding the numpy argument's data and the result's the returned
    array's."""
    got = value(
        k,
        """
arr = np.arange(20000, dtype=np.int64)
ar = rc[0].apply_async(lambda a: a * 2, arr); out = ar.get(timeout=10)
rec = rc.db_query({'msg_id': ar.msg_ids[0]}, keys=['buffers', 'result_buffers'])[0]
rb, b = rec.get('result_buffers'), rec.get('buffers')
[sorted(rec), type(rb).__name__, type(b).__name__,
 all(isinstance(x, bytes) for x in rb or [None]), all(isinstance(x, bytes) for x in b or [None]),
 any((arr * 2).tobytes() in x for x in rb or []), any(arr.tobytes() in x for x in b or []),
 bool((out == arr * 2).all())]
""",
    )
    keys, rb_kind, b_kind, rb_bytes, b_bytes, result_in, arg_in, right = got
    assert keys == ["buffers", "msg_id", "result_buffers"], keys
    assert rb_kind == "list" and b_kind == "list", got
    assert rb_bytes is True and b_bytes is True, f"buffers not bytes: {got}"
    assert result_in is True, "the returned array's data is not in result_buffers"
    assert arg_in is True, "the argument's data is not in buffers"
    assert right is True, got


def test_db_query_default_keys_leave_out_buffers(k):
    """Without `keys`, a record has everything "but buffers" (ipyparallel's
    docstring: "The default is to fetch everything but buffers."): no
    `buffers` or `result_buffers` key, and the other task-record keys
    (header, content, submitted, started, completed, engine_uuid, stdout,
    result_content …)."""
    got = value(
        k,
        """
ar = rc[0].apply_async(lambda: 'default keys'); ar.get(timeout=10)
sorted(rc.db_query({'msg_id': ar.msg_ids[0]})[0])
""",
    )
    for key in ("msg_id", "header", "content", "submitted", "started", "completed",
                "received", "engine_uuid", "stdout", "stderr", "result_header", "result_content"):
        assert key in got, f"{key!r} missing from a default db_query record: {got}"
    assert "buffers" not in got and "result_buffers" not in got, (
        f"db_query without keys returned buffers (documented: everything but buffers): {got}"
    )


def test_db_query_unknown_operator_is_a_value_error(k):
    """`{'msg_id': {'$regex': ...}}` is a ValueError naming `$regex` and
    listing the operators that exist."""
    got = value(k, "raised(rc.db_query, {'msg_id': {'$regex': '^a'}})")
    assert got is not None and got[0] == "ValueError", got
    msg = got[1]
    assert "$regex" in msg, msg
    missing = [op for op in ("$in", "$nin", "$lt", "$gt", "$lte", "$gte", "$ne") if op not in msg]
    assert not missing, f"operators not listed in {msg!r}: {missing}"


# --------------------------------------------------------------------------
# 3. get_result


def test_get_result_from_another_client(k):
    """`rc2.get_result(ar.msg_ids)` of `rc`'s finished 2-engine request: an
    AsyncHubResult (repr `<AsyncHubResult…`, an instance of
    `rparallel.AsyncHubResult`) with the same values, the printed output in
    `.stdout`, each engine's id in its metadata; by a single msg_id the
    value itself; by the AsyncResult the same values."""
    got = value(
        k,
        """
def noisy(x):
    print('noisy', x)
    return x * 2
ar = rc[:].apply_async(noisy, 21); vals = ar.get(timeout=10)
h = rc2.get_result(ar.msg_ids)
h1 = rc2.get_result(ar.msg_ids[1])
hr = rc2.get_result(ar)
[vals, h.get(timeout=10), h.stdout, repr(h), isinstance(h, ipp.AsyncHubResult), h.msg_ids == ar.msg_ids,
 [m['engine_id'] for m in h.metadata], h.ready(), h.successful(),
 h1.get(timeout=10), h1.stdout, repr(h1), hr.get(timeout=10)]
""",
    )
    vals, hv, hout, hrepr, is_hub, same_ids, engines, ready, ok, v1, out1, repr1, hrv = got
    assert vals == [42] * N, vals
    assert hv == vals, f"rc2.get_result(...).get() = {hv}, expected {vals}"
    assert hout == ["noisy 21\n"] * N, f"stdout of the hub result: {hout!r}"
    assert hrepr.startswith("<AsyncHubResult"), hrepr
    assert is_hub is True and same_ids is True, got
    assert engines == list(range(N)), engines
    assert ready is True and ok is True, got
    assert v1 == 42 and out1 == "noisy 21\n" and repr1.startswith("<AsyncHubResult"), got
    assert hrv == vals, f"get_result(AsyncResult): {hrv}"


def test_get_result_of_an_unfinished_task_waits(k):
    """`rc2.get_result(msg_id)` of `rc`'s task still running (prints, sleeps
    1.5 s, prints, returns 7): not ready at first; `get()` waits and gives
    7, with both printed lines in `.stdout` (one printed before the
    get_result call)."""
    got = value(
        k,
        """
ar = rc[0].apply_async(slow_seven)
time.sleep(0.3)
recorded(ar)
h = rc2.get_result(ar.msg_ids[0])
at_once = h.ready()
t0 = time.monotonic()
v = h.get(timeout=10)
took = time.monotonic() - t0
[at_once, v, round(took, 2), h.stdout, ar.get(timeout=10)]
""",
    )
    at_once, v, took, stdout, own = got
    assert at_once is False, "the hub result of a running task is ready at once"
    assert v == 7 and own == 7, got
    assert 0.5 < took < 5, f"get() of the unfinished task took {took} s (about 1.2 s expected)"
    assert stdout == "begun\nended\n", f"stdout of the unfinished task's hub result: {stdout!r}"


def test_get_result_of_an_unknown_msg_id_is_a_key_error(k):
    """`get_result('no-such-msg-id')`, and of a list with a known msg_id and
    an unknown one, is a KeyError, and leaves nothing outstanding in the
    client (`rc.outstanding` without it, `rc.wait()` true at once). On a
    client of its own (`rc3`, closed after), so that a client left waiting
    forever does not hold up the other tests."""
    got = value(
        k,
        """
rc3 = ipp.Client(profile=c.profile)
try:
    ok = rc[0].apply_async(lambda: 1); ok.get(timeout=10)
    e1 = raised(rc3.get_result, 'no-such-msg-id')
    left1 = sorted(rc3.outstanding)
    e2 = raised(rc3.get_result, [ok.msg_ids[0], 'no-such-msg-id-2'])
    left2 = sorted(rc3.outstanding)
    waited = rc3.wait(timeout=1)
    e3 = raised(rc3.get_result, 'no-such-msg-id')
finally:
    rc3.close()
[e1, left1, e2, left2, waited, e3]
""",
    )
    e1, left1, e2, left2, waited, e3 = got
    problems = []
    if not (e1 and e1[0] == "KeyError"):
        problems.append(f"get_result('no-such-msg-id') raised {e1}")
    if not (e2 and e2[0] == "KeyError"):
        problems.append(f"get_result([known, 'no-such-msg-id-2']) raised {e2}")
    if not (e3 and e3[0] == "KeyError"):
        problems.append(f"get_result('no-such-msg-id') a second time raised {e3}")
    if left1 or left2 or waited is not True:
        problems.append(
            f"the client still waits for unknown msg_ids: outstanding {left1} after the first, "
            f"{left2} after the second; wait(timeout=1) -> {waited}"
        )
    assert not problems, "; ".join(problems)


def test_get_result_owner_false_keeps_results_in_the_client(k):
    """`rc2.get_result(msg_id, owner=False).get()` of a finished request of
    `rc`: the value is in `rc2.results[msg_id]`, its metadata (engine_id,
    completed) in `rc2.metadata[msg_id]`; with the default `owner=True`,
    `get()` leaves nothing in `rc2.results` ("calling ar.get() will remove
    data from the client's result and metadata cache")."""
    got = value(
        k,
        """
ar = rc[1].apply_async(lambda: {'k': 'v'}); ar.get(timeout=10)
mid = ar.msg_ids[0]
h = rc2.get_result(mid, owner=False)
v = h.get(timeout=10)
md = rc2.metadata.get(mid)
ar2 = rc[0].apply_async(lambda: 'owned'); ar2.get(timeout=10)
mid2 = ar2.msg_ids[0]
v2 = rc2.get_result(mid2).get(timeout=10)
[v, mid in rc2.results, rc2.results.get(mid), md is not None and md['engine_id'],
 md is not None and aware_utc(md['completed']), v2, mid2 in rc2.results]
""",
    )
    v, kept, kept_value, engine, completed, v2, owned_kept = got
    assert v == {"k": "v"}, got
    assert kept is True and kept_value == {"k": "v"}, f"owner=False: rc2.results[msg_id]: {got}"
    assert engine == 1 and completed is True, f"owner=False: rc2.metadata[msg_id]: {got}"
    assert v2 == "owned", got
    assert owned_kept is False, "owner=True: the value stayed in rc2.results after get()"


def test_get_result_owner_false_of_an_unfinished_task(k):
    """`rc2.get_result(msg_id, owner=False)` of a task still running: once
    `get()` returned 7, `rc2.results[msg_id]` is 7 and `rc2.metadata[msg_id]`
    is there."""
    got = value(
        k,
        """
ar = rc[0].apply_async(slow_seven)
recorded(ar)
mid = ar.msg_ids[0]
h = rc2.get_result(mid, owner=False)
v = h.get(timeout=10)
time.sleep(0.1)
[v, mid in rc2.results, rc2.results.get(mid), mid in rc2.metadata]
""",
    )
    assert got == [7, True, 7, True], f"[value, in results, results[msg_id], in metadata]: {got}"


def test_get_result_without_argument_is_the_last_request(k):
    """`rc2.get_result()` is the result of rc2's last request
    (`rc2.history[-1]`), as are `get_result(-1)` and the index
    `len(history) - 1`: a single value."""
    got = value(
        k,
        """
rc2[0].apply_async(lambda: 'first').get(timeout=10)
last = rc2[1].apply_async(lambda: 'last'); last.get(timeout=10)
h = rc2.get_result()
hm = rc2.get_result(-1)
hi = rc2.get_result(len(rc2.history) - 1)
[last.msg_ids, rc2.history[-1], h.msg_ids, h.get(timeout=10), hm.msg_ids, hm.get(timeout=10),
 hi.msg_ids, hi.get(timeout=10)]
""",
    )
    last, hist_last, ids, v, ids_m, v_m, ids_i, v_i = got
    assert [hist_last] == last, f"rc2.history[-1] is not its last request: {hist_last} vs {last}"
    assert ids == last and v == "last", f"get_result(): {ids} {v!r}"
    assert ids_m == last and v_m == "last", f"get_result(-1): {ids_m} {v_m!r}"
    assert ids_i == last and v_i == "last", f"get_result(index): {ids_i} {v_i!r}"


def test_get_result_of_an_execute_gives_execute_replies(k):
    """`rc2.get_result` of `rc[:].execute('print(...)\\n6 * 7',
    silent=False)`: one ExecuteReply per engine (`.stdout`, repr
    `<ExecuteReply[n]: 42>`), and the hub result's stdout."""
    got = value(
        k,
        """
ar = rc[:].execute('print("exec out")\\n6 * 7', silent=False); own = ar.get(timeout=10)
h = rc2.get_result(ar.msg_ids)
vals = h.get(timeout=10)
[[type(v).__name__ for v in vals], [getattr(v, 'stdout', None) for v in vals], [repr(v) for v in vals],
 [repr(v) for v in own], h.stdout]
""",
    )
    kinds, stdouts, reprs, own_reprs, hout = got
    assert kinds == ["ExecuteReply"] * N, got
    assert stdouts == ["exec out\n"] * N, got
    assert all(r.startswith("<ExecuteReply[") and r.endswith("]: 42>") for r in reprs), reprs
    assert reprs == own_reprs, f"hub result {reprs} vs the owner's {own_reprs}"
    assert hout == ["exec out\n"] * N, hout


def test_list_arguments_give_list_results(k):
    """As in ipyparallel (a list of jobs gives a multi-result
    AsyncHubResult): `get_result([msg_id]).get()` is `[value]`,
    `get_result(msg_id).get()` the value; `resubmit([msg_id]).get()` and
    `resubmit(msg_id).get()` are lists (resubmit always returns the results
    of a list of new msg_ids)."""
    got = value(
        k,
        """
ar = rc[0].apply_async(lambda: 'one'); ar.get(timeout=10)
mid = ar.msg_ids[0]
[rc2.get_result([mid]).get(timeout=10), rc2.get_result(mid).get(timeout=10),
 rc2.resubmit([mid]).get(timeout=10), rc2.resubmit(mid).get(timeout=10)]
""",
    )
    expected = [["one"], "one", ["one"], ["one"]]
    calls = ["get_result([msg_id])", "get_result(msg_id)", "resubmit([msg_id])", "resubmit(msg_id)"]
    wrong = [f"{call}.get() = {g!r}, expected {e!r}" for call, g, e in zip(calls, got, expected) if g != e]
    assert not wrong, "; ".join(wrong)


def test_block_true_still_returns_the_async_result(k):
    """`get_result(..., block=True)` and `resubmit(..., block=True)` wait,
    and return the AsyncResult (AsyncHubResult) itself, ready ("A single
    AsyncResult object will always be returned")."""
    got = value(
        k,
        """
ar = rc[0].apply_async(lambda: 'blk'); ar.get(timeout=10)
g = rc2.get_result(ar.msg_ids[0], block=True)
s = rc2.resubmit(ar.msg_ids, block=True)
[[type(x).__name__, isinstance(x, ipp.AsyncResult), isinstance(x, ipp.AsyncResult) and x.ready(), repr(x)]
 for x in (g, s)]
""",
    )
    wrong = [
        f"{name}(block=True) returned {kind} {rep}"
        for name, (kind, is_ar, ready, rep) in zip(("get_result", "resubmit"), got)
        if not (is_ar is True and ready is True)
    ]
    assert not wrong, "expected ready AsyncHubResults: " + "; ".join(wrong)


# --------------------------------------------------------------------------
# 4. resubmit


def test_resubmit_runs_again_under_new_msg_ids(k):
    """`rc2.resubmit(ar.msg_ids)` of `rc`'s request to engine 0 that
    increments a counter in the engine's namespace: the counter increments
    again (1, then 2), on the same engine, under a new msg_id, later in
    hub_history; the old record's `resubmitted` is the new msg_id; the
    result is an AsyncHubResult. A load-balanced `time.time` resubmitted
    gives a later time."""
    got = value(
        k,
        """
@ipp.interactive
def bump():
    global counter
    counter += 1
    return counter
rc[0].execute('counter = 0', block=True)
ar = rc[0].apply_async(bump); first = ar.get(timeout=10)
r = rc2.resubmit(ar.msg_ids)
second = r.get(timeout=10)
old = rc.db_query({'msg_id': ar.msg_ids[0]}, keys=['resubmitted'])
new = rc.db_query({'msg_id': {'$in': r.msg_ids}}, keys=['engine_uuid', 'resubmitted'])
h = rc.hub_history()
t = lv.apply_async(time.time); t1 = t.get(timeout=10)
time.sleep(0.05)
rt = rc2.resubmit(t.msg_ids); t2 = rt.get(timeout=10)
unlist = lambda v: v[0] if isinstance(v, list) and len(v) == 1 else v
[first, unlist(second), rc[0]['counter'], r.msg_ids, ar.msg_ids,
 old[0]['resubmitted'] if old else 'no record', [x['engine_uuid'] for x in new], ar.metadata['engine_uuid'],
 [x['resubmitted'] for x in new],
 [h.index(m) if m in h else None for m in ar.msg_ids + r.msg_ids],
 repr(r), isinstance(r, ipp.AsyncHubResult), unlist(t2) - t1, rt.msg_ids != t.msg_ids]
""",
    )
    (first, second, counter, new_ids, old_ids, resubmitted, new_uuids, uuid0, new_resub,
     where, rep, is_hub, dt, fresh_t) = got
    assert first == 1, got
    assert second == 2 and counter == 2, f"resubmitted bump() did not run again: {second}, counter {counter}"
    assert len(new_ids) == 1 and new_ids != old_ids, f"new msg_ids {new_ids} vs {old_ids}"
    assert resubmitted == new_ids[0], f"old record's resubmitted: {resubmitted!r}, new msg_id {new_ids[0]}"
    assert new_uuids == [uuid0], f"resubmitted to another engine: {new_uuids} vs {uuid0}"
    assert new_resub == [None], new_resub
    assert None not in where and where[0] < where[1], f"hub_history positions old/new: {where}"
    assert rep.startswith("<AsyncHubResult") and is_hub is True, rep
    assert dt > 0 and fresh_t is True, f"resubmitted time.time: {dt}"


def test_in_flight_tasks_cannot_be_resubmitted_or_purged(k):
    """While a task sleeps, `rc2.resubmit([it])` and
    `rc2.purge_hub_results([it])` are RuntimeErrors ("in-flight tasks may
    not be resubmitted"), and it stays in hub_history; once finished, the
    purge works and it leaves hub_history."""
    got = value(
        k,
        """
s = rc[0].apply_async(time.sleep, 1.2)
recorded(s)
S = s.msg_ids[0]
resub = raised(rc2.resubmit, [S])
purge = raised(rc2.purge_hub_results, [S])
still = S in rc.hub_history()
s.get(timeout=10)
later = raised(rc2.purge_hub_results, [S])
[resub, purge, still, later, S in rc.hub_history()]
""",
    )
    resub, purge, still, later, after = got
    assert resub is not None and resub[0] == "RuntimeError", f"resubmit of an in-flight task: {resub}"
    assert purge is not None and purge[0] == "RuntimeError", f"purge of an in-flight task: {purge}"
    assert still is True, "the in-flight task left hub_history"
    assert later is None and after is False, f"purge after it finished: {later}, still listed: {after}"


# --------------------------------------------------------------------------
# 5. purges


def test_purge_hub_results_by_msg_ids(k):
    """`rc.purge_hub_results(a.msg_ids)` and of another client's
    AsyncResult: they leave hub_history and db_query, `get_result` of them
    from rc2 is a KeyError; other records stay. As in ipyparallel, whose
    finished results leave `rc.results` once their AsyncResult owns them,
    `rc.get_result` of its own purged requests asks the record: KeyError
    too."""
    got = value(
        k,
        """
a = rc[:].apply_async(lambda: 'a'); a.get(timeout=10)
b = rc[0].apply_async(lambda: 'b'); b.get(timeout=10)
x = rc2[1].apply_async(lambda: 'x'); x.get(timeout=10)
e1 = raised(rc.purge_hub_results, a.msg_ids)
e2 = raised(rc.purge_hub_results, x)
h = rc.hub_history()
[e1, e2, [m in h for m in a.msg_ids], x.msg_ids[0] in h, b.msg_ids[0] in h,
 hub_ids({'msg_id': {'$in': a.msg_ids + x.msg_ids}}),
 raised(rc2.get_result, a.msg_ids[0]), raised(rc.get_result, x.msg_ids[0]),
 rc2.get_result(b.msg_ids[0]).get(timeout=10), raised(rc.get_result, a.msg_ids)]
""",
    )
    e1, e2, a_in, x_in, b_in, found, get_a, get_x, b_val, a_own = got
    assert e1 is None and e2 is None, got
    assert a_in == [False] * N and x_in is False, f"purged requests still in hub_history: {got}"
    assert b_in is True, "an unpurged request left hub_history"
    assert found == [], f"db_query still finds purged records: {found}"
    assert get_a is not None and get_a[0] == "KeyError", f"rc2.get_result of a purged record: {get_a}"
    assert get_x is not None and get_x[0] == "KeyError", f"rc.get_result of rc2's purged record: {get_x}"
    assert b_val == "b", got
    assert a_own is not None and a_own[0] == "KeyError", f"rc.get_result of its own purged requests: {a_own}"


def test_purge_local_results_then_get_result_fetches_from_the_record(k):
    """After `rc.purge_local_results(ar)` the result can still be had with
    `rc.get_result(msg_id)` "from the hub" (value and stdout)."""
    got = value(
        k,
        """
def hello():
    print('hello again')
    return 'again'
ar = rc[1].apply_async(hello); ar.get(timeout=10)
mid = ar.msg_ids[0]
e = raised(rc.purge_local_results, ar)
h = rc.get_result(mid)
[e, mid in rc.results, h.get(timeout=10), h.stdout]
""",
    )
    assert got == [None, False, "again", "hello again\n"], got


def test_purge_results_forgets_here_and_in_the_record(k):
    """`rc.purge_results(ar)` ("clears the cached results from both the hub
    and the local client"): the record is gone (hub_history, db_query) and
    `rc.get_result(msg_id)` is a KeyError."""
    got = value(
        k,
        """
ar = rc[0].apply_async(lambda: 'both'); ar.get(timeout=10)
mid = ar.msg_ids[0]
e = raised(rc.purge_results, ar)
get = raised(lambda: rc.get_result(mid).get(timeout=5))
[e, mid in rc.hub_history(), hub_ids({'msg_id': mid}), mid in rc.results,
 get or ['returned', repr(rc.get_result(mid).get(timeout=5))]]
""",
    )
    e, in_hist, found, in_results, get = got
    assert e is None, e
    assert in_hist is False and found == [], f"purge_results left the record: {got}"
    assert in_results is False, got
    assert get[0] == "KeyError", f"rc.get_result(msg_id) after purge_results: {get}"


def test_purge_hub_results_of_engine_0(k):
    """`rc.purge_hub_results(targets=[0])` removes the finished records of
    engine 0 (from either client), not engine 1's; with a task still
    running on engine 0 it removes the finished ones and keeps the running
    one (whose result rc2 can then fetch)."""
    got = value(
        k,
        """
e0 = rc[0].apply_async(lambda: 0); e0.get(timeout=10)
e0b = rc2[0].apply_async(lambda: 0); e0b.get(timeout=10)
e1 = rc[1].apply_async(lambda: 1); e1.get(timeout=10)
u0 = e0.metadata['engine_uuid']
err = raised(rc.purge_hub_results, targets=[0])
h = rc.hub_history()
first = [err, e0.msg_ids[0] in h, e0b.msg_ids[0] in h, e1.msg_ids[0] in h, hub_ids({'engine_uuid': u0})]
f0 = rc[0].apply_async(lambda: 'f0'); f0.get(timeout=10)
slow0 = rc[0].apply_async(time.sleep, 1.2)
recorded(slow0)
err2 = raised(rc.purge_hub_results, targets=[0])
h = rc.hub_history()
second = [err2, f0.msg_ids[0] in h, slow0.msg_ids[0] in h, e1.msg_ids[0] in h]
slow0.get(timeout=10)
[first, second, raised(lambda: rc2.get_result(slow0.msg_ids[0]).get(timeout=10))]
""",
    )
    first, second, fetch = got
    err, e0_in, e0b_in, e1_in, left0 = first
    assert err is None, f"purge_hub_results(targets=[0]): {err}"
    assert e0_in is False and e0b_in is False, f"engine 0's records still in hub_history: {first}"
    assert left0 == [], f"records of engine 0 left: {left0}"
    assert e1_in is True, "engine 1's record was purged"
    err2, f0_in, slow_in, e1_in2 = second
    assert err2 is None, f"purge_hub_results(targets=[0]) with a task running on engine 0: {err2}"
    assert f0_in is False, f"engine 0's finished record kept while another task ran there: {second}"
    assert slow_in is True and e1_in2 is True, second
    assert fetch is None, f"rc2.get_result of the task that was running: {fetch}"


def test_purge_everything(k):
    """`rc.purge_everything()` while rc2 has a task running: hub_history
    holds only that unfinished task (every finished record, any client's,
    gone), rc's history, results and metadata are empty; rc2 still gets
    its result, and rc works as before."""
    got = value(
        k,
        """
w = rc[0].apply_async(lambda: 'w'); w.get(timeout=10)
o = rc2[0].apply_async(lambda: 'o'); o.get(timeout=10)
r2 = rc2[1].apply_async(time.sleep, 1.0)
recorded(r2)
err = raised(rc.purge_everything)
h = rc.hub_history()
state = [len(rc.history), len(rc.results), len(rc.metadata), len(hub_ids({'completed': {'$ne': None}}))]
r2.get(timeout=10)
after = rc.hub_history()
[err, h, r2.msg_ids, state, after, rc[0].apply_sync(lambda: 'still')]
""",
    )
    err, h, running, state, after, still = got
    assert err is None, f"purge_everything: {err}"
    assert h == running, f"hub_history after purge_everything: {h}, expected only the running {running}"
    assert state == [0, 0, 0, 0], f"[len(rc.history), len(rc.results), len(rc.metadata), finished records]: {state}"
    assert after == running, f"hub_history once the running task finished: {after}"
    assert still == "still", got


# --------------------------------------------------------------------------
# 6. limits


def test_large_result_and_argument(k):
    """A 2 MiB numpy result (over the 1 MiB a message may keep): its record
    exists (finished, with no result buffers), rc2's `get_result` is a
    RuntimeError saying "too large", rc (the owner) still has it. A 2 MiB
    argument: the result is fetchable, but `resubmit` is a RuntimeError
    saying "too large". Smaller results still come from the record."""
    got = value(
        k,
        """
big = rc[0].apply_async(lambda: np.ones(2**18)); arr = big.get(timeout=30)
B = big.msg_ids[0]
rec = rc.db_query({'msg_id': B}, keys=['completed', 'result_buffers'])
e = raised(lambda: rc2.get_result(B).get(timeout=10))
own = rc.get_result(B).get(timeout=10)
bigarg = rc[1].apply_async(lambda a: float(a.sum()), np.ones(2**18)); s = bigarg.get(timeout=30)
A = bigarg.msg_ids[0]
small = rc[0].apply_async(lambda: 'small'); small.get(timeout=10)
[list(arr.shape), len(rec), bool(rec) and rec[0]['completed'] is not None,
 bool(rec) and sum(len(b) for b in rec[0]['result_buffers']), e, list(own.shape),
 s, raised(lambda: rc2.get_result(A).get(timeout=10)) or rc2.get_result(A).get(timeout=10),
 raised(rc2.resubmit, [A]), rc2.get_result(small.msg_ids[0]).get(timeout=10)]
""",
    )
    shape, n_rec, done, kept_bytes, err, own, s, arg_result, resub, small = got
    assert shape == [2**18] and own == [2**18], got
    assert n_rec == 1 and done is True, f"the 2 MiB result's record: {got}"
    problems = []
    if not (err and err[0] == "RuntimeError" and "too large" in err[1]):
        problems.append(f"rc2.get_result of the 2 MiB result raised {err} (record kept {kept_bytes} bytes)")
    if not (s == 2.0**18 and arg_result == 2.0**18):
        problems.append(f"the 2 MiB-argument task's result from rc2: {arg_result} (own {s})")
    if not (resub and resub[0] == "RuntimeError" and "too large" in resub[1]):
        problems.append(f"resubmit of the 2 MiB-argument request raised {resub}")
    if small != "small":
        problems.append(f"a small result after them: {small!r}")
    assert not problems, "; ".join(problems)


def test_record_keeps_the_last_4096_requests(k):
    """5,000 tiny load-balanced tasks: hub_history is exactly the last
    4,096 of them, the oldest's get_result (from rc2) a KeyError, the
    newest's its value."""
    got = value(
        k,
        """
ars = [lv.apply_async(lambda i: i * 3, i) for i in range(5000)]
done = rc.wait(ars, timeout=90)
batch = [a.msg_ids[0] for a in ars]
h = rc.hub_history()
out = [done, len(h), h == batch[-4096:], raised(rc2.get_result, batch[0]),
       rc2.get_result(batch[-1]).get(timeout=10), [a.get(0) for a in ars[-3:]]]
rc.purge_local_results(ars)
del ars
out
""",
        timeout=100,
    )
    done, length, last, oldest, newest, vals = got
    assert done is True, "5,000 tiny tasks did not finish in 90 s"
    assert length == MAX_RECORDS, f"hub_history after 5,000 tasks has {length} entries, expected {MAX_RECORDS}"
    assert last is True, "hub_history is not the last 4,096 requests"
    assert oldest is not None and oldest[0] == "KeyError", f"get_result of a request beyond 4,096: {oldest}"
    assert newest == 4999 * 3 and vals == [4997 * 3, 4998 * 3, 4999 * 3], got


def test_record_buffers_stay_within_16_mib(kernel_and_cluster, k):
    """200 load-balanced results of 900 KiB (~176 MiB, each under the 1 MiB
    a message may keep): the record keeps at most 16 MiB of result buffers,
    the newest (rc2 fetches the last one), not the oldest (RuntimeError);
    the controller's RSS grows by less than 16 MiB + 32 MiB, and not by
    more than 16 MiB over the second 100 results."""
    profile = value(k, "c.profile")
    pid = controller_pid(profile)
    before = rss_mib(pid)
    cell = """
mids = []
for _ in range(5):
    base = len(all_mids) + len(mids)
    batch = [lv.apply_async(lambda i: np.full(900 * 1024, i % 251, dtype=np.uint8), base + i) for i in range(20)]
    assert rc.wait(batch, timeout=60)
    mids += [a.msg_ids[0] for a in batch]
    rc.purge_local_results(batch)
    del batch
all_mids += mids
len(mids)
"""
    execute_ok(k, "all_mids = []", timeout=10)
    rss = []
    for _ in range(2):
        assert value(k, cell, timeout=90) == 100
        rss.append(rss_mib(pid))
    got = value(
        k,
        """
recs = rc.db_query({'msg_id': {'$in': all_mids}}, keys=['result_buffers'])
kept = {r['msg_id']: sum(len(b) for b in r['result_buffers']) for r in recs}
last = rc2.get_result(all_mids[-1]).get(timeout=10)
[len(all_mids), len(recs), sum(kept.values()), kept.get(all_mids[-1]), kept.get(all_mids[0]),
 int(last[0]), int(last.size), raised(lambda: rc2.get_result(all_mids[0]).get(timeout=10))]
""",
    )
    n, n_recs, total, newest, oldest, last0, last_size, old_err = got
    assert n == 200 and n_recs == 200, f"records of the 200 tasks: {n_recs}"
    assert total <= MAX_BUFFER_BYTES, f"the record keeps {total / MIB:.1f} MiB of result buffers (> 16 MiB)"
    assert total >= MAX_BUFFER_BYTES - 2 * MIB, f"only {total / MIB:.1f} MiB kept: the newest should fill 16 MiB"
    assert newest and newest >= 900 * 1024, f"the newest result's buffers: {newest}"
    assert oldest == 0, f"the oldest result still keeps {oldest} bytes"
    assert last0 == 199 % 251 and last_size == 900 * 1024, got
    assert old_err is not None and old_err[0] == "RuntimeError", f"get_result of an evicted result: {old_err}"
    grown = rss[-1] - before
    assert grown < 16 + 32, f"controller RSS {before:.0f} -> {rss} MiB after 176 MiB of results"
    assert rss[1] - rss[0] < 16, f"controller RSS grew {rss[1] - rss[0]:.0f} MiB over the second 100 results"
    execute_ok(k, "del all_mids, recs, kept, last\nrc.purge_local_results('all')", timeout=10)


# --------------------------------------------------------------------------
# 7. db='none'


def test_cluster_without_a_record(k):
    """`ipp.Cluster(n=1, db='none')`: `hub_history()` and `db_query({})`
    are RuntimeErrors mentioning "--db none", `get_result` of a msg_id
    the client does not have fails; direct and load-balanced work runs, and
    the client's own results are still there (`get_result` of them)."""
    got = value(
        k,
        """
cn = ipp.Cluster(n=1, db='none')
rcn = cn.start_and_connect_sync()
try:
    rcn.wait_for_engines(1, timeout=30)
    work = rcn[:].apply_sync(lambda: 6 * 7)
    lb = rcn.load_balanced_view().apply_async(lambda x: x + 1, 1).get(timeout=10)
    ar = rcn[0].apply_async(lambda: 'mine'); ar.get(timeout=10)
    own = rcn.get_result(ar.msg_ids[0]).get(timeout=10)
    errs = [raised(rcn.hub_history), raised(rcn.db_query, {}), raised(rcn.get_result, 'no-such-msg-id')]
    npid = rcn[:].apply_sync(os.getpid)
finally:
    rcn.close()
    cn.stop_cluster_sync()
[work, lb, own, errs, npid]
""",
        timeout=90,
    )
    work, lb, own, errs, npid = got
    assert work == [42] and lb == 2 and own == "mine", got
    hist, query, unknown = errs
    assert hist is not None and hist[0] == "RuntimeError" and "--db none" in hist[1], f"hub_history: {hist}"
    assert query is not None and query[0] == "RuntimeError" and "--db none" in query[1], f"db_query: {query}"
    assert unknown is not None, "get_result of an unknown msg_id without a record succeeded"
    assert wait_pid_gone(npid[0], 10), f"the db='none' cluster's engine {npid[0]} still runs"


def test_result_status(k):
    """`rc.result_status(msg_ids)`: pending and completed lists from the
    record (any client's requests); `status_only=False` adds the completed
    values by msg_id; an unknown msg_id is a KeyError."""
    got = value(
        k,
        """
done = rc2[0].apply_async(lambda: 'done'); done.get(timeout=10)
slow = rc2[1].apply_async(slow_seven)
recorded(slow)
s1 = rc.result_status(done.msg_ids + slow.msg_ids)
s2 = rc.result_status(done.msg_ids, status_only=False)
slow.get(timeout=30)
[s1['completed'] == done.msg_ids, s1['pending'] == slow.msg_ids,
 s2.get(done.msg_ids[0]), raised(rc.result_status, ['no-such-msg-id'])]
""",
    )
    assert got[:3] == [True, True, "done"], got
    assert got[3] is not None and got[3][0] == "KeyError", got
