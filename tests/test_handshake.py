"""Unit tests of the opening handshake (RFC 6455 section 4): trio_ws.protocol._handshake and its use
by trio_ws.protocol._connection."""

from __future__ import annotations

import base64
import binascii

import h11
import pytest
from helpers import BASE_HEADERS, RFC_KEY, drained, make_request, server_request

from trio_ws.protocol import (
    Connection,
    ConnectionState,
    Message,
    RequestReceived,
    ResponseReceived,
    Role,
)
from trio_ws.protocol._errors import HandshakeError
from trio_ws.protocol._frames import FrameParser, Opcode, encode_frame
from trio_ws.protocol._handshake import (
    ClientHandshake,
    HandshakeResponse,
    Request,
    ServerHandshake,
    accept_key,
    http_response,
)
from trio_ws.protocol._headers import Headers
from trio_ws.protocol._urls import split_target

RFC_ACCEPT = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
MASK = b"\x01\x02\x03\x04"


def parse_response(data: bytes) -> tuple[int, list[tuple[str, str]], bytes, bytes]:
    """``(status, headers with lower-case names, body, reason)`` of one HTTP response."""
    client = h11.Connection(h11.CLIENT)
    # An upgrade request, so that h11 also takes a 101 response.
    headers = [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade")]
    client.send(h11.Request(method="GET", target="/", headers=headers))
    client.send(h11.EndOfMessage())
    client.receive_data(data)
    body = b""
    response = None
    while True:
        event = client.next_event()
        if isinstance(event, (h11.Response, h11.InformationalResponse)):
            response = event
            if event.status_code == 101:
                break
        elif isinstance(event, h11.Data):
            body += event.data
        elif isinstance(event, h11.EndOfMessage):
            break
        else:
            pytest.fail(f"unexpected {event!r}: incomplete response {data!r}")
    assert response is not None
    headers = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in response.headers]
    return response.status_code, headers, body, response.reason


def server_error(data: bytes, **kwargs: int) -> HandshakeError:
    hs = ServerHandshake(**kwargs)
    with pytest.raises(HandshakeError) as info:
        hs.receive_data(data)
    return info.value


# accept_key ---------------------------------------------------------------------------------


def test_accept_key_rfc_example() -> None:
    assert accept_key(RFC_KEY) == RFC_ACCEPT
    assert accept_key(RFC_KEY.encode()) == RFC_ACCEPT


# Server: valid requests ---------------------------------------------------------------------


def test_valid_request_accepted() -> None:
    hs = ServerHandshake()
    request = hs.receive_data(
        make_request(target="/chat%20room?x=1&y=%20", replace={"Host": "example.com:8080"})
    )
    assert isinstance(request, Request)
    assert request.target == "/chat%20room?x=1&y=%20"
    assert request.path == "/chat room"
    assert request.query == "x=1&y=%20"
    assert request.key == RFC_KEY
    assert request.headers["host"] == "example.com:8080"
    assert request.headers["HOST"] == "example.com:8080"
    assert request.subprotocols == ()
    assert request.extensions == ()
    assert hs.request is request
    status, headers, _body, reason = parse_response(hs.accept())
    assert status == 101
    assert reason == b"Switching Protocols"
    assert ("sec-websocket-accept", RFC_ACCEPT) in headers
    assert ("upgrade", "websocket") in headers
    assert ("connection", "Upgrade") in headers
    names = [n for n, _ in headers]
    assert "sec-websocket-protocol" not in names
    assert "sec-websocket-extensions" not in names


def test_accept_bytes_exactly() -> None:
    hs = ServerHandshake()
    hs.receive_data(make_request())
    assert hs.accept() == (
        b"HTTP/1.1 101 Switching Protocols\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
        b"\r\n"
    )


def test_request_in_small_pieces() -> None:
    data = make_request()
    hs = ServerHandshake()
    for i in range(len(data) - 1):
        assert hs.receive_data(data[i : i + 1]) is None
    request = hs.receive_data(data[-1:])
    assert request is not None
    assert request.key == RFC_KEY


