"""Streaming both ways: send a message from an iterable of fragments, receive piece by piece."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest
import trio

import trio_ws
from trio_ws.testing import open_memory_pair, open_memory_server

BIG = trio_ws.WebSocketOptions(max_message_size=None, ping_interval=None)


async def stream_echo(request: trio_ws.WebSocketRequest) -> None:
    """Report how many pieces each message came in, then echo it in those pieces."""
    ws = await request.accept()
    while True:
        pieces = [piece async for piece in ws.receive_stream()]
        await ws.send(f"{len(pieces)} {sum(len(p) for p in pieces)}")
        await ws.send(pieces)


async def test_large_message_arrives_in_pieces_without_being_joined() -> None:
    data = os.urandom(3 * 1024 * 1024)
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio_ws.serve_websocket(
                stream_echo, "127.0.0.1", 0, options=BIG, task_status=task_status
            )
        )
        with trio.fail_after(20):
            async with trio_ws.open_websocket("127.0.0.1", server.port, "/", options=BIG) as ws:
                await ws.send(data)
                count, size = map(int, str(await ws.receive()).split())
                assert size == len(data)
                assert count > 1  # handed out as it arrived, not as one 3 MiB piece
                # The echo comes back fragmented; receive() joins it, receive_stream() not.
                assert await ws.receive() == data
        nursery.cancel_scope.cancel()


async def test_send_from_sync_and_async_iterables() -> None:
    async def words() -> AsyncIterator[str]:
        for word in ("héllo ", "wörld"):
            yield word

    with trio.fail_after(5):
        async with open_memory_pair(stream_echo, options=BIG) as ws:
            await ws.send(words())
            assert await ws.receive() == "2 11"  # the empty final frame is not a piece
            assert await ws.receive() == "héllo wörld"
            await ws.send([b"\x00", b"\x01\x02"])
            assert await ws.receive() == "2 3"
            assert [p async for p in ws.receive_stream()] == [b"\x00", b"\x01\x02"]
            await ws.send("whole")
            assert await ws.receive() == "1 5"
            assert [p async for p in ws.receive_stream()] == ["whole"]


async def test_a_whole_message_waits_for_a_fragmented_one() -> None:
    release = trio.Event()

    async def slow() -> AsyncIterator[str]:
        yield "a"
        await release.wait()
        yield "b"

    with trio.fail_after(5):
        async with open_memory_pair(stream_echo, options=BIG) as ws:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(ws.send, slow())
                await trio.sleep(0.05)
                nursery.start_soon(ws.send, "after")
                await trio.sleep(0.05)
                release.set()
            received = [await ws.receive() for _ in range(4)]
            assert received == ["2 2", "ab", "1 5", "after"]


async def test_a_fragmented_send_that_fails_midway_closes_with_1011() -> None:
    """Mixed fragment types: the message cannot be finished, so the connection closes."""
    with trio.fail_after(5):
        async with open_memory_server(stream_echo, options=BIG) as server:
            async with server.connect("/") as ws:
                with pytest.raises(TypeError):
                    await ws.send(["text", b"bytes"])  # type: ignore[list-item]
                with pytest.raises(trio_ws.ConnectionClosed) as closed:
                    await ws.receive()
                assert closed.value.code == 1011
