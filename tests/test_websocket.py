"""The Trio connection layer (trio_ws/_trio/_websocket.py): Trio's checkpoint rule, close
callbacks, keepalive outcomes; messages, the closing handshake, pings and backpressure between
a trio_ws client and server; close codes for protocol errors on the wire (RFC 6455 section
7.4); regressions; streaming messages in fragments both ways.

Every test runs on 127.0.0.1 or in memory, bounded by ``trio.fail_after`` / ``bounded``.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import pytest
import trio
import trio.testing
from helpers import (
    BIG_LIMIT,
    BIG_SIZE,
    EDGE_SIZES,
    HOST,
    TEST_TIMEOUT,
    RawClient,
    RawPeer,
    assert_still_serving,
    bounded,
    echo_handler,
    echo_handler_loop,
    payload,
    raw_server,
    running_server,
    wait_stalled,
    wait_until,
)

import trio_ws
from trio_ws._trio._receiving import _MAX_READ_SIZE
from trio_ws.protocol._frames import PIECE, FrameHeader, Opcode, encode_frame
from trio_ws.testing import open_memory_pair, open_memory_server

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


# Messages -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", EDGE_SIZES)
@bounded
async def test_echo_round_trip(kind: str, size: int) -> None:
    message = payload(kind, size)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler) as server,
            trio_ws.open_websocket(HOST, server.port, "/") as ws,
        ):
            await ws.send(message)
            echoed = await ws.receive()
    assert type(echoed) is type(message)
    assert echoed == message


@pytest.mark.parametrize("kind", ["text", "binary"])
@bounded
async def test_echo_round_trip_16_mib(kind: str) -> None:
    message = payload(kind, BIG_SIZE)
    options = trio_ws.WebSocketOptions(max_message_size=BIG_LIMIT)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler, options=options) as server,
            trio_ws.open_websocket(HOST, server.port, options=options) as ws,
        ):
            await ws.send(message)
            echoed = await ws.receive()
    assert type(echoed) is type(message)
    assert len(echoed) == BIG_SIZE
    assert echoed == message


@bounded
async def test_16_mib_refused_at_default_limit() -> None:
    """Without raising max_message_size, the server fails the connection with 1009."""
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            options = trio_ws.WebSocketOptions(max_message_size=BIG_LIMIT)
            async with trio_ws.open_websocket(HOST, server.port, options=options) as ws:
                await ws.send(payload("binary", BIG_SIZE))
                with pytest.raises(trio_ws.ConnectionClosed) as info:
                    await ws.receive()
    assert info.value.code == 1009
    assert ws.close_code == 1009


@bounded
async def test_message_order_preserved() -> None:
    """Many messages of mixed types and sizes, sent while echoes come back, stay in order."""
    messages: list[str | bytes] = []
    for i in range(300):
        size = (i * 7919) % 3000
        messages.append(f"{i}:" + "x" * size if i % 2 else i.to_bytes(2, "big") + b"y" * size)
    received: list[str | bytes] = []
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):

            async def sender() -> None:
                for message in messages:
                    await ws.send(message)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(sender)
                for _ in messages:
                    received.append(await ws.receive())
    assert received == messages


@bounded
async def test_async_for_ends_on_normal_close() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        for i in range(3):
            await ws.send(str(i))
        # returning closes with 1000

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port) as ws:
                got = [message async for message in ws]
            assert got == ["0", "1", "2"]
            assert ws.closed
            assert ws.close_code == 1000


# Closing handshake --------------------------------------------------------------------------


@bounded
async def test_client_close_code_and_reason_reach_server() -> None:
    seen: list[trio_ws.ConnectionClosed] = []
    server_side: list[trio_ws.WebSocketConnection] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        try:
            while True:
                await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            seen.append(exc)
        finally:
            done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port) as ws:
                assert ws.close_code is None
                assert ws.close_reason is None
                assert ws.state is trio_ws.ConnectionState.OPEN
                await ws.aclose(4001, "bye")
                assert ws.closed
                assert ws.state is trio_ws.ConnectionState.CLOSED
                # The server echoed our code (section 5.5.1).
                assert ws.close_code == 4001
                with pytest.raises(trio_ws.ConnectionClosed) as info:
                    await ws.receive()
                assert info.value.code == 4001
                assert info.value.by_peer is False
                with pytest.raises(trio_ws.ConnectionClosed):
                    await ws.send("too late")
            await done.wait()
    (exc,) = seen
    assert (exc.code, exc.reason, exc.by_peer) == (4001, "bye", True)
    (sws,) = server_side
    assert sws.closed
    assert (sws.close_code, sws.close_reason) == (4001, "bye")


@bounded
async def test_server_close_code_and_reason_reach_client() -> None:
    server_side: list[trio_ws.WebSocketConnection] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await ws.send("last words")
        await ws.aclose(4002, "server bye")

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):
            assert await ws.receive() == "last words"
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4002, "server bye")
            assert info.value.by_peer is True
            assert ws.closed
            assert (ws.close_code, ws.close_reason) == (4002, "server bye")
            # A code other than 1000/1001 ends ``async for`` with the exception.
            with pytest.raises(trio_ws.ConnectionClosed):
                async for _ in ws:
                    pass
            # Closing an already closed connection does nothing.
            await ws.aclose(1000)
            assert ws.close_code == 4002
    (sws,) = server_side
    assert sws.close_code == 4002


@bounded
async def test_close_with_unicode_reason_and_no_status() -> None:
    reasons: list[tuple[int, str]] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            reasons.append((exc.code, exc.reason))
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port) as ws:
                await ws.aclose(4999, "au revoir \u2014 \u00e0 bient\u00f4t")
            await done.wait()
            done = trio.Event()
            async with trio_ws.open_websocket(HOST, server.port) as ws:
                await ws.aclose(1005)  # a close frame without a status code
            await done.wait()
    assert reasons == [(4999, "au revoir \u2014 \u00e0 bient\u00f4t"), (1005, "")]


@bounded
async def test_long_close_reason_is_cut_between_characters() -> None:
    # Section 5.5: 123 bytes of reason at most; the cut never splits a UTF-8 character, so
    # the peer gets a valid close frame (not a 1007 failure) with the longest prefix that fits.
    long_reason = "\u00e9" * 100  # 200 bytes of UTF-8
    expected = "\u00e9" * 61  # 122 bytes: the 62nd character would straddle byte 123
    seen: list[tuple[int, str]] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            seen.append((exc.code, exc.reason))
        finally:
            done.set()

    async def server_closes(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(4003, long_reason)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port) as ws:
                await ws.aclose(4002, long_reason)
                assert ws.close_code == 4002  # echoed: the close frame was valid
            await done.wait()
        assert seen == [(4002, expected)]
        async with (
            running_server(server_closes) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4003, expected)


# Ping ---------------------------------------------------------------------------------------


@bounded
async def test_ping_waits_for_pong() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):
            await ws.ping()
            await ws.ping(b"custom payload")
            # Pings in flight concurrently are each answered.
            async with trio.open_nursery() as nursery:
                for i in range(5):
                    nursery.start_soon(ws.ping, f"p{i}".encode())
            # Messages still flow after the pings.
            await ws.send("after")
            assert await ws.receive() == "after"


async def test_a_receiver_taking_over_as_the_tasks_read_ends_is_not_stranded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection's task reads (for a ping: nobody receives); its read has just returned a
    pong, with no message, when a receiver comes and takes reading over. The receiver must
    then read itself: nothing else would wake it, and the next message would never come."""
    real_receive_some = trio.SocketStream.receive_some
    read_done = trio.Event()
    receiver_waits = trio.Event()
    client_stream: list[trio.SocketStream] = []

    async def receive_some(self: trio.SocketStream, max_bytes: int | None = None) -> bytes:
        data = await real_receive_some(self, max_bytes)
        if client_stream and self is client_stream[0] and not read_done.is_set():
            read_done.set()  # the pong is read; the task is not back from its read yet
            with trio.CancelScope(shield=True):
                await receiver_waits.wait()
        return data

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):
            client_stream.append(ws._stream)
            monkeypatch.setattr(trio.SocketStream, "receive_some", receive_some)
            received: list[str | bytes] = []

            async def receive() -> None:
                received.append(await ws.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.ping)  # the connection's task reads the pong
                await read_done.wait()
                nursery.start_soon(receive)  # takes reading over, then waits for a message
                await trio.testing.wait_all_tasks_blocked()
                receiver_waits.set()
                await ws.send("hello")
            assert received == ["hello"]


