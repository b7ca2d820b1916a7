"""RedisBackplane (trio_ws/_features/_redis.py) against a real redis-server: two backplanes
in one process stand for two processes; then ``serve --workers N --redis`` and the broadcast
example as a cluster of processes.

Each Redis test starts its own ``redis-server`` on a free loopback port (Debian package
``redis-server``; ``.ci/run`` installs it). Without it the tests are skipped, unless
``TRIO_WS_REQUIRE_REDIS=1`` (set by ``.ci/run``), which makes them fail instead.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import (
    HOST,
    REPO,
    alive,
    cli_server,
    first_line,
    free_port,
    relay,
    wait_members,
    wait_until,
    worker_pids,
)

import trio_ws
from trio_ws._features._backplane import encode_batch
from trio_ws.testing import MemoryServer, open_memory_server

#: Bound on each test body.
TIMEOUT = 20.0
NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, compression=None)
try:
    import coredis  # noqa: F401

    HAVE_COREDIS = True
except ImportError:  # pragma: no cover - the dev extra has it
    HAVE_COREDIS = False

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals, SO_REUSEPORT")

REQUIRE_REDIS = os.environ.get("TRIO_WS_REQUIRE_REDIS") == "1"
REDIS_SERVER = shutil.which("redis-server")
#: Quick reconnections for the tests (the default backoff goes up to 5 s).
FAST = {"backoff_initial": 0.05, "backoff_max": 0.3, "connect_timeout": 1.0}


def _need_redis() -> None:
    missing = []
    if REDIS_SERVER is None:
        missing.append("redis-server (apt-get install redis-server)")
    if not HAVE_COREDIS:
        missing.append("coredis (pip install 'trio_ws[redis]')")
    if missing:
        message = "missing " + " and ".join(missing)
        if REQUIRE_REDIS:
            pytest.fail(message + " with TRIO_WS_REQUIRE_REDIS=1")
        pytest.skip(message)


class RedisServer:
    """A ``redis-server`` subprocess on a fixed loopback port; can be stopped and restarted."""

    def __init__(self, port: int, directory: Path) -> None:
        self.port = port
        self.directory = directory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}"

    def start(self) -> None:
        assert REDIS_SERVER is not None and self.process is None
        self.process = subprocess.Popen(
            [
                REDIS_SERVER,
                *("--bind", HOST, "--port", str(self.port), "--dir", str(self.directory)),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10.0
        while not self._pong():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"redis-server did not start on port {self.port}")
            time.sleep(0.02)  # polls until PING answers (deadline above)

    def _pong(self) -> bool:
        try:
            with socket.create_connection((HOST, self.port), timeout=1.0) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill it (SIGKILL, as a crash would) and reap it."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(timeout=10.0)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    _need_redis()
    server = RedisServer(free_port(), tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def redis_backplane(url: str, **options: Any) -> Any:
    from trio_ws._features._redis import RedisBackplane

    return RedisBackplane(url, **{**FAST, **options})


def test_redis_url_password_is_not_logged() -> None:
    from trio_ws._features._redis_client import redacted as _redacted

    assert _redacted("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert _redacted("redis://user:secret@host:6379") == "redis://user:***@host:6379"
    assert _redacted("redis://:secret@host") == "redis://:***@host"


# RedisBackplane in one process ----------------------------------------------------------------


class Node:
    """One "process": a RedisBackplane, its room "chat" and a memory server relaying to it."""

    def __init__(self, backplane: Any, server: MemoryServer) -> None:
        self.backplane = backplane
        self.room: trio_ws.Room = backplane.rooms["chat"]
        self.server = server


@asynccontextmanager
async def node(url: str, **options: Any) -> AsyncIterator[Node]:
    backplane = redis_backplane(url, **options)
    room = backplane.room("chat")
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        async with open_memory_server(relay(room), options=NO_PINGS) as server:
            yield Node(backplane, server)
        nursery.cancel_scope.cancel()


async def receive_all(ws: trio_ws.WebSocketConnection, count: int) -> list[str | bytes]:
    return [await ws.receive() for _ in range(count)]


async def nothing_more(
    clients: Sequence[trio_ws.WebSocketConnection],
    *sends: Callable[[str], Awaitable[object]],
    label: str = "barrier",
) -> None:
    """Assert that nothing more is on its way to ``clients``: each ``send`` sends a barrier
    message over a path the earlier messages took, and each client's next messages are those
    barriers. A message still on its way (a duplicate, say) comes before them; no waiting
    for a fixed time in the hope it would have shown up."""
    barriers = [f"{label} {n}" for n in range(len(sends))]
    for send, barrier in zip(sends, barriers, strict=True):
        await send(barrier)
    for ws in clients:
        assert sorted(await receive_all(ws, len(sends)), key=repr) == barriers


def sync_send(broadcast: Callable[[str], object]) -> Callable[[str], Awaitable[None]]:
    """An async send for nothing_more() from a room's (synchronous) broadcast."""

    async def send(message: str) -> None:
        broadcast(message)

    return send


