"""The rest of ipyparallel 9's API in the rparallel kernel, through
jupyter_client, on clusters the kernel starts with `rparallel.Cluster`.
Written from ipyparallel 9's documentation (the docstrings in
ipyparallel/{client/view.py, cluster/cluster.py, error.py, __init__.py}):

1. DirectView: `set_flags` (returns the view; KeyError for an unknown
   flag), `temp_flags` (restores the flags, also when its block raises),
   `importer` and `sync_imports(quiet=True)`, dotted names in `dv[...]`,
   `use_dill`/`use_cloudpickle`/`use_pickle` with closures,
   `execute(..., silent=False)`'s ExecuteReply, `display()` on an engine
   reaching `ar.outputs`, unicode in code, arguments, results and output;
2. `rparallel.Reference` (as an argument, inside containers, as the
   function, in `map`, a missing name as a remote NameError),
   `@rparallel.interactive`, a namedtuple and a class of the notebook, and
   numpy object and record arrays through apply and push/pull;
3. the error classes' hierarchy, a RemoteError's repr, a CompositeError's
   `elist` entries unpacking as `(ename, evalue, tb, engine_info)`,
   `raise_exception` with a bad index;
4. Cluster: `cluster_id` (and `Client(cluster_id=)`), repr (stopped /
   running), `to_dict`/`from_dict`, `from_file`, a controller started alone
   then engines (sync and awaited), `stop_engines`, `signal_engines`,
   `restart_engines`, `async with Cluster(...)`, ClusterManager, unknown
   options as TypeError;
5. joblib: `lv.register_joblib_backend()` running `joblib.Parallel` on the
   engines;
6. dask: `rc.become_dask()` (a distributed.Client whose workers are the
   engines), `stop_dask()`, and no dashboard or worker listening beyond
   127.0.0.1.

One kernel for the module, in a temporary RPARALLEL_DIR (so that
ClusterManager sees only this module's clusters), with a 2-engine cluster
`c` shared by most tests; the controller-first cluster `c4` is shared by
the tests of section 4 that start, signal and restart engines. Values come
back as JSON through `value()`; every wait has a timeout.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from api_helpers import KERNEL_HELPERS, kernel_with_cluster, value

from kernel_helpers import (
    IS_RPARALLEL,
    drain,
    execute,
    execute_ok,
    kernel_pid,
    pid_alive,
    wait_pid_gone,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(120),
]

N = 2





START = f"""
import collections, json as _j, os, signal, sys, time
import numpy as np
import rparallel as ipp
c = ipp.Cluster(n={N})
repr_before = repr(c)
rc = c.start_and_connect_sync()
rc.wait_for_engines({N}, timeout=30)
ids = rc.ids
dv = rc[:]
dv.block = True
pids = dv.apply_sync(os.getpid)

{KERNEL_HELPERS}
"""


# --------------------------------------------------------------------------
# listening sockets of a process, from /proc


def _addr(hexaddr: str) -> str:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        ip = ".".join(str(int(host[i: i + 2], 16)) for i in (6, 4, 2, 0))
    else:
        # four little-endian 32-bit words
        words = [host[i: i + 8] for i in range(0, 32, 8)]
        raw = "".join(w[6:8] + w[4:6] + w[2:4] + w[0:2] for w in words)
        groups = [raw[i: i + 4] for i in range(0, 32, 4)]
        if groups[:5] == ["0000"] * 5 and groups[5] == "FFFF":
            ip = "::ffff:" + ".".join(str(int(raw[i: i + 2], 16)) for i in range(24, 32, 2))
        else:
            ip = ":".join(g.lower().lstrip("0") or "0" for g in groups)
            ip = "[" + ip + "]"
    return f"{ip}:{int(port, 16)}"


def listening(pid: int) -> list[str]:
    """The TCP addresses process ``pid`` listens on ("127.0.0.1:5000",
    "0.0.0.0:41000", "[0:0:0:0:0:0:0:0]:41000", ...)."""
    inodes = set()
    try:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[len("socket:["):-1])
    except OSError:
        return []
    found = []
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if parts[3] == "0A" and parts[9] in inodes:  # LISTEN
                found.append(_addr(parts[1]))
    return sorted(set(found))


def is_loopback(addr: str) -> bool:
    host = addr.rsplit(":", 1)[0]
    return host.startswith("127.") or host.startswith("::ffff:127.") or host == "[0:0:0:0:0:0:0:1]"


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def kernel_and_cluster():
    """``(km, kc)``: a kernel (its own RPARALLEL_DIR) with `c` ({N}
    engines), `rc`, `ids`, `dv` (blocking, all engines), `pids` and the
    helpers of START; after the module every cluster it started is
    stopped, its engines checked gone and the kernel shut down."""
    with kernel_with_cluster("rp-extras-", START, N) as kernel:
        yield kernel


@pytest.fixture
def k(kernel_and_cluster):
    """The module's kernel, drained, with `dv` blocking on all engines,
    pickle as serializer, nothing outstanding and all engines answering."""
    kc = kernel_and_cluster[1]
    drain(kc)
    execute_ok(
        kc,
        "assert rc.wait(timeout=30), rc.outstanding\n"
        "dv = rc[:]\n"
        "dv.block = True\n"
        "assert rc.ids == ids, (rc.ids, ids)\n"
        "assert dv.apply_sync(os.getpid) == pids\n",
        timeout=60,
    )
    return kc


# --------------------------------------------------------------------------
# 1. DirectView


def test_set_flags_returns_the_view_and_refuses_unknown_flags(k):
    """`dv.set_flags(block=True, track=False)` sets both flags and returns
    the view itself; `dv.set_flags(bogus=1)` is a KeyError naming the flag
    and leaves the flags as they were."""
    got = value(
        k,
        """
