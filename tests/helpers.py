"""Shared helpers of the integration and interop tests: servers on loopback and a raw client.

The raw client speaks bytes over a plain Trio TCP stream, so that tests can send what a
well-behaved client never would (unmasked frames, bad UTF-8, oversized headers, broken
handshakes) and read exactly what the server answers.
"""

from __future__ import annotations

import base64
import functools
import os
import socket
import ssl
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import trio
import trustme

import trio_ws
from trio_ws.protocol._frames import FrameHeader, FrameParser, Opcode, encode_frame
from trio_ws.protocol._handshake import accept_key

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

HOST = "127.0.0.1"

#: Upper bound, in seconds, on every test body (``trio.fail_after``): nothing here may hang.
TEST_TIMEOUT = 10.0


def bounded(
    fn: Callable[..., Awaitable[None]] | None = None, *, timeout: float = TEST_TIMEOUT + 2.0
) -> Any:
    """Run an async test under ``trio.fail_after(timeout)``.

    Enough for every test: each wait in the library that a cancellation cannot interrupt
    (a shielded cleanup) has a deadline of its own. Fixtures and parametrize work as usual:
    the wrapper keeps the test's signature.
    """

    def decorate(test: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
        @functools.wraps(test)
        async def wrapper(*args: Any, **kwargs: Any) -> None:
            with trio.fail_after(timeout):
                await test(*args, **kwargs)

        return wrapper

    return decorate if fn is None else decorate(fn)


async def first_line(process: trio.Process, what: str = "the process") -> bytes:
    """The first line a child process writes to its stdout (byte by byte: what follows it
    stays unread); fails if the process closes its stdout first."""
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        chunk = await process.stdout.receive_some(1)
        assert chunk, f"{what} exited before writing a line"
        line += chunk
    return line


#: Sizes around the frame-length encodings of RFC 6455 section 5.2.
EDGE_SIZES = [0, 125, 126, 65535, 65536]

#: The large-message case; the peers' ``max_message_size`` is raised to ``BIG_LIMIT`` for it.
BIG_SIZE = 16 * 1024 * 1024
BIG_LIMIT = 32 * 1024 * 1024


def payload(kind: str, size: int) -> str | bytes:
    """A text (``str``, ASCII so that characters equal bytes) or binary message of ``size``."""
    if kind == "text":
        return ("abcdefghijklmnopqrstuvwxyz0123456789" * (size // 36 + 1))[:size]
    return (bytes(range(256)) * (size // 256 + 1))[:size]


async def echo_handler(request: trio_ws.WebSocketRequest) -> None:
    """Accept and send every message back until the connection closes."""
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


@asynccontextmanager
async def running_server(
    handler: Callable[[trio_ws.WebSocketRequest], Awaitable[None]],
    **kwargs: Any,
) -> AsyncIterator[trio_ws.WebSocketServer]:
    """A trio_ws server on 127.0.0.1 and a free port, stopped at the end of the block."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_ws.serve_websocket, handler, HOST, 0, **kwargs)
        )
        try:
            yield server
        finally:
            await server.aclose()
            nursery.cancel_scope.cancel()


class Raised:
    """What a ``capture()`` block raised.

    ``exc`` is the exception as it came out of the block; ``leaf`` is the same with any
    single-member exception groups peeled off, so that a test can check the details first
    and whether the exception arrived bare (``assert_bare()``) last.
    """

    def __init__(self) -> None:
        self.exc: Exception | None = None

    @property
    def leaf(self) -> Any:
        exc: BaseException | None = self.exc
        while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
            exc = exc.exceptions[0]
        return exc

    def assert_bare(self, expected: type[BaseException]) -> None:
        """The exception left the block as ``expected`` itself, not inside an ExceptionGroup."""
        assert isinstance(self.exc, expected), (
            f"{expected.__name__} came out wrapped in {type(self.exc).__name__}: {self.exc!r}"
        )


@contextmanager
def capture(expected: type[BaseException] | tuple[type[BaseException], ...]) -> Iterator[Raised]:
    """Like ``pytest.raises``, but also accepts ``expected`` inside single-member groups.

    Use ``assert_bare()`` at the end of the test so that the other checks still run.
    """
    raised = Raised()
    try:
        yield raised
    except Exception as exc:
        raised.exc = exc
    else:
        raise AssertionError(f"{expected} was not raised")
    assert isinstance(raised.leaf, expected), f"expected {expected}, got {raised.exc!r}"


def tls_contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """``(server, client)`` TLS contexts: a certificate for 127.0.0.1 from a fresh test CA."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(HOST).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class RawPeer:
    """A byte-level WebSocket endpoint over a plain TCP stream: a client or, with
    ``server=True``, a server (which expects masked frames and sends unmasked ones).
    """

    def __init__(self, stream: trio.SocketStream, *, server: bool = False) -> None:
        self.stream = stream
        self.server = server
        self.buffer = bytearray()
        self.parser = FrameParser(expect_masked=server, max_frame_size=None)
        self.eof = False
        self.close_sent = False

    @classmethod
    async def connect(cls, port: int) -> RawPeer:
        return cls(await trio.open_tcp_stream(HOST, port))

    async def aclose(self) -> None:
        await trio.aclose_forcefully(self.stream)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        """Read more into the buffer; ``False`` at the end of the stream (or a reset)."""
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def read_until_eof(self) -> bytes:
        while await self._fill():
            pass
        data = bytes(self.buffer)
        self.buffer.clear()
        return data

    async def read_http_response(self) -> tuple[int, dict[str, str], bytes]:
        """Status, headers (names in lower case) and body (by Content-Length) of a response."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"no complete HTTP response head: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ", 2)[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        self.buffer = bytearray(rest)
        while len(self.buffer) < length:
            if not await self._fill():
                break
        body = bytes(self.buffer[:length])
        del self.buffer[:length]
        return status, headers, body

    async def handshake(self, path: str = "/", *, extra: str = "") -> dict[str, str]:
        """Send a valid upgrade request and check the 101; any bytes after it stay buffered."""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        await self.send(
            (
                f"GET {path} HTTP/1.1\r\n"
                f"Host: {HOST}\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\n"
                "Sec-WebSocket-Version: 13\r\n"
                f"{extra}"
                "\r\n"
            ).encode("latin-1")
        )
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"no 101 response: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101"), lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        assert headers["sec-websocket-accept"] == accept_key(key)
        self.buffer = bytearray(rest)
        return headers

    async def accept_handshake(self) -> str:
        """Server: read an upgrade request and answer 101; returns the request head."""
        while b"\r\n\r\n" not in self.buffer:
            if not await self._fill():
                raise AssertionError(f"no complete request: {bytes(self.buffer)!r}")
        head, _, rest = bytes(self.buffer).partition(b"\r\n\r\n")
        self.buffer = bytearray(rest)
        text = head.decode("latin-1")
        key = next(
            line.partition(":")[2].strip()
            for line in text.split("\r\n")
            if line.lower().startswith("sec-websocket-key:")
        )
        await self.send(
            (
                "HTTP/1.1 101 Switching Protocols\r\n"
                "Upgrade: websocket\r\n"
                "Connection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept_key(key)}\r\n"
                "\r\n"
            ).encode("latin-1")
        )
        return text

    async def send_frame(
        self, opcode: int, data: bytes, *, fin: bool = True, masked: bool | None = None
    ) -> None:
        """Send one frame; masked by default as a client, unmasked as a server."""
        if masked is None:
            masked = not self.server
        if opcode == Opcode.CLOSE:
            self.close_sent = True
        await self.send(encode_frame(opcode, data, fin=fin, mask=os.urandom(4) if masked else None))

    async def finish(self) -> None:
        """Complete a closing handshake (echoing the peer's close if we sent none), then
        close TCP."""
        with trio.move_on_after(5):
            while True:
                frame = await self.read_frame()
                if frame is None:
                    break
                if frame[0].opcode is Opcode.CLOSE:
                    if not self.close_sent:
                        await self.send_frame(Opcode.CLOSE, frame[1][:2])
                    break
        await self.aclose()

    async def read_frame(self) -> tuple[FrameHeader, bytes] | None:
        """The next whole frame from the peer, or ``None`` if the stream ended first."""
        parts: list[bytes] = []
        if self.buffer:
            self.parser.feed(bytes(self.buffer))
            self.buffer.clear()
        while True:
            item = self.parser.next()
            if item is not None:
                header, piece, done = item
                parts.append(piece)
                if done:
                    return header, b"".join(parts)
                continue
            if not await self._fill():
                return None
            self.parser.feed(bytes(self.buffer))
            self.buffer.clear()

    async def read_close(self) -> tuple[int, str]:
        """Skip data frames until a close frame; its code (1005 if none) and reason."""
        while True:
            frame = await self.read_frame()
            assert frame is not None, "the peer dropped the connection without a close frame"
            header, data = frame
            if header.opcode is Opcode.CLOSE:
                if not data:
                    return 1005, ""
                (code,) = struct.unpack("!H", data[:2])
                return code, data[2:].decode("utf-8")


#: Kept for readability at call sites that play the client.
RawClient = RawPeer


@asynccontextmanager
async def raw_server(script: Callable[[RawPeer], Awaitable[None]]) -> AsyncIterator[int]:
    """A one-connection byte-level server on 127.0.0.1; yields its port.

    It accepts the upgrade, runs ``script(peer)``, then completes the closing handshake.
    """
    (listener,) = await trio.open_tcp_listeners(0, host=HOST)
    port = listener.socket.getsockname()[1]

    async def serve() -> None:
        async with listener:
            stream = await listener.accept()
        peer = RawPeer(stream, server=True)
        try:
            await peer.accept_handshake()
            await script(peer)
            await peer.finish()
        finally:
            await peer.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        try:
            yield port
        finally:
            nursery.cancel_scope.cancel()


def drained(conn: trio_ws.protocol.Connection, *_calls: None) -> bytes:
    """Everything ``conn`` queued to write, joined: ``b"".join(conn.data_to_send())``.

    Pass the calls that queue it as arguments, which run first:
    ``drained(client, client.send_message("hi"))`` is the bytes of that message.
    """
    return b"".join(conn.data_to_send())