# Server: invalid requests -------------------------------------------------------------------


def test_missing_host() -> None:
    assert server_error(make_request(drop=("host",))).status == 400


@pytest.mark.parametrize("method", ["POST", "PUT", "HEAD", "DELETE", "OPTIONS"])
def test_wrong_method(method: str) -> None:
    err = server_error(make_request(method=method))
    assert err.status == 405
    assert ("Allow", "GET") in err.headers


def test_http_1_0() -> None:
    assert server_error(make_request(version="1.0")).status == 400


@pytest.mark.parametrize("upgrade", ["h2c", "websocket2", "web socket", ""])
def test_invalid_upgrade(upgrade: str) -> None:
    assert server_error(make_request(replace={"Upgrade": upgrade})).status == 400


def test_missing_upgrade_is_a_plain_get() -> None:
    # Without Upgrade, it is an ordinary HTTP request: the application may answer it, but
    # cannot accept it as a WebSocket.
    hs = ServerHandshake()
    request = hs.receive_data(make_request(drop=("upgrade",)))
    assert request is not None
    assert request.is_upgrade is False
    with pytest.raises(HandshakeError) as info:
        hs.accept()
    assert info.value.status == 426
    status, headers, body, _ = parse_response(hs.reject(200, [("X-Page", "1")], b"hello"))
    assert (status, body) == (200, b"hello")
    assert ("x-page", "1") in headers


