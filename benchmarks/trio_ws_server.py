"""trio_ws server under benchmark: ``--mode echo`` or ``--mode broadcast``.

    python benchmarks/trio_ws_server.py --port 9001 --mode echo|broadcast [--host 127.0.0.1]
    python benchmarks/trio_ws_server.py --port 9001 --mode echo --defaults
    python benchmarks/trio_ws_server.py --port 9001 --mode broadcast --history 1000
    python benchmarks/trio_ws_server.py --port 9001 --mode broadcast --compression shared

echo: every message goes back to its sender. broadcast: every message received from any
client goes to every connected client (the sender included) through one ``trio_ws.Room``;
nothing else is sent. Keepalive pings are off and messages up to 32 MiB are accepted, as for
every server of the suite (benchmarks/servers/). ``--defaults``: keepalive and compression as
``trio_ws.WebSocketOptions()`` sets them (pings every 20 s, 20 s pong timeout,
permessage-deflate accepted), messages still up to 32 MiB. ``--history N``: the room keeps its
last N broadcasts (``MemoryHistory(N)``: an offset and an entry per broadcast), so that the
broadcast scenario measures what history costs on the live path; no envelope (the messages
stay as the load generator sent them). ``--compression``: what a client's permessage-deflate
offer gets: ``default`` (``PerMessageDeflate()``, context takeover: what every run without the
flag uses; clients that offer nothing get no compression either way), ``off``
(``compression=None``: offers declined), ``shared`` (``PerMessageDeflate(
server_no_context_takeover=True)``: the room compresses each broadcast once for every member).
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import attrs
import trio

import trio_ws

OPTIONS = trio_ws.WebSocketOptions(ping_interval=None, max_message_size=2**25)
DEFAULTS = trio_ws.WebSocketOptions(max_message_size=2**25)
COMPRESSION = {
    "default": trio_ws.PerMessageDeflate(),
    "off": None,
    "shared": trio_ws.PerMessageDeflate(server_no_context_takeover=True),
}


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


async def broadcast(room: trio_ws.Room, request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    with room.joined(ws):
        async for message in ws:
            room.broadcast(message)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    parser.add_argument(
        "--defaults", action="store_true", help="trio_ws's default keepalive and compression"
    )
    parser.add_argument(
        "--history", type=int, default=0, help="broadcast: keep the last N broadcasts (0: off)"
    )
    parser.add_argument(
        "--compression",
        choices=sorted(COMPRESSION),
        default="default",
        help="permessage-deflate: default (context takeover), off, or shared (none)",
    )
    args = parser.parse_args()
    history = trio_ws.MemoryHistory(args.history) if args.history else None
    room = trio_ws.Room(history=history)
    handler = echo if args.mode == "echo" else functools.partial(broadcast, room)
    options = DEFAULTS if args.defaults else OPTIONS
    options = attrs.evolve(options, compression=COMPRESSION[args.compression])
    serve = functools.partial(trio_ws.serve_websocket, options=options)
    print(f"trio_ws {args.mode} server on ws://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve, handler, args.host, args.port)


if __name__ == "__main__":
    main()
