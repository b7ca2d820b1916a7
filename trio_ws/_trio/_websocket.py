"""A WebSocket connection on a Trio stream: its state, how it starts, closes and ends.

``WebSocketConnection`` is built of parts, a chain of base classes each in its own module
with the state it owns in its ``__slots__``: ``Sending`` (``_sending.py``: every frame through
the connection's ``Outbox``, ``_outbox.py``), ``Receiving`` (``_receiving.py``: receivers read
the socket themselves, the connection's task only while nobody does), ``Pinging``
(``_pinging.py``: pings and keepalive). What is here holds the state, starts the connection,
closes it (RFC 6455 section 7) and ends it.

Every public ``async`` method is a Trio checkpoint on every path: it can be cancelled on entry
and lets other tasks run before it returns, even when it did not have to wait.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any

import trio

from ..protocol import (
    Connection,
    ConnectionState,
    MessageChunk,
    Role,
)
from ..protocol._errors import ConnectionClosed
from ..protocol._handshake import Request
from ..protocol._headers import Headers
from ..protocol._metrics import Metrics
from ._options import WebSocketOptions
from ._outbox import Outbox
from ._pinging import Pinging
from ._receiving import GONE, READ_SIZE
from ._timer import Timer

__all__ = ["WebSocketConnection"]

logger = logging.getLogger("trio_ws")


class WebSocketConnection(Pinging):
    """An open WebSocket connection.

    ``await send(msg)``, ``await receive()`` or ``async for msg in ws``, ``await ping()``,
    ``await aclose(code, reason)``. Once closed, every call raises ``ConnectionClosed`` with
    the close code and reason.
    """

    __slots__ = (
        "_cancel_scope",
        "_close_callbacks",
        "_close_deadline",
        "_core",
        "_done",
        "_finished",
        "_nursery",
        "_options",
        "_outbox",
        "_request",
        "_response_headers",
        "_started",
        "_stream",
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
        self._read_size = READ_SIZE
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
                with contextlib.suppress(*GONE):
                    await send_eof()
        try:
            while await self._stream.receive_some(READ_SIZE):
                pass
        except GONE:
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
