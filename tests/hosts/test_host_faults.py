"""Faults and bad input across hosts: a node whose link is cut under a
running `apply_sync`, a controller killed with engines on three hosts,
hosts that do not resolve or cannot run rparallel, a missing mpiexec, a
job Slurm refuses, and forged messages sent from another host to a
controller bound to the lab's network. Each failure is one clear error,
in time, with nothing left on any host (conftest)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from kernel_helpers import (
    VENV_PYTHON,
    collect_iopub,
    execute_ok,
    get_reply,
    pid_alive,
    shutdown_and_check,
    start_cell,
    start_kernel,
    wait_until_none,
    value,
)
from lab_helpers import cli, lab_processes, new_rp_dir, set_link, start_cli, wait_lab_clean

# The engines' heartbeat timeout in these tests: a cut link is noticed
# within it.
HEARTBEAT_TIMEOUT = 3.0


def test_link_cut_under_running_apply(tmp_path):
    """node2's link is cut while an `apply_sync` runs there: within the
    heartbeat timeout the call fails with EngineError naming the engine and
    its host, `rc.ids` drops node2's engines, node1's keep working; once
    the link is back, node2's engines have exited by themselves (their
    controller went silent)."""
    rp_dir = new_rp_dir("cut")
    km, kc = start_kernel(rp_dir)
    try:
        execute_ok(
            kc,
            "import rparallel as ipp, time\n"
            f"c = ipp.Cluster(n=4, engines='ssh', hosts={{'node1': 2, 'node2': 2}}, "
            f"heartbeat_timeout={HEARTBEAT_TIMEOUT})\n"
            "rc = c.start_and_connect_sync()\n"
            "hosts = rc[:].apply_sync(lambda: __import__('socket').gethostname())\n"
            "far = [i for i, h in zip(rc.ids, hosts) if h == 'node2']",
            timeout=90,
        )
        far = value(kc, "far")
        assert len(far) == 2
        pids = value(kc, "rc[far].apply_sync(__import__('os').getpid)")
        ex = start_cell(
            kc,
            "try:\n"
            "    rc[far[0]].apply_sync(time.sleep, 60)\n"
            "except Exception as e:\n"
            "    print(type(e).__name__, '|', e)",
        )
        time.sleep(1.0)
        set_link("node2", "down")
        cut = time.monotonic()
        collect_iopub(kc, ex, HEARTBEAT_TIMEOUT + 10)
        ex.reply = get_reply(kc, ex.msg_id, 5)
        took = ex.idle_at - cut
        assert ex.status == "ok", ex.summary()
        out = ex.stdout
        assert out.startswith("EngineError"), out
        assert f"Engine {far[0]}" in out and "node2" in out, out
        assert took < HEARTBEAT_TIMEOUT + 2.5, f"noticed {took:.1f} s after the cut"
        print(f"link cut: apply_sync failed {took:.2f} s after the cut")
        assert value(kc, "sorted(set(rc.ids) & set(far))") == []
        assert value(kc, "rc[:].apply_sync(lambda: 1)") == [1, 1]
        set_link("node2", "up")
        # node2's engines gave up on their silent controller
        left = wait_until_none(lambda: [p for p in pids if pid_alive(p)], 15)
        assert not left, f"node2's engines still run: {left}"
        execute_ok(kc, "c.stop_cluster_sync()")
    finally:
        set_link("node2", "up")
        shutdown_and_check(km, kc)


@pytest.mark.parametrize(
    "launcher, extra",
    [
        ("ssh", ["--hosts", "node1:1,node2:1,node3:1"]),
        ("mpi", ["--hosts", "node1:1,node2:1,node3:1"]),
        ("slurm", ["--hosts", "node1:1,node2:1,node3:1"]),
    ],
)
def test_killed_controller_leaves_nothing(launcher, extra):
    """kill -9 of the controller, engines on three hosts: every engine (and
    whatever launched it) is gone within the heartbeat timeout and a few
    seconds."""
    rp_dir = new_rp_dir("killed")
    start_cli(rp_dir, "--engines", launcher, *extra, "-n", "3")
    record = json.loads((Path(rp_dir) / "profile_default" / "pid" / "cluster.json").read_text())
    engines_before = len(lab_processes())
    assert engines_before >= 3
    os.kill(record["controller_pid"], signal.SIGKILL)
    killed = time.monotonic()
    left = wait_lab_clean(timeout=15)
    assert not left, f"{launcher}: left after the controller was killed: {left}"
    print(f"{launcher}: everything gone {time.monotonic() - killed:.1f} s after kill -9 of the controller")


@pytest.mark.parametrize(
    "args, needles",
    [
        (
            ["--engines", "ssh", "--hosts", "nosuchhost:1"],
            ["nosuchhost", "Could not resolve hostname"],
        ),
        (
            ["--engines", "ssh", "--hosts", "node1:1", "--remote-rparallel", "/nonexistent/rparallel"],
            ["ssh node1", "/nonexistent/rparallel", "No such file"],
        ),
        (
            ["--engines", "slurm", "--hosts", "node1:1", "--slurm-args", "--partition=nosuchpartition"],
            ["sbatch", "nosuchpartition", "invalid partition"],
        ),
        (
            ["--engines", "mpi", "--hosts", "nosuchhost:1"],
            ["mpiexec", "nosuchhost"],
        ),
    ],
    ids=["ssh-unknown-host", "ssh-no-rparallel-there", "slurm-rejected", "mpi-unknown-host"],
)
def test_launch_failures_are_one_clear_error(args, needles):
    """A launch that cannot work ends `cluster start` within its timeout
    (well before it) with one message naming the host or the command and
    what it printed; nothing is left anywhere."""
    rp_dir = new_rp_dir("bad")
    started = time.monotonic()
    proc = cli(rp_dir, "cluster", "start", "--daemonize", "--timeout", "30",
               "--python", str(VENV_PYTHON), *args)
    took = time.monotonic() - started
    assert proc.returncode != 0, proc.stdout
    message = proc.stderr
    for needle in needles:
        assert needle.lower() in message.lower(), f"{needle!r} not in:\n{message}"
    assert took < 25, f"took {took:.1f} s:\n{message}"
    print(f"{args[1]}: failed in {took:.1f} s:\n{message}")


def test_missing_mpiexec_is_a_clear_error():
    rp_dir = new_rp_dir("nompi")
    proc = cli(rp_dir, "cluster", "start", "--daemonize", "--engines", "mpi", "-n", "2",
               "--python", str(VENV_PYTHON), env={"PATH": "/nonexistent"})
    assert proc.returncode != 0
    assert "mpiexec, which is not on PATH" in proc.stderr, proc.stderr


FORGE = r"""
import json, sys, time, uuid, hmac, hashlib, zmq
from datetime import datetime, timezone
info = json.load(open(sys.argv[1]))
marker, key, times = sys.argv[2], sys.stdin.read(), int(sys.argv[3])
header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request", "username": "x",
          "session": uuid.uuid4().hex, "date": datetime.now(timezone.utc).isoformat(),
          "version": "5.3"}
