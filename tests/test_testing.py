"""trio_ws.testing: handlers served in memory through the real server and client code."""

from __future__ import annotations

import logging
import time
import traceback

import pytest
import trio
import trio.testing

import trio_ws
from trio_ws.testing import (
    memory_connection_pair,
    open_memory_pair,
    open_memory_server,
)

TIMEOUT = 10.0


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


async def test_echo_in_memory() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(echo) as ws:
            await ws.send("hello")
            assert await ws.receive() == "hello"
            await ws.send(b"\x00\xff")
            assert await ws.receive() == b"\x00\xff"
            assert ws.is_client
            assert ws.extensions == ["permessage-deflate"]
            assert ws.remote is None and ws.local is None  # no socket
        assert ws.close_code == 1000


async def test_the_handler_sees_the_request() -> None:
    seen: dict[str, object] = {}

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.update(
            path=request.path,
            query=request.query,
            token=request.headers.get("x-token"),
            remote=request.remote,
        )
        ws = await request.accept(subprotocol=request.subprotocols[-1])
        await ws.send(ws.subprotocol or "")

    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(
            handler,
            "/a%20b?x=1",
            subprotocols=["one", "two"],
            extra_headers=[("X-Token", "t")],
        ) as ws:
            assert await ws.receive() == "two"
            assert ws.subprotocol == "two"
    assert seen == {"path": "/a b", "query": "x=1", "token": "t", "remote": None}


async def test_options_apply_to_both_sides() -> None:
    plain = trio_ws.WebSocketOptions(compression=None, max_message_size=100)
    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(echo, options=plain) as ws:
            assert ws.extensions == []
            await ws.send("x" * 101)
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
        assert info.value.code == 1009
        # The client may have options of its own.
        async with open_memory_pair(echo, client_options=plain) as ws:
            assert ws.extensions == []


async def test_refusal_raises_handshake_error() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.reject(403, body="go away\n")

    with trio.fail_after(TIMEOUT), pytest.raises(trio_ws.HandshakeError) as info:
        async with open_memory_pair(handler):
            pass
    assert (info.value.status, info.value.body) == (403, b"go away\n")


async def test_handler_error_is_reraised_after_the_server_answered_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()
        raise KeyError("handler bug")

    caplog.set_level(logging.CRITICAL, logger="trio_ws")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(KeyError, match="handler bug"):
            async with open_memory_pair(handler) as ws:
                await ws.send("boom")
                with pytest.raises(trio_ws.ConnectionClosed) as info:
                    await ws.receive()
        assert info.value.code == 1011  # what a client on the network would see
        async with open_memory_pair(handler, raise_handler_errors=False) as ws:
            await ws.send("boom")
            with pytest.raises(trio_ws.ConnectionClosed):
                await ws.receive()


