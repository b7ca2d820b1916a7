"""An asyncio WebSocket echo server built only on trio_ws.protocol, the sans-I/O core.

python examples/asyncio_echo_server.py --host 127.0.0.1 --port 9002 [--deflate]

The core does the protocol: handshake checks, frames, fragments, UTF-8, pongs, the closing
handshake and the close code of every violation. This file only moves bytes: it feeds what
the socket gives to ``Connection.receive_data()``, writes what ``Connection.data_to_send()``
gives (the one way out of every byte the core wants written), and closes the TCP connection
once the core's state is CLOSED. Importing ``trio_ws.protocol`` does not load Trio.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from collections.abc import Sequence

from trio_ws.protocol import (
    Connection,
    ConnectionState,
    HandshakeError,
    Message,
    PerMessageDeflate,
    RequestReceived,
    Role,
    ServerExtensionFactory,
)

READ_SIZE = 256 * 1024
LINGER = 5.0  # seconds to wait for the client to close TCP after we failed the connection


async def handshake(
    conn: Connection,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    extensions: Sequence[ServerExtensionFactory],
) -> bool:
    """Read the opening handshake and answer it: True once the 101 is written."""
    while conn.state is ConnectionState.CONNECTING:
        data = await reader.read(READ_SIZE)
        if not data:
            return False  # the client left before finishing its request
        try:
            for event in conn.receive_data(data):
                if isinstance(event, RequestReceived):
                    conn.accept(extensions=extensions)
        except HandshakeError as exc:
            # A bad request (or a plain GET, which accept() refuses with 426): answer with
            # the status the core chose; the core is CLOSED after reject().
            conn.reject(exc.status, exc.headers, f"{exc.message}\n".encode())
            writer.writelines(conn.data_to_send())
            await writer.drain()
            return False
    writer.writelines(conn.data_to_send())  # the 101
    await writer.drain()
    return True


async def echo(
    conn: Connection, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Echo messages until the core says CLOSED."""
    data = b""  # b"" first: frames that came with the request wait in the core
    while True:
        for event in conn.receive_data(data):
            if isinstance(event, Message) and conn.state is ConnectionState.OPEN:
                conn.send_message(event.data)
        # The echoes, and what the core queued itself (pongs, the reply to a close frame, a
        # failure's close frame), in the order they were queued.
        writer.writelines(conn.data_to_send())
        await writer.drain()
        if conn.state is ConnectionState.CLOSED:
            return
        if conn.failure_pending:
            # The core found a violation after the messages it just gave: they were echoed,
            # so let it fail the connection now (the next receive_data() call does).
            data = b""
            continue
        data = await reader.read(READ_SIZE)
        if not data:
            conn.receive_eof()  # TCP closed without a closing handshake (1006)
            return


async def serve_client(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    max_size: int,
    extensions: Sequence[ServerExtensionFactory],
) -> None:
    conn = Connection(Role.SERVER, max_message_size=max_size)
    try:
        if await handshake(conn, reader, writer, extensions):
            await echo(conn, reader, writer)
        if conn.failure is not None and not reader.at_eof():
            # We failed the connection: half-close and let the client close TCP, so that it
            # reads our close frame before any reset from data we would leave unread.
            writer.write_eof()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(drain_until_eof(reader), LINGER)
    except ConnectionError:
        pass  # the client went away
    finally:
        # After a clean closing handshake, the server closes TCP first (RFC 6455 7.1.1).
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def drain_until_eof(reader: asyncio.StreamReader) -> None:
    while await reader.read(READ_SIZE):
        pass


async def main(host: str, port: int, max_size: int, deflate: bool) -> None:
    extensions = [PerMessageDeflate()] if deflate else []

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # Cancelled when the server stops (Ctrl-C); serve_client() closes the socket.
        with contextlib.suppress(asyncio.CancelledError):
            await serve_client(reader, writer, max_size, extensions)

    server = await asyncio.start_server(on_connect, host, port)
    bound_port = server.sockets[0].getsockname()[1]
    print(f"asyncio echo server on ws://{host}:{bound_port}/", flush=True)
    try:
        await asyncio.Event().wait()  # serve until Ctrl-C
    finally:
        # Stop listening; asyncio.run() then cancels the connections' tasks. (Not
        # serve_forever(): on Python 3.12+ it waits for every connection to end first.)
        server.close()


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9002, help="0 picks a free port")
    parser.add_argument(
        "--max-size", type=int, default=64 * 1024 * 1024, help="largest message, in bytes"
    )
    parser.add_argument(
        "--deflate", action="store_true", help="accept permessage-deflate (RFC 7692) offers"
    )
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main(args.host, args.port, args.max_size, args.deflate))


if __name__ == "__main__":
    cli()
