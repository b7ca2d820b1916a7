"""Broadcast fan-out: one process against N worker processes sharing the room over Redis.

    python benchmarks/backplane.py [--clients 1000] [--messages 200] [--size 64] [--passes 3]
                                   [--workers 2] [--redis redis://HOST:PORT] [--json PATH]
                                   [--rows single,single-redis,workers]

Rows, measured in the same run (passes interleaved, best pass kept):

- ``1 process``: ``python -m trio_ws serve --broadcast`` (an in-process ``Room``);
- ``1 process + Redis``: the same with ``--redis URL``: what the backplane itself costs (each
  message is also published, and comes back from Redis to be ignored);
- ``N workers + Redis``: ``--workers N --redis URL``: N processes on the port (SO_REUSEPORT).

Each cell is ``benchmarks/loadgen.py broadcast``: ``--clients`` connections (spread over the
workers by the kernel), 1-byte probes until every client got one (so that every client is a
member), then one client sends ``--messages`` binary messages of ``--size`` bytes at once; the
figure is deliveries per second until the last delivery, with the deliveries missing (and any
extra ones: a message delivered twice) after ``--timeout`` seconds. Servers run without
permessage-deflate (the load generator does not offer it). A redis-server is started on a free
loopback port unless ``--redis`` names one. Everything runs on 127.0.0.1; nothing is pinned to a
CPU: with N workers, Redis and the load generator, N + 2 busy processes share the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
LOADGEN = BENCH / "loadgen.py"
HOST = "127.0.0.1"
NO_PERSISTENCE = ["--save", "", "--appendonly", "no"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def start_redis(directory: str) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server not found (apt-get install redis-server), or pass --redis URL")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--bind", HOST, "--port", str(port), "--dir", directory, *NO_PERSISTENCE],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((HOST, port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return proc, f"redis://{HOST}:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("redis-server did not start")


class Server:
    """``python -m trio_ws serve --broadcast ...`` on a free port, stopped with SIGTERM."""

    def __init__(self, extra: list[str]) -> None:
        cmd = [sys.executable, "-m", "trio_ws", "serve", "--broadcast", "--no-compression"]
        self.proc = subprocess.Popen(
            [*cmd, "--port", "0", *extra],
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # printed once every worker serves
        match = re.search(r":(\d+)/", line)
        if match is None:
            self.stop()
            raise RuntimeError(f"server did not start: {line!r}")
        self.port = int(match.group(1))

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def run_cell(extra: list[str], args: argparse.Namespace) -> dict[str, Any]:
    server = Server(extra)
    try:
        cmd = [sys.executable, str(LOADGEN), "broadcast", "--port", str(server.port)]
        cmd += ["--conns", str(args.clients), "--messages", str(args.messages)]
        cmd += ["--size", str(args.size), "--timeout", str(args.timeout)]
        try:
            done = subprocess.run(
                cmd, capture_output=True, text=True, timeout=args.timeout * 3 + 60, check=False
            )
        except subprocess.TimeoutExpired:
            return {"error": "load generator timed out"}
        lines = done.stdout.strip().splitlines()
        if not lines:
            return {"error": f"no result (exit {done.returncode}): {done.stderr[-500:]}"}
        result: dict[str, Any] = json.loads(lines[-1])
        expected = args.clients * args.messages
        result["expected"] = expected
        result["extra"] = max(0, result.get("delivered", 0) - expected)
        return result
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=40.0)
    parser.add_argument("--redis", metavar="URL", help="use this Redis instead of starting one")
    parser.add_argument("--json", type=Path, help="write every pass's results here")
    parser.add_argument(
        "--rows",
        default="single,single-redis,workers",
        help="rows to run, of single, single-redis, workers (default: all three)",
    )
    args = parser.parse_args()

    redis_proc = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.redis is None:
            redis_proc, args.redis = start_redis(tmp)
        workers = ["--workers", str(args.workers), "--redis", args.redis]
        all_rows = {
            "single": ("1 process", []),
            "single-redis": ("1 process + Redis", ["--redis", args.redis]),
            "workers": (f"{args.workers} workers + Redis", workers),
        }
        rows = dict(all_rows[key] for key in args.rows.split(","))
        results: dict[str, list[dict[str, Any]]] = {name: [] for name in rows}
        try:
            for n in range(args.passes):
                order = list(rows)
                order = order[n % len(order) :] + order[: n % len(order)]
                for name in order:
                    print(f"pass {n + 1}/{args.passes}: {name}", file=sys.stderr, flush=True)
                    results[name].append(run_cell(rows[name], args))
        finally:
            if redis_proc is not None:
                redis_proc.kill()
                redis_proc.wait()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(
        f"\nBroadcast fan-out: {args.clients} clients, {args.messages} x {args.size} B from one "
        f"client; best and median of {args.passes} passes; {cpus} CPUs; loopback.\n"
    )
    print(
        "| server | deliveries/s (best) | vs 1 process | median | fan-out ms (best) "
        "| delivered | missing | extra |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    summary: dict[str, Any] = {}
    for name, passes in results.items():
        good = [r for r in passes if r.get("deliveries_per_s")]
        if not good:
            errors = "; ".join(str(r.get("error")) for r in passes)
            print(f"| {name} | error: {errors} | | | | | | |")
            continue
        best = max(good, key=lambda r: r["deliveries_per_s"])
        summary[name] = best
        base = summary.get("1 process", {}).get("deliveries_per_s")
        ratio = f"{best['deliveries_per_s'] / base:.2f}x" if base else "-"
        median = statistics.median(r["deliveries_per_s"] for r in good)
        print(
            f"| {name} | {best['deliveries_per_s']:,.0f} | {ratio} | {median:,.0f} | "
            f"{best['fanout_ms']:,.0f} | "
            f"{best['delivered']:,} / {best['expected']:,} | {best['missing']:,} | "
            f"{best['extra']:,} |"
        )
    worst_missing = max((r.get("missing") or 0 for p in results.values() for r in p), default=0)
    print(f"\nLargest number of missing deliveries in any pass: {worst_missing}.")
    if args.json is not None:
        args.json.write_text(
            json.dumps(
                {"config": vars(args) | {"json": str(args.json)}, "passes": results}, indent=2
            )
        )


if __name__ == "__main__":
    main()
