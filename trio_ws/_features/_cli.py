"""``python -m trio_ws``: an interactive client, and quick echo or broadcast servers.

    python -m trio_ws ws://127.0.0.1:8765/ [-p SUBPROTOCOL] [-H "Name: value"]
    python -m trio_ws serve [--echo | --broadcast] [--host HOST] [--port PORT]
                            [--workers N] [--redis redis://HOST:PORT]
                            [--certfile PEM [--keyfile PEM]]

The client sends each line of stdin as a text message and prints each message it receives
as ``< message``. At the end of stdin (Ctrl-D) it waits until the server has been quiet for
``--linger`` seconds, closes with 1000 and exits with 0. It exits with 1 if the connection
fails or the server closes it with a code other than 1000 or 1001, and with 130 on Ctrl-C.
The server prints its URL (useful with ``--port 0``) and stops on Ctrl-C or SIGTERM, closing
its connections with 1001. ``--workers N`` runs N server processes on the port (SO_REUSEPORT)
and stops them all on Ctrl-C or SIGTERM; ``--redis URL`` joins the broadcast rooms of every
process (and every machine) that uses that Redis. ``--certfile`` serves wss://.

A start-up error the user can fix (port in use, ``--redis`` without coredis installed, an
unreadable TLS file) is printed as one line, ``error: ...``, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

from .._trio import (
    WebSocketConnection,
    WebSocketOptions,
    WebSocketRequest,
    WebSocketServer,
    open_websocket_url,
    serve_websocket,
)
from ..protocol import ConnectionClosed, HandshakeError, HeaderList
from ._backplane import LocalBackplane
from ._broadcast import Room
from ._redis import RedisBackplane
from ._startup import StartupError, describe_startup_error
from ._workers import run_workers, wait_for_stop

__all__ = ["main"]

#: Bytes of a binary message shown (in hex) before "...".
_BINARY_PREVIEW = 32

#: Seconds a server with --redis waits for Redis before it serves anyway (local delivery only).
_REDIS_WAIT = 5.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["serve"]:
        parser = _serve_parser()
        serve_args = parser.parse_args(args[1:])
        _check_serve_args(parser, serve_args)
        if serve_args.workers > 1:
            return _serve_workers(serve_args)
        return _run(_serve, serve_args, interrupted=0)  # Ctrl-C is how a server stops
    client_args = _client_parser().parse_args(args)
    return _run(_client, client_args, interrupted=130)


def _run(
    main: Callable[[argparse.Namespace], Awaitable[int]],
    args: argparse.Namespace,
    *,
    interrupted: int,
) -> int:
    """``trio.run(main, args)``; ``interrupted`` after Ctrl-C; 1 after a start-up error the
    user can fix, printed as one line (see ``describe_startup_error``)."""
    try:
        return trio.run(main, args)
    except BaseException as exc:
        if isinstance(_leaf(exc), KeyboardInterrupt):
            return interrupted
        message = describe_startup_error(exc)  # port in use, no coredis, TLS file...
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 1


# Client -----------------------------------------------------------------------------------


def _client_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_ws",
        description="Interactive WebSocket client: stdin lines out, messages to stdout. "
        "'python -m trio_ws serve --help' starts a test server instead.",
    )
    parser.add_argument("url", help="ws:// or wss:// URL")
    parser.add_argument(
        "-p",
        "--subprotocol",
        action="append",
        default=[],
        help="offer this subprotocol (repeat for several, in order of preference)",
    )
    parser.add_argument(
        "-H",
        "--header",
        action="append",
        default=[],
        type=_header,
        help='add a request header, "Name: value" (repeatable)',
    )
    parser.add_argument(
        "--no-compression", action="store_true", help="do not offer permessage-deflate"
    )
    parser.add_argument(
        "--linger",
        type=float,
        default=0.5,
        metavar="SECONDS",
        help="after the end of stdin, wait until no message came for SECONDS (default 0.5)",
    )
    return parser


def _header(text: str) -> tuple[str, str]:
    name, colon, value = text.partition(":")
    if not colon or not name.strip() or name != name.strip():
        raise argparse.ArgumentTypeError(f'expected "Name: value", got {text!r}')
    return name, value.strip()


def _options(no_compression: bool) -> WebSocketOptions:
    return WebSocketOptions(compression=None) if no_compression else WebSocketOptions()


def _show(message: str | bytes) -> str:
    if isinstance(message, str):
        return message
    preview = message[:_BINARY_PREVIEW].hex()
    more = "..." if len(message) > _BINARY_PREVIEW else ""
    return f"[binary, {len(message)} bytes] {preview}{more}"


def _decode(line: bytes) -> str:
    return line.rstrip(b"\r").decode("utf-8", "replace")


async def _send_lines(ws: WebSocketConnection, read: Callable[[], Awaitable[bytes]]) -> None:
    """Send each line ``read()`` yields until it returns b""; a last unended line too."""
    buffer = b""
    while chunk := await read():
        *lines, buffer = (buffer + chunk).split(b"\n")
        for line in lines:
            await ws.send(_decode(line))
    if buffer:
        await ws.send(_decode(buffer))


async def _send_stdin(ws: WebSocketConnection) -> None:
    """Send stdin's lines as text messages until its end."""
    fd = sys.stdin.fileno()
    if sys.platform != "win32":
        async with trio.lowlevel.FdStream(os.dup(fd)) as stream:
            await _send_lines(ws, functools.partial(stream.receive_some, 65536))
    else:  # no non-blocking stdin: read in a thread, abandoned if cancelled
        read = functools.partial(trio.to_thread.run_sync, os.read, fd, 65536)
        await _send_lines(ws, functools.partial(read, abandon_on_cancel=True))


