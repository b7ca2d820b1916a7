"""Worker processes sharing a port (trio_ws/_features/_workers.py): ``run_workers`` and
``wait_for_stop`` driven directly, and through ``python -m trio_ws serve --workers N``.

Every worker is a real subprocess on 127.0.0.1; every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from helpers import HOST, REPO, alive, cli_server, wait_until, worker_pids

import trio_ws
from trio_ws._features._workers import run_workers

#: Bound on each test body.
TIMEOUT = 20.0
NO_PINGS = trio_ws.WebSocketOptions(ping_interval=None, compression=None)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or not hasattr(socket, "SO_REUSEPORT"),
    reason="POSIX signals, SO_REUSEPORT",
)


async def test_workers_stop_together() -> None:
    """SIGINT stops every worker (exit 0); a worker that dies stops the others (exit 1)."""
    async with cli_server("--echo", "--workers", "2", "--port", "0") as (url, process, lines):
        pids = worker_pids(lines[1])
        with trio.fail_after(TIMEOUT):
            async with trio_ws.open_websocket_url(url, options=NO_PINGS) as ws:
                assert int(ws.response_headers["x-worker-pid"]) in pids
                await ws.send("echo")
                assert await ws.receive() == "echo"
            process.send_signal(signal.SIGINT)
            assert await process.wait() == 0
        assert not any(alive(pid) for pid in pids)

    async with cli_server("--echo", "--workers", "2", "--port", "0") as (url, process, lines):
        pids = worker_pids(lines[1])
        os.kill(pids[0], signal.SIGKILL)
        with trio.fail_after(TIMEOUT):
            assert await process.wait() == 1
        assert not any(alive(pid) for pid in pids)

    # The parent killed outright: the workers see their standard input close and stop.
    async with cli_server("--echo", "--workers", "2", "--port", "0") as (url, process, lines):
        pids = worker_pids(lines[1])
        process.kill()
        await process.wait()
        await wait_until(lambda: not any(alive(pid) for pid in pids), "the workers stop")


# run_workers and wait_for_stop, driven directly ----------------------------------------------

#: A worker: listens on the port it is given (SO_REUSEPORT), answers each connection with its
#: pid, announces itself through wait_for_stop's on_ready, then prints how it was stopped and
#: a last line without a newline.
#: argv: port, mode ("serve", "exit-early", "never-ready", "ignore-sigterm").
WORKER = """
import os, signal, socket, sys
import trio
from trio_ws._features._workers import wait_for_stop

async def serve(sock):
    while True:
        conn, _ = await sock.accept()
        with conn:
            await conn.send(str(os.getpid()).encode())

async def main(port, mode):
    if mode == "exit-early":
        sys.exit(3)
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    await sock.bind(("127.0.0.1", port))
    sock.listen()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve, sock)
        if mode == "never-ready":
            await trio.sleep_forever()
        if mode == "ignore-sigterm":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
            print("ready", flush=True)
            await trio.sleep_forever()
        how = await wait_for_stop(watch_stdin=True, on_ready=lambda: print("ready", flush=True))
        print(f"stopped by {how}", flush=True)
        print("last words", end="", flush=True)  # no newline: still copied
        nursery.cancel_scope.cancel()

trio.run(main, int(sys.argv[1]), sys.argv[2])
"""

#: The supervisor: run_workers over WORKER; prints "ready PORT PID..." from on_ready.
#: argv: worker script, workers, mode, ready_timeout, stop_timeout.
SUPERVISOR = """
import sys
from trio_ws._features._workers import run_workers

