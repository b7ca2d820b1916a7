"""The client (trio_ws/_trio/_client.py): open_websocket_url, how a client block ends,
credentials in the URL, HTTP CONNECT proxies, URLs as sent, redirects.

Every test runs on 127.0.0.1 with small, bounded counts, under ``trio.fail_after``.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from helpers import (
    HOST,
    TEST_TIMEOUT,
    bounded,
    capture,
    echo_handler,
    echo_handler_loop,
    running_server,
    tls_contexts,
)

import trio_ws
from trio_ws._trio._client import _follow


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


# Client conveniences: credentials in the URL, redirects, HTTP CONNECT proxies ---------------------


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


# URLs and resources as the client sends them, over real sockets on 127.0.0.1 ----------------------
#
# IRIs become URIs as browsers send them (RFC 3987 section 3.1): UTF-8, then percent-encoding;
# ``%XX`` escapes are kept. A URL that cannot be used is a ``ValueError`` before connecting.


@asynccontextmanager
async def recording_server() -> AsyncIterator[tuple[int, list[trio_ws.Request]]]:
    """A server that records each request and accepts it; yields its port and the requests."""
    seen: list[trio_ws.Request] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.append(request.request)
        await request.accept()

    async with running_server(handler, options=OPTIONS) as server:
        yield server.port, seen


@pytest.mark.parametrize(
    ("resource", "target", "path"),
    [
        ("/ws/user/albanø@example.org", "/ws/user/alban%C3%B8@example.org", None),
        ("/a b", "/a%20b", None),
        ("/a%20b", "/a%20b", "/a b"),  # an escape is kept, not escaped again
        ("/100%/%zz", "/100%25/%25zz", None),  # a stray % is escaped
        ("/日本語/😀", "/%E6%97%A5%E6%9C%AC%E8%AA%9E/%F0%9F%98%80", None),
        ('/a|b{c}^`"<>[]\\', "/a%7Cb%7Bc%7D%5E%60%22%3C%3E%5B%5D%5C", None),
        ("/a%2Fb?x=1&y=ü ü", "/a%2Fb?x=1&y=%C3%BC%20%C3%BC", "/a/b"),
        ("/chat?room=1", "/chat?room=1", None),
        ("/;a=b:c@d!$&'()*+,~-._", "/;a=b:c@d!$&'()*+,~-._", None),
        ("", "/", None),  # no path
    ],
)
async def test_iri_urls_are_sent_as_uris(resource: str, target: str, path: str | None) -> None:
    path = path if path is not None else resource.partition("?")[0] or "/"
    with trio.fail_after(TEST_TIMEOUT):
        async with recording_server() as (port, seen):
            url = f"ws://{HOST}:{port}{resource}"
            async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=False) as ws:
                assert ws.request.target == target
                assert ws.path == path  # the client reports the path as the server reads it
            if resource.startswith("/"):
                async with trio_ws.open_websocket(HOST, port, resource, options=OPTIONS) as ws:
                    assert ws.request.target == target
    assert [request.target for request in seen] == [target] * len(seen)
    assert seen[0].path == path
    assert seen[0].query == target.partition("?")[2]


async def test_default_port_query_and_host_header() -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with recording_server() as (port, seen):
            url = f"ws://{HOST}:{port}?x=1"
            async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=False):
                pass
    assert seen[0].target == "/?x=1"
    assert seen[0].headers["host"] == f"{HOST}:{port}"


async def test_a_non_ascii_host_is_sent_idna_encoded(tmp_path: Path) -> None:
    # Over a Unix socket, so that the name need not resolve: only the Host header counts.
    path = str(tmp_path / "ws.sock")
    seen: list[trio_ws.Request] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.append(request.request)
        await request.accept()

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            listener = await trio_ws.open_unix_listener(path)
            serve = partial(
                trio_ws.serve_websocket, handler, None, 0, listeners=[listener], options=OPTIONS
            )
            await nursery.start(serve)
            async with trio_ws.open_websocket("Bücher.example", 443, unix_socket=path):
                pass
            with pytest.raises(ValueError, match="invalid host name"):
                async with trio_ws.open_websocket("exa mple", 80, unix_socket=path):
                    pass
            nursery.cancel_scope.cancel()
    assert [request.headers["host"] for request in seen] == ["xn--bcher-kva.example:443"]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ws://127.0.0.1:{port}/a\nb", "control character"),
        ("ws://127.0.0.1:{port}/a\r\nX-Injected: 1", "control character"),
        ("ws://127.0.0.1:{port}/#top", "fragment"),
        ("ws://127.0.0.1 :{port}/", "invalid host name"),
        ("ws://127.0.0.1:0/", "port 0"),
        ("http://127.0.0.1:{port}/", "not a WebSocket URL"),
        ("127.0.0.1:{port}/", "not a WebSocket URL"),
    ],
)
async def test_an_unusable_url_is_a_value_error_before_connecting(url: str, problem: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with recording_server() as (port, seen):
            with pytest.raises(ValueError, match=problem):
                async with trio_ws.open_websocket_url(url.format(port=port), proxy=False):
                    pass
            # The same server still answers: nothing half-sent got in its way.
            async with trio_ws.open_websocket_url(f"ws://{HOST}:{port}/ok", proxy=False):
                pass
    assert [request.target for request in seen] == ["/ok"]


@pytest.mark.parametrize(
    ("resource", "problem"),
    [("chat", "start with '/'"), ("/a\nb", "control character"), ("", "start with '/'")],
)
async def test_an_unusable_resource_is_a_value_error_before_connecting(
    resource: str, problem: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with recording_server() as (port, seen):
            with pytest.raises(ValueError, match=problem):
                async with trio_ws.open_websocket(HOST, port, resource):
                    pass
            async with trio_ws.open_websocket(HOST, port, "/ok"):
                pass
    assert [request.target for request in seen] == ["/ok"]


# Redirects that ``open_websocket_url`` follows, and the ones it must not (RFC 9110 15.4) ----------
#
# The rules: never from wss:// to ws://; credentials (``Authorization``, ``Cookie``,
# ``Proxy-Authorization``, URL user information) are not sent on to another origin; relative
# Locations resolve against the current URL; only 301, 302, 303, 307 and 308 are followed;
# loops stop at ``max_redirects``. Servers run on 127.0.0.1: trio_ws servers whose handler
# redirects, and a raw HTTP server (optionally over TLS) for the hops a test must inspect.


def redirect(status: int, location: str) -> bytes:
    """A complete redirect response; ``location`` goes out as UTF-8 bytes."""
    return f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


@asynccontextmanager
async def raw_http(
    answer: Callable[[str], bytes], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[str]]]:
    """A raw HTTP server on 127.0.0.1 answering ``answer(request_head)`` to each request.

    Yields its port and the request heads it received, in order.
    """
    heads: list[str] = []

    async def handle(stream: trio.abc.Stream) -> None:
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_side=True)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            heads.append(head.decode("latin-1"))
            await stream.send_all(answer(heads[-1]))
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        yield listeners[0].socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


def header_names(head: str) -> set[str]:
    return {line.partition(":")[0].lower() for line in head.split("\r\n")[1:]}


@asynccontextmanager
async def destination(
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, list[trio_ws.Request]]]:
    """A trio_ws server that accepts every upgrade and sends back its target; yields its port
    and the requests it received."""
    seen: list[trio_ws.Request] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.append(request.request)
        ws = await request.accept()
        await ws.send(request.request.target)

    async with running_server(handler, options=OPTIONS, ssl_context=ssl_context) as server:
        yield server.port, seen


@asynccontextmanager
async def redirecting(
    redirects: dict[str, tuple[int, str]],
) -> AsyncIterator[tuple[int, list[str]]]:
    """A trio_ws server: the targets in ``redirects`` answer ``(status, Location)``; every
    other target is accepted and its target sent back. Yields the port and targets seen."""
    seen: list[str] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        target = request.request.target
        seen.append(target)
        if target in redirects:
            status, location = redirects[target]
            # Headers go out as ISO-8859-1: this sends the UTF-8 bytes of the location.
            raw = location.encode().decode("latin-1")
            await request.respond(status, headers=[("Location", raw)])
            return
        ws = await request.accept()
        await ws.send(target)

    async with running_server(handler, options=OPTIONS) as server:
        yield server.port, seen


async def final_target(
    url: str,
    *,
    extra_headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = 5,
) -> str:
    """Connect to ``url`` following redirects; the target the accepting server received."""
    async with trio_ws.open_websocket_url(
        url,
        extra_headers=extra_headers or [],
        ssl_context=ssl_context,
        max_redirects=max_redirects,
        options=OPTIONS,
        proxy=False,
    ) as ws:
        message = await ws.receive()
        assert isinstance(message, str)
        return message


# 1. Never from wss:// to ws:// --------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "ws://127.0.0.1:{plain}/downgraded",
        "WS://127.0.0.1:{plain}/downgraded",
        "http://127.0.0.1:{plain}/downgraded",  # http is taken as ws
        "/hop?then=ws://127.0.0.1:{plain}/downgraded",  # a second hop drops TLS
    ],
)
async def test_a_redirect_from_wss_to_ws_is_refused(location: str) -> None:
    server_context, client_context = tls_contexts()
    with trio.fail_after(TEST_TIMEOUT):
        async with destination() as (plain, reached):
            first = location.format(plain=plain)

            def answer(head: str) -> bytes:
                target = head.split(" ")[1]
                if target.startswith("/hop?then="):
                    return redirect(307, target.partition("=")[2])
                return redirect(302, first)

            async with raw_http(answer, server_context) as (port, heads):
                with pytest.raises(trio_ws.RedirectError) as refused:
                    await final_target(f"wss://{HOST}:{port}/start", ssl_context=client_context)
    error = refused.value
    assert isinstance(error, trio_ws.HandshakeError)
    assert "wss://" in str(error) and "TLS" in str(error)
    assert error.status == (307 if location.startswith("/hop") else 302)
    assert dict(error.headers)["location"].endswith(f"{plain}/downgraded")
    assert len(heads) == (2 if location.startswith("/hop") else 1)  # TLS hops did happen
    assert reached == []  # nothing went out in plain text


async def test_wss_to_wss_and_ws_to_wss_are_followed() -> None:
    server_context, client_context = tls_contexts()
    with trio.fail_after(TEST_TIMEOUT):
        async with destination(server_context) as (secure, reached):
            final = f"https://{HOST}:{secure}/final"
            async with raw_http(lambda head: redirect(301, final), server_context) as (port, _):
                url = f"wss://{HOST}:{port}/start"
                assert await final_target(url, ssl_context=client_context) == "/final"
            async with raw_http(lambda head: redirect(308, final)) as (port, _):
                url = f"ws://{HOST}:{port}/start"
                assert await final_target(url, ssl_context=client_context) == "/final"
    assert len(reached) == 2


# 2. Credentials stay with their origin ------------------------------------------------------------

CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


@pytest.mark.parametrize(
    ("userinfo", "extra_headers"),
    [
        # Credentials from the URL, and a cookie and proxy credentials from extra_headers.
        ("alice:s3cret@", [("Cookie", "sid=1"), ("Proxy-Authorization", "Basic eDp5")]),
        # All from extra_headers, in any case.
        ("", [("AUTHORIZATION", "Bearer t0ken"), ("cookie", "sid=1")]),
        # Both: the caller's Authorization wins over the URL's user information.
        ("bob:pw@", [("Authorization", "Bearer t0ken"), ("COOKIE", "a=b")]),
    ],
)
async def test_credentials_are_not_sent_to_another_origin(
    userinfo: str, extra_headers: list[tuple[str, str]]
) -> None:
    headers = [*extra_headers, ("X-Trace", "42")]
    with trio.fail_after(TEST_TIMEOUT):
        async with destination() as (other, reached):

            def answer(head: str) -> bytes:
                # Two redirects that keep the origin (one relative, one absolute), then one
                # to another port.
                if head.startswith("GET /start "):
                    return redirect(302, "/same-origin")
                if head.startswith("GET /same-origin "):
                    return redirect(301, f"http://{HOST}:{port}/same-origin-again")
                return redirect(307, f"http://{HOST}:{other}/elsewhere?x=1")

            async with raw_http(answer) as (port, heads):
                url = f"ws://{userinfo}{HOST}:{port}/start"
                target = await final_target(url, extra_headers=headers)
    assert target == "/elsewhere?x=1"
    # Every request to the first origin carried every credential...
    assert len(heads) == 3
    for head in heads:
        assert CREDENTIAL_HEADERS & header_names(head) == {
            name.lower() for name, _ in extra_headers
        } | ({"authorization"} if userinfo else set())
        assert "X-Trace: 42" in head
    # ...and the other origin got none of them, but still the other headers.
    (request,) = reached
    assert not CREDENTIAL_HEADERS & {name for name, _ in request.headers}
    assert request.headers["x-trace"] == "42"


@pytest.mark.parametrize(
    ("url", "location", "same_origin"),
    [
        ("ws://h/a", "/b", True),
        ("ws://h/a", "b?c=d", True),
        ("ws://h/a", "ws://h:80/b", True),  # the default port
        ("ws://h/a", "ws://H/b", True),  # host names ignore case
        ("ws://h/a", "http://h/b", True),  # http is taken as ws
        ("wss://h:8443/a", "https://h:8443/b", True),
        ("ws://bücher.example/", "ws://xn--bcher-kva.example/b", True),  # IDNA
        ("ws://h/a", "wss://h/b", False),  # the scheme changes, even to TLS
        ("ws://h/a", "ws://h:81/b", False),  # the port
        ("ws://h/a", "ws://other/b", False),  # the host
        ("wss://h/a", "//other/b", False),
        ("ws://[::1]/a", "ws://127.0.0.1/b", False),
    ],
)
def test_an_origin_change_drops_every_credential(
    url: str, location: str, same_origin: bool
) -> None:
    credentials = [("Authorization", "Bearer t"), ("Cookie", "a=b"), ("Proxy-Authorization", "x")]
    headers = [*credentials, ("X-Trace", "1")]
    redirect_error = trio_ws.HandshakeError("redirect", status=302)
    new_url, new_headers = _follow(url, headers, location, redirect_error)
    assert new_headers == (headers if same_origin else [("X-Trace", "1")])
    # User information in the URL, or in the Location itself, does not cross origins either.
    with_userinfo = url.replace("//", "//u:p@", 1)
    new_url, _ = _follow(with_userinfo, headers, location, redirect_error)
    assert ("u:p@" in new_url) == (same_origin and "//" not in location)
    new_url, _ = _follow(url, headers, location.replace("//", "//x:y@", 1), redirect_error)
    assert ("x:y@" in new_url) == (same_origin and "//" in location)


# 3. Relative Locations resolve against the current URL --------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/final?x=1", "/final?x=1"),
        ("final?x=1", "/dir/final?x=1"),
        ("../final", "/final"),
        ("./", "/dir/"),
        ("?x=1", "/dir/start?x=1"),
        ("//127.0.0.1:{port}/final", "/final"),
        ("http://127.0.0.1:{port}/final", "/final"),
        ("ws://127.0.0.1:{port}/final", "/final"),
        ("/final#fragment", "/final"),  # a fragment is not sent
        ("/caf%C3%A9 ü", "/caf%C3%A9%20%C3%BC"),  # raw UTF-8 and a space, as browsers send
    ],
)
async def test_relative_locations_resolve_against_the_current_url(
    location: str, expected: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        redirects: dict[str, tuple[int, str]] = {}
        async with redirecting(redirects) as (port, seen):
            redirects["/dir/start"] = (302, location.format(port=port))
            assert await final_target(f"ws://{HOST}:{port}/dir/start") == expected
    assert seen == ["/dir/start", expected]


# 4. Which statuses are followed -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_statuses_are_followed(status: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (status, "/final")}) as (port, seen):
            assert await final_target(f"ws://{HOST}:{port}/") == "/final"
    assert seen == ["/", "/final"]


@pytest.mark.parametrize("status", [200, 201, 300, 304, 305, 306, 309, 400, 404])
async def test_other_statuses_with_a_location_are_not_followed(status: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (status, "/final")}) as (port, seen):
            with pytest.raises(trio_ws.HandshakeError) as refused:
                await final_target(f"ws://{HOST}:{port}/")
    assert type(refused.value) is trio_ws.HandshakeError
    assert refused.value.status == status
    assert seen == ["/"]


# 5. Loops and unusable Locations ------------------------------------------------------------------


@pytest.mark.parametrize("max_redirects", [0, 1, 4])
async def test_a_redirect_loop_stops_at_max_redirects(max_redirects: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        redirects: dict[str, tuple[int, str]] = {"/a": (302, "/b")}
        async with redirecting(redirects) as (port, seen):
            # /a -> /b on this server; /b -> /a on another origin: a loop across origins.
            async with redirecting({"/b": (307, f"ws://{HOST}:{port}/a")}) as (other, seen_b):
                redirects["/a"] = (302, f"ws://{HOST}:{other}/b")
                with pytest.raises(trio_ws.RedirectError, match="too many redirects") as refused:
                    await final_target(f"ws://{HOST}:{port}/a", max_redirects=max_redirects)
    assert len(seen) + len(seen_b) == max_redirects + 1
    assert refused.value.status == (302 if max_redirects % 2 == 0 else 307)


async def test_max_redirects_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_redirects"):
        await final_target(f"ws://{HOST}:9/", max_redirects=-1)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("ftp://127.0.0.1/x", "not a WebSocket URL"),
        ("ws://127.0.0.1:99999/", "Port out of range"),
        ("ws://exa mple.org/", "invalid host name"),
        ("ws://:8080/x", "no host"),
    ],
)
async def test_an_unusable_location_is_a_redirect_error(location: str, problem: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (302, location)}) as (port, seen):
            with pytest.raises(trio_ws.RedirectError, match=problem) as refused:
                await final_target(f"ws://{HOST}:{port}/")
    assert refused.value.status == 302
    assert seen == ["/"]
