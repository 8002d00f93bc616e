"""The Waves message format: request JSON, frame parsing, ids and typed errors (no I/O)."""

from __future__ import annotations

import base64
import json
import time
from contextlib import suppress
from email.utils import formatdate

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
from telebridge.tts.speech import SpeechOptions
from telebridge.tts.wire import (
    Frame,
    check_request_id,
    frame_error,
    parse_frame,
    parse_retry_after,
    refusal_error,
    request_json,
)

OPTIONS = SpeechOptions("emily", model="lightning_v3.1_pro", language="hi", speed=1.25)


def test_request_json_is_the_exact_wire_text() -> None:
    plain = request_json("Hi.", sample_rate=8000, options=OPTIONS, rid="r-1")
    assert plain == (
        '{"voice_id": "emily", "text": "Hi.", "model": "lightning_v3.1_pro", "sample_rate": 8000, '
        '"speed": 1.25, "language": "hi", "request_id": "r-1", "word_timestamps": false}'
    )
    piece = json.loads(request_json("a", sample_rate=8000, options=OPTIONS, rid="r", more=True))
    assert piece["continue"] is True and "flush" not in piece
    last = json.loads(request_json("", sample_rate=8000, options=OPTIONS, rid="r", flush=True))
    assert last["flush"] is True and "continue" not in last and last["voice_id"] == "emily"


def test_check_request_id() -> None:
    fresh = check_request_id(None)
    assert fresh.startswith("tb_") and len(fresh) == 19 and fresh != check_request_id(None)
    assert check_request_id("a.B-9_" * 21 + "xx") == "a.B-9_" * 21 + "xx"  # 128 characters
    for bad in ("", "a b", "x" * 129, "ü"):
        with pytest.raises(ValueError):
            check_request_id(bad)


def test_frame_error_kinds_and_redaction() -> None:
    secret = "plainkey123"
    limited = frame_error(Frame("error", message="Too many", retry_after=1.5), secret=secret)
    assert isinstance(limited, WavesRateLimited) and limited.retry_after == 1.5
    by_code = frame_error(Frame("error", message="no", code="rate_limit"), secret=secret)
    assert isinstance(by_code, WavesRateLimited)
    other = frame_error(Frame("error", message=f"bad {secret}", code=f"c-{secret}"), secret=secret)
    assert isinstance(other, WavesServerError) and not isinstance(other, WavesRateLimited)
    assert other.message == "Waves: bad [redacted]" and other.code == "c-[redacted]"
    assert secret not in str(other)


def test_refusal_error_by_status() -> None:
    assert type(refusal_error(401, {})) is WavesAuthError
    assert type(refusal_error(403, {})) is WavesForbiddenError
    limited = refusal_error(429, {"Retry-After": "3"})
    assert isinstance(limited, WavesRateLimited) and limited.retry_after == 3.0
    other = refusal_error(502, {"Retry-After": "3"})
    assert type(other) is WavesConnectionError and "HTTP 502" in str(other)


def test_retry_after_accepts_http_dates() -> None:
    later = formatdate(time.time() + 30, usegmt=True)
    assert 25 <= (parse_retry_after({"Retry-After": later}) or 0) <= 30
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_parse_frame_tolerates_odd_retry_after() -> None:
    cases = [('"2"', None), ("true", None), ("1" * 400, None), ("1e999", None), ("-1", None)]
    for value, expected in [*cases, ("2", 2.0), ("1.5", 1.5)]:
        raw = '{"status": "error", "message": "Too many", "retry_after": ' + value + "}"
        assert parse_frame(raw).retry_after == expected


def test_parse_frame_reads_both_error_shapes() -> None:
    flat = parse_frame('{"status": "error", "message": "Connection timed out"}')
    assert (flat.message, flat.code) == ("Connection timed out", None)
    nested = parse_frame(
        '{"status": "error", "error": {"message": "Too many requests", "code": "concurrency"}}'
    )
    assert (nested.message, nested.code) == ("Too many requests", "concurrency")


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


_FRAMES = st.fixed_dictionaries(
    {"status": st.sampled_from(["chunk", "complete", "error", "word_timestamp"]) | st.text()},
    optional={
        "data": _JSON
        | st.fixed_dictionaries(
            {"audio": st.text() | st.binary().map(lambda b: base64.b64encode(b).decode())}
        ),
        "error": _JSON,
        "message": _JSON,
        "request_id": _JSON,
        "external_request_id": _JSON,
        "retry_after": _JSON,
    },
)


@given(st.one_of(st.text(), st.binary(), _JSON.map(json.dumps), _FRAMES.map(json.dumps)))
def test_parse_frame_fails_only_with_server_error(raw: str | bytes) -> None:
    with suppress(WavesServerError):
        frame = parse_frame(raw)
        assert isinstance(frame.audio, bytes)
        assert frame.request_id is None or isinstance(frame.request_id, str)
        assert frame.status != "error" or frame.message


def test_a_deeply_nested_frame_is_a_server_error_not_a_crash() -> None:
    with pytest.raises(WavesServerError, match="not valid JSON"):
        parse_frame("[" * 100_000)
