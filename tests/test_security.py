"""Security of the cluster and the kernel, checked from outside against real
processes.

* Messages that are not signed with the cluster's key (wrong key, empty
  signature, tampered, replayed) sent straight to the controller's client
  and engine ports with a pyzmq DEALER socket, framed as rparallel's own
  clients frame them (``engine:<id>`` routing frame, see
  docs/cluster-protocol.md), never run: the code they carry would write a
  marker file, which must stay absent. Positive controls first show that
  the same framing, signed with the right key, does run — so the negative
  checks are not vacuous. The legitimate client keeps working throughout.
* The kernel's control and stdin channels drop forged messages (its shell
  channel is covered by test_client.py::test_forged_messages_are_ignored).
* Every listening socket of the controller, the engines and the kernel is
  on 127.0.0.1.
* Connection files are mode 0600 in a 0700 directory, and a connection file
  readable by others is refused, by the Python client and by the engine.

The shared cluster is started from the command line in a temporary
``RPARALLEL_DIR``; every process is stopped at the end and checked gone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from cluster_helpers import (
    RPARALLEL,
    CliCluster,
    cluster_processes,
    conn_file,
    security_dir,
    start_cli_cluster,
    stop_cli_cluster,
    wait_gone,
)
from kernel_helpers import (
    strip_ansi,
    IS_RPARALLEL,
    VENV_PYTHON,
    drain,
    execute,
    execute_ok,
    get_reply,
    kernel_pid,
    kill_pids,
    pid_alive,
    shutdown_and_check,
    start_kernel,
)
from wire_helpers import (
    SETTLE,
    Raw,
    client_port,
    engine_port,
    evil_apply_buffer,
    evil_code,
    execute_content,
    kernel_raw,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own controller and engines"),
    pytest.mark.timeout(180),
]

PROFILE = "security"
N_ENGINES = 2


# --------------------------------------------------------------------------
# fixtures


@pytest.fixture(scope="module")
def cluster():
    c = start_cli_cluster(PROFILE, N_ENGINES)
    try:
        yield c
    finally:
        stop_cli_cluster(c)


@pytest.fixture(scope="module")
def cluster_kernel(cluster):
    km, kc = start_kernel(cluster.rp_dir)
    try:
        execute_ok(
            kc,
            "import json, os\n"
            "import rparallel as ipp\n"
            f"rc = ipp.Client(profile={PROFILE!r})\n"
            f"rc.wait_for_engines({N_ENGINES}, timeout=30)\n",
            timeout=60,
        )
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


@pytest.fixture
def k(cluster_kernel):
    kc = cluster_kernel[1]
    drain(kc)
    return kc


def assert_legit_client_works(kc, engines: int = N_ENGINES) -> None:
    """The kernel's real client still reaches every engine (and only them)."""
    ex = execute_ok(
        kc,
        "ids = rc.ids\n"
        f"assert ids == list(range({engines})), ids\n"
        "print(json.dumps(rc[:].apply_sync(lambda: 6 * 7)))\n",
        timeout=60,
    )
    assert json.loads(ex.stdout) == [42] * engines, ex.stdout
    ex = execute_ok(kc, "%px 6 * 7", timeout=60)
    outs = [
        strip_ansi(m["content"]["data"]["text/plain"])
        for m in ex.outputs
        if m["msg_type"] in ("display_data", "execute_result")
    ]
    assert len(outs) == engines and all(o.endswith(": 42") for o in outs), outs


# --------------------------------------------------------------------------
# the marker file that code in forged messages would write


def marker_text(marker: Path) -> str | None:
    return marker.read_text() if marker.exists() else None


# --------------------------------------------------------------------------
# positive controls: the framing used below is right


