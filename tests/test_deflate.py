"""permessage-deflate (RFC 7692): negotiation, compression, limits and interop with websockets.

No sockets: two sans-I/O ``Connection`` objects talk through byte strings. Run this file as a
script (``python tests/test_deflate.py``) to print the zlib memory per connection quoted in
``trio_ws/_deflate.py``.
"""

from __future__ import annotations

import itertools
import json
import random
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Sequence

import attrs
import pytest
from helpers import drained
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets import __version__ as websockets_version
from websockets.exceptions import NegotiationError
from websockets.extensions import permessage_deflate as ws_deflate
from websockets.frames import Frame as WsFrame
from websockets.frames import Opcode as WsOpcode

from trio_ws.protocol import (
    CloseReceived,
    Connection,
    ConnectionState,
    Message,
    RequestReceived,
    ResponseReceived,
    Role,
)
from trio_ws.protocol._deflate import DeflateExtension, PerMessageDeflate
from trio_ws.protocol._errors import HandshakeError, ProtocolError
from trio_ws.protocol._extensions import (
    Extension,
    ExtensionParams,
    parse_extension,
)
from trio_ws.protocol._frames import RSV1, FrameHeader, FrameParser, Opcode, encode_frame, new_mask

TAIL = b"\x00\x00\xff\xff"
#: pip gives Python 3.10 websockets 16, later Pythons websockets 17.
WEBSOCKETS_MAJOR = int(websockets_version.split(".")[0])
NAME = "permessage-deflate"


# Helpers ------------------------------------------------------------------------------------


def offers_of(header: str) -> list[ExtensionParams]:
    """The parameters of each ``permessage-deflate`` offer in a header value."""
    return [params for name, params in map(parse_extension, header.split(",")) if name == NAME]


def params(item: str) -> ExtensionParams:
    return parse_extension(f"{NAME}; {item}" if item else NAME)[1]


def server_negotiate(settings: PerMessageDeflate, *offers: str) -> tuple[str, DeflateExtension]:
    result = settings.negotiate([params(offer) for offer in offers])
    assert result is not None
    return result


def handshake(
    client_settings: PerMessageDeflate | None = None,
    server_settings: PerMessageDeflate | None = None,
    *,
    max_message_size: int | None = 1 << 20,
) -> tuple[Connection, Connection]:
    """An OPEN client and server that negotiated with these settings (default ones if None)."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER, max_message_size=max_message_size)
    request = drained(
        client,
        client.initiate(
            "example.com",
            "/",
            extensions=[(client_settings or PerMessageDeflate()).client_factory()],
        ),
    )
    events = server.receive_data(request)
    assert isinstance(events[0], RequestReceived)
    response = drained(
        server,
        server.accept(extensions=[(server_settings or PerMessageDeflate()).server_factory()]),
    )
    assert isinstance(client.receive_data(response)[0], ResponseReceived)
    assert client.state is server.state is ConnectionState.OPEN
    return client, server


def frames(data: bytes, *, masked: bool) -> list[tuple[FrameHeader, bytes]]:
    """Parse whole frames out of wire bytes."""
    parser = FrameParser(expect_masked=masked, max_frame_size=None)
    parser.allowed_rsv = 0x70
    parser.feed(data)
    out: list[tuple[FrameHeader, bytes]] = []
    pieces: list[bytes] = []
    while (item := parser.next()) is not None:
        header, piece, done = item
        pieces.append(piece)
        if done:
            out.append((header, b"".join(pieces)))
            pieces = []
    assert parser.buffered == 0
    return out


def transfer(sender: Connection, receiver: Connection, message: str | bytes) -> bytes:
    """Send one message; check it arrives intact; return the frame's payload on the wire."""
    wire = drained(sender, sender.send_message(message))
    ((_, payload),) = frames(wire, masked=sender.role is Role.CLIENT)
    assert receiver.receive_data(wire) == [Message(message)]
    assert receiver.failure is None
    return payload


def strict_inflate(data: bytes, window_bits: int) -> bytes:
    """Inflate a message with a small output buffer, so that distances past the window fail.

    Within one ``decompress()`` call zlib may copy from anything it produced during that call;
    capping each call's output forces matches through the ``2**window_bits`` window.
    """
    inflater = zlib.decompressobj(wbits=-window_bits)
    out = []
    pending = data + TAIL
    while pending:
        out.append(inflater.decompress(pending, 64))
        pending = inflater.unconsumed_tail
    return b"".join(out)


def json_message(i: int) -> str:
    return json.dumps(
        {
            "type": "update",
            "sequence": i,
            "items": [{"id": i * 10 + k, "name": f"item {k}", "active": True} for k in range(8)],
        }
    )


# Settings -----------------------------------------------------------------------------------


def test_defaults() -> None:
    s = PerMessageDeflate()
    assert (s.server_max_window_bits, s.client_max_window_bits, s.mem_level) == (12, 12, 5)
    assert (s.server_no_context_takeover, s.client_no_context_takeover) == (False, False)
    assert s.compress_level == 6 and s.min_size == 32
    assert s.name == NAME
    assert s.client_factory() is s and s.server_factory() is s


@pytest.mark.parametrize(
    "kwargs",
    [
        {"server_max_window_bits": 7},
        {"server_max_window_bits": 16},
        {"client_max_window_bits": 0},
        {"compress_level": 10},
        {"compress_level": -2},
        {"mem_level": 0},
        {"mem_level": 10},
        {"min_size": -1},
    ],
)
def test_invalid_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError):
        PerMessageDeflate(**kwargs)  # type: ignore[arg-type]


def test_settings_are_frozen() -> None:
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        PerMessageDeflate().min_size = 0  # type: ignore[misc]


# Client offers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "offer"),
    [
        (
            PerMessageDeflate(),
            "permessage-deflate; server_max_window_bits=12; client_max_window_bits=12, "
            "permessage-deflate; client_max_window_bits=12",
        ),
        (
            PerMessageDeflate(server_max_window_bits=None),
            "permessage-deflate; client_max_window_bits=12",
        ),
        (
            PerMessageDeflate(server_max_window_bits=None, client_max_window_bits=None),
            "permessage-deflate; client_max_window_bits",
        ),
        (
            PerMessageDeflate(
                server_no_context_takeover=True,
                client_no_context_takeover=True,
                server_max_window_bits=9,
                client_max_window_bits=None,
            ),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits, "
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "client_max_window_bits",
        ),
    ],
)
def test_client_offer(settings: PerMessageDeflate, offer: str) -> None:
    assert settings.offer() == offer
    # Every offer is valid for our own server.
    for item in offers_of(offer):
        assert PerMessageDeflate().negotiate([item]) is not None


