"""A connection's outbox: every byte it sends, in order, through one path.

Messages, fragments, pings, pongs, close frames and Room deliveries all enter here. A frame
is encoded (masked, compressed) when the outbox accepts it, in the calling task, so the
compression state moves only for frames that will surely be written, in the order they were
accepted. An accepted frame is written at once from the calling task when nothing is queued
(one non-blocking ``write(2)``: no task switch, and a plain syscall cannot be cancelled
halfway, as an asyncio transport does), else queued for a writer task that exists only while
there is a backlog. Streams without a file descriptor (TLS, memory) always use the writer.
A large payload is never copied to join it to its header: ``writev(2)`` writes both, the
writer sends it on its own, and the rest of a partly written frame is a view of it.

The queue is bounded in frames (``limit``); data frames wait for room (``offer`` answers
``FULL``), while the core's own output (pongs, close replies) and our close frame may go past
the bound: they are few and small, and a closing connection takes no more data.

A frame offered with ``hold=True`` (a Room does so for the second and later broadcasts of a
burst) is held, with the frames that follow it, until Trio's scheduler has run the tasks that
were ready (a callback scheduled with ``run_sync_soon`` marks it), then written joined with
them; or as soon as ``limit - 1`` frames or 64 KiB are held, so that holding never makes the
queue full. A burst from many senders at once then reaches each member in a few writes, not
one per message. There is no timer.
"""

from __future__ import annotations

import enum
import logging
import os
from collections.abc import Hashable

import trio

from ..protocol import Connection, ConnectionState, Role
from ..protocol._extensions import encode_message
from ..protocol._frames import LARGE, RSV1, Opcode, encode_frame

__all__ = ["Offer", "Outbox"]

logger = logging.getLogger("trio_ws")

#: With ``limit`` frames, the queue is also full once it holds ``limit`` times this many
#: bytes: the core's answers (pongs to a flood of pings) come in few but large pieces.
_BYTES_PER_FRAME = 64 * 1024

#: What a stream raises once the peer or our side has closed it.
_GONE = (trio.BrokenResourceError, trio.ClosedResourceError)

#: A queued frame (or a few): bytes, or pieces to write with ``writev`` when one is large; or
#: the unwritten rest of one (a view: the rest is not copied).
_Item = bytes | tuple[bytes, ...] | memoryview


class Offer(enum.Enum):
    """What ``Outbox.offer*()`` did with a frame."""

    #: The socket took the whole frame.
    WRITTEN = "written"
    #: Queued behind other frames (or after a partial write): the writer task sends it.
    QUEUED = "queued"
    #: The queue is full: nothing was encoded or sent; wait with ``wait()`` or give up.
    FULL = "full"
    #: The connection is closing or closed: nothing was encoded or sent.
    CLOSED = "closed"


