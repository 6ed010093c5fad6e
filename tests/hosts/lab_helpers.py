"""Helpers for the multi-host tests in this directory. They run inside the
lab's ``head`` host (``make lab-test``: ``lab.sh up``, then pytest through
``lab.sh run head``), and start clusters whose engines run on the nodes.

The hosts share the filesystem except ``/tmp`` and ``/dev/shm``, so every
file a cluster needs (its ``RPARALLEL_DIR``) lives under ``target/lab``.
Processes are found through ``/proc``: the hosts share one pid namespace,
and a process belongs to the lab when its network namespace is not the
machine's own.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from kernel_helpers import REPO, VENV_PYTHON, cluster_env, kill_pids, pid_alive

LAB_SH = REPO / "tests" / "hosts" / "lab.sh"
RPARALLEL = REPO / "target" / "release" / "rparallel"
# The shared place for clusters' files: /tmp is private to each host.
WORK = REPO / "target" / "lab"
HEAD_IP = "10.213.0.1"
# What lab.sh records: the machine's own namespaces, each host's daemons.
LAB_DIR = Path(os.environ.get("RPARALLEL_LAB_DIR", "/run/rparallel-lab"))
# How long a cluster's processes may take to go, on every host.
GONE_TIMEOUT = 15


def _outside_net() -> str | None:
    """The machine's own network namespace (`net:[N]`), as lab.sh up saw it."""
    try:
        return (LAB_DIR / "outside-ns").read_text().splitlines()[0].strip()
    except (OSError, IndexError):
        return None


def in_lab() -> bool:
    """Whether this process runs on the lab's head host."""
    outside = _outside_net()
    return (
        outside is not None
        and (LAB_DIR / "up").exists()
        and os.readlink("/proc/self/ns/net") != outside
        and socket.gethostname() == "head"
    )


def new_rp_dir(name: str) -> str:
    """A fresh RPARALLEL_DIR on the filesystem every host sees."""
    WORK.mkdir(parents=True, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{name}-", dir=WORK)


# --------------------------------------------------------------------------
# processes on the lab's hosts

def _argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


# What a cluster runs on the hosts: rparallel's own processes (not the
# kernel under test), and the processes launchers start for it.
_LAUNCHED = ("mpiexec", "orted", "prted", "srun", "slurmstepd")


def _is_cluster_process(argv: list[str]) -> bool:
    if not argv:
        return False
    name = os.path.basename(argv[0])
    if name in _LAUNCHED:
        return True
    words = argv[1:4]
    if name == "rparallel" or (len(argv) > 2 and argv[1:3] == ["-m", "rparallel"]):
        return any(w in ("engine", "host-engines", "controller") for w in words)
    return name == "ssh" and any("host-engines" in a for a in argv)


def lab_processes() -> list[int]:
    """Live cluster processes (engines, controllers, ssh, mpiexec, srun …)
    on any lab host."""
    found = []
    me = os.getpid()
    outside = _outside_net()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        pid = int(entry.name)
        try:
            if os.readlink(f"/proc/{pid}/ns/net") == outside:
                continue
        except OSError:
            continue
        if _is_cluster_process(_argv(pid)) and pid_alive(pid):
            found.append(pid)
    return sorted(found)


def host_of(pid: int) -> str:
    """The lab host a process runs on (its UTS namespace's name)."""
    out = subprocess.run(
        ["nsenter", "-t", str(pid), "-u", "hostname"], capture_output=True, text=True, timeout=5
    )
    return out.stdout.strip() or "?"


def describe(pids: list[int]) -> str:
    return "; ".join(f"{pid} on {host_of(pid)}: {' '.join(_argv(pid))[:160]}" for pid in pids)


def wait_lab_clean(timeout: float = GONE_TIMEOUT) -> str:
    """Waits until no cluster process is left on any host; kills the
    leftovers and describes them ("" when none)."""
    deadline = time.monotonic() + timeout
    left = lab_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = lab_processes()
    text = describe(left) if left else ""
    kill_pids(left)
    return text


def set_link(host: str, state: str) -> None:
    """Cuts (`down`) or mends (`up`) a host's only link to the others,
    from inside its network namespace (entered through its sshd)."""
    sshd = (LAB_DIR / "run" / host / "sshd.pid").read_text().strip()
    subprocess.run(
        ["nsenter", "-t", sshd, "-n", "ip", "link", "set", "eth0", state],
        check=True, capture_output=True, timeout=10,
    )


def slurm_jobs() -> list[str]:
    out = subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True, timeout=10)
    return out.stdout.split()


def cancel_all_jobs() -> None:
    for job in slurm_jobs():
        subprocess.run(["scancel", job], capture_output=True, timeout=10)


# --------------------------------------------------------------------------
# the command line and the kernel


def cli(rp_dir: str, *args: str, timeout: float = 90, env: dict | None = None):
    """``rparallel ARGS`` with RPARALLEL_DIR=rp_dir."""
    return subprocess.run(
        [str(RPARALLEL), *args],
        env={**cluster_env(rp_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_cli(rp_dir: str, *args: str, timeout: float = 90) -> subprocess.CompletedProcess:
    """``rparallel cluster start --daemonize --python VENV ARGS``; asserts it
    succeeded."""
    started = time.monotonic()
    proc = cli(
        rp_dir, "cluster", "start", "--daemonize", "--python", str(VENV_PYTHON), *args,
        timeout=timeout,
    )
    proc.seconds = time.monotonic() - started  # type: ignore[attr-defined]
    assert proc.returncode == 0, f"cluster start {args} failed: {proc.stdout}\n{proc.stderr}"
    return proc
