"""``RedisPresence``: who is in a room, counted over every process through Redis.

Needs the ``redis`` extra (coredis). Keys, for the room ``name`` (standalone Redis: the scripts
read keys they are not given, which Redis Cluster forbids):

- the sorted set ``prefix + name + ":presence"``: each process's id, scored by when it stops
  counting (milliseconds on Redis's clock) unless it says it is still there;
- a hash per process, ``prefix + name + ":presence:" + id``: identity -> its connections there;
- the channel ``prefix + name + ":presence-events"``.

``add()`` and ``remove()`` return None and queue the change; a task runs one script per change
that updates this process's hash, sums the identity's connections over the processes still
counting, and publishes ``+count identity`` or ``-count identity``. Every process reports what
the channel brings with ``room.deliver_presence()``, so each sees every join and leave with the
identity's count over all processes (the event's ``ws`` is None).

Every ``ttl / 3`` seconds a process says it is still there, and sweeps: a process that has not
for ``ttl`` seconds (it crashed, or lost Redis) is removed, with a leave event per connection
it had. ``snapshot()`` sweeps too. After (re)connecting, a process writes its hash afresh from
its own counts, so Redis restarts and outages heal; joins and leaves while Redis was
unreachable are not reported.
"""

from __future__ import annotations

import logging
import math
import secrets
from typing import TYPE_CHECKING, Any

import trio

from ._presence import PresenceEvent
from ._redis_client import describe
from ._redis_store import RedisStore

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisPresence"]

logger = logging.getLogger("trio_ws")

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Connections of ARGV[1] over the processes still counting (hashes under ARGV[2] .. id).
_TOTAL = """
local function total(zset, identity, prefix, now)
  local sum = 0
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', zset, now, '+inf')) do
    local count = redis.call('HGET', prefix .. id, identity)
    if count then sum = sum + tonumber(count) end
  end
  return sum
end
"""

# KEYS: zset, own hash. ARGV: id, ttl ms, identity, delta (1 or -1), channel, hash prefix.
_CHANGE = (
    _NOW
    + _TOTAL
    + """
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
local n = redis.call('HINCRBY', KEYS[2], ARGV[3], ARGV[4])
if n <= 0 then redis.call('HDEL', KEYS[2], ARGV[3]) end
local sum = total(KEYS[1], ARGV[3], ARGV[6], now)
local sign = '-'
if tonumber(ARGV[4]) > 0 then sign = '+' end
redis.call('PUBLISH', ARGV[5], sign .. sum .. ' ' .. ARGV[3])
return sum
"""
)

# KEYS: zset, own hash. ARGV: id, ttl ms, then identity and count pairs (the whole hash).
_REGISTER = (
    _NOW
    + """
redis.call('DEL', KEYS[2])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1]) end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
"""
)

# KEYS: zset. ARGV: id, ttl ms (0: do not refresh), hash prefix, channel. Removes the processes
# that stopped counting, publishing a leave per connection they had.
_SWEEP = (
    _NOW
    + _TOTAL
    + """
if tonumber(ARGV[2]) > 0 then redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1]) end
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. now)
for _, id in ipairs(dead) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[3] .. id
  local counts = redis.call('HGETALL', key)
  redis.call('DEL', key)
  for i = 1, #counts, 2 do
    local left = total(KEYS[1], counts[i], ARGV[3], now)
    for j = tonumber(counts[i + 1]) - 1, 0, -1 do
      redis.call('PUBLISH', ARGV[4], '-' .. (left + j) .. ' ' .. counts[i])
    end
  end
end
return #dead
"""
)

# KEYS: zset. ARGV: hash prefix. Every identity and count pair of the processes counting.
_SNAPSHOT = (
    _NOW
    + """
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], now, '+inf')) do
  for _, value in ipairs(redis.call('HGETALL', ARGV[1] .. id)) do out[#out + 1] = value end
end
return out
"""
)


