"""The counters of a ``Metrics`` in the Prometheus format, for ``prometheus_client``.

``prometheus_client`` (the ``trio_ws[prometheus]`` extra) is imported only when used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from ..protocol import Metrics

__all__ = ["PrometheusCollector", "metrics_to_prometheus"]


def _prometheus() -> Any:
    try:
        import prometheus_client
        import prometheus_client.core
    except ImportError:
        raise ImportError(
            "exporting metrics needs prometheus_client: pip install 'trio_ws[prometheus]'"
        ) from None
    return prometheus_client


class PrometheusCollector:
    """A ``prometheus_client`` collector that reads a ``Metrics`` at each scrape.

    ``prometheus_client.REGISTRY.register(PrometheusCollector(server.metrics))`` adds the
    samples below to an application's own registry; ``metrics_to_prometheus()`` renders them
    alone. Names start with ``namespace`` (``trio_ws`` by default)::

        trio_ws_connections_open                      gauge
        trio_ws_connections_total                     counter
        trio_ws_handshakes_total{status}              counter
        trio_ws_messages_total{direction}             counter (direction: sent, received)
        trio_ws_payload_bytes_total{direction}        counter
        trio_ws_deflate_raw_bytes_total{direction}    counter
        trio_ws_deflate_bytes_total{direction}        counter
        trio_ws_closes_total{side,code}               counter (side: local, remote)
        trio_ws_room_dropped_total                    counter
        trio_ws_room_closed_slow_total                counter
        trio_ws_room_resumes_total{result}            counter (result: recovered, refused)
        trio_ws_room_replayed_total                   counter
        trio_ws_backplane_connected                   gauge
        trio_ws_backplane_reconnects_total            counter
        trio_ws_backplane_missed_total                counter
        trio_ws_backplane_dropped_total               counter

    The meanings are those of the ``Metrics`` attributes of the same names. Making one does
    not need ``prometheus_client``; ``collect()`` raises ``ImportError`` without it.
    """

    def __init__(self, metrics: Metrics, *, namespace: str = "trio_ws") -> None:
        self.metrics = metrics
        self.namespace = namespace

    def describe(self) -> list[Any]:
        """Nothing, so that registering does not read the counters (they are read at each
        ``collect()``)."""
        return []

    def collect(self) -> Iterator[Any]:
        """The metric families, read from ``metrics`` now."""
        core = _prometheus().core
        m = self.metrics
        ns = self.namespace

        def counter(name: str, doc: str, value: int) -> Any:
            return core.CounterMetricFamily(f"{ns}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: int) -> Any:
            return core.GaugeMetricFamily(f"{ns}_{name}", doc, value=value)

        def by_direction(name: str, doc: str, sent: int, received: int) -> Any:
            family = core.CounterMetricFamily(f"{ns}_{name}", doc, labels=["direction"])
            family.add_metric(["sent"], sent)
            family.add_metric(["received"], received)
            return family

        yield gauge("connections_open", "WebSocket connections open now.", m.connections_open)
        yield counter("connections", "WebSocket connections opened (101).", m.connections_total)
        handshakes = core.CounterMetricFamily(
            f"{ns}_handshakes", "HTTP requests answered, by status.", labels=["status"]
        )
        for status, count in sorted(m.handshakes.items()):
            handshakes.add_metric([str(status)], count)
        yield handshakes
        yield by_direction("messages", "Data messages.", m.messages_sent, m.messages_received)
        yield by_direction(
            "payload_bytes",
            "Payload bytes (uncompressed, UTF-8 for text).",
            m.bytes_sent,
            m.bytes_received,
        )
        yield by_direction(
            "deflate_raw_bytes",
            "Payload bytes of compressed messages, uncompressed.",
            m.deflate_raw_bytes_sent,
            m.deflate_raw_bytes_received,
        )
        yield by_direction(
            "deflate_bytes",
            "Payload bytes of compressed messages, compressed.",
            m.deflate_bytes_sent,
            m.deflate_bytes_received,
        )
        closes = core.CounterMetricFamily(
            f"{ns}_closes",
            "Connections closed, by who sent the first close frame and its code.",
            labels=["side", "code"],
        )
        for (side, code), count in sorted(m.close_codes.items()):
            closes.add_metric([side, str(code)], count)
        yield closes
        yield counter("room_dropped", "Broadcasts dropped for slow members.", m.room_dropped)
        yield counter("room_closed_slow", "Slow members closed by rooms.", m.room_closed_slow)
        resumes = core.CounterMetricFamily(
            f"{ns}_room_resumes",
            "Room joins with a resume point, by whether all that was missed was replayed.",
            labels=["result"],
        )
        resumes.add_metric(["recovered"], m.room_resumed)
        resumes.add_metric(["refused"], m.room_resume_refused)
        yield resumes
        yield counter("room_replayed", "Messages replayed to resuming members.", m.room_replayed)
        yield gauge("backplane_connected", "Backplanes connected now.", m.backplane_connected)
        yield counter("backplane_reconnects", "Backplane reconnections.", m.backplane_reconnects)
        yield counter(
            "backplane_missed", "Backplane messages that never arrived.", m.backplane_missed
        )
        yield counter(
            "backplane_dropped", "Messages not sent over the backplane.", m.backplane_dropped
        )


def metrics_to_prometheus(metrics: Metrics, *, namespace: str = "trio_ws") -> tuple[bytes, str]:
    """``(body, content_type)``: ``metrics`` in the Prometheus text exposition format.

    What a ``/metrics`` page answers (see ``PrometheusCollector`` for the names). Raises
    ``ImportError`` (with the ``pip install`` line) without ``prometheus_client``.
    """
    prometheus = _prometheus()
    registry = prometheus.CollectorRegistry(auto_describe=False)
    registry.register(PrometheusCollector(metrics, namespace=namespace))
    # The text format generate_latest() writes (CONTENT_TYPE_LATEST names 1.0.0 since 0.22).
    content_type = getattr(prometheus, "CONTENT_TYPE_PLAIN_0_0_4", prometheus.CONTENT_TYPE_LATEST)
    return prometheus.generate_latest(registry), content_type