dv.block = False
dv.track = True
same = dv.set_flags(block=True, track=False) is dv
after = [dv.block, dv.track]
bad = raised(dv.set_flags, bogus=1)
[same, after, bad, [dv.block, dv.track], dv.apply(lambda: 'ok')]
""",
    )
    same, after, bad, still, applied = got
    assert same is True, "set_flags did not return the view"
    assert after == [True, False], after
    assert bad is not None and bad[0] == "KeyError" and "bogus" in bad[1], bad
    assert still == [True, False], still
    assert applied == ["ok"] * N, applied


def test_temp_flags_restores_the_flags(k):
    """Inside `with dv.temp_flags(block=False):` the view does not block
    (apply returns an AsyncResult); after it, and after a block that
    raised, `block` is back to True and apply returns values again."""
    got = value(
        k,
        """
with dv.temp_flags(block=False):
    inside = [dv.block, type(dv.apply(lambda: 1)).__name__]
after = [dv.block, dv.apply(lambda: 2)]
err = None
try:
    with dv.temp_flags(block=False, track=True):
        raise RuntimeError('in the block')
except RuntimeError as e:
    err = str(e)
[inside, after, err, [dv.block, dv.track]]
""",
    )
    inside, after, err, restored = got
    assert inside == [False, "AsyncResult"], inside
    assert after == [True, [2] * N], after
    assert err == "in the block", err
    assert restored == [True, False], restored


def test_importer_imports_on_the_engines(k):
    """`with dv.importer: import json` imports json here and in the
    engines' namespaces (it was not there before), saying
    "importing json on engine(s)"; a remote function can use `json`."""
    before = value(k, "dv.apply_sync(lambda: 'json' in globals())")
    assert before == [False] * N, f"json already in the engines' namespace: {before}"
    ex = execute_ok(
        k,
        """
with dv.importer:
    import json
def dumps_remote():
    return json.dumps({'k': [1, 'é']})
print(_j.dumps(dv.apply_sync(dumps_remote)))
""",
    )
    assert "importing json on engine(s)" in ex.stdout, ex.stdout
    assert json.loads(ex.stdout.strip().splitlines()[-1]) == ['{"k": [1, "\\u00e9"]}'] * N, ex.stdout


def test_run_executes_a_file_on_the_engines(k, tmp_path):
    """`dv.run(filename)` runs the file's code in every engine's namespace
    (the names it defines are there afterwards); a missing file is an
    error here, before anything is sent."""
    script = tmp_path / "setup_engines.py"
    script.write_text("ran_from_file = 6 * 7\nprint('file ran')\n")
    got = value(
        k,
        f"""
r = dv.run({str(script)!r}, block=True)
[dv.apply_sync(lambda: ran_from_file), raised(dv.run, {str(tmp_path / 'missing.py')!r})]
""",
    )
    assert got[0] == [42] * N, got
    assert got[1] is not None and got[1][0] in ("FileNotFoundError", "OSError"), got


def test_module_level_remote_parallel_and_constants(k):
    """`rparallel.remote(view)` and `rparallel.parallel(view)` decorate as
    the view's own methods do (with flags set for each call), and
    `rparallel.FIRST_EXCEPTION` etc. are `concurrent.futures`' constants."""
    got = value(
        k,
        """
import concurrent.futures as cf
@ipp.remote(dv, block=True)
def where():
    return os.getpid()
@ipp.parallel(dv, block=True)
def doubled(xs):
    return [x * 2 for x in xs]
@ipp.remote(rc.load_balanced_view(), block=True, retries=1)
def once():
    return 5
[where() == pids, doubled(range(6)), once(),
 [ipp.FIRST_EXCEPTION == cf.FIRST_EXCEPTION, ipp.ALL_COMPLETED == cf.ALL_COMPLETED,
  ipp.FIRST_COMPLETED == cf.FIRST_COMPLETED]]
""",
    )
    assert got == [True, [0, 2, 4, 6, 8, 10], 5, [True, True, True]], got


