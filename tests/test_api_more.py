"""More of ipyparallel 9's API in the rparallel kernel, through
jupyter_client, on one 2-engine cluster the kernel starts with
`rparallel.Cluster(n=2, db='sqlite')`:

1. the task record in SQLite: `<RPARALLEL_DIR>/profile_<profile>/
   tasks.sqlite` holds a table `tasks_...` with one row per request (read
   here, read-only, with Python's sqlite3), `db_query({'label': 'L'})`
   finds a load-balanced task by its label, `hub_history()` lists every
   msg_id in submission order, a second `Client(profile=...)` gets a result
   and its stdout with `get_result`, `purge_hub_results(msg_id)` removes
   the row from the table; `Cluster(n=1, db='bogus')` is a ValueError
   naming the databases (memory, sqlite, none);
2. `rparallel.datapub.publish_data({...})` in a running task: `ar.data`
   shows intermediate values while it runs, the last one after `get()`
   (`ar.metadata['data']` too), a list of dicts for a multi-engine
   DirectView; `publish_data(5)` is a TypeError on the engine;
3. `%%px --signal-on-interrupt SIGUSR1`: interrupting the kernel during a
   blocking `%%px` sends SIGUSR1 to the engines, whose Python handler's
   RuntimeError('usr1') is the cell's error (not KeyboardInterrupt); the
   engines keep working; `--signal-on-interrupt SIGFOO` a one-line
   UsageError; `--progress-after -1` shows no progress bar (where 0.2 does);
4. asyncio and concurrent.futures: `await asyncio.wrap_future(view.apply(f))`,
   `await asyncio.gather(ar1, ar2)`, `concurrent.futures.wait` and
   `as_completed` on `ar.split()`, `ar.add_done_callback(cb)` from a plain
   cell (called once, with the AsyncResult);
5. `@rparallel.require(foo)` with a function of the notebook (the example
   of ipyparallel's tutorial, task.md: `bar(4, 17) == -9`), keyword
   objects `require(k=10)`, `require(5)` a TypeError;
6. a module written with `%%file mymod_<random>.py` in the kernel's working
   directory imports in the next cell, as in ipykernel.

One kernel for the module, in a temporary RPARALLEL_DIR. Values come back
as JSON through `value()`; every wait has a timeout.
"""

from __future__ import annotations

import re
import sqlite3
import time
import uuid
from pathlib import Path

import pytest

from api_helpers import KERNEL_HELPERS, kernel_with_cluster, private_dir, value

from kernel_helpers import (
    IS_RPARALLEL,
    describe,
    drain,
    engine_blocks,
    execute,
    execute_error,
    execute_ok,
    get_reply,
    strip_ansi,
    traceback_text,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(120),
]

N = 2



START = f"""
import asyncio, concurrent.futures, os, shutil, signal, sys, tempfile, time
import rparallel as ipp
c = ipp.Cluster(n={N}, db='sqlite')
rc = c.start_and_connect_sync()
rc.wait_for_engines({N}, timeout=30)
ids = rc.ids
dv = rc[:]
dv.block = True
lv = rc.load_balanced_view()
pids = dv.apply_sync(os.getpid)

{KERNEL_HELPERS}


def nap(x=0.5):
    import time
    time.sleep(x)
    return x
"""


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def rp_dir():
    with private_dir("rp-more-") as d:
        yield d


@pytest.fixture(scope="module")
def kernel_and_cluster(rp_dir):
    """``(km, kc)``: a kernel (RPARALLEL_DIR=rp_dir) with `c` ({N}
    engines, `db='sqlite'`), `rc`, `ids`, `dv` (blocking, all engines),
    `lv`, `pids` and the helpers of START; after the module the cluster is
    stopped, its engines checked gone and the kernel shut down."""
    with kernel_with_cluster("rp-more-", START, N, rp_dir=rp_dir) as kernel:
        yield kernel


@pytest.fixture
def k(kernel_and_cluster):
    """The module's kernel, drained, nothing of `rc` outstanding and the
    same engines answering."""
    kc = kernel_and_cluster[1]
    drain(kc)
    execute_ok(
        kc,
        "assert not rc.outstanding or rc.wait(timeout=30), rc.outstanding\n"
        "assert rc.ids == ids, (rc.ids, ids)\n"
        "assert dv.apply_sync(os.getpid) == pids\n",
        timeout=60,
    )
    return kc


