"""trio_ws.Reconnect: a client that reconnects with backoff, against a real server process
restarted with SIGTERM (1001) and killed with SIGKILL (1006), and in-process servers for
refusals, break and cancellation."""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
from helpers import first_line

import trio_ws
from trio_ws import Reconnect

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 10.0
#: Bound on the whole restart test: three Python start-ups of the server included.
PROCESS_TIMEOUT = 60.0

#: Quick retries for tests (the defaults are 0.5 s to 30 s).
FAST = {"backoff_initial": 0.01, "backoff_max": 0.2}

Errors = list[BaseException | None]


def _record(errors: Errors) -> Callable[[int, float, BaseException | None], None]:
    def on_retry(attempt: int, delay: float, error: BaseException | None) -> None:
        assert attempt >= 1 and 0 <= delay <= FAST["backoff_max"]
        errors.append(error)

    return on_retry


@asynccontextmanager
async def server(
    handler: Callable[[trio_ws.WebSocketRequest], Awaitable[None]],
) -> AsyncIterator[str]:
    """An in-process server; yields its URL."""
    async with trio.open_nursery() as nursery:
        ws_server = await nursery.start(trio_ws.serve_websocket, handler, HOST, 0)
        yield f"ws://{HOST}:{ws_server.port}/"
        nursery.cancel_scope.cancel()


def closed_port() -> int:
    """A port nothing listens on (bound and released: connections are refused)."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# Against a server process -------------------------------------------------------------------


class ServerProcess:
    """``python -m trio_ws serve --echo`` on a fixed port, started again on request."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: trio.Process | None = None

    async def start(self) -> None:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "trio_ws", "serve", "--echo", "--port", str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            cwd=ROOT,
        )
        self.process = process
        assert process.stdout is not None
        line = await first_line(process, "the server")
        assert line.startswith(b"echo server on"), line

    async def stop(self, signum: int) -> int:
        assert self.process is not None
        self.process.send_signal(signum)
        return await self.process.wait()

    async def aclose(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            with trio.CancelScope(shield=True):
                await self.process.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_reconnects_after_sigterm_1001_and_sigkill_1006() -> None:
    port = closed_port()
    proc = ServerProcess(port)
    errors: Errors = []
    refused = trio.Event()  # set by the hook once a reconnection was refused (server down)
    down = False

    def on_retry(attempt: int, delay: float, error: BaseException | None) -> None:
        _record(errors)(attempt, delay, error)
        if down and isinstance(error, OSError):
            refused.set()

    async def restart_when_refused() -> None:
        nonlocal down
        await refused.wait()
        await proc.start()
        down = False

    codes: list[int | None] = []
    replies: list[str | bytes] = []
    reconnect = Reconnect(f"ws://{HOST}:{port}/", on_retry=on_retry, **FAST)
    try:
        with trio.fail_after(PROCESS_TIMEOUT):
            await proc.start()
            async with trio.open_nursery() as nursery:
                async for connection in reconnect:
                    async with connection as ws:
                        turn = reconnect.connections
                        await ws.send(f"turn {turn}")
                        replies.append(await ws.receive())
                        if turn == 1:  # graceful restart: SIGTERM, the server closes with 1001
                            down = True
                            nursery.start_soon(restart_when_refused)
                            assert await proc.stop(signal.SIGTERM) == 0
                            async for _ in ws:  # ends quietly on 1001
                                pass
                            codes.append(ws.close_code)
                        elif turn == 2:  # crash: SIGKILL, no close frame (1006)
                            await proc.stop(signal.SIGKILL)
                            await proc.start()  # already back: the retry succeeds at once
                            await ws.receive()  # raises ConnectionClosed 1006; retried
                            raise AssertionError("not reached")
                        else:
                            break
    finally:
        await proc.aclose()
    assert replies == ["turn 1", "turn 2", "turn 3"]
    assert codes == [1001]
    assert reconnect.connections == 3
    # After the 1001: a wait (error None), refused connections until the restart; after the
    # SIGKILL, the 1006 that the block raised and the loop caught.
    assert errors[0] is None
    assert any(isinstance(error, OSError) for error in errors)
    lost = [e for e in errors if isinstance(e, trio_ws.ConnectionClosed)]
    assert [e.code for e in lost] == [1006]
    assert reconnect.failures == sum(isinstance(e, OSError) for e in errors)


# Which errors are retried --------------------------------------------------------------------


async def test_a_4xx_refusal_is_raised_at_once_not_retried() -> None:
    calls = 0

    async def refuse(request: trio_ws.WebSocketRequest) -> None:
        nonlocal calls
        calls += 1
        await request.reject(403, body="no\n")

    errors: Errors = []
    with trio.fail_after(TIMEOUT):
        async with server(refuse) as url:
            reconnect = Reconnect(url, on_retry=_record(errors), **FAST)
            with pytest.raises(trio_ws.HandshakeError) as info:  # bare, not in a group
                async for connection in reconnect:
                    async with connection:
                        raise AssertionError("not reached")
    assert info.value.status == 403
    assert calls == 1 and errors == [] and reconnect.connections == 0


async def test_a_503_refusal_is_retried_with_a_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="trio_ws.reconnect")
    calls = 0

    async def busy_once(request: trio_ws.WebSocketRequest) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            await request.reject(503, body="busy\n")
            return
        ws = await request.accept()
        async for message in ws:
            await ws.send(message)

    errors: Errors = []
    with trio.fail_after(TIMEOUT):
        async with server(busy_once) as url:
            async for connection in Reconnect(url, on_retry=_record(errors), **FAST):
                async with connection as ws:
                    await ws.send("hi")
                    assert await ws.receive() == "hi"
                    break
    assert calls == 2
    assert len(errors) == 1
    assert isinstance(errors[0], trio_ws.HandshakeError) and errors[0].status == 503
    [record] = [r for r in caplog.records if r.name == "trio_ws.reconnect"]
    assert record.levelno == logging.INFO
    assert re.fullmatch(
        r"ws://127\.0\.0\.1:\d+/: HandshakeError: .*; reconnecting in 0\.\d\d s \(retry 1\)",
        record.getMessage(),
    ), record.getMessage()


