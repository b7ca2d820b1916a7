"""Room presence: who is in a room, per identity and connection, with join/leave events."""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing
from helpers import RawPeer, running_server

import trio_ws
from trio_ws.testing import open_memory_server

NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=1.0)


def presence_handler(
    room: trio_ws.Room,
) -> Callable[[trio_ws.WebSocketRequest], Awaitable[None]]:
    """Clients join ``room`` as the identity in their URL (``?id=alice``), if any."""

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        identity = urllib.parse.parse_qs(request.query).get("id", [None])[0]
        with room.joined(ws, identity=identity):
            async for message in ws:
                room.broadcast(message)

    return handler


async def wait_events(events: list[trio_ws.PresenceEvent], count: int) -> None:
    while len(events) < count:
        await trio.testing.wait_all_tasks_blocked()


def summary(events: list[trio_ws.PresenceEvent]) -> list[tuple[str, bool, int]]:
    return [(e.identity, e.joined, e.connections) for e in events]


async def test_presence_counts_identities_and_connections() -> None:
    room = trio_ws.Room()
    events: list[trio_ws.PresenceEvent] = []
    room.on_presence(events.append)
    with trio.fail_after(10):
        async with open_memory_server(presence_handler(room), options=NO_PINGS) as server:
            async with (
                server.connect("/?id=alice") as alice1,
                server.connect("/?id=alice"),
                server.connect("/?id=bob"),
                server.connect("/"),  # anonymous: a member, not in presence
            ):
                await wait_events(events, 3)
                while len(room) < 4:
                    await trio.testing.wait_all_tasks_blocked()
                assert await room.presence() == {"alice": 2, "bob": 1}
                assert sorted(summary(events)) == [
                    ("alice", True, 1),
                    ("alice", True, 2),
                    ("bob", True, 1),
                ]
                assert all(e.ws in room for e in events)
                await alice1.aclose()
                await wait_events(events, 4)
                assert summary(events)[3] == ("alice", False, 1)  # alice is still here
                assert await room.presence() == {"alice": 1, "bob": 1}
            await wait_events(events, 6)
            assert sorted(summary(events)[4:]) == [("alice", False, 0), ("bob", False, 0)]
            assert await room.presence() == {}


async def test_a_connection_that_drops_without_a_close_frame_leaves() -> None:
    room = trio_ws.Room()
    events: list[trio_ws.PresenceEvent] = []
    room.on_presence(events.append)
    with trio.fail_after(10):
        async with running_server(presence_handler(room), options=NO_PINGS) as server:
            peer = await RawPeer.connect(server.port)
            await peer.handshake("/?id=carol")
            await wait_events(events, 1)
            assert await room.presence() == {"carol": 1}
            await peer.aclose()  # TCP closed: no close frame
            await wait_events(events, 2)
            assert summary(events) == [("carol", True, 1), ("carol", False, 0)]
            assert await room.presence() == {}
            assert len(room) == 0


async def test_presence_callbacks_can_stop_and_never_break_a_broadcast(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A failing callback is logged; the broadcast that removed a closing member goes on."""

    async def idle(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()

    room = trio_ws.Room()
    seen: list[trio_ws.PresenceEvent] = []

    def broken(event: trio_ws.PresenceEvent) -> None:
        raise RuntimeError("broken callback")

    room.on_presence(broken)
    stop = room.on_presence(seen.append)
    with trio.fail_after(10):
        async with open_memory_server(idle, options=NO_PINGS) as server:
            async with server.connect("/"), server.connect("/"):
                await trio.testing.wait_all_tasks_blocked()
                first, second = server.server.connections
                room.add(first, identity="dave")
                room.add(second, identity="erin")
                first.close_nowait()
                with caplog.at_level(logging.ERROR, logger="trio_ws"):
                    # The closing member is dropped during the broadcast: its leave event
                    # runs there, and the broken callback does not stop the broadcast.
                    assert room.broadcast("hi") == 1
                assert "presence callback" in caplog.text
                assert summary(seen) == [("dave", True, 1), ("erin", True, 1), ("dave", False, 0)]
                stop()
                room.discard(second)
                assert len(seen) == 3
                assert await room.presence() == {}


async def test_joining_with_an_identity_and_a_resume_point() -> None:
    room = trio_ws.Room(history=trio_ws.MemoryHistory(10))
    events: list[trio_ws.PresenceEvent] = []
    room.on_presence(events.append)

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        position = room.position()
        assert position is not None
        await room.join(ws, since=trio_ws.Position(position.epoch, 0), identity="frank")
        await ws.receive()

    room.broadcast("before")
    with trio.fail_after(10):
        async with open_memory_server(handler, options=NO_PINGS) as server:
            async with server.connect("/") as ws:
                assert await ws.receive() == "before"
                assert await room.presence() == {"frank": 1}
            await wait_events(events, 2)
            assert summary(events) == [("frank", True, 1), ("frank", False, 0)]


def test_memory_presence_counts() -> None:
    presence = trio_ws.MemoryPresence()
    assert presence.add("a") == 1
    assert presence.add("a") == 2
    assert presence.remove("a") == 1
    assert presence.remove("a") == 0
    assert presence.remove("a") == 0  # never below zero
    assert presence.counts() == {}
