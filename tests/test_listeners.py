"""Serving on a Unix socket and sharing a port between servers (SO_REUSEPORT)."""

from __future__ import annotations

import errno
import functools
import socket
import sys
from pathlib import Path

import pytest
import trio

import trio_ws

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

OPTIONS = trio_ws.WebSocketOptions(ping_interval=None)


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
                trio_ws.serve_websocket, echo, None, 0, listeners=[listener], options=OPTIONS
            )
            server = await nursery.start(serve)
            assert server.ports == []  # no TCP port
            async with trio_ws.open_websocket(
                "localhost", 0, "/", unix_socket=path, options=OPTIONS
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
