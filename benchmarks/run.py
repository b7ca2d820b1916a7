"""Benchmark trio_ws against its peers on loopback; print a markdown table, write JSON.

    python benchmarks/run.py            # full suite (8-9 minutes, always under 10)
    python benchmarks/run.py --quick    # about 2 minutes
    nox -s bench [-- --quick]           # the same in a venv with the peers installed

Each server runs in its own process (benchmarks/trio_ws_server.py, benchmarks/servers/*.py,
all with ``--port N --mode echo|broadcast``); each cell is driven by a fresh load generator
process (benchmarks/loadgen.py, epoll on raw sockets). On a machine with two or more CPUs the
server is pinned to one CPU and the load generator to another. Servers are interleaved
(A B C ... A B C ...) and the best pass is kept for throughput and latency, the median for
memory. Every figure is also given as a ratio to trio-websocket, websockets (asyncio) and
websockets.trio from the same run. Everything binds 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import select
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
LOADGEN = BENCH / "loadgen.py"
DEFAULT_JSON = BENCH / "results" / "latest.json"
LOGS = BENCH / "results" / "logs"  # each server's stderr from its latest start


@dataclass(frozen=True)
class Server:
    name: str
    script: Path
    requires: str  # module that must be importable, else the row is skipped
    raw: bool = False  # echoes masked client frames (the raw ceiling)
    default: bool = True  # run unless --servers names others
    #: Takes ``--defaults`` (the library's own keepalive and compression); the raw servers
    #: have neither, and their cells in the rows at defaults are "-".
    has_defaults: bool = True
    #: The scenarios it takes part in (``None``: all).
    scenarios: tuple[str, ...] | None = None


SERVERS = [
    Server("trio_ws", BENCH / "trio_ws_server.py", "trio_ws"),
    Server("websockets.trio", BENCH / "servers" / "peer_websockets_trio.py", "websockets.trio"),
    Server("trio-websocket", BENCH / "servers" / "peer_trio_websocket.py", "trio_websocket"),
    Server("websockets", BENCH / "servers" / "peer_websockets_asyncio.py", "websockets.asyncio"),
    Server("aiohttp", BENCH / "servers" / "peer_aiohttp.py", "aiohttp"),  # optional row
    Server(
        "raw ceiling", BENCH / "servers" / "raw_ceiling.py", "trio", raw=True, has_defaults=False
    ),
    # What any Trio + h11 WebSocket server pays at least to connect and close.
    Server(
        "h11 floor",
        BENCH / "servers" / "h11_floor.py",
        "h11",
        default=False,
        has_defaults=False,
        scenarios=("connrate", "echo"),
    ),
    # The load generator's own headroom: a server that costs next to nothing.
    Server(
        "raw epoll",
        BENCH / "servers" / "raw_epoll.py",
        "select",
        raw=True,
        default=False,
        has_defaults=False,
    ),
]
SUBJECT = "trio_ws"
BASELINES = ["trio-websocket", "websockets", "websockets.trio"]
SCENARIOS = ["echo", "broadcast", "connrate", "memory", "memory-defaults", "memory-deflate"]
#: Run only when named in ``--scenarios``: "broadcast-history" is the broadcast scenario with
#: the room keeping its last ``HISTORY_SIZE`` broadcasts (trio_ws only); "broadcast-deflate"
#: broadcasts 1 KiB chat-like text to clients that offer permessage-deflate as browsers do,
#: against three trio_ws servers: compression off, the default (context takeover), and
#: ``server_no_context_takeover=True`` (one compression per broadcast, shared by every member).
#: "broadcast-senders" is the broadcast scenario with ``SENDERS`` clients sending the messages
#: at once, a share each (a busy room), for every server.
OPT_IN_SCENARIOS = ["broadcast-history", "broadcast-deflate", "broadcast-senders"]
HISTORY_SIZE = 1000
SENDERS = 20
#: ``trio_ws_server.py --compression`` value and cell label of each broadcast-deflate variant.
DEFLATE_VARIANTS = {
    "off": "compression off",
    "default": "context takeover",
    "shared": "no context takeover",
}
#: Broadcasts delivered before the measured one (compressors made, context taken over).
DEFLATE_WARMUP_ROUNDS = 5
#: What the handshake of the permessage-deflate row offers (``loadgen.py idle --deflate``).
DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
#: Seconds a broadcast may take to deliver everything before the missing ones are counted.
BROADCAST_TIMEOUT = 40


@dataclass
class Config:
    quick: bool
    passes: int
    echo_duration: float
    echo_warmup: float
    echo_sizes: list[int]
    echo_conns: list[int]
    broadcast_clients: int
    broadcast_messages: int
    broadcast_size: int
    broadcast_deflate_clients: int
    broadcast_deflate_messages: int
    broadcast_deflate_size: int
    connrate_count: int
    connrate_concurrency: int
    memory_conns: int
    pin: bool
    server_cpu: int | None = None
    loadgen_cpu: int | None = None
    servers: list[str] = field(default_factory=list)
    scenarios: list[str] = field(default_factory=list)


def make_config(args: argparse.Namespace) -> Config:
    quick = args.quick
    config = Config(
        quick=quick,
        passes=args.passes if args.passes else (1 if quick else 3),
        echo_duration=args.duration if args.duration else (1.0 if quick else 2.0),
        echo_warmup=0.2,
        echo_sizes=[32, 16 * 1024, 1024 * 1024],
        echo_conns=[1, 64],
        broadcast_clients=100 if quick else 1000,
        broadcast_messages=200,
        broadcast_size=64,
        broadcast_deflate_clients=500 if quick else 2000,
        broadcast_deflate_messages=1,
        broadcast_deflate_size=1024,
        connrate_count=500 if quick else 2000,
        connrate_concurrency=50,
        memory_conns=500 if quick else 2000,
        pin=not args.no_pin,
    )
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if config.pin and len(cpus) >= 2:
        config.server_cpu, config.loadgen_cpu = cpus[0], cpus[1]
    return config


# Processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_accepts(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class ServerProcess:
    """A server under test in its own process; ``stop()`` kills it (always call it)."""

    def __init__(
        self, server: Server, mode: str, cpu: int | None, extra: tuple[str, ...] = ()
    ) -> None:
        self.server = server
        self.port = free_port()
        self.log = open(os.devnull, "w")  # noqa: SIM115 - closed in stop()
        LOGS.mkdir(parents=True, exist_ok=True)
        suffix = "".join(f"-{arg.lstrip('-')}" for arg in extra)
        self.stderr_path = LOGS / f"{server.name.replace(' ', '_')}-{mode}{suffix}.stderr"
        self.stderr = open(self.stderr_path, "w")  # noqa: SIM115 - closed in stop()
        cmd = [sys.executable, str(server.script), "--port", str(self.port), "--mode", mode]
        cmd += extra
        self.proc = subprocess.Popen(
            cmd, stdout=self.log, stderr=self.stderr, stdin=subprocess.DEVNULL
        )
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(self.proc.pid, {cpu})

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"exited with {self.proc.returncode}: {self.stderr_tail()}")
            if port_accepts(self.port):
                return
            time.sleep(0.05)
        raise RuntimeError(f"port {self.port} not accepting after {timeout} s")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr_tail(self, lines: int = 5) -> str:
        self.stderr.flush()
        try:
            text = self.stderr_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-lines:])

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_seconds(self) -> float:
        try:
            with open(f"/proc/{self.proc.pid}/stat") as stat:
                fields = stat.read().rpartition(")")[2].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            # SIGTERM: no server under test handles it, so it ends at once (SIGINT would make
            # each print a KeyboardInterrupt traceback, and shutdown is not measured).
            self.proc.terminate()
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        self.stderr.close()


@contextlib.contextmanager
def running(
    server: Server, mode: str, config: Config, extra: tuple[str, ...] = ()
) -> Iterator[ServerProcess]:
    proc = ServerProcess(server, mode, config.server_cpu, extra)
    try:
        proc.wait_ready()
        yield proc
    finally:
        proc.stop()


def loadgen_cmd(
    scenario: str,
    port: int,
    server: Server,
    config: Config,
    *extra: Any,
    pid: int | None = None,
) -> list[str]:
    cmd = [sys.executable, str(LOADGEN), scenario, "--port", str(port)]
    if pid is not None:
        cmd += ["--server-pid", str(pid)]
    if server.raw:
        cmd.append("--raw")
    if config.loadgen_cpu is not None:
        cmd += ["--cpu", str(config.loadgen_cpu)]
    return cmd + [str(arg) for arg in extra]


def run_loadgen(cmd: list[str], timeout: float) -> dict[str, Any]:
    """Run one load generator process; its last stdout line is the JSON result."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"load generator timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"load generator exit {done.returncode}: {tail[0]}"}
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"error": f"bad load generator output: {lines[-1][:200]}"}
    return result