@pytest.mark.parametrize("engine", range(N_ENGINES))
def test_control_properly_signed_raw_requests_run(cluster, k, tmp_path, engine):
    """With the right key, the raw framing reaches the engine: execute and
    apply run (marker written), and their replies come back."""
    marker = tmp_path / "marker"
    route = f"engine:{engine}".encode()
    with client_port(cluster) as raw:
        msg, frames = raw.frames("execute_request", execute_content(evil_code(marker, "e")), route=route)
        raw.send(frames)
        reply = raw.wait_reply(msg["header"]["msg_id"], "execute_reply")
        assert reply["content"]["status"] == "ok", reply["content"]
        assert marker_text(marker) == "e"
        msg, frames = raw.frames(
            "apply_request", {}, route=route, buffers=[evil_apply_buffer(marker, "a")]
        )
        raw.send(frames)
        reply = raw.wait_reply(msg["header"]["msg_id"], "apply_reply")
        assert reply["content"]["status"] == "ok", reply["content"]
        assert marker_text(marker) == "ea"
    assert_legit_client_works(k)


# --------------------------------------------------------------------------
# the controller's client port


def forge(raw: Raw, how: str, msg_type: str, content: dict, route, buffers=()):
    """Frames of a forged message: ``wrong_key``, ``unsigned`` or
    ``tampered`` (signed for harmless content, then the content replaced)."""
    if how == "wrong_key":
        return raw.frames(msg_type, content, session=raw.bad, route=route, buffers=buffers)
    if how == "unsigned":
        msg, frames = raw.frames(msg_type, content, route=route, buffers=buffers)
        at = frames.index(b"<IDS|MSG>") + 1
        frames[at] = b""
        return msg, frames
    if how == "tampered":
        harmless = execute_content("1 + 1") if msg_type == "execute_request" else {"harmless": 1}
        assert harmless != content
        msg, frames = raw.frames(msg_type, harmless, route=route, buffers=buffers)
        at = frames.index(b"<IDS|MSG>") + 1
        frames[at + 4] = raw.good.pack(content)
        return msg, frames
    raise ValueError(how)


@pytest.mark.parametrize("how", ["wrong_key", "unsigned", "tampered"])
@pytest.mark.parametrize("route", [b"engine:0", b"engine:1", None])
def test_forged_requests_to_client_port_do_not_run(cluster, k, tmp_path, how, route):
    marker = tmp_path / "marker"
    sent = []
    with client_port(cluster) as raw:
        msg, frames = forge(raw, how, "execute_request", execute_content(evil_code(marker, "E")), route)
        raw.send(frames)
        sent.append(msg["header"]["msg_id"])
        msg, frames = forge(
            raw, how, "apply_request", {}, route, buffers=[evil_apply_buffer(marker, "A")]
        )
        raw.send(frames)
        sent.append(msg["header"]["msg_id"])
        # the controller's own requests too: a forged shutdown must not stop anything
        msg, frames = forge(raw, how, "shutdown_request", {"hub": True}, route)
        raw.send(frames)
        sent.append(msg["header"]["msg_id"])
        raw.barrier(route)
        answered = {m: [r["msg_type"] for r in raw.replies_to(m)] for m in sent}
        assert not any(answered.values()), f"forged ({how}) messages were answered: {answered}"
    assert marker_text(marker) is None, f"code of a {how} message ran: {marker_text(marker)!r}"
    assert pid_alive(cluster.controller_pid)
    assert_legit_client_works(k)


