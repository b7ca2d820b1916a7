"""Integration tests: trio_ws clients against trio_ws servers over real loopback sockets.

Every test runs on 127.0.0.1 with small, bounded counts, under ``trio.fail_after`` so that a
regression fails instead of hanging. Raw-socket tests (``helpers.RawClient``) check what goes
on the wire when a peer misbehaves: a close frame with the right code (RFC 6455 section 7.4)
or the right HTTP status during the opening handshake (section 4.2.2).
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import (
    BIG_LIMIT,
    BIG_SIZE,
    EDGE_SIZES,
    HOST,
    TEST_TIMEOUT,
    RawClient,
    RawPeer,
    bounded,
    capture,
    echo_handler,
    free_port,
    payload,
    raw_server,
    running_server,
    tls_contexts,
)

import trio_ws
from trio_ws._trio._receiving import _MAX_READ_SIZE
from trio_ws.protocol._frames import Opcode, encode_frame

REPO = Path(__file__).resolve().parent.parent


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task currently alive in this Trio run."""
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
async def test_many_clients_concurrently() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:

            async def client(i: int) -> None:
                async with trio_ws.open_websocket(HOST, server.port, f"/{i}") as ws:
                    for j in range(5):
                        await ws.send(f"{i}-{j}")
                        assert await ws.receive() == f"{i}-{j}"

            async with trio.open_nursery() as nursery:
                for i in range(10):
                    nursery.start_soon(client, i)


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


# Opening handshake details ------------------------------------------------------------------


