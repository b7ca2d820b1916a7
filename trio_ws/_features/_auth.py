"""Authentication hooks: wrap a handler so that it only runs for requests that pass.

Each wrapper takes a handler called as ``await handler(request, **params)`` (a route's
handler, a ``Router``, or any server handler) and returns one with the same call signature
that answers refused requests itself, before the handshake completes::

    @router.route("/admin")
    @basic_auth(check_password, realm="admin")
    async def admin(request: WebSocketRequest) -> None: ...

A check may be a plain or an ``async`` function. Whatever truthy value it returns is the
principal (``True`` stands for the user name or the token); with ``as_param="user"`` it is
passed to the handler as ``user=``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import inspect
from collections.abc import Awaitable, Callable
from http.cookies import CookieError, SimpleCookie
from typing import Any, TypeVar
from urllib.parse import parse_qs

from .._trio import WebSocketRequest

__all__ = [
    "basic_auth",
    "basic_credentials",
    "bearer_token",
    "find_token",
    "request_cookies",
    "require",
]

_T = TypeVar("_T")

# Each wrapper's type is spelled out, not aliased, so that mypy keeps it generic: it takes a
# handler returning T and gives one returning T, or None after answering a refusal itself.

#: ``(status, headers, body)`` to refuse a request with.
_Refusal = tuple[int, list[tuple[str, str]], str]


class _Accepted:
    """A request let through, with the principal the check returned."""

    def __init__(self, principal: object) -> None:
        self.principal = principal


_Gate = Callable[[WebSocketRequest], Awaitable["_Accepted | _Refusal"]]


def _guard(
    gate: _Gate, as_param: str | None
) -> Callable[[Callable[..., Awaitable[_T]]], Callable[..., Awaitable[_T | None]]]:
    """Wrap a handler so that ``gate`` decides first; refusals are answered here."""

    def decorate(handler: Callable[..., Awaitable[_T]]) -> Callable[..., Awaitable[_T | None]]:
        @functools.wraps(handler)
        async def guarded(request: WebSocketRequest, **params: Any) -> _T | None:
            verdict = await gate(request)
            if not isinstance(verdict, _Accepted):
                status, headers, body = verdict
                await request.respond(status, headers=headers, body=body)
                return None
            if as_param is not None:
                params[as_param] = verdict.principal
            return await handler(request, **params)

        return guarded

    return decorate


async def _call_check(check: Callable[..., object], *args: Any) -> object:
    result = check(*args)
    if inspect.isawaitable(result):
        result = await result
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


# Reading credentials -----------------------------------------------------------------------


def basic_credentials(request: WebSocketRequest) -> tuple[str, str] | None:
    """``(user, password)`` from an ``Authorization: Basic`` header, or ``None``."""
    scheme, _, value = (request.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def request_cookies(request: WebSocketRequest) -> dict[str, str]:
    """The request's cookies by name (every ``Cookie`` header; malformed ones are skipped)."""
    cookies: dict[str, str] = {}
    for header in request.headers.get_all("cookie"):
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(header)
        except CookieError:
            continue
        cookies.update((name, morsel.value) for name, morsel in jar.items())
    return cookies


def find_token(
    request: WebSocketRequest, *, cookie: str | None = None, query: str | None = None
) -> str | None:
    """A bearer token: ``Authorization: Bearer``, else the cookie, else the query parameter.

    Browsers cannot set headers on a WebSocket, so their clients send a cookie or a query
    parameter instead; ``cookie`` and ``query`` name where to look (neither by default).
    """
    scheme, _, value = (request.headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if cookie is not None:
        token = request_cookies(request).get(cookie)
        if token:
            return token
    if query is not None:
        values = parse_qs(request.query).get(query)
        if values and values[0]:
            return values[0]
    return None


# Wrappers -----------------------------------------------------------------------------------


def basic_auth(
    check: Callable[[str, str], object],
    *,
    realm: str = "trio_ws",
    as_param: str | None = None,
) -> Callable[[Callable[..., Awaitable[_T]]], Callable[..., Awaitable[_T | None]]]:
    """Require HTTP Basic credentials that ``check(user, password)`` accepts.

    Without credentials, or when the check returns a falsy value, the answer is 401 with
    ``WWW-Authenticate: Basic realm="..."`` (so that browsers ask again). Compare passwords
    with ``hmac.compare_digest``.
    """
    challenge = [("WWW-Authenticate", f'Basic realm={_quote(realm)}, charset="UTF-8"')]

    async def gate(request: WebSocketRequest) -> _Accepted | _Refusal:
        credentials = basic_credentials(request)
        if credentials is not None:
            principal = await _call_check(check, *credentials)
            if principal:
                return _Accepted(credentials[0] if principal is True else principal)
        return 401, challenge, "Unauthorized\n"

    return _guard(gate, as_param)


def bearer_token(
    check: Callable[[str], object],
    *,
    realm: str = "trio_ws",
    cookie: str | None = None,
    query: str | None = None,
    as_param: str | None = None,
) -> Callable[[Callable[..., Awaitable[_T]]], Callable[..., Awaitable[_T | None]]]:
    """Require a token that ``check(token)`` accepts (found as ``find_token()`` says).

    No token: 401 with ``WWW-Authenticate: Bearer realm="..."``. A token the check refuses:
    401 with ``error="invalid_token"`` (RFC 6750 section 3.1).
    """
    missing = [("WWW-Authenticate", f"Bearer realm={_quote(realm)}")]
    invalid = [
        ("WWW-Authenticate", f'Bearer realm={_quote(realm)}, error="invalid_token"'),
    ]

    async def gate(request: WebSocketRequest) -> _Accepted | _Refusal:
        token = find_token(request, cookie=cookie, query=query)
        if token is None:
            return 401, missing, "Unauthorized\n"
        principal = await _call_check(check, token)
        if not principal:
            return 401, invalid, "Unauthorized\n"
        return _Accepted(token if principal is True else principal)

    return _guard(gate, as_param)


def require(
    check: Callable[[WebSocketRequest], object],
    *,
    status: int = 403,
    message: str = "Forbidden",
    as_param: str | None = None,
) -> Callable[[Callable[..., Awaitable[_T]]], Callable[..., Awaitable[_T | None]]]:
    """Refuse with ``status`` (403) unless ``check(request)`` returns a truthy value.

    For authorization after authentication (a role, an Origin, a source address), or for
    a custom scheme: stack it under ``basic_auth``/``bearer_token``.
    """

    async def gate(request: WebSocketRequest) -> _Accepted | _Refusal:
        principal = await _call_check(check, request)
        if not principal:
            return status, [], f"{message}\n"
        return _Accepted(principal)

    return _guard(gate, as_param)
