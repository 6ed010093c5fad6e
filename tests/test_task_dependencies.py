"""Task dependencies on `rc.load_balanced_view()` through jupyter_client in
the rparallel kernel, on a 4-engine cluster the kernel starts (ipyparallel
9's semantics, docs/source/tutorial/task.md "Dependencies"):

- `ipp.Dependency`, a `set` of msg_ids with `all`/`success`/`failure`
  switches, `check`, `unreachable` and `as_dict`;
- graph dependencies: `after=` (run only once those tasks are done) and
  `follow=` (run where they ran), given as AsyncResults, msg_id lists or
  Dependency objects, through `set_flags` and `temp_flags`; a DAG of 201
  tasks whose every task starts after all its parents finished;
- the errors of impossible graphs (`InvalidDependency` for unknown msg_ids,
  `ImpossibleDependency` for failed dependencies or a `follow` spread over
  two engines), raised by `ar.get()` as RemoteErrors that are also
  instances of the class of `ipp.error` they name;
- functional dependencies (`@ipp.depend`, `ipp.dependent`, `@ipp.require`):
  the engine checks first, and the scheduler tries each other engine once;
  a task no engine accepts fails with TaskTimeout (after `timeout`) or,
  with explicit targets that all refused, ImpossibleDependency;
- `lv.abort()` of queued tasks (TaskAborted) and `lv.wait()`.

Every wait has a timeout; results come back as JSON through `value()`."""

from __future__ import annotations

import pytest

from balanced_helpers import TIMED_OUT, balanced_cluster
from kernel_helpers import IS_RPARALLEL, value

pytestmark = pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own cluster")

MORE = """
def stamp(d):
    '''Sleeps d seconds; returns [start, end] (time.time()).'''
    import time
    t0 = time.time()
    time.sleep(d)
    return [t0, time.time()]

def boom(d=0):
    '''Fails with ValueError after d seconds.'''
    import time
    time.sleep(d)
    raise ValueError('boom')
"""

# The outcomes of `outcome()` for the scheduler's errors.
INVALID = ["error", "InvalidDependency",
           ["RemoteError", "UnmetDependency", "ImpossibleDependency", "InvalidDependency"]]
IMPOSSIBLE = ["error", "ImpossibleDependency",
              ["RemoteError", "UnmetDependency", "ImpossibleDependency"]]
ABORTED = ["error", "TaskAborted", ["RemoteError", "TaskAborted"]]


@pytest.fixture
def lb(kc):
    """A kernel with `c` (4 engines), `rc`, `lv`, `pids` (the engines'
    pids by id), `outcome()`, `stamp()` and `boom()`; the cluster is
    stopped after."""
    yield from balanced_cluster(kc, MORE)


# --------------------------------------------------------------------------
# 1. the Dependency object


