"""The broadcast Room: encode once, never wait on a slow member, bounded queues."""

from __future__ import annotations

import gc
import os
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from helpers import wait_members, wait_until

import trio_ws
import trio_ws._trio._outbox
from trio_ws.protocol._extensions import encode_message
from trio_ws.protocol._frames import Opcode, encode_frame
from trio_ws.protocol._handshake import ClientHandshake
from trio_ws.testing import open_memory_pair

NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=1.0, write_queue=8)


@asynccontextmanager
async def room_server(
    room: trio_ws.Room, options: trio_ws.WebSocketOptions = NO_PINGS
) -> AsyncIterator[tuple[trio_ws.WebSocketServer, list[trio_ws.WebSocketConnection]]]:
    """A server whose connections join ``room`` and relay what they receive."""
    joined: list[trio_ws.WebSocketConnection] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            joined.append(ws)
            async for message in ws:
                room.broadcast(message)

    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                handler, "127.0.0.1", 0, options=options, task_status=task_status
            )
        )
        yield server, joined
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def three_members(
    room: trio_ws.Room,
) -> AsyncIterator[tuple[trio_ws.WebSocketConnection, ...]]:
    """Three clients of a ``room_server``, all members of ``room``."""
    async with room_server(room) as (server, _):
        async with (
            trio_ws.open_websocket("127.0.0.1", server.port, "/", options=NO_PINGS) as a,
            trio_ws.open_websocket("127.0.0.1", server.port, "/", options=NO_PINGS) as b,
            trio_ws.open_websocket("127.0.0.1", server.port, "/", options=NO_PINGS) as c,
        ):
            await wait_members(room, 3)
            yield a, b, c


async def stalled_client(port: int) -> trio.SocketStream:
    """A client that completes the handshake and then never reads a byte."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    handshake = ClientHandshake(f"127.0.0.1:{port}", "/")
    await stream.send_all(handshake.request_bytes())
    response = None
    while response is None:
        response = handshake.receive_data(await stream.receive_some(65536))
    return stream


async def test_every_member_gets_every_message_in_order() -> None:
    room = trio_ws.Room()
    with trio.fail_after(10):
        async with three_members(room) as (a, b, c):
            for i in range(5):
                await a.send(f"text {i}")
            await b.send(b"\x00binary")
            for ws in (a, b, c):
                got = [await ws.receive() for _ in range(6)]
                # a's messages arrive in a's order; b's binary message is among them.
                assert [m for m in got if isinstance(m, str)] == [f"text {i}" for i in range(5)]
                assert b"\x00binary" in got


async def test_a_burst_of_broadcasts_reaches_each_member_in_few_writes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A lone broadcast is written to each member at once. 50 broadcasts in a burst reach each
    member in 8 writes, not 50 (the first at once, then 7 frames at a time at write_queue=8),
    in order, none taken for slow."""
    room = trio_ws.Room(policy="close")
    calls = 0
    real_write = os.write

    def counted_write(fd: int, data: bytes) -> int:
        nonlocal calls
        calls += 1
        return real_write(fd, data)

    with trio.fail_after(10):
        async with three_members(room) as (a, b, c):
            monkeypatch.setattr(trio_ws._trio._outbox.os, "write", counted_write)
            assert room.broadcast("lone") == 3
            assert calls == 3  # written before the broadcasting task yields
            for ws in (a, b, c):
                assert await ws.receive() == "lone"
            calls = 0
            assert [room.broadcast(f"m{i}") for i in range(50)] == [3] * 50
            for ws in (a, b, c):
                assert [await ws.receive() for _ in range(50)] == [f"m{i}" for i in range(50)]
            assert calls == 3 * 8
            assert room.closed_slow == 0


async def test_members_leave_when_their_connection_closes() -> None:
    room = trio_ws.Room()
    with trio.fail_after(10):
        async with room_server(room) as (server, _):
            async with trio_ws.open_websocket("127.0.0.1", server.port, "/", options=NO_PINGS):
                await wait_members(room, 1)
            await wait_until(lambda: not len(room), "the member left")
            assert room.broadcast("nobody") == 0


async def test_broadcast_never_waits_on_a_member_that_never_reads() -> None:
    """A stalled member costs nothing to the others, and its queue stays bounded."""
    room = trio_ws.Room(policy="drop")
    payload = os.urandom(64 * 1024)  # random: compression must not make it small
    with trio.fail_after(20):
        async with room_server(room) as (server, joined):
            stalled = await stalled_client(server.port)
            async with trio_ws.open_websocket(
                "127.0.0.1", server.port, "/", options=NO_PINGS
            ) as reader:
                await wait_members(room, 2)
                start = trio.current_time()
                for _ in range(200):
                    room.broadcast(payload)  # a plain call: it cannot block
                    assert await reader.receive() == payload
                elapsed = trio.current_time() - start
                slow = next(ws for ws in joined if ws.remote[1] == stalled.socket.getsockname()[1])
                # The stalled member's outgoing queue never exceeds its bound ...
                assert slow.outbox.queued <= NO_PINGS.write_queue
                # ... the rest was dropped for it and counted ...
                assert room.dropped_for(slow) > 150
                assert room.dropped == room.dropped_for(slow)
                # ... and it never held the reader back (200 x 64 KiB through loopback).
                assert elapsed < 10
            await stalled.aclose()


