"""What ``Connection.receive_data()`` returns: one event per thing the peer did."""

from __future__ import annotations

import attrs

from ._handshake import HandshakeResponse, Request

__all__ = [
    "CloseReceived",
    "Event",
    "Message",
    "MessageChunk",
    "Ping",
    "Pong",
    "RequestReceived",
    "ResponseReceived",
]


@attrs.frozen
class RequestReceived:
    """Server: a valid opening handshake request (RFC 6455 section 4.2.1); answer it with
    ``accept()`` or ``reject()``."""

    request: Request


@attrs.frozen
class ResponseReceived:
    """Client: the server accepted the upgrade (section 4.2.2); the connection is OPEN."""

    response: HandshakeResponse


@attrs.frozen
class Message:
    """A complete data message (section 5.6): ``str`` for text, ``bytes`` for binary,
    decompressed already."""

    data: str | bytes


@attrs.frozen
class MessageChunk:
    """A piece of a message that came in several frames or pieces (``stream_fragments=True``).

    Text pieces are decoded already (``str``, never a split character); ``first`` and
    ``final`` bound the message.
    """

    data: str | bytes
    first: bool
    final: bool


@attrs.frozen
class Ping:
    """The peer pinged (section 5.5.2); the pong is already queued in ``data_to_send()``."""

    payload: bytes


@attrs.frozen
class Pong:
    """The peer sent a pong (section 5.5.3): an answer to our ping, or unsolicited."""

    payload: bytes


@attrs.frozen
class CloseReceived:
    """The peer's close frame (section 5.5.1): its code (1005 if it carried none) and
    reason. Our answering close frame, if we had not sent one, is already queued."""

    code: int
    reason: str


#: Any event ``receive_data()`` or ``buffer_updated()`` returns; match on its type.
Event = RequestReceived | ResponseReceived | Message | MessageChunk | Ping | Pong | CloseReceived
