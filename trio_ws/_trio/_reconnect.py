"""A client that reconnects: ``async for connection in Reconnect(url)``, with backoff.

Each turn of the loop hands out a *connection attempt*, an async context manager, and the
caller enters it with ``async with connection as ws``::

    async for connection in trio_ws.Reconnect("ws://127.0.0.1:8000/feed"):
        async with connection as ws:
            async for message in ws:
                ...

Why two statements rather than ``async for ws in ...``: a connection owns a nursery (its
reader and writer tasks) and a cancel scope. If an iterator opened that nursery and handed
``ws`` out from inside it (an async generator yielding inside ``open_websocket_url()``), the
nursery would stay open across the caller's loop body, outside any ``async with`` of the
caller: ``break`` would leave it to the garbage collector, which runs the generator's cleanup
in another context, and Trio fails with ``TrioInternalError`` (what happens with
``websockets.trio``). Here the iterator holds nothing between turns: every nursery and
cancel scope is entered and exited by the caller's own ``async with``, so ``break``, ``return``,
an exception or a cancellation leave the block the ordinary way (closing the connection with
1000, 1011 or 1001), and the iterator needs no cleanup at all.
"""

from __future__ import annotations

import functools
import logging
import random
import ssl
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from types import TracebackType

import trio

from ..protocol._errors import ConnectionClosed, HandshakeError
from ._client import open_websocket_url
from ._options import WebSocketOptions
from ._websocket import WebSocketConnection

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["Reconnect", "ReconnectAttempt", "is_retryable"]

logger = logging.getLogger("trio_ws.reconnect")

#: HTTP statuses of a refused handshake that are worth retrying: the server is overloaded,
#: restarting or behind a proxy that cannot reach it yet. Any other refusal (400, 401, 403,
#: 404...) would be refused again, so it is raised at once.
RETRYABLE_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retryable(error: BaseException) -> bool:
    """Whether ``Reconnect`` retries after ``error`` (raised while connecting or by the block).

    Retried: a lost or closed connection (``ConnectionClosed``), network errors (``OSError``
    such as connection refused or reset), ``trio.TooSlowError`` (``connect_timeout``),
    ``trio.BrokenResourceError`` (unless caused by a TLS certificate that fails verification,
    which would fail again), a handshake
    cut off before any response (``HandshakeError`` with ``status`` 0) or refused with 408,
    425, 429 or 5xx, and exception groups made only of these. Not retried: other refusals
    (4xx: the request itself is wrong), ``ValueError`` (a bad URL), everything else.
    """
    if isinstance(error, BaseExceptionGroup):
        return all(is_retryable(e) for e in error.exceptions)
    if isinstance(error, HandshakeError):
        return error.status == 0 or error.status in RETRYABLE_STATUSES
    if isinstance(error, ssl.SSLCertVerificationError) or isinstance(
        error.__cause__,
        ssl.SSLCertVerificationError,  # a TLS handshake's BrokenResourceError
    ):
        return False
    return isinstance(
        error, (ConnectionClosed, OSError, trio.TooSlowError, trio.BrokenResourceError)
    )


_Context = AbstractAsyncContextManager[WebSocketConnection]

#: ``on_retry(attempt, delay, error)``: see ``Reconnect``.
RetryHook = Callable[[int, float, BaseException | None], None]


