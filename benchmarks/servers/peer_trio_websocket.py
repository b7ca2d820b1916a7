"""trio-websocket under benchmark.

    python benchmarks/servers/peer_trio_websocket.py --port N --mode echo|broadcast [--defaults]

trio-websocket sends no keepalive pings of its own and negotiates no compression; messages up
to 32 MiB. Broadcast is its idiom: a loop over the clients with ``send_message``.
``--defaults`` is accepted like every server's and changes nothing: these are its defaults.
"""

from __future__ import annotations

import argparse
import contextlib
import functools

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websocket


async def echo(request: WebSocketRequest) -> None:
    ws = await request.accept()
    with contextlib.suppress(ConnectionClosed):
        while True:
            await ws.send_message(await ws.get_message())


async def fan_out(clients: set[WebSocketConnection], request: WebSocketRequest) -> None:
    ws = await request.accept()
    clients.add(ws)
    try:
        while True:
            message = await ws.get_message()
            for client in list(clients):
                with contextlib.suppress(ConnectionClosed):
                    await client.send_message(message)
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
        "--defaults", action="store_true", help="accepted; its defaults are what runs anyway"
    )
    args = parser.parse_args()
    handler = echo if args.mode == "echo" else functools.partial(fan_out, set())
    run = functools.partial(
        serve_websocket, handler, args.host, args.port, ssl_context=None, max_message_size=2**25
    )
    print(f"trio-websocket {args.mode} server on ws://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(run)


if __name__ == "__main__":
    main()
