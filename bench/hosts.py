"""Engines on other hosts: rparallel next to ipyparallel 9.2 in the multi-host lab.

    .venv/bin/python bench/hosts.py [--rounds 3] [--quick] [--json FILE]

Run as root from the machine's own namespaces. It uses the lab of
tests/hosts/lab.sh (head + node1..node4): if no lab is up it brings one up
with 4 nodes and takes it down at the end; a lab that is already up is used
as it is (it must have node1..node4, and no cluster process or Slurm job
of anyone else) and left up. Three rounds take about 6 minutes.

Every cluster runs in its own Python process on the head host (`lab.sh run
head`), killed after 120 s, with its files under target/lab-bench (the
hosts share everything but /tmp and /dev/shm). After each cluster is
stopped the bench checks that nothing of it is left on any host (no
engine, controller, ssh, mpiexec or srun process; `squeue` empty), and
cleans up what is.

1. Engines registered: 3 engines, one on each of node1..node3, with the
   ssh, mpi and slurm launchers, rparallel and ipyparallel alternating in
   `--rounds` rounds; seconds from `Cluster(...)` to all engines
   registered and a client connected (median, min, max).
2. Throughput across hosts: 6 engines (2 on each of node1..node3, ssh
   launcher), 5,000 `apply_async(lambda: None)` round-robin over all
   engines, tasks/s for both.
3. 64 engines, 16 on each of node1..node4, rparallel only, per launcher:
   seconds to all registered (target: under 5 s) and
   `rc[:].apply_sync(lambda: 1)`.

ipyparallel gets what it needs to work here, and no more: the controller
on the head's lab address (`controller_ip`), its ssh launcher the venv's
python on the nodes (`remote_python`) and the hosts (`engines={...}`),
`mpiexec` the hosts and `-x` for its IPP_* variables (Open MPI forwards no
environment to other hosts), and its Slurm job a batch template with the
nodes and tasks per node (its default packs every engine on one node).
Otherwise its defaults, including the 1 s `Cluster.delay` between the
controller and the engines. `--quick` (1 round, 1,000 tasks, 16 engines
in part 3) is for development: its numbers are not to be quoted.
"""

import argparse
import collections
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAB_SH = REPO / "tests" / "hosts" / "lab.sh"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
# Clusters' files: on the filesystem every host sees (not /tmp).
WORK = REPO / "target" / "lab-bench"
LAB_DIR = Path(os.environ.get("RPARALLEL_LAB_DIR", "/run/rparallel-lab"))
HEAD_IP = "10.213.0.1"
NODES = ["node1", "node2", "node3", "node4"]
LAUNCHERS = ["ssh", "mpi", "slurm"]
LIBS = ["rparallel", "ipyparallel"]
CLUSTER_TIMEOUT = 120
# How long a stopped cluster's processes may take to go, on every host.
GONE_TIMEOUT = 15

# ipyparallel's default Slurm template, plus where the engines go.
IPP_SLURM_TEMPLATE = """#!/bin/sh
#SBATCH --export=ALL
#SBATCH --job-name=ipengine-{cluster_id}
#SBATCH --ntasks={n}
#SBATCH --nodelist=NODELIST
#SBATCH --ntasks-per-node=PERNODE
#SBATCH --output={output_file}
srun {program_and_args}
"""
# What ipyparallel's launchers pass its engines in the environment.
IPP_ENV = ["IPP_CONNECTION_INFO", "IPP_CLUSTER_ID", "IPP_PROFILE_DIR"]


# --------------------------------------------------------------------------
# in the head host: one cluster (`hosts.py --worker SPEC`)


def rparallel_cluster(spec):
    import rparallel

    return rparallel.Cluster(
        n=spec["n"], engines=spec["launcher"], hosts=spec["hosts"], controller_ip=HEAD_IP)