class Reconnect:
    """Connect to ``url`` again and again: ``async for connection in Reconnect(url):`` then
    ``async with connection as ws:`` for each connection.

    Entering ``connection`` connects (``open_websocket_url()`` with the given arguments),
    retrying with exponential backoff while the errors are retryable (``is_retryable()``):
    the n-th wait in a row is a random time (full jitter) between 0 and
    ``min(backoff_max, backoff_initial * backoff_factor ** (n - 1))`` seconds. A connection that
    stayed open at least ``backoff_max`` seconds resets the count. A non-retryable error, e.g.
    ``HandshakeError`` with status 403, is raised at once, as itself; after ``max_attempts``
    failed connection attempts in a row (``None``: no limit) the last error is raised.

    When the block ends normally (``async for message in ws`` ended with 1000 or 1001) or
    raises ``ConnectionClosed`` (1006 when the server died, or an exception group of those
    from the block's own nursery), the connection is closed, the error is kept in
    ``last_error``, and the loop goes on to reconnect. Any other exception leaves the loop.
    ``break`` (closes with 1000) and cancellation (1001) are safe: see the module's
    docstring for why the connection is entered by the caller rather than by the iterator.

    Before every wait, ``on_retry(attempt, delay, error)`` is called (``attempt``: 1 for the
    first retry after a success; ``delay`` in seconds; ``error``: why, or ``None`` when the
    block ended normally) and a line is logged on the ``trio_ws.reconnect`` logger (INFO).
    """

    def __init__(
        self,
        url: str,
        *,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        backoff_factor: float = 2.0,
        max_attempts: int | None = None,
        on_retry: RetryHook | None = None,
        ssl_context: ssl.SSLContext | None = None,
        subprotocols: Sequence[str] = (),
        extra_headers: Sequence[tuple[str, str]] = (),
        options: WebSocketOptions | None = None,
        connect_timeout: float = 10.0,
        proxy: str | bool = True,
        max_redirects: int = 5,
    ) -> None:
        if backoff_initial < 0 or backoff_max < backoff_initial or backoff_factor < 1:
            raise ValueError("need 0 <= backoff_initial <= backoff_max and backoff_factor >= 1")
        if max_attempts is not None and max_attempts < 1:
            raise ValueError("max_attempts must be at least 1 (or None)")
        #: The URL connected to.
        self.url = url
        #: Ceiling of the first wait, in seconds.
        self.backoff_initial = backoff_initial
        #: Ceiling of every wait, in seconds; a connection open this long resets the count.
        self.backoff_max = backoff_max
        #: How much the ceiling grows from one wait to the next.
        self.backoff_factor = backoff_factor
        #: Failed attempts in a row before the last error is raised; None: no limit.
        self.max_attempts = max_attempts
        #: Called before every wait as ``on_retry(attempt, delay, error)``, or None.
        self.on_retry = on_retry
        self._open_url: Callable[[], _Context]
        self._open_url = functools.partial(
            open_websocket_url,
            url,
            ssl_context=ssl_context,
            subprotocols=subprotocols,
            extra_headers=list(extra_headers),
            options=options,
            connect_timeout=connect_timeout,
            proxy=proxy,
            max_redirects=max_redirects,
        )
        #: Connections opened so far (successful handshakes).
        self.connections = 0
        #: Connection attempts that failed with a retryable error, in total.
        self.failures = 0
        #: Why the last connection ended or the last attempt failed (``None``: ended normally,
        #: or nothing happened yet).
        self.last_error: BaseException | None = None
        self._in_a_row = 0  # waits in a row without a lasting connection
        self._must_wait = False  # the previous turn ended: wait before connecting again
        self._connected_at = 0.0

    def __aiter__(self) -> Reconnect:
        return self

    async def __anext__(self) -> ReconnectAttempt:
        """The next connection attempt, to enter with ``async with``. Never ends by itself."""
        await trio.lowlevel.checkpoint()
        return ReconnectAttempt(self._open, self._ended)

    def connect(self) -> ReconnectAttempt:
        """One connection attempt, ``async with reconnect.connect() as ws:``, with the same
        retries as ``async for`` (for a loop written as ``while True``)."""
        return ReconnectAttempt(self._open, self._ended)

    def _delay(self) -> float:
        self._in_a_row += 1
        ceiling = self.backoff_initial * self.backoff_factor ** (self._in_a_row - 1)
        return random.uniform(0, min(self.backoff_max, ceiling))

    async def _wait(self, error: BaseException | None) -> None:
        delay = self._delay()
        if error is None:
            why = "connection ended"
        elif isinstance(error, ConnectionClosed):
            why = f"connection closed with {error.code} {error.reason}".rstrip()
        else:
            why = f"{type(error).__name__}: {error}"
        logger.info(
            "%s: %s; reconnecting in %.2f s (retry %d)", self.url, why, delay, self._in_a_row
        )
        if self.on_retry is not None:
            self.on_retry(self._in_a_row, delay, error)
        await trio.sleep(delay)

    async def _open(self) -> tuple[_Context, WebSocketConnection]:
        """Connect, retrying as documented; the entered context and its connection."""
        attempts = 0
        if self._must_wait:
            await self._wait(self.last_error)
        while True:
            attempts += 1
            context = self._open_url()
            try:
                ws = await context.__aenter__()
            except BaseException as exc:
                if not is_retryable(exc):
                    raise
                self.failures += 1
                self.last_error = exc
                if self.max_attempts is not None and attempts >= self.max_attempts:
                    raise
                await self._wait(exc)
                continue
            self.connections += 1
            self._connected_at = trio.current_time()
            self._must_wait = True
            return context, ws

    def _ended(self, error: BaseException | None) -> None:
        """A connection ended (``error`` if it raised a retryable error)."""
        self.last_error = error
        if trio.current_time() - self._connected_at >= self.backoff_max:
            self._in_a_row = 0


class ReconnectAttempt:
    """One turn of ``Reconnect``: ``async with attempt as ws`` connects (with retries) and
    yields the open ``WebSocketConnection``; see ``Reconnect``. Enter it once."""

    def __init__(
        self,
        open_connection: Callable[[], Awaitable[tuple[_Context, WebSocketConnection]]],
        ended: Callable[[BaseException | None], None],
    ) -> None:
        # The Reconnect's own methods, handed over: connect with retries; a connection ended.
        self._open_connection = open_connection
        self._ended = ended
        self._context: _Context | None = None
        self._used = False

    async def __aenter__(self) -> WebSocketConnection:
        if self._used:
            raise RuntimeError("a ReconnectAttempt can be entered only once")
        self._used = True
        self._context, ws = await self._open_connection()
        return ws

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        context, self._context = self._context, None
        assert context is not None
        try:
            await context.__aexit__(exc_type, exc, tb)
        except BaseException as error:
            if error is exc or not _is_connection_loss(error):
                raise
            exc = error  # the connection's own error in place of the block's
        if exc is None:
            self._ended(None)
            return False
        if _is_connection_loss(exc):
            self._ended(exc)
            return True  # reconnect: the loop goes on
        return False


def _is_connection_loss(error: BaseException) -> bool:
    """A ``ConnectionClosed``, or a group of nothing else (from the block's own nursery)."""
    if isinstance(error, BaseExceptionGroup):
        return all(_is_connection_loss(e) for e in error.exceptions)
    return isinstance(error, ConnectionClosed)
