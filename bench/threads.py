"""Where the CPU of a small call goes, per process and thread.

    .venv/bin/python bench/threads.py [--calls 4000] [--engines 4] [--json FILE]

Starts a 4-engine cluster from this process (the client is this Python),
and for each workload reads every thread's CPU time on a core
(``/proc/<pid>/task/<tid>/schedstat``, nanoseconds) of this process, the
controller and the engines before and after, then prints microseconds of
CPU per call for each thread, summed by thread name, next to the wall time
per call. Threads are named by the code that starts them (``tokio-runtime-w``
is a tokio worker; the main thread carries the process's name). With
``--engines 64``, only the two throughput workloads run: where the time
of many engines on few cores goes.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import defaultdict
from pathlib import Path


def threads_of(pid: int) -> dict[int, str]:
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            pass
    return out


def cpu_ns(pid: int, tid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()[0])
    except OSError:
        return 0


def snapshot(procs: dict[str, int]) -> dict[tuple[str, str, int], int]:
    snap = {}
    for role, pid in procs.items():
        for tid, name in threads_of(pid).items():
            snap[(role, name, tid)] = cpu_ns(pid, tid)
    return snap


def per_call(before, after, calls: int) -> dict[str, float]:
    """µs of CPU per call, by process role and thread name (engines summed)."""
    out: dict[str, float] = defaultdict(float)
    for key, end in after.items():
        role, name, _ = key
        used = end - before.get(key, 0)
        group = "engines" if role.startswith("engine") else role
        out[f"{group}: {name}"] += used / 1000 / calls
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=4000)
    parser.add_argument("--engines", type=int, default=4,
                        help="cluster size; past 4, only the throughput workloads run")
    parser.add_argument("--json")
    args = parser.parse_args()
    import rparallel as ipp

    k = args.engines
    cluster = ipp.Cluster(n=k)
    rc = cluster.start_and_connect_sync()
    rc.wait_for_engines(k, timeout=120)
    dview, e0 = rc[:], rc[0]
    lview = rc.load_balanced_view()
    engines = dview.apply_sync(os.getpid)
    procs = {"client": os.getpid(), "controller": cluster.to_dict()["controller"]["pid"]}
    procs.update({f"engine{i}": pid for i, pid in enumerate(engines)})

    f = lambda: None  # noqa: E731
    n = args.calls

    views = [rc[i] for i in range(k)]

    def throughput():
        ars = [views[i % k].apply_async(f) for i in range(n)]
        for ar in ars:
            ar.get()

    def balanced():
        ars = [lview.apply_async(f) for _ in range(n)]
        for ar in ars:
            ar.get()

    workloads = {}
    if k == 4:
        workloads.update({
            "rc[0].apply_sync(lambda: None)": lambda: [e0.apply_sync(f) for _ in range(n)],
            "dview.apply_sync(lambda: None), 4 engines": lambda: [dview.apply_sync(f) for _ in range(n)],
            "dview.execute('a=1', block=True), 4 engines": lambda: [dview.execute("a=1", block=True) for _ in range(n)],
        })
    workloads[f"{n} apply_async over {k} engines"] = throughput
    workloads[f"{n} load-balanced apply_async over {k} engines"] = balanced
    results = {}
    for name, work in workloads.items():
        work()  # warm up
        before = snapshot(procs)
        t = time.perf_counter()
        work()
        wall = time.perf_counter() - t
        after = snapshot(procs)
        rows = per_call(before, after, n)
        results[name] = {"wall µs per call": wall / n * 1e6, "cpu µs per call": rows}
        print(f"\n{name}: {wall / n * 1e6:.1f} µs wall per call, "
              f"{sum(rows.values()):.1f} µs CPU per call in all")
        for thread, us in rows.items():
            if us >= 0.5:
                print(f"  {us:8.1f} µs  {thread}")
    cluster.stop_cluster_sync()
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