content = {"code": f"open({marker!r}, 'a').write('ran\\n')", "silent": False}
parts = [json.dumps(p).encode() for p in (header, {}, {}, content)]
sig = hmac.new(key.encode(), digestmod=hashlib.sha256)
for p in parts:
    sig.update(p)
s = zmq.Context.instance().socket(zmq.DEALER)
s.connect(f"tcp://{info['ip']}:{info['port']}")
for _ in range(times):  # the same frames again: a replay
    s.send_multipart([b"engine:0", b"<IDS|MSG>", (sig.hexdigest() if key else "").encode(), *parts])
    time.sleep(0.3)
s.close(linger=0)
print("sent")
"""


def test_forged_messages_from_another_host_run_nothing(tmp_path):
    """A controller bound to the lab's network (an engine on node1):
    messages sent from node2 with a wrong key, or unsigned, run nothing; the
    same message with the right key (the positive control) runs once, and
    sent again (replayed) does not run again."""
    rp_dir = new_rp_dir("forge")
    start_cli(rp_dir, "--engines", "ssh", "--hosts", "node1:1")
    client_file = Path(rp_dir) / "profile_default" / "security" / "rparallel-client.json"
    info = json.loads(client_file.read_text())
    assert info["ip"] == "10.213.0.1"
    script = Path(rp_dir) / "forge.py"
    script.write_text(FORGE)
    marker = Path(rp_dir) / "forged-ran"
    # the address, as an attacker on node2 would know it (not the key)
    public = Path(rp_dir) / "public.json"
    public.write_text(json.dumps({"ip": info["ip"], "port": info["port"]}))

    def send_from_node2(key: str, times: int = 1) -> None:
        out = subprocess.run(
            ["ssh", "node2", str(VENV_PYTHON), str(script), str(public), str(marker), str(times)],
            input=key, capture_output=True, text=True, timeout=30,
        )
        assert "sent" in out.stdout, out.stderr

    send_from_node2("wrong-key")
    send_from_node2("")
    time.sleep(1.0)
    assert not marker.exists(), "a forged message ran code on an engine"
    send_from_node2(info["key"], times=2)
    deadline = time.monotonic() + 10
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    assert marker.exists(), "the signed control message did not run"
    assert marker.read_text() == "ran\n", f"a replayed message ran again: {marker.read_text()!r}"
    stopped = cli(rp_dir, "cluster", "stop")
    assert stopped.returncode == 0
