"""Throughput as the cluster grows: 4, 16 and 64 local engines.

    .venv/bin/python bench/scale.py [--engines 4,16,64] [--ipp-max 16] [--tasks 5000] [--json FILE]

For each size, a fresh kernel starts a cluster of that many local engines
(timed until all registered), then sends `--tasks` tiny apply_async calls
round-robin over all engines and waits for them (tasks/s), then as many
through a load-balanced view (the controller's scheduler). rparallel runs
every size; ipyparallel runs up to `--ipp-max` engines (64 ipyparallel
engines need about 4 GB and minutes to start on a 2-core machine).
"""

import argparse
import json
import sys
import time

import jupyter_client

WORKLOAD = r'''
import json, time
import {module} as ipp
t = time.perf_counter()
cluster = ipp.Cluster(n={n})
rc = cluster.start_and_connect_sync()
rc.wait_for_engines({n}, timeout=900)
start = time.perf_counter() - t
ids = sorted(rc.ids)
views = [rc[i] for i in ids]
f = lambda: None
for v in views:
    v.apply_sync(f)
t = time.perf_counter()
ars = [views[i % len(views)].apply_async(f) for i in range({tasks})]
for ar in ars:
    ar.get()
tput = {tasks} / (time.perf_counter() - t)
del ars
lview = rc.load_balanced_view()
for _ in range(len(ids)):
    lview.apply_sync(f)
t = time.perf_counter()
ars = [lview.apply_async(f) for i in range({tasks})]
for ar in ars:
    ar.get()
balanced = {tasks} / (time.perf_counter() - t)
del ars
cluster.stop_cluster_sync()
print("RESULT " + json.dumps({{"start": start, "throughput": tput, "balanced": balanced}}))
'''


def run(kernel_name, module, n, tasks):
    km, kc = jupyter_client.manager.start_new_kernel(kernel_name=kernel_name)
    try:
        out = []
        reply = kc.execute_interactive(
            WORKLOAD.format(module=module, n=n, tasks=tasks), timeout=1800,
            output_hook=lambda m: out.append(m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
        if reply["content"]["status"] != "ok":
            raise RuntimeError("%s, %d engines: %s" % (module, n, reply["content"].get("evalue")))
        for line in "".join(out).splitlines():
            if line.startswith("RESULT "):
                return json.loads(line[len("RESULT "):])
        raise RuntimeError("%s printed no result" % module)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--engines", default="4,16,64")
    parser.add_argument("--ipp-max", type=int, default=16)
    parser.add_argument("--tasks", type=int, default=5000)
    parser.add_argument("--json", help="write the rows to this file")
    args = parser.parse_args()
    rows = []
    print("%8s %16s %16s %16s %16s %8s %16s %16s %8s" % (
        "engines", "rparallel start", "rparallel tasks/s", "ipyp. start", "ipyp. tasks/s", "ratio",
        "rp. balanced/s", "ipyp. balanced/s", "ratio"))
    for n in [int(x) for x in args.engines.split(",")]:
        row = {"engines": n, "rparallel": run("rparallel", "rparallel", n, args.tasks)}
        if n <= args.ipp_max:
            row["ipyparallel"] = run("python3", "ipyparallel", n, args.tasks)
        rows.append(row)
        r, i = row["rparallel"], row.get("ipyparallel")
        print("%8d %14.2f s %16.0f %14s %16s %8s %16.0f %16s %8s" % (
            n, r["start"], r["throughput"],
            "%.2f s" % i["start"] if i else "-", "%.0f" % i["throughput"] if i else "-",
            "%.1fx" % (r["throughput"] / i["throughput"]) if i else "-",
            r["balanced"], "%.0f" % i["balanced"] if i else "-",
            "%.1fx" % (r["balanced"] / i["balanced"]) if i else "-"))
    for key, what in (("throughput", "direct"), ("balanced", "load-balanced")):
        first, last = rows[0]["rparallel"][key], rows[-1]["rparallel"][key]
        print("rparallel: %d-engine %s throughput is %.0f%% of %d-engine throughput" % (
            rows[-1]["engines"], what, 100 * last / first, rows[0]["engines"]))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}, fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
