"""Fan-out to many connections: encode a message once, never wait on a slow member.

A broadcast is offered to each member's outbox (``Outbox.offer``), which writes it at once or
queues it without waiting. When a member's queue (``write_queue`` frames) is full, the room's
policy applies: drop the message for that member (and count it), or close the member with a
code such as 1013 (try again later) or 1008 (policy violation). Members whose frames are
encoded alike (``Outbox.shared_key``) share one encoded frame.

A room with a ``backplane`` (see ``trio_ws._features._backplane``) also hands each broadcast
to it, so that the members of the room of the same name in other processes get it; the
backplane calls ``deliver()`` with what other processes broadcast.

A room with ``history`` (``_history``) gives each broadcast an offset and keeps the recent ones,
so that ``join(ws, since=position)`` replays what a reconnecting client missed; a member being
replayed to holds its live messages in order until the replay is through. Members may have an
identity (``_presence``), counted per connection, with join and leave notifications.
"""

from __future__ import annotations

import collections
import enum
import functools
import logging
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Any, Protocol

import attrs
import trio

from .._trio import Offer, Outbox, WebSocketConnection
from ._envelope import Envelope
from ._history import Entry, History, Position
from ._presence import MemoryPresence, Presence, PresenceEvent

__all__ = ["Backplane", "Recovery", "Room", "SlowPolicy"]

logger = logging.getLogger("trio_ws")

#: Bytes of recent envelopes, and of replayed frames, a room keeps for members resuming from
#: the same point (each cache; a larger item is not kept).
_CACHE_BYTES = 4 * 1024 * 1024
#: Most bytes of replayed frames written to a member at once.
_BATCH = 64 * 1024


@attrs.define(slots=True, eq=False)
class _CatchUp:
    """A member being replayed to: what it has still to be sent, in order."""

    #: ``(offset, wire message)`` pairs: the replay, then the live messages held meanwhile.
    pending: collections.deque[tuple[int, str | bytes]] = attrs.field(factory=collections.deque)
    #: Live messages up to this offset are not held: the client has them.
    floor: int = 0
    #: The epoch of ``floor``: a live message of another epoch is held whatever its offset.
    epoch: str = ""
    #: How many of ``pending``, at its front, are the replay (the rest are live messages
    #: held meanwhile: those count against ``catch_up_limit``).
    replay: int = 0
    #: Set when a live message comes (or the member leaves), for a replay waiting for one.
    arrived: trio.Event | None = None

    @property
    def held(self) -> int:
        """Live messages waiting behind the replay."""
        return len(self.pending) - self.replay

    def popleft(self) -> None:
        self.pending.popleft()
        if self.replay:
            self.replay -= 1

    def hold(self, offset: int, message: str | bytes, epoch: str) -> None:
        if epoch != self.epoch:  # the history was lost: the client has none of the new epoch
            self.epoch, self.floor = epoch, 0
        if offset > self.floor:
            self.pending.append((offset, message))
        if self.arrived is not None:
            self.arrived.set()


class Backplane(Protocol):
    """What a ``Room`` needs from a backplane (``LocalBackplane``, ``RedisBackplane``)."""

    def attach(self, room: Room) -> None:
        """Deliver what other processes broadcast in ``room.name`` to ``room``."""

    def publish(self, room: str, message: str | bytes) -> None:
        """Send ``message`` to the room ``room`` of the other processes; never waits."""


class _Cache(dict[Hashable, Any]):
    """A dict of at most ``_CACHE_BYTES`` of values (emptied when full: the items a reconnect
    storm shares are the recent ones, which come back at once)."""

    __slots__ = ("size",)

    def __init__(self) -> None:
        super().__init__()
        self.size = 0

    def put(self, key: Hashable, value: Any, size: int) -> None:
        if size > _CACHE_BYTES // 8:
            return
        if self.size + size > _CACHE_BYTES:
            self.clear()
            self.size = 0
        self[key] = value
        self.size += size


@attrs.define(slots=True)
class _Member:
    leave: Callable[[], None]  # cancels the connection's close callback
    identity: str | None = None  # for presence
    dropped: int = 0  # messages dropped for this member


@attrs.frozen
class Recovery:
    """What ``Room.join()`` did: whether the member got everything it missed."""

    #: True if every message after ``since`` was replayed (none lost); False if there was no
    #: ``since``, no history, or the position could not be resumed from (another epoch, or too
    #: old for the history's bounds): then the app should reload the client's state.
    recovered: bool
    #: How many messages from the history were replayed to the member.
    replayed: int
    #: The room's position once the member is live (None for a room without history): the
    #: member has been sent everything up to it.
    position: Position | None


