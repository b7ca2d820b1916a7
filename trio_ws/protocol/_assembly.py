"""Message assembly (RFC 6455 section 5.4): data frames in, messages out.

The ``Assembler`` enforces the fragmentation rules, runs the extensions' per-message
decoders (RFC 7692), checks text is UTF-8 as it arrives (section 8.1), and bounds a message's
size; it hands out a ``Message``, or ``MessageChunk`` pieces as they arrive.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from ._close import CloseCode
from ._errors import ProtocolError
from ._events import Message, MessageChunk
from ._extensions import Extension, MessageDecoder
from ._frames import FrameParser, Opcode
from ._metrics import Metrics

__all__ = ["Assembler"]

_utf8_decoder = codecs.getincrementaldecoder("utf-8")


def _invalid_utf8() -> ProtocolError:
    return ProtocolError(CloseCode.INVALID_DATA, "invalid UTF-8 in a text message")


class Assembler:
    """Builds messages from the data frames a ``FrameParser`` hands out, piece by piece.

    ``max_message_size`` bounds a message in bytes (after decompression, and on the wire);
    the parser's ``max_frame_size`` is kept at what the current message may still use.
    """

    __slots__ = (
        "_decoder",
        "_in_frame",
        "_opcode",
        "_parts",
        "_size",
        "_started",
        "_utf8",
        "extensions",
        "max_frame_size",
        "max_message_size",
        "metrics",
        "parser",
        "stream_fragments",
    )

    def __init__(
        self,
        parser: FrameParser,
        *,
        max_message_size: int | None,
        max_frame_size: int | None,
        stream_fragments: bool,
        metrics: Metrics | None,
    ) -> None:
        self.parser = parser
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.stream_fragments = stream_fragments
        self.metrics = metrics
        self.extensions: Sequence[Extension] = ()
        self._opcode: Opcode | None = None  # the message being assembled, if any
        self._parts: list[str | bytes] = []
        self._size = 0  # its bytes on the wire so far
        self._utf8: codecs.IncrementalDecoder | None = None
        self._decoder: MessageDecoder | None = None
        self._started = False  # a chunk of it was handed out (stream_fragments)
        self._in_frame = False  # pieces of a data frame are arriving
        parser.max_frame_size = self._frame_limit(0)

    def _frame_limit(self, used: int) -> int | None:
        """How many more payload bytes the current message may have on the wire."""
        limits = [
            limit - (used if limit is self.max_message_size else 0)
            for limit in (self.max_message_size, self.max_frame_size)
            if limit is not None
        ]
        return min(limits) if limits else None

    def receive(
        self, opcode: Opcode, fin: bool, rsv: int, piece: bytes, done: bool
    ) -> Message | MessageChunk | None:
        """One piece of a data frame (``done``: its last); the message or chunk it completes."""
        starts_frame = not self._in_frame
        self._in_frame = not done
        if self._opcode is None:
            decoder = self._start(opcode, rsv)
            if fin and done:
                return self._whole(opcode, decoder, piece)
            self._opcode = opcode
            self._decoder = decoder
            self._utf8 = _utf8_decoder() if opcode is Opcode.TEXT else None
        elif starts_frame:
            if opcode is not Opcode.CONTINUATION:
                raise ProtocolError(
                    CloseCode.PROTOCOL_ERROR, "new data frame inside a fragmented message"
                )
            if rsv:
                # RFC 7692 section 6.1: RSV1 is set on a message's first frame only.
                raise ProtocolError(
                    CloseCode.PROTOCOL_ERROR, "reserved bit set on a continuation frame"
                )
        return self._continue(piece, fin and done)

    def _start(self, opcode: Opcode, rsv: int) -> MessageDecoder | None:
        """A message's first frame: its extension's decoder, if its RSV bits name one."""
        # Section 5.4: a message starts with a text or binary frame, never a continuation.
        if opcode is Opcode.CONTINUATION:
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR, "continuation frame without a message to continue"
            )
        for ext in self.extensions:
            decoder = ext.decoder(rsv)
            if decoder is not None:
                return decoder
        if rsv:
            raise ProtocolError(
                CloseCode.PROTOCOL_ERROR, "reserved bit set without a negotiated extension"
            )
        return None

    def _whole(self, opcode: Opcode, decoder: MessageDecoder | None, payload: bytes) -> Message:
        """The common case, a message of one frame in one piece: no assembly needed."""
        if decoder is not None:
            size = len(payload)
            payload = decoder.decode(payload, final=True, max_size=self.max_message_size)
            self._count_inflated(size, len(payload))
        metrics = self.metrics
        if metrics is not None:
            metrics.messages_received += 1
            metrics.bytes_received += len(payload)
        if opcode is Opcode.TEXT:
            try:
                return Message(payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise _invalid_utf8() from None
        return Message(payload)

    def _continue(self, piece: bytes, final: bool) -> Message | MessageChunk | None:
        """A piece of a message of several frames or pieces."""
        self._size += len(piece)
        data = piece
        if self._decoder is not None:
            data = self._decoder.decode(piece, final=final, max_size=self.max_message_size)
            self._count_inflated(len(piece), len(data))
        if self.metrics is not None:
            self.metrics.bytes_received += len(data)
        value = data if self._utf8 is None else self._decode_text(self._utf8, data, final)
        if final:
            if self.metrics is not None:
                self.metrics.messages_received += 1
            self.parser.max_frame_size = self._frame_limit(0)
        else:
            self.parser.max_frame_size = self._frame_limit(self._size)
        if self.stream_fragments:
            if not value and not final:
                return None
            chunk = MessageChunk(value, not self._started, final)
            self._started = True
            if final:
                self._reset()
            return chunk
        self._parts.append(value)
        if not final:
            return None
        parts, text = self._parts, self._utf8 is not None
        self._reset()
        return Message("".join(parts) if text else b"".join(parts))  # type: ignore[arg-type]

    @staticmethod
    def _decode_text(utf8: codecs.IncrementalDecoder, data: bytes, final: bool) -> str:
        try:
            value = utf8.decode(data, final)
        except UnicodeDecodeError:
            raise _invalid_utf8() from None
        if not final:
            # Python's decoder holds back ED A0..ED BF (a UTF-16 surrogate) instead of
            # failing at once; no continuation can make it valid.
            held = utf8.getstate()[0]
            if len(held) >= 2 and held[0] == 0xED and held[1] >= 0xA0:
                raise _invalid_utf8()
        return value

    def _reset(self) -> None:
        self._opcode = None
        self._parts = []
        self._size = 0
        self._utf8 = None
        self._decoder = None
        self._started = False

    def _count_inflated(self, compressed: int, raw: int) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.deflate_bytes_received += compressed
            metrics.deflate_raw_bytes_received += raw
