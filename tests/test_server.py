"""The server (trio_ws/_server.py): admission under max_connections."""

from __future__ import annotations

import base64
import os

import pytest
import trio
from helpers import HOST, RawPeer, running_server

import trio_ws

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