# --------------------------------------------------------------------------
# 1. the task record in SQLite


def read_table(db: Path, timeout: float, until) -> tuple[list[str], list[str], dict[str, str]]:
    """Reads ``db`` read-only until ``until(msg_ids)`` holds or ``timeout``
    passes (the controller writes in batches): ``(tables named tasks_*,
    columns, {msg_id: the row's columns as text})``."""
    deadline = time.monotonic() + timeout
    while True:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
        try:
            tables = [
                r[0]
                for r in con.execute(
                    "SELECT name FROM sqlite_master WHERE type='table' AND name LIKE 'tasks\\_%' ESCAPE '\\'"
                )
            ]
            assert len(tables) == 1, f"tables tasks_* in {db}: {tables}"
            table = tables[0]
            cur = con.execute(f'SELECT * FROM "{table}"')
            columns = [d[0] for d in cur.description]
            rows = cur.fetchall()
        finally:
            con.close()
        assert "msg_id" in columns, f"no msg_id column in {table}: {columns}"
        at = columns.index("msg_id")
        ids = [r[at] for r in rows]
        assert len(ids) == len(set(ids)), f"a msg_id in {table} more than once: {ids}"
        text = {
            r[at]: " ".join(
                v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in r
            )
            for r in rows
        }
        if until(ids) or time.monotonic() > deadline:
            return tables, columns, text
        time.sleep(0.2)


def test_sqlite_task_record(k, rp_dir):
    """After a request on both engines, one that prints and a load-balanced
    one with `label='L'`: `<RPARALLEL_DIR>/profile_<c.profile>/tasks.sqlite`
    has one table `tasks_...` with exactly one row per msg_id of
    `hub_history()` (the printing task's row holding what it printed);
    `hub_history()` ends with these requests in submission order;
    `db_query({'label': 'L'})` finds the load-balanced one; a second
    `Client(profile=c.profile)` gets the printing task's value and stdout
    with `get_result`; `purge_hub_results(msg_id)` removes its row from the
    table (and from `db_query`/`hub_history`), leaving the others."""
    got = value(
        k,
        """
def shout(tag):
    print('printed-' + tag)
    return tag
a_both = rc[:].apply_async(lambda: 'both'); a_both.get(timeout=10)
a_print = rc[0].apply_async(shout, 'sq1'); a_print.get(timeout=10)
with lv.temp_flags(label='L'):
    a_lb = lv.apply_async(lambda x: x * 3, 5)
a_lb.get(timeout=10)
mine = a_both.msg_ids + a_print.msg_ids + a_lb.msg_ids
hist = rc.hub_history()
labelled = [r['msg_id'] for r in rc.db_query({'label': 'L'})]
{'mine': mine, 'hist': hist, 'labelled': labelled, 'profile': c.profile,
 'env_dir': os.environ.get('RPARALLEL_DIR'), 'lb': a_lb.get()}
""",
    )
    mine, hist = got["mine"], got["hist"]
    assert got["env_dir"] == rp_dir, got["env_dir"]
    assert got["lb"] == 15, got
    assert len(mine) == 4, mine
    assert hist[-len(mine):] == mine, f"hub_history does not end with these requests in order: {hist[-6:]} vs {mine}"
    assert len(hist) == len(set(hist)), f"a msg_id twice in hub_history: {hist}"
    assert got["labelled"] == [mine[-1]], f"db_query({{'label': 'L'}}): {got['labelled']} vs {mine[-1]}"

    db = Path(rp_dir) / f"profile_{got['profile']}" / "tasks.sqlite"
    assert db.is_file(), f"no {db}: {sorted(p.name for p in db.parent.iterdir()) if db.parent.is_dir() else 'no profile dir'}"
    tables, columns, rows = read_table(db, 10, lambda ids: set(ids) >= set(hist))
    assert set(rows) == set(hist), (
        f"rows of {tables[0]} vs hub_history: missing {set(hist) - set(rows)}, extra {set(rows) - set(hist)}"
    )
    printed = mine[2]
    assert "printed-sq1" in rows[printed], f"the printing task's row does not hold its stdout: {rows[printed][:500]}"

    got2 = value(
        k,
        """
rc2 = ipp.Client(profile=c.profile)
try:
    g = rc2.get_result(a_print.msg_ids[0])
    gv = g.get(timeout=10)
    gout = g.stdout
finally:
    rc2.close()
rc.purge_hub_results(a_print.msg_ids[0])
[gv, gout, [r['msg_id'] for r in rc.db_query({'msg_id': a_print.msg_ids[0]})],
 a_print.msg_ids[0] in rc.hub_history(), len(rc.hub_history())]
""",
    )
    gv, gout, still_found, still_in_history, hist_len = got2
    assert gv == "sq1", got2
    assert "printed-sq1" in (gout if isinstance(gout, str) else "".join(gout or [])), f"get_result's stdout: {gout!r}"
    assert still_found == [] and still_in_history is False, got2
    assert hist_len == len(hist) - 1, f"hub_history has {hist_len} entries after the purge, had {len(hist)}"
    _, _, rows = read_table(db, 10, lambda ids: printed not in ids)
    assert printed not in rows, f"purge_hub_results left the row of {printed} in {db}"
    assert set(rows) == set(hist) - {printed}, (
        f"rows after the purge: missing {set(hist) - {printed} - set(rows)}, extra {set(rows) - set(hist)}"
    )