@bounded
async def test_server_ping_waits_for_pong() -> None:
    pinged = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.ping(b"from server")
        pinged.set()
        await echo_handler_loop(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            trio_ws.open_websocket(HOST, server.port),
        ):
            # The client answers pings while the application is not receiving.
            await pinged.wait()


@bounded
async def test_ping_on_closed_connection_raises() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler) as server,
            trio_ws.open_websocket(HOST, server.port) as ws,
        ):
            await ws.aclose(1000)
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.ping()
            assert info.value.code == 1000


@bounded
async def test_ping_returns_only_when_its_pong_arrives() -> None:
    """Against a byte-level server: a delayed pong, and an unrelated pong that must not count."""
    pings: list[bytes] = []
    unsolicited_sent = trio.Event()
    send_the_pong = trio.Event()
    ping_returned = trio.Event()

    async def script(peer: RawPeer) -> None:
        frame = await peer.read_frame()
        assert frame is not None
        assert frame[0].opcode is Opcode.PING
        pings.append(frame[1])
        await peer.send_frame(Opcode.PONG, b"unsolicited")
        unsolicited_sent.set()
        await send_the_pong.wait()
        await peer.send_frame(Opcode.PONG, frame[1])

    async def ping(ws: trio_ws.WebSocketConnection) -> None:
        await ws.ping(b"mine")
        ping_returned.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with raw_server(script) as port, trio_ws.open_websocket(HOST, port) as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ping, ws)
                await unsolicited_sent.wait()
                await wait_stalled()  # the unsolicited pong has been read
                assert not ping_returned.is_set(), "ping() returned on another pong"
                send_the_pong.set()
    assert ping_returned.is_set()
    assert pings == [b"mine"]