@pytest.mark.parametrize(
    ("error", "retried"),
    [
        (trio_ws.ConnectionClosed(1006, ""), True),
        (ConnectionRefusedError(111, "refused"), True),
        (trio.TooSlowError(), True),
        (trio_ws.HandshakeError("cut", status=0), True),
        (trio_ws.HandshakeError("busy", status=503), True),
        (trio_ws.HandshakeError("slow down", status=429), True),
        (trio_ws.HandshakeError("who", status=401), False),
        (trio_ws.HandshakeError("no", status=404), False),
        (ValueError("bad URL"), False),
        (KeyError("bug"), False),
    ],
)
def test_is_retryable(error: BaseException, retried: bool) -> None:
    assert trio_ws.is_retryable(error) is retried


def test_a_certificate_that_fails_verification_is_not_retried() -> None:
    import ssl

    broken = trio.BrokenResourceError("TLS handshake failed")
    broken.__cause__ = ssl.SSLCertVerificationError(1, "certificate verify failed")
    assert not trio_ws.is_retryable(broken)
    assert not trio_ws.is_retryable(broken.__cause__)
    assert trio_ws.is_retryable(trio.BrokenResourceError("reset during the handshake"))


async def test_max_attempts_raises_the_last_error_bare() -> None:
    errors: Errors = []
    reconnect = Reconnect(
        f"ws://{HOST}:{closed_port()}/", max_attempts=3, on_retry=_record(errors), **FAST
    )
    with trio.fail_after(TIMEOUT), pytest.raises(OSError):
        async with reconnect.connect():
            raise AssertionError("not reached")
    assert reconnect.failures == 3
    assert len(errors) == 2  # a wait between attempts, none after the last


