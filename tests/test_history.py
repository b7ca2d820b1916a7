"""Room history and resume: offsets, epochs, bounds, and the seam between replay and live."""

from __future__ import annotations

import functools
import json
import tracemalloc
import urllib.parse
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from helpers import HOST, RawPeer, wait_stalled, wait_until

import trio_ws
from trio_ws.testing import MemoryServer, open_memory_server

NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, close_timeout=1.0)


def since_of(query: str) -> trio_ws.Position | None:
    """The resume point a client put in its URL (``?epoch=...&offset=...``), if any."""
    fields = urllib.parse.parse_qs(query)
    if "epoch" not in fields:
        return None
    return trio_ws.Position(fields["epoch"][0], int(fields["offset"][0]))


def resume_url(position: trio_ws.Position | None) -> str:
    if position is None:
        return "/"
    return "/?" + urllib.parse.urlencode({"epoch": position.epoch, "offset": position.offset})


@asynccontextmanager
async def resume_server(
    room: trio_ws.Room, options: trio_ws.WebSocketOptions = NO_PINGS
) -> AsyncIterator[tuple[MemoryServer, list[trio_ws.Recovery]]]:
    """A server in memory whose clients join ``room``, resuming from their URL's position."""
    recoveries: list[trio_ws.Recovery] = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        recoveries.append(await room.join(ws, since=since_of(request.query)))
        async for _ in ws:
            pass

    async with open_memory_server(handler, options=options) as server:
        yield server, recoveries


def unwrap(message: str | bytes) -> tuple[int, str]:
    assert isinstance(message, str)
    envelope = json.loads(message)
    return envelope["offset"], envelope["data"]


def history_room(size: int = 100, ttl: float | None = None) -> trio_ws.Room:
    history = trio_ws.MemoryHistory(size, ttl=ttl)
    return trio_ws.Room(history=history, envelope=trio_ws.json_envelope)


async def wait_recoveries(recoveries: list[trio_ws.Recovery], count: int) -> None:
    while len(recoveries) < count:
        await trio.testing.wait_all_tasks_blocked()


async def test_a_client_resumes_where_it_left_off() -> None:
    room = history_room()
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect("/") as ws:
                await wait_recoveries(recoveries, 1)
                assert recoveries[0] == trio_ws.Recovery(False, 0, room.position())
                for i in range(1, 4):
                    room.broadcast(f"m{i}")
                got = [unwrap(await ws.receive()) for _ in range(3)]
                assert got == [(1, "m1"), (2, "m2"), (3, "m3")]
                epoch = room.position()
                assert epoch is not None
            # Offline: three messages missed.
            for i in range(4, 7):
                room.broadcast(f"m{i}")
            last = trio_ws.Position(epoch.epoch, 3)
            async with server.connect(resume_url(last)) as ws:
                await wait_recoveries(recoveries, 2)
                assert recoveries[1].recovered
                assert recoveries[1].replayed == 3
                room.broadcast("m7")
                got = [unwrap(await ws.receive()) for _ in range(4)]
                assert got == [(4, "m4"), (5, "m5"), (6, "m6"), (7, "m7")]


async def test_the_envelope_carries_offset_and_epoch() -> None:
    room = history_room()
    message = room.broadcast("héllo")
    assert message == 0  # no members
    position = room.position()
    assert position is not None and position.offset == 1
    with trio.fail_after(10):
        async with resume_server(room) as (server, _):
            async with server.connect(resume_url(trio_ws.Position(position.epoch, 0))) as ws:
                assert json.loads(await ws.receive()) == {
                    "offset": 1,
                    "epoch": position.epoch,
                    "data": "héllo",
                }
    with pytest.raises(TypeError):
        trio_ws.json_envelope(b"binary", position)
    with pytest.raises(ValueError, match="envelope needs a history"):
        trio_ws.Room(envelope=trio_ws.json_envelope)


