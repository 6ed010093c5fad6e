"""rparallel next to ipyparallel, in the same run, driven as a user drives them:
rparallel in its own kernel, the rparallel package in the standard ipykernel,
and ipyparallel in ipykernel.

    .venv/bin/python bench/cluster.py [--rounds 2] [--quick] [--json FILE]

Each round starts a fresh kernel of each kind (the `rparallel` kernel, and
ipykernel with ipyparallel), alternating A B A B. Inside the kernel the
workload script starts a 4-engine cluster and times the API calls (the
DirectView's, then the load-balanced view's) with
time.perf_counter; the kernel prints the figures as JSON. Cells (`%px a=1`)
are timed from outside, from sending the request to the kernel's idle.
"""

import argparse
import json
import os
import statistics
import sys
import time

import jupyter_client

WORKLOAD = r'''
import json, os, time, statistics
import numpy as np
import {module} as ipp

def times(f, n):
    out = []
    for _ in range(n):
        t = time.perf_counter(); f(); out.append(time.perf_counter() - t)
    return out

def rss_mb(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0

t = time.perf_counter()
cluster = ipp.Cluster(n=4)
rc = cluster.start_and_connect_sync()
rc.wait_for_engines(4, timeout=120)
start = time.perf_counter() - t
dview = rc[:]
e0 = rc[0]
N = {n}
r = {{"cluster start (4 engines)": [start]}}
time.sleep(1.0)
r["engine idle RSS"] = [rss_mb(p) for p in dview.apply_sync(os.getpid)]
for _ in range(20):
    e0.apply_sync(lambda: None)
r["single-engine apply_sync"] = times(lambda: e0.apply_sync(lambda: None), N)
r["4-engine apply_sync"] = times(lambda: dview.apply_sync(lambda: None), N)
r["4-engine execute(block=True)"] = times(lambda: dview.execute("a=1", block=True), N)
f = lambda: None
t = time.perf_counter()
ars = [rc[i % 4].apply_async(f) for i in range({tasks})]
for ar in ars:
    ar.get()
r["apply_async throughput"] = [{tasks} / (time.perf_counter() - t)]
del ars
big = np.random.random({mb} * 1024 * 1024 // 8)
r["push 100 MB (one engine)"] = [{mb} / x for x in times(lambda: e0.push({{"big": big}}, block=True), 5)]
r["pull 100 MB (one engine)"] = [{mb} / x for x in times(lambda: e0.pull("big", block=True), 5)]
del big
arr = np.arange(10**7)
def scatter():
    dview.scatter("x", arr, block=True)
r["scatter np.arange(10**7)"] = times(scatter, 5)
r["gather np.arange(10**7)"] = times(lambda: dview.gather("x", block=True), 5)
r["map_sync x**10 over range(10000)"] = times(lambda: dview.map_sync(lambda x: x**10, range(10000)), {maps})
lview = rc.load_balanced_view()
for _ in range(20):
    lview.apply_sync(f)
t = time.perf_counter()
ars = [lview.apply_async(f) for i in range({tasks})]
for ar in ars:
    ar.get()
r["load-balanced apply_async throughput"] = [{tasks} / (time.perf_counter() - t)]
del ars
r["lview.map_sync 10**4 items, chunksize=1"] = times(lambda: lview.map_sync(lambda x: x**10, range(10000)), 1)
r["lview.map_sync 10**4 items, chunksize=250"] = times(
    lambda: lview.map_sync(lambda x: x**10, range(10000), chunksize=250), {maps})
print("RESULT " + json.dumps(r))
'''

UNITS = {
    "cluster start (4 engines)": ("s", 1, False),
    "single-engine apply_sync": ("ms", 1e3, False),
    "4-engine apply_sync": ("ms", 1e3, False),
    "4-engine execute(block=True)": ("ms", 1e3, False),
    "apply_async throughput": ("tasks/s", 1, True),
    "push 100 MB (one engine)": ("MB/s", 1, True),
    "pull 100 MB (one engine)": ("MB/s", 1, True),
    "scatter np.arange(10**7)": ("ms", 1e3, False),
    "gather np.arange(10**7)": ("ms", 1e3, False),
    "map_sync x**10 over range(10000)": ("ms", 1e3, False),
    "load-balanced apply_async throughput": ("tasks/s", 1, True),
    "lview.map_sync 10**4 items, chunksize=1": ("ms", 1e3, False),
    "lview.map_sync 10**4 items, chunksize=250": ("ms", 1e3, False),
    "%px a=1 cell (4 engines)": ("ms", 1e3, False),
    "plain a=1 cell": ("ms", 1e3, False),
    "engine idle RSS": ("MB", 1, False),
}


