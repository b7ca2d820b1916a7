"""Real-browser tests: Playwright drives Chromium against ``examples/broadcast_server.py``.

The server runs as a subprocess (``python examples/broadcast_server.py --host 127.0.0.1
--port N``), exactly as a user would start it; the browser loads its chat page and talks to
``/ws``. These are plain synchronous tests (Playwright's sync API), not Trio tests.

Needs the ``playwright`` package and a Chromium binary (``/usr/bin/chromium``, or the path in
``TRIO_WS_CHROMIUM``); Playwright's own browser download (``playwright install``) is not used.
When either is missing the tests are skipped, unless ``TRIO_WS_REQUIRE_BROWSER=1`` (set by the
``browser`` nox session), which turns a missing browser into a failure.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError as exc:  # pragma: no cover - depends on the machine
    expect = sync_playwright = None  # type: ignore[assignment]
    _PLAYWRIGHT_MISSING = f"playwright is not importable ({exc}); pip install playwright"
else:
    _PLAYWRIGHT_MISSING = ""

ROOT = Path(__file__).resolve().parent.parent
SERVER_SCRIPT = ROOT / "examples" / "broadcast_server.py"
HOST = "127.0.0.1"
REQUIRE_BROWSER = os.environ.get("TRIO_WS_REQUIRE_BROWSER", "") not in ("", "0")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
#: Bound, in seconds, on starting the server subprocess and on any single browser wait.
STARTUP_TIMEOUT = 10.0
WAIT_MS = 10_000
#: Bound on the page's reconnect after a server restart (its backoff is 0.5 s, 1 s, 2 s, ...).
RECONNECT_MS = 15_000


def _find_chromium() -> str | None:
    explicit = os.environ.get("TRIO_WS_CHROMIUM")
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    if os.access("/usr/bin/chromium", os.X_OK):
        return "/usr/bin/chromium"
    return shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM = _find_chromium()
_MISSING = _PLAYWRIGHT_MISSING or (
    ""
    if CHROMIUM
    else "no Chromium binary (/usr/bin/chromium or TRIO_WS_CHROMIUM); apt-get install chromium"
)

# Skipped only when the browser is missing and not required; when it is required, the `browser`
# fixture fails instead (so `nox -s browser` cannot pass without having run anything).
pytestmark = pytest.mark.skipif(
    bool(_MISSING) and not REQUIRE_BROWSER, reason=f"browser tests need a browser: {_MISSING}"
)


# -- the server subprocess ----------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class ChatServer:
    """``examples/broadcast_server.py`` as a subprocess on a fixed port; can be killed and
    restarted on the same port. Its output goes to ``log_path``."""

    def __init__(self, port: int, log_path: Path, args: Sequence[str] = ()) -> None:
        self.port = port
        self.log_path = log_path
        self.args = list(args)  # more command-line arguments, e.g. --redis URL
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    @property
    def ws_url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> None:
        assert self.proc is None, "already running"
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    *(sys.executable, str(SERVER_SCRIPT)),
                    *("--host", HOST, "--port", str(self.port), *self.args),
                ],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                self.proc = None
                pytest.fail(f"server exited with {code} while starting:\n{self.log()}")
            try:  # ready once it answers GET / (a bare TCP connect would log a failed handshake)
                conn = http.client.HTTPConnection(HOST, self.port, timeout=1.0)
                try:
                    conn.request("GET", "/")
                    if conn.getresponse().status == 200:
                        return
                finally:
                    conn.close()
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"server not answering GET / within {STARTUP_TIMEOUT} s:\n{self.log()}")
            time.sleep(0.05)  # polls until GET / answers (deadline above)

    def stop(self) -> None:
        """Kill the server (SIGKILL: no close handshake, like a crash) and reap it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=STARTUP_TIMEOUT)


