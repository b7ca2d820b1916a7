"""Echo every message back to its sender, on any path.

python examples/echo_server.py --host 127.0.0.1 --port 9001
"""

from __future__ import annotations

import argparse
import functools
import logging

import trio

import trio_ws


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


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
    print(f"echo server on ws://{args.host}:{args.port}/", flush=True)
    try:
        serve = functools.partial(trio_ws.serve_websocket, options=options)
        trio.run(serve, echo, args.host, args.port)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
