"""trio_ws's WebSocket protocol without I/O (RFC 6455, RFC 7692): bytes in, events out.

The layer the Trio connections are built on, usable from any I/O framework (asyncio, anyio,
threads) or a test harness. A ``Connection`` takes the bytes a socket gave
(``receive_data()``) and returns events; what must go on the wire comes back as bytes. It
never reads the clock, imports Trio or does I/O.
"""

from ._connection import (
    CloseReceived,
    Connection,
    ConnectionState,
    Event,
    Message,
    MessageChunk,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
    Role,
)
from ._deflate import PerMessageDeflate
from ._errors import (
    ConnectionClosed,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RedirectError,
    WebSocketError,
)
from ._extensions import ClientExtensionFactory, Extension, ServerExtensionFactory
from ._frames import Opcode
from ._handshake import HandshakeResponse, HeaderList, Request, quote_target, split_target
from ._headers import Headers
from ._mask import speedups_enabled
from ._metrics import Metrics

__all__ = [
    "ClientExtensionFactory",
    "CloseReceived",
    "Connection",
    "ConnectionClosed",
    "ConnectionState",
    "Event",
    "Extension",
    "HandshakeError",
    "HandshakeResponse",
    "HeaderList",
    "Headers",
    "LocalProtocolError",
    "Message",
    "MessageChunk",
    "Metrics",
    "Opcode",
    "PerMessageDeflate",
    "Ping",
    "Pong",
    "ProtocolError",
    "RedirectError",
    "Request",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "ServerExtensionFactory",
    "WebSocketError",
    "quote_target",
    "speedups_enabled",
    "split_target",
]
