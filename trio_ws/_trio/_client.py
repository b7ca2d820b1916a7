"""The WebSocket client: connect, run the opening handshake, yield an open connection."""

from __future__ import annotations

import base64
import contextlib
import ssl
import urllib.request
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

import h11
import trio

from ..protocol import Connection, ResponseReceived, Role
from ..protocol._errors import HandshakeError, RedirectError
from ..protocol._handshake import HeaderList, Request
from ..protocol._urls import ascii_host, quote_target, split_target, split_url
from ._options import WebSocketOptions
from ._websocket import WebSocketConnection

__all__ = ["connect_websocket", "open_websocket", "open_websocket_url"]


def _host_header(host: str, port: int, secure: bool) -> str:
    name = f"[{host}]" if ":" in host else host
    return name if port == (443 if secure else 80) else f"{name}:{port}"


async def connect_websocket(
    nursery: trio.Nursery,
    host: str,
    port: int,
    resource: str = "/",
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
    unix_socket: str | None = None,
) -> WebSocketConnection:
    """Connect and handshake; the connection's tasks run in ``nursery``.

    Prefer ``open_websocket()``, which also closes the connection: here the caller must
    ``await ws.aclose()``, as ``nursery`` does not exit while the connection is open.
    ``ssl_context=True`` uses ``ssl.create_default_context()``.
    """
    conn = await _connect(
        host,
        port,
        resource,
        ssl_context=ssl_context,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        options=options,
        connect_timeout=connect_timeout,
        unix_socket=unix_socket,
    )
    conn.start(nursery)
    return conn


