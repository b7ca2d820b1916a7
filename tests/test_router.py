"""Router (path patterns, WebSocket and HTTP routes) and the authentication wrappers.

Most tests run in memory through ``trio_ws.testing``; one serves a router on a socket.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

import trio_ws
from trio_ws._features._auth import basic_auth, bearer_token, find_token, request_cookies, require
from trio_ws._features._router import HTTPResult, Router
from trio_ws.testing import open_memory_pair, open_memory_server

TIMEOUT = 10.0


def basic(user: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


async def accept_and_report(request: trio_ws.WebSocketRequest, **params: str) -> None:
    """Accept, then send back a description of the route's parameters."""
    ws = await request.accept()
    await ws.send(repr(sorted(params.items())))


async def handshake_status(handler: Any, resource: str, **kwargs: Any) -> trio_ws.HandshakeError:
    with trio.fail_after(TIMEOUT), pytest.raises(trio_ws.HandshakeError) as info:
        async with open_memory_pair(handler, resource, **kwargs):
            pass
    return info.value


# Matching -----------------------------------------------------------------------------------


async def test_exact_route_and_parameters() -> None:
    router = Router()
    router.add("/", accept_and_report)
    router.add("/rooms/{room}", accept_and_report)
    router.add("/rooms/{room}/users/{user}", accept_and_report)
    cases = {
        "/": "[]",
        "/rooms/lobby": "[('room', 'lobby')]",
        "/rooms/lobby?x=1": "[('room', 'lobby')]",
        "/rooms/a%20b": "[('room', 'a b')]",
        "/rooms/a%2Fb": "[('room', 'a/b')]",  # an encoded slash stays in the parameter
        "/rooms/caf%C3%A9/users/7": "[('room', 'café'), ('user', '7')]",
    }
    with trio.fail_after(TIMEOUT):
        for resource, expected in cases.items():
            async with open_memory_pair(router, resource) as ws:
                assert await ws.receive() == expected, resource


@pytest.mark.parametrize("resource", ["/rooms", "/rooms/", "/rooms/x/", "/rooms/x/y", "/other"])
async def test_unmatched_upgrade_gets_404(resource: str) -> None:
    router = Router()
    router.add("/rooms/{room}", accept_and_report)
    error = await handshake_status(router, resource)
    assert error.status == 404
    assert error.body == b"Not Found\n"