# Server negotiation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "offer", "response", "ext"),
    [
        # (send bits, send no takeover, receive bits, receive no takeover)
        (PerMessageDeflate(), "", "server_max_window_bits=12", (12, False, 15, False)),
        (
            PerMessageDeflate(server_max_window_bits=None, client_max_window_bits=None),
            "",
            "",
            (15, False, 15, False),
        ),
        (
            PerMessageDeflate(),
            "client_max_window_bits",
            "server_max_window_bits=12; client_max_window_bits=12",
            (12, False, 12, False),
        ),
        (
            PerMessageDeflate(client_max_window_bits=None),
            "client_max_window_bits",
            "server_max_window_bits=12",
            (12, False, 15, False),
        ),
        (
            PerMessageDeflate(client_max_window_bits=None),
            "client_max_window_bits=10",
            "server_max_window_bits=12; client_max_window_bits=10",
            (12, False, 10, False),
        ),
        (
            PerMessageDeflate(),
            "client_max_window_bits=14",
            "server_max_window_bits=12; client_max_window_bits=12",
            (12, False, 12, False),
        ),
        (
            PerMessageDeflate(),
            "client_max_window_bits=8",
            "server_max_window_bits=12; client_max_window_bits=8",
            (12, False, 8, False),
        ),
        (
            PerMessageDeflate(),
            "server_max_window_bits=10",
            "server_max_window_bits=10",
            (10, False, 15, False),
        ),
        (
            PerMessageDeflate(),
            "server_max_window_bits=14",
            "server_max_window_bits=12",
            (12, False, 15, False),
        ),
        (
            PerMessageDeflate(server_max_window_bits=None),
            "server_max_window_bits=14",
            "server_max_window_bits=14",
            (14, False, 15, False),
        ),
        (
            PerMessageDeflate(),
            "server_max_window_bits=8",
            "server_max_window_bits=8",
            (8, False, 15, False),
        ),
        (
            PerMessageDeflate(),
            "server_no_context_takeover",
            "server_no_context_takeover; server_max_window_bits=12",
            (12, True, 15, False),
        ),
        (
            PerMessageDeflate(),
            "client_no_context_takeover",
            "client_no_context_takeover; server_max_window_bits=12",
            (12, False, 15, True),
        ),
        (
            PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True),
            "",
            "server_no_context_takeover; client_no_context_takeover; server_max_window_bits=12",
            (12, True, 15, True),
        ),
        (
            PerMessageDeflate(server_max_window_bits=None, client_max_window_bits=None),
            "server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=11",
            "server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=9; client_max_window_bits=11",
            (9, True, 11, True),
        ),
        # Section 7.1.1.1: the server may add server_no_context_takeover on its own; here to
        # browsers' offer, and to a client that offered it too (granted once, not twice).
        (
            PerMessageDeflate(server_no_context_takeover=True),
            "client_max_window_bits",
            "server_no_context_takeover; server_max_window_bits=12; client_max_window_bits=12",
            (12, True, 12, False),
        ),
        (
            PerMessageDeflate(server_no_context_takeover=True),
            "server_no_context_takeover",
            "server_no_context_takeover; server_max_window_bits=12",
            (12, True, 15, False),
        ),
        # Parameter names are case-insensitive, quoted values are unquoted (RFC 6455 9.1).
        (
            PerMessageDeflate(),
            'Server_Max_Window_Bits="10"',
            "server_max_window_bits=10",
            (10, False, 15, False),
        ),
    ],
)
def test_server_negotiation(
    settings: PerMessageDeflate, offer: str, response: str, ext: tuple[int, bool, int, bool]
) -> None:
    header, extension = server_negotiate(settings, offer)
    assert header == (f"{NAME}; {response}" if response else NAME)
    assert (
        extension.send_window_bits,
        extension.send_no_context_takeover,
        extension.receive_window_bits,
        extension.receive_no_context_takeover,
    ) == ext
    assert extension.name == NAME and extension.rsv == RSV1
    # Our client accepts whatever our server answers to an offer it could have made.
    if "server_no_context_takeover" not in offer:
        PerMessageDeflate(client_max_window_bits=None).accept(params(header[len(NAME) + 2 :]))


INVALID_OFFERS = [
    "x_unknown",
    "x_unknown=1",
    "server_no_context_takeover; server_no_context_takeover",
    "client_no_context_takeover; client_no_context_takeover",
    "server_max_window_bits=10; server_max_window_bits=10",
    "client_max_window_bits; client_max_window_bits=10",
    "server_no_context_takeover=1",
    "client_no_context_takeover=",
    "server_max_window_bits",
    "server_max_window_bits=7",
    "server_max_window_bits=16",
    "server_max_window_bits=09",
    "server_max_window_bits=+9",
    "server_max_window_bits=1e1",
    "server_max_window_bits=",
    "client_max_window_bits=7",
    "client_max_window_bits=16",
    "client_max_window_bits=abc",
    'client_max_window_bits=""',
]


@pytest.mark.parametrize("bad", INVALID_OFFERS)
def test_server_declines_invalid_offer_and_takes_the_next(bad: str) -> None:
    settings = PerMessageDeflate()
    assert settings.negotiate([params(bad)]) is None
    header, extension = server_negotiate(settings, bad, "server_max_window_bits=10")
    assert header == f"{NAME}; server_max_window_bits=10"
    assert extension.send_window_bits == 10


def test_server_first_acceptable_offer_wins() -> None:
    header, extension = server_negotiate(
        PerMessageDeflate(server_max_window_bits=None),
        "server_max_window_bits=11",
        "server_max_window_bits=13",
    )
    assert header == f"{NAME}; server_max_window_bits=11"
    assert extension.send_window_bits == 11
    assert PerMessageDeflate().negotiate([]) is None


