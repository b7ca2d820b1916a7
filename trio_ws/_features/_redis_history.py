"""``RedisHistory``: one room's history in a Redis Stream, shared by every process.

Needs the ``redis`` extra (coredis) and Redis 6.2 or later (``XTRIM MINID``).

Keys, for the room ``name``: the stream ``prefix + name + ":stream"`` (one entry per message:
offset, kind, payload; the stream ID's milliseconds are its time), the hash
``prefix + name + ":meta"`` (``epoch``, and ``offset``, the last one given), and the channel
``prefix + name + ":entries"``. Each append gives both keys an expiry: the stream goes once the
room has been idle for ``ttl`` (its entries are all trimmed by then), or with the meta without
``ttl``; the meta outlives the last message by ``meta_ttl``, so that a client that was up to
date can still resume after a long quiet spell. Reads refresh neither (a resume storm does not
keep a room nobody publishes to), but give an expiry to a key that has none.

``append()`` queues the message and returns None: a publisher task runs one Lua script per
batch, which gives each message the next offset (``HINCRBY``), adds it to the stream
(``XADD ... MAXLEN size``; ``XTRIM ... MINID`` for ``ttl``) and publishes the batch with its
offsets, atomically. Every process, this one included, delivers what the channel brings to its
room with ``Room.deliver_entry()``, in offset order: offsets are the same everywhere, so a
client may resume through any process. The epoch lives in the hash: when Redis loses the room's
keys (a restart without persistence, or the meta expired), the next append (or read) starts a
new epoch from offset 1, and positions of the old one are refused.

After each (re)connection, the subscriber first reads what it missed from the stream, then
delivers from the channel (skipping offsets it has delivered): a short Redis outage costs
members nothing that the history still holds. While Redis is unreachable, ``append()`` drops
the message (``dropped``) and ``since()`` answers None (the client reloads).

``since()`` answers from the last ``size`` entries this process delivered when they cover the
client's gap (a reconnect storm then costs Redis nothing), and asks Redis otherwise: another
epoch, a client ahead of this process, a gap older than those, or entries old enough (half
the ``ttl``) that Redis may have trimmed them, or an epoch idle for half the ``meta_ttl``.
"""

from __future__ import annotations

import collections
import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from ._history import Entry, Position, new_epoch
from ._redis_client import describe
from ._redis_store import RedisStore

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisHistory"]

logger = logging.getLogger("trio_ws")

_BINARY, _TEXT = b"0", b"1"

# KEYS: stream, meta. ARGV: a new epoch, size, ttl (ms, 0: none), channel, the stream's and the
# meta's expiry (ms, 0: none), then kind and payload per message. Publishes: epoch "\n", then
# per message "offset ms kind length\n" payload.
_APPEND = """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[1]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
local parts = {epoch, '\\n'}
for i = 7, #ARGV, 2 do
  local offset = redis.call('HINCRBY', KEYS[2], 'offset', 1)
  local id = redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], '*', 'o', offset, 'k', ARGV[i],
    'd', ARGV[i + 1])
  local ms = string.match(id, '^(%d+)')
  table.insert(parts, offset .. ' ' .. ms .. ' ' .. ARGV[i] .. ' ' .. #ARGV[i + 1] .. '\\n')
  table.insert(parts, ARGV[i + 1])
end
local ttl = tonumber(ARGV[3])
if ttl > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', ms - ttl)
end
for i = 1, 2 do
  if tonumber(ARGV[4 + i]) > 0 then
    redis.call('PEXPIRE', KEYS[i], ARGV[4 + i])
  else
    redis.call('PERSIST', KEYS[i])
  end
end
redis.call('PUBLISH', ARGV[4], table.concat(parts))
return epoch
"""

