"""Typed errors of the HTTP transports: statuses with their bodies, JSON error bodies, httpx
failures (no I/O but `read_error_body` on an in-memory response)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from telebridge.tts.errors import (
    WavesAuthError,
    WavesConnectionError,
    WavesForbiddenError,
    WavesRateLimited,
    WavesServerError,
)
from telebridge.tts.http_errors import (
    MAX_ERROR_BODY,
    connection_error,
    describe_body,
    error_messages,
    read_error_body,
    status_error,
)

SECRET = "sk_live_do_not_leak_0123456789"
WHERE = "https://api.smallest.ai/waves/v1/tts/live"


def test_refusals_are_typed_like_the_websocket_upgrade() -> None:
    auth = status_error(401, {}, b'{"error": "bad key"}', secret=SECRET)
    assert type(auth) is WavesAuthError
    assert str(auth) == "Waves refused the API key (HTTP 401): check WAVES_API_KEY"
    forbidden = status_error(403, {}, b"", secret=SECRET)
    assert type(forbidden) is WavesForbiddenError
    assert str(forbidden) == "the Waves API key lacks access (HTTP 403)"
    limited = status_error(429, httpx.Headers({"retry-after": "7"}), b"", secret=SECRET)
    assert type(limited) is WavesRateLimited
    assert limited.retry_after == 7.0
    assert str(limited) == "Waves concurrency limit reached (HTTP 429)"
    no_date = status_error(429, {}, b"", secret=SECRET)
    assert isinstance(no_date, WavesRateLimited) and no_date.retry_after is None


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"error":[{"code":"custom","path":["voice_id"],"message":"Invalid Voice ID"}]}',
            "Waves rejected the request (HTTP 400): voice_id: Invalid Voice ID",
        ),
        (
            b'{"error":[{"path":["sample_rate"],"message":"Expected 8000 | 16000"},'
            b'{"path":["speed", 0],"message":"Too fast"},{"message":"No path"},"plain"]}',
            "Waves rejected the request (HTTP 400): sample_rate: Expected 8000 | 16000; "
            "speed.0: Too fast; No path; plain",
        ),
        (
            b'{"message": "text is required"}',
            "Waves rejected the request (HTTP 400): text is required",
        ),
        (b'{"error": "bad model"}', "Waves rejected the request (HTTP 400): bad model"),
        (b"Bad Request\n", "Waves rejected the request (HTTP 400): Bad Request"),
        (b"", "Waves rejected the request (HTTP 400): no reason given"),
        (b"{}", "Waves rejected the request (HTTP 400): {}"),
    ],
)
def test_400_names_the_messages_of_the_body(body: bytes, message: str) -> None:
    error = status_error(400, {}, body, secret=SECRET)
    assert type(error) is WavesServerError
    assert str(error) == message
    assert error.code is None


def test_nested_error_and_its_code() -> None:
    body = b'{"error": {"message": "voice not found", "code": "VOICE_NOT_FOUND"}}'
    error = status_error(400, {}, body, secret=SECRET)
    assert isinstance(error, WavesServerError)
    assert error.message == "Waves rejected the request (HTTP 400): voice not found"
    assert error.code == "VOICE_NOT_FOUND"
    assert str(error) == f"{error.message} (code VOICE_NOT_FOUND)"


def test_other_statuses_name_the_status_and_an_excerpt() -> None:
    retired = status_error(
        410,
        {},
        b'{"message": "lightning-v2 is retired", "error_code": "MODEL_DEPRECATED"}',
        secret=SECRET,
    )
    assert type(retired) is WavesServerError
    assert (
        str(retired) == "Waves answered HTTP 410: lightning-v2 is retired (code MODEL_DEPRECATED)"
    )
    page = status_error(502, {}, b"<html>\n  <b>Bad   gateway</b>\n</html>", secret=SECRET)
    assert str(page) == "Waves answered HTTP 502: <html> <b>Bad gateway</b> </html>"
    assert str(status_error(503, {}, b"", secret=SECRET)) == "Waves answered HTTP 503"
    # An unknown status is a server error even with a Retry-After (only 429 is a limit).
    assert type(status_error(500, {"Retry-After": "3"}, b"", secret=SECRET)) is WavesServerError


def test_long_bodies_are_cut_short() -> None:
    error = status_error(500, {}, b"x" * 10_000, secret=SECRET)
    assert str(error) == "Waves answered HTTP 500: " + "x" * 297 + "..."
    # Bytes past MAX_ERROR_BODY are never looked at, even if they would make it JSON.
    body = b'{"message": "' + b"y" * MAX_ERROR_BODY + b'"}'
    assert str(status_error(500, {}, body, secret=SECRET)).endswith("y" * 10 + "...")
    assert str(status_error(500, {}, b"caf\xc3\xa9 \xff", secret=SECRET)) == (
        "Waves answered HTTP 500: caf\u00e9 \ufffd"
    )


def test_the_key_never_gets_into_a_message() -> None:
    echoed = json.dumps({"error": f"key {SECRET} unknown", "code": f"c-{SECRET}"}).encode()
    bodies = [echoed, f"Bearer {SECRET} rejected".encode(), f"{SECRET}".encode() * 50]
    for status in (400, 404, 500):
        for body in bodies:
            error = status_error(status, {}, body, secret=SECRET)
            assert SECRET not in str(error) and SECRET not in repr(error)
    error = status_error(400, {}, echoed, secret=SECRET)
    assert str(error) == (
        "Waves rejected the request (HTTP 400): key [redacted] unknown (code c-[redacted])"
    )
    # Shaped like a key, though not ours: redacted as well.
    other = status_error(500, {}, b"sk_other_key_abcdef", secret=SECRET)
    assert str(other) == "Waves answered HTTP 500: sk_[redacted]"
    assert describe_body(f"x {SECRET}".encode(), secret=SECRET) == "x [redacted]"


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=10,
)


@given(
    _JSON
    | st.fixed_dictionaries({}, optional={"error": _JSON, "message": _JSON, "path": _JSON})
    | st.fixed_dictionaries(
        {"error": st.lists(st.dictionaries(st.sampled_from(["message", "path", "code"]), _JSON))}
    )
)
def test_error_messages_takes_any_json(obj: object) -> None:
    messages = error_messages(obj)
    assert all(isinstance(m, str) and m and m == m.strip() for m in messages)
    status_error(400, {}, json.dumps(obj).encode(), secret=SECRET)


@pytest.mark.parametrize(
    ("exc", "message"),
    [
        (httpx.ConnectError(f"[Errno 111] {SECRET}"), f"cannot connect to {WHERE}: ConnectError"),
        (httpx.ConnectTimeout(SECRET), f"cannot connect to {WHERE}: timed out"),
        (httpx.ProxyError(SECRET), f"cannot connect to {WHERE}: ProxyError"),
        (httpx.PoolTimeout(SECRET), f"cannot connect to {WHERE}: no free connection in time"),
        (httpx.RemoteProtocolError(SECRET), f"no answer from {WHERE}: RemoteProtocolError"),
        (httpx.ReadTimeout(SECRET), f"no answer from {WHERE}: timed out"),
        (httpx.ReadError(SECRET), f"no answer from {WHERE}: ReadError"),
    ],
)
def test_connection_errors_name_the_type_never_the_text(exc: httpx.HTTPError, message: str) -> None:
    error = connection_error(exc, WHERE)
    assert type(error) is WavesConnectionError
    assert str(error) == message


async def test_read_error_body_reads_at_most_64_kb() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal pulled
        while True:
            pulled += 1
            yield b"e" * 10_000

    response = httpx.Response(500, content=endless())
    body = await read_error_body(response)
    assert body == b"e" * MAX_ERROR_BODY
    assert pulled == 7  # stopped once 64 KB had come
    assert response.is_closed
    small = httpx.Response(400, content=b'{"error": "x"}')
    assert await read_error_body(small) == b'{"error": "x"}'


async def test_read_error_body_keeps_what_came_before_a_break() -> None:
    async def broken() -> AsyncIterator[bytes]:
        yield b"partial "
        raise httpx.ReadError("connection reset")

    assert await read_error_body(httpx.Response(502, content=broken())) == b"partial "
