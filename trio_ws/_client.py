"""The WebSocket client: connect, run the opening handshake, yield an open connection."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import trio

from ._connection import Connection, ResponseReceived, Role
from ._errors import HandshakeError
from ._handshake import HeaderList, Request, split_url
from ._websocket import WebSocketConnection, WebSocketOptions

__all__ = ["connect_websocket", "open_websocket", "open_websocket_url"]


def _host_header(host: str, port: int, secure: bool) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if secure else 80) else f"{name}:{port}"


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str = "/",
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
) -> WebSocketConnection:
    """Connect and handshake; the connection's tasks run in ``nursery``.

    Prefer ``open_websocket()``, which also closes the connection. ``ssl_context=True``
    uses ``ssl.create_default_context()``.
    """
    options = options or WebSocketOptions()
    if ssl_context is True:
        ssl_context = ssl.create_default_context()
    secure = isinstance(ssl_context, ssl.SSLContext)
    core = Connection(
        Role.CLIENT,
        max_message_size=options.max_message_size,
        max_frame_size=options.max_frame_size,
        max_head_size=options.max_head_size,
    )
    request_bytes = core.initiate(
        _host_header(host, port, secure),
        resource,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        extensions=[options.compression] if options.compression is not None else [],
    )
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream = await trio.open_tcp_stream(host, port)
        try:
            if isinstance(ssl_context, ssl.SSLContext):
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
            await stream.send_all(request_bytes)
            response = None
            while response is None:
                data = await stream.receive_some(65536)
                for event in core.receive_data(data):
                    if isinstance(event, ResponseReceived):
                        response = event.response
                if not data and response is None:
                    raise HandshakeError("connection closed during the handshake", status=0)
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    request = Request(
        target=resource,
        path=resource.split("?", 1)[0],
        query=resource.partition("?")[2],
        headers=core.request_headers,
        subprotocols=tuple(subprotocols),
        extensions=(),
    )
    conn = WebSocketConnection(
        stream, core, options, request=request, response_headers=response.headers
    )
    nursery.start_soon(conn._run)
    return conn


@asynccontextmanager
async def open_websocket(
    host: str,
    port: int,
    resource: str = "/",
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
) -> AsyncIterator[WebSocketConnection]:
    """``async with open_websocket(host, port, "/path") as ws:`` a connection for the block.

    On exit the connection is closed with 1000 (1011 if the block raised).
    """
    async with trio.open_nursery() as nursery:
        conn = await connect_websocket(
            nursery,
            host,
            port,
            resource,
            ssl_context=ssl_context,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            options=options,
            connect_timeout=connect_timeout,
        )
        try:
            yield conn
        except BaseException as exc:
            code = 1001 if isinstance(exc, trio.Cancelled) else 1011
            with trio.CancelScope(shield=True):
                await conn.aclose(code)
            raise
        else:
            await conn.aclose(1000)


def open_websocket_url(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
) -> AbstractAsyncContextManager[WebSocketConnection]:
    """``async with open_websocket_url("wss://example.com/feed") as ws:``."""
    secure, host, port, target = split_url(url)
    return open_websocket(
        host,
        port,
        target,
        ssl_context=(ssl_context or True) if secure else None,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        options=options,
        connect_timeout=connect_timeout,
    )
