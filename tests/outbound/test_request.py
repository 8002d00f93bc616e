"""What an outbound call asks for: numbers and variables checked, the flow known, and the
signed variables and flow name on the callback URLs (through the fake Plivo REST API)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from telebridge.outbound.placing import Dialer
from telebridge.outbound.request import OutboundError, normalize_number, parse_vars
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.tokens import CALL_VARS, Keys, TokenError, read_call_variables
from tests.outbound.fixtures import FROM, PUBLIC, SECRET, TO, plivo_api, plivo_settings

__all__ = ["plivo_api"]  # shared fixtures


# --- numbers and variables -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("+14155550123", "+14155550123"),
        ("14155550123", "+14155550123"),
        ("+1 (415) 555-0123", "+14155550123"),
        ("0044 20 7946 0958", "+442079460958"),
        ("+919876543210", "+919876543210"),
    ],
)
def test_numbers_are_normalized_to_e164(given: str, expected: str) -> None:
    assert normalize_number(given, "--to") == expected


@pytest.mark.parametrize("bad", ["", "+", "12345", "+0123456789", "+1415555012345678", "call me"])
def test_bad_numbers_name_the_option(bad: str) -> None:
    with pytest.raises(OutboundError, match=r"^--to: .* is not an E.164 number"):
        normalize_number(bad, "--to")


def test_variables_are_key_value_with_safe_names() -> None:
    assert parse_vars(["name=Ada", "time=9 am", "empty="]) == {
        "name": "Ada",
        "time": "9 am",
        "empty": "",
    }
    with pytest.raises(OutboundError, match="not KEY=VALUE"):
        parse_vars(["name"])
    with pytest.raises(OutboundError, match="not a variable name"):
        parse_vars(["first name=Ada"])
    with pytest.raises(OutboundError, match="set by telebridge itself"):
        parse_vars(["caller=someone"])  # would impersonate the bridge's own variable


def test_an_unknown_flow_is_refused_before_any_call(tmp_path: Path) -> None:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text("start: a\nsteps:\n  a:\n    say: hi\n    hangup: true\n")
    settings = plivo_settings(
        "http://127.0.0.1:9", tmp_path, telebridge_flows_dir=flows, telebridge_flow="hello"
    )
    Dialer(settings, "plivo", FROM, flow="hello")
    with pytest.raises(OutboundError, match=r"^--flow: no flow named 'nope' .*have: hello"):
        Dialer(settings, "plivo", FROM, flow="nope")


# --- the callback URLs ----------------------------------------------------------------------


async def test_forged_variables_fail_the_check(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    dialer = Dialer(plivo_settings(url, tmp_path), "plivo", FROM, flow=None)
    await asyncio.to_thread(dialer.call, TO, {"amount": "10"})
    token = parse_qs(urlsplit(fake.calls_to("/Call/")[0].body["answer_url"]).query)["vars"][0]
    body, mac = token.split(".")
    forged = body.replace(body[4], "A" if body[4] != "A" else "B", 1) + "." + mac
    key = Keys(SECRET.encode()).key(CALL_VARS, "plivo")
    assert read_call_variables(key, token)["amount"] == "10"
    with pytest.raises(TokenError):
        read_call_variables(key, forged)
    with pytest.raises(TokenError):
        read_call_variables(Keys(b"another-secret").key(CALL_VARS, "plivo"), token)
    with pytest.raises(TokenError):
        read_call_variables(Keys(SECRET.encode()).key(CALL_VARS, "vonage"), token)


async def test_variables_expire_an_hour_after_the_call_is_placed(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    dialer = Dialer(plivo_settings(url, tmp_path), "plivo", FROM)
    placed_at = time.time()
    await asyncio.to_thread(dialer.call, TO, {"amount": "10"})
    token = parse_qs(urlsplit(fake.calls_to("/Call/")[0].body["answer_url"]).query)["vars"][0]
    key = Keys(SECRET.encode()).key(CALL_VARS, "plivo")
    assert read_call_variables(key, token, now=placed_at + 3590)["amount"] == "10"
    with pytest.raises(TokenError, match="expired"):
        read_call_variables(key, token, now=placed_at + 3610)


async def test_the_flow_name_is_on_the_answer_url(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "remind-me.yaml").write_text("start: a\nsteps:\n  a:\n    say: hi\n    hangup: true\n")
    settings = plivo_settings(
        url, tmp_path, telebridge_flows_dir=flows, telebridge_flow="remind-me"
    )
    dialer = Dialer(settings, "plivo", FROM, flow="remind-me")
    await asyncio.to_thread(dialer.call, TO)
    answer = fake.calls_to("/Call/")[0].body["answer_url"]
    assert answer.startswith(f"{PUBLIC}/plivo/answer?flow=remind-me&vars=")