# Leaving the loop ------------------------------------------------------------------------------


class Recorder:
    """An echo handler that records how each connection ended, as the server saw it."""

    def __init__(self) -> None:
        self.calls = 0
        self.codes: list[int | None] = []
        self.ended = trio.Event()

    async def __call__(self, request: trio_ws.WebSocketRequest) -> None:
        self.calls += 1
        ws = await request.accept()
        try:
            async for message in ws:
                await ws.send(message)
        except trio_ws.ConnectionClosed:
            pass
        self.codes.append(ws.close_code)
        self.ended.set()


async def test_break_closes_with_1000_and_does_not_reconnect() -> None:
    recorder = Recorder()
    with trio.fail_after(TIMEOUT):
        async with server(recorder) as url:
            reconnect = Reconnect(url, **FAST)
            async for connection in reconnect:
                async with connection as ws:
                    await ws.send("x")
                    assert await ws.receive() == "x"
                    break
            await recorder.ended.wait()
    assert recorder.codes == [1000]
    assert recorder.calls == 1 and reconnect.connections == 1


async def test_cancelled_while_connected_closes_with_1001() -> None:
    recorder = Recorder()
    with trio.fail_after(TIMEOUT):
        async with server(recorder) as url:
            with trio.CancelScope() as scope:
                async for connection in Reconnect(url, **FAST):
                    async with connection as ws:
                        await ws.send("x")
                        assert await ws.receive() == "x"
                        scope.cancel()
                        await ws.receive()  # cancelled here
            assert scope.cancelled_caught
            await recorder.ended.wait()
    assert recorder.codes == [1001]
    assert recorder.calls == 1


async def test_cancelled_while_backing_off() -> None:
    reconnect = Reconnect(f"ws://{HOST}:{closed_port()}/", backoff_initial=5, backoff_max=10)
    waited = trio.Event()

    def on_retry(attempt: int, delay: float, error: BaseException | None) -> None:
        waited.set()

    reconnect.on_retry = on_retry
    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:

            async def loop() -> None:
                async for connection in reconnect:
                    async with connection:
                        raise AssertionError("not reached")

            nursery.start_soon(loop)
            await waited.wait()  # the loop now sleeps for up to 5 s
            nursery.cancel_scope.cancel()
    assert reconnect.failures == 1 and reconnect.connections == 0


async def test_other_errors_leave_the_loop_as_themselves_with_1011() -> None:
    recorder = Recorder()
    with trio.fail_after(TIMEOUT):
        async with server(recorder) as url:
            with pytest.raises(KeyError):
                async for connection in Reconnect(url, **FAST):
                    async with connection as ws:
                        await ws.send("x")
                        await ws.receive()
                        raise KeyError("the application's bug")
            await recorder.ended.wait()
    assert recorder.codes == [1011] and recorder.calls == 1


async def test_connection_closed_in_the_blocks_own_nursery_is_retried() -> None:
    calls = 0

    async def close_first(request: trio_ws.WebSocketRequest) -> None:
        nonlocal calls
        calls += 1
        ws = await request.accept()
        message = await ws.receive()
        if calls == 1:
            await ws.aclose(1011, "try again")
        else:
            await ws.send(message)

    errors: Errors = []
    with trio.fail_after(TIMEOUT):
        async with server(close_first) as url:
            reconnect = Reconnect(url, on_retry=_record(errors), **FAST)
            async for connection in reconnect:
                async with connection as ws:
                    async with trio.open_nursery() as nursery:  # the group is taken apart
                        nursery.start_soon(ws.send, "x")
                        assert await ws.receive() == "x"
                    break
    assert calls == 2
    assert [type(e).__name__ for e in errors] in (["ExceptionGroup"], ["ConnectionClosed"])
    assert reconnect.connections == 2