def test_sync_imports_quiet_prints_nothing(k):
    """`with dv.sync_imports(quiet=True): import base64` prints nothing and
    still imports base64 on every engine (and here)."""
    ex = execute_ok(
        k,
        """
assert dv.apply_sync(lambda: 'base64' in globals()) == [False] * len(ids)
with dv.sync_imports(quiet=True):
    import base64
r = dv.apply_sync(lambda: base64.b64encode(b'rp').decode())
assert r == ['cnA='] * len(ids), r
assert base64.b64encode(b'rp') == b'cnA='
""",
    )
    assert ex.stdout == "" and ex.stderr == "", f"quiet sync_imports printed: {ex.stdout!r} {ex.stderr!r}"


def test_pull_of_a_dotted_name(k):
    """`dv['os.sep']` pulls an attribute of a name in the engines'
    namespaces (os imported there first)."""
    got = value(
        k,
        """
dv.execute('import os')
[dv['os.sep'], dv['os.path.sep'], dv.pull('os.sep')]
""",
    )
    assert got == [["/"] * N, ["/"] * N, ["/"] * N], got


CLOSURE = """
def make_adder(y):
    scale = 3
    def inner(x):
        return x * scale + y
    return inner
"""


def test_serializers_and_closures(k):
    """`dv.use_dill()`, `dv.use_cloudpickle()` and `dv.use_pickle()` (run
    here and on every engine: with block=True one None per engine), and
    after each a closure (a function returning an inner function that
    captures its locals) applies and maps."""
    got = value(
        k,
        CLOSURE
        + """
out = []
try:
    for use in (dv.use_dill, dv.use_cloudpickle, dv.use_pickle):
        ret = use()
        out.append([use.__name__, ret, dv.apply_sync(make_adder(10), 2), dv.map_sync(make_adder(1), [1, 2, 3])])
finally:
    dv.use_pickle()
out
""",
    )
    assert got == [
        [name, [None] * N, [16] * N, [4, 7, 10]]
        for name in ("use_dill", "use_cloudpickle", "use_pickle")
    ], got


def test_execute_reply(k):
    """`dv.execute('print(1)\\nx=5\\nx', silent=False, block=True).get()[0]`
    is an ExecuteReply with `.stdout == '1\\n'`, an `execution_count` and
    the repr `<ExecuteReply[N]: 5>`."""
    got = value(
        k,
        """
r = dv.execute('print(1)\\nx=5\\nx', silent=False, block=True).get()[0]
[type(r).__name__, r.stdout, r.execution_count, repr(r)]
""",
    )
    kind, stdout, count, rep = got
    assert kind == "ExecuteReply", got
    assert stdout == "1\n", got
    assert isinstance(count, int) and count >= 1, got
    assert rep == f"<ExecuteReply[{count}]: 5>", got


def test_display_in_applied_function_reaches_outputs(k):
    """`display(HTML(...))` inside an applied function: `ar.outputs` of a
    single engine's AsyncResult is a list with one dict whose 'data' holds
    the HTML (and text/plain); of a multi-engine one, one such list per
    engine."""
    got = value(
        k,
        """
def show():
    from IPython.display import HTML, display
    display(HTML('<b>héllo</b>'))
    return 'shown'
ar1 = rc[ids[0]].apply_async(show)
r1 = ar1.get(timeout=10)
ar2 = dv.apply_async(show)
r2 = ar2.get(timeout=10)
[r1, ar1.outputs, r2, ar2.outputs]
""",
    )
    r1, out1, r2, out2 = got
    assert r1 == "shown" and r2 == ["shown"] * N, got
    assert isinstance(out1, list) and len(out1) == 1, out1
    assert out1[0]["data"]["text/html"] == "<b>héllo</b>", out1
    assert "text/plain" in out1[0]["data"], out1
    assert len(out2) == N and all(
        len(o) == 1 and o[0]["data"]["text/html"] == "<b>héllo</b>" for o in out2
    ), out2


def test_unicode_in_code_arguments_results_and_output(k):
    """Non-ASCII text in executed code (a string and an identifier), in an
    argument, in a result and in the engines' stdout."""
    got = value(
        k,
        """
er = dv.execute("ñame = 'héllo ✓'\\nprint(ñame)", silent=False, block=True).get()
[dv['ñame'], dv.apply_sync(lambda s: s.upper() + ' ✓', 'héllo'), [r.stdout for r in er],
 dv.apply_sync(lambda d: {v: k for k, v in d.items()}, {'ключ': '値'})]
""",
    )
    assert got == [
        ["héllo ✓"] * N,
        ["HÉLLO ✓"] * N,
        ["héllo ✓\n"] * N,
        [{"値": "ключ"}] * N,
    ], got


