"""How a connection receives: ``receive()``, ``receive_stream()``, and who reads the socket.

On a socket, a task waiting in ``receive()`` with nothing queued reads the socket itself
("inline"): the bytes it reads become the messages it returns, with no task switch. The
connection's task reads instead (answering pings and close frames) whenever nobody has been
receiving for ``_HAND_BACK`` seconds, for ``ping()`` and keepalive pongs, when we start
closing, and on other streams (TLS, memory). Only one task reads at a time. Messages wait in
a list bounded by ``max_queue``: when it is full nobody reads, which pushes back on the peer.
"""

from __future__ import annotations

import math
import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from ..protocol import (
    Connection,
    ConnectionState,
    Event,
    Message,
    MessageChunk,
    Pong,
)
from ..protocol._errors import ConnectionClosed
from ._options import WebSocketOptions
from ._outbox import Outbox
from ._sending import Sending
from ._timer import Timer

__all__ = ["Receiving"]

#: Bytes asked of the socket per read: small enough that the buffer is not an mmap() (glibc's
#: threshold is 128 KiB), growing up to the maximum while reads come back full.
READ_SIZE = 64 * 1024
_MAX_READ_SIZE = 1024 * 1024

#: Seconds (between one and two of them) after the last receive() before the connection's own
#: task reads the socket again (to answer pings and close frames for an application that
#: stopped receiving).
_HAND_BACK = 0.1

#: What a stream raises once the peer or our side has closed it.
GONE = (trio.BrokenResourceError, trio.ClosedResourceError)


class Receiving(Sending):
    """The receiving part of ``WebSocketConnection``: a base class of it, not used alone."""

    __slots__ = (
        "_answering",
        "_check_pending",
        "_fd",
        "_inline",
        "_message_lot",
        "_messages",
        "_partial",
        "_read_scope",
        "_read_size",
        "_reading",
        "_receivers_waiting",
        "_receives",
        "_receives_seen",
        "_space_lot",
        "_streaming",
    )

    # The connection's state this part uses (what it does not own is set by the connection).
    _core: Connection
    _outbox: Outbox
    _options: WebSocketOptions
    _stream: trio.abc.Stream
    _timer: Timer | None
    _messages: list[str | bytes | MessageChunk]
    _partial: list[str | bytes]
    _streaming: bool
    _message_lot: trio.lowlevel.ParkingLot
    _space_lot: trio.lowlevel.ParkingLot
    _receivers_waiting: int
    _finished: bool
    _started: bool
    _fd: int | None
    _inline: bool
    _reading: bool
    _read_scope: trio.CancelScope | None
    _read_size: int
    _answering: bool
    _receives: int
    _receives_seen: int
    _check_pending: bool

    if TYPE_CHECKING:  # what the connection does for this part

        def _finish(self) -> None: ...
        def _spawn_task(self) -> None: ...
        def _on_pong(self, payload: bytes) -> None: ...

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
        queued = False
        for event in events:
            if type(event) is Message:
                if not outbox.closing:
                    self._messages.append(event.data)
                    queued = True
            elif type(event) is MessageChunk:
                if not outbox.closing:  # chunks queue whole: receive() joins them
                    self._messages.append(event)
                    queued = True
            elif type(event) is Pong:
                self._on_pong(event.payload)
        if queued and self._message_lot:
            self._message_lot.unpark_all()
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
        self._read_size = READ_SIZE
        with buffer:
            return os.readv(fd, (buffer,))

    def _grow(self, size: int) -> None:
        """Larger reads while they come back full; back to the default once they do not."""
        if size == self._read_size:
            self._read_size = min(size * 2, _MAX_READ_SIZE)
        elif self._read_size > READ_SIZE and size < READ_SIZE:
            self._read_size = READ_SIZE

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
                if self._space_lot:
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
                # A receiver took over while our last read was ending (it read a pong, say,
                # and no message): it waits to read, and no message will wake it.
                self._message_lot.unpark_all()
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
            except GONE:
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