async def test_exact_route_wins_over_pattern_whatever_the_order() -> None:
    router = Router()

    @router.route("/rooms/{room}")
    async def any_room(request: trio_ws.WebSocketRequest, room: str) -> None:
        ws = await request.accept()
        await ws.send(f"room {room}")

    @router.route("/rooms/special")
    async def special(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send("special")

    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(router, "/rooms/special") as ws:
            assert await ws.receive() == "special"
        async with open_memory_pair(router, "/rooms/other") as ws:
            assert await ws.receive() == "room other"


async def test_first_registered_pattern_wins() -> None:
    router = Router()
    router.add("/{a}/x", accept_and_report)
    router.add("/y/{b}", accept_and_report)
    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(router, "/y/x") as ws:
            assert await ws.receive() == "[('a', 'y')]"


async def report_route(request: trio_ws.WebSocketRequest, **params: str) -> None:
    """Accept, then send back which route matched: its parameters, or ``exact``."""
    ws = await request.accept()
    await ws.send(repr(sorted(params.items())) if params else "exact")


@pytest.mark.parametrize(
    ("resource", "expected"),
    [
        # A route matches the requests whose percent-decoded path equals it...
        ("/files/a/b", "exact"),
        ("/files/%61/%62", "exact"),
        ("/caf%C3%A9", "exact"),
        ("/files/a/b?x=1", "exact"),
        # ...except that an encoded slash stays inside its segment, for exact routes too.
        ("/files/a%2Fb", "[('name', 'a/b')]"),
        ("/caf%C3%A9%2F", None),
        # Paths are taken as written: neither normalized nor read as an authority.
        ("//files/a/b", None),
        ("/files//a/b", None),
        ("/files/a/b/", None),
        ("/files/x/../a/b", None),
        ("/files/.", "[('name', '.')]"),
        ("/files/%2E%2E", "[('name', '..')]"),
        ("//evil.example/files/x", None),
    ],
)
async def test_matching_is_by_decoded_segment_as_written(
    resource: str, expected: str | None
) -> None:
    router = Router()
    router.add("/files/a/b", report_route)
    router.add("/files/{name}", report_route)
    router.add("/café", report_route)
    with trio.fail_after(TIMEOUT):
        if expected is None:
            assert (await handshake_status(router, resource)).status == 404
            return
        async with open_memory_pair(router, resource) as ws:
            assert await ws.receive() == expected


def test_decorators_return_the_handler_unchanged() -> None:
    router = Router()

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        pass

    assert router.route("/a")(handler) is handler
    assert router.http("/a")(handler) is handler


@pytest.mark.parametrize(
    "pattern",
    ["rooms", "", "/a/{b}{c}", "/a{b}", "/{x}/{x}", "/{request}", "/{1x}", "/{}", "/{a-b}"],
)
def test_bad_patterns_are_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        Router().add(pattern, accept_and_report)


def test_duplicate_routes_are_refused() -> None:
    router = Router()
    router.add("/a", accept_and_report)
    router.add("/b/{x}", accept_and_report)
    router.add_http("/a", accept_and_report)  # one of each kind is fine
    with pytest.raises(ValueError):
        router.add("/a", accept_and_report)
    with pytest.raises(ValueError):
        router.add("/b/{x}", accept_and_report)


# HTTP routes ---------------------------------------------------------------------------------


async def test_http_routes() -> None:
    router = Router()

    @router.http("/health")
    async def health(request: trio_ws.WebSocketRequest) -> HTTPResult:
        return 200, [], "ok\n"

    @router.http("/files/{name}")
    async def files(request: trio_ws.WebSocketRequest, name: str) -> HTTPResult:
        return 200, [("Content-Type", "application/octet-stream")], name.encode() * 2

    @router.http("/custom")
    async def custom(request: trio_ws.WebSocketRequest) -> None:
        await request.respond(418, body="teapot\n")

    with trio.fail_after(TIMEOUT):
        async with open_memory_server(router) as server:
            response = await server.get("/health")
            assert (response.status, response.text) == (200, "ok\n")
            assert response.headers["content-type"] == "text/plain; charset=utf-8"
            response = await server.get("/files/ab")
            assert (response.status, response.body) == (200, b"abab")
            assert response.headers["content-type"] == "application/octet-stream"
            assert (await server.get("/custom")).status == 418
            assert (await server.get("/nothing")).status == 404


async def test_http_and_websocket_on_one_path() -> None:
    router = Router()
    router.add("/", accept_and_report)
    router.add_http("/", lambda request: _page())
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(router) as server:
            assert (await server.get("/")).text == "page"
            async with server.connect("/") as ws:
                assert await ws.receive() == "[]"


async def _page() -> HTTPResult:
    return 200, [], "page"


async def test_plain_get_to_websocket_route_gets_426() -> None:
    router = Router()
    router.add("/ws", accept_and_report)
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(router) as server:
            response = await server.get("/ws")
    assert response.status == 426
    assert response.headers["upgrade"] == "websocket"


async def test_upgrade_to_http_route_gets_404() -> None:
    router = Router()
    router.add_http("/health", lambda request: _page())
    assert (await handshake_status(router, "/health")).status == 404


async def test_http_handler_that_does_not_answer_is_an_error() -> None:
    router = Router()

    @router.http("/broken")
    async def broken(request: trio_ws.WebSocketRequest) -> None:
        pass

    with trio.fail_after(TIMEOUT), pytest.raises(RuntimeError, match="without answering"):
        async with open_memory_server(router) as server:
            assert (await server.get("/broken")).status == 500


async def test_router_on_a_real_socket_with_the_websockets_client() -> None:
    router = Router()

    @router.route("/echo/{name}")
    async def echo(request: trio_ws.WebSocketRequest, name: str) -> None:
        ws = await request.accept()
        async for message in ws:
            await ws.send(f"{name}: {message!s}")

    def client(port: int) -> tuple[str, int]:
        from websockets.exceptions import InvalidStatus
        from websockets.sync.client import connect

        with connect(f"ws://127.0.0.1:{port}/echo/bob", open_timeout=5) as ws:
            ws.send("hi")
            reply = str(ws.recv(timeout=5))
        try:
            connect(f"ws://127.0.0.1:{port}/nowhere", open_timeout=5)
        except InvalidStatus as exc:
            return reply, exc.response.status_code
        return reply, 0

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve_websocket, router, "127.0.0.1", 0)
            reply, status = await trio.to_thread.run_sync(client, server.port)
            nursery.cancel_scope.cancel()
    assert (reply, status) == ("bob: hi", 404)