# --------------------------------------------------------------------------
# 2. References, @interactive, notebook classes, numpy


def test_references(k):
    """`Reference('a')` stands for the engine's `a` as an argument, inside
    a list and a dict, in `map_sync`; `Reference('f')` as the function;
    `Reference('missing')` fails on the engine with NameError."""
    got = value(
        k,
        """
R = ipp.Reference
a = -1   # the kernel's own `a` must not be used
dv.push({'a': 10})
def plus_hundred(x):
    return x + 100
dv.push({'f': plus_hundred})
e_all = caught(dv.apply_sync, lambda x: x, R('missing'))
e_one = caught(rc[ids[0]].apply_sync, lambda x: x, R('missing'))
[repr(R('a')),
 dv.apply_sync(lambda x: x * 2, R('a')),
 dv.apply_sync(lambda l, d: [l, d], [R('a'), 1], {'k': R('a')}),
 dv.apply_sync(R('f'), 2),
 dv.map_sync(lambda x: x + 1, [R('a')] * 3),
 [type(e_all).__name__, [getattr(x, 'ename', None) for x in getattr(e_all, 'elist', [])]],
 [type(e_one).__name__, getattr(e_one, 'ename', None)]]
""",
    )
    rep, doubled, nested, as_func, mapped, err_all, err_one = got
    assert "a" in rep, rep
    assert doubled == [20] * N, got
    assert nested == [[[10, 1], {"k": 10}]] * N, got
    assert as_func == [102] * N, got
    assert mapped == [11, 11, 11], got
    assert err_all == ["CompositeError", ["NameError"] * N], got
    assert err_one == ["RemoteError", "NameError"], got


def test_interactive_functions_see_engine_globals(k):
    """`@ipp.interactive` makes a function's globals the engine's
    namespace: decorated in the cell, or applied to a function of another
    module (which it returns, with `__module__ == '__main__'`)."""
    got = value(
        k,
        """
b = -1
dv.push({'b': 7})
@ipp.interactive
def times_b(x):
    return x * b
ns = {'__name__': 'elsewhere'}
exec('def plus_b(x):\\n    return x + b\\n', ns)
plus_b = ns['plus_b']
made = ipp.interactive(plus_b)
[dv.apply_sync(times_b, 3), made is plus_b, plus_b.__module__, dv.apply_sync(made, 3)]
""",
    )
    assert got == [[21] * N, True, "__main__", [10] * N], got


def test_notebook_namedtuple_and_class_round_trip(k):
    """A namedtuple and a class defined in the cell go to the engines
    (which use their fields and methods) and come back as instances of the
    same classes."""
    got = value(
        k,
        """
Point = collections.namedtuple('Point', 'x y')
class Thing:
    def __init__(self, v):
        self.v = v
    def double(self):
        return Thing(self.v * 2)
def work(p, t):
    return p, p._replace(x=p.x + 1), t.double(), [type(p).__name__, p._fields, type(t).__name__]
res = dv.apply_sync(work, Point(1, 2), Thing(3))
[[[type(p) is Point, list(p), type(p2) is Point, list(p2), type(t) is Thing, t.v, seen]
  for p, p2, t, seen in res]]
""",
    )
    assert got == [[[True, [1, 2], True, [2, 2], True, 6, ["Point", ["x", "y"], "Thing"]]] * N], got


def test_numpy_object_and_record_arrays_round_trip(k):
    """A numpy object array and a structured (record) array through apply
    and through push/pull: same dtype, same values, field access on the
    engines; a `np.recarray` stays one."""
    got = value(
        k,
        """
oa = np.array([1, 'two', None, {'k': 3}, [4.5]], dtype=object)
ra = np.array([(1, 2.5, b'ab'), (3, 4.5, b'cd')], dtype=[('i', 'i4'), ('f', 'f8'), ('s', 'S2')])
rec = np.rec.array(ra)
def work(o, r, rc_):
    return o, r, float(r['f'].sum()), [int(v) for v in rc_.i], rc_
back = dv.apply_sync(work, oa, ra, rec)
dv.push({'oa': oa, 'ra': ra})
pulled_o, pulled_r = dv.pull(('oa', 'ra'), targets=ids[0])
def same(x, y):
    return x.dtype == y.dtype and x.shape == y.shape and x.tolist() == y.tolist()
[[same(o, oa), same(r, ra), s, i, type(rc_).__name__, same(rc_, rec)] for o, r, s, i, rc_ in back] + [
 same(pulled_o, oa), same(pulled_r, ra), str(pulled_r.dtype)]
""",
    )
    per_engine, tail = got[:N], got[N:]
    assert per_engine == [[True, True, 7.0, [1, 3], "recarray", True]] * N, got
    assert tail == [True, True, "[('i', '<i4'), ('f', '<f8'), ('s', 'S2')]"], got


