"""The Prometheus export (trio_ws/_features/_prometheus.py): metrics_to_prometheus's text page,
read back with prometheus_client's parser, and the /metrics page of the broadcast example."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from helpers import first_line, http_exchange, status_of

import trio_ws

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TIMEOUT = 20

prometheus_parser = pytest.importorskip("prometheus_client.parser")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of a Prometheus text page, parsed by
    prometheus_client's own parser."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in prometheus_parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_the_prometheus_text_has_every_counter() -> None:
    metrics = trio_ws.Metrics()
    metrics.count_handshake(101)
    metrics.count_handshake(403)
    metrics.count_open()
    metrics.messages_sent, metrics.bytes_sent = 7, 700
    metrics.deflate_raw_bytes_sent, metrics.deflate_bytes_sent = 600, 100
    metrics.count_close("remote", 1001)
    metrics.room_dropped = 4
    metrics.room_resumed, metrics.room_resume_refused, metrics.room_replayed = 3, 2, 30
    body, content_type = trio_ws.metrics_to_prometheus(metrics, namespace="chat")
    assert content_type.startswith("text/plain; version=0.0.4")
    got = samples(body.decode())
    assert got[("chat_connections_open", ())] == 0
    assert got[("chat_connections_total", ())] == 1
    assert got[("chat_handshakes_total", (("status", "101"),))] == 1
    assert got[("chat_handshakes_total", (("status", "403"),))] == 1
    assert got[("chat_messages_total", (("direction", "sent"),))] == 7
    assert got[("chat_messages_total", (("direction", "received"),))] == 0
    assert got[("chat_payload_bytes_total", (("direction", "sent"),))] == 700
    assert got[("chat_deflate_raw_bytes_total", (("direction", "sent"),))] == 600
    assert got[("chat_deflate_bytes_total", (("direction", "sent"),))] == 100
    assert got[("chat_closes_total", (("code", "1001"), ("side", "remote")))] == 1
    assert got[("chat_room_dropped_total", ())] == 4
    assert got[("chat_room_resumes_total", (("result", "recovered"),))] == 3
    assert got[("chat_room_resumes_total", (("result", "refused"),))] == 2
    assert got[("chat_room_replayed_total", ())] == 30
    assert got[("chat_backplane_reconnects_total", ())] == 0


async def test_the_broadcast_example_serves_metrics() -> None:
    """``examples/broadcast_server.py``: /metrics over 127.0.0.1 reports what clients did."""
    process = await trio.lowlevel.open_process(
        [sys.executable, str(ROOT / "examples" / "broadcast_server.py"), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    assert process.stdout is not None
    try:
        with trio.fail_after(TIMEOUT):
            line = await first_line(process, "the example")
            port = int(re.search(rb":(\d+)/", line).group(1))  # type: ignore[union-attr]
            url = f"ws://{HOST}:{port}/ws"
            async with (
                trio_ws.open_websocket_url(url) as a,
                trio_ws.open_websocket_url(url) as b,
            ):
                received: list[str] = []  # everything the server sent to either
                for ws in (a, b):  # each first gets its position: it has joined the room
                    received.append(str(await ws.receive()))
                    assert json.loads(received[-1])["missing"] is False
                for i in range(3):
                    await a.send(f"message {i}")  # 9 bytes, to both members in an envelope
                    for ws in (a, b):
                        received.append(str(await ws.receive()))
                        assert json.loads(received[-1])["data"] == f"message {i}"
                missing = await http_exchange(port, b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n")
                assert status_of(missing) == 404
                response = await http_exchange(port, b"GET /metrics HTTP/1.1\r\nHost: h\r\n\r\n")
            head, _, body = response.partition(b"\r\n\r\n")
            assert status_of(response) == 200
            assert b"text/plain; version=0.0.4" in head
            got = samples(body.decode())
            assert got[("trio_ws_connections_open", ())] == 2
            assert got[("trio_ws_connections_total", ())] == 2
            assert got[("trio_ws_handshakes_total", (("status", "101"),))] == 2
            assert got[("trio_ws_handshakes_total", (("status", "404"),))] == 1
            assert got[("trio_ws_messages_total", (("direction", "received"),))] == 3
            assert got[("trio_ws_messages_total", (("direction", "sent"),))] == 8
            assert got[("trio_ws_payload_bytes_total", (("direction", "received"),))] == 27
            sent = sum(len(message.encode()) for message in received)
            assert got[("trio_ws_payload_bytes_total", (("direction", "sent"),))] == sent
            assert got[("trio_ws_room_dropped_total", ())] == 0
            process.send_signal(signal.SIGTERM)
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            with trio.CancelScope(shield=True):
                await process.wait()
        await process.stdout.aclose()
