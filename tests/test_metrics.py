"""Metrics (trio_ws/protocol/_metrics.py): the counters equal what the clients did, on
servers, rooms and backplanes. Their Prometheus export is in test_prometheus.py."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from helpers import http_exchange, status_of

import trio_ws
from trio_ws.protocol import Connection, Role
from trio_ws.protocol._frames import Opcode, encode_frame
from trio_ws.protocol._handshake import ClientHandshake
from trio_ws.testing import open_memory_server

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PLAIN = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=1.0, compression=None)
TIMEOUT = 20


@asynccontextmanager
async def tcp_server(
    handler: Any, options: trio_ws.WebSocketOptions = PLAIN, **kwargs: Any
) -> AsyncIterator[trio_ws.WebSocketServer]:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                handler, HOST, 0, options=options, task_status=task_status, **kwargs
            )
        )
        yield server
        nursery.cancel_scope.cancel()


async def echo_or_close(request: trio_ws.WebSocketRequest) -> None:
    """/echo echoes until it receives "close me", then closes with 4001; /private is 403;
    anything else 404."""
    if request.path == "/private":
        await request.reject(403)
        return
    if request.path != "/echo":
        await request.respond(404, body="Not Found\n")
        return
    ws = await request.accept()
    async for message in ws:
        if message == "close me":
            await ws.aclose(4001, "asked to")
            return
        await ws.send(message)


async def test_the_counters_equal_what_the_clients_did() -> None:
    size, count = 1000, 5
    with trio.fail_after(TIMEOUT):
        async with tcp_server(echo_or_close) as server:
            metrics = server.metrics
            url = f"ws://{HOST}:{server.port}"
            # Client A: `count` binary messages of `size` bytes each way, then it closes (4000).
            async with trio_ws.open_websocket_url(f"{url}/echo", options=PLAIN) as a:
                for i in range(count):
                    payload = bytes([i]) * size
                    await a.send(payload)
                    assert await a.receive() == payload
                assert metrics.connections_open == 1
                await a.aclose(4000, "done")
            # Client B: one 8-byte text message, after which the server closes it (4001).
            async with trio_ws.open_websocket_url(f"{url}/echo", options=PLAIN) as b:
                await b.send("close me")
                with pytest.raises(trio_ws.ConnectionClosed) as closed:
                    await b.receive()
                assert closed.value.code == 4001
            # Refused: by the handler (403, 404) and by the server (400, a bad request line).
            for path, status in (("/private", 403), ("/nowhere", 404)):
                with pytest.raises(trio_ws.HandshakeError) as refused:
                    async with trio_ws.open_websocket_url(f"{url}{path}", options=PLAIN):
                        pass
                assert refused.value.status == status
            assert status_of(await http_exchange(server.port, b"NOT HTTP\r\n\r\n")) == 400

            snapshot = metrics.snapshot()
    assert snapshot == {
        "connections_open": 0,
        "connections_total": 2,
        "handshakes": {101: 2, 403: 1, 404: 1, 400: 1},
        "messages_received": count + 1,
        "messages_sent": count,
        "bytes_received": count * size + len("close me"),
        "bytes_sent": count * size,
        "deflate_raw_bytes_received": 0,
        "deflate_bytes_received": 0,
        "deflate_raw_bytes_sent": 0,
        "deflate_bytes_sent": 0,
        "close_codes": {("remote", 4000): 1, ("local", 4001): 1},
        "room_dropped": 0,
        "room_closed_slow": 0,
        "room_resumed": 0,
        "room_resume_refused": 0,
        "room_replayed": 0,
        "backplane_connected": 0,
        "backplane_reconnects": 0,
        "backplane_missed": 0,
        "backplane_dropped": 0,
    }


async def test_several_servers_share_one_metrics() -> None:
    metrics = trio_ws.Metrics()
    with trio.fail_after(TIMEOUT):
        async with (
            tcp_server(echo_or_close, metrics=metrics) as one,
            tcp_server(echo_or_close, metrics=metrics) as two,
        ):
            assert one.metrics is metrics and two.metrics is metrics
            for server in (one, two):
                async with trio_ws.open_websocket(HOST, server.port, "/echo", options=PLAIN) as ws:
                    await ws.send(b"x")
                    assert await ws.receive() == b"x"
    assert metrics.connections_total == 2
    assert metrics.handshakes == {101: 2}
    assert (metrics.messages_received, metrics.messages_sent) == (2, 2)
    assert metrics.close_codes == {("remote", 1000): 2}


async def test_a_handshake_timeout_is_counted_as_408() -> None:
    with trio.fail_after(TIMEOUT):
        async with tcp_server(echo_or_close, handshake_timeout=0.2) as server:
            # Half a request, then nothing: the server gives up with 408.
            response = await http_exchange(server.port, b"GET /echo HTTP/1.1\r\n")
            assert status_of(response) == 408
            assert server.metrics.handshakes == {408: 1}
            assert server.metrics.connections_total == 0


def test_the_core_counts_failures_and_abnormal_closures() -> None:
    """A protocol violation is our close (its code); a stream that just ends is 1006."""
    metrics = trio_ws.Metrics()
    for ending in ("violation", "eof"):
        core = Connection(Role.SERVER, metrics=metrics)
        client = ClientHandshake("example.com", "/")
        assert len(core.receive_data(client.request_bytes())) == 1  # the request
        core.accept()
        if ending == "violation":
            core.receive_data(encode_frame(Opcode.TEXT, b"unmasked"))  # clients must mask
        else:
            core.receive_eof()
    assert metrics.close_codes == {("local", 1002): 1, ("remote", 1006): 1}
    assert metrics.handshakes == {101: 2}
    assert (metrics.connections_total, metrics.connections_open) == (2, 0)


async def test_compressed_sizes_are_counted_each_way() -> None:
    """Messages of repetitive bytes, compressed both ways: raw sizes exact, wire sizes small."""
    size, count = 20_000, 4
    options = trio_ws.WebSocketOptions(ping_interval=None)  # permessage-deflate on

    async def echo(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        async for message in ws:
            await ws.send(message)

    with trio.fail_after(TIMEOUT):
        async with open_memory_server(echo, options=options) as memory:
            async with memory.connect("/", options=options) as ws:
                assert ws.extensions == ["permessage-deflate"]
                for i in range(count):
                    payload = b"metrics " * (size // 8) + bytes([i])
                    await ws.send(payload)
                    assert await ws.receive() == payload
            metrics = memory.server.metrics
            total = count * (size + 1)
            assert metrics.bytes_received == metrics.deflate_raw_bytes_received == total
            assert metrics.bytes_sent == metrics.deflate_raw_bytes_sent == total
            assert 0 < metrics.deflate_bytes_received < total / 20
            assert 0 < metrics.deflate_bytes_sent < total / 20
            ratio = metrics.compression_ratio_sent
            assert ratio is not None and ratio == total / metrics.deflate_bytes_sent


async def test_shared_room_frames_are_counted_for_each_member() -> None:
    """A room frame encoded once (compressed, no context takeover) counts per member."""
    deflate = trio_ws.PerMessageDeflate(server_no_context_takeover=True)
    options = trio_ws.WebSocketOptions(ping_interval=None, compression=deflate)
    room = trio_ws.Room()
    joined_send, joined_receive = trio.open_memory_channel[None](3)

    async def member(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            await joined_send.send(None)
            async for _ in ws:
                pass

    payload = "déjà " * 1000  # non-ASCII: payload bytes are UTF-8 bytes, not characters
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(member, options=options) as memory:
            async with (
                memory.connect("/", options=options) as a,
                memory.connect("/", options=options) as b,
                memory.connect("/", options=options) as c,
            ):
                for _ in range(3):
                    await joined_receive.receive()
                assert room.broadcast(payload) == 3
                for ws in (a, b, c):
                    assert await ws.receive() == payload
            metrics = memory.server.metrics
    raw = len(payload.encode("utf-8"))
    assert metrics.messages_sent == 3
    assert metrics.bytes_sent == metrics.deflate_raw_bytes_sent == 3 * raw
    assert metrics.deflate_bytes_sent % 3 == 0
    assert 0 < metrics.deflate_bytes_sent < raw


async def stalled_client(port: int) -> trio.SocketStream:
    """A client that completes the handshake and then never reads a byte."""
    stream = await trio.open_tcp_stream(HOST, port)
    handshake = ClientHandshake(f"{HOST}:{port}", "/")
    await stream.send_all(handshake.request_bytes())
    response = None
    while response is None:
        response = handshake.receive_data(await stream.receive_some(65536))
    return stream


@pytest.mark.parametrize("policy", [trio_ws.SlowPolicy.DROP, trio_ws.SlowPolicy.CLOSE])
async def test_slow_room_members_are_counted(policy: trio_ws.SlowPolicy) -> None:
    room = trio_ws.Room(policy=policy, close_code=1008)
    options = trio_ws.WebSocketOptions(
        ping_interval=None, close_timeout=1.0, write_queue=4, compression=None
    )
    joined_send, joined_receive = trio.open_memory_channel[trio_ws.WebSocketConnection](2)
    closed = trio.Event()

    async def member(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            await joined_send.send(ws)
            async for _ in ws:
                pass

    payload = os.urandom(64 * 1024)
    delivered = 0
    with trio.fail_after(TIMEOUT):
        async with tcp_server(member, options) as server:
            stalled = await stalled_client(server.port)
            (await joined_receive.receive()).on_close(closed.set)  # the stalled member
            async with trio_ws.open_websocket(HOST, server.port, "/", options=options) as reader:
                await joined_receive.receive()
                while not (room.dropped or room.closed_slow):
                    delivered += room.broadcast(payload)
                    assert await reader.receive() == payload
                metrics = server.metrics
                assert metrics.messages_sent == delivered
                assert metrics.bytes_sent == delivered * len(payload)
                if policy is trio_ws.SlowPolicy.DROP:
                    assert metrics.room_dropped == room.dropped == 1
                    assert metrics.room_closed_slow == 0
                else:
                    assert metrics.room_closed_slow == room.closed_slow == 1
                    assert metrics.room_dropped == 0
                    await closed.wait()  # it never answers: closed after close_timeout
                    assert metrics.close_codes == {("local", 1008): 1}
            await stalled.aclose()


async def test_resumes_are_counted_recovered_or_refused() -> None:
    """Joins with a resume point count as recovered (with the messages replayed) or refused;
    a first join (no resume point) counts as neither."""
    room = trio_ws.Room(history=trio_ws.MemoryHistory(3))

    async def member(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        query = dict(part.split("=") for part in request.query.split("&") if part)
        since = trio_ws.Position(query["epoch"], int(query["offset"])) if query else None
        await room.join(ws, since=since)
        await ws.send("joined")
        async for _ in ws:
            pass

    async def join(port: int, resource: str) -> None:
        async with trio_ws.open_websocket(HOST, port, resource, options=PLAIN) as ws:
            while await ws.receive() != "joined":  # after the replay
                pass

    with trio.fail_after(TIMEOUT):
        async with tcp_server(member) as server:
            await join(server.port, "/")
            for i in range(5):
                room.broadcast(f"m{i}")
            epoch = room.position().epoch  # type: ignore[union-attr]
            await join(server.port, f"/?epoch={epoch}&offset=3")  # 2 replayed
            await join(server.port, f"/?epoch={epoch}&offset=1")  # too old: 3 kept
            await join(server.port, "/?epoch=other&offset=5")  # another epoch
            metrics = server.metrics
            assert (metrics.room_resumed, metrics.room_replayed) == (1, 2)
            assert metrics.room_resume_refused == 2
            # Sent: "joined" four times, and the two replayed ("m3", "m4", shared frames).
            assert (metrics.messages_sent, metrics.bytes_sent) == (4 + 2, 4 * 6 + 2 * 2)


def test_redis_stores_are_tracked_as_backplanes() -> None:
    """A RedisHistory's and a RedisPresence's counters add up with a backplane's."""
    history = trio_ws.RedisHistory("redis://127.0.0.1:1", "chat")  # never run
    presence = trio_ws.RedisPresence("redis://127.0.0.1:1", "chat")
    metrics = trio_ws.Metrics()
    for store in (history, presence):
        metrics.track_backplane(store)
    history.connections, presence.connections = 2, 4
    history.missed, history.dropped, presence.dropped = 1, 2, 3
    assert metrics.backplane_reconnects == 1 + 3
    assert (metrics.backplane_missed, metrics.backplane_dropped) == (1, 5)
    assert metrics.backplane_connected == 0


def test_backplane_reconnects_and_gaps_are_read_from_the_backplane() -> None:
    backplane = trio_ws.RedisBackplane("redis://127.0.0.1:1")  # never run: counters set below
    metrics = trio_ws.Metrics()
    metrics.track_backplane(backplane)
    metrics.track_backplane(backplane)  # once only
    assert metrics.backplane_reconnects == 0  # never connected
    backplane.connections = 3  # the first connection and two reconnections
    backplane.missed = 5
    backplane.dropped_offline, backplane.dropped_full = 2, 1
    snapshot = metrics.snapshot()
    assert snapshot["backplane_reconnects"] == 2
    assert snapshot["backplane_missed"] == 5
    assert snapshot["backplane_dropped"] == 3
    assert snapshot["backplane_connected"] == 0
