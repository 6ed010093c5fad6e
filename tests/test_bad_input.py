"""Bad input to the Direct interface and the ``%px`` magics, inside a real
``rparallel`` kernel connected to a real 2-engine cluster.

Each case must end in a clear Python exception (or a one-line UsageError
for the magics): never a panic, a hang or a broken kernel. After each case
the kernel still answers, the same two engine processes are alive, and
``apply_sync`` and ``%px`` still work on them (``assert_healthy``).

The cluster is started from the command line in a temporary
``RPARALLEL_DIR`` (as ``test_directview.py`` does); one kernel, started with
that ``RPARALLEL_DIR``, is shared by the module. Most checks run a callable
in the kernel through ``_report(fn)``, which prints its outcome (result or
exception type and message, and how long it took) as one JSON line; the test
then asserts on that outcome. Every wait is bounded; the cluster and the
kernel are stopped at the end and their processes checked to be gone.
"""

from __future__ import annotations

import json
import re

import pytest

from cluster_helpers import start_cli_cluster, stop_cli_cluster
from kernel_helpers import (
    strip_ansi,
    IS_RPARALLEL,
    Execution,
    drain,
    execute,
    execute_ok,
    kernel_pid,
    pid_alive,
    shutdown_and_check,
    start_kernel,
    traceback_text,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own module and cluster"),
    pytest.mark.timeout(180),
]

PROFILE = "badinput"
N_ENGINES = 2
# A bad call must fail (or return) at once; this bounds "at once" generously
# for a loaded 2-core machine.
PROMPT = 10.0
REPORT_RE = re.compile(r"@@REPORT@@(.*?)@@END@@", re.S)

SETUP = f"""
import json, os, socket, threading, time
import rparallel as ipp
rc = ipp.Client(profile={PROFILE!r})
rc.wait_for_engines({N_ENGINES}, timeout=30)
dview = rc[:]
dview.block = True

def _outcome(fn):
    t0 = time.monotonic()
    try:
        value = fn()
    except BaseException as e:
        out = {{
            'ok': False,
            'type': type(e).__name__,
            'mro': [c.__name__ for c in type(e).__mro__],
            'msg': str(e),
            'ename': getattr(e, 'ename', None),
            'notes': [str(n) for n in getattr(e, '__notes__', [])],
        }}
    else:
        out = {{'ok': True, 'repr': repr(value)}}
    out['secs'] = time.monotonic() - t0
    return out

def _report(fn):
    print('@@REPORT@@' + json.dumps(_outcome(fn)) + '@@END@@')
"""


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cluster():
    c = start_cli_cluster(PROFILE, N_ENGINES)
    try:
        yield c
    finally:
        stop_cli_cluster(c)


@pytest.fixture(scope="module")
def cluster_kernel(cluster):
    km, kc = start_kernel(cluster.rp_dir)
    try:
        execute_ok(kc, SETUP, timeout=60)
        ex = execute_ok(kc, "print(json.dumps(sorted(rc[:].apply_sync(os.getpid))))")
        engine_pids = json.loads(ex.stdout)
        assert len(set(engine_pids)) == N_ENGINES, engine_pids
        cluster.more_pids.update(engine_pids)
        yield km, kc, engine_pids
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def k(cluster_kernel):
    """The shared kernel's client, drained, with a fresh blocking ``dview``."""
    kc = cluster_kernel[1]
    drain(kc)
    execute_ok(kc, "rc.wait(timeout=60)\ndview = rc[:]\ndview.block = True\n", timeout=90)
    return kc


@pytest.fixture
def healthy(cluster, cluster_kernel):
    """``healthy()`` asserts the kernel, the controller and both engines are
    fine: same processes alive, apply and %px answering."""
    km, kc, engine_pids = cluster_kernel

    def check():
        assert pid_alive(kernel_pid(km)), "the kernel process died"
        assert pid_alive(cluster.controller_pid), "the controller died"
        dead = [p for p in engine_pids if not pid_alive(p)]
        assert not dead, f"engine processes died: {dead}"
        ex = execute_ok(kc, "print(json.dumps(sorted(rc[:].apply_sync(os.getpid))))", timeout=60)
        assert json.loads(ex.stdout) == engine_pids, (
            f"the engines answering are not the original ones: {ex.stdout!r} vs {engine_pids}"
        )
        ex = execute_ok(kc, "%px 6 * 7", timeout=60)
        outs = sorted(
            strip_ansi(m["content"]["data"]["text/plain"])
            for m in ex.outputs
            if m["msg_type"] in ("display_data", "execute_result")
        )
        assert len(outs) == N_ENGINES and all(o.endswith(": 42") for o in outs), outs
        ex = execute_ok(kc, "21 * 2", timeout=30)
        assert ex.result()["text/plain"] == "42"

    return check


