"""trio_ws.run_main: a program's entry point that stops quietly and reports start-up errors in
one line; the examples and the README's first example use it."""

from __future__ import annotations

import errno
import re
import signal
import socket
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import trio_ws
from trio_ws._features._startup import describe_startup_error

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


# In process ---------------------------------------------------------------------------------


async def _in_a_nursery(error: BaseException) -> None:
    async def fail() -> None:
        raise error

    async with trio.open_nursery() as nursery:
        nursery.start_soon(fail)


def test_a_startup_error_in_a_nursery_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    busy = OSError(errno.EADDRINUSE, "cannot listen on 127.0.0.1:1: Address already in use")
    assert trio_ws.run_main(_in_a_nursery, busy) == 1
    assert capsys.readouterr().err == (
        "error: cannot listen on 127.0.0.1:1: Address already in use; "
        "stop the program using it or choose another port\n"
    )
    assert trio_ws.run_main(_in_a_nursery, trio_ws.StartupError("fix X by doing Y")) == 1
    assert capsys.readouterr().err == "error: fix X by doing Y\n"


def test_other_errors_come_out_bare(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(KeyError, match="a bug"):  # not an ExceptionGroup
        trio_ws.run_main(_in_a_nursery, KeyError("a bug"))
    assert capsys.readouterr().err == ""


def test_the_exit_status_is_mains_result() -> None:
    async def three() -> int:
        await trio.lowlevel.checkpoint()
        return 3

    async def nothing() -> None:
        await trio.lowlevel.checkpoint()

    assert trio_ws.run_main(three) == 3
    assert trio_ws.run_main(nothing) == 0


@pytest.mark.parametrize(
    ("error", "line"),
    [
        (ImportError("X needs y: pip install 'z[y]'"), "X needs y: pip install 'z[y]'"),
        (FileNotFoundError(2, "No such file or directory", "conf.toml"), "cannot read conf.toml"),
        (OSError(errno.EADDRNOTAVAIL, "Cannot assign"), "no such address"),
        (KeyError("bug"), None),
        (OSError(errno.ECONNRESET, "reset"), None),
    ],
)
def test_describe_startup_error(error: BaseException, line: str | None) -> None:
    text = describe_startup_error(error)
    if line is None:
        assert text is None
    else:
        assert text is not None and line in text and "\n" not in text


# As programs ----------------------------------------------------------------------------------


async def run_python(args: Sequence[str]) -> tuple[int, str, str]:
    with trio.fail_after(TIMEOUT):
        result = await trio.run_process(
            [sys.executable, *args],
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
            cwd=ROOT,
        )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


@pytest.mark.parametrize("example", ["echo_server.py", "broadcast_server.py", "auth_server.py"])
async def test_examples_report_a_port_in_use_in_one_line(example: str) -> None:
    with socket.socket() as taken:
        taken.bind((HOST, 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = await run_python(
            [str(ROOT / "examples" / example), "--host", HOST, "--port", str(port)]
        )
    assert code == 1
    assert err == (
        f"error: cannot listen on {HOST}:{port}: Address already in use; "
        "stop the program using it or choose another port\n"
    )


async def test_broadcast_example_without_coredis_is_one_line() -> None:
    script = str(ROOT / "examples" / "broadcast_server.py")
    hide_coredis = (
        "import runpy, sys; sys.modules['coredis'] = None; "
        f"sys.argv = [{script!r}, '--port', '0', '--redis', 'redis://127.0.0.1:6379']; "
        f"runpy.run_path({script!r}, run_name='__main__')"
    )
    code, _, err = await run_python(["-c", hide_coredis])
    assert code == 1
    assert err == "error: Redis support needs coredis: pip install 'trio_ws[redis]'\n"


def readme_first_example() -> str:
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"```python\n(.*?)```", readme, re.DOTALL)
    assert match is not None
    return match.group(1)


async def test_readme_first_example_serves_and_stops_quietly_on_ctrl_c(tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = sock.getsockname()[1]
    source = readme_first_example()
    assert '"127.0.0.1", 8000' in source
    script = tmp_path / "first_example.py"
    script.write_text(source.replace('"127.0.0.1", 8000', f'"127.0.0.1", {port}'))
    process = await trio.lowlevel.open_process(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout is not None and process.stderr is not None
    try:
        with trio.fail_after(TIMEOUT):
            while True:  # wait until it accepts connections
                try:
                    await (await trio.open_tcp_stream(HOST, port)).aclose()
                    break
                except OSError:
                    await trio.sleep(0.05)  # polls until it listens (fail_after bound)
            async with trio_ws.open_websocket_url(f"ws://{HOST}:{port}/echo") as ws:
                await ws.send("hello")
                assert await ws.receive() == "hello"
                process.send_signal(signal.SIGINT)  # Ctrl-C
                with pytest.raises(trio_ws.ConnectionClosed):
                    await ws.receive()
            assert ws.close_code == 1001  # closed gracefully, not dropped
            assert await process.wait() == 0
            assert await process.stderr.receive_some(65536) == b""  # no traceback
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