@pytest.mark.parametrize(
    ("offset", "recovered"),
    [(0, False), (1, False), (2, True), (5, True), (6, False)],
)
async def test_a_resume_point_beyond_the_count_bound_is_refused(
    offset: int, recovered: bool
) -> None:
    """Size 3 after 5 broadcasts keeps 3, 4, 5: resuming after 2 or later works, 6 never was."""
    room = history_room(size=3)
    for i in range(1, 6):
        room.broadcast(f"m{i}")
    position = room.position()
    assert position is not None
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(position.epoch, offset))) as ws:
                await wait_recoveries(recoveries, 1)
                recovery = recoveries[0]
                assert recovery.recovered is recovered
                assert recovery.position == position
                room.broadcast("live")
                if recovered:
                    for i in range(offset + 1, 6):
                        assert unwrap(await ws.receive()) == (i, f"m{i}")
                    assert recovery.replayed == 5 - offset
                else:
                    assert recovery.replayed == 0
                # Replayed or not, the live stream follows, with no gap.
                assert unwrap(await ws.receive()) == (6, "live")


async def test_a_resume_point_older_than_the_ttl_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    history = trio_ws.MemoryHistory(100, ttl=60.0)
    history.append("old")  # offset 1 at t=0
    await trio.sleep(30)
    history.append("newer")  # offset 2 at t=30
    epoch = history.epoch
    assert [e.message for e in await history.since(trio_ws.Position(epoch, 0)) or []] == [
        "old",
        "newer",
    ]
    await trio.sleep(40)  # t=70: "old" is 70 s old, "newer" 40 s
    assert await history.since(trio_ws.Position(epoch, 0)) is None  # it missed "old"
    assert [e.message for e in await history.since(trio_ws.Position(epoch, 1)) or []] == ["newer"]
    await trio.sleep(30)  # t=100: both gone
    assert await history.since(trio_ws.Position(epoch, 1)) is None
    # A client that saw everything loses nothing, even when nothing is kept.
    assert await history.since(trio_ws.Position(epoch, 2)) == []
    assert len(history) == 0


async def test_a_stale_epoch_is_refused() -> None:
    room = history_room()
    room.broadcast("before the restart")
    restarted = history_room()  # a new process: a new epoch, offsets from 1 again
    restarted.broadcast("after")
    old, new = room.position(), restarted.position()
    assert old is not None and new is not None
    assert old.epoch != new.epoch and old.offset == new.offset == 1
    with trio.fail_after(10):
        async with resume_server(restarted) as (server, recoveries):
            async with server.connect(resume_url(old)) as ws:
                await wait_recoveries(recoveries, 1)
                assert not recoveries[0].recovered
                restarted.broadcast("live")
                assert unwrap(await ws.receive()) == (2, "live")


class SlowHistory:
    """A history whose ``since()`` answers when told: as a store on another server would."""

    def __init__(self) -> None:
        self.inner = trio_ws.MemoryHistory(1000)
        self.asked = trio.Event()
        self.answer = trio.Event()

    @property
    def epoch(self) -> str:
        return self.inner.epoch

    def append(self, message: str | bytes) -> trio_ws.Entry:
        return self.inner.append(message)

    def position(self) -> trio_ws.Position:
        return self.inner.position()

    async def since(self, position: trio_ws.Position) -> list[trio_ws.Entry] | None:
        self.asked.set()
        await self.answer.wait()
        return await self.inner.since(position)


async def test_messages_broadcast_while_the_history_is_read_come_once_in_order() -> None:
    """The answer includes what was broadcast while it was awaited: each comes once."""
    history = SlowHistory()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    for i in range(1, 11):
        room.broadcast(f"m{i}")
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 4))) as ws:
                await history.asked.wait()
                for i in range(11, 21):
                    room.broadcast(f"m{i}")  # held for the member: its replay is not through
                history.answer.set()
                await wait_recoveries(recoveries, 1)
                assert recoveries[0].recovered
                room.broadcast("m21")
                got = [unwrap(await ws.receive()) for _ in range(17)]
                assert got == [(i, f"m{i}") for i in range(5, 22)]


