"""trio_ws: WebSocket (RFC 6455, RFC 7692) server and client for Trio.

Serve with ``serve_websocket(handler, host, port)``; connect with
``async with open_websocket_url("ws://host:port/path") as ws``. The protocol core in
``trio_ws.protocol`` does no I/O and can be used on its own.
"""

from ._broadcast import Room, SlowPolicy
from ._client import connect_websocket, open_websocket, open_websocket_url
from ._connection import ConnectionState
from ._deflate import PerMessageDeflate
from ._errors import (
    ConnectionClosed,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    WebSocketError,
)
from ._handshake import Request
from ._headers import Headers
from ._server import WebSocketRequest, WebSocketServer, serve_websocket
from ._websocket import WebSocketConnection, WebSocketOptions

__version__ = "0.1.0"

__all__ = [
    "ConnectionClosed",
    "ConnectionState",
    "HandshakeError",
    "Headers",
    "LocalProtocolError",
    "PerMessageDeflate",
    "ProtocolError",
    "Request",
    "Room",
    "SlowPolicy",
    "WebSocketConnection",
    "WebSocketError",
    "WebSocketOptions",
    "WebSocketRequest",
    "WebSocketServer",
    "connect_websocket",
    "open_websocket",
    "open_websocket_url",
    "serve_websocket",
]
