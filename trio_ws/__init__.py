"""trio_ws: WebSocket (RFC 6455, RFC 7692) server and client for Trio.

Serve with ``serve_websocket(handler, host, port)``; connect with
``async with open_websocket_url("ws://host:port/path") as ws``. The protocol core
(``trio_ws.protocol``) does no I/O; ``trio_ws.testing`` runs handlers in memory.
"""

from ._features._auth import (
    basic_auth,
    basic_credentials,
    bearer_token,
    find_token,
    request_cookies,
    require,
)
from ._features._backplane import LocalBackplane
from ._features._broadcast import Backplane, Room, SlowPolicy
from ._features._prometheus import PrometheusCollector, metrics_to_prometheus
from ._features._redis import RedisBackplane
from ._features._router import HTTPResult, Router
from ._features._startup import StartupError, run_main
from ._features._workers import run_workers, wait_for_stop
from ._trio import (
    Reconnect,
    ReconnectAttempt,
    WebSocketConnection,
    WebSocketOptions,
    WebSocketRequest,
    WebSocketServer,
    client_handshake,
    connect_websocket,
    is_retryable,
    open_unix_listener,
    open_websocket,
    open_websocket_url,
    serve_websocket,
)
from .protocol import (
    CloseCode,
    ConnectionClosed,
    ConnectionState,
    HandshakeError,
    Headers,
    LocalProtocolError,
    Metrics,
    PerMessageDeflate,
    ProtocolError,
    RedirectError,
    Request,
    WebSocketError,
    speedups_enabled,
)

__version__ = "0.1.0"

__all__ = [
    "Backplane",
    "CloseCode",
    "ConnectionClosed",
    "ConnectionState",
    "HTTPResult",
    "HandshakeError",
    "Headers",
    "LocalBackplane",
    "LocalProtocolError",
    "Metrics",
    "PerMessageDeflate",
    "PrometheusCollector",
    "ProtocolError",
    "Reconnect",
    "ReconnectAttempt",
    "RedirectError",
    "RedisBackplane",
    "Request",
    "Room",
    "Router",
    "SlowPolicy",
    "StartupError",
    "WebSocketConnection",
    "WebSocketError",
    "WebSocketOptions",
    "WebSocketRequest",
    "WebSocketServer",
    "basic_auth",
    "basic_credentials",
    "bearer_token",
    "client_handshake",
    "connect_websocket",
    "find_token",
    "is_retryable",
    "metrics_to_prometheus",
    "open_unix_listener",
    "open_websocket",
    "open_websocket_url",
    "request_cookies",
    "require",
    "run_main",
    "run_workers",
    "serve_websocket",
    "speedups_enabled",
    "wait_for_stop",
]
