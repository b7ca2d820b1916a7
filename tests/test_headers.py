"""Header fields (trio_ws/protocol/_headers.py): the case-insensitive, immutable ``Headers``
view and ``split_tokens``; how the handshake reads header names and token lists (RFC 9110
section 5.6.1) and refuses values that could inject a header (CR, LF, NUL).
"""

from __future__ import annotations

import pytest
from helpers import BASE_HEADERS, RFC_KEY, make_request, server_request

from trio_ws.protocol._handshake import ClientHandshake, ServerHandshake, check_header_value
from trio_ws.protocol._headers import EMPTY_HEADERS, Headers, split_tokens

# Headers ------------------------------------------------------------------------------------

RAW = [("Content-Type", "text/plain"), ("Set-Cookie", "a=b"), ("set-cookie", "c=d")]


def test_names_are_lower_case_and_order_is_kept() -> None:
    headers = Headers(RAW)
    assert list(headers) == [
        ("content-type", "text/plain"),
        ("set-cookie", "a=b"),
        ("set-cookie", "c=d"),
    ]
    assert len(headers) == 3
    assert headers[1] == ("set-cookie", "a=b")
    assert list(headers[1:]) == [("set-cookie", "a=b"), ("set-cookie", "c=d")]


def test_lookups_ignore_case() -> None:
    headers = Headers(RAW)
    assert headers["CONTENT-TYPE"] == headers["content-type"] == "text/plain"
    assert headers["Set-Cookie"] == "a=b"  # the first value
    assert headers.get_all("SET-COOKIE") == ["a=b", "c=d"]
    assert headers.get("x-missing") is None
    assert headers.get("x-missing", "default") == "default"
    assert headers.get_all("x-missing") == []
    with pytest.raises(KeyError):
        headers["x-missing"]
    assert "Content-Type" in headers
    assert "x-missing" not in headers
    assert ("set-cookie", "c=d") in headers
    assert ("Set-Cookie", "c=d") not in headers  # pairs hold lower-case names


def test_get_list_and_tokens_read_comma_separated_values_over_several_fields() -> None:
    headers = Headers([("Connection", "keep-alive, Upgrade"), ("connection", " ,x-Other ,")])
    assert headers.get_list("connection") == ["keep-alive", "Upgrade", "x-Other"]
    assert headers.tokens("CONNECTION") == ["keep-alive", "upgrade", "x-other"]
    assert headers.tokens("missing") == []


def test_from_raw_decodes_iso_8859_1() -> None:
    headers = Headers.from_raw([(b"X-Name", b"caf\xe9")])
    assert list(headers) == [("x-name", "caf\xe9")]


def test_equality_hash_and_repr() -> None:
    assert Headers(RAW) == Headers([(n.upper(), v) for n, v in RAW])
    assert hash(Headers(RAW)) == hash(Headers(RAW))
    assert Headers(RAW) != Headers(RAW[:2])
    assert Headers(RAW) != RAW  # not equal to a plain list
    assert Headers() == EMPTY_HEADERS and len(EMPTY_HEADERS) == 0
    assert repr(Headers([("A", "1")])) == "Headers([('a', '1')])"


def test_headers_are_immutable() -> None:
    headers = Headers(RAW)
    with pytest.raises(AttributeError):
        headers.extra = 1  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        headers[0] = ("x", "y")  # type: ignore[index]


@pytest.mark.parametrize(
    ("value", "items"),
    [
        ("", []),
        ("a", ["a"]),
        (" a , b,c ", ["a", "b", "c"]),
        ("a,,b, ,", ["a", "b"]),
        ("Keep-Alive, Upgrade", ["Keep-Alive", "Upgrade"]),
    ],
)
def test_split_tokens(value: str, items: list[str]) -> None:
    assert split_tokens(value) == items


# Header fields in the opening handshake -------------------------------------------------------


@pytest.mark.parametrize("upgrade", ["websocket", "WebSocket", "WEBSOCKET", "foo, websocket"])
@pytest.mark.parametrize(
    "connection",
    ["Upgrade", "upgrade", "keep-alive, Upgrade", "Upgrade, keep-alive", "keep-alive,UPGRADE"],
)
def test_upgrade_and_connection_are_case_insensitive_token_lists(
    upgrade: str, connection: str
) -> None:
    request = server_request(make_request(replace={"Upgrade": upgrade, "Connection": connection}))
    assert request.key == RFC_KEY


def test_connection_tokens_over_several_header_lines() -> None:
    headers = [*BASE_HEADERS[:2], ("Connection", "keep-alive"), ("Connection", "upgrade")]
    headers += BASE_HEADERS[3:]
    assert server_request(make_request(headers)).key == RFC_KEY


def test_header_names_are_case_insensitive() -> None:
    headers = [(n.upper(), v) for n, v in BASE_HEADERS]
    assert server_request(make_request(headers)).key == RFC_KEY


@pytest.mark.parametrize("bad", ["a\r\nX-Injected: 1", "a\nb", "a\rb", "a\0b"])
def test_header_values_with_cr_lf_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        check_header_value(bad)
    hs = ServerHandshake()
    hs.receive_data(make_request())
    with pytest.raises(ValueError):
        hs.accept(extra_headers=[("X-Bad", bad)])
    with pytest.raises(ValueError):
        hs.accept(extra_headers=[(bad, "value")])
    with pytest.raises(ValueError):
        hs.reject(400, [("X-Bad", bad)])
    with pytest.raises(ValueError):
        ClientHandshake("example.com", "/", extra_headers=[("X-Bad", bad)])
    with pytest.raises(ValueError):
        ClientHandshake(bad, "/")


def test_check_header_value_accepts_ordinary_values() -> None:
    assert check_header_value("text/html; charset=utf-8") == "text/html; charset=utf-8"
