"""Property-based and fuzz tests of the sans-I/O core.

``ConnectionPair`` is a hypothesis state machine driving a client and a server
``trio_ws.protocol._connection.Connection`` against each other: random interleavings of messages
(whole or fragmented with ``send_frame``, pings in between), pings, pongs, closes from either
side and deliveries of what is in flight in random chunk splits. Whatever the order, two
correct peers never fail, states only move forward, every message arrives once and in order,
and closing always ends with both sides CLOSED and each side's close code the other's.

The parser targets of ``tests/fuzz/targets.py`` run here on hypothesis' bytes with a moderate
number of examples; ``HYPOTHESIS_PROFILE=fuzz`` (``nox -s fuzz`` without atheris) runs them
far longer, and ``tests/fuzz/run.py`` runs them under atheris.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections import Counter
from pathlib import Path

import pytest
from helpers import drained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from trio_ws.protocol import (
    CloseReceived,
    Connection,
    ConnectionState,
    Message,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
    Role,
)
from trio_ws.protocol._deflate import PerMessageDeflate
from trio_ws.protocol._errors import LocalProtocolError
from trio_ws.protocol._frames import Opcode

# The fuzz targets live next to the atheris runner; load them without making tests a package.
_spec = importlib.util.spec_from_file_location(
    "trio_ws_fuzz_targets", Path(__file__).resolve().parent / "fuzz" / "targets.py"
)
assert _spec is not None and _spec.loader is not None
targets = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = targets
_spec.loader.exec_module(targets)

settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
FUZZ = os.environ.get("HYPOTHESIS_PROFILE") == "fuzz"


def examples(ci: int, *, fuzz: int = 20_000) -> settings:
    """``ci`` examples normally; many more under the ``fuzz`` profile."""
    return settings(
        max_examples=fuzz if FUZZ else ci,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


CONNECTING = ConnectionState.CONNECTING
OPEN = ConnectionState.OPEN
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED
ORDER = {CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3}

SIDES = st.sampled_from(["client", "server"])
CLOSE_CODES = st.sampled_from([1000, 1001, 1002, 1003, 1005, 1007, 1008, 1011, 3000, 4999])
WINDOW_BITS = st.sampled_from([None, 8, 9, 12, 15])

#: Text and binary messages: short random ones and long repetitive ones (that compress).
MESSAGES = st.one_of(
    st.text(max_size=200),
    st.binary(max_size=200),
    st.builds(
        lambda unit, n: unit * n,
        st.sampled_from(["ab", "é✓ ", "x", "\U0001f600"]),
        st.integers(0, 3000),
    ),
    st.builds(lambda n: bytes(range(256)) * n, st.integers(0, 40)),
)

DEFLATE = st.builds(
    PerMessageDeflate,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=WINDOW_BITS,
    client_max_window_bits=WINDOW_BITS,
    min_size=st.sampled_from([0, 32]),
)


def other(side: str) -> str:
    return "server" if side == "client" else "client"


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """``data`` in pieces of the given sizes (cycled), the last piece taking the rest."""
    pieces = []
    i = 0
    k = 0
    while i < len(data):
        size = sizes[k % len(sizes)] if sizes else len(data)
        pieces.append(data[i : i + size])
        i += size
        k += 1
    return pieces


class ConnectionPair(RuleBasedStateMachine):
    """A client and a server Connection; ``wire[side]`` holds the bytes in flight to it."""

    def __init__(self) -> None:
        super().__init__()
        self.conns: dict[str, Connection] = {}
        self.wire = {"client": bytearray(), "server": bytearray()}
        self.sent: dict[str, list[str | bytes]] = {"client": [], "server": []}
        self.received: dict[str, list[str | bytes]] = {"client": [], "server": []}
        self.pings_sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.pings_received: dict[str, list[bytes]] = {"client": [], "server": []}
        self.pongs_sent: dict[str, list[bytes]] = {"client": [], "server": []}
        self.pongs_received: dict[str, list[bytes]] = {"client": [], "server": []}
        self.closes_received: dict[str, list[tuple[int, str]]] = {"client": [], "server": []}
        self.seen = {"client": CONNECTING, "server": CONNECTING}
        self.aborted = False

    # Setup ----------------------------------------------------------------------------------

    @initialize(
        client_deflate=st.none() | DEFLATE,
        server_deflate=st.none() | DEFLATE,
        request_sizes=st.lists(st.integers(1, 64), max_size=4),
        response_sizes=st.lists(st.integers(1, 64), max_size=4),
    )
    def handshake(
        self,
        client_deflate: PerMessageDeflate | None,
        server_deflate: PerMessageDeflate | None,
        request_sizes: list[int],
        response_sizes: list[int],
    ) -> None:
        client = Connection(Role.CLIENT)
        server = Connection(Role.SERVER)
        self.conns = {"client": client, "server": server}
        request = drained(
            client,
            client.initiate(
                "example.com", "/", extensions=[client_deflate] if client_deflate else []
            ),
        )
        events = []
        for piece in cut(request, request_sizes):
            assert server.state is CONNECTING
            events += server.receive_data(piece)
            if events:
                break
        assert len(events) == 1 and isinstance(events[0], RequestReceived)
        response = drained(
            server, server.accept(extensions=[server_deflate] if server_deflate else [])
        )
        assert server.state is OPEN
        events = []
        for piece in cut(response, response_sizes):
            events += client.receive_data(piece)
        assert len(events) == 1 and isinstance(events[0], ResponseReceived)
        assert client.state is OPEN
        both = client_deflate is not None and server_deflate is not None
        assert [e.name for e in client.extensions] == (["permessage-deflate"] if both else [])
        assert [e.name for e in server.extensions] == (["permessage-deflate"] if both else [])
        self.check_states()

    # Sending --------------------------------------------------------------------------------

    @rule(side=SIDES, message=MESSAGES, compress=st.booleans())
    def send_message(self, side: str, message: str | bytes, compress: bool) -> None:
        conn = self.conns[side]
        if conn.state is OPEN:
            self.wire[other(side)] += drained(conn, conn.send_message(message, compress=compress))
            self.sent[side].append(message)
        else:
            self.misuse(lambda: drained(conn, conn.send_message(message)), conn)

    @rule(
        side=SIDES,
        message=MESSAGES,
        sizes=st.lists(st.integers(0, 700), min_size=1, max_size=6),
        pings=st.lists(st.tuples(st.integers(0, 5), st.binary(max_size=125)), max_size=3),
    )
    def send_fragmented(
        self,
        side: str,
        message: str | bytes,
        sizes: list[int],
        pings: list[tuple[int, bytes]],
    ) -> None:
        """One message in several frames (split anywhere, inside characters too), with pings
        between the fragments (section 5.4 allows control frames there)."""
        conn = self.conns[side]
        opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
        payload = message.encode("utf-8") if isinstance(message, str) else message
        if conn.state is not OPEN:
            self.misuse(lambda: drained(conn, conn.send_frame(opcode, payload)), conn)
            return
        pieces = []
        rest = payload
        for size in sizes:
            pieces.append(rest[:size])
            rest = rest[size:]
        pieces[-1] += rest
        ping_after = dict(pings)
        for i, piece in enumerate(pieces):
            last = i == len(pieces) - 1
            self.wire[other(side)] += drained(
                conn, conn.send_frame(opcode if i == 0 else Opcode.CONTINUATION, piece, fin=last)
            )
            if i in ping_after and not last:
                ping = ping_after[i][:124] + bytes([i])
                self.wire[other(side)] += drained(conn, conn.send_ping(ping))
                self.pings_sent[side].append(ping)
        self.sent[side].append(message)

    @rule(side=SIDES, payload=st.binary(max_size=125))
    def ping(self, side: str, payload: bytes) -> None:
        conn = self.conns[side]
        if conn.state is OPEN:
            self.wire[other(side)] += drained(conn, conn.send_ping(payload))
            self.pings_sent[side].append(payload)
        else:
            self.misuse(lambda: drained(conn, conn.send_ping(payload)), conn)

    @rule(side=SIDES, payload=st.binary(max_size=125))
    def unsolicited_pong(self, side: str, payload: bytes) -> None:
        conn = self.conns[side]
        if conn.state is OPEN:
            self.wire[other(side)] += drained(conn, conn.send_pong(payload))
            self.pongs_sent[side].append(payload)
        else:
            self.misuse(lambda: drained(conn, conn.send_pong(payload)), conn)

    @rule(side=SIDES, code=CLOSE_CODES, reason=st.text(max_size=30), go=st.integers(0, 3))
    def close(self, side: str, code: int, reason: str, go: int) -> None:
        """Start the closing handshake (one time in four: closing ends the interesting part)."""
        conn = self.conns[side]
        if go != 2 and conn.state is OPEN:  # not 0: hypothesis favours bounds
            return
        if len(reason.encode("utf-8")) > 123:
            reason = ""
        if conn.state is OPEN:
            self.wire[other(side)] += drained(conn, conn.send_close(code, reason))
            assert conn.state is CLOSING
        else:
            self.misuse(lambda: drained(conn, conn.send_close(code, reason)), conn)

    @rule(
        side=SIDES,
        # initiate() on an open connection is checked on its own (test_initiate_on_open_...).
        what=st.sampled_from(["control-frame", "long-ping", "long-pong", "accept", "reject"]),
    )
    def misuse_api(self, side: str, what: str) -> None:
        """Requests the protocol forbids: LocalProtocolError, and nothing changes."""
        conn = self.conns[side]
        calls = {
            "control-frame": lambda: drained(conn, conn.send_frame(Opcode.PING, b"")),
            "long-ping": lambda: drained(conn, conn.send_ping(b"x" * 126)),
            "long-pong": lambda: drained(conn, conn.send_pong(b"x" * 126)),
            "accept": lambda: drained(conn, conn.accept()),
            "reject": lambda: drained(conn, conn.reject(400)),
        }
        self.misuse(calls[what], conn)

    def misuse(self, call: object, conn: Connection) -> None:
        state = conn.state
        close_sent = conn.close_sent
        with pytest.raises(LocalProtocolError):
            call()  # type: ignore[operator]
        assert conn.state is state
        assert conn.close_sent == close_sent
        assert drained(conn) == b""

    # Delivering -----------------------------------------------------------------------------

    @precondition(lambda self: self.wire["client"] or self.wire["server"])
    @rule(side=SIDES, data=st.data())
    def deliver(self, side: str, data: st.DataObject) -> None:
        """Feed some of the bytes in flight to ``side``, in random pieces."""
        buffer = self.wire[side]
        if not buffer:
            return
        count = data.draw(st.integers(1, len(buffer)), label="bytes")
        sizes = data.draw(st.lists(st.integers(1, 300), max_size=5), label="pieces")
        chunk = bytes(buffer[:count])
        del buffer[:count]
        for piece in cut(chunk, sizes):
            self.feed(side, piece)

    @rule(side=SIDES, go=st.integers(0, 9))
    def abort(self, side: str, go: int) -> None:
        """The TCP connection ends under ``side`` (EOF without a closing handshake); one time
        in ten, as it ends the exact checks."""
        if go != 7:  # not 0 or 9: hypothesis favours bounds
            return
        conn = self.conns[side]
        was = conn.state
        conn.receive_eof()
        assert conn.state is CLOSED
        if was is not CLOSED:
            self.aborted = True
            if conn.close_received is None:
                assert conn.close_code == 1006 or conn.failure is not None

    def feed(self, side: str, piece: bytes) -> None:
        conn = self.conns[side]
        was_closed = conn.state is CLOSED
        events = conn.receive_data(piece)
        if was_closed:
            assert events == []
        for event in events:
            if isinstance(event, Message):
                self.received[side].append(event.data)
            elif isinstance(event, Ping):
                self.pings_received[side].append(event.payload)
            elif isinstance(event, Pong):
                self.pongs_received[side].append(event.payload)
            elif isinstance(event, CloseReceived):
                self.closes_received[side].append((event.code, event.reason))
            else:
                raise AssertionError(f"unexpected event {event!r}")
        self.wire[other(side)] += drained(conn)
        self.check_states()

    def flush(self) -> None:
        """Deliver everything in flight, both ways, until nothing moves."""
        while self.wire["client"] or self.wire["server"]:
            for side in ("client", "server"):
                data = bytes(self.wire[side])
                self.wire[side].clear()
                if data:
                    self.feed(side, data)

    # Invariants -----------------------------------------------------------------------------

    def check_states(self) -> None:
        for side, conn in self.conns.items():
            assert ORDER[conn.state] >= ORDER[self.seen[side]], (
                f"{side} went from {self.seen[side].name} to {conn.state.name}"
            )
            self.seen[side] = conn.state

    @invariant()
    def states_only_move_forward(self) -> None:
        self.check_states()

    @invariant()
    def correct_peers_never_fail(self) -> None:
        for side, conn in self.conns.items():
            assert conn.failure is None, f"{side} failed: {conn.failure}"
            assert not conn.failure_pending

    @invariant()
    def messages_arrive_in_order(self) -> None:
        for side in self.conns:
            got = self.received[side]
            assert got == self.sent[other(side)][: len(got)]
            pings = self.pings_received[side]
            assert pings == self.pings_sent[other(side)][: len(pings)]

    @invariant()
    def pongs_answer_pings(self) -> None:
        for side in self.conns:
            possible = Counter(self.pings_sent[side]) + Counter(self.pongs_sent[other(side)])
            assert not Counter(self.pongs_received[side]) - possible

    @invariant()
    def at_most_one_close_each(self) -> None:
        for side in self.conns:
            assert len(self.closes_received[side]) <= 1

    def teardown(self) -> None:
        if not self.conns:
            return
        self.flush()
        client, server = self.conns["client"], self.conns["server"]
        if self.aborted:
            return
        for side in self.conns:
            assert self.received[side] == self.sent[other(side)]
            assert self.pings_received[side] == self.pings_sent[other(side)]
        if client.state is OPEN and server.state is OPEN:
            # Nobody closed: a closing handshake still ends the way it should.
            self.wire["server"] += drained(client, client.send_close(1000, "bye"))
            self.flush()
        assert client.state is CLOSED and server.state is CLOSED
        for side in self.conns:
            conn, peer = self.conns[side], self.conns[other(side)]
            assert conn.close_sent is not None and conn.close_received is not None
            code, reason = peer.close_sent  # type: ignore[misc]
            expected = (code, "" if code == 1005 else reason)
            assert conn.close_received == expected
            assert self.closes_received[side] == [expected]
            assert conn.close_code == code
        initiators = [side for side, conn in self.conns.items() if not conn.closed_by_peer]
        assert initiators, "somebody started the closing handshake"
        if len(initiators) == 1:
            # The other one echoed the initiator's code.
            replier = self.conns[other(initiators[0])]
            assert replier.closed_by_peer is True
            assert replier.close_sent[0] == replier.close_received[0]  # type: ignore[index]
        # Once closed, nothing happens any more.
        for conn in self.conns.values():
            conn.receive_eof()
            assert conn.state is CLOSED
            assert conn.receive_data(b"\x88\x00") == []
            assert drained(conn) == b""


TestConnectionPair = ConnectionPair.TestCase
TestConnectionPair.settings = settings(
    max_examples=5000 if FUZZ else 120,
    stateful_step_count=60 if FUZZ else 40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_initiate_on_open_connection_is_misuse(role: Role) -> None:
    """``initiate()`` is for a new client connection: on an open one it must raise
    LocalProtocolError and change nothing (the state machine found it returning a fresh
    request and replacing ``request_headers`` of an open client)."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    client.receive_data(drained(server, server.accept()))
    conn = client if role is Role.CLIENT else server
    assert conn.state is OPEN
    headers = conn.request_headers
    with pytest.raises(LocalProtocolError):
        conn.initiate("example.com", "/other")
    assert conn.request_headers is headers
    assert conn.state is OPEN