worker, count, mode, ready_timeout, stop_timeout = sys.argv[1:]
status = run_workers(
    lambda port: [sys.executable, worker, str(port), mode],
    workers=int(count),
    host="127.0.0.1",
    port=0,
    ready_timeout=float(ready_timeout),
    stop_timeout=float(stop_timeout),
    on_ready=lambda port, pids: print("ready", port, *pids, flush=True),
)
sys.exit(status)
"""


class Supervisor:
    """A ``run_workers`` process: its stdout read line by line, its stderr collected."""

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.buffer = b""
        self.port = 0
        self.pids: list[int] = []

    async def line(self) -> str:
        assert self.process.stdout is not None
        while b"\n" not in self.buffer:
            chunk = await self.process.stdout.receive_some(4096)
            assert chunk, f"stdout ended; unread: {self.buffer!r}"
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    async def rest(self) -> str:
        """Everything left on stdout until it closes."""
        assert self.process.stdout is not None
        while chunk := await self.process.stdout.receive_some(4096):
            self.buffer += chunk
        rest, self.buffer = self.buffer.decode(), b""
        return rest

    async def stderr(self) -> str:
        assert self.process.stderr is not None
        data = b""
        while chunk := await self.process.stderr.receive_some(4096):
            data += chunk
        return data.decode()

    async def ready(self) -> None:
        words = (await self.line()).split()
        assert words[0] == "ready", words
        self.port, self.pids = int(words[1]), [int(pid) for pid in words[2:]]


@asynccontextmanager
async def supervisor(
    tmp_path: Path,
    workers: int,
    mode: str = "serve",
    *,
    ready_timeout: float = TIMEOUT,
    stop_timeout: float = TIMEOUT,
) -> AsyncIterator[Supervisor]:
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    parent = tmp_path / "supervisor.py"
    parent.write_text(SUPERVISOR)
    argv = [str(worker), str(workers), mode, str(ready_timeout), str(stop_timeout)]
    process = await trio.lowlevel.open_process(
        [sys.executable, str(parent), *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=REPO,
    )
    try:
        yield Supervisor(process)
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        assert process.stdout is not None and process.stderr is not None
        await process.stdout.aclose()
        await process.stderr.aclose()


async def pid_behind(port: int) -> int:
    """Connect to ``port`` and read the pid of the worker that accepted."""
    stream = await trio.open_tcp_stream(HOST, port)
    async with stream:
        data = b""
        while chunk := await stream.receive_some(64):
            data += chunk
    return int(data)


async def test_run_workers_shares_one_port_between_n_workers(tmp_path: Path) -> None:
    """Three workers on one port picked by the parent; the kernel spreads connections over
    them; SIGTERM to the parent reaches every worker as SIGTERM, and the parent exits 0."""
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 3) as parent:
            await parent.ready()
            assert parent.port != 0
            assert len(set(parent.pids)) == 3
            # 60 connections from distinct source ports: the chance that a worker gets none
            # of them is (2/3) ** 60, about 3e-11.
            seen = {await pid_behind(parent.port) for _ in range(60)}
            assert seen == set(parent.pids)
            parent.process.send_signal(signal.SIGTERM)
            assert await parent.process.wait() == 0
            # Each worker's later lines are copied after "[pid]": wait_for_stop said SIGTERM.
            copied = set((await parent.rest()).splitlines())
            stopped = {f"[{pid}] stopped by {int(signal.SIGTERM)}" for pid in parent.pids}
            assert copied == stopped | {f"[{pid}] last words" for pid in parent.pids}
        assert not any(alive(pid) for pid in parent.pids)


async def test_a_worker_that_dies_stops_the_others(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 2) as parent:
            await parent.ready()
            dead, other = parent.pids
            os.kill(dead, signal.SIGKILL)
            assert await parent.process.wait() == 1
            stderr = await parent.stderr()
            assert f"worker {dead} exited with status -9; stopping the others" in stderr
            rest = await parent.rest()
            assert rest == f"[{other}] stopped by {int(signal.SIGTERM)}\n[{other}] last words\n"
        assert not any(alive(pid) for pid in parent.pids)


async def test_a_worker_that_exits_before_it_is_ready(tmp_path: Path) -> None:
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 2, "exit-early") as parent:
            assert await parent.process.wait() == 1
            assert "exited with status 3 before it was ready" in await parent.stderr()
            assert await parent.rest() == ""  # on_ready never ran


async def test_workers_that_never_get_ready(tmp_path: Path) -> None:
    # ready_timeout is the behaviour under test: the workers never print their line.
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 2, "never-ready", ready_timeout=0.5) as parent:
            assert await parent.process.wait() == 1
            assert "workers not ready after 0.5 s; stopping" in await parent.stderr()
            assert await parent.rest() == ""


async def test_a_worker_that_ignores_sigterm_is_killed_after_stop_timeout(
    tmp_path: Path,
) -> None:
    # stop_timeout is the behaviour under test: the worker ignores SIGTERM, so the parent
    # waits that long, then kills it and reports the failure.
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 2, "ignore-sigterm", stop_timeout=0.5) as parent:
            await parent.ready()
            start = trio.current_time()
            parent.process.send_signal(signal.SIGTERM)
            assert await parent.process.wait() == 1
            assert trio.current_time() - start >= 0.5
        assert not any(alive(pid) for pid in parent.pids)


async def test_a_second_signal_kills_at_once(tmp_path: Path) -> None:
    # With a stop_timeout far beyond the test's bound, only the second signal can end it.
    with trio.fail_after(TIMEOUT):
        async with supervisor(tmp_path, 1, "ignore-sigterm", stop_timeout=3600) as parent:
            await parent.ready()
            parent.process.send_signal(signal.SIGTERM)
            parent.process.send_signal(signal.SIGINT)
            assert await parent.process.wait() == 1
        assert not any(alive(pid) for pid in parent.pids)


def test_run_workers_refuses_zero_workers() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        run_workers(lambda port: ["true"], workers=0, host=HOST, port=0)