def test_dependency_object(lb):
    """`ipp.Dependency` is a set of msg_ids built from strings, AsyncResults
    (all their msg_ids) and lists of both, defaulting to all=True,
    success=True, failure=False; `check` and `unreachable` follow the
    all/any and success/failure switches; `as_dict` round-trips; neither
    success nor failure is a ValueError, a non-id a TypeError."""
    got = value(
        lb,
        """
ar = lv.apply_async(lambda: 1)
m = lv.map_async(abs, range(3))
ar.get(timeout=10); m.get(timeout=10)
D = ipp.Dependency
d0 = D()
d = D(['a', 'b'])
d_any = D(['a', 'b'], all=False)
d_fail = D(['a', 'b'], success=False, failure=True)
d_both = D(['a', 'b'], success=True, failure=True)
mixed = D([ar, 'x', m])
def err(f):
    try:
        f()
    except Exception as e:
        return type(e).__name__
    return None
out = [
    isinstance(d, set), sorted(d), [d.all, d.success, d.failure],
    sorted(D('abc')), D(ar) == set(ar.msg_ids), len(m.msg_ids),
    mixed == set(ar.msg_ids) | {'x'} | set(m.msg_ids),
    [d0.check(set()), d0.unreachable(set(), {'a'})],
    [d.check({'a', 'b'}), d.check({'a'}), d.check({'a'}, {'b'}), d.check({'a', 'b', 'c'}, set()),
     d.unreachable({'a'}, {'b'}), d.unreachable({'a'}), d.unreachable(set(), set())],
    [d_any.check({'a'}), d_any.check(set(), {'a'}), d_any.unreachable(set(), {'a'}),
     d_any.unreachable(set(), {'a', 'b'})],
    [d_fail.check(set(), {'a', 'b'}), d_fail.check({'a', 'b'}, set()), d_fail.check(set()),
     d_fail.unreachable({'a'}, set()), d_fail.unreachable(set(), {'a'})],
    [d_both.check({'a'}, {'b'}), d_both.unreachable({'a'}, {'b'})],
    sorted((k, sorted(v) if k == 'dependencies' else v) for k, v in d_fail.as_dict().items()),
    D(d_any.as_dict()) == d_any, [D(d_any.as_dict()).all, D(d_fail.as_dict()).success],
    err(lambda: D(['a'], success=False, failure=False)), err(lambda: D([42])),
]
out
""",
        timeout=30,
    )
    assert got[0:3] == [True, ["a", "b"], [True, True, False]], got
    assert got[3] == ["abc"], got
    assert got[4] is True and got[5] == 3 and got[6] is True, got
    assert got[7] == [True, False], got
    assert got[8] == [True, False, False, True, True, False, False], got
    assert got[9] == [True, False, False, True], got
    assert got[10] == [True, False, False, True, False], got
    assert got[11] == [True, False], got
    assert got[12] == [["all", True], ["dependencies", ["a", "b"]], ["failure", True],
                       ["success", False]], got
    assert got[13] is True and got[14] == [False, False], got
    assert got[15:] == ["ValueError", "TypeError"], got


# --------------------------------------------------------------------------
# 2. after= : time dependencies


def test_after_waits_for_its_dependencies(lb):
    """A task with `after=` starts only once every task it names has
    finished — given as a list of AsyncResults (`temp_flags`), a list of
    msg_ids (`set_flags`) or a Dependency — while a task without it,
    submitted at the same moment, starts at once; the flags are back to
    their old values afterwards."""
    got = value(
        lb,
        """
before = [lv.after, lv.follow]
a = lv.apply_async(stamp, 0.6)
b = lv.apply_async(stamp, 0.3)
free = lv.apply_async(stamp, 0)
with lv.temp_flags(after=[a, b]):
    c1 = lv.apply_async(stamp, 0)
restored = [lv.after, lv.follow] == before
lv.set_flags(after=a.msg_ids + b.msg_ids)
c2 = lv.apply_async(stamp, 0)
lv.set_flags(after=None)
with lv.temp_flags(after=ipp.Dependency([a, b])):
    c3 = lv.apply_async(stamp, 0)
end = max(a.get(timeout=10)[1], b.get(timeout=10)[1])
starts = [x.get(timeout=10)[0] for x in (c1, c2, c3)]
[[s >= end for s in starts], free.get(timeout=10)[0] < end, restored, bool(lv.after)]
""",
        timeout=30,
    )
    assert got == [[True, True, True], True, True, False], got


def test_unknown_msg_id_is_an_invalid_dependency(lb):
    """`after='12345'` or `follow=['12345']` (no such task) fails the task at
    once with InvalidDependency, which `except ipp.error.InvalidDependency`
    and `except ipp.error.ImpossibleDependency` catch; it never runs, and
    the view works after."""
    got = value(
        lb,
        """
t0 = time.monotonic()
with lv.temp_flags(after='12345'):
    a = lv.apply_async(lambda: 'ran')
with lv.temp_flags(follow=['12345']):
    f = lv.apply_async(lambda: 'ran')
res = [outcome(a), outcome(f)]
took = time.monotonic() - t0
caught = []
for cls in ('InvalidDependency', 'ImpossibleDependency'):
    with lv.temp_flags(after=['12345']):
        x = lv.apply_async(lambda: 'ran')
    try:
        x.get(timeout=10)
    except getattr(ipp.error, cls) as e:
        caught.append(e.ename)
[res, took < 2, caught, lv.apply_async(lambda: 'fine').get(timeout=10)]
""",
        timeout=30,
    )
    assert got == [[INVALID, INVALID], True, ["InvalidDependency"] * 2, "fine"], got


