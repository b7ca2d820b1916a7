"""websockets on asyncio (``websockets.asyncio.server``) under benchmark.

    python benchmarks/servers/peer_websockets_asyncio.py --port N --mode echo|broadcast

Compression (``compression=None``) and keepalive pings off, messages up to 32 MiB; broadcast
with ``websockets.broadcast()``, which writes to every connection without waiting.
``--defaults``: ``serve()``'s own keepalive and compression (``ping_interval=20``,
``ping_timeout=20``, ``compression="deflate"``), messages still up to 32 MiB.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
from typing import Any

from websockets.asyncio.server import ServerConnection, broadcast, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fan_out(clients: set[ServerConnection], ws: ServerConnection) -> None:
    clients.add(ws)
    try:
        async for message in ws:
            broadcast(clients, message)
    finally:
        clients.discard(ws)


async def run(args: argparse.Namespace) -> None:
    handler = echo if args.mode == "echo" else functools.partial(fan_out, set())
    off: dict[str, Any] = {} if args.defaults else {"compression": None, "ping_interval": None}
    async with serve(handler, args.host, args.port, max_size=2**25, **off) as server:
        print(f"websockets {args.mode} server on ws://{args.host}:{args.port}/", flush=True)
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    parser.add_argument(
        "--defaults", action="store_true", help="websockets' default keepalive and compression"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run(args))


if __name__ == "__main__":
    main()
