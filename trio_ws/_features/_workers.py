"""Several server processes on one port (``SO_REUSEPORT``), started and stopped together.

The parent, ``run_workers(command, workers=N, host=..., port=...)``, starts N copies of
``command(port)``, each in a session of its own (so a terminal's Ctrl-C reaches the parent
only), and waits until each has printed a line on its standard output: that line means "I am
serving". It then calls ``on_ready`` and runs until SIGINT or SIGTERM, which it forwards to every
worker as SIGTERM, or until a worker exits by itself (then it stops the others and fails). Each
worker gets ``stop_timeout`` seconds to finish before it is killed; a second signal kills at once.
Later lines of the workers' standard output are copied to the parent's, after ``[pid]``.

A worker binds with ``reuse_port=True`` (the kernel spreads connections over the processes on
Linux) and calls ``await wait_for_stop(watch_stdin=True, on_ready=...)``, printing its line in
``on_ready``: it returns on SIGINT or SIGTERM, and when the parent's end of the worker's
standard input closes (the parent died).

With port 0, the parent picks a free port first and keeps it bound (not listening) until
every worker listens on it.
"""

from __future__ import annotations

import math
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Sequence

import trio

__all__ = ["run_workers", "wait_for_stop"]

_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: Longest worker output line copied whole (longer ones are cut into pieces of this size).
_MAX_LINE = 65536

# What the supervisor's tasks report: ("ready", index), ("exit", index), ("signal", signum).
_Event = tuple[str, int]


async def wait_for_stop(
    *, watch_stdin: bool = False, on_ready: Callable[[], object] | None = None
) -> int | None:
    """Return when the process should stop: the signal number (SIGINT or SIGTERM), or None
    when ``watch_stdin`` and standard input reached its end.

    ``on_ready`` is called once SIGINT and SIGTERM are caught: announce "serving" there, so
    that a signal sent as soon as the announcement is seen stops the process cleanly instead
    of killing it (the default action while nothing catches them).
    """
    result: int | None = None
    with trio.open_signal_receiver(*_STOP_SIGNALS) as receiver:
        if on_ready is not None:
            on_ready()
        async with trio.open_nursery() as nursery:

            async def signals() -> None:
                nonlocal result
                async for signum in receiver:
                    result = signum
                    nursery.cancel_scope.cancel()

            async def stdin() -> None:
                async with trio.lowlevel.FdStream(os.dup(sys.stdin.fileno())) as stream:
                    while await stream.receive_some(4096):
                        pass
                nursery.cancel_scope.cancel()

            nursery.start_soon(signals)
            if watch_stdin and sys.platform != "win32":
                nursery.start_soon(stdin)
    return result


