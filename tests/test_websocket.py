"""The Trio connection layer (trio_ws/_websocket.py): Trio's checkpoint rule, close
callbacks, keepalive outcomes."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio
import trio.testing
from helpers import HOST, RawPeer, running_server

import trio_ws
from trio_ws.protocol._frames import PIECE, FrameHeader, Opcode, encode_frame
from trio_ws.testing import open_memory_pair

NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None)


async def drain(request: trio_ws.WebSocketRequest) -> None:
    """Read and forget everything: the fastest possible peer."""
    ws = await request.accept()
    async for _ in ws:
        pass


@asynccontextmanager
async def draining_client() -> AsyncIterator[trio_ws.WebSocketConnection]:
    async with running_server(drain, options=NO_PINGS) as server:
        async with trio_ws.open_websocket(HOST, server.port, options=NO_PINGS) as ws:
            yield ws


async def test_a_sending_loop_lets_its_siblings_run() -> None:
    """Each send() is a schedule point even when the socket takes the frame at once."""
    sends = 20_000
    sibling_turns = 0
    done = False

    async def sibling() -> None:
        nonlocal sibling_turns
        while not done:
            sibling_turns += 1
            await trio.sleep(0)

    with trio.fail_after(30):
        async with draining_client() as ws, trio.open_nursery() as nursery:
            nursery.start_soon(sibling)
            await trio.sleep(0)  # (the sibling starts)
            start = sibling_turns
            for _ in range(sends):
                await ws.send("x" * 20)
            done = True
    # One turn of the sibling per send, give or take the scheduler's batching.
    assert sibling_turns - start >= sends // 2


async def test_a_receiving_loop_lets_its_siblings_run() -> None:
    """receive() is a schedule point even when a message is already queued."""

    async def burst(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        for i in range(NO_PINGS.max_queue):
            await ws.send(str(i))
        await ws.receive()

    with trio.fail_after(10):
        async with running_server(burst, options=NO_PINGS) as server:
            async with trio_ws.open_websocket(HOST, server.port, options=NO_PINGS) as ws:
                assert await ws.receive() == "0"
                for i in range(1, NO_PINGS.max_queue):
                    with trio.testing.assert_checkpoints():
                        assert await ws.receive() == str(i)
                await ws.send("bye")


async def test_send_is_a_schedule_point_on_its_fast_path() -> None:
    with trio.fail_after(10):
        async with draining_client() as ws:
            for message in ("text", b"bytes", bytearray(b"ba"), ["frag", "ments"]):
                with trio.testing.assert_checkpoints():
                    await ws.send(message)


@pytest.mark.parametrize("call", ["send", "receive", "ping", "aclose"])
async def test_a_cancelled_call_does_nothing(call: str) -> None:
    """A call made in a cancelled scope raises Cancelled before doing anything."""
    received: list[str | bytes] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        async for message in ws:
            received.append(message)
            await ws.send(message)

    with trio.fail_after(10):
        async with open_memory_pair(handler) as ws:
            await ws.send("queued")  # its echo waits for the receive() case
            with trio.CancelScope() as scope:
                scope.cancel()
                if call == "send":
                    await ws.send("never")
                elif call == "receive":
                    await ws.receive()
                elif call == "ping":
                    await ws.ping(b"never")
                else:
                    await ws.aclose()
            assert scope.cancelled_caught
            assert not ws.closed
            await ws.send("after")
            assert await ws.receive() == "queued"  # the receive() case took nothing
            assert await ws.receive() == "after"
    assert received == ["queued", "after"]


async def test_calls_on_a_closed_connection_are_checkpoints() -> None:
    with trio.fail_after(10):
        async with open_memory_pair(drain) as ws:
            await ws.aclose()
            for call in (ws.receive(), ws.send("x"), ws.ping(), ws.aclose()):
                with trio.testing.assert_checkpoints():
                    with suppress(trio_ws.ConnectionClosed):
                        await call
            # assert_checkpoints accepts an exception as a way out: count schedule points
            # on the raising paths directly.
            turns = 0

            async def count() -> None:
                nonlocal turns
                while True:
                    turns += 1
                    await trio.sleep(0)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(count)
                await trio.sleep(0)
                before = turns
                for _ in range(100):
                    with pytest.raises(trio_ws.ConnectionClosed):
                        await ws.receive()
                    with pytest.raises(trio_ws.ConnectionClosed):
                        await ws.send("x")
                assert turns - before >= 100
                nursery.cancel_scope.cancel()


async def test_on_close_callbacks_run_once_and_can_be_cancelled() -> None:
    calls: list[str] = []
    with trio.fail_after(10):
        async with open_memory_pair(drain) as ws:
            ws.on_close(lambda: calls.append("kept"))
            cancel = ws.on_close(lambda: calls.append("cancelled"))
            cancel()
            cancel()  # twice is harmless
            await ws.aclose()
        assert calls == ["kept"]
        ws.on_close(lambda: calls.append("late"))  # over already: called at once
        assert calls == ["kept", "late"]


KEEPALIVE = trio_ws.WebSocketOptions(ping_interval=0.05, ping_timeout=0.1, close_timeout=30)


def keepalive_close(frames: list[tuple[FrameHeader, bytes]]) -> tuple[int, bytes]:
    closes = [payload for header, payload in frames if header.opcode is Opcode.CLOSE]
    assert closes, "no close frame"
    return int.from_bytes(closes[0][:2], "big"), closes[0][2:]


async def read_frames(peer: RawPeer) -> list[tuple[FrameHeader, bytes]]:
    """Read everything, answer nothing (a frozen peer), until the other side closes TCP."""
    frames = []
    while (frame := await peer.read_frame()) is not None:
        frames.append(frame)
    return frames


async def test_a_server_closes_a_frozen_client_saying_why() -> None:
    """A client that stops answering pings is closed with 1011 "keepalive ping timeout"
    (RFC 6455 section 7.4.1), and the server's side reports the same, without waiting
    close_timeout for a closing handshake that cannot come."""
    accepted: list[trio_ws.WebSocketConnection] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        accepted.append(ws)
        async for _ in ws:
            pass

    with trio.fail_after(10):
        async with running_server(handler, options=KEEPALIVE) as server:
            frozen = await RawPeer.connect(server.port)
            await frozen.handshake()
            started = trio.current_time()
            frames = await read_frames(frozen)
            assert trio.current_time() - started < 5  # not close_timeout (30 s)
            assert keepalive_close(frames) == (1011, b"keepalive ping timeout")
            assert sum(header.opcode is Opcode.PING for header, _ in frames) >= 1
            (ws,) = accepted
            closed = trio.Event()
            ws.on_close(closed.set)
            await closed.wait()
            assert (ws.close_code, ws.close_reason) == (1011, "keepalive ping timeout")
            await frozen.aclose()


async def test_a_client_closes_a_frozen_server_saying_why() -> None:
    listener = (await trio.open_tcp_listeners(0, host=HOST))[0]
    port = listener.socket.getsockname()[1]
    server_saw: list[tuple[int, bytes]] = []

    async def frozen_server() -> None:
        peer = RawPeer(await listener.accept(), server=True)
        await peer.accept_handshake()
        server_saw.append(keepalive_close(await read_frames(peer)))
        await peer.aclose()

    with trio.fail_after(10):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(frozen_server)
            started = trio.current_time()
            async with trio_ws.open_websocket(HOST, port, options=KEEPALIVE) as ws:
                with pytest.raises(trio_ws.ConnectionClosed) as caught:
                    await ws.receive()
            assert trio.current_time() - started < 5  # not close_timeout (30 s)
            assert (caught.value.code, caught.value.reason) == (1011, "keepalive ping timeout")
            assert (ws.close_code, ws.close_reason) == (1011, "keepalive ping timeout")
    assert server_saw == [(1011, b"keepalive ping timeout")]


async def test_a_handler_that_never_receives_still_answers_pings_and_close() -> None:
    """Receivers read the socket themselves; when nobody receives, the connection's own task
    reads again, so pings are answered and the closing handshake completes."""
    closed: list[tuple[int | None, str | None]] = []
    done = trio.Event()

    async def deaf(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        ws.on_close(lambda: (closed.append((ws.close_code, ws.close_reason)), done.set()))
        await done.wait()

    with trio.fail_after(10):
        async with running_server(deaf, options=NO_PINGS) as server:
            async with trio_ws.open_websocket(HOST, server.port, options=NO_PINGS) as ws:
                for _ in range(3):
                    await ws.ping()
                await ws.send("ignored")
                await ws.ping()
            assert ws.close_code == 1000
            await done.wait()
    assert closed == [(1000, "")]


async def test_receive_takes_over_reading_and_gives_it_back() -> None:
    """A receiver that comes after the connection's task started reading gets the message;
    once it stops receiving, pings are answered again."""
    got: list[str | bytes] = []
    received = trio.Event()

    async def late(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping()  # nobody receives yet: the connection's task reads the pong
        got.append(await ws.receive())
        received.set()
        await ws.receive()

    with trio.fail_after(10):
        async with running_server(late, options=NO_PINGS) as server:
            async with trio_ws.open_websocket(HOST, server.port, options=NO_PINGS) as ws:
                await ws.send("first")
                await received.wait()
                await ws.ping()
                await ws.send("last")
    assert got == ["first"]


@pytest.mark.parametrize("size", [PIECE, 2 * PIECE + 5])
async def test_a_large_frame_read_in_many_reads_arrives_intact(
    size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver reads a large frame's payload into the core's buffer (readv), one chunk
    per read here (each is read before the next is sent): a frame of up to PIECE bytes comes
    whole, a larger one in pieces as it arrives."""
    readv_sizes: list[int] = []

    def readv(fd: int, buffers: list[memoryview]) -> int:
        readv_sizes.append(real_readv(fd, buffers))
        return readv_sizes[-1]

    real_readv = os.readv
    monkeypatch.setattr(os, "readv", readv)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        pieces = [piece async for piece in ws.receive_stream()]
        await ws.send(str(len(pieces)))
        await ws.send(b"".join(pieces))  # type: ignore[arg-type]

    payload = os.urandom(size)
    options = trio_ws.WebSocketOptions(ping_interval=None, max_message_size=None)
    with trio.fail_after(10):
        async with running_server(handler, options=options) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake()
            data = encode_frame(Opcode.BINARY, payload, mask=os.urandom(4))
            for i in range(0, len(data), 65_537):
                await peer.send(data[i : i + 65_537])
                await trio.testing.wait_all_tasks_blocked()
            count = await peer.read_frame()
            echoed = await peer.read_frame()
            assert count is not None and echoed is not None
            assert echoed[1] == payload
            pieces = int(count[1])
            assert pieces == 1 if size <= PIECE else pieces > 2
            assert len(readv_sizes) > 10 and sum(readv_sizes) > size * 0.9
            await peer.aclose()
