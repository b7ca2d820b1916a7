"""Test WebSocket handlers in memory: the real server and client code, no sockets.

``open_memory_pair(handler)`` runs ``handler`` behind the same handshake, request object
and connection code as ``serve_websocket`` (``WebSocketServer``), over
``trio.testing.memory_stream_pair()``, and yields the client side::

    async def test_echo() -> None:
        async with open_memory_pair(echo, "/echo") as ws:
            await ws.send("hi")
            assert await ws.receive() == "hi"

For several clients of one handler (a chat room), use ``open_memory_server(handler)`` and
its ``connect()``; for plain HTTP routes, its ``get()``. Exceptions a handler raises are
re-raised when the block ends (``raise_handler_errors=False`` turns that off), after the
server has answered them as it would on the network (500, or close code 1011). When the
test's block fails first (say with the 1011 the handler's error caused), the handler's
exception is attached as the ``__cause__`` of the block's, so it shows in the traceback.

There is no socket, so ``remote`` and ``local`` are ``None`` on both sides.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager

import attrs
import h11
import trio
import trio.testing

from ._trio import (
    WebSocketConnection,
    WebSocketOptions,
    WebSocketRequest,
    WebSocketServer,
    client_handshake,
    http_exchange,
    running_block,
)
from .protocol import ConnectionClosed, HandshakeError, HeaderList, Headers, quote_target

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = [
    "HTTPResponse",
    "MemoryServer",
    "memory_connection_pair",
    "open_memory_pair",
    "open_memory_server",
]

Handler = Callable[[WebSocketRequest], Awaitable[None]]


@attrs.frozen
class HTTPResponse:
    """A plain HTTP response as ``MemoryServer.get()`` received it."""

    status: int
    headers: Headers
    body: bytes

    @property
    def text(self) -> str:
        """The body decoded as UTF-8."""
        return self.body.decode("utf-8")


@asynccontextmanager
async def _bare_errors() -> AsyncIterator[trio.Nursery]:
    """A nursery whose single exception leaves the block as itself, not in a group."""
    try:
        async with trio.open_nursery() as nursery:
            yield nursery
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            error = group.exceptions[0]
            raise error from error.__cause__  # keeps a cause (a handler's error) shown
        raise


def _attach_handler_error(body_error: Exception, handler_error: Exception) -> None:
    """Make the handler's exception visible in the traceback of the block's own exception.

    The block usually failed because of it (a ``ConnectionClosed`` 1011 is how the client sees
    a handler that raised), so it becomes the ``__cause__`` (shown first, with its traceback),
    unless the block's exception already has a cause; then it is named in a note (3.11+).
    """
    if handler_error is body_error:
        return
    if body_error.__cause__ is None:
        body_error.__cause__ = handler_error
    elif hasattr(body_error, "add_note"):
        body_error.add_note(f"the handler raised {handler_error!r}")


class MemoryServer:
    """A ``WebSocketServer`` without listeners: each ``connect()`` is a memory stream pair.

    Made by ``open_memory_server()``. ``server`` is the ``WebSocketServer`` itself (its
    ``connections``, ``options``...); ``handler_errors`` lists what the handler raised.
    """

    def __init__(
        self,
        nursery: trio.Nursery,
        handler: Handler,
        *,
        options: WebSocketOptions,
        origins: Sequence[str | None] | None,
        max_connections: int | None,
        handshake_timeout: float,
    ) -> None:
        self._nursery = nursery
        self._handler = handler
        self._running = 0
        self._idle = trio.Event()
        self._idle.set()
        #: Exceptions raised by the handler (besides ``ConnectionClosed``), oldest first.
        self.handler_errors: list[Exception] = []
        self.server = WebSocketServer(
            self._run_handler,
            [],
            options=options,
            extensions=[options.compression] if options.compression is not None else [],
            handshake_timeout=handshake_timeout,
            max_connections=max_connections,
            origins=origins,
        )
        nursery.start_soon(self.server.timer.run)  # keepalive deadlines, as run() would

    async def _run_handler(self, request: WebSocketRequest) -> None:
        try:
            await self._handler(request)
        except (ConnectionClosed, HandshakeError):
            raise  # the server answers these; they are not the handler's bugs
        except Exception as exc:
            self.handler_errors.append(exc)
            raise

    def _open_stream(self) -> trio.abc.Stream:
        """A new client stream whose other end the server is serving."""
        client_stream, server_stream = trio.testing.memory_stream_pair()
        self._running += 1
        self._idle = trio.Event()
        self._nursery.start_soon(self._serve, server_stream)
        return client_stream

    async def _serve(self, stream: trio.abc.Stream) -> None:
        try:
            await self.server.serve_stream(stream)
        finally:
            self._running -= 1
            if not self._running:
                self._idle.set()

    async def wait_idle(self) -> None:
        """Wait until every connection's handler has returned and its stream is closed."""
        await self._idle.wait()

    @asynccontextmanager
    async def connect(
        self,
        resource: str = "/",
        *,
        subprotocols: Sequence[str] = (),
        extra_headers: HeaderList = (),
        options: WebSocketOptions | None = None,
        host: str = "localhost",
    ) -> AsyncIterator[WebSocketConnection]:
        """``async with server.connect("/path") as ws:`` a client connection for the block.

        Like ``open_websocket()``: the handshake raises ``HandshakeError`` (with the
        server's status, headers and body) if the handler refuses; on exit the connection
        is closed with 1000 (1001 if the block was cancelled, 1011 if it raised).
        """
        options = options or self.server.options
        stream = self._open_stream()
        try:
            with trio.fail_after(self.server.handshake_timeout):
                ws = await client_handshake(
                    stream,
                    host,
                    resource,
                    subprotocols=subprotocols,
                    extra_headers=extra_headers,
                    options=options,
                )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        async with running_block(ws) as running:  # open_websocket()'s own block handling
            yield running

    async def get(self, target: str = "/", *, headers: HeaderList = ()) -> HTTPResponse:
        """Send a plain HTTP GET (no upgrade) and return the server's response.

        ``target`` is encoded as ``connect()`` encodes its resource (``ValueError`` if unusable).
        """
        request = h11.Request(
            method="GET", target=quote_target(target), headers=[("Host", "localhost"), *headers]
        )
        stream = self._open_stream()
        try:
            response, body, _ = await http_exchange(stream, request, read_body=True)
        finally:
            await trio.aclose_forcefully(stream)
        return HTTPResponse(response.status_code, Headers.from_raw(response.headers), body)


