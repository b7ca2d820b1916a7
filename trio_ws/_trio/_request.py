"""The request a server's handler gets: accept it (a WebSocket connection) or answer it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from ..protocol import Connection
from ..protocol._extensions import ServerExtensionFactory
from ..protocol._handshake import HeaderList, Request
from ..protocol._headers import Headers
from ._options import WebSocketOptions
from ._timer import Timer
from ._websocket import WebSocketConnection, address

__all__ = ["WebSocketRequest"]


class WebSocketRequest:
    """An opening handshake waiting for the handler's answer.

    ``accept()`` upgrades it (the connection closes with 1000 when the handler returns);
    ``respond()`` (or ``reject()``) answers with an ordinary HTTP response instead.
    """

    __slots__ = (
        "_connections",
        "_core",
        "_extensions",
        "_nursery",
        "_options",
        "_request",
        "_stream",
        "_timer",
        "answered",
        "connection",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        core: Connection,
        request: Request,
        options: WebSocketOptions,
        extensions: Sequence[ServerExtensionFactory],
        nursery: trio.Nursery,
        connections: set[WebSocketConnection],
        timer: Timer,
    ) -> None:
        self._connections = connections
        self._timer = timer
        self._stream = stream
        self._core = core
        self._request = request
        self._options = options
        self._extensions = extensions
        self._nursery = nursery
        #: The connection once ``accept()`` returned it, else ``None``.
        self.connection: WebSocketConnection | None = None
        #: True once ``accept()``, ``respond()`` or ``reject()`` was called.
        self.answered = False

    @property
    def request(self) -> Request:
        """The whole opening handshake request (target, headers, offered extensions)."""
        return self._request

    @property
    def path(self) -> str:
        """The target's path as written, percent-decoded (``Request.path``): ``//a/b`` stays."""
        return self._request.path

    @property
    def query(self) -> str:
        """The raw query string, without the ``?``."""
        return self._request.query

    @property
    def headers(self) -> Headers:
        """The request headers; look-ups ignore case."""
        return self._request.headers

    @property
    def subprotocols(self) -> tuple[str, ...]:
        """The subprotocols the client offered, in its order of preference."""
        return self._request.subprotocols

    @property
    def remote(self) -> Any:
        """The client's address, e.g. ``("127.0.0.1", 54321)``; ``None`` without a socket."""
        return address(self._stream, peer=True)

    async def accept(
        self, *, subprotocol: str | None = None, extra_headers: HeaderList = ()
    ) -> WebSocketConnection:
        """Complete the upgrade and return the open connection."""
        self._check_unanswered()
        self._core.accept(
            subprotocol=subprotocol, extensions=self._extensions, extra_headers=extra_headers
        )
        self.answered = True
        await self._stream.send_all(b"".join(self._core.data_to_send()))
        conn = WebSocketConnection(
            self._stream,
            self._core,
            self._options,
            request=self._request,
            response_headers=self._core.response_headers,
            timer=self._timer,
        )
        self.connection = conn
        self._connections.add(conn)
        conn.start(self._nursery)
        return conn

    @property
    def is_upgrade(self) -> bool:
        """False for a plain HTTP request, which can only be answered with ``respond()``."""
        return self._request.is_upgrade

    async def respond(
        self, status: int, *, headers: HeaderList = (), body: bytes | str = b""
    ) -> None:
        """Answer with an ordinary HTTP response (a page, a health check, 401, 403, 404...).

        A ``str`` body is sent as UTF-8 ``text/plain`` unless ``headers`` set Content-Type.
        """
        self._check_unanswered()
        if isinstance(body, str):
            body = body.encode("utf-8")
            if not any(name.lower() == "content-type" for name, _ in headers):
                headers = [*headers, ("Content-Type", "text/plain; charset=utf-8")]
        self._core.reject(status, headers, body)
        self.answered = True
        await self._stream.send_all(b"".join(self._core.data_to_send()))

    #: ``reject(status, ...)`` reads better for refusals; it is the same as ``respond()``.
    reject = respond

    def _check_unanswered(self) -> None:
        if self.answered:
            raise RuntimeError("this request was already accepted or rejected")