def test_replayed_requests_to_client_port_are_dropped(cluster, k, tmp_path):
    """A properly signed request runs once; the very same bytes sent again —
    on the same connection or a new one — are dropped by the replay guard."""
    marker = tmp_path / "marker"
    with client_port(cluster) as raw:
        msg, frames = raw.frames(
            "execute_request", execute_content(evil_code(marker, "x")), route=b"engine:0"
        )
        raw.send(frames)
        raw.wait_reply(msg["header"]["msg_id"], "execute_reply")
        assert marker_text(marker) == "x"
        amsg, aframes = raw.frames(
            "apply_request", {}, route=b"engine:1", buffers=[evil_apply_buffer(marker, "y")]
        )
        raw.send(aframes)
        raw.wait_reply(amsg["header"]["msg_id"], "apply_reply")
        assert marker_text(marker) == "xy"
        cmsg, cframes = raw.frames("connection_request", {})
        raw.send(cframes)
        raw.wait_reply(cmsg["header"]["msg_id"], "connection_reply")

        raw.received.clear()
        for _ in range(2):
            raw.send(frames)
            raw.send(aframes)
            raw.send(cframes)
        # to the other engine: the signature is what is remembered
        raw.send([b"engine:1"] + frames[1:])
        raw.barrier(b"engine:0")
        raw.barrier(b"engine:1")
        raw.barrier(None)
        for m in (msg, amsg, cmsg):
            got = raw.replies_to(m["header"]["msg_id"])
            assert not got, f"a replayed {m['msg_type']} was answered: {[r['msg_type'] for r in got]}"
    with client_port(cluster) as other:
        other.send(frames)
        other.send(aframes)
        other.barrier(b"engine:0")
        assert not other.replies_to(msg["header"]["msg_id"])
    assert marker_text(marker) == "xy", f"a replayed request ran again: {marker_text(marker)!r}"
    assert_legit_client_works(k)


def test_replay_guard_is_not_fooled_by_new_routing_frames(cluster, k, tmp_path):
    """The routing frame is outside the signature: replaying a signed
    request with another routing frame in front is still a replay."""
    marker = tmp_path / "marker"
    with client_port(cluster) as raw:
        msg, frames = raw.frames(
            "execute_request", execute_content(evil_code(marker, "1")), route=b"engine:0"
        )
        raw.send(frames)
        raw.wait_reply(msg["header"]["msg_id"], "execute_reply")
        for route in (b"engine:1", b"engine:00", b"engine:+1", b"engine:0 "):
            raw.send([route] + frames[1:])
        raw.barrier(b"engine:0")
        raw.barrier(b"engine:1")
    assert marker_text(marker) == "1", f"a re-routed replay ran: {marker_text(marker)!r}"
    assert_legit_client_works(k)


# --------------------------------------------------------------------------
# the controller's engine port


@pytest.mark.parametrize("how", ["wrong_key", "unsigned"])
def test_forged_messages_to_engine_port_do_nothing(cluster, k, tmp_path, how):
    """Pretending to be an engine without the key: a registration is not
    answered and adds no engine; requests (with or without routing frames)
    do not run anywhere; a heartbeat is not answered."""
    marker = tmp_path / "marker"
    with engine_port(cluster) as raw:
        sent = []
        registration = {
            "uuid": str(uuid.uuid4()),
            "pid": os.getpid(),
            "hostname": "rogue",
            "host": "rogue",
        }
        for msg_type, content, route, buffers in [
            ("registration_request", registration, None, ()),
            ("heartbeat", {}, None, ()),
            ("execute_request", execute_content(evil_code(marker, "E")), None, ()),
            ("execute_request", execute_content(evil_code(marker, "E")), b"engine:0", ()),
            ("apply_request", {}, b"engine:1", (evil_apply_buffer(marker, "A"),)),
            ("unregistration", {"id": 0}, None, ()),
        ]:
            msg, frames = forge(raw, how, msg_type, content, route, buffers)
            raw.send(frames)
            sent.append((msg_type, msg["header"]["msg_id"]))
        # barrier: a properly signed heartbeat from this unknown "engine" is
        # answered (with shutdown_request) after everything above
        hb, frames = raw.frames("heartbeat", {})
        raw.send(frames)
        raw.wait_reply(hb["header"]["msg_id"], "shutdown_request")
        raw.pump(SETTLE)
        answered = {t: [r["msg_type"] for r in raw.replies_to(m)] for t, m in sent}
        assert not any(answered.values()), f"forged ({how}) engine messages were answered: {answered}"
    assert marker_text(marker) is None, f"code of a {how} message ran: {marker_text(marker)!r}"
    # engine 0 was not unregistered, no rogue engine was added
    assert_legit_client_works(k)


