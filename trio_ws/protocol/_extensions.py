"""Extension negotiation and the interface between extensions and the connection core.

RFC 6455 section 9: the client offers extensions in ``Sec-WebSocket-Extensions``, the server
accepts some of them in its response, and the negotiated ones may use the RSV bits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ._errors import HandshakeError

__all__ = [
    "ClientExtensionFactory",
    "Extension",
    "ExtensionParams",
    "MessageDecoder",
    "ServerExtensionFactory",
    "format_extension",
    "parse_extension",
]

#: An extension's parameters in order: ``(name, value or None)``.
ExtensionParams = list[tuple[str, "str | None"]]


class MessageDecoder(Protocol):
    """Turns one incoming message's payload pieces back into its application data.

    One per message whose first frame set the extension's RSV bits (RFC 7692 section 6.2).
    """

    def decode(self, data: bytes, *, final: bool, max_size: int | None) -> bytes:
        """Decode the next piece (``final``: the message's last); raise ``ProtocolError(1009)``
        past ``max_size`` bytes of output in the whole message (``None``: no limit)."""
        ...


class Extension(Protocol):
    """A negotiated extension, as one connection uses it (RFC 6455 section 9)."""

    #: Registered name, e.g. ``permessage-deflate``.
    name: str
    #: The RSV bits (as in frame byte 0) this extension may set.
    rsv: int

    def decoder(self, rsv: int) -> MessageDecoder | None:
        """The decoder for a message whose first frame had ``rsv`` bits, or None if plain."""
        ...

    def encode(self, opcode: int, payload: bytes) -> tuple[int, bytes]:
        """``(rsv bits, payload)`` to send for one whole message."""
        ...


class ClientExtensionFactory(Protocol):
    """Client side: what to offer in ``Sec-WebSocket-Extensions``, and the extension once
    the server agreed (RFC 6455 section 9.1). Pass it to ``Connection.initiate()``."""

    name: str

    def offer(self) -> str:
        """One offer for ``Sec-WebSocket-Extensions`` (several may be joined with commas)."""
        ...

    def accept(self, params: ExtensionParams) -> Extension:
        """The server's response parameters; raise ``HandshakeError`` if unacceptable."""
        ...


class ServerExtensionFactory(Protocol):
    """Server side: pick an acceptable offer among the client's (RFC 6455 section 9.1).
    Pass it to ``Connection.accept()``."""

    name: str

    def negotiate(self, offers: Sequence[ExtensionParams]) -> tuple[str, Extension] | None:
        """The response item and the extension for the first acceptable offer, or None."""
        ...


def _unquote(value: str) -> str:
    # Section 9.1: values are tokens or quoted-strings whose content must be a token.
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def parse_extension(item: str) -> tuple[str, ExtensionParams]:
    """``"name; a; b=1"`` -> ``("name", [("a", None), ("b", "1")])`` (section 9.1)."""
    name, *raw_params = (part.strip() for part in item.split(";"))
    if not name:
        raise HandshakeError(f"malformed extension {item!r}")
    params: ExtensionParams = []
    for raw in raw_params:
        key, sep, value = raw.partition("=")
        key = key.strip()
        if not key:
            raise HandshakeError(f"malformed extension parameter in {item!r}")
        params.append((key.lower(), _unquote(value.strip()) if sep else None))
    return name.lower(), params


def encode_message(
    extensions: Sequence[Extension], opcode: int, payload: bytes
) -> tuple[int, bytes]:
    """Apply every negotiated extension to an outgoing message: ``(rsv bits, payload)``."""
    rsv = 0
    for ext in extensions:
        bits, payload = ext.encode(opcode, payload)
        rsv |= bits
    return rsv, payload


def format_extension(name: str, params: ExtensionParams) -> str:
    return "; ".join([name] + [k if v is None else f"{k}={v}" for k, v in params])


def negotiate_server(
    offers: Sequence[str], factories: Sequence[ServerExtensionFactory]
) -> tuple[str | None, list[Extension]]:
    """Server: the response header value and the extensions accepted, in factory order."""
    parsed: list[tuple[str, ExtensionParams]] = []
    for item in offers:
        try:
            parsed.append(parse_extension(item))
        except HandshakeError:
            continue  # a malformed offer is declined, not fatal
    items: list[str] = []
    accepted: list[Extension] = []
    for factory in factories:
        mine = [params for name, params in parsed if name == factory.name]
        if not mine:
            continue
        result = factory.negotiate(mine)
        if result is not None:
            items.append(result[0])
            accepted.append(result[1])
    return (", ".join(items) or None), accepted


def negotiate_client(
    response_items: Sequence[str], factories: Sequence[ClientExtensionFactory]
) -> list[Extension]:
    """Client: the extensions the server's response agreed to; fail on anything not offered."""
    accepted: list[Extension] = []
    used: set[str] = set()
    by_name = {factory.name: factory for factory in factories}
    for item in response_items:
        name, params = parse_extension(item)
        factory = by_name.get(name)
        if factory is None:
            raise HandshakeError(f"server accepted extension {name!r}, which was not offered")
        if name in used:
            raise HandshakeError(f"server accepted extension {name!r} twice")
        used.add(name)
        accepted.append(factory.accept(params))
    return accepted