# Client validation of the response -----------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "response", "ext"),
    [
        (PerMessageDeflate(), "", (12, False, 15, False)),
        (PerMessageDeflate(client_max_window_bits=None), "", (15, False, 15, False)),
        (PerMessageDeflate(), "server_max_window_bits=12", (12, False, 12, False)),
        # An answer to the fallback offer may announce any window, even over the one asked.
        (PerMessageDeflate(), "server_max_window_bits=14", (12, False, 14, False)),
        (PerMessageDeflate(), "server_max_window_bits=8", (12, False, 8, False)),
        (PerMessageDeflate(), "client_max_window_bits=9", (9, False, 15, False)),
        (PerMessageDeflate(), "client_max_window_bits=8", (8, False, 15, False)),
        (
            PerMessageDeflate(client_max_window_bits=None),
            "client_max_window_bits=15",
            (15, False, 15, False),
        ),
        (PerMessageDeflate(), "client_no_context_takeover", (12, True, 15, False)),
        (PerMessageDeflate(client_no_context_takeover=True), "", (12, True, 15, False)),
        (PerMessageDeflate(), "server_no_context_takeover", (12, False, 15, True)),
        (
            PerMessageDeflate(server_no_context_takeover=True),
            "server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=10; client_max_window_bits=11",
            (11, True, 10, True),
        ),
        # Liberal where safe. Over the value we offered (section 7.1.2.2 allows only lower),
        # as Autobahn's fuzzingserver answers in cases 13.4.* and 13.6.*: our window stays.
        (PerMessageDeflate(), "client_max_window_bits=15", (12, False, 15, False)),
        (PerMessageDeflate(), "client_max_window_bits=13", (12, False, 15, False)),
        (
            PerMessageDeflate(client_max_window_bits=9),
            "client_max_window_bits=10",
            (9, False, 15, False),
        ),
        (
            PerMessageDeflate(client_max_window_bits=8),
            "client_max_window_bits=15; server_max_window_bits=9; client_no_context_takeover",
            (8, True, 9, False),
        ),
        # Without a value (an offer's form): no limit announced, so ours.
        (PerMessageDeflate(), "client_max_window_bits", (12, False, 15, False)),
        (
            PerMessageDeflate(client_max_window_bits=None),
            "client_max_window_bits",
            (15, False, 15, False),
        ),
        # Asked for but not granted (section 7.1.1.1): the decompressor keeps its context.
        (PerMessageDeflate(server_no_context_takeover=True), "", (12, False, 15, False)),
        (
            PerMessageDeflate(server_no_context_takeover=True),
            "client_no_context_takeover",
            (12, True, 15, False),
        ),
    ],
)
def test_client_accepts(
    settings: PerMessageDeflate, response: str, ext: tuple[int, bool, int, bool]
) -> None:
    extension = settings.accept(params(response))
    assert (
        extension.send_window_bits,
        extension.send_no_context_takeover,
        extension.receive_window_bits,
        extension.receive_no_context_takeover,
    ) == ext


@pytest.mark.parametrize(
    ("settings", "response"),
    [
        (PerMessageDeflate(), "x_unknown"),
        (PerMessageDeflate(), "server_no_context_takeover; server_no_context_takeover"),
        (PerMessageDeflate(), "server_no_context_takeover=yes"),
        (PerMessageDeflate(), "client_no_context_takeover=1"),
        (PerMessageDeflate(), "server_max_window_bits"),
        (PerMessageDeflate(), "server_max_window_bits=7"),
        (PerMessageDeflate(), "server_max_window_bits=16"),
        (PerMessageDeflate(), "server_max_window_bits=010"),
        (PerMessageDeflate(), "client_max_window_bits=16"),
        (PerMessageDeflate(), "client_max_window_bits=7"),
        (PerMessageDeflate(), "client_max_window_bits=12; client_max_window_bits=12"),
        (PerMessageDeflate(), "client_max_window_bits=12; client_max_window_bits=15"),
    ],
)
def test_client_rejects(settings: PerMessageDeflate, response: str) -> None:
    with pytest.raises(HandshakeError):
        settings.accept(params(response))


@attrs.frozen
class _BadServer:
    """A server factory that answers with a fixed (bad) response."""

    response: str
    name = NAME

    def negotiate(self, offers: Sequence[ExtensionParams]) -> tuple[str, Extension] | None:
        return self.response, DeflateExtension()


@pytest.mark.parametrize(
    "response",
    [
        "permessage-deflate; x_unknown",
        "permessage-deflate; server_max_window_bits=20",
        "permessage-deflate; client_max_window_bits=7",
        "permessage-deflate; server_no_context_takeover=1",
        "x-other",
    ],
)
def test_client_connection_fails_on_bad_response(response: str) -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(
        drained(client, client.initiate("example.com", "/", extensions=[PerMessageDeflate()]))
    )
    answer = drained(server, server.accept(extensions=[_BadServer(response)]))
    with pytest.raises(HandshakeError):
        client.receive_data(answer)
    assert client.state is ConnectionState.CLOSED


@pytest.mark.parametrize(
    "response",
    [
        "permessage-deflate; client_max_window_bits=15",  # Autobahn 13.4.*, 13.6.*
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=15; server_max_window_bits=15",
    ],
)
def test_client_keeps_its_window_when_the_server_allows_more(response: str) -> None:
    # Offered 12, answered 15 (or no limit): the connection opens and we compress within 12
    # bits, which every window the server allowed can decompress.
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(
        drained(client, client.initiate("example.com", "/", extensions=[PerMessageDeflate()]))
    )
    events = client.receive_data(drained(server, server.accept(extensions=[_BadServer(response)])))
    assert [type(e) for e in events] == [ResponseReceived]
    (ext,) = client.extensions
    assert isinstance(ext, DeflateExtension) and ext.send_window_bits == 12
    block = bytes(random.Random(3).randrange(256) for _ in range(3000))
    message = block + b"-" * 5000 + block  # repeats 8000 bytes back: only a larger window reaches
    wire = drained(client, client.send_message(message))
    ((header, payload),) = frames(wire, masked=True)
    assert header.rsv == RSV1
    assert strict_inflate(payload, 12) == message
    assert server.receive_data(wire) == [Message(message)]


def test_handshake_with_defaults() -> None:
    client, server = handshake()
    (c_ext,) = client.extensions
    (s_ext,) = server.extensions
    assert isinstance(c_ext, DeflateExtension) and isinstance(s_ext, DeflateExtension)
    assert (c_ext.send_window_bits, c_ext.receive_window_bits) == (12, 12)
    assert (s_ext.send_window_bits, s_ext.receive_window_bits) == (12, 12)