def _leaf(exc: BaseException) -> BaseException:
    """``exc`` without the single-member exception groups Trio's nurseries wrap it in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


async def _client(args: argparse.Namespace) -> int:
    try:
        async with open_websocket_url(
            args.url,
            subprotocols=args.subprotocol,
            extra_headers=args.header,
            options=_options(args.no_compression),
        ) as ws:
            await _converse(ws, args.linger)
    except Exception as exc:
        leaf = _leaf(exc)
        if isinstance(leaf, HandshakeError):
            print(f"handshake failed: {leaf.message}", file=sys.stderr)
            if leaf.body:
                print(leaf.body.decode("utf-8", "replace").rstrip(), file=sys.stderr)
            return 1
        if isinstance(leaf, (OSError, ValueError, trio.TooSlowError, trio.BrokenResourceError)):
            print(f"cannot connect to {args.url}: {leaf or type(leaf).__name__}", file=sys.stderr)
            return 1
        raise
    code = ws.close_code
    if code not in (1000, 1001):
        print(f"connection closed: {code} {ws.close_reason or ''}".rstrip(), file=sys.stderr)
        return 1
    return 0


async def _converse(ws: WebSocketConnection, linger: float) -> None:
    """Send stdin's lines and print messages until stdin ends (then linger) or ws closes."""
    if ws.subprotocol is not None:
        print(f"subprotocol: {ws.subprotocol}", file=sys.stderr)
    last_message = trio.current_time()

    async def print_messages(nursery: trio.Nursery) -> None:
        nonlocal last_message
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                print(f"< {_show(message)}", flush=True)
                last_message = trio.current_time()
        nursery.cancel_scope.cancel()  # the connection is over: stop reading stdin

    async with trio.open_nursery() as nursery:
        nursery.start_soon(print_messages, nursery)
        try:
            await _send_stdin(ws)
        except ConnectionClosed:
            await trio.sleep_forever()  # print_messages sees the end and cancels
        last_message = max(last_message, trio.current_time())
        while (quiet_until := last_message + linger) > trio.current_time():
            await trio.sleep_until(quiet_until)
        nursery.cancel_scope.cancel()


# Server -----------------------------------------------------------------------------------


def _serve_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trio_ws serve",
        description="A WebSocket server for experiments, on every path.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--echo", action="store_true", help="send each message back to its sender (default)"
    )
    mode.add_argument("--broadcast", action="store_true", help="send each message to every client")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port, 0 for any (8765)")
    parser.add_argument("--no-compression", action="store_true", help="refuse permessage-deflate")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="run N server processes on the port (SO_REUSEPORT; default 1)",
    )
    parser.add_argument(
        "--redis",
        metavar="URL",
        help="with --broadcast: share the broadcast with every server on this Redis "
        "(redis://HOST:PORT; needs trio_ws[redis])",
    )
    parser.add_argument(
        "--reuse-port",
        action="store_true",
        help="set SO_REUSEPORT, so that other servers can share the port",
    )
    parser.add_argument(
        "--certfile", metavar="PEM", help="serve wss:// with this certificate (chain) file"
    )
    parser.add_argument(
        "--keyfile", metavar="PEM", help="the private key, if not in --certfile's file"
    )
    # A worker of --workers: SO_REUSEPORT, X-Worker-Pid, stops when its parent goes away.
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser


def _check_serve_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.workers < 1:
        parser.error("--workers must be at least 1")
    if args.redis is not None and not args.broadcast:
        parser.error("--redis needs --broadcast")
    if args.keyfile is not None and args.certfile is None:
        parser.error("--keyfile needs --certfile")
    if args.workers > 1 and not hasattr(socket, "SO_REUSEPORT"):
        parser.error("--workers needs SO_REUSEPORT, which this platform does not have")
    if args.workers > 1 and args.broadcast and args.redis is None:
        print(
            "warning: without --redis, each worker broadcasts to its own clients only",
            file=sys.stderr,
            flush=True,
        )