def measured(proc: ServerProcess, cmd: list[str], timeout: float) -> dict[str, Any]:
    """``run_loadgen`` plus the server's CPU use meanwhile (share of one CPU)."""
    cpu0, t0 = proc.cpu_seconds(), time.monotonic()
    result = run_loadgen(cmd, timeout)
    cpu1, t1 = proc.cpu_seconds(), time.monotonic()
    result["server_cpu_util"] = (cpu1 - cpu0) / (t1 - t0)
    return result


# Scenarios ---------------------------------------------------------------------------------


def echo_cells(config: Config) -> list[tuple[str, int, int]]:
    return [
        (f"echo {_size(size)} x{conns}", size, conns)
        for size in config.echo_sizes
        for conns in config.echo_conns
    ]


def run_echo(server: Server, config: Config) -> dict[str, dict[str, Any]]:
    """All echo cells against one server process (restarted if a cell kills it)."""
    results: dict[str, dict[str, Any]] = {}
    proc: ServerProcess | None = None
    try:
        for key, size, conns in echo_cells(config):
            if proc is None or not proc.alive():
                if proc is not None:
                    proc.stop()
                proc = ServerProcess(server, "echo", config.server_cpu)
                try:
                    proc.wait_ready()
                except RuntimeError as exc:
                    results[key] = {"error": f"server did not start: {exc}"}
                    continue
            cmd = loadgen_cmd(
                "echo",
                proc.port,
                server,
                config,
                "--conns",
                conns,
                "--size",
                size,
                "--duration",
                config.echo_duration,
                "--warmup",
                config.echo_warmup,
                pid=proc.proc.pid,
            )
            result = measured(proc, cmd, timeout=config.echo_duration * 3 + 40)
            if not proc.alive():
                result["error"] = f"server died: {proc.stderr_tail()}"
            results[key] = result
    finally:
        if proc is not None:
            proc.stop()
    return results


