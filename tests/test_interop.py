"""Interoperability with the ``websockets`` library (its Trio front end), over loopback.

A ``websockets`` client against a trio_ws server, and a trio_ws client against a ``websockets``
server: messages of every frame-length encoding and 16 MiB, close codes and reasons both
ways, subprotocol negotiation, pings, fragmented messages and refused handshakes.
``websockets``' keepalive pings are off; compression is off except in the permessage-deflate
tests at the end, which run with it on in both directions.
"""

from __future__ import annotations

import functools
import http
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio

# websockets.trio (websockets 17) needs Python 3.11: older interpreters skip, with this reason.
pytest.importorskip(
    "websockets.trio", reason="websockets.trio needs websockets >= 17 (Python >= 3.11)"
)

import websockets
import websockets.exceptions
from helpers import (
    BIG_LIMIT,
    BIG_SIZE,
    EDGE_SIZES,
    HOST,
    TEST_TIMEOUT,
    bounded,
    capture,
    echo_handler,
    payload,
    running_server,
)
from websockets.trio.client import connect as ws_connect
from websockets.trio.server import ServerConnection
from websockets.trio.server import serve as ws_serve

import trio_ws

# websockets' keepalive pings and compression stay out of the way of these tests.
WS_OPTIONS: dict[str, Any] = {"compression": None, "ping_interval": None}

SIZES = [*EDGE_SIZES, BIG_SIZE]


def _ws_client(port: int, path: str = "/", **kwargs: Any) -> Any:
    return ws_connect(f"ws://{HOST}:{port}{path}", proxy=None, **WS_OPTIONS, **kwargs)


