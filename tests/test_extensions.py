"""Extension negotiation (trio_ws/protocol/_extensions.py, RFC 6455 section 9):
``Sec-WebSocket-Extensions`` items parsed and formatted, the server's choice among offers, the
client's check of the response, and the RSV bits of several extensions on one message.
permessage-deflate's own parameters are in test_deflate.py.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import pytest

from trio_ws.protocol import Connection, ConnectionState, Role
from trio_ws.protocol._deflate import DeflateExtension, PerMessageDeflate
from trio_ws.protocol._errors import HandshakeError, LocalProtocolError
from trio_ws.protocol._extensions import (
    Extension,
    ExtensionParams,
    MessageDecoder,
    encode_message,
    format_extension,
    negotiate_client,
    negotiate_server,
    parse_extension,
)
from trio_ws.protocol._handshake import accept_key

NAME = "permessage-deflate"


@attrs.frozen
class FakeExtension:
    """An extension that marks a message with its RSV bit and a prefix."""

    name: str
    rsv: int
    params: ExtensionParams = attrs.field(factory=list)

    def decoder(self, rsv: int) -> MessageDecoder | None:
        return None

    def encode(self, opcode: int, payload: bytes) -> tuple[int, bytes]:
        return self.rsv, self.name.encode() + b":" + payload


@attrs.frozen
class FakeServerFactory:
    """Accepts the first offer that has a parameter ``ok``."""

    name: str
    rsv: int = 0x20
    seen: list[Sequence[ExtensionParams]] = attrs.field(factory=list)

    def negotiate(self, offers: Sequence[ExtensionParams]) -> tuple[str, Extension] | None:
        self.seen.append(offers)
        for params in offers:
            if ("ok", None) in params:
                return format_extension(self.name, params), FakeExtension(
                    self.name, self.rsv, params
                )
        return None


@attrs.frozen
class FakeClientFactory:
    name: str
    rsv: int = 0x20

    def offer(self) -> str:
        return f"{self.name}; ok"

    def accept(self, params: ExtensionParams) -> Extension:
        if ("bad", None) in params:
            raise HandshakeError("bad parameter")
        return FakeExtension(self.name, self.rsv, params)


# Parsing and formatting ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ("x-ext", ("x-ext", [])),
        (" X-Ext ", ("x-ext", [])),
        ("x-ext; a; B=1", ("x-ext", [("a", None), ("b", "1")])),
        ("x-ext;a = 2 ; c", ("x-ext", [("a", "2"), ("c", None)])),
        ('x-ext; a="15"', ("x-ext", [("a", "15")])),  # a quoted-string's content (section 9.1)
        ("x-ext; a=Value", ("x-ext", [("a", "Value")])),  # values keep their case
    ],
)
def test_parse_extension(item: str, expected: tuple[str, ExtensionParams]) -> None:
    assert parse_extension(item) == expected


@pytest.mark.parametrize("item", ["", "  ", "; a", "x-ext;;", "x-ext; =1", "x-ext; a; ;"])
def test_parse_extension_refuses_malformed_items(item: str) -> None:
    with pytest.raises(HandshakeError, match="malformed"):
        parse_extension(item)


def test_format_extension_is_read_back_by_parse_extension() -> None:
    params: ExtensionParams = [("a", None), ("b", "1")]
    assert format_extension("x-ext", params) == "x-ext; a; b=1"
    assert format_extension("x-ext", []) == "x-ext"
    assert parse_extension(format_extension("x-ext", params)) == ("x-ext", params)


def test_encode_message_applies_every_extension_in_order() -> None:
    first, second = FakeExtension("one", 0x40), FakeExtension("two", 0x20)
    assert encode_message([first, second], 1, b"data") == (0x60, b"two:one:data")
    assert encode_message([], 1, b"data") == (0, b"data")


# Server: choosing among the offers ----------------------------------------------------------


def test_negotiate_server_gives_each_factory_its_own_offers_and_keeps_factory_order() -> None:
    one, two = FakeServerFactory("x-one", 0x40), FakeServerFactory("x-two")
    header, accepted = negotiate_server(
        ["x-two; ok; n=1", "x-one; n=2", "x-unknown; ok", "x-one; ok; n=3", "x-one;;"], [one, two]
    )
    # The malformed "x-one;;" is declined without failing the others.
    assert one.seen == [[[("n", "2")], [("ok", None), ("n", "3")]]]
    assert two.seen == [[[("ok", None), ("n", "1")]]]
    assert header == "x-one; ok; n=3, x-two; ok; n=1"
    assert [ext.name for ext in accepted] == ["x-one", "x-two"]


def test_negotiate_server_without_an_acceptable_offer() -> None:
    factory = FakeServerFactory("x-one")
    assert negotiate_server(["x-one; n=1"], [factory]) == (None, [])
    assert negotiate_server([], [factory]) == (None, [])
    assert factory.seen == [[[("n", "1")]]]  # not called when nothing was offered
    assert negotiate_server(["x-one; ok"], []) == (None, [])


# Client: checking the response --------------------------------------------------------------


def test_negotiate_client_accepts_what_was_offered_in_response_order() -> None:
    factories = [FakeClientFactory("x-one"), FakeClientFactory("x-two", 0x40)]
    accepted = negotiate_client(["x-two; n=1", "x-one"], factories)
    assert accepted == [FakeExtension("x-two", 0x40, [("n", "1")]), FakeExtension("x-one", 0x20)]
    assert negotiate_client([], factories) == []


def test_negotiate_client_refuses_a_bad_response() -> None:
    factories = [FakeClientFactory("x-one")]
    with pytest.raises(HandshakeError, match="not offered"):
        negotiate_client(["x-two"], factories)
    with pytest.raises(HandshakeError, match="twice"):
        negotiate_client(["x-one", "X-One"], factories)
    with pytest.raises(HandshakeError, match="bad parameter"):
        negotiate_client(["x-one; bad"], factories)
    with pytest.raises(HandshakeError, match="malformed"):
        negotiate_client(["x-one; =1"], factories)


# With permessage-deflate and the connection -------------------------------------------------


def test_extension_not_offered() -> None:
    conn = Connection(Role.CLIENT)
    conn.initiate("example.com", "/")
    key = conn.request_headers["sec-websocket-key"]
    data = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode() + b"\r\n"
        b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
    )
    with pytest.raises(HandshakeError):
        conn.receive_data(data)
    assert conn.state is ConnectionState.CLOSED
    with pytest.raises(LocalProtocolError):
        conn.send_message("x")


def test_negotiate_server_with_other_extensions() -> None:
    header, accepted = negotiate_server(
        [
            "x-other; a=1",
            "permessage-deflate; x_unknown",
            "permessage-deflate;;",  # malformed: declined by parse_extension
            "permessage-deflate; client_max_window_bits",
        ],
        [PerMessageDeflate().server_factory()],
    )
    assert header == f"{NAME}; server_max_window_bits=12; client_max_window_bits=12"
    assert len(accepted) == 1 and isinstance(accepted[0], DeflateExtension)

    header, accepted = negotiate_server(
        ["permessage-deflate; server_max_window_bits=99"], [PerMessageDeflate()]
    )
    assert (header, accepted) == (None, [])


def test_negotiate_client_refuses_what_was_not_offered() -> None:
    factories = [PerMessageDeflate().client_factory()]
    (extension,) = negotiate_client(["permessage-deflate; server_max_window_bits=10"], factories)
    assert isinstance(extension, DeflateExtension) and extension.receive_window_bits == 10
    assert negotiate_client([], factories) == []
    with pytest.raises(HandshakeError, match="not offered"):
        negotiate_client(["x-webkit-deflate-frame"], factories)
    with pytest.raises(HandshakeError, match="twice"):
        negotiate_client(["permessage-deflate", "permessage-deflate"], factories)
    with pytest.raises(HandshakeError, match="not offered"):
        negotiate_client(["permessage-deflate"], [])
