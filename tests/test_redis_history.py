"""RedisHistory: one room's history shared by several processes through a Redis Stream.

Two ``RedisHistory`` objects in one test stand for two processes: each has its own Redis
connections and its own room, as separate processes would.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import HOST, REPO, first_line
from test_history import resume_url, since_of, unwrap
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


def redis_history(url: str, name: str = "chat", **options: Any) -> Any:
    from trio_ws._features._redis_history import RedisHistory

    return RedisHistory(url, name, **{**FAST, **options})


@asynccontextmanager
async def process(
    history: Any,
) -> AsyncIterator[tuple[trio_ws.Room, MemoryServer, list[trio_ws.Recovery]]]:
    """A "process": its room on ``history``, connected, and a server whose clients join it."""
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    recoveries: list[trio_ws.Recovery] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        recoveries.append(await room.join(ws, since=since_of(request.query)))
        async for _ in ws:
            pass

    async with trio.open_nursery() as nursery:
        await nursery.start(history.run)
        await history.wait_connected()
        async with open_memory_server(handler, options=NO_PINGS) as server:
            yield room, server, recoveries
        nursery.cancel_scope.cancel()


async def wait_joined(recoveries: list[trio_ws.Recovery], count: int) -> None:
    while len(recoveries) < count:
        await trio.testing.wait_all_tasks_blocked()


async def test_every_process_delivers_the_same_offsets(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            process(redis_history(redis.url)) as (room_a, server_a, joined_a),
            process(redis_history(redis.url)) as (room_b, server_b, joined_b),
        ):
            async with server_a.connect("/") as a, server_b.connect("/") as b:
                await wait_joined(joined_a, 1)
                await wait_joined(joined_b, 1)
                assert room_a.broadcast("m1") == 0  # delivered when it comes back from Redis
                room_b.broadcast("m2")
                room_a.broadcast("m3")
                got_a = [unwrap(await a.receive()) for _ in range(3)]
                got_b = [unwrap(await b.receive()) for _ in range(3)]
                assert got_a == got_b
                assert [offset for offset, _ in got_a] == [1, 2, 3]
                assert sorted(data for _, data in got_a) == ["m1", "m2", "m3"]
                assert room_a.position() == room_b.position()


async def test_a_client_resumes_through_another_process(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with (
            process(redis_history(redis.url)) as (room_a, server_a, _),
            process(redis_history(redis.url)) as (_, server_b, joined_b),
        ):
            async with server_a.connect("/") as ws:
                room_a.broadcast("m1")
                room_a.broadcast("m2")
                assert [unwrap(await ws.receive()) for _ in range(2)] == [(1, "m1"), (2, "m2")]
                position = room_a.position()
                assert position is not None
            async with server_a.connect("/") as watcher:  # to know when m3 and m4 are out
                room_a.broadcast("m3")
                room_a.broadcast("m4")
                assert [unwrap(await watcher.receive())[0] for _ in range(2)] == [3, 4]
            async with server_b.connect(resume_url(position)) as ws:
                await wait_joined(joined_b, 1)
                assert joined_b[0].recovered
                room_a.broadcast("m5")
                got = [unwrap(await ws.receive()) for _ in range(3)]
                assert got == [(3, "m3"), (4, "m4"), (5, "m5")]


async def test_a_client_that_joined_before_the_first_message_resumes(
    redis: RedisServer,
) -> None:
    """The room's epoch exists as soon as a process is connected, before any message: a
    client given that position resumes from it (through another process too)."""
    with trio.fail_after(TIMEOUT):
        async with (
            process(redis_history(redis.url)) as (room_a, server_a, joined_a),
            process(redis_history(redis.url)) as (room_b, server_b, joined_b),
        ):
            first = room_a.position()
            assert first is not None and first.epoch and first.offset == 0
            assert room_b.position() == first
            async with server_a.connect("/") as watcher:
                await wait_joined(joined_a, 1)
                room_a.broadcast("m1")
                assert unwrap(await watcher.receive()) == (1, "m1")
            async with server_b.connect(resume_url(first)) as ws:
                await wait_joined(joined_b, 1)
                assert joined_b[0].recovered and joined_b[0].replayed == 1
                assert unwrap(await ws.receive()) == (1, "m1")


async def test_a_resume_of_recent_entries_costs_redis_nothing(redis: RedisServer) -> None:
    """What this process delivered lately is replayed from its memory, with no Redis call; a
    gap older than that is asked of Redis, which has the last word (here: too old)."""
    import coredis

    async def script_calls() -> int:
        async with coredis.Redis.from_url(redis.url) as client:
            stats: Any = await client.info("commandstats")
        return int(stats["cmdstat_eval"]["calls"])

    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, size=5)) as (room, server, recoveries):
            async with server.connect("/") as watcher:
                for i in range(1, 4):
                    room.broadcast(f"m{i}")
                assert [unwrap(await watcher.receive())[0] for _ in range(3)] == [1, 2, 3]
                epoch = room.position().epoch  # type: ignore[union-attr]
                before = await script_calls()
                async with server.connect(resume_url(trio_ws.Position(epoch, 1))) as ws:
                    await wait_joined(recoveries, 2)
                    assert recoveries[1].recovered and recoveries[1].replayed == 2
                    assert [unwrap(await ws.receive()) for _ in range(2)] == [(2, "m2"), (3, "m3")]
                assert await script_calls() == before
                for i in range(4, 9):  # 4..8 kept, here and in Redis
                    room.broadcast(f"m{i}")
                assert [unwrap(await watcher.receive())[0] for _ in range(5)] == [4, 5, 6, 7, 8]
                before = await script_calls()
                async with server.connect(resume_url(trio_ws.Position(epoch, 2))):
                    await wait_joined(recoveries, 3)
                    assert not recoveries[2].recovered  # 3 is gone
                assert await script_calls() == before + 1


async def test_a_message_the_envelope_refuses_does_not_break_the_subscription(
    redis: RedisServer,
) -> None:
    """With the envelope applied as entries come back from Redis, a binary message in a
    json_envelope room is logged and skipped in every process; the connection stays up and
    a resume from before it gets the rest."""
    history = redis_history(redis.url)
    with trio.fail_after(TIMEOUT):
        async with process(history) as (room, server, recoveries):
            start = room.position()
            assert start is not None
            async with server.connect("/") as ws:
                await wait_joined(recoveries, 1)
                room.broadcast(b"binary")  # given an offset by Redis, refused on the way back
                room.broadcast("after")
                assert unwrap(await ws.receive()) == (2, "after")
            async with server.connect(resume_url(start)) as ws:
                await wait_joined(recoveries, 2)
                assert recoveries[1].recovered and recoveries[1].replayed == 1
                assert unwrap(await ws.receive()) == (2, "after")
            assert history.connections == 1  # no reconnection


async def test_too_old_and_lost_history_are_refused(redis: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, size=3)) as (room, server, recoveries):
            async with server.connect("/") as watcher:
                for i in range(1, 6):
                    room.broadcast(f"m{i}")
                assert [unwrap(await watcher.receive())[0] for _ in range(5)] == [1, 2, 3, 4, 5]
                old = room.position()
                assert old is not None
                # Kept: 3, 4, 5. After 1, 3 is missing; after 2, nothing is.
                async with server.connect(resume_url(trio_ws.Position(old.epoch, 1))):
                    await wait_joined(recoveries, 2)
                    assert not recoveries[1].recovered
                async with server.connect(resume_url(trio_ws.Position(old.epoch, 2))) as ws:
                    await wait_joined(recoveries, 3)
                    assert recoveries[2].recovered and recoveries[2].replayed == 3
                    assert [unwrap(await ws.receive())[0] for _ in range(3)] == [3, 4, 5]
                # Redis loses everything (a restart without persistence): a new epoch.
                import coredis

                async with coredis.Redis.from_url(redis.url) as client:
                    await client.flushall()
                room.broadcast("after")
                assert unwrap(await watcher.receive()) == (1, "after")
                new = room.position()
                assert new is not None and new.epoch != old.epoch
                async with server.connect(resume_url(old)):
                    await wait_joined(recoveries, 4)
                    assert not recoveries[3].recovered


@pytest.mark.parametrize("history_lost", [False, True])
async def test_a_process_that_was_away_delivers_what_it_missed(
    redis: RedisServer, history_lost: bool
) -> None:
    """When its Redis connection comes back, a process reads what was published meanwhile from
    the stream and delivers it to its members, in order, before the live messages; from the
    start of a new epoch if Redis lost the history meanwhile."""
    history_a = redis_history(redis.url)
    room_a = trio_ws.Room(history=history_a, envelope=trio_ws.json_envelope)
    scopes: list[trio.CancelScope] = []

    async def run_a() -> None:
        with trio.CancelScope() as scope:
            scopes.append(scope)
            await history_a.run()

    async def member(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await room_a.join(ws)
        async for _ in ws:
            pass

    with trio.fail_after(TIMEOUT):
        async with (
            trio.open_nursery() as nursery,
            open_memory_server(member, options=NO_PINGS) as server_a,
            process(redis_history(redis.url)) as (room_b, server_b, joined_b),
        ):
            nursery.start_soon(run_a)
            await history_a.wait_connected()
            async with server_a.connect("/") as a, server_b.connect("/") as b:
                await wait_joined(joined_b, 1)
                while len(room_a) < 1:
                    await trio.testing.wait_all_tasks_blocked()
                room_b.broadcast("m1")
                assert unwrap(await a.receive()) == (1, "m1")
                assert unwrap(await b.receive()) == (1, "m1")
                scopes[0].cancel()  # process A loses Redis
                while history_a.connected:
                    await trio.testing.wait_all_tasks_blocked()
                if history_lost:
                    import coredis

                    async with coredis.Redis.from_url(redis.url) as client:
                        await client.flushall()
                first = 1 if history_lost else 2  # m2's offset
                room_b.broadcast("m2")
                room_b.broadcast("m3")
                assert [unwrap(await b.receive())[0] for _ in range(2)] == [first, first + 1]
                nursery.start_soon(run_a)  # back
                await history_a.wait_connected()
                room_b.broadcast("m4")
                got = [unwrap(await a.receive()) for _ in range(3)]
                assert got == [(first, "m2"), (first + 1, "m3"), (first + 2, "m4")]
                assert history_a.delivered == 4
                assert history_a.missed == 0
                assert room_a.position() == room_b.position()
            nursery.cancel_scope.cancel()


async def test_entries_older_than_the_ttl_are_gone(redis: RedisServer) -> None:
    """A message recorded long ago (its stream ID says 1970) is past a 60 s ttl: resuming
    from before it is refused; from after it works."""
    import coredis

    async with coredis.Redis.from_url(redis.url) as client:
        await client.hset("trio_ws:chat:meta", {"epoch": "E", "offset": 1})
        await client.xadd(
            "trio_ws:chat:stream", {"o": 1, "k": "1", "d": "ancient"}, identifier="1000-0"
        )
    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, ttl=60)) as (room, server, recoveries):
            assert room.position() == trio_ws.Position("E", 1)
            async with server.connect(resume_url(trio_ws.Position("E", 0))):
                await wait_joined(recoveries, 1)
                assert not recoveries[0].recovered  # "ancient" expired
            async with server.connect(resume_url(trio_ws.Position("E", 1))) as ws:
                await wait_joined(recoveries, 2)
                assert recoveries[1].recovered and recoveries[1].replayed == 0
                room.broadcast("new")
                assert unwrap(await ws.receive()) == (2, "new")


KEYS = "trio_ws:chat:"  # the room's keys: KEYS + "stream", KEYS + "meta"
DAY_MS = 24 * 3600 * 1000


async def pttls(url: str) -> tuple[int, int]:
    """The milliseconds the room's stream and meta keys have left (-1: no expiry)."""
    import coredis

    async with coredis.Redis.from_url(url) as client:
        return await client.pttl(KEYS + "stream"), await client.pttl(KEYS + "meta")