def test_replayed_messages_to_engine_port_are_dropped(cluster, k):
    with engine_port(cluster) as raw:
        hb, frames = raw.frames("heartbeat", {})
        raw.send(frames)
        raw.wait_reply(hb["header"]["msg_id"], "shutdown_request")
        raw.received.clear()
        raw.send(frames)
        raw.send(frames)
        hb2, frames2 = raw.frames("heartbeat", {})
        raw.send(frames2)
        raw.wait_reply(hb2["header"]["msg_id"], "shutdown_request")
        raw.pump(SETTLE)
        again = raw.replies_to(hb["header"]["msg_id"])
        assert not again, f"a replayed heartbeat was answered: {[m['msg_type'] for m in again]}"
    assert_legit_client_works(k)


# --------------------------------------------------------------------------
# the kernel's control and stdin channels (shell: see test_client.py)


@pytest.mark.parametrize("how", ["wrong_key", "unsigned", "tampered"])
def test_forged_messages_to_kernel_control_port_are_ignored(cluster_kernel, k, tmp_path, how):
    """A forged shutdown_request does not stop the kernel; forged
    execute_requests on the control channel do not run."""
    km, kc = cluster_kernel
    marker = tmp_path / "marker"
    pid = kernel_pid(km)
    with kernel_raw(km, "control_port") as raw:
        sent = []
        for msg_type, content in [
            ("execute_request", execute_content(evil_code(marker, "C"))),
            ("shutdown_request", {"restart": False}),
            ("interrupt_request", {}),
        ]:
            msg, frames = forge(raw, how, msg_type, content, None)
            raw.send(frames)
            sent.append(msg["header"]["msg_id"])
        info, frames = raw.frames("kernel_info_request", {})
        raw.send(frames)
        raw.wait_reply(info["header"]["msg_id"], "kernel_info_reply")
        raw.pump(SETTLE)
        answered = {m: [r["msg_type"] for r in raw.replies_to(m)] for m in sent}
        assert not any(answered.values()), f"forged control messages were answered: {answered}"
    assert pid_alive(pid), "a forged shutdown_request stopped the kernel"
    assert marker_text(marker) is None, f"code of a {how} control message ran"
    assert execute_ok(k, "6 * 7").result()["text/plain"] == "42"


def test_replayed_kernel_control_message_is_dropped(cluster_kernel, k):
    km, kc = cluster_kernel
    with kernel_raw(km, "control_port") as raw:
        info, frames = raw.frames("kernel_info_request", {})
        raw.send(frames)
        raw.wait_reply(info["header"]["msg_id"], "kernel_info_reply")
        raw.received.clear()
        raw.send(frames)
        info2, frames2 = raw.frames("kernel_info_request", {})
        raw.send(frames2)
        raw.wait_reply(info2["header"]["msg_id"], "kernel_info_reply")
        raw.pump(SETTLE)
        assert not raw.replies_to(info["header"]["msg_id"]), "a replayed control message was answered"


@pytest.mark.parametrize("how", ["wrong_key", "unsigned", "right_key"])
def test_forged_interrupt_does_not_interrupt(cluster_kernel, k, how):
    """A forged interrupt_request does not interrupt a running cell.
    (Control: the same request signed with the right key does.)"""
    km, kc = cluster_kernel
    msg_id = kc.execute("import time\ntime.sleep(2.5)\n'slept'", allow_stdin=False)
    time.sleep(0.5)
    with kernel_raw(km, "control_port") as raw:
        if how == "right_key":
            _, frames = raw.frames("interrupt_request", {})
        else:
            _, frames = forge(raw, how, "interrupt_request", {}, None)
        raw.send(frames)
        raw.pump(0.5)
    reply = get_reply(kc, msg_id, timeout=30)
    drain(kc)
    if how == "right_key":
        assert reply["content"]["status"] == "error", reply["content"]
        assert reply["content"]["ename"] == "KeyboardInterrupt", reply["content"]
    else:
        assert reply["content"]["status"] == "ok", (
            f"a forged interrupt interrupted the cell: {reply['content']}"
        )