# --------------------------------------------------------------------------
# 3. errors


def test_error_classes(k):
    """As ipyparallel.error: TimeoutError is also the builtin TimeoutError;
    CompositeError and AlreadyDisplayedError are RemoteErrors; RemoteError,
    TaskAborted, TaskTimeout and NoEnginesRegistered are KernelErrors;
    KernelError is an IPythonError; the classes are also `rparallel.X`."""
    got = value(
        k,
        """
E = ipp.error
[issubclass(E.TimeoutError, TimeoutError),
 [n for n in ('CompositeError', 'AlreadyDisplayedError') if not issubclass(getattr(E, n), E.RemoteError)],
 [n for n in ('RemoteError', 'TaskAborted', 'TaskTimeout', 'NoEnginesRegistered')
  if not issubclass(getattr(E, n), E.KernelError)],
 issubclass(E.KernelError, E.IPythonError),
 ipp.RemoteError is E.RemoteError, ipp.CompositeError is E.CompositeError]
""",
    )
    assert got == [True, [], [], True, True, True], got


def test_remote_error_repr_and_composite_elist(k):
    """A single engine's error: repr `<RemoteError[0]:ZeroDivisionError(
    division by zero)>`. A CompositeError's `elist` entries unpack as
    `ename, evalue, tb, info`, `info` with the engine's id, its uuid (a
    str, the same for two errors of one engine, different between engines)
    and `method == 'apply'`; `raise_exception(99)` is an IndexError and
    `raise_exception(1)` raises engine 1's RemoteError."""
    got = value(
        k,
        """
e1 = caught(rc[ids[0]].apply_sync, lambda: 1/0)
ec = caught(dv.apply_sync, lambda: 1/0)
ec2 = caught(dv.apply_sync, lambda: 1/0)
entries = []
for entry in ec.elist:
    ename, evalue, tb, info = entry
    entries.append([ename, evalue, type(tb).__name__, info['engine_id'], info['method'],
                    type(info['engine_uuid']).__name__, info['engine_uuid']])
uuids2 = [tuple(x)[3]['engine_uuid'] for x in ec2.elist]
bad = raised(ec.raise_exception, 99)
one = caught(ec.raise_exception, 1)
[type(e1).__name__, repr(e1), type(ec).__name__, entries, uuids2, bad,
 [type(one).__name__, getattr(one, 'ename', None), getattr(one, 'engine_info', {}).get('engine_id')]]
""",
    )
    kind1, rep1, kindc, entries, uuids2, bad, one = got
    assert kind1 == "RemoteError", got
    assert rep1 == f"<RemoteError[{0}]:ZeroDivisionError(division by zero)>", rep1
    assert kindc == "CompositeError", got
    assert [e[:6] for e in entries] == [
        ["ZeroDivisionError", "division by zero", "list", i, "apply", "str"] for i in range(N)
    ], entries
    uuids = [e[6] for e in entries]
    assert all(uuids) and len(set(uuids)) == N, uuids
    assert uuids2 == uuids, (uuids, uuids2)
    assert bad is not None and bad[0] == "IndexError", bad
    assert one == ["RemoteError", "ZeroDivisionError", 1], one


def test_remote_errors_are_true_and_shown_once(k):
    """Like every exception (and ipyparallel's), a RemoteError and a
    CompositeError are true in `if err:`; a CompositeError left uncaught in
    a cell is shown as exactly one error, the CompositeError."""
    got = value(
        k,
        """
e1 = caught(rc[ids[0]].apply_sync, lambda: 1/0)
ec = caught(dv.apply_sync, lambda: 1/0)
[raised(bool, e1) or bool(e1), raised(bool, ec) or bool(ec)]
""",
    )
    assert got == [True, True], f"bool() of [RemoteError, CompositeError]: {got}"
    ex = execute(k, "dv.apply_sync(lambda: 1/0)")
    assert ex.status == "error", ex.summary()
    errors = ex.of_type("error")
    assert [e["content"]["ename"] for e in errors] == ["CompositeError"], ex.summary()


# --------------------------------------------------------------------------
# 4. Cluster