def assert_expiry(pttl: int, expected: int) -> None:
    """``pttl`` is ``expected`` (-1: none), less what the test took since it was set."""
    if expected == -1:
        assert pttl == -1
    else:
        assert expected - 10_000 < pttl <= expected


async def wait_expired(url: str, *keys: str) -> None:
    """Poll until the room's ``keys`` have expired (Redis expires them on its own clock)."""
    import coredis

    async with coredis.Redis.from_url(url) as client:
        while await client.exists([KEYS + key for key in keys]):
            await trio.sleep(0.02)


@pytest.mark.parametrize(
    ("options", "stream_ms", "meta_ms"),
    [
        ({"ttl": 60}, 60_000, 30 * DAY_MS),  # the default meta_ttl: 30 days
        ({"meta_ttl": 3600}, 3_600_000, 3_600_000),  # no ttl: the stream goes with the meta
        ({"ttl": 60, "meta_ttl": None}, 60_000, -1),
    ],
)
async def test_appends_give_the_keys_an_expiry_and_reads_refresh_none(
    redis: RedisServer, options: dict[str, Any], stream_ms: int, meta_ms: int
) -> None:
    import coredis

    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, **options)) as (room, server, _):
            async with server.connect("/") as watcher:
                room.broadcast("m1")
                assert unwrap(await watcher.receive()) == (1, "m1")
                stream, meta = await pttls(redis.url)
                assert_expiry(stream, stream_ms)
                assert_expiry(meta, meta_ms)
                # A process connecting, and a resume that Redis answers, refresh neither.
                async with coredis.Redis.from_url(redis.url) as client:
                    for key in ("stream", "meta"):
                        await client.pexpire(KEYS + key, 5_000)
                async with process(redis_history(redis.url, **options)) as (_, other, joined):
                    epoch = room.position().epoch  # type: ignore[union-attr]
                    async with other.connect(resume_url(trio_ws.Position(epoch, 0))):
                        await wait_joined(joined, 1)
                        assert joined[0].recovered and joined[0].replayed == 1
                assert all(0 < pttl <= 5_000 for pttl in await pttls(redis.url))
                room.broadcast("m2")  # an append refreshes both
                assert unwrap(await watcher.receive()) == (2, "m2")
                stream, meta = await pttls(redis.url)
                assert_expiry(stream, stream_ms)
                assert_expiry(meta, meta_ms)