# Authentication -----------------------------------------------------------------------------


def check_password(user: str, password: str) -> bool:
    return (user, password) == ("ann", "pa:ss wörd")


async def test_basic_auth() -> None:
    handler = basic_auth(check_password, realm='my "realm"')(accept_and_report)
    with trio.fail_after(TIMEOUT):
        for headers in [(), [basic("ann", "wrong")], [("Authorization", "Basic !!!")]]:
            error = await handshake_status(handler, "/", extra_headers=headers)
            assert error.status == 401
            assert ("www-authenticate", 'Basic realm="my \\"realm\\"", charset="UTF-8"') in (
                error.headers
            )
        async with open_memory_pair(handler, "/", extra_headers=[basic("ann", "pa:ss wörd")]) as ws:
            assert await ws.receive() == "[]"


async def test_basic_auth_passes_the_user_and_takes_async_checks() -> None:
    async def check(user: str, password: str) -> bool:
        await trio.lowlevel.checkpoint()
        return password == "pw"

    handler = basic_auth(check, as_param="who")(accept_and_report)
    with trio.fail_after(TIMEOUT):
        async with open_memory_pair(handler, "/", extra_headers=[basic("zed", "pw")]) as ws:
            assert await ws.receive() == "[('who', 'zed')]"


async def test_bearer_token_from_header_cookie_or_query() -> None:
    tokens = {"t1": "alice"}
    handler = bearer_token(tokens.get, cookie="sid", query="token", as_param="user")(
        accept_and_report
    )
    ok = [
        ("/", [("Authorization", "Bearer t1")]),
        ("/", [("Authorization", "bearer   t1")]),
        ("/", [("Cookie", "a=b; sid=t1")]),
        ("/", [("Cookie", "a=b"), ("Cookie", "sid=t1")]),
        ("/?token=t1", []),
        ("/?x=1&token=t1", [("Authorization", "Basic eDp5")]),
    ]
    with trio.fail_after(TIMEOUT):
        for resource, headers in ok:
            async with open_memory_pair(handler, resource, extra_headers=headers) as ws:
                assert await ws.receive() == "[('user', 'alice')]", (resource, headers)
        error = await handshake_status(handler, "/")
        assert error.status == 401
        assert ("www-authenticate", 'Bearer realm="trio_ws"') in error.headers
        for resource in ["/?token=nope", "/?token="]:
            error = await handshake_status(handler, resource)
            assert error.status == 401
        error = await handshake_status(handler, "/", extra_headers=[("Cookie", "sid=bad")])
        assert ("www-authenticate", 'Bearer realm="trio_ws", error="invalid_token"') in (
            error.headers
        )