def _reserve_port(host: str) -> socket.socket:
    """A socket bound to a free port of ``host`` with SO_REUSEPORT, not listening."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, 0))
    except BaseException:
        sock.close()
        raise
    return sock


def run_workers(
    command: Callable[[int], Sequence[str]],
    *,
    workers: int,
    host: str,
    port: int,
    ready_timeout: float = 30.0,
    stop_timeout: float = 20.0,
    on_ready: Callable[[int, list[int]], None] | None = None,
) -> int:
    """Run ``workers`` processes ``command(port)`` until SIGINT or SIGTERM; return the exit
    status (0 after a signal if every worker exited with 0, else 1).

    ``on_ready(port, pids)`` is called once every worker has printed its first line.
    """
    if not hasattr(socket, "SO_REUSEPORT"):
        raise OSError("several workers need SO_REUSEPORT, which this platform does not have")
    if workers < 1:
        raise ValueError("workers must be at least 1")
    return trio.run(_supervise, command, workers, host, port, ready_timeout, stop_timeout, on_ready)


async def _supervise(
    command: Callable[[int], Sequence[str]],
    workers: int,
    host: str,
    port: int,
    ready_timeout: float,
    stop_timeout: float,
    on_ready: Callable[[int, list[int]], None] | None,
) -> int:
    reserved = _reserve_port(host) if port == 0 else None
    if reserved is not None:
        port = reserved.getsockname()[1]
    argv = list(command(port))
    processes: list[trio.Process] = []
    send, receive = trio.open_memory_channel[_Event](math.inf)
    status = 0
    try:
        with trio.open_signal_receiver(*_STOP_SIGNALS) as signals:
            async with trio.open_nursery() as nursery:

                async def forward_signals() -> None:
                    async for signum in signals:
                        send.send_nowait(("signal", signum))

                nursery.start_soon(forward_signals)
                for index in range(workers):
                    process = await trio.lowlevel.open_process(
                        argv,
                        stdin=subprocess.PIPE,
                        stdout=subprocess.PIPE,
                        start_new_session=True,
                    )
                    processes.append(process)
                    nursery.start_soon(_watch, process, index, send)
                status = await _until_stopped(
                    receive, processes, port, ready_timeout, on_ready, reserved
                )
                await _stop(receive, processes, stop_timeout)
                if any(process.returncode != 0 for process in processes):
                    status = 1
                nursery.cancel_scope.cancel()
    finally:
        if reserved is not None:
            reserved.close()
        for process in processes:
            if process.returncode is None:
                process.kill()
    return status


async def _watch(process: trio.Process, index: int, send: trio.MemorySendChannel[_Event]) -> None:
    """Report the first line as ready, copy the others (a last one without a newline too; a
    line is cut every 64 KiB), report the exit."""
    assert process.stdout is not None
    buffer = b""
    ready = False

    def copy(line: bytes) -> None:
        nonlocal ready
        if not ready:
            ready = True
            send.send_nowait(("ready", index))
        else:
            print(f"[{process.pid}] {line.decode('utf-8', 'replace')}", flush=True)

    while chunk := await process.stdout.receive_some(_MAX_LINE):
        *lines, buffer = (buffer + chunk).split(b"\n")
        if len(buffer) >= _MAX_LINE:
            lines.append(buffer)
            buffer = b""
        for line in lines:
            copy(line)
    if buffer:
        copy(buffer)
    await process.wait()
    send.send_nowait(("exit", index))


async def _until_stopped(
    receive: trio.MemoryReceiveChannel[_Event],
    processes: list[trio.Process],
    port: int,
    ready_timeout: float,
    on_ready: Callable[[int, list[int]], None] | None,
    reserved: socket.socket | None,
) -> int:
    """Wait for every worker to be ready, then for a stop; return the exit status so far."""
    ready = 0
    with trio.move_on_after(ready_timeout):
        while ready < len(processes):
            kind, value = await receive.receive()
            if kind == "ready":
                ready += 1
            elif kind == "signal":
                return 0
            else:
                _report_exit(processes[value], "before it was ready")
                return 1
    if ready < len(processes):
        print(f"workers not ready after {ready_timeout} s; stopping", file=sys.stderr, flush=True)
        return 1
    if reserved is not None:
        reserved.close()
    if on_ready is not None:
        on_ready(port, [process.pid for process in processes])
    while True:
        kind, value = await receive.receive()
        if kind == "signal":
            return 0
        if kind == "exit":
            _report_exit(processes[value], "; stopping the others")
            return 1


def _report_exit(process: trio.Process, what: str) -> None:
    sep = "" if what.startswith(";") else " "
    print(
        f"worker {process.pid} exited with status {process.returncode}{sep}{what}",
        file=sys.stderr,
        flush=True,
    )


async def _stop(
    receive: trio.MemoryReceiveChannel[_Event], processes: list[trio.Process], timeout: float
) -> None:
    """SIGTERM every worker; kill those still running after ``timeout`` or a second signal."""
    for process in processes:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
    with trio.move_on_after(timeout):
        while any(process.returncode is None for process in processes):
            kind, _ = await receive.receive()
            if kind == "signal":
                break
    for process in processes:
        if process.returncode is None:
            process.kill()
    for process in processes:
        await process.wait()
