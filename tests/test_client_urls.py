"""URLs and resources as the client sends them, over real sockets on 127.0.0.1.

IRIs become URIs as browsers send them (RFC 3987 section 3.1): UTF-8, then percent-encoding;
``%XX`` escapes are kept. A URL that cannot be used is a ``ValueError`` before connecting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
from helpers import HOST, TEST_TIMEOUT, running_server

import trio_ws

OPTIONS = trio_ws.WebSocketOptions(ping_interval=None)


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
