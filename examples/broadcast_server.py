"""A chat room: GET / serves a page; every message sent to /ws goes to every client.

    python examples/broadcast_server.py --host 127.0.0.1 --port 8000

then open http://127.0.0.1:8000/ in two browser windows. One process by default; as a cluster,
N processes on the port sharing the room over Redis (``pip install 'trio_ws[redis]'``)::

    python examples/broadcast_server.py --port 8000 --workers 4 --redis redis://127.0.0.1:6379

Several machines running it with the same ``--redis`` share the room too.

GET /metrics answers the server's counters in the Prometheus text format (with
``pip install 'trio_ws[prometheus]'``; without it, the plain counters and a line saying so).
With ``--workers``, each request reaches one of the processes, which reports its own.
"""

from __future__ import annotations

import argparse
import functools
import logging
import sys
from pathlib import Path
from typing import Any

import trio

import trio_ws

PAGE = (Path(__file__).parent / "chat.html").read_bytes()
MAX_MESSAGE = 64 * 1024
#: Seconds to wait for Redis at start before serving anyway (local clients only until then).
REDIS_WAIT = 5.0


async def chat(
    room: trio_ws.Room, metrics: trio_ws.Metrics, request: trio_ws.WebSocketRequest
) -> None:
    if request.path == "/" and not request.is_upgrade:
        await request.respond(
            200, headers=[("Content-Type", "text/html; charset=utf-8")], body=PAGE
        )
        return
    if request.path == "/metrics" and not request.is_upgrade:
        await request.respond(200, **metrics_page(metrics))
        return
    if request.path != "/ws":
        await request.respond(404, body="Not Found\n")
        return
    ws = await request.accept()
    with room.joined(ws):
        async for message in ws:
            room.broadcast(message)


def metrics_page(metrics: trio_ws.Metrics) -> dict[str, Any]:
    """``respond()``'s headers and body for GET /metrics."""
    try:
        body, content_type = trio_ws.metrics_to_prometheus(metrics)
    except ImportError as exc:  # the optional extra is not installed: say so, plain counters
        lines = [f"# {exc}"] + [f"{name} {value}" for name, value in metrics.snapshot().items()]
        return {"body": "\n".join(lines) + "\n"}
    return {"headers": [("Content-Type", content_type)], "body": body}


async def serve(args: argparse.Namespace) -> None:
    """One process: serve until Ctrl-C or SIGTERM (or, as a worker, until the parent exits)."""
    backplane = (
        trio_ws.LocalBackplane() if args.redis is None else trio_ws.RedisBackplane(args.redis)
    )
    room = backplane.room("chat", policy="drop")
    metrics = trio_ws.Metrics()  # this process's server counts here; /metrics shows it
    if isinstance(backplane, trio_ws.RedisBackplane):
        metrics.track_backplane(backplane)  # reconnects and gaps
    options = trio_ws.WebSocketOptions(max_message_size=MAX_MESSAGE)
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        with trio.move_on_after(REDIS_WAIT):
            await backplane.wait_connected()
        server = await nursery.start(
            functools.partial(
                trio_ws.serve_websocket,
                functools.partial(chat, room, metrics),
                args.host,
                args.port,
                options=options,
                metrics=metrics,
                reuse_port=args.worker,
            )
        )
        print(f"chat on http://{args.host}:{server.port}/", flush=True)
        await trio_ws.wait_for_stop(watch_stdin=args.worker)
        nursery.cancel_scope.cancel()  # closes the connections with 1001


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--workers", type=int, default=1, help="server processes sharing the port (default 1)"
    )
    parser.add_argument(
        "--redis", metavar="URL", help="share the room over Redis, e.g. redis://127.0.0.1:6379"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.workers > 1:
        if args.redis is None:
            print("warning: without --redis, each worker has a room of its own", file=sys.stderr)
        redis = [] if args.redis is None else ["--redis", args.redis]

        def command(port: int) -> list[str]:
            worker = ["--worker", "--host", args.host, "--port", str(port), *redis]
            return [sys.executable, __file__, *worker]

        def ready(port: int, pids: list[int]) -> None:
            print(f"chat on http://{args.host}:{port}/ ({len(pids)} workers)", flush=True)

        sys.exit(
            trio_ws.run_workers(
                command, workers=args.workers, host=args.host, port=args.port, on_ready=ready
            )
        )
    # Stops quietly on Ctrl-C or SIGTERM; start-up errors (port in use, --redis without
    # coredis) are one line on stderr and exit status 1.
    sys.exit(trio_ws.run_main(serve, args))


if __name__ == "__main__":
    main()