@bounded
async def test_pending_ping_raises_when_connection_closes() -> None:
    """A ping whose pong never comes is woken by the peer's close, with ConnectionClosed."""

    async def script(peer: RawPeer) -> None:
        frame = await peer.read_frame()
        assert frame is not None
        assert frame[0].opcode is Opcode.PING
        await peer.send_frame(Opcode.CLOSE, struct.pack("!H", 4010) + b"no pong for you")

    with trio.fail_after(TEST_TIMEOUT):
        async with raw_server(script) as port, trio_ws.open_websocket(HOST, port) as ws:
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.ping(b"anyone?")
            assert (info.value.code, info.value.reason) == (4010, "no pong for you")
            assert ws.closed


# Backpressure -------------------------------------------------------------------------------

MAX_QUEUE = 2
# Incompressible and larger than one socket read, so that a read adds at most one message.
BIG_MESSAGE = os.urandom(512 * 1024)
#: Far more messages than max_queue + write_queue + the socket buffers can hold (100 MiB).
SEND_LIMIT = 200


async def _fill_until_stuck(
    ws: trio_ws.WebSocketConnection, nursery: trio.Nursery
) -> tuple[list[int], trio.Event]:
    """Start a task sending BIG_MESSAGE until it fails (or SEND_LIMIT messages went, which no
    bounded queue allows); return once it is stuck."""
    sent = [0]
    stopped = trio.Event()

    async def sender() -> None:
        try:
            while sent[0] < SEND_LIMIT:
                await ws.send(BIG_MESSAGE)
                sent[0] += 1
        except trio_ws.ConnectionClosed:
            pass
        finally:
            stopped.set()

    nursery.start_soon(sender)
    await wait_stalled()
    return sent, stopped


def _queue_options(close_timeout: float = 10.0) -> trio_ws.WebSocketOptions:
    return trio_ws.WebSocketOptions(max_queue=MAX_QUEUE, write_queue=2, close_timeout=close_timeout)


@bounded
async def test_backpressure_blocks_sender_and_bounds_queue() -> None:
    server_side: list[trio_ws.WebSocketConnection] = []
    received = [0]
    release = trio.Event()
    handler_done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await release.wait()  # never reads until released
        try:
            while True:
                await ws.receive()
                received[0] += 1
        except trio_ws.ConnectionClosed:
            pass
        finally:
            handler_done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler, options=_queue_options()) as server:
            async with (
                trio_ws.open_websocket(HOST, server.port, options=_queue_options()) as ws,
                trio.open_nursery() as nursery,
            ):
                sent, stopped = await _fill_until_stuck(ws, nursery)
                conn = server_side[0]
                assert not stopped.is_set(), "the sender should be blocked, not finished"
                # The server read only up to max_queue messages; the rest sits in buffers.
                await wait_until(lambda: conn._messages, "the server queued what it read")
                assert len(conn._messages) <= MAX_QUEUE
                # Bounded by max_queue + write_queue + socket buffers, not unbounded.
                assert sent[0] < SEND_LIMIT
                # The connection is still healthy: draining unblocks the sender.
                before = sent[0]
                release.set()
                await wait_until(lambda: sent[0] > before + 3, "the sender goes on")
                nursery.cancel_scope.cancel()
            with trio.fail_after(5):
                await handler_done.wait()
    assert received[0] >= before + 3


