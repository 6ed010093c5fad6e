"""An idle cluster costs nothing (issue 17): a 4-engine cluster started with
``rparallel cluster start --daemonize``, with an ``rparallel`` kernel
connected to it through ``rparallel.Client`` and one call made (so every
connection, heartbeat and the client's I/O thread are live), then left
alone for 60 s.

The CPU time of every process (``utime + stime`` of all its threads, from
``/proc/<pid>/stat``) is read at the start and the end of the minute: the
controller and the 4 engines together must use less than 1% of one core,
and the kernel with its client less than 1% too. Liveness checks still run
all that time (heartbeats every second): what the test rules out is
anything that polls.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cluster_helpers import start_cli_cluster, stop_cli_cluster
from kernel_helpers import IS_RPARALLEL, execute_ok, kernel_pid, pid_alive, shutdown_and_check, start_kernel

IDLE_SECONDS = 60
SETTLE_SECONDS = 3
MAX_SHARE = 0.01  # of one core, over IDLE_SECONDS
TICK = os.sysconf("SC_CLK_TCK")

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own clusters"),
    pytest.mark.timeout(IDLE_SECONDS + 120),
]


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` (all its threads), in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    # the fields after the command name, which may hold spaces: state is
    # field 3, utime 14, stime 15
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def test_idle_cluster_uses_under_one_percent_of_a_core():
    cluster = start_cli_cluster("idle", 4)
    try:
        km, kc = start_kernel(cluster.rp_dir)
        try:
            ex = execute_ok(
                kc,
                "import os, rparallel as ipp\n"
                "rc = ipp.Client(profile='idle')\n"
                "rc.wait_for_engines(4, timeout=30)\n"
                "print('PIDS', *rc[:].apply_sync(os.getpid))\n",
                timeout=60,
            )
            line = [ln for ln in ex.stdout.splitlines() if ln.startswith("PIDS ")]
            assert line, ex.stdout
            engines = [int(p) for p in line[0].split()[1:]]
            cluster.more_pids.update(engines)
            assert len(set(engines)) == 4, engines
            cluster_pids = [cluster.controller_pid, *engines]
            kernel = kernel_pid(km)

            time.sleep(SETTLE_SECONDS)
            before = {pid: cpu_seconds(pid) for pid in [*cluster_pids, kernel]}
            t0 = time.monotonic()
            time.sleep(IDLE_SECONDS)
            elapsed = time.monotonic() - t0
            for pid in before:
                assert pid_alive(pid), f"pid {pid} died while idle"
            used = {pid: cpu_seconds(pid) - before[pid] for pid in before}

            names = {cluster.controller_pid: "controller", kernel: "kernel"}
            names.update({pid: f"engine {i}" for i, pid in enumerate(engines)})
            print(f"\nCPU over {elapsed:.1f} s idle:")
            for pid, seconds in used.items():
                print(f"  {names[pid]:>10} (pid {pid}): {seconds * 1000:6.0f} ms, "
                      f"{100 * seconds / elapsed:.3f}% of a core")
            in_cluster = sum(used[p] for p in cluster_pids) / elapsed
            print(f"  controller + 4 engines: {100 * in_cluster:.3f}% of a core")
            assert in_cluster < MAX_SHARE, (
                f"the idle cluster used {100 * in_cluster:.2f}% of a core "
                f"(limit {100 * MAX_SHARE:.0f}%): {used}"
            )
            assert used[kernel] / elapsed < MAX_SHARE, (
                f"the idle kernel with its client used {100 * used[kernel] / elapsed:.2f}% of a core"
            )
            # the client is still connected and answers at once
            execute_ok(kc, "assert rc[:].apply_sync(lambda: 1) == [1] * 4\n", timeout=30)
        finally:
            shutdown_and_check(km, kc)
    finally:
        stop_cli_cluster(cluster)
