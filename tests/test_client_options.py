"""Client conveniences: credentials in the URL, redirects, HTTP CONNECT proxies."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

import trio_ws

OPTIONS = trio_ws.WebSocketOptions(ping_interval=None)


async def app(request: trio_ws.WebSocketRequest) -> None:
    """/old redirects to /new; /loop redirects to itself; /whoami reports credentials."""
    if request.path == "/old":
        await request.respond(302, headers=[("Location", "/new?from=old")])
        return
    if request.path == "/loop":
        await request.respond(307, headers=[("Location", "/loop")])
        return
    ws = await request.accept()
    credentials = trio_ws.basic_credentials(request)
    await ws.send(f"{request.path}?{request.query} {credentials}")


@asynccontextmanager
async def server() -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        running = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                app, "127.0.0.1", 0, options=OPTIONS, task_status=task_status
            )
        )
        yield running.port
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def connect_proxy() -> AsyncIterator[tuple[int, list[bytes]]]:
    """A minimal HTTP CONNECT proxy on 127.0.0.1; yields its port and the requests it saw."""
    seen: list[bytes] = []

    async def pipe(source: trio.abc.Stream, sink: trio.abc.Stream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(sink)

    async def handle(client: trio.SocketStream) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            head += await client.receive_some(4096)
        seen.append(head)
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        upstream = await trio.open_tcp_stream(host, int(port))
        await client.send_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream)
            nursery.start_soon(pipe, upstream, client)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1], seen
        nursery.cancel_scope.cancel()


async def test_credentials_in_the_url_become_basic_auth() -> None:
    with trio.fail_after(10):
        async with server() as port:
            url = f"ws://al%40ce:s3cret@127.0.0.1:{port}/whoami"
            async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=False) as ws:
                assert await ws.receive() == "/whoami? ('al@ce', 's3cret')"


async def test_redirects_are_followed_and_bounded() -> None:
    with trio.fail_after(10):
        async with server() as port:
            url = f"ws://127.0.0.1:{port}/old"
            async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=False) as ws:
                assert await ws.receive() == "/new?from=old None"
            with pytest.raises(trio_ws.HandshakeError, match="redirects"):
                async with trio_ws.open_websocket_url(
                    f"ws://127.0.0.1:{port}/loop", options=OPTIONS, proxy=False, max_redirects=3
                ):
                    pass
            with pytest.raises(trio_ws.HandshakeError, match="redirects") as refused:
                async with trio_ws.open_websocket_url(
                    url, options=OPTIONS, proxy=False, max_redirects=0
                ):
                    pass
            assert refused.value.status == 302


async def test_connect_through_an_http_proxy() -> None:
    with trio.fail_after(10):
        async with server() as port, connect_proxy() as (proxy_port, seen):
            url = f"ws://127.0.0.1:{port}/tunnel"
            proxy = f"http://user:pw@127.0.0.1:{proxy_port}"
            async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=proxy) as ws:
                assert await ws.receive() == "/tunnel? None"
            assert seen[0].startswith(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n".encode())
            assert b"Proxy-Authorization: Basic dXNlcjpwdw==" in seen[0]


async def test_proxy_from_the_environment_and_no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    with trio.fail_after(10):
        async with server() as port, connect_proxy() as (proxy_port, seen):
            monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{proxy_port}")
            monkeypatch.delenv("no_proxy", raising=False)
            monkeypatch.delenv("NO_PROXY", raising=False)
            url = f"ws://127.0.0.1:{port}/env"
            async with trio_ws.open_websocket_url(url, options=OPTIONS) as ws:
                assert await ws.receive() == "/env? None"
            assert len(seen) == 1
            monkeypatch.setenv("no_proxy", "localhost,127.0.0.1")
            async with trio_ws.open_websocket_url(url, options=OPTIONS) as ws:
                assert await ws.receive() == "/env? None"
            assert len(seen) == 1  # bypassed


async def test_proxy_refusal_is_a_handshake_error() -> None:
    async def refuse(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n")

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(partial(trio.serve_tcp, refuse, 0, host="127.0.0.1"))
            proxy = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            with pytest.raises(trio_ws.HandshakeError) as refused:
                async with trio_ws.open_websocket_url("ws://127.0.0.1:9/", proxy=proxy):
                    pass
            assert refused.value.status == 407
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n", "malformed HTTP response"),
        (b"", "closed without a response"),
        (b"HTTP/1.1 200 Connection established\r\n\r\nhello", "data before the tunnel"),
    ],
    ids=["malformed", "closed", "early-data"],
)
async def test_a_broken_proxy_answer_is_a_handshake_error(answer: bytes, message: str) -> None:
    async def answer_badly(stream: trio.SocketStream) -> None:
        await stream.receive_some(4096)
        await stream.send_all(answer)
        await stream.aclose()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                partial(trio.serve_tcp, answer_badly, 0, host="127.0.0.1")
            )
            proxy = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
            with pytest.raises(trio_ws.HandshakeError, match=message) as refused:
                async with trio_ws.open_websocket_url("ws://127.0.0.1:9/", proxy=proxy):
                    pass
            assert refused.value.status == 0
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("tls", [False, True], ids=["opening-handshake", "tls-handshake"])
async def test_a_connect_timeout_says_which_step_it_cut_short(tls: bool) -> None:
    """A server that accepts TCP and then says nothing: TooSlowError names the step."""
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    held: list[trio.abc.Stream] = []

    async def mute() -> None:
        held.append(await listener.accept())

    ssl_context = ssl.create_default_context() if tls else None
    with trio.fail_after(10):
        async with listener, trio.open_nursery() as nursery:
            nursery.start_soon(mute)
            with pytest.raises(trio.TooSlowError) as timed_out:
                async with trio_ws.open_websocket(
                    "127.0.0.1", port, ssl_context=ssl_context, connect_timeout=0.3
                ):
                    pass
            for stream in held:
                await stream.aclose()
    message = str(timed_out.value)
    assert "connect_timeout (0.3 s) passed" in message
    if tls:
        assert f"in the TLS handshake with 127.0.0.1:{port}" in message
    else:
        assert f"waiting for 127.0.0.1:{port} to answer the opening handshake" in message


@pytest.mark.parametrize("keepalive", [True, False])
async def test_connect_websocket_leaves_nothing_in_the_nursery_after_aclose(
    keepalive: bool,
) -> None:
    """The connection's tasks (its own keepalive timer included) end with it, so the
    caller's nursery exits once the connection is closed."""

    async def echo(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        async for message in ws:
            await ws.send(message)

    options = trio_ws.WebSocketOptions(ping_interval=20.0 if keepalive else None)
    with trio.fail_after(10):
        async with trio.open_nursery() as outer:
            server = await outer.start(trio_ws.serve_websocket, echo, "127.0.0.1", 0)
            async with trio.open_nursery() as nursery:
                ws = await trio_ws.connect_websocket(
                    nursery, "127.0.0.1", server.port, options=options
                )
                await ws.send("hi")
                assert await ws.receive() == "hi"
                await ws.aclose()
            assert ws.close_code == 1000
            await server.aclose()