def test_plain_get_through_connection() -> None:
    conn = Connection(Role.SERVER)
    [event] = conn.receive_data(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(event, RequestReceived)
    assert event.request.is_upgrade is False
    assert event.request.path == "/health"
    with pytest.raises(HandshakeError):
        conn.accept()
    assert conn.state is ConnectionState.CONNECTING
    status, _, body, _ = parse_response(drained(conn, conn.reject(200, body=b"ok")))
    assert (status, body) == (200, b"ok")
    assert conn.state is ConnectionState.CLOSED


@pytest.mark.parametrize("connection", ["keep-alive", "close", "upgraded", "Upgrade-Insecure"])
def test_invalid_connection(connection: str) -> None:
    assert server_error(make_request(replace={"Connection": connection})).status == 400


def test_missing_connection() -> None:
    assert server_error(make_request(drop=("connection",))).status == 400


@pytest.mark.parametrize(
    "key",
    [
        base64.b64encode(bytes(15)).decode(),
        base64.b64encode(bytes(17)).decode(),
        base64.b64encode(bytes(32)).decode(),
        "not base64 at all!",
        RFC_KEY[:-2],  # bad padding
        RFC_KEY.rstrip("="),
        "",
        "dGhlIHNhbXBsZSBub25jZQ==é",
    ],
)
def test_invalid_key(key: str) -> None:
    assert server_error(make_request(replace={"Sec-WebSocket-Key": key})).status == 400


def test_missing_key() -> None:
    assert server_error(make_request(drop=("sec-websocket-key",))).status == 400


def test_repeated_key() -> None:
    headers = [*BASE_HEADERS, ("Sec-WebSocket-Key", base64.b64encode(bytes(16)).decode())]
    assert server_error(make_request(headers)).status == 400
    # Even twice the same value.
    assert server_error(make_request([*BASE_HEADERS, BASE_HEADERS[3]])).status == 400


@pytest.mark.parametrize("version", ["8", "12", "14", "13, 8", "", "thirteen"])
def test_wrong_version(version: str) -> None:
    err = server_error(make_request(replace={"Sec-WebSocket-Version": version}))
    assert err.status == 426
    assert ("Sec-WebSocket-Version", "13") in err.headers


def test_missing_version() -> None:
    err = server_error(make_request(drop=("sec-websocket-version",)))
    assert err.status == 426
    assert ("Sec-WebSocket-Version", "13") in err.headers


@pytest.mark.parametrize(
    "data",
    [
        b"\x00\x01\x02\x03garbage\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / FTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\nBad Name: v\r\n\r\n",
        b"\r\n\r\n\r\n",
        # The start of a TLS 1.2 ClientHello: a TLS client talking to a plain server.
        bytes.fromhex("16030100c4010000c00303") + bytes(range(32)) + b"\x00\x00\x02\x13\x01",
    ],
)
def test_garbage_bytes(data: bytes) -> None:
    assert server_error(data).status == 400


def test_tls_client_hello_refused_at_once() -> None:
    # No CRLF ever comes: the error must not wait for the end of a head.
    assert server_error(bytes.fromhex("160301")).status == 400


def test_end_of_stream_during_request() -> None:
    hs = ServerHandshake()
    assert hs.receive_data(b"GET / HTTP/1.1\r\n") is None
    with pytest.raises(HandshakeError) as info:
        hs.receive_data(b"")
    assert info.value.status == 400


def big_request(size: int) -> bytes:
    return make_request([*BASE_HEADERS, ("X-Padding", "a" * size)])


def test_head_over_max_size_arriving_in_pieces() -> None:
    data = big_request(2000)
    hs = ServerHandshake(max_head_size=1024)
    with pytest.raises(HandshakeError) as info:
        for i in range(0, len(data), 100):
            hs.receive_data(data[i : i + 100])
    assert info.value.status == 431


def test_head_over_max_size_arriving_at_once() -> None:
    # The limit holds however the bytes are cut by the network.
    assert server_error(big_request(2000), max_head_size=1024).status == 431


def test_head_over_default_max_size() -> None:
    assert server_error(big_request(20_000)).status == 431


def test_head_under_max_size_accepted() -> None:
    data = big_request(600)
    assert len(data) < 1024
    assert server_request(data, max_head_size=1024).key == RFC_KEY


# Server: subprotocols, headers, reject ------------------------------------------------------


def subprotocol_request() -> bytes:
    return make_request(
        [
            *BASE_HEADERS,
            ("Sec-WebSocket-Protocol", "chat, superchat"),
            ("Sec-WebSocket-Protocol", "v2.example"),
        ]
    )


def test_subprotocols_offered() -> None:
    request = server_request(subprotocol_request())
    assert request.subprotocols == ("chat", "superchat", "v2.example")


@pytest.mark.parametrize("choice", ["chat", "superchat", "v2.example"])
def test_subprotocol_chosen_among_offered(choice: str) -> None:
    hs = ServerHandshake()
    hs.receive_data(subprotocol_request())
    _, headers, _, _ = parse_response(hs.accept(subprotocol=choice))
    assert [v for n, v in headers if n == "sec-websocket-protocol"] == [choice]


@pytest.mark.parametrize("choice", ["other", "Chat", "chat, superchat", ""])
def test_subprotocol_not_offered_refused(choice: str) -> None:
    hs = ServerHandshake()
    hs.receive_data(subprotocol_request())
    with pytest.raises(ValueError):
        hs.accept(subprotocol=choice)


def test_subprotocol_through_connection() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    request = drained(
        client, client.initiate("example.com", "/", subprotocols=["chat", "superchat"])
    )
    [event] = server.receive_data(request)
    assert isinstance(event, RequestReceived)
    assert event.request.subprotocols == ("chat", "superchat")
    with pytest.raises(ValueError):
        server.accept(subprotocol="nope")
    assert server.state is ConnectionState.CONNECTING
    [event] = client.receive_data(drained(server, server.accept(subprotocol="superchat")))
    assert isinstance(event, ResponseReceived)
    assert event.response.subprotocol == "superchat"
    assert (client.subprotocol, server.subprotocol) == ("superchat", "superchat")


def test_extra_response_headers() -> None:
    hs = ServerHandshake()
    hs.receive_data(make_request())
    extra = [("X-Server", "trio_ws"), ("Set-Cookie", "a=b"), ("Set-Cookie", "c=d")]
    _, headers, _, _ = parse_response(hs.accept(extra_headers=extra))
    for name, value in extra:
        assert (name.lower(), value) in headers
    assert ("sec-websocket-accept", RFC_ACCEPT) in headers


def test_reject_response() -> None:
    hs = ServerHandshake()
    hs.receive_data(make_request())
    data = hs.reject(
        403,
        [("X-Reason", "nope"), ("Content-Length", "999"), ("Connection", "keep-alive")],
        b"forbidden",
    )
    assert data.startswith(b"HTTP/1.1 403 Forbidden\r\n")
    status, headers, body, reason = parse_response(data)
    assert status == 403
    assert reason == b"Forbidden"
    assert body == b"forbidden"
    assert ("x-reason", "nope") in headers
    assert [v for n, v in headers if n == "content-length"] == ["9"]
    assert [v for n, v in headers if n == "connection"] == ["close"]


def test_reject_without_body() -> None:
    hs = ServerHandshake()
    hs.receive_data(make_request())
    status, headers, body, _ = parse_response(hs.reject(404))
    assert (status, body) == (404, b"")
    assert ("content-length", "0") in headers
    assert ("connection", "close") in headers


@pytest.mark.parametrize(
    "data", [b"garbage\r\n\r\n", make_request(method="POST"), make_request(version="1.0")]
)
def test_reject_after_a_bad_request(data: bytes) -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(HandshakeError) as info:
        conn.receive_data(data)
    err = info.value
    response = drained(conn, conn.reject(err.status, err.headers, err.message.encode()))
    assert conn.state is ConnectionState.CLOSED
    status, headers, body, _ = parse_response(response)
    assert status == err.status
    assert body == err.message.encode()
    for name, value in err.headers:
        assert (name.lower(), value) in headers


def test_reject_with_426_and_version_header() -> None:
    conn = Connection(Role.SERVER)
    with pytest.raises(HandshakeError) as info:
        conn.receive_data(make_request(replace={"Sec-WebSocket-Version": "8"}))
    status, headers, _, _ = parse_response(
        drained(conn, conn.reject(info.value.status, info.value.headers))
    )
    assert status == 426
    assert ("sec-websocket-version", "13") in headers


def test_http_response_standalone() -> None:
    status, headers, body, _ = parse_response(
        http_response(503, [("Retry-After", "5"), ("Transfer-Encoding", "chunked")], b"busy")
    )
    assert (status, body) == (503, b"busy")
    assert ("retry-after", "5") in headers
    assert "transfer-encoding" not in [n for n, _ in headers]
    assert ("content-length", "4") in headers
    assert ("connection", "close") in headers


def test_frames_in_same_packet_as_request_parsed_after_accept() -> None:
    frames = encode_frame(Opcode.TEXT, b"early", mask=MASK) + encode_frame(
        Opcode.BINARY, b"\x01\x02", mask=MASK
    )
    hs = ServerHandshake()
    hs.receive_data(make_request() + frames)
    assert hs.trailing_data == frames
    # Through the connection: nothing is parsed before accept(), then receive_data(b"").
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    request = drained(client, client.initiate("example.com", "/"))
    partial = encode_frame(Opcode.TEXT, b"partial", mask=MASK)[:9]
    events = server.receive_data(request + frames + partial)
    assert len(events) == 1
    assert isinstance(events[0], RequestReceived)
    server.accept()
    assert server.state is ConnectionState.OPEN
    assert server.receive_data(b"") == [Message("early"), Message(b"\x01\x02")]
    # A partial frame stays buffered until the rest arrives.
    assert server.receive_data(b"") == []
    rest = encode_frame(Opcode.TEXT, b"partial", mask=MASK)[9:]
    assert server.receive_data(rest) == [Message("partial")]


# Client: the request ------------------------------------------------------------------------


def parse_request(data: bytes) -> tuple[h11.Request, Headers]:
    server = h11.Connection(h11.SERVER)
    server.receive_data(data)
    event = server.next_event()
    assert isinstance(event, h11.Request)
    assert server.next_event() == h11.EndOfMessage()
    return event, Headers.from_raw(event.headers)


def test_client_request() -> None:
    hs = ClientHandshake(
        "example.com:8080",
        "/chat?room=1",
        subprotocols=["chat", "superchat"],
        extensions="permessage-deflate; client_max_window_bits",
        extra_headers=[("Origin", "http://example.com"), ("Cookie", "a=b")],
    )
    event, headers = parse_request(hs.request_bytes())
    assert event.method == b"GET"
    assert event.target == b"/chat?room=1"
    assert event.http_version == b"1.1"
    assert headers.get_all("host") == ["example.com:8080"]
    assert headers.tokens("upgrade") == ["websocket"]
    assert headers.tokens("connection") == ["upgrade"]
    assert headers.get_all("sec-websocket-version") == ["13"]
    assert headers.get_all("sec-websocket-protocol") == ["chat, superchat"]
    assert headers.get_all("sec-websocket-extensions") == [
        "permessage-deflate; client_max_window_bits"
    ]
    assert headers.get_all("origin") == ["http://example.com"]
    assert headers.get_all("cookie") == ["a=b"]
    [key] = headers.get_all("sec-websocket-key")
    assert key == hs.key
    assert len(base64.b64decode(key, validate=True)) == 16


def test_client_request_minimal() -> None:
    _, headers = parse_request(ClientHandshake("h", "/").request_bytes())
    names = [n for n, _ in headers]
    assert "sec-websocket-protocol" not in names
    assert "sec-websocket-extensions" not in names


def test_client_keys_are_random() -> None:
    keys = {ClientHandshake("h", "/").key for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        try:
            raw = base64.b64decode(key, validate=True)
        except binascii.Error:
            pytest.fail(f"key {key!r} is not base64")
        assert len(raw) == 16


def test_client_request_accepted_by_server() -> None:
    client = ClientHandshake("example.com", "/x", subprotocols=["p"])
    server = ServerHandshake()
    request = server.receive_data(client.request_bytes())
    assert request is not None
    assert request.key == client.key
    assert request.subprotocols == ("p",)
    response = client.receive_data(server.accept(subprotocol="p"))
    assert isinstance(response, HandshakeResponse)
    assert response.status == 101
    assert response.subprotocol == "p"
    assert response.extensions == ()


# Client: the response -----------------------------------------------------------------------


def response_for(
    client: ClientHandshake,
    *,
    accept: str | None = None,
    drop: tuple[str, ...] = (),
    extra: list[tuple[str, str]] | None = None,
) -> bytes:
    headers = [
        ("Upgrade", "websocket"),
        ("Connection", "Upgrade"),
        ("Sec-WebSocket-Accept", accept_key(client.key) if accept is None else accept),
    ]
    headers = [(n, v) for n, v in headers if n.lower() not in drop] + (extra or [])
    head = "HTTP/1.1 101 Switching Protocols\r\n"
    head += "".join(f"{n}: {v}\r\n" for n, v in headers)
    return head.encode() + b"\r\n"


def client_error(data: bytes, **kwargs: list[str]) -> HandshakeError:
    client = ClientHandshake("example.com", "/", **kwargs)
    with pytest.raises(HandshakeError) as info:
        client.receive_data(data.replace(b"{ACCEPT}", accept_key(client.key).encode()))
    return info.value


def test_valid_response() -> None:
    client = ClientHandshake("example.com", "/")
    response = client.receive_data(response_for(client, extra=[("X-Y", "z")]))
    assert response is not None
    assert response.status == 101
    assert response.subprotocol is None
    assert response.headers["x-y"] == "z"


def test_response_case_insensitive() -> None:
    client = ClientHandshake("example.com", "/")
    data = response_for(client, drop=("upgrade", "connection"))
    data = data.replace(
        b"\r\n\r\n", b"\r\nupgrade: WebSocket\r\nconnection: keep-alive, UPGRADE\r\n\r\n"
    )
    assert client.receive_data(data) is not None


def test_response_in_small_pieces() -> None:
    client = ClientHandshake("example.com", "/")
    data = response_for(client)
    for i in range(len(data) - 1):
        assert client.receive_data(data[i : i + 1]) is None
    assert client.receive_data(data[-1:]) is not None


@pytest.mark.parametrize(
    "accept",
    [
        RFC_ACCEPT,  # the answer to another key
        "",
        "x" * 28,
    ],
)
def test_wrong_accept(accept: str) -> None:
    client = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, accept=accept))