# --------------------------------------------------------------------------
# helpers


def report(kc, code: str, timeout: float = 60) -> dict:
    """Runs ``code`` (which must call ``_report`` once); returns its outcome."""
    ex = execute(kc, code, timeout=timeout)
    assert ex.status == "ok", f"the probing cell itself failed: {ex.summary()}"
    found = REPORT_RE.findall(ex.stdout)
    assert len(found) == 1, f"expected one report, got {ex.stdout!r}"
    return json.loads(found[0])


def assert_fails(out: dict, *, types=None, contains=(), within: float = PROMPT) -> str:
    """The outcome is an exception (of one of ``types`` if given, checked
    against its MRO), raised within ``within`` s, whose message contains
    every string in ``contains`` (case-insensitive); returns the message."""
    assert not out["ok"], f"expected an exception, the call returned {out.get('repr')!r}"
    if types:
        assert set(types) & set(out["mro"]), (
            f"expected one of {types}, got {out['type']} (mro {out['mro']}): {out['msg']!r}"
        )
    low = out["msg"].lower()
    for needle in contains:
        assert needle.lower() in low, f"{needle!r} not in the error message {out['msg']!r}"
    assert out["secs"] < within, f"the error took {out['secs']:.1f}s"
    return out["msg"]


def plain_outputs(ex: Execution) -> list[str]:
    return [
        strip_ansi((m["content"].get("data") or {}).get("text/plain", ""))
        for m in ex.outputs
        if m["msg_type"] in ("display_data", "execute_result")
    ]


def check_out_per_engine(outs: list[str], value) -> None:
    """One ``Out[i:n]: value`` per engine."""
    got = sorted(re.sub(r"^Out\[(\d+):\d+\]: ", r"\1 ", o) for o in outs)
    assert got == [f"{i} {value}" for i in range(N_ENGINES)], outs


def one_line_usage_error(ex: Execution) -> str:
    assert ex.status == "error", f"should have failed: {ex.summary()}"
    err = ex.error()
    tb = traceback_text(err).strip()
    assert err["ename"] == "UsageError", f"expected a UsageError, got {err['ename']}: {tb}"
    assert len(tb.splitlines()) == 1 and tb.startswith("UsageError:"), tb
    assert "__rparallel" not in tb, f"internal names leak into the error: {tb}"
    return tb


# --------------------------------------------------------------------------
# unpicklable objects: refused in the kernel, before anything is sent

UNPICKLABLE = {
    # name: (expression, word the error must name)
    "lock": ("threading.Lock()", "lock"),
    "generator": ("(i for i in range(3))", "generator"),
    "socket": ("socket.socket()", "socket"),
}


@pytest.mark.parametrize("kind", sorted(UNPICKLABLE))
def test_unpicklable_push_is_refused_before_sending(k, healthy, kind):
    expr, word = UNPICKLABLE[kind]
    out = report(
        k,
        f"bad = {expr}\n"
        f"_report(lambda: dview.push({{'sentinel_pushed': 1, 'bad': bad}}))\n",
    )
    assert_fails(out, contains=("pickle", word))
    # nothing was sent: not even the picklable half of the dict arrived
    gone = report(k, "_report(lambda: dview.pull('sentinel_pushed'))")
    assert_fails(gone, contains=("NameError", "sentinel_pushed"))
    # the same for item assignment and update
    out = report(k, "_report(lambda: dview.__setitem__('bad', bad))")
    assert_fails(out, contains=("pickle", word))
    out = report(k, "_report(lambda: dview.update({'bad': bad}))")
    assert_fails(out, contains=("pickle", word))
    gone = report(k, "_report(lambda: dview.pull('bad'))")
    assert_fails(gone, contains=("NameError",))
    # control: the picklable half alone does arrive
    execute_ok(
        k,
        "dview.push({'sentinel_pushed': 1})\n"
        "assert dview.pull('sentinel_pushed') == [1, 1]\n"
        "dview.execute('del sentinel_pushed')\n",
    )
    if kind == "socket":
        execute_ok(k, "bad.close()")
    healthy()


