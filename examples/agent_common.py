"""What the example agents share: checking the bridge's handshake signature, decoding its
messages, and running a WebSocket server from the command line.

telebridge opens the WebSocket to the application and signs the opening handshake with the
setting TELEBRIDGE_AGENT_SECRET:

    X-Telebridge-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<url>")>

where <url> is the URL the bridge dialled (the flow step's `agent.url` after templating). An
application behind a proxy or a tunnel sees a different Host than the one the bridge dialled, so
the URL is rebuilt from AGENT_PUBLIC_URL (e.g. `wss://agent.example.com`) when it is set, else
from `ws://<Host header>`, followed by the request's path and query exactly as received.

Copy this file next to the agent you copy; it only needs the `websockets` library.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Sequence
from http import HTTPStatus
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

__all__ = [
    "MAX_SKEW_SECONDS",
    "SIGNATURE_HEADER",
    "decode",
    "main",
    "make_process_request",
    "request_url",
    "sign",
    "start_server",
    "verify_signature",
]

SIGNATURE_HEADER = "X-Telebridge-Signature"
# A signed handshake older or newer than this is refused, so a recorded one cannot be replayed
# later; it also tolerates ordinary clock drift between the bridge and the application.
MAX_SKEW_SECONDS = 300

log = logging.getLogger("agent")

Handler = Callable[[ServerConnection], Awaitable[None]]
ProcessRequest = Callable[[ServerConnection, Request], Response | None]


def sign(secret: str, url: str, t: int) -> str:
    """The header value the bridge sends for a handshake to `url` at unix time `t`."""
    mac = hmac.new(secret.encode(), f"{t}.{url}".encode(), hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


def verify_signature(header: str | None, url: str, secret: str, now: float) -> bool:
    """Whether `header` is a valid signature of `url` with `secret`, made within
    MAX_SKEW_SECONDS of `now`. Never raises: anything malformed is simply not valid."""
    if not header:
        return False
    t: int | None = None
    macs: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            if not value.isascii() or not value.isdigit():
                return False
            t = int(value)
        elif key == "v1":
            macs.append(value.lower())
        # Other keys (a future scheme) are ignored, as long as a v1 is present.
    if t is None or not macs or abs(now - t) > MAX_SKEW_SECONDS:
        return False
    expected = sign(secret, url, t).rpartition("v1=")[2]
    # compare_digest on every candidate: the time taken says nothing about the right value.
    return any(hmac.compare_digest(expected, mac) for mac in macs)


def request_url(request: Request, public_url: str | None) -> str:
    """The URL the bridge dialled, as far as this side can tell (see the module docstring)."""
    base = public_url.rstrip("/") if public_url else f"ws://{request.headers.get('Host', '')}"
    return base + request.path  # websockets' `path` includes the query string


def make_process_request(
    secret: str | None,
    public_url: str | None = None,
    clock: Callable[[], float] = time.time,
) -> ProcessRequest | None:
    """A `process_request` hook that answers 403 to a handshake without a valid signature;
    None (accept every connection) when there is no secret."""
    if not secret:
        return None
    key = secret

    def check(connection: ServerConnection, request: Request) -> Response | None:
        url = request_url(request, public_url)
        header = request.headers.get(SIGNATURE_HEADER)
        if verify_signature(header, url, key, clock()):
            return None
        why = "missing" if header is None else "invalid or expired"
        log.warning("refused a connection to %s: %s signature", url, why)
        return connection.respond(HTTPStatus.FORBIDDEN, f"{why} {SIGNATURE_HEADER}\n")

    return check


def decode(message: str | bytes) -> dict[str, Any] | None:
    """A JSON text frame from the bridge as a dict with a string `type`; None (after logging)
    for anything else, so one bad message never ends the call."""
    if isinstance(message, bytes):
        return None
    try:
        data = json.loads(message)
    except ValueError:
        log.warning("ignored a message that is not JSON: %.80r", message)
        return None
    if not isinstance(data, dict) or not isinstance(data.get("type"), str):
        log.warning("ignored a message without a type: %.80r", message)
        return None
    return data


async def start_server(
    handler: Handler,
    host: str,
    port: int,
    secret: str | None,
    public_url: str | None = None,
) -> Server:
    """Listen on host:port; a `port` of 0 picks a free one (see `server.sockets`)."""
    return await serve(
        handler,
        host,
        port,
        process_request=make_process_request(secret, public_url),
        # Caller audio is small frames; nothing legitimate comes near this.
        max_size=256 * 1024,
    )


def main(
    name: str, handler: Handler, argv: list[str] | None = None, notes: Sequence[str] = ()
) -> None:
    """Parse --host/--port, set up one-line logging and serve until interrupted; `notes` are
    logged once the server listens (e.g. which settings it runs with)."""
    parser = argparse.ArgumentParser(prog=name, description=f"telebridge example agent: {name}")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    secret = os.environ.get("TELEBRIDGE_AGENT_SECRET") or None
    public_url = os.environ.get("AGENT_PUBLIC_URL") or None

    async def run() -> None:
        server = await start_server(handler, args.host, args.port, secret, public_url)
        log.info("%s listening on ws://%s:%d", name, args.host, args.port)
        if secret is None:
            log.warning("TELEBRIDGE_AGENT_SECRET is not set: handshake signatures are NOT checked")
        for note in notes:
            log.info("%s", note)
        await server.serve_forever()

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the way to stop it
        asyncio.run(run())
