"""A WebSocket connection on a Trio stream: a reader task, and an outbox for what it sends.

Everything sent goes through the connection's ``Outbox`` (``_outbox.py``): written at once
when nothing is queued, else by a writer task that exists only while there is a backlog. The
reader parses frames and queues whole messages in a bounded list; when that list is full it
stops reading the socket, which pushes back on the peer. Keepalive pings are deadlines on a
``Timer`` (``_timer.py``) that a server shares among its connections, not a task each.

Every public ``async`` method is a Trio checkpoint on every path: it can be cancelled on entry
and lets other tasks run before it returns, even when it did not have to wait.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

import attrs
import trio

from ..protocol._connection import (
    Connection,
    ConnectionState,
    Event,
    Message,
    MessageChunk,
    Pong,
    Role,
)
from ..protocol._deflate import PerMessageDeflate
from ..protocol._errors import ConnectionClosed
from ..protocol._frames import Opcode
from ..protocol._handshake import Request
from ..protocol._headers import Headers
from ..protocol._metrics import Metrics
from ._outbox import Offer, Outbox
from ._timer import Timer

__all__ = ["WebSocketConnection", "WebSocketOptions"]

logger = logging.getLogger("trio_ws")

#: What a stream raises once the peer or our side has closed it.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

#: Bytes asked of the socket per read: small enough that the buffer is not an mmap() (glibc's
#: threshold is 128 KiB), growing up to the maximum while reads come back full.
_READ_SIZE = 64 * 1024
_MAX_READ_SIZE = 1024 * 1024

#: Seconds (between one and two of them) after the last receive() before the connection's own
#: task reads the socket again (to answer pings and close frames for an application that
#: stopped receiving).
_HAND_BACK = 0.1


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

    __slots__ = (
        "_abort",
        "_answering",
        "_cancel_scope",
        "_check_pending",
        "_close_callbacks",
        "_close_deadline",
        "_core",
        "_done",
        "_fd",
        "_finished",
        "_inline",
        "_keepalive_ping",
        "_keepalive_sent",
        "_message_lot",
        "_messages",
        "_nursery",
        "_options",
        "_outbox",
        "_partial",
        "_pings",
        "_read_scope",
        "_read_size",
        "_reading",
        "_receivers_waiting",
        "_receives",
        "_receives_seen",
        "_request",
        "_response_headers",
        "_space_lot",
        "_started",
        "_stream",
        "_streaming",
        "_task_running",
        "_timer",
        "_timer_scope",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        core: Connection,
        options: WebSocketOptions,
        *,
        request: Request,
        response_headers: Headers,
        timer: Timer | None = None,
    ) -> None:
        self._stream = stream
        self._core = core
        self._options = options
        self._request = request
        self._response_headers = response_headers
        self._outbox = Outbox(stream, core, limit=options.write_queue)
        # A list, not a deque: it holds at most about max_queue items, and an empty deque
        # costs 600 bytes per connection.
        self._messages: list[str | bytes | MessageChunk] = []
        self._partial: list[str | bytes] = []  # pieces of a message receive() is joining
        self._streaming = False  # receive_stream() handed out part of a message, not its end
        # Receivers wait on _message_lot; the reader waits on _space_lot for the application
        # (room in the queue, or every queued message taken: see _wait_drained).
        self._message_lot = trio.lowlevel.ParkingLot()
        self._space_lot = trio.lowlevel.ParkingLot()
        self._receivers_waiting = 0
        self._pings: dict[bytes, trio.Event] = {}
        self._finished = False  # the closing handshake completed or the stream ended
        self._done = trio.Event()  # the stream is closed and the connection's tasks are gone
        self._cancel_scope: trio.CancelScope | None = None
        self._close_deadline = float("inf")
        self._close_callbacks: dict[object, Callable[[], object]] = {}
        self._timer = timer
        self._nursery: trio.Nursery | None = None  # where its tasks run (start())
        self._keepalive_ping: bytes | None = None
        self._keepalive_sent = float("-inf")
        # Why we ended the connection without a closing handshake (keepalive timeout).
        self._abort: tuple[int, str] | None = None
        # Reading (see "Reading" below).
        self._fd: int | None = stream.socket.fileno() if type(stream) is trio.SocketStream else None
        self._inline = False  # receivers read the socket (not the connection's task)
        self._reading = False  # a task is in a read (only one may be)
        self._read_scope: trio.CancelScope | None = None  # its task's read (to take over)
        self._read_size = _READ_SIZE
        self._answering = False  # the last bytes read made the core answer (pongs...)
        self._receives = 0  # messages taken
        self._receives_seen = 0  # ... when the reading check was armed
        self._check_pending = False  # a reading check is on the timer
        self._started = False  # start() was called
        self._task_running = False  # the connection's task (see _task) is running
        self._timer_scope: trio.CancelScope | None = None  # our own timer's, if we have one

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
        return address(self._stream, peer=True)

    @property
    def local(self) -> Any:
        """Our own socket address (``None`` without a socket, e.g. in memory)."""
        return address(self._stream, peer=False)

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
        core = self._core
        if core.state is not ConnectionState.CLOSED and core.close_sent is not None:
            code, reason = core.close_sent  # we are closing: with our code, until it is over
            return ConnectionClosed(code, reason, by_peer=False)
        code, reason = core.close_outcome
        if code == 1006 and self._abort is not None:
            code, reason = self._abort  # no close frame came back: say why we gave up
        return ConnectionClosed(code, reason, by_peer=self._core.closed_by_peer)

    @property
    def outbox(self) -> Outbox:
        """Where every outgoing frame goes; ``Room`` offers broadcasts to it without waiting."""
        return self._outbox

    @property
    def metrics(self) -> Metrics | None:
        """The ``Metrics`` this connection counts in (its server's); ``None`` if none."""
        return self._core.metrics

    def on_close(self, callback: Callable[[], object]) -> Callable[[], None]:
        """Call ``callback()`` once when the connection is over; returns a function that
        cancels this (so that code which stops caring, e.g. a ``Room`` member leaving,
        leaves nothing behind). Called at once if the connection is over already."""
        if self._finished:
            callback()
            return _nothing
        key = object()
        self._close_callbacks[key] = callback

        def cancel() -> None:
            self._close_callbacks.pop(key, None)

        return cancel

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
        Waits while ``write_queue`` frames wait to be written. Raises ``ConnectionClosed``
        once closing. ``compress=False`` sends this message uncompressed (e.g. data already
        compressed).
        """
        if not isinstance(message, (str, bytes)):
            await self._send_other(message, compress)
            return
        await self._offer(self._outbox.offer, message, compress)

    async def _offer(self, offer: Callable[..., Offer], *args: Any) -> None:
        """``offer(*args)``, waiting while the outbox is full; a checkpoint on every path."""
        await trio.lowlevel.checkpoint_if_cancelled()
        waited = False
        while (result := offer(*args)) is Offer.FULL:
            waited = True
            await self._outbox.wait()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
        if result is Offer.CLOSED:
            raise self._closed_exception()

    async def _send_other(
        self, message: bytearray | memoryview | Fragments, compress: bool
    ) -> None:
        """``send()`` of a bytes-like or of fragments."""
        if isinstance(message, (bytearray, memoryview)):
            await self._offer(self._outbox.offer, bytes(message), compress)
        else:
            await self._send_fragments(message)

    async def _send_fragments(self, fragments: Fragments) -> None:
        """RFC 6455 section 5.4: the first frame typed, then continuations, the last with FIN.

        Whole messages sent meanwhile (by other tasks, or broadcasts) go after it; one
        fragmented message at a time."""
        outbox = self._outbox
        while not outbox.begin_fragments():
            await outbox.wait()  # another task is sending a fragmented message
        offer = outbox.offer_fragment
        opcode: Opcode | None = None
        try:
            async for fragment in _aiter(fragments):
                if isinstance(fragment, str):
                    kind, payload = Opcode.TEXT, fragment.encode("utf-8")
                else:
                    kind, payload = Opcode.BINARY, bytes(fragment)
                if opcode is None:
                    opcode = kind
                    await self._offer(offer, opcode, payload, False)
                elif kind is not opcode:
                    raise TypeError("the fragments of a message must all be str or all bytes")
                else:
                    await self._offer(offer, Opcode.CONTINUATION, payload, False)
            if opcode is None:
                raise TypeError("send() needs at least one fragment")
            await self._offer(offer, Opcode.CONTINUATION, b"", True)
        except BaseException:
            # A message left unfinished would be garbage to the peer: close instead.
            if opcode is not None:
                self._start_close(1011, "message not finished")
            raise
        finally:
            outbox.end_fragments()

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for text, ``bytes`` for binary.

        Raises ``ConnectionClosed`` once the connection is closed and no message is left.
        """
        if self._streaming:
            await self._skip_abandoned()
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
        A stream left before its end (``break``) gives up the rest of its message: the next
        ``receive()`` or ``receive_stream()`` skips it and returns the next message.
        """
        await self._skip_abandoned()
        if self._partial:  # a cancelled receive() had started this message
            parts, self._partial = self._partial, []
            self._streaming = True
            for part in parts:
                await trio.lowlevel.checkpoint()
                yield part
        else:
            item = await self._take()
            if not isinstance(item, MessageChunk):
                yield item
                await trio.lowlevel.checkpoint()  # (the step that ends the stream)
                return
            self._streaming = not item.final
            yield item.data
            if item.final:
                await trio.lowlevel.checkpoint()
                return
        while True:
            item = await self._take()
            assert type(item) is MessageChunk
            self._streaming = not item.final
            if item.data:  # the final frame of a fragmented message is often empty
                yield item.data
            if item.final:
                await trio.lowlevel.checkpoint()
                return

    async def _skip_abandoned(self) -> None:
        """Drop the rest of a message whose ``receive_stream()`` was left before its end."""
        while self._streaming:
            item = await self._take()
            if not isinstance(item, MessageChunk) or item.final:
                self._streaming = False

    async def _take(self) -> str | bytes | MessageChunk:
        """The next queued item, waiting for one; ``ConnectionClosed`` once none will come.

        With an empty queue, the caller reads the socket itself when it can (see "Reading"
        below). A checkpoint on every path: cancellable on entry, and other tasks run before
        it returns even when a message was ready."""
        await trio.lowlevel.checkpoint_if_cancelled()
        try:
            return await self._take_or_wait()
        finally:
            # However a receiver leaves (a message, an error, cancelled), check later that
            # somebody still reads.
            if self._inline and not self._check_pending:
                self._arm_reading_check()

    async def _take_or_wait(self) -> str | bytes | MessageChunk:
        messages = self._messages
        waited = False
        while not messages:
            if self._finished:
                if not waited:
                    await trio.lowlevel.cancel_shielded_checkpoint()
                raise self._closed_exception()
            if self._core.failure_pending and not self._outbox.closing:
                self._process(b"")  # the messages before a violation were all taken: fail now
                continue
            if self._fd is not None and not self._outbox.closing:
                if not self._reading and self._started:
                    waited = await self._read_inline() or waited
                    continue
                if self._read_scope is not None:
                    self._inline = True  # the task waits to read: take over
                    self._read_scope.cancel()
            waited = True
            self._receivers_waiting += 1
            self._space_lot.unpark_all()  # the reader may wait for us to drain (_wait_drained)
            try:
                await self._message_lot.park()
            finally:
                self._receivers_waiting -= 1
        message = messages.pop(0)
        self._receives += 1
        if len(messages) < self._options.max_queue:
            self._space_lot.unpark_all()
        if not waited:
            await trio.lowlevel.cancel_shielded_checkpoint()
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
        pings in flight. Raises ``ValueError`` for a bad payload, ``ConnectionClosed`` if the
        connection closes before the pong.
        """
        if payload is None:
            payload = os.urandom(4)
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        event = self._pings[payload] = trio.Event()
        if not self._receivers_waiting and self._outbox.sendable:
            self._hand_back()  # nobody receives: the connection's task reads the pong
        try:
            await self._offer(self._outbox.offer_ping, payload)
            await event.wait()
        finally:
            # A pong removes its ping; one still registered was woken by the close.
            unanswered = self._pings.pop(payload, None) is not None
        if unanswered:
            raise self._closed_exception()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close with ``code`` and ``reason`` and wait for the closing handshake.

        Messages already sent are written first. After ``close_timeout`` seconds the TCP
        connection is closed anyway. Does nothing more if the connection is already closing.
        Raises ``ValueError`` for a code that may not be sent (RFC 6455 section 7.4).
        ``reason`` is sent as UTF-8; a close frame has room for 123 bytes of it (RFC 6455
        section 5.5), so a longer reason is cut to the longest run of whole characters that
        fits, never inside a character.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        self._start_close(code, reason)
        await self._wait_done()

    async def _wait_done(self) -> None:
        """Wait until the connection's tasks are gone and the stream is closed.

        Bounded without any help from the caller: the connection's task ends by its close
        deadline; should it not (it never ran), the stream is closed here after twice that.
        """
        if self._done.is_set():
            await trio.lowlevel.cancel_shielded_checkpoint()  # the schedule point
            return
        with trio.move_on_after(2 * self._options.close_timeout + 1):
            await self._done.wait()
            return
        # The connection's task did not finish in time (it is itself shielded and stuck).
        await trio.aclose_forcefully(self._stream)

    def close_nowait(self, code: int = 1000, reason: str = "") -> None:
        """Start closing without waiting, dropping outgoing frames not yet written.

        For a peer that does not keep up (a broadcast's slow member): the close frame goes
        out as soon as the socket takes it; after ``close_timeout`` the TCP connection closes.
        ``code`` and ``reason`` as for ``aclose()``.
        """
        self._start_close(code, reason, discard_queued=True)

    def _start_close(self, code: int, reason: str, *, discard_queued: bool = False) -> bool:
        """Send our close frame and arm the close deadline; False if already closing."""
        if not self._outbox.close(code, reason, discard_queued=discard_queued):
            return False
        self._messages.clear()
        self._hand_back()  # the connection's task reads the peer's close frame
        self._space_lot.unpark_all()
        self._message_lot.unpark_all()
        self._arm_deadline(trio.current_time() + self._options.close_timeout)
        return True

    def _arm_deadline(self, deadline: float) -> None:
        """The connection's tasks end by ``deadline`` at the latest."""
        self._close_deadline = min(self._close_deadline, deadline)
        if self._cancel_scope is not None:
            self._cancel_scope.deadline = self._close_deadline

    # Keepalive (RFC 6455 section 5.5.2) -------------------------------------------------------

    def _keepalive(self, now: float) -> float | None:
        """The keepalive timer's callback: ping, or give up on a late pong; the next deadline.

        A pong later than ``ping_timeout`` fails the connection with 1011 "keepalive ping
        timeout" without waiting for a closing handshake (the peer is not answering), so the
        worst case for a frozen peer is ``ping_interval + ping_timeout`` seconds.
        """
        if not self._outbox.sendable:
            return None
        interval = self._options.ping_interval
        timeout = self._options.ping_timeout
        assert interval is not None
        sent = self._keepalive_sent
        if self._keepalive_ping in self._pings:  # our last ping is not answered yet
            if timeout is not None and now < sent + timeout:
                return sent + timeout
            if timeout is not None:
                self._keepalive_timed_out()
                return None
            del self._pings[self._keepalive_ping]  # no timeout: forget it, ping again
        elif now < sent + interval:
            return sent + interval  # answered: the next ping on schedule
        payload = os.urandom(4)
        if (
            payload in self._pings
            or self._outbox.offer_ping(payload, bounded=False) is Offer.CLOSED
        ):
            return now + interval
        self._pings[payload] = trio.Event()
        self._keepalive_ping, self._keepalive_sent = payload, now
        if not self._receivers_waiting:
            self._hand_back()  # nobody receives: the connection's task reads the pong
        return now + (interval if timeout is None else min(interval, timeout))

    def _keepalive_timed_out(self) -> None:
        logger.info("keepalive ping to %s timed out", self.remote)
        self._abort = (1011, "keepalive ping timeout")
        self._start_close(*self._abort, discard_queued=True)
        self._arm_deadline(trio.current_time())  # no closing handshake to wait for

    # Tasks ------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the connection until it is over, then close the stream; start it in a nursery.

        Only needed after ``client_handshake()``: the server, ``open_websocket()`` and
        ``connect_websocket()`` run their connections themselves.
        """
        async with trio.open_nursery() as nursery:
            self.start(nursery)
            await self._done.wait()

    def start(self, nursery: trio.Nursery) -> None:
        """Run the connection in ``nursery``, with tasks only while they are needed.

        Receivers read the socket themselves; a task reads for the connection only while
        nobody receives, and closes it at the end (RFC 6455 section 7). ``nursery`` must
        outlive the connection. The server calls this for each connection it accepts.
        """
        if self._started:
            raise RuntimeError("this connection is running already")
        self._nursery = nursery
        self._started = True
        self._outbox.start(nursery)
        self._start_timer(nursery)
        self._process(b"")  # frames that came with the handshake
        if self._fd is not None and self._timer is not None and not self._outbox.closing:
            self._inline = True  # receivers read; a task only if nobody does
            self._arm_reading_check()
            self._message_lot.unpark_all()  # receive() called before we started: it reads now
        else:
            self._spawn_task()

    def _spawn_task(self) -> None:
        """Start the connection's task, if it is not running (and we were started)."""
        if self._done.is_set():
            return
        if not self._task_running and self._nursery is not None and self._started:
            self._task_running = True
            self._nursery.start_soon(self._task)

    async def _task(self) -> None:
        """Read while no receiver does; once the connection is over, write what is left and
        close the stream, within close_timeout."""
        taken_over = False
        try:
            with trio.CancelScope(deadline=self._close_deadline) as scope:
                self._cancel_scope = scope
                if not await self._read_loop():
                    taken_over = True  # a receiver reads now: this task is not needed
                    return
                if self._core.failure is not None:
                    logger.info("connection with %s failed: %s", self.remote, self._core.failure)
                self._arm_deadline(trio.current_time() + self._options.close_timeout)
                await self._outbox.flush()  # our close frame included
                self._outbox.finish()
                await self._linger()
        finally:
            self._cancel_scope = None
            self._task_running = False
            if not taken_over:
                self._finish()
                self._outbox.finish()
                self._done.set()
                if self._timer_scope is not None:
                    self._timer_scope.cancel()
                # (This also ends a writer that is still blocked.)
                await trio.aclose_forcefully(self._stream)

    def _start_timer(self, nursery: trio.Nursery) -> None:
        """Keepalive and reading checks run on the server's timer, else on one of our own."""
        interval = self._options.ping_interval
        if self._timer is None and (interval is not None or self._fd is not None):
            self._timer = Timer()
            nursery.start_soon(self._run_own_timer, self._timer)
        if interval is not None:
            assert self._timer is not None
            self._timer.schedule(trio.current_time() + interval, self._keepalive)

    async def _run_own_timer(self, timer: Timer) -> None:
        """Our own timer, until the connection is done (so that ``nursery`` can end)."""
        with trio.CancelScope() as self._timer_scope:
            if not self._done.is_set():
                await timer.run()

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
        try:
            while await self._stream.receive_some(_READ_SIZE):
                pass
        except _GONE:
            pass

    def _finish(self) -> None:
        """The connection is over: wake everyone waiting on it."""
        if self._finished:
            return
        if self._core.state is not ConnectionState.CLOSED:
            self._core.receive_eof()
        self._finished = True
        self._fd = None  # never read a descriptor that may be closed and reused
        self._outbox.wake()  # senders waiting for room: the connection is over
        if self._closes_now():
            self._close_now()
        else:
            self._spawn_task()  # it writes what is left and closes the stream
        self._message_lot.unpark_all()
        self._space_lot.unpark_all()
        for event in self._pings.values():
            event.set()
        callbacks, self._close_callbacks = self._close_callbacks, {}
        for callback in callbacks.values():
            callback()

    def _closes_now(self) -> bool:
        """A clean end on a server's socket with everything written: nothing left to wait
        for, as the server closes TCP first (RFC 6455 section 7.1.1)."""
        return (
            not self._task_running
            and self._outbox.idle
            and self._core.role is Role.SERVER
            and self._core.failure is None
            and type(self._stream) is trio.SocketStream
        )

    def _close_now(self) -> None:
        """Close the socket from here, without a task (the common end of a connection)."""
        assert type(self._stream) is trio.SocketStream
        self._outbox.finish()
        self._done.set()
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        self._stream.socket.close()

    # Reading ----------------------------------------------------------------------------------
    #
    # On a socket, a task waiting in receive() with nothing queued reads the socket itself
    # ("inline"): the bytes it reads become the messages it returns, with no task switch. The
    # connection's task (_task, spawned when needed) reads instead, answering pings and close
    # frames, whenever nobody has been receiving for _HAND_BACK seconds, for ping() and
    # keepalive pongs, when we start closing, and on other streams (TLS, memory). Only one
    # task reads at a time (_reading); a receiver that finds the task reading takes over.

    def _process(self, data: bytes | bytearray) -> None:
        """Feed bytes to the core (see ``_handle``)."""
        self._handle(self._core.receive_data(data))

    def _handle(self, events: list[Event]) -> None:
        """Queue the messages the core gave, answer what it answers."""
        core = self._core
        outbox = self._outbox
        # Pongs and close replies (RFC 6455 sections 5.5.2, 5.5.1) go out at once.
        self._answering = outbox.send_core_output()
        for event in events:
            if type(event) is Message:
                if not outbox.closing:
                    self._messages.append(event.data)
                    self._message_lot.unpark_all()
            elif type(event) is MessageChunk:
                if not outbox.closing:  # chunks queue whole: receive() joins them
                    self._messages.append(event)
                    self._message_lot.unpark_all()
            elif type(event) is Pong:
                self._on_pong(event.payload)
        if core.state is ConnectionState.CLOSED:
            self._finish()

    def _received(self, data: bytes | bytearray | int) -> None:
        """What one read of the socket gave: bytes, or how many it read into the core's
        buffer (``b""`` or 0 at its end, which _finish() gives the core: 1006 if no close
        frame came)."""
        if isinstance(data, int):
            if data:
                self._handle(self._core.buffer_updated(data))
                return
        else:
            self._grow(len(data))
            if data:
                self._process(data)
                return
        self._finish()

    def _read(self, fd: int) -> bytes | int:
        """One non-blocking read: into the core's buffer while a large frame arrives (its
        payload is copied once, there), else a new bytes object."""
        buffer = self._core.get_buffer()
        if buffer is None:
            return os.read(fd, self._read_size)
        # The next large frame too should come here rather than in a big read of bytes.
        self._read_size = _READ_SIZE
        with buffer:
            return os.readv(fd, (buffer,))

    def _grow(self, size: int) -> None:
        """Larger reads while they come back full; back to the default once they do not."""
        if size == self._read_size:
            self._read_size = min(size * 2, _MAX_READ_SIZE)
        elif self._read_size > _READ_SIZE and size < _READ_SIZE:
            self._read_size = _READ_SIZE

    async def _read_inline(self) -> bool:
        """One read of the socket by a receiver; True if it had to wait (a schedule point)."""
        fd = self._fd
        assert fd is not None
        self._reading = True
        self._inline = True
        self._receivers_waiting += 1
        waited = False
        try:
            while self._answering and self._outbox.full and not self._outbox.finished:
                waited = True
                await self._outbox.wait()  # the peer does not read our pongs: stop reading
            try:
                data: bytes | int | None = self._read(fd)
            except BlockingIOError:
                data = None  # (waiting outside the except block: no exception kept alive)
            if data is None:
                waited = True
                self._space_lot.unpark_all()  # (see _wait_drained)
                await trio.lowlevel.wait_readable(fd)
                data = self._read(fd)
        except BlockingIOError:
            return waited  # readable, then not: try again
        except (OSError, trio.ClosedResourceError):
            data = b""  # reset, or closed by the connection's task: the end of the stream
        finally:
            self._reading = False
            self._receivers_waiting -= 1
            if not self._inline:
                self._space_lot.unpark_all()  # the connection's task waits to read
            elif self._receivers_waiting:
                self._message_lot.unpark_all()  # (if we were cancelled) another reads now
        self._received(data)
        return waited

    def _arm_reading_check(self) -> None:
        timer = self._timer
        if timer is not None:
            self._check_pending = True
            self._receives_seen = self._receives
            # Rounded up to a multiple of _HAND_BACK: checks due together take one timer wake.
            due = (math.floor(trio.current_time() / _HAND_BACK) + 2) * _HAND_BACK
            timer.schedule(due, self._check_reading)

    def _check_reading(self, now: float) -> float | None:
        """Timer callback: give reading back to the connection's task if nobody is receiving."""
        if self._finished or not self._inline or self._receivers_waiting:
            self._check_pending = False  # (the next receive() that returns arms it again)
            return None
        if self._receives != self._receives_seen:
            self._receives_seen = self._receives
            return now + _HAND_BACK  # receiving, between two calls
        self._check_pending = False
        self._hand_back()
        return None

    def _hand_back(self) -> None:
        """The connection's task reads from now on."""
        self._inline = False
        self._spawn_task()
        self._space_lot.unpark_all()

    async def _read_loop(self) -> bool:
        """Read until the connection is over (True) or a receiver takes over (False)."""
        core = self._core
        outbox = self._outbox
        stream = self._stream
        messages = self._messages
        max_queue = self._options.max_queue
        while not self._finished:
            if self._inline:
                return False
            if self._reading:
                await self._space_lot.park()  # a receiver's read ends first
                continue
            if self._answering and outbox.full and not outbox.finished:
                await outbox.wait()  # the peer does not read our pongs: stop reading too
                continue
            if core.failure_pending:
                # Let the application answer the messages before the violation first.
                await self._wait_drained()
                if not self._reading:
                    self._process(b"")
                continue
            if len(messages) >= max_queue and not outbox.closing:
                await self._space_lot.park()
                continue
            self._reading = True
            try:
                with trio.CancelScope() as scope:
                    self._read_scope = scope
                    data = await stream.receive_some(self._read_size)
            except _GONE:
                data = b""
            finally:
                self._reading = False
                self._read_scope = None
            if scope.cancelled_caught:
                self._message_lot.unpark_all()  # a receiver took over: it may read now
                continue
            self._received(data)
        return True

    async def _wait_drained(self) -> None:
        """Wait until the application asked for a message after taking every queued one."""
        with trio.move_on_after(self._options.close_timeout):
            while not (self._outbox.closing or (not self._messages and self._receivers_waiting)):
                await self._space_lot.park()

    def _on_pong(self, payload: bytes) -> None:
        # Section 5.5.3: a pong may answer only the latest ping; it acknowledges earlier ones.
        if payload not in self._pings:
            return
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break


def _nothing() -> None:
    pass


def address(stream: trio.abc.Stream, *, peer: bool) -> Any:
    """The peer's (or our) socket address under any TLS layers; ``None`` without a socket."""
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
