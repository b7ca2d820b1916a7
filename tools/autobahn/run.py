#!/usr/bin/env python3
"""Run the Autobahn|Testsuite fuzzing client against the project's echo server.

Standard library only; wstest itself is installed by tools/autobahn/install.sh.

Steps: start the echo server on a free port (by default
``<this python> examples/echo_server.py --host 127.0.0.1 --port N``), wait until it accepts TCP
connections, write the fuzzingclient spec, run ``wstest -m fuzzingclient``, stop the server, then
summarise ``<outdir>/index.json``.

Exit status: 0 if every case has behavior and behaviorClose in {OK, INFORMATIONAL} (plus any
``--allow``-ed verdicts); 1 if some case does not; 2 if the run itself could not be completed
(server did not start, wstest missing, crashed or timed out, no report).

Examples::

    python tools/autobahn/run.py                          # cases 1.* to 10.* (no 8.*)
    python tools/autobahn/run.py --cases '12.*,13.*' --timeout 5400
    python tools/autobahn/run.py --cases '9.*' --exclude '9.7.*,9.8.*'
    python tools/autobahn/run.py --server-cmd 'python my_server.py --port {port}'
    python tools/autobahn/run.py --server-cmd '{python} examples/asyncio_echo_server.py'
    python tools/autobahn/run.py --url ws://127.0.0.1:9001   # a server that is already running
    python tools/autobahn/run.py --summary-only              # re-read an existing report
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DEFAULT_CASES = "1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*"  # there is no section 8
PASSING = frozenset({"OK", "INFORMATIONAL"})
PROGRESS_EVERY = 30.0  # seconds between progress lines while wstest runs


class RunError(Exception):
    """The run could not be completed (as opposed to: some cases failed)."""


def log(msg: str) -> None:
    print(f"[autobahn] {msg}", flush=True)


def default_home() -> Path:
    env = os.environ.get("TRIO_WS_AUTOBAHN_HOME")
    if env:
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "trio_ws" / "autobahn"


def split_list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def case_key(case_id: str) -> list[int]:
    try:
        return [int(part) for part in case_id.split(".")]
    except ValueError:
        return [sys.maxsize]


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


def server_command(template: str | None, host: str, port: int) -> list[str]:
    if template is None:
        return [sys.executable, "examples/echo_server.py", "--host", host, "--port", str(port)]
    # {python}: the interpreter running this script (as the default command uses).
    cmd = [sys.executable if arg == "{python}" else arg for arg in shlex.split(template)]
    if "{port}" in template:
        return [arg.replace("{host}", host).replace("{port}", str(port)) for arg in cmd]
    return [*cmd, "--host", host, "--port", str(port)]


def stop_process_group(proc: subprocess.Popen[bytes], name: str) -> None:
    """Stop a process we started in its own session: SIGINT, then SIGTERM, then SIGKILL."""
    if proc.poll() is not None:
        return
    for sig, grace in ((signal.SIGINT, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            log(f"{name} did not stop on {signal.Signals(sig).name}")


def start_server(cmd: list[str], host: str, port: int, timeout: float, logfile: Path) -> Any:
    log(f"starting server: {shlex.join(cmd)}  (log: {logfile})")
    out = logfile.open("wb")
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        cmd,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    out.close()
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RunError(
                f"server exited with status {proc.returncode} before accepting connections;"
                f" its log:\n{tail(logfile)}"
            )
        try:
            with socket.create_connection((host, port), timeout=1.0):
                break
        except OSError:
            pass
        if time.monotonic() - started > timeout:
            stop_process_group(proc, "server")
            raise RunError(
                f"server did not accept connections on {host}:{port} within {timeout:g} s;"
                f" its log:\n{tail(logfile)}"
            )
        time.sleep(0.1)
    log(f"server is listening on {host}:{port} (after {time.monotonic() - started:.1f} s)")
    return proc


def clean_old_report(outdir: Path) -> None:
    for path in outdir.iterdir():
        name = path.name
        is_report = name in ("index.json", "index.html") or (
            "_case_" in name and name.endswith((".json", ".html"))
        )
        if is_report and path.is_file():
            path.unlink()


def run_wstest(wstest: Path, spec: Path, outdir: Path, timeout: float, total: str) -> None:
    logfile = outdir / "wstest.log"
    cmd = [str(wstest), "-m", "fuzzingclient", "-s", str(spec)]
    log(f"running: {shlex.join(cmd)}  (log: {logfile}, timeout {timeout:g} s)")
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
    next_progress = started + PROGRESS_EVERY
    try:
        while proc.poll() is None:
            now = time.monotonic()
            if now - started > timeout:
                stop_process_group(proc, "wstest")
                raise RunError(f"wstest timed out after {timeout:g} s; its log:\n{tail(logfile)}")
            if now >= next_progress:
                next_progress += PROGRESS_EVERY
                log(f"... {now - started:.0f} s: {progress(logfile)} cases started ({total})")
            time.sleep(0.2)
    finally:
        stop_process_group(proc, "wstest")
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        raise RunError(f"wstest exited with status {proc.returncode}; its log:\n{tail(logfile)}")
    log(f"wstest finished in {elapsed:.1f} s")


def progress(logfile: Path) -> str:
    """'N/M' cases started so far, from wstest's log."""
    try:
        text = logfile.read_bytes()
    except OSError:
        return "?"
    planned = re.search(rb"will run (\d+) test cases", text)
    started = text.count(b"Running test case ID")
    return f"{started}/{int(planned.group(1)) if planned else '?'}"


