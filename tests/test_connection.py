"""Unit tests of the sans-I/O connection state machine, trio_ws.protocol._connection.

Every protocol violation is checked twice: ``conn.failure.code`` and the close frame the
connection queued in ``data_to_send()``, parsed back by the peer ``Connection``.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable

import pytest
from helpers import drained
from hypothesis import given, settings
from hypothesis import strategies as st

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
    encode_close_reason,
)
from trio_ws.protocol._errors import LocalProtocolError
from trio_ws.protocol._frames import (
    RSV1,
    RSV2,
    RSV3,
    FrameHeader,
    FrameParser,
    Opcode,
    encode_frame,
)

HYPOTHESIS = settings(max_examples=200, deadline=None)

CONNECTING = ConnectionState.CONNECTING
OPEN = ConnectionState.OPEN
CLOSING = ConnectionState.CLOSING
CLOSED = ConnectionState.CLOSED

MASK = b"\x9a\x3c\x55\xe1"
MiB = 1024 * 1024

INVALID_CLOSE_CODES = [0, 1, 999, 1004, 1005, 1006, 1015, 1016, 2000, 2999, 5000, 65535]
VALID_CLOSE_CODES = [1000, 1001, 1002, 1003, *range(1007, 1015), 3000, 3999, 4000, 4999]

# UTF-8 sequences that no continuation can make valid (each is invalid as soon as it is seen).
INVALID_UTF8 = [
    b"\xff",  # never valid
    b"\xc0",  # overlong lead byte
    b"\xc3\x28",  # bad continuation byte
    b"\xe0\x80",  # overlong 3-byte form
    b"\xf4\x90",  # above U+10FFFF
    b"\xf5",  # lead byte above U+10FFFF
    b"\x80",  # lone continuation byte
    b"\xed\xa0",  # UTF-16 surrogate (U+D800..)
]


# Helpers ------------------------------------------------------------------------------------


def open_pair(
    client_kwargs: dict[str, int | None] | None = None,
    server_kwargs: dict[str, int | None] | None = None,
) -> tuple[Connection, Connection]:
    """A client and a server Connection that completed the opening handshake together."""
    client = Connection(Role.CLIENT, **(client_kwargs or {}))
    server = Connection(Role.SERVER, **(server_kwargs or {}))
    [event] = server.receive_data(drained(client, client.initiate("example.com", "/chat")))
    assert isinstance(event, RequestReceived)
    [event] = client.receive_data(drained(server, server.accept()))
    assert isinstance(event, ResponseReceived)
    assert client.state is OPEN
    assert server.state is OPEN
    assert drained(client) == b""
    assert drained(server) == b""
    return client, server


def cframe(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a client sends it (masked)."""
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=MASK)


def sframe(opcode: int, payload: bytes = b"", *, fin: bool = True, rsv: int = 0) -> bytes:
    """A frame as a server sends it (not masked)."""
    return encode_frame(opcode, payload, fin=fin, rsv=rsv)


def frames_of(data: bytes, *, masked: bool) -> list[tuple[FrameHeader, bytes]]:
    parser = FrameParser(expect_masked=masked, max_frame_size=None)
    parser.allowed_rsv = RSV1 | RSV2 | RSV3  # so that the tests can check them
    parser.feed(data)
    out: list[tuple[FrameHeader, bytes]] = []
    pieces: list[bytes] = []
    while (item := parser.next()) is not None:
        header, piece, done = item
        pieces.append(piece)
        if done:
            out.append((header, b"".join(pieces)))
            pieces = []
    assert parser.buffered == 0
    assert pieces == []
    return out


def close_payload(code: int, reason: bytes = b"") -> bytes:
    return struct.pack("!H", code) + reason


def assert_failed(conn: Connection, peer: Connection, code: int) -> None:
    """``conn`` failed with ``code``: check the failure, the state and the queued close frame."""
    assert conn.failure is not None
    assert conn.failure.code == code
    assert conn.state is CLOSED
    assert conn.close_code == code
    assert conn.closed_by_peer is False
    data = drained(conn)
    # The close frame, parsed by a bare frame parser: masked exactly when sent by a client.
    [(header, payload)] = frames_of(data, masked=conn.role is Role.CLIENT)
    assert header.opcode is Opcode.CLOSE
    assert header.fin
    assert header.rsv == 0
    assert len(payload) <= 125
    assert struct.unpack("!H", payload[:2])[0] == code
    assert payload[2:] == encode_close_reason(conn.failure.reason)
    # ... and by the peer connection, which sees a regular closing handshake.
    events = peer.receive_data(data)
    assert events == [CloseReceived(code, payload[2:].decode("utf-8"))]
    assert peer.close_received == (code, payload[2:].decode("utf-8"))
    # A failed connection ignores what comes next and sends nothing more.
    assert conn.receive_data(sframe(Opcode.PING) + cframe(Opcode.PING)) == []
    assert drained(conn) == b""


def apply_pending_failure(conn: Connection) -> None:
    """Events came before the violation: the failure waits for the next ``receive_data()``."""
    assert conn.failure is None
    assert conn.failure_pending
    assert conn.state is OPEN
    assert conn.receive_data(b"") == []


def server_fails(data: bytes, code: int, **server_kwargs: int | None) -> Connection:
    client, server = open_pair(server_kwargs=server_kwargs)
    assert server.receive_data(data) == []
    assert_failed(server, client, code)
    return server


def client_fails(data: bytes, code: int, **client_kwargs: int | None) -> Connection:
    client, server = open_pair(client_kwargs=client_kwargs)
    assert client.receive_data(data) == []
    assert_failed(client, server, code)
    return client


# Messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("message", ["", "hello", "καλημέρα 𝄞", b"", b"\x00\xff" * 100])
def test_client_to_server_message(message: str | bytes) -> None:
    client, server = open_pair()
    data = drained(client, client.send_message(message))
    [(header, _payload)] = frames_of(data, masked=True)
    assert header.mask is not None
    assert header.fin
    assert header.rsv == 0
    assert header.opcode is (Opcode.TEXT if isinstance(message, str) else Opcode.BINARY)
    assert server.receive_data(data) == [Message(message)]
    assert drained(server) == b""