async def test_close_policy_disconnects_a_slow_member() -> None:
    room = trio_ws.Room(policy=trio_ws.SlowPolicy.CLOSE, close_code=1008)
    payload = os.urandom(64 * 1024)
    with trio.fail_after(20):
        async with room_server(room) as (server, joined):
            stalled = await stalled_client(server.port)
            async with trio_ws.open_websocket(
                "127.0.0.1", server.port, "/", options=NO_PINGS
            ) as reader:
                await wait_members(room, 2)
                for _ in range(100):
                    room.broadcast(payload)
                    assert await reader.receive() == payload
                assert room.closed_slow == 1
                assert len(room) == 1
                slow = next(ws for ws in joined if ws is not None and ws not in room)
                # The slow member is closed within close_timeout, as it never answers.
                closed = trio.Event()
                slow.on_close(closed.set)
                with trio.fail_after(NO_PINGS.close_timeout + 2):
                    await closed.wait()
            await stalled.aclose()


async def test_frames_are_encoded_once_for_all_members(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without compression, one broadcast builds one frame, whatever the member count."""
    encoded: list[bytes] = []

    def counting_encode(*args: Any, **kwargs: Any) -> bytes:
        frame = encode_frame(*args, **kwargs)
        encoded.append(frame)
        return frame

    monkeypatch.setattr(trio_ws._trio._outbox, "encode_frame", counting_encode)
    room = trio_ws.Room()
    options = trio_ws.WebSocketOptions(ping_interval=None, compression=None)
    with trio.fail_after(10):
        async with room_server(room, options) as (server, _):
            async with (
                trio_ws.open_websocket("127.0.0.1", server.port, "/", options=options) as a,
                trio_ws.open_websocket("127.0.0.1", server.port, "/", options=options) as b,
                trio_ws.open_websocket("127.0.0.1", server.port, "/", options=options) as c,
            ):
                await wait_members(room, 3)
                assert room.broadcast("same") == 3
                assert encoded == [encode_frame(Opcode.TEXT, b"same")]
                for ws in (a, b, c):
                    assert await ws.receive() == "same"


@pytest.mark.parametrize("no_context_takeover", [True, False])
async def test_compressed_broadcast(
    no_context_takeover: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Members without context takeover share one compressed frame; others get their own."""
    shared: list[bytes] = []

    def counting_encode(*args: Any) -> tuple[int, bytes]:
        rsv, payload = encode_message(*args)
        shared.append(payload)
        return rsv, payload

    monkeypatch.setattr(trio_ws._trio._outbox, "encode_message", counting_encode)
    deflate = trio_ws.PerMessageDeflate(server_no_context_takeover=no_context_takeover)
    options = trio_ws.WebSocketOptions(ping_interval=None, compression=deflate)
    room = trio_ws.Room()
    message = '{"type": "quote", "symbol": "TRIO", "price": 42.5}' * 20
    with trio.fail_after(10):
        async with room_server(room, options) as (server, _):
            async with (
                trio_ws.open_websocket("127.0.0.1", server.port, "/", options=options) as a,
                trio_ws.open_websocket("127.0.0.1", server.port, "/", options=options) as b,
            ):
                await wait_members(room, 2)
                assert a.extensions == ["permessage-deflate"]
                assert room.broadcast(message) == 2
                # Shared: compressed once for both; with context takeover, once per member
                # in its own writer (not through the shared path).
                assert len(shared) == (1 if no_context_takeover else 0)
                if shared:
                    assert len(shared[0]) < len(message) // 4
                assert await a.receive() == message
                assert await b.receive() == message


async def test_leaving_undoes_joining() -> None:
    """10,000 join/leave cycles leave nothing on the connection: not even the Room."""

    async def idle(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()

    with trio.fail_after(20):
        async with open_memory_pair(idle) as ws:
            room = trio_ws.Room()
            for _ in range(10_000):
                with room.joined(ws):
                    assert ws in room
            assert len(room) == 0
            gone = weakref.ref(room)
            del room
            gc.collect()
            assert gone() is None, "the connection still holds the room"
            # And a member that stays is still removed when its connection closes.
            room = trio_ws.Room()
            room.add(ws)
            await ws.send("bye")
            await ws.aclose()
            assert len(room) == 0


async def test_a_broadcast_to_a_closing_member_is_not_counted_as_delivered() -> None:
    async def idle(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()

    with trio.fail_after(10):
        async with open_memory_pair(idle) as ws:
            room = trio_ws.Room()
            room.add(ws)
            assert room.broadcast("one") == 1
            ws.close_nowait()
            assert room.broadcast("two") == 0
            assert ws not in room
