"""The outbox (trio_ws/_outbox.py): one path for every outgoing byte, never blocking an offer."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from helpers import drained

import trio_ws._trio._outbox
from trio_ws._trio._outbox import Offer, Outbox, _item, _rest, _size, _writes
from trio_ws.protocol import Connection, Role
from trio_ws.protocol._frames import LARGE, Opcode, encode_frame


def open_server_core() -> Connection:
    """A server-side core past its opening handshake (frames unmasked, so easy to compare)."""
    client = Connection(Role.CLIENT)
    server = Connection(Role.SERVER)
    server.receive_data(drained(client, client.initiate("example.com", "/")))
    server.accept()
    server.data_to_send()  # the 101 response, which the outbox does not send
    return server


@asynccontextmanager
async def socket_outbox(limit: int = 4) -> AsyncIterator[tuple[Outbox, socket.socket]]:
    """An outbox on one end of a socket pair (direct writes possible); the other end raw."""
    ours, theirs = socket.socketpair()
    theirs.setblocking(False)
    stream = trio.SocketStream(trio.socket.from_stdlib_socket(ours))
    try:
        async with trio.open_nursery() as nursery:
            outbox = Outbox(stream, open_server_core(), limit=limit)
            outbox.start(nursery)
            yield outbox, theirs
            nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
        theirs.close()


def read_all(sock: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


async def test_an_idle_socket_takes_a_frame_at_once() -> None:
    async with socket_outbox() as (outbox, theirs):
        assert outbox.offer("hi") is Offer.WRITTEN
        assert outbox.idle
        assert read_all(theirs) == encode_frame(Opcode.TEXT, b"hi")


async def test_a_full_socket_queues_then_refuses_without_encoding() -> None:
    big = b"x" * (1 << 20)
    with trio.fail_after(10):
        async with socket_outbox(limit=2) as (outbox, theirs):
            results = [outbox.offer(big) for _ in range(6)]
            # The socket buffer takes part of the first; then frames queue up to the limit.
            assert results[0] is Offer.QUEUED
            assert Offer.FULL in results
            queued = results.count(Offer.QUEUED)
            assert queued <= 3  # the remainder of a partial write, then `limit` frames
            assert outbox.full
            assert outbox.offer_ping(b"p") is Offer.FULL
            # Once the peer reads, everything queued is written, in order and whole.
            expected = encode_frame(Opcode.BINARY, big) * queued
            received = bytearray()
            while len(received) < len(expected):
                await trio.lowlevel.wait_readable(theirs)
                received += read_all(theirs)
            assert received == expected
            await outbox.flush()
            assert outbox.idle and not outbox.full


async def test_close_discards_queued_frames_but_never_a_partly_written_one() -> None:
    big = b"y" * (1 << 20)
    with trio.fail_after(10):
        async with socket_outbox(limit=32) as (outbox, theirs):  # room for 2 MiB
            first = encode_frame(Opcode.BINARY, big)
            assert outbox.offer(big) is Offer.QUEUED  # partly written
            assert outbox.offer(b"dropped") is Offer.QUEUED
            assert outbox.close(1013, "slow", discard_queued=True)
            assert not outbox.close(1000, "again")
            assert outbox.offer("late") is Offer.CLOSED
            received = bytearray()
            close = encode_frame(Opcode.CLOSE, (1013).to_bytes(2, "big") + b"slow")
            while len(received) < len(first) + len(close):
                await trio.lowlevel.wait_readable(theirs)
                received += read_all(theirs)
            assert received == first + close


class CountedWrites:
    """Stands in for ``os`` in the outbox module: counts its ``write``/``writev`` calls."""

    def __init__(self) -> None:
        self.calls = 0
        #: If set, the next write takes only this many bytes (as a socket that is nearly full).
        self.take: int | None = None

    def write(self, fd: int, data: bytes) -> int:
        self.calls += 1
        if self.take is not None:
            data, self.take = data[: self.take], None
        return os.write(fd, data)

    def writev(self, fd: int, buffers: Sequence[bytes]) -> int:
        self.calls += 1
        return os.writev(fd, buffers)


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> CountedWrites:
    counted = CountedWrites()
    monkeypatch.setattr(trio_ws._trio._outbox, "os", counted)
    return counted


def frames(*texts: str) -> bytes:
    return b"".join(encode_frame(Opcode.TEXT, text.encode()) for text in texts)


async def test_held_frames_go_in_one_write_once_the_ready_tasks_ran(
    writes: CountedWrites,
) -> None:
    with trio.fail_after(10):
        async with socket_outbox(limit=16) as (outbox, theirs):
            assert outbox.offer("m0") is Offer.WRITTEN  # not held: at once
            held = [outbox.offer(f"m{i}", hold=True) for i in range(1, 10)]
            assert held == [Offer.QUEUED] * 9
            assert writes.calls == 1
            assert read_all(theirs) == frames("m0")
            await outbox.flush()  # the scheduler ran the ready tasks: released
            assert writes.calls == 2
            assert read_all(theirs) == frames(*(f"m{i}" for i in range(1, 10)))
            assert outbox.offer("after") is Offer.WRITTEN  # no longer holding
            assert read_all(theirs) == frames("after")


async def test_held_frames_are_written_before_the_queue_is_full(writes: CountedWrites) -> None:
    """40 frames held at limit=4 go 3 at a time: never FULL (a fast member is not taken for
    a slow one), in order."""
    with trio.fail_after(10):
        async with socket_outbox(limit=4) as (outbox, theirs):
            results = [outbox.offer(f"m{i}", hold=True) for i in range(40)]
            assert Offer.FULL not in results
            assert writes.calls == 13  # 13 x 3; the 40th waits for the release
            await outbox.flush()
            assert writes.calls == 14
            assert read_all(theirs) == frames(*(f"m{i}" for i in range(40)))


async def test_a_held_large_frame_is_written_unjoined(writes: CountedWrites) -> None:
    big = b"z" * (256 * 1024)
    with trio.fail_after(10):
        async with socket_outbox(limit=16) as (outbox, theirs):
            outbox.offer("held", hold=True)
            outbox.offer(big, hold=True)  # past 64 KiB held: written now, with one writev
            assert writes.calls == 1
            expected = frames("held") + encode_frame(Opcode.BINARY, big)
            received = bytearray()
            while len(received) < len(expected):
                await trio.lowlevel.wait_readable(theirs)
                received += read_all(theirs)
            assert received == expected


async def test_held_frames_keep_their_order_with_every_other_frame() -> None:
    """Whatever enters while frames are held (a ping, the connection's own message, our
    close) is written in the order it was accepted; a finished outbox writes nothing more."""
    with trio.fail_after(10):
        async with socket_outbox(limit=16) as (outbox, theirs):
            outbox.offer("held", hold=True)
            outbox.offer_ping(b"p")
            outbox.offer("own")
            assert outbox.close(1000, "bye")
            await outbox.flush()
            close = encode_frame(Opcode.CLOSE, (1000).to_bytes(2, "big") + b"bye")
            ping = encode_frame(Opcode.PING, b"p")
            assert read_all(theirs) == frames("held") + ping + frames("own") + close
        async with socket_outbox(limit=16) as (outbox, theirs):
            outbox.offer("never", hold=True)
            outbox.finish()
            await trio.testing.wait_all_tasks_blocked()
            assert read_all(theirs) == b""


async def test_close_discards_held_frames_the_socket_did_not_take(
    writes: CountedWrites,
) -> None:
    """Held frames written joined and taken in part: the frame the socket began is finished,
    the whole frames after it are dropped when a slow member is shed."""
    chunk = b"c" * 1000
    frame = encode_frame(Opcode.BINARY, chunk)
    close = encode_frame(Opcode.CLOSE, (1013).to_bytes(2, "big") + b"slow")
    with trio.fail_after(10):
        async with socket_outbox(limit=64) as (outbox, theirs):
            for _ in range(5):
                outbox.offer(chunk, hold=True)
            writes.take = len(frame) + 10  # the socket takes a frame and 10 bytes
            outbox.release()  # one joined write, taken in part
            assert outbox.queued == 4  # the rest of the begun frame, then 3 whole ones
            assert outbox.close(1013, "slow", discard_queued=True)
            assert outbox.queued == 2  # the rest of the begun frame, then the close frame
            expected = frame * 2 + close
            received = bytearray()
            while len(received) < len(expected):
                await trio.lowlevel.wait_readable(theirs)
                received += read_all(theirs)
            assert received == expected


async def test_streams_without_a_descriptor_go_through_the_writer() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            outbox = Outbox(server_stream, open_server_core(), limit=4)
            assert outbox.offer("before start") is Offer.QUEUED  # waits for start()
            outbox.start(nursery)
            assert outbox.offer("after") is Offer.QUEUED
            await outbox.flush()
            expected = encode_frame(Opcode.TEXT, b"before start") + encode_frame(
                Opcode.TEXT, b"after"
            )
            received = b""
            while len(received) < len(expected):
                received += await client_stream.receive_some()
            assert received == expected


async def test_keepalive_pings_pass_a_full_queue_but_data_does_not() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    outbox = Outbox(server_stream, open_server_core(), limit=1)  # not started: nothing drains
    assert outbox.offer("a") is Offer.QUEUED
    assert outbox.offer("b") is Offer.FULL
    assert outbox.offer_ping(b"p") is Offer.FULL
    assert outbox.offer_ping(b"k", bounded=False) is Offer.QUEUED
    outbox.finish()
    assert outbox.offer("c") is Offer.CLOSED
    await client_stream.aclose()


async def test_shared_frames_are_the_frames_each_outbox_would_send() -> None:
    client_stream, server_stream = trio.testing.memory_stream_pair()
    outbox = Outbox(server_stream, open_server_core(), limit=4)
    assert outbox.shared_key == ()  # no extension, no mask: every server encodes alike
    assert outbox.encode_shared("hello") == (encode_frame(Opcode.TEXT, b"hello"), 0)
    client_core = Connection(Role.CLIENT)
    client_core.initiate("example.com", "/")
    assert Outbox(client_stream, client_core, limit=4).shared_key is None  # masked anew


async def test_the_queue_is_bounded_in_bytes_too() -> None:
    """A few large pieces fill it as many frames would: 4 frames x 64 KiB at limit=4."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    outbox = Outbox(server_stream, open_server_core(), limit=4)  # not started: nothing drains
    assert outbox.offer(b"x" * (200 * 1024)) is Offer.QUEUED
    assert not outbox.full
    assert outbox.offer(b"x" * (100 * 1024)) is Offer.QUEUED
    assert outbox.full  # 300 KiB >= 4 x 64 KiB, in 2 frames
    assert outbox.offer(b"x") is Offer.FULL
    await client_stream.aclose()


