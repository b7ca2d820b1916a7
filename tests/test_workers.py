"""Worker processes sharing a port (trio_ws/_features/_workers.py): ``run_workers`` and
``wait_for_stop`` driven directly, and through ``python -m trio_ws serve --workers N``.

Every worker is a real subprocess on 127.0.0.1; every wait is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest
import trio
from helpers import alive, cli_server, worker_pids

import trio_ws

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
        with trio.fail_after(TIMEOUT):
            while any(alive(pid) for pid in pids):
                await trio.sleep(0.05)