class Outbox:
    """The outgoing side of one connection (see the module docstring).

    ``limit`` is the number of frames that may wait for the writer before ``offer*()``
    answers ``FULL`` (or ``limit`` x 64 KiB of them). The writer task runs in the nursery
    given to ``start()``.
    """

    __slots__ = (
        "_changed",
        "_closing",
        "_core",
        "_fd",
        "_finished",
        "_fragmenting",
        "_held",
        "_holding",
        "_limit",
        "_nursery",
        "_partial_head",
        "_queue",
        "_queued_bytes",
        "_stream",
        "_writing",
        "shared_key",
    )

    def __init__(self, stream: trio.abc.Stream, core: Connection, *, limit: int) -> None:
        self._stream = stream
        self._core = core
        self._limit = limit
        self._queue: list[_Item] = []
        self._queued_bytes = 0
        # The first queued item is the rest of a frame that a direct write began: it must be
        # written even when the rest of the queue is dropped.
        self._partial_head = False
        self._writing = False  # a writer task is running (or about to)
        self._holding = False  # frames are held until release() (hold=True)
        self._closing = False  # our close frame is accepted: no more data frames
        self._finished = False  # the connection is over: nothing more is written
        self._fragmenting = False  # a message is being sent in fragments (RFC 6455 5.4)
        # Whole messages offered meanwhile, sent after it: frames, or messages to encode then
        # (the core encodes no whole message in the middle of a fragmented one).
        self._held: list[bytes | tuple[str | bytes, bool]] = []
        self._nursery: trio.Nursery | None = None
        self._fd: int | None = stream.socket.fileno() if type(stream) is trio.SocketStream else None
        self._changed = trio.lowlevel.ParkingLot()  # room freed, closing, writer done
        #: Equal for outboxes that encode a message to the same bytes (``encode_shared()``);
        #: ``None`` if this one's frames are its own.
        self.shared_key = _shared_key(core)

    # What callers look at ---------------------------------------------------------------------

    @property
    def sendable(self) -> bool:
        """Open, and our close frame not yet accepted: data frames may still be offered."""
        return not self._closing and self._core.state is ConnectionState.OPEN

    @property
    def closing(self) -> bool:
        """Our close frame is accepted (or the connection is over): no more data frames."""
        return self._closing

    @property
    def finished(self) -> bool:
        """The connection is over: nothing more will be written."""
        return self._finished

    @property
    def full(self) -> bool:
        """As many frames wait for the writer as ``limit`` allows."""
        return (
            len(self._queue) >= self._limit or self._queued_bytes >= self._limit * _BYTES_PER_FRAME
        )

    @property
    def idle(self) -> bool:
        """Nothing queued and no writer running: everything accepted was written."""
        return not self._queue and not self._writing

    @property
    def queued(self) -> int:
        """Frames waiting for the writer."""
        return len(self._queue)

    def encode_shared(self, message: str | bytes) -> tuple[bytes, int]:
        """The frame of ``message`` for every outbox of this ``shared_key`` (not ``None``),
        and its payload size in bytes if an extension compressed it (RSV1), else 0."""
        if isinstance(message, str):
            opcode, payload = Opcode.TEXT, message.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, message
        rsv, payload = encode_message(self._core.extensions, opcode, payload)
        return encode_frame(opcode, payload, rsv=rsv), len(payload) if rsv & RSV1 else 0

    async def wait(self) -> None:
        """Wait until something changes: room freed, closing started, the writer ended, a
        fragmented message finished, or ``wake()``."""
        await self._changed.park()

    def wake(self) -> None:
        """Wake the tasks in ``wait()`` (the connection changed state: they look again)."""
        self._changed.unpark_all()

    def begin_fragments(self) -> bool:
        """Reserve the outbox for one message sent in fragments; False if another is.

        Until ``end_fragments()``, whole messages (``offer``, ``offer_frame``) are held back
        and sent after it: no data frame may come between the fragments of a message
        (RFC 6455 section 5.4). Pings may (section 5.5)."""
        if self._fragmenting:
            return False
        self._fragmenting = True
        return True

    def end_fragments(self) -> None:
        """The fragmented message is finished (or abandoned): the whole messages held back
        go now (unless we are closing), and new ones go at once again."""
        self._fragmenting = False
        held, self._held = self._held, []
        for item in held:
            if not self.sendable:
                break
            if isinstance(item, bytes):
                self._put(item)
            else:
                message, compress = item
                self._core.send_message(message, compress=compress)
                self._put_core_output()
        self._changed.unpark_all()

    # Offering frames (never block) ----------------------------------------------------------

    def _refusal(self) -> Offer | None:
        if not self.sendable:
            return Offer.CLOSED
        if self.full:
            return Offer.FULL
        return None

    def offer(self, message: str | bytes, compress: bool = True, *, hold: bool = False) -> Offer:
        """Encode and send one whole message if there is room (text for ``str``); ``hold``
        it with what follows until the scheduler has run the ready tasks (module docstring)."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        if self._fragmenting:  # after the fragmented message being sent (RFC 6455 5.4)
            self._held.append((message, compress))
            return Offer.QUEUED
        if hold and not self._holding:
            self._hold()
        self._core.send_message(message, compress=compress)
        return self._put_core_output()

    def offer_frame(self, frame: bytes, *, hold: bool = False) -> Offer:
        """Send a whole-message frame already encoded for this outbox (``encode_shared()``);
        ``hold`` as for ``offer()``."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        if self._fragmenting:
            self._held.append(frame)
            return Offer.QUEUED
        if hold and not self._holding:
            self._hold()
        return self._put(frame)

    def offer_fragment(self, opcode: Opcode, payload: bytes, fin: bool) -> Offer:
        """Send one frame of the fragmented message begun with ``begin_fragments()``."""
        refusal = self._refusal()
        if refusal is not None:
            return refusal
        self._core.send_frame(opcode, payload, fin=fin)
        return self._put_core_output()

    def offer_ping(self, payload: bytes, *, bounded: bool = True) -> Offer:
        """Send a ping; ``bounded=False`` (keepalive) sends it even when the queue is full."""
        refusal = self._refusal()
        if refusal is Offer.CLOSED or (bounded and refusal is not None):
            return refusal
        self._core.send_ping(payload)
        return self._put_core_output()

    def send_core_output(self) -> bool:
        """Send what the core queued by itself (pongs, close replies, failure close frames);
        False if there was nothing."""
        pieces = self._core.data_to_send()
        if not pieces or self._finished:
            return False
        self._put(_item(pieces))
        return True

    def close(self, code: int, reason: str, *, discard_queued: bool = False) -> bool:
        """Send our close frame (RFC 6455 section 5.5.1); False if already closing or closed.

        ``discard_queued`` drops the data frames still waiting (a slow peer is being shed);
        otherwise they are written first.
        """
        if not self.sendable:
            return False
        self._core.send_close(code, reason)  # may raise ValueError: nothing changed
        self._closing = True
        if discard_queued and self._queue:
            del self._queue[1 if self._partial_head else 0 :]
            self._queued_bytes = sum(map(_size, self._queue))
        self._put_core_output()
        self._changed.unpark_all()
        return True

    # Writing ----------------------------------------------------------------------------------

    def _put_core_output(self) -> Offer:
        """Write or queue the frame the core just queued (each core call that queues one is
        followed by this, so frames are written in the order they were accepted)."""
        pieces = self._core.data_to_send()
        return self._put(pieces[0] if len(pieces) == 1 else _item(pieces))  # one frame: as is

    def _put(self, frame: bytes | tuple[bytes, ...]) -> Offer:
        """Write ``frame`` now if nothing is ahead of it, else queue it for the writer."""
        fd = self._fd
        if fd is None or self._queue or self._writing or self._holding:
            if self._finished:
                return Offer.CLOSED
            self._queue.append(frame)
            self._queued_bytes += _size(frame)
            if not self._holding or self._writing:
                self._start_writer()
            elif len(self._queue) >= self._limit - 1 or self._queued_bytes >= _HOLD_BYTES:
                self._write_queue()  # write before the queue is full
            return Offer.QUEUED
        try:
            if isinstance(frame, bytes):
                written = os.write(fd, frame)
                if written == len(frame):
                    return Offer.WRITTEN
            else:
                written = os.writev(fd, frame)
        except OSError:
            written = 0  # would block; or gone, which the writer meets too and ends with
        rest = _rest(frame, written)
        if rest is None:
            return Offer.WRITTEN
        self._queue.append(rest)
        self._queued_bytes += _size(rest)
        self._partial_head = written > 0
        self._start_writer()
        return Offer.QUEUED

    # Coalescing -------------------------------------------------------------------------------

    def _hold(self) -> None:
        """Hold frames from now on, until ``release()`` (soon: see the module docstring)."""
        try:
            held = _HOLDERS.get()
        except LookupError:
            held = []
            _HOLDERS.set(held)
        if not held:
            trio.lowlevel.current_trio_token().run_sync_soon(_release_all, held)
        held.append(self)
        self._holding = True

    def release(self) -> None:
        """Stop holding frames: write those held now."""
        self._holding = False
        if self._queue and not self._writing and not self._finished:
            self._write_queue()

    def _write_queue(self) -> None:
        """Write the queue at once, joined (large payloads apart, with ``writev``), as far as
        the socket takes it; the writer sends the rest (everything, without a descriptor)."""
        fd, queue = self._fd, self._queue
        if fd is not None and not self._partial_head:
            writes = _writes(queue, self._queued_bytes)
            if len(writes) <= _MAX_PIECES:
                try:
                    written = os.write(fd, writes[0]) if len(writes) == 1 else os.writev(fd, writes)
                except OSError:
                    written = 0  # would block; or gone, which the writer meets too
                self._drop_written(written)
                if not queue:
                    if self._changed:
                        self._changed.unpark_all()  # idle: flush() returns
                    return
        self._start_writer()

    def _drop_written(self, written: int) -> None:
        """Take the first ``written`` bytes off the queue: whole frames, then the start of
        one, whose rest stays first (a partly written frame, never dropped)."""
        queue = self._queue
        done = 0
        while done < len(queue) and written >= (size := _size(queue[done])):
            written -= size
            done += 1
        del queue[:done]
        if written:
            queue[0] = _rest(queue[0], written)  # type: ignore[assignment]
        self._partial_head = bool(written)
        self._queued_bytes = sum(map(_size, queue))

    def start(self, nursery: trio.Nursery) -> None:
        """Run the writer in ``nursery`` from now on (at once if frames are waiting)."""
        self._nursery = nursery
        if self._queue:
            self._start_writer()

    def _start_writer(self) -> None:
        if not self._writing and self._nursery is not None:
            self._nursery.start_soon(self._writer)  # may raise (a closed nursery): not writing
            self._writing = True

    async def _writer(self) -> None:
        """Write the queue out, several frames per ``send_all``; end when it is empty."""
        queue = self._queue
        try:
            while queue:
                writes = _writes(queue, self._queued_bytes)
                queue.clear()
                self._queued_bytes = 0
                self._partial_head = False
                self._changed.unpark_all()
                for data in writes:
                    await self._stream.send_all(data)
        except _GONE:
            # The peer is gone: nothing more can be written; the reader sees the end too.
            self._finish_queue()
        finally:
            self._writing = False
            self._changed.unpark_all()

    async def flush(self) -> None:
        """Wait until everything accepted was written (or could not be)."""
        if self._nursery is None:
            return  # never started: nothing will write
        while not self.idle:
            await self._changed.park()

    def _finish_queue(self) -> None:
        self._queue.clear()
        self._queued_bytes = 0
        self._partial_head = False

    def finish(self) -> None:
        """The connection is over: drop what is queued, never write again, wake waiters."""
        self._finished = True
        self._closing = True
        self._fd = None  # never write to a descriptor that may be closed and reused
        self._finish_queue()
        self._changed.unpark_all()