@pytest.mark.parametrize("how", ["wrong_key", "unsigned", "right_key"])
def test_forged_input_reply_is_ignored(cluster_kernel, k, how):
    """While the kernel waits in input(), a forged input_reply on its stdin
    port is not taken as the answer; the frontend's real one is. (Control:
    the same reply signed with the right key is taken.)"""
    km, kc = cluster_kernel
    msg_id = kc.execute("answer = input('say: ')\nanswer", allow_stdin=True)
    deadline = time.monotonic() + 20
    request = None
    while request is None:
        assert time.monotonic() < deadline, "no input_request from the kernel"
        try:
            m = kc.get_stdin_msg(timeout=0.5)
        except Exception:
            continue
        if m["msg_type"] == "input_request":
            request = m
    with kernel_raw(km, "stdin_port") as raw:
        session = {"wrong_key": raw.bad, "unsigned": raw.good, "right_key": raw.good}[how]
        # answers the right request, as a real forger would
        msg = session.msg("input_reply", content={"value": "forged"}, parent=request)
        frames = session.serialize(msg)
        if how == "unsigned":
            frames[frames.index(b"<IDS|MSG>") + 1] = b""
        raw.send(frames)
        raw.pump(SETTLE)
    if how == "right_key":
        reply = get_reply(kc, msg_id, timeout=30)
        assert reply["content"]["status"] == "ok", reply["content"]
        assert execute_ok(k, "answer").result()["text/plain"] == "'forged'"
        return
    kc.input("real")
    reply = get_reply(kc, msg_id, timeout=30)
    assert reply["content"]["status"] == "ok", reply["content"]
    ex = execute_ok(k, "answer")
    assert ex.result()["text/plain"] == "'real'", f"a forged input_reply was taken: {ex.result()}"


# --------------------------------------------------------------------------
# listening sockets


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return inodes
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def _decode_addr(hexaddr: str) -> tuple[str, int]:
    host, port = hexaddr.split(":")
    if len(host) == 8:
        ip = ".".join(str(b) for b in bytes.fromhex(host)[::-1])
    else:
        raw = bytes.fromhex(host)
        # /proc/net/tcp6 prints four little-endian 32-bit words
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        import ipaddress

        ip = str(ipaddress.IPv6Address(words))
    return ip, int(port, 16)


def _proc_net_sockets() -> dict[str, tuple[str, str, int, str]]:
    """inode -> (table, ip, port, state) for tcp, tcp6, udp, udp6."""
    found = {}
    for table in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            ip, port = _decode_addr(parts[1])
            found[parts[9]] = (table, ip, port, parts[3])
    return found


def bound_sockets(pids) -> list[tuple[int, str, str, int, str]]:
    """(pid, table, ip, port, state) of the internet sockets of ``pids``
    that are listening (tcp) or bound (udp)."""
    table = _proc_net_sockets()
    out = []
    for pid in pids:
        for inode in _socket_inodes(pid):
            if inode not in table:
                continue  # unix socket, pipe-like, or connected elsewhere
            kind, ip, port, state = table[inode]
            if kind.startswith("tcp") and state != "0A":  # only LISTEN
                continue
            out.append((pid, kind, ip, port, state))
    return out


LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}


def descendants(pid: int) -> list[int]:
    children = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            if pid_alive(c):
                out.append(c)
                todo.append(c)
    return out