async def _connect(
    host: str,
    port: int,
    resource: str,
    *,
    ssl_context: ssl.SSLContext | bool | None,
    subprotocols: Sequence[str],
    extra_headers: HeaderList,
    options: WebSocketOptions | None,
    connect_timeout: float,
    unix_socket: str | None = None,
    proxy: str | None = None,
) -> WebSocketConnection:
    """Connect (TCP, Unix socket or proxy tunnel), TLS, then the opening handshake, all
    within ``connect_timeout`` seconds; the connection is not started."""
    host, resource = ascii_host(host), quote_target(resource)  # ValueError before connecting
    if ssl_context is True:
        ssl_context = ssl.create_default_context()
    # One deadline for the three steps; a timeout says which step it cut short.
    where = f"{host}:{port}" if unix_socket is None else unix_socket
    step = f"connecting to {where}" + (f" through the proxy {proxy}" if proxy else "")
    with trio.move_on_after(connect_timeout) as deadline:
        stream: trio.abc.Stream
        if unix_socket is not None:
            stream = await trio.open_unix_socket(unix_socket)
        elif proxy is not None:
            stream = await _open_tunnel(proxy, host, port)
        else:
            stream = await trio.open_tcp_stream(host, port)
        try:
            secure = isinstance(ssl_context, ssl.SSLContext)
            if isinstance(ssl_context, ssl.SSLContext):
                step = f"in the TLS handshake with {where}"
                stream = trio.SSLStream(stream, ssl_context, server_hostname=host)
                await stream.do_handshake()
            step = f"waiting for {where} to answer the opening handshake"
            return await client_handshake(
                stream,
                _host_header(host, port, secure),
                resource,
                subprotocols=subprotocols,
                extra_headers=extra_headers,
                options=options,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    assert deadline.cancelled_caught
    raise trio.TooSlowError(f"connect_timeout ({connect_timeout:g} s) passed while {step}")


async def client_handshake(
    stream: trio.abc.Stream,
    host: str,
    resource: str = "/",
    *,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
) -> WebSocketConnection:
    """Run the client's opening handshake on a connected ``stream`` (TCP, TLS, Unix, memory).

    ``host`` is the ``Host`` header value. The returned connection is not running yet: start
    it with ``conn.start(nursery)`` (or ``nursery.start_soon(conn.run)``), and close it with
    ``aclose()``. Raises ``HandshakeError`` if the server refuses; the stream is then the
    caller's to close.
    Characters that a URI cannot hold in ``resource`` (path and query) are sent as UTF-8,
    percent-encoded (RFC 3987 section 3.1); ``ValueError`` if it does not start with ``/``.
    """
    resource = quote_target(resource)
    options = options or WebSocketOptions()
    core = Connection(
        Role.CLIENT,
        max_message_size=options.max_message_size,
        max_frame_size=options.max_frame_size,
        max_head_size=options.max_head_size,
        stream_fragments=True,
    )
    core.initiate(
        host,
        resource,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        extensions=[options.compression] if options.compression is not None else [],
    )
    await stream.send_all(b"".join(core.data_to_send()))
    response = None
    while response is None:
        data = await stream.receive_some(65536)
        for event in core.receive_data(data):
            if isinstance(event, ResponseReceived):
                response = event.response
        if not data and response is None:
            raise HandshakeError("connection closed during the handshake", status=0)
    path, query = split_target(resource)
    request = Request(
        target=resource,
        path=unquote(path),
        query=query,
        headers=core.request_headers,
        subprotocols=tuple(subprotocols),
        extensions=(),
    )
    return WebSocketConnection(
        stream, core, options, request=request, response_headers=response.headers
    )


@asynccontextmanager
async def open_websocket(
    host: str,
    port: int,
    resource: str = "/",
    *,
    ssl_context: ssl.SSLContext | bool | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
    unix_socket: str | None = None,
    proxy: str | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """``async with open_websocket(host, port, "/path") as ws:`` a connection for the block.

    On exit the connection is closed with 1000 (1001 if the block was cancelled, 1011 if it
    raised); exceptions come out as they were raised, not wrapped in an ExceptionGroup.
    ``unix_socket`` connects to that Unix socket path instead (``host`` names the Host);
    ``proxy`` (``http://[user:pass@]host:port``) tunnels through an HTTP proxy with CONNECT.
    A non-ASCII ``host`` is IDNA-encoded and ``resource`` (path and query, starting with
    ``/``) is percent-encoded where a URI needs it, as by ``open_websocket_url()``; a host
    or resource that cannot be used raises ``ValueError`` before connecting. Connecting,
    TLS and the opening handshake share ``connect_timeout`` seconds; past it,
    ``trio.TooSlowError`` names the step that was cut short.
    """
    conn = await _connect(
        host,
        port,
        resource,
        ssl_context=ssl_context,
        subprotocols=subprotocols,
        extra_headers=extra_headers,
        options=options,
        connect_timeout=connect_timeout,
        unix_socket=unix_socket,
        proxy=proxy,
    )
    async with running_block(conn) as running:
        yield running


async def _run_shielded(conn: WebSocketConnection) -> None:
    """``conn.run()``, not stopped by outer cancellation: it ends when the connection does,
    by its close deadline at the latest once ``aclose()`` is called."""
    with trio.CancelScope(shield=True):
        await conn.run()


@asynccontextmanager
async def running_block(conn: WebSocketConnection) -> AsyncIterator[WebSocketConnection]:
    """Run ``conn`` for the block, then close it: 1000, 1001 if cancelled, 1011 if it raised,
    the block's exception unwrapped (see ``open_websocket``; ``trio_ws.testing`` uses it too).
    """
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        # Shielded: a cancelled block still gets its closing handshake (bounded by
        # close_timeout), so the server sees 1001 rather than a dropped connection.
        nursery.start_soon(_run_shielded, conn)
        try:
            yield conn
        except trio.Cancelled:
            with trio.CancelScope(shield=True):
                await conn.aclose(1001)
            raise
        except BaseException as exc:
            error = exc
            with trio.CancelScope(shield=True):
                await conn.aclose(1011)
        else:
            await conn.aclose(1000)
    if error is not None:
        raise error


@asynccontextmanager
async def open_websocket_url(
    url: str,
    *,
    ssl_context: ssl.SSLContext | None = None,
    subprotocols: Sequence[str] = (),
    extra_headers: HeaderList = (),
    options: WebSocketOptions | None = None,
    connect_timeout: float = 10.0,
    proxy: str | bool = True,
    max_redirects: int = 5,
) -> AsyncIterator[WebSocketConnection]:
    """Connect to a ws:// or wss:// URL for the block: ``async with open_websocket_url(url)``.

    Closed on exit as with ``open_websocket()`` (1000; 1001 if cancelled, 1011 if it
    raised). wss:// uses ``ssl.create_default_context()`` unless ``ssl_context`` is given.
    ``url`` may be an IRI: a non-ASCII host is IDNA-encoded, and characters that a URI cannot
    hold in the path and query are sent as UTF-8, percent-encoded (RFC 3987 section 3.1).
    ``ValueError`` names what makes a URL unusable (scheme, fragment, host, port...).

    ``ws://user:pass@host/`` sends HTTP basic credentials. ``proxy=True`` uses the
    ``https_proxy`` (wss) or ``http_proxy`` (ws) environment variables, honouring
    ``no_proxy``; a URL string names a proxy; ``False`` connects directly.

    Redirects (301, 302, 303, 307 and 308 with a ``Location``, relative or absolute) are
    followed up to ``max_redirects`` times, as browsers do (RFC 9110 section 15.4): never
    from wss:// to ws://, and when a redirect leaves the origin (scheme, host or port), the
    ``Authorization``, ``Cookie`` and ``Proxy-Authorization`` headers (from the URL or
    ``extra_headers``) and the URL's user information are not sent on. Raises
    ``RedirectError`` (a ``HandshakeError`` with the redirect's status, headers and body)
    for a redirect it will not follow: to ws:// from wss://, to an unusable URL, or past
    ``max_redirects``.
    """
    if max_redirects < 0:
        raise ValueError(f"max_redirects must be 0 or more, not {max_redirects}")
    headers = list(extra_headers)
    for redirects in range(max_redirects + 1):
        secure, host, port, target, credentials = split_url(url)
        if credentials is not None and not any(n.lower() == "authorization" for n, _ in headers):
            # Kept in the headers: same-origin redirects send it again, others drop it.
            headers.append(("Authorization", _basic(credentials)))
        try:
            conn = await _connect(
                host,
                port,
                target,
                ssl_context=(ssl_context or True) if secure else None,
                subprotocols=subprotocols,
                extra_headers=headers,
                options=options,
                connect_timeout=connect_timeout,
                proxy=_proxy_for(proxy, secure, host),
            )
        except HandshakeError as exc:
            location = dict(exc.headers).get("location")
            if exc.status not in _REDIRECTS or location is None:
                raise
            if redirects == max_redirects:
                raise _refused(exc, f"too many redirects (more than {max_redirects})") from None
            url, headers = _follow(url, headers, location, exc)
            continue
        async with running_block(conn) as running:
            yield running
        return


_REDIRECTS = frozenset({301, 302, 303, 307, 308})

#: Headers that carry credentials: not sent on to another origin after a redirect.
_CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})