@pytest.mark.parametrize("kind", sorted(UNPICKLABLE))
def test_unpicklable_apply_is_refused_before_sending(k, healthy, tmp_path, kind):
    """An unpicklable positional or keyword argument, closure, map sequence
    or scatter sequence: a clear error in the kernel, and the function never
    ran on any engine (its marker file is absent)."""
    expr, word = UNPICKLABLE[kind]
    marker = tmp_path / "ran"
    execute_ok(
        k,
        f"MARKER = {str(marker)!r}\n"
        f"bad = {expr}\n"
        "def f(*args, **kwargs):\n"
        "    open(MARKER, 'a').write('ran')\n"
        "    return 1\n",
    )
    calls = {
        "positional": "lambda: dview.apply_sync(f, bad)",
        "keyword": "lambda: dview.apply_sync(f, x=bad)",
        "async": "lambda: dview.apply_async(f, bad).get(timeout=5)",
        "single engine": "lambda: rc[0].apply_sync(f, [1, bad])",
        "closure": "lambda: dview.apply_sync(lambda: (open(MARKER, 'a').write('ran'), bad))",
        "map": "lambda: dview.map_sync(f, [1, bad, 2])",
    }
    for name, call in calls.items():
        out = report(k, f"_report({call})")
        try:
            assert_fails(out, contains=("pickle", word))
        except AssertionError as e:
            raise AssertionError(f"{name}: {e}") from None
    if kind != "generator":  # scatter consumes a generator as a sequence
        out = report(k, "_report(lambda: dview.scatter('scattered', [bad, bad]))")
        assert_fails(out, contains=("pickle", word))
        gone = report(k, "_report(lambda: dview.pull('scattered'))")
        assert_fails(gone, contains=("NameError",))
    assert not marker.exists(), f"a function with an unpicklable argument ran: {marker.read_text()!r}"
    # control: with picklable arguments the same function does run
    execute_ok(k, "assert dview.apply_sync(f, 1) == [1, 1]")
    assert marker.read_text() == "ran" * N_ENGINES
    if kind == "socket":
        execute_ok(k, "bad.close()")
    healthy()


def test_unpicklable_result_and_pull_are_remote_errors(k, healthy):
    """An engine that cannot pickle its answer says so, per engine."""
    execute_ok(k, "%px import threading; lock_on_engine = threading.Lock()")
    out = report(k, "_report(lambda: dview.pull('lock_on_engine'))")
    msg = assert_fails(out, types=("CompositeError", "RemoteError"), contains=("pickle", "lock"))
    assert "[0:" in msg and "[1:" in msg, msg
    out = report(k, "_report(lambda: dview.apply_sync(lambda: threading.Lock()))")
    assert_fails(out, types=("CompositeError", "RemoteError"), contains=("pickle", "lock"))
    out = report(k, "_report(lambda: rc[1].apply_sync(lambda: threading.Lock()))")
    assert_fails(out, types=("RemoteError",), contains=("pickle", "lock"))
    healthy()


def test_result_that_cannot_be_unpickled_in_the_kernel(k, healthy):
    """The engine pickles fine, but unpickling fails in the kernel: the
    unpickling error is raised in the cell, the client stays usable."""
    execute_ok(
        k,
        "%%px\n"
        "class Unp:\n"
        "    def __reduce__(self):\n"
        "        return (int, ('notanint',))\n"
        "u = Unp()\n",
    )
    out = report(k, "_report(lambda: dview.pull('u'))")
    assert_fails(out, contains=("notanint",))
    out = report(k, "_report(lambda: rc[0].apply_sync(lambda: u))")
    assert_fails(out, contains=("notanint",))
    # The error says where the value came from.
    assert out["notes"] == ["while unpickling the result of apply on engine 0 in the client"], out
    healthy()


def test_remote_result_of_function_with_nested_class_that_cannot_be_pickled(k, healthy):
    """A function defining a class whose instances refuse pickling: the
    engine reports the pickling error (not some other failure)."""
    out = report(
        k,
        "def make_unpicklable():\n"
        "    class Unp:\n"
        "        def __reduce__(self):\n"
        "            raise TypeError('no pickling Unp')\n"
        "    return Unp()\n"
        "_report(lambda: dview.apply_sync(make_unpicklable))\n",
    )
    assert_fails(out, types=("CompositeError", "RemoteError"), contains=("no pickling Unp",))
    healthy()


