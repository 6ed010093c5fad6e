"""`rparallel.bind_kernel()` on an engine (ipyparallel's `bind_kernel`):
the engine serves its namespace as a Jupyter kernel too, reached with
`jupyter console --existing kernel-<pid>.json` or any Jupyter client.

A kernel starts a 2-engine cluster (its engines' JUPYTER_RUNTIME_DIR a
temporary directory); engine 0 is bound with `rc[0].apply_sync(
rparallel.bind_kernel)`. Then, from this process:

- a real `jupyter_client` BlockingKernelClient on the returned connection
  file sees the engine's namespace (a pushed value), its output comes back
  on that client's IOPub, and what it sets is seen by the cluster's next
  `apply` on engine 0 (one namespace);
- an interrupt on the bound kernel's control channel stops a running cell
  and the engine goes on serving the cluster;
- `jupyter console --existing <file> --simple-prompt` runs a line against
  the engine's namespace;
- the connection file is mode 0600 (its key is in no command line), the
  sockets listen on 127.0.0.1, `bind_kernel()` in the kernel itself (not an
  engine) returns None, and when the cluster stops the engines and their
  connection files are gone.
"""

from __future__ import annotations

import os
import stat
import time

import pexpect
import pytest
from jupyter_client import BlockingKernelClient

from api_helpers import KERNEL_HELPERS, kernel_with_cluster, value
from kernel_helpers import IS_RPARALLEL, JUPYTER, strip_ansi

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own engines"),
    pytest.mark.timeout(180),
]

N = 2


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    return tmp_path_factory.mktemp("runtime")


@pytest.fixture(scope="module")
def kc(runtime):
    start = f"""
import os, time
os.environ['JUPYTER_RUNTIME_DIR'] = {str(runtime)!r}
import rparallel as ipp
c = ipp.Cluster(n={N})
rc = c.start_and_connect_sync()
rc.wait_for_engines({N}, timeout=30)
pids = rc[:].apply_sync(os.getpid)
{KERNEL_HELPERS}
"""
    with kernel_with_cluster("rp-bind-", start, N) as (_km, kc):
        yield kc


@pytest.fixture(scope="module")
def bound(kc):
    """The connection file of engine 0, bound as a kernel, and its pid."""
    path, pid = value(
        kc,
        """
rc[0].push({'secret': 41})
path = rc[0].apply_sync(ipp.bind_kernel)
[path, pids[0]]
""",
    )
    return path, pid


@pytest.fixture
def client(bound):
    c = BlockingKernelClient()
    c.load_connection_file(bound[0])
    c.start_channels()
    try:
        c.wait_for_ready(timeout=30)
        yield c
    finally:
        c.stop_channels()


def run(client, code, timeout=30):
    """Executes ``code``; (reply content, stdout text, execute_result text)."""
    msg_id = client.execute(code)
    stdout, result = "", None
    while True:
        msg = client.get_iopub_msg(timeout=timeout)
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            stdout += content["text"]
        elif kind == "execute_result":
            result = content["data"].get("text/plain")
        elif kind == "status" and content["execution_state"] == "idle":
            break
    reply = client.get_shell_msg(timeout=timeout)
    assert reply["parent_header"]["msg_id"] == msg_id
    return reply["content"], stdout, result


def test_the_connection_file_is_private_and_local(bound, runtime):
    path, pid = bound
    assert os.path.dirname(path) == str(runtime)
    assert os.path.basename(path) == f"kernel-{pid}.json"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    import json

    info = json.load(open(path))
    assert info["ip"] == "127.0.0.1" and info["key"] and info["signature_scheme"] == "hmac-sha256"
    cmdlines = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdlines.append(open(f"/proc/{entry}/cmdline", "rb").read())
            except OSError:
                pass
    assert not any(info["key"].encode() in c for c in cmdlines), "the key is on a command line"


def test_a_jupyter_client_reaches_the_engines_namespace(client, kc):
    info = client.kernel_info(reply=True, timeout=30)["content"]
    assert info["status"] == "ok" and info["implementation"] == "rparallel"
    reply, out, result = run(client, "print('from the engine', os.getpid() if 'os' in dir() else 0)\nsecret + 1")
    assert reply["status"] == "ok", reply
    assert result == "42", (reply, out, result)
    assert "from the engine" in out
    # One namespace: what the client sets, the cluster's next call sees.
    reply, _, _ = run(client, "secret = 100")
    assert reply["status"] == "ok"
    assert value(kc, "rc[0].apply_sync(lambda: secret)") == 100
    # Errors come back as the kernel's error replies.
    reply, _, _ = run(client, "1/0")
    assert reply["status"] == "error" and reply["ename"] == "ZeroDivisionError"


def test_an_interrupt_stops_a_cell_and_the_engine_goes_on(client, kc):
    msg_id = client.execute("import time\ntime.sleep(30)")
    time.sleep(1.0)
    client.control_channel.send(client.session.msg("interrupt_request", {}))
    started = time.monotonic()
    while True:
        reply = client.get_shell_msg(timeout=15)
        if reply["parent_header"]["msg_id"] == msg_id:
            break
    assert time.monotonic() - started < 5
    assert reply["content"]["status"] == "error" and reply["content"]["ename"] == "KeyboardInterrupt"
    assert value(kc, "rc[:].apply_sync(lambda: 7)") == [7] * N


def test_jupyter_console_existing(bound, runtime):
    env = dict(os.environ, TERM="dumb", JUPYTER_RUNTIME_DIR=str(runtime))
    child = pexpect.spawn(
        str(JUPYTER),
        ["console", "--existing", os.path.basename(bound[0]), "--simple-prompt"],
        env=env,
        encoding="utf-8",
        codec_errors="replace",
        timeout=30,
    )
    try:
        child.expect(r"In \[\d+\]: ")
        child.sendline("secret * 2")
        child.expect(r"Out\[\d+\]: (\d+)")
        assert child.match.group(1) == "200", strip_ansi(child.before)
        child.expect(r"In \[\d+\]: ")
        child.sendline("exit")
        child.expect(pexpect.EOF, timeout=15)
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_bind_kernel_in_the_kernel_itself_does_nothing(kc):
    assert value(kc, "ipp.bind_kernel()") is None


def test_the_files_go_with_the_engines(kc, bound):
    path, pid = bound
    assert os.path.exists(path)
    value(kc, "c.stop_cluster_sync()\nc.start_cluster_sync()\nrc = c.connect_client_sync()\npids = rc[:].apply_sync(os.getpid)\npids")
    for _ in range(50):
        if not os.path.exists(path):
            break
        time.sleep(0.1)
    assert not os.path.exists(path), "the connection file outlived its engine"
    assert not os.path.exists(f"/proc/{pid}")
