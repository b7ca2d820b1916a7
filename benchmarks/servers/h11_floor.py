"""What any WebSocket server on Trio and h11 pays to connect and close (not a row by default).

    python benchmarks/servers/h11_floor.py --port N --mode echo

The connect+close scenario's floor for a server built on Trio with its opening handshake parsed
by h11: h11 reads the request and writes the 101, then the client's close frame is unmasked
and answered and the connection closed (the server closes first, RFC 6455 section 7.1.1), and
nothing more: no validation of the request, no options, no limits.

It is also the echo scenario's floor for a server that echoes whole messages (as a WebSocket
echo must: it cannot answer a message before it has all of it, where the raw ceiling sends
bytes back as they arrive). Each frame is read whole, a large payload straight into a buffer
of its own (``recv_into``), unmasked once, and sent back behind its header without joining
them; no UTF-8 check, no fragmentation, no limits. Not a row by default::

    benchmarks/run.py --servers "h11 floor,trio_ws" --scenarios connrate,echo
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import functools
import hashlib
import struct

import h11
import trio

from trio_ws.protocol._mask import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
READ_SIZE = 256 * 1024
#: Payloads from this size on are read into a buffer of their own and sent unjoined.
LARGE = 64 * 1024


async def handle(stream: trio.SocketStream) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        conn = h11.Connection(h11.SERVER)
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                break
            data = await stream.receive_some(READ_SIZE)
            if not data:
                return
            conn.receive_data(data)
        assert isinstance(event, h11.Request)
        key = dict(event.headers)[b"sec-websocket-key"]
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        headers = [(b"Upgrade", b"websocket"), (b"Connection", b"Upgrade")]
        response = h11.InformationalResponse(
            status_code=101, headers=[*headers, (b"Sec-WebSocket-Accept", accept)]
        )
        await stream.send_all(conn.send(response) or b"")
        buf = bytearray(conn.trailing_data[0])
        while True:
            frame = await read_frame(stream, buf)
            if frame is None:
                return
            opcode, payload = frame
            if len(payload) < LARGE:
                await stream.send_all(header(opcode, len(payload)) + payload)
            else:  # no copy to join them
                await stream.send_all(header(opcode, len(payload)))
                await stream.send_all(payload)
            if opcode == 0x8:
                await stream.aclose()
                return


async def read_frame(stream: trio.SocketStream, buf: bytearray) -> tuple[int, bytes] | None:
    """One whole masked frame from ``buf`` and the stream: (opcode, unmasked payload)."""
    while True:
        if len(buf) >= 2:
            length, start = buf[1] & 0x7F, 2
            if length == 126 and len(buf) >= 4:
                (length,), start = struct.unpack_from("!H", buf, 2), 4
            elif length == 127 and len(buf) >= 10:
                (length,), start = struct.unpack_from("!Q", buf, 2), 10
            end = start + 4 + length
            known = (length < 126 or start > 2) and len(buf) >= start + 4
            if known and len(buf) < end and length >= LARGE:
                return await read_large(stream, buf, start, length)
            if known and len(buf) >= end:
                mask = bytes(buf[start : start + 4])
                with memoryview(buf) as view:
                    payload = apply_mask(view[start + 4 : end], mask)
                opcode = buf[0] & 0x0F
                del buf[:end]
                return opcode, payload
        data = await stream.receive_some(READ_SIZE)
        if not data:
            return None
        buf += data


async def read_large(
    stream: trio.SocketStream, buf: bytearray, start: int, length: int
) -> tuple[int, bytes] | None:
    """The rest of a large frame whose header is in ``buf``, read into a buffer of its own."""
    opcode, mask = buf[0] & 0x0F, bytes(buf[start : start + 4])
    payload = bytearray(length)
    got = len(buf) - start - 4
    payload[:got] = buf[start + 4 :]
    del buf[:]
    with memoryview(payload) as view:
        while got < length:
            count = await stream.socket.recv_into(view[got:])
            if not count:
                return None
            got += count
        return opcode, apply_mask(view, mask)


def header(opcode: int, length: int) -> bytes:
    if length < 126:
        return bytes((0x80 | opcode, length))
    if length < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, length)
    return struct.pack("!BBQ", 0x80 | opcode, 127, length)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo"], default="echo")
    args = parser.parse_args()
    print(f"h11 floor echo server on ws://{args.host}:{args.port}/", flush=True)
    serve = functools.partial(trio.serve_tcp, handle, args.port, host=args.host)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(serve)


if __name__ == "__main__":
    main()
