"""Who is in a room: an app-given identity per member, counted per connection.

A member joins with an identity (``room.joined(ws, identity="alice")``); one identity may have
several connections (tabs, devices). Members without one are counted in ``len(room)`` only.

``Presence`` is what a ``Room`` asks of its presence store; ``MemoryPresence`` counts in this
process. A store shared by several processes (Redis: one key per connection with a TTL that
each process refreshes, so that a dead worker's members expire) implements the same protocol::

    add(identity) -> int | None       a connection of identity joined here; never waits.
                                      How many connections it has now (the Room reports the
                                      event), or None: the store reports it itself, later
    remove(identity) -> int | None    one left here; likewise
    async snapshot() -> dict[str, int]
                                      every identity present and its connection count, in
                                      every process

A shared store reports events (the other processes', and its own when ``add`` or ``remove``
gave None) with ``room.deliver_presence(event)``; it gets the room from ``attach(room)``, which
``Room()`` calls if the store has it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from .._trio import WebSocketConnection

__all__ = ["MemoryPresence", "Presence", "PresenceEvent"]


@attrs.frozen
class PresenceEvent:
    """A connection with an identity joined or left a room (``Room.on_presence``)."""

    #: The identity given when it joined.
    identity: str
    #: True when it joined, False when it left (closed, dropped, or removed).
    joined: bool
    #: How many connections that identity has in the room now: after a leave, 0 means the
    #: identity is gone.
    connections: int
    #: The connection, when it is in this process (None for another process's).
    ws: WebSocketConnection | None = attrs.field(default=None, eq=False, repr=False)


class Presence(Protocol):
    """Where a ``Room`` counts its members' identities (see the module docstring)."""

    def add(self, identity: str) -> int | None:
        """A connection of ``identity`` joined; how many it has now (None: reported later)."""

    def remove(self, identity: str) -> int | None:
        """A connection of ``identity`` left; how many it has now (None: reported later)."""

    async def snapshot(self) -> dict[str, int]:
        """Every identity present and its number of connections."""


class MemoryPresence:
    """Presence in this process: a count of connections per identity."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def add(self, identity: str) -> int:
        """A connection of ``identity`` joined; return how many it has now."""
        count = self._counts[identity] = self._counts.get(identity, 0) + 1
        return count

    def remove(self, identity: str) -> int:
        """A connection of ``identity`` left; return how many it has now."""
        count = self._counts.get(identity, 0) - 1
        if count > 0:
            self._counts[identity] = count
        else:
            self._counts.pop(identity, None)
            count = 0
        return count

    async def snapshot(self) -> dict[str, int]:
        """Every identity present and its number of connections (a copy)."""
        return dict(self._counts)

    def counts(self) -> dict[str, int]:
        """``snapshot()`` without waiting (this store never has to)."""
        return dict(self._counts)
