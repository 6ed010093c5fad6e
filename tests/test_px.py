"""End-to-end tests of the ``%px`` family in the ``rparallel`` kernel:
``%px``, ``%%px`` and its options, ``%pxresult``/``%result``, ``%pxconfig``,
``%autopx`` and ``view.activate(suffix)``.

Most tests share one kernel (module scope) in which
``ipp.Cluster(n=4).start_and_connect_sync()`` started 4 engines; each engine
holds ``rank`` (its id) and has ``os``, ``sys`` and ``time`` imported, so
that cells can make engines behave differently
(e.g. sleep ``(3 - rank) * t`` to finish in descending order). The embedded
default cluster (``%px`` with no client) and process clean-up get fresh
kernels of their own. Every wait is bounded.

Engine output is checked through its labels: ``parse_blocks`` splits the
text of consecutive stream messages into ``[stdout:N]`` / ``[stderr:N]`` /
``[output:N]`` blocks, ``engine_lines`` gathers each engine's lines from them.
"""

from __future__ import annotations

import os
import re
import time
from collections import defaultdict
from pathlib import Path

import pytest

from kernel_helpers import (
    strip_ansi,
    start_cell,
    Execution,
    IS_RPARALLEL,
    collect_iopub,
    describe,
    drain,
    execute,
    execute_error,
    execute_ok,
    get_reply,
    kernel_pid,
    kill_pids,
    pid_alive,
    pids_with_cmdline,
    shutdown_and_check,
    traceback_text,
    wait_no_process_with,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="the %px magics are rparallel's"),
    pytest.mark.timeout(120),
]

N_ENGINES = 4
ALL = list(range(N_ENGINES))
# the embedded default: one engine per CPU (Rust's available_parallelism,
# i.e. the CPUs this process may run on), at least 2
EMBEDDED_N = max(2, len(os.sched_getaffinity(0)))
EMBEDDED = list(range(EMBEDDED_N))
ANNOUNCE = f"%px: started a local cluster of {EMBEDDED_N} engines (it stops with the kernel)"
# how long a cluster's processes may take to go away after kernel shutdown
GONE_TIMEOUT = 10


# --------------------------------------------------------------------------
# helpers


def run(kc, code: str, timeout: float = 30) -> Execution:
    """Runs ``code``; asserts the cell succeeded."""
    return execute_ok(kc, code, timeout=timeout)


def run_error(kc, code: str, timeout: float = 30) -> Execution:
    """Runs ``code``; asserts it failed with exactly one error message."""
    return execute_error(kc, code, timeout=timeout)


LABEL = re.compile(r"\[(stdout|stderr|output):(\d+)\](?: (.*))?")


def parse_blocks(ex: Execution) -> list[tuple]:
    """The cell's outputs in order, as

    - ``(stream, engine, [lines])`` for each labelled block of a stream
      (``[stdout:N] x`` is one line; ``[stdout:N]`` alone: the following
      lines up to the next label); unlabelled lines give ``engine=None``;
    - ``("output", engine, [])`` for an ``[output:N]`` header;
    - ``("display", text/plain)`` for a display_data, ``Out[N:k]`` written
      ``Out[N:k]`` with a literal ``k``.

    Consecutive stream messages of one stream are read as one text, so that
    how the kernel cut them into messages does not matter.
    """
    blocks: list[tuple] = []
    runs: list[tuple[str, str]] = []  # (stream name, text) or ("display", text)
    for m in ex.outputs:
        c = m["content"]
        if m["msg_type"] == "stream":
            if runs and runs[-1][0] == c["name"]:
                runs[-1] = (c["name"], runs[-1][1] + c["text"])
            else:
                runs.append((c["name"], c["text"]))
        elif m["msg_type"] == "display_data":
            runs.append(("display", strip_ansi(c["data"].get("text/plain", ""))))
    for kind, text in runs:
        if kind == "display":
            blocks.append(("display", re.sub(r"^Out\[(\d+):\d+\]", r"Out[\1:k]", text)))
            continue
        current = None
        for line in text.splitlines():
            m = LABEL.fullmatch(line)
            if m and m.group(1) == "output":
                blocks.append(("output", int(m.group(2)), []))
                current = None
            elif m:
                name, engine = m.group(1), int(m.group(2))
                assert name == kind, f"[{name}:{engine}] label on the {kind} stream: {line!r}"
                if m.group(3) is None:
                    current = (name, engine, [])
                    blocks.append(current)
                else:
                    blocks.append((name, engine, [m.group(3)]))
                    current = None
            else:
                if current is None:
                    current = (kind, None, [])
                    blocks.append(current)
                current[2].append(line)
    return blocks


def engine_lines(ex: Execution, name: str = "stdout") -> tuple[dict[int, list[str]], list[str]]:
    """Each engine's lines on stream ``name``, following the labels; and the
    unlabelled lines of that stream."""
    per_engine: dict[int, list[str]] = defaultdict(list)
    stray: list[str] = []
    for block in parse_blocks(ex):
        if block[0] != name:
            continue
        if block[1] is None:
            stray.extend(block[2])
        else:
            per_engine[block[1]].extend(block[2])
    return dict(per_engine), stray


