"""``python -m trio_ws``: the interactive client and the test servers, run as subprocesses."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from helpers import first_line

import trio_ws

ROOT = Path(__file__).parent.parent
HOST = "127.0.0.1"

#: Bound on each subprocess (Python start-up included).
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")


async def run_cli(
    args: Sequence[str], stdin: bytes | None = b"", *, timeout: float = TIMEOUT
) -> tuple[int, str, str]:
    """Run ``python -m trio_ws ARGS``; ``stdin=None`` keeps stdin open until it exits."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin and process.stdout and process.stderr
    output: dict[str, bytes] = {}

    async def read(name: str, stream: trio.abc.ReceiveStream) -> None:
        chunks = []
        while chunk := await stream.receive_some(65536):
            chunks.append(chunk)
        output[name] = b"".join(chunks)

    try:
        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(read, "stdout", process.stdout)
                nursery.start_soon(read, "stderr", process.stderr)
                if stdin is not None:
                    await process.stdin.send_all(stdin)
                    await process.stdin.aclose()
                await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdin.aclose()
    assert process.returncode is not None
    return process.returncode, output["stdout"].decode(), output["stderr"].decode()


@asynccontextmanager
async def server(
    handler: Callable[[trio_ws.WebSocketRequest], Awaitable[None]],
) -> AsyncIterator[str]:
    """An in-process trio_ws server; yields its URL."""
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(trio_ws.serve_websocket, handler, HOST, 0)
        yield f"ws://{HOST}:{ws_server.port}"
        nursery.cancel_scope.cancel()


async def echo(request: trio_ws.WebSocketRequest) -> None:
    ws = await request.accept()
    async for message in ws:
        await ws.send(message)


# Client -------------------------------------------------------------------------------------


async def test_client_echo_then_eof_exits_0() -> None:
    async with server(echo) as url:
        code, out, err = await run_cli([f"{url}/"], b"hello\n")
    assert (code, out, err) == (0, "< hello\n", "")


async def test_client_lines() -> None:
    async with server(echo) as url:
        code, out, _ = await run_cli(
            [f"{url}/", "--linger", "1"], "one\r\n\nwörld\nno newline".encode()
        )
    assert code == 0
    assert out.splitlines() == ["< one", "< ", "< wörld", "< no newline"]


async def test_client_options_reach_the_server() -> None:
    seen: dict[str, object] = {}

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen["subprotocols"] = request.subprotocols
        seen["x-api-key"] = request.headers.get("x-api-key")
        seen["extensions"] = request.headers.get("sec-websocket-extensions")
        ws = await request.accept(subprotocol="b")
        await ws.send("binary next")
        await ws.send(b"\x00\x01")

    async with server(handler) as url:
        code, out, err = await run_cli(
            [
                *("-p", "a", "--subprotocol", "b"),
                *("-H", "X-Api-Key: k 1", "--no-compression"),
                f"{url}/",
            ],
            stdin=None,
        )
    assert code == 0
    assert seen == {"subprotocols": ("a", "b"), "x-api-key": "k 1", "extensions": None}
    assert out == "< binary next\n< [binary, 2 bytes] 0001\n"
    assert "subprotocol: b" in err


async def test_client_offers_compression_by_default() -> None:
    seen = []

    async def handler(request: trio_ws.WebSocketRequest) -> None:
        seen.append(request.headers.get("sec-websocket-extensions"))
        await request.accept()

    async with server(handler) as url:
        code, _, _ = await run_cli([f"{url}/"], stdin=None)
    assert code == 0
    assert seen[0] is not None and "permessage-deflate" in seen[0]


async def test_client_exits_when_the_server_closes() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send("bye")
        await ws.aclose(1000)

    async with server(handler) as url:
        code, out, err = await run_cli([f"{url}/"], stdin=None)  # stdin stays open
    assert (code, out, err) == (0, "< bye\n", "")


async def test_client_reports_an_abnormal_close() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.aclose(1008, "policy")

    async with server(handler) as url:
        code, _, err = await run_cli([f"{url}/"], stdin=None)
    assert code == 1
    assert "connection closed: 1008 policy" in err


async def test_client_reports_a_refused_handshake() -> None:
    async def handler(request: trio_ws.WebSocketRequest) -> None:
        await request.reject(401, body="who are you?\n")

    async with server(handler) as url:
        code, out, err = await run_cli([f"{url}/"])
    assert (code, out) == (1, "")
    assert "HTTP 401" in err and "who are you?" in err


async def test_client_reports_a_refused_connection() -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        code, _, err = await run_cli([f"ws://{HOST}:{port}/"])
    assert code == 1
    assert "cannot connect" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-H", "no colon", "ws://x/"], "Name: value"),
        (["http://x/"], "not a WebSocket URL"),
        ([], "url"),
    ],
)
async def test_client_usage_errors(args: list[str], message: str) -> None:
    code, _, err = await run_cli(args)
    assert code in (1, 2)
    assert message in err


async def test_client_against_the_echo_example() -> None:
    example = [sys.executable, str(ROOT / "examples" / "echo_server.py")]
    process = await trio.lowlevel.open_process(
        [*example, "--host", HOST, "--port", "0"], stdout=subprocess.PIPE
    )
    try:
        with trio.fail_after(TIMEOUT):
            # "echo server on ws://HOST:PORT/": printed once it listens.
            url = (await first_line(process, "the example")).decode().split()[-1]
        code, out, _ = await run_cli([url], b"hello\n")
    finally:
        process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()
        assert process.stdout is not None
        await process.stdout.aclose()
    assert (code, out) == (0, "< hello\n")


