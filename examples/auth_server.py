"""Routes with authentication: a bearer token, HTTP Basic, and an open health check.

    python examples/auth_server.py --host 127.0.0.1 --port 8000

then try, with the client that comes with trio_ws:

    python -m trio_ws -H "Authorization: Bearer let-me-in" ws://127.0.0.1:8000/feed/news
    python -m trio_ws "ws://127.0.0.1:8000/feed/news?token=let-me-in"
    python -m trio_ws -H "Authorization: Basic YWRtaW46c2VjcmV0" ws://127.0.0.1:8000/admin
    curl -i http://127.0.0.1:8000/health

(``YWRtaW46c2VjcmV0`` is ``admin:secret`` in base64.) Without credentials the answer is 401.
A browser's WebSocket cannot set headers: it can send the token in a cookie or the query.
"""

from __future__ import annotations

import argparse
import hmac
import logging
import sys

import trio

import trio_ws
from trio_ws import HTTPResult, Router, basic_auth, bearer_token

#: Demo secrets. A real server reads them from its configuration, never from its source.
TOKENS = {"let-me-in": "alice", "reader-2": "bob"}
ADMIN_USER, ADMIN_PASSWORD = "admin", "secret"


def check_token(token: str) -> str | None:
    """The user a token belongs to, or ``None``."""
    for known, user in TOKENS.items():
        if hmac.compare_digest(token.encode(), known.encode()):
            return user
    return None


def check_password(user: str, password: str) -> bool:
    """Compare in constant time, so that timing does not reveal how much matched."""
    user_ok = hmac.compare_digest(user.encode(), ADMIN_USER.encode())
    password_ok = hmac.compare_digest(password.encode(), ADMIN_PASSWORD.encode())
    return user_ok and password_ok


router = Router()


@router.http("/health")
async def health(request: trio_ws.WebSocketRequest) -> HTTPResult:
    """Open to everyone: for load balancers."""
    return 200, [], "ok\n"


@router.route("/feed/{topic}")
@bearer_token(check_token, cookie="token", query="token", as_param="user")
async def feed(request: trio_ws.WebSocketRequest, topic: str, user: str) -> None:
    """Greet the token's owner, then echo text messages with the topic as a prefix."""
    ws = await request.accept()
    await ws.send(f"hello {user}, welcome to {topic}")
    async for message in ws:
        await ws.send(message if isinstance(message, bytes) else f"[{topic}] {message}")


@router.route("/admin")
@basic_auth(check_password, realm="trio_ws admin", as_param="user")
async def admin(request: trio_ws.WebSocketRequest, user: str) -> None:
    """Only for the administrator."""
    ws = await request.accept()
    await ws.send(f"hello {user}: {len(TOKENS)} tokens configured")
    async for message in ws:
        await ws.send(message)


def main() -> None:
    """Serve the router on ``--host`` and ``--port``."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # Stops quietly on Ctrl-C or SIGTERM; a port in use is one line on stderr and exit 1.
    sys.exit(trio_ws.run_main(serve, args.host, args.port))


async def serve(host: str, port: int) -> None:
    """Serve the router until cancelled (by Ctrl-C or SIGTERM: connections get 1001)."""
    async with trio.open_nursery() as nursery:
        server = await nursery.start(trio_ws.serve_websocket, router, host, port)
        print(f"serving on ws://{host}:{server.port}/ (see this file's docstring)", flush=True)


if __name__ == "__main__":
    main()
