"""Kernel-level figures, rparallel next to ipykernel in the same run.

    .venv/bin/python bench/kernel.py [--cells 100] [--rounds 3]

For each kernel, alternating: start-to-ready time (start_new_kernel until
kernel_info answered), median and p90 of a plain `a=1` cell timed from the
client (send execute_request until the cell's IOPub idle), and the kernel
process's RSS once idle.
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import jupyter_client


def rss_mb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def run_cell(kc, code):
    msg_id = kc.execute(code)
    while True:
        msg = kc.get_iopub_msg(timeout=30)
        if (msg["parent_header"].get("msg_id") == msg_id and msg["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"):
            break
    kc.get_shell_msg(timeout=30)


def measure(kernel_name, cells):
    t0 = time.perf_counter()
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name=kernel_name)
    ready = time.perf_counter() - t0
    try:
        for _ in range(10):  # warm-up
            run_cell(kc, "a=1")
        times = []
        for _ in range(cells):
            t = time.perf_counter()
            run_cell(kc, "a=1")
            times.append(time.perf_counter() - t)
        time.sleep(0.5)
        rss = rss_mb(km.provisioner.pid)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    return ready, times, rss


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cells", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    kernels = {"rparallel": "rparallel", "ipykernel": "python3"}
    results = {k: {"ready": [], "cell": [], "rss": []} for k in kernels}
    for _ in range(args.rounds):
        for label, name in kernels.items():
            ready, times, rss = measure(name, args.cells)
            results[label]["ready"].append(ready)
            results[label]["cell"].extend(times)
            results[label]["rss"].append(rss)
    rows = []
    for what, key, scale, unit in [("start-to-ready", "ready", 1e3, "ms"),
                                   ("plain a=1 cell", "cell", 1e3, "ms"),
                                   ("idle RSS", "rss", 1, "MB")]:
        row = {"workload": what, "unit": unit}
        for label in kernels:
            xs = sorted(results[label][key])
            row[label + "_median"] = statistics.median(xs) * scale
            row[label + "_p90"] = xs[max(0, math.ceil(0.9 * len(xs)) - 1)] * scale
        row["ratio"] = row["ipykernel_median"] / row["rparallel_median"]
        rows.append(row)
    print("%-16s %12s %12s %12s %12s %7s" % ("workload", "rparallel", "p90", "ipykernel", "p90", "ratio"))
    for r in rows:
        print("%-16s %9.2f %-2s %9.2f %-2s %9.2f %-2s %9.2f %-2s %6.1fx" % (
            r["workload"], r["rparallel_median"], r["unit"], r["rparallel_p90"], r["unit"],
            r["ipykernel_median"], r["unit"], r["ipykernel_p90"], r["unit"], r["ratio"]))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
