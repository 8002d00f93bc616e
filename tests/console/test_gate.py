"""Who may use the console, over the real server: no key, a Bearer key, the login form and its
signed cookie, the rate of login attempts, and TELEBRIDGE_CONSOLE=local (whose address and
host checks are also driven directly, with made-up clients loopback cannot give)."""

from __future__ import annotations

import httpx
import pytest
from starlette.requests import Request

from telebridge.console.gate import COOKIE, SESSION_SECONDS, ConsoleGate, safe_next
from telebridge.settings import load_settings
from telebridge.tokens import Keys
from tests.console.conftest import KEY, OTHER_KEY, client
from tests.e2e.conftest import MakeBridge

GATED = [
    ("GET", "/console"),
    ("GET", "/console/phone"),
    ("GET", "/console/static/api.js"),
    ("GET", "/console/api/live"),
    ("GET", "/console/api/events"),
    ("GET", "/console/api/history"),
    ("GET", "/console/api/flows"),
    ("GET", "/console/api/calls/plivo/abc"),
    ("POST", "/console/api/calls/abc/say"),
    ("POST", "/console/api/calls/abc/hangup"),
    ("GET", "/console/api/nothing-here"),
]
APP_MARKUP = ("live-calls", "call-history", "flow-list", "flow-select", "call-button")


def assert_login_form(response: httpx.Response) -> None:
    text = response.text
    assert response.headers["content-type"].startswith("text/html")
    assert '<form method="post" action="/console/login"' in text
    assert 'name="key"' in text and 'type="password"' in text
    assert not any(marker in text for marker in APP_MARKUP)


async def test_no_key_and_not_local_refuses_everything_403(make_bridge: MakeBridge) -> None:
    lb = await make_bridge()
    async with client(lb) as http:
        for method, path in [*GATED, ("GET", "/console/login"), ("POST", "/console/login")]:
            response = await http.request(method, path, json={})
            assert response.status_code == 403, path
            assert "TELEBRIDGE_API_KEY" in response.text
            assert "TELEBRIDGE_CONSOLE=local" in response.text
            if path.startswith("/console/api/"):
                assert "error" in response.json()
        page = await http.get("/console")
        assert page.headers["content-type"].startswith("text/html")
        assert not any(marker in page.text for marker in APP_MARKUP)


async def test_with_a_key_nothing_is_served_without_credentials(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb) as http:
        for method, path in GATED:
            response = await http.request(method, path, json={})
            assert response.status_code == 401, path
            if path.startswith("/console/api/"):
                assert "error" in response.json()
            elif path.startswith("/console/static/"):
                assert response.headers["content-type"].startswith("text/plain")
        for path in ("/console", "/console/phone"):
            page = await http.get(path)
            assert_login_form(page)
            assert f'name="next" value="{path}"' in page.text
            assert "Content-Security-Policy" in page.headers


async def test_a_bearer_key_opens_the_console_and_a_wrong_one_does_not(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_api_key=f"{OTHER_KEY}, {KEY}")
    async with client(lb, key=KEY) as http:
        page = await http.get("/console")
        assert page.status_code == 200 and "live-calls" in page.text
        assert (await http.get("/console/api/live")).json() == {"calls": []}
    async with client(lb, key=KEY + "x") as http:
        refused = await http.get("/console/api/live")
        assert refused.status_code == 401 and "error" in refused.json()
        assert (await http.get("/console")).status_code == 401


async def test_login_sets_a_cookie_that_opens_the_console_until_logout(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb) as http:
        form = await http.get("/console/login", params={"next": "/console/phone"})
        assert form.status_code == 200
        assert_login_form(form)
        assert 'name="next" value="/console/phone"' in form.text

        wrong = await http.post("/console/login", data={"key": "guess", "next": "/console"})
        assert wrong.status_code == 401
        assert_login_form(wrong)
        assert "That key is not accepted." in wrong.text
        assert COOKIE not in http.cookies

        right = await http.post("/console/login", data={"key": KEY, "next": "/console/phone"})
        assert right.status_code == 303 and right.headers["location"] == "/console/phone"
        set_cookie = right.headers["set-cookie"].lower()
        assert f"{COOKIE}=" in set_cookie
        assert "httponly" in set_cookie and "samesite=strict" in set_cookie
        assert "path=/console" in set_cookie and "secure" not in set_cookie  # http here
        assert f"max-age={SESSION_SECONDS}" in set_cookie

        phone = await http.get("/console/phone")
        assert phone.status_code == 200 and "call-button" in phone.text
        assert (await http.get("/console/api/flows")).status_code == 200
        assert (await http.get("/console/static/api.js")).status_code == 200

        out = await http.post("/console/logout")
        assert out.status_code == 303 and out.headers["location"] == "/console/login"
        assert COOKIE not in http.cookies
        assert (await http.get("/console/api/live")).status_code == 401


async def test_a_tampered_cookie_is_refused(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb) as http:
        await http.post("/console/login", data={"key": KEY})
        value = http.cookies[COOKIE]
        assert (await http.get("/console/api/live")).status_code == 200
    body, mac = value.split(".")
    flipped = body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    for forged in (f"{flipped}.{mac}", f"{body}.{mac[:-2]}AA", "x", f"{body}."):
        async with client(lb) as http:
            http.cookies.set(COOKIE, forged, path="/console")
            assert (await http.get("/console/api/live")).status_code == 401, forged