@pytest.mark.parametrize("message", ["", "hello", "καλημέρα 𝄞", b"", b"\x00\xff" * 100])
def test_server_to_client_message(message: str | bytes) -> None:
    client, server = open_pair()
    data = drained(server, server.send_message(message))
    [(header, _payload)] = frames_of(data, masked=False)
    assert header.mask is None
    assert header.opcode is (Opcode.TEXT if isinstance(message, str) else Opcode.BINARY)
    assert client.receive_data(data) == [Message(message)]


def test_client_frames_use_fresh_masks() -> None:
    client, _ = open_pair()
    masks = {
        frames_of(drained(client, client.send_message(b"x")), masked=True)[0][0].mask
        for _ in range(20)
    }
    assert len(masks) > 15


@pytest.mark.parametrize("data", [bytearray(b"abc"), memoryview(b"abc")])
def test_send_message_bytes_like_is_binary(data: bytearray | memoryview) -> None:
    client, server = open_pair()
    assert server.receive_data(drained(client, client.send_message(data))) == [Message(b"abc")]


def test_large_message_at_the_limit() -> None:
    client, server = open_pair(server_kwargs={"max_message_size": 200_000})
    payload = bytes(range(256)) * (200_000 // 256) + b"x" * (200_000 % 256)
    data = drained(client, client.send_message(payload))
    events = []
    for i in range(0, len(data), 9999):
        events += server.receive_data(data[i : i + 9999])
    assert events == [Message(payload)]


def test_fragmented_message_with_send_frame() -> None:
    client, server = open_pair()
    data = (
        drained(client, client.send_frame(Opcode.TEXT, "Hé".encode(), fin=False))
        + drained(client, client.send_frame(Opcode.CONTINUATION, b"", fin=False))
        + drained(client, client.send_frame(Opcode.CONTINUATION, b"llo", fin=True))
        + drained(client, client.send_frame(Opcode.BINARY, b"\x01", fin=False))
        + drained(client, client.send_frame(Opcode.CONTINUATION, b"\x02", fin=True))
    )
    assert [h.fin for h, _ in frames_of(data, masked=True)] == [False, False, True, False, True]
    assert server.receive_data(data) == [Message("Héllo"), Message(b"\x01\x02")]


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_send_frame_refuses_control_opcodes(opcode: Opcode) -> None:
    client, _ = open_pair()
    with pytest.raises(LocalProtocolError):
        client.send_frame(opcode, b"")


def test_several_messages_in_one_packet() -> None:
    client, server = open_pair()
    data = b"".join(drained(client, client.send_message(m)) for m in ["a", b"b", "c"])
    assert server.receive_data(data) == [Message("a"), Message(b"b"), Message("c")]


@HYPOTHESIS
@given(
    messages=st.lists(
        st.tuples(st.text(max_size=50) | st.binary(max_size=50), st.integers(1, 4)), max_size=5
    ),
    chunk=st.integers(1, 50),
)
def test_messages_arrive_intact_in_any_chunking(
    messages: list[tuple[str | bytes, int]], chunk: int
) -> None:
    client, server = open_pair()
    data = b""
    for message, nfrags in messages:
        payload = message.encode() if isinstance(message, str) else message
        opcode = Opcode.TEXT if isinstance(message, str) else Opcode.BINARY
        size = -(-len(payload) // nfrags) or 1
        parts = [payload[i : i + size] for i in range(0, len(payload), size)] or [b""]
        for i, part in enumerate(parts):
            data += drained(
                client,
                client.send_frame(
                    opcode if i == 0 else Opcode.CONTINUATION, part, fin=i == len(parts) - 1
                ),
            )
        data += drained(client, client.send_ping(b"p"))
    events = []
    for i in range(0, len(data), chunk):
        events += server.receive_data(data[i : i + chunk])
    assert [e for e in events if isinstance(e, Message)] == [Message(m) for m, _ in messages]
    assert events.count(Ping(b"p")) == len(messages)
    assert server.failure is None
    assert server.state is OPEN


# Section 5 rules: 1002 ----------------------------------------------------------------------


def test_unmasked_client_frame_fails_server() -> None:
    server_fails(sframe(Opcode.TEXT, b"hi"), 1002)


def test_masked_server_frame_fails_client() -> None:
    client_fails(cframe(Opcode.TEXT, b"hi"), 1002)


@pytest.mark.parametrize("opcode", [*range(0x3, 0x8), *range(0xB, 0x10)])
def test_reserved_opcode(opcode: int) -> None:
    server_fails(cframe(opcode, b"x"), 1002)
    client_fails(sframe(opcode, b"x"), 1002)


@pytest.mark.parametrize("rsv", [RSV1, RSV2, RSV3, RSV1 | RSV2 | RSV3])
@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY, Opcode.PING, Opcode.CLOSE])
def test_rsv_bits_without_extension(rsv: int, opcode: Opcode) -> None:
    payload = close_payload(1000) if opcode is Opcode.CLOSE else b"x"
    server_fails(cframe(opcode, payload, rsv=rsv), 1002)
    client_fails(sframe(opcode, payload, rsv=rsv), 1002)


def test_rsv_bit_on_continuation_frame() -> None:
    server_fails(
        cframe(Opcode.TEXT, b"a", fin=False) + cframe(Opcode.CONTINUATION, b"b", rsv=RSV1), 1002
    )


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_fragmented_control_frame(opcode: Opcode) -> None:
    server_fails(cframe(opcode, b"", fin=False), 1002)
    client_fails(sframe(opcode, b"", fin=False), 1002)


@pytest.mark.parametrize("opcode", [Opcode.CLOSE, Opcode.PING, Opcode.PONG])
def test_control_frame_over_125_bytes(opcode: Opcode) -> None:
    payload = close_payload(1000, b"x" * 124)
    assert len(payload) == 126
    server_fails(cframe(opcode, payload), 1002)
    client_fails(sframe(opcode, payload), 1002)


