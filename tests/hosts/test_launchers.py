"""Engines on other hosts, through the real tools: ssh, Open MPI's mpiexec
and Slurm, on the lab's nodes (2 nodes x 2 engines each), driven from a
real kernel on the head host as a user would: `rparallel cluster start`
on the command line, and `rparallel.Cluster` in a cell. Each test ends
with nothing left on any host (conftest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kernel_helpers import (
    collect_iopub,
    execute_ok,
    get_reply,
    interrupt_running,
    shutdown_and_check,
    start_cell,
    start_kernel,
    value,
)
from lab_helpers import (
    HEAD_IP,
    cli,
    host_of,
    lab_processes,
    new_rp_dir,
    slurm_jobs,
    start_cli,
    wait_lab_clean,
)

HOSTS = ["node1", "node1", "node2", "node2"]


@pytest.fixture
def rp_dir():
    return new_rp_dir("launch")


@pytest.fixture
def kernel(rp_dir):
    """A kernel on head whose clusters live in the shared `rp_dir`."""
    km, kc = start_kernel(rp_dir)
    try:
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def kc(kernel):
    return kernel[1]


def hostnames(kc) -> list[str]:
    """Each engine's host, by engine id, asked with `%px`."""
    execute_ok(kc, "%px import socket; _host = socket.gethostname()", timeout=30)
    return value(kc, "rc[:]['_host']")


def fails_fast(kc, code: str, act) -> tuple:
    """Starts `code`, does `act()` a second later (a kill, a scancel), and
    waits for the cell: (its Execution, seconds from the act to its end)."""
    ex = start_cell(kc, code)
    time.sleep(1.0)
    act()
    acted = time.monotonic()
    collect_iopub(kc, ex, 30)
    ex.reply = get_reply(kc, ex.msg_id, 5)
    assert ex.status == "error", ex.summary()
    return ex, ex.idle_at - acted


def record(rp_dir: str, profile: str = "default") -> dict:
    return json.loads((Path(rp_dir) / f"profile_{profile}" / "pid" / "cluster.json").read_text())


# --------------------------------------------------------------------------
# each launcher from the command line


