"""The opening handshake (RFC 6455 section 4), over h11's HTTP/1.1 parser.

``ServerHandshake`` validates an upgrade request and builds the 101 or an ordinary HTTP
response; ``ClientHandshake`` builds the request and validates the server's answer.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Sequence
from http import HTTPStatus
from urllib.parse import unquote

import attrs
import h11

from ._errors import HandshakeError
from ._headers import EMPTY_HEADERS, Headers
from ._urls import split_target

__all__ = [
    "ClientHandshake",
    "HandshakeResponse",
    "Request",
    "ServerHandshake",
    "accept_key",
    "check_header_value",
    "http_response",
]

# Section 1.3: the GUID appended to the key before hashing.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

# RFC 9112 section 3: method SP request-target SP HTTP-version.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+ [^\s]+ HTTP/[0-9]\.[0-9]")

#: Largest request or response head accepted (request line plus header fields).
DEFAULT_MAX_HEAD_SIZE = 16 * 1024

#: Header fields to send, as ``(name, value)`` pairs in order (RFC 7230 section 3.2).
HeaderList = Sequence[tuple[str, str]]


def accept_key(key: str | bytes) -> str:
    """``Sec-WebSocket-Accept`` for a ``Sec-WebSocket-Key`` (section 4.2.2 step 5.4)."""
    if isinstance(key, str):
        key = key.encode("ascii")
    return base64.b64encode(hashlib.sha1(key + _GUID).digest()).decode("ascii")


_FORBIDDEN_IN_VALUE = re.compile("[\r\n\0]")


def check_header_value(value: str) -> str:
    """Refuse a header value with CR, LF or NUL, which would let it inject headers."""
    if _FORBIDDEN_IN_VALUE.search(value):
        raise ValueError(f"invalid character in header value {value!r}")
    return value


_UPGRADE_HEADERS = ((b"Upgrade", b"websocket"), (b"Connection", b"Upgrade"))


def _encode_headers(headers: HeaderList) -> list[tuple[bytes, bytes]]:
    return [
        (check_header_value(n).encode("latin-1"), check_header_value(v).encode("latin-1"))
        for n, v in headers
    ]


@attrs.frozen
class Request:
    """An opening handshake request as the server received it (RFC 6455 section 4.2.1)."""

    #: The request target as sent, e.g. ``/chat%20room?room=1``.
    target: str
    #: The target's path, percent-decoded (``%2F`` too), e.g. ``/chat room``: everything
    #: before the first ``?`` of an origin-form target (RFC 9112 section 3.2.1), as written,
    #: never normalized (``//a/../b`` stays so). ``split_target(target)`` gives it raw.
    path: str
    #: The raw (still percent-encoded) query string, without the ``?``.
    query: str
    #: The request headers (case-insensitive names).
    headers: Headers
    #: ``Sec-WebSocket-Protocol`` values offered by the client, in preference order.
    subprotocols: tuple[str, ...]
    #: The ``Sec-WebSocket-Extensions`` offers, unparsed, one per comma-separated item.
    extensions: tuple[str, ...]
    #: False for a plain HTTP GET (no ``Upgrade`` header), which can only get a response.
    is_upgrade: bool = True

    @property
    def key(self) -> str:
        """The ``Sec-WebSocket-Key`` header value."""
        return self.headers["sec-websocket-key"]


@attrs.frozen
class HandshakeResponse:
    """The server's answer as the client received it (RFC 6455 section 4.2.2)."""

    #: The HTTP status: 101 once validated.
    status: int
    #: The response headers (case-insensitive names).
    headers: Headers
    #: The subprotocol the server chose among the offered ones, or None.
    subprotocol: str | None
    #: The ``Sec-WebSocket-Extensions`` items the server accepted, as sent.
    extensions: tuple[str, ...]