def test_failed_dependency_makes_a_task_impossible(lb):
    """With the default switches (success=True, failure=False) a task after
    one that raised can never run: ImpossibleDependency, both when the
    failure comes while the task waits and when it was known at
    submission (then at once); `except ipp.error.ImpossibleDependency`
    catches it and `except ipp.error.UnmetDependency` too."""
    got = value(
        lb,
        """
bad = lv.apply_async(boom, 0.3)
with lv.temp_flags(after=ipp.Dependency([bad], success=True, failure=False)):
    waiting = lv.apply_async(lambda: 'ran')
with lv.temp_flags(after=bad):
    waiting2 = lv.apply_async(lambda: 'ran')
first = [outcome(bad), outcome(waiting), outcome(waiting2)]
t0 = time.monotonic()
with lv.temp_flags(after=[bad]):
    known = lv.apply_async(lambda: 'ran')
second = outcome(known)
took = time.monotonic() - t0
caught = []
for cls in ('ImpossibleDependency', 'UnmetDependency', 'RemoteError'):
    with lv.temp_flags(after=bad):
        x = lv.apply_async(lambda: 'ran')
    try:
        x.get(timeout=10)
    except getattr(ipp.error, cls) as e:
        caught.append(e.ename)
[first, second, took < 2, caught]
""",
        timeout=30,
    )
    assert got[0] == [["error", "ValueError", ["RemoteError"]], IMPOSSIBLE, IMPOSSIBLE], got
    assert got[1] == IMPOSSIBLE and got[2] is True, got
    assert got[3] == ["ImpossibleDependency"] * 3, got


def test_success_and_failure_switches(lb):
    """`success=False, failure=True` runs a cleanup task only after a
    failure (after a success it is impossible); `success=True,
    failure=True` runs after either; the cleanup starts after the failed
    task ended."""
    got = value(
        lb,
        """
bad = lv.apply_async(boom, 0.3)
good = lv.apply_async(stamp, 0.3)
def cleanup():
    import time
    return ['cleanup', time.time()]
with lv.temp_flags(after=ipp.Dependency([bad], success=False, failure=True)):
    on_failure = lv.apply_async(cleanup)
with lv.temp_flags(after=ipp.Dependency([good], success=False, failure=True)):
    on_success = lv.apply_async(cleanup)
with lv.temp_flags(after=ipp.Dependency([bad], success=True, failure=True)):
    either_bad = lv.apply_async(cleanup)
with lv.temp_flags(after=ipp.Dependency([good], success=True, failure=True)):
    either_good = lv.apply_async(cleanup)
with lv.temp_flags(after=ipp.Dependency([bad, good], success=True, failure=True)):
    both = lv.apply_async(cleanup)
res = [outcome(x) for x in (on_failure, on_success, either_bad, either_good, both)]
good_end = good.get(timeout=10)[1]
out = [[r[0] for r in res], [r[1][0] if r[0] == 'ok' else r[1] for r in res],
 either_good.get(timeout=1)[1] >= good_end, both.get(timeout=1)[1] >= good_end, res[1]]
out
""",
        timeout=30,
    )
    assert got[0] == ["ok", "error", "ok", "ok", "ok"], got
    assert got[1] == ["cleanup", "ImpossibleDependency", "cleanup", "cleanup", "cleanup"], got
    assert got[2] is True and got[3] is True, got
    assert got[4] == IMPOSSIBLE, got


