"""A chat room: GET / serves a page; every message sent to /ws goes to every client.

    python examples/broadcast_server.py --host 127.0.0.1 --port 8000

then open http://127.0.0.1:8000/ in two browser windows.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
from pathlib import Path

import trio

import trio_ws

PAGE = (Path(__file__).parent / "chat.html").read_bytes()
MAX_MESSAGE = 64 * 1024


async def chat(room: trio_ws.Room, request: trio_ws.WebSocketRequest) -> None:
    if request.path == "/" and not request.is_upgrade:
        await request.respond(
            200, headers=[("Content-Type", "text/html; charset=utf-8")], body=PAGE
        )
        return
    if request.path != "/ws":
        await request.respond(404, body="Not Found\n")
        return
    ws = await request.accept()
    with room.joined(ws):
        async for message in ws:
            room.broadcast(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    room = trio_ws.Room(policy="drop")
    options = trio_ws.WebSocketOptions(max_message_size=MAX_MESSAGE)
    serve = functools.partial(trio_ws.serve_websocket, options=options)
    print(f"chat on http://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, functools.partial(chat, room), args.host, args.port)


if __name__ == "__main__":
    main()
