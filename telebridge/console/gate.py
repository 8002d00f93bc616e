"""Who may use the web console: `ConsoleGate`, and its login page (static/login.html with the
form's `next` and its message put in, escaped) with the headers every console page carries.

With `TELEBRIDGE_API_KEY` set, a request needs `Authorization: Bearer <key>` (any key of the
list) or the session cookie the login form gives (signed, 12 h, bound to the key it was given
for, so a key rotated out ends its sessions). `TELEBRIDGE_CONSOLE=local` also lets loopback
clients in without a key. Without a key and not local, every console route answers 403.
Login attempts and wrong Bearer keys are rate limited per client address.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)
from starlette.routing import BaseRoute, Route

from telebridge.api.auth import ApiKeys, RateLimiter, retry_after
from telebridge.settings import Settings
from telebridge.tokens import Keys, TokenError, sign_claims, verify_claims

__all__ = ["COOKIE", "CSP", "SESSION_SECONDS", "STATIC", "ConsoleGate", "Gate", "page_headers"]

# None: allowed; else the refusal to answer with.
Gate = Callable[[HTTPConnection], Awaitable[Response | None]]

COOKIE = "telebridge_console"
SESSION_SECONDS = 12 * 3600
OFF = (
    "the console is off: set TELEBRIDGE_API_KEY, or TELEBRIDGE_CONSOLE=local for loopback "
    "clients, and restart the bridge"
)
NOT_ACCEPTED = "That key is not accepted."
_NEXT = re.compile(r"/console(?:/[A-Za-z0-9_\-./]*)?")
_LOCAL_NAMES = {"localhost", "localhost.", "ip6-localhost"}
_MAX_FORM_BYTES = 4096

STATIC = Path(__file__).parent / "static"
CSP = (
    "default-src 'self'; connect-src 'self' ws: wss:; media-src 'self' blob:; "
    "img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)
_NEXT_INPUT = re.compile(r"<input\b[^>]*\bname=[\"']?next\b[^>]*>", re.IGNORECASE)
_FORM_OPEN = re.compile(r"<form\b[^>]*>", re.IGNORECASE)
_FORM = re.compile(r"<form\b.*?</form>", re.IGNORECASE | re.DOTALL)


def _session_base(settings: Settings, keys: Keys) -> bytes:
    """What every session's signing key derives from, with the key its holder logged in with:
    TELEBRIDGE_SECRET when set, else a constant, so that every process with the same settings
    (a restart, another instance) accepts the same cookies, and a key taken out of
    TELEBRIDGE_API_KEY ends the sessions opened with it (and only those)."""
    secret = settings.telebridge_secret
    if secret is not None and secret.get_secret_value().strip():
        return keys.key("console session", "console")
    return b"telebridge console session"


class ConsoleGate:
    """Decides each console request; `login_routes()` are the login form and logout."""

    def __init__(
        self, settings: Settings, keys: Keys, *, clock: Callable[[], float] = time.time
    ) -> None:
        secret = settings.telebridge_api_key
        raw = secret.get_secret_value() if secret else None
        self._keys = ApiKeys.parse(raw)
        self._session_base = _session_base(settings, keys)
        # The key each accepted API key signs its sessions with.
        self._signers = [self._signer(k.strip()) for k in (raw or "").split(",") if k.strip()]
        self._local = settings.telebridge_console == "local"
        self._secure = (settings.telebridge_public_url or "").startswith("https://")
        public = urlsplit(settings.telebridge_public_url or "").hostname
        self._own_names = _LOCAL_NAMES | ({public.lower()} if public else set())
        self._limiter = RateLimiter(5 / 60, 5)
        self._clock = clock

    @property
    def enabled(self) -> bool:
        """Anyone at all can be let in."""
        return self._keys is not None or self._local

    # --- deciding ---------------------------------------------------------------------

    async def check(self, conn: HTTPConnection) -> Response | None:
        """None when `conn` may use the console; else the answer that refuses it."""
        if self._local and self.is_local(conn):
            return None
        if self._keys is None:
            return _refusal(conn, 403, OFF)
        scheme, _, presented = conn.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and presented.strip():
            if self._keys.match(presented.strip()) is not None:
                return None
            wait = self._limiter.take(_address(conn))  # guessing costs as a login does
            if wait > 0:
                return _too_many(conn, wait)
            return _refusal(conn, 401, "that API key is not accepted")
        if self._session_ok(conn.cookies.get(COOKIE, "")):
            return None
        return _refusal(conn, 401, "log in at /console/login or send Authorization: Bearer <key>")

    def is_local(self, conn: HTTPConnection) -> bool:
        """A loopback client that came straight here (not through a proxy) by a loopback name
        or the bridge's own (so a page of another site cannot reach it by DNS rebinding)."""
        try:
            loopback = ipaddress.ip_address(_address(conn)).is_loopback
        except ValueError:
            return False
        if not loopback or "x-forwarded-for" in conn.headers or "forwarded" in conn.headers:
            return False
        try:
            host = urlsplit("//" + conn.headers.get("host", "")).hostname or ""
        except ValueError:  # not a host at all ("[::1", say)
            return False
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host in self._own_names

    # --- sessions ---------------------------------------------------------------------

    def _signer(self, key: str) -> bytes:
        return hmac.new(self._session_base, b"session\x00" + key.encode(), hashlib.sha256).digest()

    def session_value(self, key: str) -> str:
        """A signed cookie value for someone who presented `key`, valid for 12 h."""
        claims = {"exp": int(self._clock()) + SESSION_SECONDS}
        return sign_claims(self._signer(key), claims)

    def _session_ok(self, value: str) -> bool:
        if not value or len(value) > 512:
            return False
        for signer in self._signers:  # a key or two: each is tried
            try:
                claims = verify_claims(signer, value, max_len=512)
            except TokenError:
                continue
            expires = claims.get("exp")
            return isinstance(expires, int) and expires > self._clock()
        return False

    # --- login and logout -------------------------------------------------------------

    def login_routes(self) -> list[BaseRoute]:
        return [
            Route("/console/login", self._login, methods=["GET", "POST"]),
            Route("/console/logout", self._logout, methods=["POST"]),
        ]

    async def _login(self, request: Request) -> Response:
        if not self.enabled:
            return _refusal(request, 403, OFF)
        if request.method == "GET":
            return login_page(200, safe_next(request.query_params.get("next")))
        wait = self._limiter.take(_address(request))
        if wait > 0:
            return _too_many(request, wait)
        fields = await _form(request)
        if fields is None:
            return login_page(400, "/console", NOT_ACCEPTED)
        key, target = fields.get("key", "").strip(), safe_next(fields.get("next"))
        if self._keys is None or not key or self._keys.match(key) is None:
            return login_page(401, target, NOT_ACCEPTED)
        response = RedirectResponse(target, status_code=303, headers=page_headers())
        response.set_cookie(
            COOKIE, self.session_value(key), max_age=SESSION_SECONDS, path="/console",
            secure=self._secure, httponly=True, samesite="strict",
        )  # fmt: skip
        return response

    async def _logout(self, request: Request) -> Response:
        # Not gated: clearing a cookie harms no one, and an expired session can still log out.
        response = RedirectResponse("/console/login", status_code=303, headers=page_headers())
        response.delete_cookie(
            COOKIE, path="/console", secure=self._secure, httponly=True, samesite="strict"
        )
        return response