class SlowPolicy(enum.Enum):
    """What a broadcast does for a member whose outgoing queue is full."""

    #: Skip the message for that member and count it in ``Room.dropped``.
    DROP = "drop"
    #: Close that member (with ``Room.close_code``) and forget it.
    CLOSE = "close"


class Room:
    """A set of connections that receive every ``broadcast()``.

    Members leave by themselves when their connection closes. ``broadcast()`` is a plain
    function: it queues the same frame bytes on every member and returns at once.

    With ``backplane`` (e.g. a ``RedisBackplane``), ``broadcast()`` also reaches the members of
    the room called ``name`` in every other process on that backplane.

    With ``history`` (e.g. ``MemoryHistory(size=1000, ttl=300)``), each message the room
    delivers gets the next offset and is kept within the history's bounds, and
    ``await join(ws, since=position)`` replays what a client missed. ``envelope(message,
    position)`` (e.g. ``json_envelope``) makes what members receive, once per broadcast; it
    needs ``history``. Without history, nothing of this costs anything per broadcast.

    ``presence`` counts the identities of members (``MemoryPresence()`` by default);
    ``on_presence(callback)`` reports joins and leaves. ``catch_up_limit`` (a count) is how many
    live messages a member being replayed to may have waiting; beyond, the ``policy`` applies.
    Raises ValueError for an ``envelope`` without ``history``.
    """

    def __init__(
        self,
        *,
        policy: SlowPolicy | str = SlowPolicy.DROP,
        close_code: int = 1013,
        close_reason: str = "too slow to keep up",
        name: str = "",
        backplane: Backplane | None = None,
        history: History | None = None,
        envelope: Envelope | None = None,
        presence: Presence | None = None,
        catch_up_limit: int = 10_000,
    ) -> None:
        if envelope is not None and history is None:
            raise ValueError("an envelope needs a history (it carries the offset)")
        #: The room's name on its backplane (rooms of the same name in other processes).
        self.name = name
        self.backplane = backplane
        self.policy = SlowPolicy(policy)
        self.close_code = close_code
        self.close_reason = close_reason
        #: Where the room keeps its recent broadcasts (None: no history).
        self.history = history
        #: Makes what members receive from a broadcast and its position (None: the message).
        self.envelope = envelope
        #: Where the room counts its members' identities.
        self.presence_store: Presence = MemoryPresence() if presence is None else presence
        #: Live messages a member being replayed to may have waiting (a count); beyond, the
        #: ``policy`` applies to it.
        self.catch_up_limit = catch_up_limit
        self._members: dict[WebSocketConnection, _Member] = {}
        self._replaying: dict[WebSocketConnection, _CatchUp] = {}
        # A burst is on: broadcasts since the first one the scheduler has not moved past.
        # The first is written to each member at once; the others are held and go joined.
        self._burst = False
        # Recent wire messages by (epoch, offset), and replayed frames by (shared_key, wire
        # message): members resuming from the same point (a reconnect storm) share them.
        self._wires = _Cache()  # (epoch, offset) -> what members receive
        self._replay_frames = _Cache()  # (shared_key, what members receive) -> (frame, size)
        self._presence_callbacks: dict[object, Callable[[PresenceEvent], object]] = {}
        #: Messages dropped for slow members since the room was made (each is also counted in
        #: the member's server ``Metrics``, ``room_dropped``, as are ``closed_slow``).
        self.dropped = 0
        #: Members closed by the CLOSE policy since the room was made.
        self.closed_slow = 0
        if backplane is not None:
            backplane.attach(self)
        for store in (history, presence):
            attach = getattr(store, "attach", None)
            if attach is not None:
                attach(self)  # a store that reports to the room itself (RedisHistory...)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, ws: object) -> bool:
        return ws in self._members

    def __iter__(self) -> Iterator[WebSocketConnection]:
        return iter(list(self._members))

    def add(self, ws: WebSocketConnection, *, identity: str | None = None) -> None:
        """Add a member, with an ``identity`` for presence if given; it is removed when its
        connection closes. Nothing happens if it is a member already or closed."""
        if ws in self._members or ws.closed:
            return
        self._members[ws] = _Member(ws.on_close(functools.partial(self._closed, ws)), identity)
        if identity is not None:
            count = self.presence_store.add(identity)
            if count is not None:
                self._notify(PresenceEvent(identity, True, count, ws))

    def discard(self, ws: WebSocketConnection) -> None:
        """Remove a member, if it is one; nothing of its membership stays behind."""
        member = self._members.pop(ws, None)
        if member is not None:
            member.leave()
            self._gone(ws, member)

    def _closed(self, ws: WebSocketConnection) -> None:
        member = self._members.pop(ws, None)
        if member is not None:
            self._gone(ws, member)

    def _gone(self, ws: WebSocketConnection, member: _Member) -> None:
        catch_up = self._replaying.pop(ws, None)
        if catch_up is not None and catch_up.arrived is not None:
            catch_up.arrived.set()  # its replay stops waiting
        if member.identity is not None:
            count = self.presence_store.remove(member.identity)
            if count is not None:
                self._notify(PresenceEvent(member.identity, False, count, ws))

    @contextmanager
    def joined(self, ws: WebSocketConnection, *, identity: str | None = None) -> Iterator[Room]:
        """``with room.joined(ws):`` membership for the block (``add()``, then ``discard()``)."""
        self.add(ws, identity=identity)
        try:
            yield self
        finally:
            self.discard(ws)

    async def join(
        self,
        ws: WebSocketConnection,
        *,
        since: Position | None = None,
        identity: str | None = None,
    ) -> Recovery:
        """Add a member and send it every message after ``since`` (where the client was).

        Returns once the member has been sent (written or queued) all it missed, in order,
        and gets the live broadcasts: those made meanwhile come after the replay, each once.
        ``Recovery.recovered`` is False if that was not possible (no ``since``, no history,
        another epoch, or an offset too old for the history's bounds): then the member is
        live at once and the app should reload the client's state. Waits only while the
        member's outgoing queue is full, and for a shared history store (``RedisHistory``):
        its answer, and this process to deliver the client's offset if the client saw it
        through another process. Raises ValueError if ``ws`` is a member already, and
        what the history store's ``since()`` raises (a shared store that cannot reach its
        server). A member that closes, fails or is cancelled during its replay leaves the room.
        """
        if ws in self._members:
            raise ValueError("this connection is a member of the room already")
        await trio.lowlevel.checkpoint_if_cancelled()
        history = self.history
        if since is None or history is None or ws.closed:
            self.add(ws, identity=identity)
            await trio.lowlevel.cancel_shielded_checkpoint()  # a member now: no way back
            return Recovery(False, 0, None if history is None else history.position())
        # Live messages are held from now on, while the history is read and replayed.
        catch_up = _CatchUp(epoch=since.epoch)
        self._replaying[ws] = catch_up
        self.add(ws, identity=identity)
        try:
            entries = await history.since(since)
            if self._replaying.get(ws) is not catch_up:
                return Recovery(False, 0, history.position())  # it left meanwhile
            if history.position().epoch != since.epoch:
                # The history was lost meanwhile (a shared store's new epoch, offsets from 1
                # again): no replay, and what was held (the new epoch's) goes as it is.
                entries = None
            until = replayed = 0
            if entries is not None:
                top = history.position().offset
                if entries and entries[-1].offset > top:
                    # A shared store's newest entries are not delivered here yet: they will
                    # be, to this member too, as live messages.
                    entries = [entry for entry in entries if entry.offset <= top]
                # The replay, then what came meanwhile and is not in it; and the client's
                # own position may be ahead of this process (a shared store): wait for it.
                seen = entries[-1].offset if entries else since.offset
                held = catch_up.pending
                catch_up.pending = collections.deque(self._replayable(entries))
                catch_up.replay = replayed = len(catch_up.pending)
                catch_up.pending.extend(item for item in held if item[0] > seen)
                catch_up.floor = until = seen
            await self._send_pending(ws, catch_up, history, since.epoch, until)
        finally:
            if self._replaying.get(ws) is catch_up:
                self.discard(ws)  # cancelled or failed halfway: it must not stay behind
        await trio.lowlevel.cancel_shielded_checkpoint()
        position = history.position()
        recovery = Recovery(
            entries is not None and position.epoch == since.epoch, replayed, position
        )
        metrics = ws.metrics
        if metrics is not None:
            if recovery.recovered:
                metrics.room_resumed += 1
                metrics.room_replayed += recovery.replayed
            else:
                metrics.room_resume_refused += 1
        return recovery

    async def _send_pending(
        self,
        ws: WebSocketConnection,
        catch_up: _CatchUp,
        history: History,
        epoch: str,
        until: int,
    ) -> None:
        """Offer the member's held messages in order, waiting while its queue is full, until
        this process has delivered offset ``until`` of ``epoch`` (or the history moved to
        another epoch); then it is live (broadcasts go to its outbox directly)."""
        outbox = ws.outbox
        key = outbox.shared_key
        while True:
            pending = catch_up.pending
            while pending:
                if key is None:  # stateful compression or masking: per member, one by one
                    count = 1
                    result = outbox.offer(pending[0][1])
                else:  # frames shared with other members, written up to _BATCH at once
                    frames, raw, deflate_raw, deflate = self._replay_batch(key, outbox, pending)
                    count = len(frames)
                    result = outbox.offer_frame(b"".join(frames) if count > 1 else frames[0])
                if result is Offer.FULL:
                    await outbox.wait()
                    if self._replaying.get(ws) is not catch_up:
                        return  # it left
                elif result is Offer.CLOSED:
                    self.discard(ws)
                    return
                else:
                    metrics = ws.metrics
                    if key is not None and metrics is not None:  # the core did not count them
                        metrics.messages_sent += count
                        metrics.bytes_sent += raw
                        metrics.deflate_raw_bytes_sent += deflate_raw
                        metrics.deflate_bytes_sent += deflate
                    for _ in range(count):
                        catch_up.popleft()
            position = history.position()
            if position.offset >= until or position.epoch != epoch:
                break
            catch_up.arrived = trio.Event()
            await catch_up.arrived.wait()
            catch_up.arrived = None
            if self._replaying.get(ws) is not catch_up:
                return  # it left
        del self._replaying[ws]

    def _replay_batch(
        self, key: Hashable, outbox: Outbox, pending: collections.deque[tuple[int, str | bytes]]
    ) -> tuple[list[bytes], int, int, int]:
        """The shared frames of the first pending messages, up to ``_BATCH`` bytes (one at
        least), with what the member's metrics count for them: payload bytes, and of those
        compressed, the bytes before and after compression."""
        frames: list[bytes] = []
        size = raw = deflate_raw = deflate = 0
        for _, message in pending:
            frame, compressed = self._replay_frame(key, outbox, message)
            if frames and size + len(frame) > _BATCH:
                break
            frames.append(frame)
            size += len(frame)
            payload = _utf8_size(message)
            raw += payload
            if compressed:
                deflate_raw += payload
                deflate += compressed
        return frames, raw, deflate_raw, deflate

    def position(self) -> Position | None:
        """The epoch and the offset of the room's last broadcast (None without history)."""
        return None if self.history is None else self.history.position()

    async def presence(self) -> dict[str, int]:
        """Every identity in the room and how many connections it has (in every process
        when the presence store is shared)."""
        return await self.presence_store.snapshot()

    def on_presence(self, callback: Callable[[PresenceEvent], object]) -> Callable[[], None]:
        """Call ``callback(event)`` for every join and leave of a member with an identity;
        returns a function that stops it.

        The callback runs at once, in the task that made the change (a handler, or
        ``broadcast()`` dropping a closed member): it must not block. To handle events in a
        task of your own, pass them on, e.g. with a memory channel's ``send_nowait()``. An
        exception it raises is logged and ignored.
        """
        key = object()
        self._presence_callbacks[key] = callback

        def cancel() -> None:
            self._presence_callbacks.pop(key, None)

        return cancel

    def deliver_presence(self, event: PresenceEvent) -> None:
        """Report ``event`` to the ``on_presence`` callbacks (a shared presence store reports
        other processes' members with this)."""
        self._notify(event)

    def _notify(self, event: PresenceEvent) -> None:
        for callback in list(self._presence_callbacks.values()):
            try:
                callback(event)
            except Exception:
                logger.exception("presence callback %r failed", callback)

    def dropped_for(self, ws: WebSocketConnection) -> int:
        """Messages dropped for this member so far."""
        member = self._members.get(ws)
        return 0 if member is None else member.dropped

    def broadcast(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """Queue ``message`` for every member (but ``exclude``); return how many took it here.

        Never waits: a member whose queue is full gets the room's ``policy``. With a backplane,
        the message is also handed to it for the other processes (without waiting either).
        """
        delivered = self.deliver(message, exclude=exclude)
        if self.backplane is not None:
            self.backplane.publish(self.name, message)
        return delivered

    def deliver(self, message: str | bytes, *, exclude: WebSocketConnection | None = None) -> int:
        """``broadcast()`` to this process's members only (a backplane delivers with this).

        With history, the message is recorded first and gets the next offset (a shared
        history store may deliver it later, itself: then this returns 0)."""
        history = self.history
        if history is not None:
            entry = history.append(message)
            if entry is None:
                return 0
            # An envelope that raises: nobody gets it (nor, later, a replay: _replayable).
            return self._fan_out(self._wire(entry), exclude, entry.offset)
        return self._fan_out(message, exclude, 0)

    def deliver_entry(self, entry: Entry, *, exclude: WebSocketConnection | None = None) -> int:
        """Deliver a message already recorded in the room's history (a history store that
        gives offsets itself, e.g. from Redis, delivers with this). If the envelope raises,
        the error is logged and nobody gets the message (nor a replay of it): 0."""
        try:
            wire = self._wire(entry)
        except Exception:
            logger.exception("room %r: the envelope refused message %d", self.name, entry.offset)
            return 0
        return self._fan_out(wire, exclude, entry.offset)

    def _replayable(self, entries: list[Entry]) -> Iterator[tuple[int, str | bytes]]:
        """``(offset, wire message)`` of the entries, but those the envelope refuses: their
        broadcast reached nobody, and their replay does not either."""
        for entry in entries:
            try:
                yield entry.offset, self._wire(entry)
            except Exception:
                continue

    def _wire(self, entry: Entry) -> str | bytes:
        """What members receive for ``entry``: its message, or its envelope (made once for
        a recent entry, however many members are sent it)."""
        envelope = self.envelope
        if envelope is None or self.history is None:
            return entry.message
        key = (self.history.epoch, entry.offset)
        wire: str | bytes | None = self._wires.get(key)
        if wire is None:
            wire = envelope(entry.message, Position(*key))
            self._wires.put(key, wire, len(wire))
        return wire

    def _replay_frame(
        self, key: Hashable, outbox: Outbox, message: str | bytes
    ) -> tuple[bytes, int]:
        """``outbox.encode_shared(message)``, encoded once for every member of ``key``."""
        frame: tuple[bytes, int] | None = self._replay_frames.get((key, message))
        if frame is None:
            frame = outbox.encode_shared(message)
            self._replay_frames.put((key, message), frame, len(frame[0]))
        return frame

    def _fan_out(
        self, message: str | bytes, exclude: WebSocketConnection | None, offset: int
    ) -> int:
        """Offer ``message`` (with its ``offset``, 0 without history) to every member."""
        replaying = self._replaying
        history = self.history
        epoch = history.position().epoch if replaying and history is not None else ""
        # One encoding per shared_key, with its compressed payload size (0: not compressed).
        frames: dict[Hashable, tuple[bytes, int]] = {}
        size = -1  # the payload size, once a shared frame needs it counted
        delivered = 0
        hold = self._burst
        if not hold and self._members:
            self._burst = True
            trio.lowlevel.current_trio_token().run_sync_soon(self._end_burst)
        for ws in list(self._members):
            if ws is exclude:
                continue
            if replaying and ws in replaying:
                catch_up = replaying[ws]  # held until its replay is through
                if catch_up.held >= self.catch_up_limit:
                    self._slow(ws)
                else:
                    catch_up.hold(offset, message, epoch)
                    delivered += 1
                continue
            outbox = ws.outbox
            key = outbox.shared_key
            if key is None:
                result = outbox.offer(message, hold=hold)  # stateful compression or masking
            else:
                encoded = frames.get(key)
                if encoded is None:
                    encoded = frames[key] = outbox.encode_shared(message)
                result = outbox.offer_frame(encoded[0], hold=hold)
                metrics = ws.metrics
                if metrics is not None and result is not Offer.FULL and result is not Offer.CLOSED:
                    # The connection's core counts what it encodes; a shared frame is ours.
                    if size < 0:
                        size = _utf8_size(message)
                    metrics.messages_sent += 1
                    metrics.bytes_sent += size
                    if encoded[1]:
                        metrics.deflate_raw_bytes_sent += size
                        metrics.deflate_bytes_sent += encoded[1]
            if result is Offer.FULL:
                self._slow(ws)
            elif result is Offer.CLOSED:
                self.discard(ws)  # closing: it leaves now rather than when it is over
            else:
                delivered += 1
        return delivered

    def _end_burst(self) -> None:
        self._burst = False

    def _slow(self, ws: WebSocketConnection) -> None:
        metrics = ws.metrics
        if self.policy is SlowPolicy.DROP:
            self.dropped += 1
            self._members[ws].dropped += 1
            if metrics is not None:
                metrics.room_dropped += 1
        else:
            self.closed_slow += 1
            if metrics is not None:
                metrics.room_closed_slow += 1
            self.discard(ws)
            ws.close_nowait(self.close_code, self.close_reason)


def _utf8_size(message: str | bytes) -> int:
    """The payload size of ``message``: its length, or that of its UTF-8 encoding."""
    if isinstance(message, bytes) or message.isascii():
        return len(message)
    return len(message.encode("utf-8"))