def test_interleaved_data_frames_are_misuse() -> None:
    """A data frame that breaks section 5.4's fragmentation rules must be refused on the
    sending side with LocalProtocolError, not sent for the peer to fail with 1002."""
    client, server = Connection(Role.CLIENT), Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    client.receive_data(drained(server, server.accept()))
    # What the wire would carry shows why: the peer fails the connection.
    wire = drained(client, client.send_frame(Opcode.TEXT, b"first half", fin=False))
    misuse: list[str] = []
    for name, call in [
        (
            "send_message inside a fragmented message",
            lambda: drained(client, client.send_message("other")),
        ),
        (
            "new TEXT frame inside a fragmented message",
            lambda: drained(client, client.send_frame(Opcode.TEXT, b"x")),
        ),
    ]:
        try:
            wire += call()
        except LocalProtocolError:
            continue
        misuse.append(name)
    wire += drained(client, client.send_frame(Opcode.CONTINUATION, b" second half"))
    try:
        wire += drained(client, client.send_frame(Opcode.CONTINUATION, b"orphan"))
    except LocalProtocolError:
        pass
    else:
        misuse.append("CONTINUATION frame without a message in progress")
    server.receive_data(wire)
    assert not misuse, (
        f"accepted without LocalProtocolError: {misuse}; the peer then failed with "
        f"{server.failure.code if server.failure else None}"
    )
    assert server.failure is None


