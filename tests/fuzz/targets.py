"""Fuzz targets of trio_ws's parsers: one function per target, taking arbitrary bytes.

Each target raises ``AssertionError`` (or any unexpected exception) when it finds a bug and
returns normally otherwise. They are run by ``tests/test_fuzz.py`` (hypothesis, in CI) and by
``tests/fuzz/run.py`` (atheris, coverage-guided, ``nox -s fuzz``).

- ``frame_parser``: ``FrameParser`` with a configuration and chunking taken from the input;
  only ``ProtocolError`` (1002 or 1009) may come out, and what it hands out must be consistent
  with the headers it parsed.
- ``server_handshake``: ``ServerHandshake`` fed a request (raw bytes, or a valid request
  mutated by the input); only ``HandshakeError`` with an HTTP error status may come out, and an
  accepted request must be a valid one.
- ``client_handshake``: ``ClientHandshake`` fed a response; only ``HandshakeError``.
- ``server_connection``: an open server ``Connection`` (with or without permessage-deflate)
  fed frames; ``receive_data`` never raises after the handshake, and a failure is reported
  with a close frame carrying 1002, 1007 or 1009.
"""

from __future__ import annotations

import base64
import struct

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
    is_valid_close_code,
)
from trio_ws.protocol._deflate import PerMessageDeflate
from trio_ws.protocol._errors import HandshakeError, ProtocolError
from trio_ws.protocol._frames import RSV1, RSV2, RSV3, FrameParser, Opcode, encode_frame
from trio_ws.protocol._handshake import ClientHandshake, ServerHandshake, accept_key

_ORDER = {
    ConnectionState.CONNECTING: 0,
    ConnectionState.OPEN: 1,
    ConnectionState.CLOSING: 2,
    ConnectionState.CLOSED: 3,
}

_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

VALID_REQUEST = (
    b"GET /chat?room=1 HTTP/1.1\r\n"
    b"Host: example.com\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + _KEY.encode() + b"\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: chat, superchat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Origin: http://example.com\r\n"
    b"\r\n"
)

VALID_RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: ACCEPT\r\n"
    b"Sec-WebSocket-Protocol: chat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=12\r\n"
    b"\r\n"
)

# Bytes a mutation may insert: the ones HTTP and the header grammars give meaning to.
_INTERESTING = b'\r\n:; ,="\t\x00\x7f\x80\xff/?%HTTP1.0GETwebsocket'


def _chunks(data: bytes, sizes: bytes) -> list[bytes]:
    """``data`` cut into non-empty pieces whose sizes cycle through ``sizes`` (1..256)."""
    if not sizes:
        return [data] if data else []
    out = []
    i = 0
    k = 0
    while i < len(data):
        size = sizes[k % len(sizes)] + 1
        out.append(data[i : i + size])
        i += size
        k += 1
    return out


def mutate(template: bytes, instructions: bytes) -> bytes:
    """Apply byte-level edits to ``template``: 3 input bytes per edit (op, where, what)."""
    data = bytearray(template)
    for i in range(0, len(instructions) - 2, 3):
        op, where, what = instructions[i : i + 3]
        pos = (where * len(data)) // 256 if data else 0
        kind = op % 5
        if kind == 0:  # replace one byte
            if data:
                data[min(pos, len(data) - 1)] = what
        elif kind == 1:  # insert an interesting byte
            data.insert(pos, _INTERESTING[what % len(_INTERESTING)])
        elif kind == 2:  # delete a few bytes
            del data[pos : pos + 1 + what % 8]
        elif kind == 3:  # duplicate a run (a repeated header, a doubled CRLF)
            run = data[pos : pos + 1 + what % 32]
            data[pos:pos] = run
        else:  # insert a raw byte
            data.insert(pos, what)
    return bytes(data)


# Frame parser --------------------------------------------------------------------------------