@asynccontextmanager
async def open_memory_server(
    handler: Handler,
    *,
    options: WebSocketOptions | None = None,
    origins: Sequence[str | None] | None = None,
    max_connections: int | None = None,
    handshake_timeout: float = 10.0,
    shutdown_timeout: float = 5.0,
    raise_handler_errors: bool = True,
) -> AsyncIterator[MemoryServer]:
    """``async with open_memory_server(handler) as server:`` serve ``handler`` in memory.

    The arguments are those of ``serve_websocket()``. On exit, connections still open are
    closed with 1001 and handlers get ``shutdown_timeout`` seconds to return before they
    are cancelled; then the first exception a handler raised, if any, is re-raised (unless
    ``raise_handler_errors`` is false). If the block itself raised (often a
    ``ConnectionClosed`` with 1011 because the handler failed), the block's exception comes
    out with the handler's as its ``__cause__``, so that the test's traceback shows both.
    """
    async with _bare_errors() as nursery:
        server = MemoryServer(
            nursery,
            handler,
            options=options or WebSocketOptions(),
            origins=origins,
            max_connections=max_connections,
            handshake_timeout=handshake_timeout,
        )
        body_error: Exception | None = None
        try:
            yield server
        except Exception as exc:
            body_error = exc
            raise
        finally:
            with trio.CancelScope(shield=True):
                for conn in list(server.server.connections):
                    conn.close_nowait(1001, "server shutting down")
                with trio.move_on_after(shutdown_timeout):
                    await server.wait_idle()
            nursery.cancel_scope.cancel()
            if body_error is not None and server.handler_errors:
                _attach_handler_error(body_error, server.handler_errors[0])
    if raise_handler_errors and server.handler_errors:
        raise server.handler_errors[0]


@asynccontextmanager
async def open_memory_pair(
    handler: Handler,
    resource: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    client_options: WebSocketOptions | None = None,
    raise_handler_errors: bool = True,
) -> AsyncIterator[WebSocketConnection]:
    """``async with open_memory_pair(handler, "/path") as ws:`` one client of ``handler``.

    ``options`` are the server's (and the client's unless ``client_options`` is given). On
    exit the client closes with 1000 and the handler gets to finish; see
    ``open_memory_server()``.
    """
    async with (
        open_memory_server(
            handler, options=options, raise_handler_errors=raise_handler_errors
        ) as server,
        server.connect(
            resource,
            subprotocols=subprotocols,
            extra_headers=extra_headers,
            options=client_options,
        ) as ws,
    ):
        yield ws


@asynccontextmanager
async def memory_connection_pair(
    resource: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    subprotocol: str | None = None,
    options: WebSocketOptions | None = None,
) -> AsyncIterator[tuple[WebSocketConnection, WebSocketConnection]]:
    """``async with memory_connection_pair() as (server_ws, client_ws):`` two open ends.

    For code that works on a ``WebSocketConnection`` whatever its side. The server accepts
    with ``subprotocol``; on exit the client closes with 1000.
    """
    accepted: list[WebSocketConnection] = []
    ready = trio.Event()
    finished = trio.Event()

    async def handler(request: WebSocketRequest) -> None:
        accepted.append(await request.accept(subprotocol=subprotocol))
        ready.set()
        await finished.wait()

    async with open_memory_server(handler, options=options) as server:
        try:
            async with server.connect(resource, subprotocols=subprotocols) as client_ws:
                await ready.wait()
                yield accepted[0], client_ws
        finally:
            finished.set()
