"""Echo every message back to its sender, on any path.

python examples/echo_server.py --host 127.0.0.1 --port 9001
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys

import trio

import trio_ws


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


async def serve(host: str, port: int, options: trio_ws.WebSocketOptions) -> None:
    """Serve until cancelled (run_main cancels on Ctrl-C or SIGTERM: connections get 1001)."""
    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio_ws.serve_websocket, options=options)
        server = await nursery.start(serve, echo, host, port)
        print(f"echo server on ws://{host}:{server.port}/", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9001)
    parser.add_argument(
        "--max-size", type=int, default=64 * 1024 * 1024, help="largest message, in bytes"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    options = trio_ws.WebSocketOptions(max_message_size=args.max_size)
    # Stops quietly on Ctrl-C or SIGTERM; a port in use is one line on stderr and exit 1.
    sys.exit(trio_ws.run_main(serve, args.host, args.port, options))


if __name__ == "__main__":
    main()