def test_functions_with_nested_code_objects_apply(k, healthy):
    """Functions whose code holds other code objects (a comprehension, a
    nested def, a lambda) are plain functions: apply must run them."""
    out = report(k, "_report(lambda: dview.apply_sync(lambda: [i * i for i in range(4)]))")
    assert out["ok"], f"apply of a lambda with a comprehension failed: {out}"
    assert out["repr"] == "[[0, 1, 4, 9], [0, 1, 4, 9]]", out
    out = report(
        k,
        "def outer():\n"
        "    def inner(x):\n"
        "        return x + 1\n"
        "    return inner(41)\n"
        "_report(lambda: dview.apply_sync(outer))\n",
    )
    assert out["ok"], f"apply of a function with a nested def failed: {out}"
    assert out["repr"] == "[42, 42]", out
    out = report(k, "_report(lambda: dview.map_sync(lambda x: sum(j for j in range(x)), [3, 4]))")
    assert out["ok"], f"map of a lambda with a generator expression failed: {out}"
    assert out["repr"] == "[3, 6]", out
    healthy()


# --------------------------------------------------------------------------
# targets


@pytest.mark.parametrize(
    "call, needle",
    [
        ("rc[99]", "99"),
        ("rc[[0, 99]]", "99"),
        ("rc[-3]", "-3"),
        ("rc.direct_view(99)", "99"),
        ("dview.execute('x = 1', targets=99)", "99"),
        ("dview.push({'a': 1}, targets=[99])", "99"),
        ("dview.pull('a', targets=[1, 99])", "99"),
    ],
)
def test_no_such_engine(k, healthy, call, needle):
    out = report(k, f"_report(lambda: {call})")
    assert_fails(out, types=("IndexError", "KeyError", "ValueError"), contains=(needle,))
    healthy()


@pytest.mark.parametrize(
    "call, kind, needle",
    [
        ("ipp.Cluster(n=1, engines='pbs')", "ValueError", 'unknown engine launcher "pbs"'),
        ("ipp.Cluster(n=1, hosts=['node1'])", "ValueError", "hosts are for engines on other hosts"),
        ("ipp.Cluster(engines='ssh')", "ValueError", "the ssh launcher needs hosts"),
        ("ipp.Cluster(n=3, engines='ssh', hosts={'a': 2, 'b': 2})", "ValueError", "give -n 4"),
        ("ipp.Cluster(n=1, engines='ssh', hosts='a:0')", "ValueError", "bad engine count"),
        ("ipp.Cluster(n=1, engines='mpi', slurm_args=['-p', 'x'])", "ValueError", "slurm_args are for"),
        ("ipp.Cluster(n=1, bogus=1)", "TypeError", "'bogus'"),
    ],
)
def test_cluster_refuses_what_it_cannot_do(k, healthy, call, kind, needle):
    """A launcher rparallel lacks, hosts without a launcher that uses them,
    counts that disagree, options of another launcher, an unknown option:
    a clear error when the Cluster is made, never local engines instead of
    the ones asked for."""
    out = report(k, f"_report(lambda: {call})")
    assert_fails(out, types=(kind,), contains=(needle,))
    healthy()


def test_setting_view_targets_to_a_missing_engine(k, healthy):
    """Either refused when set or a clear error when used; never a hang."""
    out = report(k, "v = rc[:]\n_report(lambda: setattr(v, 'targets', [0, 99]))")
    if out["ok"]:
        out = report(k, "_report(lambda: v.apply_sync(lambda: 1))")
    assert_fails(out, types=("IndexError", "KeyError", "ValueError", "RemoteError"), contains=("99",))
    healthy()


