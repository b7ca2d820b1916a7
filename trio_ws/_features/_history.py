"""A room's recent broadcasts, each with its position, so that a member can resume.

Every broadcast of a room with history gets an *offset*: 1, 2, 3... in broadcast order. The
stream of offsets has an *epoch*, a random string: when history is lost (the process
restarted, say), a new epoch starts, so a client holding an offset of the old stream learns
that it cannot resume from it rather than silently missing messages.

``History`` is what a ``Room`` asks of its history store; ``MemoryHistory`` keeps it in this
process, ``RedisHistory`` (``_redis_history``) in a Redis Stream shared by several processes::

    epoch: str                        the current stream's identity
    append(message) -> Entry | None   record a broadcast with the next offset; never waits.
                                      An Entry: deliver it now (a store in this process).
                                      None: the store delivers it itself, once it has its
                                      offset, to the room of that name in every process, with
                                      room.deliver_entry(entry) (the store is then also the
                                      room's backplane)
    position() -> Position            the epoch and the last offset delivered here (0: none)
    async since(position) -> list[Entry] | None
                                      the entries after position.offset, oldest first, or
                                      None if they cannot all be given (other epoch, offset
                                      too old or never given)
    attach(room)                      optional: Room() calls it, for a store that delivers
                                      entries itself

``since`` is a coroutine so that a store may ask a server. The ``Room`` holds the member's live
messages from before it calls ``since`` until its replay is through; it replays the answer's
entries up to ``position()`` (newer ones are still to be delivered here, and will reach the
member live), then the held messages not in the answer. For a shared store that is exactly
once when a message's offset is given and it is published in one step (``RedisHistory``'s Lua
script: ``HINCRBY``, ``XADD``, ``PUBLISH``) and ``since`` reads after the member was
registered: what it read was published before, so it is dropped from the held messages or
delivered later; what it did not read was published after, so it is held.
"""

from __future__ import annotations

import collections
import secrets
from typing import Protocol

import attrs
import trio

__all__ = ["Entry", "History", "MemoryHistory", "Position", "new_epoch"]


@attrs.frozen
class Position:
    """A place in a room's stream: after the message ``offset`` of the stream ``epoch``.

    ``offset`` counts the room's broadcasts from 1 (0: before the first one); ``epoch`` is a
    random string that changes when the room's history is lost. A client sends back the
    position of the last message it got to resume after it (``Room.join(ws, since=...)``).
    """

    epoch: str
    offset: int


@attrs.frozen
class Entry:
    """One broadcast kept in a room's history."""

    #: Its place in the room's stream: 1 for the room's first broadcast, then 2, 3...
    offset: int
    #: The message as given to ``broadcast()`` (before any envelope).
    message: str | bytes
    #: When it was recorded, in seconds: ``trio.current_time()`` for ``MemoryHistory``, Unix
    #: time on the server's clock for a store on a server (``RedisHistory``).
    time: float


def new_epoch() -> str:
    """A fresh random epoch (12 URL-safe characters)."""
    return secrets.token_urlsafe(9)


class History(Protocol):
    """Where a ``Room`` keeps its recent broadcasts (see the module docstring)."""

    @property
    def epoch(self) -> str:
        """The identity of the current stream of offsets."""

    def append(self, message: str | bytes) -> Entry | None:
        """Record ``message`` with the next offset; never waits. Its entry, to deliver now, or
        None if the store delivers it later with ``Room.deliver_entry()``."""

    def position(self) -> Position:
        """The epoch and the offset of the last message recorded (0 if none yet)."""

    async def since(self, position: Position) -> list[Entry] | None:
        """Every entry after ``position``, oldest first; None if that is not possible."""


class MemoryHistory:
    """History in this process: the last ``size`` broadcasts, none older than ``ttl`` seconds.

    ``size`` (a count, at least 1) and ``ttl`` (seconds of ``trio.current_time()``, or None for
    no age limit) bound what is kept; a member whose resume point fell out of them cannot
    resume. ``epoch`` is new for each ``MemoryHistory`` (so after each restart), unless given.
    Raises ValueError for a ``size`` below 1 or a ``ttl`` not above 0.
    """

    def __init__(self, size: int = 1000, *, ttl: float | None = None, epoch: str = "") -> None:
        if size < 1:
            raise ValueError(f"history size must be at least 1, not {size}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"history ttl must be above 0 seconds, not {ttl}")
        #: How many broadcasts are kept at most.
        self.size = size
        #: How long a broadcast is kept at most, in seconds (None: no age limit).
        self.ttl = ttl
        self._epoch = epoch or new_epoch()
        self._entries: collections.deque[Entry] = collections.deque(maxlen=size)
        self._last = 0  # the offset of the last message recorded

    @property
    def epoch(self) -> str:
        """The identity of this history's stream of offsets."""
        return self._epoch

    def __len__(self) -> int:
        """How many entries are kept now (expired ones included until the next look)."""
        return len(self._entries)

    def append(self, message: str | bytes) -> Entry:
        """Record ``message`` with the next offset and return its entry."""
        now = trio.current_time()
        self._expire(now)
        self._last += 1
        entry = Entry(self._last, message, now)
        self._entries.append(entry)  # the deque drops the oldest beyond ``size``
        return entry

    def position(self) -> Position:
        """The epoch and the offset of the last message recorded (0 if none yet)."""
        return Position(self._epoch, self._last)

    async def since(self, position: Position) -> list[Entry] | None:
        """The entries after ``position``, oldest first; None if it is of another epoch, if
        some of them are gone (too many or too old since) or if its offset was never given."""
        return self.since_now(position)

    def since_now(self, position: Position) -> list[Entry] | None:
        """``since()`` without waiting (this store never has to)."""
        if position.epoch != self._epoch or not 0 <= position.offset <= self._last:
            return None
        self._expire(trio.current_time())
        entries = self._entries
        first = self._last - len(entries) + 1  # the oldest offset still kept
        if position.offset + 1 < first:
            return None  # some of what it missed is gone
        skip = position.offset + 1 - first
        return [entries[i] for i in range(skip, len(entries))]

    def _expire(self, now: float) -> None:
        if self.ttl is None:
            return
        oldest = now - self.ttl
        entries = self._entries
        while entries and entries[0].time <= oldest:
            entries.popleft()