@bounded
async def test_backpressure_with_small_messages_bounds_memory() -> None:
    """With messages smaller than a socket read, the queue may pass max_queue by one read.

    The reader stops before the next read, so the bytes held stay bounded by max_queue
    messages plus one read (at most ``_MAX_READ_SIZE``).
    """
    server_side: list[trio_ws.WebSocketConnection] = []
    message = os.urandom(16 * 1024)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await trio.sleep_forever()

    # Short: the handler never reads, so closing waits for the timeouts.
    options = _queue_options(close_timeout=0.5)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler, options=options) as server,
            trio_ws.open_websocket(HOST, server.port, options=options) as ws,
        ):
            sent = [0]
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    while sent[0] < 100 * 1024 * 1024 // len(message):  # no queue holds 100 MiB
                        await ws.send(message)
                        sent[0] += 1

                nursery.start_soon(sender)
                await wait_stalled()
                queued = server_side[0]._messages
                # Items are whole messages, or pieces of one split across reads.
                held = sum(len(getattr(m, "data", m)) for m in queued)
                assert held <= MAX_QUEUE * len(message) + _MAX_READ_SIZE, (len(queued), held)
                nursery.cancel_scope.cancel()


@bounded
async def test_client_close_completes_while_server_queue_full() -> None:
    """The client closes while its own queue is full behind a server that does not read.

    The server's handler then closes too: both closing handshakes go through promptly,
    well before any close_timeout.
    """
    server_side: list[trio_ws.WebSocketConnection] = []
    release = trio.Event()
    handler_done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await release.wait()
        await ws.aclose(4004, "server closing too")
        handler_done.set()

    options = _queue_options(close_timeout=8.0)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler, options=options) as server:
            async with trio_ws.open_websocket(HOST, server.port, options=options) as ws:
                async with trio.open_nursery() as nursery:
                    _, stopped = await _fill_until_stuck(ws, nursery)
                    assert len(server_side[0]._messages) <= MAX_QUEUE
                    start = trio.current_time()
                    async with trio.open_nursery() as closers:
                        closers.start_soon(ws.aclose, 4003, "client bye")
                        await wait_stalled()  # the close is under way, stuck behind the queue
                        release.set()
                    elapsed = trio.current_time() - start
                    assert ws.closed
                    await stopped.wait()  # the blocked sender got ConnectionClosed
                assert elapsed < 3.0, f"close took {elapsed:.1f} s"
            with trio.fail_after(3):
                await handler_done.wait()
    assert server_side[0].closed


@bounded
async def test_client_close_bounded_while_server_never_reads() -> None:
    """Closing behind a peer that never reads gives up after close_timeout, not never."""
    server_side: list[trio_ws.WebSocketConnection] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await trio.sleep_forever()

    # The server's close_timeout also bounds its shutdown wait for this never-ending handler.
    options = _queue_options(close_timeout=1.0)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler, options=options) as server:
            async with (
                trio_ws.open_websocket(HOST, server.port, options=options) as ws,
                trio.open_nursery() as nursery,
            ):
                _, stopped = await _fill_until_stuck(ws, nursery)
                start = trio.current_time()
                await ws.aclose(4003, "client bye")
                elapsed = trio.current_time() - start
                assert ws.closed
                await stopped.wait()
            assert elapsed < 1.0 + 2.0, f"close took {elapsed:.1f} s"
            assert len(server_side[0]._messages) <= MAX_QUEUE


@bounded
async def test_server_close_completes_while_its_queue_full() -> None:
    server_side: list[trio_ws.WebSocketConnection] = []
    release = trio.Event()
    close_time: list[float] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        server_side.append(ws)
        await release.wait()
        start = trio.current_time()
        await ws.aclose(4005, "server full")
        close_time.append(trio.current_time() - start)

    options = _queue_options(close_timeout=8.0)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler, options=options) as server:
            async with trio_ws.open_websocket(HOST, server.port, options=options) as ws:
                async with trio.open_nursery() as nursery:
                    _, stopped = await _fill_until_stuck(ws, nursery)
                    conn = server_side[0]
                    await wait_until(lambda: conn._messages, "the server queued what it read")
                    assert len(conn._messages) <= MAX_QUEUE
                    release.set()
                    with trio.fail_after(3):
                        await stopped.wait()
                with trio.fail_after(3):
                    with pytest.raises(trio_ws.ConnectionClosed) as info:
                        await ws.receive()
                assert (info.value.code, info.value.reason) == (4005, "server full")
            await wait_until(lambda: close_time, "the handler's close returns")
    assert close_time[0] < 3.0
    assert server_side[0].close_code == 4005


# Protocol errors on the wire ----------------------------------------------------------------


@bounded
async def test_unmasked_frame_gets_close_1002() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake()
                await raw.send_frame(Opcode.TEXT, b"hello", masked=False)
                code, _ = await raw.read_close()
                assert code == 1002
                # After its close frame the server closes the TCP connection.
                assert await raw.read_until_eof() == b""
            finally:
                await raw.aclose()
            await assert_still_serving(server.port)


