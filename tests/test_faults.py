"""Faults around a trio_ws server: failing handlers, stuck or silent peers, floods, shutdown.

Every test runs on 127.0.0.1 under ``trio.fail_after`` (and ``bounded``, for hangs a shielded
wait would hide) with short timeouts, and inside ``no_leaks()``: once the server has exited
(its nursery is gone), no Trio task started in the test may be alive and the process may not
hold more file descriptors than before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import resource
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from helpers import (
    HOST,
    RawPeer,
    assert_served,
    bounded,
    echo_handler,
    serving,
    upgrade_request,
    wait_stalled,
    wait_until,
)

import trio_ws
from trio_ws.protocol._frames import Opcode

TEST_TIMEOUT = 15.0
CLOSE_TIMEOUT = 0.5
MiB = 1024 * 1024
#: 64 KiB chunks a flooding handler sends at most: 64 MiB, far more than the write queue and
#: the socket buffers hold, so that reaching it means send() never pushed back.
FLOOD_LIMIT = 1024

#: Clients in this process: no keepalive, no compression, quick to close.
CLIENT = trio_ws.WebSocketOptions(close_timeout=CLOSE_TIMEOUT, ping_interval=None, compression=None)


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def fd_targets() -> dict[str, str]:
    out = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            out[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return out


def vm_rss_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def all_tasks() -> set[trio.lowlevel.Task]:
    tasks: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None:
            continue
        tasks.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return tasks


@asynccontextmanager
async def no_leaks(settle: float = 5.0) -> AsyncIterator[None]:
    """No task and no file descriptor left behind by the block: polls until there are none,
    for at most ``settle`` seconds (closing sockets and ending tasks takes a few steps)."""
    fds = open_fds()
    targets = fd_targets()
    tasks = all_tasks()
    yield
    with trio.move_on_after(settle):
        while open_fds() > fds or all_tasks() - tasks:
            await trio.sleep(0.02)  # polls until they are gone (settle bound)
    leftover = all_tasks() - tasks
    assert not leftover, f"tasks left behind: {sorted(t.name for t in leftover)}"
    after = open_fds()
    new = {fd: path for fd, path in fd_targets().items() if targets.get(fd) != path}
    assert after <= fds, f"file descriptors left behind: {fds} before, {after} after: {new}"


def raise_fd_limit(needed: int) -> None:
    """Raise the soft RLIMIT_NOFILE towards the hard limit; skip if ``needed`` is out of reach."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < needed:
        target = needed if hard == resource.RLIM_INFINITY else min(hard, max(needed, 8192))
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        soft = target
    if soft != resource.RLIM_INFINITY and soft < needed:
        pytest.skip(f"needs {needed} file descriptors, the hard limit is {hard}")


# A failing handler -------------------------------------------------------------------------