# KEYS: stream, meta. ARGV: ttl (ms, 0: none), an offset, size, a new epoch (started if the
# room has none), the stream's and the meta's expiry (ms, 0: none). Returns {epoch, last offset,
# the entries after that offset, newest first, the meta's PTTL}: the stream's last
# (last - offset) entries, since offsets are consecutive, or none if that is more than size.
# Reads refresh no expiry; they give one to a key that has none (written before there were).
_READ = """
local epoch = redis.call('HGET', KEYS[2], 'epoch')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[2], 'epoch', epoch, 'offset', 0)
end
for i = 1, 2 do
  if tonumber(ARGV[4 + i]) > 0 and redis.call('PTTL', KEYS[i]) == -1 then
    redis.call('PEXPIRE', KEYS[i], ARGV[4 + i])
  end
end
local pttl = redis.call('PTTL', KEYS[2])
local ttl = tonumber(ARGV[1])
if ttl > 0 then
  local now = redis.call('TIME')
  local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
  redis.call('XTRIM', KEYS[1], 'MINID', ms - ttl)
end
local last = tonumber(redis.call('HGET', KEYS[2], 'offset'))
local count = last - tonumber(ARGV[2])
if count <= 0 or count > tonumber(ARGV[3]) then return {epoch, last, {}, pttl} end
return {epoch, last, redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', count), pttl}
"""