def test_missing_or_repeated_accept() -> None:
    client = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, drop=("sec-websocket-accept",)))
    client = ClientHandshake("example.com", "/")
    accept = ("Sec-WebSocket-Accept", accept_key(client.key))
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, extra=[accept]))


def test_accept_of_the_key_only() -> None:
    # The accept value must be computed from this client's own key, not any valid key.
    client = ClientHandshake("example.com", "/")
    other = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, accept=accept_key(other.key)))


@pytest.mark.parametrize("chunk", [100, 10_000])
def test_response_head_over_max_size(chunk: int) -> None:
    # Whether the oversized head arrives in pieces or at once.
    client = ClientHandshake("example.com", "/", max_head_size=1024)
    data = response_for(client, extra=[("X-Padding", "a" * 2000)])
    with pytest.raises(HandshakeError):
        for i in range(0, len(data), chunk):
            client.receive_data(data[i : i + chunk])


@pytest.mark.parametrize("drop", ["upgrade", "connection"])
def test_response_missing_upgrade_or_connection(drop: str) -> None:
    client = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, drop=(drop,)))


def test_response_with_wrong_upgrade() -> None:
    client = ClientHandshake("example.com", "/")
    data = response_for(client, drop=("upgrade",), extra=[("Upgrade", "h2c")])
    with pytest.raises(HandshakeError):
        client.receive_data(data)


