"""trio_ws: WebSocket (RFC 6455, RFC 7692) server and client for Trio.

Serve with ``serve_websocket(handler, host, port)``; connect with
``async with open_websocket_url("ws://host:port/path") as ws``. The protocol core
(``trio_ws.protocol``) does no I/O; ``trio_ws.testing`` runs handlers in memory.

The names of the Trio layer and the features are imported when first used, so that
``import trio_ws.protocol`` (whose package this is) loads neither Trio nor them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
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

#: Where each name that needs Trio comes from (imported by ``__getattr__`` when first used).
_LAZY = {
    "Backplane": "._features._broadcast",
    "Entry": "._features._history",
    "HTTPResult": "._features._router",
    "History": "._features._history",
    "LocalBackplane": "._features._backplane",
    "MemoryHistory": "._features._history",
    "MemoryPresence": "._features._presence",
    "Position": "._features._history",
    "Presence": "._features._presence",
    "PresenceEvent": "._features._presence",
    "PrometheusCollector": "._features._prometheus",
    "Reconnect": "._trio",
    "ReconnectAttempt": "._trio",
    "Recovery": "._features._broadcast",
    "RedisBackplane": "._features._redis",
    "RedisHistory": "._features._redis_history",
    "RedisPresence": "._features._redis_presence",
    "Room": "._features._broadcast",
    "Router": "._features._router",
    "SlowPolicy": "._features._broadcast",
    "StartupError": "._features._startup",
    "WebSocketConnection": "._trio",
    "WebSocketOptions": "._trio",
    "WebSocketRequest": "._trio",
    "WebSocketServer": "._trio",
    "basic_auth": "._features._auth",
    "basic_credentials": "._features._auth",
    "bearer_token": "._features._auth",
    "client_handshake": "._trio",
    "connect_websocket": "._trio",
    "find_token": "._features._auth",
    "is_retryable": "._trio",
    "json_envelope": "._features._envelope",
    "metrics_to_prometheus": "._features._prometheus",
    "open_unix_listener": "._trio",
    "open_websocket": "._trio",
    "open_websocket_url": "._trio",
    "request_cookies": "._features._auth",
    "require": "._features._auth",
    "run_main": "._features._startup",
    "run_workers": "._features._workers",
    "serve_websocket": "._trio",
    "wait_for_stop": "._features._workers",
}

__version__ = "0.1.0"

__all__ = [
    "Backplane",
    "CloseCode",
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


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'trio_ws' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next look-up finds it without coming here
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