@pytest.mark.parametrize(
    "call",
    [
        "rc[[]]",
        "rc[0:0]",
        "rc[5:9]",
        "rc.direct_view([]).apply_sync(lambda: 1)",
        "rc.direct_view([]).execute('x = 1')",
        "dview.execute('x = 1', targets=[])",
        "dview.push({'a': 1}, targets=[])",
        "dview.pull('a', targets=[])",
        "dview.scatter('x', [1, 2], targets=[])",
        "dview.gather('x', targets=[])",
    ],
)
def test_empty_target_list(k, healthy, call):
    """An empty target list: an immediate, clear error (rparallel: ValueError
    'the target list is empty') or an empty result; never a hang."""
    out = report(k, f"_report(lambda: {call})")
    if out["ok"]:
        assert out["repr"] in ("[]", "None"), f"{call} returned {out['repr']!r}"
        assert out["secs"] < PROMPT, out
    else:
        msg = assert_fails(out, types=("ValueError", "IndexError"))
        assert re.search(r"empty|no engine|no target", msg, re.I), msg
    healthy()


def test_apply_targets_keyword_goes_to_the_function(k, healthy):
    """As in ipyparallel, apply's keyword arguments are the function's:
    ``targets=[]`` is passed to f, which rejects it on each engine."""
    out = report(k, "_report(lambda: dview.apply_sync(lambda: 1, targets=[]))")
    msg = assert_fails(out, types=("CompositeError",), contains=("targets",))
    assert "TypeError" in msg and "unexpected keyword" in msg, msg
    out = report(k, "_report(lambda: dview.apply_sync(lambda targets: len(targets), targets=[]))")
    assert out["ok"] and out["repr"] == "[0, 0]", out
    healthy()


def test_map_of_empty_sequence(k, healthy):
    out = report(k, "_report(lambda: dview.map_sync(lambda x: x, []))")
    if out["ok"]:
        assert out["repr"] == "[]", out
        assert out["secs"] < PROMPT, out
    else:
        assert_fails(out, types=("ValueError", "TypeError"), contains=("empty",))
    out = report(k, "_report(lambda: dview.map_sync(lambda x: x))")
    assert_fails(out, types=("TypeError",), contains=("sequence",))
    healthy()


# --------------------------------------------------------------------------
# push / pull


@pytest.mark.parametrize("arg", ["[1, 2]", "'x'", "None", "42", "('a', 1)"])
def test_push_non_dict_is_type_error(k, healthy, arg):
    out = report(k, f"_report(lambda: dview.push({arg}))")
    assert_fails(out, types=("TypeError",), contains=("dict",))
    healthy()


def test_pull_undefined_name_is_remote_name_error(k, healthy):
    out = report(k, "_report(lambda: dview.pull('undefined_name'))")
    msg = assert_fails(out, types=("CompositeError",), contains=("NameError", "undefined_name"))
    assert "[0:pull]" in msg and "[1:pull]" in msg, msg
    out = report(k, "_report(lambda: rc[1].pull('undefined_name', block=True))")
    assert_fails(out, types=("RemoteError",), contains=("NameError", "undefined_name"))
    assert out["ename"] == "NameError", out
    out = report(k, "_report(lambda: dview.pull(['undefined_a', 'undefined_b']))")
    assert_fails(out, types=("CompositeError",), contains=("NameError", "undefined_a"))
    # through the rendered error too: one Jupyter error with [n:pull] blocks
    ex = execute(k, "dview.pull('undefined_name')")
    assert ex.status == "error", ex.summary()
    tb = traceback_text(ex.error())
    assert "[0:pull]" in tb and "NameError" in tb, tb
    healthy()


@pytest.mark.parametrize("arg", ["42", "[1, 2]", "{'a': 1}"])
def test_pull_bad_key_type(k, healthy, arg):
    out = report(k, f"_report(lambda: dview.pull({arg}))")
    assert_fails(out, types=("TypeError",), contains=("name",))
    healthy()


# --------------------------------------------------------------------------
# huge cells

FIVE_MB = 5 * 1024 * 1024