@bounded
async def test_request_details_subprotocol_and_headers() -> None:
    seen: dict[str, object] = {}

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen["path"] = request.path
        seen["query"] = request.query
        seen["custom"] = request.headers.get("x-custom")
        seen["host"] = request.headers["host"]
        seen["subprotocols"] = request.subprotocols
        seen["remote"] = request.remote
        ws = await request.accept(subprotocol="chat.v2", extra_headers=[("X-Server", "yes")])
        seen["server_subprotocol"] = ws.subprotocol
        seen["server_path"] = ws.path
        seen["server_remote"] = ws.remote
        await echo_handler_loop(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            port = server.port
            async with trio_ws.open_websocket(
                HOST,
                port,
                "/chat%20room/x?a=1&b=two",
                subprotocols=["chat.v1", "chat.v2"],
                extra_headers=[("X-Custom", "hello")],
            ) as ws:
                assert ws.subprotocol == "chat.v2"
                assert ws.response_headers["x-server"] == "yes"
                assert ws.request_headers["x-custom"] == "hello"
                # On both sides path is percent-decoded; the target is as sent.
                assert ws.path == "/chat room/x"
                assert ws.request.target == "/chat%20room/x?a=1&b=two"
                assert ws.remote == (HOST, port)
                local = ws.local
                await ws.send("hi")
                assert await ws.receive() == "hi"
    assert seen["path"] == "/chat room/x"
    assert seen["query"] == "a=1&b=two"
    assert seen["custom"] == "hello"
    assert seen["host"] == f"{HOST}:{port}"
    assert seen["subprotocols"] == ("chat.v1", "chat.v2")
    assert seen["server_subprotocol"] == "chat.v2"
    assert seen["server_path"] == "/chat room/x"
    assert seen["remote"] == local
    assert seen["server_remote"] == local


async def echo_handler_loop(ws: trio_ws.WebSocketConnection) -> None:
    async for message in ws:
        await ws.send(message)


@bounded
async def test_no_subprotocol_chosen() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        assert ws.subprotocol is None
        await echo_handler_loop(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            trio_ws.open_websocket(HOST, server.port, subprotocols=["a", "b"]) as ws,
        ):
            assert ws.subprotocol is None
            assert "sec-websocket-protocol" not in ws.response_headers


@bounded
async def test_reject_with_status_headers_and_body() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.reject(403, headers=[("X-Why", "no token")], body=b"go away")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with capture(trio_ws.HandshakeError) as raised:
                async with trio_ws.open_websocket(HOST, server.port):
                    pytest.fail("the handshake should have failed")
            # The server keeps serving after a rejection.
            with capture(trio_ws.HandshakeError) as again:
                async with trio_ws.open_websocket(HOST, server.port):
                    pass
    assert raised.leaf.status == 403
    assert raised.leaf.body == b"go away"
    assert ("x-why", "no token") in raised.leaf.headers
    assert again.leaf.status == 403
    raised.assert_bare(trio_ws.HandshakeError)


@bounded
async def test_reject_with_text_body() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.reject(404, body="nothing at \u00e9")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with capture(trio_ws.HandshakeError) as raised:
                async with trio_ws.open_websocket(HOST, server.port):
                    pass
    assert raised.leaf.status == 404
    assert raised.leaf.body == "nothing at \u00e9".encode()
    assert dict(raised.leaf.headers)["content-type"].startswith("text/plain")
    raised.assert_bare(trio_ws.HandshakeError)


@bounded
async def test_handler_returning_without_answer_is_403() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        return

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with capture(trio_ws.HandshakeError) as raised:
                async with trio_ws.open_websocket(HOST, server.port):
                    pass
    assert raised.leaf.status == 403
    raised.assert_bare(trio_ws.HandshakeError)


@bounded
async def test_open_websocket_url() -> None:
    paths: list[tuple[str, str]] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        paths.append((request.path, request.query))
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            url = f"ws://{HOST}:{server.port}/feed?since=5"
            async with trio_ws.open_websocket_url(url) as ws:
                await ws.send(b"\x00\x01")
                assert await ws.receive() == b"\x00\x01"
    assert paths == [("/feed", "since=5")]


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

    async def script(peer: RawPeer) -> None:
        frame = await peer.read_frame()
        assert frame is not None
        assert frame[0].opcode is Opcode.PING
        pings.append(frame[1])
        await peer.send_frame(Opcode.PONG, b"unsolicited")
        await trio.sleep(0.3)
        await peer.send_frame(Opcode.PONG, frame[1])

    with trio.fail_after(TEST_TIMEOUT):
        async with raw_server(script) as port, trio_ws.open_websocket(HOST, port) as ws:
            start = trio.current_time()
            await ws.ping(b"mine")
            elapsed = trio.current_time() - start
    assert pings == [b"mine"]
    assert elapsed >= 0.25


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


# Handler failures ---------------------------------------------------------------------------


@bounded
async def test_failing_handler_closes_1011_and_others_keep_working(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="trio_ws")

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        if request.path == "/boom":
            ws = await request.accept()
            await ws.receive()
            raise RuntimeError("boom in handler")
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with trio_ws.open_websocket(HOST, server.port, "/ok") as good:
                await good.send("before")
                assert await good.receive() == "before"
                async with trio_ws.open_websocket(HOST, server.port, "/boom") as bad:
                    await bad.send("trigger")
                    with pytest.raises(trio_ws.ConnectionClosed) as info:
                        await bad.receive()
                    assert info.value.code == 1011
                    assert bad.close_code == 1011
                # The other, concurrent connection is unaffected.
                await good.send("after")
                assert await good.receive() == "after"
            # And new connections are still accepted.
            async with trio_ws.open_websocket(HOST, server.port, "/ok") as again:
                await again.send("new")
                assert await again.receive() == "new"
    failures = [r for r in caplog.records if r.name == "trio_ws" and r.levelno >= logging.ERROR]
    assert len(failures) == 1
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)
    assert "/boom" in failures[0].getMessage()


@bounded
async def test_handler_raising_before_accept_is_500(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="trio_ws")

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        if request.path == "/early":
            raise ValueError("refused early")
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with capture(trio_ws.HandshakeError) as raised:
                async with trio_ws.open_websocket(HOST, server.port, "/early"):
                    pass
            async with trio_ws.open_websocket(HOST, server.port, "/fine") as ws:
                await ws.send("still here")
                assert await ws.receive() == "still here"
    assert raised.leaf.status == 500
    assert any(
        r.exc_info is not None and isinstance(r.exc_info[1], ValueError) for r in caplog.records
    )
    raised.assert_bare(trio_ws.HandshakeError)


# Backpressure -------------------------------------------------------------------------------

MAX_QUEUE = 2
# Incompressible and larger than one socket read, so that a read adds at most one message.
BIG_MESSAGE = os.urandom(512 * 1024)