def test_cluster_with_an_unknown_database(k):
    """`ipp.Cluster(n=1, db='bogus')` (or starting it) raises ValueError
    naming the databases there are: memory, sqlite, none."""
    got = value(
        k,
        """
cb = None
err = None
try:
    cb = ipp.Cluster(n=1, db='bogus')
    cb.start_cluster_sync()
except Exception as e:
    err = [type(e).__name__, str(e)]
started = False
if cb is not None:
    try:
        started = bool(cb.to_dict().get('controller'))
    except Exception:
        pass
    try:
        cb.stop_cluster_sync()
    except Exception:
        pass
[err, started]
""",
        timeout=90,
    )
    err, started = got
    assert err is not None, f"Cluster(db='bogus') started (controller recorded: {started})"
    assert err[0] == "ValueError", err
    for name in ("memory", "sqlite", "none"):
        assert name in err[1], f"{name!r} not named in {err[1]!r}"
    assert "bogus" in err[1], err


# --------------------------------------------------------------------------
# 2. datapub


PUB = """
def pub(n):
    import time
    from rparallel.datapub import publish_data
    for i in range(n):
        publish_data({'i': i})
        time.sleep(0.1)
    return n
"""


def test_publish_data_is_seen_while_the_task_runs(k):
    """A task publishing `{'i': i}` for i in 0..19 every 0.1 s: polling
    `ar.data` while it runs shows intermediate values (increasing, below
    19); after `ar.get()` `ar.data == {'i': 19}` and
    `ar.metadata['data']` the same."""
    got = value(
        k,
        PUB
        + """
ar = rc[0].apply_async(pub, 20)
seen = []
t0 = time.monotonic()
while not ar.ready() and time.monotonic() - t0 < 20:
    d = ar.data
    seen.append(dict(d).get('i') if isinstance(d, dict) else repr(d))
    time.sleep(0.05)
res = ar.get(timeout=20)
[seen, res, ar.data, ar.metadata['data']]
""",
    )
    seen, res, data, md = got
    assert res == 20, got
    ints = [s for s in seen if isinstance(s, int)]
    odd = [s for s in seen if s is not None and not isinstance(s, int)]
    assert not odd, f"ar.data while running was not a dict with 'i': {odd[:5]}"
    assert [i for i in ints if 0 <= i < 19], f"no intermediate value of ar.data while the task ran: {seen}"
    assert len(set(ints)) >= 3, f"ar.data did not follow the task (distinct values seen: {sorted(set(ints))})"
    assert ints == sorted(ints), f"ar.data went backwards: {ints}"
    assert data == {"i": 19}, f"ar.data after get: {data}"
    assert md == {"i": 19}, f"ar.metadata['data'] after get: {md}"