async def test_keys_written_without_an_expiry_get_one_when_read(redis: RedisServer) -> None:
    """Keys from before there were expiries (or from meta_ttl=None) are given one by the
    first read, here a process connecting, even if the room never gets another message."""
    import coredis

    async with coredis.Redis.from_url(redis.url) as client:
        await client.hset(KEYS + "meta", {"epoch": "E", "offset": 1})
        await client.xadd(KEYS + "stream", {"o": 1, "k": "1", "d": "old"})
    assert await pttls(redis.url) == (-1, -1)
    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, ttl=60)) as (room, _, _):
            assert room.position() == trio_ws.Position("E", 1)
            stream, meta = await pttls(redis.url)
            assert_expiry(stream, 60_000)
            assert_expiry(meta, 30 * DAY_MS)


async def test_a_room_only_ever_read_gets_an_expiring_meta(redis: RedisServer) -> None:
    """A process connecting to a room without keys starts its epoch: that meta expires too."""
    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, meta_ttl=3600)) as (room, _, _):
            assert room.position() is not None
            assert await pttls(redis.url) == (-2, pytest.approx(3_600_000, abs=10_000))


async def test_a_room_idle_until_its_keys_expire_starts_a_new_epoch(redis: RedisServer) -> None:
    """Once the room's epoch and offset have expired, positions of that epoch are refused,
    even by a process that still has it in memory, and the next message starts a new epoch
    at offset 1, which that process delivers."""
    history = redis_history(redis.url, ttl=0.2, meta_ttl=1.0)
    with trio.fail_after(TIMEOUT):
        async with process(history) as (room, server, recoveries):
            async with server.connect("/") as watcher:
                await wait_joined(recoveries, 1)
                room.broadcast("m1")
                room.broadcast("m2")
                assert [unwrap(await watcher.receive()) for _ in range(2)] == [(1, "m1"), (2, "m2")]
                old = room.position()
                assert old is not None
                await wait_expired(redis.url, "stream", "meta")
                # Nothing was missed, but Redis no longer knows the epoch: the process asks it
                # rather than answer from memory.
                async with server.connect(resume_url(old)):
                    await wait_joined(recoveries, 2)
                    assert not recoveries[1].recovered
                room.broadcast("after")
                assert unwrap(await watcher.receive()) == (1, "after")
                new = room.position()
                assert new is not None and new.epoch != old.epoch and new.offset == 1
                async with server.connect(resume_url(old)):
                    await wait_joined(recoveries, 3)
                    assert not recoveries[2].recovered
                async with server.connect(resume_url(new)) as ws:
                    await wait_joined(recoveries, 4)
                    assert recoveries[3].recovered and recoveries[3].replayed == 0
                    room.broadcast("next")
                    assert unwrap(await ws.receive()) == (2, "next")