async def test_handler_error_shows_when_the_block_fails_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The block's ConnectionClosed 1011 comes out with the handler's bug as its cause."""

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()
        raise KeyError("handler bug")

    caplog.set_level(logging.CRITICAL, logger="trio_ws")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(trio_ws.ConnectionClosed) as info:
            async with open_memory_pair(handler) as ws:
                await ws.send("boom")
                await ws.receive()  # not caught: the test fails here first
    assert info.value.code == 1011
    cause = info.value.__cause__
    assert isinstance(cause, KeyError) and cause.args == ("handler bug",)
    assert cause.__traceback__ is not None  # the handler's own frames, for the report
    report = "".join(traceback.format_exception(info.value))
    assert "KeyError: 'handler bug'" in report
    assert "in handler" in report  # with the handler's frame


async def test_handler_error_before_accept_gives_500(caplog: pytest.LogCaptureFixture) -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        raise ValueError("no")

    caplog.set_level(logging.CRITICAL, logger="trio_ws")
    with trio.fail_after(TIMEOUT):
        with pytest.raises(trio_ws.HandshakeError) as info:
            async with open_memory_pair(handler):
                pass
        assert info.value.status == 500
        # The block raised first: that is the exception that comes out.
        with pytest.raises(ValueError):
            async with open_memory_server(handler) as server:
                await server.get("/")


async def test_exception_in_the_block_comes_out_bare_and_closes_with_1011() -> None:
    codes: list[int] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            codes.append(exc.code)

    with trio.fail_after(TIMEOUT), pytest.raises(LookupError, match="test bug"):
        async with open_memory_pair(handler):
            raise LookupError("test bug")
    assert codes == [1011]


async def test_exit_waits_for_the_handler() -> None:
    finished = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        async for _ in ws:
            pass
        await trio.sleep(0.01)  # the behaviour under test: cleanup that takes a while
        finished.append(True)

    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(handler):
            pass
    assert finished == [True]


async def test_a_handler_that_never_returns_is_cancelled_after_shutdown_timeout() -> None:
    cancelled = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.accept()
        try:
            await trio.sleep_forever()
        except trio.Cancelled:
            cancelled.append(True)
            raise

    with trio.fail_after(TIMEOUT):
        start = trio.current_time()
        async with (
            open_memory_server(handler, shutdown_timeout=0.2) as server,
            server.connect() as ws,
        ):
            pass
        assert 0.2 <= trio.current_time() - start < 5
    assert cancelled == [True]
    assert ws.close_code == 1000


async def test_several_clients_share_one_server() -> None:
    room = trio_ws.Room()

    async def chat(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            await ws.send("joined")
            async for message in ws:
                room.broadcast(message)

    with trio.fail_after(TIMEOUT):
        async with open_memory_server(chat) as server:
            async with server.connect() as alice, server.connect() as bob:
                assert await alice.receive() == await bob.receive() == "joined"
                assert len(server.server.connections) == 2
                await alice.send("hi all")
                assert await alice.receive() == await bob.receive() == "hi all"
            await server.wait_idle()
            assert not server.server.connections
    assert len(room) == 0


async def test_server_settings_use_the_real_code_paths() -> None:
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(echo, origins=["https://ok.example"]) as server:
            with pytest.raises(trio_ws.HandshakeError) as info:
                async with server.connect(extra_headers=[("Origin", "https://evil.example")]):
                    pass
            assert info.value.status == 403
            async with server.connect(extra_headers=[("Origin", "https://ok.example")]) as ws:
                await ws.send("ok")
                assert await ws.receive() == "ok"
        async with open_memory_server(echo, max_connections=1) as server, server.connect():
            with pytest.raises(trio_ws.HandshakeError) as info:
                async with server.connect():
                    pass
            assert info.value.status == 503


async def test_plain_get() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        assert not request.is_upgrade
        await request.respond(200, headers=[("X-Path", request.path)], body="hi")

    with trio.fail_after(TIMEOUT):
        async with open_memory_server(handler) as server:
            response = await server.get("/p?q", headers=[("Accept", "*/*")])
    assert response.status == 200
    assert response.headers["x-path"] == "/p"
    assert response.text == "hi"
    # Targets are taken as written: an IRI path goes out percent-encoded, as connect() sends it.
    async with open_memory_server(handler) as server:
        assert (await server.get("/ca fé")).headers["x-path"] == "/ca fé"
    async with open_memory_server(echo) as server, server.connect("/ca fé") as ws:
        assert ws.request.target == "/ca%20f%C3%A9"
    # A WebSocket-only handler answers a plain GET with 426, as on the network.
    async with open_memory_server(echo) as server:
        assert (await server.get("/")).status == 426


async def test_memory_connection_pair() -> None:
    with trio.fail_after(TIMEOUT):
        async with memory_connection_pair("/x", subprotocols=["chat"], subprotocol="chat") as (
            server_ws,
            client_ws,
        ):
            assert not server_ws.is_client and client_ws.is_client
            assert server_ws.path == "/x"
            assert server_ws.subprotocol == client_ws.subprotocol == "chat"
            await client_ws.send("up")
            assert await server_ws.receive() == "up"
            await server_ws.send(b"down")
            assert await client_ws.receive() == b"down"
            await server_ws.aclose(4000, "done")
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await client_ws.receive()
            assert (info.value.code, info.value.reason) == (4000, "done")


@pytest.mark.parametrize("compression", [True, False], ids=["deflate", "plain"])
async def test_thousand_round_trips(compression: bool) -> None:
    """A handler exercised 1000 times in well under a second (no sockets, no sleeps)."""
    options = trio_ws.WebSocketOptions(compression=None) if not compression else None
    with trio.fail_after(TIMEOUT):
        start = time.perf_counter()
        async with open_memory_pair(echo, options=options) as ws:
            opened = time.perf_counter()
            for i in range(1000):
                await ws.send(f"message {i}")
                assert await ws.receive() == f"message {i}"
            looped = time.perf_counter()
        closed = time.perf_counter()
    print(
        f"\nin memory ({'deflate' if compression else 'plain'}): open {opened - start:.4f} s, "
        f"1000 round trips {looped - opened:.4f} s ({(looped - opened) * 1000:.0f} us each), "
        f"close {closed - looped:.4f} s"
    )
    assert looped - opened < 5.0


async def test_messages_in_the_same_read_as_the_101_are_kept() -> None:
    """The server's first frames may arrive with its 101 response, in one read."""
    from trio_ws.protocol._frames import Opcode, encode_frame
    from trio_ws.protocol._handshake import accept_key

    client_stream, server_stream = trio.testing.memory_stream_pair()

    async def raw_server() -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await server_stream.receive_some(65536)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key:")
        )
        await server_stream.send_all(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: "
            + accept_key(key).encode()
            + b"\r\n\r\n"
            + encode_frame(Opcode.TEXT, b"first")
            + encode_frame(Opcode.CLOSE, b"\x03\xe8")
        )
        await server_stream.receive_some(65536)  # the client's close reply
        await server_stream.aclose()  # the server closes TCP first

    options = trio_ws.WebSocketOptions(compression=None)
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(raw_server)
            ws = await trio_ws.client_handshake(client_stream, "localhost", options=options)
            nursery.start_soon(ws.run)
            assert await ws.receive() == "first"
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
            assert info.value.code == 1000