def test_publish_data_on_several_engines_and_bad_data(k):
    """On the 2-engine DirectView, `ar.data` is a list of one dict per
    engine (`[{'i': 2}, {'i': 2}]` after `get`); `publish_data(5)` raises
    TypeError on the engine (a RemoteError whose ename is TypeError)."""
    got = value(
        k,
        PUB
        + """
dar = rc[:].apply_async(pub, 3)
dres = dar.get(timeout=20)
def bad():
    from rparallel.datapub import publish_data
    publish_data(5)
e = caught(rc[0].apply_sync, bad)
[dres, dar.data, [md['data'] for md in dar.metadata],
 type(e).__name__, getattr(e, 'ename', None), str(e)]
""",
    )
    dres, data, mds, ename_cls, ename, text = got
    assert dres == [3] * N, got
    assert data == [{"i": 2}] * N, f"ar.data of a {N}-engine DirectView: {data}"
    assert mds == [{"i": 2}] * N, mds
    assert ename_cls == "RemoteError" and ename == "TypeError", f"publish_data(5): {ename_cls} {ename} {text}"


# --------------------------------------------------------------------------
# 3. %%px --signal-on-interrupt, --progress-after -1


OUT = re.compile(r"Out\[(\d+):\d+\]: (.*)", re.S)


def px_outs(ex) -> list[tuple[int, str]]:
    """``(engine, value)`` of each `Out[N:k]: value` display of a `%px`."""
    found = []
    for m in ex.of_type("display_data") + ex.of_type("execute_result"):
        text = strip_ansi(m["content"]["data"].get("text/plain", ""))
        hit = OUT.fullmatch(text.strip())
        if hit:
            found.append((int(hit.group(1)), hit.group(2)))
    return found


def test_px_signal_on_interrupt(kernel_and_cluster, k):
    """With a SIGUSR1 handler on the engines raising RuntimeError('usr1'),
    interrupting the kernel 1 s into `%%px --signal-on-interrupt SIGUSR1`
    / `time.sleep(30)` ends the cell within 5 s with each engine's
    RuntimeError usr1 (no KeyboardInterrupt); the engines, the same
    processes, answer `%px` at once afterwards."""
    km = kernel_and_cluster[0]
    execute_ok(
        k,
        "dv.activate()\n"
        "dv.execute('''\n"
        "import signal, time\n"
        "def _usr1_handler(signum, frame):\n"
        "    raise RuntimeError('usr1')\n"
        "_old_usr1 = signal.signal(signal.SIGUSR1, _usr1_handler)\n"
        "''')\n",
        timeout=20,
    )
    try:
        msg_id = k.execute("%%px --signal-on-interrupt SIGUSR1\ntime.sleep(30)\n", allow_stdin=False)
        time.sleep(1.0)
        t0 = time.monotonic()
        km.interrupt_kernel()
        reply = get_reply(k, msg_id, timeout=15)
        took = time.monotonic() - t0
        assert took < 5, f"the cell ended {took:.1f}s after the interrupt"
        content = reply["content"]
        assert content["status"] == "error", content
        tb = traceback_text(content)
        assert "KeyboardInterrupt" not in tb, f"SIGINT reached the engines, not SIGUSR1: {tb}"
        blocks = engine_blocks(tb)
        assert [b[0] for b in blocks] == list(range(N)), tb
        assert all("RuntimeError" in b[2] and "usr1" in b[2] for b in blocks), tb
        drain(k)
        t1 = time.monotonic()
        ex = execute_ok(k, "%px 6 * 7", timeout=20)
        assert time.monotonic() - t1 < 5
        assert px_outs(ex) == [(i, "42") for i in range(N)], describe(ex.outputs)
        assert value(k, "dv.apply_sync(os.getpid) == pids") is True
    finally:
        drain(k)
        execute(k, "dv.execute('signal.signal(signal.SIGUSR1, _old_usr1)')", timeout=20)


