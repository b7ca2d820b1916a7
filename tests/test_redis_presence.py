"""RedisPresence: who is in a room over several processes, with every process's events.

Two ``RedisPresence`` objects in one test stand for two processes (each has its own Redis
connections and its own room).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from test_redis import FAST, RedisServer, _need_redis, free_port

import trio_ws
from trio_ws.testing import MemoryServer, open_memory_server

NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=1.0)
TIMEOUT = 20.0


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    _need_redis()
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_presence(url: str, **options: Any) -> Any:
    from trio_ws._features._redis_presence import RedisPresence

    return RedisPresence(url, "chat", **{**FAST, **options})


class Recorder:
    """An ``on_presence`` callback that keeps the events and lets a test wait for them."""

    def __init__(self) -> None:
        self.events: list[tuple[str, bool, int]] = []
        self._changed = trio.Event()

    def __call__(self, event: trio_ws.PresenceEvent) -> None:
        self.events.append((event.identity, event.joined, event.connections))
        self._changed.set()
        self._changed = trio.Event()

    async def wait(self, count: int) -> list[tuple[str, bool, int]]:
        while len(self.events) < count:
            await self._changed.wait()
        return self.events


@asynccontextmanager
async def process(
    presence: Any, cancel: trio.CancelScope | None = None
) -> AsyncIterator[tuple[trio_ws.Room, MemoryServer, Recorder]]:
    """A "process": its room on ``presence``, connected, and a server whose clients join it
    as the identity in their URL (``?id=alice``)."""
    room = trio_ws.Room(presence=presence)
    recorder = Recorder()
    room.on_presence(recorder)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        identity = urllib.parse.parse_qs(request.query)["id"][0]
        with room.joined(ws, identity=identity):
            async for _ in ws:
                pass

    async def run(task_status: trio.TaskStatus[None]) -> None:
        with cancel or trio.CancelScope():
            await presence.run(task_status=task_status)

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        await presence.wait_connected()
        async with open_memory_server(handler, options=NO_PINGS) as server:
            yield room, server, recorder
        nursery.cancel_scope.cancel()


async def test_presence_and_events_span_processes(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            process(redis_presence(redis.url)) as (room_a, server_a, events_a),
            process(redis_presence(redis.url)) as (room_b, server_b, events_b),
        ):
            async with server_a.connect("/?id=alice") as alice_a:
                await events_b.wait(1)  # B sees A's member
                async with server_b.connect("/?id=alice"), server_b.connect("/?id=bob"):
                    joins = await events_a.wait(3)
                    assert sorted(joins) == [
                        ("alice", True, 1),
                        ("alice", True, 2),
                        ("bob", True, 1),
                    ]
                    assert await events_b.wait(3) == joins  # the same, in the same order
                    for room in (room_a, room_b):
                        assert await room.presence() == {"alice": 2, "bob": 1}
                    await alice_a.aclose()
                    assert (await events_b.wait(4))[3] == ("alice", False, 1)
                    assert (await events_a.wait(4))[3] == ("alice", False, 1)
                    assert await room_b.presence() == {"alice": 1, "bob": 1}
                leaves = await events_a.wait(6)
                assert sorted(leaves[4:]) == [("alice", False, 0), ("bob", False, 0)]
            assert await room_a.presence() == {}


async def test_a_process_that_stops_counting_is_swept(redis: RedisServer) -> None:
    """A crashed process's members leave once its ttl is past: every other process gets a
    leave event per connection it had."""
    import coredis

    crash = trio.CancelScope()
    presence_a = redis_presence(redis.url)
    with trio.fail_after(TIMEOUT):
        async with process(redis_presence(redis.url)) as (room_b, server_b, events_b):
            async with process(presence_a, crash) as (_, server_a, _):
                async with (
                    server_a.connect("/?id=alice"),
                    server_a.connect("/?id=alice"),
                    server_b.connect("/?id=alice"),
                ):
                    await events_b.wait(3)
                    crash.cancel()  # A stops talking to Redis; its members stay in its hash
                    while presence_a.connected:
                        await trio.testing.wait_all_tasks_blocked()
                    # Its ttl runs out (made so at once rather than waited for).
                    async with coredis.Redis.from_url(redis.url) as client:
                        await client.zadd("trio_ws:chat:presence", {presence_a.id: 0})
                    assert await room_b.presence() == {"alice": 1}  # sweeps
                    assert (await events_b.wait(5))[3:] == [
                        ("alice", False, 2),
                        ("alice", False, 1),
                    ]


async def test_a_process_registers_again_after_redis_lost_everything(
    redis: RedisServer,
) -> None:
    import coredis

    presence = redis_presence(redis.url)
    with trio.fail_after(TIMEOUT):
        async with process(presence) as (room, server, events):
            async with server.connect("/?id=carol"):
                await events.wait(1)
                async with coredis.Redis.from_url(redis.url) as client:
                    await client.flushall()
                    await client.client_kill(skipme=True)  # as a restart would
                while presence.connected:  # until it notices
                    await trio.testing.wait_all_tasks_blocked()
                await presence.wait_connected()  # it registers again as it reconnects
                assert await room.presence() == {"carol": 1}
                async with coredis.Redis.from_url(redis.url) as client:
                    key = f"trio_ws:chat:presence:{presence.id}"
                    assert await client.hgetall(key) == {b"carol": b"1"}