def displays(ex: Execution) -> list[dict]:
    return [m["content"] for m in ex.of_type("display_data")]


OUT = re.compile(r"Out\[(\d+):(\d+)\]: (.*)", re.S)


def out_labels(ex: Execution) -> list[tuple[int, int, str]]:
    """``(engine, count, value)`` of each ``Out[N:k]: value`` display, in order."""
    found = []
    for d in displays(ex):
        m = OUT.fullmatch(strip_ansi(d["data"].get("text/plain", "")))
        assert m, f"display is not an Out[N:k] result: {d['data']!r}"
        found.append((int(m.group(1)), int(m.group(2)), m.group(3)))
    return found


EXEC_HEADER = re.compile(r"^\[(\d+):execute\]:$", re.M)


def engine_blocks(tb: str) -> list[tuple[int, str]]:
    """Splits a rendered CompositeError into ``(engine, text)`` blocks."""
    heads = list(EXEC_HEADER.finditer(tb))
    return [
        (int(m.group(1)), tb[m.end(): heads[i + 1].start() if i + 1 < len(heads) else len(tb)])
        for i, m in enumerate(heads)
    ]


# --------------------------------------------------------------------------
# fixtures: one kernel with a 4-engine cluster for most tests


@pytest.fixture(scope="module")
def px_kernel(shared_kernel):
    """The module's kernel, with ``rc`` a 4-engine cluster started inside
    it (stopped with the kernel) and ``rank`` set on each engine."""
    _, kc = shared_kernel
    run(
        kc,
        "import os, sys, time\n"
        "import rparallel as ipp\n"
        "import rparallel\n"
        "cluster = ipp.Cluster(n=4)\n"
        "rc = cluster.start_and_connect_sync()\n"
        "rc.wait_for_engines(4, timeout=30)\n"
        "assert rc.ids == [0, 1, 2, 3], rc.ids\n"
        "for i in rc.ids:\n"
        "    rc[i].push({'rank': i}, block=True)\n"
        "rc[:].execute('import os, sys, time', block=True)\n",
        timeout=60,
    )
    return shared_kernel


@pytest.fixture
def k(px_kernel):
    """The shared kernel's client, drained, with the ``%px`` defaults back
    (all engines, blocking, streaming, not verbose, grouped by type) and
    tb_limit 5."""
    kc = px_kernel[1]
    drain(kc)
    run(
        kc,
        "%pxconfig --targets all --block --no-verbose --stream --group-outputs=type\n"
        "rparallel.CompositeError.tb_limit = 5\n"
        "rc.wait(timeout=30)\n",
    )
    return kc


# --------------------------------------------------------------------------
# the embedded default cluster (fresh kernels)


def cluster_pids_of(kpid: int) -> list[int]:
    """Processes of the embedded cluster of kernel ``kpid``: its private
    profile is named ``cluster-<kernel pid>-...``."""
    return pids_with_cmdline(f"cluster-{kpid}-")


def rparallel_pids() -> set[int]:
    """Live ``rparallel engine`` and ``rparallel controller`` processes."""
    return set(pids_with_cmdline("rparallel engine")) | set(pids_with_cmdline("rparallel controller"))


