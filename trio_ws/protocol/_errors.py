"""Exceptions shared by the protocol core and the Trio layer."""

from __future__ import annotations

__all__ = [
    "ConnectionClosed",
    "HandshakeError",
    "LocalProtocolError",
    "ProtocolError",
    "RedirectError",
    "WebSocketError",
]


class WebSocketError(Exception):
    """Base class of every exception trio_ws raises."""


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; ``code`` is the close code to fail the connection with."""

    def __init__(self, code: int, reason: str) -> None:
        code = int(code)  # a plain int, even from a ``CloseCode``
        super().__init__(f"{reason} (close code {code})")
        #: The close code the connection is failed with.
        self.code = code
        #: The reason sent in the close frame.
        self.reason = reason


class LocalProtocolError(WebSocketError):
    """This side asked for something the protocol forbids in the current state."""


class HandshakeError(WebSocketError):
    """The opening handshake failed.

    On the server, ``status`` is the HTTP status to answer with; on the client, ``status``,
    ``headers`` and ``body`` describe the server's non-101 response when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        headers: list[tuple[str, str]] | None = None,
        body: bytes = b"",
    ) -> None:
        super().__init__(message)
        #: What went wrong.
        self.message = message
        #: The HTTP status: to answer with (server) or received (client); 0 without a response.
        self.status = status
        #: The response headers, as ``(name, value)`` pairs.
        self.headers = headers or []
        #: The response body (client side).
        self.body = body


class RedirectError(HandshakeError):
    """The client did not follow a redirect: it would drop TLS (wss:// to ws://), its
    ``Location`` is not a usable WebSocket URL, or there were more than ``max_redirects``.

    ``status``, ``headers`` and ``body`` are those of the redirect response.
    """


class ConnectionClosed(WebSocketError):
    """The connection is closed; ``code`` and ``reason`` say how (RFC 6455 section 7.1.5).

    They are the peer's close frame if one arrived; else the code and reason we failed the
    connection with (1002, 1007, 1009, 1011 "keepalive ping timeout"...); else 1006 with an
    empty reason: no close frame came, even if we sent one.
    """

    def __init__(self, code: int, reason: str, *, by_peer: bool | None = None) -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        #: The close code (1006 if no close frame was exchanged).
        self.code = code
        #: The close reason.
        self.reason = reason
        #: True if the peer started the closing handshake, False if we did, None if neither.
        self.by_peer = by_peer