def test_control_frame_of_125_bytes_is_fine() -> None:
    _client, server = open_pair()
    assert server.receive_data(cframe(Opcode.PING, bytes(125))) == [Ping(bytes(125))]
    assert frames_of(drained(server), masked=False)[0][1] == bytes(125)


@pytest.mark.parametrize("fin", [True, False])
def test_continuation_without_start(fin: bool) -> None:
    server_fails(cframe(Opcode.CONTINUATION, b"x", fin=fin), 1002)
    client_fails(sframe(Opcode.CONTINUATION, b"x", fin=fin), 1002)


def test_continuation_after_a_complete_message() -> None:
    client, server = open_pair()
    events = server.receive_data(cframe(Opcode.TEXT, b"done") + cframe(Opcode.CONTINUATION, b"x"))
    assert events == [Message("done")]
    apply_pending_failure(server)
    assert_failed(server, client, 1002)


@pytest.mark.parametrize("first", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second", [Opcode.TEXT, Opcode.BINARY])
@pytest.mark.parametrize("second_fin", [True, False])
def test_new_data_frame_inside_fragmented_message(
    first: Opcode, second: Opcode, second_fin: bool
) -> None:
    data = cframe(first, b"a", fin=False) + cframe(second, b"b", fin=second_fin)
    server_fails(data, 1002)
    data = sframe(first, b"a", fin=False) + sframe(second, b"b", fin=second_fin)
    client_fails(data, 1002)


def test_close_frame_with_one_byte_payload() -> None:
    server_fails(cframe(Opcode.CLOSE, b"\x03"), 1002)
    client_fails(sframe(Opcode.CLOSE, b"\x03"), 1002)


@pytest.mark.parametrize("code", INVALID_CLOSE_CODES)
def test_invalid_close_code(code: int) -> None:
    server_fails(cframe(Opcode.CLOSE, close_payload(code)), 1002)
    client_fails(sframe(Opcode.CLOSE, close_payload(code, b"reason")), 1002)


@pytest.mark.parametrize("code", VALID_CLOSE_CODES)
def test_valid_close_code_accepted_and_echoed(code: int) -> None:
    client, server = open_pair()
    events = server.receive_data(cframe(Opcode.CLOSE, close_payload(code, "ok ✓".encode())))
    assert events == [CloseReceived(code, "ok ✓")]
    assert server.failure is None
    [(header, payload)] = frames_of(drained(server), masked=False)
    assert header.opcode is Opcode.CLOSE
    assert struct.unpack("!H", payload[:2])[0] == code
    # The client starts and finishes the same handshake with the same code.
    client, server = open_pair()
    assert server.receive_data(drained(client, client.send_close(code))) == [
        CloseReceived(code, "")
    ]
    assert client.receive_data(drained(server)) == [CloseReceived(code, "")]
    assert client.state is CLOSED
    assert client.close_code == code


# 1007: invalid UTF-8 ------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [*INVALID_UTF8, b"\xe2\x82", b"abc\xf0\x9f\x98"])
def test_invalid_utf8_in_single_text_frame(bad: bytes) -> None:
    server_fails(cframe(Opcode.TEXT, b"ok " + bad), 1007)
    client_fails(sframe(Opcode.TEXT, b"ok " + bad), 1007)


def test_invalid_utf8_is_fine_in_binary_frame() -> None:
    _client, server = open_pair()
    assert server.receive_data(cframe(Opcode.BINARY, b"\xff\xc0")) == [Message(b"\xff\xc0")]


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_in_fragment_detected_at_that_fragment(bad: bytes) -> None:
    client, server = open_pair()
    assert server.receive_data(cframe(Opcode.TEXT, "κόσμε".encode(), fin=False)) == []
    assert server.failure is None
    # The fragment carrying the bad bytes is not the last one: fail without waiting for it.
    events = server.receive_data(cframe(Opcode.CONTINUATION, b"ab" + bad, fin=False))
    assert events == []
    assert_failed(server, client, 1007)


def test_truncated_utf8_at_end_of_fragmented_message() -> None:
    client, server = open_pair()
    data = cframe(Opcode.TEXT, b"ab\xe2", fin=False) + cframe(Opcode.CONTINUATION, b"\x82")
    assert server.receive_data(data) == []
    assert_failed(server, client, 1007)


@pytest.mark.parametrize("bad", INVALID_UTF8)
def test_invalid_utf8_detected_mid_frame(bad: bytes) -> None:
    client, server = open_pair()
    payload = b"valid text " + bad + b"x" * 1000
    frame = cframe(Opcode.TEXT, payload)
    header_size = 2 + 2 + 4
    # Only the header and the payload up to and including the bad bytes have arrived.
    events = server.receive_data(frame[: header_size + len(b"valid text ") + len(bad)])
    assert events == []
    assert_failed(server, client, 1007)


def test_invalid_utf8_detected_mid_frame_client_side() -> None:
    client, server = open_pair()
    frame = sframe(Opcode.TEXT, b"\xce\xba\xff" + bytes(500))
    assert client.receive_data(frame[:7]) == []
    assert_failed(client, server, 1007)


def test_invalid_utf8_in_close_reason() -> None:
    server_fails(cframe(Opcode.CLOSE, close_payload(1000, b"bye \xff")), 1007)
    client_fails(sframe(Opcode.CLOSE, close_payload(1000, b"\xed\xa0\x80")), 1007)


TEXT = "aé€𝄞z"
TEXT_BYTES = TEXT.encode()


def test_utf8_split_across_two_fragments_at_every_byte() -> None:
    for i in range(len(TEXT_BYTES) + 1):
        _client, server = open_pair()
        data = cframe(Opcode.TEXT, TEXT_BYTES[:i], fin=False) + cframe(
            Opcode.CONTINUATION, TEXT_BYTES[i:]
        )
        assert server.receive_data(data) == [Message(TEXT)], i
        assert server.failure is None


def test_utf8_split_across_three_fragments_fed_one_by_one() -> None:
    n = len(TEXT_BYTES)
    for i in range(n + 1):
        for j in range(i, n + 1):
            _client, server = open_pair()
            parts = [TEXT_BYTES[:i], TEXT_BYTES[i:j], TEXT_BYTES[j:]]
            assert server.receive_data(cframe(Opcode.TEXT, parts[0], fin=False)) == []
            assert server.receive_data(cframe(Opcode.CONTINUATION, parts[1], fin=False)) == []
            assert server.receive_data(cframe(Opcode.CONTINUATION, parts[2])) == [Message(TEXT)]
            assert server.failure is None


def test_utf8_single_frame_fed_in_pieces_at_every_byte() -> None:
    frame = cframe(Opcode.TEXT, TEXT_BYTES)
    for i in range(len(frame) + 1):
        _client, server = open_pair()
        events = server.receive_data(frame[:i]) + server.receive_data(frame[i:])
        assert events == [Message(TEXT)], i
        assert server.failure is None


# 1009: size limits --------------------------------------------------------------------------


def big_header(opcode: Opcode, length: int, *, masked: bool = True) -> bytes:
    header = struct.pack("!BBQ", 0x80 | opcode, (0x80 if masked else 0) | 127, length)
    return header + MASK if masked else header


@pytest.mark.parametrize("opcode", [Opcode.TEXT, Opcode.BINARY])
def test_message_over_limit_refused_from_header_alone(opcode: Opcode) -> None:
    # Only the 14 bytes of header of a 10 MiB frame: no payload is needed to refuse it.
    server_fails(big_header(opcode, 10 * MiB), 1009, max_message_size=MiB)


def test_message_over_limit_refused_from_header_alone_client_side() -> None:
    client_fails(big_header(Opcode.BINARY, 10 * MiB, masked=False), 1009, max_message_size=MiB)


def test_message_at_the_limit_accepted() -> None:
    _client, server = open_pair(server_kwargs={"max_message_size": 1000})
    assert server.receive_data(cframe(Opcode.BINARY, bytes(1000))) == [Message(bytes(1000))]
    assert server.receive_data(cframe(Opcode.TEXT, b"a" * 1000)) == [Message("a" * 1000)]
    server_fails(cframe(Opcode.BINARY, bytes(1001)), 1009, max_message_size=1000)


def test_fragmented_message_over_limit() -> None:
    client, server = open_pair(server_kwargs={"max_message_size": 1000})
    assert server.receive_data(cframe(Opcode.BINARY, bytes(600), fin=False)) == []
    assert server.receive_data(cframe(Opcode.CONTINUATION, bytes(300), fin=False)) == []
    # 900 bytes so far: the header of a 101-byte continuation is enough to refuse it.
    events = server.receive_data(cframe(Opcode.CONTINUATION, bytes(101))[:6])
    assert events == []
    assert_failed(server, client, 1009)


def test_fragmented_message_exactly_at_limit_then_limit_resets() -> None:
    _client, server = open_pair(server_kwargs={"max_message_size": 1000})
    data = (
        cframe(Opcode.TEXT, b"a" * 500, fin=False)
        + cframe(Opcode.PING, b"ping")  # control frames do not count
        + cframe(Opcode.CONTINUATION, b"b" * 500)
        + cframe(Opcode.BINARY, bytes(999), fin=False)
        + cframe(Opcode.CONTINUATION, bytes(1))
    )
    events = server.receive_data(data)
    assert events == [Ping(b"ping"), Message("a" * 500 + "b" * 500), Message(bytes(1000))]
    assert server.failure is None


def test_fragmented_message_over_limit_with_empty_fragments() -> None:
    client, server = open_pair(server_kwargs={"max_message_size": 10})
    data = (
        cframe(Opcode.BINARY, bytes(10), fin=False)
        + cframe(Opcode.CONTINUATION, b"", fin=False)
        + cframe(Opcode.CONTINUATION, b"x")
    )
    assert server.receive_data(data) == []
    assert_failed(server, client, 1009)


def test_control_frames_are_not_subject_to_message_limit() -> None:
    _client, server = open_pair(server_kwargs={"max_message_size": 10, "max_frame_size": 10})
    assert server.receive_data(cframe(Opcode.PING, bytes(100))) == [Ping(bytes(100))]
    assert server.receive_data(cframe(Opcode.PONG, bytes(100))) == [Pong(bytes(100))]


def test_max_frame_size() -> None:
    kwargs: dict[str, int | None] = {"max_message_size": None, "max_frame_size": 100}
    _client, server = open_pair(server_kwargs=kwargs)
    # Each frame under the frame limit: a message larger than it is fine.
    data = cframe(Opcode.BINARY, bytes(100), fin=False) + cframe(Opcode.CONTINUATION, bytes(100))
    assert server.receive_data(data) == [Message(bytes(200))]
    server_fails(cframe(Opcode.BINARY, bytes(101)), 1009, **kwargs)
    server_fails(
        cframe(Opcode.BINARY, b"", fin=False) + cframe(Opcode.CONTINUATION, bytes(101)),
        1009,
        **kwargs,
    )


def test_max_frame_size_and_max_message_size_together() -> None:
    kwargs: dict[str, int | None] = {"max_message_size": 150, "max_frame_size": 100}
    _client, server = open_pair(server_kwargs=kwargs)
    data = cframe(Opcode.BINARY, bytes(100), fin=False) + cframe(Opcode.CONTINUATION, bytes(50))
    assert server.receive_data(data) == [Message(bytes(150))]
    server_fails(
        cframe(Opcode.BINARY, bytes(100), fin=False) + cframe(Opcode.CONTINUATION, bytes(51)),
        1009,
        **kwargs,
    )


def test_no_limits() -> None:
    kwargs: dict[str, int | None] = {"max_message_size": None, "max_frame_size": None}
    _client, server = open_pair(server_kwargs=kwargs)
    assert server.receive_data(big_header(Opcode.BINARY, 10 * MiB)) == []
    assert server.failure is None
    assert server.state is OPEN


# Closing handshake --------------------------------------------------------------------------


def test_peer_closes_first() -> None:
    _client, server = open_pair()
    events = server.receive_data(cframe(Opcode.CLOSE, close_payload(1001, b"going away")))
    assert events == [CloseReceived(1001, "going away")]
    assert server.state is CLOSED
    assert server.closed_by_peer is True
    assert server.close_received == (1001, "going away")
    assert server.close_code == 1001
    assert server.failure is None
    echo = drained(server)
    [(header, payload)] = frames_of(echo, masked=False)
    assert header.opcode is Opcode.CLOSE
    assert payload[:2] == close_payload(1001)
    assert drained(server) == b""
    # Nothing more is processed or sent.
    assert server.receive_data(cframe(Opcode.TEXT, b"late")) == []
    assert drained(server) == b""


def test_client_peer_closes_first() -> None:
    client, server = open_pair()
    assert client.receive_data(drained(server, server.send_close(1000, "bye"))) == [
        CloseReceived(1000, "bye")
    ]
    assert client.state is CLOSED
    assert client.closed_by_peer is True
    echo = drained(client)
    [(_header, payload)] = frames_of(echo, masked=True)  # the client's echo is masked
    assert payload[:2] == close_payload(1000)
    assert server.receive_data(echo) == [CloseReceived(1000, "")]
    assert server.state is CLOSED
    assert server.closed_by_peer is False


def test_we_close_first() -> None:
    _client, server = open_pair()
    data = drained(server, server.send_close(1000, "done"))
    assert server.state is CLOSING
    assert server.close_sent == (1000, "done")
    assert server.closed_by_peer is False
    [(header, payload)] = frames_of(data, masked=False)
    assert (header.opcode, payload) == (Opcode.CLOSE, close_payload(1000, b"done"))
    # Data still delivered while CLOSING (it may have been sent before our close arrived).
    data_in = cframe(Opcode.TEXT, b"still", fin=False) + cframe(Opcode.CONTINUATION, b" here")
    assert server.receive_data(data_in) == [Message("still here")]
    assert server.receive_data(cframe(Opcode.PONG, b"p")) == [Pong(b"p")]
    assert server.state is CLOSING
    # The peer's close completes the handshake; no second close frame is sent.
    events = server.receive_data(cframe(Opcode.CLOSE, close_payload(1000)))
    assert events == [CloseReceived(1000, "")]
    assert server.state is CLOSED
    assert server.closed_by_peer is False
    assert server.close_code == 1000
    assert drained(server) == b""


def test_full_closing_handshake_between_two_connections() -> None:
    client, server = open_pair()
    events = server.receive_data(drained(client, client.send_close(4000, "app")))
    assert events == [CloseReceived(4000, "app")]
    assert client.state is CLOSING
    assert client.receive_data(drained(server)) == [CloseReceived(4000, "")]
    assert client.state is CLOSED
    assert server.state is CLOSED
    assert (client.closed_by_peer, server.closed_by_peer) == (False, True)
    assert drained(client) == b""


def test_empty_close_payload() -> None:
    _client, server = open_pair()
    assert server.receive_data(cframe(Opcode.CLOSE)) == [CloseReceived(1005, "")]
    assert server.close_code == 1005
    [(header, payload)] = frames_of(drained(server), masked=False)
    assert (header.opcode, payload) == (Opcode.CLOSE, b"")


def test_send_close_1005_sends_empty_payload() -> None:
    client, server = open_pair()
    data = drained(client, client.send_close(1005))
    [(header, payload)] = frames_of(data, masked=True)
    assert (header.opcode, payload) == (Opcode.CLOSE, b"")
    assert server.receive_data(data) == [CloseReceived(1005, "")]
    assert frames_of(drained(server), masked=False)[0][1] == b""


@pytest.mark.parametrize("code", [0, 999, 1004, 1006, 1015, 2999, 5000])
def test_send_close_refuses_invalid_codes(code: int) -> None:
    client, _ = open_pair()
    with pytest.raises(ValueError):
        client.send_close(code)
    assert client.state is OPEN


@pytest.mark.parametrize(
    ("reason", "sent"),
    [
        ("", ""),
        ("é" * 61 + "x", "é" * 61 + "x"),  # 123 bytes: the maximum, sent whole
        ("x" * 124, "x" * 123),
        ("é" * 62, "é" * 61),  # 124 bytes: cut at 122, not inside the 62nd character
        ("x" + "é" * 62, "x" + "é" * 61),  # cut at 123 exactly, between two characters
        ("xx" + "\u20ac" * 41, "xx" + "\u20ac" * 40),  # 3-byte characters: 122 bytes kept
        ("\U0001f600" * 31, "\U0001f600" * 30),  # 4-byte characters: 120 bytes kept
        ("bad \udc80 surrogate", "bad ? surrogate"),  # not encodable in UTF-8
    ],
)
def test_send_close_cuts_long_reason_between_characters(reason: str, sent: str) -> None:
    # Section 5.5: at most 123 bytes of reason; 5.5.1: UTF-8, so never a split character
    # (the peer would fail the connection with 1007).
    assert encode_close_reason(reason) == sent.encode("utf-8")
    client, server = open_pair()
    data = drained(client, client.send_close(1000, reason))
    assert client.state is CLOSING
    assert client.close_sent == (1000, sent)
    [(header, payload)] = frames_of(data, masked=True)
    assert header.opcode is Opcode.CLOSE
    assert len(payload) <= 125
    assert server.receive_data(data) == [CloseReceived(1000, sent)]
    assert server.failure is None


@pytest.mark.parametrize(
    "send",
    [
        lambda c: drained(c, c.send_message("x")),
        lambda c: drained(c, c.send_message(b"x")),
        lambda c: drained(c, c.send_frame(Opcode.TEXT, b"x")),
        lambda c: drained(c, c.send_ping()),
        lambda c: drained(c, c.send_pong()),
        lambda c: drained(c, c.send_close()),
    ],
)
def test_sending_after_close_raises(send: Callable[[Connection], bytes]) -> None:
    # After we sent a close (CLOSING) ...
    client, server = open_pair()
    client.send_close()
    with pytest.raises(LocalProtocolError):
        send(client)
    # ... after the peer's close (CLOSED) ...
    client, server = open_pair()
    client.receive_data(drained(server, server.send_close()))
    with pytest.raises(LocalProtocolError):
        send(client)
    # ... and after a failure.
    client, server = open_pair()
    client.receive_data(cframe(Opcode.TEXT, b"masked"))
    assert client.failure is not None
    with pytest.raises(LocalProtocolError):
        send(client)


@pytest.mark.parametrize("payload", [b"", b"ping!", bytes(range(125))])
def test_ping_answered_with_pong(payload: bytes) -> None:
    client, server = open_pair()
    assert server.receive_data(drained(client, client.send_ping(payload))) == [Ping(payload)]
    pong = drained(server)
    [(header, body)] = frames_of(pong, masked=False)
    assert (header.opcode, body) == (Opcode.PONG, payload)
    assert client.receive_data(pong) == [Pong(payload)]
    # The client answers with a masked pong.
    assert client.receive_data(drained(server, server.send_ping(payload))) == [Ping(payload)]
    [(header, body)] = frames_of(drained(client), masked=True)
    assert (header.opcode, body) == (Opcode.PONG, payload)


def test_several_pings_answered_in_order() -> None:
    client, server = open_pair()
    data = (
        drained(client, client.send_ping(b"1"))
        + drained(client, client.send_ping(b"2"))
        + drained(client, client.send_ping(b"3"))
    )
    assert server.receive_data(data) == [Ping(b"1"), Ping(b"2"), Ping(b"3")]
    pongs = frames_of(drained(server), masked=False)
    assert [(h.opcode, p) for h, p in pongs] == [(Opcode.PONG, p) for p in (b"1", b"2", b"3")]


def test_no_pong_after_we_sent_close() -> None:
    _client, server = open_pair()
    assert drained(server, server.send_close())
    assert server.receive_data(cframe(Opcode.PING, b"late")) == [Ping(b"late")]
    assert drained(server) == b""


def test_unsolicited_pong_is_reported_and_not_answered() -> None:
    _client, server = open_pair()
    assert server.receive_data(cframe(Opcode.PONG, b"hb")) == [Pong(b"hb")]
    assert drained(server) == b""


def test_send_ping_and_pong_refuse_long_payloads() -> None:
    client, _ = open_pair()
    with pytest.raises(LocalProtocolError):
        client.send_ping(bytes(126))
    with pytest.raises(LocalProtocolError):
        client.send_pong(bytes(126))
    assert client.state is OPEN


@pytest.mark.parametrize("state", ["open", "closing", "mid-message"])
def test_receive_eof(state: str) -> None:
    _client, server = open_pair()
    if state == "closing":
        drained(server, server.send_close())
    elif state == "mid-message":
        server.receive_data(cframe(Opcode.TEXT, b"abc", fin=False))
    server.receive_eof()
    assert server.state is CLOSED
    assert server.close_code == 1006
    assert server.close_received is None
    assert drained(server) == b""
    assert server.receive_data(cframe(Opcode.TEXT, b"x")) == []


def test_receive_eof_after_close_keeps_the_code() -> None:
    _client, server = open_pair()
    server.receive_data(cframe(Opcode.CLOSE, close_payload(1000)))
    server.receive_eof()
    assert server.state is CLOSED
    assert server.close_code == 1000


def test_receive_eof_during_handshake() -> None:
    server = Connection(Role.SERVER)
    server.receive_eof()
    assert server.state is CLOSED
    assert server.close_code == 1006


# Control frames inside fragmented messages --------------------------------------------------


def test_control_frames_interleaved_in_fragmented_message() -> None:
    _client, server = open_pair()
    data = (
        cframe(Opcode.TEXT, b"Hel", fin=False)
        + cframe(Opcode.PING, b"p1")
        + cframe(Opcode.CONTINUATION, b"lo ", fin=False)
        + cframe(Opcode.PONG, b"q")
        + cframe(Opcode.PING, b"p2")
        + cframe(Opcode.CONTINUATION, b"world")
    )
    events = server.receive_data(data)
    assert events == [Ping(b"p1"), Pong(b"q"), Ping(b"p2"), Message("Hello world")]
    pongs = frames_of(drained(server), masked=False)
    assert [(h.opcode, p) for h, p in pongs] == [(Opcode.PONG, b"p1"), (Opcode.PONG, b"p2")]


def test_control_frames_interleaved_byte_by_byte() -> None:
    _client, server = open_pair()
    data = (
        cframe(Opcode.BINARY, b"\x00\x01", fin=False)
        + cframe(Opcode.PING, b"x")
        + cframe(Opcode.CONTINUATION, b"\x02")
    )
    events = []
    for i in range(len(data)):
        events += server.receive_data(data[i : i + 1])
    assert events == [Ping(b"x"), Message(b"\x00\x01\x02")]


def test_violation_behind_events_fails_at_next_call() -> None:
    client, server = open_pair()
    data = (
        cframe(Opcode.PING, b"first")
        + cframe(Opcode.TEXT, b"answer me")
        + cframe(0x3, b"reserved opcode")
        + cframe(Opcode.TEXT, b"never delivered")
    )
    assert server.receive_data(data) == [Ping(b"first"), Message("answer me")]
    # The application may still answer what came before the violation.
    # The pong was queued first: the reply goes out behind it, in one queue.
    reply = drained(server, server.send_message("answer"))
    assert client.receive_data(reply) == [Pong(b"first"), Message("answer")]
    assert server.receive_data(cframe(Opcode.TEXT, b"ignored")) == []
    assert_failed(server, client, 1002)


def test_close_inside_fragmented_message() -> None:
    _client, server = open_pair()
    data = cframe(Opcode.TEXT, b"never", fin=False) + cframe(Opcode.CLOSE, close_payload(1000))
    assert server.receive_data(data) == [CloseReceived(1000, "")]
    assert server.state is CLOSED


# Negotiated extensions and the RSV bits ------------------------------------------------------


class FlipDecoder:
    def decode(self, data: bytes, *, final: bool, max_size: int | None) -> bytes:
        return bytes(b ^ 0xFF for b in data)


class FlipExtension:
    """A toy extension: RSV1 marks a message whose bytes are all inverted."""

    name = "x-flip"
    rsv = RSV1

    def decoder(self, rsv: int) -> FlipDecoder | None:
        return FlipDecoder() if rsv & RSV1 else None

    def encode(self, opcode: int, payload: bytes) -> tuple[int, bytes]:
        return RSV1, bytes(b ^ 0xFF for b in payload)


class FlipServerFactory:
    name = "x-flip"

    def negotiate(self, offers: object) -> tuple[str, FlipExtension]:
        return "x-flip", FlipExtension()


class FlipClientFactory:
    name = "x-flip"

    def offer(self) -> str:
        return "x-flip"

    def accept(self, params: object) -> FlipExtension:
        return FlipExtension()


def open_flip_pair() -> tuple[Connection, Connection]:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    [event] = server.receive_data(
        drained(client, client.initiate("h", "/", extensions=[FlipClientFactory()]))
    )
    assert isinstance(event, RequestReceived)
    assert event.request.extensions == ("x-flip",)
    [event] = client.receive_data(drained(server, server.accept(extensions=[FlipServerFactory()])))
    assert isinstance(event, ResponseReceived)
    assert event.response.extensions == ("x-flip",)
    assert [e.name for e in client.extensions] == [e.name for e in server.extensions] == ["x-flip"]
    return client, server


def test_extension_sets_and_decodes_rsv1() -> None:
    client, server = open_flip_pair()
    data = drained(client, client.send_message("hello"))
    [(header, payload)] = frames_of(data, masked=True)
    assert header.rsv == RSV1
    assert payload == bytes(b ^ 0xFF for b in b"hello")
    assert server.receive_data(data) == [Message("hello")]
    # A fragmented message: RSV1 on the first frame only.
    flipped = bytes(b ^ 0xFF for b in b"abcdef")
    data = cframe(Opcode.BINARY, flipped[:3], fin=False, rsv=RSV1) + cframe(
        Opcode.CONTINUATION, flipped[3:]
    )
    assert server.receive_data(data) == [Message(b"abcdef")]
    # Without RSV1 a message is plain.
    assert server.receive_data(cframe(Opcode.TEXT, b"plain")) == [Message("plain")]


def test_extension_rsv1_on_continuation_frame_refused() -> None:
    client, server = open_flip_pair()
    data = cframe(Opcode.BINARY, b"a", fin=False, rsv=RSV1) + cframe(
        Opcode.CONTINUATION, b"b", rsv=RSV1
    )
    assert server.receive_data(data) == []
    assert_failed(server, client, 1002)


def test_extension_does_not_allow_other_rsv_bits() -> None:
    client, server = open_flip_pair()
    assert server.receive_data(cframe(Opcode.BINARY, b"a", rsv=RSV2)) == []
    assert_failed(server, client, 1002)


@pytest.mark.parametrize("opcode", [Opcode.PING, Opcode.PONG, Opcode.CLOSE])
def test_extension_rsv1_on_control_frame_refused(opcode: Opcode) -> None:
    # The extension gives RSV1 a meaning for data messages only: on a control frame it is
    # a reserved bit nobody defined (RFC 6455 section 5.2; RFC 7692 section 6).
    client, server = open_flip_pair()
    payload = close_payload(1000) if opcode is Opcode.CLOSE else b"x"
    assert server.receive_data(cframe(opcode, payload, rsv=RSV1)) == []
    assert_failed(server, client, 1002)


# State machine ------------------------------------------------------------------------------


def test_state_transitions_open_closing_closed() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    assert (client.state, server.state) == (CONNECTING, CONNECTING)
    request = drained(client, client.initiate("example.com", "/"))
    assert client.state is CONNECTING
    server.receive_data(request)
    assert server.state is CONNECTING
    response = drained(server, server.accept())
    assert server.state is OPEN
    client.receive_data(response)
    assert client.state is OPEN
    close = drained(client, client.send_close())
    assert client.state is CLOSING
    server.receive_data(close)
    assert server.state is CLOSED
    client.receive_data(drained(server))
    assert client.state is CLOSED


def test_state_connecting_to_closed_on_reject() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    response = drained(server, server.reject(403, body=b"no"))
    assert response.startswith(b"HTTP/1.1 403 ")
    assert server.state is CLOSED
    with pytest.raises(LocalProtocolError):
        server.accept()
    with pytest.raises(LocalProtocolError):
        server.reject(403)
    with pytest.raises(LocalProtocolError):
        server.send_message("x")


@pytest.mark.parametrize(
    "send",
    [
        lambda c: drained(c, c.send_message("x")),
        lambda c: drained(c, c.send_frame(Opcode.BINARY, b"x")),
        lambda c: drained(c, c.send_ping()),
        lambda c: drained(c, c.send_pong()),
        lambda c: drained(c, c.send_close()),
    ],
)
@pytest.mark.parametrize("role", [Role.CLIENT, Role.SERVER])
def test_send_before_handshake_raises(send: Callable[[Connection], bytes], role: Role) -> None:
    conn = Connection(role)
    with pytest.raises(LocalProtocolError):
        send(conn)
    assert conn.state is CONNECTING
    if role is Role.CLIENT:
        conn.initiate("example.com", "/")
        with pytest.raises(LocalProtocolError):
            send(conn)


def test_accept_twice_raises() -> None:
    _client, server = open_pair()
    with pytest.raises(LocalProtocolError):
        server.accept()
    assert server.state is OPEN


def test_accept_before_request_raises() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.accept()
    server.receive_data(b"GET / HTTP/1.1\r\n")  # incomplete request
    with pytest.raises(LocalProtocolError):
        server.accept()
    assert server.state is CONNECTING


def test_send_close_twice_raises() -> None:
    client, _server = open_pair()
    client.send_close()
    with pytest.raises(LocalProtocolError):
        client.send_close()
    assert client.state is CLOSING


def test_role_misuse_raises() -> None:
    server = Connection(Role.SERVER)
    with pytest.raises(LocalProtocolError):
        server.initiate("example.com", "/")
    client = Connection(Role.CLIENT)
    with pytest.raises(LocalProtocolError):
        client.receive_data(b"HTTP/1.1 101 Switching Protocols\r\n\r\n")  # before initiate()
    with pytest.raises(LocalProtocolError):
        client.accept()
    with pytest.raises(LocalProtocolError):
        client.reject(400)
    client.initiate("example.com", "/")
    with pytest.raises(LocalProtocolError):
        client.initiate("example.com", "/")


def test_server_refuses_data_before_answering_the_request() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    with pytest.raises(LocalProtocolError):
        server.receive_data(cframe(Opcode.TEXT, b"x"))


def test_close_code_while_open_is_1006() -> None:
    _client, server = open_pair()
    assert server.close_code == 1006
    assert server.close_received is None
    assert server.close_sent is None
    assert server.closed_by_peer is None
    assert server.failure is None


# Fuzzing ------------------------------------------------------------------------------------


def check_fuzzed(conn: Connection, chunks: list[bytes]) -> None:
    for chunk in [*chunks, b""]:  # b"" applies a failure left pending behind events
        events = conn.receive_data(chunk)
        assert isinstance(events, list)
        if conn.failure_pending and conn.failure is None:
            assert events
    out = drained(conn)
    if conn.failure is not None:
        assert conn.failure.code in (1002, 1007, 1009)
        assert conn.state is CLOSED
        if conn.close_received is None:
            # Unless the peer's close came first, our last frame is the failure's close.
            masked = conn.role is Role.CLIENT
            header, payload = frames_of(out, masked=masked)[-1]
            assert header.opcode is Opcode.CLOSE
            assert struct.unpack("!H", payload[:2])[0] == conn.failure.code
    else:
        frames_of(out, masked=conn.role is Role.CLIENT)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c for c in cuts if c <= len(data)), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