async def test_whole_messages_wait_for_a_fragmented_one_to_end() -> None:
    """RFC 6455 section 5.4: no data frame between the fragments of a message; whole messages
    offered meanwhile go right after it, in order; pings may go in between."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            outbox = Outbox(server_stream, open_server_core(), limit=8)
            outbox.start(nursery)
            assert outbox.begin_fragments()
            assert not outbox.begin_fragments()  # one fragmented message at a time
            assert outbox.offer_fragment(Opcode.TEXT, b"a", False) is Offer.QUEUED
            assert outbox.offer("whole") is Offer.QUEUED  # held back
            assert outbox.offer_frame(encode_frame(Opcode.TEXT, b"shared")) is Offer.QUEUED
            assert outbox.offer_ping(b"p") is Offer.QUEUED  # control frames may interleave
            assert outbox.offer_fragment(Opcode.CONTINUATION, b"b", True) is Offer.QUEUED
            outbox.end_fragments()
            await outbox.flush()
            expected = b"".join(
                [
                    encode_frame(Opcode.TEXT, b"a", fin=False),
                    encode_frame(Opcode.PING, b"p"),
                    encode_frame(Opcode.CONTINUATION, b"b"),
                    encode_frame(Opcode.TEXT, b"whole"),
                    encode_frame(Opcode.TEXT, b"shared"),
                ]
            )
            received = b""
            while len(received) < len(expected):
                received += await client_stream.receive_some()
            assert received == expected


# Large frames: header and payload written apart, never copied to join them ---------------------


def test_a_large_payload_is_sent_apart_from_its_header() -> None:
    core = open_server_core()
    payload = b"z" * LARGE
    core.send_message(payload)
    header, body = core.data_to_send()
    assert body is payload  # not copied
    assert header + body == encode_frame(Opcode.BINARY, payload)
    core.send_message(payload[:-1])
    assert core.data_to_send() == [encode_frame(Opcode.BINARY, payload[:-1])]


def test_the_rest_of_a_partly_written_frame_is_a_view_of_it() -> None:
    header, payload = b"HEAD", b"p" * 10
    frame = (header, payload)
    assert _rest(frame, 0) is frame
    assert _rest(frame, 3) == (b"D", payload)
    rest = _rest(frame, 4)
    assert isinstance(rest, bytes) and rest is payload
    rest = _rest(frame, 7)
    assert isinstance(rest, memoryview) and rest.obj is payload and bytes(rest) == b"p" * 7
    assert _rest(frame, 14) is None
    rest = _rest(payload, 2)
    assert isinstance(rest, memoryview) and rest.obj is payload and len(rest) == 8
    assert _rest(payload, 10) is None


def test_the_writer_joins_small_pieces_and_sends_large_ones_alone() -> None:
    big, other = b"b" * LARGE, b"o" * (LARGE + 1)
    view = memoryview(other)[1:]
    items = [b"a", (b"H1", big), b"c", view, (b"H2", b"small")]
    writes = _writes(items, sum(map(_size, items)))
    assert writes[0] == b"aH1"
    assert writes[1] is big
    assert writes[2] == b"c"
    assert writes[3] is view
    assert writes[4] == b"H2small"
    assert len(writes) == 5
    only = b"x" * 10
    assert _writes([only], 10)[0] is only
    assert _writes([b"a", memoryview(b"bc")], 3) == [b"abc"]


async def test_a_large_frame_partly_written_then_queued_arrives_whole() -> None:
    """The direct write takes part of a writev'd frame; the writer sends the rest (a view),
    then the frames queued behind it."""
    big = bytes(range(256)) * 8192  # 2 MiB: more than a socket buffer takes at once
    with trio.fail_after(10):
        async with socket_outbox(limit=64) as (outbox, theirs):
            assert outbox.offer(big) is Offer.QUEUED
            assert outbox.queued == 1
            received = bytearray(read_all(theirs))
            assert 0 < len(received) < len(big)  # the direct write took a part
            assert outbox.offer("after") is Offer.QUEUED
            expected = encode_frame(Opcode.BINARY, big) + encode_frame(Opcode.TEXT, b"after")
            while len(received) < len(expected):
                await trio.lowlevel.wait_readable(theirs)
                received += read_all(theirs)
            assert received == expected
            await outbox.flush()
            assert outbox.idle


def test_the_rest_of_a_frame_of_several_pieces() -> None:
    # data_to_send() may give a large frame and small ones after it (a pong queued with it).
    header, payload, pong = b"HD", b"p" * LARGE, b"PONG"
    frame = (header, payload, pong)
    assert _rest(frame, 1) == (b"D", payload, pong)
    rest = _rest(frame, 2 + LARGE - 3)
    assert rest == b"ppp" + pong  # past the large piece: what is left is joined
    assert _rest(frame, 2 + LARGE) is pong
    assert _rest(frame, 2 + LARGE + 4) is None


def test_the_cores_pieces_as_one_queue_item() -> None:
    assert _item([b"one"]) == b"one"
    assert _item([b"a", b"b"]) == b"ab"  # small pieces: joined
    large = b"x" * LARGE
    item = _item([b"h", large])
    assert isinstance(item, tuple) and item[1] is large  # never copied
