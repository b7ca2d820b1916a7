"""Authentication (trio_ws/_features/_auth.py): basic_auth, bearer_token, require and the
credential readers, on WebSocket and HTTP routes; examples/auth_server.py.

The tests run in memory through ``trio_ws.testing``.
"""

from __future__ import annotations

import base64
import importlib.util
import sys
from pathlib import Path
from typing import Any

import trio
from helpers import TEST_TIMEOUT, accept_and_report, handshake_status

import trio_ws
from trio_ws._features._auth import basic_auth, bearer_token, find_token, request_cookies, require
from trio_ws._features._router import HTTPResult, Router
from trio_ws.testing import open_memory_pair, open_memory_server


def basic(user: str, password: str) -> tuple[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return ("Authorization", f"Basic {token}")


# Authentication -----------------------------------------------------------------------------


def check_password(user: str, password: str) -> bool:
    return (user, password) == ("ann", "pa:ss wörd")


async def test_basic_auth() -> None:
    handler = basic_auth(check_password, realm='my "realm"')(accept_and_report)
    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
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

    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
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