async def test_a_client_up_to_date_resumes_after_the_stream_expired(redis: RedisServer) -> None:
    """With a short ttl and a long meta_ttl, the stream goes once the room is idle, but the
    epoch and offset stay: a client that had everything resumes (through a process started
    since, too) and the offsets go on; one that missed a message is refused."""
    options: dict[str, Any] = {"ttl": 0.2, "meta_ttl": 60}
    with trio.fail_after(TIMEOUT):
        async with process(redis_history(redis.url, **options)) as (room, server, recoveries):
            async with server.connect("/") as watcher:
                await wait_joined(recoveries, 1)
                room.broadcast("m1")
                room.broadcast("m2")
                assert [unwrap(await watcher.receive())[0] for _ in range(2)] == [1, 2]
                last = room.position()
                assert last is not None
                await wait_expired(redis.url, "stream")
                assert (await pttls(redis.url))[1] > 0  # the meta is still there
                async with process(redis_history(redis.url, **options)) as (_, other, joined):
                    async with server.connect(resume_url(last)):
                        await wait_joined(recoveries, 2)
                        assert recoveries[1].recovered and recoveries[1].replayed == 0
                    behind = trio_ws.Position(last.epoch, 1)
                    async with server.connect(resume_url(behind)):
                        await wait_joined(recoveries, 3)
                        assert not recoveries[2].recovered  # m2 is gone
                    async with other.connect(resume_url(behind)):
                        await wait_joined(joined, 1)
                        assert not joined[0].recovered
                    async with other.connect(resume_url(last)) as ws:
                        await wait_joined(joined, 2)
                        assert joined[1].recovered and joined[1].replayed == 0
                        room.broadcast("m3")
                        assert unwrap(await ws.receive()) == (3, "m3")


