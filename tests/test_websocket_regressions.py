"""Regression tests for the connection layer (trio_ws/_websocket.py, _outbox.py): faults
found by attacking receive-driven reading, each a minimal reproduction that failed before
its fix. Each docstring says what used to go wrong.

Every test is bounded (``bounded``); sleeps are only used where the scenario is "the
application does something else for a while", never to wait for the library.
"""

from __future__ import annotations

import os
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from helpers import HOST, RawPeer, bounded, running_server

import trio_ws
from trio_ws.protocol._frames import Opcode

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
        # The server application now does something else (not receiving).
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
        with trio.fail_after(3):
            while not closed and len(got) < 7:
                await trio.sleep(0.05)
    assert closed == [] and got == [f"tick {i}" for i in range(7)], (closed, got)


@bounded
async def test_cancelled_inline_reader_strands_the_other_receiver() -> None:
    """Task A receives (and so reads the socket itself), task B receives behind it. A times
    out. B must get the next message; observed: nobody reads, B waits forever."""
    async with tcp_pair() as (server_ws, client_ws):
        got: list[str | bytes] = []

        async def a() -> None:
            with trio.move_on_after(0.3):
                await server_ws.receive()

        async def b() -> None:
            got.append(await server_ws.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(a)
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(b)
            await trio.sleep(0.5)  # A has timed out by now
            await client_ws.send("hello")
            with trio.move_on_after(2):
                while not got:
                    await trio.sleep(0.02)
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
            with trio.move_on_after(2):
                while len(received) < 2:
                    received.append(await ws.receive())
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
                while not server_ws.outbox.full:  # W is about to wait for room
                    await trio.sleep(0.01)
                await trio.testing.wait_all_tasks_blocked()
                nursery.start_soon(fragmented)
                await trio.testing.wait_all_tasks_blocked()
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
            conn = None
            while conn is None or not conn.outbox.full:
                await trio.sleep(0.02)
                conn = next(iter(server.connections), None)
            # Deliberate timing: let the socket buffers fill up completely (the writer is then
            # stuck in send_all), as they are once a peer has stopped reading for a while.
            await trio.sleep(0.5)
            await trio.testing.wait_all_tasks_blocked()
            closed_at = trio.current_time()
            await peer.send_frame(Opcode.CLOSE, struct.pack("!H", 1000))
            with trio.fail_after(5):
                while not raised:
                    await trio.sleep(0.02)
            assert raised[0] - closed_at < 1.0, f"send() raised {raised[0] - closed_at:.2f} s late"
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
