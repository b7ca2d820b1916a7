"""Hostile clients against a trio_ws echo server, over raw sockets on 127.0.0.1.

Each test sends one kind of bad input (frames a client must never send, absurd lengths,
broken or oversized handshakes, resource exhaustion attempts) and checks two things: the
refusal is the one RFC 6455 asks for (an HTTP status during the handshake, section 4.2.2; a
close frame with the section 7.4 code afterwards), and the same server still serves a normal
``trio_ws`` client. The last test runs the heavy inputs against ``examples/echo_server.py`` in
a subprocess and records how its resident memory moved (``pytest -s`` prints the table; it
is also written to ``build/hostile_table.md``).

The raw client builds frames with ``trio_ws.protocol._frames.encode_frame`` and reads the server's
with ``FrameParser(expect_masked=False, max_frame_size=None)``, so that what is checked is
what went on the wire.
"""

from __future__ import annotations

import base64
import functools
import os
import ssl
import struct
import subprocess
import sys
import time
import tracemalloc
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    RawPeer,
    assert_served,
    bounded,
    drained,
    echo_handler,
    first_line,
    serving,
    upgrade_request,
    wait_stalled,
    wait_until,
)

import trio_ws
from trio_ws.protocol import Connection, Role
from trio_ws.protocol._frames import (
    RSV1,
    RSV2,
    RSV3,
    Opcode,
    encode_frame,
)

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent

#: ``trio.fail_after`` bound of every test body.
TEST_TIMEOUT = 10.0

#: Short timeouts so that refusals and shutdowns are quick.
HANDSHAKE_TIMEOUT = 0.5
CLOSE_TIMEOUT = 0.5
OPTIONS = trio_ws.WebSocketOptions(close_timeout=CLOSE_TIMEOUT)
CLIENT_OPTIONS = trio_ws.WebSocketOptions(close_timeout=CLOSE_TIMEOUT)

MiB = 1024 * 1024


# Servers and clients ------------------------------------------------------------------------


