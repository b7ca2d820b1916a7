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
from ._features._broadcast import Backplane, Recovery, Room, SlowPolicy
from ._features._envelope import json_envelope
from ._features._history import Entry, History, MemoryHistory, Position
from ._features._presence import MemoryPresence, Presence, PresenceEvent
from ._features._prometheus import PrometheusCollector, metrics_to_prometheus
from ._features._redis import RedisBackplane
from ._features._redis_history import RedisHistory
from ._features._redis_presence import RedisPresence
from ._features._router import HTTPResult, Router
from ._features._startup import StartupError, run_main
from ._features._workers import run_workers, wait_for_stop
from ._trio._client import client_handshake, connect_websocket, open_websocket, open_websocket_url
from ._trio._reconnect import Reconnect, ReconnectAttempt, is_retryable
from ._trio._server import WebSocketRequest, WebSocketServer, open_unix_listener, serve_websocket
from ._trio._websocket import WebSocketConnection, WebSocketOptions
from .protocol._connection import ConnectionState
from .protocol._deflate import PerMessageDeflate
from .protocol._errors import (
    ConnectionClosed,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RedirectError,
    WebSocketError,
)
from .protocol._handshake import Request
from .protocol._headers import Headers
from .protocol._mask import speedups_enabled
from .protocol._metrics import Metrics

__version__ = "0.1.0"

__all__ = [
    "Backplane",
    "ConnectionClosed",
    "ConnectionState",
    "Entry",
    "HTTPResult",
    "HandshakeError",
    "Headers",
    "History",
    "LocalBackplane",
    "LocalProtocolError",
    "MemoryHistory",
    "MemoryPresence",
    "Metrics",
    "PerMessageDeflate",
    "Position",
    "Presence",
    "PresenceEvent",
    "PrometheusCollector",
    "ProtocolError",
    "Reconnect",
    "ReconnectAttempt",
    "Recovery",
    "RedirectError",
    "RedisBackplane",
    "RedisHistory",
    "RedisPresence",
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
    "json_envelope",
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