def safe_next(value: str | None) -> str:
    """Where a login goes on to: a console path, else `/console` (never another site)."""
    if value and _NEXT.fullmatch(value) and ".." not in value and "//" not in value:
        return value
    return "/console"


async def _form(request: Request) -> dict[str, str] | None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > _MAX_FORM_BYTES:
            return None
    try:
        pairs = parse_qsl(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None
    return dict(pairs)


def _address(conn: HTTPConnection) -> str:
    return conn.client.host if conn.client else ""


def _is_page(conn: HTTPConnection) -> bool:
    path = conn.url.path
    return not path.startswith(("/console/api/", "/console/static/"))


def _refusal(conn: HTTPConnection, status: int, message: str) -> Response:
    path = conn.url.path
    if path.startswith("/console/api/"):
        return JSONResponse({"error": message}, status_code=status)
    if status == 401 and _is_page(conn):
        return login_page(401, safe_next(path))  # only the form: none of the app
    if _is_page(conn):
        return login_page(status, "/console", message, form=False)
    return PlainTextResponse(message, status_code=status)


def _too_many(conn: HTTPConnection, wait: float) -> Response:
    message = "too many attempts: wait and try again"
    headers = {"Retry-After": retry_after(wait)}
    if conn.url.path.startswith("/console/api/"):
        return JSONResponse({"error": message}, status_code=429, headers=headers)
    return PlainTextResponse(message, status_code=429, headers=headers)


# --- pages ----------------------------------------------------------------------------


def page_headers() -> dict[str, str]:
    """The headers of every console page and file."""
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-cache",
    }


def login_page(
    status: int, target: str, message: str | None = None, *, form: bool = True
) -> Response:
    """static/login.html with `next` = `target` and `message` (escaped) before its form; with
    `form=False`, the message in place of the form."""
    text = (STATIC / "login.html").read_text(encoding="utf-8")
    hidden = f'<input type="hidden" name="next" value="{html.escape(target)}">'
    if _NEXT_INPUT.search(text):
        text = _NEXT_INPUT.sub(lambda _: hidden, text, count=1)
    else:
        text = _FORM_OPEN.sub(lambda m: m.group(0) + hidden, text, count=1)
    if message is not None:
        note = (
            '<p class="login-error" role="alert" data-testid="login-error">'
            f"{html.escape(message)}</p>"
        )
        if form:
            text = _FORM_OPEN.sub(lambda m: note + m.group(0), text, count=1)
        else:
            text = _FORM.sub(lambda _: note, text, count=1)
    return HTMLResponse(text, status_code=status, headers=page_headers())