def cell_time(kc, code):
    """Seconds from sending `code` to the kernel going idle after it."""
    t = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        m = kc.get_iopub_msg(timeout=60)
        if (m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status"
                and m["content"]["execution_state"] == "idle"):
            break
    elapsed = time.perf_counter() - t
    reply = kc.get_shell_msg(timeout=60)
    if reply["content"]["status"] != "ok":
        raise RuntimeError("%r failed: %s" % (code, reply["content"].get("evalue")))
    return elapsed


def run_workload(kernel_name, module, args):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name=kernel_name)
    try:
        code = WORKLOAD.format(module=module, n=args.n, tasks=args.tasks, mb=args.mb,
                               maps=max(3, args.n // 10))
        out = []
        reply = kc.execute_interactive(
            code, timeout=900,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("%s failed: %s" % (module, reply["content"].get("evalue")))
        result = None
        for line in "".join(out).splitlines():
            if line.startswith("RESULT "):
                result = json.loads(line[len("RESULT "):])
        if result is None:
            raise RuntimeError("%s printed no result" % module)
        for _ in range(5):
            cell_time(kc, "%px a=1")
        result["%px a=1 cell (4 engines)"] = [cell_time(kc, "%px a=1") for _ in range(args.n)]
        result["plain a=1 cell"] = [cell_time(kc, "a=1") for _ in range(args.n)]
        kc.execute_interactive("cluster.stop_cluster_sync()", timeout=120)
        return result
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="short runs; not to be quoted")
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    args.n, args.tasks, args.mb = (20, 500, 20) if args.quick else (100, 5000, 100)
    # rparallel in its own kernel; the rparallel package (`pip install`,
    # `make bench` puts the wheel in .venv) imported in the standard
    # ipykernel; ipyparallel in ipykernel.
    systems = {
        "rparallel": ("rparallel", "rparallel"),
        "rparallel_ipykernel": ("python3", "rparallel"),
        "ipyparallel": ("python3", "ipyparallel"),
    }
    samples = {s: {} for s in systems}
    for _ in range(args.rounds):
        for label, (kernel, module) in systems.items():
            for key, values in run_workload(kernel, module, args).items():
                samples[label].setdefault(key, []).extend(values)
    rows = []
    print("%-34s %14s %10s %14s %10s %14s %10s %8s %8s" % (
        "workload", "rparallel", "p90", "rp/ipykernel", "p90", "ipyparallel", "p90", "ratio", "ratio2"))
    for key, (unit, scale, higher_better) in UNITS.items():
        row = {"workload": key, "unit": unit}
        for label in systems:
            xs = sorted(v * scale for v in samples[label].get(key, []))
            row[label + "_median"] = statistics.median(xs)
            row[label + "_p90"] = xs[max(0, -(-9 * len(xs) // 10) - 1)]
        a, c, b = (row["rparallel_median"], row["rparallel_ipykernel_median"],
                   row["ipyparallel_median"])
        row["ratio"] = (a / b) if higher_better else (b / a)
        row["ratio_ipykernel"] = (c / b) if higher_better else (b / c)
        rows.append(row)
        print("%-34s %10.2f %-3s %10.2f %10.2f %-3s %10.2f %10.2f %-3s %10.2f %7.1fx %7.1fx" % (
            key, a, unit[:3], row["rparallel_p90"], c, unit[:3], row["rparallel_ipykernel_p90"],
            b, unit[:3], row["ipyparallel_p90"], row["ratio"], row["ratio_ipykernel"]))
    print("(ratio: how many times better rparallel in its kernel is than ipyparallel; ratio2: the "
          "same for the rparallel package in ipykernel; medians over %d rounds%s)"
          % (args.rounds, ", QUICK: not to be quoted" if args.quick else ""))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick, "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
