"""The WebSocket connection state machine, sans I/O.

``Connection`` takes bytes from the network and gives events; it takes the application's
requests (send a message, ping, close) and gives the bytes to write. It runs the opening
handshake (section 4), frame and message assembly (section 5.4), control frames (5.5) and the
closing handshake (section 7), and refuses every violation with the close code of section 7.4.
"""

from __future__ import annotations

import codecs
import enum
import struct
from collections.abc import Sequence
from typing import Final

import attrs

from ._errors import HandshakeError, LocalProtocolError, ProtocolError
from ._extensions import (
    ClientExtensionFactory,
    Extension,
    MessageDecoder,
    ServerExtensionFactory,
    encode_message,
    negotiate_client,
    negotiate_server,
)
from ._frames import (
    Frame,
    FrameParser,
    Opcode,
    encode_frame,
    encode_frame_pieces,
    join_frame,
    new_mask,
)
from ._handshake import (
    DEFAULT_MAX_HEAD_SIZE,
    ClientHandshake,
    HandshakeResponse,
    HeaderList,
    Request,
    ServerHandshake,
)
from ._headers import EMPTY_HEADERS
from ._metrics import LOCAL, REMOTE, Metrics

__all__ = [
    "CloseReceived",
    "Connection",
    "ConnectionState",
    "Event",
    "Message",
    "MessageChunk",
    "Ping",
    "Pong",
    "RequestReceived",
    "ResponseReceived",
    "Role",
    "encode_close_reason",
    "is_valid_close_code",
]


class Role(enum.Enum):
    CLIENT = "client"
    SERVER = "server"


class ConnectionState(enum.Enum):
    """The state of a connection, ``ws.state`` (RFC 6455 sections 4 and 7)."""

    #: Opening handshake in progress.
    CONNECTING = "CONNECTING"
    #: Handshake done; messages flow both ways.
    OPEN = "OPEN"
    #: We sent a close frame and wait for the peer's.
    CLOSING = "CLOSING"
    #: Both close frames exchanged, the connection failed, or the stream ended.
    CLOSED = "CLOSED"


# The transitions the state machine allows; anything else is a bug in this module.
_TRANSITIONS: Final = {
    ConnectionState.CONNECTING: {ConnectionState.OPEN, ConnectionState.CLOSED},
    ConnectionState.OPEN: {ConnectionState.CLOSING, ConnectionState.CLOSED},
    ConnectionState.CLOSING: {ConnectionState.CLOSED},
    ConnectionState.CLOSED: set(),
}


# Events -------------------------------------------------------------------------------------


@attrs.frozen
class RequestReceived:
    """Server: a valid opening handshake request; answer with ``accept()`` or ``reject()``."""

    request: Request


@attrs.frozen
class ResponseReceived:
    """Client: the server accepted the upgrade; the connection is OPEN."""

    response: HandshakeResponse


@attrs.frozen
class Message:
    """A complete data message: ``str`` for text, ``bytes`` for binary."""

    data: str | bytes


@attrs.frozen
class MessageChunk:
    """A piece of a message that came in several pieces (with ``stream_fragments=True``).

    Text pieces are decoded already (``str``); ``first`` and ``final`` bound the message.
    """

    data: str | bytes
    first: bool
    final: bool


@attrs.frozen
class Ping:
    """The peer pinged; the pong is already queued in ``data_to_send()``."""

    payload: bytes


@attrs.frozen
class Pong:
    """The peer sent a pong (an answer to our ping, or unsolicited)."""

    payload: bytes


@attrs.frozen
class CloseReceived:
    """The peer's close frame; code 1005 if it carried none. Our answer is already queued."""

    code: int
    reason: str


Event = RequestReceived | ResponseReceived | Message | MessageChunk | Ping | Pong | CloseReceived


# Close codes ----------------------------------------------------------------------------------


def is_valid_close_code(code: int) -> bool:
    """Codes allowed in a close frame on the wire (section 7.4 and the IANA registry)."""
    return 1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999


_CLOSE_CODE = struct.Struct("!H")

#: Section 5.5: a control frame carries at most 125 bytes, 2 of them a close frame's code.
MAX_CLOSE_REASON: Final = 123