def test_no_extension_without_offer() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    client.receive_data(drained(server, server.accept(extensions=[PerMessageDeflate()])))
    assert client.extensions == server.extensions == []
    # RSV1 without a negotiated extension is a protocol error.
    server.receive_data(encode_frame(Opcode.TEXT, b"\xf2\x00", rsv=RSV1, mask=new_mask()))
    assert server.failure is not None and server.failure.code == 1002


# End to end ------------------------------------------------------------------------------------


def test_round_trip_sets_rsv1_and_shrinks() -> None:
    client, server = handshake()
    message = json_message(1) * 4
    for sender, receiver in [(client, server), (server, client)]:
        wire = drained(sender, sender.send_message(message))
        ((header, payload),) = frames(wire, masked=sender.role is Role.CLIENT)
        assert header.rsv == RSV1 and header.fin and header.opcode is Opcode.TEXT
        assert len(payload) < len(message) / 4
        assert receiver.receive_data(wire) == [Message(message)]
        binary = message.encode()
        wire = drained(sender, sender.send_message(binary))
        ((header, payload),) = frames(wire, masked=sender.role is Role.CLIENT)
        assert header.rsv == RSV1 and header.opcode is Opcode.BINARY
        assert receiver.receive_data(wire) == [Message(binary)]


def test_context_takeover_makes_repeats_cheap() -> None:
    client, server = handshake()
    first = transfer(client, server, json_message(1))
    second = transfer(client, server, json_message(1))
    assert len(second) < len(first) / 4
    # Without context takeover, each message is compressed on its own.
    client, server = handshake(PerMessageDeflate(client_no_context_takeover=True))
    first = transfer(client, server, json_message(1))
    second = transfer(client, server, json_message(1))
    assert first == second
    assert strict_inflate(second, 12).decode() == json_message(1)


def test_small_messages_are_sent_uncompressed() -> None:
    client, server = handshake()
    small: list[str | bytes] = ["", "short", b"x" * 31]
    for message in small:
        wire = drained(client, client.send_message(message))
        ((header, payload),) = frames(wire, masked=True)
        assert header.rsv == 0
        assert server.receive_data(wire) == [Message(message)]
    wire = drained(client, client.send_message(b"x" * 32))
    ((header, _),) = frames(wire, masked=True)
    assert header.rsv == RSV1
    # min_size=0 compresses everything but the empty message, which would grow (7.2.3.6).
    client, server = handshake(PerMessageDeflate(min_size=0))
    ((header, payload),) = frames(drained(client, client.send_message("a")), masked=True)
    assert header.rsv == RSV1
    ((header, payload),) = frames(drained(client, client.send_message("")), masked=True)
    assert header.rsv == 0 and payload == b""


def test_incompressible_message_without_takeover_goes_plain() -> None:
    client, server = handshake(PerMessageDeflate(client_no_context_takeover=True))
    noise = zlib.compress(json_message(7).encode())  # compressed data barely shrinks again
    payload = transfer(client, server, noise)
    assert payload == noise
    # With context takeover it must stay compressed (the peer's window needs it).
    client, server = handshake()
    ((header, _),) = frames(drained(client, client.send_message(noise)), masked=True)
    assert header.rsv == RSV1


def test_no_zlib_state_kept_without_context_takeover() -> None:
    both = PerMessageDeflate(server_no_context_takeover=True, client_no_context_takeover=True)
    client, server = handshake(both, both)
    for _ in range(3):
        transfer(client, server, json_message(2))
        transfer(server, client, json_message(3))
    for conn in (client, server):
        (ext,) = conn.extensions
        assert isinstance(ext, DeflateExtension)
        assert ext.send_no_context_takeover and ext.receive_no_context_takeover
        assert ext._deflater is None and ext._inflater is None
    # With takeover, streams are created lazily, on the first compressed message.
    client, server = handshake()
    (ext,) = client.extensions
    assert isinstance(ext, DeflateExtension)
    assert ext._deflater is None and ext._inflater is None
    transfer(client, server, json_message(1))
    assert ext._deflater is not None and ext._inflater is None


def test_shared_encoding_key() -> None:
    """Without context takeover, encoding is stateless: a broadcast may share it."""
    stateless = [DeflateExtension(send_window_bits=12, send_no_context_takeover=True) for _ in "ab"]
    key = stateless[0].shared_encoding_key
    assert key is not None and key == stateless[1].shared_encoding_key
    message = json_message(5).encode()
    assert stateless[0].encode(Opcode.TEXT, message) == stateless[1].encode(Opcode.TEXT, message)
    assert stateless[0].encode(Opcode.TEXT, message) == stateless[0].encode(Opcode.TEXT, message)
    other = DeflateExtension(send_window_bits=11, send_no_context_takeover=True)
    assert other.shared_encoding_key not in (None, key)
    assert DeflateExtension(send_window_bits=12).shared_encoding_key is None


def test_server_no_context_takeover_shares_across_offers() -> None:
    """A server with ``server_no_context_takeover=True`` gives one encoding key to every
    offer that leaves it the same window (browsers', trio_ws's, one asking for
    no context takeover itself), whatever the client's own window; a smaller window asked
    for gives another key. Without the setting, no offer but the last shares."""
    broadcast = PerMessageDeflate(server_no_context_takeover=True)
    offers = [
        "client_max_window_bits",  # browsers
        "server_max_window_bits=12; client_max_window_bits=12",  # trio_ws
        "client_max_window_bits=15",
        "client_max_window_bits; server_no_context_takeover",
        "client_no_context_takeover; client_max_window_bits=9",
        "",
    ]
    keys = {server_negotiate(broadcast, offer)[1].shared_encoding_key for offer in offers}
    assert len(keys) == 1 and None not in keys
    smaller = server_negotiate(broadcast, "server_max_window_bits=10")[1].shared_encoding_key
    assert smaller is not None and smaller not in keys
    default = PerMessageDeflate()
    assert server_negotiate(default, "client_max_window_bits")[1].shared_encoding_key is None
    asked = server_negotiate(default, "server_no_context_takeover")[1].shared_encoding_key
    assert asked in keys  # a client that asks for it shares too
    # And the frames are the same bytes, which every client decompresses.
    message = json_message(20).encode()
    encodings = {
        bytes(server_negotiate(broadcast, offer)[1].encode(Opcode.TEXT, message)[1])
        for offer in offers
    }
    assert len(encodings) == 1
    (compressed,) = encodings
    assert len(compressed) < len(message) // 2
    assert zlib.decompressobj(wbits=-12).decompress(compressed + b"\x00\x00\xff\xff") == message