@bounded
async def test_invalid_utf8_gets_close_1007() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake()
                await raw.send_frame(Opcode.TEXT, b"valid")
                frame = await raw.read_frame()
                assert frame is not None
                assert (frame[0].opcode, frame[1]) == (Opcode.TEXT, b"valid")
                await raw.send_frame(Opcode.TEXT, b"bad \xff\xfe utf-8")
                code, _ = await raw.read_close()
                assert code == 1007
            finally:
                await raw.aclose()
            await assert_still_serving(server.port)


@bounded
async def test_invalid_utf8_after_valid_message_in_same_packet() -> None:
    """The message before the violation is delivered (and echoed) before the 1007 close."""
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake()
                mask = b"\x01\x02\x03\x04"
                await raw.send(
                    encode_frame(Opcode.TEXT, b"first", mask=mask)
                    + encode_frame(Opcode.TEXT, b"\xc3\x28", mask=mask)
                )
                frame = await raw.read_frame()
                assert frame is not None
                assert (frame[0].opcode, frame[1]) == (Opcode.TEXT, b"first")
                code, _ = await raw.read_close()
                assert code == 1007
            finally:
                await raw.aclose()


@bounded
async def test_oversized_frame_header_gets_close_1009() -> None:
    options = trio_ws.WebSocketOptions(max_message_size=1024)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler, options=options) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake()
                # Only the header of a 1 MiB frame: the server must not wait for the payload.
                frame = encode_frame(Opcode.BINARY, bytes(1 << 20), mask=b"abcd")
                await raw.send(frame[: 2 + 8 + 4])
                with trio.fail_after(3):
                    code, _ = await raw.read_close()
                assert code == 1009
            finally:
                await raw.aclose()
            await assert_still_serving(server.port)


@bounded
async def test_oversized_fragmented_message_gets_close_1009() -> None:
    options = trio_ws.WebSocketOptions(max_message_size=1024)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler, options=options) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake()
                await raw.send_frame(Opcode.BINARY, b"a" * 700, fin=False)
                await raw.send_frame(Opcode.CONTINUATION, b"b" * 700, fin=True)
                with trio.fail_after(3):
                    code, _ = await raw.read_close()
                assert code == 1009
            finally:
                await raw.aclose()


@bounded
async def test_raw_clean_close_and_ping() -> None:
    """The server answers a ping with the same payload and echoes a client's close code."""
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.handshake("/raw?x=1")
                await raw.send_frame(Opcode.PING, b"are you there")
                frame = await raw.read_frame()
                assert frame is not None
                assert (frame[0].opcode, frame[1]) == (Opcode.PONG, b"are you there")
                await raw.send_frame(Opcode.CLOSE, struct.pack("!H", 4321) + b"raw bye")
                assert await raw.read_close() == (4321, "")
                assert await raw.read_until_eof() == b""
            finally:
                await raw.aclose()


# Regressions ---------------------------------------------------------------------------------
# Faults of the connection layer (trio_ws/_trio/_websocket.py, _outbox.py) found by
# attacking receive-driven reading, each a minimal reproduction that failed before its fix.
# Each docstring says what used to go wrong.
#
# Every test is bounded (``bounded``); sleeps are only used where the scenario is "the
# application does something else for a while", never to wait for the library.


#: No keepalive unless a test asks for it; short close timeouts so that a failure is quick.
QUIET = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=2)


@asynccontextmanager
async def tcp_pair(
    options: trio_ws.WebSocketOptions = QUIET,
    client_options: trio_ws.WebSocketOptions | None = None,
) -> AsyncIterator[tuple[trio_ws.WebSocketConnection, trio_ws.WebSocketConnection]]:
    """(server_ws, client_ws) over 127.0.0.1 TCP: the receive-driven (inline) reading path."""
    accepted: list[trio_ws.WebSocketConnection] = []
    ready = trio.Event()
    finished = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        accepted.append(await request.accept())
        ready.set()
        await finished.wait()

    async with running_server(handler, options=options) as server:
        try:
            async with trio_ws.open_websocket(
                HOST, server.port, "/", options=client_options or options
            ) as client:
                await ready.wait()
                yield accepted[0], client
        finally:
            finished.set()


# 1. A receive() that is cancelled leaves nobody reading the socket (plain TCP only) ----------