def summarize(outdir: Path, agent: str | None, allowed: frozenset[str]) -> int:
    index_path = outdir / "index.json"
    try:
        index: dict[str, dict[str, dict[str, Any]]] = json.loads(index_path.read_text())
    except (OSError, ValueError) as exc:
        raise RunError(f"cannot read {index_path}: {exc}") from exc
    if agent is not None and agent in index:
        index = {agent: index[agent]}
    if not index or not any(index.values()):
        raise RunError(f"{index_path} has no results")

    worst = 0
    for name, cases in sorted(index.items()):
        behaviors = collections.Counter(c.get("behavior", "?") for c in cases.values())
        closes = collections.Counter(c.get("behaviorClose", "?") for c in cases.values())
        failing = sorted(
            (
                case_id
                for case_id, c in cases.items()
                if c.get("behavior") not in allowed or c.get("behaviorClose") not in allowed
            ),
            key=case_key,
        )
        durations = {case_id: int(c.get("duration") or 0) for case_id, c in cases.items()}
        slowest = sorted(durations.items(), key=lambda kv: (-kv[1], case_key(kv[0])))[:5]

        def fmt(counter: collections.Counter[str]) -> str:
            return ", ".join(f"{verdict} {n}" for verdict, n in counter.most_common())

        print()
        print(f"Autobahn|Testsuite results for agent {name!r}: {len(cases)} cases")
        print(f"  report:        {outdir / 'index.html'}")
        print(f"  behavior:      {fmt(behaviors)}")
        print(f"  behaviorClose: {fmt(closes)}")
        print("  slowest:       " + ", ".join(f"{k} {ms} ms" for k, ms in slowest))
        print(f"  total of per-case durations: {sum(durations.values()) / 1000:.1f} s")
        if failing:
            worst = 1
            print(f"  FAILING ({len(failing)}), accepted verdicts: {', '.join(sorted(allowed))}:")
            for case_id in failing:
                c = cases[case_id]
                print(
                    f"    {case_id:<10} behavior={c.get('behavior')}"
                    f" behaviorClose={c.get('behaviorClose')}"
                    f" remoteCloseCode={c.get('remoteCloseCode')}"
                    f"  ({outdir / str(c.get('reportfile', ''))})"
                )
        print(f"  RESULT: {'FAIL' if failing else 'PASS'}")
    return worst