@pytest.mark.parametrize(
    ("offered", "chosen"),
    [([], "chat"), (["chat"], "superchat"), (["chat", "superchat"], "chat, superchat")],
)
def test_subprotocol_not_offered(offered: list[str], chosen: str) -> None:
    client = ClientHandshake("example.com", "/", subprotocols=offered)
    data = response_for(client, extra=[("Sec-WebSocket-Protocol", chosen)])
    with pytest.raises(HandshakeError):
        client.receive_data(data)


def test_two_subprotocols_chosen() -> None:
    client = ClientHandshake("example.com", "/", subprotocols=["a", "b"])
    extra = [("Sec-WebSocket-Protocol", "a"), ("Sec-WebSocket-Protocol", "b")]
    with pytest.raises(HandshakeError):
        client.receive_data(response_for(client, extra=extra))


def test_subprotocol_offered_and_chosen() -> None:
    client = ClientHandshake("example.com", "/", subprotocols=["a", "b"])
    response = client.receive_data(response_for(client, extra=[("Sec-WebSocket-Protocol", "b")]))
    assert response is not None
    assert response.subprotocol == "b"


def test_non_101_response() -> None:
    client = ClientHandshake("example.com", "/")
    data = (
        b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nX-Why: denied\r\n"
        b"Content-Length: 7\r\n\r\ngo away"
    )
    # Nothing until the body is complete.
    assert client.receive_data(data[:-3]) is None
    with pytest.raises(HandshakeError) as info:
        client.receive_data(data[-3:])
    err = info.value
    assert err.status == 403
    assert ("x-why", "denied") in err.headers
    assert ("content-type", "text/plain") in err.headers
    assert err.body == b"go away"