class ServerHandshake:
    """Server side: bytes in until a valid request, then the response bytes out."""

    def __init__(self, *, max_head_size: int = DEFAULT_MAX_HEAD_SIZE) -> None:
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=max_head_size)
        self._max_head_size = max_head_size
        self._fed = 0
        self._line_checked = False
        self.request: Request | None = None
        #: The headers of the 101 response, once ``accept()`` built it.
        self.response_headers = EMPTY_HEADERS

    def _check_request_line(self) -> None:
        """Refuse a complete first line that is not HTTP (h11 waits for the whole head)."""
        if self._line_checked:
            return
        pending = self._h11.trailing_data[0].lstrip(b"\r\n")
        end = pending.find(b"\n")
        if end < 0:
            return
        self._line_checked = True
        if not _REQUEST_LINE.fullmatch(pending[:end].rstrip(b"\r")):
            raise HandshakeError("malformed HTTP request line", status=400)

    @property
    def trailing_data(self) -> bytes:
        """Bytes that arrived after the request head: the first WebSocket frames."""
        return bytes(self._h11.trailing_data[0])

    def receive_data(self, data: bytes | bytearray) -> Request | None:
        """Feed bytes (``b""`` for end of stream); the request once complete, else ``None``.

        Raises ``HandshakeError`` carrying the HTTP status to answer with.
        """
        self._h11.receive_data(bytes(data))
        self._fed += len(data)
        try:
            event = self._h11.next_event()
        except h11.RemoteProtocolError as exc:
            status = exc.error_status_hint
            raise HandshakeError(f"malformed HTTP request: {exc}", status=status) from None
        if event is h11.NEED_DATA:
            self._check_request_line()
            return None
        if isinstance(event, h11.ConnectionClosed):
            raise HandshakeError("connection closed during the handshake", status=400)
        assert isinstance(event, h11.Request)
        # h11 bounds only an incomplete head; a complete one that came at once is checked here.
        if _head_size(self._h11, self._fed) > self._max_head_size:
            raise HandshakeError("request head too large", status=431)
        self.request = _validate_request(event)
        return self.request

    def accept(
        self,
        *,
        subprotocol: str | None = None,
        extensions: str | None = None,
        extra_headers: HeaderList = (),
    ) -> bytes:
        """The 101 response bytes (section 4.2.2 step 5)."""
        request = self.request
        if request is None:
            raise RuntimeError("no request to accept yet")
        if not request.is_upgrade:
            raise HandshakeError(
                "not a WebSocket request (no Upgrade header)",
                status=426,
                headers=[("Upgrade", "websocket"), ("Connection", "Upgrade")],
            )
        if subprotocol is not None and subprotocol not in request.subprotocols:
            raise ValueError(f"subprotocol {subprotocol!r} was not offered by the client")
        headers = [("Sec-WebSocket-Accept", accept_key(request.key))]
        if subprotocol is not None:
            headers.append(("Sec-WebSocket-Protocol", subprotocol))
        if extensions:
            headers.append(("Sec-WebSocket-Extensions", extensions))
        headers.extend(extra_headers)
        # Section 4.2.2 step 5: the status line, Upgrade, Connection, Sec-WebSocket-Accept.
        raw = [*_UPGRADE_HEADERS, *_encode_headers(headers)]
        self.response_headers = Headers.from_raw(raw)
        response = h11.InformationalResponse(
            status_code=101, headers=raw, reason=b"Switching Protocols"
        )
        return self._h11.send(response) or b""

    def reject(self, status: int, headers: HeaderList = (), body: bytes = b"") -> bytes:
        """An ordinary HTTP response instead of the upgrade; the connection closes after it."""
        return http_response(status, headers, body, h11_conn=self._h11)


def http_response(
    status: int,
    headers: HeaderList = (),
    body: bytes = b"",
    *,
    h11_conn: h11.Connection | None = None,
) -> bytes:
    """Serialize a complete HTTP/1.1 response with ``Connection: close``."""
    conn = h11_conn
    if conn is None or conn.our_state is not h11.SEND_RESPONSE:
        # No request was parsed (it was malformed): answer on a fresh h11 state machine.
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        conn.next_event()
    all_headers = [
        (n, v)
        for n, v in headers
        if n.lower() not in ("content-length", "connection", "transfer-encoding")
    ]
    all_headers += [("Content-Length", str(len(body))), ("Connection", "close")]
    try:
        phrase = HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        phrase = b""
    response = h11.Response(status_code=status, headers=_encode_headers(all_headers), reason=phrase)
    out = conn.send(response) or b""
    if body:
        out += conn.send(h11.Data(data=body)) or b""
    out += conn.send(h11.EndOfMessage()) or b""
    return out


def _head_size(conn: h11.Connection, fed: int) -> int:
    """Bytes consumed so far: everything fed but what h11 still holds unparsed."""
    return fed - len(conn.trailing_data[0])