def test_any_of_the_dependencies(lb):
    """`all=False`: the task runs once any one dependency succeeded (before
    the slow one ended); with one failed and one succeeded it runs; when
    all of them failed it is ImpossibleDependency."""
    got = value(
        lb,
        """
slow = lv.apply_async(stamp, 1.2)
fast = lv.apply_async(stamp, 0.1)
with lv.temp_flags(after=ipp.Dependency([slow, fast], all=False)):
    anyone = lv.apply_async(stamp, 0)
start = anyone.get(timeout=10)[0]
early = [start >= fast.get(timeout=10)[1], start < slow.get(timeout=10)[1]]
bad1 = lv.apply_async(boom)
bad2 = lv.apply_async(boom, 0.2)
with lv.temp_flags(after=ipp.Dependency([bad1, fast], all=False)):
    one_ok = lv.apply_async(lambda: 'ran')
with lv.temp_flags(after=ipp.Dependency([bad1, bad2], all=False)):
    none_ok = lv.apply_async(lambda: 'ran')
[early, outcome(one_ok), outcome(none_ok)]
""",
        timeout=30,
    )
    assert got == [[True, True], ["ok", "ran"], IMPOSSIBLE], got


# --------------------------------------------------------------------------
# 3. follow= : location dependencies


def test_follow_runs_where_the_dependency_ran(lb):
    """8 tasks of 50 ms with `follow=ar` all run on the engine that ran
    `ar` (same pid, same `engine_id`), where the same 8 tasks without it
    spread over several engines."""
    got = value(
        lb,
        """
work = lambda: (time.sleep(0.05), os.getpid())[1]
first = lv.apply_async(lambda: (time.sleep(0.1), os.getpid())[1])
with lv.temp_flags(follow=first):
    followers = [lv.apply_async(work) for _ in range(8)]
with lv.temp_flags(follow=first.msg_ids):
    followers += [lv.apply_async(work) for _ in range(2)]
fpid = first.get(timeout=10)
got = [f.get(timeout=10) for f in followers]
spread = len(set(lv.map_sync(lambda x: (time.sleep(0.05), os.getpid())[1], range(8))))
out = [fpid in pids, pids.index(fpid) == first.engine_id, got == [fpid] * 10,
 sorted({f.engine_id for f in followers}) == [first.engine_id], spread > 1]
out
""",
        timeout=30,
    )
    assert got == [True, True, True, True, True], got


def test_follow_on_two_engines_is_impossible(lb):
    """`follow=[ar0, ar1]` where ar0 ran on engine 0 and ar1 on engine 1
    (all=True) can never be met: ImpossibleDependency; with
    `Dependency([ar0, ar1], all=False)` each task runs on engine 0 or 1."""
    got = value(
        lb,
        """
a0 = rc.load_balanced_view(targets=[0]).apply_async(os.getpid)
a1 = rc.load_balanced_view(targets=[1]).apply_async(os.getpid)
ran = [a0.get(timeout=10), a1.get(timeout=10)]
with lv.temp_flags(follow=[a0, a1]):
    both = lv.apply_async(os.getpid)
with lv.temp_flags(follow=ipp.Dependency([a0, a1], all=False)):
    either = [lv.apply_async(lambda: (time.sleep(0.05), os.getpid())[1]) for _ in range(6)]
where = sorted({x.get(timeout=10) for x in either})
out = [ran == pids[:2], [a0.engine_id, a1.engine_id], outcome(both),
 set(where) <= set(pids[:2]), len(where) >= 1]
out
""",
        timeout=30,
    )
    assert got == [True, [0, 1], IMPOSSIBLE, True, True], got


# --------------------------------------------------------------------------
# 4. a DAG