def ipyparallel_cluster(spec):
    import ipyparallel
    from traitlets.config import Config

    hosts, launcher = spec["hosts"], spec["launcher"]
    config = Config()
    if launcher == "ssh":
        config.SSHEngineSetLauncher.engines = dict(hosts)
        config.SSHEngineSetLauncher.remote_python = str(VENV_PYTHON)
    elif launcher == "mpi":
        args = ["--host", ",".join("%s:%d" % hk for hk in hosts.items())]
        for var in IPP_ENV:
            args += ["-x", var]
        config.MPIEngineSetLauncher.mpi_args = args
    elif launcher == "slurm":
        per_node = set(hosts.values())
        assert len(per_node) == 1, "the same number of engines on every node"
        config.SlurmEngineSetLauncher.batch_template = (
            IPP_SLURM_TEMPLATE.replace("NODELIST", ",".join(hosts))
            .replace("PERNODE", str(per_node.pop())))
    return ipyparallel.Cluster(
        n=spec["n"], engines=launcher, controller_ip=HEAD_IP,
        profile_dir=os.path.abspath("ipp-profile"), config=config)


def throughput(rc, tasks):
    """Tiny tasks round-robin over all engines, after one each; tasks/s."""
    views = [rc[i] for i in sorted(rc.ids)]
    f = lambda: None  # noqa: E731
    for v in views:
        v.apply_sync(f)
    t = time.perf_counter()
    ars = [views[i % len(views)].apply_async(f) for i in range(tasks)]
    for ar in ars:
        ar.get()
    return tasks / (time.perf_counter() - t)


def worker(spec):
    """Starts the cluster, checks where its engines run and that they
    answer, optionally times tiny tasks, stops it; prints RESULT {json}."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("terminated by the bench"))
    new_cluster = rparallel_cluster if spec["lib"] == "rparallel" else ipyparallel_cluster
    result = {}
    t = time.perf_counter()
    cluster = new_cluster(spec)
    try:
        rc = cluster.start_and_connect_sync()
        rc.wait_for_engines(spec["n"], timeout=60)
        result["start"] = time.perf_counter() - t
        names = rc[:].apply_sync(lambda: __import__("socket").gethostname())
        result["engine_hosts"] = dict(sorted(collections.Counter(names).items()))
        result["check"] = rc[:].apply_sync(lambda: 1) == [1] * spec["n"]
        if spec["tasks"]:
            result["throughput"] = throughput(rc, spec["tasks"])
        rc.close()
    finally:
        t = time.perf_counter()
        cluster.stop_cluster_sync()
        result["stop"] = time.perf_counter() - t
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------
# the lab, from the machine's own namespaces


def lab(*args, timeout=60, check=True):
    return subprocess.run([str(LAB_SH), *args], capture_output=True, text=True,
                          timeout=timeout, check=check)


def lab_hosts():
    """The lab's hosts when it is up, None when it is down; raises when a
    lab is only partly there."""
    status = lab("status", check=False)
    if status.returncode == 3:
        return None
    if status.returncode != 0:
        raise SystemExit("the lab is degraded: %s%s\n(tests/hosts/lab.sh down, then run again)"
                         % (status.stdout, status.stderr))
    return lab("hosts").stdout.split()


def outside_net():
    """The machine's own network namespace, as lab.sh up recorded it."""
    return (LAB_DIR / "outside-ns").read_text().splitlines()[0].strip()


def argv_of(pid):
    try:
        raw = Path("/proc/%d/cmdline" % pid).read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def is_cluster_process(argv):
    """rparallel's and ipyparallel's processes, and those their launchers
    run (not the lab's daemons)."""
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name in ("mpiexec", "mpirun", "orted", "prted", "srun", "slurmstepd", "ssh", "scp"):
        return True
    if name == "rparallel" and any(w in ("engine", "host-engines", "controller") for w in argv[1:3]):
        return True
    for i, arg in enumerate(argv[1:4], 1):
        if arg == "-m" and i + 1 < len(argv) and argv[i + 1].split(".")[0] in LIBS:
            return True
        if os.path.basename(arg) in ("ipengine", "ipcontroller", "ipcluster"):
            return True
    return False