def frame_parser(data: bytes) -> None:
    if len(data) < 3:
        return
    config, limit, chunking = data[0], data[1], data[2]
    body = data[3:]
    expect_masked = bool(config & 1)
    max_frame_size = None if config & 2 else limit * 4
    parser = FrameParser(expect_masked=expect_masked, max_frame_size=max_frame_size)
    parser.allowed_rsv = config & (RSV1 | RSV2 | RSV3)
    fed = 0
    handed_out = 0
    current = None
    got = 0
    try:
        for chunk in _chunks(body, bytes([chunking]) if chunking else b""):
            parser.feed(chunk)
            fed += len(chunk)
            while (item := parser.next()) is not None:
                header, piece, done = item
                if current is None:
                    current, got = header, 0
                    assert header.opcode in Opcode
                    assert not header.rsv & ~parser.allowed_rsv
                    assert (header.mask is not None) == expect_masked
                    assert header.mask is None or len(header.mask) == 4
                    assert 0 <= header.length < 1 << 63
                    if header.opcode.is_control:
                        assert header.fin and header.length <= 125 and not header.rsv
                    elif max_frame_size is not None:
                        assert header.length <= max_frame_size
                assert header is current
                got += len(piece)
                handed_out += len(piece)
                assert got <= header.length
                if header.opcode.is_control:
                    assert done and got == header.length  # control frames come whole
                assert done == (got == header.length)
                if done:
                    current = None
                assert handed_out <= fed
                assert parser.buffered >= 0
    except ProtocolError as exc:
        assert exc.code in (1002, 1009), exc


# Handshakes ----------------------------------------------------------------------------------


def server_handshake(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0], data[1:]
    if mode & 1:
        request_bytes = mutate(VALID_REQUEST, rest[: 3 * 16])
        sizes = rest[3 * 16 : 3 * 16 + 4]
    else:
        request_bytes, sizes = rest, bytes([mode >> 1])
    max_head_size = 256 if mode & 2 else 16 * 1024
    hs = ServerHandshake(max_head_size=max_head_size)
    try:
        request = None
        for chunk in _chunks(request_bytes, sizes):
            request = hs.receive_data(chunk)
            if request is not None:
                break
        else:
            if mode & 4:
                hs.receive_data(b"")  # end of stream: an error, or nothing yet
            return
    except HandshakeError as exc:
        assert 400 <= exc.status < 600, exc.status
        assert isinstance(exc.message, str)
        return
    assert request is not None
    # Whatever was accepted is a request the server may answer.
    assert request.target and request.path
    if not request.is_upgrade:
        try:
            hs.accept()
        except HandshakeError as exc:
            assert exc.status == 426
        else:
            raise AssertionError("accept() answered 101 to a request without Upgrade")
        response = hs.reject(404, [("Content-Type", "text/plain")], b"no")
        assert response.startswith(b"HTTP/1.1 404 ")
        return
    assert len(base64.b64decode(request.key, validate=True)) == 16
    assert request.headers.get_all("sec-websocket-version") == ["13"]
    if mode & 8 and request.subprotocols:
        subprotocol = request.subprotocols[0]
        try:
            response = hs.accept(subprotocol=subprotocol)
        except ValueError:
            # Only a subprotocol that cannot be sent back verbatim may be refused.
            assert any(c in subprotocol for c in "\r\n\0")
            return
    else:
        response = hs.accept()
    assert response.startswith(b"HTTP/1.1 101 ")
    assert accept_key(request.key).encode() in response
    head, _, after = response.partition(b"\r\n\r\n")
    assert after == b""
    for line in head.split(b"\r\n")[1:]:
        # No injected or broken header line.
        assert b":" in line and b"\r" not in line and b"\n" not in line, response


def client_handshake(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0], data[1:]
    hs = ClientHandshake("example.com", "/chat", subprotocols=["chat", "superchat"])
    template = VALID_RESPONSE.replace(b"ACCEPT", accept_key(hs.key).encode())
    if mode & 1:
        response_bytes = mutate(template, rest[: 3 * 16])
        sizes = rest[3 * 16 : 3 * 16 + 4]
    else:
        response_bytes, sizes = rest, bytes([mode >> 1])
    try:
        for chunk in _chunks(response_bytes, sizes):
            response = hs.receive_data(chunk)
            if response is not None:
                assert response.status == 101
                assert response.subprotocol in (None, "chat", "superchat")
                return
        if mode & 4:
            hs.receive_data(b"")
    except HandshakeError as exc:
        assert isinstance(exc.status, int)


# A server connection -------------------------------------------------------------------------