async def test_a_history_lost_while_it_is_read_is_no_recovery() -> None:
    """The store starts a new epoch (Redis flushed) while a member's resume is being read:
    the member is told it did not recover, and gets the new epoch's messages from offset 1,
    none taken for one it had seen."""
    history = SlowHistory()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    for i in range(1, 11):
        room.broadcast(f"m{i}")
    old = history.inner

    async def since_old_epoch(position: trio_ws.Position) -> list[trio_ws.Entry] | None:
        history.asked.set()
        await history.answer.wait()
        return await old.since(position)  # the answer was read before the loss

    history.since = since_old_epoch  # type: ignore[method-assign]
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(old.epoch, 4))) as ws:
                await history.asked.wait()
                history.inner = trio_ws.MemoryHistory(1000)  # the history is lost
                for i in range(1, 4):
                    room.broadcast(f"new{i}")  # offsets 1-3 of the new epoch, held
                history.answer.set()
                await wait_recoveries(recoveries, 1)
                assert not recoveries[0].recovered
                assert recoveries[0].position.epoch == history.inner.epoch
                room.broadcast("new4")
                got = [unwrap(await ws.receive()) for _ in range(4)]
                assert got == [(i, f"new{i}") for i in range(1, 5)]


@asynccontextmanager
async def stalled_replay(
    room: trio_ws.Room, position: trio_ws.Position
) -> AsyncIterator[tuple[trio_ws.WebSocketConnection, list[trio_ws.Recovery]]]:
    """A client resuming from ``position`` over TCP, with queues of a frame or two, that has
    read nothing yet: its replay (larger than the socket buffers) fills them and waits."""
    recoveries: list[trio_ws.Recovery] = []
    options = trio_ws.WebSocketOptions(
        ping_interval=None, write_queue=2, compression=None, max_message_size=2**20
    )

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        recoveries.append(await room.join(ws, since=since_of(request.query)))
        async for _ in ws:
            pass

    client_options = trio_ws.WebSocketOptions(
        ping_interval=None, max_queue=1, compression=None, max_message_size=2**20
    )
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                handler, "127.0.0.1", 0, options=options, task_status=task_status
            )
        )
        async with trio_ws.open_websocket(
            "127.0.0.1", server.port, resume_url(position), options=client_options
        ) as ws:
            while not room._replaying:
                await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
            yield ws, recoveries
        nursery.cancel_scope.cancel()


async def test_a_history_lost_during_a_replay_is_no_recovery() -> None:
    """The store starts a new epoch while a large replay waits for the client to read: the
    replay is sent whole, then the new epoch's messages from offset 1 (none taken for one the
    client had), and the member is told it did not recover."""
    history = SlowHistory()
    history.answer.set()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    big = "x" * (256 * 1024)
    for _ in range(80):  # 20 MiB: more than loopback's socket buffers hold
        room.broadcast(big)
    old_epoch = history.epoch
    with trio.fail_after(20):
        async with stalled_replay(room, trio_ws.Position(old_epoch, 0)) as (ws, recoveries):
            history.inner = trio_ws.MemoryHistory(1000)  # the history is lost
            for i in range(1, 4):
                room.broadcast(f"new{i}")
            got = [json.loads(str(await ws.receive())) for _ in range(83)]
            assert [m["epoch"] for m in got] == [old_epoch] * 80 + [history.epoch] * 3
            assert [m["offset"] for m in got] == [*range(1, 81), 1, 2, 3]
            assert [m["data"] for m in got[80:]] == ["new1", "new2", "new3"]
            await wait_recoveries(recoveries, 1)
            assert not recoveries[0].recovered


