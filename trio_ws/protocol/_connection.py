"""``Connection``: one WebSocket connection without I/O, wiring the parts together.

Bytes from the network go to the handshake (``_handshake``), then the frame parser
(``_frames``), whose data frames the ``Assembler`` makes messages of (``_assembly``) and whose
control frames are answered here (RFC 6455 section 5.5). The state and the closing
handshake's facts live in ``_state``. Everything to write comes out of ``data_to_send()``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._assembly import Assembler
from ._close import CloseCode, decode_close_payload, encode_close_payload
from ._errors import HandshakeError, LocalProtocolError, ProtocolError
from ._events import (
    CloseReceived,
    Event,
    Ping,
    Pong,
    RequestReceived,
    ResponseReceived,
)
from ._extensions import (
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
    encode_message,
    negotiate_client,
    negotiate_server,
)
from ._frames import MAX_CONTROL_PAYLOAD, FrameParser, Opcode, encode_frame_pieces, new_mask
from ._handshake import DEFAULT_MAX_HEAD_SIZE, ClientHandshake, HeaderList, ServerHandshake
from ._headers import EMPTY_HEADERS
from ._metrics import LOCAL, REMOTE, Metrics
from ._state import ConnectionState, Input, Role, StateMachine

__all__ = ["Connection"]

_OPEN = ConnectionState.OPEN
_CLOSED = ConnectionState.CLOSED


class Connection:
    """One WebSocket connection, client or server side, without any I/O.

    Feed network bytes to ``receive_data()`` (or ``get_buffer()``/``buffer_updated()``),
    which returns events (``trio_ws.protocol.Event``); tell it about the end of the stream
    with ``receive_eof()``. The handshake answers, messages, pings, close frames and the
    automatic replies (pongs, close echoes, failure close frames) are queued: after every call,
    write what ``data_to_send()`` returns, in order.

    ``max_message_size`` and ``max_frame_size`` are in bytes (``None``: no limit); a peer
    exceeding them fails the connection with 1009. ``max_head_size`` bounds the handshake's
    HTTP head, in bytes. With ``stream_fragments``, a message that arrives in several frames
    or pieces comes as ``MessageChunk`` events as they arrive, instead of one ``Message`` at
    the end (a message of one piece stays a ``Message``).
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
        self.max_head_size = max_head_size
        self._machine = StateMachine()
        self._parser = FrameParser(expect_masked=role is Role.SERVER, max_frame_size=None)
        self._assembler = Assembler(
            self._parser,
            max_message_size=max_message_size,
            max_frame_size=max_frame_size,
            stream_fragments=stream_fragments,
            metrics=metrics,
        )
        self._out: list[bytes] = []
        self._mask = role is Role.CLIENT
        self._server_hs = (
            ServerHandshake(max_head_size=max_head_size) if role is Role.SERVER else None
        )
        self._client_hs: ClientHandshake | None = None
        self._client_factories: list[ClientExtensionFactory] = []
        #: The negotiated extensions, once open (RFC 6455 section 9).
        self.extensions: list[Extension] = []
        #: The negotiated subprotocol, once open (section 1.9); None if none.
        self.subprotocol: str | None = None
        #: Headers of the 101 response (sent by a server, received by a client).
        self.response_headers = EMPTY_HEADERS
        #: Headers of the request (client side; the server has them in ``RequestReceived``).
        self.request_headers = EMPTY_HEADERS

    # State ------------------------------------------------------------------------------------

    @property
    def state(self) -> ConnectionState:
        """The state (RFC 6455 sections 4 and 7)."""
        return self._machine.state

    @property
    def close_received(self) -> tuple[int, str] | None:
        """The peer's close code and reason, once its close frame arrived."""
        return self._machine.close_received

    @property
    def close_sent(self) -> tuple[int, str] | None:
        """Our close code and reason (as sent: cut to fit), once our close frame is queued."""
        return self._machine.close_sent

    @property
    def closed_by_peer(self) -> bool | None:
        """True if the peer started the closing handshake, False if we did, else None."""
        return self._machine.closed_by_peer

    @property
    def failure(self) -> ProtocolError | None:
        """The violation we failed the connection with (section 7.1.7): its code and reason
        are those of our close frame."""
        return self._machine.failure

    @property
    def failure_pending(self) -> bool:
        """True when a violation was found behind the events last returned.

        The connection fails at the next ``receive_data()`` call, so that an application
        can answer the messages that came before the violation before the close frame.
        """
        return self._machine.pending_failure is not None

    @property
    def close_outcome(self) -> tuple[int, str]:
        """How the connection closed: the peer's close code and reason, else the ones we failed
        the connection with, else 1006 (no close frame came)."""
        return self._machine.close_outcome

    @property
    def close_code(self) -> int:
        """The code of ``close_outcome``."""
        return self._machine.close_outcome[0]

    @property
    def stream_fragments(self) -> bool:
        """Messages of several pieces come as ``MessageChunk`` events as they arrive."""
        return self._assembler.stream_fragments

    @property
    def max_message_size(self) -> int | None:
        """Largest message accepted, in bytes (after decompression); ``None``: no limit."""
        return self._assembler.max_message_size

    @property
    def max_frame_size(self) -> int | None:
        """Largest frame payload accepted, in bytes; ``None``: no limit."""
        return self._assembler.max_frame_size

    def _count_close(self) -> None:
        """The open connection is CLOSED now: count the first close frame's side and code,
        else ("remote", 1006)."""
        metrics = self.metrics
        if metrics is None:
            return
        machine = self._machine
        if machine.closed_by_peer is False and machine.close_sent is not None:
            metrics.count_close(LOCAL, machine.close_sent[0])
        elif machine.closed_by_peer and machine.close_received is not None:
            metrics.count_close(REMOTE, machine.close_received[0])
        else:
            metrics.count_close(REMOTE, CloseCode.ABNORMAL_CLOSURE.value)

    def data_to_send(self) -> list[bytes]:
        """Everything queued to write, in order, and empties the queue: pieces of bytes to
        write one after the other (``writev``), a frame's large payload (64 KiB or more)
        apart from its header, never copied to join them. ``[]`` if nothing is queued."""
        out = self._out
        self._out = []
        return out

    # Opening handshake (section 4) ------------------------------------------------------------

    def initiate(
        self,
        host: str,
        target: str,
        *,
        subprotocols: Sequence[str] = (),
        extra_headers: HeaderList = (),
        extensions: Sequence[ClientExtensionFactory] = (),
    ) -> None:
        """Client: queue the opening handshake request (section 4.1) for ``host`` (the Host
        header) and ``target`` (path and query), offering ``subprotocols`` and ``extensions``."""
        if (
            self.role is not Role.CLIENT
            or self._client_hs is not None
            or self.state is not ConnectionState.CONNECTING
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
        self._out.append(self._client_hs.request_bytes())

    def accept(
        self,
        *,
        subprotocol: str | None = None,
        extensions: Sequence[ServerExtensionFactory] = (),
        extra_headers: HeaderList = (),
    ) -> None:
        """Server: accept the received request; queues the 101 response (section 4.2.2).

        ``extensions`` are the ones this server supports; each picks among the client's offers.
        Frames that arrived with the request are parsed by the next ``receive_data()`` call
        (``receive_data(b"")`` if nothing else comes).
        """
        hs = self._server_hs
        if hs is None or hs.request is None or self.state is not ConnectionState.CONNECTING:
            raise LocalProtocolError("accept() needs a received, unanswered request")
        header, accepted = negotiate_server(hs.request.extensions, extensions)
        out = hs.accept(subprotocol=subprotocol, extensions=header, extra_headers=extra_headers)
        self.subprotocol = subprotocol
        self.response_headers = hs.response_headers
        if self.metrics is not None:
            self.metrics.count_handshake(101)
        self._open(Input.REQUEST_ACCEPTED, accepted, hs.trailing_data)
        self._out.append(out)

    def reject(self, status: int, headers: HeaderList = (), body: bytes = b"") -> None:
        """Server: queue an ordinary HTTP response instead (``status``, headers as
        ``(name, value)`` pairs, ``body``); the connection is CLOSED."""
        hs = self._server_hs
        if hs is None or self.state is not ConnectionState.CONNECTING:
            raise LocalProtocolError("reject() is only possible during the opening handshake")
        self._machine.fire(Input.REQUEST_REJECTED)
        self._out.append(hs.reject(status, headers, body))
        if self.metrics is not None:
            self.metrics.count_handshake(status)

    def _open(self, event: Input, extensions: Sequence[Extension], trailing: bytes) -> None:
        self.extensions = list(extensions)
        rsv = 0
        for ext in self.extensions:
            if rsv & ext.rsv:
                raise LocalProtocolError("two extensions use the same RSV bit")
            rsv |= ext.rsv
        self._parser.allowed_rsv = rsv
        self._assembler.extensions = self.extensions
        self._machine.fire(event)
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
            if response is None:
                return []
            accepted = negotiate_client(response.extensions, self._client_factories)
        except HandshakeError:
            self._machine.fire(Input.RESPONSE_REFUSED)
            raise
        self.subprotocol = response.subprotocol
        self.response_headers = response.headers
        self._client_hs = None
        self._open(Input.RESPONSE_ACCEPTED, accepted, hs.trailing_data)
        return [ResponseReceived(response)]

    # Receiving --------------------------------------------------------------------------------

    def receive_data(self, data: bytes | bytearray) -> list[Event]:
        """Feed bytes from the network; return the events they complete.

        ``b""`` means "parse what is buffered" once open; use ``receive_eof()`` for the end
        of the stream. During the handshake, a bad request or response raises
        ``HandshakeError``; afterwards, protocol violations never raise: the connection
        fails with the right close code (see ``failure`` and ``data_to_send()``).
        """
        state = self._machine.state
        if state is ConnectionState.CONNECTING:
            # Frames that follow the handshake stay buffered: the next call parses them, once
            # the caller is ready for messages.
            return self._receive_handshake(data)
        if state is _CLOSED:
            return []
        if data:
            self._parser.feed(data)
        return self._receive_frames()

    def get_buffer(self) -> memoryview | None:
        """Where to read the next bytes into, while a large frame arrives: a writable view
        (then call ``buffer_updated()``, not ``receive_data()``); ``None`` otherwise.

        Reading into it saves a copy of the payload; ``receive_data()`` works all the same."""
        state = self._machine.state
        if state is _OPEN or state is ConnectionState.CLOSING:
            return self._parser.get_buffer()
        return None

    def buffer_updated(self, size: int) -> list[Event]:
        """``receive_data()`` of ``size`` bytes written into the view ``get_buffer()`` gave."""
        if self._machine.state is _CLOSED:
            return []
        self._parser.buffer_updated(size)
        return self._receive_frames()

    def receive_eof(self) -> None:
        """The peer closed the TCP stream; the connection is CLOSED (1006 without a close)."""
        before = self._machine.fire(Input.END_OF_STREAM)
        if before is _OPEN or before is ConnectionState.CLOSING:
            self._count_close()

    def _receive_frames(self) -> list[Event]:
        machine = self._machine
        if machine.pending_failure is not None:
            self._fail(machine.pending_failure)
            return []
        parser = self._parser
        receive = self._assembler.receive
        events: list[Event] = []
        try:
            while machine.state is not _CLOSED:
                item = parser.next()
                if item is None:
                    break
                header, piece, done = item
                if header.opcode >= Opcode.CLOSE:
                    events.append(self._control(header.opcode, piece))
                else:
                    message = receive(header.opcode, header.fin, header.rsv, piece, done)
                    if message is not None:
                        events.append(message)
        except ProtocolError as exc:
            if events:
                machine.pending_failure = exc.with_traceback(None)
            else:
                self._fail(exc)
        return events

    def _control(self, opcode: Opcode, payload: bytes) -> Event:
        """A control frame (section 5.5), answered here."""
        if opcode is Opcode.PING:
            if self._machine.close_sent is None:
                self._queue(Opcode.PONG, payload)  # section 5.5.2
            return Ping(payload)
        if opcode is Opcode.PONG:
            return Pong(payload)
        code, reason = decode_close_payload(payload)
        if self._machine.receive_close(code, reason):
            # Section 5.5.1: answer with a close frame, echoing the code.
            self._queue(Opcode.CLOSE, encode_close_payload(code))
        self._count_close()
        return CloseReceived(code, reason)

    def _fail(self, error: ProtocolError) -> None:
        """Section 7.1.7: send a close frame with the error's code, then stop processing."""
        # Without its traceback: frames it references may hold large buffers (a bomb's).
        error = error.with_traceback(None)
        payload = encode_close_payload(error.code, error.reason)
        if self._machine.fail(error, payload[2:].decode("utf-8")):
            self._queue(Opcode.CLOSE, payload)
        self._count_close()

    # Sending ----------------------------------------------------------------------------------

    def _queue(self, opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0) -> None:
        """Queue one frame: masked by a client (section 5.3); a large payload apart."""
        frame = encode_frame_pieces(
            opcode, payload, fin=fin, rsv=rsv, mask=new_mask() if self._mask else None
        )
        if isinstance(frame, bytes):
            self._out.append(frame)
        else:
            self._out += frame

    def _check_can_send(self) -> None:
        if self._machine.state is not _OPEN:
            raise LocalProtocolError(f"cannot send data in state {self.state.name}")

    def send_message(
        self, data: str | bytes | bytearray | memoryview, *, compress: bool = True
    ) -> None:
        """Queue one whole message (section 5.6): text for ``str``, binary otherwise.

        ``compress=False`` skips the extensions (permessage-deflate) for this message.
        """
        self._check_can_send()
        if isinstance(data, str):
            opcode, payload = Opcode.TEXT, data.encode("utf-8")
        else:
            opcode, payload = Opcode.BINARY, bytes(data)
        if self._machine.sending_fragments:
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
        self._queue(opcode, payload, rsv=rsv)

    def send_frame(self, opcode: Opcode, payload: bytes, *, fin: bool = True) -> None:
        """Queue one data frame of a fragmented message (section 5.4): TEXT or BINARY
        first, then CONTINUATION frames, the last with ``fin``. Extensions are not applied."""
        self._check_can_send()
        if opcode.is_control:
            raise LocalProtocolError("use send_ping(), send_pong() or send_close()")
        machine = self._machine
        # Section 5.4: a continuation continues a message; a new message waits for the end.
        if (opcode is Opcode.CONTINUATION) is not machine.sending_fragments:
            raise LocalProtocolError(
                "a fragmented message is being sent: continue it"
                if machine.sending_fragments
                else "no fragmented message to continue"
            )
        machine.sending_fragments = not fin
        metrics = self.metrics
        if metrics is not None:
            metrics.messages_sent += fin
            metrics.bytes_sent += len(payload)
        self._queue(opcode, payload, fin=fin)

    def send_ping(self, payload: bytes = b"") -> None:
        """Queue a ping (section 5.5.2) of at most 125 bytes."""
        self._send_control(Opcode.PING, payload)

    def send_pong(self, payload: bytes = b"") -> None:
        """Queue an unsolicited pong (section 5.5.3) of at most 125 bytes."""
        self._send_control(Opcode.PONG, payload)

    def _send_control(self, opcode: Opcode, payload: bytes) -> None:
        self._check_can_send()
        if len(payload) > MAX_CONTROL_PAYLOAD:
            raise LocalProtocolError(f"{opcode.name.lower()} payload over 125 bytes")
        self._queue(opcode, payload)

    def send_close(self, code: int = CloseCode.NORMAL_CLOSURE, reason: str = "") -> None:
        """Start the closing handshake (section 7.1.2); the state becomes CLOSING.

        Code 1005 sends a close frame without a payload. A reason over 123 bytes of UTF-8 is
        cut to fit, between characters (``encode_close_reason``); ``close_sent`` has the
        reason as sent. An invalid code raises ``ValueError``.
        """
        if self._machine.state is not _OPEN:
            raise LocalProtocolError(f"cannot close in state {self.state.name}")
        payload = encode_close_payload(code, reason)  # ValueError: nothing changed
        self._machine.send_close(code, payload[2:].decode("utf-8"))
        self._queue(Opcode.CLOSE, payload)