# Parser fuzz targets --------------------------------------------------------------------------


@examples(400)
@given(st.binary(max_size=2000))
def test_fuzz_frame_parser(data: bytes) -> None:
    targets.frame_parser(data)


@examples(200)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3]),
            st.booleans(),
            st.sampled_from([0, 0x40, 0x20, 0x10]),
            st.binary(max_size=300),
        ),
        max_size=8,
    ),
    st.integers(0, 255),
)
def test_fuzz_frame_parser_well_formed_frames(
    frames: list[tuple[int, bool, int, bytes]], config: int
) -> None:
    """Valid-looking headers reach the deeper checks that random bytes rarely get past."""
    from trio_ws.protocol._frames import encode_frame

    mask = b"\x01\x02\x03\x04" if config & 1 else None
    body = b"".join(
        encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)
        for opcode, fin, rsv, payload in frames
    )
    targets.frame_parser(bytes([config, 100, config >> 2]) + body)


@examples(300)
@given(st.binary(max_size=1000))
def test_fuzz_server_handshake(data: bytes) -> None:
    targets.server_handshake(data)


@examples(300)
@given(st.integers(0, 255).map(lambda m: m | 1), st.binary(min_size=0, max_size=60))
def test_fuzz_server_handshake_mutated(mode: int, instructions: bytes) -> None:
    """Byte-level mutations of a valid request (mode bit 0 set)."""
    targets.server_handshake(bytes([mode]) + instructions)