window_bits = st.one_of(st.none(), st.integers(8, 15))
deflate_settings = st.builds(
    PerMessageDeflate,
    server_no_context_takeover=st.booleans(),
    client_no_context_takeover=st.booleans(),
    server_max_window_bits=window_bits,
    client_max_window_bits=window_bits,
    compress_level=st.sampled_from([0, 1, 6, 9]),
    mem_level=st.integers(1, 9),
    min_size=st.sampled_from([0, 1, 32]),
)
messages = st.one_of(
    st.text(max_size=300),
    st.binary(max_size=2000),
    st.tuples(st.binary(min_size=1, max_size=40), st.integers(1, 200)).map(lambda t: t[0] * t[1]),
    st.tuples(st.text(min_size=1, max_size=20), st.integers(1, 100)).map(lambda t: t[0] * t[1]),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    client_settings=deflate_settings,
    server_settings=deflate_settings,
    traffic=st.lists(st.tuples(st.booleans(), messages), max_size=12),
)
def test_round_trip_property(
    client_settings: PerMessageDeflate,
    server_settings: PerMessageDeflate,
    traffic: list[tuple[bool, str | bytes]],
) -> None:
    client, server = handshake(client_settings, server_settings)
    for from_client, message in traffic:
        sender, receiver = (client, server) if from_client else (server, client)
        transfer(sender, receiver, message)