def open_server(compress: bool) -> Connection:
    """A server Connection that accepted a handshake (permessage-deflate if ``compress``)."""
    server = Connection(Role.SERVER, max_message_size=4096, max_frame_size=None)
    client = Connection(Role.CLIENT)
    extension = PerMessageDeflate(server_max_window_bits=None, client_max_window_bits=None)
    extensions = [extension] if compress else []
    client.initiate("example.com", "/", extensions=extensions)
    [event] = server.receive_data(b"".join(client.data_to_send()))
    assert isinstance(event, RequestReceived)
    server.accept(extensions=extensions)
    server.data_to_send()
    assert server.state is ConnectionState.OPEN
    return server


def frames_from(data: bytes) -> bytes:
    """Well-formed, masked frames whose fields come from ``data`` (opcode, flags, payload)."""
    out = []
    i = 0
    while i + 2 <= len(data):
        flags, size = data[i], data[i + 1]
        i += 2
        payload = data[i : i + size]
        i += size
        opcode = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA, 0x3, 0xB][flags & 7]
        fin = not flags & 8
        rsv = flags & (RSV1 | RSV2 | RSV3) if flags & 0x80 else 0
        if opcode == 0x8 and payload and flags & 0x80 == 0:
            payload = struct.pack("!H", 1000 + payload[0] % 16) + payload[1:]
        out.append(encode_frame(opcode, payload, fin=fin, rsv=rsv, mask=b"\x01\x02\x03\x04"))
    return b"".join(out)


def server_connection(data: bytes) -> None:
    if not data:
        return
    mode, rest = data[0], data[1:]
    server = open_server(compress=bool(mode & 1))
    stream = frames_from(rest) if mode & 2 else rest
    sizes = bytes([mode >> 2]) if mode >> 2 else b""
    state = server.state
    out = b""
    for chunk in _chunks(stream, sizes):
        events = server.receive_data(chunk)  # never raises once open
        out += b"".join(server.data_to_send())
        assert _ORDER[server.state] >= _ORDER[state], (state, server.state)
        state = server.state
        for event in events:
            assert isinstance(event, (Message, Ping, Pong, CloseReceived)), event
            if isinstance(event, Message) and server.max_message_size is not None:
                size = len(event.data.encode() if isinstance(event.data, str) else event.data)
                assert size <= server.max_message_size
            if isinstance(event, CloseReceived):
                assert event.code == 1005 or is_valid_close_code(event.code)
        if state is ConnectionState.CLOSED:
            break
    if server.failure is None and server.failure_pending:
        server.receive_data(b"")
        out += b"".join(server.data_to_send())
    if server.failure is not None:
        assert server.failure.code in (1002, 1007, 1009), server.failure
        assert server.state is ConnectionState.CLOSED
        # The last thing sent is the close frame with that code.
        parser = FrameParser(expect_masked=False, max_frame_size=None)
        parser.feed(out)
        last = None
        while (item := parser.next()) is not None:
            last = item
        assert last is not None
        header, payload, done = last
        assert header.opcode is Opcode.CLOSE and done
        assert struct.unpack("!H", payload[:2])[0] == server.failure.code
        payload[2:].decode("utf-8")
    # Once closed, nothing more is produced.
    if server.state is ConnectionState.CLOSED:
        assert server.receive_data(b"\x81\x80\x00\x00\x00\x00") == []
        assert server.data_to_send() == []


def client_connection(data: bytes) -> None:
    """A client Connection fed the server's side of the stream after a 101."""
    if not data:
        return
    mode, rest = data[0], data[1:]
    client = Connection(Role.CLIENT, max_message_size=4096)
    client.initiate("example.com", "/")
    request = b"".join(client.data_to_send())
    key = request.split(b"Sec-WebSocket-Key: ", 1)[1].split(b"\r\n", 1)[0]
    response = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n\r\n"
    )
    events = client.receive_data(response + rest[: mode % 16])
    assert isinstance(events[0], ResponseReceived)
    for event in events[1:]:
        assert isinstance(event, (Message, Ping, Pong, CloseReceived)), event
    for chunk in _chunks(rest[mode % 16 :], bytes([mode])):
        for event in client.receive_data(chunk):
            assert isinstance(event, (Message, Ping, Pong, CloseReceived)), event
        client.data_to_send()
    if client.failure is not None:
        assert client.failure.code in (1002, 1007, 1009), client.failure


TARGETS = {
    "frames": frame_parser,
    "server_handshake": server_handshake,
    "client_handshake": client_handshake,
    "server_connection": server_connection,
    "client_connection": client_connection,
}