DAG = """
import random
random.seed(5)

def node(i, d):
    import time
    t0 = time.time()
    time.sleep(d)
    return [i, t0, time.time()]

# 50 diamonds in a chain: top -> left, right -> bottom (the next top) ...
parents, sleep = {0: []}, {0: 0.002}
n, top = 1, 0
for _ in range(50):
    l, r, b = n, n + 1, n + 2
    parents[l], parents[r], parents[b] = [top], [top], [l, r]
    sleep[l], sleep[r], sleep[b] = 0.005 + 0.005 * random.random(), 0.005, 0.001
    top, n = b, n + 3
# ... and 50 tasks hanging off one or two random earlier ones
for _ in range(50):
    parents[n] = random.sample(range(n), random.choice([1, 2]))
    sleep[n] = 0.004 * random.random()
    n += 1

# submitted in index order (parents first), the dependencies given three ways
ars = {}
t0 = time.monotonic()
for i in range(n):
    deps = [ars[p] for p in parents[i]]
    if i % 3 == 1:
        deps = [m for ar in deps for m in ar.msg_ids]
    elif i % 3 == 2:
        deps = ipp.Dependency(deps)
    with lv.temp_flags(after=deps):
        ars[i] = lv.apply_async(node, i, sleep[i])
res = {i: ar.get(timeout=30) for i, ar in ars.items()}
took = time.monotonic() - t0
late = [(p, i) for i in range(n) for p in parents[i] if res[i][1] < res[p][2]]
"""


def test_dag_every_task_starts_after_its_parents(lb):
    """A graph of 201 tasks — a chain of 50 diamonds (top → left, right →
    bottom) plus 50 tasks on one or two random earlier ones — submitted
    with `after=` (AsyncResults, msg_ids, Dependency): every task ran,
    returned its own index, and started after all of its parents had
    finished, in a few seconds."""
    got = value(lb, DAG + "\n[n, [res[i][0] for i in range(n)] == list(range(n)), late, took]",
                timeout=60)
    n, in_order, late, took = got
    assert n == 201 and in_order is True, got
    assert late == [], f"tasks that started before a parent finished: {late}"
    assert took < 15, got


# --------------------------------------------------------------------------
# 5. functional dependencies


def test_functional_dependency_picks_the_engine(lb):
    """`@ipp.depend(on_pid, pid2)` and `ipp.dependent(task, on_pid, pid2)`:
    the engine calls `on_pid(pid2)` first and refuses where it is False,
    so all 8 + 4 tasks (which would otherwise spread) run on engine 2."""
    got = value(
        lb,
        """
pid2 = rc[2].apply_sync(os.getpid)
def on_pid(p):
    import os
    return os.getpid() == p
@ipp.depend(on_pid, pid2)
def where(x):
    import os, time
    time.sleep(0.05)
    return os.getpid()
def plain():
    import os, time
    time.sleep(0.05)
    return os.getpid()
decorated = [lv.apply_async(where, i) for i in range(8)]
wrapped = ipp.dependent(plain, on_pid, pid2)
direct = [lv.apply_async(wrapped) for _ in range(4)]
spread = len(set(lv.map_sync(lambda x: plain(), range(8))))
[pid2 == pids[2], [outcome(a) for a in decorated], [outcome(a) for a in direct], spread > 1]
""",
        timeout=30,
    )
    assert got[0] is True, got
    pid2 = value(lb, "pids[2]")
    assert got[1] == [["ok", pid2]] * 8, got
    assert got[2] == [["ok", pid2]] * 4, got
    assert got[3] is True, got


def test_unmet_functional_dependency_times_out(lb):
    """A dependency no engine meets, without targets: the scheduler tries
    each of the 4 engines exactly once, then the task waits until its
    `timeout` (1 s) and fails with TaskTimeout; `@ipp.require` of a module
    that does not exist the same (timeout 0.5 s); engines work after."""
    got = value(
        lb,
        """
d = tempfile.mkdtemp()
def refuse(d):
    import os, uuid
    open(os.path.join(d, '%d-%s' % (os.getpid(), uuid.uuid4().hex)), 'w').close()
    return False
never = ipp.dependent(lambda: 'ran', refuse, d)
t0 = time.monotonic()
with lv.temp_flags(timeout=1):
    ar = lv.apply_async(never)
res = outcome(ar, 10)
took = time.monotonic() - t0
tried = sorted(int(f.split('-')[0]) for f in os.listdir(d))

@ipp.require('not_a_module_xyz')
def needs():
    return 'ran'
t1 = time.monotonic()
with lv.temp_flags(timeout=0.5):
    ar2 = lv.apply_async(needs)
res2 = outcome(ar2, 10)
took2 = time.monotonic() - t1
out = [res, 0.9 <= took < 5, tried == sorted(pids), res2, 0.4 <= took2 < 5,
 lv.map_async(lambda x: x + 1, range(8)).get(timeout=10)]
out
""",
        timeout=40,
    )
    assert got[0] == TIMED_OUT, got
    assert got[1] is True and got[2] is True, got
    assert got[3] == TIMED_OUT and got[4] is True, got
    assert got[5] == list(range(1, 9)), got