async def test_bearer_token_ignores_cookie_and_query_unless_named() -> None:
    handler = bearer_token(lambda token: token == "t1")(accept_and_report)
    assert (await handshake_status(handler, "/?token=t1")).status == 401
    error = await handshake_status(handler, "/", extra_headers=[("Cookie", "token=t1")])
    assert error.status == 401
    async with open_memory_pair(handler, "/", extra_headers=[("Authorization", "Bearer t1")]) as ws:
        assert await ws.receive() == "[]"


async def test_require_gives_403_and_stacks_under_authentication() -> None:
    @basic_auth(lambda user, password: password == "pw", as_param="user")
    @require(lambda request: request.headers.get("x-role") == "admin", message="admins only")
    async def handler(request: trio_ws.WebSocketRequest, user: str) -> None:
        ws = await request.accept()
        await ws.send(f"hi {user}")

    with trio.fail_after(TIMEOUT):
        assert (await handshake_status(handler, "/")).status == 401
        error = await handshake_status(handler, "/", extra_headers=[basic("u", "pw")])
        assert (error.status, error.body) == (403, b"admins only\n")
        headers = [basic("u", "pw"), ("X-Role", "admin")]
        async with open_memory_pair(handler, "/", extra_headers=headers) as ws:
            assert await ws.receive() == "hi u"


async def test_auth_on_http_routes_and_on_a_whole_router() -> None:
    router = Router()

    @router.http("/secret")
    @bearer_token(lambda token: token == "t")
    async def secret(request: trio_ws.WebSocketRequest) -> HTTPResult:
        return 200, [], "secret"

    router.add("/ws", accept_and_report)
    guarded = require(lambda request: request.query != "deny")(router)
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(guarded) as server:
            assert (await server.get("/secret")).status == 401
            response = await server.get("/secret", headers=[("Authorization", "Bearer t")])
            assert (response.status, response.text) == (200, "secret")
            assert (await server.get("/secret?deny")).status == 403
            async with server.connect("/ws") as ws:
                assert await ws.receive() == "[]"
    assert (await handshake_status(guarded, "/ws?deny")).status == 403


async def test_credential_readers() -> None:
    seen: dict[str, Any] = {}

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen["cookies"] = request_cookies(request)
        seen["token"] = find_token(request, cookie="sid")
        await request.respond(204)

    headers = [("Cookie", 'a=1; b="two words"'), ("Cookie", "sid=s; \x7f=;"), ("Cookie", "c=3")]
    async with open_memory_server(handler) as server:
        await server.get("/", headers=headers)
    assert seen["cookies"]["a"] == "1"
    assert seen["cookies"]["b"] == "two words"
    assert seen["cookies"]["c"] == "3"
    assert seen["token"] == seen["cookies"].get("sid")


# The example -------------------------------------------------------------------------------


def load_example() -> Any:
    path = Path(__file__).parent.parent / "examples" / "auth_server.py"
    spec = importlib.util.spec_from_file_location("auth_server_example", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)
    spec.loader.exec_module(module)
    return module


async def test_auth_server_example() -> None:
    example = load_example()
    router = example.router
    with trio.fail_after(TIMEOUT):
        async with open_memory_server(router) as server:
            assert (await server.get("/health")).text == "ok\n"
            async with server.connect(
                "/feed/news", extra_headers=[("Authorization", "Bearer let-me-in")]
            ) as ws:
                assert await ws.receive() == "hello alice, welcome to news"
                await ws.send("x")
                assert await ws.receive() == "[news] x"
            async with server.connect("/feed/sports?token=reader-2") as ws:
                assert await ws.receive() == "hello bob, welcome to sports"
            async with server.connect("/admin", extra_headers=[basic("admin", "secret")]) as ws:
                assert await ws.receive() == "hello admin: 2 tokens configured"
        for resource, headers in [
            ("/feed/news", []),
            ("/feed/news?token=wrong", []),
            ("/admin", [basic("admin", "nope")]),
            ("/admin", [("Authorization", "Bearer let-me-in")]),
        ]:
            error = await handshake_status(router, resource, extra_headers=headers)
            assert error.status == 401, resource
