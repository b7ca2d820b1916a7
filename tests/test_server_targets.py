"""Request targets as a server's handler and Router see them, over real sockets on 127.0.0.1.

``request.path`` is the percent-decoded path of the origin-form target (RFC 9112 section
3.2.1) as written: everything before the first ``?``, whatever its segments, never read as an
authority nor normalized. The raw target is ``request.request.target``.
"""

from __future__ import annotations

import pytest
import trio
from helpers import TEST_TIMEOUT, RawClient, running_server

import trio_ws
from trio_ws.protocol._frames import Opcode


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
