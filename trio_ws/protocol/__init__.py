"""trio_ws's WebSocket protocol without I/O (RFC 6455, RFC 7692): bytes in, events out.

The layer the Trio connections are built on, usable from any I/O framework (asyncio, anyio,
threads) or a test harness. A ``Connection`` takes the bytes a socket gave
(``receive_data()``) and returns events; everything that must go on the wire (handshake,
messages, pings, close frames, automatic replies) is queued and comes out of
``data_to_send()``, a list of bytes to write in order. It never reads the clock, imports
Trio or does I/O.
"""

from ._close import CloseCode, encode_close_reason, is_valid_close_code
from ._connection import Connection
from ._deflate import PerMessageDeflate
from ._errors import (
    ConnectionClosed,
    HandshakeError,
    LocalProtocolError,
    ProtocolError,
    RedirectError,
    WebSocketError,
)
from ._events import (
    CloseReceived,
    Event,
    Message,
    MessageChunk,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
)
from ._extensions import (
    ClientExtensionFactory,
    Extension,
    MessageDecoder,
    ServerExtensionFactory,
)
from ._frames import Opcode
from ._handshake import HandshakeResponse, HeaderList, Request
from ._headers import Headers
from ._mask import speedups_enabled
from ._metrics import Metrics
from ._state import ConnectionState, Role
from ._urls import quote_target, split_target

__all__ = [
    "ClientExtensionFactory",
    "CloseCode",
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
    "MessageDecoder",
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
    "encode_close_reason",
    "is_valid_close_code",
    "quote_target",
    "speedups_enabled",
    "split_target",
]