@bounded
async def test_cancelled_receive_leaves_pings_unanswered() -> None:
    """The everyday "receive with a timeout" pattern: after it times out and the handler does
    something else, the connection must still answer the peer's pings (as it does when the
    handler never called receive(), and as it does over TLS and memory streams)."""
    async with tcp_pair() as (server_ws, client_ws):
        with trio.move_on_after(0.3):
            await server_ws.receive()  # times out: nothing was sent
        # The server application now does something else (not receiving). The connection's
        # task takes the reading back on a timer (0.1 to 0.2 s), so this waits for the pong;
        # 2 s is ten times that, and a connection nobody reads never answers.
        with trio.move_on_after(2) as pong_wait:
            await client_ws.ping()
        assert not pong_wait.cancelled_caught, "no pong in 2 s: nobody reads the server socket"


@bounded
async def test_cancelled_receive_makes_keepalive_kill_a_healthy_connection() -> None:
    """Server keepalive 1 s / 1 s, healthy trio_ws client. The handler waits up to 0.3 s for
    a command, then works 3.5 s before sending its result. Observed: the server closes the
    connection with 1011 "keepalive ping timeout" (it never reads the client's pongs)."""
    done: list[str] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with trio.move_on_after(0.3):
            await ws.receive()
        await trio.sleep(3.5)  # the application's own work, not a synchronisation
        await ws.send("work done")
        done.append("sent")

    server_options = trio_ws.WebSocketOptions(ping_interval=1, ping_timeout=1, close_timeout=2)
    async with running_server(handler, options=server_options) as server:
        async with trio_ws.open_websocket(HOST, server.port, "/", options=QUIET) as ws:
            try:
                assert await ws.receive() == "work done"
            except trio_ws.ConnectionClosed as exc:
                pytest.fail(f"healthy connection killed: {exc.code} {exc.reason}")


@bounded
async def test_client_cancelled_receive_makes_server_keepalive_kill_it() -> None:
    """Same on the client side: after a receive() timeout the client only sends. The server's
    keepalive pings are never read by the client, so the server closes with 1011, and the
    client does not even notice: its later sends vanish without an exception."""
    got: list[str] = []
    closed: list[tuple[int, str]] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            async for message in ws:
                got.append(message)  # type: ignore[arg-type]
        except trio_ws.ConnectionClosed as exc:
            closed.append((exc.code, exc.reason))

    server_options = trio_ws.WebSocketOptions(ping_interval=1, ping_timeout=1, close_timeout=2)
    async with running_server(handler, options=server_options) as server:
        async with trio_ws.open_websocket(HOST, server.port, "/", options=QUIET) as ws:
            with trio.move_on_after(0.3):
                await ws.receive()
            for i in range(7):
                await trio.sleep(0.5)  # a client that reports every 0.5 s
                await ws.send(f"tick {i}")
        await wait_until(lambda: closed or len(got) == 7, "all ticks or a close")
    assert closed == [] and got == [f"tick {i}" for i in range(7)], (closed, got)


@bounded
async def test_cancelled_inline_reader_strands_the_other_receiver() -> None:
    """Task A receives (and so reads the socket itself), task B receives behind it. A times
    out. B must get the next message; observed: nobody reads, B waits forever."""
    async with tcp_pair() as (server_ws, client_ws):
        got: list[str | bytes] = []

        a_timed_out = trio.Event()

        async def a() -> None:
            with trio.move_on_after(0.3):  # the timeout is the scenario
                await server_ws.receive()
            a_timed_out.set()

        async def b() -> None:
            got.append(await server_ws.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(a)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(b)
            await a_timed_out.wait()
            await client_ws.send("hello")
            await wait_stalled()  # B has the message, or nobody reads and everything waits
            nursery.cancel_scope.cancel()
        assert got == ["hello"]


# 2. ping() after the connection is over ----------------------------------------------------


@bounded
async def test_ping_after_open_websocket_block_raises_connection_closed() -> None:
    """Every call on a closed connection raises ConnectionClosed (class docstring); ping()
    raises RuntimeError("Nursery is closed to new arrivals"), without a checkpoint."""

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        async for _ in ws:
            pass

    async with running_server(handler, options=QUIET) as server:
        async with trio_ws.open_websocket(HOST, server.port, "/", options=QUIET) as ws:
            pass
        with pytest.raises(trio_ws.ConnectionClosed):
            await ws.ping()


# 3. Data frames of another message inside a fragmented send --------------------------------


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "deflate"])
@bounded
async def test_room_broadcast_during_fragmented_send(compression: bool) -> None:
    """A member is sending a message in fragments when the room broadcasts. Without
    compression the broadcast frame goes out between the fragments (the client fails the
    connection with 1002); with context-takeover compression broadcast() raises
    LocalProtocolError at the broadcaster (and skips the remaining members)."""
    options = trio_ws.WebSocketOptions(
        ping_interval=None,
        close_timeout=2,
        compression=trio_ws.PerMessageDeflate() if compression else None,
    )
    room = trio_ws.Room()
    errors: list[BaseException] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        room.add(ws)
        halfway = trio.Event()
        resume = trio.Event()

        async def fragments() -> AsyncIterator[str]:
            yield "part1-"
            halfway.set()
            await resume.wait()
            yield "part2"

        async def broadcaster() -> None:
            await halfway.wait()
            try:
                room.broadcast("BROADCAST")
            except Exception as exc:
                errors.append(exc)
            resume.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(broadcaster)
            await ws.send(fragments())
        async for _ in ws:
            pass

    received: list[str | bytes] = []
    async with running_server(handler, options=options) as server:
        async with trio_ws.open_websocket(HOST, server.port, "/", options=options) as ws:

            async def receive_all() -> None:
                while True:
                    received.append(await ws.receive())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_all)
                await wait_stalled()  # everything sent has arrived
                nursery.cancel_scope.cancel()
    assert errors == []
    assert sorted(received) == ["BROADCAST", "part1-part2"]