# Servers ------------------------------------------------------------------------------------


@asynccontextmanager
async def cli_server(*args: str) -> AsyncIterator[str]:
    """``python -m trio_ws serve ARGS --port 0``; yields the URL it prints."""
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", "serve", *args, "--port", "0"],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            line = await first_line(process, "the server")
        url = line.decode().split()[-1]
        assert url.startswith(f"ws://{HOST}:")
        yield url
        process.send_signal(signal.SIGINT)  # Ctrl-C: a clean stop
        with trio.fail_after(TIMEOUT):
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()


async def test_serve_echo() -> None:
    async with cli_server("--echo") as url:
        with trio.fail_after(TIMEOUT):
            async with trio_ws.open_websocket_url(url + "any/path") as ws:
                await ws.send("ping")
                assert await ws.receive() == "ping"
                assert ws.extensions == ["permessage-deflate"]
        # The interactive client against the server.
        code, out, _ = await run_cli([url], b"round trip\n")
        assert (code, out) == (0, "< round trip\n")


async def test_serve_broadcast_without_compression() -> None:
    async with cli_server("--broadcast", "--no-compression") as url:
        with trio.fail_after(TIMEOUT):
            async with (
                trio_ws.open_websocket_url(url) as alice,
                trio_ws.open_websocket_url(url) as bob,
            ):
                assert alice.extensions == []
                await bob.ping()  # both have joined once their handshakes completed
                await alice.send("to everyone")
                assert await alice.receive() == "to everyone"
                assert await bob.receive() == "to everyone"


def test_serve_stops_cleanly_on_sigterm_right_after_its_ready_line() -> None:
    # The "server on ..." line means serving, and run_workers (and scripts) may SIGTERM the
    # process as soon as they read it: by then the signal must be caught, or its default
    # action kills the server (exit -15), as it did in most runs before the fix.
    for _ in range(8):
        process = subprocess.Popen(
            [sys.executable, "-m", "trio_ws", "serve", "--echo", "--port", "0"],
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline().startswith(b"echo server on ws://")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=TIMEOUT) == 0
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            assert process.stdout is not None
            process.stdout.close()


def test_main_usage_error_in_process(capsys: pytest.CaptureFixture[str]) -> None:
    from trio_ws._features._cli import main

    with pytest.raises(SystemExit) as info:
        main(["serve", "--echo", "--broadcast"])
    assert info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


# Start-up errors: one line on stderr, exit status 1 ------------------------------------------

#: Runs the CLI with coredis unimportable, as where the redis extra is not installed.
WITHOUT_COREDIS = (
    "import sys; sys.modules['coredis'] = None; "
    "from trio_ws._features._cli import main; sys.exit(main())"
)


async def run_python(args: Sequence[str], *, timeout: float = TIMEOUT) -> tuple[int, str, str]:
    """Run ``python ARGS`` (stdin closed); its status, stdout and stderr."""
    with trio.fail_after(timeout):
        result = await trio.run_process(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def one_line(stderr: str) -> str:
    """The single line of ``stderr`` (fails if there are more, e.g. a traceback)."""
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("error: "), stderr
    return lines[0]


async def test_serve_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_python(["-m", "trio_ws", "serve", "--port", str(port)])
    assert (code, out) == (1, "")
    assert one_line(err) == (
        f"error: cannot listen on {HOST}:{port}: Address already in use; "
        "stop the program using it or choose another port"
    )


async def test_serve_redis_without_coredis_is_one_line() -> None:
    args = ["serve", "--broadcast", "--port", "0", "--redis", "redis://127.0.0.1:6379"]
    code, out, err = await run_python(["-c", WITHOUT_COREDIS, *args])
    assert (code, out) == (1, "")
    assert one_line(err) == "error: Redis support needs coredis: pip install 'trio_ws[redis]'"


async def test_serve_unreadable_tls_files_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"
    code, out, err = await run_python(
        ["-m", "trio_ws", "serve", "--port", "0", "--certfile", str(missing)]
    )
    assert (code, out) == (1, "")
    assert one_line(err) == (
        f"error: cannot read the TLS file {missing}: No such file or directory; "
        "check --certfile and --keyfile"
    )
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    code, out, err = await run_python(
        ["-m", "trio_ws", "serve", "--port", "0", "--certfile", str(garbage)]
    )
    assert (code, out) == (1, "")
    assert one_line(err).startswith(
        f"error: cannot use the TLS certificate {garbage}: not a PEM certificate and its "
        "private key"
    )


async def test_serve_wss_with_a_certificate(tmp_path: Path) -> None:
    import ssl

    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert(HOST)
    certfile = tmp_path / "cert.pem"
    cert.private_key_and_cert_chain_pem.write_to_path(str(certfile))
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "trio_ws", "serve", "--port", "0", "--certfile", str(certfile)],
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            line = await first_line(process, "the server")
            url = line.decode().split()[-1]
            assert url.startswith(f"wss://{HOST}:")
            client_context = ssl.create_default_context()
            ca.configure_trust(client_context)
            async with trio_ws.open_websocket_url(url, ssl_context=client_context) as ws:
                await ws.send("over TLS")
                assert await ws.receive() == "over TLS"
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--echo", "--redis", "redis://127.0.0.1:1"], "--redis needs --broadcast"),
        (["--workers", "0"], "--workers must be at least 1"),
    ],
)
async def test_serve_usage_errors(args: list[str], message: str) -> None:
    result = await trio.run_process(
        [sys.executable, "-m", "trio_ws", "serve", *args], capture_stderr=True, check=False
    )
    assert result.returncode == 2
    assert message in result.stderr.decode()
