"""Request targets and WebSocket URLs, trio_ws.protocol._urls (RFC 6455 section 3,
RFC 3986, RFC 3987, RFC 9112 section 3.2)."""

from __future__ import annotations

import re
from urllib.parse import unquote

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trio_ws.protocol._urls import ascii_host, quote_target, split_target, split_url

# RFC 3986 origin-form: "/" then pchars, "/" and "?" (sections 3.3, 3.4), percent-escapes.
_ORIGIN_FORM = re.compile(r"/(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})*")
_TARGET_TEXT = st.text(st.characters(exclude_categories=("Cc", "Cs")))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("ws://example.com", (False, "example.com", 80, "/")),
        ("ws://example.com/", (False, "example.com", 80, "/")),
        ("wss://example.com", (True, "example.com", 443, "/")),
        ("ws://example.com:8080/chat", (False, "example.com", 8080, "/chat")),
        ("wss://example.com:80/", (True, "example.com", 80, "/")),
        ("ws://example.com:443/", (False, "example.com", 443, "/")),
        ("ws://example.com/a/b?x=1&y=2", (False, "example.com", 80, "/a/b?x=1&y=2")),
        ("ws://example.com?x=1", (False, "example.com", 80, "/?x=1")),
        ("wss://EXAMPLE.com/Path", (True, "example.com", 443, "/Path")),
        ("ws://[::1]:9000/", (False, "::1", 9000, "/")),
        ("wss://[2001:DB8::1]/x?y=1", (True, "2001:db8::1", 443, "/x?y=1")),
        ("ws://127.0.0.1/p%20q", (False, "127.0.0.1", 80, "/p%20q")),
        ("WS://example.com/", (False, "example.com", 80, "/")),
        ("ws://example.com:/", (False, "example.com", 80, "/")),  # an empty port is the default
        ("ws://example.com./", (False, "example.com.", 80, "/")),
        # IRIs become URIs as browsers send them (RFC 3987 section 3.1).
        (
            "ws://127.0.0.1:8000/ws/user/albanø@example.org",
            (False, "127.0.0.1", 8000, "/ws/user/alban%C3%B8@example.org"),
        ),
        ("ws://example.com/a b", (False, "example.com", 80, "/a%20b")),
        ("ws://example.com/a%20b c", (False, "example.com", 80, "/a%20b%20c")),
        ("ws://example.com/100%/%zz", (False, "example.com", 80, "/100%25/%25zz")),
        (
            "ws://example.com/日本?q=ü ü&r=é",
            (False, "example.com", 80, "/%E6%97%A5%E6%9C%AC?q=%C3%BC%20%C3%BC&r=%C3%A9"),
        ),
        (
            'ws://example.com/a"<>[]^`{|}\\',
            (False, "example.com", 80, "/a%22%3C%3E%5B%5D%5E%60%7B%7C%7D%5C"),
        ),
        ("ws://example.com/;a=b:c@d!$&'()*+,~", (False, "example.com", 80, "/;a=b:c@d!$&'()*+,~")),
        ("ws://example.com/?q=/?:@", (False, "example.com", 80, "/?q=/?:@")),
        ("wss://BÜCHER.example/", (True, "xn--bcher-kva.example", 443, "/")),
        ("ws://пример.испытание:81/", (False, "xn--e1afmkfd.xn--80akhbyknj4f", 81, "/")),
    ],
)
def test_split_url(url: str, expected: tuple[bool, str, int, str]) -> None:
    assert split_url(url) == (*expected, None)


@pytest.mark.parametrize(
    ("url", "credentials"),
    [
        ("ws://alice:s3cret@example.com/", "alice:s3cret"),
        ("ws://alice@example.com/", "alice:"),
        ("wss://al%40ce:p%3Ass@example.com:8443/x", "al@ce:p:ss"),
        ("ws://zoë:pässwörd@example.com/", "zoë:pässwörd"),
    ],
)
def test_split_url_credentials(url: str, credentials: str) -> None:
    assert split_url(url)[4] == credentials