async def _echo(headers: HeaderList, request: WebSocketRequest) -> None:
    ws = await request.accept(extra_headers=headers)
    async for message in ws:
        await ws.send(message)


async def _broadcast(room: Room, headers: HeaderList, request: WebSocketRequest) -> None:
    ws = await request.accept(extra_headers=headers)
    with room.joined(ws):
        async for message in ws:
            room.broadcast(message)


def _backplane(args: argparse.Namespace) -> LocalBackplane | RedisBackplane:
    """A ``RedisBackplane`` for ``--redis``, else the in-process ``LocalBackplane``."""
    return LocalBackplane() if args.redis is None else RedisBackplane(args.redis)


def _ssl_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The server's TLS context for ``--certfile``/``--keyfile``; StartupError if unusable."""
    if args.certfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(args.certfile, args.keyfile)
    except ssl.SSLError as exc:
        raise StartupError(
            f"cannot use the TLS certificate {args.certfile}"
            + (f" with the key {args.keyfile}" if args.keyfile else "")
            + f": not a PEM certificate and its private key ({exc.reason or exc}); "
            "check --certfile and --keyfile"
        ) from exc
    except OSError as exc:
        raise StartupError(
            f"cannot read the TLS file {exc.filename or args.certfile}: {exc.strerror}; "
            "check --certfile and --keyfile"
        ) from exc
    return context


async def _serve(args: argparse.Namespace) -> int:
    ssl_context = _ssl_context(args)
    backplane = _backplane(args)
    # A worker names itself, so that clients (and tests) can tell the workers apart.
    headers = [("X-Worker-Pid", str(os.getpid()))] if args.worker else []
    if args.broadcast:
        handler = functools.partial(_broadcast, backplane.room(), headers)
    else:
        handler = functools.partial(_echo, headers)
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        if args.redis is not None:
            with trio.move_on_after(_REDIS_WAIT) as waiting:
                await backplane.wait_connected()
            if waiting.cancelled_caught:
                print(
                    f"warning: Redis at {args.redis} is not reachable; serving local clients "
                    "and retrying",
                    file=sys.stderr,
                    flush=True,
                )
        server: WebSocketServer = await nursery.start(
            functools.partial(
                serve_websocket,
                handler,
                args.host,
                args.port,
                options=_options(args.no_compression),
                reuse_port=args.reuse_port or args.worker,
                ssl_context=ssl_context,
            )
        )
        mode = "broadcast" if args.broadcast else "echo"
        # The line says "serving" (run_workers waits for it): only once stop signals are caught.
        url = _url(args.host, server.port, secure=ssl_context is not None)
        ready = functools.partial(print, f"{mode} server on {url}", flush=True)
        await wait_for_stop(watch_stdin=args.worker, on_ready=ready)
        nursery.cancel_scope.cancel()  # the server closes its connections with 1001
    return 0


def _url(host: str, port: int, *, secure: bool = False) -> str:
    scheme = "wss" if secure else "ws"
    return f"{scheme}://[{host}]:{port}/" if ":" in host else f"{scheme}://{host}:{port}/"


def _serve_workers(args: argparse.Namespace) -> int:
    """Run ``args.workers`` copies of ``serve --worker`` on one port until Ctrl-C or SIGTERM."""
    mode = "--broadcast" if args.broadcast else "--echo"
    options = ["--no-compression"] if args.no_compression else []
    if args.redis is not None:
        options += ["--redis", args.redis]
    for flag, value in (("--certfile", args.certfile), ("--keyfile", args.keyfile)):
        if value is not None:
            options += [flag, value]

    def command(port: int) -> list[str]:
        worker = ["serve", mode, "--worker", "--host", args.host, "--port", str(port)]
        return [sys.executable, "-m", "trio_ws", *worker, *options]

    def ready(port: int, pids: list[int]) -> None:
        url = _url(args.host, port, secure=args.certfile is not None)
        print(f"{mode[2:]} server on {url}", flush=True)
        backplane = f", broadcast shared over {args.redis}" if args.redis else ""
        print(f"{len(pids)} workers (pids {', '.join(map(str, pids))}){backplane}", flush=True)

    try:
        return run_workers(
            command, workers=args.workers, host=args.host, port=args.port, on_ready=ready
        )
    except BaseException as exc:  # Ctrl-C before the signal handlers were in place
        if isinstance(_leaf(exc), KeyboardInterrupt):
            return 0
        raise
