"""Redirects that ``open_websocket_url`` follows, and the ones it must not (RFC 9110 15.4).

The rules: never from wss:// to ws://; credentials (``Authorization``, ``Cookie``,
``Proxy-Authorization``, URL user information) are not sent on to another origin; relative
Locations resolve against the current URL; only 301, 302, 303, 307 and 308 are followed;
loops stop at ``max_redirects``. Servers run on 127.0.0.1: trio_ws servers whose handler
redirects, and a raw HTTP server (optionally over TLS) for the hops a test must inspect.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
from helpers import HOST, TEST_TIMEOUT, running_server, tls_contexts

import trio_ws
from trio_ws._trio._client import _follow

OPTIONS = trio_ws.WebSocketOptions(ping_interval=None)


def redirect(status: int, location: str) -> bytes:
    """A complete redirect response; ``location`` goes out as UTF-8 bytes."""
    return f"HTTP/1.1 {status} Moved\r\nLocation: {location}\r\nContent-Length: 0\r\n\r\n".encode()


@asynccontextmanager
async def raw_http(
    answer: Callable[[str], bytes], ssl_context: ssl.SSLContext | None = None
) -> AsyncIterator[tuple[int, list[str]]]:
    """A raw HTTP server on 127.0.0.1 answering ``answer(request_head)`` to each request.

    Yields its port and the request heads it received, in order.
    """
    heads: list[str] = []

    async def handle(stream: trio.abc.Stream) -> None:
        if ssl_context is not None:
            stream = trio.SSLStream(stream, ssl_context, server_side=True)
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                data = await stream.receive_some(4096)
                if not data:
                    return
                head += data
            heads.append(head.decode("latin-1"))
            await stream.send_all(answer(heads[-1]))
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        yield listeners[0].socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


def header_names(head: str) -> set[str]:
    return {line.partition(":")[0].lower() for line in head.split("\r\n")[1:]}


@asynccontextmanager
async def destination(
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[tuple[int, list[trio_ws.Request]]]:
    """A trio_ws server that accepts every upgrade and sends back its target; yields its port
    and the requests it received."""
    seen: list[trio_ws.Request] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.append(request.request)
        ws = await request.accept()
        await ws.send(request.request.target)

    async with running_server(handler, options=OPTIONS, ssl_context=ssl_context) as server:
        yield server.port, seen


@asynccontextmanager
async def redirecting(
    redirects: dict[str, tuple[int, str]],
) -> AsyncIterator[tuple[int, list[str]]]:
    """A trio_ws server: the targets in ``redirects`` answer ``(status, Location)``; every
    other target is accepted and its target sent back. Yields the port and targets seen."""
    seen: list[str] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        target = request.request.target
        seen.append(target)
        if target in redirects:
            status, location = redirects[target]
            # Headers go out as ISO-8859-1: this sends the UTF-8 bytes of the location.
            raw = location.encode().decode("latin-1")
            await request.respond(status, headers=[("Location", raw)])
            return
        ws = await request.accept()
        await ws.send(target)

    async with running_server(handler, options=OPTIONS) as server:
        yield server.port, seen


async def final_target(
    url: str,
    *,
    extra_headers: list[tuple[str, str]] | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_redirects: int = 5,
) -> str:
    """Connect to ``url`` following redirects; the target the accepting server received."""
    async with trio_ws.open_websocket_url(
        url,
        extra_headers=extra_headers or [],
        ssl_context=ssl_context,
        max_redirects=max_redirects,
        options=OPTIONS,
        proxy=False,
    ) as ws:
        message = await ws.receive()
        assert isinstance(message, str)
        return message


# 1. Never from wss:// to ws:// --------------------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "ws://127.0.0.1:{plain}/downgraded",
        "WS://127.0.0.1:{plain}/downgraded",
        "http://127.0.0.1:{plain}/downgraded",  # http is taken as ws
        "/hop?then=ws://127.0.0.1:{plain}/downgraded",  # a second hop drops TLS
    ],
)
async def test_a_redirect_from_wss_to_ws_is_refused(location: str) -> None:
    server_context, client_context = tls_contexts()
    with trio.fail_after(TEST_TIMEOUT):
        async with destination() as (plain, reached):
            first = location.format(plain=plain)

            def answer(head: str) -> bytes:
                target = head.split(" ")[1]
                if target.startswith("/hop?then="):
                    return redirect(307, target.partition("=")[2])
                return redirect(302, first)

            async with raw_http(answer, server_context) as (port, heads):
                with pytest.raises(trio_ws.RedirectError) as refused:
                    await final_target(f"wss://{HOST}:{port}/start", ssl_context=client_context)
    error = refused.value
    assert isinstance(error, trio_ws.HandshakeError)
    assert "wss://" in str(error) and "TLS" in str(error)
    assert error.status == (307 if location.startswith("/hop") else 302)
    assert dict(error.headers)["location"].endswith(f"{plain}/downgraded")
    assert len(heads) == (2 if location.startswith("/hop") else 1)  # TLS hops did happen
    assert reached == []  # nothing went out in plain text


async def test_wss_to_wss_and_ws_to_wss_are_followed() -> None:
    server_context, client_context = tls_contexts()
    with trio.fail_after(TEST_TIMEOUT):
        async with destination(server_context) as (secure, reached):
            final = f"https://{HOST}:{secure}/final"
            async with raw_http(lambda head: redirect(301, final), server_context) as (port, _):
                url = f"wss://{HOST}:{port}/start"
                assert await final_target(url, ssl_context=client_context) == "/final"
            async with raw_http(lambda head: redirect(308, final)) as (port, _):
                url = f"ws://{HOST}:{port}/start"
                assert await final_target(url, ssl_context=client_context) == "/final"
    assert len(reached) == 2


# 2. Credentials stay with their origin ------------------------------------------------------------

CREDENTIAL_HEADERS = {"authorization", "cookie", "proxy-authorization"}


@pytest.mark.parametrize(
    ("userinfo", "extra_headers"),
    [
        # Credentials from the URL, and a cookie and proxy credentials from extra_headers.
        ("alice:s3cret@", [("Cookie", "sid=1"), ("Proxy-Authorization", "Basic eDp5")]),
        # All from extra_headers, in any case.
        ("", [("AUTHORIZATION", "Bearer t0ken"), ("cookie", "sid=1")]),
        # Both: the caller's Authorization wins over the URL's user information.
        ("bob:pw@", [("Authorization", "Bearer t0ken"), ("COOKIE", "a=b")]),
    ],
)
async def test_credentials_are_not_sent_to_another_origin(
    userinfo: str, extra_headers: list[tuple[str, str]]
) -> None:
    headers = [*extra_headers, ("X-Trace", "42")]
    with trio.fail_after(TEST_TIMEOUT):
        async with destination() as (other, reached):

            def answer(head: str) -> bytes:
                # Two redirects that keep the origin (one relative, one absolute), then one
                # to another port.
                if head.startswith("GET /start "):
                    return redirect(302, "/same-origin")
                if head.startswith("GET /same-origin "):
                    return redirect(301, f"http://{HOST}:{port}/same-origin-again")
                return redirect(307, f"http://{HOST}:{other}/elsewhere?x=1")

            async with raw_http(answer) as (port, heads):
                url = f"ws://{userinfo}{HOST}:{port}/start"
                target = await final_target(url, extra_headers=headers)
    assert target == "/elsewhere?x=1"
    # Every request to the first origin carried every credential...
    assert len(heads) == 3
    for head in heads:
        assert CREDENTIAL_HEADERS & header_names(head) == {
            name.lower() for name, _ in extra_headers
        } | ({"authorization"} if userinfo else set())
        assert "X-Trace: 42" in head
    # ...and the other origin got none of them, but still the other headers.
    (request,) = reached
    assert not CREDENTIAL_HEADERS & {name for name, _ in request.headers}
    assert request.headers["x-trace"] == "42"


@pytest.mark.parametrize(
    ("url", "location", "same_origin"),
    [
        ("ws://h/a", "/b", True),
        ("ws://h/a", "b?c=d", True),
        ("ws://h/a", "ws://h:80/b", True),  # the default port
        ("ws://h/a", "ws://H/b", True),  # host names ignore case
        ("ws://h/a", "http://h/b", True),  # http is taken as ws
        ("wss://h:8443/a", "https://h:8443/b", True),
        ("ws://bücher.example/", "ws://xn--bcher-kva.example/b", True),  # IDNA
        ("ws://h/a", "wss://h/b", False),  # the scheme changes, even to TLS
        ("ws://h/a", "ws://h:81/b", False),  # the port
        ("ws://h/a", "ws://other/b", False),  # the host
        ("wss://h/a", "//other/b", False),
        ("ws://[::1]/a", "ws://127.0.0.1/b", False),
    ],
)
def test_an_origin_change_drops_every_credential(
    url: str, location: str, same_origin: bool
) -> None:
    credentials = [("Authorization", "Bearer t"), ("Cookie", "a=b"), ("Proxy-Authorization", "x")]
    headers = [*credentials, ("X-Trace", "1")]
    redirect_error = trio_ws.HandshakeError("redirect", status=302)
    new_url, new_headers = _follow(url, headers, location, redirect_error)
    assert new_headers == (headers if same_origin else [("X-Trace", "1")])
    # User information in the URL, or in the Location itself, does not cross origins either.
    with_userinfo = url.replace("//", "//u:p@", 1)
    new_url, _ = _follow(with_userinfo, headers, location, redirect_error)
    assert ("u:p@" in new_url) == (same_origin and "//" not in location)
    new_url, _ = _follow(url, headers, location.replace("//", "//x:y@", 1), redirect_error)
    assert ("x:y@" in new_url) == (same_origin and "//" in location)


# 3. Relative Locations resolve against the current URL --------------------------------------------


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("/final?x=1", "/final?x=1"),
        ("final?x=1", "/dir/final?x=1"),
        ("../final", "/final"),
        ("./", "/dir/"),
        ("?x=1", "/dir/start?x=1"),
        ("//127.0.0.1:{port}/final", "/final"),
        ("http://127.0.0.1:{port}/final", "/final"),
        ("ws://127.0.0.1:{port}/final", "/final"),
        ("/final#fragment", "/final"),  # a fragment is not sent
        ("/caf%C3%A9 ü", "/caf%C3%A9%20%C3%BC"),  # raw UTF-8 and a space, as browsers send
    ],
)
async def test_relative_locations_resolve_against_the_current_url(
    location: str, expected: str
) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        redirects: dict[str, tuple[int, str]] = {}
        async with redirecting(redirects) as (port, seen):
            redirects["/dir/start"] = (302, location.format(port=port))
            assert await final_target(f"ws://{HOST}:{port}/dir/start") == expected
    assert seen == ["/dir/start", expected]


# 4. Which statuses are followed -------------------------------------------------------------------


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_statuses_are_followed(status: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (status, "/final")}) as (port, seen):
            assert await final_target(f"ws://{HOST}:{port}/") == "/final"
    assert seen == ["/", "/final"]


@pytest.mark.parametrize("status", [200, 201, 300, 304, 305, 306, 309, 400, 404])
async def test_other_statuses_with_a_location_are_not_followed(status: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (status, "/final")}) as (port, seen):
            with pytest.raises(trio_ws.HandshakeError) as refused:
                await final_target(f"ws://{HOST}:{port}/")
    assert type(refused.value) is trio_ws.HandshakeError
    assert refused.value.status == status
    assert seen == ["/"]


# 5. Loops and unusable Locations ------------------------------------------------------------------


@pytest.mark.parametrize("max_redirects", [0, 1, 4])
async def test_a_redirect_loop_stops_at_max_redirects(max_redirects: int) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        redirects: dict[str, tuple[int, str]] = {"/a": (302, "/b")}
        async with redirecting(redirects) as (port, seen):
            # /a -> /b on this server; /b -> /a on another origin: a loop across origins.
            async with redirecting({"/b": (307, f"ws://{HOST}:{port}/a")}) as (other, seen_b):
                redirects["/a"] = (302, f"ws://{HOST}:{other}/b")
                with pytest.raises(trio_ws.RedirectError, match="too many redirects") as refused:
                    await final_target(f"ws://{HOST}:{port}/a", max_redirects=max_redirects)
    assert len(seen) + len(seen_b) == max_redirects + 1
    assert refused.value.status == (302 if max_redirects % 2 == 0 else 307)


async def test_max_redirects_must_not_be_negative() -> None:
    with pytest.raises(ValueError, match="max_redirects"):
        await final_target(f"ws://{HOST}:9/", max_redirects=-1)


@pytest.mark.parametrize(
    ("location", "problem"),
    [
        ("ftp://127.0.0.1/x", "not a WebSocket URL"),
        ("ws://127.0.0.1:99999/", "Port out of range"),
        ("ws://exa mple.org/", "invalid host name"),
        ("ws://:8080/x", "no host"),
    ],
)
async def test_an_unusable_location_is_a_redirect_error(location: str, problem: str) -> None:
    with trio.fail_after(TEST_TIMEOUT):
        async with redirecting({"/": (302, location)}) as (port, seen):
            with pytest.raises(trio_ws.RedirectError, match=problem) as refused:
                await final_target(f"ws://{HOST}:{port}/")
    assert refused.value.status == 302
    assert seen == ["/"]