async def refusal_status(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` (in the background: the answer may come before it is all sent)."""
    raw = await RawPeer.connect(port)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw.send, request)
            status, headers, body = await raw.read_http_response()
            nursery.cancel_scope.cancel()
        return status, headers, body
    finally:
        await raw.aclose()


# Frames a server must refuse --------------------------------------------------------------


def _frame(opcode: int, data: bytes, *, fin: bool = True, rsv: int = 0) -> bytes:
    return encode_frame(opcode, data, fin=fin, rsv=rsv, mask=os.urandom(4))


def _long_header(length: int, opcode: int = Opcode.BINARY) -> bytes:
    """A masked frame header announcing ``length`` bytes in the 64-bit form, no payload."""
    return struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length) + os.urandom(4)


BAD_FRAMES: dict[str, tuple[Callable[[], bytes], int]] = {
    "unmasked": (lambda: encode_frame(Opcode.TEXT, b"hello", mask=None), 1002),
    "unmasked-ping": (lambda: encode_frame(Opcode.PING, b"", mask=None), 1002),
    "length-2**63": (lambda: _long_header(1 << 63), 1002),
    "length-2**64-1": (lambda: _long_header((1 << 64) - 1), 1002),
    # Only the header of a 100 MiB frame is sent: the refusal must not wait for the payload.
    "100MiB-announced": (lambda: _long_header(100 * MiB), 1009),
    "invalid-utf8": (lambda: _frame(Opcode.TEXT, b"caf\xc3"), 1007),
    "invalid-utf8-surrogate": (lambda: _frame(Opcode.TEXT, b"\xed\xa0\x80"), 1007),
    "invalid-utf8-fragmented": (
        lambda: _frame(Opcode.TEXT, b"ok \xf0\x9f", fin=False) + _frame(Opcode.CONTINUATION, b"x"),
        1007,
    ),
    "invalid-utf8-close-reason": (
        lambda: _frame(Opcode.CLOSE, struct.pack("!H", 1000) + b"\xff"),
        1007,
    ),
    "close-code-999": (lambda: _frame(Opcode.CLOSE, struct.pack("!H", 999)), 1002),
    "close-code-1005": (lambda: _frame(Opcode.CLOSE, struct.pack("!H", 1005)), 1002),
    "close-code-1006": (lambda: _frame(Opcode.CLOSE, struct.pack("!H", 1006)), 1002),
    "close-code-2000": (lambda: _frame(Opcode.CLOSE, struct.pack("!H", 2000)), 1002),
    "close-code-5000": (lambda: _frame(Opcode.CLOSE, struct.pack("!H", 5000)), 1002),
    "close-1-byte": (lambda: _frame(Opcode.CLOSE, b"\x03"), 1002),
    "orphan-continuation": (lambda: _frame(Opcode.CONTINUATION, b"orphan"), 1002),
    "new-message-inside-fragmented": (
        lambda: _frame(Opcode.TEXT, b"a", fin=False) + _frame(Opcode.BINARY, b"b"),
        1002,
    ),
    "rsv1-no-extension": (lambda: _frame(Opcode.TEXT, b"x", rsv=RSV1), 1002),
    "rsv2-no-extension": (lambda: _frame(Opcode.TEXT, b"x", rsv=RSV2), 1002),
    "rsv3-no-extension": (lambda: _frame(Opcode.BINARY, b"x", rsv=RSV3), 1002),
    "reserved-opcode-3": (lambda: _frame(0x3, b"x"), 1002),
    "reserved-opcode-0xb": (lambda: _frame(0xB, b""), 1002),
    "fragmented-ping": (lambda: _frame(Opcode.PING, b"x", fin=False), 1002),
    "ping-126-bytes": (lambda: _frame(Opcode.PING, b"x" * 126), 1002),
}


@pytest.mark.parametrize("name", list(BAD_FRAMES))
@bounded
async def test_bad_frame_refused_and_server_keeps_serving(name: str) -> None:
    build, expected = BAD_FRAMES[name]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            await raw.handshake()
            await raw.send(build())
            code, reason = await raw.read_close()
            assert code == expected, (code, reason)
            # A failed connection ends: the server closes TCP (after our EOF at the latest).
            await raw.stream.send_eof()
            await raw.read_until_eof()
            await raw.aclose()
            await wait_until(lambda: not server.connections, "the connection is forgotten")
            await assert_served(server.port)


COMPRESSED_BAD_FRAMES: dict[str, tuple[Callable[[], bytes], int]] = {
    "rsv2": (lambda: _frame(Opcode.TEXT, b"x", rsv=RSV2), 1002),
    "rsv3": (lambda: _frame(Opcode.BINARY, b"x", rsv=RSV3), 1002),
    "rsv1-on-ping": (lambda: _frame(Opcode.PING, b"", rsv=RSV1), 1002),
    "rsv1-on-continuation": (
        lambda: (
            _frame(Opcode.TEXT, b"", fin=False, rsv=RSV1)
            + _frame(Opcode.CONTINUATION, b"\x00", rsv=RSV1)
        ),
        1002,
    ),
    # Not a deflate stream: 0xff starts a block of the reserved type 3.
    "rsv1-garbage": (lambda: _frame(Opcode.BINARY, b"\xff\xff\xff", rsv=RSV1), 1007),
}


@pytest.mark.parametrize("name", list(COMPRESSED_BAD_FRAMES))
@bounded
async def test_bad_frame_with_compression_negotiated(name: str) -> None:
    build, expected = COMPRESSED_BAD_FRAMES[name]
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            headers = await raw.handshake(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
            assert headers["sec-websocket-extensions"].startswith("permessage-deflate")
            await raw.send(build())
            code, reason = await raw.read_close()
            assert code == expected, (code, reason)
            await raw.aclose()
            await wait_until(lambda: not server.connections, "the connection is forgotten")
            await assert_served(server.port)


# Decompression bomb -------------------------------------------------------------------------


@functools.cache
def deflate_bomb(inflated: int = 1 << 30) -> bytes:
    """A raw-deflate message body (RFC 7692: without the final 00 00 ff ff) of ``inflated``
    zero bytes, about 1/1030 of that size.

    Compressing 1 GiB takes seconds; instead, two 8 MiB chunks of zeros are compressed with a
    sync flush after each (byte-aligned output), and the second, which only refers back to
    zeros, is repeated.
    """
    chunk = 8 * MiB
    assert inflated % chunk == 0
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15, 9)
    first = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    steady = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_SYNC_FLUSH)
    return (first + steady * (inflated // chunk - 1))[:-4]


def test_deflate_bomb_is_what_it_claims() -> None:
    """The bomb is the first chunk and 127 steady chunks of 8 MiB of zeros each: 1 GiB."""
    bomb = deflate_bomb()
    assert len(bomb) < MiB  # under the server's default frame limit: inflating must catch it
    small = deflate_bomb(24 * MiB)
    inflater = zlib.decompressobj(-15)
    assert inflater.decompress(small + b"\x00\x00\xff\xff") == bytes(24 * MiB)
    first_and_steady = small + b"\x00\x00\xff\xff"
    first_len = len(deflate_bomb(8 * MiB)) + 4
    steady = first_and_steady[first_len : (len(first_and_steady) + first_len) // 2]
    assert first_and_steady == first_and_steady[:first_len] + steady * 2
    assert bomb == (first_and_steady[:first_len] + steady * 127)[:-4]


def test_refused_bomb_is_not_kept_in_memory() -> None:
    """Once a bomb failed the connection (1009), the inflated data must be freed.

    The failed Connection stays around as long as the application holds it (the trio layer
    keeps it for ``close_code`` and the closing handshake); what it keeps must be small.
    """
    limit = 16 * MiB
    extension = trio_ws.PerMessageDeflate()
    server = Connection(Role.SERVER, max_message_size=limit)
    client = Connection(Role.CLIENT)
    server.receive_data(
        drained(client, client.initiate("example.com", "/", extensions=[extension]))
    )
    client.receive_data(drained(server, server.accept(extensions=[extension])))
    frame = encode_frame(Opcode.BINARY, deflate_bomb(), rsv=RSV1, mask=os.urandom(4))
    tracemalloc.start()
    try:
        server.receive_data(frame[: 256 * 1024])
        assert server.failure is not None and server.failure.code == 1009
        held, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak >= limit  # it did inflate up to the limit...
    assert held < 2 * MiB, f"...and still holds {held / MiB:.0f} MiB after refusing the bomb"


async def send_bomb(raw: RawPeer) -> None:
    await raw.send_frame(Opcode.BINARY, deflate_bomb(), rsv=RSV1)


@bounded
async def test_decompression_bomb_gets_1009() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            headers = await raw.handshake(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
            assert "permessage-deflate" in headers["sec-websocket-extensions"]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_bomb, raw)
                code, _ = await raw.read_close()
            assert code == 1009
            await raw.aclose()
            await wait_until(lambda: not server.connections, "the connection is forgotten")
            await assert_served(server.port)


# Fragments ----------------------------------------------------------------------------------

FRAGMENTED_TEXT = ("héllo wörld ✓ " * 2000)[:12000]  # multi-byte characters: splits inside them


def one_byte_fragments(text: str, count: int) -> bytes:
    data = text.encode("utf-8")[:count]
    assert len(data) == count
    frames = [_frame(Opcode.TEXT, data[:1], fin=False)]
    frames += [_frame(Opcode.CONTINUATION, data[i : i + 1], fin=False) for i in range(1, count - 1)]
    frames.append(_frame(Opcode.CONTINUATION, data[-1:]))
    return b"".join(frames)


@bounded
async def test_20000_one_byte_fragments() -> None:
    """Echoed whole (or refused with 1009), in bounded time, never split in a character."""
    text = FRAGMENTED_TEXT
    while len(text.encode("utf-8")) < 20000:
        text += text
    data = text.encode("utf-8")[:20000]
    expected = data.decode("utf-8", errors="ignore")
    assert expected.encode("utf-8") == data  # the cut falls between characters
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            await raw.handshake()
            # CPU time of this process (the server runs in it): what the fragments cost, not
            # how long a busy machine kept the process waiting. Quadratic reassembly of 20 000
            # pieces would cost minutes.
            started = time.process_time()
            await raw.send(one_byte_fragments(text, 20000))
            frame = await raw.read_frame()
            elapsed = time.process_time() - started
            assert frame is not None
            header, payload = frame
            if header.opcode is Opcode.CLOSE:
                assert struct.unpack("!H", payload[:2])[0] == 1009
            else:
                assert header.opcode is Opcode.TEXT and header.fin
                assert payload.decode("utf-8") == expected
            assert elapsed < 5, f"20 000 fragments took {elapsed:.1f} s of CPU"
            await raw.aclose()
            await assert_served(server.port)


@bounded
async def test_many_fragments_over_the_message_limit_get_1009() -> None:
    options = trio_ws.WebSocketOptions(close_timeout=CLOSE_TIMEOUT, max_message_size=5000)
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(options=options) as server:
            raw = await RawPeer.connect(server.port)
            await raw.handshake()
            await raw.send(one_byte_fragments("x" * 20000, 20000))
            code, _ = await raw.read_close()
            assert code == 1009
            await raw.aclose()
            await assert_served(server.port)


# A client that vanishes ---------------------------------------------------------------------


@bounded
async def test_client_vanishing_mid_frame_is_cleaned_up() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            await raw.handshake()
            await wait_until(lambda: len(server.connections) == 1, "the connection is open")
            frame = _frame(Opcode.BINARY, os.urandom(1000))
            await raw.send(frame[:100])  # header and the start of the payload, then gone
            await wait_stalled()  # the server has read them and waits for the rest
            await raw.aclose()
            await wait_until(lambda: not server.connections, "the connection is forgotten")
            await assert_served(server.port)


@bounded
async def test_client_vanishing_mid_handshake_is_cleaned_up() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            for cut in (1, 20, 60):
                raw = await RawPeer.connect(server.port)
                await raw.send(upgrade_request()[:cut])
                await raw.aclose()
            await assert_served(server.port)
            assert not server.connections


# Handshakes a server must refuse ------------------------------------------------------------


@pytest.mark.parametrize("trickle", [False, True], ids=["silent", "slowloris"])
@bounded
async def test_stalled_handshake_dropped_after_timeout(trickle: bool) -> None:
    """Half a request line, then silence (or a byte every 50 ms): dropped at the deadline."""
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:
            raw = await RawPeer.connect(server.port)
            started = trio.current_time()
            request = upgrade_request()
            await raw.send(request[:7])  # "GET / H"
            async with trio.open_nursery() as nursery:
                if trickle:

                    async def trickle_bytes() -> None:
                        for byte in request[7:]:
                            await trio.sleep(0.05)  # the slowloris pace is the input
                            if not await raw.send(bytes([byte])):
                                return

                    nursery.start_soon(trickle_bytes)
                await raw.read_until_eof()
                nursery.cancel_scope.cancel()
            elapsed = trio.current_time() - started
            # Not before the deadline; after it, in far less time than the trickle would take
            # to complete the request (7 s), with room for a busy machine.
            assert HANDSHAKE_TIMEOUT - 0.05 <= elapsed < HANDSHAKE_TIMEOUT + 3.0, elapsed
            await raw.aclose()
            await assert_served(server.port)


def big_header_request() -> bytes:
    return upgrade_request(extra=f"X-Big: {'a' * 200_000}\r\n")


def many_headers_request() -> bytes:
    return upgrade_request(extra="".join(f"X-H{i}: {i}\r\n" for i in range(5000)))


def tls_client_hello() -> bytes:
    """The first flight of a real TLS handshake, as a browser would send to wss://."""
    context = ssl.create_default_context()
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    hello = outgoing.read()
    assert hello[:1] == b"\x16"  # a TLS handshake record
    return hello


BAD_REQUESTS: dict[str, tuple[Callable[[], bytes], set[int]]] = {
    "200kB-header": (big_header_request, {431}),
    "5000-headers": (many_headers_request, {431, 400}),
    "binary-garbage": (lambda: bytes(range(256)) * 4 + b"\r\n\r\n", {400}),
    "text-garbage": (lambda: b"HELLO THERE\r\n\r\n", {400}),
    "ssh-banner": (lambda: b"SSH-2.0-OpenSSH_9.6\r\n", {400}),
    "tls-client-hello": (tls_client_hello, {400}),
    "version-12": (lambda: upgrade_request(version="12"), {426}),
    "post": (lambda: upgrade_request(method="POST"), {405}),
    "no-key": (lambda: upgrade_request().replace(b"Sec-WebSocket-Key", b"X-Key"), {400}),
    "short-key": (lambda: upgrade_request(key=base64.b64encode(b"short").decode()), {400}),
    "http-1.0": (lambda: upgrade_request().replace(b"HTTP/1.1", b"HTTP/1.0"), {400}),
}


@pytest.mark.parametrize("name", list(BAD_REQUESTS))
@bounded
async def test_bad_handshake_refused_and_server_keeps_serving(name: str) -> None:
    build, statuses = BAD_REQUESTS[name]
    with trio.fail_after(TEST_TIMEOUT):
        # Refused on sight, not when the handshake times out: a deadline far beyond the wait.
        async with serving(handshake_timeout=60) as server:
            with trio.move_on_after(5) as waited:
                status, headers, _ = await refusal_status(server.port, build())
            assert not waited.cancelled_caught, "not refused on sight"
            assert status in statuses
            assert headers.get("connection") == "close"
            if name == "version-12":
                assert headers["sec-websocket-version"] == "13"
            if name == "post":
                assert headers["allow"] == "GET"
            await assert_served(server.port)


@bounded
async def test_max_connections_503_while_existing_connections_work() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(max_connections=2) as server:
            async with (
                trio_ws.open_websocket(HOST, server.port, options=CLIENT_OPTIONS) as ws1,
                trio_ws.open_websocket(HOST, server.port, options=CLIENT_OPTIONS) as ws2,
            ):
                for _ in range(2):
                    status, _, _ = await refusal_status(server.port, upgrade_request())
                    assert status == 503
                for ws in (ws1, ws2):
                    await ws.send("alive")
                    assert await ws.receive() == "alive"
            # Once they are gone, there is room again.
            await wait_until(lambda: not server.connections, "the connections are closed")
            await assert_served(server.port)


@bounded
async def test_origin_not_allowed_403() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with serving(origins=["https://good.example"]) as server:
            for extra in ("Origin: https://evil.example\r\n", ""):
                status, _, _ = await refusal_status(server.port, upgrade_request(extra=extra))
                assert status == 403
            await assert_served(server.port, extra_headers=[("Origin", "https://good.example")])


INJECTIONS: dict[str, dict[str, Any]] = {
    "header-value-crlf": {"extra_headers": [("X-Ok", "1\r\nSet-Cookie: evil=1")]},
    "header-value-lf": {"extra_headers": [("X-Ok", "1\nSet-Cookie: evil=1")]},
    "header-value-nul": {"extra_headers": [("X-Ok", "1\x00")]},
    "header-name-crlf": {"extra_headers": [("Set-Cookie: evil=1\r\nX-Ok", "1")]},
    "subprotocol-crlf": {"subprotocol": "chat\r\nSet-Cookie: evil=1"},
}


@pytest.mark.parametrize("name", list(INJECTIONS))
@bounded
async def test_crlf_in_response_header_refused_with_500(name: str) -> None:
    errors: list[BaseException] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        if request.path != "/inject":
            await echo_handler(request)
            return
        try:
            await request.accept(**INJECTIONS[name])
        except BaseException as exc:
            errors.append(exc)
            raise

    with trio.fail_after(TEST_TIMEOUT):
        async with serving(handler) as server:
            request = upgrade_request(path="/inject", extra="Sec-WebSocket-Protocol: chat\r\n")
            status, headers, body = await refusal_status(server.port, request)
            assert status == 500
            assert "set-cookie" not in headers
            assert b"evil" not in body
            assert len(errors) == 1 and isinstance(errors[0], ValueError), errors
            await assert_served(server.port)


# Memory of a server process under the heavy inputs ----------------------------------------


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _reset_peak(pid: int) -> bool:
    """Reset VmHWM (Linux >= 4.0: write 5 to clear_refs); False if not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


async def heavy_bomb(port: int) -> str:
    raw = await RawPeer.connect(port)
    await raw.handshake(extra="Sec-WebSocket-Extensions: permessage-deflate\r\n")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_bomb, raw)
        code, _ = await raw.read_close()
    await raw.aclose()
    assert code == 1009
    return f"close {code}"


async def heavy_request(port: int, request: bytes, statuses: set[int]) -> str:
    status, _, _ = await refusal_status(port, request)
    assert status in statuses
    return f"HTTP {status}"


async def heavy_fragments(port: int) -> str:
    raw = await RawPeer.connect(port)
    await raw.handshake()
    await raw.send(one_byte_fragments("x" * 20000, 20000))
    frame = await raw.read_frame()
    assert frame is not None
    await raw.aclose()
    header, payload = frame
    if header.opcode is Opcode.CLOSE:
        code = struct.unpack("!H", payload[:2])[0]
        assert code == 1009
        return f"close {code}"
    assert payload == b"x" * 20000
    return "echoed whole"


async def send_until_stalled(raw: RawPeer, data: bytes, most: int) -> int:
    """Send ``data`` up to ``most`` times; stop once a send makes no progress for 0.3 s.

    ``most`` is chosen far beyond what the socket buffers of both directions can hold (tens of
    MiB on Linux loopback, with autotuning), so that reaching it means the server kept
    reading; a stall seen too early on a busy machine only ends the flood sooner. The verdict
    that matters is the server's memory, which the caller measures.
    """
    sent = 0
    while sent < most:
        with trio.move_on_after(0.3):
            await raw.stream.send_all(data)
            sent += 1
            continue
        break  # the server stopped reading: the stream is unusable now, and closed next
    return sent


async def heavy_message_flood(port: int, rss: Callable[[], int], peaks: list[int]) -> str:
    """256 MiB of 64 KiB messages whose echoes are never read: the server must push back."""
    raw = await RawPeer.connect(port)
    await raw.handshake()
    frame = _frame(Opcode.BINARY, os.urandom(64 * 1024))
    sent = await send_until_stalled(raw, frame, 4096)
    peaks.append(rss())
    await raw.aclose()
    assert sent < 4096, "256 MiB went through although nobody read the echoes"
    return f"blocked after {sent * 64 // 1024} MiB"


async def heavy_ping_flood(port: int, rss: Callable[[], int], peaks: list[int]) -> str:
    """Pings with 125-byte payloads whose pongs are never read: up to 2 000 000 pings (260 MB),
    ten times what the socket buffers can hold, so the server must stop reading."""
    raw = await RawPeer.connect(port)
    await raw.handshake()
    batch = b"".join(_frame(Opcode.PING, os.urandom(125)) for _ in range(1000))
    sent = await send_until_stalled(raw, batch, 2000)
    peaks.append(rss())
    await raw.aclose()
    assert sent < 2000, "2 000 000 pings went through although nobody read the pongs"
    return f"blocked after {sent}k pings"


async def heavy_connection_flood(
    port: int, pid: int, rss: Callable[[], int], peaks: list[int]
) -> str:
    """1000 connections that send half a handshake and stay."""
    streams = []
    fds = _open_fds(pid)
    try:
        for _ in range(1000):
            stream = await trio.open_tcp_stream(HOST, port)
            streams.append(stream)
            await stream.send_all(upgrade_request()[:40])
        # The server has accepted them all (a file descriptor each), so RSS counts them.
        await wait_until(
            lambda: _open_fds(pid) >= fds + 1000, "1000 connections accepted", timeout=60
        )
        peaks.append(rss())
        await assert_served(port)
    finally:
        for stream in streams:
            await trio.aclose_forcefully(stream)
    return "served alongside"


# About 3 s here; a server process traced by coverage (nox -s coverage) runs several times
# slower, and the verdict is about memory, not speed: a generous bound.
@bounded(timeout=120)
async def test_memory_of_a_server_process_under_hostile_inputs() -> None:
    """Memory movement of ``examples/echo_server.py`` (64 MiB message limit) per input.

    ``after`` is VmRSS once the input is dealt with, ``peak`` the high-water mark during it
    (VmHWM, reset before each input) or, for the floods, VmRSS while the server is pushed
    back on. The bomb may legitimately inflate up to the 64 MiB limit before it is refused.
    """
    process = await trio.lowlevel.open_process(
        [sys.executable, str(REPO / "examples" / "echo_server.py"), "--host", HOST, "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    pid = process.pid

    def rss() -> int:
        return _status_kib(pid, "VmRSS")

    rows: list[tuple[str, str, int, int, int]] = []
    limit_kib = 50 * 1024
    try:
        with trio.fail_after(110):
            # "echo server on ws://HOST:PORT/", printed once it listens.
            url = (await first_line(process, "the echo server")).decode().split()[-1]
            port = int(url.rstrip("/").rpartition(":")[2])
            await assert_served(port)  # warm up: imports, first connection
            inputs: list[tuple[str, Callable[[list[int]], Awaitable[str]]]] = [
                ("decompression bomb (1 MiB -> 1 GiB)", lambda peaks: heavy_bomb(port)),
                (
                    "200 kB header",
                    lambda peaks: heavy_request(port, big_header_request(), {431}),
                ),
                (
                    "5000 headers",
                    lambda peaks: heavy_request(port, many_headers_request(), {431, 400}),
                ),
                ("20 000 one-byte fragments", lambda peaks: heavy_fragments(port)),
                (
                    "message flood, echoes unread",
                    lambda peaks: heavy_message_flood(port, rss, peaks),
                ),
                ("ping flood, pongs unread", lambda peaks: heavy_ping_flood(port, rss, peaks)),
                (
                    "1000 half handshakes",
                    lambda peaks: heavy_connection_flood(port, pid, rss, peaks),
                ),
            ]
            for name, run in inputs:
                before = rss()
                peak_known = _reset_peak(pid)
                peaks: list[int] = []
                answer = await run(peaks)
                await assert_served(port)
                # What the input cost is given back: wait for it rather than for a fixed time.
                with trio.move_on_after(5):
                    while rss() - before >= limit_kib:
                        await trio.sleep(0.05)  # polls (5 s bound)
                after = rss()
                if peak_known:
                    peaks.append(_status_kib(pid, "VmHWM"))
                peak = max([after, *peaks])
                rows.append((name, answer, before, after, peak))
                assert process.poll() is None, f"the server died on {name}"
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()

    def mib(kib: int) -> str:
        return f"{kib / 1024:+.1f}" if kib else "0.0"

    lines = [
        "| input | answer | RSS before (MiB) | RSS after - before (MiB) | peak - before (MiB) |",
        "|---|---|---:|---:|---:|",
    ]
    for name, answer, before, after, peak in rows:
        lines.append(
            f"| {name} | {answer} | {before / 1024:.1f} | {mib(after - before)} "
            f"| {mib(peak - before)} |"
        )
    table = "\n".join(lines)
    print("\n" + table)
    out = REPO / "build" / "hostile_table.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        "Memory of `python examples/echo_server.py` (64 MiB message limit) under hostile "
        f"inputs; {time.strftime('%Y-%m-%d')}, Python {sys.version.split()[0]}.\n\n" + table + "\n"
    )
    for name, _, before, after, peak in rows:
        assert after - before < limit_kib, f"{name}: RSS grew by {(after - before) // 1024} MiB"
        if not name.startswith("decompression bomb"):
            assert peak - before < limit_kib, f"{name}: peak {(peak - before) // 1024} MiB"
        else:
            # Inflating stops one byte past the 64 MiB limit.
            assert peak - before < 64 * 1024 + limit_kib, f"{name}: peak {peak // 1024} MiB"