@HYPOTHESIS
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_arbitrary_bytes_never_raise_on_server(data: bytes, cuts: list[int]) -> None:
    _, server = open_pair()
    check_fuzzed(server, chunked(data, cuts))


@HYPOTHESIS
@given(data=st.binary(max_size=400), cuts=st.lists(st.integers(0, 400), max_size=5))
def test_arbitrary_bytes_never_raise_on_client(data: bytes, cuts: list[int]) -> None:
    client, _ = open_pair()
    check_fuzzed(client, chunked(data, cuts))


@st.composite
def fuzz_frame(draw: st.DrawFn) -> bytes:
    """A frame that is valid or slightly wrong in every way the core must check."""
    opcode = draw(st.sampled_from([0, 1, 2, 8, 9, 10]) | st.integers(0, 15))
    fin = draw(st.booleans() | st.just(True))
    rsv = draw(st.just(0) | st.sampled_from([0, RSV1, RSV2, RSV3]))
    payload = draw(
        st.binary(max_size=130)
        | st.text(max_size=40).map(str.encode)
        | st.builds(
            lambda code, reason: struct.pack("!H", code) + reason,
            st.integers(0, 65535) | st.sampled_from(VALID_CLOSE_CODES),
            st.binary(max_size=10) | st.text(max_size=10).map(str.encode),
        )
    )
    mask = draw(st.just(MASK) | st.none() | st.just(MASK))
    return encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=mask)


