"""A WebSocket connection on a Trio stream: one reader task, one writer task.

The application sends through a bounded memory channel to the writer, which encodes and
writes frames in order (several queued frames per ``send_all``); the reader parses frames and
queues whole messages in a bounded list. When that list is full the reader stops reading
the socket, which pushes back on the peer; control frames read before that are still answered.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import trio

from ._connection import (
    CloseReceived,
    Connection,
    ConnectionState,
    Message,
    MessageChunk,
    Pong,
    Role,
)
from ._deflate import PerMessageDeflate
from ._errors import ConnectionClosed, LocalProtocolError
from ._frames import Opcode
from ._handshake import Request
from ._headers import Headers

__all__ = ["WebSocketConnection", "WebSocketOptions"]

logger = logging.getLogger("trio_ws")

#: What a stream raises once the peer or our side has closed it.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

#: Bytes asked of the socket per read: small enough that the buffer is not an mmap() (glibc's
#: threshold is 128 KiB), growing up to the maximum while reads come back full.
_READ_SIZE = 64 * 1024
_MAX_READ_SIZE = 1024 * 1024


@attrs.frozen
class WebSocketOptions:
    """Limits and timeouts of a connection; the same on server and client."""

    #: Largest message accepted, in bytes (after decompression); larger ones close with 1009.
    max_message_size: int | None = 1024 * 1024
    #: Largest single frame accepted; ``None`` means only the message limit applies.
    max_frame_size: int | None = None
    #: Received messages held for the application before the reader stops reading.
    max_queue: int = 16
    #: Outgoing frames queued for the writer before ``send()`` waits.
    write_queue: int = 16
    #: Seconds to wait for the closing handshake before closing the TCP connection.
    close_timeout: float = 10.0
    #: Largest HTTP request or response head (request line and headers), in bytes.
    max_head_size: int = 16 * 1024
    #: Seconds between keepalive pings; ``None`` turns keepalive off.
    ping_interval: float | None = 20.0
    #: Seconds to wait for a keepalive pong before closing with 1011.
    ping_timeout: float | None = 20.0
    #: permessage-deflate settings (RFC 7692), offered or accepted; ``None`` turns it off.
    compression: PerMessageDeflate | None = attrs.field(factory=PerMessageDeflate)


# Items on the writer's channel: encoded frame bytes, or a request for the core to encode.
_TEXT_OR_BYTES = 0
_PING = 1
_CLOSE = 2
_FRAME = 3
_UNCOMPRESSED = 4
_FRAGMENT = 5

#: What ``send()`` takes to send one message in fragments.
Fragments = Iterable[str] | Iterable[bytes] | AsyncIterable[str] | AsyncIterable[bytes]


async def _aiter(fragments: Fragments) -> AsyncIterator[str | bytes]:
    if isinstance(fragments, AsyncIterable):
        async for fragment in fragments:
            yield fragment
    else:
        for fragment in fragments:
            yield fragment


class WebSocketConnection:
    """An open WebSocket connection.

    ``await send(msg)``, ``await receive()`` or ``async for msg in ws``, ``await ping()``,
    ``await aclose(code, reason)``. Once closed, every call raises ``ConnectionClosed`` with
    the close code and reason.
    """

    def __init__(
        self,
        stream: trio.abc.Stream,
        core: Connection,
        options: WebSocketOptions,
        *,
        request: Request,
        response_headers: Headers,
    ) -> None:
        self._stream = stream
        self._core = core
        self._options = options
        self._request = request
        self._response_headers = response_headers
        # A list, not a deque: it holds at most about max_queue items, and an empty deque
        # costs 600 bytes per connection.
        self._messages: list[str | bytes | MessageChunk] = []
        self._partial: list[str | bytes] = []  # pieces of a message receive() is joining
        self._fragmenting = False  # a task is sending a message in fragments
        self._fragment_lot = trio.lowlevel.ParkingLot()
        self._message_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._receivers_waiting = 0
        self._out_send, self._out_recv = trio.open_memory_channel[Any](options.write_queue)
        self._pings: dict[bytes, trio.Event] = {}
        # We started closing: no more sends, and incoming messages are dropped.
        self._closing = False
        self._finished = trio.Event()  # the closing handshake completed or the stream ended
        self._done = trio.Event()  # the stream is closed and both tasks are gone
        self._cancel_scope: trio.CancelScope | None = None
        self._close_deadline = float("inf")
        #: Called once, without arguments, when the connection is over.
        self._on_close: list[Callable[[], object]] = []
        self._writer_done = trio.Event()
        self._writer_started = False
        self._nursery: trio.Nursery | None = None
        # The writer waits on an empty channel: a sender may write directly (_write_now).
        self._idle = False
        self._fd: int | None = stream.socket.fileno() if type(stream) is trio.SocketStream else None

    # Properties -------------------------------------------------------------------------------

    @property
    def is_client(self) -> bool:
        """True on the client side (the side that masks its frames)."""
        return self._core.role is Role.CLIENT

    @property
    def state(self) -> ConnectionState:
        """CONNECTING, OPEN, CLOSING or CLOSED (RFC 6455 sections 4 and 7)."""
        return self._core.state

    @property
    def closed(self) -> bool:
        """True once the connection is closed (``state`` is ``CLOSED``)."""
        return self._core.state is ConnectionState.CLOSED

    @property
    def request(self) -> Request:
        """The opening handshake request (path, query, headers, offered subprotocols)."""
        return self._request

    @property
    def path(self) -> str:
        """The percent-decoded path of the request, e.g. ``/chat``."""
        return self._request.path

    @property
    def request_headers(self) -> Headers:
        """The opening handshake request headers (on a client, the ones it sent)."""
        return self._request.headers

    @property
    def response_headers(self) -> Headers:
        """The headers of the 101 response."""
        return self._response_headers

    @property
    def subprotocol(self) -> str | None:
        """The subprotocol the server chose, or ``None``."""
        return self._core.subprotocol

    @property
    def extensions(self) -> list[str]:
        """Names of the negotiated extensions."""
        return [ext.name for ext in self._core.extensions]

    @property
    def remote(self) -> Any:
        """The peer's address as the socket reports it (e.g. ``("127.0.0.1", 54321)``)."""
        return _address(self._stream, peer=True)

    @property
    def local(self) -> Any:
        """Our own socket address (``None`` without a socket, e.g. in memory)."""
        return _address(self._stream, peer=False)

    @property
    def close_code(self) -> int | None:
        """How the connection closed: the peer's close code, ours on failure, 1006 if neither.

        ``None`` while it is open.
        """
        if self._core.state is not ConnectionState.CLOSED:
            return None
        return self._closed_exception().code

    @property
    def close_reason(self) -> str | None:
        """The reason that goes with ``close_code``; ``None`` while the connection is open."""
        if self._core.state is not ConnectionState.CLOSED:
            return None
        return self._closed_exception().reason

    def _closed_exception(self) -> ConnectionClosed:
        code, reason = self._core.close_outcome
        return ConnectionClosed(code, reason, by_peer=self._core.closed_by_peer)

    # Application API --------------------------------------------------------------------------

    async def send(
        self,
        message: str | bytes | bytearray | memoryview | Fragments,
        *,
        compress: bool = True,
    ) -> None:
        """Send one message: text for ``str``, binary for bytes-like.

        An iterable or async iterable of ``str`` (or of bytes-like) sends one message in
        fragments as they come, without building it whole (fragments are not compressed).
        Waits while the outgoing queue is full. Raises ``ConnectionClosed`` once closing.
        ``compress=False`` sends this message uncompressed (e.g. data already compressed).
        """
        while self._fragmenting:
            await self._fragment_lot.park()  # another task is sending a fragmented message
        if isinstance(message, (bytearray, memoryview)):
            message = bytes(message)
        elif not isinstance(message, (str, bytes)):
            await self._send_fragments(message)
            return
        # Checked first: encoding moves the compression state on, so it happens only if the
        # frame is then surely written (or handed to the writer).
        if self._idle and self._fd is not None and self._sendable:
            # Fast path: encode and write now, without waking the writer task.
            await trio.lowlevel.checkpoint_if_cancelled()
            self._write_now(self._core.send_message(message, compress=compress))
            return  # written, or handed to the writer (or the connection is failing anyway)
        await self._queue((_TEXT_OR_BYTES if compress else _UNCOMPRESSED, message))

    async def _queue(self, item: tuple[int, Any]) -> None:
        if not self._sendable:
            await trio.lowlevel.checkpoint()
            raise self._closed_exception()
        try:
            await self._enqueue(item)
        except _GONE:
            raise self._closed_exception() from None

    async def _send_fragments(self, fragments: Fragments) -> None:
        """RFC 6455 section 5.4: the first frame typed, then continuations, the last with FIN."""
        self._fragmenting = True
        opcode: Opcode | None = None
        try:
            async for fragment in _aiter(fragments):
                if isinstance(fragment, str):
                    kind, payload = Opcode.TEXT, fragment.encode("utf-8")
                else:
                    kind, payload = Opcode.BINARY, bytes(fragment)
                if opcode is None:
                    opcode = kind
                    await self._queue((_FRAGMENT, (opcode, payload, False)))
                elif kind is not opcode:
                    raise TypeError("the fragments of a message must all be str or all bytes")
                else:
                    await self._queue((_FRAGMENT, (Opcode.CONTINUATION, payload, False)))
            if opcode is None:
                raise TypeError("send() needs at least one fragment")
            await self._queue((_FRAGMENT, (Opcode.CONTINUATION, b"", True)))
        except BaseException:
            # A message left unfinished would be garbage to the peer: close instead.
            if opcode is not None and self._start_close():
                with contextlib.suppress(trio.WouldBlock, *_GONE):
                    self._enqueue_nowait((_CLOSE, (1011, "message not finished")))
            raise
        finally:
            self._fragmenting = False
            self._fragment_lot.unpark_all()

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises ``ConnectionClosed`` once the connection is closed and no message is left.
        """
        while True:
            item = await self._take()
            if not isinstance(item, MessageChunk):
                return item
            # A message that came in pieces: join them (kept on self if we are cancelled).
            self._partial.append(item.data)
            if item.final:
                parts, self._partial = self._partial, []
                if isinstance(parts[0], str):
                    return "".join(parts)  # type: ignore[arg-type]
                return b"".join(parts)  # type: ignore[arg-type]

    async def receive_stream(self) -> AsyncIterator[str | bytes]:
        """The next message piece by piece, as its frames arrive, without joining them.

        ``async for piece in ws.receive_stream():`` -- pieces are ``str`` for a text message
        (decoded already) and ``bytes`` for a binary one; a small message comes in one piece.
        """
        if self._partial:  # a cancelled receive() had started this message
            parts, self._partial = self._partial, []
            for part in parts:
                yield part
        else:
            item = await self._take()
            if not isinstance(item, MessageChunk):
                yield item
                return
            yield item.data
            if item.final:
                return
        while True:
            item = await self._take()
            assert type(item) is MessageChunk
            if item.data:  # the final frame of a fragmented message is often empty
                yield item.data
            if item.final:
                return

    async def _take(self) -> str | bytes | MessageChunk:
        """The next queued item, waiting for one; ``ConnectionClosed`` once none will come."""
        await trio.lowlevel.checkpoint_if_cancelled()
        messages = self._messages
        while not messages:
            if self._closing and not self._finished.is_set():
                await self._finished.wait()  # we are closing: report how it ends
            if self._finished.is_set():
                raise self._closed_exception()
            self._receivers_waiting += 1
            self._drained_lot.unpark_all()
            try:
                await self._message_lot.park()
            finally:
                self._receivers_waiting -= 1
        message = messages.pop(0)
        if len(messages) < self._options.max_queue:
            self._space_lot.unpark_all()
        return message

    def __aiter__(self) -> AsyncIterator[str | bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[str | bytes]:
        """Messages until the connection closes; a normal close (1000/1001) ends the loop."""
        while True:
            try:
                yield await self.receive()
            except ConnectionClosed as exc:
                if exc.code in (1000, 1001):
                    return
                raise

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (RFC 6455 section 5.5.2).

        ``payload`` (at most 125 bytes) defaults to 4 random bytes; it must be unique among
        pings in flight.
        """
        if payload is None:
            payload = os.urandom(4)
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        if not self._sendable:
            await trio.lowlevel.checkpoint()
            raise self._closed_exception()
        event = trio.Event()
        self._pings[payload] = event
        try:
            await self._enqueue((_PING, payload))
            await event.wait()
        except _GONE:
            raise self._closed_exception() from None
        finally:
            # A pong removes its ping; one still registered was woken by the close.
            unanswered = self._pings.pop(payload, None) is not None
        if unanswered:
            raise self._closed_exception()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` and wait for the closing handshake.

        Messages already sent are written first. After ``close_timeout`` seconds the TCP
        connection is closed anyway. Does nothing more if the connection is already closing.
        """
        if self._start_close():
            try:
                self._enqueue_nowait((_CLOSE, (code, reason)))
            except trio.WouldBlock:
                # The peer is slow to read what we sent: wait (bounded by the close deadline).
                with trio.CancelScope(deadline=self._close_deadline):
                    await self._enqueue((_CLOSE, (code, reason)))
            except _GONE:
                pass
        await self._done.wait()

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start closing without waiting, dropping outgoing frames not yet written.

        For a peer that does not keep up (a broadcast's slow member): the close frame goes
        out as soon as the socket takes it; after ``close_timeout`` the TCP connection closes.
        """
        if self._start_close():
            while True:
                try:
                    self._out_recv.receive_nowait()
                except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                    break
            with contextlib.suppress(trio.WouldBlock, *_GONE):
                self._enqueue_nowait((_CLOSE, (code, reason)))

    @property
    def _sendable(self) -> bool:
        """Open, and we have not started closing: messages may still be sent."""
        return not self._closing and self._core.state is ConnectionState.OPEN

    def _start_close(self) -> bool:
        """Mark the connection closing and arm the close deadline; False if already done."""
        if not self._sendable:
            return False
        self._closing = True
        self._messages.clear()
        self._space_lot.unpark_all()
        self._message_lot.unpark_all()
        self._drained_lot.unpark_all()
        self._close_deadline = trio.current_time() + self._options.close_timeout
        if self._cancel_scope is not None:
            self._cancel_scope.deadline = min(self._cancel_scope.deadline, self._close_deadline)
        return True

    # Tasks ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the connection's reader and writer until it is over; start it in a nursery.

        Only needed after ``client_handshake()``: the server, ``open_websocket()`` and
        ``connect_websocket()`` run their connections themselves.
        """
        await self._run()

    async def _run(self, *, shield: bool = False) -> None:
        """Run the reader and writer until the connection is over, then close the stream.

        ``shield``: outer cancellation does not stop the tasks; only ``aclose()`` (bounded by
        ``close_timeout``) or the end of the connection does.
        """
        try:
            with trio.CancelScope(deadline=self._close_deadline, shield=shield) as scope:
                self._cancel_scope = scope
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    if self._fd is None or self._out_recv.statistics().current_buffer_used:
                        self._start_writer()  # no direct writes here, or frames already queued
                    else:
                        self._idle = True
                    if self._options.ping_interval is not None:
                        nursery.start_soon(self._keepalive, self._options.ping_interval)
                    await self._reader()
                    if self._core.failure is not None:
                        logger.info(
                            "connection with %s failed: %s", self.remote, self._core.failure
                        )
                    self._finish()
                    if not self._writer_started:
                        self._writer_done.set()  # nothing was ever queued
                    # Let the writer flush what is queued, our close frame included.
                    self._out_send.close()
                    if not self._writer_done.is_set():
                        with trio.move_on_after(self._options.close_timeout):
                            await self._writer_done.wait()
                    nursery.cancel_scope.cancel()
                await self._linger()
        finally:
            self._finish()
            self._out_send.close()
            self._done.set()
            await trio.aclose_forcefully(self._stream)

    async def _keepalive(self, interval: float) -> None:
        """Ping every ``interval`` seconds; close with 1011 if a pong is late (RFC 6455 7.4.1)."""
        timeout = self._options.ping_timeout
        while True:
            await trio.sleep(interval)
            try:
                with trio.move_on_after(timeout if timeout is not None else float("inf")):
                    await self.ping()
                    continue
            except ConnectionClosed:
                return
            logger.info("keepalive ping to %s timed out", self.remote)
            self.close_nowait(1011, "keepalive ping timeout")
            return

    async def _linger(self) -> None:
        """After the close frames: who closes TCP first (RFC 6455 section 7.1.1)."""
        core = self._core
        if core.role is Role.SERVER and core.failure is None:
            return  # the server closes the TCP connection first
        # A client waits for the server to close; after a failure, we half-close and drain so
        # that the peer reads our close frame before any reset.
        if core.failure is not None:
            send_eof = getattr(self._stream, "send_eof", None)
            if send_eof is not None:
                with contextlib.suppress(*_GONE):
                    await send_eof()
        with trio.move_on_after(self._options.close_timeout):
            try:
                while await self._stream.receive_some(_READ_SIZE):
                    pass
            except _GONE:
                pass

    def _finish(self) -> None:
        """The connection is over: wake everyone waiting on it."""
        if self._finished.is_set():
            return
        self._fd = None  # never write to a descriptor that may be closed and reused
        if self._core.state is not ConnectionState.CLOSED:
            self._core.receive_eof()
        self._finished.set()
        self._message_lot.unpark_all()
        self._space_lot.unpark_all()
        for event in self._pings.values():
            event.set()
        callbacks, self._on_close = self._on_close, []
        for callback in callbacks:
            callback()

    async def _reader(self) -> None:
        core = self._core
        stream = self._stream
        max_queue = self._options.max_queue
        messages = self._messages
        try:
            data: bytes | bytearray = b""  # frames that came with the handshake are buffered
            read_size = _READ_SIZE
            while True:
                events = core.receive_data(data)
                out = core.data_to_send()
                if out:
                    await self._queue_raw(out)
                for event in events:
                    if type(event) is Message:
                        if not self._closing:
                            messages.append(event.data)
                            self._message_lot.unpark_all()
                    elif type(event) is MessageChunk:
                        if not self._closing:  # pieces queue whole: receive() joins them
                            messages.append(event)
                            self._message_lot.unpark_all()
                    elif type(event) is Pong:
                        self._on_pong(event.payload)
                    elif type(event) is CloseReceived:
                        pass  # the core queued our reply; state is CLOSED
                if core.state is ConnectionState.CLOSED:
                    return
                if core.failure_pending:
                    # Let the application answer the messages before the violation first.
                    await self._wait_drained()
                    data = b""
                    continue
                while len(messages) >= max_queue and not self._closing:
                    await self._space_lot.park()
                data = await stream.receive_some(read_size)
                if len(data) == read_size:
                    read_size = min(read_size * 2, _MAX_READ_SIZE)
                elif read_size > _READ_SIZE and len(data) < _READ_SIZE:
                    read_size = _READ_SIZE
                if not data:
                    core.receive_eof()
                    return
        except _GONE:
            core.receive_eof()

    async def _wait_drained(self) -> None:
        """Wait until the application asked for a message after taking every queued one."""
        with trio.move_on_after(self._options.close_timeout):
            while not (self._closing or (not self._messages and self._receivers_waiting)):
                await self._drained_lot.park()

    async def _queue_raw(self, frame: bytes) -> None:
        if self._write_now(frame):
            return
        try:
            self._enqueue_nowait(frame)
        except trio.WouldBlock:
            await self._enqueue(frame)
        except _GONE:
            pass

    def _on_pong(self, payload: bytes) -> None:
        # Section 5.5.3: a pong may answer only the latest ping; it acknowledges earlier ones.
        if payload not in self._pings:
            return
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break

    async def _writer(self) -> None:
        stream = self._stream
        recv = self._out_recv
        try:
            while True:
                try:
                    item = recv.receive_nowait()
                except trio.WouldBlock:
                    # Nothing queued, nothing being written: senders may write directly.
                    self._idle = True
                    try:
                        item = await recv.receive()
                    finally:
                        self._idle = False
                batch = [item]
                while True:
                    try:
                        batch.append(recv.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break  # (at the end of the channel: write this batch, then stop)
                data = b"".join(self._encode(batch))
                if data:
                    await stream.send_all(data)
        except trio.EndOfChannel:
            pass
        except _GONE:
            # The peer is gone: nothing more can be written; the reader will see the end.
            pass
        finally:
            self._writer_done.set()

    def _write_now(self, data: bytes) -> bool:
        """Write ``data`` from the calling task if the writer is idle; False if it is not.

        Like an asyncio transport: one non-blocking write(2), no task switch; whatever the
        socket does not take goes to the writer. Only when nothing is queued or being written,
        so frames keep their order. A plain syscall cannot be cancelled halfway.
        """
        fd = self._fd
        if fd is None or not self._idle:
            return False
        try:
            written = os.write(fd, data)
        except BlockingIOError:
            written = 0
        except OSError:
            return False  # the writer will meet the error and end the connection
        if written < len(data):
            self._enqueue_nowait(data[written:])
        return True

    def _enqueue_nowait(self, item: Any) -> None:
        """Queue an item for the writer (starting it if need be); WouldBlock if full."""
        self._idle = False  # no direct writes until the queue is written out
        self._start_writer()
        self._out_send.send_nowait(item)

    async def _enqueue(self, item: Any) -> None:
        self._idle = False
        self._start_writer()
        await self._out_send.send(item)

    def _start_writer(self) -> None:
        """The writer task starts on first need: a connection whose sends all went out
        directly (the common case for small messages) never has one."""
        if not self._writer_started and self._nursery is not None:
            self._writer_started = True
            self._nursery.start_soon(self._writer)

    def _encode(self, batch: Iterable[Any]) -> Iterable[bytes]:
        core = self._core
        for item in batch:
            if type(item) is bytes:
                yield item  # the core's own output: pongs and close frames
                continue
            kind, value = item
            if core.state is not ConnectionState.OPEN:
                continue  # closing: data queued before the close is dropped
            try:
                if kind == _TEXT_OR_BYTES:
                    yield core.send_message(value)
                elif kind == _FRAME:
                    yield value
                elif kind == _UNCOMPRESSED:
                    yield core.send_message(value, compress=False)
                elif kind == _FRAGMENT:
                    opcode, payload, fin = value
                    yield core.send_frame(opcode, payload, fin=fin)
                elif kind == _PING:
                    yield core.send_ping(value)
                else:
                    yield core.send_close(*value)
            except LocalProtocolError:
                continue


def _address(stream: trio.abc.Stream, *, peer: bool) -> Any:
    inner: Any = stream
    while isinstance(inner, trio.SSLStream):
        inner = inner.transport_stream
    sock = getattr(inner, "socket", None)
    if sock is None:
        return None
    try:
        return sock.getpeername() if peer else sock.getsockname()
    except OSError:
        return None