def test_cluster_id_repr_and_client_by_cluster_id(k):
    """`cluster.cluster_id` is a str, and `Client(cluster_id=...)` connects
    to the same engines; repr says `stopped` before start, `running`
    after; a Cluster never started is `stopped`."""
    got = value(
        k,
        """
rc_by_id = ipp.Client(cluster_id=c.cluster_id)
rc_by_id.wait_for_engines(len(ids), timeout=30)
pids_by_id = rc_by_id[:].apply_sync(os.getpid)
rc_by_id.close()
[type(c.cluster_id).__name__, c.cluster_id, repr_before, repr(c), repr(ipp.Cluster(n=1)),
 pids_by_id == pids]
""",
    )
    kind, cid, before, now, fresh, same = got
    assert kind == "str" and cid, got
    assert "stopped" in before and "running" not in before, before
    assert "running" in now and "stopped" not in now, now
    assert "stopped" in fresh, fresh
    assert same is True, got


def test_to_dict_from_dict_and_from_file(k):
    """`Cluster.from_dict(c.to_dict())` (also through JSON) is a running
    cluster with the same cluster_id; `Cluster.from_file(profile=...)`
    attaches to the running cluster (its client reaches the same engines);
    `from_file(profile='no-such-profile')` is a FileNotFoundError."""
    got = value(
        k,
        """
d = c.to_dict()
c2 = ipp.Cluster.from_dict(d)
c2j = ipp.Cluster.from_dict(_j.loads(_j.dumps(d)))
c3 = ipp.Cluster.from_file(profile=c.profile)
rc3 = c3.connect_client_sync()
pids3 = rc3[:].apply_sync(os.getpid)
rc3.close()
[c2.cluster_id == c.cluster_id, 'running' in repr(c2), c2j.cluster_id == c.cluster_id,
 'running' in repr(c2j), c3.cluster_id == c.cluster_id, 'running' in repr(c3), pids3 == pids,
 raised(ipp.Cluster.from_file, profile='no-such-profile'), 'running' in repr(c)]
""",
    )
    assert got[:7] == [True] * 7, got
    missing = got[7]
    assert missing is not None and missing[0] == "FileNotFoundError", got
    assert got[8] is True, "the original cluster stopped"


@pytest.fixture(scope="module")
def c4_kc(kernel_and_cluster):
    """The module's kernel with `c4`: a Cluster(n=2) of which only the
    controller was started (`start_controller_sync()`), and `rc4`, a
    Client of it; stopped after the module."""
    kc = kernel_and_cluster[1]
    drain(kc)
    got = value(
        kc,
        """
c4 = ipp.Cluster(n=2)
started = c4.start_controller_sync()
rc4 = ipp.Client(cluster_id=c4.cluster_id)
time.sleep(0.5)
[started, 'running' in repr(c4), rc4.ids]
""",
    )
    assert got == [None, True, []], f"a controller alone: {got}"
    yield kc
    drain(kc)
    execute(kc, "rc4.close()\nc4.stop_cluster_sync()", timeout=30)


@pytest.fixture
def c4k(c4_kc, k):
    """`c4` with 2 engines registered and idle (started if needed)."""
    execute_ok(
        c4_kc,
        """
if len(rc4.ids) < 2:
    c4.start_engines_sync(2 - len(rc4.ids))
rc4.wait_for_engines(2, timeout=30)
assert rc4.wait(timeout=30)
""",
        timeout=60,
    )
    return c4_kc


def test_controller_alone_then_engines(c4_kc, k):
    """After `start_controller_sync()`, `start_engines_sync(2)` returns the
    ids of 2 new engines, which register; `await c4.start_engines(n=1)` in a
    cell returns a list of one more id; `stop_engines_sync([that id])`
    stops that engine (its process ends, it leaves `rc.ids`), the others
    keep working."""
    got = value(
        c4_kc,
        """
first = c4.start_engines_sync(2)
rc4.wait_for_engines(2, timeout=30)
[first, sorted(rc4.ids)]
""",
    )
    first, registered = got
    assert isinstance(first, list) and len(first) == 2 and len(set(first)) == 2, got
    assert registered == sorted(first), got
    got = value(
        c4_kc,
        """
more = await c4.start_engines(n=1)
rc4.wait_for_engines(3, timeout=30)
[more, sorted(rc4.ids), rc4[more[0]].apply_sync(os.getpid)]
""",
    )
    more, registered, pid = got
    assert isinstance(more, list) and len(more) == 1 and more[0] not in first, got
    assert registered == sorted(first + more), got
    got = value(
        c4_kc,
        f"""
c4.stop_engines_sync([{more[0]}])
gone = wait_for(lambda: {more[0]} not in rc4.ids, 10)
[gone, sorted(rc4.ids), rc4[:].apply_sync(lambda: 'alive')]
""",
    )
    gone, left, alive = got
    assert gone is True, f"engine {more[0]} still in rc.ids after stop_engines_sync: {left}"
    assert left == sorted(first), got
    assert alive == ["alive"] * 2, got
    assert wait_pid_gone(pid, 10), f"engine {more[0]} (pid {pid}) still running after stop_engines_sync"


