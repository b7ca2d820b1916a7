"""Frame codec of RFC 6455 section 5: parse and serialize frames, mask and unmask payloads.

Sans-I/O: bytes in, frame pieces out; frame fields in, bytes out. The parser hands out a data
frame's payload in pieces as it arrives, so that the connection can validate UTF-8 and
enforce size limits before a large frame is complete.
"""

from __future__ import annotations

import enum
import os
import struct
from typing import Final

import attrs

from ._close import CloseCode
from ._errors import ProtocolError
from ._mask import apply_mask

__all__ = [
    "Frame",
    "FrameHeader",
    "FrameParser",
    "Opcode",
    "apply_mask",
    "encode_frame",
    "encode_frame_pieces",
    "join_frame",
    "new_mask",
]

#: A frame ready to write: bytes, or ``(header, payload)`` for a large payload, which
#: ``writev(2)`` writes without the copy that would join them.
Frame = bytes | tuple[bytes, bytes]

#: Payloads from this size (the 64-bit length form) are not copied next to their header, and
#: are received into a buffer of their own (``FrameParser.get_buffer()``)...
LARGE: Final = 65536
#: ... which holds at most this much, and at most this many times the bytes of the payload
#: that came before it was allocated: a peer cannot make us hold much more than it sent.
PIECE: Final = 1024 * 1024
GROWTH: Final = 32


class Opcode(enum.IntEnum):
    """Frame opcodes (RFC 6455 section 5.2); 3-7 and 0xB-0xF are reserved."""

    CONTINUATION = 0x0
    TEXT = 0x1
    BINARY = 0x2
    CLOSE = 0x8
    PING = 0x9
    PONG = 0xA

    @property
    def is_control(self) -> bool:
        return self >= 0x8


_OPCODES: Final = {int(op): op for op in Opcode}

# RFC 6455 section 5.2: byte 0 is FIN, RSV1-3 and the opcode; byte 1 is MASK and the length.
FIN: Final = 0x80
RSV1: Final = 0x40
RSV2: Final = 0x20
RSV3: Final = 0x10
MASK_BIT: Final = 0x80

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")

# Section 5.5: control frames carry at most 125 bytes.
MAX_CONTROL_PAYLOAD: Final = 125


def new_mask() -> bytes:
    """A fresh, unpredictable 4-byte masking key (section 5.3)."""
    return os.urandom(4)


def encode_frame(
    opcode: int,
    payload: bytes | bytearray | memoryview,
    *,
    fin: bool = True,
    rsv: int = 0,
    mask: bytes | None = None,
) -> bytes:
    """Serialize one frame. ``rsv`` holds the RSV bits as in byte 0 (e.g. ``RSV1``).

    ``mask`` is the 4-byte masking key a client must use (section 5.3); servers pass ``None``.
    """
    return join_frame(encode_frame_pieces(opcode, bytes(payload), fin=fin, rsv=rsv, mask=mask))


def encode_frame_pieces(
    opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0, mask: bytes | None = None
) -> Frame:
    """``encode_frame()``, but a payload of ``LARGE`` bytes or more comes apart from its header:
    ``(header, payload)``."""
    length = len(payload)
    b0 = (FIN if fin else 0) | rsv | opcode
    mask_bit = MASK_BIT if mask is not None else 0
    # Section 5.2: 7-bit length up to 125, 16-bit form up to 65535, 64-bit form beyond.
    if length < 126:
        header = bytes((b0, mask_bit | length))
    elif length < 65536:
        header = _H16.pack(b0, mask_bit | 126, length)
    else:
        header = _H64.pack(b0, mask_bit | 127, length)
    if mask is not None:
        header += mask
        payload = apply_mask(payload, mask)
    if length >= LARGE:
        return header, payload
    return header + payload


def join_frame(frame: Frame) -> bytes:
    """A ``Frame`` as one bytes object."""
    return frame if isinstance(frame, bytes) else b"".join(frame)


@attrs.define(slots=True)
class FrameHeader:
    """The fixed part of a frame, known before any of its payload."""

    fin: bool
    rsv: int
    opcode: Opcode
    length: int
    mask: bytes | None