@HYPOTHESIS
@given(
    frames=st.lists(fuzz_frame(), max_size=8),
    cuts=st.lists(st.integers(0, 1200), max_size=5),
    limit=st.none() | st.integers(0, 100),
)
def test_fuzzed_frames_never_raise_on_server(
    frames: list[bytes], cuts: list[int], limit: int | None
) -> None:
    _, server = open_pair(server_kwargs={"max_message_size": limit})
    check_fuzzed(server, chunked(b"".join(frames), cuts))


def test_a_large_message_read_into_the_core_buffer() -> None:
    """get_buffer() / buffer_updated(): the payload goes straight where it is unmasked from;
    a one-frame message comes out whole, unjoined."""
    client, server = open_pair()
    assert server.get_buffer() is None  # no large frame begun: reads go to receive_data()
    payload = bytes(range(256)) * 4096  # 1 MiB
    data = drained(client, client.send_message(payload))
    assert server.receive_data(data[:65536]) == []  # (enough for a buffer of the whole)
    events = []
    rest = memoryview(data)[65536:]
    view = server.get_buffer() or pytest.fail("no buffer")
    assert len(view) == len(rest)
    view.release()
    while rest:
        view = server.get_buffer() or pytest.fail("no buffer for the rest of the frame")
        with view:
            size = min(len(view), len(rest), 77_777)
            view[:size] = rest[:size]
        events += server.buffer_updated(size)
        rest = rest[size:]
    assert events == [Message(payload)]
    assert server.get_buffer() is None


def test_a_closed_connection_has_no_buffer_to_read_into() -> None:
    client, server = open_pair()
    server.receive_data(drained(client, client.send_message(b"x" * MiB))[:1000])
    view = server.get_buffer() or pytest.fail("no buffer")
    view.release()
    server.receive_eof()
    assert server.get_buffer() is None
    assert server.buffer_updated(10) == []


def test_limits_and_options_are_readable() -> None:
    conn = Connection(Role.SERVER, max_message_size=10, max_frame_size=5, stream_fragments=True)
    assert (conn.max_message_size, conn.max_frame_size, conn.stream_fragments) == (10, 5, True)
    conn = Connection(Role.CLIENT)
    assert (conn.max_message_size, conn.max_frame_size, conn.stream_fragments) == (
        1024 * 1024,
        None,
        False,
    )


def test_data_to_send_is_empty_once_drained() -> None:
    client, server = open_pair()
    server.send_message("a")
    server.send_ping(b"p")
    first, second = server.data_to_send()
    assert client.receive_data(first + second) == [Message("a"), Ping(b"p")]
    assert server.data_to_send() == []