@asynccontextmanager
async def ws_server(
    handler: Callable[[ServerConnection], Awaitable[None]], **kwargs: Any
) -> AsyncIterator[int]:
    """A ``websockets`` server on 127.0.0.1; yields its port."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(ws_serve, handler, 0, host=HOST, **WS_OPTIONS, **kwargs)
        )
        try:
            yield server.listeners[0].socket.getsockname()[1]
        finally:
            with trio.fail_after(5):
                await server.aclose()
            nursery.cancel_scope.cancel()


async def ws_echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


def _limits(size: int) -> tuple[trio_ws.WebSocketOptions | None, dict[str, Any]]:
    """trio_ws options and websockets keyword arguments that allow a ``size``-byte message."""
    if size < BIG_SIZE:
        return None, {}
    return trio_ws.WebSocketOptions(max_message_size=BIG_LIMIT), {"max_size": BIG_LIMIT}


# websockets client -> trio_ws server ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", SIZES)
@bounded
async def test_websockets_client_round_trip(kind: str, size: int) -> None:
    message = payload(kind, size)
    options, ws_kwargs = _limits(size)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(echo_handler, options=options) as server,
            _ws_client(server.port, **ws_kwargs) as ws,
        ):
            await ws.send(message)
            echoed = await ws.recv()
    assert type(echoed) is type(message)
    assert echoed == message


@bounded
async def test_websockets_client_many_messages_in_order() -> None:
    messages = [f"m{i}" if i % 3 else bytes([i % 256]) * (i * 37) for i in range(200)]
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server, _ws_client(server.port) as ws:
            got = []
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    for message in messages:
                        await ws.send(message)

                nursery.start_soon(sender)
                for _ in messages:
                    got.append(await ws.recv())
    assert got == messages


@bounded
async def test_websockets_client_fragmented_messages() -> None:
    """Continuation frames from websockets are reassembled by trio_ws."""
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server, _ws_client(server.port) as ws:
            await ws.send(["caf\u00e9 ", "au ", "lait \u2615"])
            assert await ws.recv() == "caf\u00e9 au lait \u2615"
            await ws.send([b"\x00" * 70000, b"\x01" * 10, b""])
            assert await ws.recv() == b"\x00" * 70000 + b"\x01" * 10


@bounded
async def test_websockets_client_closes_with_code_and_reason() -> None:
    seen: list[trio_ws.ConnectionClosed] = []
    done = trio.Event()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                await ws.receive()
        except trio_ws.ConnectionClosed as exc:
            seen.append(exc)
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            async with _ws_client(server.port) as ws:
                await ws.aclose(4001, "bye")
                # trio_ws echoed the code of the close frame (RFC 6455 section 5.5.1).
                assert ws.close_code == 4001
            await done.wait()
    (exc,) = seen
    assert (exc.code, exc.reason, exc.by_peer) == (4001, "bye", True)


@bounded
async def test_trio_ws_server_closes_websockets_client_with_code_and_reason() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send("last")
        await ws.aclose(4002, "server bye \u00e9")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server, _ws_client(server.port) as ws:
            assert await ws.recv() == "last"
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
                await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (
                4002,
                "server bye \u00e9",
            )
            assert (ws.close_code, ws.close_reason) == (4002, "server bye \u00e9")


@bounded
async def test_trio_ws_handler_return_closes_websockets_client_normally() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send("only")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server, _ws_client(server.port) as ws:
            assert [message async for message in ws] == ["only"]
            assert ws.close_code == 1000


@bounded
async def test_websockets_client_subprotocol_and_headers() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen["subprotocols"] = request.subprotocols
        seen["header"] = request.headers.get("x-custom")
        seen["path"], seen["query"] = request.path, request.query
        ws = await request.accept(subprotocol="chat.v2", extra_headers=[("X-Server", "yes")])
        await ws.send(ws.subprotocol or "")
        await ws.receive()

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            _ws_client(
                server.port,
                "/room?id=7",
                subprotocols=["chat.v1", "chat.v2"],
                additional_headers={"X-Custom": "from websockets"},
            ) as ws,
        ):
            assert ws.subprotocol == "chat.v2"
            assert ws.response.headers["X-Server"] == "yes"
            assert await ws.recv() == "chat.v2"
    assert seen == {
        "subprotocols": ("chat.v1", "chat.v2"),
        "header": "from websockets",
        "path": "/room",
        "query": "id=7",
    }


@bounded
async def test_websockets_client_without_subprotocol() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send("hi")

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            running_server(handler) as server,
            _ws_client(server.port, subprotocols=["x"]) as ws,
        ):
            assert ws.subprotocol is None
            assert await ws.recv() == "hi"


@bounded
async def test_websockets_client_ping_gets_pong() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(echo_handler) as server, _ws_client(server.port) as ws:
            pong = await ws.ping(b"hello?")
            with trio.fail_after(3):
                await pong.wait()
            assert ws.state is websockets.protocol.State.OPEN


@bounded
async def test_websockets_client_refused_by_trio_ws() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.reject(403, headers=[("X-Why", "token")], body=b"no entry\n")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server:
            with pytest.raises(websockets.exceptions.InvalidStatus) as info:
                async with _ws_client(server.port):
                    pass
    response = info.value.response
    assert response.status_code == 403
    assert response.headers["X-Why"] == "token"
    assert response.body == b"no entry\n"


@bounded
async def test_websockets_client_sees_1011_from_failing_handler() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()
        raise RuntimeError("handler bug")

    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(handler) as server, _ws_client(server.port) as ws:
            await ws.send("go")
            with pytest.raises(websockets.exceptions.ConnectionClosedError) as info:
                await ws.recv()
    assert info.value.rcvd is not None
    assert info.value.rcvd.code == 1011


# trio_ws client -> websockets server ---------------------------------------------------------


@pytest.mark.parametrize("kind", ["text", "binary"])
@pytest.mark.parametrize("size", SIZES)
@bounded
async def test_trio_ws_client_round_trip(kind: str, size: int) -> None:
    message = payload(kind, size)
    options, ws_kwargs = _limits(size)
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ws_server(ws_echo, **ws_kwargs) as port,
            trio_ws.open_websocket(HOST, port, options=options) as ws,
        ):
            await ws.send(message)
            echoed = await ws.receive()
    assert type(echoed) is type(message)
    assert echoed == message


@bounded
async def test_trio_ws_client_many_messages_in_order() -> None:
    messages = [f"m{i}" if i % 3 else bytes([i % 256]) * (i * 37) for i in range(200)]
    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(ws_echo) as port, trio_ws.open_websocket(HOST, port) as ws:
            got = []
            async with trio.open_nursery() as nursery:

                async def sender() -> None:
                    for message in messages:
                        await ws.send(message)

                nursery.start_soon(sender)
                for _ in messages:
                    got.append(await ws.receive())
    assert got == messages


@bounded
async def test_trio_ws_client_receives_fragmented_messages() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(["frag", "mented \u00e9", " text"])
        await ws.send([b"\xff" * 100, b"\xfe" * 70000])
        await ws.recv()

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(handler) as port, trio_ws.open_websocket(HOST, port) as ws:
            assert await ws.receive() == "fragmented \u00e9 text"
            assert await ws.receive() == b"\xff" * 100 + b"\xfe" * 70000


@bounded
async def test_trio_ws_client_closes_websockets_server_with_code_and_reason() -> None:
    seen: list[tuple[int, str]] = []
    done = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        try:
            await ws.recv()
        except websockets.exceptions.ConnectionClosed as exc:
            assert exc.rcvd is not None
            seen.append((exc.rcvd.code, exc.rcvd.reason))
        done.set()

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(handler) as port:
            async with trio_ws.open_websocket(HOST, port) as ws:
                await ws.aclose(4001, "bye \u00e9")
                assert ws.closed
                assert ws.close_code == 4001
            with trio.fail_after(3):
                await done.wait()
    assert seen == [(4001, "bye \u00e9")]


@bounded
async def test_websockets_server_closes_trio_ws_client_with_code_and_reason() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send("last")
        await ws.aclose(4002, "server bye")

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(handler) as port, trio_ws.open_websocket(HOST, port) as ws:
            assert await ws.receive() == "last"
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
            assert (info.value.code, info.value.reason) == (4002, "server bye")
            assert info.value.by_peer is True
            assert (ws.close_code, ws.close_reason) == (4002, "server bye")


@bounded
async def test_websockets_server_normal_close_ends_iteration() -> None:
    async def handler(ws: ServerConnection) -> None:
        for i in range(3):
            await ws.send(f"n{i}")

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(handler) as port, trio_ws.open_websocket(HOST, port) as ws:
            assert [message async for message in ws] == ["n0", "n1", "n2"]
            assert ws.close_code == 1000


@bounded
async def test_trio_ws_client_subprotocol_and_headers() -> None:
    seen: dict[str, Any] = {}

    async def handler(ws: ServerConnection) -> None:
        assert ws.request is not None
        seen["header"] = ws.request.headers.get("X-Custom")
        seen["path"] = ws.request.path
        await ws.send(ws.subprotocol or "")
        await ws.recv()

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ws_server(handler, subprotocols=["chat.v2"]) as port,
            trio_ws.open_websocket(
                HOST,
                port,
                "/room?id=7",
                subprotocols=["chat.v1", "chat.v2"],
                extra_headers=[("X-Custom", "from trio_ws")],
            ) as ws,
        ):
            assert ws.subprotocol == "chat.v2"
            assert await ws.receive() == "chat.v2"
            assert "server" in ws.response_headers
    assert seen == {"header": "from trio_ws", "path": "/room?id=7"}


@bounded
async def test_trio_ws_client_without_matching_subprotocol() -> None:
    async def handler(ws: ServerConnection) -> None:
        await ws.send(repr(ws.subprotocol))
        await ws.recv()

    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ws_server(handler) as port,
            trio_ws.open_websocket(HOST, port, subprotocols=["x"]) as ws,
        ):
            assert ws.subprotocol is None
            assert await ws.receive() == "None"


@bounded
async def test_trio_ws_client_ping_and_websockets_server_ping() -> None:
    pinged = trio.Event()

    async def handler(ws: ServerConnection) -> None:
        pong = await ws.ping(b"server ping")
        await pong.wait()
        pinged.set()
        await ws_echo(ws)

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(handler) as port, trio_ws.open_websocket(HOST, port) as ws:
            with trio.fail_after(3):
                await ws.ping(b"client ping")
                await pinged.wait()


@bounded
async def test_trio_ws_client_refused_by_websockets_server() -> None:
    def process_request(connection: ServerConnection, request: Any) -> Any:
        return connection.respond(http.HTTPStatus.FORBIDDEN, "no entry\n")

    with trio.fail_after(TEST_TIMEOUT):
        async with ws_server(ws_echo, process_request=process_request) as port:
            with capture(trio_ws.HandshakeError) as raised:
                async with trio_ws.open_websocket(HOST, port):
                    pass
    assert raised.leaf.status == 403
    assert raised.leaf.body == b"no entry\n"
    raised.assert_bare(trio_ws.HandshakeError)


@bounded
async def test_trio_ws_client_too_big_for_websockets_server() -> None:
    """websockets refuses a message over its max_size with 1009; trio_ws reports it."""
    with trio.fail_after(TEST_TIMEOUT):
        async with (
            ws_server(ws_echo, max_size=1000) as port,
            trio_ws.open_websocket(HOST, port) as ws,
        ):
            await ws.send(b"x" * 2000)
            with pytest.raises(trio_ws.ConnectionClosed) as info:
                await ws.receive()
    assert info.value.code == 1009


# permessage-deflate, both ways -------------------------------------------------------------

JSON = '{"user": "alice", "text": "hello, room", "ts": 1764150000, "tags": ["a", "b"]}'
DEFLATE_MESSAGES = [JSON, JSON * 50, payload("bytes", 100_000), "", "é" * 3000]


@bounded
async def test_websockets_client_with_compression() -> None:
    """websockets offers permessage-deflate; trio_ws's server accepts and both compress."""
    async with running_server(echo_handler) as server:
        url = f"ws://{HOST}:{server.port}/"
        async with ws_connect(url, proxy=None, ping_interval=None, compression="deflate") as ws:
            assert ws.response.headers["Sec-WebSocket-Extensions"].startswith("permessage-deflate")
            for message in DEFLATE_MESSAGES * 3:  # several: context takeover matters
                await ws.send(message)
                assert await ws.recv() == message


