"""websockets' Trio front end (``websockets.trio``, websockets >= 17) under benchmark.

    python benchmarks/servers/peer_websockets_trio.py --port N --mode echo|broadcast

Compression and keepalive pings off, messages up to 32 MiB; broadcast with
``websockets.trio.server.broadcast`` over the open connections. ``--defaults``: ``serve()``'s
own keepalive and compression (``ping_interval=20``, ``ping_timeout=20``,
``compression="deflate"``), messages still up to 32 MiB.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
from typing import Any

import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection, broadcast, serve


async def echo(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def fan_out(clients: set[ServerConnection], ws: ServerConnection) -> None:
    clients.add(ws)
    try:
        async for message in ws:
            await broadcast(clients, message)
    except ConnectionClosed:
        pass
    finally:
        clients.discard(ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    parser.add_argument(
        "--defaults", action="store_true", help="websockets' default keepalive and compression"
    )
    args = parser.parse_args()
    handler = echo if args.mode == "echo" else functools.partial(fan_out, set())
    off: dict[str, Any] = {} if args.defaults else {"compression": None, "ping_interval": None}
    run = functools.partial(serve, handler, args.port, host=args.host, max_size=2**25, **off)
    print(f"websockets.trio {args.mode} server on ws://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