def test_px_signal_on_interrupt_unknown_signal(k):
    """`%%px --signal-on-interrupt SIGFOO` is a one-line UsageError; `%px`
    still works after it."""
    execute_ok(k, "dv.activate()")
    ex = execute_error(k, "%%px --signal-on-interrupt SIGFOO\n1")
    tb = traceback_text(ex.error()).strip()
    assert len(tb.splitlines()) == 1 and tb.startswith("UsageError:"), tb
    assert ex.error()["ename"] == "UsageError", ex.error()
    ex = execute_ok(k, "%px 6 * 7", timeout=20)
    assert px_outs(ex) == [(i, "42") for i in range(N)], describe(ex.outputs)


def _progress_widgets(ex) -> list:
    return [
        m for m in ex.iopub
        if (m["msg_type"] == "display_data"
            and "application/vnd.jupyter.widget-view+json" in m["content"]["data"])
        or m["msg_type"] == "comm_open"
    ]


def test_px_progress_after_minus_one(k):
    """`%%px --progress-after -1` on a 1.2 s cell runs without error and
    shows no progress bar, where `--progress-after 0.2` on the same cell
    does."""
    execute_ok(k, "dv.activate()")
    shown = execute_ok(k, "%%px --progress-after 0.2\nimport time; time.sleep(1.2)", timeout=30)
    assert _progress_widgets(shown), f"no progress bar with --progress-after 0.2: {describe(shown.outputs)}"
    ex = execute(k, "%%px --progress-after -1\nimport time; time.sleep(1.2)", timeout=30)
    assert ex.status == "ok", ex.summary()
    assert not ex.of_type("error") and not ex.stderr, describe(ex.outputs)
    assert not _progress_widgets(ex), f"a progress bar with --progress-after -1: {describe(ex.outputs)}"


# --------------------------------------------------------------------------
# 4. asyncio and concurrent.futures


def test_asyncio_wrap_future_and_gather(k):
    """In a cell, `await asyncio.wrap_future(rc[:].apply(f))` is the list
    of values, `await asyncio.gather(rc[0].apply_async(g),
    rc[1].apply_async(h))` the two values in order."""
    got = value(
        k,
        """
def f():
    import os
    return os.getpid()
r1 = await asyncio.wrap_future(rc[:].apply(f))
r2 = await asyncio.gather(rc[0].apply_async(lambda: 'g'), rc[1].apply_async(lambda: 'h'))
[r1, list(r2), pids]
""",
    )
    r1, r2, engine_pids = got
    assert r1 == engine_pids, f"wrap_future of rc[:].apply: {r1} vs {engine_pids}"
    assert r2 == ["g", "h"], r2


def test_concurrent_futures_wait_and_as_completed(k):
    """`concurrent.futures.wait(ar.split(), timeout=5)` of a 0.5 s task on
    both engines returns them all done (none pending, after waiting),
    `list(concurrent.futures.as_completed(ar.split(), timeout=5))` one per
    engine."""
    got = value(
        k,
        """
ar = rc[:].apply_async(nap, 0.5)
parts = ar.split()
t0 = time.monotonic()
done, pending = concurrent.futures.wait(parts, timeout=5)
waited = time.monotonic() - t0
ar2 = rc[:].apply_async(nap, 0.3)
completed = list(concurrent.futures.as_completed(ar2.split(), timeout=5))
[len(parts), len(done), len(pending), waited, all(p.ready() for p in parts),
 len(completed), sorted(x.get(timeout=0) for x in completed)]
""",
    )
    nparts, ndone, npending, waited, ready, ncompleted, vals = got
    assert nparts == N and ndone == N and npending == 0, got
    assert ready is True, got
    assert 0.3 < waited < 5, f"concurrent.futures.wait returned after {waited:.2f}s"
    assert ncompleted == N and vals == [0.3] * N, got