def test_cli_cluster_listens_on_loopback_only(cluster):
    pids = cluster_processes(cluster.rp_dir)
    assert cluster.controller_pid in pids and len(pids) == N_ENGINES + 1, pids
    socks = bound_sockets(pids)
    ports = {p for (_, kind, _, p, _) in socks if kind.startswith("tcp")}
    expected = {conn_file(cluster, "client")["port"], conn_file(cluster, "engine")["port"]}
    assert expected <= ports, f"the controller's ports {expected} not found listening: {socks}"
    wide = [s for s in socks if s[2] not in LOOPBACK]
    assert not wide, f"sockets bound beyond loopback: {wide}"


def test_kernel_and_its_own_cluster_listen_on_loopback_only(cluster, cluster_kernel, k):
    """The kernel's five ports, and a cluster started inside the kernel
    with ``ipp.Cluster``: all on 127.0.0.1."""
    km, kc = cluster_kernel
    kpid = kernel_pid(km)
    ci = km.get_connection_info()
    socks = bound_sockets([kpid])
    ports = {p for (_, kind, _, p, _) in socks if kind.startswith("tcp")}
    kernel_ports = {ci[n] for n in ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")}
    assert kernel_ports <= ports, f"kernel ports {kernel_ports} not all listening: {socks}"
    wide = [s for s in socks if s[2] not in LOOPBACK]
    assert not wide, f"kernel sockets bound beyond loopback: {wide}"

    execute_ok(
        k,
        "inner = ipp.Cluster(n=1)\n"
        "inner_rc = inner.start_and_connect_sync()\n"
        "inner_rc.wait_for_engines(1, timeout=30)\n"
        "inner_pids = inner_rc[:].apply_sync(os.getpid)\n",
        timeout=90,
    )
    try:
        kids = sorted(
            set(descendants(kpid)) | (set(cluster_processes(cluster.rp_dir)) - set(cluster.pids))
        )
        ex = execute_ok(k, "print(json.dumps(inner_pids))")
        inner_engines = json.loads(ex.stdout)
        assert set(inner_engines) <= set(kids), (inner_engines, kids)
        socks = bound_sockets(kids)
        assert any(kind.startswith("tcp") for (_, kind, _, _, _) in socks), (
            f"no listening socket found for the in-kernel cluster's processes {kids}"
        )
        wide = [s for s in socks if s[2] not in LOOPBACK]
        assert not wide, f"in-kernel cluster sockets bound beyond loopback: {wide}"
        # its connection files are private too
        ex = execute_ok(
            k,
            "import glob, stat\n"
            "rp = os.environ['RPARALLEL_DIR']\n"
            "files = [f for f in glob.glob(rp + '/profile_*/security/*.json') "
            f"if '/profile_{PROFILE}/' not in f]\n"
            "print(json.dumps({f: oct(stat.S_IMODE(os.stat(f).st_mode)) for f in files}))\n",
        )
        modes = json.loads(ex.stdout)
        assert len(modes) >= 2, modes
        assert set(modes.values()) == {"0o600"}, modes
    finally:
        execute_ok(k, "inner.stop_cluster_sync()\ndel inner_rc", timeout=60)
        left = wait_gone(kids)
        kill_pids(left)
        assert not left, f"in-kernel cluster processes still alive after stop: {left}"


# --------------------------------------------------------------------------
# connection files


def test_connection_files_are_private(cluster):
    sec = security_dir(cluster)
    assert stat.S_IMODE(sec.stat().st_mode) == 0o700, oct(sec.stat().st_mode)
    files = sorted(sec.iterdir())
    assert {f.name for f in files} >= {"rparallel-client.json", "rparallel-engine.json"}, files
    for f in files:
        mode = stat.S_IMODE(f.stat().st_mode)
        assert mode == 0o600, f"{f} has mode {oct(mode)}"
        assert f.stat().st_uid == os.getuid()
    record = Path(cluster.rp_dir) / f"profile_{cluster.profile}" / "pid" / "cluster.json"
    assert stat.S_IMODE(record.stat().st_mode) & 0o077 == 0, oct(record.stat().st_mode)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_client_refuses_connection_file_readable_by_others(cluster, k, tmp_path, mode):
    """``ipp.Client(profile=...)`` and ``ipp.Client(url_file=...)`` refuse a
    connection file that others may read, saying why."""
    real = security_dir(cluster) / "rparallel-client.json"
    copy = tmp_path / "client.json"
    shutil.copy(real, copy)
    os.chmod(copy, mode)
    try:
        os.chmod(real, mode)
        for call in (f"ipp.Client(profile={PROFILE!r}, timeout=5)", f"ipp.Client(url_file={str(copy)!r}, timeout=5)"):
            ex = execute(k, f"c = {call}\nc.close()", timeout=30)
            assert ex.status == "error", f"{call} accepted a connection file with mode {oct(mode)}"
            err = ex.error()
            text = f"{err['ename']}: {err['evalue']}"
            assert "readable" in text or "permission" in text.lower(), text
            assert "chmod" in text or "0600" in text or "600" in text, text
    finally:
        os.chmod(real, 0o600)
    execute_ok(k, f"c = ipp.Client(profile={PROFILE!r}, timeout=10)\nassert c.ids == rc.ids\nc.close()")


def _start_cluster_in(rp_dir: str, profile: str, n: int) -> CliCluster:
    c = CliCluster(rp_dir=rp_dir, profile=profile, n=n, controller_pid=0)
    proc = c.cli(
        "cluster", "start", "-n", str(n), "--daemonize", "--profile", profile,
        "--python", str(VENV_PYTHON),
    )
    if proc.returncode != 0:
        kill_pids(cluster_processes(rp_dir))
        raise AssertionError(f"cluster start failed: {proc.stdout!r} {proc.stderr!r}")
    info = json.loads((Path(rp_dir) / f"profile_{profile}" / "pid" / "cluster.json").read_text())
    c.controller_pid = int(info["controller_pid"])
    c.pids = cluster_processes(rp_dir)
    return c


def test_cluster_start_tightens_loose_existing_files(tmp_path):
    """A profile whose security dir is 0777 and holds a 0644 connection file
    from before: `cluster start` leaves the dir 0700 and the files 0600."""
    rp_dir = tempfile.mkdtemp(prefix="rp-secperm-")
    sec = Path(rp_dir) / "profile_loose" / "security"
    sec.mkdir(parents=True)
    os.chmod(sec, 0o777)
    stale = sec / "rparallel-client.json"
    stale.write_text("{}")
    os.chmod(stale, 0o644)
    c = _start_cluster_in(rp_dir, "loose", 1)
    try:
        assert stat.S_IMODE(sec.stat().st_mode) == 0o700, oct(sec.stat().st_mode)
        for f in sec.iterdir():
            assert stat.S_IMODE(f.stat().st_mode) == 0o600, (f, oct(f.stat().st_mode))
    finally:
        stop_cli_cluster(c)


def test_engine_refuses_engine_file_readable_by_others(tmp_path):
    """`rparallel engine --file F` with F readable by others (it holds the
    cluster's key) must refuse to start, as the client does, rather than
    register with the controller."""
    rp_dir = tempfile.mkdtemp(prefix="rp-secengine-")
    c = _start_cluster_in(rp_dir, "engfile", 1)
    proc = None
    try:
        loose = tmp_path / "engine.json"
        shutil.copy(security_dir(c) / "rparallel-engine.json", loose)
        os.chmod(loose, 0o644)
        proc = subprocess.Popen(
            [str(RPARALLEL), "engine", "--file", str(loose), "--python", str(VENV_PYTHON)],
            env=c.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            out, err = proc.communicate(timeout=8)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=10)
            listed = c.cli("cluster", "list").stdout
            raise AssertionError(
                "an engine started from a connection file readable by others kept running "
                f"(it registered: `cluster list` says {listed.strip()!r}); stderr={err[-2000:]!r}"
            )
        assert proc.returncode != 0, f"engine exited 0: {out!r} {err!r}"
        assert "readable" in err or "permission" in err.lower(), err
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        stop_cli_cluster(c)