async def test_messages_broadcast_while_the_replay_waits_for_room_come_after_it() -> None:
    """A replay larger than the member's queue and socket buffers waits for the client to
    read; live messages meanwhile are held for it and follow the replay: once each, no gap."""
    room = history_room(size=200)
    big = "x" * (256 * 1024)
    for _ in range(80):  # 20 MiB: more than loopback's socket buffers hold
        room.broadcast(big)
    position = room.position()
    assert position is not None
    with trio.fail_after(20):
        start = trio_ws.Position(position.epoch, 0)
        async with stalled_replay(room, start) as (ws, recoveries):
            assert not recoveries  # join() is still replaying
            for i in range(81, 101):
                room.broadcast(f"live {i}")
            offsets = []
            for _ in range(100):
                offset, data = unwrap(await ws.receive())
                offsets.append(offset)
                assert data == (big if offset <= 80 else f"live {offset}")
            assert offsets == list(range(1, 101))
            assert recoveries == [trio_ws.Recovery(True, 80, room.position())]
            assert not room._replaying


async def test_a_thousand_members_reconnect_at_once_and_miss_nothing() -> None:
    """1,000 members, each having read a different number of messages, drop together; more is
    broadcast while they are away and while they all come back, each from where it was: each
    gets every message after its own offset, once, in order."""
    room = history_room(size=1000)
    clients, last = 1000, 200
    failures: list[str] = []
    read_enough = trio.Semaphore(0)  # released by each client once it read its share
    drop = trio.Event()
    gone = trio.Event()

    async def client(server: MemoryServer, n: int) -> None:
        share = 1 + n % 50  # what it reads of m1..m50 before its connection drops
        async with server.connect("/") as ws:
            for _ in range(share):
                offset, _data = unwrap(await ws.receive())
            read_enough.release()
            await drop.wait()
        await gone.wait()  # all dropped: m51..m100 are broadcast meanwhile
        position = trio_ws.Position(epoch, offset)
        async with server.connect(resume_url(position)) as ws:
            offsets = []
            while not offsets or offsets[-1] < last:
                offset, data = unwrap(await ws.receive())
                if data != f"m{offset}":
                    failures.append(f"client {n}: {offset} carried {data!r}")
                offsets.append(offset)
            if offsets != list(range(share + 1, last + 1)):
                failures.append(f"client {n} from {share}: {offsets}")

    # Queues long enough for the bursts: the test is about the seam, not the slow policy.
    options = trio_ws.WebSocketOptions(ping_interval=None, write_queue=last)
    position = room.position()
    assert position is not None
    epoch = position.epoch
    with trio.fail_after(90):
        async with resume_server(room, options) as (server, recoveries):
            async with trio.open_nursery() as nursery:
                for n in range(clients):
                    nursery.start_soon(client, server, n)
                while len(room) < clients:
                    await trio.testing.wait_all_tasks_blocked()
                for i in range(1, 51):
                    room.broadcast(f"m{i}")
                for _ in range(clients):
                    await read_enough.acquire()
                drop.set()  # every connection goes at once
                while len(room):
                    await trio.testing.wait_all_tasks_blocked()
                for i in range(51, 101):
                    room.broadcast(f"m{i}")
                gone.set()  # every client comes back at once, while more is broadcast
                for i in range(101, last + 1):
                    room.broadcast(f"m{i}")
                    await trio.lowlevel.checkpoint()  # clients join between broadcasts
    assert room.dropped == 0
    assert failures == []
    assert len(recoveries) == 2 * clients
    assert all(recovery.recovered for recovery in recoveries[clients:])
    assert sum(recovery.replayed > 0 for recovery in recoveries[clients:]) == clients


async def test_members_resuming_from_one_point_share_envelopes_and_frames() -> None:
    """A reconnect storm: each missed message's envelope is made once (when it is broadcast),
    not once per member replayed to, and a replay larger than one batch (64 KiB) comes whole
    and in order."""
    made: list[int] = []

    def envelope(message: str | bytes, position: trio_ws.Position) -> str | bytes:
        made.append(position.offset)
        return trio_ws.json_envelope(message, position)

    room = trio_ws.Room(history=trio_ws.MemoryHistory(100), envelope=envelope)
    start = room.position()
    assert start is not None
    missed = [f"{i}:" + "x" * 2000 for i in range(1, 61)]  # about 120 KiB of envelopes
    for message in missed:
        room.broadcast(message)  # nobody is there
    assert made == list(range(1, 61))
    with trio.fail_after(20):
        async with resume_server(room) as (server, recoveries):

            async def resume() -> None:
                async with server.connect(resume_url(start)) as ws:
                    got = [unwrap(await ws.receive()) for _ in missed]
                    assert got == list(enumerate(missed, 1))

            async with trio.open_nursery() as nursery:
                for _ in range(20):
                    nursery.start_soon(resume)
    assert [r.replayed for r in recoveries] == [60] * 20
    assert made == list(range(1, 61))  # none made again