async def _fill_until_stuck(
    ws: trio_ws.WebSocketConnection, nursery: trio.Nursery
) -> tuple[list[int], trio.Event]:
    """Start a task sending BIG_MESSAGE until it fails; return once no send completed for 0.5 s."""
    sent = [0]
    stopped = trio.Event()

    async def sender() -> None:
        try:
            while True:
                await ws.send(BIG_MESSAGE)
                sent[0] += 1
        except trio_ws.ConnectionClosed:
            pass
        finally:
            stopped.set()

    nursery.start_soon(sender)
    last = -1
    while sent[0] != last:
        last = sent[0]
        await trio.sleep(0.5)
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
                assert 1 <= len(conn._messages) <= MAX_QUEUE
                # Bounded by max_queue + write_queue + socket buffers, not unbounded.
                assert sent[0] < 200
                # The connection is still healthy: draining unblocks the sender.
                before = sent[0]
                release.set()
                with trio.fail_after(5):
                    while sent[0] <= before + 3:
                        await trio.sleep(0.01)
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
                    while True:
                        await ws.send(message)
                        sent[0] += 1

                nursery.start_soon(sender)
                last = -1
                while sent[0] != last:
                    last = sent[0]
                    await trio.sleep(0.5)
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
                        await trio.sleep(0.1)
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
                    assert 1 <= len(server_side[0]._messages) <= MAX_QUEUE
                    release.set()
                    with trio.fail_after(3):
                        await stopped.wait()
                with trio.fail_after(3):
                    with pytest.raises(trio_ws.ConnectionClosed) as info:
                        await ws.receive()
                assert (info.value.code, info.value.reason) == (4005, "server full")
            with trio.fail_after(3):
                while not close_time:
                    await trio.sleep(0.01)
    assert close_time[0] < 3.0
    assert server_side[0].close_code == 4005


# Cancellation and shutdown ------------------------------------------------------------------


@bounded(timeout=6)
async def test_cancelled_client_block_closes_with_1001() -> None:
    seen: list[int] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.send(await ws.receive())
        except trio_ws.ConnectionClosed as exc:
            seen.append(exc.code)
        finally:
            done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with trio.CancelScope() as scope:
                async with trio_ws.open_websocket(HOST, server.port) as ws:
                    await ws.send("x")
                    assert await ws.receive() == "x"
                    scope.cancel()
                    await trio.sleep_forever()
            assert scope.cancelled_caught
            assert ws.closed
            with trio.fail_after(2):
                await done.wait()
    assert seen == [1001]


@bounded
async def test_exception_in_client_block_closes_with_1011() -> None:
    seen: list[int] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            seen.append(exc.code)
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with capture(KeyError) as raised:
                async with trio_ws.open_websocket(HOST, server.port):
                    raise KeyError("client bug")
            with trio.fail_after(2):
                await done.wait()
    assert seen == [1011]
    # The application's own exception comes out of the block unchanged.
    raised.assert_bare(KeyError)


@bounded
async def test_cancelling_server_nursery_closes_everything() -> None:
    before = all_tasks()
    closed = trio.Event()
    echoed = trio.Event()
    codes: list[int] = []

    async def client(port: int) -> None:
        async with trio_ws.open_websocket(HOST, port) as ws:
            await ws.send("x")
            assert await ws.receive() == "x"
            echoed.set()
            try:
                await ws.receive()
            except trio_ws.ConnectionClosed as exc:
                codes.append(exc.code)
            closed.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as clients:
            with trio.fail_after(3):
                async with trio.open_nursery() as servers:
                    server = await servers.start(trio_ws.serve_websocket, echo_handler, HOST, 0)
                    port = server.port
                    clients.start_soon(client, port)
                    await echoed.wait()
                    assert len(server.connections) == 1
                    servers.cancel_scope.cancel()
            with trio.fail_after(3):
                await closed.wait()
        # The listening socket is closed: nobody accepts any more.
        with pytest.raises(OSError):
            await trio.open_tcp_stream(HOST, port)
    # Going away (section 7.4.1): the server told the client it shut down.
    assert codes == [1001]
    assert all_tasks() == before


