"""Resume after a reconnect storm: N clients come back at once and catch up on what they missed.

    python benchmarks/resume.py [--clients 1000] [--messages 100] [--size 64] [--passes 3]
                                [--workers 2] [--redis redis://HOST:PORT] [--json PATH]
                                [--rows memory,redis,workers]

The server is the chat example, ``examples/broadcast_server.py`` (what users run): its room
keeps a history (1000 messages, 5 minutes) and members receive ``{"offset","epoch","data"}``
envelopes; ``/ws?epoch=E&offset=N`` resumes, and the server then sends
``{"position": ..., "missing": false}``. Rows, measured in the same run (passes interleaved, best
pass kept):

- ``memory``: one process, ``MemoryHistory``;
- ``redis``: one process with ``--redis URL`` (``RedisHistory``: the replay is read from Redis);
- ``workers``: ``--workers N --redis URL``; every client reconnects through whichever worker the
  kernel gives it (SO_REUSEPORT): with 2, about half of them through another one than before.

Each cell starts a fresh server (and empties Redis). One extra client, the sender, joins and
sends a first message; ``--clients`` clients join and keep the position they are given. Then, twice
(the order alternates from pass to pass):

1. every client closes (close frames both ways, TCP closed);
2. the sender sends ``--messages`` text messages of ``--size`` bytes and waits for them all to
   come back (they are in the history);
3. the storm: every client connects again at once, either ``plain`` (``/ws``: nothing to
   replay; it expects only its position message) or ``resume`` (``/ws?epoch=&offset=`` of its
   last position: it expects exactly the missed messages, byte for byte as the sender got them,
   in order, then its position message with ``"missing": false`` and the last offset).

The figure is the time from the first connect of the storm until the last client has all of
it, with the server's CPU over the same time (every server process, from /proc) and, for
Redis rows where Redis was started here, Redis's. Messages missing, delivered twice or out of
order, ``"missing": true`` answers and failed clients are counted over every pass, not only the
best. The clients are one ``select.epoll`` loop in this process over raw sockets (as in
``loadgen.py``): no permessage-deflate offered, so the example's compression is not used; the
clients have no name, so no "online" lists are sent. Nothing is pinned to a CPU; everything
runs on 127.0.0.1. A redis-server is started on a free loopback port unless ``--redis`` names
one (emptied with FLUSHALL before each cell: use a scratch one).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import random
import re
import resource
import select
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from backplane import start_redis
from loadgen import ACCEPT, CLOSE_FRAME, KEY, WORDS, client_frame, server_cpu

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXAMPLE = ROOT / "examples" / "broadcast_server.py"
HOST = "127.0.0.1"
READ_SIZE = 256 * 1024

EPOLLIN = select.EPOLLIN
EPOLLOUT = select.EPOLLOUT
EPOLLERR = select.EPOLLERR | select.EPOLLHUP

# Connection states.
CONNECTING, HANDSHAKING, OPEN, CLOSING, CLOSED = range(5)
TEXT, PING = 0x1, 0x9

perf = time.perf_counter


# Servers -------------------------------------------------------------------------------------


def redis_command(url: str, *words: str) -> bytes:
    """Send one command to Redis, return its (first) reply line."""
    parsed = urllib.parse.urlsplit(url)
    command = f"*{len(words)}\r\n".encode()
    for word in words:
        command += f"${len(word.encode())}\r\n{word}\r\n".encode()
    with socket.create_connection((parsed.hostname, parsed.port or 6379), timeout=5) as sock:
        sock.sendall(command)
        return sock.recv(4096).split(b"\r\n")[0]


def children(pid: int) -> list[int]:
    """``pid`` and every process below it (the workers of ``--workers``)."""
    parents: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as stat:
                ppid = int(stat.read().rpartition(")")[2].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo += parents.get(current, [])
    return found


def cpu_of(pids: list[int]) -> float:
    return sum(server_cpu(pid) or 0.0 for pid in pids)


class Server:
    """``python examples/broadcast_server.py --port 0 ...``, stopped with SIGTERM."""

    def __init__(self, extra: list[str], timeout: float = 30.0) -> None:
        # Its log lines (stderr), shown if it fails; closed by stop().
        self.log = tempfile.TemporaryFile()  # noqa: SIM115
        cmd = [sys.executable, str(EXAMPLE), "--host", HOST, "--port", "0", *extra]
        # Unbuffered: select() sees every line that is not read yet.
        self.proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            bufsize=0,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        match, line = None, ""
        while match is None and time.monotonic() < deadline:  # "chat on http://HOST:PORT/"
            ready, _, _ = select.select([self.proc.stdout], [], [], deadline - time.monotonic())
            line = self.proc.stdout.readline().decode() if ready else ""
            if not line:
                break  # it exited, or the time is up
            match = re.search(r"chat on http://[^:]+:(\d+)/", line)
        if match is None:
            tail = self.tail()
            self.stop()
            raise RuntimeError(f"server did not start: {line!r} {tail}")
        self.port = int(match.group(1))
        # Anything it prints later (a supervisor relays its workers' lines) must not block it.
        threading.Thread(target=self.proc.stdout.read, daemon=True).start()
        self.pids = children(self.proc.pid)

    def cpu(self) -> float:
        return cpu_of(self.pids)

    def tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-800:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# Clients -------------------------------------------------------------------------------------


def text_message(n: int, size: int) -> str:
    """The n-th chat line: ``size`` ASCII characters (nothing JSON escapes), unique per n."""
    rng = random.Random(n)
    words = [f"{n:08d}"]
    while sum(len(w) + 1 for w in words) < size:
        words.append(rng.choice(WORDS))
    return " ".join(words)[:size].ljust(size, ".")


class Peer:
    """One client connection (a new socket for each connection of the same client)."""

    __slots__ = (
        "done",
        "duplicate",
        "epoch",
        "error",
        "expected",
        "fd",
        "frag",
        "frag_op",
        "got",
        "head",
        "last",
        "not_recovered",
        "offset",
        "other",
        "out_of_order",
        "rbuf",
        "record",
        "since",
        "sock",
        "state",
        "t_done",
        "wbuf",
    )

    def __init__(self) -> None:
        self.state = CLOSED
        self.epoch = ""  # the position it was last given
        self.offset = 0
        self.record: dict[int, bytes] | None = None  # the sender: every envelope it gets
        self.reset([], 0)

    def reset(self, expected: list[bytes], since: int) -> None:
        self.head = b""
        self.rbuf = bytearray()
        self.frag = bytearray()
        self.frag_op = 0
        self.wbuf: memoryview | None = None
        self.expected = expected  # the envelopes it must get, in order, before its position
        self.since = since  # the offset of the message before expected[0]
        self.got = 0  # how many of expected it got, in order
        self.last = since  # the last offset it got
        self.done = False  # got its position message
        self.t_done = 0.0
        self.duplicate = self.out_of_order = self.other = self.not_recovered = 0
        self.error: str | None = None


class Swarm:
    """The clients: one epoll loop over non-blocking sockets, frames parsed in full."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.ep = select.epoll()
        self.by_fd: dict[int, Peer] = {}
        self.scratch = bytearray(READ_SIZE)
        self.view = memoryview(self.scratch)
        self.waiting = 0  # peers of the current phase neither done nor failed

    # Sockets ----------------------------------------------------------------------------------

    def connect(self, p: Peer, target: str, expected: list[bytes], since: int) -> None:
        p.reset(expected, since)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        p.sock, p.fd, p.state = sock, sock.fileno(), CONNECTING
        self.by_fd[p.fd] = p
        self.waiting += 1
        err = sock.connect_ex((HOST, self.port))
        if err not in (0, errno.EINPROGRESS):
            self.fail(p, f"connect: {os.strerror(err)}")
            return
        self.ep.register(p.fd, EPOLLOUT)
        p.head = (
            f"GET {target} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {KEY.decode()}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    def send(self, p: Peer, data: bytes) -> None:
        if p.wbuf is not None:
            p.wbuf = memoryview(bytes(p.wbuf) + data)
            return
        try:
            sent = p.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.fail(p, "send failed")
            return
        if sent < len(data):
            p.wbuf = memoryview(data)[sent:]
            self.ep.modify(p.fd, EPOLLIN | EPOLLOUT)

    def flush(self, p: Peer) -> None:
        if p.wbuf is None:
            return
        try:
            sent = p.sock.send(p.wbuf)
        except BlockingIOError:
            return
        except OSError:
            self.fail(p, "send failed")
            return
        p.wbuf = p.wbuf[sent:] if sent < len(p.wbuf) else None
        if p.wbuf is None:
            self.ep.modify(p.fd, EPOLLIN)

    def fail(self, p: Peer, why: str) -> None:
        if p.error is None and not p.done and p.state != CLOSING:
            p.error = why
            self.waiting -= 1
        self.drop(p)

    def drop(self, p: Peer) -> None:
        if p.state == CLOSED:
            return
        p.state = CLOSED
        self.by_fd.pop(p.fd, None)
        with contextlib.suppress(OSError, ValueError):
            self.ep.unregister(p.fd)
        p.sock.close()

    def close_all(self, peers: list[Peer], timeout: float) -> int:
        """Closing handshake on every open peer; return how many did not finish it in time."""
        for p in peers:
            if p.state == OPEN:
                p.state = CLOSING
                self.send(p, CLOSE_FRAME)
        deadline = perf() + timeout
        while any(p.state == CLOSING for p in peers) and perf() < deadline:
            self.poll(0.05)
        unfinished = sum(p.state == CLOSING for p in peers)
        for p in peers:
            self.drop(p)
        return unfinished

    # Events -----------------------------------------------------------------------------------

    def poll(self, timeout: float) -> None:
        for fd, ev in self.ep.poll(timeout):
            p = self.by_fd.get(fd)
            if p is None:
                continue
            if p.state == CONNECTING:
                err = p.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    self.fail(p, f"connect: {os.strerror(err)}")
                elif ev & EPOLLOUT:
                    p.state = HANDSHAKING
                    self.ep.modify(p.fd, EPOLLIN)
                    self.send(p, p.head)
                    p.head = b""
                continue
            if ev & EPOLLOUT:
                self.flush(p)
            if ev & (EPOLLIN | EPOLLERR) and p.state != CLOSED:
                self.receive(p)

    def receive(self, p: Peer) -> None:
        try:
            n = p.sock.recv_into(self.scratch)
        except BlockingIOError:
            return
        except OSError:
            n = 0
        if n == 0:  # EOF: expected only once closing
            if p.state == CLOSING:
                self.drop(p)
            else:
                self.fail(p, "closed by the server" if p.state == OPEN else "handshake: EOF")
            return
        data = self.view[:n]
        if p.state == HANDSHAKING:
            p.head += data
            end = p.head.find(b"\r\n\r\n")
            if end < 0:
                if len(p.head) > 65536:
                    self.fail(p, "handshake: head too large")
                return
            head, rest = p.head[:end], p.head[end + 4 :]
            p.head = b""
            if not head.startswith(b"HTTP/1.1 101") or ACCEPT not in head:
                self.fail(p, f"handshake refused: {head[:40]!r}")
                return
            p.state = OPEN
            if rest:
                self.feed(p, rest)
            return
        self.feed(p, data)

    def feed(self, p: Peer, data: bytes | memoryview) -> None:
        """Parse the server's frames (unmasked, never above 64 KiB here)."""
        buf = p.rbuf
        buf += data
        n = len(buf)
        pos = 0
        while n - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            length, hl = b1 & 0x7F, 2
            if length == 126:
                if n - pos < 4:
                    break
                length, hl = (buf[pos + 2] << 8) | buf[pos + 3], 4
            elif length == 127:
                if n - pos < 10:
                    break
                length, hl = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            end = pos + hl + length
            if end > n:
                break
            payload = bytes(buf[pos + hl : end])
            pos = end
            op = b0 & 0x0F
            if op >= 8:
                if op == PING:
                    self.send(p, client_frame(0xA, payload))
                # A close frame: the EOF that follows fails the peer if it was not done.
            elif not b0 & 0x80:  # a fragment
                if op:
                    p.frag_op = op
                p.frag += payload
            elif op == 0:
                self.message(p, p.frag_op, bytes(p.frag + payload))
                p.frag = bytearray()
            else:
                self.message(p, op, payload)
        del buf[:pos]

    def message(self, p: Peer, op: int, payload: bytes) -> None:
        expected = p.expected
        if p.got < len(expected) and payload == expected[p.got]:
            p.got += 1
            p.last += 1
            return
        if p.done and p.record is None:
            p.other += 1  # nothing else is broadcast: counted, but the peer is done
            return
        if op != TEXT:
            p.other += 1
            return
        try:
            info = json.loads(payload)
        except ValueError:
            p.other += 1
            return
        if not isinstance(info, dict):
            p.other += 1
        elif "position" in info:
            p.done = True
            p.t_done = perf()
            self.waiting -= 1
            p.epoch, p.offset = info["position"]["epoch"], info["position"]["offset"]
            p.not_recovered += bool(info.get("missing"))
        elif "offset" in info:
            offset = info["offset"]
            if p.record is not None:  # the sender keeps every envelope, by offset
                p.record[offset] = payload
                p.epoch = info["epoch"]
            elif offset <= p.last:
                p.duplicate += 1
            else:
                p.out_of_order += 1  # not the next one expected: some before it are missing
                p.last = offset
        else:
            p.other += 1  # e.g. an "online" list (clients have no name: none expected)

    def run(self, deadline: float) -> bool:
        """Poll until every peer of the phase is done or failed; False at the deadline."""
        while self.waiting > 0:
            if perf() >= deadline:
                return False
            self.poll(0.05)
        return True


# One cell ------------------------------------------------------------------------------------


class CellError(Exception):
    pass


def join(swarm: Swarm, peers: list[Peer], target: str, deadline: float) -> None:
    """Connect ``peers`` without a resume point; each keeps the position it is given."""
    for p in peers:
        swarm.connect(p, target, [], 0)
    if not swarm.run(deadline):
        raise CellError(f"{swarm.waiting} of {len(peers)} clients not joined in time")
    failed = [p.error for p in peers if p.error]
    if failed:
        raise CellError(f"{len(failed)} clients failed to join: {failed[0]}")


def send_batch(swarm: Swarm, sender: Peer, texts: list[str], deadline: float) -> int:
    """The sender sends ``texts`` and waits until it got each back; return the last offset."""
    assert sender.record is not None
    top = max(sender.record, default=sender.offset)
    swarm.send(sender, b"".join(client_frame(TEXT, t.encode()) for t in texts))
    want = top + len(texts)
    while max(sender.record, default=0) < want:
        if perf() >= deadline or sender.state != OPEN:
            raise CellError(
                f"the sender got {max(sender.record, default=0) - top} of its "
                f"{len(texts)} messages back ({sender.error or 'timeout'})"
            )
        swarm.poll(0.05)
    return want


def storm(
    swarm: Swarm,
    peers: list[Peer],
    record: dict[int, bytes],
    final: int,
    resume: bool,
    server: Server,
    redis_pids: list[int],
    args: argparse.Namespace,
) -> dict[str, Any]:
    """Every peer connects again at once; measure until the last one has everything."""
    slices: dict[int, list[bytes]] = {}
    plans = []
    for p in peers:
        if not resume:
            plans.append((p, "/ws", [], final))
            continue
        if p.offset not in slices:
            slices[p.offset] = [record.get(o, b"") for o in range(p.offset + 1, final + 1)]
        query = urllib.parse.urlencode({"epoch": p.epoch, "offset": p.offset})
        plans.append((p, f"/ws?{query}", slices[p.offset], p.offset))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    gen0 = usage.ru_utime + usage.ru_stime
    srv0, redis0 = server.cpu(), cpu_of(redis_pids)
    t0 = perf()
    started = 0
    deadline = t0 + args.timeout
    # At once: every connect is started before the first event is handled (by default).
    while True:
        while started < len(plans) and swarm.waiting < args.concurrency:
            swarm.connect(*plans[started])
            started += 1
        if started == len(plans) and swarm.waiting == 0:
            break
        if perf() >= deadline:
            break
        swarm.poll(0.05)
    srv1, redis1, t1 = server.cpu(), cpu_of(redis_pids), perf()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    gen = usage.ru_utime + usage.ru_stime - gen0
    done = [p for p in peers if p.done]
    times = sorted(p.t_done - t0 for p in done)
    errors: dict[str, int] = {}
    for p in peers:
        if p.error:
            errors[p.error] = errors.get(p.error, 0) + 1
        elif not p.done:
            why = "no position message in time"
            errors[why] = errors.get(why, 0) + 1
    expected = sum(len(p.expected) for p in peers)
    result = {
        "clients": len(peers),
        "done": len(done),
        "storm_ms": times[-1] * 1000 if len(done) == len(peers) else None,
        "median_client_ms": statistics.median(times) * 1000 if times else None,
        "server_cpu_ms": (srv1 - srv0) * 1000,
        "redis_cpu_ms": (redis1 - redis0) * 1000 if redis_pids else None,
        "gen_cpu_util": gen / (t1 - t0),
        "expected": expected,
        "replayed": sum(p.got for p in peers),
        "missing": expected - sum(p.got for p in peers),
        "duplicate": sum(p.duplicate for p in peers),
        "out_of_order": sum(p.out_of_order for p in peers),
        "not_recovered": sum(p.not_recovered for p in peers),
        "wrong_position": sum(p.done and p.offset != final for p in peers),
        "other": sum(p.other for p in peers),
        "errors": errors,
    }
    if result["storm_ms"] is None:
        result["error"] = f"{len(peers) - len(done)} clients unfinished: {errors}"
    return result


def run_cell(
    extra: list[str], args: argparse.Namespace, pass_no: int, redis_pids: list[int]
) -> dict[str, Any]:
    if "--redis" in extra:
        redis_command(args.redis, "FLUSHALL")  # a fresh room: the example's is always "chat"
    server = Server(extra)
    swarm = Swarm(server.port)
    sender = Peer()
    sender.record = {}
    peers = [Peer() for _ in range(args.clients)]
    result: dict[str, Any] = {}
    try:
        deadline = perf() + args.timeout
        join(swarm, [sender], "/ws", deadline)
        # A first message: with Redis, the room's epoch exists from then on.
        final = send_batch(swarm, sender, [text_message(0, args.size)], deadline)
        join(swarm, peers, "/ws", perf() + args.timeout)
        behind = sum(p.offset != final or p.epoch != sender.epoch for p in peers)
        if behind:
            print(f"  {behind} clients joined behind the sender's position", file=sys.stderr)
        order = ["plain", "resume"] if pass_no % 2 == 0 else ["resume", "plain"]
        for k, kind in enumerate(order):
            unclosed = swarm.close_all(peers, timeout=10.0)
            if unclosed:
                raise CellError(f"{unclosed} clients not closed in time")
            first = 1 + k * args.messages
            texts = [text_message(n, args.size) for n in range(first, first + args.messages)]
            final = send_batch(swarm, sender, texts, perf() + args.timeout)
            assert sender.record is not None
            result[kind] = storm(
                swarm, peers, sender.record, final, kind == "resume", server, redis_pids, args
            )
            if "error" in result[kind]:
                raise CellError(f"{kind} storm: {result[kind]['error']}")
        result["order"] = order
    except (CellError, OSError) as exc:
        result["error"] = f"{exc}"
        tail = server.tail().strip()
        print(f"  failed: {exc}" + (f"\n  server log: {tail}" if tail else ""), file=sys.stderr)
    finally:
        swarm.close_all([*peers, sender], timeout=5.0)
        swarm.ep.close()
        server.stop()
    return result


# Report --------------------------------------------------------------------------------------


def fmt(value: float | None, suffix: str = "") -> str:
    return "-" if value is None else f"{value:,.0f}{suffix}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=100, help="missed while away")
    parser.add_argument("--size", type=int, default=64, help="bytes of each message (text)")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--concurrency", type=int, default=0, help="connects in flight (default: all at once)"
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per phase")
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one")
    parser.add_argument("--json", type=Path, help="write every pass's results here")
    parser.add_argument(
        "--rows",
        default="memory,redis,workers",
        help="rows to run, of memory, redis, workers (default: all three)",
    )
    args = parser.parse_args()
    if args.size < 9:
        parser.error("--size must be at least 9 (each message is numbered)")
    args.concurrency = args.concurrency or args.clients
    # The clients' sockets here and the server's (it inherits the limit).
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 2 * args.clients + 200
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, want), hard))

    redis_proc = None
    with tempfile.TemporaryDirectory() as tmp:
        keys = args.rows.split(",")
        if args.redis is None and {"redis", "workers"} & set(keys):
            redis_proc, args.redis = start_redis(tmp)
        redis_pids = [] if redis_proc is None else [redis_proc.pid]
        redis = ["--redis", str(args.redis)]
        all_rows = {
            "memory": ("1 process, memory history", []),
            "redis": ("1 process, Redis history", redis),
            "workers": (
                f"{args.workers} workers, Redis history",
                ["--workers", str(args.workers), *redis],
            ),
        }
        rows = {all_rows[key][0]: all_rows[key] for key in keys}
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
        started = time.monotonic()
        load_before = os.getloadavg()[0]
        try:
            for n in range(args.passes):
                order = list(rows)
                order = order[n % len(order) :] + order[: n % len(order)]
                for name in order:
                    print(f"pass {n + 1}/{args.passes}: {name}", file=sys.stderr, flush=True)
                    pids = redis_pids if "--redis" in rows[name][1] else []
                    try:
                        cell = run_cell(rows[name][1], args, n, pids)
                    except (RuntimeError, OSError) as exc:
                        print(f"  failed: {exc}", file=sys.stderr)
                        cell = {"error": str(exc)}
                    results[name].append(cell)
        finally:
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()
        elapsed = time.monotonic() - started

    report(args, results, (load_before, os.getloadavg()[0]))
    print(f"\nRun time: {elapsed:.0f} s.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"config": vars(args) | {"json": str(args.json)}, "passes": results}, indent=2
            )
        )