def test_unmet_functional_dependency_on_targets_is_impossible(lb):
    """With `targets=[0, 1]` and both engines refusing (a False dependency,
    or `@ipp.require('not_a_module_xyz')`), the task fails soon with
    ImpossibleDependency, each of the two tried once; `@ipp.require('json')`
    imports json for the task, which runs."""
    got = value(
        lb,
        """
d = tempfile.mkdtemp()
def refuse(d):
    import os, uuid
    open(os.path.join(d, '%d-%s' % (os.getpid(), uuid.uuid4().hex)), 'w').close()
    return False
v01 = rc.load_balanced_view(targets=[0, 1])
t0 = time.monotonic()
res = outcome(v01.apply_async(ipp.dependent(lambda: 'ran', refuse, d)), 10)
took = time.monotonic() - t0
tried = sorted(int(f.split('-')[0]) for f in os.listdir(d))

@ipp.require('not_a_module_xyz')
def needs():
    return 'ran'
res2 = outcome(v01.apply_async(needs), 10)

@ipp.require('json')
def uses_json():
    return json.dumps([1, 2])
[res, took < 3, tried == sorted(pids[:2]), res2, outcome(v01.apply_async(uses_json))]
""",
        timeout=40,
    )
    assert got == [IMPOSSIBLE, True, True, IMPOSSIBLE, ["ok", "[1, 2]"]], got


# --------------------------------------------------------------------------
# 6. abort and wait


def test_abort_queued_tasks(lb):
    """With the 4 engines busy with `time.sleep(1)` (a DirectView), two
    load-balanced tasks still queued are aborted — one by AsyncResult, one
    by msg_ids: their `get()` raises TaskAborted (a RemoteError), they
    never ran, the sleeping tasks finish normally and the view works
    after."""
    got = value(
        lb,
        """
d = tempfile.mkdtemp()
def touch(d, name):
    import os
    open(os.path.join(d, name), 'w').close()
    return name
sleepers = rc[:].apply_async(time.sleep, 1)
time.sleep(0.2)
q1 = lv.apply_async(touch, d, 'q1')
q2 = lv.apply_async(touch, d, 'q2')
lv.abort(q1)
lv.abort(q2.msg_ids)
res = [outcome(q1), outcome(q2)]
caught = None
try:
    q1.get(timeout=1)
except ipp.error.TaskAborted as e:
    caught = type(e).__name__
out = [res, caught, sleepers.get(timeout=10), sorted(os.listdir(d)),
 lv.apply_async(touch, d, 'q3').get(timeout=10), sorted(os.listdir(d))]
out
""",
        timeout=30,
    )
    assert got[0] == [ABORTED, ABORTED], got
    assert got[1] == "TaskAborted", got
    assert got[2:] == [[None] * 4, [], "q3", ["q3"]], got


def test_wait_returns_whether_done(lb):
    """`lv.wait([ar], timeout=0.2)` on a 1 s task returns False after about
    0.2 s; with a longer timeout True once it is done; `lv.wait(msg_ids)`
    and `lv.wait()` (everything this view sent) are True after."""
    got = value(
        lb,
        """
ar = lv.apply_async(time.sleep, 1)
t0 = time.monotonic()
early = lv.wait([ar], timeout=0.2)
t_early = time.monotonic() - t0
late = lv.wait([ar], timeout=5)
t_late = time.monotonic() - t0
out = [early, 0.15 <= t_early < 0.9, late, 0.8 <= t_late < 3, ar.ready(),
 lv.wait(ar.msg_ids, timeout=1), lv.wait(timeout=5)]
out
""",
        timeout=30,
    )
    assert got == [False, True, True, True, True, True, True], got
