"""The one redaction mechanism: `redact` and the secret-redacting logger adapter."""

from __future__ import annotations

import logging

import pytest

from telebridge.logs import redact, redacting_logger

SECRET = "plain-key-not-shaped-like-one"


def test_redact_takes_the_given_secret_out_verbatim() -> None:
    assert redact(f"key={SECRET}; again {SECRET}", SECRET) == "key=[redacted]; again [redacted]"
    assert redact(f"key={SECRET}") == f"key={SECRET}"  # not shaped like a secret: needs naming
    assert redact("nothing here", "") == "nothing here"


def test_redact_patterns_apply_with_a_secret_too() -> None:
    line = f"Authorization: Bearer other.tok-en sk_live_abcdef123 /s?token=t0k&x=1 {SECRET}"
    cleaned = redact(line, SECRET)
    for leaked in ("other.tok-en", "sk_live_abcdef123", "t0k", SECRET):
        assert leaked not in cleaned
    assert cleaned == (
        "Authorization: Bearer [redacted] sk_[redacted] /s?token=[redacted]&x=1 [redacted]"
    )


def test_redacting_logger_scrubs_formatted_records(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="test.redacting")
    log = redacting_logger(logging.getLogger("test.redacting"), SECRET)
    log.debug("> Authorization: Bearer %s", SECRET)
    log.debug("> %(h)s: Bearer %(v)s", {"h": "Authorization", "v": "sk_someone_else1"})
    log.info("key %s and %d", SECRET)  # a bad format still goes out, redacted
    log.warning("%s", "a foreign Bearer abc.def")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[:2] == ["> Authorization: Bearer [redacted]"] * 2
    assert "[redacted]" in messages[2] and SECRET not in messages[2]
    assert messages[3] == "a foreign Bearer [redacted]"
    assert [r.levelno for r in caplog.records] == [10, 10, 20, 30]
    assert all(r.name == "test.redacting" for r in caplog.records)


def test_redacting_logger_skips_disabled_levels(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="test.quiet")
    log = redacting_logger(logging.getLogger("test.quiet"), SECRET)
    log.debug("%s", SECRET)
    assert caplog.records == []