def report(
    args: argparse.Namespace, results: dict[str, list[dict[str, Any]]], load: tuple[float, float]
) -> None:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    m = args.messages
    print(
        f"\nReconnect storm: {args.clients} clients reconnect at once, after {m} x {args.size} B "
        f"were broadcast while they were away; best and median of {args.passes} passes; "
        f"{cpus} CPUs; loopback; load average (1 min) before/after: {load[0]:.2f}/{load[1]:.2f}.\n"
    )
    print(
        "| server | reconnect | storm ms (best) | median | vs plain | server CPU ms "
        "| Redis CPU ms | replayed | missing | duplicate | out of order | not recovered "
        "| failed clients |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    notes = []
    for name, cells in results.items():
        best: dict[str, dict[str, Any]] = {}
        for kind, label in (("plain", "plain"), ("resume", f"resume {m}")):
            runs = [c[kind] for c in cells if kind in c]
            good = [r for r in runs if r.get("storm_ms") is not None]
            # Correctness over every pass that ran, not only the best one.
            counts = {
                key: sum(r[key] for r in runs)
                for key in ("missing", "duplicate", "out_of_order", "not_recovered")
            }
            failed = sum(r["clients"] - r["done"] for r in runs)
            if not good:
                errors = "; ".join(str(c.get("error")) for c in cells if "error" in c)
                print(f"| {name} | {label} | error: {errors or 'none ran'} |" + " |" * 10)
                continue
            top = best[kind] = min(good, key=lambda r: r["storm_ms"])
            median = statistics.median(r["storm_ms"] for r in good)
            versus = "-"
            if kind == "resume" and "plain" in best:
                versus = f"{top['storm_ms'] - best['plain']['storm_ms']:+,.0f}"
            print(
                f"| {name} | {label} | {fmt(top['storm_ms'])} | {fmt(median)} | {versus} "
                f"| {fmt(top['server_cpu_ms'])} | {fmt(top['redis_cpu_ms'])} "
                f"| {top['replayed']:,} / {top['expected']:,} | {counts['missing']:,} "
                f"| {counts['duplicate']:,} | {counts['out_of_order']:,} "
                f"| {counts['not_recovered']:,} | {failed:,} |"
            )
        if "plain" in best and "resume" in best:
            plain, resume = best["plain"], best["resume"]
            cpu = resume["server_cpu_ms"] - plain["server_cpu_ms"]
            per = f", {cpu * 1000 / resume['replayed']:.1f} µs per message replayed" if cpu else ""
            redis = ""
            if resume["redis_cpu_ms"] is not None:
                redis = f" (Redis: {resume['redis_cpu_ms'] - plain['redis_cpu_ms']:+,.0f} ms)"
            notes.append(
                f"- {name}: resuming {m} messages costs "
                f"{resume['storm_ms'] - plain['storm_ms']:+,.0f} ms over a plain reconnect storm "
                f"({plain['storm_ms']:,.0f} -> {resume['storm_ms']:,.0f} ms), "
                f"{cpu:+,.0f} ms of server CPU{per}{redis}."
            )
        for cell in cells:
            if "error" in cell:
                notes.append(f"- {name}: a pass failed: {cell['error']}")
    print(
        "\nBest pass per row (shortest storm); missing, duplicate, out of order, not recovered "
        '(`"missing": true`) and failed clients are totals over every pass.'
    )
    if notes:
        print("\n" + "\n".join(notes))
    gen = [
        r["gen_cpu_util"]
        for cells in results.values()
        for c in cells
        for r in (c.get("plain"), c.get("resume"))
        if r
    ]
    if gen:
        print(f"\nClients' own CPU use during the storms: at most {max(gen):.0%} of one CPU.")


if __name__ == "__main__":
    main()
