"""Request targets and WebSocket URLs (RFC 6455 section 3, RFC 3986, RFC 3987, RFC 9112)."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import quote, unquote, urlsplit

from ._errors import HandshakeError

__all__ = ["ascii_host", "quote_target", "split_target", "split_url"]


# Section 3 of RFC 9112: an absolute-form target; group 1 is what follows the authority.
_ABSOLUTE_FORM = re.compile(r"(?:https?|wss?)://[^/?#]*(.*)", re.IGNORECASE)


def split_target(target: str) -> tuple[str, str]:
    """The raw (still percent-encoded) path and query of a request target.

    An origin-form target (RFC 9112 section 3.2.1, ``absolute-path [ "?" query ]``) is split
    at its first ``?`` and nothing else, so that no path (``//host/x`` included) is ever
    read as an authority. An absolute-form target (section 3.2.2, which RFC 6455 section
    4.2.1 allows) gives the path and query after its authority. Raises ``HandshakeError``
    (400) for any other form.
    """
    if not target.startswith("/"):
        absolute = _ABSOLUTE_FORM.fullmatch(target)
        if absolute is None:
            raise HandshakeError("the request target must be a path or an absolute URI")
        target = absolute[1] if absolute[1].startswith("/") else "/" + absolute[1]
    path, _, query = target.partition("?")
    return path, query


# What a path and query may hold (RFC 3986 sections 3.3 and 3.4) besides the letters, digits
# and "-._~" that quote() never escapes; "%" keeps existing escapes.
_TARGET_SAFE = "!$&'()*+,;=:@/?%"
_STRAY_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def quote_target(target: str) -> str:
    """``target`` (a path and optional query, e.g. an IRI's) as an ASCII request target.

    As RFC 3987 section 3.1 converts an IRI to a URI: each character a URI cannot hold
    (non-ASCII, space, ``"#<>[\\]^`{|}``) becomes its UTF-8 bytes, percent-encoded; ``%XX``
    escapes are kept, and a ``%`` that starts none becomes ``%25``. So ``/a b/ø`` is sent as
    ``/a%20b/%C3%B8``, and a quoted target comes back unchanged. Raises ``ValueError`` if
    ``target`` does not start with ``/`` or holds a control character.
    """
    # The messages leave the target out: its query may hold a token.
    if not target.startswith("/"):
        raise ValueError("a request target (path and query) must start with '/'")
    if control := _CONTROL.search(target):
        raise ValueError(f"control character {control[0]!r} in the request target")
    return quote(_STRAY_PERCENT.sub("%25", target), safe=_TARGET_SAFE)


# A host name once in ASCII: LDH labels (underscores tolerated), or an IPv4 address.
_HOST_NAME = re.compile(r"[a-z0-9_-]+(\.[a-z0-9_-]+)*\.?", re.IGNORECASE)


def ascii_host(host: str) -> str:
    """``host`` as sent in DNS look-ups, TLS SNI and ``Host``: IDNA for non-ASCII names.

    ``Bücher.example`` becomes ``xn--bcher-kva.example`` (IDNA 2003 with Python's ``idna``
    codec; names are lower-cased); an IPv6 address (without brackets) is checked and kept.
    Raises ``ValueError`` for anything else that cannot be a host name, such as ``exa mple``
    or ``[::1]``.
    """
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"invalid IPv6 address {host!r}") from None
        return host
    try:
        name = host.encode("idna").decode("ascii").lower()
    except UnicodeError:
        name = ""
    if not _HOST_NAME.fullmatch(name):
        raise ValueError(f"invalid host name {host!r}")
    return name


def split_url(url: str) -> tuple[bool, str, int, str, str | None]:
    """``(secure, host, port, target, "user:password" or None)`` for a ws:// or wss:// URL.

    The URL may be an IRI (RFC 3987): the host is IDNA-encoded (``ascii_host()``) and the
    path and query are percent-encoded as UTF-8 (``quote_target()``), as browsers do. The
    port defaults to 80 (ws) or 443 (wss). Raises ``ValueError``, naming the problem, for
    another scheme, a fragment (RFC 6455 section 3), control characters, or an unusable
    host or port.
    """
    # The messages leave the URL out: it may hold a password or a token.
    if control := _CONTROL.search(url):
        raise ValueError(f"control character {control[0]!r} in the URL")
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"not a WebSocket URL: the scheme must be ws or wss, not {parts.scheme!r}")
    if "#" in url:
        raise ValueError("a WebSocket URL must not have a fragment")
    secure = parts.scheme == "wss"
    if not parts.hostname:
        raise ValueError("no host in the URL")
    if parts.netloc.rpartition("@")[2].startswith("[") and ":" not in parts.hostname:
        raise ValueError(f"invalid IPv6 address {parts.hostname!r}")  # Python 3.10 takes [x]
    host = ascii_host(parts.hostname)
    port = parts.port  # ValueError if not a number from 0 to 65535
    if port == 0:
        raise ValueError("port 0 in the URL")
    target = quote_target((parts.path or "/") + (f"?{parts.query}" if parts.query else ""))
    credentials = None
    if parts.username is not None:
        credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
    return secure, host, port or (443 if secure else 80), target, credentials