@pytest.fixture
def chat_server(tmp_path: Path) -> Iterator[ChatServer]:
    server = ChatServer(_free_port(), tmp_path / "server.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()
        print(f"--- server log ({server.log_path}) ---\n{server.log()}")  # shown on failure


# -- a TCP proxy that counts bytes and can cut the network -----------------------------------------


class CountingProxy:
    """Forwards every connection on its own loopback port to ``target_port``, counting the
    bytes in each direction; ``cut()`` drops every connection and refuses new ones until
    ``restore()`` (a network blip; ``target_port`` may change meanwhile, as when a load
    balancer picks another server). Threads, so it runs beside Playwright's sync API."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.up = 0  # client -> server bytes
        self.down = 0  # server -> client bytes
        self.first_down = b""  # the start of the server's answer (the handshake response)
        self.refusing = False
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener = socket.create_server((HOST, 0))
        self.port = int(self._listener.getsockname()[1])
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}/"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                if self.refusing:  # the network is down: the connection ends at once
                    _drop(client)
                    continue
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
            except (OSError, http.client.HTTPException):
                return
            upstream.settimeout(None)
            with self._lock:
                self._sockets += [client, upstream]
            for src, dst, up in ((client, upstream, True), (upstream, client, False)):
                threading.Thread(target=self._pump, args=(src, dst, up), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool) -> None:
        try:
            while data := src.recv(65536):
                with self._lock:
                    if up:
                        self.up += len(data)
                    else:
                        if len(self.first_down) < 4096:
                            self.first_down += data
                        self.down += len(data)
                dst.sendall(data)
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cut(self) -> None:
        """Drop every connection (both ends see it end, without a close frame) and refuse new
        ones until ``restore()``."""
        self.refusing = True
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            _drop(sock)

    def restore(self) -> None:
        self.refusing = False

    def close(self) -> None:
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                sock.close()


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked in recv() on it
    sock.close()


# -- the browser ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if _MISSING:  # only reached when REQUIRE_BROWSER is set (otherwise the tests are skipped)
        pytest.fail(f"TRIO_WS_REQUIRE_BROWSER is set but {_MISSING}")
    assert sync_playwright is not None and CHROMIUM is not None
    with sync_playwright() as playwright:
        # Playwright gives every launch a fresh temporary profile (user data dir).
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, timeout=30_000
        )
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def new_page(browser: Browser) -> Iterator[Callable[[], Page]]:
    """Opens pages, each in its own browser context (its own localStorage), and fails the test
    on any uncaught JavaScript error in them."""
    contexts = []
    errors: list[str] = []

    def open_page() -> Page:
        context = browser.new_context()
        context.set_default_timeout(WAIT_MS)
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        return page

    try:
        yield open_page
    finally:
        for context in contexts:
            context.close()
    assert errors == [], f"uncaught JavaScript errors: {errors}"


def _open_chat(
    new_page: Callable[[], Page], server: ChatServer, name: str, *, url: str | None = None
) -> Page:
    """The chat page as ``name`` (its ``?name=``), from ``url`` (default: the server's)."""
    page = new_page()
    page.goto(f"{url or server.url}?name={name}")
    expect(page.locator("#name")).to_have_value(name)
    expect(page.locator("#status")).to_have_text("open", timeout=WAIT_MS)
    return page


def _messages(page: Page) -> list[str]:
    """The chat messages in the page's log (not its notices), in order."""
    return [str(text) for text in page.locator("#log li.message span").all_text_contents()]


def _say(page: Page, text: str) -> None:
    page.fill("#text", text)
    page.press("#text", "Enter")
    # The page clears #text once it has sent the message.
    expect(
        page.locator("#text"), "Enter in #text did not submit #form (nothing was sent)"
    ).to_have_value("", timeout=WAIT_MS)


def _log_entries(page: Page) -> list[Any]:
    """The chat log as [time element's tag, its text, the message text] per entry."""
    return page.eval_on_selector_all(
        "#log li",
        "items => items.map(li => [li.firstElementChild && li.firstElementChild.tagName,"
        " li.firstElementChild && li.firstElementChild.textContent, li.lastChild.textContent])",
    )


# -- the tests ------------------------------------------------------------------------------------


def test_two_pages_chat(chat_server: ChatServer, new_page: Callable[[], Page]) -> None:
    alice = _open_chat(new_page, chat_server, "alice")
    bob = _open_chat(new_page, chat_server, "bob")

    _say(alice, "hello")
    for page in (bob, alice):  # broadcast to everyone, the sender included
        expect(page.locator("#log li")).to_have_count(1, timeout=WAIT_MS)
        expect(page.locator("#log li").last).to_contain_text("alice: hello")

    _say(bob, "hi alice, héllo ✓")
    for page in (alice, bob):
        expect(page.locator("#log li")).to_have_count(2, timeout=WAIT_MS)
        entries = _log_entries(page)
        assert [message for _, _, message in entries] == [
            "alice: hello",
            "bob: hi alice, héllo ✓",
        ]
        for tag, timestamp, _ in entries:  # each message carries a rendered timestamp
            assert tag == "TIME"
            assert re.search(r"\d{1,2}\D\d{2}", timestamp), timestamp


# Runs inside the page: opens its own WebSocket, sends one message, waits for the broadcast
# to come back, closes; every wait bounded by a timer.
_ROUND_TRIP_JS = """
async ({url, message, timeoutMs}) => {
  const bounded = (promise, what) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), timeoutMs);
    promise.then(v => { clearTimeout(timer); resolve(v); },
                 e => { clearTimeout(timer); reject(e); });
  });
  const ws = new WebSocket(url);
  await bounded(new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onclose = (e) => reject(new Error(`closed before open: ${e.code}`));
  }), "open");
  const extensions = ws.extensions;
  const received = bounded(new Promise((resolve, reject) => {
    ws.onmessage = (e) => {  // the chat message's envelope (not the server's "position")
      const message = JSON.parse(e.data);
      if ("data" in message) resolve(message.data);
    };
    ws.onclose = (e) => reject(new Error(`closed before the echo: ${e.code} ${e.reason}`));
  }), "the broadcast of our message");
  ws.send(message);
  const data = await received;
  const closed = bounded(new Promise(resolve => {
    ws.onclose = (e) => resolve({code: e.code, wasClean: e.wasClean});
  }), "close");
  ws.close(1000, "done");
  return {extensions, length: data.length, same: data === message, close: await closed};
}
"""


def test_permessage_deflate(chat_server: ChatServer, new_page: Callable[[], Page]) -> None:
    page = _open_chat(new_page, chat_server, "observer")
    message = "trio_ws permessage-deflate round trip " * 1500  # 57 000 chars, under 64 KiB
    proxy = CountingProxy(chat_server.port)
    try:
        result = page.evaluate(
            _ROUND_TRIP_JS,
            {"url": f"ws://{HOST}:{proxy.port}/ws", "message": message, "timeoutMs": WAIT_MS},
        )
    finally:
        proxy.close()
    handshake = proxy.first_down.split(b"\r\n\r\n", 1)[0].decode("latin-1")

    assert "permessage-deflate" in result["extensions"], (result, handshake)
    assert re.search(r"(?im)^sec-websocket-extensions:.*permessage-deflate", handshake)
    assert result["length"] == len(message)
    assert result["same"], "the message came back altered"
    assert result["close"] == {"code": 1000, "wasClean": True}
    # Compressed both ways: the whole connection (handshake, message, close) on the wire is a
    # small fraction of the one 57 000-byte message.
    assert proxy.up < len(message) // 10, (proxy.up, proxy.down)
    assert proxy.down < len(message) // 10, (proxy.up, proxy.down)
    # The chat page's own connection (a second room member) got the broadcast too.
    expect(page.locator("#log li")).to_have_count(1, timeout=WAIT_MS)
    assert _log_entries(page)[0][2] == message


def test_reconnects_after_server_restart(
    chat_server: ChatServer, new_page: Callable[[], Page]
) -> None:
    page = _open_chat(new_page, chat_server, "carol")
    status = page.locator("#status")

    chat_server.stop()
    expect(status).to_have_text("closed", timeout=WAIT_MS)
    chat_server.start()  # same port
    expect(status).to_have_text("open", timeout=RECONNECT_MS)
    # A new process has a new history: the page cannot catch up, and says so.
    expect(page.locator("#log li.notice")).to_have_text(
        re.compile("some messages may be missing"), timeout=WAIT_MS
    )

    _say(page, "back again")  # and the new connection works
    expect(page.locator("#log li").last).to_contain_text("carol: back again", timeout=WAIT_MS)


def _blip_and_catch_up(
    alice: Page, bob: Page, proxy: CountingProxy, *, then_target: int | None = None
) -> None:
    """alice (through ``proxy``) and bob chat; alice's network drops while bob sends five
    messages; once it is back (to ``then_target`` if given), she shows each missed message
    once, in order. Both list both online, then alice only once bob's page closes."""
    for page in (alice, bob):
        expect(page.locator("#online li")).to_have_text(["alice", "bob"], timeout=WAIT_MS)
    _say(bob, "before")
    expect(alice.locator("#log li.message span")).to_have_text(["bob: before"], timeout=WAIT_MS)

    proxy.cut()  # alice's connection drops; her reconnects fail until restore()
    expect(alice.locator("#status")).not_to_have_text("open", timeout=WAIT_MS)
    expect(bob.locator("#online li")).to_have_text(["bob"], timeout=WAIT_MS)
    missed = [f"missed {i}" for i in range(1, 6)]
    for text in missed:
        _say(bob, text)
    expect(bob.locator("#log li.message")).to_have_count(1 + len(missed), timeout=WAIT_MS)
    assert _messages(alice) == ["bob: before"]  # she was away

    if then_target is not None:
        proxy.target_port = then_target
    proxy.restore()
    expect(alice.locator("#status")).to_have_text("open", timeout=RECONNECT_MS)
    expected = ["bob: before"] + [f"bob: {text}" for text in missed]
    expect(alice.locator("#log li.message span")).to_have_text(expected, timeout=WAIT_MS)
    # A live message after the replay: had any missed one come twice, it would be before.
    _say(bob, "after")
    expected.append("bob: after")
    for page in (alice, bob):
        expect(page.locator("#log li.message span")).to_have_text(expected, timeout=WAIT_MS)
        expect(page.locator("#online li")).to_have_text(["alice", "bob"], timeout=WAIT_MS)
    assert alice.locator("#log li.notice").count() == 0  # nothing was missing

    bob.close()
    expect(alice.locator("#online li")).to_have_text(["alice"], timeout=WAIT_MS)


def test_recovers_missed_messages_after_a_network_blip(
    chat_server: ChatServer, new_page: Callable[[], Page]
) -> None:
    proxy = CountingProxy(chat_server.port)  # alice's network
    try:
        alice = _open_chat(new_page, chat_server, "alice", url=proxy.url)
        bob = _open_chat(new_page, chat_server, "bob")
        _blip_and_catch_up(alice, bob, proxy)
    finally:
        proxy.close()


def test_resumes_through_another_server_over_redis(
    tmp_path: Path, new_page: Callable[[], Page]
) -> None:
    """Two servers sharing a Redis (``--redis``): alice's page reconnects to the other one,
    which has the same history, and catches up there; presence spans both."""
    from test_redis import RedisServer, _need_redis

    _need_redis()
    redis = RedisServer(_free_port(), tmp_path)
    redis.start()
    servers = [
        ChatServer(_free_port(), tmp_path / f"server{i}.log", ["--redis", redis.url])
        for i in (1, 2)
    ]
    proxy = None
    try:
        for server in servers:
            server.start()
        proxy = CountingProxy(servers[0].port)  # alice's network, to the first server
        alice = _open_chat(new_page, servers[0], "alice", url=proxy.url)
        bob = _open_chat(new_page, servers[1], "bob")
        _blip_and_catch_up(alice, bob, proxy, then_target=servers[1].port)
    finally:
        if proxy is not None:
            proxy.close()
        for server in servers:
            server.stop()
            print(f"--- {server.log_path.name} ---\n{server.log()}")  # shown on failure
        redis.stop()
