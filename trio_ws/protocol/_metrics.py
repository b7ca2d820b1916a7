"""Counters an operator reads: connections, handshakes, messages, bytes, closes, rooms, backplanes.

A ``Metrics`` object holds plain ``int`` attributes that the code counting them increments in
place (no locks: a Trio program runs one task at a time, and a process has its own object).
The sans-I/O core (``Connection``) counts messages, bytes, compression and closes; the server
counts the answers to opening handshakes; a ``Room`` counts its slow members into the metrics
of the connection concerned. Backplanes keep their own counters, which a ``Metrics`` reads when
it is read (``track_backplane()``): nothing is counted twice.

This module does no I/O and does not import Trio; ``trio_ws._features._prometheus`` exports
the counters in the Prometheus format.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["LOCAL", "REMOTE", "Metrics"]

#: Who sent the close frame that started the closing handshake (``Metrics.close_codes``).
LOCAL = "local"
REMOTE = "remote"


class _BackplaneCounters(Protocol):
    """What ``Metrics`` reads of a backplane (``RedisBackplane``, ``RedisHistory`` and
    ``RedisPresence`` have all of it)."""

    @property
    def connected(self) -> bool: ...
    @property
    def connections(self) -> int: ...
    @property
    def missed(self) -> int: ...
    @property
    def dropped(self) -> int: ...


class Metrics:
    """Cheap counters for a server, read with ``snapshot()`` or the attributes themselves.

    Every ``WebSocketServer`` has one (``server.metrics``), made for it unless one is given
    (``serve_websocket(..., metrics=m)``, so that several servers of a process add up in one).
    Counters only ever grow, except the gauge ``connections_open``. Byte counts are in bytes;
    "payload" means the application's data: the UTF-8 bytes of a text message, before
    compression when sending and after decompression when receiving (frame headers, masks,
    control frames and the HTTP handshake are not counted).

    Reading is free of side effects and may happen at any time (e.g. from a ``/metrics`` page).
    """

    __slots__ = (
        "_backplanes",
        "bytes_received",
        "bytes_sent",
        "close_codes",
        "connections_open",
        "connections_total",
        "deflate_bytes_received",
        "deflate_bytes_sent",
        "deflate_raw_bytes_received",
        "deflate_raw_bytes_sent",
        "handshakes",
        "messages_received",
        "messages_sent",
        "room_closed_slow",
        "room_dropped",
        "room_replayed",
        "room_resume_refused",
        "room_resumed",
    )

    def __init__(self) -> None:
        #: WebSocket connections open now: counted from the 101 response until the closing
        #: handshake is over or the stream ended (a gauge: it goes down too).
        self.connections_open = 0
        #: WebSocket connections opened (101 responses sent) since the object was made.
        self.connections_total = 0
        #: HTTP requests the server answered, by status: 101 for each upgrade accepted, and
        #: every other status it answered with, whether the server chose it (400 bad
        #: handshake, 403 origin, 408 handshake timeout, 426 not an upgrade, 431 head too
        #: large, 503 ``max_connections``) or the handler did (``respond()``/``reject()``, a
        #: 200 page included). Clients that leave before an answer are not counted.
        self.handshakes: dict[int, int] = {}
        #: Whole data messages received (a fragmented one counts once, when it ends).
        self.messages_received = 0
        #: Whole data messages accepted for sending (``send()``, ``Room`` deliveries).
        self.messages_sent = 0
        #: Payload bytes received (after decompression).
        self.bytes_received = 0
        #: Payload bytes accepted for sending (before compression).
        self.bytes_sent = 0
        #: Of ``bytes_received``, those of compressed messages (after decompression) ...
        self.deflate_raw_bytes_received = 0
        #: ... and what they took on the wire, compressed.
        self.deflate_bytes_received = 0
        #: Of ``bytes_sent``, those of messages sent compressed (before compression) ...
        self.deflate_raw_bytes_sent = 0
        #: ... and what they take on the wire, compressed.
        self.deflate_bytes_sent = 0
        #: Closed connections by ``(side, code)``: ``side`` is ``"local"`` when this end sent
        #: the first close frame (our ``aclose()`` code, 1001 at shutdown, a protocol error's
        #: code, 1011 on keepalive timeout...), ``"remote"`` when the peer did (its code, 1005
        #: for a close frame without one); a stream that ended without any close frame is
        #: ``("remote", 1006)``.
        self.close_codes: dict[tuple[str, int], int] = {}
        #: Broadcast messages a ``Room`` dropped for a member whose queue was full (DROP).
        self.room_dropped = 0
        #: Members a ``Room`` closed because their queue was full (CLOSE policy).
        self.room_closed_slow = 0
        #: ``Room.join()`` calls with a resume point (``since``) that replayed everything the
        #: client missed, and those that could not (history lost or too short: the client
        #: reloads). A rising share of refusals says the history is too short.
        self.room_resumed = 0
        self.room_resume_refused = 0
        #: Messages a ``Room`` replayed from its history to members resuming.
        self.room_replayed = 0
        self._backplanes: list[_BackplaneCounters] = []

    # Counting (called by the library) ---------------------------------------------------------

    def count_handshake(self, status: int) -> None:
        """Count an answer to an HTTP request (``handshakes``)."""
        self.handshakes[status] = self.handshakes.get(status, 0) + 1

    def count_open(self) -> None:
        """A WebSocket connection opened."""
        self.connections_open += 1
        self.connections_total += 1

    def count_close(self, side: str, code: int) -> None:
        """A WebSocket connection closed; ``side`` sent the first close frame (see
        ``close_codes``)."""
        self.connections_open -= 1
        key = (side, code)
        self.close_codes[key] = self.close_codes.get(key, 0) + 1

    # Backplanes -------------------------------------------------------------------------------

    def track_backplane(self, backplane: _BackplaneCounters) -> None:
        """Report ``backplane``'s counters too (read when the metrics are read).

        ``backplane`` is a ``RedisBackplane``, a ``RedisHistory`` or a ``RedisPresence``: a
        process's links to Redis (or anything with their ``connected``, ``connections``,
        ``missed`` and ``dropped``). Tracking it twice counts it once.
        """
        if not any(tracked is backplane for tracked in self._backplanes):
            self._backplanes.append(backplane)

    @property
    def backplane_connected(self) -> int:
        """Tracked backplanes connected now (a gauge)."""
        return sum(1 for bp in self._backplanes if bp.connected)

    @property
    def backplane_reconnects(self) -> int:
        """Reconnections of the tracked backplanes (connections after the first of each)."""
        return sum(max(bp.connections - 1, 0) for bp in self._backplanes)

    @property
    def backplane_missed(self) -> int:
        """Messages from other processes that never arrived (gaps in their sequence numbers)."""
        return sum(bp.missed for bp in self._backplanes)

    @property
    def backplane_dropped(self) -> int:
        """Messages not handed to the other processes (backplane offline or its queue full)."""
        return sum(bp.dropped for bp in self._backplanes)

    # Reading ----------------------------------------------------------------------------------

    @property
    def compression_ratio_sent(self) -> float | None:
        """``deflate_raw_bytes_sent / deflate_bytes_sent`` (e.g. 3.0: a third of the size);
        ``None`` before any compressed message."""
        return _ratio(self.deflate_raw_bytes_sent, self.deflate_bytes_sent)

    @property
    def compression_ratio_received(self) -> float | None:
        """``deflate_raw_bytes_received / deflate_bytes_received``; ``None`` before any."""
        return _ratio(self.deflate_raw_bytes_received, self.deflate_bytes_received)

    def snapshot(self) -> dict[str, Any]:
        """Every counter at this instant, as a new ``dict`` (copies of the two dicts).

        Keys are the attribute names: the ``int`` counters, ``handshakes``
        (``{status: count}``), ``close_codes`` (``{(side, code): count}``), and the
        ``backplane_*`` sums.
        """
        return {
            "connections_open": self.connections_open,
            "connections_total": self.connections_total,
            "handshakes": dict(self.handshakes),
            "messages_received": self.messages_received,
            "messages_sent": self.messages_sent,
            "bytes_received": self.bytes_received,
            "bytes_sent": self.bytes_sent,
            "deflate_raw_bytes_received": self.deflate_raw_bytes_received,
            "deflate_bytes_received": self.deflate_bytes_received,
            "deflate_raw_bytes_sent": self.deflate_raw_bytes_sent,
            "deflate_bytes_sent": self.deflate_bytes_sent,
            "close_codes": dict(self.close_codes),
            "room_dropped": self.room_dropped,
            "room_closed_slow": self.room_closed_slow,
            "room_resumed": self.room_resumed,
            "room_resume_refused": self.room_resume_refused,
            "room_replayed": self.room_replayed,
            "backplane_connected": self.backplane_connected,
            "backplane_reconnects": self.backplane_reconnects,
            "backplane_missed": self.backplane_missed,
            "backplane_dropped": self.backplane_dropped,
        }

    def __repr__(self) -> str:
        return f"<Metrics {self.snapshot()!r}>"


def _ratio(raw: int, compressed: int) -> float | None:
    return raw / compressed if compressed else None
