"""Route requests by path: WebSocket endpoints and plain HTTP GETs on one server.

A ``Router`` is itself a handler: ``serve_websocket(router, host, port)``. Patterns are exact
paths with optional ``{name}`` segments, each matching one non-empty path segment::

    router = Router()

    @router.route("/rooms/{room}")
    async def room(request: WebSocketRequest, room: str) -> None:
        ws = await request.accept()
        ...

    @router.http("/health")
    async def health(request: WebSocketRequest) -> HTTPResult:
        return 200, [], "ok\\n"

Handlers receive the request and the path parameters as keyword arguments (percent-decoded
``str`` values).

"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import unquote

from .._trio import WebSocketRequest
from ..protocol import HeaderList, split_target

__all__ = ["HTTPHandler", "HTTPResult", "RouteHandler", "Router"]

#: What an HTTP handler returns: ``(status, headers, body)``, or ``None`` if it already
#: answered with ``request.respond()``. A ``str`` body is sent as UTF-8 ``text/plain``.
HTTPResult = tuple[int, HeaderList, bytes | str]

#: ``await handler(request, **params)`` for a WebSocket route.
RouteHandler = Callable[..., Awaitable[None]]

#: ``await handler(request, **params)`` for an HTTP route; returns an ``HTTPResult`` or None.
HTTPHandler = Callable[..., Awaitable[HTTPResult | None]]

_H = TypeVar("_H", bound=Callable[..., Awaitable[Any]])


class _Pattern:
    """A compiled path pattern: literal segments and ``{name}`` parameters."""

    def __init__(self, pattern: str) -> None:
        if not pattern.startswith("/"):
            raise ValueError(f"a route must start with '/': {pattern!r}")
        self.pattern = pattern
        #: One item per segment: the literal text, or ``(name,)`` for a parameter.
        self.segments: list[str | tuple[str]] = []
        names: set[str] = set()
        for segment in pattern.split("/")[1:]:
            if segment.startswith("{") and segment.endswith("}"):
                name = segment[1:-1]
                if not name.isidentifier() or name == "request" or name in names:
                    raise ValueError(f"bad or repeated parameter {segment!r} in {pattern!r}")
                names.add(name)
                self.segments.append((name,))
            elif "{" in segment or "}" in segment:
                raise ValueError(f"a parameter must be a whole segment: {pattern!r}")
            else:
                self.segments.append(segment)
        self.is_exact = not names

    def match(self, segments: tuple[str, ...]) -> dict[str, str] | None:
        """The parameters if the (percent-decoded) segments match, else ``None``."""
        if len(segments) != len(self.segments):
            return None
        params: dict[str, str] = {}
        for expected, value in zip(self.segments, segments, strict=True):
            if isinstance(expected, tuple):
                if not value:
                    return None
                params[expected[0]] = value
            elif value != expected:
                return None
        return params


class _Table:
    """Routes of one kind (WebSocket or HTTP): exact paths first, then patterns in order."""

    def __init__(self) -> None:
        #: Exact routes by their segments.
        self.exact: dict[tuple[str, ...], Callable[..., Awaitable[Any]]] = {}
        self.patterns: list[tuple[_Pattern, Callable[..., Awaitable[Any]]]] = []

    def add(self, path: str, handler: Callable[..., Awaitable[Any]]) -> None:
        pattern = _Pattern(path)
        key = tuple(path.split("/")[1:])
        if key in self.exact or any(p.pattern == path for p, _ in self.patterns):
            raise ValueError(f"a handler is already registered for {path!r}")
        if pattern.is_exact:
            self.exact[key] = handler
        else:
            self.patterns.append((pattern, handler))

    def find(
        self, segments: tuple[str, ...]
    ) -> tuple[Callable[..., Awaitable[Any]], dict[str, str]] | None:
        handler = self.exact.get(segments)
        if handler is not None:
            return handler, {}
        for pattern, handler in self.patterns:
            params = pattern.match(segments)
            if params is not None:
                return handler, params
        return None


class Router:
    """Dispatch each request to the handler registered for its path.

    Routes are written percent-decoded (``/café/{name}``) and match segment by segment: the
    raw path of the request target (before the first ``?``, as written) is split at each
    ``/``, then each segment is percent-decoded. So a route matches the requests whose
    ``request.path`` equals it, except that an encoded slash (``%2F``) stays inside its
    segment: ``/rooms/a%2Fb`` gives ``room="a/b"`` and does not match ``/rooms/a/b``. Paths
    are not normalized: ``//rooms/x``, ``/rooms/x/`` and ``/a/../rooms/x`` match no
    ``/rooms/{room}`` (RFC 9112 section 3.2.1).

    WebSocket routes (``route()``, ``add()``) answer upgrade requests; HTTP routes
    (``http()``, ``add_http()``) answer plain GETs. A path may have one of each. Answers when
    nothing matches: 404 for an unknown path, 426 (Upgrade Required) for a plain GET to a
    WebSocket-only path, 404 for an upgrade to an HTTP-only path.
    """

    def __init__(self) -> None:
        self._websocket = _Table()
        self._http = _Table()

    def add(self, path: str, handler: RouteHandler) -> None:
        """Register ``await handler(request, **params)`` for WebSocket upgrades on ``path``."""
        self._websocket.add(path, handler)

    def route(self, path: str) -> Callable[[_H], _H]:
        """Decorator form of ``add()``: ``@router.route("/chat/{room}")``."""

        def decorate(handler: _H) -> _H:
            self.add(path, handler)
            return handler

        return decorate

    def add_http(self, path: str, handler: HTTPHandler) -> None:
        """Register ``await handler(request, **params)`` for plain HTTP GETs on ``path``.

        The handler returns ``(status, headers, body)``, or ``None`` once it has answered
        with ``request.respond()`` itself.
        """
        self._http.add(path, handler)

    def http(self, path: str) -> Callable[[_H], _H]:
        """Decorator form of ``add_http()``: ``@router.http("/health")``."""

        def decorate(handler: _H) -> _H:
            self.add_http(path, handler)
            return handler

        return decorate

    async def __call__(self, request: WebSocketRequest) -> None:
        """Handle one request: the server calls this like any handler."""
        # Split before decoding, so that %2F stays inside its segment (see the module doc).
        raw_path = split_target(request.request.target)[0]
        segments = tuple(unquote(segment) for segment in raw_path.split("/")[1:])
        own = self._websocket if request.is_upgrade else self._http
        found = own.find(segments)
        if found is None:
            other = self._http if request.is_upgrade else self._websocket
            if not request.is_upgrade and other.find(segments) is not None:
                await request.respond(
                    426,
                    headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
                    body="This is a WebSocket endpoint.\n",
                )
            else:
                await request.respond(404, body="Not Found\n")
            return
        handler, params = found
        result = await handler(request, **params)
        if request.is_upgrade:
            return
        if result is not None:
            status, headers, body = result
            await request.respond(status, headers=headers, body=body)
        elif not request.answered:
            raise RuntimeError(
                f"the HTTP handler for {request.path!r} returned None without answering"
            )
