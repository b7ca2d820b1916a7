"""The permessage-deflate extension (RFC 7692): negotiation and per-message compression.

``PerMessageDeflate`` holds the settings; it is both the client and the server extension
factory (``Connection.initiate(extensions=[...])`` and ``Connection.accept(extensions=[...])``)
and can be shared by any number of connections. Each successful negotiation gives a fresh
``DeflateExtension``, the per-connection state: one raw-deflate compressor for what we send and
one decompressor for what we receive.

Memory. zlib allocates outside Python's allocator (``tracemalloc`` cannot see it); a deflate
stream takes about ``(1 << (window_bits + 2)) + (1 << (mem_level + 9))`` bytes plus ~6 KiB of
state, an inflate stream ``1 << window_bits`` plus ~7 KiB, but pages count only once touched.
Measured as the VmRSS growth of a fresh process holding 1000 connections' extensions, each
having compressed and decompressed one message (``python tests/test_deflate.py``; CPython
3.11, zlib 1.2.13, x86-64), per connection, both directions with context takeover::

    window_bits, mem_level      after a 300-byte JSON message   after 100 KB messages
    15, 8 (zlib's defaults)              98 KiB                      248 KiB
    12, 5 (our defaults)                 40 KiB                       51 KiB

The defaults (4 KiB windows both ways, ``mem_level=5``) cost 10-15% in compression ratio on
JSON compared with zlib's defaults (0.29 vs 0.26 of the size for 130-byte messages, 0.23 vs
0.21 for 1.3 KB ones, 0.21 vs 0.19 for 17 KB ones) and compress faster. Streams are created
lazily, on the first compressed message in each direction, and not kept between messages in a
direction without context takeover (creating one costs ~0.4 us at these sizes, less than
copying a pristine one), so an idle connection that negotiated ``*_no_context_takeover`` both
ways holds no zlib memory at all.

Window bits 8. zlib refuses ``wbits=-8`` for raw deflate compression (since 1.2.9; before, it
silently used 9). When the peer limits our window to 8 bits we compress with a 9-bit (512-byte)
window, which is still within the limit: zlib's deflate never emits a distance larger than
``MAX_DIST = w_size - MIN_LOOKAHEAD = 512 - 262 = 250`` bytes, so the peer's 256-byte window
always suffices (zlib's own ``deflateInit2`` maps 8 to 9 for the same reason, "until 256-byte
window bug fixed"; ``tests/test_deflate.py`` checks the output with an 8-bit inflater). We
therefore accept ``server_max_window_bits=8`` and ``client_max_window_bits=8`` instead of
declining them as websockets does. Decompression honours 8 exactly (zlib supports it).

zlib-ng (which some distributions and CPython builds ship as zlib) switches level 1 to its
"quick" strategy with a forced 13-bit window, which would break a negotiated smaller window:
with zlib-ng, level 1 becomes level 2 when the window is under 13 bits.

Close codes. A decompressed message over ``max_size`` fails the connection with 1009 (message
too big), detected while inflating: output is produced at most ``max_size + 1`` bytes at a time,
so a bomb never costs more memory than the limit. Data zlib cannot inflate fails it with 1007
(invalid frame payload data), as wsproto does; websockets uses 1002. The payload is a valid
frame whose content is inconsistent with what the message claims to be, the case 1007 names.

An empty payload in a compressed message is such data too. Section 7.2.1 never produces one:
its output keeps at least the 3 header bits of the final empty stored block, so an empty
message is sent as ``0x00`` (section 7.2.3.6). Decompressed as section 7.2.2 says, with
``00 00 ff ff`` appended, it is an incomplete stored-block header that would swallow the start
of the next message, which would then fail instead; so it fails the connection (1007) at that
message, before the decompressor sees it: never a later message blamed for it.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

from ._close import CloseCode
from ._errors import HandshakeError, ProtocolError
from ._extensions import ExtensionParams, format_extension
from ._frames import RSV1

if TYPE_CHECKING:
    from ._extensions import ClientExtensionFactory, ServerExtensionFactory

__all__ = ["DeflateExtension", "PerMessageDeflate"]

NAME: Final = "permessage-deflate"

#: Largest output of one inflate step.
_STEP: Final = 256 * 1024
# RFC 7692 section 7.2.1: the empty stored block a sync flush ends with, removed by the sender
# and appended again by the receiver.
_TAIL: Final = b"\x00\x00\xff\xff"

# Section 7.1.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive".
_WINDOW_BITS: Final = {str(bits): bits for bits in range(8, 16)}

_ZLIB_NG: Final = "zlib-ng" in zlib.ZLIB_RUNTIME_VERSION


def _window_bits(instance: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and value not in range(8, 16):
        raise ValueError(f"{attribute.name} must be between 8 and 15, or None, not {value!r}")


@attrs.frozen
class _Params:
    """One offer's or response's parameters, validated (section 7.1)."""

    server_no_context_takeover: bool = False
    client_no_context_takeover: bool = False
    server_max_window_bits: int | None = None
    #: ``True`` for the parameter without a value: no limit (section 7.1.2.2).
    client_max_window_bits: int | bool | None = None


def _parse_params(params: ExtensionParams) -> _Params:
    """Validate parameters; ``ValueError`` for unknown, repeated or malformed ones."""
    flags = {"server_no_context_takeover": False, "client_no_context_takeover": False}
    bits: dict[str, int | bool | None] = {"server_max_window_bits": None}
    bits["client_max_window_bits"] = None
    seen: set[str] = set()
    for key, value in params:
        if key in seen:
            raise ValueError(f"repeated parameter {key}")
        seen.add(key)
        if key in flags:
            if value is not None:
                raise ValueError(f"{key} takes no value")
            flags[key] = True
        elif key in bits:
            if value is None and key == "client_max_window_bits":
                bits[key] = True
            elif value is not None and value in _WINDOW_BITS:
                bits[key] = _WINDOW_BITS[value]
            else:
                raise ValueError(f"invalid value {value!r} for {key}")
        else:
            raise ValueError(f"unknown parameter {key}")
    server_bits = bits["server_max_window_bits"]
    assert server_bits is not True
    return _Params(
        server_no_context_takeover=flags["server_no_context_takeover"],
        client_no_context_takeover=flags["client_no_context_takeover"],
        server_max_window_bits=server_bits,
        client_max_window_bits=bits["client_max_window_bits"],
    )


def _smallest(*bits: int | bool | None) -> int | None:
    """The smallest of the window sizes given (``None`` and ``True`` mean no limit)."""
    limits = [b for b in bits if b is not None and b is not True]
    return min(limits) if limits else None


@attrs.frozen
class PerMessageDeflate:
    """permessage-deflate settings; pass the same object to clients and servers.

    On a **client**, the ``server_*`` settings are requests to the server, the ``client_*``
    ones what we do ourselves (and tell the server):

    - ``server_no_context_takeover``: ask the server to compress each message on its own, so
      that we can free our decompressor between messages. A response without it is accepted
      all the same: the decompressor is then kept, which decodes either way.
    - ``client_no_context_takeover``: compress each message on our own (sent as a hint).
    - ``server_max_window_bits``: ask the server for a window of at most ``2**bits`` bytes,
      which bounds our decompressor's memory. Servers may not support this, so the offer is
      followed by a fallback offer without it (a pattern RFC 7692 uses in its examples);
      whatever the server picks, we decompress with the window it announced.
    - ``client_max_window_bits``: our compression window; ``client_max_window_bits`` is always
      offered (with this value, or without one for None) so that the server may lower it.
      A response that raises it instead is accepted, and we keep our smaller window.

    On a **server**, settings are imposed on top of what each offer asks for:

    - ``server_no_context_takeover``: compress each message on its own, even if not asked.
    - ``client_no_context_takeover``: require the client to (frees our decompressor between
      messages). It is also granted whenever the client offers it.
    - ``server_max_window_bits``: our compression window at most this (or less if asked),
      announced in the response.
    - ``client_max_window_bits``: limit the client's window, if the client offered
      ``client_max_window_bits`` (otherwise it may use 15 bits, and we accept that).

    None means no limit of our own. The defaults, 12 bits both ways with ``mem_level=5``,
    keep zlib's memory at about 40-51 KiB per connection instead of 98-248 KiB with zlib's
    defaults (see the module docstring). ``compress_level`` and ``mem_level`` are zlib's
    ``level`` (0-9) and ``memLevel`` (1-9). Messages shorter than ``min_size`` bytes are sent
    uncompressed (RSV1 is per message): there deflate saves at most ~20 bytes (65% of 25-byte
    JSON messages with context takeover, nothing without), little next to TCP/IP and TLS
    overhead per packet, for ~2 us of CPU each.
    """

    #: The server compresses each message on its own (default False).
    server_no_context_takeover: bool = False
    #: The client compresses each message on its own (default False).
    client_no_context_takeover: bool = False
    #: The server's LZ77 window, ``2**bits`` bytes (8-15, default 12; None: no limit).
    server_max_window_bits: int | None = attrs.field(default=12, validator=_window_bits)
    #: The client's LZ77 window, ``2**bits`` bytes (8-15, default 12; None: no limit).
    client_max_window_bits: int | None = attrs.field(default=12, validator=_window_bits)
    #: zlib compression level, 0-9 (default 6).
    compress_level: int = attrs.field(default=6, validator=attrs.validators.in_(range(10)))
    #: zlib memLevel, 1-9 (default 5).
    mem_level: int = attrs.field(default=5, validator=attrs.validators.in_(range(1, 10)))
    #: Messages shorter than this many bytes are sent uncompressed (default 32).
    min_size: int = attrs.field(default=32, validator=attrs.validators.ge(0))

    #: The extension's name in ``Sec-WebSocket-Extensions``: ``permessage-deflate``.
    name = NAME

    # Factories ------------------------------------------------------------------------------

    def client_factory(self) -> ClientExtensionFactory:
        """This object, as the client-side factory (it implements both protocols)."""
        return self

    def server_factory(self) -> ServerExtensionFactory:
        """This object, as the server-side factory (it implements both protocols)."""
        return self

    # Client ---------------------------------------------------------------------------------

    def _offer_params(self, *, window_request: bool) -> ExtensionParams:
        params: ExtensionParams = []
        if self.server_no_context_takeover:
            params.append(("server_no_context_takeover", None))
        if self.client_no_context_takeover:
            params.append(("client_no_context_takeover", None))
        if window_request and self.server_max_window_bits is not None:
            params.append(("server_max_window_bits", str(self.server_max_window_bits)))
        bits = self.client_max_window_bits
        params.append(("client_max_window_bits", None if bits is None else str(bits)))
        return params

    def offer(self) -> str:
        """Client: the ``Sec-WebSocket-Extensions`` offer (with a fallback, see the class)."""
        first = format_extension(NAME, self._offer_params(window_request=True))
        if self.server_max_window_bits is None:
            return first
        return f"{first}, {format_extension(NAME, self._offer_params(window_request=False))}"

    def accept(self, params: ExtensionParams) -> DeflateExtension:
        """Client: check the server's response (section 7.1) and build the extension.

        Liberal where that is safe, since real servers deviate: a response is refused only
        for parameters we cannot honour or understand (unknown, repeated, malformed).
        """
        try:
            response = _parse_params(params)
        except ValueError as exc:
            raise HandshakeError(f"invalid {NAME} response: {exc}") from None
        # Section 7.1.2.2 lets the response only lower our offered client_max_window_bits, but
        # servers answer 12 with 15 (Autobahn's fuzzingserver in cases 13.4 and 13.6, others):
        # a smaller window than allowed is always fine, so we keep ours. Without a value
        # (allowed in offers only), the response announces no limit: ours again.
        # server_max_window_bits may take any value: a response to the fallback offer may
        # announce one the first offer did not ask for (section 7.1.2.1); we decompress with it.
        # A response without the server_no_context_takeover we asked for (section 7.1.1.1)
        # only costs our decompressor's memory between messages: it decodes either way.
        send_bits = _smallest(response.client_max_window_bits, self.client_max_window_bits)
        return DeflateExtension(
            send_window_bits=send_bits or 15,
            send_no_context_takeover=(
                response.client_no_context_takeover or self.client_no_context_takeover
            ),
            receive_window_bits=response.server_max_window_bits or 15,
            receive_no_context_takeover=response.server_no_context_takeover,
            compress_level=self.compress_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )

    # Server ---------------------------------------------------------------------------------

    def negotiate(self, offers: Sequence[ExtensionParams]) -> tuple[str, DeflateExtension] | None:
        """Server: the response and extension for the first valid offer, or None."""
        for params in offers:
            try:
                offer = _parse_params(params)
            except ValueError:
                continue  # section 7.1: an offer with invalid parameters is declined
            return self._respond(offer)
        return None

    def _respond(self, offer: _Params) -> tuple[str, DeflateExtension]:
        server_nct = offer.server_no_context_takeover or self.server_no_context_takeover
        # Echoing the client's hint makes it binding, so we may drop our decompressor too.
        client_nct = offer.client_no_context_takeover or self.client_no_context_takeover
        # Section 7.1.2.1: the same or a smaller value than asked; we may also announce one
        # that was not asked for.
        server_bits = _smallest(offer.server_max_window_bits, self.server_max_window_bits)
        # Section 7.1.2.2: only if the client offered client_max_window_bits, and no more
        # than its value. Echoing its value lets our decompressor use that window.
        client_bits = None
        if offer.client_max_window_bits is not None:
            client_bits = _smallest(offer.client_max_window_bits, self.client_max_window_bits)
        params: ExtensionParams = []
        if server_nct:
            params.append(("server_no_context_takeover", None))
        if client_nct:
            params.append(("client_no_context_takeover", None))
        if server_bits is not None:
            params.append(("server_max_window_bits", str(server_bits)))
        if client_bits is not None:
            params.append(("client_max_window_bits", str(client_bits)))
        extension = DeflateExtension(
            send_window_bits=server_bits or 15,
            send_no_context_takeover=server_nct,
            receive_window_bits=client_bits or 15,
            receive_no_context_takeover=client_nct,
            compress_level=self.compress_level,
            mem_level=self.mem_level,
            min_size=self.min_size,
        )
        return format_extension(NAME, params), extension


class DeflateExtension:
    """A negotiated permessage-deflate, as one connection uses it (the ``Extension`` protocol).

    ``send_*`` describe our compressor, ``receive_*`` the peer's, hence our decompressor.
    Normally built by ``PerMessageDeflate`` from the negotiation's outcome.
    """

    name = NAME
    rsv = RSV1

    __slots__ = (
        "_deflater",
        "_inflater",
        "_level",
        "_zlib_bits",
        "compress_level",
        "mem_level",
        "min_size",
        "receive_no_context_takeover",
        "receive_window_bits",
        "send_no_context_takeover",
        "send_window_bits",
    )

    def __init__(
        self,
        *,
        send_window_bits: int = 15,
        send_no_context_takeover: bool = False,
        receive_window_bits: int = 15,
        receive_no_context_takeover: bool = False,
        compress_level: int = 6,
        mem_level: int = 5,
        min_size: int = 0,
    ) -> None:
        self.send_window_bits = send_window_bits
        self.send_no_context_takeover = send_no_context_takeover
        self.receive_window_bits = receive_window_bits
        self.receive_no_context_takeover = receive_no_context_takeover
        self.compress_level = compress_level
        self.mem_level = mem_level
        self.min_size = min_size
        # 8 bits is compressed with 9: zlib refuses 8 and never reaches further than 250
        # bytes back with 9 (see the module docstring).
        self._zlib_bits = -max(send_window_bits, 9)
        level = compress_level
        if _ZLIB_NG and level == 1 and send_window_bits < 13:
            level = 2  # zlib-ng's level 1 forces a 13-bit window
        self._level = level
        self._deflater: zlib._Compress | None = None
        self._inflater: zlib._Decompress | None = None

    def __repr__(self) -> str:
        return (
            f"DeflateExtension(send_window_bits={self.send_window_bits}, "
            f"send_no_context_takeover={self.send_no_context_takeover}, "
            f"receive_window_bits={self.receive_window_bits}, "
            f"receive_no_context_takeover={self.receive_no_context_takeover})"
        )

    # Receiving ------------------------------------------------------------------------------

    def decoder(self, rsv: int) -> _MessageInflater | None:
        """Section 6.1: a message is compressed iff RSV1 is set on its first frame."""
        if not rsv & RSV1:
            return None
        inflater = self._inflater
        if inflater is None:
            inflater = zlib.decompressobj(wbits=-self.receive_window_bits)
            if not self.receive_no_context_takeover:
                self._inflater = inflater
        return _MessageInflater(self, inflater)

    def message_done(self, inflater: zlib._Decompress) -> None:
        if inflater.eof and inflater is self._inflater:
            # The peer ended the deflate stream (a block with BFINAL set, section 7.2.3.4);
            # zlib ignores anything after it, so later messages need a new stream. Should the
            # peer still refer to the old window, inflate fails (1007): never silently wrong.
            self._inflater = None

    # Sending --------------------------------------------------------------------------------

    @property
    def shared_encoding_key(self) -> tuple[object, ...] | None:
        """Equal for extensions whose ``encode()`` gives the same bytes, None if stateful.

        Without context takeover on our side, a message's encoding depends only on these
        settings, so a broadcast may compress it once for every such connection.
        """
        if not self.send_no_context_takeover:
            return None
        return (NAME, self._level, self._zlib_bits, self.mem_level, self.min_size)

    def encode(self, opcode: int, payload: bytes) -> tuple[int, bytes]:
        """Compress one whole data message (section 7.2.1); small ones are sent as they are."""
        size = len(payload)
        if size < self.min_size or not size:
            # An empty message would take a byte compressed (section 7.2.3.6); none plain.
            return 0, payload
        deflater = self._deflater
        if deflater is None:
            deflater = zlib.compressobj(self._level, zlib.DEFLATED, self._zlib_bits, self.mem_level)
            if not self.send_no_context_takeover:
                self._deflater = deflater
        data = deflater.compress(payload)
        tail = deflater.flush(zlib.Z_SYNC_FLUSH)  # ends with _TAIL, which is not sent
        if self.send_no_context_takeover and len(data) + len(tail) - 4 >= size:
            # No later message refers to this one, so it may go uncompressed instead.
            return 0, payload
        if not data:
            return RSV1, tail[:-4]
        return RSV1, b"".join((data, memoryview(tail)[:-4]))


class _MessageInflater:
    """Decompresses one message, piece by piece (section 7.2.2), within ``max_size``."""

    __slots__ = ("_empty", "_extension", "_inflater", "_size")

    def __init__(self, extension: DeflateExtension, inflater: zlib._Decompress) -> None:
        self._extension = extension
        self._inflater = inflater
        self._size = 0  # decompressed bytes so far
        self._empty = True  # no compressed byte so far

    def decode(self, data: bytes, *, final: bool, max_size: int | None) -> bytes:
        if data:
            self._empty = False
        if final:
            if self._empty:
                # Refused here, before the inflater sees it: the tail alone would leave it in
                # the middle of a stored block's header and fail the next, valid message.
                raise ProtocolError(
                    CloseCode.INVALID_DATA, "compressed message with an empty payload"
                )
            data += _TAIL
        inflater = self._inflater
        room = None if max_size is None else max_size - self._size
        pieces: list[bytes] = []
        total = 0
        try:
            # Inflate in bounded steps: one big decompress(max_length) call briefly needs
            # about twice its output, and a bomb must cost no more than the limit.
            while True:
                limit = _STEP if room is None else min(_STEP, room - total + 1)
                piece = inflater.decompress(data, limit)
                total += len(piece)
                if room is not None and total > room:
                    del pieces, piece
                    raise ProtocolError(
                        CloseCode.MESSAGE_TOO_BIG,
                        f"decompressed message over the limit of {max_size} bytes",
                    )
                pieces.append(piece)
                data = inflater.unconsumed_tail
                if not data and len(piece) < limit:
                    break  # all input consumed and no output left pending in zlib
        except zlib.error as exc:
            raise ProtocolError(CloseCode.INVALID_DATA, f"invalid compressed data: {exc}") from None
        out = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        self._size += len(out)
        if final:
            self._extension.message_done(inflater)
        return out
