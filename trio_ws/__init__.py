"""trio_ws: WebSocket (RFC 6455, RFC 7692) server and client for Trio.

Serve with ``serve_websocket(handler, host, port)``; connect with
``async with open_websocket_url("ws://host:port/path") as ws``. The protocol core
(``trio_ws._connection.Connection``) does no I/O; ``trio_ws.testing`` runs handlers in memory.
"""

from ._auth import basic_auth, basic_credentials, bearer_token, find_token, request_cookies, require
from ._backplane import Backplane, LocalBackplane
from ._broadcast import Room, SlowPolicy
from ._client import client_handshake, connect_websocket, open_websocket, open_websocket_url
from ._connection import ConnectionState
from ._deflate import PerMessageDeflate
from ._errors import (
    ConnectionClosed,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RedirectError,
    WebSocketError,
)
from ._handshake import Request
from ._headers import Headers
from ._mask import speedups_enabled
from ._metrics import Metrics, PrometheusCollector, metrics_to_prometheus
from ._reconnect import Reconnect, ReconnectAttempt, is_retryable
from ._redis import RedisBackplane
from ._router import HTTPResult, Router
from ._server import WebSocketRequest, WebSocketServer, open_unix_listener, serve_websocket
from ._startup import StartupError, run_main
from ._websocket import WebSocketConnection, WebSocketOptions
from ._workers import run_workers, wait_for_stop

__version__ = "0.1.0"

__all__ = [
    "Backplane",
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