@bounded
async def test_whole_send_waiting_for_room_meets_a_fragmented_send() -> None:
    """Task W's send() waits for room in the outbox; task F starts a fragmented send. When
    room frees, if F's first fragment goes first (Trio runs the woken tasks in either order),
    W's send raises LocalProtocolError("a fragmented message is being sent") instead of
    waiting for the fragmented message to finish. Repeated: each run fails about half the
    time."""
    payload = os.urandom(65536)  # incompressible
    options = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=2, write_queue=1)
    errors: list[BaseException] = []
    for _ in range(12):
        async with tcp_pair(options) as (server_ws, client_ws):

            async def whole() -> None:
                try:
                    for _ in range(40):
                        await server_ws.send(payload)
                except Exception as exc:
                    errors.append(exc)

            async def fragmented() -> None:
                try:
                    await server_ws.send(["f" * 10, "g"])
                except Exception as exc:
                    errors.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(whole)
                await wait_until(lambda: server_ws.outbox.full, "W is about to wait for room")
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(fragmented)
                await trio.testing.wait_all_tasks_blocked()
                # All 41 messages, unless a send failed (then the check below says which).
                with trio.move_on_after(3):
                    for _ in range(41):
                        await client_ws.receive()
        if errors:
            break
    assert errors == []


# 4. receive_stream() ---------------------------------------------------------------------------


@bounded
async def test_abandoned_receive_stream_turns_its_tail_into_a_message() -> None:
    """A consumer stops reading a message's pieces (break, or a timeout around the loop).
    The next receive() returns the rest of that message as if it were a message of its own
    ("BBBCCC" here); expected: the next whole message ("second"), or an error."""
    async with tcp_pair() as (server_ws, client_ws):
        await client_ws.send(["AAA", "BBB", "CCC"])
        await client_ws.send("second")
        async for piece in server_ws.receive_stream():
            assert piece == "AAA"
            break
        assert await server_ws.receive() == "second"


@bounded
async def test_receive_stream_end_is_not_a_checkpoint() -> None:
    """The __anext__ that ends receive_stream() of a one-frame message (the common case)
    raises StopAsyncIteration without a checkpoint."""
    async with tcp_pair() as (server_ws, client_ws):
        await client_ws.send("whole")
        stream = server_ws.receive_stream().__aiter__()
        assert await stream.__anext__() == "whole"
        with trio.testing.assert_checkpoints():
            with pytest.raises(StopAsyncIteration):
                await stream.__anext__()


@bounded
async def test_receive_stream_after_cancelled_receive_is_not_a_checkpoint() -> None:
    """receive() cancelled halfway through a fragmented message keeps its pieces; the
    receive_stream() that follows yields them without a checkpoint."""
    async with tcp_pair() as (server_ws, client_ws):
        resume = trio.Event()

        async def slow_fragments() -> AsyncIterator[str]:
            yield "A"
            await resume.wait()
            yield "B"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(client_ws.send, slow_fragments())
            with trio.move_on_after(0.3):
                await server_ws.receive()  # takes "A", then waits for "B": cancelled
            stream = server_ws.receive_stream().__aiter__()
            with trio.testing.assert_checkpoints():
                assert await stream.__anext__() == "A"
            resume.set()
            assert [piece async for piece in stream] == ["B"]


# 5. A send() blocked on a full outbox outlives the peer's close ------------------------------