def _basic(credentials: str) -> str:
    """An HTTP basic ``Authorization`` value for ``"user:password"`` (RFC 7617)."""
    return "Basic " + base64.b64encode(credentials.encode("utf-8")).decode("ascii")


def _refused(exc: HandshakeError, message: str) -> RedirectError:
    return RedirectError(message, status=exc.status, headers=exc.headers, body=exc.body)


def _follow(
    url: str, headers: list[tuple[str, str]], location: str, exc: HandshakeError
) -> tuple[str, list[tuple[str, str]]]:
    """The URL and extra headers for the request that follows a redirect to ``location``.

    Raises ``RedirectError`` for a Location that is unusable or that leaves wss:// for ws://.
    """
    with contextlib.suppress(UnicodeDecodeError):  # non-ASCII bytes: UTF-8, as browsers do
        location = location.encode("latin-1").decode("utf-8")
    # RFC 9110 section 10.2.2: a URI reference, relative to the request's URL; http(s) is
    # taken as ws(s), and the fragment is dropped (RFC 6455 section 3: none is sent).
    parts = urlsplit(urljoin(url, location))
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    netloc = parts.netloc
    try:
        origin = split_url(url)[:3]
        new_origin = split_url(urlunsplit((scheme, netloc, parts.path, parts.query, "")))[:3]
    except ValueError as error:
        raise _refused(exc, f"cannot follow the redirect to {location!r}: {error}") from None
    if origin[0] and not new_origin[0]:
        raise _refused(exc, f"refused to follow a redirect from wss:// to {location!r} (no TLS)")
    if new_origin != origin:
        # Another origin (RFC 6454: scheme, host, port): credentials stay with the first one.
        headers = [(n, v) for n, v in headers if n.lower() not in _CREDENTIAL_HEADERS]
        netloc = netloc.rpartition("@")[2]
    return urlunsplit((scheme, netloc, parts.path, parts.query, "")), headers