def common_parser(outdir: str, startup_timeout: float, peer: str) -> argparse.ArgumentParser:
    """The options both drivers take (this one and client.py): cases, report, wstest,
    verdicts; ``peer`` names the side that runs apart (the echo server, the fuzzing server).
    """
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        epilog="Exit status: 0 all cases pass, 1 some case fails, 2 the run itself failed.",
    )
    parser.add_argument(
        "--cases",
        default=DEFAULT_CASES,
        help=f"comma-separated case patterns (default: {DEFAULT_CASES})",
    )
    parser.add_argument(
        "--exclude", default="", help="comma-separated case patterns to skip (default: none)"
    )
    parser.add_argument(
        "--outdir",
        default=outdir,
        type=Path,
        help=f"report folder (default: {outdir}); index.html there is the report",
    )
    parser.add_argument("--agent", default="trio_ws", help="agent name in the report")
    parser.add_argument("--host", default="127.0.0.1", help=f"{peer} host (default: 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=0, help=f"{peer} port (default: a free port is picked)"
    )
    parser.add_argument(
        "--startup-timeout",
        type=float,
        default=startup_timeout,
        help=f"seconds to wait for the {peer} to accept connections (default: %(default)s)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds for the whole run, then wstest is killed (default: 3600)",
    )
    parser.add_argument(
        "--wstest",
        type=Path,
        default=default_home() / "wstest",
        help="wstest launcher written by install.sh (default: %(default)s)",
    )
    parser.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="VERDICT",
        help="also accept this verdict, e.g. NON-STRICT (repeatable)",
    )
    parser.add_argument(
        "--summary-only",
        action="store_true",
        help="do not run anything; summarise the existing <outdir>/index.json",
    )
    return parser


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = common_parser("build/autobahn", 20.0, "echo server")
    parser.add_argument(
        "--server-cmd",
        help="command that starts the echo server; '{host}' and '{port}' are substituted if"
        " present, else '--host HOST --port PORT' is appended; a '{python}' word is this"
        " python"
        " (default: this python running examples/echo_server.py)",
    )
    parser.add_argument(
        "--url", help="test a server that is already running at this ws:// URL (none is started)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    outdir: Path = args.outdir.resolve()
    allowed = PASSING | frozenset(args.allow)
    try:
        if args.summary_only:
            return summarize(outdir, None, allowed)
        return run(args, outdir, allowed)
    except RunError as exc:
        print(f"[autobahn] ERROR: {exc}", file=sys.stderr, flush=True)
        return 2


def run(args: argparse.Namespace, outdir: Path, allowed: frozenset[str]) -> int:
    cases = split_list(args.cases)
    exclude = split_list(args.exclude)
    if not cases:
        raise RunError("no cases given")
    wstest: Path = args.wstest
    if not os.access(wstest, os.X_OK):
        raise RunError(f"{wstest} not found: run tools/autobahn/install.sh first")
    outdir.mkdir(parents=True, exist_ok=True)
    clean_old_report(outdir)

    started = time.monotonic()
    server = None
    try:
        if args.url:
            url = args.url
        else:
            port = args.port or free_port(args.host)
            cmd = server_command(args.server_cmd, args.host, port)
            server = start_server(cmd, args.host, port, args.startup_timeout, outdir / "server.log")
            url = f"ws://{f'[{args.host}]' if ':' in args.host else args.host}:{port}"

        spec = {
            "outdir": str(outdir),
            "servers": [{"agent": args.agent, "url": url}],
            "cases": cases,
            "exclude-cases": exclude,
            "exclude-agent-cases": {},
        }
        spec_path = outdir / "fuzzingclient.json"
        spec_path.write_text(json.dumps(spec, indent=2) + "\n")
        log(f"cases: {', '.join(cases)}" + (f"; excluded: {', '.join(exclude)}" if exclude else ""))
        run_wstest(wstest, spec_path, outdir, args.timeout, args.cases)
        server_died = server is not None and server.poll() is not None
    finally:
        if server is not None:
            stop_process_group(server, "server")
    log(f"total wall time {time.monotonic() - started:.1f} s")
    status = summarize(outdir, args.agent, allowed)
    if server_died:
        assert server is not None
        raise RunError(
            f"the server exited (status {server.returncode}) during the run, so the results"
            f" above are not meaningful; its log:\n{tail(outdir / 'server.log')}"
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
