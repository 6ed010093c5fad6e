"""Large arrays through /dev/shm with files the sender keeps and reuses
(issue 17), through a real ``rparallel`` kernel and a 4-engine cluster
started with ``rparallel cluster start --daemonize``.

A sender writes a large buffer into a file of its pool, and each receiver
takes a link of its own to it and maps it privately; the sender writes a
file again only once no receiver holds it. What must never happen is a
receiver's array changing under it: these tests keep arrays on engines
while the kernel sends others of the same size (which would reuse a file
too early), write arrays in place on one engine of a broadcast, and check
every value. Then that the pools are bounded in time: free files go after
10 s, and nothing of any process of the cluster or of the kernel is left
in /dev/shm after they end, even of an engine killed with SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import pytest

from cluster_helpers import start_cli_cluster, stop_cli_cluster
from kernel_helpers import IS_RPARALLEL, execute_ok, kernel_pid, shutdown_and_check, start_kernel

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own clusters"),
    pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no /dev/shm"),
    pytest.mark.timeout(240),
]

# pool files are given back after 10 s free, looked at every 2 s
RELEASE_WAIT = 16


def shm_names_of(pids) -> list[str]:
    """Names in /dev/shm made by any of ``pids``: transfer names
    ``rparallel-<pid>-…`` and pool files ``rparallel-pool-<pid>-…``."""
    wanted = {str(p) for p in pids}
    found = []
    for path in Path("/dev/shm").glob("rparallel-*"):
        m = re.match(r"rparallel-(?:pool-)?(\d+)-", path.name)
        if m and m.group(1) in wanted:
            found.append(path.name)
    return sorted(found)


def pool_files_of(pid: int) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"rparallel-pool-{pid}-*"))


def printed(ex, tag: str) -> str:
    lines = [ln for ln in ex.stdout.splitlines() if ln.startswith(tag + " ")]
    assert lines, f"no {tag} line in {ex.stdout[-800:]!r}"
    return lines[-1][len(tag) + 1:]


SETUP = """
import os, numpy as np, rparallel as ipp
rc = ipp.Client(profile='shm')
rc.wait_for_engines(4, timeout=30)
dview = rc[:]
e0, e1 = rc[0], rc[1]
MB = 2**20
def filled(value, mb=8):
    return np.full(mb * MB // 8, float(value))
print('PIDS', *dview.apply_sync(os.getpid))
"""


def test_reused_files_never_change_what_a_receiver_holds():
    cluster = start_cli_cluster("shm", 4)
    km = kc = None
    try:
        km, kc = start_kernel(cluster.rp_dir)
        ex = execute_ok(kc, SETUP, timeout=60)
        engines = [int(p) for p in printed(ex, "PIDS").split()]
        cluster.more_pids.update(engines)
        kernel = kernel_pid(km)

        # Arrays kept on an engine while more of the same size are sent:
        # each keeps its own values; once dropped, their files are reused.
        execute_ok(
            kc,
            "for i in range(6):\n"
            "    e0.push({'k%d' % i: filled(i)}, block=True)\n"
            "got = e0.apply_sync(lambda: [float(globals()['k%d' % i].min()) + float(globals()['k%d' % i].max()) for i in range(6)])\n"
            "assert got == [2.0 * i for i in range(6)], got\n"
            "e0.execute('del k0, k1, k2', block=True)\n"
            "for i in range(6, 9):\n"
            "    e0.push({'k%d' % i: filled(i)}, block=True)\n"
            "got = e0.apply_sync(lambda: [(float(globals()['k%d' % i].min()), float(globals()['k%d' % i].max())) for i in range(3, 9)])\n"
            "assert got == [(float(i), float(i)) for i in range(3, 9)], got\n",
            timeout=60,
        )
        # The sender's own array may change after the send: the engines
        # keep what was sent.
        execute_ok(
            kc,
            "a = filled(1)\n"
            "e1.push({'a': a}, block=True)\n"
            "a[:] = 5\n"
            "e1.push({'b': a}, block=True)\n"
            "assert e1.apply_sync(lambda: (float(a.max()), float(b.min()))) == (1.0, 5.0)\n",
            timeout=60,
        )
        # A broadcast: one file for all four engines; one engine writing
        # its array in place changes nobody else's.
        execute_ok(
            kc,
            "dview.push({'s': filled(3)}, block=True)\n"
            "e0.execute('s *= 2', block=True)\n"
            "assert dview.apply_sync(lambda: float(s.sum() / s.size)) == [6.0, 3.0, 3.0, 3.0]\n"
            "dview.push({'s': filled(4)}, block=True)\n"
            "assert dview.apply_sync(lambda: float(s.sum() / s.size)) == [4.0] * 4\n",
            timeout=60,
        )
        # Results both ways, many times over: kernel and engines reuse.
        execute_ok(
            kc,
            "outs = []\n"
            "for i in range(5):\n"
            "    e0.push({'r': filled(10 + i)}, block=True)\n"
            "    outs.append(e0.pull('r', block=True))\n"
            "assert [float(o.min()) for o in outs] == [10.0 + i for i in range(5)]\n"
            "assert [float(o.max()) for o in outs] == [10.0 + i for i in range(5)]\n"
            "parts = dview.apply_sync(lambda n: np.full(n, 7.0), 2 * MB)\n"
            "again = dview.apply_sync(lambda n: np.full(n, 8.0), 2 * MB)\n"
            "assert [float(p.min()) for p in parts] == [7.0] * 4\n"
            "assert [float(p.max()) for p in again] == [8.0] * 4\n"
            "del outs, parts, again\n",
            timeout=60,
        )
        assert pool_files_of(kernel), "the kernel kept no file to reuse"
        assert pool_files_of(engines[0]), "engine 0 kept no file to reuse"

        # Free files are given back after a while; files still held by a
        # receiver stay (engine 0 holds k3..k8 and r, engine 1 a and b, and
        # every engine s).
        time.sleep(RELEASE_WAIT)
        kept = pool_files_of(kernel)
        assert 0 < len(kept) <= 10, f"the kernel's pool after {RELEASE_WAIT} s idle: {kept}"
        assert pool_files_of(engines[0]) == [], "engine 0 kept free files"
        execute_ok(
            kc,
            "dview.execute(\"for _n in [n for n in list(globals()) if n in ('s', 'a', 'b', 'r') "
            "or n[:1] == 'k' and n[1:].isdigit()]: del globals()[_n]\", block=True)\n",
        )
        time.sleep(RELEASE_WAIT)
        assert pool_files_of(kernel) == [], "the kernel kept files nobody holds"

        # A killed engine's pool goes once another process of the cluster
        # or the kernel ends.
        ex = execute_ok(
            kc,
            "x = rc[3].apply_sync(lambda: np.ones(3 * MB))\n"
            "print('POOL', len([f for f in os.listdir('/dev/shm') if f.startswith('rparallel-pool-%d-' % rc[3].apply_sync(os.getpid))]))\n",
            timeout=60,
        )
        assert int(printed(ex, "POOL")) == 1, ex.stdout
        os.kill(engines[3], signal.SIGKILL)
    finally:
        if km is not None:
            shutdown_and_check(km, kc)
        stop_cli_cluster(cluster)
    left = shm_names_of([kernel, cluster.controller_pid, *engines])
    assert not left, f"/dev/shm names left by the kernel or the cluster: {left}"