def test_non_101_response_body_until_end_of_stream() -> None:
    client = ClientHandshake("example.com", "/")
    assert client.receive_data(b"HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\nfail") is None
    with pytest.raises(HandshakeError) as info:
        client.receive_data(b"")
    assert (info.value.status, info.value.body) == (500, b"fail")


def test_non_101_response_body_is_not_buffered_past_the_limit() -> None:
    client = ClientHandshake("example.com", "/", max_body_size=10)
    head = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 1000000\r\n\r\n"
    assert client.receive_data(head + b"x" * 10) is None
    with pytest.raises(HandshakeError) as info:
        client.receive_data(b"y" * 50)
    assert (info.value.status, info.value.body) == (403, b"x" * 10)


def test_non_101_response_through_connection() -> None:
    conn = Connection(Role.CLIENT)
    conn.initiate("example.com", "/")
    with pytest.raises(HandshakeError) as info:
        conn.receive_data(http_response(404, [("X-A", "b")], b"not here"))
    assert (info.value.status, info.value.body) == (404, b"not here")
    assert ("x-a", "b") in info.value.headers
    assert conn.state is ConnectionState.CLOSED


@pytest.mark.parametrize("data", [b"garbage\r\n\r\n", b"HTTP/1.1 abc\r\n\r\n", b"\x16\x03\x01"])
def test_malformed_response(data: bytes) -> None:
    client = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(data)
        client.receive_data(b"")


