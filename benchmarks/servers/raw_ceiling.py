"""Raw Trio TCP server: the ceiling of the suite (no WebSocket work at all).

    python benchmarks/servers/raw_ceiling.py --port N --mode echo|broadcast

It reads the request head, answers with a canned 101 response (the accept value of the fixed
key the load generator sends), then moves bytes unchanged: back to the sender in ``echo`` mode,
to every connected client in ``broadcast`` mode. The client's frames come back still masked,
which the load generator accepts for this server only. What it measures is Trio plus the
kernel's loopback: no WebSocket server written on Trio can be faster.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import trio

CANNED_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)
READ_SIZE = 256 * 1024
MAX_HEAD = 16 * 1024


async def read_head(stream: trio.SocketStream) -> bytes | None:
    """Read up to the end of the request head; return the bytes after it, None on EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = await stream.receive_some(READ_SIZE)
        if not data or len(buf) > MAX_HEAD:
            return None
        buf += data
    return buf.partition(b"\r\n\r\n")[2]


async def echo(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        rest = await read_head(stream)
        if rest is None:
            return
        await stream.send_all(CANNED_101 + rest)
        while data := await stream.receive_some(READ_SIZE):
            await stream.send_all(data)


class Peer:
    """A broadcast client: bytes for it are queued and written by its own writer task."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.pending: list[bytes] = []
        self.wakeup = trio.Event()

    def push(self, data: bytes) -> None:
        self.pending.append(data)
        self.wakeup.set()

    async def writer(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                await self.wakeup.wait()
                self.wakeup = trio.Event()
                data = b"".join(self.pending)
                self.pending.clear()
                await self.stream.send_all(data)


async def fan_out(peers: set[Peer], stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        rest = await read_head(stream)
        if rest is None:
            return
        await stream.send_all(CANNED_101)
        peer = Peer(stream)
        peers.add(peer)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(peer.writer)
                data = rest
                while True:
                    if data:
                        for member in peers:
                            member.push(data)
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        break
                nursery.cancel_scope.cancel()
        finally:
            peers.discard(peer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    args = parser.parse_args()
    handler = echo if args.mode == "echo" else functools.partial(fan_out, set())
    print(f"raw ceiling {args.mode} server on {args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(functools.partial(trio.serve_tcp, handler, args.port, host=args.host))


if __name__ == "__main__":
    main()