@pytest.mark.parametrize("meta_ttl", [0, -1.0])
def test_meta_ttl_must_be_above_zero(meta_ttl: float) -> None:
    pytest.importorskip("coredis")
    with pytest.raises(ValueError, match="meta_ttl"):
        redis_history("redis://127.0.0.1:1", meta_ttl=meta_ttl)


@asynccontextmanager
async def chat_process(redis_url: str) -> AsyncIterator[tuple[trio.Process, str]]:
    """``examples/broadcast_server.py --redis URL`` as a process of its own, and its /ws URL."""
    example = REPO / "examples" / "broadcast_server.py"
    process = await trio.lowlevel.open_process(
        [sys.executable, str(example), "--port", "0", "--redis", redis_url],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    try:
        line = await first_line(process, "the chat example")
        port = int(re.search(rb":(\d+)/", line).group(1))  # type: ignore[union-attr]
        yield process, f"ws://{HOST}:{port}/ws"
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()


async def next_chat(ws: trio_ws.WebSocketConnection) -> dict[str, Any]:
    """The chat example's next message to ``ws`` other than a list of who is online."""
    while True:
        message = json.loads(str(await ws.receive()))
        if "online" not in message:
            return dict(message)


async def test_a_process_killed_with_sigkill_loses_nothing_redis_accepted(
    redis: RedisServer,
) -> None:
    """Two chat processes share Redis. A client publishes through process A, keeping up to
    ``WINDOW`` messages in flight, and A is killed with SIGKILL mid-stream. Every message Redis
    accepted is still there: the client resumes through process B and gets, once each and in
    order, all those it had not seen, so that what it saw is exactly the stream."""
    import coredis

    window, kill_at, limit = 20, 100, 500
    with trio.fail_after(TIMEOUT):
        async with chat_process(redis.url) as (a, url_a), chat_process(redis.url) as (b, url_b):
            async with trio_ws.open_websocket_url(url_b) as watcher:
                assert (await next_chat(watcher))["missing"] is False
                seen: list[tuple[int, str]] = []
                sent = 0
                async with trio_ws.open_websocket_url(url_a) as ws:
                    assert (await next_chat(ws))["missing"] is False
                    with pytest.raises(trio_ws.ConnectionClosed):
                        while sent < limit:
                            while sent - len(seen) < window and sent < limit:
                                await ws.send(f"x{sent}")
                                sent += 1
                            message = await next_chat(ws)
                            seen.append((message["offset"], message["data"]))
                            epoch = message["epoch"]
                            if len(seen) == kill_at:
                                os.kill(a.pid, signal.SIGKILL)
                    assert await a.wait() == -signal.SIGKILL
                assert kill_at <= len(seen) < sent < limit  # killed with messages in flight
                # Messages through B meanwhile, and the watcher's view of the whole stream.
                async with trio_ws.open_websocket_url(url_b) as other:
                    assert (await next_chat(other))["missing"] is False
                    for i in range(10):
                        await other.send(f"b{i}")
                    watched: list[tuple[int, str]] = []
                    while not watched or watched[-1][1] != "b9":
                        message = await next_chat(watcher)
                        watched.append((message["offset"], message["data"]))
            async with coredis.Redis.from_url(redis.url, decode_responses=True) as client:
                stream = [
                    (int(entry.field_values["o"]), entry.field_values["d"])
                    for entry in await client.xrange("trio_ws:chat:stream")
                ]
            accepted = [data for _, data in stream if data.startswith("x")]
            assert [offset for offset, _ in stream] == list(range(1, len(stream) + 1))
            assert accepted == [f"x{i}" for i in range(len(accepted))]  # A's, in order
            assert len(seen) <= len(accepted)
            assert watched == stream
            # The client comes back through B from the last message it saw.
            query = f"?epoch={epoch}&offset={seen[-1][0]}"
            async with trio_ws.open_websocket_url(url_b + query) as ws:
                replayed: list[tuple[int, str]] = []
                while "position" not in (message := await next_chat(ws)):
                    replayed.append((message["offset"], message["data"]))
                assert message["missing"] is False
                assert message["position"] == {"epoch": epoch, "offset": len(stream)}
            assert seen + replayed == stream
            b.send_signal(signal.SIGTERM)
            assert await b.wait() == 0


async def test_the_chat_example_says_when_a_resume_point_is_malformed(redis: RedisServer) -> None:
    """A first connection (no position) is not "missing"; a malformed position is, so that
    the client reloads rather than trusting it missed nothing."""
    with trio.fail_after(TIMEOUT):
        async with chat_process(redis.url) as (process, url):
            for query, missing in [
                ("", False),
                ("?epoch=&offset=3", True),
                ("?offset=3", True),
                ("?epoch=abc&offset=1e3", True),
                ("?epoch=abc&offset=" + "9" * 5000, True),
            ]:
                async with trio_ws.open_websocket_url(url + query) as ws:
                    assert (await next_chat(ws))["missing"] is missing, query
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
