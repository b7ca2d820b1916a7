"""What several test files share; each test file is named after the module it tests.

Servers on 127.0.0.1 (``running_server``, ``serving`` with short timeouts), the byte-level
peer ``RawPeer`` that sends what a well-behaved peer never would (unmasked frames, bad UTF-8,
broken handshakes) and reads exactly what comes back, the sans-I/O request builders, in-memory
handshakes, the ``serve`` CLI and worker processes, broadcast rooms, raw HTTP.

Waiting: ``wait_until(condition)`` polls a state the test cannot be told about, bounded;
``wait_stalled()`` returns once no task has anything left to do. Neither sleeps a fixed time
in the hope that something happened.
"""

from __future__ import annotations

import base64
import functools
import os
import re
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

import trio_ws
from trio_ws.protocol._frames import RSV1, FrameHeader, FrameParser, Opcode, encode_frame
from trio_ws.protocol._handshake import Request, ServerHandshake, accept_key
from trio_ws.testing import open_memory_pair

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

HOST = "127.0.0.1"

#: The repository (examples/ and the package).
REPO = Path(__file__).resolve().parent.parent

#: Bound on waiting for a subprocess (Python start-up included).
PROCESS_TIMEOUT = 20.0

#: Upper bound, in seconds, on every test body (``trio.fail_after``): nothing here may hang.
TEST_TIMEOUT = 10.0


async def wait_until(
    condition: Callable[[], object], what: str = "the condition", *, timeout: float = TEST_TIMEOUT
) -> None:
    """Return as soon as ``condition()`` is true; fail after ``timeout`` seconds.

    This polls for a state the test cannot be told about (a server-side count, a process's
    memory), every few milliseconds: it waits for that state, however long it takes on a slow
    machine, instead of sleeping a fixed time in the hope that it was reached.
    """
    with trio.move_on_after(timeout):
        while not condition():
            await trio.sleep(0.005)
        return
    raise AssertionError(f"not within {timeout} s: {what}")


async def wait_stalled(cushion: float = 0.1) -> None:
    """Return once no task of this Trio run has had anything to do for ``cushion`` seconds.

    Then a sender behind a peer that does not read has stopped for good (the kernel's socket
    buffers are full: nothing will wake it), and whatever a message that was sent could
    cause has happened. Unlike "no progress for N seconds", this is not fooled by a machine
    too busy to run this process: I/O that is ready wakes a task and restarts the cushion.
    """
    await trio.testing.wait_all_tasks_blocked(cushion)


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


def upgrade_request(
    *,
    path: str = "/",
    method: str = "GET",
    version: str = "13",
    extra: str = "",
    key: str | None = None,
) -> bytes:
    """Upgrade request bytes; ``extra`` is inserted as is (header lines ending in CRLF)."""
    key = key or base64.b64encode(os.urandom(16)).decode("ascii")
    return (
        f"{method} {path} HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\n"
        f"Sec-WebSocket-Version: {version}\r\n"
        f"{extra}"
        "\r\n"
    ).encode("latin-1")


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

    async def send(self, data: bytes) -> bool:
        """Send; False if the peer already closed (a refusal may come before the end)."""
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

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
        """Send a valid upgrade request and check the 101; any bytes after it stay buffered.
        With permessage-deflate negotiated, frames with RSV1 are read (compressed)."""
        key = base64.b64encode(os.urandom(16)).decode("ascii")
        await self.send(upgrade_request(path=path, extra=extra, key=key))
        status, headers, _ = await self.read_http_response()
        assert status == 101, status
        assert headers["sec-websocket-accept"] == accept_key(key)
        if "permessage-deflate" in headers.get("sec-websocket-extensions", ""):
            self.parser.allowed_rsv = RSV1
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
        self,
        opcode: int,
        data: bytes,
        *,
        fin: bool = True,
        rsv: int = 0,
        masked: bool | None = None,
    ) -> bool:
        """Send one frame; masked by default as a client, unmasked as a server. False if the
        peer already closed."""
        if masked is None:
            masked = not self.server
        if opcode == Opcode.CLOSE:
            self.close_sent = True
        mask = os.urandom(4) if masked else None
        return await self.send(encode_frame(opcode, data, fin=fin, rsv=rsv, mask=mask))

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


async def echo_handler_loop(ws: trio_ws.WebSocketConnection) -> None:
    """Echo every message of an accepted connection back until it closes."""
    async for message in ws:
        await ws.send(message)


async def assert_still_serving(port: int) -> None:
    """A normal client still gets an echo from the server on ``port``."""
    async with trio_ws.open_websocket(HOST, port) as ws:
        await ws.send("alive?")
        assert await ws.receive() == "alive?"


# Opening handshake bytes (sans-I/O tests) -------------------------------------------------

#: The key of RFC 6455 section 1.3's example.
RFC_KEY = "dGhlIHNhbXBsZSBub25jZQ=="

BASE_HEADERS = [
    ("Host", "server.example.com"),
    ("Upgrade", "websocket"),
    ("Connection", "Upgrade"),
    ("Sec-WebSocket-Key", RFC_KEY),
    ("Sec-WebSocket-Version", "13"),
]


