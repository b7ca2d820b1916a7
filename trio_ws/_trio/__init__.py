"""The Trio layer: connections on Trio streams, the server and the client.

A connection (``_websocket``) reads in its receivers' tasks and spawns a task of its own only
when needed; its outgoing bytes go through one bounded outbox (``_outbox``); keepalive runs
on one timer per server (``_timer``). Then the server: listeners (``_server``) and the
handler's request (``_request``); and the client: connecting (``_client``) and reconnecting
(``_reconnect``). Built on ``trio_ws.protocol`` only.

The names below are the interface the features above (``trio_ws._features``,
``trio_ws.testing``) use: the public ones (re-exported by ``trio_ws``), and three internal
ones: a connection's ``Outbox`` (``ws.outbox``, with ``Offer``, for rooms), and
``http_exchange()`` and ``running_block()`` for the in-memory test server.
"""

from ._client import (
    client_handshake,
    connect_websocket,
    http_exchange,
    open_websocket,
    open_websocket_url,
    running_block,
)
from ._options import WebSocketOptions
from ._outbox import Offer, Outbox
from ._reconnect import Reconnect, ReconnectAttempt, is_retryable
from ._request import WebSocketRequest
from ._server import WebSocketServer, open_unix_listener, serve_websocket
from ._websocket import WebSocketConnection

__all__ = [
    "Offer",
    "Outbox",
    "Reconnect",
    "ReconnectAttempt",
    "WebSocketConnection",
    "WebSocketOptions",
    "WebSocketRequest",
    "WebSocketServer",
    "client_handshake",
    "connect_websocket",
    "http_exchange",
    "is_retryable",
    "open_unix_listener",
    "open_websocket",
    "open_websocket_url",
    "running_block",
    "serve_websocket",
]
