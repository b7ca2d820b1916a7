"""Fan-out to many connections: encode a message once, never wait on a slow member.

A broadcast is offered to each member's outbox (``Outbox.offer``), which writes it at once or
queues it without waiting. When a member's queue (``write_queue`` frames) is full, the room's
policy applies: drop the message for that member (and count it), or close the member with a
code such as 1013 (try again later) or 1008 (policy violation). Members whose frames are
encoded alike (``Outbox.shared_key``) share one encoded frame.

A room with a ``backplane`` (see ``trio_ws._features._backplane``) also hands each broadcast
to it, so that the members of the room of the same name in other processes get it; the
backplane calls ``deliver()`` with what other processes broadcast.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Hashable, Iterator
from contextlib import contextmanager
from typing import Protocol

import attrs

from .._trio import Offer, WebSocketConnection

__all__ = ["Backplane", "Room", "SlowPolicy"]


class Backplane(Protocol):
    """What a ``Room`` needs from a backplane (``LocalBackplane``, ``RedisBackplane``)."""

    def attach(self, room: Room) -> None:
        """Deliver what other processes broadcast in ``room.name`` to ``room``."""

    def publish(self, room: str, message: str | bytes) -> None:
        """Send ``message`` to the room ``room`` of the other processes; never waits."""


@attrs.define(slots=True)
class _Member:
    leave: Callable[[], None]  # cancels the connection's close callback
    dropped: int = 0  # messages dropped for this member


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
    """

    def __init__(
        self,
        *,
        policy: SlowPolicy | str = SlowPolicy.DROP,
        close_code: int = 1013,
        close_reason: str = "too slow to keep up",
        name: str = "",
        backplane: Backplane | None = None,
    ) -> None:
        #: The room's name on its backplane (rooms of the same name in other processes).
        self.name = name
        self.backplane = backplane
        self.policy = SlowPolicy(policy)
        self.close_code = close_code
        self.close_reason = close_reason
        self._members: dict[WebSocketConnection, _Member] = {}
        #: Messages dropped for slow members since the room was made (each is also counted in
        #: the member's server ``Metrics``, ``room_dropped``, as are ``closed_slow``).
        self.dropped = 0
        #: Members closed by the CLOSE policy since the room was made.
        self.closed_slow = 0
        if backplane is not None:
            backplane.attach(self)

    def __len__(self) -> int:
        return len(self._members)

    def __contains__(self, ws: object) -> bool:
        return ws in self._members

    def __iter__(self) -> Iterator[WebSocketConnection]:
        return iter(list(self._members))

    def add(self, ws: WebSocketConnection) -> None:
        """Add a member; it is removed when its connection closes."""
        if ws in self._members or ws.closed:
            return
        self._members[ws] = _Member(ws.on_close(functools.partial(self._members.pop, ws, None)))

    def discard(self, ws: WebSocketConnection) -> None:
        """Remove a member, if it is one; nothing of its membership stays behind."""
        member = self._members.pop(ws, None)
        if member is not None:
            member.leave()

    @contextmanager
    def joined(self, ws: WebSocketConnection) -> Iterator[Room]:
        """``with room.joined(ws):`` membership for the block."""
        self.add(ws)
        try:
            yield self
        finally:
            self.discard(ws)

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
        """``broadcast()`` to this process's members only (a backplane delivers with this)."""
        # One encoding per shared_key, with its compressed payload size (0: not compressed).
        frames: dict[Hashable, tuple[bytes, int]] = {}
        size = -1  # the payload size, once a shared frame needs it counted
        delivered = 0
        for ws in list(self._members):
            if ws is exclude:
                continue
            outbox = ws.outbox
            key = outbox.shared_key
            if key is None:
                result = outbox.offer(message)  # stateful compression or masking: per member
            else:
                encoded = frames.get(key)
                if encoded is None:
                    encoded = frames[key] = outbox.encode_shared(message)
                result = outbox.offer_frame(encoded[0])
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