def test_end_of_stream_before_response() -> None:
    client = ClientHandshake("example.com", "/")
    with pytest.raises(HandshakeError):
        client.receive_data(b"")


def test_frames_right_after_101_are_parsed() -> None:
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    data = (
        drained(server, server.accept())
        + drained(server, server.send_message("first"))
        + drained(server, server.send_ping(b"p"))
        + drained(server, server.send_message(b"second"))
    )
    events = client.receive_data(data)
    # The handshake call returns the response only; the frames stay buffered for the next.
    assert len(events) == 1 and isinstance(events[0], ResponseReceived)
    assert drained(client) == b""
    events = client.receive_data(b"")
    assert events[0::2] == [Message("first"), Message(b"second")]
    assert events[1].payload == b"p"  # type: ignore[union-attr]
    assert client.state is ConnectionState.OPEN
    # The pong to the early ping is queued, and masked.
    parser = FrameParser(expect_masked=True, max_frame_size=None)
    parser.feed(drained(client))
    header, payload, done = parser.next() or pytest.fail("no pong")
    assert (header.opcode, payload, done) == (Opcode.PONG, b"p", True)


def test_client_handshake_error_closes_connection() -> None:
    conn = Connection(Role.CLIENT)
    conn.initiate("example.com", "/")
    with pytest.raises(HandshakeError):
        conn.receive_data(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + RFC_ACCEPT.encode() + b"\r\n\r\n"
        )
    assert conn.state is ConnectionState.CLOSED
    assert conn.receive_data(b"more") == []


# Request targets as the server reads them (RFC 9112 section 3.2) ------------------------------


@pytest.mark.parametrize(
    ("target", "path"),
    [
        ("//evil.example/admin?x=1", "//evil.example/admin"),
        ("/caf%C3%A9%20au%2Flait", "/café au/lait"),
        ("/%E6%97%A5?q=%20", "/日"),
        ("/a/../b#c", "/a/../b#c"),
        ("http://example.com//x", "//x"),
    ],
)
def test_server_request_path_is_the_decoded_origin_form_path(target: str, path: str) -> None:
    for data in (make_request(target=target), make_request(target=target, drop=("upgrade",))):
        request = server_request(data)
        assert request.target == target
        assert request.path == path
        assert request.query == split_target(target)[1]


@pytest.mark.parametrize("target", ["*", "example.com:80", "chat", "ftp://example.com/x"])
def test_server_refuses_other_request_target_forms(target: str) -> None:
    for data in (make_request(target=target), make_request(target=target, drop=("upgrade",))):
        error = server_error(data)
        assert error.status == 400
        assert "request target" in error.message
