"""examples/asyncio_echo_server.py: an asyncio server on trio_ws.protocol alone.

It runs as a subprocess on 127.0.0.1; trio_ws's client and the raw byte-level client talk to
it. (``nox -s autobahn_asyncio`` runs Autobahn|Testsuite against the same server.)
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
from helpers import HOST, RawClient, bounded, first_line

import trio_ws
from trio_ws.protocol import Opcode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "asyncio_echo_server.py"


@pytest.fixture(params=[False, True], ids=["plain", "deflate"])
async def port(request: pytest.FixtureRequest) -> AsyncIterator[int]:
    """The example server's port (with ``--deflate`` for the "deflate" variant)."""
    cmd = [sys.executable, str(EXAMPLE), "--host", HOST, "--port", "0"]
    if request.param:
        cmd.append("--deflate")
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            lambda task_status: trio.run_process(
                cmd, stdout=subprocess.PIPE, check=False, task_status=task_status
            )
        )
        try:
            with trio.fail_after(10):
                line = await first_line(process, "the asyncio echo server")
            yield int(line.rsplit(b":", 1)[1].strip(b"/\r\n"))
        finally:
            process.terminate()
            nursery.cancel_scope.cancel()


@bounded
async def test_echo_ping_and_fragments_with_the_trio_ws_client(port: int) -> None:
    # The client offers permessage-deflate: the "deflate" server accepts it, the other not.
    async with trio_ws.open_websocket_url(f"ws://{HOST}:{port}/", proxy=False) as ws:
        await ws.send("héllo " * 100)
        assert await ws.receive() == "héllo " * 100
        await ws.send(b"\x00\xff" * 70_000)
        assert await ws.receive() == b"\x00\xff" * 70_000
        await ws.ping(b"are you there")  # returns once the pong came
        await ws.send(["frag", "ment", "ed"])  # one message in three frames
        assert await ws.receive() == "fragmented"
    assert (ws.close_code, ws.close_reason) == (1000, "")


@bounded
async def test_invalid_utf8_fails_with_1007(port: int) -> None:
    client = await RawClient.connect(port)
    try:
        await client.handshake()
        await client.send_frame(Opcode.TEXT, b"ok")
        await client.send_frame(Opcode.TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed")
        header_and_data = await client.read_frame()
        assert header_and_data is not None
        assert header_and_data[1] == b"ok"  # the message before the violation is echoed
        code, _reason = await client.read_close()
        assert code == 1007
        # The server half-closed after its close frame and waits for us to close TCP.
        assert await client.read_until_eof() == b""
    finally:
        await client.aclose()


@bounded
async def test_plain_http_get_is_refused_with_426(port: int) -> None:
    client = await RawClient.connect(port)
    try:
        await client.send(f"GET / HTTP/1.1\r\nHost: {HOST}\r\n\r\n".encode())
        status, headers, _body = await client.read_http_response()
        assert status == 426
        assert headers["upgrade"] == "websocket"
    finally:
        await client.aclose()


def test_the_docs_quote_the_example_as_it_is() -> None:
    """docs/protocol.md's code blocks are the example's code, verbatim."""
    page = (ROOT / "docs" / "protocol.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", page, re.DOTALL)
    assert len(blocks) == 2
    source = EXAMPLE.read_text()
    for block in blocks:
        assert block in source


def test_the_example_imports_only_trio_ws_protocol() -> None:
    tree = ast.parse(EXAMPLE.read_text())
    imported = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {name for name in imported if name and name.startswith(("trio", "h11"))} == {
        "trio_ws.protocol"
    }


def test_importing_the_protocol_does_not_import_trio() -> None:
    code = "import sys, trio_ws.protocol; sys.exit('trio' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