#: Held frames are written once they reach this many bytes, even before the tick ends.
_HOLD_BYTES = 64 * 1024

#: Most pieces written with one ``writev`` (IOV_MAX is 1024 on Linux).
_MAX_PIECES = 512

#: The outboxes holding frames, in each Trio run.
_HOLDERS: trio.lowlevel.RunVar[list[Outbox]] = trio.lowlevel.RunVar("trio_ws.holders")


def _release_all(held: list[Outbox]) -> None:
    """The tasks that were ready have run: write what every outbox held (one write each)."""
    outboxes = held[:]
    held.clear()
    for outbox in outboxes:
        try:
            outbox.release()
        except Exception:  # not ours to crash the run (this runs in Trio's own task)
            logger.exception("writing the frames held for a connection failed")


def _item(pieces: list[bytes]) -> bytes | tuple[bytes, ...]:
    """What the core gave (``data_to_send()``) as one queue item: small pieces joined, a
    large one kept apart (a tuple, for ``writev``)."""
    if len(pieces) == 1:
        return pieces[0]
    if sum(map(len, pieces)) < LARGE:
        return b"".join(pieces)
    return tuple(pieces)


def _size(item: _Item) -> int:
    return len(item) if not isinstance(item, tuple) else sum(map(len, item))


def _rest(item: _Item, written: int) -> _Item | None:
    """What is left of ``item`` once its first ``written`` bytes are written; None if nothing."""
    if isinstance(item, tuple):
        index, piece = 0, b""
        for index, piece in enumerate(item):  # noqa: B007 (used after the loop)
            if written < len(piece):
                break
            written -= len(piece)
        else:
            return None
        if index < len(item) - 1:
            if not index and not written:
                return item
            rest = (piece[written:], *item[index + 1 :])
            # Past the first piece, what is left may be small pieces only: join them.
            return _item(list(rest)) if index else rest
        item = piece
    if written == len(item):
        return None
    return memoryview(item)[written:] if written else item


