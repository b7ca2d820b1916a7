"""The WebSocket server: listeners, one task per connection, the handler's request."""

from __future__ import annotations

import errno
import logging
import os
import ssl
import stat
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from ..protocol import Connection, RequestReceived, Role
from ..protocol._errors import ConnectionClosed, HandshakeError
from ..protocol._extensions import ServerExtensionFactory
from ..protocol._handshake import Request, http_response
from ..protocol._metrics import Metrics
from ._options import WebSocketOptions
from ._request import WebSocketRequest
from ._timer import Timer
from ._websocket import WebSocketConnection, address

__all__ = ["WebSocketServer", "open_unix_listener", "serve_websocket"]

logger = logging.getLogger("trio_ws")

Handler = Callable[["WebSocketRequest"], Awaitable[None]]

_TEXT = [("Content-Type", "text/plain; charset=utf-8")]

# accept() errors that mean "out of resources for now", not "the listener is broken".
_ACCEPT_CAPACITY_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS}


class WebSocketServer:
    """A running server: its listeners and bound ports; ``aclose()`` stops it.

    Made by ``serve_websocket()`` (``server = await nursery.start(serve_websocket, ...)``),
    not by hand.
    """

    def __init__(
        self,
        handler: Handler,
        listeners: Sequence[trio.abc.Listener[Any]],
        *,
        options: WebSocketOptions,
        extensions: Sequence[ServerExtensionFactory] = (),
        handshake_timeout: float = 10.0,
        max_connections: int | None = None,
        origins: Sequence[str | None] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self._handler = handler
        #: The listeners it accepts connections on (TCP, Unix, TLS).
        self.listeners = list(listeners)
        #: The options of every connection.
        self.options = options
        #: The extensions offered (permessage-deflate unless ``options.compression`` is None).
        self.extensions = list(extensions)
        #: Seconds a client has to complete its opening handshake (else 408).
        self.handshake_timeout = handshake_timeout
        #: TCP connections served at once before new requests get 503; None for no limit.
        self.max_connections = max_connections
        #: Allowed ``Origin`` values (None inside: no Origin header), or None to allow any.
        self.origins = None if origins is None else set(origins)
        self._cancel_scope = trio.CancelScope()
        self._stopped = trio.Event()
        self._accepting = [trio.CancelScope() for _ in self.listeners]
        self._streams = 0  # streams being served (in their handshake, refused or admitted)
        self._streams_gone = trio.Event()  # set when _streams drops to 0
        self._admitted = 0  # requests past the max_connections check, until their stream ends
        #: Keepalive deadlines of every connection of this server, served by one task that
        #: ``run()`` starts (a server driven without ``run()`` runs ``timer.run()`` itself).
        self.timer = Timer()
        #: Open WebSocket connections (accepted and not yet closed).
        self.connections: set[WebSocketConnection] = set()
        #: What this server counts (connections, handshakes, messages...): the ``Metrics``
        #: given to ``serve_websocket()``, else one of its own.
        self.metrics = Metrics() if metrics is None else metrics

    @property
    def ports(self) -> list[int]:
        """The TCP ports the listeners are bound to (useful after binding port 0)."""
        ports = []
        for listener in self.listeners:
            sock = _listener_socket(listener)
            if sock is not None and sock.family in (trio.socket.AF_INET, trio.socket.AF_INET6):
                ports.append(sock.getsockname()[1])
        return ports

    @property
    def port(self) -> int:
        """The first of ``ports``; IndexError if there are none (e.g. only Unix sockets)."""
        return self.ports[0]

    async def run(
        self, *, task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve until cancelled or ``aclose()``, then shut down gracefully.

        Shutting down stops accepting, closes every connection with 1001 and waits up to
        ``close_timeout`` for the closing handshakes before cancelling what is left.
        """
        # Listeners and connections run shielded, so that cancelling the server does not cut
        # connections off: they get a close frame with 1001 and time to finish the handshake.
        shield = trio.CancelScope(shield=True)
        try:
            with self._cancel_scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._serve_all, shield)
                    nursery.start_soon(self.timer.run)
                    task_status.started(self)
                    try:
                        await trio.sleep_forever()
                    finally:
                        with trio.CancelScope(shield=True):
                            await self._shutdown(shield)
        finally:
            self._stopped.set()

    async def aclose(self) -> None:
        """Shut down gracefully (see ``run()``) and return once it is done."""
        self._cancel_scope.cancel()
        await self._stopped.wait()

    async def _serve_all(self, shield: trio.CancelScope) -> None:
        with shield:
            async with trio.open_nursery() as nursery:
                for listener, accepting in zip(self.listeners, self._accepting, strict=True):
                    nursery.start_soon(self._serve_listener, listener, accepting)

    async def _serve_listener(
        self, listener: trio.abc.Listener[Any], accepting: trio.CancelScope
    ) -> None:
        """Accept on one listener; its connections live in a nursery of their own."""
        async with trio.open_nursery() as connections:
            try:
                with accepting:
                    await self._accept_loop(listener, connections)
            finally:
                await trio.aclose_forcefully(listener)

    async def _shutdown(self, shield: trio.CancelScope) -> None:
        for accepting in self._accepting:
            accepting.cancel()
        for conn in list(self.connections):
            conn.close_nowait(1001, "server shutting down")
        with trio.move_on_after(self.options.close_timeout):
            if self._streams:
                await self._streams_gone.wait()
        shield.cancel()

    async def _accept_loop(
        self, listener: trio.abc.Listener[Any], connections: trio.Nursery
    ) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno in _ACCEPT_CAPACITY_ERRNOS:
                    logger.error("accept() failed (%s); pausing 100 ms", exc)
                    await trio.sleep(0.1)
                    continue
                raise
            connections.start_soon(self.serve_stream, stream)

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one accepted stream: its handshake, the handler, then the connection.

        What the listeners do for each connection; for streams from elsewhere (e.g.
        ``trio_ws.testing``'s memory streams). Returns when the stream is closed.
        """
        remote = _Peer(stream)  # for log lines: the address is looked up only if one is written
        ws_request: WebSocketRequest | None = None
        admitted = False
        self._streams += 1
        if self._streams == 1:
            self._streams_gone = trio.Event()
        try:
            core = Connection(
                Role.SERVER,
                max_message_size=self.options.max_message_size,
                max_frame_size=self.options.max_frame_size,
                max_head_size=self.options.max_head_size,
                stream_fragments=True,
                metrics=self.metrics,
            )
            request = await self._read_request(stream, core, remote)
            if request is None:
                return
            refusal = self._refusal(request)
            if refusal is not None:
                status, message = refusal
                logger.info("refused %s %s: %s", remote, request.target, message)
                core.reject(status, _TEXT, f"{message}\n".encode())
                await stream.send_all(b"".join(core.data_to_send()))
                return
            admitted = True
            self._admitted += 1
            async with trio.open_nursery() as nursery:
                ws_request = WebSocketRequest(
                    stream,
                    core,
                    request,
                    self.options,
                    self.extensions,
                    nursery,
                    self.connections,
                    self.timer,
                )
                try:
                    await self._run_handler(ws_request, remote)
                finally:
                    if ws_request.connection is not None:
                        self.connections.discard(ws_request.connection)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the client went away
        finally:
            self._admitted -= admitted
            self._streams -= 1
            if not self._streams:
                self._streams_gone.set()
            if ws_request is None or ws_request.connection is None:
                await trio.aclose_forcefully(stream)  # else the connection's task closed it

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """The status and message to refuse a request with before the handler sees it.

        ``max_connections`` counts admitted requests (whose handler runs or whose connection
        is open), as nginx's ``limit_conn`` does: streams still in their handshake and those
        being refused take no slot, so a burst of N > limit clients gets exactly limit in.
        """
        if self.max_connections is not None and self._admitted >= self.max_connections:
            return 503, "Too many connections, try again later"
        origins = self.origins
        if (
            origins is not None
            and request.is_upgrade
            and request.headers.get("origin") not in origins
        ):
            return 403, "Origin not allowed"
        return None

    async def _read_request(
        self, stream: trio.abc.Stream, core: Connection, remote: _Peer
    ) -> Request | None:
        """Read the opening handshake; answer and return ``None`` if it is bad or too slow."""
        with trio.move_on_after(self.handshake_timeout):
            try:
                while True:
                    data = await stream.receive_some(65536)
                    for event in core.receive_data(data):
                        if isinstance(event, RequestReceived):
                            return event.request
                    if not data:
                        return None
            except HandshakeError as exc:
                logger.info("handshake from %s failed: %s", remote, exc.message)
                body = f"Failed to open a WebSocket connection: {exc.message}.\n".encode()
                headers = [*exc.headers, ("Content-Type", "text/plain; charset=utf-8")]
                self.metrics.count_handshake(exc.status)
                with trio.move_on_after(1):
                    await stream.send_all(http_response(exc.status, headers, body))
                return None
        logger.info("handshake from %s timed out", remote)
        self.metrics.count_handshake(408)
        with trio.move_on_after(1):
            await stream.send_all(http_response(408, _TEXT, b"Request Timeout\n"))
        return None

    async def _run_handler(self, ws_request: WebSocketRequest, remote: _Peer) -> None:
        try:
            await self._handler(ws_request)
        except ConnectionClosed:
            pass  # the connection ended under the handler: nothing to report
        except HandshakeError as exc:
            # accept() refused the request (e.g. a plain GET): answer with its status.
            if not ws_request.answered:
                await ws_request.respond(exc.status, headers=exc.headers, body=exc.message + "\n")
            return
        except Exception:
            logger.exception("handler failed for %s %s", remote, ws_request.path)
            conn = ws_request.connection
            if conn is not None:
                await conn.aclose(1011, "internal error")
            elif not ws_request.answered:
                await ws_request.reject(500, body="Internal Server Error\n")
            return
        conn = ws_request.connection
        if conn is not None:
            await conn.aclose(1000)
        elif not ws_request.answered:
            # The handler neither accepted nor answered: refuse rather than leave it hanging.
            if ws_request.is_upgrade:
                await ws_request.respond(403, body="Forbidden\n")
            else:
                await ws_request.respond(
                    426,
                    headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                    body="This is a WebSocket endpoint.\n",
                )


def _listener_socket(listener: trio.abc.Listener[Any]) -> Any:
    inner: Any = listener
    while isinstance(inner, trio.SSLListener):
        inner = inner.transport_listener
    return getattr(inner, "socket", None)


class _Peer:
    """A stream's peer address, formatted when a log line is written (not before)."""

    __slots__ = ("stream",)

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream

    def __str__(self) -> str:
        return _fmt(address(self.stream, peer=True))


def _fmt(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


async def serve_websocket(
    handler: Handler,
    host: str | bytes | None,
    port: int,
    *,
    ssl_context: ssl.SSLContext | None = None,
    options: WebSocketOptions | None = None,
    handshake_timeout: float = 10.0,
    max_connections: int | None = None,
    origins: Sequence[str | None] | None = None,
    reuse_port: bool = False,
    listeners: Sequence[trio.abc.Listener[Any]] | None = None,
    metrics: Metrics | None = None,
    task_status: trio.TaskStatus[WebSocketServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSockets on ``host:port`` until cancelled or ``server.aclose()``.

    ``handler(request)`` runs in its own task for each handshake; it calls
    ``await request.accept()`` to get the connection, or ``await request.reject(status)``.
    Use ``server = await nursery.start(serve_websocket, handler, host, 0)`` to learn the
    bound ports. ``ssl_context`` serves wss://. A handshake must complete within
    ``handshake_timeout`` seconds (else 408); once ``max_connections`` requests are admitted
    (handler running or connection open), new requests get 503; with ``origins``, an upgrade
    whose ``Origin`` is not listed gets 403 (list ``None`` to allow clients that send no
    Origin). Cancelling it shuts down gracefully (1001).

    ``reuse_port`` sets ``SO_REUSEPORT`` so that several processes share the port (the kernel
    spreads connections over them). ``listeners`` serves on ready-made listeners instead of
    ``host:port`` (e.g. ``open_unix_listener(path)``). The server counts what it does in
    ``metrics`` (``server.metrics``; a new ``Metrics`` if none is given, pass one to add
    several servers up).

    Raises ``OSError`` if it cannot listen (``errno.EADDRINUSE`` when the port is taken),
    with ``host:port`` in the message.
    """
    if listeners is None:
        try:
            if reuse_port:
                listeners = await _reuse_port_listeners(host, port)
            else:
                listeners = list(await trio.open_tcp_listeners(port, host=host))
        except OSError as exc:  # say which address: trio's message does not
            name = host.decode() if isinstance(host, bytes) else host or "*"
            address = f"[{name}]:{port}" if ":" in name else f"{name}:{port}"
            reason = exc.strerror or str(exc)
            raise OSError(exc.errno, f"cannot listen on {address}: {reason}") from exc
    if ssl_context is not None:
        listeners = [
            trio.SSLListener(listener, ssl_context, https_compatible=False)
            for listener in listeners
        ]
    options = options or WebSocketOptions()
    server = WebSocketServer(
        handler,
        listeners,
        options=options,
        extensions=[options.compression] if options.compression is not None else [],
        handshake_timeout=handshake_timeout,
        max_connections=max_connections,
        origins=origins,
        metrics=metrics,
    )
    await server.run(task_status=task_status)


async def _reuse_port_listeners(
    host: str | bytes | None, port: int
) -> list[trio.abc.Listener[Any]]:
    """TCP listeners with ``SO_REUSEPORT``, one per address ``host`` resolves to."""
    if not hasattr(trio.socket, "SO_REUSEPORT"):
        raise OSError("SO_REUSEPORT is not available on this platform")
    infos = await trio.socket.getaddrinfo(
        host, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    sockets = []
    try:
        for family, type_, proto, _, address in infos:
            sock = trio.socket.socket(family, type_, proto)
            sockets.append(sock)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(1024)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return [trio.SocketListener(sock) for sock in sockets]


async def open_unix_listener(path: str, *, mode: int = 0o666) -> trio.SocketListener:
    """A listener on the Unix socket ``path`` (replaced if it exists), for ``listeners=``."""
    try:
        if stat.S_ISSOCK(os.stat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, mode)
        sock.listen(1024)
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock)
