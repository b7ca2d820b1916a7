"""Running a server as a program: ``sys.exit(trio_ws.run_main(main, *args))``.

Stops quietly on Ctrl-C or SIGTERM (by cancelling ``main``, so a server closes its
connections with 1001), and turns the start-up errors a user can fix (port in use, missing
optional extra, unreadable TLS file) into one line on standard error and exit status 1,
instead of a traceback inside an ``ExceptionGroup``.
"""

from __future__ import annotations

import errno
import ssl
import sys
from collections.abc import Awaitable, Callable

import trio

from ._workers import wait_for_stop

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found,unused-ignore]

__all__ = ["StartupError", "describe_startup_error", "run_main"]


class StartupError(Exception):
    """A problem the user can fix before the program can run; its message says what is wrong
    and how to fix it, on one line. ``run_main()`` prints it without a traceback."""


def leaf_error(exc: BaseException) -> BaseException:
    """``exc`` without the single-member exception groups that Trio's nurseries wrap it in."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def describe_startup_error(exc: BaseException) -> str | None:
    """One line saying what is wrong and how to fix it, for the errors a user can fix
    (``StartupError``, port in use, a missing optional extra, a missing or unreadable file,
    an invalid TLS certificate or key), also inside single-member exception groups;
    ``None`` for anything else (a bug, whose traceback is needed)."""
    leaf = leaf_error(exc)
    if isinstance(leaf, StartupError):
        return str(leaf)
    if isinstance(leaf, ImportError):
        return str(leaf)
    if isinstance(leaf, ssl.SSLError):
        return f"invalid TLS certificate or key: {leaf.reason or leaf}; check the files given"
    if isinstance(leaf, OSError):
        if leaf.errno == errno.EADDRINUSE:
            return f"{leaf.strerror}; stop the program using it or choose another port"
        if leaf.errno == errno.EADDRNOTAVAIL:
            return f"{leaf.strerror}: this machine has no such address; choose another host"
        if leaf.errno == errno.EACCES and leaf.filename is None:
            return f"{leaf.strerror}: ports below 1024 need privileges; choose a higher port"
        if leaf.filename is not None:
            return f"cannot read {leaf.filename}: {leaf.strerror}"
    return None


def run_main(main: Callable[..., Awaitable[object]], *args: object) -> int:
    """Run ``await main(*args)`` with Trio as a program's entry point; return its exit status,
    for ``sys.exit(run_main(main, *args))``.

    - ``main`` returns: its result if that is an ``int``, else 0.
    - Ctrl-C (SIGINT) or SIGTERM: ``main`` is cancelled (a server closes its connections with
      1001 and waits for their closing handshakes), then 0, with no traceback.
    - A start-up error the user can fix (see ``describe_startup_error()``: port in use, a
      missing optional extra such as coredis, an unreadable TLS file, a ``StartupError``):
      ``error: <what and how to fix it>`` on one line on standard error, then 1.
    - Any other exception propagates as itself, not wrapped in an ``ExceptionGroup``.
    """
    try:
        result = trio.run(_until_stopped, main, args)
    except BaseException as exc:
        leaf = leaf_error(exc)
        if isinstance(leaf, KeyboardInterrupt):  # before the signal handler was in place
            return 0
        message = describe_startup_error(leaf)
        if message is None:
            if leaf is not exc:
                raise leaf from leaf.__cause__  # unwrapped, its own cause kept
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


async def _until_stopped(
    main: Callable[..., Awaitable[object]], args: tuple[object, ...]
) -> object:
    result: object = None
    async with trio.open_nursery() as nursery:

        async def run() -> None:
            nonlocal result
            result = await main(*args)
            nursery.cancel_scope.cancel()

        nursery.start_soon(run)
        await wait_for_stop()
        nursery.cancel_scope.cancel()
    return result