@bounded
async def test_trio_ws_client_with_compression_against_websockets_server() -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(
                ws_serve, ws_echo, 0, host=HOST, ping_interval=None, compression="deflate"
            )
        )
        port = server.listeners[0].socket.getsockname()[1]
        async with trio_ws.open_websocket(HOST, port, "/") as ws:
            assert ws.extensions == ["permessage-deflate"]
            assert "permessage-deflate" in ws.response_headers["sec-websocket-extensions"]
            for message in DEFLATE_MESSAGES * 3:
                await ws.send(message)
                assert await ws.receive() == message
        await server.aclose()
        nursery.cancel_scope.cancel()


@bounded
async def test_shared_compressed_broadcast_to_websockets_and_trio_ws_clients(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With ``server_no_context_takeover=True`` (which no client here asks for), a room
    compresses each broadcast once and offers the same bytes object to every member: two
    websockets clients and two trio_ws clients, which all decompress it."""
    import trio_ws._trio._outbox as outbox_module
    from trio_ws.protocol._extensions import encode_message

    encodings: list[bytes] = []
    offered: list[bytes] = []

    def counting_encode(*args: Any) -> tuple[int, bytes]:
        rsv, data = encode_message(*args)
        encodings.append(data)
        return rsv, data

    def recording_offer_frame(
        self: outbox_module.Outbox, frame: bytes, *, hold: bool = False
    ) -> outbox_module.Offer:
        offered.append(frame)
        return original_offer_frame(self, frame, hold=hold)

    original_offer_frame = outbox_module.Outbox.offer_frame
    monkeypatch.setattr(outbox_module, "encode_message", counting_encode)
    monkeypatch.setattr(outbox_module.Outbox, "offer_frame", recording_offer_frame)
    deflate = trio_ws.PerMessageDeflate(server_no_context_takeover=True)
    options = trio_ws.WebSocketOptions(ping_interval=None, compression=deflate)
    room = trio_ws.Room()
    members = trio.Semaphore(0)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        with room.joined(ws):
            members.release()
            await ws.receive()

    messages = [JSON * 20, JSON * 20, "é" * 3000, JSON * 21]
    async with running_server(handler, options=options) as server:
        url = f"ws://{HOST}:{server.port}/"
        async with (
            ws_connect(url, proxy=None, ping_interval=None, compression="deflate") as w1,
            ws_connect(url, proxy=None, ping_interval=None, compression="deflate") as w2,
            trio_ws.open_websocket(HOST, server.port, "/") as t1,
            trio_ws.open_websocket(HOST, server.port, "/") as t2,
        ):
            for _ in range(4):
                await members.acquire()
            for ws in (w1, w2):
                response = ws.response.headers["Sec-WebSocket-Extensions"]
                assert response.startswith("permessage-deflate; server_no_context_takeover")
            assert t1.extensions == t2.extensions == ["permessage-deflate"]
            for message in messages:
                encodings.clear()
                offered.clear()
                assert room.broadcast(message) == 4
                assert len(encodings) == 1  # compressed once for all four
                assert len(encodings[0]) < len(message.encode()) // 4
                assert len(offered) == 4 and all(frame is offered[0] for frame in offered)
                for w in (w1, w2):
                    assert await w.recv() == message
                for t in (t1, t2):
                    assert await t.receive() == message