def _validate_request(event: h11.Request) -> Request:
    """Apply section 4.2.1's checks; raise ``HandshakeError`` with the status to answer."""
    headers = Headers.from_raw(event.headers)
    if event.method != b"GET":
        raise HandshakeError("method must be GET", status=405, headers=[("Allow", "GET")])
    target = event.target.decode("latin-1")
    raw_path, query = split_target(target)
    path = unquote(raw_path)
    if headers.get("upgrade") is None:
        # A plain HTTP GET: the application may answer it (a page, a health check).
        return Request(target, path, query, headers, (), (), is_upgrade=False)
    if event.http_version != b"1.1":
        raise HandshakeError("HTTP/1.1 is required", status=400)
    if headers.get("host") is None:
        raise HandshakeError("missing Host header", status=400)
    if "websocket" not in headers.tokens("upgrade"):
        raise HandshakeError("missing or invalid Upgrade: websocket header", status=400)
    if "upgrade" not in headers.tokens("connection"):
        raise HandshakeError("missing or invalid Connection: upgrade header", status=400)
    versions = headers.get_all("sec-websocket-version")
    if versions != ["13"]:
        raise HandshakeError(
            "unsupported Sec-WebSocket-Version (13 is required)",
            status=426,
            headers=[("Sec-WebSocket-Version", "13")],
        )
    keys = headers.get_all("sec-websocket-key")
    if len(keys) != 1:
        raise HandshakeError("missing or repeated Sec-WebSocket-Key header", status=400)
    try:
        raw_key = base64.b64decode(keys[0].encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raw_key = b""
    if len(raw_key) != 16:
        raise HandshakeError("Sec-WebSocket-Key must be 16 bytes in base64", status=400)
    return Request(
        target=target,
        path=path,
        query=query,
        headers=headers,
        subprotocols=tuple(headers.get_list("sec-websocket-protocol")),
        extensions=tuple(headers.get_list("sec-websocket-extensions")),
    )


class ClientHandshake:
    """Client side: the request bytes out, then bytes in until the response is validated."""

    def __init__(
        self,
        host: str,
        target: str,
        *,
        subprotocols: Sequence[str] = (),
        extensions: str | None = None,
        extra_headers: HeaderList = (),
        max_head_size: int = DEFAULT_MAX_HEAD_SIZE,
        max_body_size: int = 64 * 1024,
    ) -> None:
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=max_head_size)
        self._max_head_size = max_head_size
        self._fed = 0
        self.key = base64.b64encode(os.urandom(16)).decode("ascii")
        self.subprotocols = tuple(subprotocols)
        self._max_body = max_body_size
        self._response: h11.Response | None = None
        self._body = bytearray()
        headers = [
            ("Host", host),
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Key", self.key),
            ("Sec-WebSocket-Version", "13"),
        ]
        if self.subprotocols:
            headers.append(("Sec-WebSocket-Protocol", ", ".join(self.subprotocols)))
        if extensions:
            headers.append(("Sec-WebSocket-Extensions", extensions))
        headers.extend(extra_headers)
        raw = _encode_headers(headers)
        self.request_headers = Headers.from_raw(raw)
        request = h11.Request(method="GET", target=target, headers=raw)
        self._request_bytes = (self._h11.send(request) or b"") + (
            self._h11.send(h11.EndOfMessage()) or b""
        )

    def request_bytes(self) -> bytes:
        return self._request_bytes

    @property
    def trailing_data(self) -> bytes:
        """Bytes that arrived after the 101 response: the server's first frames."""
        return bytes(self._h11.trailing_data[0])

    def receive_data(self, data: bytes | bytearray) -> HandshakeResponse | None:
        """Feed bytes (``b""`` at end of stream); the validated 101 response once complete.

        Raises ``HandshakeError`` for an invalid response, or with the status, headers and
        body of a non-101 response once its body is complete.
        """
        self._h11.receive_data(bytes(data))
        self._fed += len(data)
        while True:
            try:
                event = self._h11.next_event()
            except h11.RemoteProtocolError as exc:
                raise HandshakeError(f"malformed HTTP response: {exc}", status=0) from None
            if event is h11.NEED_DATA:
                return None
            if (
                isinstance(event, (h11.InformationalResponse, h11.Response))
                and _head_size(self._h11, self._fed) > self._max_head_size
            ):
                raise HandshakeError("response head too large", status=0)
            if isinstance(event, h11.InformationalResponse):
                if event.status_code == 101:
                    return self._validate(event)
                continue  # e.g. 100 Continue: wait for the final response
            if isinstance(event, h11.Response):
                self._response = event
                continue
            if isinstance(event, h11.Data):
                self._body += event.data
                if len(self._body) <= self._max_body:
                    continue
            if isinstance(event, h11.ConnectionClosed) and self._response is None:
                raise HandshakeError("connection closed during the handshake", status=0)
            # EndOfMessage, end of stream, or a body over the limit: report the refusal.
            response = self._response
            assert response is not None
            raise HandshakeError(
                f"server refused the upgrade with HTTP {response.status_code}",
                status=response.status_code,
                headers=list(Headers.from_raw(response.headers)),
                body=bytes(self._body[: self._max_body]),
            )

    def _validate(self, event: h11.InformationalResponse) -> HandshakeResponse:
        """Section 4.2.2 and 4.1: the checks a client must make of the 101 response."""
        headers = Headers.from_raw(event.headers)

        def fail(message: str) -> HandshakeError:
            return HandshakeError(message, status=101, headers=list(headers))

        if "websocket" not in headers.tokens("upgrade"):
            raise fail("response lacks Upgrade: websocket")
        if "upgrade" not in headers.tokens("connection"):
            raise fail("response lacks Connection: upgrade")
        if headers.get_all("sec-websocket-accept") != [accept_key(self.key)]:
            raise fail("wrong Sec-WebSocket-Accept value")
        protocols = headers.get_all("sec-websocket-protocol")
        subprotocol = None
        if protocols:
            if len(protocols) != 1 or protocols[0] not in self.subprotocols:
                raise fail(f"server chose a subprotocol that was not offered: {protocols}")
            subprotocol = protocols[0]
        extensions = tuple(headers.get_list("sec-websocket-extensions"))
        return HandshakeResponse(101, headers, subprotocol, extensions)
