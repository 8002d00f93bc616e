"""The carriers' call placers against their local fake REST APIs: the settings each needs, what
each sends, and whether a refused call may have gone out."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from telebridge.outbound.placers import PlacementError
from telebridge.outbound.placing import Dialer
from telebridge.settings import ConfigError
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.simulator.serving import bind_loopback
from tests.outbound.fixtures import (
    FROM,
    PUBLIC,
    TO,
    plivo_api,
    plivo_settings,
    private_key,
    signed_vars,
    vonage_api,
    vonage_settings,
)

__all__ = ["plivo_api", "private_key", "vonage_api"]  # shared fixtures


# --- settings a placer needs ----------------------------------------------------------------


def test_outbound_calls_need_a_public_url_and_credentials(tmp_path: Path) -> None:
    no_url = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_public_url=None)
    with pytest.raises(ConfigError, match=r"^TELEBRIDGE_PUBLIC_URL"):
        Dialer(no_url, "plivo", FROM)
    no_plivo = plivo_settings("http://127.0.0.1:9", tmp_path, plivo_auth_token=None)
    with pytest.raises(ConfigError, match=r"^PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN"):
        Dialer(no_plivo, "plivo", FROM)
    with pytest.raises(ConfigError, match=r"^VONAGE_APPLICATION_ID"):
        Dialer(no_plivo, "vonage", FROM)


async def test_vonage_needs_its_webhooks_enabled_on_the_bridge(
    vonage_api: VonageApiFake, private_key: str, tmp_path: Path
) -> None:
    settings = vonage_settings(vonage_api, private_key, tmp_path, vonage_signature_secret=None)
    with pytest.raises(ConfigError, match=r"^VONAGE_SIGNATURE_SECRET"):
        Dialer(settings, "vonage", FROM)


# --- Plivo ----------------------------------------------------------------------------------


async def test_a_plivo_call_carries_signed_variables_on_both_urls(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    dialer = Dialer(plivo_settings(url, tmp_path), "plivo", "1 415 555 0100")
    placed = await asyncio.to_thread(dialer.call, "+1 415 555 0123", {"name": "Ada Lovelace"})

    (create,) = fake.calls_to("/Call/")
    assert create.method == "POST"
    assert create.body["from"] == "14155550100"
    assert create.body["to"] == "14155550123"
    assert placed.request_id and placed.to == TO
    answer, hangup = create.body["answer_url"], create.body["hangup_url"]
    assert answer.startswith(f"{PUBLIC}/plivo/answer?vars=")
    assert hangup.startswith(f"{PUBLIC}/plivo/hangup?vars=")
    assert create.body["answer_method"] == "POST" and create.body["hangup_method"] == "POST"
    expected = {"name": "Ada Lovelace", "direction": "outbound"}
    assert signed_vars(answer) == expected
    assert signed_vars(hangup) == expected


async def test_refusals_say_whether_the_call_may_have_gone_out(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    dialer = Dialer(plivo_settings(url, tmp_path), "plivo", FROM)
    fake.create_statuses = [429, 400, 500]
    with pytest.raises(PlacementError) as limited:
        await asyncio.to_thread(dialer.call, TO)
    assert limited.value.rate_limited and limited.value.placed == "no"
    with pytest.raises(PlacementError) as refused:
        await asyncio.to_thread(dialer.call, TO)
    assert refused.value.placed == "no" and not refused.value.rate_limited
    with pytest.raises(PlacementError) as server_error:
        await asyncio.to_thread(dialer.call, TO)
    assert server_error.value.placed == "maybe"  # Plivo may have queued it before failing
    assert len(fake.calls_to("/Call/")) == 3  # each sent once: a resent create could ring twice

    wrong = Dialer(plivo_settings(url, tmp_path, plivo_auth_token="wrong"), "plivo", FROM)
    with pytest.raises(PlacementError) as denied:
        await asyncio.to_thread(wrong.call, TO)
    assert denied.value.status == 401 and denied.value.placed == "no"


async def test_an_unreachable_api_placed_nothing(tmp_path: Path) -> None:
    sock = bind_loopback()
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    dialer = Dialer(plivo_settings(f"http://127.0.0.1:{port}", tmp_path), "plivo", FROM)
    with pytest.raises(PlacementError) as failed:
        await asyncio.to_thread(dialer.call, TO)
    assert failed.value.placed == "no"


# --- Vonage ---------------------------------------------------------------------------------


async def test_a_vonage_call_goes_through_create_call(
    vonage_api: VonageApiFake, private_key: str, tmp_path: Path
) -> None:
    settings = vonage_settings(vonage_api, private_key, tmp_path)
    dialer = Dialer(settings, "vonage", FROM, flow=None)
    placed = await asyncio.to_thread(dialer.call, TO, {"name": "Ada"})

    (create,) = vonage_api.calls_to("/v1/calls")
    assert create.method == "POST"
    assert create.headers["authorization"].startswith("Bearer ")  # the application's JWT
    assert create.json["to"] == [{"type": "phone", "number": "14155550123"}]
    assert create.json["from"] == {"type": "phone", "number": "14155550100"}
    assert create.json["answer_method"] == "POST" and create.json["event_method"] == "POST"
    (answer,) = create.json["answer_url"]
    (event,) = create.json["event_url"]
    assert answer.startswith(f"{PUBLIC}/vonage/answer?vars=")
    assert event.startswith(f"{PUBLIC}/vonage/event?vars=")
    assert signed_vars(answer) == signed_vars(event) == {"name": "Ada", "direction": "outbound"}
    assert placed.request_id == vonage_api.created[0]
