"""aiohttp's WebSocket server under benchmark (optional row).

    python benchmarks/servers/peer_aiohttp.py --port N --mode echo|broadcast [--defaults]

Any path upgrades; no heartbeat, no compression, messages up to 32 MiB. Broadcast is a loop
over the clients with ``send_bytes``/``send_str``. ``--defaults``: ``WebSocketResponse``'s
own heartbeat and compression (``heartbeat=None``: no pings; ``compress=True``:
permessage-deflate accepted), messages still up to 32 MiB.
"""

from __future__ import annotations

import argparse
import contextlib

from aiohttp import WSMsgType, web


def make_app(mode: str, defaults: bool = False) -> web.Application:
    clients: set[web.WebSocketResponse] = set()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        if defaults:
            ws = web.WebSocketResponse(max_msg_size=2**25)
        else:
            ws = web.WebSocketResponse(heartbeat=None, max_msg_size=2**25, compress=False)
        await ws.prepare(request)
        clients.add(ws)
        try:
            async for msg in ws:
                if msg.type is WSMsgType.BINARY:
                    targets = [ws] if mode == "echo" else list(clients)
                    for target in targets:
                        with contextlib.suppress(ConnectionError):
                            await target.send_bytes(msg.data)
                elif msg.type is WSMsgType.TEXT:
                    targets = [ws] if mode == "echo" else list(clients)
                    for target in targets:
                        with contextlib.suppress(ConnectionError):
                            await target.send_str(msg.data)
        finally:
            clients.discard(ws)
        return ws

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handler)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    parser.add_argument(
        "--defaults", action="store_true", help="aiohttp's default heartbeat and compression"
    )
    args = parser.parse_args()
    print(f"aiohttp {args.mode} server on ws://{args.host}:{args.port}/", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        web.run_app(
            make_app(args.mode, args.defaults),
            host=args.host,
            port=args.port,
            print=None,
            access_log=None,
        )


if __name__ == "__main__":
    main()
