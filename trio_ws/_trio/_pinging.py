"""Pings: ``ping()``, answering the peer's pongs, and keepalive (RFC 6455 section 5.5.2).

Keepalive pings are deadlines on a ``Timer`` (``_timer.py``) that a server shares among its
connections, not a task each. A pong later than ``ping_timeout`` fails the connection with
1011 "keepalive ping timeout" at once: a frozen peer cannot do a closing handshake.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import trio

from ._options import WebSocketOptions
from ._outbox import Offer, Outbox
from ._receiving import Receiving

__all__ = ["Pinging"]

logger = logging.getLogger("trio_ws")


class Pinging(Receiving):
    """The pinging part of ``WebSocketConnection``: a base class of it, not used alone."""

    __slots__ = (
        "_abort",
        "_keepalive_ping",
        "_keepalive_sent",
        "_pings",
    )

    # The connection's state this part uses (what it does not own is set by the connection).
    _outbox: Outbox
    _options: WebSocketOptions
    _pings: dict[bytes, trio.Event]
    _keepalive_ping: bytes | None
    _keepalive_sent: float
    _abort: tuple[int, str] | None

    if TYPE_CHECKING:  # what the connection does for this part

        @property
        def remote(self) -> Any: ...
        def _start_close(self, code: int, reason: str, *, discard_queued: bool = False) -> bool: ...
        def _arm_deadline(self, deadline: float) -> None: ...

    async def ping(self, payload: bytes | None = None) -> None:
        """Send a ping and wait for its pong (RFC 6455 section 5.5.2).

        ``payload`` (at most 125 bytes) defaults to 4 random bytes; it must be unique among
        pings in flight. Raises ``ValueError`` for a bad payload, ``ConnectionClosed`` if the
        connection closes before the pong.
        """
        if payload is None:
            payload = os.urandom(4)
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        if payload in self._pings:
            raise ValueError("a ping with this payload is already waiting for its pong")
        event = self._pings[payload] = trio.Event()
        if not self._receivers_waiting and self._outbox.sendable:
            self._hand_back()  # nobody receives: the connection's task reads the pong
        try:
            await self._offer(self._outbox.offer_ping, payload)
            await event.wait()
        finally:
            # A pong removes its ping; one still registered was woken by the close.
            unanswered = self._pings.pop(payload, None) is not None
        if unanswered:
            raise self._closed_exception()

    # Keepalive (RFC 6455 section 5.5.2) -------------------------------------------------------

    def _keepalive(self, now: float) -> float | None:
        """The keepalive timer's callback: ping, or give up on a late pong; the next deadline.

        A pong later than ``ping_timeout`` fails the connection with 1011 "keepalive ping
        timeout" without waiting for a closing handshake (the peer is not answering), so the
        worst case for a frozen peer is ``ping_interval + ping_timeout`` seconds.
        """
        if not self._outbox.sendable:
            return None
        interval = self._options.ping_interval
        timeout = self._options.ping_timeout
        assert interval is not None
        sent = self._keepalive_sent
        if self._keepalive_ping in self._pings:  # our last ping is not answered yet
            if timeout is not None and now < sent + timeout:
                return sent + timeout
            if timeout is not None:
                self._keepalive_timed_out()
                return None
            del self._pings[self._keepalive_ping]  # no timeout: forget it, ping again
        elif now < sent + interval:
            return sent + interval  # answered: the next ping on schedule
        payload = os.urandom(4)
        if (
            payload in self._pings
            or self._outbox.offer_ping(payload, bounded=False) is Offer.CLOSED
        ):
            return now + interval
        self._pings[payload] = trio.Event()
        self._keepalive_ping, self._keepalive_sent = payload, now
        if not self._receivers_waiting:
            self._hand_back()  # nobody receives: the connection's task reads the pong
        return now + (interval if timeout is None else min(interval, timeout))

    def _keepalive_timed_out(self) -> None:
        logger.info("keepalive ping to %s timed out", self.remote)
        self._abort = (1011, "keepalive ping timeout")
        self._start_close(*self._abort, discard_queued=True)
        self._arm_deadline(trio.current_time())  # no closing handshake to wait for

    def _on_pong(self, payload: bytes) -> None:
        # Section 5.5.3: a pong may answer only the latest ping; it acknowledges earlier ones.
        if payload not in self._pings:
            return
        for key in list(self._pings):
            self._pings.pop(key).set()
            if key == payload:
                break