async def test_a_broadcast_reaches_the_other_process_once(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(redis_server.url) as a, node(redis_server.url) as b:
            await a.backplane.wait_connected()
            await b.backplane.wait_connected()
            async with (
                a.server.connect() as a1,
                a.server.connect() as a2,
                b.server.connect() as b1,
            ):
                await wait_members(a.room, 2)
                await wait_members(b.room, 1)
                await a1.send("text from a")
                await a1.send(b"binary from a")
                await b1.send("\u00e9 from b")
                # Each sees its own process's messages at once, the other's via Redis: the
                # order across processes varies, the order from one sender does not.
                expected = ["text from a", b"binary from a", "\u00e9 from b"]
                for ws in (a1, a2, b1):
                    got = await receive_all(ws, 3)
                    assert sorted(got, key=repr) == sorted(expected, key=repr)
                    assert [m for m in got if m != "\u00e9 from b"] == expected[:2]
                # Own messages are not delivered twice.
                await nothing_more([a1, a2, b1], a1.send, b1.send)
            # nothing_more()'s barriers included: one from a1, one from b1.
            assert (a.backplane.published, b.backplane.published) == (3, 2)
            assert (a.backplane.received, b.backplane.received) == (2, 3)
            for backplane in (a.backplane, b.backplane):
                assert backplane.duplicates == backplane.missed == backplane.dropped == 0


async def test_rooms_are_separate_and_can_be_added_later(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(redis_server.url) as a, node(redis_server.url) as b:
            await a.backplane.wait_connected()
            await b.backplane.wait_connected()
            other_a = a.backplane.room("other")
            other_b = b.backplane.room("other")
            async with open_memory_server(relay(other_b), options=NO_PINGS) as server_b:
                async with b.server.connect() as chat_b, server_b.connect() as other_client:
                    await wait_members(other_b, 1)
                    await wait_members(b.room, 1)
                    # The new room's subscription is made while connected: wait for it.
                    await wait_until(lambda: _subscribed(b.backplane, "other"))
                    other_a.broadcast("in other")
                    assert await other_client.receive() == "in other"
                    a.room.broadcast("in chat")
                    assert await chat_b.receive() == "in chat"
                    await nothing_more([other_client], sync_send(other_a.broadcast), label="other")
                    await nothing_more([chat_b], sync_send(a.room.broadcast), label="chat")


def _subscribed(backplane: Any, name: str) -> bool:
    """Whether Redis lists a subscriber for the room (ask with PUBSUB NUMSUB)."""
    with socket.create_connection((HOST, int(backplane.url.rsplit(":", 1)[1]))) as sock:
        channel = (backplane.prefix + name).encode()
        sock.sendall(b"PUBSUB NUMSUB " + channel + b"\r\n")
        reply = sock.recv(256)
    return bool(re.search(rb":[1-9]", reply))


async def test_duplicates_and_gaps_from_another_process(redis_server: RedisServer) -> None:
    import coredis

    with trio.fail_after(TIMEOUT):
        async with node(redis_server.url) as b:
            await b.backplane.wait_connected()
            async with b.server.connect() as client:
                await wait_members(b.room, 1)
                channel = b.backplane.prefix + "chat"
                other = os.urandom(16)
                async with coredis.Redis.from_url(redis_server.url) as raw:
                    first = encode_batch(other, [(1, "one"), (2, b"two")])
                    await raw.publish(channel, first)
                    await raw.publish(channel, first)  # the same batch again
                    await raw.publish(channel, encode_batch(other, [(2, b"two"), (4, "four")]))
                    await raw.publish(channel, b"not a backplane message")
                    await raw.publish(channel, encode_batch(b.backplane.id, [(9, "own")]))
                    await raw.publish(channel, encode_batch(other, [(5, "five")]))
                    assert await receive_all(client, 4) == ["one", b"two", "four", "five"]

                    async def publish(text: str) -> None:
                        await raw.publish(channel, encode_batch(other, [(6, text)]))

                    await nothing_more([client], publish)
            bp = b.backplane
            # Received: one, two, four, five and nothing_more()'s barrier.
            assert (bp.received, bp.duplicates, bp.missed, bp.invalid) == (5, 3, 1, 1)


async def test_redis_restart_is_survived(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="trio_ws")
    with trio.fail_after(TIMEOUT):
        async with node(redis_server.url) as a, node(redis_server.url) as b:
            await a.backplane.wait_connected()
            await b.backplane.wait_connected()
            async with a.server.connect() as a1, a.server.connect() as a2:
                async with b.server.connect() as b1:
                    await wait_members(a.room, 2)
                    await wait_members(b.room, 1)
                    await a1.send("before")
                    for ws in (a1, a2, b1):
                        assert await ws.receive() == "before"

                    await trio.to_thread.run_sync(redis_server.stop)
                    await wait_until(lambda: not a.backplane.connected)
                    await wait_until(lambda: not b.backplane.connected)
                    # Redis is away: local delivery goes on; the other process misses it.
                    await a1.send("during")
                    assert await a1.receive() == "during"
                    assert await a2.receive() == "during"
                    await wait_until(lambda: a.backplane.dropped_offline == 1)

                    await trio.to_thread.run_sync(redis_server.start)
                    await a.backplane.wait_connected()
                    await b.backplane.wait_connected()
                    await a1.send("after")
                    await b1.send("from b after")
                    for ws in (a1, a2, b1):
                        got = await receive_all(ws, 2)
                        assert sorted(got) == ["after", "from b after"]
                    await nothing_more([a1, a2, b1], a1.send, b1.send)
            assert a.backplane.connections == b.backplane.connections == 2
            assert b.backplane.missed == 1  # "during": a gap in a's sequence
            assert a.backplane.duplicates == b.backplane.duplicates == 0
        # Each process says once that it lost Redis, and what that cost when it is back.
        logs = [r.getMessage() for r in caplog.records if redis_server.url in r.getMessage()]
        assert sum("connection lost" in line for line in logs) == 2
        again = [line for line in logs if "connected again" in line]
        assert len(again) == 2
        assert sorted(re.search(r"; (\d+) messages", line).group(1) for line in again) == ["0", "1"]  # type: ignore[union-attr]


async def test_redis_down_at_start(tmp_path: Path) -> None:
    _need_redis()
    redis_server = RedisServer(free_port(), tmp_path)  # not started yet
    try:
        with trio.fail_after(TIMEOUT):
            async with node(redis_server.url) as a:
                async with a.server.connect() as a1, a.server.connect() as a2:
                    await wait_members(a.room, 2)
                    assert not a.backplane.connected
                    await a1.send("local only")
                    assert await a2.receive() == "local only"
                    assert a.backplane.dropped_offline == 1
                    await trio.to_thread.run_sync(redis_server.start)
                    await a.backplane.wait_connected()
                    await a1.send("shared")
                    assert await a2.receive() == "shared"
                    await wait_until(lambda: a.backplane.published == 1)
    finally:
        redis_server.stop()


async def test_a_full_queue_drops_and_counts(redis_server: RedisServer) -> None:
    with trio.fail_after(TIMEOUT):
        async with node(redis_server.url, queue_size=1) as a:
            await a.backplane.wait_connected()
            for i in range(10):  # no checkpoint: the publisher cannot drain the queue
                a.room.broadcast(f"m{i}")
            assert a.backplane.dropped_full >= 8
            await wait_until(lambda: a.backplane.published + a.backplane.dropped_full == 10)


def _raise_fd_limit(needed: int) -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = hard if hard == resource.RLIM_INFINITY else min(hard, max(needed, soft))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        if target != resource.RLIM_INFINITY and target < needed:
            pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")


CLIENTS = 1000
SENDERS = 10


def _expected() -> list[str | bytes]:
    """The messages of the senders: text and binary."""
    return [f"text {i}" if i % 2 else f"binary {i}".encode() for i in range(SENDERS)]


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="needs SO_REUSEPORT")
async def test_two_workers_1000_clients_every_message_exactly_once(
    redis_server: RedisServer,
) -> None:
    """Two processes behind one port, 1000 clients spread over them, every client receives
    every message exactly once; then SIGTERM stops both workers and the clients get 1001."""
    _raise_fd_limit(CLIENTS + 500)  # the workers inherit it
    args = ["--broadcast", "--workers", "2", "--redis", redis_server.url, "--port", "0"]
    async with cli_server(*args, "--no-compression") as (url, process, lines):
        pids = worker_pids(lines[1])
        assert len(pids) == 2
        expected = _expected()
        tallies = [collections.Counter[str | bytes]() for _ in range(CLIENTS)]
        worker_of = [0] * CLIENTS
        close_codes: list[int | None] = [None] * CLIENTS
        clients: dict[int, trio_ws.WebSocketConnection] = {}
        handshakes = trio.Semaphore(50)  # connect 50 at a time
        all_joined = trio.Event()
        all_received = trio.Event()
        all_fenced = trio.Event()
        complete = 0
        fenced = 0
        # Sent after the messages by the same senders, over the same paths: once a client has
        # them all, any duplicate of a message (a worker relaying its own publication again,
        # say) has reached it before them.
        barriers = [f"barrier {n}" for n in range(SENDERS)]

        async def client(index: int) -> None:
            nonlocal complete, fenced
            await handshakes.acquire()
            try:
                async with trio_ws.open_websocket_url(url, options=NO_PINGS) as ws:
                    worker_of[index] = int(ws.response_headers["x-worker-pid"])
                    # The pong proves the client joined the room: the server adds it right
                    # after the handshake, before it reads anything from it.
                    await ws.ping()
                    clients[index] = ws
                    handshakes.release()
                    if len(clients) == CLIENTS:
                        all_joined.set()
                    tally = tallies[index]
                    async for message in ws:
                        tally[message] += 1
                        if message in barriers:
                            if sum(tally[b] for b in barriers) == SENDERS:
                                fenced += 1
                                if fenced == CLIENTS:
                                    all_fenced.set()
                        elif sum(tally.values()) == SENDERS:
                            complete += 1
                            if complete == CLIENTS:
                                all_received.set()
                close_codes[index] = ws.close_code
            finally:
                if index not in clients:
                    handshakes.release()

        with trio.fail_after(50):
            async with trio.open_nursery() as nursery:
                for index in range(CLIENTS):
                    nursery.start_soon(client, index)
                await all_joined.wait()
                spread = collections.Counter(worker_of)
                assert set(spread) == set(pids), spread
                assert min(spread.values()) >= CLIENTS // 10, spread  # both take a real share

                # Half the messages from clients of each worker, interleaved.
                by_worker = [[i for i in range(CLIENTS) if worker_of[i] == pid] for pid in pids]
                senders = [by_worker[n % 2][n // 2] for n in range(SENDERS)]
                for index, message in zip(senders, expected, strict=True):
                    await clients[index].send(message)
                with trio.move_on_after(30):
                    await all_received.wait()
                for index, barrier in zip(senders, barriers, strict=True):
                    await clients[index].send(barrier)
                with trio.move_on_after(30):
                    await all_fenced.wait()
                everything = [*expected, *barriers]
                missing = sum(1 for tally in tallies for m in everything if not tally[m])
                twice = sum(1 for tally in tallies for m in everything if tally[m] > 1)
                other = sum(1 for tally in tallies for m in tally if m not in everything)
                assert (missing, twice, other) == (0, 0, 0)

                # SIGTERM: both workers shut down gracefully and the parent exits with 0.
                process.send_signal(signal.SIGTERM)
                assert await process.wait() == 0
        assert not any(alive(pid) for pid in pids)
        assert collections.Counter(close_codes) == {1001: CLIENTS}


async def test_broadcast_example_as_a_cluster(redis_server: RedisServer) -> None:
    """``examples/broadcast_server.py --workers 2 --redis URL``: one room across processes,
    and clients resume from their position through any worker (its history is in Redis)."""
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            str(REPO / "examples" / "broadcast_server.py"),
            *("--port", "0", "--workers", "2", "--redis", redis_server.url),
        ],
        stdout=subprocess.PIPE,
        cwd=REPO,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            line = await first_line(process, "the example")
            port = int(re.search(rb":(\d+)/", line).group(1))  # type: ignore[union-attr]
            url = f"ws://{HOST}:{port}/ws"
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(trio_ws.open_websocket_url(url))
                    for _ in range(8)
                ]
                for ws in clients:  # each first gets its position: it has joined the room
                    assert json.loads(str(await ws.receive()))["missing"] is False
                await clients[0].send("hello, cluster")
                for ws in clients:
                    message = json.loads(str(await ws.receive()))
                    assert message["data"] == "hello, cluster"
                query = f"?epoch={message['epoch']}&offset={message['offset']}"
                for text in ("one more", "and another"):
                    await clients[0].send(text)
                    for ws in clients:
                        assert json.loads(str(await ws.receive()))["data"] == text
                # Clients coming back from after "hello, cluster", each to one worker or the
                # other (as the kernel picks), get what came since, then their position.
                for _ in range(6):
                    async with trio_ws.open_websocket_url(url + query) as ws:
                        replayed = [json.loads(str(await ws.receive())) for _ in range(3)]
                        assert [m.get("data") for m in replayed[:2]] == ["one more", "and another"]
                        assert replayed[2]["missing"] is False
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()
