"""permessage-deflate figures: bytes on the wire, messages/s and idle memory, against websockets.

    python benchmarks/compression.py [--messages 20000] [--idle 500]

Each server runs in its own process and streams a feed of typical JSON messages to one
client. The client is the same for every server (trio_ws's, reading through a byte-counting
stream), so the bytes and time differ only by what the server sends. Idle memory is the
server's RSS growth per connection after one message each way (zlib allocates its state
lazily, so this counts it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

import trio

import trio_ws

HERE = os.path.dirname(os.path.abspath(__file__))

SERVER_TRIO_WS = """
import sys, json, trio, trio_ws
compress = sys.argv[2] == "on"
options = trio_ws.WebSocketOptions(
    ping_interval=None, compression=trio_ws.PerMessageDeflate() if compress else None
)
async def feed(request):
    ws = await request.accept()
    async for message in ws:
        count, template = int(message.split(" ", 1)[0]), message.split(" ", 1)[1]
        for i in range(count):
            await ws.send(template.replace("SEQ", str(i)))
trio.run(lambda: trio_ws.serve_websocket(feed, "127.0.0.1", int(sys.argv[1]), options=options))
"""

SERVER_WEBSOCKETS = """
import sys, asyncio, websockets
compress = sys.argv[2] == "on"
async def feed(ws):
    async for message in ws:
        count, template = int(message.split(" ", 1)[0]), message.split(" ", 1)[1]
        for i in range(count):
            await ws.send(template.replace("SEQ", str(i)))
async def main():
    async with websockets.serve(feed, "127.0.0.1", int(sys.argv[1]), ping_interval=None,
                                compression="deflate" if compress else None):
        await asyncio.Future()
asyncio.run(main())
"""

# A typical chat/feed event, about 230 bytes; SEQ makes every message a little different.
TEMPLATE = json.dumps(
    {
        "type": "message",
        "room": "general",
        "seq": "SEQ",
        "user": {"id": 4242, "name": "alice", "avatar": "https://example.com/a/4242.png"},
        "text": "Has anyone tried the new release? The broadcast numbers look great.",
        "ts": "2026-11-26T10:00:00Z",
        "reactions": {"thumbs_up": 3, "heart": 1},
    }
)


class CountingStream(trio.abc.Stream):
    """A stream that counts the bytes going each way."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.received = 0
        self.sent = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.sent += len(data)
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        self.received += len(data)
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(code: str, port: int, compress: bool) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(port), "on" if compress else "off"],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def feed_run(port: int, count: int, compress: bool) -> dict[str, float]:
    options = trio_ws.WebSocketOptions(
        ping_interval=None, compression=trio_ws.PerMessageDeflate() if compress else None
    )
    stream = CountingStream(await trio.open_tcp_stream("127.0.0.1", port))
    ws = await trio_ws.client_handshake(stream, f"127.0.0.1:{port}", "/", options=options)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws._run)
        negotiated = bool(ws.extensions)
        start_bytes = stream.received
        started = time.perf_counter()
        await ws.send(f"{count} {TEMPLATE}")
        for _ in range(count):
            await ws.receive()
        elapsed = time.perf_counter() - started
        wire = stream.received - start_bytes
        await ws.aclose()
    return {
        "negotiated": float(negotiated),
        "msg_per_s": count / elapsed,
        "wire_bytes_per_msg": wire / count,
    }


async def idle_run(port: int, pid: int, count: int, compress: bool) -> float:
    options = trio_ws.WebSocketOptions(
        ping_interval=None, compression=trio_ws.PerMessageDeflate() if compress else None
    )
    before = rss_kib(pid)
    conns = []
    async with trio.open_nursery() as nursery:
        for _ in range(count):
            ws = await trio_ws.connect_websocket(nursery, "127.0.0.1", port, "/", options=options)
            await ws.send(f"1 {TEMPLATE}")  # one message each way: zlib state allocated
            await ws.receive()
            conns.append(ws)
        await trio.sleep(0.5)
        after = rss_kib(pid)
        for ws in conns:
            await ws.aclose()
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--idle", type=int, default=500)
    parser.add_argument("--passes", type=int, default=2)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * args.idle + 100)), hard))
    servers = {"trio_ws": SERVER_TRIO_WS, "websockets (asyncio)": SERVER_WEBSOCKETS}
    results: dict[str, dict[str, Any]] = {}
    for _ in range(args.passes):  # interleaved passes; the best of each is kept
        for name, code in servers.items():
            for compress in (False, True):
                port = free_port()
                proc = start(code, port, compress)
                try:
                    row = trio.run(feed_run, port, args.messages, compress)
                    row["idle_kib_per_conn"] = trio.run(
                        idle_run, port, proc.pid, args.idle, compress
                    )
                finally:
                    proc.kill()
                    proc.wait()
                key = f"{name}, compression {'on' if compress else 'off'}"
                best = results.setdefault(key, row)
                best["msg_per_s"] = max(best["msg_per_s"], row["msg_per_s"])
                best["idle_kib_per_conn"] = min(best["idle_kib_per_conn"], row["idle_kib_per_conn"])
    print(f"JSON message: {len(TEMPLATE)} bytes; {args.messages} messages; {args.idle} idle conns")
    print("| server | negotiated | bytes on the wire per message | messages/s | idle KiB/conn |")
    print("|---|---|---|---|---|")
    for key, row in results.items():
        print(
            f"| {key} | {'yes' if row['negotiated'] else 'no'} | "
            f"{row['wire_bytes_per_msg']:.1f} | {row['msg_per_s']:,.0f} | "
            f"{row['idle_kib_per_conn']:.1f} |"
        )
    if args.json:
        with open(args.json, "w") as out:
            json.dump(results, out, indent=2)


if __name__ == "__main__":
    main()