async def test_what_a_room_keeps_for_replays_is_bounded() -> None:
    """The envelopes kept for members who resume stay within a few MiB, however many large
    messages go by (the history itself keeps only its last 2)."""
    room = trio_ws.Room(history=trio_ws.MemoryHistory(2), envelope=trio_ws.json_envelope)
    payload = "x" * (256 * 1024)
    room.broadcast(payload)  # warm up
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(200):  # 50 MiB of envelopes
            room.broadcast(payload)
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert grown < 8 * 1024 * 1024


async def test_history_off_costs_nothing_per_broadcast() -> None:
    """Without history, a broadcast allocates nothing in the history code: no entry, no
    position, no envelope (traced allocations, counted structurally, not timed)."""

    async def idle(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()

    def traced_allocations(room: trio_ws.Room) -> int:
        files = ("_history.py", "_envelope.py")
        tracemalloc.start()
        try:
            for i in range(100):
                room.broadcast(f"m{i}")
            snapshot = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        filters = [tracemalloc.Filter(True, f"*{name}") for name in files]
        return sum(stat.count for stat in snapshot.filter_traces(filters).statistics("filename"))

    with trio.fail_after(10):
        async with open_memory_server(idle, options=NO_PINGS) as server:
            async with server.connect("/") as ws:
                await trio.testing.wait_all_tasks_blocked()
                (member,) = server.server.connections
                off, on = trio_ws.Room(), history_room()
                off.add(member)
                on.add(member)
                assert off.history is None and off.position() is None
                assert traced_allocations(off) == 0
                assert traced_allocations(on) > 0  # the measure sees history's allocations
                await ws.aclose()


def test_memory_history_refuses_bad_bounds() -> None:
    with pytest.raises(ValueError):
        trio_ws.MemoryHistory(0)
    with pytest.raises(ValueError):
        trio_ws.MemoryHistory(10, ttl=0)


async def test_joining_twice_is_refused() -> None:
    async def idle(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.receive()

    room = history_room()
    with trio.fail_after(10):
        async with open_memory_server(idle, options=NO_PINGS) as server:
            async with server.connect("/"):
                await trio.testing.wait_all_tasks_blocked()
                (member,) = server.server.connections
                recovery = await room.join(member)
                assert recovery == trio_ws.Recovery(False, 0, room.position())
                with pytest.raises(ValueError, match="member of the room already"):
                    await room.join(member, since=room.position())


class SharedHistory(SlowHistory):
    """A history that, as a store shared by processes would, gives offsets itself and
    delivers each message back to the room later (``Room.deliver_entry``)."""

    def __init__(self) -> None:
        super().__init__()
        self.published: list[trio_ws.Entry] = []
        self.answer.set()

    def append(self, message: str | bytes) -> trio_ws.Entry | None:
        self.published.append(self.inner.append(message))
        return None


async def test_a_store_may_deliver_entries_itself() -> None:
    history = SharedHistory()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 0))) as ws:
                await wait_recoveries(recoveries, 1)
                assert room.broadcast("later") == 0  # not delivered yet: the store will
                (entry,) = history.published
                assert room.deliver_entry(entry) == 1
                assert unwrap(await ws.receive()) == (1, "later")