@bounded
async def test_server_aclose_stops_serving() -> None:
    before = all_tasks()
    closed = trio.Event()

    async def client(port: int) -> None:
        async with trio_ws.open_websocket(HOST, port) as ws:
            with pytest.raises(trio_ws.ConnectionClosed):
                while True:
                    await ws.send("x")
                    await ws.receive()
        closed.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve_websocket, echo_handler, HOST, 0)
            nursery.start_soon(client, server.port)
            while not server.connections:
                await trio.sleep(0.01)
            with trio.fail_after(3):
                await server.aclose()
            with trio.fail_after(3):
                await closed.wait()
    assert all_tasks() == before


@bounded(timeout=6)
async def test_server_aclose_right_after_start() -> None:
    """Stopping a server at once, before its listener tasks ran, must not hang."""
    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve_websocket, echo_handler, HOST, 0)
            with trio.fail_after(3):
                await server.aclose()


@bounded(timeout=6)
async def test_cancel_server_right_after_start() -> None:
    with trio.fail_after(TEST_TIMEOUT), trio.fail_after(3):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio_ws.serve_websocket, echo_handler, HOST, 0)
            nursery.cancel_scope.cancel()


@bounded
async def test_server_connections_tracks_open_connections() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            assert len(server.connections) == 0
            async with trio_ws.open_websocket(HOST, server.port) as a:
                await a.send("1")
                await a.receive()
                async with trio_ws.open_websocket(HOST, server.port) as b:
                    await b.send("2")
                    await b.receive()
                    assert len(server.connections) == 2
            with trio.fail_after(2):
                while server.connections:
                    await trio.sleep(0.01)


# Example, ports, TLS ------------------------------------------------------------------------


@bounded
async def test_echo_server_example_subprocess() -> None:
    port = free_port()
    script = REPO / "examples" / "echo_server.py"
    with trio.fail_after(TEST_TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script), "--host", HOST, "--port", str(port)],
            stdout=subprocess.DEVNULL,
        )
        try:
            while True:
                try:
                    stream = await trio.open_tcp_stream(HOST, port)
                except OSError:
                    assert process.poll() is None, "the example server exited"
                    await trio.sleep(0.05)
                    continue
                await stream.aclose()
                break
            async with trio_ws.open_websocket(HOST, port, "/anything") as ws:
                await ws.send("hello example")
                assert await ws.receive() == "hello example"
                await ws.send(b"\x00" * 70000)
                assert await ws.receive() == b"\x00" * 70000
        finally:
            process.terminate()
            with trio.move_on_after(5):
                await process.wait()
            if process.returncode is None:
                process.kill()
                await process.wait()


@bounded
async def test_port_zero_and_ports() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            assert server.ports
            assert all(0 < port < 65536 for port in server.ports)
            assert server.port == server.ports[0]
            for listener in server.listeners:
                sock = listener.socket  # type: ignore[attr-defined]
                assert sock.family == socket.AF_INET
                assert sock.getsockname()[0] == HOST
            for port in server.ports:
                async with trio_ws.open_websocket(HOST, port) as ws:
                    await ws.send("p")
                    assert await ws.receive() == "p"


@bounded
async def test_tls_round_trip() -> None:
    server_context, client_context = tls_contexts()
    remotes: list[object] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        remotes.append(request.remote)
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler, ssl_context=server_context) as server:
            assert server.port > 0
            async with trio_ws.open_websocket(
                HOST, server.port, "/secure", ssl_context=client_context
            ) as ws:
                assert isinstance(ws._stream, trio.SSLStream)
                assert ws.remote == (HOST, server.port)
                await ws.send("over tls")
                assert await ws.receive() == "over tls"
                await ws.send(payload("binary", 70000))
                assert await ws.receive() == payload("binary", 70000)
                await ws.ping()
            assert ws.close_code == 1000
            url = f"wss://{HOST}:{server.port}/url"
            async with trio_ws.open_websocket_url(url, ssl_context=client_context) as ws:
                await ws.send(b"url")
                assert await ws.receive() == b"url"
    assert remotes[0] is not None