def run_broadcast(
    server: Server, config: Config, *, history: bool = False, senders: int = 1
) -> dict[str, dict[str, Any]]:
    key = broadcast_cell(config, history, senders)
    extra: tuple[str, ...] = ()
    if history:
        if server.name != "trio_ws":
            return {key: {"not_applicable": "no room history"}}
        extra = ("--history", str(HISTORY_SIZE))
    try:
        with running(server, "broadcast", config, extra) as proc:
            cmd = loadgen_cmd(
                "broadcast",
                proc.port,
                server,
                config,
                "--conns",
                config.broadcast_clients,
                "--messages",
                config.broadcast_messages,
                "--size",
                config.broadcast_size,
                "--timeout",
                BROADCAST_TIMEOUT,
                "--senders",
                senders,
                pid=proc.proc.pid,
            )
            result = measured(proc, cmd, timeout=BROADCAST_TIMEOUT * 2 + 40)
            if not proc.alive():
                result["error"] = f"server died: {proc.stderr_tail()}"
    except RuntimeError as exc:
        result = {"error": f"server did not start: {exc}"}
    return {key: result}


def run_broadcast_deflate(server: Server, config: Config) -> dict[str, dict[str, Any]]:
    """The broadcast-deflate cells: one server process per variant, the same load."""
    results: dict[str, dict[str, Any]] = {}
    for variant in DEFLATE_VARIANTS:
        key = broadcast_deflate_cell(config, variant)
        if server.name != SUBJECT:
            results[key] = {"not_applicable": "trio_ws's compression settings"}
            continue
        try:
            with running(server, "broadcast", config, ("--compression", variant)) as proc:
                cmd = loadgen_cmd(
                    "broadcast",
                    proc.port,
                    server,
                    config,
                    "--conns",
                    config.broadcast_deflate_clients,
                    "--messages",
                    config.broadcast_deflate_messages,
                    "--size",
                    config.broadcast_deflate_size,
                    "--warmup-rounds",
                    DEFLATE_WARMUP_ROUNDS,
                    "--timeout",
                    BROADCAST_TIMEOUT,
                    "--text",
                    "--deflate",
                    pid=proc.proc.pid,
                )
                result = measured(proc, cmd, timeout=BROADCAST_TIMEOUT * 3 + 40)
                if not proc.alive():
                    result["error"] = f"server died: {proc.stderr_tail()}"
        except RuntimeError as exc:
            result = {"error": f"server did not start: {exc}"}
        results[key] = result
    return results


def broadcast_deflate_cell(config: Config, variant: str) -> str:
    return (
        f"broadcast {config.broadcast_deflate_clients} x {_size(config.broadcast_deflate_size)}"
        f" text, {DEFLATE_VARIANTS[variant]}"
    )


def broadcast_cell(config: Config, history: bool = False, senders: int = 1) -> str:
    key = f"broadcast {config.broadcast_clients} clients"
    if senders > 1:
        key += f", {senders} senders"
    return f"{key}, history {HISTORY_SIZE}" if history else key


def run_connrate(server: Server, config: Config) -> dict[str, dict[str, Any]]:
    key = f"connect+close {config.connrate_count}"
    try:
        with running(server, "echo", config) as proc:
            cmd = loadgen_cmd(
                "connrate",
                proc.port,
                server,
                config,
                "--count",
                config.connrate_count,
                "--concurrency",
                config.connrate_concurrency,
                "--timeout",
                60,
                pid=proc.proc.pid,
            )
            result = measured(proc, cmd, timeout=90)
            if not proc.alive():
                result["error"] = f"server died: {proc.stderr_tail()}"
    except RuntimeError as exc:
        result = {"error": f"server did not start: {exc}"}
    return {key: result}


def _read_line(proc: subprocess.Popen[str], timeout: float) -> dict[str, Any] | None:
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        return None
    line = proc.stdout.readline()
    try:
        return json.loads(line) if line else None
    except json.JSONDecodeError:
        return None


