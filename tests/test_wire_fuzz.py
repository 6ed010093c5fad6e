"""A bounded, seeded fuzz of the wire protocol against live sockets: the
controller's client and engine ports and the kernel's shell and control
ports, each through its own pyzmq DEALER socket.

Cases (``random.Random(SEED)``, a fixed number per run):

* random frames, with and without the ``<IDS|MSG>`` delimiter, too few
  frames after it, thousands of frames, a 20 MB frame;
* messages with a wrong, missing, truncated or garbage signature, signed
  with another key, or tampered after signing;
* messages signed with the RIGHT key but one JSON part broken (bytes that
  are not JSON, truncated JSON, invalid UTF-8, trailing garbage, a 20 MB
  part): dropped, whatever the message type — even ``execute_request`` and
  ``shutdown_request``;
* signed, valid JSON of the wrong shape (lists for objects, numbers for
  strings, deep nesting, huge numbers, NaN, empty parts) carrying only
  harmless code;
* signed messages of unknown types carrying code;
* odd routing frames in front of signed messages (controller client port);
* replays: a few properly signed requests that append to a second marker
  file are sent once, then the same bytes again at random later points.

Every message that carries code carries ``open(MARKER, 'a').write(...)``
(``execute_request`` code, or an ``apply_request`` function). After the
fuzz: the controller, both engines and the kernel are alive; the marker is
absent; each replayed request ran exactly once; ``rc.ids`` is unchanged (no
rogue engine registered, none unregistered); and the legitimate client
still works (``apply_sync``, ``%px``, a plain cell).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from cluster_helpers import start_cli_cluster, stop_cli_cluster
from kernel_helpers import (
    IS_RPARALLEL,
    strip_ansi,
    drain,
    execute_ok,
    kernel_pid,
    pid_alive,
    shutdown_and_check,
    start_kernel,
)
from wire_helpers import (
    Raw,
    client_port,
    engine_port,
    evil_apply_buffer,
    execute_content,
    kernel_raw,
)

pytestmark = [
    pytest.mark.skipif(not IS_RPARALLEL, reason="rparallel's own controller and engines"),
    pytest.mark.timeout(240),
]

PROFILE = "fuzz"
N_ENGINES = 2
SEED = 20261125
CASES = 1000
BIG = 20 * 1024 * 1024
DELIM = b"<IDS|MSG>"
TARGETS = ("client", "engine", "shell", "control")

# message types a properly signed, well-formed fuzz message may have: none of
# them changes the cluster or the kernel (no shutdown, registration, clear...)
SAFE_TYPES = {
    "client": ["execute_request", "apply_request", "connection_request", "heartbeat"],
    "engine": ["heartbeat"],
    "shell": ["execute_request", "kernel_info_request", "comm_info_request", "is_complete_request"],
    "control": ["kernel_info_request"],
}
# types a broken (must-be-dropped) message may claim
DANGEROUS_TYPES = {
    "client": ["execute_request", "apply_request", "shutdown_request", "clear_request"],
    "engine": ["registration_request", "unregistration", "heartbeat", "execute_request"],
    "shell": ["execute_request", "shutdown_request"],
    "control": ["shutdown_request", "execute_request", "interrupt_request"],
}
KNOWN = {t for types in (*SAFE_TYPES.values(), *DANGEROUS_TYPES.values()) for t in types} | {
    "abort_request", "push_request", "pull_request", "complete_request", "inspect_request",
    "history_request", "comm_open", "comm_msg", "comm_close", "input_reply", "debug_request",
    "engine_unavailable", "registration_reply", "heartbeat_reply", "connection_reply",
}


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
def kernel_log(cluster):
    return Path(cluster.rp_dir) / "kernel-stderr.log"


@pytest.fixture(scope="module")
def cluster_kernel(cluster, kernel_log):
    """A kernel whose stderr (its log) goes to ``kernel_log``."""
    with open(kernel_log, "wb") as log:
        km, kc = start_kernel(cluster.rp_dir, stderr=log)
    try:
        execute_ok(
            kc,
            "import json, os\n"
            "import rparallel as ipp\n"
            f"rc = ipp.Client(profile={PROFILE!r})\n"
            f"rc.wait_for_engines({N_ENGINES}, timeout=30)\n"
            "print(json.dumps(sorted(rc[:].apply_sync(os.getpid))))\n",
            timeout=60,
        )
        yield km, kc
    finally:
        shutdown_and_check(km, kc)


# --------------------------------------------------------------------------
# case generation


class Fuzzer:
    def __init__(self, rng: random.Random, sockets: dict[str, Raw], marker: Path, replay_marker: Path):
        self.rng = rng
        self.sockets = sockets
        self.marker = marker
        self.replay_marker = replay_marker
        self.counts: dict[str, int] = {}
        # (target, frames, msg_id) of properly signed requests sent once,
        # replayed later
        self.originals: list[tuple[str, list[bytes], str]] = []
        self.evil_buffer = evil_apply_buffer(marker, "F")

    # ---- small pieces

    def rand_bytes(self, lo: int = 0, hi: int = 200) -> bytes:
        return self.rng.randbytes(self.rng.randint(lo, hi))

    def evil_code(self) -> str:
        return f"open({str(self.marker)!r}, 'a').write('F')"

    def route_for(self, target: str) -> bytes | None:
        if target != "client":
            return None
        return self.rng.choice([b"engine:0", b"engine:1", None])

    def msg_parts(self, target: str, msg_type: str, content: dict, session=None):
        raw = self.sockets[target]
        session = session or raw.good
        msg = session.msg(msg_type, content=content)
        parts = [
            session.pack(msg["header"]),
            session.pack(msg["parent_header"]),
            session.pack(msg["metadata"]),
            session.pack(msg["content"]),
        ]
        return msg, parts

    def evil_message(self, target: str, msg_type: str):
        content = execute_content(self.evil_code()) if msg_type != "apply_request" else {}
        buffers = [self.evil_buffer] if msg_type == "apply_request" else []
        return content, buffers

    def assemble(self, route, signature: bytes, parts, buffers=()):
        frames = [route] if route is not None else []
        return frames + [DELIM, signature, *parts, *buffers]

    def not_json(self) -> bytes:
        """Bytes that no JSON parser accepts."""
        choice = self.rng.randrange(6)
        if choice == 0:
            data = b"\x00" + self.rand_bytes(0, 100)
        elif choice == 1:
            good = json.dumps({"code": "x" * self.rng.randint(0, 50), "n": [1, 2, 3]}).encode()
            data = good[: self.rng.randint(1, len(good) - 1)]
        elif choice == 2:
            data = b'{"code": "\xff\xfe", "x": 1}'
        elif choice == 3:
            data = b"{}" + self.rng.choice([b"x", b"}", b",", b" {}", b"\x00"])
        elif choice == 4:
            data = b"{'single': 'quotes'}"
        else:
            data = b'{"a": 1,}'
        return data

    def odd_json(self) -> bytes:
        """Valid-ish JSON of the wrong shape."""
        return self.rng.choice(
            [
                b"[]", b"null", b"1", b'"a string"', b"true", b"1e999", b"-0",
                b"[" * 100_000 + b"]" * 100_000,
                b'{"a":' * 5000 + b"1" + b"}" * 5000,
                b"9" * 5000,
                b'{"a": NaN}', b'{"a": Infinity}',
                b'{"msg_id": 1, "msg_type": 2, "session": null, "username": [], "date": {}, "version": 5}',
                b'{"msg_type": "execute_request"}',
                b'{"x": 1, "x": 2}',
                b"",
                b'{"code": ["pass"], "silent": "no"}',
                b'{"code": null}',
                b'{"\\ud800": "\\udfff lone surrogates"}',
                json.dumps({"k" * 1000: ["v" * 1000] * 100}).encode(),
            ]
        )

    # ---- case kinds

    def k_random_frames(self, target):
        frames = [self.rand_bytes() for _ in range(self.rng.randint(1, 8))]
        if self.rng.random() < 0.3:
            frames.insert(self.rng.randrange(len(frames) + 1), DELIM)
        return frames

    def k_few_frames(self, target):
        route = self.route_for(target)
        n = self.rng.randint(0, 4)
        return ([route] if route else []) + [DELIM] + [self.rand_bytes(0, 80) for _ in range(n)]

    def k_no_delimiter(self, target):
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        content, buffers = self.evil_message(target, msg_type)
        raw = self.sockets[target]
        _, parts = self.msg_parts(target, msg_type, content)
        sig = raw.good.sign(parts)
        route = self.route_for(target)
        frames = ([route] if route else []) + [sig, *parts, *buffers]
        if self.rng.random() < 0.5:
            frames.insert(self.rng.randrange(len(frames) + 1), b"<IDS|MSG")
        return frames

    def k_bad_signature(self, target):
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        content, buffers = self.evil_message(target, msg_type)
        raw = self.sockets[target]
        _, parts = self.msg_parts(target, msg_type, content)
        good = raw.good.sign(parts)
        sig = self.rng.choice(
            [
                b"",
                good[:-1],
                good[:32],
                good + b"00",
                bytes(self.rng.choice(b"0123456789abcdef") for _ in range(64)),
                self.rand_bytes(1, 100),
                b"\xff" * 64,
                good[:-2] + (b"00" if good[-2:] != b"00" else b"11"),
            ]
        )
        return self.assemble(self.route_for(target), sig, parts, buffers)

    def k_wrong_key(self, target):
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        content, buffers = self.evil_message(target, msg_type)
        from jupyter_client.session import Session

        other = Session(key=self.rand_bytes(1, 64) or b"k", signature_scheme="hmac-sha256")
        _, parts = self.msg_parts(target, msg_type, content, session=other)
        return self.assemble(self.route_for(target), other.sign(parts), parts, buffers)

    def k_tampered(self, target):
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        raw = self.sockets[target]
        harmless = execute_content("pass") if msg_type == "execute_request" else {"harmless": 1}
        _, parts = self.msg_parts(target, msg_type, harmless)
        sig = raw.good.sign(parts)
        content, buffers = self.evil_message(target, msg_type)
        which = self.rng.randrange(4)
        if which == 3:
            parts[3] = raw.good.pack(content)
        else:
            parts[which] = parts[which][:-1] + b', "extra": 1}'
            parts[3] = raw.good.pack(content)
        return self.assemble(self.route_for(target), sig, parts, buffers)

    def k_signed_broken_json(self, target):
        """Right key, one part not JSON at all: must be dropped."""
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        raw = self.sockets[target]
        content, buffers = self.evil_message(target, msg_type)
        _, parts = self.msg_parts(target, msg_type, content)
        which = self.rng.randrange(4)
        parts[which] = self.not_json()
        return self.assemble(self.route_for(target), raw.good.sign(parts), parts, buffers)

    def k_signed_odd_json(self, target):
        """Right key, valid-ish JSON of the wrong shape; only harmless code."""
        msg_type = self.rng.choice(SAFE_TYPES[target])
        raw = self.sockets[target]
        content = execute_content("pass") if msg_type == "execute_request" else {}
        _, parts = self.msg_parts(target, msg_type, content)
        which = self.rng.randrange(4)
        parts[which] = self.odd_json()
        buffers = []
        if msg_type == "apply_request":
            buffers = [self.rand_bytes(0, 300) for _ in range(self.rng.randint(0, 3))]
        return self.assemble(self.route_for(target), raw.good.sign(parts), parts, buffers)

    def k_signed_unknown_type(self, target):
        raw = self.sockets[target]
        while True:
            msg_type = self.rng.choice(
                [
                    "execute_request ", " execute_request", "EXECUTE_REQUEST", "execute_reques",
                    "execute_requestx", "apply_request\x00", "apply", "execute", "",
                    "x" * self.rng.randint(1, 2000),
                    "".join(self.rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(12)),
                    "\u00e9x\u00e9cute_request", "shutdown_requests", "registration_request2",
                ]
            )
            if msg_type not in KNOWN:
                break
        content = execute_content(self.evil_code())
        buffers = [self.evil_buffer] if self.rng.random() < 0.5 else []
        _, parts = self.msg_parts(target, msg_type, content)
        return self.assemble(self.route_for(target), raw.good.sign(parts), parts, buffers)

    def k_odd_route(self, target):
        """Controller client port only: weird routing frames before a signed
        harmless message."""
        raw = self.sockets[target]
        route = self.rng.choice(
            [
                [b"engine:"], [b"engine:-1"], [b"engine:4294967296"], [b"engine:99"],
                [b"engine:abc"], [b"engine:0\x00"], [b"ENGINE:0"], [b"\xff\xfe"],
                [b"engine:0", b"engine:1"], [b""], [b"e" * (1 << 20)], [b"engine:" + b"9" * 1000],
                [b"engine:\xff"],
            ]
        )
        msg_type = self.rng.choice(["execute_request", "kernel_info_request", "connection_request"])
        content = execute_content("pass") if msg_type == "execute_request" else {}
        _, parts = self.msg_parts(target, msg_type, content)
        return [*route, DELIM, raw.good.sign(parts), *parts]

    def k_many_frames(self, target):
        raw = self.sockets[target]
        if self.rng.random() < 0.5:
            return [DELIM] + [b""] * self.rng.randint(1000, 5000)
        msg_type = self.rng.choice(["fuzz_unknown", "heartbeat_x"])
        _, parts = self.msg_parts(target, msg_type, {})
        return self.assemble(self.route_for(target), raw.good.sign(parts), parts,
                             [b"b"] * self.rng.randint(1000, 5000))

    def k_oversize(self, target):
        raw = self.sockets[target]
        msg_type = self.rng.choice(DANGEROUS_TYPES[target])
        content, buffers = self.evil_message(target, msg_type)
        _, parts = self.msg_parts(target, msg_type, content)
        which = self.rng.randrange(4)
        parts[which] = b"\x00" + b"x" * BIG  # not JSON
        signed = self.rng.random() < 0.5
        sig = raw.good.sign(parts) if signed else b"0" * 64
        return self.assemble(self.route_for(target), sig, parts, buffers)

    def k_original(self, target):
        """A properly signed request that runs once; replayed later."""
        raw = self.sockets[target]
        code = f"open({str(self.replay_marker)!r}, 'a').write('R')"
        route = None
        if target == "client":
            route = self.rng.choice([b"engine:0", b"engine:1"])
        msg, parts = self.msg_parts(target, "execute_request", execute_content(code))
        frames = self.assemble(route, raw.good.sign(parts), parts)
        self.originals.append((target, frames, msg["header"]["msg_id"]))
        return frames

    def k_replay(self, target):
        candidates = [o for o in self.originals if o[0] == target]
        if not candidates:
            return self.k_random_frames(target)
        frames = list(self.rng.choice(candidates)[1])
        if target == "client" and self.rng.random() < 0.5:
            # same signed bytes, other route
            frames = [self.rng.choice([b"engine:0", b"engine:1"])] + frames[1:]
        if self.rng.random() < 0.3:
            # the same signature spelt in upper case hex (which a lenient
            # verifier may accept as the same MAC): still a replay
            at = frames.index(DELIM) + 1
            frames[at] = frames[at].upper()
        return frames

    KINDS = [
        ("random_frames", 8), ("few_frames", 6), ("no_delimiter", 5), ("bad_signature", 10),
        ("wrong_key", 8), ("tampered", 8), ("signed_broken_json", 12), ("signed_odd_json", 10),
        ("signed_unknown_type", 8), ("odd_route", 5), ("many_frames", 1), ("replay", 6),
        ("original", 1),
    ]

    def next_case(self):
        target = self.rng.choice(TARGETS)
        kinds, weights = zip(*self.KINDS)
        kind = self.rng.choices(kinds, weights)[0]
        if kind == "odd_route" and target != "client":
            kind = "signed_broken_json"
        if kind == "original" and (
            target not in ("client", "shell")
            or sum(1 for o in self.originals if o[0] == target) >= 3
        ):
            kind = "replay"
        frames = getattr(self, f"k_{kind}")(target)
        frames = [f if isinstance(f, bytes) else bytes(f) for f in frames]
        return target, kind, frames

    def send(self, target, kind, frames):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        self.sockets[target].send(frames)


# --------------------------------------------------------------------------
# the fuzz


def panics(path: Path) -> list[str]:
    text = path.read_text(errors="replace") if path.exists() else ""
    return [ln for ln in text.splitlines() if "panicked" in ln or "RUST_BACKTRACE" in ln]


def test_wire_fuzz(cluster, cluster_kernel, kernel_log, tmp_path):
    km, kc = cluster_kernel
    kpid = kernel_pid(km)
    procs = {"controller": cluster.controller_pid, "kernel": kpid}
    procs.update({f"engine pid {p}": p for p in cluster.pids if p != cluster.controller_pid})
    assert len(procs) == N_ENGINES + 2, procs
    marker = tmp_path / "fuzz-executed"
    replay_marker = tmp_path / "replayed"
    rng = random.Random(SEED)

    sockets = {
        "client": client_port(cluster),
        "engine": engine_port(cluster),
        "shell": kernel_raw(km, "shell_port"),
        "control": kernel_raw(km, "control_port"),
    }
    started = time.monotonic()
    try:
        fuzz = Fuzzer(rng, sockets, marker, replay_marker)
        # make sure each target has originals to replay
        for target in ("client", "shell"):
            fuzz.send(target, "original", fuzz.k_original(target))
        for i in range(CASES):
            target, kind, frames = fuzz.next_case()
            fuzz.send(target, kind, frames)
            if i % 20 == 0:
                for raw in sockets.values():
                    raw.pump(0.01)
        # two oversize frames per target, on top
        for target in TARGETS:
            for _ in range(2):
                fuzz.send(target, "oversize", fuzz.k_oversize(target))
        # every socket: a properly signed request on the same connection, and
        # its reply, proves everything the fuzz sent there was handled
        sockets["client"].barrier(b"engine:0")
        sockets["client"].barrier(b"engine:1")
        sockets["client"].barrier(None)
        hb, frames = sockets["engine"].frames("heartbeat", {})
        sockets["engine"].send(frames)
        sockets["engine"].wait_reply(hb["header"]["msg_id"], "shutdown_request", timeout=60)
        for target in ("shell", "control"):
            info, frames = sockets[target].frames("kernel_info_request", {})
            sockets[target].send(frames)
            sockets[target].wait_reply(info["header"]["msg_id"], "kernel_info_reply", timeout=60)
        for raw in sockets.values():
            raw.pump(0.5)
        elapsed = time.monotonic() - started
    finally:
        for raw in sockets.values():
            raw.close()

    summary = f"{sum(fuzz.counts.values())} cases {fuzz.counts} in {elapsed:.1f}s"
    print(summary)
    dead = {name: pid for name, pid in procs.items() if not pid_alive(pid)}
    assert not dead, f"processes died during the fuzz: {dead}; {summary}"
    assert not marker.exists(), (
        f"code sent by the fuzz ran: {marker.read_text()!r}; {summary}"
    )
    originals = len(fuzz.originals)
    ran = replay_marker.read_text() if replay_marker.exists() else ""
    assert ran == "R" * originals, (
        f"{originals} signed requests were sent once and replayed; they ran "
        f"{len(ran)} times in all; {summary}"
    )
    assert elapsed < 90, summary
    controller_log = Path(cluster.rp_dir) / f"profile_{PROFILE}" / "controller.log"
    assert controller_log.exists(), "no controller.log to check for panics"
    assert not panics(controller_log), f"panics in the cluster's log: {panics(controller_log)}"
    assert not panics(kernel_log), f"panics in the kernel's log: {panics(kernel_log)}"
    assert "dropped" in kernel_log.read_text(errors="replace"), (
        "the kernel's log does not show the dropped messages: is its stderr captured?"
    )

    # the legitimate client and the kernel still work
    drain(kc)
    ex = execute_ok(
        kc,
        f"assert rc.ids == list(range({N_ENGINES})), rc.ids\n"
        "print(json.dumps(rc[:].apply_sync(lambda: 6 * 7)))\n",
        timeout=60,
    )
    assert json.loads(ex.stdout) == [42] * N_ENGINES, ex.stdout
    ex = execute_ok(kc, "%px 6 * 7", timeout=60)
    outs = [
        strip_ansi(m["content"]["data"]["text/plain"])
        for m in ex.outputs
        if m["msg_type"] in ("display_data", "execute_result")
    ]
    assert len(outs) == N_ENGINES and all(o.endswith(": 42") for o in outs), outs
    assert execute_ok(kc, "6 * 7").result()["text/plain"] == "42"
    assert not marker.exists(), f"code sent by the fuzz ran late: {marker.read_text()!r}"
