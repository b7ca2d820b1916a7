"""``RedisBackplane``: rooms of the same name in several processes, over Redis pub/sub.

Needs the ``redis`` extra (``pip install 'trio_ws[redis]'``): coredis, an async Redis client
built on anyio, which runs on Trio. Redis 6 or later (coredis speaks RESP3).

Each room ``name`` is the Redis channel ``prefix + name``. ``publish()`` (called by
``Room.broadcast()`` after the local delivery) puts the message on a bounded queue and returns;
the publisher task sends what is queued as one PUBLISH per room (a batch, see
``trio_ws._features._backplane``). The subscriber task hands each batch from another process to the
local room's ``deliver()``, which never waits either. A process ignores its own batches (its
members got them already) and any message it has delivered before (duplicates).

While Redis is unreachable, local delivery goes on as usual and messages for the other
processes are dropped (``dropped_offline``); nothing is replayed once Redis is back. The
connection is retried with exponential backoff (with jitter), from ``backoff_initial`` to
``backoff_max`` seconds.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from ._backplane import Rooms, batch_sender, decode_batch, encode_batch
from ._broadcast import Room
from ._redis_client import import_coredis, keep_connected, redacted, subscribed_client

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisBackplane"]

logger = logging.getLogger("trio_ws")

#: (sender, room) pairs whose last sequence is remembered (the oldest are forgotten).
_MAX_SENDERS = 65536

_Item = tuple[str, int, str | bytes]


class RedisBackplane(Rooms):
    """Broadcasts of this process's rooms reach the rooms of the same name in other processes.

    ::

        backplane = RedisBackplane("redis://127.0.0.1:6379")
        room = backplane.room("chat")
        async with trio.open_nursery() as nursery:
            await nursery.start(backplane.run)
            await nursery.start(serve_websocket, handler, host, port)

    ``run()`` keeps the connection up (reconnecting with backoff) until it is cancelled. A room
    may be added at any time; messages published in other processes before its subscription
    is active do not reach it.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379",
        *,
        prefix: str = "trio_ws:",
        queue_size: int = 10_000,
        max_batch: int = 1000,
        max_batch_bytes: int = 1 << 20,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        connect_timeout: float = 2.0,
        command_timeout: float = 10.0,
        ping_interval: float = 5.0,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self._coredis = import_coredis()
        #: The Redis URL, ``redis://[user:password@]host:port[/db]``.
        self.url = url
        #: Prefix of the Redis channel names: room ``name`` is channel ``prefix + name``.
        self.prefix = prefix
        #: Most messages sent in one PUBLISH.
        self.max_batch = max_batch
        #: Most payload bytes sent in one PUBLISH.
        self.max_batch_bytes = max_batch_bytes
        #: First wait before reconnecting to Redis, in seconds (doubled up to ``backoff_max``).
        self.backoff_initial = backoff_initial
        #: Longest wait before reconnecting to Redis, in seconds.
        self.backoff_max = backoff_max
        #: Seconds allowed to connect to Redis.
        self.connect_timeout = connect_timeout
        #: Seconds allowed for one Redis command.
        self.command_timeout = command_timeout
        #: Seconds between pings that check the Redis connection.
        self.ping_interval = ping_interval
        #: Extra keyword arguments for the coredis client.
        self.client_options = dict(client_options or {})
        #: This process's sender id in backplane messages.
        self.id = os.urandom(16)
        self._send, self._receive = trio.open_memory_channel[_Item](queue_size)
        self._seq: dict[str, int] = {}
        self._last: dict[tuple[bytes, str], int] = {}
        self._in_flight = 0
        self._connected = False
        self._connected_event = trio.Event()
        self._down_since = 0.0  # when the connection was lost (trio.current_time())
        self._dropped_before = 0  # dropped_offline then
        self._rooms_changed = trio.Event()
        #: Messages handed to Redis (PUBLISH answered).
        self.published = 0
        #: Messages from other processes delivered to the local rooms.
        self.received = 0
        #: Messages not sent to the other processes because Redis was unreachable.
        self.dropped_offline = 0
        #: Messages not sent to the other processes because the queue towards Redis was full.
        self.dropped_full = 0
        #: Messages from other processes received again and not delivered again.
        self.duplicates = 0
        #: Messages from other processes that never arrived (gaps in their sequences).
        self.missed = 0
        #: Backplane messages that could not be decoded (not from a trio_ws backplane).
        self.invalid = 0
        #: Successful connections to Redis so far (1 + the reconnections).
        self.connections = 0

    @property
    def connected(self) -> bool:
        """True while connected to Redis and subscribed (messages flow both ways)."""
        return self._connected

    @property
    def dropped(self) -> int:
        """Messages not sent to the other processes (``dropped_offline + dropped_full``)."""
        return self.dropped_offline + self.dropped_full

    async def wait_connected(self) -> None:
        """Return once connected to Redis (at once if it is)."""
        while not self._connected:
            await self._connected_event.wait()

    def publish(self, room: str, message: str | bytes) -> None:
        """Queue ``message`` for the room ``room`` of the other processes; never waits."""
        seq = self._seq.get(room, 0) + 1
        self._seq[room] = seq
        if not self._connected:
            self.dropped_offline += 1
            return
        if not isinstance(message, (str, bytes)):
            message = bytes(message)
        try:
            self._send.send_nowait((room, seq, message))
        except trio.WouldBlock:
            self.dropped_full += 1

    def _attached(self, room: Room) -> None:
        self._rooms_changed.set()

    def _channel(self, name: str) -> bytes:
        return (self.prefix + name).encode("utf-8")

    # Connection --------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis until cancelled; started at once, connected or not."""
        task_status.started()
        self._down_since, self._dropped_before = trio.current_time(), self.dropped_offline
        await keep_connected(
            self._session,
            self._down,
            self._report,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
        )

    async def _session(self) -> None:
        """One connection: subscribe, then publish and receive until something fails."""
        session = subscribed_client(
            self.url,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            ping_interval=self.ping_interval,
            client_options=self.client_options,
        )
        async with session as (client, pubsub):
            subscribed: set[str] = set()
            await self._subscribe(pubsub, subscribed)
            self._up()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._publisher, client)
                nursery.start_soon(self._subscriber, pubsub)
                nursery.start_soon(self._subscriptions, pubsub, subscribed)

    def _report(self, error: str, was_up: bool, failures: int) -> None:
        url = redacted(self.url)
        if was_up:
            logger.warning(
                "Redis backplane %s: connection lost (%s); local delivery goes on, "
                "messages for other processes are dropped until it is back",
                url,
                error,
            )
        elif failures == 1:
            logger.warning("Redis backplane %s: cannot connect (%s); retrying", url, error)
        else:
            logger.debug("Redis backplane %s: cannot connect (%s)", url, error)

    def _up(self) -> None:
        self._connected = True
        self.connections += 1
        self._connected_event.set()
        if self.connections == 1:
            logger.info("Redis backplane %s: connected", redacted(self.url))
        else:
            logger.warning(
                "Redis backplane %s: connected again after %.1f s; %d messages for other "
                "processes were dropped meanwhile",
                redacted(self.url),
                trio.current_time() - self._down_since,
                self.dropped_offline - self._dropped_before,
            )

    def _down(self) -> bool:
        """Disconnected: what was queued or being sent for the other processes is dropped.
        Returns whether it had been connected."""
        was_up, self._connected = self._connected, False
        if self._connected_event.is_set():
            self._connected_event = trio.Event()
        dropped, self._in_flight = self._in_flight, 0
        while True:
            try:
                self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            dropped += 1
        self.dropped_offline += dropped
        if was_up:
            self._down_since, self._dropped_before = trio.current_time(), self.dropped_offline
        return was_up

    async def _subscribe(self, pubsub: Any, subscribed: set[str]) -> None:
        new = [name for name in self.rooms if name not in subscribed]
        if new:
            await pubsub.subscribe(*(self._channel(name) for name in new))
            subscribed.update(new)

    async def _subscriptions(self, pubsub: Any, subscribed: set[str]) -> None:
        """Subscribe to the channels of rooms attached while connected."""
        while True:
            await self._rooms_changed.wait()
            self._rooms_changed = trio.Event()
            await self._subscribe(pubsub, subscribed)

    # Publishing and receiving ------------------------------------------------------------

    async def _publisher(self, client: coredis.Redis[bytes]) -> None:
        """Send what is queued: one PUBLISH per room for everything queued at that moment."""
        receive = self._receive
        while True:
            item = await receive.receive()
            batch = [item]
            size = len(item[2])
            while len(batch) < self.max_batch and size < self.max_batch_bytes:
                try:
                    item = receive.receive_nowait()
                except trio.WouldBlock:
                    break
                batch.append(item)
                size += len(item[2])
            by_room: dict[str, list[tuple[int, str | bytes]]] = {}
            for name, seq, message in batch:
                by_room.setdefault(name, []).append((seq, message))
            self._in_flight = len(batch)
            if len(by_room) == 1:
                [(name, entries)] = by_room.items()
                await client.publish(self._channel(name), encode_batch(self.id, entries))
            else:
                async with client.pipeline(transaction=False) as pipeline:
                    for name, entries in by_room.items():
                        pipeline.publish(self._channel(name), encode_batch(self.id, entries))
            self._in_flight = 0
            self.published += len(batch)

    async def _subscriber(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message()
            if message is not None and message["type"] == "message":
                self._received(message["channel"], message["data"])

    def _received(self, channel: bytes, data: bytes) -> None:
        """Deliver a backplane message from another process to the local room."""
        if batch_sender(data) == self.id:
            return  # our own: the local members had it at once
        try:
            name = channel.decode("utf-8").removeprefix(self.prefix)
            sender, entries = decode_batch(data)
        except ValueError as exc:
            self.invalid += 1
            logger.debug("Redis backplane: ignored a message on %r: %s", channel, exc)
            return
        room = self.rooms.get(name)
        key = (sender, name)
        last = self._last.pop(key, None)  # re-inserted below: the dict stays oldest-first
        for seq, message in entries:
            if last is not None:
                if seq <= last:
                    self.duplicates += 1
                    continue
                self.missed += seq - last - 1
            last = seq
            self.received += 1
            if room is not None:
                room.deliver(message)
        if last is not None:
            self._last[key] = last
            if len(self._last) > _MAX_SENDERS:
                del self._last[next(iter(self._last))]