@pytest.mark.parametrize(
    "url",
    [
        "ws://example.com/#frag",
        "wss://example.com/chat?x=1#frag",
        "http://example.com/",
        "https://example.com/",
        "ftp://example.com/",
        "example.com/chat",
        "ws:///path",
        "ws://",
        "ws://example.com:notaport/",
    ],
)
def test_split_url_refused(url: str) -> None:
    with pytest.raises(ValueError):
        split_url(url)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ws://example.com/#", "fragment"),
        ("ws://example.com/a\nb", "control character"),
        ("ws://example.com/a\tb", "control character"),
        ("ws://example.com/a\x00", "control character"),
        ("ws://example.com/a\x7f", "control character"),
        ("ws://exa\rmple.com/", "control character"),
        ("ws://exa mple.com/", "invalid host name"),
        ("ws://exa<mple.com/", "invalid host name"),
        ("ws://ex%41mple.com/", "invalid host name"),
        ("ws://a..b/", "invalid host name"),
        ("ws://[zz]/", "IPv"),
        ("ws://example.com:0/", "port 0"),
        ("ws://example.com:99999/", "out of range"),
        ("http://example.com/", "not a WebSocket URL"),
    ],
)
def test_split_url_names_the_problem(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        split_url(url)
    # The message never repeats a password or a token from the URL.
    scheme, _, rest = url.partition("://")
    with pytest.raises(ValueError, match=problem) as refused:
        split_url(f"{scheme}://user:s3cret@{rest}?token=s3cret")
    assert "s3cret" not in str(refused.value)


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("example.com", "example.com"),
        ("EXAMPLE.com", "example.com"),
        ("bücher.example", "xn--bcher-kva.example"),
        ("my_host.local", "my_host.local"),
        ("127.0.0.1", "127.0.0.1"),
        ("::1", "::1"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_ascii_host(host: str, expected: str) -> None:
    assert ascii_host(host) == expected


@pytest.mark.parametrize("host", ["", "[::1]", "exa mple", "a/b", "a@b", "x" * 64 + ".com", "::g"])
def test_ascii_host_refused(host: str) -> None:
    with pytest.raises(ValueError, match="invalid"):
        ascii_host(host)


@given(_TARGET_TEXT)
def test_quote_target_is_an_ascii_origin_form_and_idempotent(text: str) -> None:
    quoted = quote_target("/" + text)
    assert _ORIGIN_FORM.fullmatch(quoted), quoted
    assert quote_target(quoted) == quoted


@given(_TARGET_TEXT.filter(lambda text: "%" not in text))
def test_quote_target_keeps_every_character(text: str) -> None:
    assert unquote(quote_target("/" + text)) == "/" + text


@pytest.mark.parametrize("target", ["", "chat", "http://example.com/", "/a\nb", "/a\x00"])
def test_quote_target_refused(target: str) -> None:
    with pytest.raises(ValueError, match=r"start with '/'|control character"):
        quote_target(target)


@pytest.mark.parametrize(
    ("target", "path", "query"),
    [
        ("/", "/", ""),
        ("/chat?room=1", "/chat", "room=1"),
        # Whatever its segments, an origin-form path is a path: never an authority.
        ("//evil.example/admin", "//evil.example/admin", ""),
        ("//evil.example", "//evil.example", ""),
        ("//user@evil.example:80/x?y=1", "//user@evil.example:80/x", "y=1"),
        ("///x", "///x", ""),
        ("/a//b/", "/a//b/", ""),
        ("/a/../b/./c", "/a/../b/./c", ""),  # not normalized
        ("/a;b=c,d", "/a;b=c,d", ""),
        ("/http://example.com/x", "/http://example.com/x", ""),
        ("/a%2Fb%3Fc%23d", "/a%2Fb%3Fc%23d", ""),
        ("/a#b", "/a#b", ""),  # not a fragment: '#' is never sent as one
        ("/?", "/", ""),
        ("/p?q=//x/?y#z", "/p", "q=//x/?y#z"),
        # Absolute-form (section 3.2.2): the path and query after the authority.
        ("http://example.com/chat?x=1", "/chat", "x=1"),
        ("WSS://example.com:8443//x", "//x", ""),
        ("http://example.com", "/", ""),
        ("https://example.com?q", "/", "q"),
    ],
)
def test_split_target(target: str, path: str, query: str) -> None:
    assert split_target(target) == (path, query)