def make_request(
    headers: list[tuple[str, str]] | None = None,
    *,
    method: str = "GET",
    target: str = "/chat",
    version: str = "1.1",
    drop: tuple[str, ...] = (),
    replace: dict[str, str] | None = None,
) -> bytes:
    """Raw request bytes: the base headers, minus ``drop``, with ``replace`` values."""
    if headers is None:
        headers = [(n, (replace or {}).get(n, v)) for n, v in BASE_HEADERS if n.lower() not in drop]
    head = f"{method} {target} HTTP/{version}\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode("latin-1") + b"\r\n"


def server_request(data: bytes, **kwargs: int) -> Request:
    """The request a sans-I/O ServerHandshake reads from ``data`` (which must be complete)."""
    hs = ServerHandshake(**kwargs)
    request = hs.receive_data(data)
    assert request is not None
    return request


# In-memory handshakes (trio_ws.testing) ---------------------------------------------------


async def accept_and_report(request: trio_ws.WebSocketRequest, **params: str) -> None:
    """Accept, then send back a description of the route's parameters."""
    ws = await request.accept()
    await ws.send(repr(sorted(params.items())))


async def handshake_status(handler: Any, resource: str, **kwargs: Any) -> trio_ws.HandshakeError:
    """The HandshakeError a client gets from ``handler`` served in memory at ``resource``."""
    with trio.fail_after(TEST_TIMEOUT), pytest.raises(trio_ws.HandshakeError) as info:
        async with open_memory_pair(handler, resource, **kwargs):
            pass
    return info.value


# `python -m trio_ws serve` in a subprocess, worker processes -------------------------------


@asynccontextmanager
async def cli_server(*args: str) -> AsyncIterator[tuple[str, trio.Process, list[str]]]:
    """``python -m trio_ws serve ARGS``: yields its URL, the process and its first lines."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", "serve", *args],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    try:
        lines: list[str] = []
        with trio.fail_after(PROCESS_TIMEOUT):
            buffer = b""
            while b"\n" not in buffer or (args.count("--workers") and buffer.count(b"\n") < 2):
                chunk = await process.stdout.receive_some(4096)
                assert chunk, f"the server exited before it was ready: {buffer!r}"
                buffer += chunk
        lines = buffer.decode().splitlines()
        yield lines[0].split()[-1], process, lines
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()


def worker_pids(line: str) -> list[int]:
    """The worker pids in the server's second line, "2 workers (pids 1, 2)..."."""
    match = re.search(r"pids ([\d, ]+)\)", line)
    assert match, line
    return [int(pid) for pid in match.group(1).split(", ")]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped yet has stopped running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no /proc: trust kill()
    return stat.rpartition(")")[2].split()[0] != "Z"


# Broadcast rooms --------------------------------------------------------------------------------


def relay(room: trio_ws.Room) -> Any:
    """A handler that joins ``room`` and broadcasts every message it receives to it."""

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            async for message in ws:
                room.broadcast(message)

    return handler


async def wait_members(room: trio_ws.Room, count: int) -> None:
    """Wait until ``room`` has ``count`` members (the server adds them after the handshake)."""
    await wait_until(lambda: len(room) >= count, f"{count} members in the room")


# Servers with short timeouts (hostile peers, faults) ------------------------------------------

#: The handshake and close timeouts of ``serving()``: a misbehaving peer is dropped quickly.
SHORT_TIMEOUT = 0.5
SHORT_OPTIONS = trio_ws.WebSocketOptions(close_timeout=SHORT_TIMEOUT)


@asynccontextmanager
async def serving(
    handler: Callable[[trio_ws.WebSocketRequest], Awaitable[None]] = echo_handler, **kwargs: Any
) -> AsyncIterator[trio_ws.WebSocketServer]:
    """A trio_ws server on 127.0.0.1 and a free port; ``aclose()``d at the end of the block."""
    kwargs.setdefault("handshake_timeout", SHORT_TIMEOUT)
    kwargs.setdefault("options", SHORT_OPTIONS)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio_ws.serve_websocket, handler, HOST, 0, **kwargs)
        )
        try:
            yield server
        finally:
            with trio.fail_after(SHORT_TIMEOUT + 3):
                await server.aclose()
    # Leaving the nursery means every task of the server is gone.


async def assert_served(port: int, **kwargs: Any) -> None:
    """A normal trio_ws client gets its text and binary messages echoed."""
    kwargs.setdefault("options", SHORT_OPTIONS)
    with trio.fail_after(5):
        async with trio_ws.open_websocket(HOST, port, "/", **kwargs) as ws:
            await ws.send("still serving? é")
            assert await ws.receive() == "still serving? é"
            await ws.send(b"\x00\x01binary")
            assert await ws.receive() == b"\x00\x01binary"


# Raw HTTP --------------------------------------------------------------------------------------


async def http_exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes; the whole response."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        await stream.send_all(request)
        response = b""
        while chunk := await stream.receive_some(65536):
            response += chunk
    return response


def status_of(response: bytes) -> int:
    """The status code of a raw HTTP response."""
    return int(response.split(b" ", 2)[1])


def drained(conn: trio_ws.protocol.Connection, *_calls: None) -> bytes:
    """Everything ``conn`` queued to write, joined: ``b"".join(conn.data_to_send())``.

    Pass the calls that queue it as arguments, which run first:
    ``drained(client, client.send_message("hi"))`` is the bytes of that message.
    """
    return b"".join(conn.data_to_send())