@bounded
async def test_tls_failures_do_not_hurt_the_server() -> None:
    server_context, client_context = tls_contexts()
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler, ssl_context=server_context) as server:
            # A client that does not trust the CA fails the TLS handshake.
            with capture((trio.BrokenResourceError, ssl.SSLError)) as untrusted:
                async with trio_ws.open_websocket(
                    HOST, server.port, ssl_context=ssl.create_default_context()
                ):
                    pass
            # A plain-text client gets no WebSocket, and the server survives.
            with capture((trio_ws.HandshakeError, trio.BrokenResourceError)) as plain:
                async with trio_ws.open_websocket(HOST, server.port, connect_timeout=3):
                    pass
            async with trio_ws.open_websocket(HOST, server.port, ssl_context=client_context) as ws:
                await ws.send("still ok")
                assert await ws.receive() == "still ok"
    leaf = untrusted.leaf
    assert isinstance(leaf, ssl.SSLError) or isinstance(leaf.__cause__, ssl.SSLError)
    untrusted.assert_bare(type(leaf))
    plain.assert_bare(type(plain.leaf))


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
            await _assert_still_serving(server.port)


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
            await _assert_still_serving(server.port)


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
            await _assert_still_serving(server.port)


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
async def test_client_answers_oversized_server_message_with_1009() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send(b"x" * 5000)
        await echo_handler_loop(ws)

    client_options = trio_ws.WebSocketOptions(max_message_size=1000)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            trio_ws.open_websocket(HOST, server.port, options=client_options) as ws,
        ):
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
    assert info.value.code == 1009


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


# Bad handshakes ----------------------------------------------------------------------------


def _request(method: str = "GET", version: str = "13", extra: str = "") -> bytes:
    return (
        f"{method} / HTTP/1.1\r\n"
        f"Host: {HOST}\r\n"
        "Upgrade: websocket\r\n"
        "Connection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: {version}\r\n"
        f"{extra}"
        "\r\n"
    ).encode("latin-1")


async def _assert_still_serving(port: int) -> None:
    async with trio_ws.open_websocket(HOST, port) as ws:
        await ws.send("alive?")
        assert await ws.receive() == "alive?"


@pytest.mark.parametrize(
    ("data", "status", "header"),
    [
        (_request(version="12"), 426, ("sec-websocket-version", "13")),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, None),
        (_request(method="POST", extra="Content-Length: 0\r\n"), 405, ("allow", "GET")),
        (_request(extra="Sec-WebSocket-Key: c2Vjb25kIGtleSBoZXJlIQ==\r\n"), 400, None),
    ],
    ids=["version-12", "tls-client-hello", "post", "two-keys"],
)
@bounded
async def test_bad_handshake_status(
    data: bytes, status: int, header: tuple[str, str] | None
) -> None:
    handled: list[str] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        handled.append(request.path)
        await echo_handler(request)

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.send(data)
                with trio.fail_after(3):
                    got_status, headers, body = await raw.read_http_response()
                    # The server closes the connection after the error response.
                    assert await raw.read_until_eof() == b""
            finally:
                await raw.aclose()
            assert got_status == status
            if header is not None:
                assert headers[header[0]] == header[1]
            assert headers.get("connection", "").lower() == "close"
            assert len(body) == int(headers["content-length"])
            # The handler never saw the bad request, and a good client is still served.
            assert handled == []
            await _assert_still_serving(server.port)
            assert handled == ["/"]


@bounded
async def test_handshake_timeout_drops_silent_client() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler, handshake_timeout=0.3) as server:
            raw = await RawClient.connect(server.port)
            try:
                await raw.send(b"GET / HTTP/1.1\r\n")  # ...and nothing more
                with trio.fail_after(3):
                    await raw.read_until_eof()
            finally:
                await raw.aclose()
            await _assert_still_serving(server.port)


@bounded
async def test_frames_sent_with_the_handshake_are_not_lost() -> None:
    """Frames pipelined right behind the upgrade request reach the handler."""
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server:
            raw = await RawClient.connect(server.port)
            try:
                mask = b"wxyz"
                await raw.send(
                    _request()
                    + encode_frame(Opcode.TEXT, b"early 1", mask=mask)
                    + encode_frame(Opcode.BINARY, b"early 2", mask=mask)
                )
                status, _, _ = await raw.read_http_response()
                assert status == 101
                got = []
                for _ in range(2):
                    frame = await raw.read_frame()
                    assert frame is not None
                    got.append((frame[0].opcode, frame[1]))
                assert got == [(Opcode.TEXT, b"early 1"), (Opcode.BINARY, b"early 2")]
            finally:
                await raw.aclose()
