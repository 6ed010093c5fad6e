"""Helpers for the end-to-end tests that need real clusters: a cluster
started from the command line (``rparallel cluster start -n N --daemonize``
in a temporary ``RPARALLEL_DIR``) as a ``CliCluster``, stopping it and
checking its processes are gone, finding a cluster's processes via
``/proc``, and its connection files.

Kernels connected to such a cluster are started with
``kernel_helpers.start_kernel(cluster.rp_dir)``. Every wait is bounded.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from kernel_helpers import REPO, VENV_PYTHON, cluster_env, kill_pids, pid_alive, wait_until_none

RPARALLEL = REPO / "target" / "release" / "rparallel"
CLUSTER_TIMEOUT = 60
# how long the cluster's processes may take to go away once it was stopped
GONE_TIMEOUT = 15


# --------------------------------------------------------------------------
# clusters started from the command line


def cluster_processes(rp_dir: str) -> list[int]:
    """Live ``rparallel engine`` / ``rparallel controller`` processes (or
    ``python -m rparallel …`` ones) that belong to clusters of ``rp_dir``
    (by their RPARALLEL_DIR or their command line)."""
    found = []
    marker = f"RPARALLEL_DIR={rp_dir}".encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        # `rparallel engine …`, or a pip install's `python -m rparallel engine …`
        if argv[0].endswith(b"rparallel"):
            subcommand = argv[1] if len(argv) > 1 else b""
        elif argv[1:3] == [b"-m", b"rparallel"]:
            subcommand = argv[3] if len(argv) > 3 else b""
        else:
            continue
        if subcommand not in (b"engine", b"controller"):
            continue
        mine = any(rp_dir.encode() in a for a in argv)
        if not mine:
            try:
                mine = marker in (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                mine = False
        if mine and pid_alive(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def wait_gone(pids, timeout: float = GONE_TIMEOUT) -> list[int]:
    """Waits until none of ``pids`` is alive; returns the ones still alive."""
    return wait_until_none(lambda: [p for p in pids if pid_alive(p)], timeout)


def wait_cluster_gone(rp_dir: str, timeout: float = GONE_TIMEOUT) -> list[int]:
    """Waits until ``rp_dir``'s clusters have no process left; returns those left."""
    return wait_until_none(lambda: cluster_processes(rp_dir), timeout)


@dataclass
class CliCluster:
    rp_dir: str
    profile: str
    n: int
    controller_pid: int
    # engine and controller processes found right after start
    pids: list[int] = field(default_factory=list)
    # extra pids learnt later (e.g. from the kernel via os.getpid)
    more_pids: set[int] = field(default_factory=set)

    @property
    def env(self) -> dict[str, str]:
        return cluster_env(self.rp_dir)

    def cli(self, *args: str, timeout: float = CLUSTER_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(RPARALLEL), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def start_cli_cluster(profile: str, n: int) -> CliCluster:
    rp_dir = tempfile.mkdtemp(prefix=f"rp-{profile}-")
    cluster = CliCluster(rp_dir=rp_dir, profile=profile, n=n, controller_pid=0)
    try:
        proc = cluster.cli(
            "cluster", "start", "-n", str(n), "--daemonize", "--profile", profile,
            "--python", str(VENV_PYTHON),
        )
    except subprocess.TimeoutExpired as e:
        leftovers = cluster_processes(rp_dir)
        kill_pids(leftovers)
        raise AssertionError(
            f"`rparallel cluster start -n {n}` did not return within {CLUSTER_TIMEOUT}s: "
            f"stdout={e.stdout!r} stderr={e.stderr!r}"
        ) from None
    if proc.returncode != 0:
        kill_pids(cluster_processes(rp_dir))
        raise AssertionError(
            f"`rparallel cluster start` failed ({proc.returncode}): "
            f"stdout={proc.stdout!r} stderr={proc.stderr!r}"
        )
    info_file = Path(rp_dir) / f"profile_{profile}" / "pid" / "cluster.json"
    info = json.loads(info_file.read_text())
    cluster.controller_pid = int(info["controller_pid"])
    cluster.pids = cluster_processes(rp_dir)
    return cluster


def stop_cli_cluster(cluster: CliCluster) -> None:
    """``rparallel cluster stop``; asserts that every process of it is gone."""
    problems = []
    try:
        proc = cluster.cli("cluster", "stop", "--profile", cluster.profile)
        if proc.returncode != 0:
            problems.append(
                f"`rparallel cluster stop` exited {proc.returncode}: "
                f"stdout={proc.stdout!r} stderr={proc.stderr!r}"
            )
    except subprocess.TimeoutExpired:
        problems.append(f"`rparallel cluster stop` did not return within {CLUSTER_TIMEOUT}s")
    known = set(cluster.pids) | cluster.more_pids | {cluster.controller_pid}
    left = wait_gone(sorted(known))
    if left:
        problems.append(f"processes of the cluster still alive after stop: {left}")
    scanned = wait_cluster_gone(cluster.rp_dir, timeout=2)
    if scanned:
        problems.append(
            f"rparallel engine/controller processes of {cluster.rp_dir} still running: {scanned}"
        )
    kill_pids(sorted(set(left) | set(scanned)))
    if not problems:
        shutil.rmtree(cluster.rp_dir, ignore_errors=True)
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------
# connection files


def security_dir(cluster: CliCluster) -> Path:
    return Path(cluster.rp_dir) / f"profile_{cluster.profile}" / "security"


def conn_file(cluster: CliCluster, which: str) -> dict:
    return json.loads((security_dir(cluster) / f"rparallel-{which}.json").read_text())