@bounded
async def test_blocked_send_raises_promptly_once_the_peer_closed() -> None:
    """The peer does not read, so the handler's send() waits for room; then the peer's close
    frame arrives (the connection is CLOSED). send() keeps waiting until close_timeout (3 s
    here, 10 s by default) before it raises ConnectionClosed."""
    raised: list[float] = []
    options = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=3)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send(os.urandom(65536))
        except trio_ws.ConnectionClosed:
            raised.append(trio.current_time())

    async with running_server(handler, options=options) as server:
        peer = await RawPeer.connect(server.port)
        await peer.handshake()
        try:
            await wait_until(
                lambda: any(conn.outbox.full for conn in server.connections), "a full outbox"
            )
            # The socket buffers fill up completely (the writer is then stuck in send_all), as
            # they are once a peer has stopped reading for a while.
            await wait_stalled()
            await peer.send_frame(Opcode.CLOSE, struct.pack("!H", 1000))
            # Everything the close frame causes happens; the close_timeout (3 s) does not pass.
            await wait_stalled()
            assert raised, "send() still waits although the peer closed"
        finally:
            await peer.aclose()


# 6. The close code a send() reports while our own close is under way -------------------------


@bounded
async def test_send_while_closing_normally_reports_1006() -> None:
    """After close_nowait(1000) (or while aclose(1000) runs in another task), send() raises
    ConnectionClosed with code 1006 ("abnormal closure", documented as "no close frame came")
    while receive() raises 1000 and close_code ends up 1000. Expected: the code of the close
    that is under way (1000), not 1006."""
    async with tcp_pair() as (server_ws, _client_ws):
        server_ws.close_nowait(1000, "done")
        with pytest.raises(trio_ws.ConnectionClosed) as sent:
            await server_ws.send("x")
        assert sent.value.code == 1000


# Streaming both ways: send a message from an iterable of fragments, receive piece by piece --------


BIG = trio_ws.WebSocketOptions(max_message_size=None, ping_interval=None)


async def stream_echo(request: trio_ws.WebSocketRequest) -> None:
    """Report how many pieces each message came in, then echo it in those pieces."""
    ws = await request.accept()
    while True:
        pieces = [piece async for piece in ws.receive_stream()]
        await ws.send(f"{len(pieces)} {sum(len(p) for p in pieces)}")
        await ws.send(pieces)


async def test_large_message_arrives_in_pieces_without_being_joined() -> None:
    data = os.urandom(3 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                stream_echo, "127.0.0.1", 0, options=BIG, task_status=task_status
            )
        )
        with trio.fail_after(20):
            async with trio_ws.open_websocket("127.0.0.1", server.port, "/", options=BIG) as ws:
                await ws.send(data)
                count, size = map(int, str(await ws.receive()).split())
                assert size == len(data)
                assert count > 1  # handed out as it arrived, not as one 3 MiB piece
                # The echo comes back fragmented; receive() joins it, receive_stream() not.
                assert await ws.receive() == data
        nursery.cancel_scope.cancel()


async def test_send_from_sync_and_async_iterables() -> None:
    async def words() -> AsyncIterator[str]:
        for word in ("héllo ", "wörld"):
            yield word

    with trio.fail_after(5):
        async with open_memory_pair(stream_echo, options=BIG) as ws:
            await ws.send(words())
            assert await ws.receive() == "2 11"  # the empty final frame is not a piece
            assert await ws.receive() == "héllo wörld"
            await ws.send([b"\x00", b"\x01\x02"])
            assert await ws.receive() == "2 3"
            assert [p async for p in ws.receive_stream()] == [b"\x00", b"\x01\x02"]
            await ws.send("whole")
            assert await ws.receive() == "1 5"
            assert [p async for p in ws.receive_stream()] == ["whole"]


async def test_a_whole_message_waits_for_a_fragmented_one() -> None:
    release = trio.Event()

    async def slow() -> AsyncIterator[str]:
        yield "a"
        await release.wait()
        yield "b"

    with trio.fail_after(5):
        async with open_memory_pair(stream_echo, options=BIG) as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.send, slow())
                await trio.testing.wait_all_tasks_blocked()  # "a" sent, "b" waits
                nursery.start_soon(ws.send, "after")
                await trio.testing.wait_all_tasks_blocked()  # "after" waits behind it
                release.set()
            received = [await ws.receive() for _ in range(4)]
            assert received == ["2 2", "ab", "1 5", "after"]


async def test_a_fragmented_send_that_fails_midway_closes_with_1011() -> None:
    """Mixed fragment types: the message cannot be finished, so the connection closes."""
    with trio.fail_after(5):
        async with open_memory_server(stream_echo, options=BIG) as server:
            async with server.connect("/") as ws:
                with pytest.raises(TypeError):
                    await ws.send(["text", b"bytes"])  # type: ignore[list-item]
                with pytest.raises(trio_ws.ConnectionClosed) as closed:
                    await ws.receive()
                assert closed.value.code == 1011