@pytest.mark.parametrize("bits", range(8, 16))
@pytest.mark.parametrize("no_takeover", [False, True])
def test_compressed_window_stays_within_the_limit(bits: int, no_takeover: bool) -> None:
    """Each message inflates with a window of exactly the negotiated size (8 included)."""
    extension = DeflateExtension(send_window_bits=bits, send_no_context_takeover=no_takeover)
    inflater = zlib.decompressobj(wbits=-bits)
    # Repeats at distances just under the window size, and over it.
    rng = random.Random(bits)
    near, far = rng.randbytes(2**bits * 3 // 4), rng.randbytes(2**bits + 50)
    for message in [near * 3, far * 3, near[:100] * 50, b"abc" * 3000, near + far + near]:
        rsv, payload = extension.encode(Opcode.BINARY, message)
        if rsv == 0:  # not worth compressing; only allowed without context takeover
            assert no_takeover and payload == message
            continue
        if no_takeover:
            assert strict_inflate(payload, bits) == message
        # Streamed through one inflater with small outputs, as a strict peer would.
        out, pending = [], payload + TAIL
        while pending:
            out.append(inflater.decompress(pending, 64))
            pending = inflater.unconsumed_tail
        assert b"".join(out) == message


def test_decompressor_enforces_the_negotiated_window() -> None:
    """A peer that uses a larger window than negotiated is refused (1007), not misread.

    zlib only checks distances against the window across ``decompress()`` calls (it may copy
    from the output of the same call), so the far reference is put in a second frame.
    """
    _, server = handshake(
        PerMessageDeflate(client_max_window_bits=None),
        PerMessageDeflate(client_max_window_bits=9),
    )
    (ext,) = server.extensions
    assert isinstance(ext, DeflateExtension) and ext.receive_window_bits == 9
    block = random.Random(0).randbytes(3000)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    first = deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH)
    second = (deflater.compress(block) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert len(second) < 100  # one match, 3000 bytes back
    wire = encode_frame(Opcode.BINARY, first, fin=False, rsv=RSV1, mask=new_mask())
    wire += encode_frame(Opcode.CONTINUATION, second, mask=new_mask())
    server.receive_data(wire)
    assert server.failure is not None and server.failure.code == 1007


def _compressed_frames(message: bytes, split: Sequence[int], *, opcode: Opcode) -> bytes:
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (deflater.compress(message) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    bounds = [0, *sorted({min(max(s, 0), len(payload)) for s in split}), len(payload)]
    chunks = [payload[a:b] for a, b in itertools.pairwise(bounds)]
    wire = b""
    for i, chunk in enumerate(chunks):
        wire += encode_frame(
            opcode if i == 0 else Opcode.CONTINUATION,
            chunk,
            fin=i == len(chunks) - 1,
            rsv=RSV1 if i == 0 else 0,
            mask=new_mask(),
        )
    return wire


@settings(max_examples=60, deadline=None)
@given(
    message=st.text(max_size=2000).map(lambda s: s.encode()),
    split=st.lists(st.integers(0, 2000), max_size=6),
    chunk=st.integers(1, 64),
)
def test_fragmented_compressed_message(message: bytes, split: list[int], chunk: int) -> None:
    unlimited = PerMessageDeflate(client_max_window_bits=None)  # the client may use 15 bits
    _, server = handshake(unlimited, unlimited)
    wire = _compressed_frames(message, split, opcode=Opcode.TEXT)
    events = []
    for i in range(0, len(wire), chunk):  # the payload arrives in small pieces too
        events += server.receive_data(wire[i : i + chunk])
    assert server.failure is None
    assert events == [Message(message.decode())]


def test_rsv1_on_continuation_frame_is_refused() -> None:
    _, server = handshake()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -12)
    payload = (deflater.compress(b"hello " * 20) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire = encode_frame(Opcode.TEXT, payload[:5], fin=False, rsv=RSV1, mask=new_mask())
    wire += encode_frame(Opcode.CONTINUATION, payload[5:], rsv=RSV1, mask=new_mask())
    server.receive_data(wire)
    assert server.failure is not None and server.failure.code == 1002


@pytest.mark.parametrize(
    ("payloads", "expected"),
    [
        # RFC 7692 section 7.2.3.1: "Hello" in one compressed block.
        ([b"\xf2\x48\xcd\xc9\xc9\x07\x00"], [b"Hello"]),
        # 7.2.3.2: the second message refers to the first one's window.
        ([b"\xf2\x48\xcd\xc9\xc9\x07\x00", b"\xf2\x00\x11\x00\x00"], [b"Hello", b"Hello"]),
        # 7.2.3.3: a stored (uncompressed) block.
        ([b"\x00\x05\x00\xfa\xff\x48\x65\x6c\x6c\x6f\x00"], [b"Hello"]),
        # 7.2.3.4: a block with BFINAL set; later messages start a new stream.
        ([b"\xf3\x48\xcd\xc9\xc9\x07\x00\x00"] * 2, [b"Hello", b"Hello"]),
        # 7.2.3.5: two blocks in one message.
        ([b"\xf2\x48\x05\x00\x00\x00\xff\xff\xca\xc9\xc9\x07\x00"], [b"Hello"]),
        # 7.2.3.6: an empty message.
        ([b"\x00"], [b""]),
    ],
)
def test_rfc_7692_examples(payloads: list[bytes], expected: list[bytes]) -> None:
    _, server = handshake(PerMessageDeflate(server_max_window_bits=None))
    for payload, message in zip(payloads, expected, strict=True):
        wire = encode_frame(Opcode.BINARY, payload, rsv=RSV1, mask=new_mask())
        assert server.receive_data(wire) == [Message(message)]
    # 7.2.3.1, fragmented: "Hello" over two frames.
    wire = encode_frame(Opcode.TEXT, b"\xf2\x48\xcd", fin=False, rsv=RSV1, mask=new_mask())
    wire += encode_frame(Opcode.CONTINUATION, b"\xc9\xc9\x07\x00", mask=new_mask())
    assert server.receive_data(wire) == [Message("Hello")]


def test_bfinal_stream_cannot_refer_to_the_old_window() -> None:
    _, server = handshake(PerMessageDeflate(server_max_window_bits=None))
    first = b"\xf3\x48\xcd\xc9\xc9\x07\x00\x00"  # "Hello", BFINAL set (7.2.3.4)
    second = b"\xf2\x00\x11\x00\x00"  # "Hello" by reference to the previous window (7.2.3.2)
    server.receive_data(encode_frame(Opcode.BINARY, first, rsv=RSV1, mask=new_mask()))
    server.receive_data(encode_frame(Opcode.BINARY, second, rsv=RSV1, mask=new_mask()))
    assert server.failure is not None and server.failure.code == 1007


@pytest.mark.parametrize("payload", [b"\xff\xff\xff", b"\x07", b"\xf2\x48\xcd\xc9\xc9\x07\x00\x80"])
def test_corrupt_data_fails_with_1007(payload: bytes) -> None:
    _, server = handshake()
    server.receive_data(encode_frame(Opcode.BINARY, payload, rsv=RSV1, mask=new_mask()))
    assert server.failure is not None and server.failure.code == 1007
    ((header, close),) = frames(drained(server), masked=False)
    assert header.opcode is Opcode.CLOSE and close[:2] == (1007).to_bytes(2, "big")


@pytest.mark.parametrize("fragments", [1, 2, 3])
@pytest.mark.parametrize("takeover", [True, False])
def test_empty_compressed_payload_fails_at_that_message(fragments: int, takeover: bool) -> None:
    # Section 7.2.3.6: an empty message compresses to at least 0x00; an empty payload is
    # refused when it ends, and the valid message before it is delivered untouched.
    settings = PerMessageDeflate(client_no_context_takeover=not takeover)
    client, server = handshake(settings)
    assert len(transfer(client, server, "before " * 20)) < 140  # compressed
    wire = b"".join(
        encode_frame(
            Opcode.BINARY if i == 0 else Opcode.CONTINUATION,
            b"",
            fin=i == fragments - 1,
            rsv=RSV1 if i == 0 else 0,
            mask=new_mask(),
        )
        for i in range(fragments)
    )
    assert server.receive_data(wire) == []
    assert server.failure is not None and server.failure.code == 1007
    assert "empty" in server.failure.reason
    ((header, close),) = frames(drained(server), masked=False)
    assert header.opcode is Opcode.CLOSE and close[:2] == (1007).to_bytes(2, "big")


def test_valid_messages_around_empty_compressed_frames_are_not_blamed() -> None:
    # Empty frames inside a compressed message are fine: only the message's payload as a
    # whole must not be empty. The messages after them still decompress.
    _, server = handshake()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -12)
    hello = (deflater.compress(b"Hello") + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire = encode_frame(Opcode.TEXT, b"", fin=False, rsv=RSV1, mask=new_mask())
    wire += encode_frame(Opcode.CONTINUATION, hello, fin=False, mask=new_mask())
    wire += encode_frame(Opcode.CONTINUATION, b"", mask=new_mask())
    empty = (deflater.compress(b"") + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    assert empty == b"\x00"  # 7.2.3.6
    wire += encode_frame(Opcode.BINARY, empty, rsv=RSV1, mask=new_mask())
    again = (deflater.compress(b"Hello") + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    wire += encode_frame(Opcode.TEXT, again, rsv=RSV1, mask=new_mask())
    assert server.receive_data(wire) == [Message("Hello"), Message(b""), Message("Hello")]
    assert server.failure is None


def test_invalid_utf8_after_decompression_fails_with_1007() -> None:
    _, server = handshake()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -12)
    payload = (deflater.compress(b"\xff" * 100) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    server.receive_data(encode_frame(Opcode.TEXT, payload, rsv=RSV1, mask=new_mask()))
    assert server.failure is not None and server.failure.code == 1007


def test_rsv1_on_control_frame_is_refused() -> None:
    """RFC 7692 section 6.1: RSV1 means compressed on data frames only."""
    _, server = handshake()
    server.receive_data(encode_frame(Opcode.PING, b"", rsv=RSV1, mask=new_mask()))
    assert server.failure is not None and server.failure.code == 1002


def test_control_frames_are_never_compressed() -> None:
    client, server = handshake()
    transfer(client, server, json_message(1))
    for wire in [
        drained(client, client.send_ping(b"x" * 100)),
        drained(client, client.send_close(1000, "bye " * 20)),
    ]:
        ((header, _),) = frames(wire, masked=True)
        assert header.rsv == 0
        events = server.receive_data(wire)
        assert events
    assert isinstance(events[-1], CloseReceived)


def test_zlib_ng_level_1_is_avoided_with_small_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    import trio_ws.protocol._deflate

    monkeypatch.setattr(trio_ws.protocol._deflate, "_ZLIB_NG", True)
    assert DeflateExtension(send_window_bits=12, compress_level=1)._level == 2
    assert DeflateExtension(send_window_bits=13, compress_level=1)._level == 1
    assert DeflateExtension(send_window_bits=9, compress_level=6)._level == 6
    monkeypatch.setattr(trio_ws.protocol._deflate, "_ZLIB_NG", False)
    assert DeflateExtension(send_window_bits=12, compress_level=1)._level == 1


# Size limits -----------------------------------------------------------------------------------


def _zero_bomb(inflated_mib: int) -> bytes:
    """A raw deflate payload (tail removed) inflating to ``inflated_mib`` MiB of zeros.

    After the first MiB, the deflater's state is the same at each MiB boundary (a window full
    of zeros), so one flushed MiB's output can be repeated instead of compressing them all.
    """
    deflater = zlib.compressobj(9, zlib.DEFLATED, -12, 9)  # the default window
    mib = bytes(1 << 20)
    first = deflater.compress(mib) + deflater.flush(zlib.Z_SYNC_FLUSH)
    repeat = deflater.compress(mib) + deflater.flush(zlib.Z_SYNC_FLUSH)
    return (first + repeat * (inflated_mib - 1))[:-4]


def test_zero_bomb_helper_is_valid() -> None:
    bomb = _zero_bomb(8)
    assert strict_inflate(bomb, 12) == bytes(8 << 20)


def test_decoder_limits_whole_message_across_pieces() -> None:
    extension = DeflateExtension()
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    payload = (deflater.compress(bytes(1000)) + deflater.flush(zlib.Z_SYNC_FLUSH))[:-4]
    # Exactly the limit passes, whatever the split.
    for cut in range(len(payload) + 1):
        decoder = extension.decoder(RSV1)
        assert decoder is not None
        out = decoder.decode(payload[:cut], final=False, max_size=1000)
        out += decoder.decode(payload[cut:], final=True, max_size=1000)
        assert out == bytes(1000)
    # One byte less fails, possibly on the first piece already.
    for cut in range(len(payload) + 1):
        decoder = DeflateExtension().decoder(RSV1)
        assert decoder is not None
        with pytest.raises(ProtocolError) as info:
            decoder.decode(payload[:cut], final=False, max_size=999)
            decoder.decode(payload[cut:], final=True, max_size=999)
        assert info.value.code == 1009
    assert DeflateExtension().decoder(0) is None


def test_fragmented_bomb_fails_with_1009() -> None:
    _, server = handshake(PerMessageDeflate(server_max_window_bits=None), max_message_size=1 << 20)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -12)
    wire = b""
    for i in range(10):  # 10 frames of 200 KiB each once inflated
        chunk = deflater.compress(bytes(200 << 10)) + deflater.flush(zlib.Z_SYNC_FLUSH)
        wire += encode_frame(
            Opcode.BINARY if i == 0 else Opcode.CONTINUATION,
            chunk[:-4] if i == 9 else chunk,
            fin=i == 9,
            rsv=RSV1 if i == 0 else 0,
            mask=new_mask(),
        )
    assert len(wire) < 20_000
    assert server.receive_data(wire) == []
    assert server.failure is not None and server.failure.code == 1009


def test_message_at_the_limit_passes() -> None:
    client, server = handshake(max_message_size=1 << 16)
    message = bytes(1 << 16)
    assert server.receive_data(drained(client, client.send_message(message))) == [Message(message)]
    drained(client, client.send_message(message + b"\x00"))  # keep both compressors in step
    server.receive_data(drained(client, client.send_message(message + b"\x00")))
    assert server.failure is not None and server.failure.code == 1009


_BOMB_SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {tests!r})
    from test_deflate import _zero_bomb, handshake
    from trio_ws.protocol._deflate import PerMessageDeflate
    from trio_ws.protocol._frames import RSV1, Opcode, encode_frame, new_mask

    def hwm():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) * 1024

    client, server = handshake(
        PerMessageDeflate(server_max_window_bits=None), max_message_size=1 << 20
    )
    bomb = _zero_bomb(1000)
    wire = encode_frame(Opcode.BINARY, bomb, rsv=RSV1, mask=new_mask())
    del bomb
    before = hwm()
    start = time.perf_counter()
    events = server.receive_data(wire)
    elapsed = time.perf_counter() - start
    print(len(wire), server.failure.code, hwm() - before, elapsed, events)
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_decompression_bomb_costs_little_memory() -> None:
    """~1 MiB frame inflating to ~1 GiB, against a 1 MiB limit: fast, a few MiB at most."""
    script = _BOMB_SCRIPT.format(tests=str(__import__("pathlib").Path(__file__).parent))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    size, code, growth, elapsed, events = result.stdout.split(maxsplit=4)
    assert 900_000 < int(size) < 1 << 20  # under the frame limit: inflating is what fails
    assert int(code) == 1009
    assert events.strip() == "[]"
    assert int(growth) < 8 << 20, f"peak memory grew by {int(growth) >> 10} KiB"
    assert float(elapsed) < 1.0


# Interop with websockets' implementation ---------------------------------------------------------


def _ws_pair(bits: int, no_takeover: bool) -> tuple[ws_deflate.PerMessageDeflate, DeflateExtension]:
    """websockets' extension for one side and ours for the other, with matching settings."""
    local_bits = max(bits, 9)  # websockets cannot compress with 8 bits
    theirs = ws_deflate.PerMessageDeflate(
        remote_no_context_takeover=no_takeover,
        local_no_context_takeover=no_takeover,
        remote_max_window_bits=bits,
        local_max_window_bits=local_bits,
        compress_settings={"memLevel": 5},
    )
    ours = DeflateExtension(
        send_window_bits=bits,
        send_no_context_takeover=no_takeover,
        receive_window_bits=local_bits,
        receive_no_context_takeover=no_takeover,
    )
    return theirs, ours


INTEROP_MESSAGES = [json_message(i).encode() for i in range(5)] + [
    b"",
    b"x",
    bytes(range(256)) * 40,
    b"abcabcabd" * 1000,
]


@pytest.mark.parametrize("bits", range(8, 16))
@pytest.mark.parametrize("no_takeover", [False, True])
def test_websockets_decodes_ours(bits: int, no_takeover: bool) -> None:
    theirs, ours = _ws_pair(bits, no_takeover)
    for message in INTEROP_MESSAGES:
        rsv, payload = ours.encode(Opcode.BINARY, message)
        frame = WsFrame(WsOpcode.BINARY, payload, rsv1=bool(rsv & RSV1))
        decoded = theirs.decode(frame, max_size=None)
        assert bytes(decoded.data) == message


@pytest.mark.parametrize("bits", range(9, 16))
@pytest.mark.parametrize("no_takeover", [False, True])
@pytest.mark.parametrize("fragments", [1, 3])
def test_ours_decodes_websockets(bits: int, no_takeover: bool, fragments: int) -> None:
    theirs, _ = _ws_pair(bits, no_takeover)
    ours = DeflateExtension(receive_window_bits=bits, receive_no_context_takeover=no_takeover)
    for message in INTEROP_MESSAGES:
        size = len(message) // fragments + 1
        parts = [message[i : i + size] for i in range(0, len(message), size)] or [b""]
        encoded = [
            theirs.encode(
                WsFrame(
                    WsOpcode.BINARY if i == 0 else WsOpcode.CONT,
                    part,
                    fin=i == len(parts) - 1,
                )
            )
            for i, part in enumerate(parts)
        ]
        assert encoded[0].rsv1 and not any(frame.rsv1 for frame in encoded[1:])
        decoder = ours.decoder(RSV1)
        assert decoder is not None
        out = b"".join(
            decoder.decode(bytes(frame.data), final=frame.fin, max_size=1 << 20)
            for frame in encoded
        )
        assert out == message


def test_negotiation_interop_with_websockets() -> None:
    """Their client's offer to our server, our client's offer to their server, both ways."""
    ours = PerMessageDeflate()
    # websockets client -> our server -> websockets client.
    for their_client in [
        ws_deflate.ClientPerMessageDeflateFactory(),
        ws_deflate.ClientPerMessageDeflateFactory(
            server_no_context_takeover=True,
            client_no_context_takeover=True,
            server_max_window_bits=10,
            client_max_window_bits=11,
        ),
        ws_deflate.ClientPerMessageDeflateFactory(client_max_window_bits=None),
    ]:
        result = ours.negotiate([list(their_client.get_request_params())])
        assert result is not None
        response, our_ext = result
        their_ext = their_client.process_response_params(params(response[len(NAME) + 2 :]), [])
        assert their_ext.local_max_window_bits == our_ext.receive_window_bits
        assert their_ext.remote_max_window_bits == our_ext.send_window_bits
        assert their_ext.local_no_context_takeover == our_ext.receive_no_context_takeover
        assert their_ext.remote_no_context_takeover == our_ext.send_no_context_takeover
    # Our client -> websockets server (it takes the first offer it can) -> our client.
    ours = PerMessageDeflate(server_max_window_bits=8)
    first, fallback = offers_of(ours.offer())
    assert ("server_max_window_bits", "8") in first
    their_server = ws_deflate.ServerPerMessageDeflateFactory()
    # websockets cannot compress with an 8-bit window (zlib refuses wbits=-8): websockets 17
    # declines the offer; websockets 16 (the newest for Python 3.10) accepts it and then fails
    # in zlib. Either way the first offer is unusable, hence our fallback offer.
    refusal = NegotiationError if WEBSOCKETS_MAJOR >= 17 else ValueError
    with pytest.raises(refusal):
        their_server.process_request_params(first, [])
    response_params, their_ext = their_server.process_request_params(fallback, [])
    our_ext = ours.accept(list(response_params))
    assert our_ext.receive_window_bits == their_ext.local_max_window_bits == 15
    ours = PerMessageDeflate()
    for their_server in [
        ws_deflate.ServerPerMessageDeflateFactory(),
        ws_deflate.ServerPerMessageDeflateFactory(
            server_max_window_bits=12, client_max_window_bits=10
        ),
        ws_deflate.ServerPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True
        ),
    ]:
        offer = offers_of(ours.offer())[0]
        response_params, their_ext = their_server.process_request_params(offer, [])
        our_ext = ours.accept(list(response_params))
        assert their_ext.local_max_window_bits == our_ext.receive_window_bits
        assert their_ext.remote_max_window_bits == our_ext.send_window_bits
        assert their_ext.local_no_context_takeover == our_ext.receive_no_context_takeover
        assert their_ext.remote_no_context_takeover == our_ext.send_no_context_takeover