@pytest.mark.parametrize(
    "launcher, extra",
    [
        ("ssh", []),
        ("mpi", []),
        ("slurm", ["--slurm-args", "--time=10"]),
    ],
)
def test_cli_cluster_on_two_nodes(rp_dir, kernel, launcher, extra):
    """`rparallel cluster start --engines L --hosts node1:2,node2:2`: the
    controller listens on the head's lab address, says where the engines
    run, `%px` and `apply` reach all four across hosts, the kernel's
    interrupt stops a `%px` running on them, the key is on no command line
    anywhere, and `cluster stop` leaves nothing on any host."""
    km, kc = kernel
    proc = start_cli(rp_dir, "--engines", launcher, "--hosts", "node1:2,node2:2", *extra)
    print(f"{launcher}: 4 engines on 2 nodes registered in {proc.seconds:.2f} s")
    assert f"listening on {HEAD_IP}" in proc.stdout, proc.stdout
    assert "node1: 2, node2: 2" in proc.stdout, proc.stdout
    key = json.loads(
        (Path(rp_dir) / "profile_default" / "security" / "rparallel-engine.json").read_text()
    )["key"]
    with_key = [p for p in lab_processes() if key.encode() in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert not with_key, f"the cluster key is on the command line of {with_key}"

    execute_ok(kc, "import rparallel as ipp\nrc = ipp.Client()\nrc.wait_for_engines(4, timeout=30)")
    assert sorted(hostnames(kc)) == HOSTS
    assert value(kc, "rc[:].apply_sync(lambda x: x * 2, 21)") == [42] * 4
    reply, took = interrupt_running(km, kc, "%px import time; time.sleep(30)")
    assert reply["content"]["status"] == "error" and took < 2, (reply["content"], took)
    assert value(kc, "rc[:].apply_sync(lambda: 1)") == [1] * 4
    if launcher == "slurm":
        job = record(rp_dir)["launches"][0]["job_id"]
        assert job in slurm_jobs(), (job, slurm_jobs())
    if launcher == "mpi":
        # engine id = MPI rank
        execute_ok(kc, "%px import os; _rank = int(os.environ['OMPI_COMM_WORLD_RANK'])")
        assert value(kc, "rc[:]['_rank']") == value(kc, "rc.ids") == [0, 1, 2, 3]

    stopped = cli(rp_dir, "cluster", "stop")
    assert stopped.returncode == 0, stopped.stderr
    assert not wait_lab_clean(), "cluster stop left processes"
    if launcher == "slurm":
        assert job not in slurm_jobs()


# --------------------------------------------------------------------------
# rparallel.Cluster in a kernel


def start_cluster_cell(kc, args: str, timeout: float = 90) -> float:
    """`c = ipp.Cluster(ARGS); rc = c.start_and_connect_sync()`; seconds."""
    t = time.monotonic()
    execute_ok(
        kc,
        f"import rparallel as ipp\nc = ipp.Cluster({args})\nrc = c.start_and_connect_sync()",
        timeout=timeout,
    )
    return time.monotonic() - t


def test_mpi4py_allreduce_across_hosts(kc):
    """`Cluster(engines="mpi")`: engine ids are the ranks, and mpi4py on the
    engines talks across hosts: allreduce(1) over 4 ranks on 2 nodes is 4.
    The cluster is not stopped: the end of the kernel that started it takes
    it down on every host (checked after the test)."""
    start_cluster_cell(kc, "n=4, engines='mpi', hosts='node1:2,node2:2'")
    assert value(kc, "rc.ids") == [0, 1, 2, 3]
    execute_ok(
        kc,
        "%px from mpi4py import MPI; _rank = MPI.COMM_WORLD.rank; "
        "_sum = MPI.COMM_WORLD.allreduce(1); _size = MPI.COMM_WORLD.size",
        timeout=60,
    )
    assert value(kc, "rc[:]['_sum']") == [4] * 4
    assert value(kc, "rc[:]['_rank']") == [0, 1, 2, 3]
    assert sorted(hostnames(kc)) == HOSTS


def test_ssh_cluster_data_faults_and_restarts(kc):
    """`Cluster(engines="ssh", hosts={...})` in a cell: a 100 MB array to a
    remote engine and back, over the socket (the remote engine never maps
    a shared-memory file); an engine killed during a blocking `%px` fails
    the cell at once naming the engine and its host; `start_engines` and
    `restart_engines` go through ssh too; stopping leaves nothing."""
    seconds = start_cluster_cell(kc, "n=4, engines='ssh', hosts={'node1': 2, 'node2': 2}")
    print(f"ssh: Cluster() to a connected client with 4 remote engines: {seconds:.2f} s")
    assert sorted(hostnames(kc)) == HOSTS

    # 100 MB across hosts: arrives whole, and not through /dev/shm
    got = value(
        kc,
        """
import numpy as np
a = np.arange(100 * 2**20 // 8, dtype=np.float64)
e = rc[rc.ids[0]]
e.push({'a': a}, block=True)
back = e.pull('a', block=True)
maps = e.apply_sync(lambda: [l for l in open('/proc/self/maps') if '/dev/shm' in l])
[float(e.apply_sync(lambda: float(a.sum()))), bool((back == a).all()), maps, e.apply_sync(lambda: __import__('socket').gethostname())]
""",
        timeout=120,
    )
    assert got[0] == float((100 * 2**20 // 8 - 1) * (100 * 2**20 // 8) / 2)
    assert got[1] is True
    assert got[2] == [], f"a remote engine mapped shared memory: {got[2]}"
    assert got[3].startswith("node")

    # fail fast: kill -9 one remote engine under a blocking %px
    pids = value(kc, "rc[:].apply_sync(__import__('os').getpid)")
    victim = pids[1]
    host = host_of(victim)
    ex, took = fails_fast(
        kc, "%px import time; time.sleep(8)", lambda: os.kill(victim, signal.SIGKILL)
    )
    text = json.dumps(ex.error())
    assert "Engine 1 died" in text and host in text, text
    assert took < 3, f"the cell ended {took:.1f} s after the kill"
    print(f"ssh: engine killed on {host}: %px failed after {took:.2f} s")
    assert value(kc, "rc.ids") == [0, 2, 3]
    # the others finish their sleep and work on
    assert value(kc, "rc[:].apply_sync(lambda: 1)", timeout=30) == [1, 1, 1]

    # more engines, and restarts, through the same launcher
    new = value(kc, "c.start_engines_sync(2)", timeout=60)
    assert len(new) == 2
    assert value(kc, "len(rc.ids)") == 5
    # restart: all engines stopped, the cluster's n started again
    restarted = value(kc, "c.restart_engines_sync()", timeout=90)
    assert len(restarted) == 4 and value(kc, "rc.ids") == restarted
    assert sorted(set(hostnames(kc))) == ["node1", "node2"]
    execute_ok(kc, "c.stop_cluster_sync()")
    assert not wait_lab_clean()


def test_slurm_job_cancelled_under_running_px(kc):
    """`Cluster(engines="slurm")`: the cluster knows its job; one engine
    killed under a running `%px` fails it at once (its connection closes;
    Slurm does not say); `scancel` under a running `%px` fails the cell at
    once, with dead engines, not after a heartbeat timeout; stopping
    leaves no job and no process."""
    start_cluster_cell(kc, "n=4, engines='slurm', hosts={'node1': 2, 'node2': 2}")
    job = value(kc, "c.job_id")
    assert job in slurm_jobs()
    assert sorted(hostnames(kc)) == HOSTS
    pids = value(kc, "rc[:].apply_sync(__import__('os').getpid)")
    ex, took = fails_fast(
        kc, "%px import time; time.sleep(5)", lambda: os.kill(pids[0], signal.SIGKILL)
    )
    assert "Engine 0 died" in json.dumps(ex.error()), ex.summary()
    assert took < 2, f"the cell ended {took:.1f} s after the kill"
    print(f"slurm: one engine killed: %px failed after {took:.2f} s")
    assert value(kc, "rc[:].apply_sync(lambda: 1)", timeout=30) == [1, 1, 1]
    ex, took = fails_fast(
        kc,
        "%px import time; time.sleep(60)",
        lambda: subprocess.run(["scancel", job], check=True, timeout=10),
    )
    text = json.dumps(ex.error())
    # Whichever the controller learns first: the engines' connections
    # closing, or squeue saying the job ended.
    assert "died" in text and (f"slurm job {job}" in text or "connection closed" in text), text
    assert took < 3, f"the cell ended {took:.1f} s after scancel"
    print(f"slurm: job cancelled: %px failed after {took:.2f} s")
    # every engine of the job is dead soon after (well before a heartbeat
    # timeout): the first death ended the cell, the others follow
    gone = value(
        kc,
        "import time\nt0 = time.time()\nwhile rc.ids and time.time() - t0 < 3: time.sleep(0.05)\n"
        "[rc.ids, time.time() - t0]",
    )
    assert gone[0] == [], gone
    execute_ok(kc, "c.stop_cluster_sync()")
    assert job not in slurm_jobs()


def test_slurm_batch_template(rp_dir, kc):
    """`--slurm-template`: a site's batch script is submitted instead of
    rparallel's own, with the engine command and n filled in; a template
    that never starts the engines is refused before anything runs."""
    template = Path(rp_dir) / "site.sbatch"
    template.write_text(
        "#!/bin/sh\n#SBATCH --time=5\n"
        'echo "site prologue for {n} engines on $(hostname)"\n'
        "srun {engine_command}\n"
    )
    start_cli(rp_dir, "--engines", "slurm", "--hosts", "node1:1,node2:1",
              "--slurm-template", str(template))
    execute_ok(kc, "import rparallel as ipp\nrc = ipp.Client()\nrc.wait_for_engines(2, timeout=30)")
    assert sorted(hostnames(kc)) == ["node1", "node2"]
    log = next((Path(rp_dir) / "profile_default").glob("slurm-*.log")).read_text()
    assert "site prologue for 2 engines on node1" in log, log
    assert cli(rp_dir, "cluster", "stop").returncode == 0

    bad = Path(rp_dir) / "bad.sbatch"
    bad.write_text("#!/bin/sh\nsrun hostname\n")
    proc = cli(rp_dir, "cluster", "start", "--daemonize", "--engines", "slurm",
               "--slurm-template", str(bad))
    assert proc.returncode != 0
    assert "must run the engines: put {engine_command}" in proc.stderr, proc.stderr