def _proxy_for(proxy: str | bool, secure: bool, host: str) -> str | None:
    """The proxy URL to use for ``host``, from the argument or the environment."""
    if proxy is False:
        return None
    if isinstance(proxy, str):
        return proxy
    env = urllib.request.getproxies_environment()
    if _bypass_proxy(host, env.get("no", "")):
        return None
    return env.get("https" if secure else "http")


def _bypass_proxy(host: str, no_proxy: str) -> bool:
    """``no_proxy`` semantics: ``*``, or a host equal to or ending with ``.entry``."""
    host = host.lower()
    for entry in (e.strip().lower().lstrip(".") for e in no_proxy.split(",")):
        if entry == "*" or (entry and (host == entry or host.endswith("." + entry))):
            return True
    return False


async def _open_tunnel(proxy: str, host: str, port: int) -> trio.abc.Stream:
    """A TCP stream to ``host:port`` through an HTTP proxy's CONNECT method (RFC 9110 9.3.6)."""
    parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"unsupported proxy URL {proxy!r} (http://host:port is)")
    stream = await trio.open_tcp_stream(parts.hostname, parts.port or 80)
    try:
        authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        headers = [("Host", authority)]
        if parts.username is not None:
            credentials = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            headers.append(("Proxy-Authorization", _basic(credentials)))
        request = h11.Request(method="CONNECT", target=authority, headers=headers)
        response, _, conn = await http_exchange(stream, request, read_body=False)
        if not 200 <= response.status_code < 300:
            raise HandshakeError(
                f"proxy refused CONNECT with HTTP {response.status_code}",
                status=response.status_code,
            )
        if conn.trailing_data[0]:
            raise HandshakeError("proxy sent data before the tunnel was open", status=0)
        return stream
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def http_exchange(
    stream: trio.abc.Stream, request: h11.Request, *, read_body: bool
) -> tuple[h11.Response, bytes, h11.Connection]:
    """Send ``request`` (without a body) and read the response with h11: its head, and its
    body until the end of the message if ``read_body``. Returns the response, the body and
    the h11 state (whose ``trailing_data`` holds what followed). A malformed response, or
    none, raises ``HandshakeError`` with status 0."""
    conn = h11.Connection(h11.CLIENT)
    await stream.send_all((conn.send(request) or b"") + (conn.send(h11.EndOfMessage()) or b""))
    response: h11.Response | None = None
    body = bytearray()
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data and response is None:
                    break
                conn.receive_data(bytes(data))
            elif isinstance(event, h11.Response):
                response = event
                if not read_body:
                    break
            elif isinstance(event, h11.Data):
                body += event.data
            else:  # EndOfMessage, ConnectionClosed or PAUSED (after a CONNECT's 2xx)
                break
    except h11.RemoteProtocolError as exc:
        raise HandshakeError(f"malformed HTTP response: {exc}", status=0) from None
    if response is None:
        raise HandshakeError("connection closed without a response", status=0)
    return response, bytes(body), conn