async def test_a_member_cancelled_during_its_replay_leaves() -> None:
    history = SlowHistory()
    room = trio_ws.Room(history=history)
    room.broadcast("missed")

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        scope = trio.CancelScope()

        async def cancel_when_asked() -> None:
            await history.asked.wait()
            assert ws in room  # a member (held) while the history is read
            scope.cancel()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(cancel_when_asked)
            with scope:
                await room.join(ws, since=trio_ws.Position(history.epoch, 0))
        assert scope.cancelled_caught
        assert ws not in room
        await ws.send("left")

    with trio.fail_after(10):
        async with open_memory_server(handler, options=NO_PINGS) as server:
            async with server.connect("/") as ws:
                assert await ws.receive() == "left"
                assert len(room) == 0 and not room._replaying


async def test_too_many_messages_held_during_a_replay_get_the_slow_policy() -> None:
    history = SlowHistory()
    room = trio_ws.Room(history=history, policy="close", close_code=1013, catch_up_limit=2)
    with trio.fail_after(10):
        async with resume_server(room) as (server, _):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 0))) as ws:
                await history.asked.wait()
                assert room.broadcast("one") == 1  # held
                assert room.broadcast("two") == 1  # held
                assert room.broadcast("three") == 0  # one too many: closed
                assert room.closed_slow == 1 and len(room) == 0
                with pytest.raises(trio_ws.ConnectionClosed) as closed:
                    await ws.receive()
                assert closed.value.code == 1013
                history.answer.set()


async def test_a_long_replay_does_not_count_against_the_catch_up_limit() -> None:
    """``catch_up_limit`` bounds the live messages held behind a replay, not the replay: a
    member resuming 400 messages, whose replay waits for room (the client reads nothing
    yet) while 5 live ones come, stays and gets all 405, in order."""
    room = trio_ws.Room(history=trio_ws.MemoryHistory(1000), policy="close", catch_up_limit=10)
    start = room.position()
    missed = [f"{i}:" + "x" * 20_000 for i in range(400)]  # 8 MB: more than the socket takes
    for message in missed:
        room.broadcast(message)
    joined = trio.Event()

    async def member(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await room.join(ws, since=since_of(request.query))
        joined.set()
        async for _ in ws:
            pass

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                functools.partial(trio_ws.serve_websocket, member, HOST, 0, options=NO_PINGS)
            )
            peer = await RawPeer.connect(server.port)
            await peer.handshake(resume_url(start))
            await wait_until(lambda: len(room) == 1, "the member joined")
            await wait_stalled()  # its replay waits for the client to read
            assert not joined.is_set()
            live = [f"live {i}" for i in range(5)]
            for message in live:
                assert room.broadcast(message) == 1  # held behind the replay
            assert room.closed_slow == 0
            got = []
            for _ in range(len(missed) + len(live)):
                frame = await peer.read_frame()
                assert frame is not None
                got.append(frame[1].decode())
            assert got == missed + live
            await joined.wait()
            await peer.aclose()
            nursery.cancel_scope.cancel()


