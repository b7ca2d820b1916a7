"""A connection to Redis as the backplane and the room stores use it: coredis with no retries of
its own (the caller reconnects with backoff), a pub/sub connection that pings while idle, and
the helpers their reconnect loops share (errors described, passwords kept out of logs).
"""

from __future__ import annotations

import math
import random
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import trio

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

if TYPE_CHECKING:
    import coredis

__all__ = [
    "describe",
    "import_coredis",
    "keep_connected",
    "only_cancelled",
    "redacted",
    "subscribed_client",
]


def import_coredis() -> Any:
    """The coredis module (the ``redis`` extra); ImportError saying how to install it."""
    try:
        import coredis
        import coredis.retry
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise ImportError("Redis support needs coredis: pip install 'trio_ws[redis]'") from exc
    return coredis


@asynccontextmanager
async def subscribed_client(
    url: str,
    *,
    connect_timeout: float,
    command_timeout: float,
    ping_interval: float,
    client_options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[coredis.Redis[bytes], Any]]:
    """A client and its pub/sub connection for one session: no retries inside (the caller
    reconnects), a ping on the subscription after ``ping_interval`` idle seconds."""
    lib = import_coredis()
    client: coredis.Redis[bytes] = lib.Redis.from_url(
        url,
        connect_timeout=connect_timeout,
        stream_timeout=command_timeout,
        retry_policy=lib.retry.NoRetryPolicy(),
        **(client_options or {}),
    )
    async with client:
        pubsub = client.pubsub(
            ignore_subscribe_messages=True,
            retry_policy=lib.retry.NoRetryPolicy(),
            subscription_timeout=connect_timeout,
            max_idle_seconds=ping_interval,
        )
        async with pubsub:
            yield client, pubsub


async def keep_connected(
    session: Callable[[], Awaitable[None]],
    down: Callable[[], bool],
    report: Callable[[str, bool, int], None],
    *,
    backoff_initial: float,
    backoff_max: float,
) -> None:
    """Run ``session()`` again and again until cancelled, waiting between two attempts from
    ``backoff_initial`` seconds, doubled each time up to ``backoff_max`` (with jitter).

    After each session (ended, failed or cancelled), ``down()`` cleans up and says whether the
    session had connected, which starts the backoff afresh; then ``report(error, was_up,
    failures)`` logs the end (``failures``: attempts in a row, this one included, since the
    last connection).
    """
    delay, failures = backoff_initial, 0
    while True:
        try:
            await session()
            error = "connection ended"
        except Exception as exc:
            error = describe(exc)
        except BaseException as exc:
            await only_cancelled(exc)
            raise
        finally:
            was_up = down()
        if was_up:
            delay, failures = backoff_initial, 0
        failures += 1
        report(error, was_up, failures)
        await trio.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, backoff_max)


async def only_cancelled(exc: BaseException) -> None:
    """Raise Cancelled alone if we are cancelled and ``exc`` has only Cancelled and errors.

    coredis's teardown can fail (e.g. ClosedResourceError) while it is being cancelled; those
    errors would come out beside the Cancelled and crash the caller's nursery.
    """
    if not isinstance(exc, BaseExceptionGroup) or trio.current_effective_deadline() != -math.inf:
        return
    _, rest = exc.split(trio.Cancelled)
    if rest is None or isinstance(rest, Exception):
        await trio.lowlevel.checkpoint()  # raises Cancelled


def describe(exc: BaseException) -> str:
    """The first leaf of ``exc`` (inside exception groups) as ``Type: message``."""
    while True:
        inner = getattr(exc, "exceptions", None)
        if not inner:
            break
        exc = inner[0]
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def redacted(url: str) -> str:
    """``url`` without its password."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}:***@" if parts.username else ":***@"
    return urlunsplit(parts._replace(netloc=user + netloc))
