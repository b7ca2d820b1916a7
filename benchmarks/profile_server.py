"""Profile a benchmark server under echo load with py-spy; print the top functions.

    python benchmarks/profile_server.py                      # trio_ws, 32 B, 64 connections, 5 s
    python benchmarks/profile_server.py --size 16384 --conns 1 --server websockets
    python benchmarks/profile_server.py --mode broadcast --conns 1000 --size 64
    python benchmarks/profile_server.py --mode connrate --conns 50    # connect+close

The server runs under ``py-spy record --format raw`` (py-spy starts it: attaching to a running
process does not work on every machine), the load generator drives it from another process,
and the collapsed stacks are summed into own time (the sampled frame itself) and total time
(the frame anywhere on the stack) per function. The raw profile is kept in
benchmarks/results/ (``flamegraph.pl`` or speedscope can read it). Needs ``pip install py-spy``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import run as bench

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>.*?)(?::\d+)?\)$")


def shorten(frame: str) -> str:
    """``func (path/to/file.py:123)`` to ``func (file.py)``: one row per function."""
    match = FRAME.match(frame.strip())
    if not match:
        return frame.strip()
    path = match["file"]
    for marker in ("site-packages/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    else:
        path = os.path.relpath(path, bench.BENCH.parent) if path.startswith("/") else path
    return f"{match['func']} ({path})"


def summarize(raw: Path, top: int, focus: str) -> str:
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [shorten(f) for f in stack.split(";")]
        frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
        if not frames:
            continue
        samples += count
        own[frames[-1]] += count
        for frame in set(frames):
            total[frame] += count
    lines = [
        f"{samples} samples. Top {top} functions by own time (% of samples):",
        "",
        "| # | own % | total % | function |",
        "|---|---|---|---|",
    ]
    for i, (func, count) in enumerate(own.most_common(top), 1):
        lines.append(
            f"| {i} | {100 * count / samples:.1f} | {100 * total[func] / samples:.1f} | `{func}` |"
        )
    if focus:
        mine = [(f, c) for f, c in total.most_common() if f"({focus}" in f][:top]
        lines += [
            "",
            f"Functions in {focus} by total time (own time + callees):",
            "",
            "| total % | own % | function |",
            "|---|---|---|",
        ]
        for func, count in mine:
            lines.append(
                f"| {100 * count / samples:.1f} | {100 * own[func] / samples:.1f} | `{func}` |"
            )
    return "\n".join(lines)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            found += [int(c) for c in (task / "children").read_text().split()]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="trio_ws", choices=[s.name for s in bench.SERVERS])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--conns", type=int, default=64)
    parser.add_argument("--mode", choices=["echo", "broadcast", "connrate"], default="echo")
    parser.add_argument("--messages", type=int, default=200, help="broadcast: messages sent")
    parser.add_argument(
        "--duration", type=float, default=5.0, help="echo: seconds; broadcast: timeout"
    )
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument(
        "--focus", default="trio_ws/", help="also list this package's functions by total time"
    )
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    pyspy = shutil.which("py-spy")
    if pyspy is None:
        sys.exit("py-spy is not installed (pip install py-spy)")
    server = next(s for s in bench.SERVERS if s.name == args.server)
    cpus = sorted(os.sched_getaffinity(0))
    pin = not args.no_pin and len(cpus) >= 2
    out = (
        bench.BENCH
        / "results"
        / f"profile-{server.name.replace(' ', '_')}-{args.mode}-{args.size}x{args.conns}.txt"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    port = bench.free_port()
    record_seconds = int(args.duration + 4)
    cmd = [
        pyspy,
        "record",
        "--format",
        "raw",
        "--output",
        str(out),
        "--rate",
        str(args.rate),
        "--duration",
        str(record_seconds),
        "--",
        sys.executable,
        str(server.script),
        "--port",
        str(port),
        "--mode",
        "echo" if args.mode == "connrate" else args.mode,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    children: list[int] = []
    try:
        if pin:
            os.sched_setaffinity(proc.pid, {cpus[0]})
        deadline = time.monotonic() + 20
        while not bench.port_accepts(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(
                    f"server did not start: {proc.stderr.read() if proc.stderr else ''}"
                )
            time.sleep(0.05)
        children = _children(proc.pid)
        if pin:
            # The server is py-spy's child: pin it with py-spy itself, away from the generator.
            for pid in children:
                os.sched_setaffinity(pid, {cpus[0]})
        gen_cmd = [sys.executable, str(bench.LOADGEN), "echo", "--port", str(port)]
        if server.raw:
            gen_cmd.append("--raw")
        if pin:
            gen_cmd += ["--cpu", str(cpus[1])]
        if args.mode == "echo":
            gen_cmd += ["--conns", str(args.conns), "--size", str(args.size)]
            gen_cmd += ["--duration", str(args.duration)]
        elif args.mode == "connrate":  # connect, handshake, close: --conns at a time
            gen_cmd[2] = "connrate"
            gen_cmd += ["--count", str(int(args.duration * 1000)), "--concurrency", str(args.conns)]
        else:
            gen_cmd[2] = "broadcast"
            gen_cmd += ["--conns", str(args.conns), "--size", str(args.size)]
            gen_cmd += ["--messages", str(args.messages), "--timeout", str(args.duration)]
        result = bench.run_loadgen(gen_cmd, timeout=args.duration * 3 + 40)
        print(f"under py-spy: {json.dumps(result)}", file=sys.stderr)
        proc.wait(timeout=record_seconds + 20)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for pid in children:  # py-spy leaves its child running when its duration is over
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if not out.exists() or not out.stat().st_size:
        sys.exit("py-spy wrote no profile")
    print(f"## py-spy: {server.name} {args.mode}, {args.size} B, {args.conns} connections\n")
    print(summarize(out, args.top, args.focus))
    print(f"\nraw profile: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