def test_huge_px_cell(k, healthy):
    body = "z" * FIVE_MB
    ex = execute(k, f"%%px\nhuge = '{body}'\nlen(huge)\n", timeout=120)
    assert ex.status == "ok", ex.summary()[:2000]
    check_out_per_engine(plain_outputs(ex), FIVE_MB)
    ex = execute_ok(k, "%px len(huge)", timeout=60)
    check_out_per_engine(plain_outputs(ex), FIVE_MB)
    # many lines instead of one
    lines = "ab\n" * (FIVE_MB // 3)
    ex = execute(k, f"%%px\nhuge_lines = '''{lines}'''\nhuge_lines.count('ab')\n", timeout=120)
    assert ex.status == "ok", ex.summary()[:2000]
    check_out_per_engine(plain_outputs(ex), FIVE_MB // 3)
    execute_ok(k, "%px del huge, huge_lines")
    healthy()


def test_huge_local_cell(k, healthy):
    body = "y" * FIVE_MB
    ex = execute(k, f"huge_local = '{body}'\nlen(huge_local)\n", timeout=120)
    assert ex.status == "ok", ex.summary()[:2000]
    assert ex.result()["text/plain"] == str(FIVE_MB)
    # and pushing it to the engines
    ex = execute_ok(
        k, "dview.push({'pushed_huge': huge_local})\n"
        "dview.apply_sync(lambda: len(pushed_huge))", timeout=120,
    )
    assert ex.result()["text/plain"] == f"[{FIVE_MB}, {FIVE_MB}]"
    execute_ok(k, "del huge_local\n%px del pushed_huge")
    healthy()


@pytest.mark.parametrize("px", [False, True])
def test_huge_cell_with_syntax_error(k, healthy, px):
    body = "w" * FIVE_MB
    code = ("%%px\n" if px else "") + f"broken = '{body}' +\n"
    ex = execute(k, code, timeout=120)
    assert ex.status == "error", ex.summary()[:2000]
    err = ex.error()
    text = err["ename"] + " " + err["evalue"]
    assert "SyntaxError" in text, text[:500]
    healthy()


# --------------------------------------------------------------------------
# text that is not valid UTF-8

BAD_TEXT = "b'\\xff\\xfe bad'.decode('utf-8', 'surrogateescape')"


def test_print_of_undecodable_text_on_engines(k, healthy):
    """Lone surrogates (undecodable bytes kept by ``surrogateescape``) in
    what engines print: shown with replacement characters, nothing lost
    around them."""
    ex = execute_ok(k, f"%%px\nprint('A' + {BAD_TEXT} + 'Z')\nprint('next line')\n")
    out = ex.stdout
    for i in range(N_ENGINES):
        assert re.search(rf"\[stdout:{i}\]\s*A\ufffd+ badZ", out), out
    assert out.count("next line") == N_ENGINES, out
    ex = execute_ok(k, "%%px\nimport sys\nsys.stderr.write('E\\udcff!\\n')\n")
    assert ex.stderr.count("E\ufffd") == N_ENGINES, ex.stderr
    out = report(
        k,
        "ar = dview.apply_async(lambda: print('P\\ud800Q'))\n"
        "ar.get(timeout=10)\n"
        "_report(lambda: ar.stdout)\n",
    )
    assert out["ok"], out
    assert out["repr"].count("P\\ufffd") == N_ENGINES or out["repr"].count("P\ufffd") == N_ENGINES, out
    healthy()


def test_print_of_undecodable_text_in_kernel(k, healthy):
    ex = execute_ok(k, f"print('L' + {BAD_TEXT} + 'Z')")
    assert re.fullmatch(r"L\ufffd+ badZ\n", ex.stdout), repr(ex.stdout)
    healthy()


def test_raw_bytes_to_stdout_on_engines(k, healthy):
    """``sys.stdout.buffer`` (absent on ipykernel's OutStream too) and raw
    writes to fd 1: the cell either shows the text with replacement
    characters or fails with a clear AttributeError; the engines keep
    working and later output is shown normally."""
    ex = execute(
        k,
        "%%px\nimport sys\nsys.stdout.buffer.write(b'\\xff\\xfe bad-buffer\\n')\nsys.stdout.flush()\n",
    )
    if ex.status == "ok":
        assert ex.stdout.count("bad-buffer") == N_ENGINES, ex.stdout
        assert "\ufffd" in ex.stdout, ex.stdout
    else:
        err = ex.error()
        text = err["evalue"]
        assert "AttributeError" in text and "buffer" in text, text
    ex = execute_ok(k, "%%px\nimport os\nos.write(1, b'\\xff\\xfe raw fd bad\\n')\nos.write(2, b'\\xc3\\x28 raw fd2\\n')\n")
    assert ex.status == "ok"
    ex = execute_ok(k, "%px print('after raw bytes')")
    assert ex.stdout.count("after raw bytes") == N_ENGINES, ex.stdout
    healthy()


def test_result_repr_with_undecodable_text(k, healthy):
    """A value whose repr holds a lone surrogate is a result, not an error
    about JSON."""
    code = (
        "class Weird:\n"
        "    def __repr__(self):\n"
        "        return 'W\\udcffrepr'\n"
        "Weird()\n"
    )
    ex = execute(k, code)
    assert ex.status == "ok", f"local cell failed: {ex.summary()}"
    assert re.fullmatch(r"W(\ufffd+|\\udcff)repr", ex.result()["text/plain"]), ex.result()
    ex = execute(k, "%%px\n" + code)
    assert ex.status == "ok", f"%px cell failed: {ex.summary()}"
    outs = plain_outputs(ex)
    assert len(outs) == N_ENGINES and all(re.search(r"W(\ufffd+|\\udcff)repr", o) for o in outs), outs
    healthy()


def test_display_with_undecodable_text(k, healthy):
    """display() of an object whose reprs hold lone surrogates: a valid
    display_data (a dict of mime types), locally and from the engines."""
    code = (
        "class WeirdDisplay:\n"
        "    def _repr_html_(self):\n"
        "        return '<b>H\\udcff</b>'\n"
        "    def __repr__(self):\n"
        "        return 'D\\udcffrepr'\n"
        "display(WeirdDisplay())\n"
    )
    ex = execute(k, code)
    assert ex.status == "ok", f"local cell failed: {ex.summary()}"
    displays = ex.of_type("display_data")
    assert len(displays) == 1, ex.summary()
    data = displays[0]["content"]["data"]
    assert isinstance(data, dict) and "text/plain" in data, f"invalid display_data: {displays[0]['content']}"
    ex = execute(k, "%%px\n" + code)
    assert ex.status == "ok", f"%px cell failed: {ex.summary()}"
    assert "__rparallel" not in ex.summary()
    healthy()


def test_exception_message_with_undecodable_text(k, healthy):
    """The user's exception survives a lone surrogate in its message: its
    name and text are shown, not an internal JSON error."""
    ex = execute(k, "raise ValueError('bad \\udcff value')")
    assert ex.status == "error"
    err = ex.error()
    assert err["ename"] == "ValueError", f"got {err['ename']}: {err['evalue']}"
    assert "bad" in err["evalue"] and "value" in err["evalue"], err
    ex = execute(k, "%px raise ValueError('bad \\udcff value')")
    assert ex.status == "error"
    err = ex.error()
    assert err["ename"] == "CompositeError", err
    assert err["evalue"].count("ValueError") == N_ENGINES, err["evalue"]
    healthy()


# --------------------------------------------------------------------------
# %px options (test_px.py covers --bogus, --targets x, --group-outputs=sideways,
# %pxconfig --local, --targets 9, --progress-after soon)


@pytest.mark.parametrize(
    "cell",
    [
        "%%px -t abc\n1",
        "%%px --targets []\n1",
        "%%px -t ,\n1",
        "%%px -t 0,,1\n1",
        "%%px --targets ::0\n1",
        "%%px -t 99999999999999999999\n1",
        "%%px --targets=-99\n1",
        "%%px --targets\n1",
        "%%px -t 0 -t 1\n1",
        "%%px --timeout abc\n1",
        "%%px --timeout nan\n1",
        "%%px --timeout inf\n1",
        "%%px -o\n1",
        "%%px --group-outputs\n1",
        "%%px --progress-after\n1",
        "%%px extra positional words\n1",
        '%%px "unbalanced\n1',
        "%pxconfig --bogus",
        "%pxconfig -t abc",
        "%pxresult --bogus",
        "%autopx --bogus",
    ],
)
def test_more_bad_px_options_are_one_line_usage_errors(k, healthy, cell):
    one_line_usage_error(execute(k, cell))
    healthy()


@pytest.mark.parametrize("spec", ["5:9", "0:0", "2:"])
def test_px_empty_target_slice_is_usage_error(k, healthy, spec):
    """A target slice that selects no engine is a bad option like
    ``--targets 9``: a one-line UsageError, no internal names."""
    one_line_usage_error(execute(k, f"%%px --targets {spec}\n1"))
    healthy()


def test_pxconfig_empty_targets_then_px(k, healthy):
    """``%pxconfig --targets 5:9`` on 2 engines: refused, or the next %px
    fails with a one-line UsageError (no internal names)."""
    try:
        ex = execute(k, "%pxconfig --targets 5:9")
        if ex.status == "error":
            one_line_usage_error(ex)
        else:
            one_line_usage_error(execute(k, "%px 1"))
    finally:
        execute_ok(k, "%pxconfig --targets all")
    healthy()


# --------------------------------------------------------------------------
# exceptions that are hard to show or to send


def test_remote_exception_with_unpicklable_attribute(k, healthy):
    """An exception class from ``__main__`` holding a lock, raised on the
    engines: shown by name and message, per engine."""
    execute_ok(
        k,
        "class BadExc(Exception):\n"
        "    def __init__(self, msg):\n"
        "        super().__init__(msg)\n"
        "        self.lock = threading.Lock()\n"
        "def raise_bad():\n"
        "    raise BadExc('boom-unpicklable')\n",
    )
    out = report(k, "_report(lambda: dview.apply_sync(raise_bad))")
    msg = assert_fails(out, types=("CompositeError",), contains=("BadExc", "boom-unpicklable"))
    assert "[0:apply]" in msg and "[1:apply]" in msg, msg
    out = report(k, "_report(lambda: rc[0].apply_sync(raise_bad))")
    assert_fails(out, types=("RemoteError",), contains=("boom-unpicklable",))
    assert out["ename"] == "BadExc", out
    ex = execute(
        k,
        "%%px\n"
        "import threading\n"
        "class BadExcPx(Exception):\n"
        "    def __init__(self, msg):\n"
        "        super().__init__(msg)\n"
        "        self.lock = threading.Lock()\n"
        "raise BadExcPx('px-unpicklable')\n",
    )
    assert ex.status == "error"
    tb = traceback_text(ex.error())
    assert tb.count("BadExcPx: px-unpicklable") == N_ENGINES, tb
    healthy()


def test_remote_exception_whose_str_and_repr_raise(k, healthy):
    execute_ok(
        k,
        "class BadStr(Exception):\n"
        "    def __str__(self):\n"
        "        raise RuntimeError('str exploded')\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('repr exploded')\n"
        "def raise_badstr():\n"
        "    raise BadStr('x')\n",
    )
    out = report(k, "_report(lambda: dview.apply_sync(raise_badstr))")
    msg = assert_fails(out, types=("CompositeError",), contains=("BadStr",))
    assert msg.count("BadStr") >= N_ENGINES, msg
    ex = execute(
        k,
        "%%px\n"
        "class BadStrPx(Exception):\n"
        "    def __str__(self):\n"
        "        raise RuntimeError('str exploded')\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('repr exploded')\n"
        "raise BadStrPx()\n",
    )
    assert ex.status == "error"
    assert ex.error()["ename"] == "CompositeError", ex.error()
    assert traceback_text(ex.error()).count("BadStrPx") >= N_ENGINES
    # and locally
    ex = execute(k, "raise BadStr('local')")
    assert ex.status == "error"
    assert ex.error()["ename"] == "BadStr", ex.error()
    healthy()


def test_remote_exception_that_cannot_be_rebuilt(k, healthy):
    """An exception whose __init__ needs two arguments cannot be unpickled
    from its args; the error still shows its name and message."""
    out = report(
        k,
        "class TwoArgs(Exception):\n"
        "    def __init__(self, a, b):\n"
        "        super().__init__(a)\n"
        "def raise_two():\n"
        "    raise TwoArgs('two-arg', 2)\n"
        "_report(lambda: rc[1].apply_sync(raise_two))\n",
    )
    assert_fails(out, types=("RemoteError",), contains=("two-arg",))
    assert out["ename"] == "TwoArgs", out
    healthy()


def test_result_whose_repr_raises(k, healthy):
    """``%px obj`` where repr(obj) raises: the cell does not crash; it shows
    a placeholder (or the repr's error) per engine."""
    ex = execute(
        k,
        "%%px\n"
        "class BadRepr:\n"
        "    def __repr__(self):\n"
        "        raise RuntimeError('repr boom')\n"
        "BadRepr()\n",
    )
    if ex.status == "ok":
        outs = plain_outputs(ex)
        assert len(outs) == N_ENGINES and all("BadRepr" in o for o in outs), outs
    else:
        assert "repr boom" in traceback_text(ex.error()), ex.summary()
    healthy()
