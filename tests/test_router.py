"""The router (trio_ws/_features/_router.py): path patterns, WebSocket and HTTP routes.

Most tests run in memory through ``trio_ws.testing``; one serves a router on a socket.
"""

from __future__ import annotations

import pytest
import trio
from helpers import TEST_TIMEOUT, accept_and_report, handshake_status

import trio_ws
from trio_ws._features._router import HTTPResult, Router
from trio_ws.testing import open_memory_pair, open_memory_server

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
    with trio.fail_after(TEST_TIMEOUT):
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

    with trio.fail_after(TEST_TIMEOUT):
        async with open_memory_pair(router, "/rooms/special") as ws:
            assert await ws.receive() == "special"
        async with open_memory_pair(router, "/rooms/other") as ws:
            assert await ws.receive() == "room other"


async def test_first_registered_pattern_wins() -> None:
    router = Router()
    router.add("/{a}/x", accept_and_report)
    router.add("/y/{b}", accept_and_report)
    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
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

    with trio.fail_after(TEST_TIMEOUT):
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
    with trio.fail_after(TEST_TIMEOUT):
        async with open_memory_server(router) as server:
            assert (await server.get("/")).text == "page"
            async with server.connect("/") as ws:
                assert await ws.receive() == "[]"


async def _page() -> HTTPResult:
    return 200, [], "page"


async def test_plain_get_to_websocket_route_gets_426() -> None:
    router = Router()
    router.add("/ws", accept_and_report)
    with trio.fail_after(TEST_TIMEOUT):
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

    with trio.fail_after(TEST_TIMEOUT), pytest.raises(RuntimeError, match="without answering"):
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

    with trio.fail_after(TEST_TIMEOUT):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(trio_ws.serve_websocket, router, "127.0.0.1", 0)
            reply, status = await trio.to_thread.run_sync(client, server.port)
            nursery.cancel_scope.cancel()
    assert (reply, status) == ("bob: hi", 404)
