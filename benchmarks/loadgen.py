"""Load generator of the benchmark suite: one process, one ``select.epoll`` loop, raw sockets.

    python benchmarks/loadgen.py echo --port N --conns 64 --size 32 --duration 2
    python benchmarks/loadgen.py broadcast --port N --conns 1000 --messages 200 --size 64
    python benchmarks/loadgen.py connrate --port N --count 2000 --concurrency 50
    python benchmarks/loadgen.py idle --port N --conns 2000   # driven over stdin, see run_idle
    python benchmarks/loadgen.py idle --port N --conns 2000 --deflate  # offers permessage-deflate
    python benchmarks/loadgen.py broadcast --port N --conns 2000 --messages 1 --size 1024 \
        --text --deflate  # chat-like text, offers permessage-deflate, counts compressed frames

It prints one JSON object (the result) as its last line of standard output. Written for speed
so that it outruns every server under test: non-blocking sockets driven by epoll directly,
client frames masked once in advance (a fixed masking key: the RFC requires masking, not a
random key, for a benchmark), and the server's frames parsed only as far as header and length
(a large payload is skipped as it arrives, never buffered). ``--raw`` is for the raw ceiling
server, which echoes the client's masked frames unchanged: the parser accepts masked frames
then, and a connection is closed with a half-close instead of waiting for the server to close.

Every loop is bounded by a deadline; failures are counted and reported, never waited on.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import resource
import select
import socket
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

#: Fixed Sec-WebSocket-Key (the RFC's example) and its accept value.
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
#: The permessage-deflate offer browsers send (Chromium, Firefox): ``--deflate`` (idle,
#: broadcast).
DEFLATE_OFFER = b"permessage-deflate; client_max_window_bits"
MASK_KEY = bytes([0x37, 0xFA, 0x21, 0x3D])
READ_SIZE = 256 * 1024
HANDSHAKE_TIMEOUT = 10.0

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR | select.EPOLLHUP

# Connection states.
CONNECTING, HANDSHAKING, OPEN, CLOSING, DONE = range(5)

perf = time.perf_counter
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def mask(payload: bytes, key: bytes = MASK_KEY) -> bytes:
    n = len(payload)
    if n == 0:
        return b""
    repeated = (key * ((n >> 2) + 1))[:n]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(repeated, "little")).to_bytes(
        n, "little"
    )


def client_frame(opcode: int, payload: bytes) -> bytes:
    """A complete, masked client frame with FIN set."""
    n = len(payload)
    b0 = 0x80 | opcode
    if n < 126:
        head = struct.pack("!BB", b0, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", b0, 0x80 | 127, n)
    return head + MASK_KEY + mask(payload)


CLOSE_FRAME = client_frame(0x8, struct.pack("!H", 1000))


def request_head(port: int, *, deflate: bool = False) -> bytes:
    extensions = b"Sec-WebSocket-Extensions: %s\r\n" % DEFLATE_OFFER if deflate else b""
    return (
        b"GET / HTTP/1.1\r\n"
        b"Host: 127.0.0.1:%d\r\n"
        b"Upgrade: websocket\r\n"
        b"Connection: Upgrade\r\n"
        b"Sec-WebSocket-Key: %s\r\n"
        b"Sec-WebSocket-Version: 13\r\n"
        b"%s"
        b"\r\n"
    ) % (port, KEY, extensions)


def header_value(head: bytes, name: bytes) -> bytes | None:
    """The value of header ``name`` (lower case) in a response head, joined if repeated."""
    values = []
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == name:
            values.append(value.strip())
    return b", ".join(values) if values else None


class Conn:
    __slots__ = (
        "compressed",
        "count",
        "eof",
        "extensions",
        "fd",
        "frag",
        "got_close",
        "head",
        "other",
        "pending",
        "probe",
        "rbuf",
        "rsv1",
        "skip",
        "skip_len",
        "skip_op",
        "sock",
        "started",
        "state",
        "t_sent",
        "wbuf",
        "wire",
    )

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.state = CONNECTING
        self.head = b""  # handshake response so far
        self.rbuf = bytearray()  # partial frame
        self.skip = 0  # payload bytes of the current (large) frame still to skip
        self.skip_len = 0  # that frame's payload length
        self.skip_op = 0  # that frame's first byte
        self.frag = 0  # payload bytes of a fragmented message so far
        self.count = 0  # complete messages of the expected size (or compressed, see Generator)
        self.compressed = 0  # of which compressed (RSV1 set on their first frame)
        self.wire = 0  # bytes on the wire of the counted messages, frame headers included
        self.rsv1 = False  # the message being received is compressed
        self.other = 0  # complete messages of another size
        self.probe = False  # a broadcast probe (1-byte message) arrived
        self.got_close = False
        self.eof = False
        self.extensions: bytes | None = None  # Sec-WebSocket-Extensions of the 101 response
        self.wbuf: memoryview | None = None  # unsent bytes
        self.pending = False  # wbuf registered for EPOLLOUT
        self.t_sent = 0.0
        self.started = 0.0


class Generator:
    def __init__(
        self, port: int, *, raw: bool, expect: int, deflate: bool = False, pong: bool = False
    ) -> None:
        self.port = port
        self.raw = raw
        self.expect = expect  # payload length of a counted message
        # With permessage-deflate offered, every compressed message counts too (its length
        # varies): frames are only delimited and counted, never decompressed.
        self.deflate = deflate
        self.pong = pong  # answer the server's pings (idle connections with keepalive on)
        self.pings = 0  # pings received
        self.ep = select.epoll()
        self.conns: dict[int, Conn] = {}
        self.scratch = bytearray(READ_SIZE)
        self.view = memoryview(self.scratch)
        self.errors: dict[str, int] = {}
        self.head = request_head(port, deflate=deflate)
        self.wire_bytes = 0  # of the counted messages, see Conn.wire

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    # Frames -----------------------------------------------------------------------------------

    def feed(self, c: Conn, data: memoryview) -> None:
        """Parse the server's frames in ``data``: count messages, note close frames."""
        if c.skip:
            n = len(data)
            if n < c.skip:
                c.skip -= n
                return
            data = data[c.skip :]
            c.skip = 0
            self._frame_done(c, c.skip_op, c.skip_len)
        if c.rbuf:
            c.rbuf += data
            buf: Any = c.rbuf
        else:
            buf = data
        n = len(buf)
        pos = 0
        raw = self.raw
        while n - pos >= 2:
            b0 = buf[pos]
            b1 = buf[pos + 1]
            length = b1 & 0x7F
            hl = 2
            if length == 126:
                if n - pos < 4:
                    break
                length = (buf[pos + 2] << 8) | buf[pos + 3]
                hl = 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(buf[pos + 2 : pos + 10], "big")
                hl = 10
            if b1 & 0x80:
                if not raw:
                    self.error("masked frame from server")
                hl += 4
            end = pos + hl + length
            if end > n:
                if n - pos >= hl:
                    # A large frame: skip its payload as it arrives instead of buffering it.
                    c.skip = end - n
                    c.skip_len = length
                    c.skip_op = b0
                    pos = n
                break
            if (b0 & 0x0F) == 0x9 and self.pong:
                # A ping (at most 125 bytes: never skipped). Unmasked: raw servers never ping.
                self.send(c, client_frame(0xA, bytes(buf[end - length : end])))
            self._frame_done(c, b0, length)
            pos = end
        if buf is c.rbuf:
            del c.rbuf[:pos]
        elif pos < n:
            c.rbuf += buf[pos:]

    def _frame_done(self, c: Conn, b0: int, length: int) -> None:
        op = b0 & 0x0F
        if op >= 8:
            if op == 8:
                c.got_close = True
            elif op == 9:
                self.pings += 1  # answered in feed() when asked to (idle), else ignored
            return
        if self.deflate:
            self._deflate_frame_done(c, op, b0, length)
            return
        if not b0 & 0x80:
            c.frag += length
            return
        length += c.frag
        c.frag = 0
        if length == self.expect:
            c.count += 1
        elif length == 1:
            c.probe = True
        else:
            c.other += 1

    def _deflate_frame_done(self, c: Conn, op: int, b0: int, length: int) -> None:
        """``_frame_done`` with permessage-deflate offered (kept apart: the other scenarios'
        hot path stays as it was): compressed messages count whatever their length, and the
        bytes on the wire of counted messages are added up."""
        if op:  # a message's first frame: RSV1 marks it compressed (RFC 7692 section 6)
            c.rsv1 = bool(b0 & 0x40)
        # Server frames are unmasked: a 2, 4 or 10-byte header.
        c.wire += length + (2 if length < 126 else 4 if length < 65536 else 10)
        if not b0 & 0x80:
            c.frag += length
            return
        length += c.frag
        c.frag = 0
        wire, c.wire = c.wire, 0
        if length == self.expect or c.rsv1:
            c.count += 1
            c.compressed += c.rsv1
            self.wire_bytes += wire
        elif length == 1:
            c.probe = True
        else:
            c.other += 1

    # Sockets ----------------------------------------------------------------------------------

    def send(self, c: Conn, data: bytes) -> None:
        """Send ``data`` now, or queue what the socket does not take for EPOLLOUT."""
        if c.wbuf is not None:
            c.wbuf = memoryview(bytes(c.wbuf) + data)
            return
        try:
            sent = c.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.fail(c, "send failed")
            return
        if sent < len(data):
            c.wbuf = memoryview(data)[sent:]
            c.pending = True
            self.ep.modify(c.fd, EPOLLIN | EPOLLOUT)

    def flush(self, c: Conn) -> None:
        wbuf = c.wbuf
        if wbuf is None:
            return
        try:
            sent = c.sock.send(wbuf)
        except BlockingIOError:
            return
        except OSError:
            self.fail(c, "send failed")
            return
        if sent < len(wbuf):
            c.wbuf = wbuf[sent:]
        else:
            c.wbuf = None
            c.pending = False
            self.ep.modify(c.fd, EPOLLIN)

    def fail(self, c: Conn, what: str) -> None:
        self.error(what)
        self.drop(c)

    def drop(self, c: Conn) -> None:
        if c.state == DONE:
            return
        c.state = DONE
        self.conns.pop(c.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(c.fd)
        c.sock.close()

    def start_connect(self) -> Conn | None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        err = sock.connect_ex(("127.0.0.1", self.port))
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            self.error(f"connect: {os.strerror(err)}")
            return None
        c = Conn(sock)
        c.started = perf()
        self.conns[c.fd] = c
        self.ep.register(c.fd, EPOLLOUT)
        return c

    def on_connect_event(self, c: Conn, ev: int) -> bool:
        """Advance the connection and opening handshake; True once it is OPEN."""
        if c.state == CONNECTING:
            err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(c, f"connect: {os.strerror(err)}")
                return False
            if not ev & EPOLLOUT:
                return False
            c.state = HANDSHAKING
            self.ep.modify(c.fd, EPOLLIN)
            self.send(c, self.head)
            return False
        if c.state == HANDSHAKING:
            if ev & EPOLLOUT:
                self.flush(c)
            if not ev & (EPOLLIN | EPOLLERR):
                return False
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                return False
            except OSError:
                self.fail(c, "handshake: reset")
                return False
            if not data:
                self.fail(c, "handshake: EOF")
                return False
            c.head += data
            end = c.head.find(b"\r\n\r\n")
            if end < 0:
                if len(c.head) > 65536:
                    self.fail(c, "handshake: head too large")
                return False
            head, rest = c.head[:end], c.head[end + 4 :]
            c.head = b""
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
                self.fail(c, "handshake: refused")
                return False
            c.state = OPEN
            c.extensions = header_value(head, b"sec-websocket-extensions")
            if rest:
                self.feed(c, memoryview(rest))
            return True
        return False

    def open_many(self, n: int, concurrency: int, timeout: float = 30.0) -> list[Conn]:
        """Open ``n`` connections, ``concurrency`` at a time; return those that opened."""
        deadline = perf() + timeout
        opened: list[Conn] = []
        pending: dict[int, Conn] = {}
        started = 0
        poll = self.ep.poll
        conns = self.conns
        next_sweep = perf() + 0.5
        while perf() < deadline:
            while len(pending) < concurrency and started < n:
                started += 1
                c = self.start_connect()
                if c is not None:
                    pending[c.fd] = c
            if not pending:
                break
            for fd, ev in poll(0.05):
                c = conns.get(fd)
                if c is None:
                    continue
                if c.state == OPEN:
                    # Nothing is expected on an open connection yet: EOF means it was dropped.
                    if self.recv_into(c) < 0:
                        self.fail(c, "dropped after handshake")
                    continue
                if self.on_connect_event(c, ev):
                    opened.append(c)
                    del pending[fd]
                elif c.state == DONE:
                    del pending[fd]
            now = perf()
            if now >= next_sweep:
                next_sweep = now + 0.5
                for fd, c in list(pending.items()):
                    if now - c.started > HANDSHAKE_TIMEOUT:
                        self.fail(c, "handshake: timeout")
                        del pending[fd]
        for c in pending.values():
            self.fail(c, "handshake: timeout")
        return [c for c in opened if c.state == OPEN]

    def recv_into(self, c: Conn) -> int:
        """Read once into the scratch buffer and parse; -1 on EOF or error."""
        try:
            n = c.sock.recv_into(self.scratch)
        except BlockingIOError:
            return 0
        except OSError:
            c.eof = True
            return -1
        if n == 0:
            c.eof = True
            return -1
        self.feed(c, self.view[:n])
        return n

    def close_all(self, conns: list[Conn], timeout: float = 2.0) -> None:
        """Closing handshake on every connection: close frame, the server's, then EOF."""
        deadline = perf() + timeout
        for c in conns:
            if c.state == OPEN:
                c.state = CLOSING
                self.send(c, CLOSE_FRAME)
        live = {c.fd for c in conns if c.state == CLOSING}
        while live and perf() < deadline:
            for fd, ev in self.ep.poll(0.05):
                c = self.conns.get(fd)
                if c is None or fd not in live:
                    continue
                if ev & EPOLLOUT:
                    self.flush(c)
                if ev & (EPOLLIN | EPOLLERR) and self.recv_into(c) < 0:
                    live.discard(fd)
                    self.drop(c)
                elif self.raw and c.got_close:
                    # The raw server echoed our close frame: half-close so that it closes.
                    c.got_close = False
                    with contextlib.suppress(OSError):
                        c.sock.shutdown(socket.SHUT_WR)
        for c in conns:
            self.drop(c)


# Scenarios ---------------------------------------------------------------------------------


def server_cpu(pid: int | None) -> float | None:
    """CPU seconds the server process has used so far: the run time of its threads from
    ``/proc/PID/task/*/schedstat`` (nanoseconds), else user + system time from
    ``/proc/PID/stat`` (clock ticks, 10 ms: too coarse for a single broadcast)."""
    if pid is None:
        return None
    try:
        total = 0
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        return total / 1e9
    except (OSError, ValueError, IndexError):
        pass
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def per_unit_us(start: float | None, end: float | None, units: int) -> float | None:
    """Server CPU microseconds per unit of work: steady under CPU contention, unlike rates."""
    if start is None or end is None or units <= 0:
        return None
    return (end - start) * 1e6 / units


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def percentile(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


def run_echo(args: argparse.Namespace) -> dict[str, Any]:
    """Each connection: send one message, wait for its echo, repeat, for ``duration``."""
    size = args.size
    # The raw ceiling echoes the masked frame as sent: its payload length is the same.
    gen = Generator(args.port, raw=args.raw, expect=size)
    frame = client_frame(0x2, os.urandom(size))
    conns = gen.open_many(args.conns, args.conns)
    if len(conns) < args.conns:
        return {"error": f"opened {len(conns)} of {args.conns} connections", **summary(gen)}
    ep_poll = gen.ep.poll
    by_fd = gen.conns
    feed_recv = gen.recv_into
    send = gen.send
    flush = gen.flush
    latencies: list[float] = []
    record = latencies.append
    t_start = perf()
    warm_end = t_start + args.warmup
    measure_end = warm_end + args.duration
    drain_end = measure_end + max(2.0, args.duration)
    completed = 0
    sending = True
    in_flight = 0
    cpu0 = cpu_seconds()
    for c in conns:
        c.t_sent = perf()
        send(c, frame)
        in_flight += 1
    seen: dict[int, int] = {c.fd: 0 for c in conns}
    srv_start = srv_end = None
    window_start_count = 0
    last_progress = perf()
    while True:
        now = perf()
        if srv_start is None and now >= warm_end:
            srv_start = server_cpu(args.server_pid)
            window_start_count = completed
        if sending and now >= measure_end:
            sending = False
            srv_end = server_cpu(args.server_pid)
        if not sending and (in_flight == 0 or now >= drain_end):
            break
        if now - last_progress > args.stall:
            gen.error("stalled")
            break
        events = ep_poll(0.05)
        for fd, ev in events:
            c = by_fd.get(fd)
            if c is None:
                continue
            if ev & EPOLLOUT:
                flush(c)
            if not ev & (EPOLLIN | EPOLLERR):
                continue
            if feed_recv(c) < 0:
                gen.fail(c, "connection lost")
                in_flight -= 1
                continue
            if c.count != seen[fd]:
                seen[fd] = c.count
                now = perf()
                last_progress = now
                in_flight -= 1
                if warm_end <= now <= measure_end:
                    completed += 1
                    record(now - c.t_sent)
                if sending:
                    c.t_sent = now
                    send(c, frame)
                    in_flight += 1
            elif c.other:
                gen.error("unexpected message")
                c.other = 0
    cpu = cpu_seconds() - cpu0
    wall = perf() - t_start
    gen.close_all([c for c in conns if c.state == OPEN])
    latencies.sort()
    result = {
        "messages": completed,
        "seconds": args.duration,
        "msg_per_s": completed / args.duration,
        "mb_per_s": completed * size / args.duration / 1e6,
        "p50_ms": _ms(percentile(latencies, 0.50)),
        "p99_ms": _ms(percentile(latencies, 0.99)),
        "lost_in_flight": in_flight,
        "server_us_per_msg": per_unit_us(srv_start, srv_end, completed - window_start_count),
        "gen_cpu_util": cpu / wall if wall else None,
        **summary(gen),
    }
    if completed == 0:
        result["error"] = "no message echoed"
    return result


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


#: Words of the chat-like text messages (``broadcast --text``).
_VOCABULARY = (
    "the a to and of in is it you that for on with this be are have not we was at but can "
    "they just so what about all will one there like if your my do from out up an or get "
    "room chat message hello thanks today tomorrow meeting deploy server client broadcast "
    "trio socket python latency release review merge branch test green build queue"
)
WORDS = _VOCABULARY.split()


def chat_message(n: int, size: int) -> bytes:
    """A JSON chat message of exactly ``size`` bytes (ASCII), different for every ``n``: text
    of random words, which deflate compresses as it does real chat, not as a repeated one."""
    rng = random.Random(n)
    head = f'{{"type":"message","room":"lobby","user":"user{rng.randrange(10000)}","seq":{n},'
    head += f'"ts":{1_700_000_000 + n * 7},"text":"'
    text: list[str] = []
    length = len(head) + 2
    while length < size:
        word = rng.choice(WORDS)
        text.append(word)
        length += len(word) + 1
    message = (head + " ".join(text))[: size - 2] + '"}'
    return message.encode("ascii").ljust(size, b" ")[:size]


def run_broadcast(args: argparse.Namespace) -> dict[str, Any]:
    """``conns`` clients; client 0 sends ``messages`` messages at once; count deliveries.

    ``--senders K``: the first K clients send the messages, ``messages / K`` each, all at once
    (a busy room: many members talking at the same time), every client counting them all.

    ``--text``: chat-like JSON text messages instead of random bytes (which do not compress).
    ``--deflate``: offer permessage-deflate as browsers do; compressed messages (RSV1) are
    counted whatever their length, and the bytes on the wire per delivery are reported.
    ``--warmup-rounds N``: first N broadcasts of ``messages`` each, every one waited for, then
    the measured one (steady state: compressors made, context taken over)."""
    size = args.size
    gen = Generator(args.port, raw=args.raw, expect=size, deflate=args.deflate)
    conns = gen.open_many(args.conns, min(args.conns, 200))
    if len(conns) < args.conns:
        gen.close_all(conns, timeout=1.0)
        return {"error": f"opened {len(conns)} of {args.conns} connections", **summary(gen)}
    by_fd = gen.conns
    ep_poll = gen.ep.poll
    feed_recv = gen.recv_into
    sender = conns[0]
    # Sync: a server registers a client for broadcast only after its handshake answer went
    # out. Send 1-byte probes until every client got one; only then is everyone a member.
    probe = client_frame(0x2, b"p")
    deadline = perf() + args.timeout
    synced = False
    while not synced and perf() < deadline:
        gen.send(sender, probe)
        round_end = min(deadline, perf() + 0.5)
        while perf() < round_end:
            for fd, ev in ep_poll(0.02):
                c = by_fd.get(fd)
                if c is None:
                    continue
                if ev & EPOLLOUT:
                    gen.flush(c)
                if ev & (EPOLLIN | EPOLLERR) and feed_recv(c) < 0:
                    gen.fail(c, "connection lost")
            if all(c.probe for c in conns):
                synced = True
                break
    if not synced:
        missing = sum(not c.probe for c in conns)
        gen.close_all(conns, timeout=1.0)
        return {"error": f"{missing} clients never got a probe", **summary(gen)}
    # Let late probes arrive, then count from zero.
    quiet_end = perf() + 0.2
    while perf() < quiet_end:
        for fd, ev in ep_poll(0.02):
            c = by_fd.get(fd)
            if c is not None and ev & (EPOLLIN | EPOLLERR) and feed_recv(c) < 0:
                gen.fail(c, "connection lost")
    target: int = args.messages

    senders = conns[: max(1, args.senders)]

    def burst(round_: int) -> list[bytes]:
        """Each sender's share of the round's ``target`` messages."""
        size: int = args.size
        if args.text:
            first = round_ * target
            numbers = range(first, first + target)
            frames = [client_frame(0x1, chat_message(n, size)) for n in numbers]
        else:
            frames = [client_frame(0x2, os.urandom(size))] * target
        return [b"".join(frames[i :: len(senders)]) for i in range(len(senders))]

    def deliver(frames: list[bytes], deadline: float) -> tuple[int, float, set[int]]:
        """Send ``frames`` from the senders; wait until every client counted ``target``."""
        for member in conns:
            member.count = member.other = member.compressed = 0
        gen.wire_bytes = 0
        remaining = {c.fd for c in conns if c.state == OPEN}
        delivered = 0
        t_last = perf()
        for member, share in zip(senders, frames, strict=True):
            gen.send(member, share)
        while remaining and perf() < deadline:
            for fd, ev in ep_poll(0.05):
                c = by_fd.get(fd)
                if c is None:
                    continue
                if ev & EPOLLOUT:
                    gen.flush(c)
                if not ev & (EPOLLIN | EPOLLERR):
                    continue
                before = c.count
                if feed_recv(c) < 0:
                    gen.fail(c, "connection lost")
                    remaining.discard(fd)
                if c.count != before:
                    delivered += c.count - before
                    t_last = perf()
                    if c.count >= target:
                        remaining.discard(fd)
        return delivered, t_last, remaining

    # Warm-up rounds: the members have received broadcasts before (compressors exist and,
    # with context takeover, hold earlier messages), as in a room that has been running.
    for round_ in range(args.warmup_rounds):
        _, _, left = deliver(burst(round_), perf() + args.timeout)
        if left:
            gen.close_all(conns, timeout=1.0)
            return {"error": f"{len(left)} clients missed a warm-up round", **summary(gen)}
    expected = target * len(conns)
    frames = burst(args.warmup_rounds)
    cpu0 = cpu_seconds()
    srv_start = server_cpu(args.server_pid)
    t0 = perf()
    delivered, t_last, remaining = deliver(frames, t0 + args.timeout)
    cpu = cpu_seconds() - cpu0
    srv_end = server_cpu(args.server_pid)
    elapsed = t_last - t0
    wall = perf() - t0
    gen.close_all([c for c in conns if c.state == OPEN], timeout=2.0)
    result = {
        "clients": len(conns),
        "messages": target,
        "warmup_rounds": args.warmup_rounds,
        "delivered": delivered,
        "missing": expected - delivered,
        "fanout_ms": elapsed * 1000.0,
        "deliveries_per_s": delivered / elapsed if elapsed > 0 else None,
        "server_us_per_delivery": per_unit_us(srv_start, srv_end, delivered),
        "timed_out": bool(remaining),
        "gen_cpu_util": cpu / wall if wall else None,
        "compressed": sum(c.compressed for c in conns),
        "wire_bytes_per_delivery": (
            gen.wire_bytes / delivered if delivered and args.deflate else None
        ),
        "extensions": sum(c.extensions is not None for c in conns),
        "extension_values": sorted(
            {c.extensions.decode("latin-1") for c in conns if c.extensions is not None}
        )[:4],
        **summary(gen),
    }
    if delivered == 0:
        result["error"] = "nothing delivered"
    return result


def run_connrate(args: argparse.Namespace) -> dict[str, Any]:
    """Open, handshake and close ``count`` connections, ``concurrency`` at a time."""
    gen = Generator(args.port, raw=args.raw, expect=-1)
    by_fd = gen.conns
    ep_poll = gen.ep.poll
    total = args.count
    started = done = 0
    cpu0 = cpu_seconds()
    srv_start = server_cpu(args.server_pid)
    t0 = perf()
    deadline = t0 + args.timeout
    next_sweep = t0 + 0.5
    half_closed: set[int] = set()
    no_close_frame = 0
    # Every connection in ``by_fd`` is in flight: a failure anywhere drops it from there.
    while (started < total or by_fd) and perf() < deadline:
        while len(by_fd) < args.concurrency and started < total:
            started += 1
            gen.start_connect()
        for fd, ev in ep_poll(0.05):
            c = by_fd.get(fd)
            if c is None:
                continue
            if c.state in (CONNECTING, HANDSHAKING):
                if not gen.on_connect_event(c, ev):
                    continue
                c.state = CLOSING
                gen.send(c, CLOSE_FRAME)
                continue
            if ev & EPOLLOUT:
                gen.flush(c)
            if ev & (EPOLLIN | EPOLLERR):
                if gen.recv_into(c) < 0:
                    half_closed.discard(fd)
                    # The TCP connection is over: the cycle completed. A server that closed
                    # it without answering our close frame is counted apart.
                    done += 1
                    if not c.got_close:
                        no_close_frame += 1
                    gen.drop(c)
                    continue
                if gen.raw and c.got_close and fd not in half_closed:
                    # The raw server echoed our close frame: half-close so that it closes.
                    half_closed.add(fd)
                    try:
                        c.sock.shutdown(socket.SHUT_WR)
                    except OSError:
                        gen.fail(c, "shutdown failed")
        now = perf()
        if now >= next_sweep:
            next_sweep = now + 0.5
            for c in list(by_fd.values()):
                if now - c.started > args.conn_timeout:
                    gen.fail(c, "connection timeout")
    elapsed = perf() - t0
    srv_end = server_cpu(args.server_pid)
    cpu = cpu_seconds() - cpu0
    for c in list(by_fd.values()):
        gen.fail(c, "unfinished at deadline")
    result = {
        "count": total,
        "completed": done,
        "seconds": elapsed,
        "conn_per_s": done / elapsed if elapsed > 0 else None,
        "server_us_per_conn": per_unit_us(srv_start, srv_end, done),
        "no_close_frame": no_close_frame,
        "gen_cpu_util": cpu / elapsed if elapsed else None,
        **summary(gen),
    }
    if done == 0:
        result["error"] = "no connection completed"
    return result


def run_idle(args: argparse.Namespace) -> dict[str, Any]:
    """Hold idle connections for a memory measurement, in two steps driven over stdin.

    Opens ``--warm`` connections (the server's first connections load code and caches that
    are not per-connection) and prints ``{"phase": "warm"}``; on a line from stdin, opens
    ``--conns`` more and prints ``{"phase": "ready"}``; on the next line (or at the timeout),
    drops them all and prints the result. The server's pings are answered (a server with
    keepalive on would drop a silent client). ``--deflate`` offers permessage-deflate in the
    handshake; ``extensions`` counts the ``--conns`` connections whose 101 response carried
    Sec-WebSocket-Extensions (``extension_values``: the distinct values), ``pings`` the pings
    received on all connections.
    """
    gen = Generator(args.port, raw=args.raw, expect=-1, deflate=args.deflate, pong=True)
    deadline = perf() + args.timeout
    held: list[Conn] = []
    lost = 0

    def hold_until_told() -> None:
        # Answer nothing, but notice connections that the server drops.
        nonlocal lost
        while perf() < deadline:
            readable, _, _ = select.select([sys.stdin], [], [], 0.0)
            if readable:
                sys.stdin.readline()
                return
            for fd, ev in gen.ep.poll(0.05):
                c = gen.conns.get(fd)
                if c is not None and ev & (EPOLLIN | EPOLLERR) and gen.recv_into(c) < 0:
                    lost += 1
                    gen.drop(c)

    held += gen.open_many(args.warm, args.concurrency, timeout=args.timeout)
    print(json.dumps({"phase": "warm", "opened": len(held)}), flush=True)
    hold_until_told()
    t0 = perf()
    conns = gen.open_many(args.conns, args.concurrency, timeout=max(1.0, deadline - perf()))
    held += conns
    opened = len(conns)
    values = sorted({c.extensions for c in conns if c.extensions is not None})
    negotiated = {
        "extensions": sum(c.extensions is not None for c in conns),
        "extension_values": [v.decode("latin-1") for v in values[:4]],
    }
    ready = {
        "phase": "ready",
        "opened": opened,
        "open_s": perf() - t0,
        "lost": lost,
        **negotiated,
    }
    print(json.dumps(ready), flush=True)
    hold_until_told()
    for c in held:
        gen.drop(c)  # abrupt: the server is stopped next anyway
    result = {"opened": opened, "lost": lost, "pings": gen.pings, **negotiated, **summary(gen)}
    if opened < args.conns:
        result["error"] = f"opened {opened} of {args.conns} connections"
    return result


def summary(gen: Generator) -> dict[str, Any]:
    return {"errors": dict(gen.errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="scenario", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--port", type=int, required=True)
    common.add_argument("--raw", action="store_true", help="the server echoes masked frames")
    common.add_argument("--cpu", type=int, default=None, help="pin to this CPU")
    common.add_argument(
        "--server-pid", type=int, default=None, help="report the server's CPU time per unit"
    )

    echo = sub.add_parser("echo", parents=[common])
    echo.add_argument("--conns", type=int, default=1)
    echo.add_argument("--size", type=int, default=32)
    echo.add_argument("--duration", type=float, default=2.0)
    echo.add_argument("--warmup", type=float, default=0.2)
    echo.add_argument("--stall", type=float, default=10.0, help="give up after no progress")
    bc = sub.add_parser("broadcast", parents=[common])
    bc.add_argument("--conns", type=int, default=1000)
    bc.add_argument("--messages", type=int, default=200)
    bc.add_argument("--size", type=int, default=64)
    bc.add_argument("--timeout", type=float, default=20.0)
    bc.add_argument("--senders", type=int, default=1, help="clients sending the messages")
    bc.add_argument(
        "--warmup-rounds", type=int, default=0, help="broadcasts delivered before measuring"
    )
    bc.add_argument("--text", action="store_true", help="chat-like JSON text, not random bytes")
    bc.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate as browsers do"
    )
    cr = sub.add_parser("connrate", parents=[common])
    cr.add_argument("--count", type=int, default=2000)
    cr.add_argument("--concurrency", type=int, default=50)
    cr.add_argument("--timeout", type=float, default=60.0)
    cr.add_argument("--conn-timeout", type=float, default=5.0)
    idle = sub.add_parser("idle", parents=[common])
    idle.add_argument("--conns", type=int, default=2000)
    idle.add_argument("--warm", type=int, default=10)
    idle.add_argument("--concurrency", type=int, default=100)
    idle.add_argument("--timeout", type=float, default=60.0)
    idle.add_argument(
        "--deflate", action="store_true", help="offer permessage-deflate as browsers do"
    )
    args = parser.parse_args()
    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    runners: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
        "echo": run_echo,
        "broadcast": run_broadcast,
        "connrate": run_connrate,
        "idle": run_idle,
    }
    try:
        result = runners[args.scenario](args)
    except Exception as exc:  # reported, not raised: the harness records "error"
        result = {"error": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