def test_add_done_callback_from_a_plain_cell(k):
    """`ar.add_done_callback(cb)` in a cell without `await`: cb is called
    once, with the AsyncResult, when it finishes; added to a finished one,
    it is called (once) too."""
    got = value(
        k,
        """
calls = []
ar = rc[0].apply_async(nap, 0.5)
ar.add_done_callback(lambda fut: calls.append(fut))
before = len(calls)
ar.get(timeout=10)
wait_for(lambda: len(calls) >= 1, 5)
time.sleep(0.5)
late = []
ar.add_done_callback(lambda fut: late.append(fut))
wait_for(lambda: len(late) >= 1, 5)
time.sleep(0.3)
[before, len(calls), all(x is ar for x in calls), len(late), all(x is ar for x in late)]
""",
    )
    before, ncalls, same, nlate, same_late = got
    assert before == 0, f"the callback ran before the task finished: {got}"
    assert ncalls == 1 and same is True, f"callback calls: {ncalls} (with the AsyncResult: {same})"
    assert nlate == 1 and same_late is True, f"callback added after done: {nlate} calls (with ar: {same_late})"


# --------------------------------------------------------------------------
# 5. require


def test_require_functions_and_keywords(k):
    """ipyparallel's tutorial (task.md): `foo` defined in the notebook,
    `@ipp.require(foo) def bar(x, y): return foo(x) - y`; `bar(4, 17)` is
    -9 on every engine and load-balanced, and `foo` is then in the
    engines' namespace (pushed "with its __name__"). A required function
    deleted from the notebook after decorating still reaches the engines
    with the task (rparallel sends notebook functions by value, so only
    this shows that require itself carries them). `@ipp.require(k=10)` puts `k` there; `require(5)` is a
    TypeError."""
    got = value(
        k,
        """
def foo_gone(a):
    return a * 3
@ipp.require(foo_gone)
def bar_gone(x):
    return foo_gone(x) + 1
del foo_gone
gone = [dv.apply_sync(bar_gone, 2), lv.apply_sync(bar_gone, 2)]

before = dv.apply_sync(lambda: 'foo' in globals())
def foo(a):
    return a * 2
@ipp.require(foo)
def bar(x, y):
    return foo(x) - y
direct = dv.apply_sync(bar, 4, 17)
balanced = lv.apply_sync(bar, 4, 17)
after = dv.apply_sync(lambda: 'foo' in globals())

@ipp.require(k=10)
def addk(x):
    return x + k
kw = dv.apply_sync(addk, 1)
{'gone': gone, 'before': before, 'direct': direct, 'balanced': balanced, 'after': after,
 'kw': kw, 'bad': raised(ipp.require, 5)}
""",
    )
    assert got["gone"] == [[7] * N, 7], (
        f"a required function deleted here after decorating did not reach the engines: {got['gone']}"
    )
    assert got["before"] == [False] * N, got
    assert got["direct"] == [-9] * N, got
    assert got["balanced"] == -9, got
    assert got["after"] == [True] * N, f"foo not pushed to the engines by require: {got['after']}"
    assert got["kw"] == [11] * N, got
    assert got["bad"] is not None and got["bad"][0] == "TypeError", got["bad"]


# --------------------------------------------------------------------------
# 6. %%file modules


def test_file_magic_module_is_importable(k):
    """In a fresh working directory (`os.chdir`), `%%file mymod_<random>.py`
    writes the module there and the next cell imports it (the working
    directory is on the import path, as in ipykernel)."""
    name = f"mymod_{uuid.uuid4().hex[:10]}"
    execute_ok(
        k,
        "_cwd0 = os.getcwd()\n"
        "_modtmp = tempfile.mkdtemp(prefix='rp-mod-')\n"
        "os.chdir(_modtmp)\n",
    )
    try:
        ex = execute_ok(k, f"%%file {name}.py\nVALUE = '{name}'\ndef twice(a):\n    return 2 * a\n")
        assert f"{name}.py" in ex.stdout, ex.summary()
        got = value(
            k,
            f"""
import {name}
[{name}.VALUE, {name}.twice(21),
 os.path.dirname(os.path.realpath({name}.__file__)) == os.path.realpath(os.getcwd()),
 os.path.exists('{name}.py')]
""",
        )
        assert got == [name, 42, True, True], got
    finally:
        drain(k)
        execute(
            k,
            f"os.chdir(_cwd0)\nshutil.rmtree(_modtmp, ignore_errors=True)\nsys.modules.pop('{name}', None)\n",
            timeout=20,
        )
