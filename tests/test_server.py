"""The server (trio_ws/_trio/_server.py): admission under max_connections, the request a
handler sees, rejections, handler failures, shutdown, ports and TLS, bad handshakes (an HTTP
status, RFC 6455 section 4.2.2), request targets, Unix sockets and SO_REUSEPORT.

Every test runs on 127.0.0.1 with small, bounded counts, under ``trio.fail_after``; raw-socket
tests (``helpers.RawPeer``) check what goes on the wire when a peer misbehaves.
"""

from __future__ import annotations

import base64
import logging
import os
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import (
    HOST,
    TEST_TIMEOUT,
    RawClient,
    RawPeer,
    assert_still_serving,
    bounded,
    capture,
    echo_handler,
    echo_handler_loop,
    first_line,
    payload,
    running_server,
    tls_contexts,
    wait_until,
)

import trio_ws
from trio_ws.protocol._frames import Opcode, encode_frame

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
import errno
import functools
import sys

LIMIT = 100
CLIENTS = 150
OPTIONS = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=2)


def request() -> bytes:
    key = base64.b64encode(os.urandom(16)).decode("ascii")
    return (
        f"GET / HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode("ascii")


@pytest.mark.parametrize("connect_first", [False, True], ids=["burst", "connected-first"])
async def test_a_burst_over_the_limit_admits_exactly_the_limit(connect_first: bool) -> None:
    """150 clients at once against max_connections=100: 100 upgrades, 50 refusals with 503,
    whether their requests come at once or after all 150 TCP connections are open (as
    nginx's limit_conn counts: requests in their handshake or being refused take no slot)."""
    release = trio.Event()
    accepted = 0

    async def hold(request: trio_ws.WebSocketRequest) -> None:
        nonlocal accepted
        ws = await request.accept()
        accepted += 1
        await release.wait()
        await ws.aclose()

    statuses: list[int] = []
    all_answered = trio.Event()

    async def client(port: int, connected: trio.Event | None, go: trio.Event) -> None:
        peer = await RawPeer.connect(port)
        try:
            if connected is not None:
                connected.set()
            await go.wait()
            await peer.send(request())
            status, _, _ = await peer.read_http_response()
            statuses.append(status)
            if len(statuses) == CLIENTS:
                all_answered.set()
            await release.wait()
        finally:
            await peer.aclose()

    with trio.fail_after(30):
        async with running_server(hold, options=OPTIONS, max_connections=LIMIT) as server:
            async with trio.open_nursery() as nursery:
                go = trio.Event()
                for _ in range(CLIENTS):
                    connected = trio.Event() if connect_first else None
                    nursery.start_soon(client, server.port, connected, go)
                    if connected is not None:
                        await connected.wait()  # this TCP connection is open
                go.set()
                await all_answered.wait()
                release.set()
    assert sorted(statuses) == [101] * LIMIT + [503] * (CLIENTS - LIMIT)
    assert accepted == LIMIT


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
            await wait_until(lambda: server.connections, "the client is connected")
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
            await wait_until(lambda: not server.connections, "both connections forgotten")


# Example, ports, TLS ------------------------------------------------------------------------


@bounded
async def test_echo_server_example_subprocess() -> None:
    script = REPO / "examples" / "echo_server.py"
    with trio.fail_after(TEST_TIMEOUT):
        process = await trio.lowlevel.open_process(
            [sys.executable, str(script), "--host", HOST, "--port", "0"],
            stdout=subprocess.PIPE,
        )
        try:
            # "echo server on ws://HOST:PORT/", printed once it listens.
            url = (await first_line(process, "the example server")).decode().split()[-1]
            port = int(url.rstrip("/").rpartition(":")[2])
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
            assert process.stdout is not None
            await process.stdout.aclose()


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
            await assert_still_serving(server.port)
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
            await assert_still_serving(server.port)


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


# Request targets as a server's handler and Router see them, over real sockets on 127.0.0.1 --------
#
# ``request.path`` is the percent-decoded path of the origin-form target (RFC 9112 section
# 3.2.1) as written: everything before the first ``?``, whatever its segments, never read as an
# authority nor normalized. The raw target is ``request.request.target``.


async def report(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    await ws.send(f"{request.path}|{request.query}|{request.request.target}")


def upgrade(target: str) -> bytes:
    return (
        f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    ).encode("latin-1")


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("//evil.example/admin", "//evil.example/admin", ""),
        ("//user:pw@evil.example:81/a?b=c", "//user:pw@evil.example:81/a", "b=c"),
        ("///a", "///a", ""),
        ("/a/../b/./c//", "/a/../b/./c//", ""),
        ("/a;b=c:d@e", "/a;b=c:d@e", ""),
        ("/caf%C3%A9%20au%2Flait?q=%20&r=//x?y", "/café au/lait", "q=%20&r=//x?y"),
        ("/a#b", "/a#b", ""),
        ("http://example.com//a?b", "//a", "b"),
    ],
)
async def test_the_handler_sees_the_origin_form_path(target: str, path: str, query: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(report) as server:
            peer = await RawClient.connect(server.port)
            await peer.handshake(target)
            frame = await peer.read_frame()
            assert frame is not None and frame[0].opcode is Opcode.TEXT
            assert frame[1].decode() == f"{path}|{query}|{target}"
            await peer.finish()


@pytest.mark.parametrize("target", ["*", "example.com:443", "admin", "ftp://example.com/admin"])
async def test_other_target_forms_get_400(target: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(report) as server:
            peer = await RawClient.connect(server.port)
            await peer.send(upgrade(target))
            status, _, _ = await peer.read_http_response()
            await peer.aclose()
    assert status == 400


@pytest.mark.parametrize(
    ("target", "status"),
    [
        ("/admin", 101),
        ("/%61dmin", 101),
        ("http://example.com/admin", 101),
        ("//evil.example/admin", 404),
        ("//admin", 404),
        ("/x/../admin", 404),
        ("/admin/", 404),
    ],
)
async def test_router_routes_on_the_path_as_written(target: str, status: int) -> None:
    router = trio_ws.Router()
    router.add("/admin", report)
    with trio.fail_after(TEST_TIMEOUT):
        async with running_server(router) as server:
            peer = await RawClient.connect(server.port)
            await peer.send(upgrade(target))
            got, _, _ = await peer.read_http_response()
            await peer.aclose()
    assert got == status


# Serving on a Unix socket and sharing a port between servers (SO_REUSEPORT) -----------------------


LISTENER_OPTIONS = trio_ws.WebSocketOptions(ping_interval=None)


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


async def test_serve_and_connect_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listener = await trio_ws.open_unix_listener(path)
            serve = functools.partial(
                trio_ws.serve_websocket,
                echo,
                None,
                0,
                listeners=[listener],
                options=LISTENER_OPTIONS,
            )
            server = await nursery.start(serve)
            assert server.ports == []  # no TCP port
            async with trio_ws.open_websocket(
                "localhost", 0, "/", unix_socket=path, options=LISTENER_OPTIONS
            ) as ws:
                assert ws.request_headers["host"] == "localhost:0"
                await ws.send("over a unix socket")
                assert await ws.receive() == "over a unix socket"
            # A stale socket file is replaced by a new listener.
            await server.aclose()
            again = await trio_ws.open_unix_listener(path)
            await again.aclose()
            nursery.cancel_scope.cancel()


async def test_two_servers_share_a_port_with_reuse_port() -> None:
    served: set[int] = set()

    def handler(index: int) -> trio_ws._trio._server.Handler:
        async def tagged(request: trio_ws.WebSocketRequest) -> None:
            served.add(index)
            await echo(request)

        return tagged

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            first = await nursery.start(
                functools.partial(
                    trio_ws.serve_websocket, handler(1), "127.0.0.1", 0, reuse_port=True
                )
            )
            await nursery.start(
                functools.partial(
                    trio_ws.serve_websocket, handler(2), "127.0.0.1", first.port, reuse_port=True
                )
            )
            for _ in range(40):  # the kernel spreads connections over both listeners
                async with trio_ws.open_websocket("127.0.0.1", first.port, "/") as ws:
                    await ws.send("x")
                    assert await ws.receive() == "x"
                if served == {1, 2}:
                    break
            assert served == {1, 2}
            nursery.cancel_scope.cancel()


async def test_a_port_in_use_names_the_address() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        raise AssertionError("not reached")

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(10), pytest.raises(BaseExceptionGroup) as info:
            async with trio.open_nursery() as nursery:
                await nursery.start(trio_ws.serve_websocket, handler, "127.0.0.1", port)
    [error] = info.value.exceptions
    assert isinstance(error, OSError) and error.errno == errno.EADDRINUSE
    assert str(error) == f"[Errno {errno.EADDRINUSE}] cannot listen on 127.0.0.1:{port}: " + (
        "Address already in use"
    )