def _settled_rss(proc: ServerProcess, timeout: float = 3.0) -> int:
    """VmRSS once it stops growing (the server may still be setting connections up)."""
    deadline = time.monotonic() + timeout
    last = proc.rss_kib()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = proc.rss_kib()
        if abs(now - last) <= max(64, last // 500):
            return now
        last = now
    return last


@dataclass(frozen=True)
class MemoryVariant:
    """One idle-memory scenario: what the servers run with, what the handshake offers."""

    scenario: str
    suffix: str  # of the cell name, after "memory N idle"
    label: str  # of the table row, after "memory N idle KiB/conn"
    server_args: tuple[str, ...] = ()
    loadgen_args: tuple[str, ...] = ()
    deflate: bool = False  # the row is only meaningful where the extension was negotiated


MEMORY_VARIANTS = {
    variant.scenario: variant
    for variant in (
        # Keepalive off, no extension offered: unchanged since the first runs, so that results
        # stay comparable.
        MemoryVariant("memory", "", ""),
        # Each library's own keepalive and compression; the handshake offers no extension.
        MemoryVariant(
            "memory-defaults", ", defaults", ", defaults (keepalive on)", ("--defaults",)
        ),
        # The same servers, and the handshake offers permessage-deflate as browsers do.
        MemoryVariant(
            "memory-deflate",
            ", deflate offered",
            ", permessage-deflate negotiated",
            ("--defaults",),
            ("--deflate",),
            deflate=True,
        ),
    )
}


def memory_cell(config: Config, variant: MemoryVariant) -> str:
    return f"memory {config.memory_conns} idle{variant.suffix}"


def run_memory(
    server: Server, config: Config, variant: MemoryVariant = MEMORY_VARIANTS["memory"]
) -> dict[str, dict[str, Any]]:
    key = memory_cell(config, variant)
    result: dict[str, Any]
    if variant.server_args and not server.has_defaults:
        return {key: {"not_applicable": "no keepalive or compression of its own"}}
    try:
        with running(server, "echo", config, variant.server_args) as proc:
            cmd = loadgen_cmd(
                "idle",
                proc.port,
                server,
                config,
                "--conns",
                config.memory_conns,
                "--timeout",
                60,
                *variant.loadgen_args,
            )
            gen = subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                assert gen.stdin is not None
                warm = _read_line(gen, 30)
                if warm is None:
                    raise RuntimeError("load generator did not open its warm-up connections")
                before = _settled_rss(proc)
                gen.stdin.write("go\n")
                gen.stdin.flush()
                ready = _read_line(gen, 60)
                if ready is None:
                    raise RuntimeError("load generator did not report its connections")
                after = _settled_rss(proc)
                alive = proc.alive()
                proc.stop()  # before the connections drop: no 2000 "connection lost" logs
                gen.stdin.write("done\n")
                gen.stdin.flush()
                final = _read_line(gen, 30) or {}
                opened = int(ready["opened"])
                result = {
                    "conns": opened,
                    "rss_before_kib": before,
                    "rss_after_kib": after,
                    "kib_per_conn": (after - before) / opened if opened else None,
                    "open_s": ready.get("open_s"),
                    "errors": final.get("errors", {}),
                    "lost": ready.get("lost"),  # dropped by the server while held
                    # Pings the server sent (answered) until it was stopped.
                    "pings": final.get("pings"),
                    # Connections whose 101 carried Sec-WebSocket-Extensions, and its values.
                    "extensions": ready.get("extensions"),
                    "extension_values": ready.get("extension_values"),
                }
                if variant.deflate:
                    result["offered"] = DEFLATE_OFFER
                    negotiated = int(ready.get("extensions") or 0)
                    if not negotiated:
                        # The server ignored the offer: its figure is not a deflate figure.
                        result["not_negotiated"] = True
                    elif negotiated < opened:
                        result["error"] = (
                            f"permessage-deflate negotiated on {negotiated} of {opened} "
                            "connections only"
                        )
                if final.get("error"):
                    result["error"] = final["error"]
                if not alive:
                    result["error"] = f"server died: {proc.stderr_tail()}"
            except (RuntimeError, OSError, KeyError, ValueError) as exc:
                result = {"error": str(exc)}
            finally:
                if gen.poll() is None:
                    gen.kill()
                gen.wait(timeout=10)
                for stream in (gen.stdin, gen.stdout, gen.stderr):
                    if stream is not None:
                        stream.close()
    except RuntimeError as exc:
        result = {"error": f"server did not start: {exc}"}
    return {key: result}


RUNNERS: dict[str, Callable[[Server, Config], dict[str, dict[str, Any]]]] = {
    "echo": run_echo,
    "broadcast": run_broadcast,
    "broadcast-history": functools.partial(run_broadcast, history=True),
    "broadcast-senders": functools.partial(run_broadcast, senders=SENDERS),
    "broadcast-deflate": run_broadcast_deflate,
    "connrate": run_connrate,
    **{
        name: functools.partial(run_memory, variant=variant)
        for name, variant in MEMORY_VARIANTS.items()
    },
}


# Results -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    label: str
    cell: str
    metric: str
    higher_is_better: bool
    unit: str


def rows_for(config: Config) -> list[Row]:
    rows: list[Row] = []
    if "echo" in config.scenarios:
        for key, _, _ in echo_cells(config):
            rows += [
                Row(f"{key} msg/s", key, "msg_per_s", True, "msg/s"),
                Row(f"{key} MB/s", key, "mb_per_s", True, "MB/s"),
                Row(f"{key} p50 RTT ms", key, "p50_ms", False, "ms"),
                Row(f"{key} p99 RTT ms", key, "p99_ms", False, "ms"),
                Row(f"{key} server CPU µs/msg", key, "server_us_per_msg", False, "µs"),
            ]
    for scenario, history, senders in (
        ("broadcast", False, 1),
        ("broadcast-history", True, 1),
        ("broadcast-senders", False, SENDERS),
    ):
        if scenario not in config.scenarios:
            continue
        key = broadcast_cell(config, history, senders)
        rows += [
            Row(f"{key} deliveries/s", key, "deliveries_per_s", True, "/s"),
            Row(f"{key} fan-out ms", key, "fanout_ms", False, "ms"),
            Row(f"{key} server CPU µs/delivery", key, "server_us_per_delivery", False, "µs"),
        ]
    if "broadcast-deflate" in config.scenarios:
        for compression in DEFLATE_VARIANTS:
            key = broadcast_deflate_cell(config, compression)
            rows += [
                Row(f"{key} fan-out ms", key, "fanout_ms", False, "ms"),
                Row(f"{key} server CPU µs/delivery", key, "server_us_per_delivery", False, "µs"),
                Row(f"{key} wire bytes/delivery", key, "wire_bytes_per_delivery", False, "B"),
            ]
    if "connrate" in config.scenarios:
        key = f"connect+close {config.connrate_count}"
        rows.append(Row(f"{key} conn/s", key, "conn_per_s", True, "/s"))
        rows.append(Row(f"{key} server CPU µs/conn", key, "server_us_per_conn", False, "µs"))
    for name, variant in MEMORY_VARIANTS.items():
        if name in config.scenarios:
            key = memory_cell(config, variant)
            label = f"memory {config.memory_conns} idle KiB/conn{variant.label}"
            rows.append(Row(label, key, "kib_per_conn", False, "KiB"))
    return rows


def aggregate(passes: list[dict[str, Any]], row: Row) -> tuple[float | None, bool]:
    """Best pass for throughput and latency (noise only slows down); median for memory.

    Passes with an error do not count, nor those where the row does not apply (a raw server
    at "defaults", a server that did not negotiate the offered extension); passes with missing
    broadcast deliveries count only when no pass is complete, and then the second value is
    True (the figure is flagged).
    """
    usable = [
        p
        for p in passes
        if not (p.get("error") or p.get("not_applicable") or p.get("not_negotiated"))
        and p.get(row.metric) is not None
    ]
    complete = [p for p in usable if not p.get("missing")]
    values = [float(p[row.metric]) for p in (complete or usable)]
    incomplete = not complete and bool(usable)
    if not values:
        return None, False
    if row.metric == "kib_per_conn":
        return statistics.median(values), incomplete
    return (max(values) if row.higher_is_better else min(values)), incomplete


def paired_ratios(
    subject: list[dict[str, Any]], base: list[dict[str, Any]], row: Row
) -> list[float]:
    """``subject ÷ base`` pass by pass: passes are interleaved, so pass i of each ran at
    nearly the same time, under the same conditions. Passes unusable for either are skipped."""

    def usable(p: dict[str, Any]) -> float | None:
        bad = p.get("error") or p.get("not_applicable") or p.get("not_negotiated")
        value = p.get(row.metric)
        return None if bad or p.get("missing") or value is None else float(value)

    out = []
    for a, b in zip(subject, base, strict=False):
        va, vb = usable(a), usable(b)
        if va is not None and vb:
            out.append(va / vb)
    return out


def _size(size: int) -> str:
    if size >= 1024 * 1024:
        return f"{size // (1024 * 1024)} MiB"
    if size >= 1024:
        return f"{size // 1024} KiB"
    return f"{size} B"


def _fmt(value: float | None) -> str:
    if value is None:
        return "error"
    if value >= 10000:
        return f"{value / 1000:.1f}k"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    if value >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def _cell_without_value(passes: list[dict[str, Any]]) -> str:
    """What a cell without a figure shows: why there is none."""
    if passes and all(p.get("not_applicable") for p in passes):
        return "-"
    if _cell_error(passes):
        return "error"
    if passes and any(p.get("not_negotiated") for p in passes):
        return "not negotiated"
    return "n/a"


def _cell_error(passes: list[dict[str, Any]]) -> str | None:
    errors = [p.get("error") for p in passes]
    if passes and all(errors):
        return str(errors[0])
    return None


def build_tables(
    results: dict[str, dict[str, list[dict[str, Any]]]], config: Config, names: list[str]
) -> tuple[str, dict[str, Any]]:
    rows = rows_for(config)
    summary: dict[str, Any] = {}
    flagged = False
    absolute = ["| scenario | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    ratio_head = [f"{SUBJECT} ÷ {b}" for b in BASELINES if b in names]
    ratios = [
        "| scenario | " + " | ".join(ratio_head) + " |",
        "|---" * (len(ratio_head) + 1) + "|",
    ]
    others = [n for n in names if n not in BASELINES]
    bases = [b for b in BASELINES if b in names]
    full = ["| scenario | " + " | ".join(others) + " |", "|---" * (len(others) + 1) + "|"]
    paired = [
        "| scenario | " + " | ".join(ratio_head) + " |",
        "|---" * (len(ratio_head) + 1) + "|",
    ]
    for row in rows:
        values: dict[str, float | None] = {}
        texts: dict[str, str] = {}
        cells = []
        for name in names:
            passes = results.get(name, {}).get(row.cell, [])
            value, incomplete = aggregate(passes, row)
            values[name] = value
            if value is None:
                texts[name] = _cell_without_value(passes)
            else:
                texts[name] = _fmt(value) + (" †" if incomplete else "")
                flagged = flagged or incomplete
            cells.append(texts[name])
        arrow = "↑" if row.higher_is_better else "↓"
        absolute.append(f"| {row.label} {arrow} | " + " | ".join(cells) + " |")
        row_ratios: dict[str, dict[str, float | None]] = {}
        for name in names:
            row_ratios[name] = {}
            for base in BASELINES:
                v, b = values.get(name), values.get(base)
                row_ratios[name][base] = v / b if v is not None and b else None
        ratio_cells = [_ratio(row_ratios.get(SUBJECT, {}).get(b)) for b in bases]
        ratios.append(f"| {row.label} {arrow} | " + " | ".join(ratio_cells) + " |")
        pass_ratios = {
            b: paired_ratios(
                results.get(SUBJECT, {}).get(row.cell, []),
                results.get(b, {}).get(row.cell, []),
                row,
            )
            for b in bases
        }
        paired.append(
            f"| {row.label} {arrow} | " + " | ".join(_spread(pass_ratios[b]) for b in bases) + " |"
        )
        full.append(
            f"| {row.label} {arrow} | "
            + " | ".join(" / ".join(_ratio(row_ratios[n][b]) for b in bases) for n in others)
            + " |"
        )
        summary[row.label] = {
            "cell": row.cell,
            "metric": row.metric,
            "higher_is_better": row.higher_is_better,
            "values": values,
            "cells": texts,  # as in the table: "-" (does not apply), "not negotiated", ...
            "ratios": row_ratios,
            "paired_ratios": pass_ratios if SUBJECT in names else {},
        }
    parts = ["### Absolute (best of passes; memory: median)", "", *absolute]
    if SUBJECT in names and ratio_head:
        parts += [
            "",
            f"### {SUBJECT} relative to each baseline (value ÷ baseline; ↑ rows: >1 is "
            "better, ↓ rows: <1 is better)",
            "",
            *ratios,
            "",
            f"### {SUBJECT} relative to each baseline, pass by pass (median of the ratios of "
            "passes run side by side, and their range)",
            "",
            *paired,
        ]
    if bases and others:
        parts += [
            "",
            "### Other servers relative to the baselines (each cell: ÷ "
            + " / ÷ ".join(bases)
            + ")",
            "",
            *full,
        ]
    if flagged:
        parts += ["", "† some broadcast deliveries were missing in every pass (see the notes)."]
    text = "\n".join(parts)
    return text, summary


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _spread(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return _ratio(values[0])
    return f"{statistics.median(values):.2f}x ({min(values):.2f}-{max(values):.2f})"


def notes(
    results: dict[str, dict[str, list[dict[str, Any]]]], names: list[str], config: Config
) -> list[str]:
    """Errors, missing deliveries, and the load generator's headroom."""
    out: list[str] = []
    for name in names:
        for cell, passes in results.get(name, {}).items():
            for i, p in enumerate(passes):
                if p.get("error"):
                    out.append(f"- {name}, {cell}, pass {i + 1}: error: {p['error']}")
                elif p.get("missing"):
                    out.append(
                        f"- {name}, {cell}, pass {i + 1}: {p['missing']} deliveries missing"
                        + (" (timed out)" if p.get("timed_out") else "")
                    )
                if p.get("errors"):
                    out.append(f"- {name}, {cell}, pass {i + 1}: load generator saw {p['errors']}")
                if p.get("no_close_frame"):
                    out.append(
                        f"- {name}, {cell}, pass {i + 1}: {p['no_close_frame']} of "
                        f"{p.get('completed')} connections closed by the server without a "
                        "close frame in answer to the client's"
                    )
                util = p.get("server_cpu_util")
                # A CPU-bound cell: the server should have had a CPU of its own throughout.
                busy = cell.startswith("echo") and "x1" not in cell.split()
                if busy and util is not None and util < 0.75:
                    out.append(
                        f"- {name}, {cell}, pass {i + 1}: the server got {util:.0%} of a CPU "
                        "(starved by other processes?)"
                    )
    out += memory_notes(results, names, config)
    # The load generator must outrun every server: the raw ceiling (no WebSocket work) must be
    # faster than every real server, and the generator must have CPU to spare.
    ceiling = "raw ceiling"
    raw = {s.name for s in SERVERS if s.raw}
    throughput = ("msg_per_s", "deliveries_per_s", "conn_per_s")
    for cell in sorted({c for r in results.values() for c in r}):
        best: dict[str, float] = {}
        for name in names:
            for p in results.get(name, {}).get(cell, []):
                for key in throughput:
                    if p.get(key) is not None and not p.get("error"):
                        best[name] = max(best.get(name, 0.0), float(p[key]))
        if ceiling not in best:
            continue
        utils = [
            float(p["gen_cpu_util"])
            for r in results.values()
            for p in r.get(cell, [])
            if p.get("gen_cpu_util") is not None
        ]
        faster = [n for n in names if n not in raw and best.get(n, 0.0) > best[ceiling]]
        others = max((v for n, v in best.items() if n not in raw), default=0.0)
        out.append(
            f"- load generator check, {cell}: raw ceiling {_fmt(best[ceiling])}/s vs best "
            f"WebSocket server {_fmt(others)}/s; generator CPU at most {max(utils or [0]):.0%}"
            + (f"; FASTER THAN THE CEILING: {', '.join(faster)}" if faster else "")
        )
    return out


def memory_notes(
    results: dict[str, dict[str, list[dict[str, Any]]]], names: list[str], config: Config
) -> list[str]:
    """What the idle-memory rows at defaults ran with, and what each handshake negotiated."""
    out: list[str] = []
    variants = [
        v for v in MEMORY_VARIANTS.values() if v.server_args and v.scenario in config.scenarios
    ]
    if variants:
        out.append(
            "- memory rows at defaults: each server started with `--defaults`, keepalive and "
            "compression as the library sets them by default: trio_ws `WebSocketOptions()` "
            "(pings every 20 s, 20 s pong timeout, permessage-deflate accepted); websockets and "
            'websockets.trio `ping_interval=20, ping_timeout=20, compression="deflate"`; '
            "aiohttp `WebSocketResponse()`: `heartbeat=None` by default, so no keepalive pings, "
            "`compress=True`; trio-websocket has no keepalive or compression of its own, so "
            "its server is the keepalive-off one. Message size limits stay at 32 MiB. The raw "
            "servers have neither option: '-'. The load generator answers pings. The "
            "defaults row's handshake offers no extension, so nothing is negotiated there: it "
            "adds keepalive to the keepalive-off row; the permessage-deflate row adds the offer. "
            "No message is sent on these connections: a library that creates its zlib streams "
            "on the first message (trio_ws, aiohttp) has not paid for them yet, one that "
            "creates them at the handshake (websockets) has."
        )
    for variant in variants:
        cell = memory_cell(config, variant)
        for name in names:
            for i, p in enumerate(results.get(name, {}).get(cell, [])):
                if p.get("error") or p.get("not_applicable"):
                    continue
                where = f"{name}, {cell}, pass {i + 1}"
                ext, conns = p.get("extensions") or 0, p.get("conns")
                if variant.deflate:
                    values = "; ".join(p.get("extension_values") or [])
                    out.append(
                        f"- {where}: Sec-WebSocket-Extensions in {ext} of {conns} 101 responses"
                        + (f" ({values})" if values else " (not negotiated: no figure given)")
                    )
                elif ext:
                    out.append(f"- {where}: {ext} of {conns} 101 responses had an extension")
                if p.get("pings"):
                    out.append(f"- {where}: {p['pings']} pings received (answered) while held")
                if p.get("lost"):
                    out.append(f"- {where}: {p['lost']} connections dropped by the server")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller and shorter (about 2 min)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write JSON")
    parser.add_argument("--passes", type=int, default=0, help="interleaved passes (1 quick, 3)")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds per echo cell")
    parser.add_argument("--servers", default="", help="comma-separated subset of servers")
    parser.add_argument(
        "--scenarios",
        default="",
        help=f"subset of {','.join(SCENARIOS)} (all by default), or the opt-in "
        f"{','.join(OPT_IN_SCENARIOS)}",
    )
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to CPUs")
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds; passes that would end past it are skipped (default 570, quick 110)",
    )
    args = parser.parse_args()
    if args.budget is None:
        args.budget = 110.0 if args.quick else 570.0
    config = make_config(args)
    wanted = [s.strip() for s in args.servers.split(",") if s.strip()]
    config.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()] or SCENARIOS
    unknown = set(config.scenarios) - set(SCENARIOS) - set(OPT_IN_SCENARIOS)
    unknown |= set(wanted) - {s.name for s in SERVERS}
    if unknown:
        parser.error(f"unknown: {', '.join(sorted(unknown))}")
    servers: list[Server] = []
    skipped: dict[str, str] = {}
    for server in SERVERS:
        if (wanted and server.name not in wanted) or (not wanted and not server.default):
            continue
        if importlib.util.find_spec(server.requires.split(".")[0]) is None or (
            "." in server.requires and importlib.util.find_spec(server.requires) is None
        ):
            skipped[server.name] = f"{server.requires} is not installed"
            continue
        servers.append(server)
    config.servers = [s.name for s in servers]
    (BENCH / "results").mkdir(exist_ok=True)
    started = time.monotonic()
    git_state = _git_state()
    load_before = os.getloadavg()
    if load_before[0] > 0.5:
        print(
            f"warning: load average {load_before[0]:.2f} before the run: other processes "
            "compete for the CPUs and add noise",
            file=sys.stderr,
        )
    print(
        f"# trio_ws benchmarks ({'quick' if config.quick else 'full'}): "
        f"{config.passes} pass(es), servers: {', '.join(config.servers)}"
        + (f"; skipped: {skipped}" if skipped else ""),
        file=sys.stderr,
        flush=True,
    )
    results: dict[str, dict[str, list[dict[str, Any]]]] = {s.name: {} for s in servers}
    pass_times: list[float] = []
    pass_states: list[str] = []  # trio_ws's git state at the start of each pass
    budget_note = ""
    for n in range(config.passes):
        # Stay within the time budget: skip the remaining passes if the next one would not fit.
        spent = time.monotonic() - started
        if pass_times and spent + max(pass_times) > args.budget:
            print(
                f"time budget: skipping passes {n + 1}-{config.passes} "
                f"({spent:.0f} s spent, a pass takes up to {max(pass_times):.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            budget_note = f"- time budget ({args.budget:.0f} s): ran {n} of {config.passes} passes"
            config.passes = n
            break
        pass_start = time.monotonic()
        pass_states.append(_git_state() if n else git_state)
        # Interleave: every server does every scenario once per pass; rotate the order.
        order = servers[n % len(servers) :] + servers[: n % len(servers)]
        for server in order:
            for scenario in config.scenarios:
                if server.scenarios is not None and scenario not in server.scenarios:
                    continue
                t0 = time.monotonic()
                cells = RUNNERS[scenario](server, config)
                for cell, result in cells.items():
                    result["pass"] = n + 1
                    results[server.name].setdefault(cell, []).append(result)
                    print(
                        f"pass {n + 1}  {server.name:16} {cell:28} {_brief(result)}",
                        file=sys.stderr,
                        flush=True,
                    )
                print(
                    f"pass {n + 1}  {server.name:16} {scenario} took {time.monotonic() - t0:.1f} s",
                    file=sys.stderr,
                    flush=True,
                )
        pass_times.append(time.monotonic() - pass_start)
    elapsed = time.monotonic() - started
    load_after = os.getloadavg()
    names = config.servers
    table, summary = build_tables(results, config, names)
    note_lines = notes(results, names, config) + ([budget_note] if budget_note else [])
    end_state = _git_state()
    if len({*pass_states, end_state}) > 1:
        note_lines.append(
            "- trio_ws changed during the run (the editable install loads what is on disk "
            "when each server starts): "
            + "; ".join(f"pass {i + 1}: {st}" for i, st in enumerate(pass_states))
            + f"; end: {end_state}"
        )
    header = (
        f"## trio_ws benchmarks ({'quick' if config.quick else 'full'}, {config.passes} "
        f"pass(es), {elapsed:.0f} s)\n\n"
        f"Python {platform.python_version()}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs; server on CPU {config.server_cpu}, load generator on CPU "
        f"{config.loadgen_cpu}; loopback 127.0.0.1. Echo cells: {config.echo_duration:g} s "
        f"each after {config.echo_warmup:g} s warm-up; MB/s counts payload one way. "
        f"Broadcast: {config.broadcast_clients} clients, one sends "
        f"{config.broadcast_messages} x {config.broadcast_size} B at once, every client "
        f"(sender included) must get all. Connect+close: {config.connrate_concurrency} at a "
        f"time. Memory: (server VmRSS after - before) / {config.memory_conns} idle "
        "connections opened after 10 warm-up ones; keepalive off, no extension offered, except "
        "in the rows at defaults (each library's keepalive and compression, see the notes), "
        "where the permessage-deflate row's handshake offers `permessage-deflate; "
        "client_max_window_bits` as browsers do. "
        f"Load average (1 min) before/after: {load_before[0]:.2f}/{load_after[0]:.2f}. "
        f"Versions: {_versions()}; trio_ws at {git_state}."
    )
    markdown = "\n\n".join([header, table, "### Notes\n\n" + ("\n".join(note_lines) or "- none")])
    print(markdown)
    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "seconds": elapsed,
        "config": asdict(config),
        "python": platform.python_version(),
        "versions": _versions_dict(),
        "trio_ws_git": git_state,
        "trio_ws_git_per_pass": pass_states,
        "trio_ws_git_end": end_state,
        "skipped": skipped,
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "summary": summary,
        "results": results,
        "notes": note_lines,
        "markdown": markdown,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    args.json.with_suffix(".md").write_text(markdown + "\n")
    print(f"\nwrote {args.json} and {args.json.with_suffix('.md')}", file=sys.stderr)


def _brief(result: dict[str, Any]) -> str:
    if result.get("error"):
        return f"ERROR {result['error']}"
    if result.get("not_applicable"):
        return f"- ({result['not_applicable']})"
    for key, unit in (
        ("msg_per_s", "msg/s"),
        ("deliveries_per_s", "deliveries/s"),
        ("conn_per_s", "conn/s"),
        ("kib_per_conn", "KiB/conn"),
    ):
        if result.get(key) is not None:
            extra = ""
            if key == "msg_per_s":
                extra = f"  p50 {result['p50_ms']:.3f} ms  p99 {result['p99_ms']:.3f} ms"
            if key == "deliveries_per_s":
                extra = f"  fan-out {result['fanout_ms']:.0f} ms  missing {result['missing']}"
                if result.get("wire_bytes_per_delivery") is not None:
                    extra += f"  {result['wire_bytes_per_delivery']:.0f} B/delivery"
            if key == "kib_per_conn" and result.get("offered"):
                extra = f"  extension in {result['extensions']}/{result.get('conns')} 101s"
                extra += "  (NOT NEGOTIATED)" if result.get("not_negotiated") else ""
            util = result.get("gen_cpu_util")
            srv = result.get("server_cpu_util")
            cpu = f"  [gen {util:.0%}" if util is not None else ""
            if cpu and srv is not None:
                cpu += f", server {srv:.0%}"
            return f"{_fmt(result[key])} {unit}{extra}{cpu + ']' if cpu else ''}"
    return json.dumps(result)[:120]


def _versions_dict() -> dict[str, str]:
    out = {}
    for dist in ("trio_ws", "trio", "websockets", "trio-websocket", "wsproto", "aiohttp"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            out[dist] = importlib.metadata.version(dist)
    return out


def _git_state() -> str:
    """The commit trio_ws is measured at, and whether trio_ws/ had uncommitted changes."""
    root = BENCH.parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "trio_ws"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    if not dirty:
        return head
    # Name the uncommitted state by its content, to tell whether it changed during a run.
    digest = hashlib.sha1()
    for path in sorted((root / "trio_ws").rglob("*.py")):
        digest.update(path.read_bytes())
    return f"{head} + uncommitted changes in trio_ws/ (content {digest.hexdigest()[:8]})"


def _versions() -> str:
    return ", ".join(f"{k} {v}" for k, v in _versions_dict().items())


if __name__ == "__main__":
    main()
