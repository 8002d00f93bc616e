"""The console's pages and static files: the files of console/static only, with their content
types and the strict headers every page carries."""

from __future__ import annotations

import httpx
import pytest

from telebridge.console.gate import CSP, STATIC
from tests.console.conftest import KEY, client
from tests.e2e.conftest import MakeBridge

TYPES = {".html": "text/html", ".css": "text/css", ".js": "text/javascript"}


def assert_strict(headers: httpx.Headers) -> None:
    assert headers.get("content-security-policy") == CSP
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("referrer-policy") == "no-referrer"


async def test_pages_and_every_static_file_are_served_with_strict_headers(
    make_bridge: MakeBridge,
) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        for path, name in (("/console", "console.html"), ("/console/phone", "phone.html")):
            page = await http.get(path)
            assert page.status_code == 200
            assert page.content == (STATIC / name).read_bytes()
            assert page.headers["content-type"] == "text/html; charset=utf-8"
            assert_strict(page.headers)
        login = await http.get("/console/login")
        assert_strict(login.headers)
        files = [p for p in STATIC.iterdir() if p.suffix in TYPES]
        assert {p.name for p in files} >= {"console.html", "phone.html", "login.html"}
        for file in files:
            served = await http.get(f"/console/static/{file.name}")
            assert served.status_code == 200, file.name
            assert served.content == file.read_bytes()
            assert served.headers["content-type"].startswith(TYPES[file.suffix])
            assert served.headers["cache-control"] == "no-cache"
            assert_strict(served.headers)


@pytest.mark.parametrize(
    "name",
    [
        "gate.py",
        "..%2Fgate.py",
        "%2E%2E%2Fgate.py",
        "../gate.py",
        "..%2F..%2Fsettings.py",
        "nothing.js",
        ".hidden.js",
        "__init__.py",
        "console.HTML",
    ],
)
async def test_only_the_static_files_are_served(make_bridge: MakeBridge, name: str) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        response = await http.get(f"/console/static/{name}")
        assert response.status_code == 404
        assert b"import" not in response.content


async def test_pages_refuse_other_methods(make_bridge: MakeBridge) -> None:
    lb = await make_bridge(telebridge_api_key=KEY)
    async with client(lb, key=KEY) as http:
        assert (await http.post("/console")).status_code == 405
        assert (await http.delete("/console/static/api.js")).status_code == 405
        unknown = await http.delete("/console/api/live/x")
        assert unknown.status_code == 404 and "error" in unknown.json()
        assert (await http.get("/console/elsewhere")).status_code == 404
    async with client(lb) as http:  # no page under /console answers without the gate
        assert (await http.get("/console/elsewhere")).status_code == 401