def _writes(items: list[_Item], size: int) -> list[bytes | memoryview]:
    """What to send for ``items`` (``size`` bytes): large pieces alone, not copied; runs of
    small ones joined."""
    if len(items) == 1 and not isinstance(items[0], tuple):
        return [items[0]]
    if size < LARGE:  # small pieces only (a tuple holds a large payload): join them all
        return [b"".join(items)]  # type: ignore[arg-type]
    writes: list[bytes | memoryview] = []
    run: list[bytes | memoryview] = []
    for item in items:
        for piece in item if isinstance(item, tuple) else (item,):
            if len(piece) < LARGE:
                run.append(piece)
                continue
            if run:
                writes.append(b"".join(run))
                run = []
            writes.append(piece)
    if run:
        writes.append(b"".join(run))
    return writes


def _shared_key(core: Connection) -> Hashable | None:
    """A server's frame depends only on the extensions' settings when none keeps compression
    state between messages (RFC 7692 section 7.1.1); a client masks every frame with a new key
    (RFC 6455 section 5.3), so its frames are never shared."""
    if core.role is Role.CLIENT:
        return None
    keys = []
    for ext in core.extensions:
        key = getattr(ext, "shared_encoding_key", None)
        if key is None:
            return None
        keys.append(key)
    return tuple(keys)
