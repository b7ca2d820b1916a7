"""What the Redis stores of a room (``RedisHistory``, ``RedisPresence``) share: a connection to
Redis kept up with backoff, a subscription to the store's channel, and the room it reports to.

A store subclasses ``RedisStore`` and fills in ``_start()`` (once connected and subscribed,
before anything is published: catch up, register), ``_received()`` (a message on its channel)
and ``_tasks()`` (its own tasks while connected), and ``_lost()`` (disconnected).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import trio

from ._broadcast import Room
from ._redis_client import import_coredis, keep_connected, redacted, subscribed_client

if TYPE_CHECKING:
    import coredis

__all__ = ["RedisStore"]

logger = logging.getLogger("trio_ws")


class RedisStore:
    """A connection to Redis for one room's store (see the module docstring)."""

    #: What the store is called in logs.
    kind = "store"

    def __init__(
        self,
        url: str,
        name: str,
        channel: str,
        *,
        backoff_initial: float,
        backoff_max: float,
        connect_timeout: float,
        command_timeout: float,
        ping_interval: float,
    ) -> None:
        self._coredis = import_coredis()
        #: The Redis URL.
        self.url = url
        #: The room's name in Redis.
        self.name = name
        #: First wait before reconnecting, in seconds (doubled up to ``backoff_max``).
        self.backoff_initial = backoff_initial
        #: Longest wait before reconnecting, in seconds.
        self.backoff_max = backoff_max
        #: Seconds allowed to connect to Redis.
        self.connect_timeout = connect_timeout
        #: Seconds allowed for one Redis command.
        self.command_timeout = command_timeout
        #: Seconds between pings that check the subscription's connection.
        self.ping_interval = ping_interval
        self._channel = channel.encode("utf-8")
        self._room: Room | None = None
        self._client: coredis.Redis[bytes] | None = None
        self._connected_event = trio.Event()
        #: Successful connections to Redis so far (1 + the reconnections).
        self.connections = 0
        #: Messages from Redis this process never got (0 for a store that cannot tell).
        self.missed = 0
        #: Messages (or presence changes) not handed to Redis: it was unreachable, or the
        #: queue towards it was full.
        self.dropped = 0

    def attach(self, room: Room) -> None:
        """Report to ``room`` (``Room()`` calls this). Raises ValueError for a second room."""
        if self._room is not None and self._room is not room:
            raise ValueError(f"this {type(self).__name__} belongs to another room already")
        self._room = room

    @property
    def connected(self) -> bool:
        """True while connected to Redis and subscribed."""
        return self._client is not None

    async def wait_connected(self) -> None:
        """Return once connected to Redis (at once if it is)."""
        while self._client is None:
            await self._connected_event.wait()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Stay connected to Redis until cancelled; started at once, connected or not."""
        task_status.started()
        await keep_connected(
            self._session,
            self._down,
            self._report,
            backoff_initial=self.backoff_initial,
            backoff_max=self.backoff_max,
        )

    async def _session(self) -> None:
        session = subscribed_client(
            self.url,
            connect_timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            ping_interval=self.ping_interval,
        )
        async with session as (client, pubsub):
            await pubsub.subscribe(self._channel)
            await self._start(client)  # the channel holds what comes meanwhile
            self._client = client
            self.connections += 1
            self._connected_event.set()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._subscriber, pubsub)
                self._tasks(nursery, client)

    def _down(self) -> bool:
        was_up, self._client = self._client is not None, None
        if self._connected_event.is_set():
            self._connected_event = trio.Event()
        self._lost()
        return was_up

    def _report(self, error: str, was_up: bool, failures: int) -> None:
        level = logging.WARNING if failures == 1 else logging.DEBUG
        logger.log(level, "Redis %s %s at %s: %s", self.kind, self.name, redacted(self.url), error)

    async def _subscriber(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message()
            if message is not None and message["type"] == "message":
                try:
                    self._received(message["data"])
                except ValueError as exc:
                    logger.debug("Redis %s %s: ignored a message: %s", self.kind, self.name, exc)

    async def _start(self, client: coredis.Redis[bytes]) -> None:
        """Connected and subscribed: catch up, register (before anything is received)."""

    def _received(self, data: bytes) -> None:
        """A message on the store's channel; ValueError if it is not one of ours."""

    def _tasks(self, nursery: trio.Nursery, client: coredis.Redis[bytes]) -> None:
        """Start the store's own tasks while connected."""

    def _lost(self) -> None:
        """Disconnected: drop what was waiting for Redis."""