@bounded
async def test_handler_raising_closes_1011_others_unaffected(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        if request.path != "/boom":
            await echo_handler(request)
            return
        ws = await request.accept()
        await ws.receive()
        raise RuntimeError("boom in the handler")

    caplog.set_level(logging.INFO, logger="trio_ws")
    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks(), serving(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port, "/", options=CLIENT) as good:
                await good.send("before")
                assert await good.receive() == "before"
                async with trio_ws.open_websocket(
                    HOST, server.port, "/boom", options=CLIENT
                ) as bad:
                    await bad.send("trigger")
                    with pytest.raises(trio_ws.ConnectionClosed) as closed:
                        await bad.receive()
                    assert closed.value.code == 1011
                # The other connection goes on as if nothing happened.
                for i in range(3):
                    await good.send(f"after {i}")
                    assert await good.receive() == f"after {i}"
            await assert_served(server.port)
    errors = [
        r for r in caplog.records if r.name.startswith("trio_ws") and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert errors[0].exc_info is not None
    assert isinstance(errors[0].exc_info[1], RuntimeError)
    assert "/boom" in errors[0].getMessage()


# A peer that stops reading -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["connection", "server"])
@bounded
async def test_peer_that_stops_reading(how: str) -> None:
    """The server's send() blocks (write_queue + socket buffers full), memory stays bounded,
    and closing takes ``close_timeout``, not forever."""
    chunk = os.urandom(64 * 1024)
    sent = [0]
    handler_done = trio.Event()

    async def flood(request: trio_ws.WebSocketRequest) -> None:
        if request.path != "/flood":
            await echo_handler(request)
            return
        ws = await request.accept()
        try:
            while sent[0] < FLOOD_LIMIT:
                await ws.send(chunk)
                sent[0] += 1
        finally:
            handler_done.set()

    options = trio_ws.WebSocketOptions(close_timeout=CLOSE_TIMEOUT, write_queue=4)
    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks(), serving(flood, options=options) as server:
            rss_before = vm_rss_kib()
            raw = await RawPeer.connect(server.port)
            await raw.handshake("/flood")  # and never read again
            await wait_stalled()  # send() is stuck, or the handler sent FLOOD_LIMIT chunks
            assert sent[0] > 0
            stalled = sent[0]
            assert not handler_done.is_set(), "send() kept going although the peer reads nothing"
            # What left the handler is in the write queue or in the kernel's socket buffers.
            assert stalled * len(chunk) < 64 * MiB, f"{stalled} x 64 KiB accepted by send()"
            assert vm_rss_kib() - rss_before < 50 * 1024
            started = trio.current_time()
            if how == "connection":
                (conn,) = server.connections
                await conn.aclose(1001)
                assert conn.closed
                await handler_done.wait()
                # The server goes on: a stuck peer costs one connection, not the service.
                await assert_served(server.port)
                await raw.aclose()
            else:
                await server.aclose()
                await raw.aclose()
            elapsed = trio.current_time() - started
            assert handler_done.is_set()
            # close_timeout, not forever (the test's bound); slack for a busy machine.
            assert elapsed < CLOSE_TIMEOUT + 3.0, f"closing took {elapsed:.2f} s"


# Floods ---------------------------------------------------------------------------------------


@bounded
async def test_flood_of_2000_tcp_connections() -> None:
    """2000 connections at once (silent, half handshakes, garbage); a normal client is served."""
    count = 2000
    raise_fd_limit(2 * count + 200)  # both ends are in this process
    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks(), serving() as server:
            streams: list[trio.SocketStream] = []
            request = upgrade_request()
            try:
                for i in range(count):
                    stream = await trio.open_tcp_stream(HOST, server.port)
                    streams.append(stream)
                    if i % 3 == 1:
                        await stream.send_all(request[: 10 + i % 50])
                    elif i % 3 == 2 and i % 2:
                        await stream.send_all(b"\x16\x03\x01\x02\x00garbage")
                started = trio.current_time()
                await assert_served(server.port)
                assert trio.current_time() - started < 5.0  # not starved (slack: busy machine)
            finally:
                for stream in streams:
                    await trio.aclose_forcefully(stream)
            await assert_served(server.port)


@bounded
async def test_shutdown_with_500_connected_clients() -> None:
    count = 500
    raise_fd_limit(2 * count + 200)
    codes: list[int] = []
    connected = [0]

    async def client(port: int) -> None:
        async with trio_ws.open_websocket(HOST, port, "/", options=CLIENT) as ws:
            connected[0] += 1
            try:
                await ws.receive()
            except trio_ws.ConnectionClosed as exc:
                codes.append(exc.code)

    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks(), trio.open_nursery() as clients:
            async with serving() as server:
                limit = trio.CapacityLimiter(50)  # do not overflow the listen backlog

                async def limited(port: int) -> None:
                    async with limit:
                        pass
                    await client(port)

                for _ in range(count):
                    clients.start_soon(limited, server.port)
                # The server counts a connection when it accepts; the client once it has read
                # the 101: wait for both sides.
                await wait_until(
                    lambda: len(server.connections) == count and connected[0] == count,
                    "500 connections",
                )
                started = trio.current_time()
                await server.aclose()
                elapsed = trio.current_time() - started
            assert elapsed < CLOSE_TIMEOUT + 3.0, f"shutdown took {elapsed:.2f} s"
        # The clients' nursery has exited: every client saw its close.
        assert len(codes) == count
        assert set(codes) == {1001}


# Keepalive ----------------------------------------------------------------------------------


@bounded
async def test_keepalive_closes_peer_that_never_answers_pings() -> None:
    options = trio_ws.WebSocketOptions(
        close_timeout=CLOSE_TIMEOUT, ping_interval=0.2, ping_timeout=0.2
    )
    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks(), serving(options=options) as server:
            raw = await RawPeer.connect(server.port)
            await raw.handshake()
            started = trio.current_time()
            pings = 0
            while True:
                frame = await raw.read_frame()
                assert frame is not None, "dropped without a close frame"
                header, data = frame
                if header.opcode is Opcode.PING:
                    pings += 1  # and no pong
                    continue
                assert header.opcode is Opcode.CLOSE
                break
            elapsed = trio.current_time() - started
            assert int.from_bytes(data[:2], "big") == 1011
            assert pings == 1
            # ping_interval + ping_timeout (0.4 s), never sooner; slack for a busy machine.
            assert 0.35 <= elapsed < 0.4 + 2.0, f"closed after {elapsed:.2f} s"
            # No close reply from us: the server gives up after close_timeout.
            await raw.read_until_eof()
            assert trio.current_time() - started < 0.4 + CLOSE_TIMEOUT + 2.0
            await raw.aclose()
            await wait_until(lambda: not server.connections, "the connection is forgotten")

            # A peer that answers (any trio_ws client does) stays connected.
            async with trio_ws.open_websocket(HOST, server.port, "/", options=CLIENT) as ws:
                await trio.sleep(1.0)  # the behaviour under test: five ping intervals pass
                await ws.send("still open")
                assert await ws.receive() == "still open"


# Shutdown releases the listening sockets --------------------------------------------------


@pytest.mark.parametrize("how", ["aclose", "cancel"])
@pytest.mark.parametrize("traffic", ["idle", "served", "failing-handler"])
@bounded
async def test_listener_closed_after_shutdown(how: str, traffic: str) -> None:
    """Once the server has stopped, its listening socket is closed: the port refuses
    connections instead of queueing them in a backlog nobody will ever accept from."""

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        if request.path == "/fail":
            raise RuntimeError("handler failure")
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with no_leaks():
            async with trio.open_nursery() as nursery:
                server = await nursery.start(
                    functools.partial(
                        trio_ws.serve_websocket, handler, HOST, 0, handshake_timeout=0.5
                    )
                )
                port = server.port
                if traffic == "served":
                    await assert_served(port)
                elif traffic == "failing-handler":
                    with pytest.raises(trio_ws.HandshakeError):
                        async with trio_ws.open_websocket(HOST, port, "/fail", options=CLIENT):
                            pass
                if how == "aclose":
                    await server.aclose()
                else:
                    nursery.cancel_scope.cancel()
            sockets = [getattr(listener, "socket", None) for listener in server.listeners]
            assert all(sock is not None and sock.fileno() == -1 for sock in sockets), (
                f"listening sockets still open after shutdown: {sockets}"
            )
            with pytest.raises(OSError):
                stream = await trio.open_tcp_stream(HOST, port)
                await stream.aclose()


@bounded
async def test_close_right_after_the_handshake_is_answered() -> None:
    """A client that closes at once (as the connect+close benchmark does) gets a close reply.

    Guards the writer's last batch and the direct-write path at the very start of a connection.
    """
    with trio.fail_after(TEST_TIMEOUT):
        async with serving() as server:

            async def one() -> None:
                raw = await RawPeer.connect(server.port)
                await raw.handshake()
                await raw.send_frame(Opcode.CLOSE, struct.pack("!H", 1000))
                assert await raw.read_close() == (1000, "")
                await raw.aclose()

            for _ in range(4):
                async with trio.open_nursery() as nursery:
                    for _ in range(50):
                        nursery.start_soon(one)
