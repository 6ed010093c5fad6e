"""Raw wire messages for the security and fuzz tests: ``Raw``, one pyzmq
DEALER socket to a ROUTER port (the controller's client and engine ports,
a kernel's shell, control and stdin ports) with Jupyter sessions signed with
the right key and a wrong one; and the content of requests whose code would
write a marker file (so that a forged message that ran shows).
"""

from __future__ import annotations

import time
from pathlib import Path

import zmq
from jupyter_client.session import Session

from cluster_helpers import conn_file

SCHEME = "hmac-sha256"
# how long a dropped message is given to (not) show an effect, on top of a
# barrier request that proves everything sent before it was processed
SETTLE = 1.0


# --------------------------------------------------------------------------
# request contents


def execute_content(code: str, store_history: bool = False) -> dict:
    """The content of an execute_request for ``code``, as a frontend sends it."""
    return {
        "code": code,
        "silent": False,
        "store_history": store_history,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }


def evil_code(marker: Path, tag: str) -> str:
    return f"open({str(marker)!r}, 'a').write({tag!r})"


def evil_apply_buffer(marker: Path, tag: str) -> bytes:
    """A pickled ``(f, args, kwargs)`` whose f writes ``tag`` to ``marker``
    (defined in a ``__main__`` namespace so cloudpickle sends it by value)."""
    import cloudpickle

    ns = {"__name__": "__main__"}
    exec(
        f"def evil():\n    open({str(marker)!r}, 'a').write({tag!r})\n    return 42\n",
        ns,
    )
    return cloudpickle.dumps((ns["evil"], (), {}), protocol=5)


# --------------------------------------------------------------------------
# raw sockets


class Raw:
    """One DEALER socket to a ROUTER port, with sessions for the right key
    and a wrong one."""

    def __init__(self, url: str, key: bytes):
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        self.sock.connect(url)
        self.good = Session(key=key, signature_scheme=SCHEME, username="raw")
        self.bad = Session(key=b"wrong", signature_scheme=SCHEME, username="raw")
        self.received: list[dict] = []

    def close(self):
        self.sock.close(0)
        self.ctx.term()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def frames(self, msg_type, content, *, session=None, route=None, buffers=()):
        session = session or self.good
        msg = session.msg(msg_type, content=content)
        frames = session.serialize(msg)
        if route is not None:
            frames = [route] + frames
        return msg, frames + list(buffers)

    def send(self, frames):
        self.sock.send_multipart(frames)

    def pump(self, timeout: float) -> None:
        """Receives for ``timeout`` seconds; keeps what the right key
        verifies (anything else is recorded as unverifiable)."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.sock.poll(int(remaining * 1000)):
                return
            frames = self.sock.recv_multipart()
            try:
                _, rest = self.good.feed_identities(frames)
                msg = self.good.deserialize(rest, content=True)
            except Exception as e:  # not signed with the right key
                msg = {"msg_type": "UNVERIFIED", "error": repr(e), "parent_header": {}}
            self.received.append(msg)

    def replies_to(self, msg_id: str) -> list[dict]:
        return [m for m in self.received if (m.get("parent_header") or {}).get("msg_id") == msg_id]

    def wait_reply(self, msg_id: str, msg_type: str, timeout: float = 20) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.replies_to(msg_id):
                if m["msg_type"] == msg_type:
                    return m
            remaining = deadline - time.monotonic()
            assert remaining > 0, (
                f"no {msg_type} to {msg_id} within {timeout}s; received "
                f"{[(m['msg_type'], (m.get('parent_header') or {}).get('msg_id')) for m in self.received]}"
            )
            self.pump(min(remaining, 0.2))

    def barrier(self, route: bytes | None) -> None:
        """A properly signed request on the same connection and route, and
        its reply: everything sent before it has been handled."""
        if route is None:
            msg, frames = self.frames("connection_request", {})
            self.send(frames)
            self.wait_reply(msg["header"]["msg_id"], "connection_reply")
        else:
            msg, frames = self.frames("execute_request", execute_content("0"), route=route)
            self.send(frames)
            self.wait_reply(msg["header"]["msg_id"], "execute_reply")
        self.pump(SETTLE)


# --------------------------------------------------------------------------
# the controller's and a kernel's ports


def client_port(cluster) -> Raw:
    info = conn_file(cluster, "client")
    return Raw(f"tcp://{info['ip']}:{info['port']}", info["key"].encode())


def engine_port(cluster) -> Raw:
    info = conn_file(cluster, "engine")
    return Raw(f"tcp://{info['ip']}:{info['port']}", info["key"].encode())


def kernel_url(km, port_name: str) -> str:
    ci = km.get_connection_info()
    return f"tcp://{ci['ip']}:{ci[port_name]}"


def kernel_raw(km, port_name: str) -> Raw:
    ci = km.get_connection_info()
    key = ci["key"] if isinstance(ci["key"], bytes) else ci["key"].encode()
    return Raw(kernel_url(km, port_name), key)