class RedisHistory(RedisStore):
    """A room's history in Redis, shared by the rooms of that ``name`` in every process.

    ::

        history = RedisHistory("redis://127.0.0.1:6379", "chat", size=1000, ttl=300)
        room = Room(history=history, envelope=json_envelope)
        async with trio.open_nursery() as nursery:
            await nursery.start(history.run)
            ...

    The room needs no backplane: the history carries its broadcasts to every process (see the
    module docstring). ``size`` (a count) and ``ttl`` (seconds, on Redis's clock; None: no age
    limit) bound the stream. Its two keys expire: the stream after ``ttl`` seconds without a
    message (without ``ttl``: with the meta), the epoch and offset ``meta_ttl`` seconds after
    the last message (default 30 days; None: never), when positions of that epoch are refused
    and the room starts afresh. Only appends refresh these expiries, as in Centrifugo: resumes
    do not keep alive a room that nobody publishes to. ``run()`` stays connected, reconnecting
    with backoff from ``backoff_initial`` to ``backoff_max`` seconds. Raises ValueError for a
    ``size`` below 1, or a ``ttl`` or ``meta_ttl`` not above 0; ImportError without coredis.
    """

    kind = "history"

    def __init__(
        self,
        url: str,
        name: str,
        *,
        size: int = 1000,
        ttl: float | None = None,
        meta_ttl: float | None = 30 * 24 * 3600.0,
        prefix: str = "trio_ws:",
        queue_size: int = 10_000,
        max_batch: int = 1000,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 10.0,
        ping_interval: float = 5.0,
    ) -> None:
        if size < 1:
            raise ValueError(f"history size must be at least 1, not {size}")
        if ttl is not None and ttl <= 0:
            raise ValueError(f"history ttl must be above 0 seconds, not {ttl}")
        if meta_ttl is not None and meta_ttl <= 0:
            raise ValueError(f"history meta_ttl must be above 0 seconds, not {meta_ttl}")
        base = prefix + name
        super().__init__(
            url,
            name,
            f"{base}:entries",
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            ping_interval=ping_interval,
        )
        #: How many messages the stream keeps at most.
        self.size = size
        #: How long, in seconds, the stream keeps a message at most (None: no age limit).
        self.ttl = ttl
        #: How long, in seconds, the room's epoch and offset outlive its last message (None:
        #: forever).
        self.meta_ttl = meta_ttl
        #: Most messages appended with one script call.
        self.max_batch = max_batch
        self._stream, self._meta = f"{base}:stream", f"{base}:meta"
        self._ttl_ms = 0 if ttl is None else max(1, round(ttl * 1000))
        self._meta_ms = 0 if meta_ttl is None else max(1, round(meta_ttl * 1000))
        # The stream goes with its last entry (all trimmed by then), or with the meta.
        self._stream_ms = min((ms for ms in (self._ttl_ms, self._meta_ms) if ms), default=0)
        self._meta_half = math.inf if meta_ttl is None else meta_ttl / 2
        self._send, self._receive = trio.open_memory_channel[str | bytes](queue_size)
        self._epoch = ""  # the epoch of the last entry delivered ("": never connected yet)
        self._last = 0  # the offset of the last entry delivered
        # Until when (time.time()) the epoch is surely still in Redis: half its meta's lifetime.
        self._epoch_until = -math.inf
        # The last entries delivered here, consecutive, ending at _last: most resumes are
        # answered from them, without a Redis call.
        self._recent: collections.deque[Entry] = collections.deque(maxlen=size)
        #: Entries delivered to the room (from any process).
        self.delivered = 0
        #: Entries this process never delivered: gone from the stream before it could read
        #: them back after an outage (or lost on the channel).
        self.missed = 0

    # The History protocol ---------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        """The room's epoch as this process knows it ("" until first connected to Redis)."""
        return self._epoch

    def append(self, message: str | bytes) -> None:
        """Queue ``message`` for Redis; it is delivered when it comes back with its offset."""
        if self._client is None:
            self.dropped += 1
            return
        try:
            self._send.send_nowait(message)
        except trio.WouldBlock:
            self.dropped += 1

    def position(self) -> Position:
        """The epoch and offset of the last entry delivered here."""
        return Position(self._epoch, self._last)

    async def since(self, position: Position) -> list[Entry] | None:
        """The entries after ``position``; None if Redis cannot give them all, or cannot be
        reached. Recent ones this process delivered come from memory, the others from Redis."""
        client = self._client
        if client is None or position.offset < 0:
            await trio.lowlevel.checkpoint()
            return None
        await trio.lowlevel.checkpoint()  # before the answer: none once it is given
        recent = self._since_recent(position)
        if recent is not None:
            return recent
        try:
            epoch, last, entries, pttl = await self._read(client, position.offset)
        except Exception as exc:
            logger.debug("Redis history %s: cannot read (%s)", self.name, describe(exc))
            return None
        if epoch == self._epoch:
            self._epoch_until = max(self._epoch_until, _until(pttl))
        if epoch != position.epoch or position.offset > last:
            return None
        if len(entries) < last - position.offset:
            return None  # some are gone (count or age)
        return entries

    def _since_recent(self, position: Position) -> list[Entry] | None:
        """The entries after ``position`` if this process delivered them all lately, else
        None (ask Redis): another epoch, a client ahead of this process, entries older than
        kept here, or old enough (half the ttl) that Redis may have trimmed them already, or
        an epoch idle for so long (half the meta_ttl) that Redis may have forgotten it."""
        if position.epoch != self._epoch or position.offset > self._last:
            return None
        if time.time() > self._epoch_until:
            return None
        recent = self._recent
        if position.offset == self._last:
            return []
        if not recent or recent[0].offset > position.offset + 1:
            return None
        entries = [recent[i] for i in range(position.offset + 1 - recent[0].offset, len(recent))]
        if self.ttl is not None and time.time() - entries[0].time > self.ttl / 2:
            return None
        return entries

    # Connection ------------------------------------------------------------------------------

    async def _start(self, client: coredis.Redis[bytes]) -> None:
        """What was missed while away, before the channel (which holds what comes now)."""
        epoch, last, entries, pttl = await self._read(client, self._last)
        if not self._epoch:
            self._epoch, self._last = epoch, last  # the first time: from now on
        else:
            if epoch != self._epoch:  # Redis lost the history: all of the new one
                epoch, last, entries, pttl = await self._read(client, 0)
            self._deliver(epoch, entries)
        self._epoch_until = max(self._epoch_until, _until(pttl))

    def _tasks(self, nursery: trio.Nursery, client: coredis.Redis[bytes]) -> None:
        nursery.start_soon(self._publisher, client)

    def _lost(self) -> None:
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            self.dropped += 1

    async def _read(
        self, client: coredis.Redis[bytes], after: int
    ) -> tuple[str, int, list[Entry], int]:
        """The epoch (started now if the room has none yet), the last offset given, the
        entries after ``after`` that the stream still has, oldest first (none if more than
        ``size`` came since), and the milliseconds the epoch has left in Redis (-1: no end)."""
        args: list[str | int] = [self._ttl_ms, after, self.size, new_epoch()]
        args += [self._stream_ms, self._meta_ms]
        reply: Any = await client.eval(_READ, keys=[self._stream, self._meta], args=args)
        epoch, last, raw, pttl = reply
        entries = []
        for stream_id, fields in reversed(raw):
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            ms = int(stream_id.split(b"-")[0])
            entries.append(_entry(int(values[b"o"]), ms, values[b"k"], values[b"d"]))
        return epoch.decode(), int(last), entries, int(pttl)

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        receive = self._receive
        while True:
            batch = [await receive.receive()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(receive.receive_nowait())
                except trio.WouldBlock:
                    break
            args: list[str | bytes | int] = [new_epoch(), self.size, self._ttl_ms, self._channel]
            args += [self._stream_ms, self._meta_ms]
            for message in batch:
                if isinstance(message, str):
                    args += [_TEXT, message.encode("utf-8")]
                else:
                    args += [_BINARY, message]
            await client.eval(_APPEND, keys=[self._stream, self._meta], args=args)

    def _received(self, data: bytes) -> None:
        self._deliver(*_decode(data))

    def _deliver(self, epoch: str, entries: list[Entry]) -> None:
        """Deliver the entries not delivered yet, in order; a new epoch starts afresh."""
        if epoch != self._epoch:
            if self._epoch:
                logger.warning("Redis history %s: history lost, new epoch", self.name)
            self._epoch, self._last = epoch, 0
            self._recent.clear()
            self._epoch_until = -math.inf
        if entries:  # an append refreshed the meta's expiry when the last one was recorded
            self._epoch_until = max(self._epoch_until, entries[-1].time + self._meta_half)
        room = self._room
        for entry in entries:
            if entry.offset <= self._last:
                continue  # delivered already (read after reconnecting, then published)
            if entry.offset > self._last + 1:
                self._recent.clear()  # no longer consecutive
                self.missed += entry.offset - self._last - 1
                logger.warning(
                    "Redis history %s: %d messages gone before they could be delivered",
                    self.name,
                    entry.offset - self._last - 1,
                )
            self._last = entry.offset
            self._recent.append(entry)
            self.delivered += 1
            if room is not None:
                room.deliver_entry(entry)


def _until(pttl: int) -> float:
    """Until when an epoch with ``pttl`` milliseconds left in Redis surely stays there: half
    of that from now (-1: no end)."""
    return math.inf if pttl == -1 else time.time() + pttl / 2000


def _entry(offset: int, ms: int, kind: bytes, payload: bytes) -> Entry:
    message: str | bytes = payload.decode("utf-8") if kind == _TEXT else payload
    return Entry(offset, message, ms / 1000)


def _decode(data: bytes) -> tuple[str, list[Entry]]:
    """The epoch and entries of a message the append script published."""
    newline = data.find(b"\n")
    if newline < 0:
        raise ValueError("no epoch")
    epoch = data[:newline].decode()
    entries = []
    at = newline + 1
    while at < len(data):
        end = data.find(b"\n", at)
        if end < 0:
            raise ValueError("truncated entry head")
        offset, ms, kind, length = data[at:end].split(b" ")
        at = end + 1 + int(length)
        if at > len(data):
            raise ValueError("truncated entry")
        entries.append(_entry(int(offset), int(ms), kind, data[end + 1 : at]))
    return epoch, entries