async def test_a_message_the_envelope_refuses_reaches_nobody_and_is_not_replayed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``json_envelope`` carries text only: a binary broadcast raises and reaches nobody, and
    later resumes from before it get everything else (it is not replayed, nor fails them).
    A store that delivers entries itself gets 0 and a log line, not an exception."""
    room = history_room()
    start = room.position()
    assert start is not None
    room.broadcast("one")
    with pytest.raises(TypeError):
        room.broadcast(b"binary")
    room.broadcast("three")
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(start)) as ws:
                assert [unwrap(await ws.receive()) for _ in range(2)] == [(1, "one"), (3, "three")]
                await wait_recoveries(recoveries, 1)
                assert recoveries[0].recovered and recoveries[0].replayed == 2
                # As a store that gives offsets itself delivers (e.g. RedisHistory).
                assert room.deliver_entry(trio_ws.Entry(9, b"binary again", 0.0)) == 0
                room.broadcast("four")
                assert unwrap(await ws.receive()) == (4, "four")
    assert "the envelope refused message 9" in caplog.text


class LaggingHistory(SharedHistory):
    """A shared store whose stream holds entries this process has not delivered yet."""

    def __init__(self) -> None:
        super().__init__()
        self.delivered = 0

    def position(self) -> trio_ws.Position:
        return trio_ws.Position(self.epoch, self.delivered)


async def test_entries_not_yet_delivered_here_come_live_not_in_the_replay() -> None:
    history = LaggingHistory()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    for i in range(1, 4):
        room.broadcast(f"m{i}")  # recorded in the shared stream: offsets 1..3

    def arrives(offset: int) -> None:  # the store delivers an entry here
        history.delivered = offset
        room.deliver_entry(history.published[offset - 1])

    arrives(1)
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 0))) as ws:
                await wait_recoveries(recoveries, 1)
                assert recoveries[0] == trio_ws.Recovery(True, 1, room.position())
                arrives(2)
                arrives(3)
                got = [unwrap(await ws.receive()) for _ in range(3)]
                assert got == [(1, "m1"), (2, "m2"), (3, "m3")]
                room.broadcast("m4")
                arrives(4)
                assert unwrap(await ws.receive()) == (4, "m4")  # and no second m2 or m3


async def test_a_client_ahead_of_this_process_gets_nothing_twice() -> None:
    """With a shared store, a client may have seen (elsewhere) offsets this process has not
    delivered yet: they are not sent again when they arrive here."""
    history = LaggingHistory()
    room = trio_ws.Room(history=history, envelope=trio_ws.json_envelope)
    for i in range(1, 5):
        room.broadcast(f"m{i}")

    def arrives(offset: int) -> None:
        history.delivered = offset
        room.deliver_entry(history.published[offset - 1])

    arrives(1)
    arrives(2)
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 3))) as ws:
                await trio.testing.wait_all_tasks_blocked()
                assert not recoveries  # waits until this process delivered offset 3
                arrives(3)
                await wait_recoveries(recoveries, 1)
                assert recoveries[0] == trio_ws.Recovery(
                    True, 0, trio_ws.Position(history.epoch, 3)
                )
                arrives(4)
                assert unwrap(await ws.receive()) == (4, "m4")  # not m3 first


async def test_a_member_that_leaves_while_its_replay_waits_stops_it() -> None:
    history = LaggingHistory()
    room = trio_ws.Room(history=history)
    room.broadcast("m1")  # in the shared stream, not delivered here: the replay waits for it
    with trio.fail_after(10):
        async with resume_server(room) as (server, recoveries):
            async with server.connect(resume_url(trio_ws.Position(history.epoch, 1))):
                await trio.testing.wait_all_tasks_blocked()
                assert room._replaying and not recoveries
            await wait_recoveries(recoveries, 1)  # join() returned when it left
            assert len(room) == 0 and not room._replaying


async def test_a_broadcast_with_history_is_encoded_once_for_all_members(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The envelope is made once and its frame encoded once, whatever the member count."""
    import trio_ws._trio._outbox
    from trio_ws.protocol._frames import encode_frame

    frames: list[bytes] = []
    envelopes: list[int] = []

    def counting_frame(*args: Any, **kwargs: Any) -> bytes:
        frame = encode_frame(*args, **kwargs)
        frames.append(frame)
        return frame

    def counting_envelope(message: str | bytes, position: trio_ws.Position) -> str | bytes:
        envelopes.append(position.offset)
        return trio_ws.json_envelope(message, position)

    monkeypatch.setattr(trio_ws._trio._outbox, "encode_frame", counting_frame)
    room = trio_ws.Room(history=trio_ws.MemoryHistory(10), envelope=counting_envelope)
    options = trio_ws.WebSocketOptions(ping_interval=None, compression=None)
    with trio.fail_after(10):
        async with resume_server(room, options) as (server, recoveries):
            async with server.connect("/") as a, server.connect("/") as b, server.connect("/"):
                await wait_recoveries(recoveries, 3)
                frames.clear()
                assert room.broadcast("same") == 3
                assert envelopes == [1]
                assert len(frames) == 1
                assert unwrap(await a.receive()) == unwrap(await b.receive()) == (1, "same")