class FrameParser:
    """Incremental frame parser.

    ``feed()`` bytes, then call ``next()`` until it returns ``None``. Each result is
    ``(header, payload_piece, frame_done)``: a control frame comes whole; a data frame may come
    in several pieces (unmasked already) as it arrives. Violations of section 5 raise
    ``ProtocolError`` with the close code to send, as soon as the offending header is seen.

    A payload of ``LARGE`` bytes or more arrives in buffers of its own (see ``PIECE``), which
    bytes may be read into directly: ``get_buffer()``, then ``buffer_updated(n)`` instead of
    ``feed()``. A payload that fits in its first buffer comes whole if it has no RSV bits
    (pieces of a compressed one feed the inflater as they arrive, to refuse a bomb early).
    """

    __slots__ = (
        "_buf",
        "_filled",
        "_handed",
        "_header",
        "_offset",
        "_piece",
        "_pos",
        "_remaining",
        "allowed_rsv",
        "expect_masked",
        "max_frame_size",
    )

    def __init__(self, *, expect_masked: bool, max_frame_size: int | None) -> None:
        #: Section 5.1: a server requires masked frames, a client requires unmasked ones.
        self.expect_masked = expect_masked
        #: Largest payload accepted in one frame; ``None`` for no limit.
        self.max_frame_size = max_frame_size
        #: RSV bits that negotiated extensions may set (section 5.2); others are errors.
        self.allowed_rsv = 0
        self._buf = bytearray()
        self._pos = 0
        self._header: FrameHeader | None = None
        self._remaining = 0
        self._offset = 0  # bytes of the current payload already handed out
        # The buffer of the next PIECE bytes (at most) of a large payload: _filled of them
        # arrived, _handed were handed out. _buf is empty while it is not full.
        self._piece: bytearray | None = None
        self._filled = 0
        self._handed = 0

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        piece = self._piece
        if piece is not None and self._filled < len(piece):
            with memoryview(data) as view, memoryview(piece) as into:
                take = min(len(view), len(piece) - self._filled)
                into[self._filled : self._filled + take] = view[:take]
                self._filled += take
                if take < len(view):
                    self._buf += view[take:]  # the frames after it
            return
        if self._pos and self._pos == len(self._buf):
            self._buf.clear()
            self._pos = 0
        self._buf += data

    def get_buffer(self) -> memoryview | None:
        """Where the next bytes go while a large payload arrives (a writable view of what its
        piece still lacks; then call ``buffer_updated()``), else ``None`` (``feed()`` them)."""
        piece = self._piece
        if piece is None or self._filled == len(piece):
            return None
        return memoryview(piece)[self._filled :]

    def buffer_updated(self, size: int) -> None:
        """``size`` bytes were written at the start of the view ``get_buffer()`` gave."""
        assert self._piece is not None and self._filled + size <= len(self._piece)
        self._filled += size

    @property
    def buffered(self) -> int:
        """Bytes received and not yet handed out."""
        piece = 0 if self._piece is None else self._filled - self._handed
        return len(self._buf) - self._pos + piece

    def next(self) -> tuple[FrameHeader, bytes, bool] | None:
        header = self._header
        if header is None:
            if len(self._buf) - self._pos < 2:
                return None
            header = self._parse_header()
            if header is None:
                return None
        large = header.length >= LARGE
        if large:  # handed out of its own buffer (see get_buffer())
            buf = self._piece if self._piece is not None else self._start_piece()
            if buf is None:
                return None
            start, available = self._handed, self._filled - self._handed
        else:
            buf, start = self._buf, self._pos
            available = len(buf) - start
        remaining = self._remaining
        if available >= remaining:
            take = remaining
        elif available == 0 or header.opcode >= 0x8:
            return None  # control frames are tiny: hand them out whole
        elif large and len(buf) == header.length and not header.rsv:
            return None  # whole, in one piece: a message of one frame needs no joining
        else:
            take = available
        end = start + take
        if not large:
            self._pos = end
        elif end < len(buf):
            self._handed = end
        else:
            self._piece = None  # the next one is allocated when its bytes come
        mask = header.mask
        # One copy out of the buffer: unmasking reads the buffer in place.
        with memoryview(buf) as view:
            if mask is None or not take:
                piece = bytes(view[start:end])
            else:
                offset = self._offset & 3
                if offset:
                    mask = mask[offset:] + mask[:offset]
                piece = apply_mask(view[start:end], mask)
        self._offset += take
        self._remaining = remaining = remaining - take
        if remaining:
            return header, piece, False
        self._header = None
        self._offset = 0
        if not large and end > 65536 and end * 2 > len(buf):
            del buf[:end]
            self._pos = 0
        return header, piece, True

    def _start_piece(self) -> bytearray | None:
        """The buffer of the next piece of a large payload, with the bytes buffered already;
        ``None`` until some came. Allocated only once the header passed ``_check()``."""
        start = self._pos
        buffered = len(self._buf) - start
        if not buffered:
            return None
        size = min(self._remaining, PIECE, GROWTH * buffered)
        piece = self._piece = bytearray(size)
        take = min(size, buffered)
        with memoryview(self._buf) as view, memoryview(piece) as into:
            into[:take] = view[start : start + take]
        self._pos = start + take
        self._filled = take
        self._handed = 0
        return piece

    def _parse_header(self) -> FrameHeader | None:
        buf = self._buf
        pos = self._pos
        available = len(buf) - pos
        if available < 2:
            return None
        b0 = buf[pos]
        b1 = buf[pos + 1]
        length = b1 & 0x7F
        masked = bool(b1 & MASK_BIT)
        size = 2 + (4 if masked else 0) + (2 if length == 126 else 8 if length == 127 else 0)
        if available < size:
            # Still check what the first two bytes already tell, to fail fast.
            self._check(b0, masked, length)
            return None
        if length == 126:
            length = int.from_bytes(buf[pos + 2 : pos + 4], "big")
        elif length == 127:
            length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
            if length >> 63:
                raise ProtocolError(
                    CloseCode.PROTOCOL_ERROR, "frame length has the most significant bit set"
                )
        opcode = self._check(b0, masked, length)
        mask = bytes(buf[pos + size - 4 : pos + size]) if masked else None
        self._pos = pos + size
        header = FrameHeader(bool(b0 & FIN), b0 & 0x70, opcode, length, mask)
        self._header = header
        self._remaining = length
        self._offset = 0
        return header

    def _check(self, b0: int, masked: bool, length: int) -> Opcode:
        opcode = _OPCODES.get(b0 & 0x0F)
        if opcode is None:
            raise ProtocolError(CloseCode.PROTOCOL_ERROR, f"reserved opcode {b0 & 0x0F:#x}")
        if b0 & 0x70 & ~self.allowed_rsv:
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR, "reserved bit set without a negotiated extension"
            )
        if masked != self.expect_masked:
            # Section 5.1: clients must mask, servers must not.
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR, "frame is masked" if masked else "frame is not masked"
            )
        if opcode >= 0x8:
            # Section 5.5: control frames are never fragmented and carry at most 125 bytes.
            if not b0 & FIN:
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "fragmented control frame")
            if b0 & 0x70:
                # Extensions give RSV bits a meaning on data frames only (RFC 7692 section 6).
                raise ProtocolError(CloseCode.PROTOCOL_ERROR, "reserved bit set on a control frame")
            if length > MAX_CONTROL_PAYLOAD:
                raise ProtocolError(
                    CloseCode.PROTOCOL_ERROR, "control frame payload over 125 bytes"
                )
        elif self.max_frame_size is not None and length > self.max_frame_size:
            # Refused from the header, before any payload is buffered. Before the extended
            # length arrives, ``length`` is 126 or 127, which understates the real length.
            raise ProtocolError(
                CloseCode.MESSAGE_TOO_BIG, f"frame over the limit of {self.max_frame_size} bytes"
            )
        return opcode