@examples(200)
@given(st.integers(0, 255).map(lambda m: m | 1), st.binary(min_size=0, max_size=60))
def test_fuzz_client_handshake_mutated(mode: int, instructions: bytes) -> None:
    targets.client_handshake(bytes([mode]) + instructions)


@examples(200)
@given(st.binary(max_size=1000))
def test_fuzz_client_handshake(data: bytes) -> None:
    targets.client_handshake(data)


@examples(300)
@given(st.binary(max_size=2000))
def test_fuzz_server_connection(data: bytes) -> None:
    targets.server_connection(data)


@examples(300)
@given(st.integers(0, 255).map(lambda m: m | 2), st.binary(max_size=2000))
def test_fuzz_server_connection_frames(mode: int, data: bytes) -> None:
    """Well-formed masked frames with random opcodes, flags and payloads (mode bit 1 set)."""
    targets.server_connection(bytes([mode]) + data)


@examples(200)
@given(st.binary(max_size=2000))
def test_fuzz_client_connection(data: bytes) -> None:
    targets.client_connection(data)


@pytest.mark.parametrize(
    "data",
    [
        # Known inputs the targets must survive: seeds for atheris and regressions.
        b"\x01\x00\x00" + b"\x81\x85" + b"\x00" * 4 + b"hello",
        b"\x03\x00\x00" + b"\x88\x82" + b"\x00" * 4 + b"\x03\xe8",
        b"\x00\x00\x00" + b"\xff" * 20,
    ],
)
def test_fuzz_frame_parser_seeds(data: bytes) -> None:
    targets.frame_parser(data)


def test_fuzz_targets_accept_valid_inputs() -> None:
    """The templates are valid: mutations start from something the parsers accept."""
    targets.server_handshake(b"\x00" + targets.VALID_REQUEST)
    targets.server_handshake(b"\x01")  # the template, unmutated
    hs = targets.ServerHandshake()
    request = hs.receive_data(targets.VALID_REQUEST)
    assert request is not None and request.subprotocols == ("chat", "superchat")
    targets.client_handshake(b"\x01")
    for target in targets.TARGETS.values():
        target(b"")