def test_signal_engines_interrupts_a_sleep(c4k):
    """`signal_engines_sync('SIGINT')` interrupts a running
    `time.sleep(10)` on every engine: `get` raises (KeyboardInterrupt on
    each engine) within a few seconds; the engines stay and still work."""
    got = value(
        c4k,
        """
pids4 = rc4[:].apply_sync(os.getpid)
ar = rc4[:].apply_async(time.sleep, 10)
time.sleep(0.5)
t0 = time.monotonic()
sig = raised(c4.signal_engines_sync, 'SIGINT')
e = caught(ar.get, timeout=8)
took = time.monotonic() - t0
[sig, type(e).__name__, isinstance(e, ipp.error.RemoteError),
 [getattr(x, 'ename', None) for x in getattr(e, 'elist', [])], round(took, 2),
 rc4[:].apply_sync(os.getpid) == pids4]
""",
        timeout=30,
    )
    sig, kind, remote, enames, took, same = got
    assert sig is None, f"signal_engines_sync raised {sig}"
    assert kind == "CompositeError" or remote, got
    assert enames == ["KeyboardInterrupt"] * 2, got
    assert took < 4, f"the sleep ended {took} s after the SIGINT"
    assert same is True, "engines changed after a SIGINT"


def test_restart_engines(c4k):
    """`restart_engines_sync()` replaces every engine: it returns the new
    engines' ids (as many as the cluster's n, none of the old ones); the
    old processes end; the client sees only the new ids."""
    got = value(
        c4k,
        """
old = sorted(rc4.ids)
old_pids = rc4[:].apply_sync(os.getpid)
new = c4.restart_engines_sync()
rc4.wait_for_engines(len(new), timeout=30)
settled = wait_for(lambda: sorted(rc4.ids) == sorted(new), 10)
[old, old_pids, new, sorted(rc4.ids), rc4[:].apply_sync(os.getpid)]
""",
        timeout=90,
    )
    old, old_pids, new, now, new_pids = got
    assert isinstance(new, list) and len(new) == 2, got
    assert not set(new) & set(old), got
    assert now == sorted(new), got
    assert not set(new_pids) & set(old_pids), got
    left = [p for p in old_pids if not wait_pid_gone(p, 10)]
    assert not left, f"old engines still running after restart_engines_sync: {left}"


def test_async_with_cluster(k):
    """`async with ipp.Cluster(n=1) as rc:` (in `async def main()`, awaited
    in the cell) gives a client with one engine; after the block the
    cluster is stopped: its repr says so, its engine's process ends and
    ClusterManager no longer lists it."""
    got = value(
        k,
        """
ac = ipp.Cluster(n=1)
async def main():
    async with ac as rcx:
        return [rcx.ids, rcx[:].apply_sync(os.getpid), 'running' in repr(ac)]
inside = await main()
[inside, repr(ac), ac.cluster_id,
 any(cl.cluster_id == ac.cluster_id for cl in ipp.ClusterManager().load_clusters().values())]
""",
    )
    (ids_in, pids_in, running_in), rep, cid, listed = got
    assert len(ids_in) == 1 and len(pids_in) == 1 and running_in is True, got
    assert "stopped" in rep, rep
    assert listed is False, f"ClusterManager still lists {cid} after `async with`"
    assert wait_pid_gone(pids_in[0], 10), f"engine {pids_in[0]} still running after `async with`"


def test_cluster_manager(k):
    """`ClusterManager().load_clusters()` contains the running cluster
    (keyed so that `get_cluster(key).cluster_id` is its id, and running);
    `new_cluster(n=1)` returns `(key, cluster)` (not started), found by
    `get_cluster(key)`, forgotten by `remove_cluster(key)`."""
    got = value(
        k,
        """
m = ipp.ClusterManager()
loaded = m.load_clusters()
keys = [key for key, cl in loaded.items() if cl.cluster_id == c.cluster_id]
found = [[m.get_cluster(key).cluster_id, 'running' in repr(m.get_cluster(key))] for key in keys]
made = m.new_cluster(n=1)
key, nc = made
got_back = m.get_cluster(key) is nc
fresh = ['stopped' in repr(nc), nc.n]
m.remove_cluster(key)
[len(keys), found, isinstance(made, tuple) and len(made) == 2, got_back, fresh,
 key in m.clusters, raised(m.get_cluster, key)]
""",
    )
    n_keys, found, pair, got_back, fresh, still, missing = got
    assert n_keys == 1, f"load_clusters() should hold the running cluster once: {got}"
    assert found[0][1] is True, got
    assert pair is True and got_back is True, got
    assert fresh == [True, 1], got
    assert still is False, got
    assert missing is not None and missing[0] == "KeyError", got