def descendants(root: int) -> set[int]:
    """Live processes below ``root`` in the process tree."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {p for p, pp in parents.items() if pp in frontier} - found
        found |= frontier
    return found


def test_embedded_cluster_started_reused_and_stopped(kernel):
    """`%px` with no client starts a local cluster (one engine per CPU, at
    least 2: 2 on this machine) announced in one line; later `%px` cells
    reuse it (no second line, same engine pids); engine pids differ from
    each other and from the kernel's; after kernel shutdown no process of
    that cluster remains and its private profile is removed."""
    km, kc = kernel
    kpid = kernel_pid(km)
    assert not cluster_pids_of(kpid)
    before = rparallel_pids()

    ex = run(kc, '%px print("hi")', timeout=60)
    lines = ex.stdout.splitlines()
    assert lines.count(ANNOUNCE) == 1, ex.stdout
    assert lines[0] == ANNOUNCE, ex.stdout
    per_engine, stray = engine_lines(ex)
    assert stray == [ANNOUNCE], ex.stdout
    assert per_engine == {n: ["hi"] for n in EMBEDDED}, ex.stdout
    assert ex.stderr == "", ex.stderr

    ex = run(kc, "%px import os; os.getpid()")
    assert "started a local cluster" not in ex.stdout, ex.stdout
    outs = out_labels(ex)
    assert [o[0] for o in outs] == EMBEDDED, describe(ex.outputs)
    pids = [int(o[2]) for o in outs]
    assert len(set(pids)) == EMBEDDED_N and kpid not in pids, (pids, kpid)

    ex = run(kc, "%px os.getpid()")
    assert "started a local cluster" not in ex.stdout, ex.stdout
    assert [int(o[2]) for o in out_labels(ex)] == pids, describe(ex.outputs)

    # the cluster's processes: by profile name, and the new rparallel
    # engines/controllers started below the kernel
    found = cluster_pids_of(kpid)
    assert set(pids) <= set(found), (pids, found)
    assert len(found) >= EMBEDDED_N + 1, f"expected a controller and engines, found {found}"
    started = (rparallel_pids() - before) & descendants(kpid)
    assert set(pids) <= started, (pids, started)
    found = sorted(set(found) | started)
    profiles = set()
    for pid in found:
        for arg in Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0"):
            m = re.search(r"(.*/profile_cluster-\d+-[^/]+)/", arg)
            if m:
                profiles.add(Path(m.group(1)))
    assert len(profiles) == 1, profiles
    (profile,) = profiles
    assert profile.is_dir(), profile

    shutdown_and_check(km, kc)
    left = [p for p in found if pid_alive(p)]
    deadline = time.monotonic() + GONE_TIMEOUT
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [p for p in left if pid_alive(p)]
    scanned = wait_no_process_with(f"cluster-{kpid}-", 1)
    kill_pids(sorted(set(left) | set(scanned)))
    assert not left, f"embedded cluster processes alive {GONE_TIMEOUT}s after shutdown: {left}"
    assert not scanned, f"processes of cluster-{kpid}-* still running: {scanned}"
    assert not profile.exists(), f"the embedded cluster's profile {profile} was left behind"


def test_new_client_becomes_px_target(kernel):
    """After the embedded cluster, a Cluster started in the kernel
    (`start_and_connect_sync`) makes its blocking `rc[:]` the `%px` target."""
    _, kc = kernel
    ex = run(kc, "%px import os; os.getpid()", timeout=60)
    embedded_pids = {int(o[2]) for o in out_labels(ex)}
    assert len(embedded_pids) == EMBEDDED_N, describe(ex.outputs)
    ex = run(
        kc,
        "import json, os\n"
        "import rparallel as ipp\n"
        "cluster = ipp.Cluster(n=3)\n"
        "rc = cluster.start_and_connect_sync()\n"
        "rc.wait_for_engines(3, timeout=30)\n"
        "print(json.dumps(rc[:].apply_sync(os.getpid)))\n",
        timeout=60,
    )
    own_pids = [int(p) for p in ex.stdout.strip("[]\n").split(",")]
    ex = run(kc, "%px import os; os.getpid()")
    outs = out_labels(ex)
    assert [o[0] for o in outs] == [0, 1, 2], describe(ex.outputs)
    assert [int(o[2]) for o in outs] == own_pids, (outs, own_pids)
    assert not embedded_pids & set(own_pids)
    assert "started a local cluster" not in ex.stdout


# --------------------------------------------------------------------------
# the client's view and output formats (shared kernel, 4 engines)


def test_client_view_is_target(k):
    """`ipp.Cluster(n=4).start_and_connect_sync()` makes its blocking
    `rc[:]` the target: `%px` runs on engines 0..3 (the client's) and did
    not start an embedded cluster."""
    ex = run(k, "print(rc[:].apply_sync(os.getpid))")
    client_pids = [int(p) for p in ex.stdout.strip("[]\n").split(",")]
    ex = run(k, "%px os.getpid()")
    assert [(o[0], int(o[2])) for o in out_labels(ex)] == list(zip(ALL, client_pids))
    assert "started a local cluster" not in ex.stdout


def test_stdout_labels(k):
    """`%px print("hi")`: one `[stdout:N] hi` line per engine, on stdout,
    nothing else."""
    ex = run(k, '%px print("hi")')
    per_engine, stray = engine_lines(ex)
    assert per_engine == {n: ["hi"] for n in ALL}, ex.stdout
    assert not stray, ex.stdout
    assert sorted(re.findall(r"^\[stdout:(\d)\] hi$", ex.stdout, re.M)) == ["0", "1", "2", "3"]
    assert ex.stderr == "" and not ex.of_type("display_data"), describe(ex.outputs)


def test_multiline_chunk_label(k):
    """A chunk of several lines is `[stdout:N]` alone, then its lines."""
    ex = run(k, '%px print("a\\nb")')
    for n in ALL:
        assert f"[stdout:{n}]\na\nb\n" in ex.stdout, ex.stdout
    per_engine, stray = engine_lines(ex)
    assert per_engine == {n: ["a", "b"] for n in ALL} and not stray, ex.stdout


def test_stderr_labels(k):
    """Engine stderr goes to the stderr stream as `[stderr:N] text`."""
    ex = run(k, '%px import sys; print("oops", file=sys.stderr)')
    per_engine, stray = engine_lines(ex, "stderr")
    assert per_engine == {n: ["oops"] for n in ALL} and not stray, ex.stderr
    assert ex.stdout == "", ex.stdout


def test_fd_level_output_on_engines(k):
    """`os.system` on the engines: its output is labelled like print's, on
    the right stream, in the cell that ran it; also in `ar.stdout`."""
    ex = run(k, "%px import os; os.system('echo fd-out; echo fd-err >&2')")
    out, stray = engine_lines(ex)
    assert out == {n: ["fd-out"] for n in ALL} and not stray, ex.stdout
    err, stray = engine_lines(ex, "stderr")
    assert err == {n: ["fd-err"] for n in ALL} and not stray, ex.stderr
    ex = run(k, "ar = rc[:].apply_async(lambda: __import__('os').system('echo via-apply')); ar.get(); print(ar.stdout)")
    assert ex.stdout.strip() == repr(["via-apply\n"] * len(ALL)), ex.stdout


def test_results_are_out_displays(k):
    """`%px import os; os.getpid()`: one display_data per engine in
    ascending order, `Out[N:k]: <pid>`; pids differ per engine and from the
    kernel's; k is the engine's execution count (one more on the next cell)."""
    ex = run(k, "%px import os; os.getpid()")
    assert not ex.of_type("execute_result"), describe(ex.outputs)
    outs = out_labels(ex)
    assert [o[0] for o in outs] == ALL, describe(ex.outputs)
    pids = [int(o[2]) for o in outs]
    kpid = int(run(k, "os.getpid()").result()["text/plain"])
    assert len(set(pids)) == N_ENGINES and kpid not in pids, (pids, kpid)
    again = out_labels(run(k, "%px os.getpid()"))
    assert [(e, c, int(v)) for e, c, v in again] == [
        (e, c + 1, int(v)) for e, c, v in outs
    ], (outs, again)


def test_display_on_engines(k):
    """A display on an engine shows `[output:N]` on stdout, then a
    display_data with the bundle (raw dicts and objects with reprs)."""
    bundle = {"text/html": "<b>x</b>", "text/plain": "x"}
    ex = run(k, f"%px display({bundle!r}, raw=True)")
    blocks = parse_blocks(ex)
    headers = [b[1] for b in blocks if b[0] == "output"]
    assert sorted(headers) == ALL, describe(ex.outputs)
    for i, block in enumerate(blocks):
        if block[0] == "output":
            assert blocks[i + 1] == ("display", "x"), blocks
    assert [d["data"] for d in displays(ex)] == [bundle] * N_ENGINES, describe(ex.outputs)

    ex = run(
        k,
        "%%px\n"
        "class Shown:\n"
        "    def _repr_html_(self):\n"
        "        return '<i>shown</i>'\n"
        "    def __repr__(self):\n"
        "        return 'Shown()'\n"
        "display(Shown())\n",
    )
    assert sorted(b[1] for b in parse_blocks(ex) if b[0] == "output") == ALL, ex.stdout
    for d in displays(ex):
        assert d["data"].get("text/html") == "<i>shown</i>", d
        assert d["data"].get("text/plain") == "Shown()", d


@pytest.mark.parametrize(
    "spec, engines",
    [("::2", [0, 2]), ("1,3", [1, 3]), ("1:3", [1, 2]), ("0", [0]), ("all", ALL)],
)
def test_targets(k, spec, engines):
    """`%%px --targets SPEC` runs on those engines only."""
    ex = run(k, f"%%px --targets {spec}\nprint('t', rank)\nrank")
    per_engine, stray = engine_lines(ex)
    assert per_engine == {n: [f"t {n}"] for n in engines} and not stray, ex.stdout
    assert [(o[0], o[2]) for o in out_labels(ex)] == [(n, str(n)) for n in engines]


def test_targets_negative_index(k):
    """`--targets -1` (documented in the option's help: all, 0, 1,3, 1:3,
    ::2, -1) runs on the last engine."""
    ex = run(k, "%%px --targets -1\nrank")
    assert [(o[0], o[2]) for o in out_labels(ex)] == [(3, "3")], describe(ex.outputs)


def test_noblock_then_pxresult(k):
    """`%%px --noblock` returns `<AsyncResult(%px): pending>` at once and
    shows no engine output; `%pxresult` and `%result` wait and show it
    grouped: `[stdout:N]` in ascending order, then the `Out[N:k]` results."""
    t0 = time.monotonic()
    ex = run(
        k,
        "%%px --noblock\n"
        "import time\n"
        "time.sleep(0.2 + 0.1 * (3 - rank))\n"
        "print('nb', rank)\n"
        "rank * 10\n",
    )
    assert time.monotonic() - t0 < 0.5
    assert ex.result()["text/plain"] == "<AsyncResult(%px): pending>"
    assert not ex.of_type("stream") and not ex.of_type("display_data"), describe(ex.outputs)
    expected = [("stdout", n, [f"nb {n}"]) for n in ALL] + [
        ("display", f"Out[{n}:k]: {n * 10}") for n in ALL
    ]
    for magic in ("%pxresult", "%result"):
        ex = run(k, magic)
        assert parse_blocks(ex) == expected, describe(ex.outputs)


def test_pxresult_before_any_noblock_is_usage_error(k):
    """`%pxresult_r` on a view activated as '_r' that ran no `%px` yet is a
    one-line UsageError."""
    run(k, "view_r = rc[1:3]\nview_r.block = True\nview_r.activate('_r')")
    ex = run_error(k, "%pxresult_r")
    tb = traceback_text(ex.error())
    assert len(tb.splitlines()) == 1 and tb.startswith("UsageError:"), tb


# The same cell on every engine: engine r waits (3 - r) * 0.2 s, then
# prints on stdout and on stderr, displays something and returns a value,
# so the engines finish in descending order.
ORDER_CELL = (
    "import sys, time\n"
    "time.sleep(0.2 * (3 - rank))\n"
    "print('o%d' % rank, flush=True)\n"
    "print('e%d' % rank, file=sys.stderr, flush=True)\n"
    "display({'text/plain': 'd%d' % rank}, raw=True)\n"
    "rank * 10\n"
)


def by_engine(n: int) -> list[tuple]:
    return [
        ("stdout", n, [f"o{n}"]),
        ("stderr", n, [f"e{n}"]),
        ("output", n, []),
        ("display", f"d{n}"),
        ("display", f"Out[{n}:k]: {n * 10}"),
    ]


GROUPED_BY_TYPE = (
    [("stdout", n, [f"o{n}"]) for n in ALL]
    + [("stderr", n, [f"e{n}"]) for n in ALL]
    + [b for n in ALL for b in (("output", n, []), ("display", f"d{n}"))]
    + [("display", f"Out[{n}:k]: {n * 10}") for n in ALL]
)
GROUPED_BY_ENGINE = [b for n in ALL for b in by_engine(n)]
GROUPED_BY_ORDER = [b for n in reversed(ALL) for b in by_engine(n)]


@pytest.mark.parametrize(
    "options, expected",
    [
        ("--no-stream", GROUPED_BY_TYPE),
        ("--no-stream --group-outputs=type", GROUPED_BY_TYPE),
        ("--no-stream --group-outputs=engine", GROUPED_BY_ENGINE),
        ("--no-stream -e", GROUPED_BY_ENGINE),
        ("--no-stream --group-outputs=order", GROUPED_BY_ORDER),
        ("--no-stream -r", GROUPED_BY_ORDER),
    ],
)
def test_no_stream_grouping(k, options, expected):
    """`--no-stream` shows the output after all engines finished, grouped
    by type (all stdout, all stderr, displays, results; engines ascending),
    by engine, or in the order produced (here: engine 3 first)."""
    ex = run(k, f"%%px {options}\n{ORDER_CELL}")
    assert parse_blocks(ex) == expected, describe(ex.outputs)
    # nothing was shown before the last engine finished (~0.6 s)
    first = min(a for m, a in zip(ex.iopub, ex.arrival) if m["msg_type"] in ("stream", "display_data"))
    assert first - ex.sent_at >= 0.5, f"output shown after {first - ex.sent_at:.2f}s"


def test_streaming_shows_output_as_produced(k):
    """Without `--no-stream`, output appears as the engines produce it
    (engine 3 first), each engine's streams and display labelled, and the
    results come last in ascending engine order."""
    ex = run(k, f"%%px\n{ORDER_CELL}")
    blocks = parse_blocks(ex)
    live = [b for n in reversed(ALL) for b in by_engine(n)[:4]]
    results = [("display", f"Out[{n}:k]: {n * 10}") for n in ALL]
    assert blocks == live + results, describe(ex.outputs)


def test_verbose(k):
    """`--verbose` prints `Parallel execution on engine(s): [0, 1, 2, 3]` first."""
    ex = run(k, "%%px --verbose\nprint('v')")
    assert ex.outputs[0]["msg_type"] == "stream", describe(ex.outputs)
    assert ex.stdout.startswith("Parallel execution on engine(s): [0, 1, 2, 3]\n"), ex.stdout
    assert ex.stdout.count("Parallel execution") == 1
    ex = run(k, "%%px --verbose --targets 1,3\n1")
    assert ex.stdout == "Parallel execution on engine(s): [1, 3]\n", ex.stdout


@pytest.mark.parametrize("option", ["-o", "--out", "--save-name"])
def test_save_name(k, option):
    """`-o NAME` / `--out NAME` / `--save-name NAME` stores the AsyncResult
    in the kernel's namespace under NAME."""
    name = "saved_" + option.strip("-").replace("-", "_")
    run(k, f"globals().pop({name!r}, None)")
    ex = run(k, f"%%px {option} {name}\nprint('kept', rank)")
    assert engine_lines(ex)[0] == {n: [f"kept {n}"] for n in ALL}, ex.stdout
    run(
        k,
        f"assert type({name}).__name__ == 'AsyncResult', type({name})\n"
        f"got = {name}.get(10)\n"
        f"assert isinstance(got, list) and len(got) == 4, got\n"
        f"assert {name}.ready() and {name}.successful()\n"
        f"assert {name}.stdout == ['kept %d\\n' % i for i in range(4)], {name}.stdout\n",
    )


def test_save_name_expands_variables(k):
    """As in IPython, `{var}` in a magic's line is the kernel's variable:
    `%%px -o saved_{which}` stores the result as `saved_expanded`."""
    run(k, "globals().pop('saved_expanded', None)\nwhich = 'expanded'")
    run(k, "%%px -o saved_{which}\nprint(rank)")
    run(k, "saved_expanded.get(10)\nassert saved_expanded.stdout == ['%d\\n' % i for i in range(4)], saved_expanded.stdout")


def test_local_also_runs_in_kernel(k):
    """`--local` runs the cell on the engines and in the kernel."""
    run(k, "globals().pop('px_local_var', None)")
    ex = run(k, "%%px --local\npx_local_var = 17\nprint('ran')")
    per_engine, stray = engine_lines(ex)
    assert per_engine == {n: ["ran"] for n in ALL}, ex.stdout
    assert stray == ["ran"], ex.stdout  # the kernel's own print
    assert run(k, "px_local_var").result()["text/plain"] == "17"
    assert [o[2] for o in out_labels(run(k, "%px px_local_var"))] == ["17"] * 4


def test_autopx(px_kernel, k):
    """`%autopx` prints `%autopx enabled`; then plain cells run on the
    engines (results as `Out[N:k]`, assignments on the engines, not in the
    kernel); `%autopx` again prints `%autopx disabled` and cells run locally."""
    km = px_kernel[0]
    run(k, "globals().pop('auto_var', None)")
    ex = run(k, "%autopx")
    assert ex.stdout == "%autopx enabled\n", ex.stdout
    enabled = True
    try:
        ex = run(k, "import os; os.getpid()")
        outs = out_labels(ex)
        assert [o[0] for o in outs] == ALL, describe(ex.outputs)
        assert str(kernel_pid(km)) not in [o[2] for o in outs]
        run(k, "auto_var = 5 + rank")
        ex = run(k, "print('auto', rank)")
        assert engine_lines(ex)[0] == {n: [f"auto {n}"] for n in ALL}, ex.stdout
        ex = run(k, "%autopx")
        enabled = False
        assert ex.stdout == "%autopx disabled\n", ex.stdout
    finally:
        if enabled:
            execute(k, "%autopx")
    ex = run(k, "import os; os.getpid()")
    assert ex.result()["text/plain"] == str(kernel_pid(km))
    ex = run_error(k, "auto_var")
    assert ex.error()["ename"] == "NameError", ex.error()
    assert [o[2] for o in out_labels(run(k, "%px auto_var"))] == ["5", "6", "7", "8"]


def test_pxconfig(k):
    """`%pxconfig` changes the defaults of `%px`: --targets, --noblock,
    --verbose, --no-stream; `--targets all --block --no-verbose --stream`
    restores them."""
    try:
        run(k, "%pxconfig --targets 1")
        ex = run(k, "%px print(1)")
        assert engine_lines(ex) == ({1: ["1"]}, []), ex.stdout

        run(k, "%pxconfig --noblock")
        ex = run(k, "%px import time; time.sleep(0.3); rank")
        assert ex.result()["text/plain"] == "<AsyncResult(%px): pending>"
        assert [(o[0], o[2]) for o in out_labels(run(k, "%pxresult"))] == [(1, "1")]

        run(k, "%pxconfig --block --verbose")
        ex = run(k, "%px rank")
        assert ex.stdout == "Parallel execution on engine(s): [1]\n", ex.stdout
        assert [(o[0], o[2]) for o in out_labels(ex)] == [(1, "1")]

        # no stream: shown at the end, engines ascending although engine 3
        # printed first
        run(k, "%pxconfig --no-verbose --no-stream --targets all")
        ex = run(k, "%px import time; time.sleep(0.15 * (3 - rank)); print('ns', rank)")
        assert parse_blocks(ex) == [("stdout", n, [f"ns {n}"]) for n in ALL], ex.stdout
    finally:
        run(k, "%pxconfig --targets all --block --no-verbose --stream")
    ex = run(k, "%px import time; time.sleep(0.15 * (3 - rank)); print('s', rank)")
    assert parse_blocks(ex) == [("stdout", n, [f"s {n}"]) for n in reversed(ALL)], ex.stdout


def test_progress_bar(k):
    """`--progress-after 0.2` on a 1.5 s cell: a progress widget (tqdm's, as
    ipyparallel shows) displayed while the cell runs, then updated through
    its comms until it says `4/4`."""
    ex = run(k, "%%px --progress-after 0.2\nimport time; time.sleep(1.5)")
    views = [
        (m, a) for m, a in zip(ex.iopub, ex.arrival)
        if m["msg_type"] == "display_data"
        and "application/vnd.jupyter.widget-view+json" in m["content"]["data"]
    ]
    assert len(views) == 1, describe(ex.outputs)
    view, shown_at = views[0]
    assert "%px" in view["content"]["data"]["text/plain"], view["content"]
    assert ex.idle_at - shown_at >= 0.8, "the progress bar was not shown while the cell ran"
    updates = [m["content"]["data"].get("state", {}) for m in ex.iopub if m["msg_type"] == "comm_msg"]
    assert any(u.get("value") == 4 for u in updates), updates
    texts = [u["value"] for u in updates if isinstance(u.get("value"), str)]
    assert any("4/4" in t for t in texts), texts


def test_timeout_interrupts_engines(k):
    """`%%px --timeout 1` on a 30 s sleep: the cell ends in well under 5 s,
    says `interrupting engine(s)` on stderr, fails with KeyboardInterrupt
    per engine; the engines are usable afterwards."""
    ex = execute(k, "%%px --timeout 1\nimport time\ntime.sleep(30)", timeout=20)
    took = ex.idle_at - ex.sent_at
    assert ex.status == "error", ex.summary()
    assert 0.9 <= took < 4, f"the cell took {took:.1f}s"
    assert "interrupting engine(s)" in ex.stderr, ex.stderr
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == ALL, tb
    assert all("KeyboardInterrupt" in b[1] for b in blocks), tb
    t0 = time.monotonic()
    assert [o[2] for o in out_labels(run(k, "%px rank"))] == ["0", "1", "2", "3"]
    assert time.monotonic() - t0 < 2


# --------------------------------------------------------------------------
# errors


def test_error_once_in_engine_order(k):
    """`%px 1/0`: the reply is an error, there is exactly one `error`
    message with a `[N:execute]:` ZeroDivisionError block per engine in
    ascending order, and the traceback is not also printed on a stream.
    The next `%px` works."""
    ex = run_error(k, "%px 1/0")
    err = ex.error()
    tb = traceback_text(err)
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == ALL, tb
    assert all("ZeroDivisionError" in b[1] for b in blocks), tb
    assert ex.content["ename"] == err["ename"]
    assert not ex.of_type("stream"), f"traceback also streamed: {describe(ex.outputs)}"
    run(k, "%px a = 1")
    assert [o[2] for o in out_labels(run(k, "%px a"))] == ["1"] * 4


def test_output_before_error_is_kept(k):
    """`%px print("before"); 1/0`: `[stdout:N] before` for each engine,
    then the error."""
    ex = run_error(k, '%px print("before"); 1/0')
    assert engine_lines(ex) == ({n: ["before"] for n in ALL}, []), ex.stdout
    kinds = [m["msg_type"] for m in ex.outputs]
    assert kinds[-1] == "error" and "error" not in kinds[:-1], kinds


def test_tb_limit(k):
    """With `CompositeError.tb_limit = 1`, `%px a=b` shows one `[0:execute]:`
    NameError block and `... 3 more exceptions ...`."""
    run(k, "%px globals().pop('b', None)")
    run(k, "rparallel.CompositeError.tb_limit = 1")
    try:
        ex = run_error(k, "%px a=b")
        tb = traceback_text(ex.error())
        blocks = engine_blocks(tb)
        assert [b[0] for b in blocks] == [0], tb
        assert "NameError" in blocks[0][1], tb
        assert "... 3 more exceptions ..." in tb, tb
    finally:
        run(k, "rparallel.CompositeError.tb_limit = 5")


@pytest.mark.parametrize(
    "cell",
    [
        "%%px --bogus\n1",
        "%%px --targets x\n1",
        "%%px --group-outputs=sideways\n1",
        "%pxconfig --local",
        "%%px --targets 9\n1",
        "%%px --progress-after soon\n1",
    ],
)
def test_bad_options_are_one_line_usage_errors(k, cell):
    """Bad options and target specs: the cell fails with a one-line
    `UsageError: ...` traceback; the kernel and engines keep working."""
    ex = run_error(k, cell)
    tb = traceback_text(ex.error())
    assert len(tb.strip().splitlines()) == 1, tb
    assert tb.startswith("UsageError:"), tb
    assert ex.error()["ename"] == "UsageError"
    assert [o[2] for o in out_labels(run(k, "%px 6 * 7"))] == ["42"] * 4


def test_unknown_magic(k):
    """`%nosuchmagic` → UsageError: Line magic function `%nosuchmagic` not found."""
    ex = run_error(k, "%nosuchmagic")
    err = ex.error()
    assert err["ename"] == "UsageError"
    assert err["evalue"] == "Line magic function `%nosuchmagic` not found.", err
    assert traceback_text(err).strip() == (
        "UsageError: Line magic function `%nosuchmagic` not found."
    )


# --------------------------------------------------------------------------
# loops, streaming, volume


def test_px_in_for_loop(k):
    """A `%px` line inside a for loop runs on each iteration, in order,
    between the kernel's own statements (here: pushing the loop variable)."""
    ex = run(
        k,
        "for i in range(3):\n"
        "    rc[:].push({'i': i}, block=True)\n"
        "    %px print(i)\n",
    )
    per_engine, stray = engine_lines(ex)
    assert per_engine == {n: ["0", "1", "2"] for n in ALL} and not stray, ex.stdout


def test_streaming_is_live(k):
    """`start` printed before a 2 s sleep reaches the client (by arrival
    and by the kernel's timestamps) well before the execute_reply."""
    ex = run(k, '%%px\nimport time\nprint("start", flush=True)\ntime.sleep(2)\nprint("end")')
    assert engine_lines(ex) == ({n: ["start", "end"] for n in ALL}, []), ex.stdout
    reply_date = ex.reply["header"]["date"]
    starts = [
        (m, a) for m, a in zip(ex.iopub, ex.arrival)
        if m["msg_type"] == "stream" and "start" in m["content"]["text"]
    ]
    seen = set()
    for m, arrived in starts:
        seen |= set(re.findall(r"\[stdout:(\d)\] start", m["content"]["text"]))
        assert ex.idle_at - arrived >= 1.0, f"start arrived {ex.idle_at - arrived:.2f}s before idle"
        lead = (reply_date - m["header"]["date"]).total_seconds()
        assert lead >= 1.0, f"start published {lead:.2f}s before the reply"
    assert seen == {"0", "1", "2", "3"}, describe(ex.outputs)


@pytest.mark.parametrize(
    "code",
    [
        '%px print("\\n".join(map(str, range(20000))))',
        "%px for i in range(20000): print(i)",
    ],
    ids=["one-print", "loop"],
)
def test_large_output_complete_in_order(k, code):
    """20,000 lines per engine arrive complete, in order, exactly once."""
    ex = run(k, code, timeout=60)
    per_engine, stray = engine_lines(ex)
    assert not stray, stray[:5]
    expected = [str(i) for i in range(20000)]
    for n in ALL:
        got = per_engine.get(n, [])
        assert got == expected, (
            f"engine {n}: {len(got)} lines; first difference at "
            f"{next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), 20000))}"
        )
    assert set(per_engine) == set(ALL)


# --------------------------------------------------------------------------
# interrupts


@pytest.mark.parametrize(
    "code", ["%px import time; time.sleep(100)", "%px while True: pass"], ids=["sleep", "busy"]
)
def test_interrupt_stops_engines(px_kernel, k, code):
    """Interrupting the kernel during a blocking `%px` stops the engines:
    the reply (error, KeyboardInterrupt per engine) arrives within 2.5 s;
    the engines answer at once after, with their namespaces intact."""
    km = px_kernel[0]
    run(k, "%px x_before = 42 + rank")
    ex = start_cell(k, code)
    time.sleep(1.0)
    t0 = time.monotonic()
    km.interrupt_kernel()
    reply = get_reply(k, ex.msg_id, timeout=10)
    took = time.monotonic() - t0
    collect_iopub(k, ex, timeout=10)
    ex.reply = reply
    assert took < 2.5, f"reply {took:.2f}s after the interrupt"
    assert ex.status == "error", ex.summary()
    tb = traceback_text(ex.error())
    blocks = engine_blocks(tb)
    assert [b[0] for b in blocks] == ALL, tb
    assert all("KeyboardInterrupt" in b[1] for b in blocks), tb
    t1 = time.monotonic()
    ex = run(k, "%px x_before", timeout=10)
    assert time.monotonic() - t1 < 2, "engines did not answer at once after the interrupt"
    assert [(o[0], o[2]) for o in out_labels(ex)] == [(n, str(42 + n)) for n in ALL]


# --------------------------------------------------------------------------
# activate(suffix)


def test_activate_suffix(k):
    """`v = rc[:2]; v.activate('2')` registers `%px2`, `%%px2` and
    `%pxresult2` on engines 0 and 1 (non-blocking like the view, blocking
    once `v.block = True`) while `%px` still runs on all; `%px3` with
    nothing activated as '3' is a UsageError."""
    run(k, "v = rc[:2]\nv.activate('2')")
    ex = run(k, "%px2 print('two', rank)")
    assert ex.result()["text/plain"].startswith("<AsyncResult(%px)"), describe(ex.outputs)
    assert not ex.of_type("stream"), describe(ex.outputs)
    ex = run(k, "%pxresult2")
    assert parse_blocks(ex) == [("stdout", n, [f"two {n}"]) for n in (0, 1)], ex.stdout

    run(k, "v.block = True")
    ex = run(k, "%px2 print('blocking', rank)")
    assert engine_lines(ex) == ({0: ["blocking 0"], 1: ["blocking 1"]}, []), ex.stdout
    ex = run(k, "%%px2\nrank")
    assert [(o[0], o[2]) for o in out_labels(ex)] == [(0, "0"), (1, "1")]
    ex = run(k, "%px print('all', rank)")
    assert engine_lines(ex)[0] == {n: [f"all {n}"] for n in ALL}, ex.stdout

    ex = run_error(k, "%px3 x")
    err = ex.error()
    assert err["ename"] == "UsageError", err
    assert "%px3" in err["evalue"] and "not found" in err["evalue"], err
