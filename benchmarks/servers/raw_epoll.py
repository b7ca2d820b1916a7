"""Raw epoll echo server: checks the load generator's headroom (not a row by default).

    python benchmarks/servers/raw_epoll.py --port N --mode echo|broadcast

Like raw_ceiling.py (canned 101, bytes moved unchanged, masked frames echoed as they are) but
with no framework at all: one ``select.epoll`` loop over non-blocking sockets, the same
technique as the load generator. Run ``benchmarks/run.py --servers "raw epoll"`` to see how
fast the load generator can go when the server costs next to nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import select
import socket

CANNED_101 = (
    b"HTTP/1.1 101 Switching Protocols\r\n"
    b"Upgrade: websocket\r\n"
    b"Connection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"
    b"\r\n"
)


def serve(host: str, port: int, mode: str) -> None:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(1024)
    listener.setblocking(False)
    ep = select.epoll()
    ep.register(listener.fileno(), select.EPOLLIN)
    socks: dict[int, socket.socket] = {}
    heads: dict[int, bytes] = {}  # connections still in the handshake
    pending: dict[int, bytes] = {}  # unsent output
    upgraded: set[int] = set()

    def write(fd: int, data: bytes) -> None:
        if fd in pending:
            pending[fd] += data
            return
        try:
            sent = socks[fd].send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            close(fd)
            return
        if sent < len(data):
            pending[fd] = data[sent:]
            ep.modify(fd, select.EPOLLIN | select.EPOLLOUT)

    def close(fd: int) -> None:
        sock = socks.pop(fd, None)
        heads.pop(fd, None)
        pending.pop(fd, None)
        upgraded.discard(fd)
        if sock is not None:
            with contextlib.suppress(OSError, ValueError):
                ep.unregister(fd)
            sock.close()

    while True:
        for fd, ev in ep.poll():
            if fd == listener.fileno():
                while True:
                    try:
                        sock, _ = listener.accept()
                    except BlockingIOError:
                        break
                    sock.setblocking(False)
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    socks[sock.fileno()] = sock
                    heads[sock.fileno()] = b""
                    ep.register(sock.fileno(), select.EPOLLIN)
                continue
            if fd not in socks:
                continue
            if ev & select.EPOLLOUT and fd in pending:
                data = pending.pop(fd)
                ep.modify(fd, select.EPOLLIN)
                write(fd, data)
            if not ev & (select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP):
                continue
            try:
                data = socks[fd].recv(262144)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                close(fd)
                continue
            if fd in heads:
                head = heads[fd] + data
                if b"\r\n\r\n" not in head:
                    heads[fd] = head
                    continue
                del heads[fd]
                data = head.partition(b"\r\n\r\n")[2]
                upgraded.add(fd)
                write(fd, CANNED_101)
                if not data:
                    continue
            for target in [fd] if mode == "echo" else list(upgraded):
                if target in socks:
                    write(target, data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=["echo", "broadcast"], default="echo")
    args = parser.parse_args()
    print(f"raw epoll {args.mode} server on {args.host}:{args.port}", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        serve(args.host, args.port, args.mode)


if __name__ == "__main__":
    main()