# Memory ----------------------------------------------------------------------------------------

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    from test_deflate import json_message
    from trio_ws.protocol._deflate import DeflateExtension
    from trio_ws.protocol._frames import RSV1, Opcode

    def rss():
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) * 1024

    bits, mem_level, size, count = {bits}, {mem_level}, {size}, {count}
    message = (json_message(0) * (size // 100 + 1)).encode()[:size]
    sender = DeflateExtension(send_window_bits=bits, mem_level=mem_level)
    rsv, payload = sender.encode(Opcode.TEXT, message)
    keep = []
    base = rss()
    for _ in range(count):
        # One connection: our compressor and our decompressor, each used once.
        ext = DeflateExtension(send_window_bits=bits, receive_window_bits=bits, mem_level=mem_level)
        ext.encode(Opcode.TEXT, message)
        ext.decoder(RSV1).decode(payload, final=True, max_size=None)
        keep.append(ext)
    print((rss() - base) // count)
    """
)


def memory_per_connection(bits: int, mem_level: int, size: int, count: int = 1000) -> int:
    """Bytes of RSS per connection after one ``size``-byte message each way (fresh process)."""
    script = _MEMORY_SCRIPT.format(
        tests=str(__import__("pathlib").Path(__file__).parent),
        bits=bits,
        mem_level=mem_level,
        size=size,
        count=count,
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return int(result.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_default_settings_use_less_memory() -> None:
    ours = memory_per_connection(12, 5, 100_000, count=500)
    zlib_defaults = memory_per_connection(15, 8, 100_000, count=500)
    assert ours < 80 << 10, f"{ours >> 10} KiB per connection"
    assert zlib_defaults > 3 * ours


if __name__ == "__main__":
    print("zlib memory per connection (compressor + decompressor, context takeover)")
    for bits, mem_level in [(15, 8), (15, 5), (13, 5), (12, 5), (12, 4), (10, 4)]:
        row = [memory_per_connection(bits, mem_level, size) >> 10 for size in (300, 100_000)]
        print(
            f"  window_bits={bits:2} mem_level={mem_level}: "
            f"{row[0]:4} KiB after a 300-byte message, {row[1]:4} KiB after 100 KB ones"
        )