class RedisPresence(RedisStore):
    """Presence over every process: ``Room(presence=RedisPresence(url, name))``.

    ::

        presence = RedisPresence("redis://127.0.0.1:6379", "chat")
        room = Room(presence=presence)
        async with trio.open_nursery() as nursery:
            await nursery.start(presence.run)
            ...

    ``await room.presence()`` counts every process's members; ``room.on_presence()`` gets
    every process's joins and leaves, with counts over all processes (see the module
    docstring). ``ttl`` (seconds) is how long a process that stops refreshing (a crash, a lost
    Redis) still counts. While Redis is unreachable (or a read fails), ``snapshot()`` gives this
    process's counts only. Raises ValueError for a ``ttl`` not above 0; ImportError without coredis.
    """

    kind = "presence"

    def __init__(
        self,
        url: str,
        name: str,
        *,
        ttl: float = 30.0,
        prefix: str = "trio_ws:",
        queue_size: int = 10_000,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 10.0,
        ping_interval: float = 5.0,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"presence ttl must be above 0 seconds, not {ttl}")
        base = prefix + name + ":presence"
        super().__init__(
            url,
            name,
            f"{prefix}{name}:presence-events",
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            ping_interval=ping_interval,
        )
        #: Seconds a process still counts after its last refresh.
        self.ttl = ttl
        #: This process's id in Redis.
        self.id = secrets.token_hex(8)
        self._zset, self._hash_prefix = base, base + ":"
        self._ttl_ms = max(1, math.ceil(ttl * 1000))
        self._counts: dict[str, int] = {}  # this process's connections per identity
        self._send, self._receive = trio.open_memory_channel[tuple[str, int]](queue_size)

    # The Presence protocol --------------------------------------------------------------------

    def add(self, identity: str) -> None:
        """A connection of ``identity`` joined here; reported once Redis has counted it."""
        self._counts[identity] = self._counts.get(identity, 0) + 1
        self._queue(identity, 1)

    def remove(self, identity: str) -> None:
        """A connection of ``identity`` left here; reported once Redis has counted it."""
        count = self._counts.get(identity, 0) - 1
        if count > 0:
            self._counts[identity] = count
        else:
            self._counts.pop(identity, None)
        self._queue(identity, -1)

    async def snapshot(self) -> dict[str, int]:
        """Every identity present in any process and its connections (this process's only
        while Redis is unreachable)."""
        client = self._client
        if client is None:
            await trio.lowlevel.checkpoint()
            return dict(self._counts)
        try:
            await self._sweep(client, refresh=False)
            pairs: Any = await client.eval(_SNAPSHOT, keys=[self._zset], args=[self._hash_prefix])
        except Exception as exc:
            logger.debug("Redis presence %s: cannot read (%s)", self.name, describe(exc))
            return dict(self._counts)
        counts: dict[str, int] = {}
        for identity, count in zip(pairs[::2], pairs[1::2], strict=True):
            name = identity.decode("utf-8")
            counts[name] = counts.get(name, 0) + int(count)
        return {name: count for name, count in counts.items() if count > 0}

    def _queue(self, identity: str, delta: int) -> None:
        if self._client is None:
            self.dropped += 1
            return
        try:
            self._send.send_nowait((identity, delta))
        except trio.WouldBlock:
            self.dropped += 1

    # Connection ------------------------------------------------------------------------------

    async def _start(self, client: coredis.Redis[bytes]) -> None:
        args: list[str | int] = [self.id, self._ttl_ms]
        for identity, count in self._counts.items():
            args += [identity, count]
        await client.eval(_REGISTER, keys=[self._zset, self._own_hash], args=args)

    def _tasks(self, nursery: trio.Nursery, client: coredis.Redis[bytes]) -> None:
        nursery.start_soon(self._publisher, client)
        nursery.start_soon(self._refresher, client)

    def _lost(self) -> None:
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            self.dropped += 1

    @property
    def _own_hash(self) -> str:
        return self._hash_prefix + self.id

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        keys = [self._zset, self._own_hash]
        async for identity, delta in self._receive:
            args: list[str | bytes | int] = [self.id, self._ttl_ms, identity, delta]
            args += [self._channel, self._hash_prefix]
            await client.eval(_CHANGE, keys=keys, args=args)

    async def _refresher(self, client: coredis.Redis[bytes]) -> None:
        while True:
            await trio.sleep(self.ttl / 3)
            await self._sweep(client, refresh=True)

    async def _sweep(self, client: coredis.Redis[bytes], *, refresh: bool) -> None:
        ttl = self._ttl_ms if refresh else 0
        args: list[str | bytes | int] = [self.id, ttl, self._hash_prefix, self._channel]
        await client.eval(_SWEEP, keys=[self._zset], args=args)

    def _received(self, data: bytes) -> None:
        head, _, identity = data.partition(b" ")
        if head[:1] not in (b"+", b"-") or not identity:
            raise ValueError(f"not a presence event: {data[:40]!r}")
        event = PresenceEvent(identity.decode("utf-8"), head[:1] == b"+", int(head[1:]))
        if self._room is not None:
            self._room.deliver_presence(event)
