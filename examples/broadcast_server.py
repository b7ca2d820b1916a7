"""A chat room: GET / serves a page; every message sent to /ws goes to every client.

    python examples/broadcast_server.py --host 127.0.0.1 --port 8000

then open http://127.0.0.1:8000/ in two browser windows (``/?name=alice`` picks a name). One
process by default; as a cluster, N processes on the port sharing the room over Redis
(``pip install 'trio_ws[redis]'``)::

    python examples/broadcast_server.py --port 8000 --workers 4 --redis redis://127.0.0.1:6379

Several machines running it with the same ``--redis`` share the room too.

The room survives reconnects (see docs/reconnects.md). A client connects to
``/ws?name=alice``: the room lists who is online by name, and everyone gets the list anew
whenever someone joins or leaves. Each chat message arrives in an envelope,
``{"offset": 7, "epoch": "...", "data": "alice: hi"}``; a client that reconnects with the last
one it got, ``/ws?name=alice&epoch=...&offset=7``, first gets every message it missed, once
each. The server's own messages to a client:

- ``{"position": {"epoch": ..., "offset": ...}, "missing": false}`` once joined: where the
  client is now; ``"missing": true`` if it asked to resume and could not (the history was
  lost, or is too short), so some messages may be missing;
- ``{"online": ["alice", "bob"]}`` whenever someone joins or leaves.

The history (the last 1000 messages, 5 minutes at most) and the presence are kept in the
process, or with ``--redis`` in Redis, so that a client may resume through any worker. A client
without a name is not listed, and its messages go out as they are.

GET /metrics answers the server's counters in the Prometheus text format (with
``pip install 'trio_ws[prometheus]'``; without it, the plain counters and a line saying so).
With ``--workers``, each request reaches one of the processes, which reports its own.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import trio

import trio_ws

PAGE = (Path(__file__).parent / "chat.html").read_bytes()
MAX_MESSAGE = 64 * 1024
#: Seconds to wait for Redis at start before serving anyway (local clients only until then).
REDIS_WAIT = 5.0
#: The room's history: how many messages, and for how many seconds, a client may catch up on.
HISTORY_SIZE = 1000
HISTORY_TTL = 300.0
#: Longest name shown (longer ones are cut).
MAX_NAME = 32


async def chat(
    room: trio_ws.Room,
    everyone: trio_ws.Room,
    metrics: trio_ws.Metrics,
    request: trio_ws.WebSocketRequest,
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
    fields = urllib.parse.parse_qs(request.query)
    name = fields["name"][0][:MAX_NAME] if fields.get("name") else None
    since = resume_point(fields)
    ws = await request.accept()
    with everyone.joined(ws):  # first, so that it hears the "online" list with itself in it
        # Sends what the client missed since its last position (if it gave one), in order.
        recovery = await room.join(ws, since=since, identity=name)
        position = recovery.position
        assert position is not None  # the room has a history
        missing = since is not None and not recovery.recovered
        where = {"epoch": position.epoch, "offset": position.offset}
        await ws.send(json.dumps({"position": where, "missing": missing}))
        async for message in ws:
            if isinstance(message, str):  # json_envelope carries text only
                room.broadcast(message if name is None else f"{name}: {message}")


def resume_point(fields: dict[str, list[str]]) -> trio_ws.Position | None:
    """Where the client was: ``?epoch=...&offset=...``; None on its first connection (neither
    given), and a position no room has if they are malformed: then the client hears
    ``"missing": true`` rather than nothing."""
    if "epoch" not in fields and "offset" not in fields:
        return None
    try:
        return trio_ws.Position(fields["epoch"][0], int(fields["offset"][0]))
    except (KeyError, ValueError):
        return trio_ws.Position("", -1)


async def announce_online(room: trio_ws.Room, everyone: trio_ws.Room) -> None:
    """After joins and leaves (of any worker's clients), send every client here the list of
    who is online. Several changes at once make one list."""
    changed = trio.Event()

    def on_presence(event: trio_ws.PresenceEvent) -> None:
        changed.set()  # a callback must not block: the loop below does the work

    room.on_presence(on_presence)
    while True:
        await changed.wait()
        changed = trio.Event()
        online = await room.presence()
        everyone.broadcast(json.dumps({"online": sorted(online)}))


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
    history: trio_ws.History
    presence: trio_ws.Presence
    redis: list[trio_ws.RedisHistory | trio_ws.RedisPresence] = []
    if args.redis is None:  # this process only
        history = trio_ws.MemoryHistory(HISTORY_SIZE, ttl=HISTORY_TTL)
        presence = trio_ws.MemoryPresence()
    else:  # shared by every worker: offsets are the same everywhere, so is the online list
        history = trio_ws.RedisHistory(args.redis, "chat", size=HISTORY_SIZE, ttl=HISTORY_TTL)
        presence = trio_ws.RedisPresence(args.redis, "chat")
        redis = [history, presence]
    # The chat: its messages carry their position (json_envelope). A history needs no backplane.
    # A member too slow to keep up is closed (1013) rather than skipped: the page reconnects
    # with its last position and resumes, so it misses nothing (see docs/reconnects.md).
    room = trio_ws.Room(
        history=history, envelope=trio_ws.json_envelope, presence=presence, policy="close"
    )
    # Every connection here, to send it who is online (not chat: no history, no envelope).
    everyone = trio_ws.Room(policy="drop")
    metrics = trio_ws.Metrics()  # this process's server counts here; /metrics shows it
    for store in redis:  # and its links to Redis: connected, reconnects, dropped, missed
        metrics.track_backplane(store)
    # Browsers always offer permessage-deflate: compress each broadcast once for every member
    # (server_no_context_takeover, RFC 7692 section 7.1.1.1) rather than once per member.
    options = trio_ws.WebSocketOptions(
        max_message_size=MAX_MESSAGE,
        compression=trio_ws.PerMessageDeflate(server_no_context_takeover=True),
    )
    async with trio.open_nursery() as nursery:
        for store in redis:
            await nursery.start(store.run)
        with trio.move_on_after(REDIS_WAIT):
            for store in redis:
                await store.wait_connected()
        nursery.start_soon(announce_online, room, everyone)
        server = await nursery.start(
            functools.partial(
                trio_ws.serve_websocket,
                functools.partial(chat, room, everyone, metrics),
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