async def test_login_attempts_are_rate_limited_per_address(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb) as http:
        statuses = [
            (await http.post("/console/login", data={"key": f"guess-{n}"})).status_code
            for n in range(6)
        ]
        assert statuses == [401] * 5 + [429]
        late = await http.post("/console/login", data={"key": KEY})
        assert late.status_code == 429 and int(late.headers["retry-after"]) >= 1
    async with client(lb, key="wrong-bearer") as http:  # the same address: the same budget
        assert (await http.get("/console/api/live")).status_code == 429
    async with client(lb, key=KEY) as http:  # a right key is never slowed down
        assert (await http.get("/console/api/live")).status_code == 200


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("/console/phone", "/console/phone"),
        ("/console", "/console"),
        (None, "/console"),
        ("https://evil.example/console", "/console"),
        ("//evil.example", "/console"),
        ("/console/../v1/calls", "/console"),
        ("/consoles", "/console"),
        ("/console//evil.example", "/console"),
        ("/console/\r\nSet-Cookie: x", "/console"),
    ],
)
def test_login_goes_on_only_to_console_paths(given: str | None, kept: str) -> None:
    assert safe_next(given) == kept


async def test_local_mode_serves_loopback_clients_without_a_key(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_console="local")
    async with client(lb) as http:
        page = await http.get("/console")
        assert page.status_code == 200 and "live-calls" in page.text
        assert (await http.get("/console/api/live")).json() == {"calls": []}
        # A page of another site that rebinds its name to 127.0.0.1 sends its own Host.
        rebound = await http.get("/console/api/live", headers={"Host": "evil.example"})
        assert rebound.status_code == 403
        proxied = await http.get("/console/api/live", headers={"X-Forwarded-For": "203.0.113.9"})
        assert proxied.status_code == 403


def request_from(address: str, host: str = "localhost:8080", **headers: str) -> Request:
    raw = [(b"host", host.encode())]
    raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
    scope = {
        "type": "http", "method": "GET", "path": "/console/api/live", "raw_path": b"",
        "query_string": b"", "headers": raw, "client": (address, 50000),
        "server": ("127.0.0.1", 8080), "scheme": "http", "http_version": "1.1",
    }  # fmt: skip
    return Request(scope)


def local_gate(api_key: str | None = None) -> ConsoleGate:
    settings = load_settings(
        None, telebridge_console="local", telebridge_api_key=api_key,
        telebridge_public_url="https://bridge.example.com",
    )  # fmt: skip
    return ConsoleGate(settings, Keys())


async def test_local_mode_lets_in_only_loopback_addresses() -> None:
    gate = local_gate()
    for address in ("127.0.0.1", "127.8.9.10", "::1"):
        assert await gate.check(request_from(address)) is None, address
    for host in ("127.0.0.1:8080", "[::1]:8080", "bridge.example.com", "LOCALHOST"):
        assert await gate.check(request_from("127.0.0.1", host)) is None, host
    for address in ("203.0.113.5", "10.0.0.2", "::ffff:203.0.113.5", "", "testclient"):
        refused = await gate.check(request_from(address))
        assert refused is not None and refused.status_code == 403, address
    for host in ("evil.example", "127.0.0.1.evil.example", "[::1", ""):
        refused = await gate.check(request_from("127.0.0.1", host))
        assert refused is not None and refused.status_code == 403, host
    refused = await gate.check(request_from("127.0.0.1", Forwarded="for=203.0.113.5"))
    assert refused is not None and refused.status_code == 403


async def test_local_mode_with_a_key_asks_others_for_it() -> None:
    gate = local_gate(KEY)
    refused = await gate.check(request_from("203.0.113.5"))
    assert refused is not None and refused.status_code == 401
    bearer = request_from("203.0.113.5", authorization=f"Bearer {KEY}")
    assert await gate.check(bearer) is None


async def test_sessions_expire_and_end_with_their_key() -> None:
    now = [1_000_000.0]
    keys = Keys()  # one process: the same session key for both gates below
    settings = load_settings(None, telebridge_api_key=f"{KEY},{OTHER_KEY}")
    gate = ConsoleGate(settings, keys, clock=lambda: now[0])
    value = gate.session_value(OTHER_KEY)

    def with_cookie() -> Request:
        return request_from("203.0.113.5", cookie=f"{COOKIE}={value}")

    assert await gate.check(with_cookie()) is None
    now[0] += SESSION_SECONDS + 1
    assert await gate.check(with_cookie()) is not None
    now[0] -= SESSION_SECONDS
    rotated = ConsoleGate(load_settings(None, telebridge_api_key=KEY), keys, clock=lambda: now[0])
    assert await rotated.check(with_cookie()) is not None  # OTHER_KEY was rotated out
    kept = ConsoleGate(
        load_settings(None, telebridge_api_key=OTHER_KEY), keys, clock=lambda: now[0]
    )
    assert await kept.check(with_cookie()) is None
    # Another process with the same settings (its own random keys) takes the same cookies...
    elsewhere = ConsoleGate(settings, Keys(), clock=lambda: now[0])
    assert await elsewhere.check(with_cookie()) is None
    # ...and with TELEBRIDGE_SECRET they are signed with it: a bridge with another refuses them.
    secret_a = load_settings(None, telebridge_api_key=KEY, telebridge_secret="a" * 32)
    secret_b = load_settings(None, telebridge_api_key=KEY, telebridge_secret="b" * 32)
    value = ConsoleGate(secret_a, Keys.from_settings(secret_a)).session_value(KEY)
    assert await ConsoleGate(secret_a, Keys.from_settings(secret_a)).check(with_cookie()) is None
    assert (
        await ConsoleGate(secret_b, Keys.from_settings(secret_b)).check(with_cookie()) is not None
    )