def encode_close_reason(reason: str) -> bytes:
    """A close reason as sent: UTF-8, cut to 123 bytes on a character boundary.

    Section 5.5.1: the reason is UTF-8, and a peer fails the connection with 1007 on a
    character split by the cut, so a longer reason loses its last whole characters instead
    (as wsproto does). Lone surrogates, which UTF-8 cannot encode, are sent as ``?``.
    """
    data = reason.encode("utf-8", "replace")
    if len(data) <= MAX_CLOSE_REASON:
        return data
    cut = MAX_CLOSE_REASON
    while data[cut] & 0xC0 == 0x80:  # a continuation byte: the cut would split a character
        cut -= 1
    return data[:cut]


_utf8_decoder = codecs.getincrementaldecoder("utf-8")


@attrs.define(slots=True)
class _Assembly:
    """A data message being received (section 5.4): its type, pieces and size so far."""

    opcode: Opcode
    parts: list[str | bytes]
    size: int = 0  # bytes received on the wire for it
    utf8: codecs.IncrementalDecoder | None = None
    decoder: MessageDecoder | None = None
    started: bool = False  # a chunk of it was handed out (stream_fragments)


class Connection:
    """One WebSocket connection, client or server side, without any I/O.

    Feed network bytes to ``receive_data()``, which returns events; write what
    ``data_to_send()`` returns after every call that may produce output (automatic pongs and
    close replies), and what ``send_*()`` return.
    """

    def __init__(
        self,
        role: Role,
        *,
        max_message_size: int | None = 1024 * 1024,
        max_frame_size: int | None = None,
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        stream_fragments: bool = False,
        metrics: Metrics | None = None,
    ) -> None:
        self.role = role
        #: Where this connection counts its handshake answer, messages, bytes and close
        #: (``trio_ws.Metrics``); ``None`` counts nothing.
        self.metrics = metrics
        #: Hand out a message that arrives in several pieces as ``MessageChunk`` events as they
        #: arrive, instead of one ``Message`` at the end (single-piece messages stay ``Message``).
        self.stream_fragments = stream_fragments
        self.max_message_size = max_message_size
        self.max_frame_size = max_frame_size
        self.max_head_size = max_head_size
        self._state = ConnectionState.CONNECTING
        self._parser = FrameParser(
            expect_masked=role is Role.SERVER, max_frame_size=self._frame_limit(0)
        )
        self._out = bytearray()
        self._assembly: _Assembly | None = None
        self._server_hs: ServerHandshake | None = None
        self._client_hs: ClientHandshake | None = None
        self._client_factories: list[ClientExtensionFactory] = []
        if role is Role.SERVER:
            self._server_hs = ServerHandshake(max_head_size=max_head_size)
        self.extensions: list[Extension] = []
        self.subprotocol: str | None = None
        #: Headers of the 101 response (sent by a server, received by a client).
        self.response_headers = EMPTY_HEADERS
        #: Headers of the request (client side; the server has them in ``RequestReceived``).
        self.request_headers = EMPTY_HEADERS
        #: The peer's close code and reason, once its close frame arrived.
        self.close_received: tuple[int, str] | None = None
        #: Our close code and reason, once we sent a close frame.
        self.close_sent: tuple[int, str] | None = None
        #: True if the peer started the closing handshake, False if we did.
        self.closed_by_peer: bool | None = None
        #: Set when we failed the connection (section 7.1.7): the code and reason we sent.
        self.failure: ProtocolError | None = None
        self._pending_failure: ProtocolError | None = None

    # State ------------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        return self._state

    def _set_state(self, new: ConnectionState) -> None:
        if new is not self._state and new not in _TRANSITIONS[self._state]:
            raise LocalProtocolError(f"invalid transition {self._state.name} -> {new.name}")
        if (
            new is ConnectionState.CLOSED
            and self._state is not ConnectionState.CONNECTING
            and self._state is not new
            and self.metrics is not None
        ):
            self._count_close(self.metrics)
        self._state = new

    def _count_close(self, metrics: Metrics) -> None:
        """Count the close: the first close frame's side and code, else ("remote", 1006)."""
        if self.closed_by_peer is False and self.close_sent is not None:
            metrics.count_close(LOCAL, self.close_sent[0])
        elif self.closed_by_peer and self.close_received is not None:
            metrics.count_close(REMOTE, self.close_received[0])
        else:
            metrics.count_close(REMOTE, 1006)

    def data_to_send(self) -> bytes:
        """Bytes queued by the core itself (pongs, close replies, failure close frames)."""
        out = bytes(self._out)
        self._out.clear()
        return out

    @property
    def close_outcome(self) -> tuple[int, str]:
        """How the connection closed: the peer's close code and reason, else the ones we failed
        the connection with, else 1006 (no close frame came)."""
        if self.close_received is not None:
            return self.close_received
        if self.failure is not None:
            return self.failure.code, self.failure.reason
        return 1006, ""

    @property
    def close_code(self) -> int:
        """The code of ``close_outcome``."""
        return self.close_outcome[0]

    # Opening handshake ------------------------------------------------------------------------

    def initiate(
        self,
        host: str,
        target: str,
        *,
        subprotocols: Sequence[str] = (),
        extra_headers: HeaderList = (),
        extensions: Sequence[ClientExtensionFactory] = (),
    ) -> bytes:
        """Client: the opening handshake request bytes (section 4.1)."""
        if (
            self.role is not Role.CLIENT
            or self._client_hs is not None
            or self._state is not ConnectionState.CONNECTING
        ):
            raise LocalProtocolError("initiate() is for a new client connection")
        self._client_factories = list(extensions)
        self._client_hs = ClientHandshake(
            host,
            target,
            subprotocols=subprotocols,
            extensions=", ".join(f.offer() for f in extensions) or None,
            extra_headers=extra_headers,
            max_head_size=self.max_head_size,
        )
        self.request_headers = self._client_hs.request_headers
        return self._client_hs.request_bytes()

    def accept(
        self,
        *,
        subprotocol: str | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        extra_headers: HeaderList = (),
    ) -> bytes:
        """Server: accept the received request; returns the 101 response bytes.

        ``extensions`` are the ones this server supports; each picks among the client's offers.

        Frames that arrived with the request are parsed by the next ``receive_data()`` call
        (``receive_data(b"")`` if nothing else comes).
        """
        hs = self._server_hs
        if hs is None or hs.request is None or self._state is not ConnectionState.CONNECTING:
            raise LocalProtocolError("accept() needs a received, unanswered request")
        header, accepted = negotiate_server(hs.request.extensions, extensions)
        out = hs.accept(subprotocol=subprotocol, extensions=header, extra_headers=extra_headers)
        self.subprotocol = subprotocol
        self.response_headers = hs.response_headers
        if self.metrics is not None:
            self.metrics.count_handshake(101)
        self._open(accepted, hs.trailing_data)
        return out

    def reject(self, status: int, headers: HeaderList = (), body: bytes = b"") -> bytes:
        """Server: answer with an ordinary HTTP response instead; the connection is CLOSED."""
        hs = self._server_hs
        if hs is None or self._state is not ConnectionState.CONNECTING:
            raise LocalProtocolError("reject() is only possible during the opening handshake")
        self._set_state(ConnectionState.CLOSED)
        response = hs.reject(status, headers, body)
        if self.metrics is not None:
            self.metrics.count_handshake(status)
        return response

    def _open(self, extensions: Sequence[Extension], trailing: bytes) -> None:
        self.extensions = list(extensions)
        rsv = 0
        for ext in self.extensions:
            if rsv & ext.rsv:
                raise LocalProtocolError("two extensions use the same RSV bit")
            rsv |= ext.rsv
        self._parser.allowed_rsv = rsv
        self._set_state(ConnectionState.OPEN)
        if self.metrics is not None:
            self.metrics.count_open()
        self._server_hs = None
        if trailing:
            self._parser.feed(trailing)

    def _receive_handshake(self, data: bytes | bytearray) -> list[Event]:
        if self._server_hs is not None:
            if self._server_hs.request is not None:
                raise LocalProtocolError("answer the request before feeding more data")
            request = self._server_hs.receive_data(data)
            return [RequestReceived(request)] if request is not None else []
        hs = self._client_hs
        if hs is None:
            raise LocalProtocolError("call initiate() first")
        try:
            response = hs.receive_data(data)
        except HandshakeError:
            self._set_state(ConnectionState.CLOSED)
            raise
        if response is None:
            return []
        try:
            accepted = negotiate_client(response.extensions, self._client_factories)
        except HandshakeError:
            self._set_state(ConnectionState.CLOSED)
            raise
        self.subprotocol = response.subprotocol
        self.response_headers = response.headers
        self._client_hs = None
        self._open(accepted, hs.trailing_data)
        return [ResponseReceived(response)]

    # Receiving ------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes from the network; return the events they complete.

        ``b""`` means "parse what is buffered" once open; use ``receive_eof()`` for the end
        of the stream. During the handshake, a bad request or response raises
        ``HandshakeError``; afterwards, protocol violations never raise: the connection
        fails with the right close code (see ``failure`` and ``data_to_send()``).
        """
        state = self._state
        if state is ConnectionState.CONNECTING:
            # Frames that follow the handshake stay buffered: the next call parses them, once
            # the caller is ready for messages.
            return self._receive_handshake(data)
        if state is ConnectionState.CLOSED:
            return []
        return self._receive_frames(data)

    def get_buffer(self) -> memoryview | None:
        """Where to read the next bytes into, while a large frame arrives: a writable view
        (then call ``buffer_updated()``, not ``receive_data()``); ``None`` otherwise.

        Reading into it saves a copy of the payload; ``receive_data()`` works all the same."""
        if self._state is ConnectionState.OPEN or self._state is ConnectionState.CLOSING:
            return self._parser.get_buffer()
        return None

    def buffer_updated(self, size: int) -> list[Event]:
        """``receive_data()`` of ``size`` bytes written into the view ``get_buffer()`` gave."""
        if self._state is ConnectionState.CLOSED:
            return []
        self._parser.buffer_updated(size)
        return self._receive_frames(b"")

    def receive_eof(self) -> None:
        """The peer closed the TCP stream; the connection is CLOSED (1006 without a close)."""
        self._set_state(ConnectionState.CLOSED)

    @property
    def failure_pending(self) -> bool:
        """True when a violation was found behind the events last returned.

        The connection fails at the next ``receive_data()`` call, so that an application
        can answer the messages that came before the violation before the close frame.
        """
        return self._pending_failure is not None

    def _receive_frames(self, data: bytes | bytearray) -> list[Event]:
        parser = self._parser
        if data:
            parser.feed(data)
        if self._pending_failure is not None:
            self._fail(self._pending_failure)
            return []
        events: list[Event] = []
        try:
            while self._state is not ConnectionState.CLOSED:
                item = parser.next()
                if item is None:
                    break
                header, piece, done = item
                opcode = header.opcode
                if opcode >= 0x8:
                    event = self._control(opcode, piece)
                    if event is not None:
                        events.append(event)
                else:
                    message = self._data(opcode, header.fin, header.rsv, piece, done)
                    if message is not None:
                        events.append(message)
        except ProtocolError as exc:
            if events:
                self._pending_failure = exc.with_traceback(None)
            else:
                self._fail(exc)
        return events

    def _frame_limit(self, used: int) -> int | None:
        """How many more payload bytes the current message may have on the wire."""
        limits = [
            limit - (used if limit is self.max_message_size else 0)
            for limit in (self.max_message_size, self.max_frame_size)
            if limit is not None
        ]
        return min(limits) if limits else None

    def _data(
        self, opcode: Opcode, fin: bool, rsv: int, piece: bytes, done: bool
    ) -> Message | MessageChunk | None:
        assembly = self._assembly
        starts_frame = not self._in_frame
        self._in_frame = not done
        if assembly is None:
            # Section 5.4: a message starts with a text or binary frame, never a continuation.
            if opcode is Opcode.CONTINUATION:
                raise ProtocolError(1002, "continuation frame without a message to continue")
            decoder = None
            for ext in self.extensions:
                decoder = ext.decoder(rsv)
                if decoder is not None:
                    break
            else:
                if rsv:
                    raise ProtocolError(1002, "reserved bit set without a negotiated extension")
            if fin and done:
                # The common case, one frame in one piece: no assembly needed.
                if decoder is not None:
                    size = len(piece)
                    piece = decoder.decode(piece, final=True, max_size=self.max_message_size)
                    self._count_inflated(size, len(piece))
                message = self._whole(opcode, piece)
                metrics = self.metrics
                if metrics is not None:
                    metrics.messages_received += 1
                    metrics.bytes_received += len(piece)
                return message
            assembly = _Assembly(opcode, [], decoder=decoder)
            if opcode is Opcode.TEXT:
                assembly.utf8 = _utf8_decoder()
            self._assembly = assembly
        elif starts_frame:
            if opcode is not Opcode.CONTINUATION:
                raise ProtocolError(1002, "new data frame inside a fragmented message")
            if rsv:
                # RFC 7692 section 6.1: RSV1 is set on a message's first frame only.
                raise ProtocolError(1002, "reserved bit set on a continuation frame")
        assembly.size += len(piece)
        final = fin and done
        data = piece
        if assembly.decoder is not None:
            data = assembly.decoder.decode(piece, final=final, max_size=self.max_message_size)
            self._count_inflated(len(piece), len(data))
        if self.metrics is not None:
            self.metrics.bytes_received += len(data)
        value: str | bytes = data
        if assembly.utf8 is not None:
            try:
                value = assembly.utf8.decode(data, final)
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
            if not final:
                # Python's decoder holds back ED A0..ED BF (a UTF-16 surrogate) instead of
                # failing at once; no continuation can make it valid.
                held = assembly.utf8.getstate()[0]
                if len(held) >= 2 and held[0] == 0xED and held[1] >= 0xA0:
                    raise ProtocolError(1007, "invalid UTF-8 in a text message")
        if final:
            if self.metrics is not None:
                self.metrics.messages_received += 1
            self._assembly = None
            self._parser.max_frame_size = self._frame_limit(0)
        else:
            self._parser.max_frame_size = self._frame_limit(assembly.size)
        if self.stream_fragments:
            if not value and not final:
                return None
            first = not assembly.started
            assembly.started = True
            return MessageChunk(value, first, final)
        assembly.parts.append(value)
        if not final:
            return None
        if assembly.opcode is Opcode.TEXT:
            return Message("".join(assembly.parts))  # type: ignore[arg-type]
        return Message(b"".join(assembly.parts))  # type: ignore[arg-type]

    # True while the pieces of a data frame are arriving.
    _in_frame = False
    # True between the first and the last frame of a message we send in fragments.
    _sending_fragments = False

    def _count_inflated(self, compressed: int, raw: int) -> None:
        metrics = self.metrics
        if metrics is not None:
            metrics.deflate_bytes_received += compressed
            metrics.deflate_raw_bytes_received += raw

    def _whole(self, opcode: Opcode, payload: bytes) -> Message:
        if opcode is Opcode.TEXT:
            try:
                return Message(payload.decode("utf-8"))
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in a text message") from None
        return Message(payload)

    def _control(self, opcode: Opcode, payload: bytes) -> Event | None:
        if opcode is Opcode.PING:
            if self.close_sent is None:
                self._out += self._control_frame(Opcode.PONG, payload)
            return Ping(payload)
        if opcode is Opcode.PONG:
            return Pong(payload)
        # Section 5.5.1: an optional 2-byte code, then a UTF-8 reason.
        if len(payload) == 0:
            code, reason = 1005, ""
        elif len(payload) == 1:
            raise ProtocolError(1002, "close frame with a 1-byte payload")
        else:
            (code,) = _CLOSE_CODE.unpack_from(payload)
            if not is_valid_close_code(code):
                raise ProtocolError(1002, f"invalid close code {code}")
            try:
                reason = payload[2:].decode("utf-8")
            except UnicodeDecodeError:
                raise ProtocolError(1007, "invalid UTF-8 in the close reason") from None
        self.close_received = (code, reason)
        if self.close_sent is None:
            # Section 5.5.1: answer with a close frame, echoing the code.
            self.closed_by_peer = True
            echo = b"" if code == 1005 else _CLOSE_CODE.pack(code)
            self._out += self._control_frame(Opcode.CLOSE, echo)
            self.close_sent = (code, "")
        self._set_state(ConnectionState.CLOSED)
        return CloseReceived(code, reason)

    def _fail(self, error: ProtocolError) -> None:
        """Section 7.1.7: send a close frame with the error's code, then stop processing."""
        # Without its traceback: frames it references may hold large buffers (a bomb's).
        self.failure = error = error.with_traceback(None)
        self._pending_failure = None
        if self.close_sent is None and self._state is not ConnectionState.CONNECTING:
            reason = encode_close_reason(error.reason)
            self._out += self._control_frame(Opcode.CLOSE, _CLOSE_CODE.pack(error.code) + reason)
            self.close_sent = (error.code, reason.decode("utf-8"))
            self.closed_by_peer = False
        self._set_state(ConnectionState.CLOSED)

    # Sending --------------------------------------------------------------------------------

    def _frame(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> Frame:
        mask = new_mask() if self.role is Role.CLIENT else None
        return encode_frame_pieces(opcode, payload, fin=fin, rsv=rsv, mask=mask)

    def _control_frame(self, opcode: Opcode, payload: bytes) -> bytes:
        mask = new_mask() if self.role is Role.CLIENT else None
        return encode_frame(opcode, payload, mask=mask)

    def _check_can_send(self) -> None:
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot send data in state {self._state.name}")

    def send_message(
        self, data: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> bytes:
        """The frame for one whole message: text for ``str``, binary otherwise.

        ``compress=False`` skips the extensions (permessage-deflate) for this message.
        """
        return join_frame(self.send_message_pieces(data, compress=compress))

    def send_message_pieces(
        self, data: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> Frame:
        """``send_message()``, with a large payload apart from its header (``Frame``)."""
        self._check_can_send()
        if isinstance(data, str):
            opcode, payload = Opcode.TEXT, data.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, bytes(data)
        if self._sending_fragments:
            raise LocalProtocolError("a fragmented message is being sent: finish it first")
        metrics = self.metrics
        if metrics is not None:
            metrics.messages_sent += 1
            metrics.bytes_sent += len(payload)
        rsv = 0
        if compress and self.extensions:
            size = len(payload)
            rsv, payload = encode_message(self.extensions, opcode, payload)
            if rsv and metrics is not None:
                metrics.deflate_raw_bytes_sent += size
                metrics.deflate_bytes_sent += len(payload)
        return self._frame(opcode, payload, rsv=rsv)

    def send_frame(self, opcode: Opcode, payload: bytes, *, fin: bool = True) -> bytes:
        """One raw data frame, for fragmented sends; extensions are not applied."""
        return join_frame(self.send_frame_pieces(opcode, payload, fin=fin))

    def send_frame_pieces(self, opcode: Opcode, payload: bytes, *, fin: bool = True) -> Frame:
        """``send_frame()``, with a large payload apart from its header (``Frame``)."""
        self._check_can_send()
        if opcode.is_control:
            raise LocalProtocolError("use send_ping(), send_pong() or send_close()")
        # Section 5.4: a continuation continues a message; a new message waits for the end.
        if (opcode is Opcode.CONTINUATION) is not self._sending_fragments:
            raise LocalProtocolError(
                "a fragmented message is being sent: continue it"
                if self._sending_fragments
                else "no fragmented message to continue"
            )
        self._sending_fragments = not fin
        metrics = self.metrics
        if metrics is not None:
            metrics.messages_sent += fin
            metrics.bytes_sent += len(payload)
        return self._frame(opcode, payload, fin=fin)

    def send_ping(self, payload: bytes = b"") -> bytes:
        self._check_can_send()
        if len(payload) > 125:
            raise LocalProtocolError("ping payload over 125 bytes")
        return self._control_frame(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> bytes:
        self._check_can_send()
        if len(payload) > 125:
            raise LocalProtocolError("pong payload over 125 bytes")
        return self._control_frame(Opcode.PONG, payload)

    def send_close(self, code: int = 1000, reason: str = "") -> bytes:
        """Start the closing handshake (section 7.1.2); the state becomes CLOSING.

        Code 1005 sends a close frame without a payload. A reason over 123 bytes of UTF-8 is
        cut to fit, between characters (``encode_close_reason``); ``close_sent`` has the
        reason as sent. An invalid code raises ``ValueError``.
        """
        if self._state is not ConnectionState.OPEN:
            raise LocalProtocolError(f"cannot close in state {self._state.name}")
        if code == 1005:
            payload, reason = b"", ""
        else:
            if not is_valid_close_code(code):
                raise ValueError(f"close code {code} may not be sent")
            encoded = encode_close_reason(reason)
            payload, reason = _CLOSE_CODE.pack(code) + encoded, encoded.decode("utf-8")
        self.close_sent = (code, reason)
        self.closed_by_peer = False
        self._set_state(ConnectionState.CLOSING)
        return self._control_frame(Opcode.CLOSE, payload)
