"""The WebSocket client: connect, run the opening handshake, yield an open connection."""

from __future__ import annotations

import functools
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
    unix_socket: str | None = None,
) -> WebSocketConnection:
    """Connect and handshake; the connection's tasks run in ``nursery``.

    Prefer ``open_websocket()``, which also closes the connection. ``ssl_context=True``
    uses ``ssl.create_default_context()``.
    """
    conn = await _connect(
        host,
        port,
        resource,
        ssl_context,
        subprotocols,
        extra_headers,
        options,
        connect_timeout,
        unix_socket,
    )
    nursery.start_soon(conn._run)
    return conn


async def _connect(
    host: str,
    port: int,
    resource: str,
    ssl_context: ssl.SSLContext | bool | None,
    subprotocols: Sequence[str],
    extra_headers: HeaderList,
    options: WebSocketOptions | None,
    connect_timeout: float,
    unix_socket: str | None = None,
) -> WebSocketConnection:
    if ssl_context is True:
        ssl_context = ssl.create_default_context()
    with trio.fail_after(connect_timeout):
        stream: trio.abc.Stream
        if unix_socket is not None:
            stream = await trio.open_unix_socket(unix_socket)
        else:
            stream = await trio.open_tcp_stream(host, port)
        try:
            if isinstance(ssl_context, ssl.SSLContext):
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
            secure = isinstance(ssl_context, ssl.SSLContext)
            return await client_handshake(
                stream,
                _host_header(host, port, secure),
                resource,
                subprotocols=subprotocols,
                extra_headers=extra_headers,
                options=options,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise


async def client_handshake(
    stream: trio.abc.Stream,
    host: str,
    resource: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
) -> WebSocketConnection:
    """Run the client's opening handshake on a connected ``stream`` (TCP, TLS, Unix, memory).

    ``host`` is the ``Host`` header value. The returned connection is not running yet: start
    ``conn._run()`` in a nursery. Raises ``HandshakeError`` if the server refuses.
    """
    options = options or WebSocketOptions()
    core = Connection(
        Role.CLIENT,
        max_message_size=options.max_message_size,
        max_frame_size=options.max_frame_size,
        max_head_size=options.max_head_size,
        stream_fragments=True,
    )
    request_bytes = core.initiate(
        host,
        resource,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        extensions=[options.compression] if options.compression is not None else [],
    )
    await stream.send_all(request_bytes)
    response = None
    while response is None:
        data = await stream.receive_some(65536)
        for event in core.receive_data(data):
            if isinstance(event, ResponseReceived):
                response = event.response
        if not data and response is None:
            raise HandshakeError("connection closed during the handshake", status=0)
    request = Request(
        target=resource,
        path=resource.split("?", 1)[0],
        query=resource.partition("?")[2],
        headers=core.request_headers,
        subprotocols=tuple(subprotocols),
        extensions=(),
    )
    return WebSocketConnection(
        stream, core, options, request=request, response_headers=response.headers
    )


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
    unix_socket: str | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """``async with open_websocket(host, port, "/path") as ws:`` a connection for the block.

    On exit the connection is closed with 1000 (1001 if the block was cancelled, 1011 if it
    raised); exceptions come out as they were raised, not wrapped in an ExceptionGroup.
    ``unix_socket`` connects to that Unix socket path instead (``host`` names the Host).
    """
    conn = await _connect(
        host,
        port,
        resource,
        ssl_context,
        subprotocols,
        extra_headers,
        options,
        connect_timeout,
        unix_socket,
    )
    async with _running(conn) as running:
        yield running


@asynccontextmanager
async def _running(conn: WebSocketConnection) -> AsyncIterator[WebSocketConnection]:
    """Run ``conn``'s tasks for the block, then close it (see ``open_websocket``)."""
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        # Shielded: a cancelled block still gets its closing handshake (bounded by
        # close_timeout), so the server sees 1001 rather than a dropped connection.
        nursery.start_soon(functools.partial(conn._run, shield=True))
        try:
            yield conn
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await conn.aclose(1001)
            raise
        except BaseException as exc:
            error = exc
            with trio.CancelScope(shield=True):
                await conn.aclose(1011)
        else:
            await conn.aclose(1000)
    if error is not None:
        raise error


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
