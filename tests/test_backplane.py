"""Backplanes (trio_ws/_features/_backplane.py): the wire format of a batch and
LocalBackplane, the in-process room. RedisBackplane is in test_redis.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio
from helpers import relay, wait_members

import trio_ws
from trio_ws._features._backplane import LocalBackplane, batch_sender, decode_batch, encode_batch
from trio_ws.testing import open_memory_server

ROOT = Path(__file__).parent.parent
HOST = "127.0.0.1"
#: Bound on each test body.
TIMEOUT = 20.0
NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, compression=None)


# Wire format --------------------------------------------------------------------------------


def test_batch_round_trip_keeps_text_and_binary_apart() -> None:
    sender = bytes(range(16))
    entries: list[tuple[int, str | bytes]] = [
        (1, "text"),
        (2, b"text"),  # the same bytes, but binary
        (3, ""),
        (4, b""),
        (5, "caf\u00e9 \U0001f600"),
        (2**64 - 1, bytes(range(256)) * 10),
    ]
    data = encode_batch(sender, entries)
    assert batch_sender(data) == sender
    assert decode_batch(data) == (sender, entries)
    for seq, message in decode_batch(data)[1]:
        assert type(message) is type(dict(entries)[seq])


@pytest.mark.parametrize(
    "data",
    [b"", b"\x01short", b"\x02" + bytes(16), b"\x01" + bytes(16) + b"\x00" * 5],
)
def test_bad_batches_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_batch(data)
    good = encode_batch(bytes(16), [(1, b"abc")])
    with pytest.raises(ValueError):
        decode_batch(good[:-1])  # truncated payload


# LocalBackplane -----------------------------------------------------------------------------


async def test_local_backplane_is_the_in_process_room() -> None:
    backplane = LocalBackplane()
    room = backplane.room("chat", policy="close")
    assert backplane.room("chat") is room and room.name == "chat"
    assert room.backplane is backplane and backplane.rooms == {"chat": room}
    with pytest.raises(ValueError):
        backplane.room("chat", policy="drop")  # options are for a new room
    with pytest.raises(ValueError):
        trio_ws.Room(name="chat", backplane=backplane)  # one room per name
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        await backplane.wait_connected()
        async with open_memory_server(relay(room), options=NO_PINGS) as server:
            async with server.connect() as a, server.connect() as b:
                await wait_members(room, 2)
                await a.send("hi")
                assert await a.receive() == "hi"
                assert await b.receive() == "hi"
        nursery.cancel_scope.cancel()