def test_unknown_cluster_option_is_a_type_error(k):
    """`ipp.Cluster(n=2, bogus_option=5)` is a TypeError naming the
    option (and starts nothing)."""
    got = value(k, "raised(ipp.Cluster, n=2, bogus_option=5)")
    assert got is not None and got[0] == "TypeError" and "bogus_option" in got[1], got


# --------------------------------------------------------------------------
# 5. joblib


def test_joblib_backend_runs_on_the_engines(k):
    """`rc.load_balanced_view().register_joblib_backend()`, then
    `joblib.Parallel(n_jobs=2)` under `parallel_backend('ipyparallel')`
    returns the right values in order, computed on the engines (their pids,
    not the kernel's)."""
    got = value(
        k,
        """
import joblib
lv = rc.load_balanced_view()
lv.register_joblib_backend()
def square_where(i):
    import os
    return [i * i, os.getpid()]
with joblib.parallel_backend('ipyparallel'):
    out = joblib.Parallel(n_jobs=2)(joblib.delayed(square_where)(i) for i in range(20))
[[r[0] for r in out], sorted(set(r[1] for r in out)), pids, os.getpid()]
""",
    )
    values, where, engine_pids, kernel = got
    assert values == [i * i for i in range(20)], values
    assert where and set(where) <= set(engine_pids), f"ran on {where}, engines are {engine_pids}"
    assert kernel not in where, got


# --------------------------------------------------------------------------
# 6. dask


def test_become_dask(k):
    """`rc.become_dask()` returns a distributed.Client whose workers are
    the engines (one per engine; `dc.run(os.getpid)` gives the engines'
    pids); tasks run (`submit(lambda x: x + 1, 10)` is 11, on an engine);
    the scheduler serves no dashboard page; after `dc.close();
    rc.stop_dask()` the engines work as before."""
    got = value(
        k,
        """
import distributed, urllib.request, urllib.error
dc = rc.become_dask()
try:
    info = [isinstance(dc, distributed.Client), dc.submit(lambda x: x + 1, 10).result(timeout=30),
            len(dc.scheduler_info()['workers']), sorted(dc.run(os.getpid).values()),
            dc.submit(os.getpid, pure=False).result(timeout=30)]
    link = dc.dashboard_link
    try:
        status = urllib.request.urlopen(link, timeout=5).status if link else None
    except urllib.error.HTTPError as e:
        status = e.code
    except OSError as e:
        status = repr(e)
finally:
    dc.close()
    rc.stop_dask()
info + [link, status, dv.apply_sync(os.getpid) == pids, dv.apply_sync(lambda: 6 * 7)]
""",
        timeout=90,
    )
    is_client, eleven, workers, worker_pids, task_pid, link, status, same, answer = got
    assert is_client is True, got
    assert eleven == 11, got
    assert workers == N, got
    assert worker_pids == sorted(value(k, "pids")), got
    assert task_pid in worker_pids, got
    assert not link or status != 200, f"a dashboard is served at {link}"
    assert same is True and answer == [42] * N, got


def test_dask_listens_only_on_loopback(kernel_and_cluster, k):
    """While `become_dask()`'s scheduler and workers run, neither the
    kernel nor any engine listens on anything but 127.0.0.1 (as every
    other rparallel socket: README's security section, test_security.py);
    after `stop_dask()` the engines listen on nothing."""
    km = kernel_and_cluster[0]
    engine_pids = value(k, "pids")
    procs = {"kernel": kernel_pid(km), **{f"engine {i}": p for i, p in enumerate(engine_pids)}}
    execute_ok(k, "dc = rc.become_dask()\nassert dc.submit(lambda: 1).result(timeout=30) == 1", timeout=60)
    try:
        during = {name: listening(pid) for name, pid in procs.items()}
    finally:
        execute_ok(k, "dc.close()\nrc.stop_dask()", timeout=60)
    time.sleep(0.5)
    after = {name: listening(pid) for name, pid in procs.items() if name != "kernel"}
    assert any(during.values()), f"no listening sockets found at all (is /proc readable?): {during}"
    public = {name: [a for a in addrs if not is_loopback(a)] for name, addrs in during.items()}
    public = {name: addrs for name, addrs in public.items() if addrs}
    assert not public, f"listening beyond 127.0.0.1 while dask runs: {public}"
    assert not any(after.values()), f"engines still listening after stop_dask(): {after}"
    assert all(pid_alive(p) for p in engine_pids), "an engine died"