def lab_processes():
    """Cluster processes left on any lab host: pid -> command line."""
    outside, found = outside_net(), {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        try:
            if os.readlink("/proc/%d/ns/net" % pid) == outside:
                continue
        except OSError:
            continue
        argv = argv_of(pid)
        if is_cluster_process(argv):
            found[pid] = " ".join(argv)[:160]
    return found


def slurm_jobs():
    out = lab("run", "head", "squeue", "-h", "-o", "%i", timeout=20, check=False)
    return out.stdout.split()


def leftovers(jobs_too):
    """Waits up to GONE_TIMEOUT for the last cluster's processes (and Slurm
    jobs) to go; kills and cancels what is left, and describes it."""
    deadline = time.monotonic() + GONE_TIMEOUT
    while True:
        procs = lab_processes()
        jobs = slurm_jobs() if jobs_too else []
        if (not procs and not jobs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    for pid in procs:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    for job in jobs:
        lab("run", "head", "scancel", job, timeout=20, check=False)
    return ["pid %d: %s" % kv for kv in procs.items()] + ["slurm job %s" % j for j in jobs]


# --------------------------------------------------------------------------
# one measurement


def last_lines(path, n):
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return []
    return [line.strip() for line in lines[-n:]]


def run_cluster(run_dir, lib, launcher, hosts, tasks=0):
    """One cluster in its own process on head; its RESULT, plus what was
    left afterwards, or its error."""
    spec = {"lib": lib, "launcher": launcher, "hosts": hosts, "n": sum(hosts.values()),
            "tasks": tasks}
    label = "%s %s n=%d%s" % (lib, launcher, spec["n"], " + %d tasks" % tasks if tasks else "")
    cwd = Path(run_dir) / ("%03d-%s-%s-n%d" % (len(os.listdir(run_dir)), lib, launcher, spec["n"]))
    cwd.mkdir(parents=True)
    env = dict(os.environ, RPARALLEL_DIR=str(cwd / "rparallel"), IPYTHONDIR=str(cwd / "ipython"),
               PYTHONUNBUFFERED="1")
    log = cwd / "output.log"
    print("  %-42s" % label, end=" ", flush=True)
    t = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [str(LAB_SH), "run", "head", str(VENV_PYTHON), str(Path(__file__).resolve()),
             "--worker", json.dumps(spec)],
            cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            proc.wait(timeout=CLUSTER_TIMEOUT)
            error = None if proc.returncode == 0 else "exit status %d" % proc.returncode
        except subprocess.TimeoutExpired:
            stop_worker(proc)
            error = "timed out after %d s" % CLUSTER_TIMEOUT
        except KeyboardInterrupt:
            stop_worker(proc)
            raise
    result = dict(spec, wall=time.monotonic() - t, log=str(log))
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("RESULT "):
            result.update(json.loads(line[len("RESULT "):]))
    if "start" not in result:
        # the last line of a traceback says what went wrong
        result["error"] = "%s: %s" % (error or "no result", "".join(last_lines(log, 1)))
        result["log_tail"] = last_lines(log, 15)
    elif error:
        result["error"] = error
    elif result["engine_hosts"] != hosts:
        result["error"] = "engines on %s, not %s" % (result["engine_hosts"], hosts)
    elif not result["check"]:
        result["error"] = "rc[:].apply_sync(lambda: 1) gave a wrong answer"
    result["left"] = leftovers(jobs_too=True)
    print(describe(result), flush=True)
    return result


def stop_worker(proc):
    """SIGTERM (the worker stops its cluster), then SIGKILL to its group."""
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except OSError:
        pass
    proc.wait()


def describe(r):
    if r.get("error"):
        text = "FAILED: " + r["error"]
    else:
        text = "registered %.2f s, stopped %.2f s" % (r["start"], r["stop"])
        if r.get("throughput"):
            text += ", %.0f tasks/s" % r["throughput"]
    if r["left"]:
        text += "; LEFT (killed): " + "; ".join(r["left"])
    return text


# --------------------------------------------------------------------------
# the three parts, and the tables


def spread(nodes, per_node):
    return {h: per_node for h in nodes}


def ordered(libs, round_no):
    """A B, then B A: neither always goes first."""
    return libs if round_no % 2 == 0 else libs[::-1]


def run_round(run_dir, round_no, args, runs):
    print("round %d of %d" % (round_no + 1, args.rounds), flush=True)
    for launcher in LAUNCHERS:
        for lib in ordered(LIBS, round_no):
            runs.append(dict(run_cluster(run_dir, lib, launcher, spread(NODES[:3], 1)), part=1))
    for lib in ordered(LIBS, round_no):
        runs.append(dict(run_cluster(run_dir, lib, "ssh", spread(NODES[:3], 2), args.tasks), part=2))
    for launcher in LAUNCHERS:
        runs.append(dict(run_cluster(run_dir, "rparallel", launcher, spread(NODES, args.per_node)),
                         part=3))


def stats(runs, key):
    """median/min/max of `key` over the runs that succeeded, and how many failed."""
    xs = sorted(r[key] for r in runs if not r.get("error") and r.get(key) is not None)
    failed = [r["error"] for r in runs if r.get("error")]
    cell = {"n": len(xs), "failed": len(failed), "errors": failed,
            "left": sum(1 for r in runs if r["left"])}
    if xs:
        cell.update(median=statistics.median(xs), min=xs[0], max=xs[-1])
    return cell


def fmt(cell, unit="s", digits=2):
    if not cell["n"]:
        return "failed: " + (cell["errors"][0][:100] if cell["errors"] else "no runs")
    text = "%.*f %s [%.*f-%.*f]" % (digits, cell["median"], unit, digits, cell["min"],
                                    digits, cell["max"])
    if cell["failed"]:
        text += " (%d/%d failed)" % (cell["failed"], cell["failed"] + cell["n"])
    return text


def ratio(a, b, higher_better=False):
    if not (a["n"] and b["n"]):
        return "-"
    return "%.1fx" % ((a["median"] / b["median"]) if higher_better else (b["median"] / a["median"]))


def summarize(runs, args):
    rows = []
    pick = lambda part, lib, launcher: [  # noqa: E731
        r for r in runs if r["part"] == part and r["lib"] == lib and r["launcher"] == launcher]

    print("\n1. engines registered, 3 engines on node1..node3 (1 each): "
          "median [min-max] over %d rounds" % args.rounds)
    print("%-8s %-34s %-34s %7s %-22s" % ("launcher", "rparallel", "ipyparallel 9.2", "ratio",
                                           "stop: rparallel / ipp"))
    for launcher in LAUNCHERS:
        rp, ip = pick(1, "rparallel", launcher), pick(1, "ipyparallel", launcher)
        row = {"part": 1, "launcher": launcher, "rparallel": stats(rp, "start"),
               "ipyparallel": stats(ip, "start"), "rparallel_stop": stats(rp, "stop"),
               "ipyparallel_stop": stats(ip, "stop")}
        row["ratio"] = ratio(row["rparallel"], row["ipyparallel"])
        rows.append(row)
        stop = "%s / %s" % tuple(
            "%.2f s" % row[k]["median"] if row[k]["n"] else "-"
            for k in ("rparallel_stop", "ipyparallel_stop"))
        print("%-8s %-34s %-34s %7s %-22s" % (launcher, fmt(row["rparallel"]),
                                               fmt(row["ipyparallel"]), row["ratio"], stop))
    print("(stop: stop_cluster_sync(); ipyparallel's Slurm stop returns once scancel is sent)")

    print("\n2. %d tiny tasks (apply_async round-robin), 6 engines on node1..node3 "
          "(2 each, ssh launcher)" % args.tasks)
    rp, ip = pick(2, "rparallel", "ssh"), pick(2, "ipyparallel", "ssh")
    row = {"part": 2, "launcher": "ssh", "tasks": args.tasks,
           "rparallel": stats(rp, "throughput"), "ipyparallel": stats(ip, "throughput"),
           "rparallel_start": stats(rp, "start"), "ipyparallel_start": stats(ip, "start")}
    row["ratio"] = ratio(row["rparallel"], row["ipyparallel"], higher_better=True)
    rows.append(row)
    print("%-10s %-34s %-34s %7s" % ("", "rparallel", "ipyparallel 9.2", "ratio"))
    print("%-10s %-34s %-34s %7s" % ("tasks/s", fmt(row["rparallel"], "/s", 0),
                                     fmt(row["ipyparallel"], "/s", 0), row["ratio"]))
    print("%-10s %-34s %-34s %7s" % ("start", fmt(row["rparallel_start"]),
                                     fmt(row["ipyparallel_start"]),
                                     ratio(row["rparallel_start"], row["ipyparallel_start"])))

    n = args.per_node * len(NODES)
    print("\n3. rparallel, %d engines on node1..node4 (%d each): registered (target < 5 s)"
          % (n, args.per_node))
    for launcher in LAUNCHERS:
        rp = pick(3, "rparallel", launcher)
        row = {"part": 3, "launcher": launcher, "engines": n, "rparallel": stats(rp, "start")}
        checked = sum(1 for r in rp if r.get("check") and not r.get("error"))
        row["checked"] = checked
        row["target_met"] = bool(row["rparallel"]["n"]) and row["rparallel"]["max"] < 5
        rows.append(row)
        print("%-8s %-34s apply_sync(lambda: 1) ok %d/%d%s" % (
            launcher, fmt(row["rparallel"]), checked, len(rp),
            "" if row["target_met"] else "  (NOT under 5 s)"))

    left = [r for r in runs if r["left"]]
    print("\nclusters that left processes or jobs behind: %d of %d" % (len(left), len(runs)))
    for r in left:
        print("  %s %s n=%d: %s" % (r["lib"], r["launcher"], r["n"], "; ".join(r["left"])))
    failed = [r for r in runs if r.get("error")]
    for r in failed:
        print("  FAILED %s %s n=%d: %s (log: %s)" % (r["lib"], r["launcher"], r["n"], r["error"],
                                                    r["log"]))
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="short runs; not to be quoted")
    parser.add_argument("--json", help="write the results to this file")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(json.loads(args.worker))
    if args.quick:
        args.rounds = 1
    args.tasks, args.per_node = (1000, 4) if args.quick else (5000, 16)

    began = time.monotonic()
    hosts = lab_hosts()
    brought_up = hosts is None
    if brought_up:
        print("bringing the lab up: tests/hosts/lab.sh up %d" % len(NODES), flush=True)
        lab("up", str(len(NODES)), timeout=180)
        hosts = lab_hosts()
    elif not set(NODES) <= set(hosts):
        raise SystemExit("the lab is up with %s; this bench needs %s (tests/hosts/lab.sh down, "
                         "then run again)" % (" ".join(hosts), " ".join(NODES)))
    shutil.rmtree(WORK, ignore_errors=True)
    run_dir = WORK / time.strftime("%Y%m%d-%H%M%S")
    run_dir.mkdir(parents=True)
    print("lab: %s; load average %.2f; %d CPUs; files and logs in %s" % (
        " ".join(hosts), os.getloadavg()[0], os.cpu_count(), run_dir.relative_to(REPO)), flush=True)
    runs = []
    try:
        busy = ["pid %d: %s" % kv for kv in lab_processes().items()] + slurm_jobs()
        if busy:
            raise SystemExit("the lab is in use (this bench needs it to itself): " + "; ".join(busy))
        for round_no in range(args.rounds):
            run_round(run_dir, round_no, args, runs)
    finally:
        if brought_up:
            lab("down", timeout=60, check=False)
            print("lab down", flush=True)
    rows = summarize(runs, args)
    took = time.monotonic() - began
    print("(%d rounds%s; the whole bench took %.0f s)" % (
        args.rounds, ", QUICK: not to be quoted" if args.quick else "", took))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"date": time.strftime("%Y-%m-%dT%H:%M:%S"), "quick": args.quick,
                       "rounds": args.rounds, "host": socket.gethostname(),
                       "cpus": os.cpu_count(), "seconds": took, "rows": rows, "runs": runs},
                      fh, indent=1)


if __name__ == "__main__":
    sys.exit(main())
