#!/usr/bin/env python3
"""Run the trio_ws *client* against the Autobahn|Testsuite fuzzing server.

The suite's other mode: ``wstest -m fuzzingserver`` plays the server and grades the client
that drives it (wstest is installed by tools/autobahn/install.sh). Steps: write the
fuzzingserver spec and start wstest on a free port, wait until it accepts TCP connections,
then with ``trio_ws.open_websocket_url``:

1. ``/getCaseCount``: one text message, the number of cases N;
2. ``/runCase?case=i&agent=AGENT`` for i in 1..N: echo every message (text as text, binary as
   binary) until the server closes; a refused handshake or a failed connection is graded too;
3. ``/updateReports?agent=AGENT``: wstest writes ``<outdir>/index.json``.

Then stop wstest and summarise the report as tools/autobahn/run.py does (same verdicts, same
exit status: 0 all cases OK or INFORMATIONAL, 1 some case not, 2 the run itself failed).
Every case is bounded by ``--case-timeout`` and the whole run by ``--timeout``.

Examples::

    python tools/autobahn/client.py                        # cases 1.* to 10.* (no 8.*)
    python tools/autobahn/client.py --cases '12.*,13.*' --outdir build/autobahn-client-deflate
    python tools/autobahn/client.py --cases '13.4.*,13.6.*'
    python tools/autobahn/client.py --summary-only         # re-read an existing report
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import trio

import trio_ws

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as server_run  # tools/autobahn/run.py: shared helpers and the summary
from run import PASSING, RunError, log, split_list

PROGRESS_EVERY = 30.0  # seconds between progress lines

# The client under test: trio_ws's defaults (permessage-deflate offered with 12-bit windows),
# with room for the suite's largest messages (16 MiB in 9.*) and no keepalive pings.
OPTIONS = trio_ws.WebSocketOptions(
    max_message_size=64 * 1024 * 1024, ping_interval=None, close_timeout=5.0
)


async def echo_case(url: str) -> str:
    """Run one case: echo until the server closes. Returns how it ended, for the log."""
    try:
        async with trio_ws.open_websocket_url(url, options=OPTIONS, proxy=False) as ws:
            try:
                async for message in ws:
                    await ws.send(message)
            except trio_ws.ConnectionClosed as exc:
                return f"closed {exc.code}"
            return f"closed {ws.close_code}"
    except trio_ws.HandshakeError as exc:
        return f"handshake refused: {exc}"
    except (OSError, trio.BrokenResourceError, trio_ws.ConnectionClosed) as exc:
        return f"connection failed: {exc!r}"


async def get_case_count(base: str) -> int:
    async with trio_ws.open_websocket_url(f"{base}/getCaseCount", proxy=False) as ws:
        return int(await ws.receive())


async def update_reports(base: str, agent: str) -> None:
    async with trio_ws.open_websocket_url(
        f"{base}/updateReports?agent={quote(agent)}", options=OPTIONS, proxy=False
    ) as ws:
        try:
            async for _ in ws:
                pass
        except trio_ws.ConnectionClosed:
            pass


async def drive(base: str, agent: str, case_timeout: float, total_cases: str) -> int:
    """Run every case, then have the report written; returns the number of cases."""
    count = await get_case_count(base)
    log(f"{count} cases ({total_cases})")
    started = time.monotonic()
    next_progress = started + PROGRESS_EVERY
    for case in range(1, count + 1):
        url = f"{base}/runCase?case={case}&agent={quote(agent)}"
        case_started = time.monotonic()
        with trio.move_on_after(case_timeout) as scope:
            outcome = await echo_case(url)
        if scope.cancelled_caught:
            outcome = f"TIMED OUT after {case_timeout:g} s"
        elapsed = time.monotonic() - case_started
        if scope.cancelled_caught or elapsed > 10:
            log(f"case {case}/{count}: {outcome} ({elapsed:.1f} s)")
        now = time.monotonic()
        if now >= next_progress:
            next_progress = now + PROGRESS_EVERY
            log(f"... {now - started:.0f} s: {case}/{count} cases done")
    await update_reports(base, agent)
    log(f"{count} cases run in {time.monotonic() - started:.1f} s; reports updated")
    return count


def wait_for_port(proc: subprocess.Popen[bytes], host: str, port: int, timeout: float) -> None:
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RunError(f"wstest exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((host, port), timeout=1.0):
                return
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            raise RunError(f"wstest did not accept connections on {host}:{port} in {timeout:g} s")
        time.sleep(0.1)


def wait_for_report(outdir: Path, agent: str, count: int, timeout: float) -> None:
    """index.json is written when /updateReports is served: wait until it has every case."""
    deadline = time.monotonic() + timeout
    index = outdir / "index.json"
    graded = 0
    while time.monotonic() < deadline:
        try:
            graded = len(json.loads(index.read_text()).get(agent, {}))
        except (OSError, ValueError):
            graded = 0
        if graded >= count:
            return
        time.sleep(0.2)
    raise RunError(f"{index} has {graded} of the {count} cases after /updateReports")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = server_run.common_parser("build/autobahn-client", 60.0, "fuzzing server")
    parser.description = __doc__.split("\n\n")[0] if __doc__ else None
    parser.add_argument(
        "--case-timeout", type=float, default=120.0, help="seconds per case (default: 120)"
    )
    return parser.parse_args(argv)


def run(args: argparse.Namespace, outdir: Path, allowed: frozenset[str]) -> int:
    cases = split_list(args.cases)
    if not cases:
        raise RunError("no cases given")
    if not os.access(args.wstest, os.X_OK):
        raise RunError(f"{args.wstest} not found: run tools/autobahn/install.sh first")
    outdir.mkdir(parents=True, exist_ok=True)
    server_run.clean_old_report(outdir)
    port = args.port or server_run.free_port(args.host)
    base = f"ws://{args.host}:{port}"
    spec = {
        "url": base,
        "outdir": str(outdir),
        "cases": cases,
        "exclude-cases": split_list(args.exclude),
        "exclude-agent-cases": {},
    }
    spec_path = outdir / "fuzzingserver.json"
    spec_path.write_text(json.dumps(spec, indent=2) + "\n")
    logfile = outdir / "wstest.log"
    cmd = [str(args.wstest), "-m", "fuzzingserver", "-s", str(spec_path)]
    log(f"running: {shlex.join(cmd)}  (log: {logfile})")
    started = time.monotonic()
    with logfile.open("wb") as out:
        proc = subprocess.Popen(
            cmd,
            cwd=outdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for_port(proc, args.host, port, args.startup_timeout)
        log(f"fuzzing server listening on {base} (after {time.monotonic() - started:.1f} s)")
        remaining = args.timeout - (time.monotonic() - started)
        try:
            count = trio.run(
                _bounded_drive, remaining, base, args.agent, args.case_timeout, args.cases
            )
        except trio.TooSlowError:
            raise RunError(f"the run took over {args.timeout:g} s") from None
        wait_for_report(outdir, args.agent, count, 30.0)
        if proc.poll() is not None:
            raise RunError(
                f"wstest exited (status {proc.returncode}) during the run;"
                f" its log:\n{server_run.tail(logfile)}"
            )
    finally:
        server_run.stop_process_group(proc, "wstest")
    log(f"total wall time {time.monotonic() - started:.1f} s")
    return server_run.summarize(outdir, args.agent, allowed)


async def _bounded_drive(
    timeout: float, base: str, agent: str, case_timeout: float, cases: str
) -> int:
    with trio.fail_after(timeout):
        return await drive(base, agent, case_timeout, cases)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outdir: Path = args.outdir.resolve()
    allowed = PASSING | frozenset(args.allow)
    logging.basicConfig(level=logging.WARNING)
    try:
        if args.summary_only:
            return server_run.summarize(outdir, None, allowed)
        return run(args, outdir, allowed)
    except RunError as exc:
        print(f"[autobahn] ERROR: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
