"""`telebridge configure`: Plivo applications and numbers, Vonage applications, against the local
fakes of both REST APIs (requests recorded and checked)."""

from __future__ import annotations

import asyncio
import copy
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from telebridge.admin.configure import ConfigureError, configure_vonage, format_report
from telebridge.settings import ConfigError, Settings
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.fake_vonage_api import VonageApiFake
from tests.outbound.test_placing import (
    PUBLIC,
    VONAGE_APP,
    clean_env,
    cli_env,
    plivo_api,
    private_key,
    run_cli,
    vonage_api,
)

__all__ = ["clean_env", "plivo_api", "private_key", "vonage_api"]  # shared fixtures

OLD = "https://old.example.com"
NUMBER = "+14155550100"


def posts(fake: FakePlivoApi) -> list[Any]:
    return [r for r in fake.requests if r.method == "POST"]


# --- Plivo ----------------------------------------------------------------------------------


async def test_a_new_plivo_application_is_created_and_numbers_attached(
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    other = fake.add_application("someone else")
    fake.add_number(NUMBER, other)
    argv = ["configure", "plivo", "--app-name", "telebridge", "--number", "1 415 555 0100"]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err

    (create,) = fake.calls_to("/Application/")[-1:]
    assert create.method == "POST"
    assert create.body == {
        "app_name": "telebridge",
        "answer_url": f"{PUBLIC}/plivo/answer",
        "answer_method": "POST",
        "hangup_url": f"{PUBLIC}/plivo/hangup",
        "hangup_method": "POST",
        "fallback_answer_url": f"{PUBLIC}/plivo/answer",
        "fallback_method": "POST",
        "default_number_app": False,
        "default_endpoint_app": False,
        "log_incoming_messages": True,
        "message_method": "POST",
    }
    (app_id,) = [k for k, v in fake.applications.items() if v["app_name"] == "telebridge"]
    attach = fake.calls_to(f"/Number/{NUMBER[1:]}/")[-1]
    assert attach.method == "POST" and attach.body["app_id"] == app_id
    assert fake.numbers[NUMBER[1:]]["application"].endswith(f"/Application/{app_id}/")
    assert "answer_url" in out and f"-> {PUBLIC}/plivo/answer" in out
    assert f"number {NUMBER}" in out and f"{other}" in out and f"-> {app_id}" in out
    assert "changed 7 setting(s) of a new application" in out


async def test_an_existing_plivo_application_keeps_its_other_settings(
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    for i in range(25):  # more than one page of applications
        fake.add_application(f"app {i}")
    app_id = fake.add_application(
        "telebridge", answer_url=f"{OLD}/answer", answer_method="GET", hangup_url=f"{OLD}/hangup",
        default_app=True, log_incoming_messages=False, message_url=f"{OLD}/sms",
        message_method="GET", public_uri=True,
    )  # fmt: skip
    before = copy.deepcopy(fake.applications[app_id])
    code, out, err = await asyncio.to_thread(
        run_cli, ["configure", "plivo", "--app-name", "telebridge"]
    )
    assert code == 0, err
    (update,) = [r for r in posts(fake) if r.path.endswith(f"/Application/{app_id}/")]
    assert update.body["answer_url"] == f"{PUBLIC}/plivo/answer"
    assert update.body["default_number_app"] is True  # not reset to the SDK's default
    assert update.body["log_incoming_messages"] is False
    assert update.body["public_uri"] is True
    assert update.body["message_url"] == f"{OLD}/sms" and update.body["message_method"] == "GET"
    after = fake.applications[app_id]
    changed = {k for k in after if after[k] != before[k]}
    assert changed == {"answer_url", "answer_method", "hangup_url", "fallback_answer_url"}
    assert re.search(r"answer_method +GET +-> POST\n", out)
    assert re.search(r"hangup_method +POST +\(unchanged\)\n", out)
    assert "changed 4 setting(s)" in out

    # Run again: nothing left to change, nothing sent.
    sent = len(posts(fake))
    code, out, _ = await asyncio.to_thread(run_cli, ["configure", "plivo", "--app-id", app_id])
    assert code == 0 and "nothing to change" in out
    assert len(posts(fake)) == sent


async def test_a_plivo_dry_run_changes_nothing(
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    app_id = fake.add_application("telebridge", answer_url=f"{OLD}/answer")
    fake.add_number(NUMBER)
    before = copy.deepcopy((fake.applications, fake.numbers))
    argv = ["configure", "plivo", "--app-id", app_id, "--number", NUMBER, "--dry-run"]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err
    assert posts(fake) == []
    assert (fake.applications, fake.numbers) == before
    assert f"{OLD}/answer" in out and f"-> {PUBLIC}/plivo/answer" in out
    assert "dry run: would change 4 setting(s); nothing was changed" in out

    code, out, _ = await asyncio.to_thread(
        run_cli, ["configure", "plivo", "--app-name", "new one", "--dry-run"]
    )
    assert code == 0 and "application new one (new)" in out
    assert posts(fake) == []


async def test_plivo_mistakes_are_one_line(
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    fake.add_application("twin")
    fake.add_application("twin")
    for argv, expected in [
        (["configure", "plivo"], "one of the arguments --app-name --app-id is required"),
        (["configure", "plivo", "--app-name", "a", "--app-id", "1"], "not allowed with"),
        (["configure", "plivo", "--app-id", "999"], "--app-id: no Plivo application 999"),
        (["configure", "plivo", "--app-name", "twin"], "pick one with --app-id"),
        (
            ["configure", "plivo", "--app-name", "x", "--number", "12"],
            "--number: '12' is not an E.164 number ('+', the country code, 7 to 15 digits",
        ),
        (
            ["configure", "plivo", "--app-name", "x", "--number", NUMBER],
            f"--number: {NUMBER} is not a number of this Plivo account",
        ),
    ]:
        code, _, err = await asyncio.to_thread(run_cli, argv)
        assert code == 2 and expected in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "wrong")
    code, _, err = await asyncio.to_thread(run_cli, ["configure", "plivo", "--app-name", "x"])
    assert code == 2 and "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN: rejected by Plivo" in err
    monkeypatch.delenv("TELEBRIDGE_PUBLIC_URL")
    code, _, err = await asyncio.to_thread(run_cli, ["configure", "plivo", "--app-name", "x"])
    assert code == 2 and "TELEBRIDGE_PUBLIC_URL is not set" in err
    assert posts(fake) == []


# --- Vonage ---------------------------------------------------------------------------------


class WithAccount(Settings):
    """The settings with the account's API key and secret, which `configure vonage` reads."""

    vonage_api_key: str | None = None
    vonage_api_secret: SecretStr | None = None


def application() -> dict[str, Any]:
    return {
        "name": "my voice app",
        "capabilities": {
            "voice": {
                "webhooks": {
                    "answer_url": {"address": f"{OLD}/answer", "http_method": "POST",
                                   "connect_timeout": 500, "socket_timeout": 3000},
                    "event_url": {"address": f"{OLD}/event", "http_method": "POST"},
                },
                "signed_callbacks": False,
                "conversations_ttl": 48,
                "region": "eu-west",
            },
            "messages": {
                "webhooks": {"inbound_url": {"address": f"{OLD}/in", "http_method": "POST"}},
                "version": "v1",
            },
            "rtc": {"webhooks": {"event_url": {"address": f"{OLD}/rtc", "http_method": "POST"}}},
            "vbc": {},
            "network_apis": {"redirect_uri": f"{OLD}/net"},  # one the SDK does not model
        },
        "privacy": {"improve_ai": False},
        "keys": {"public_key": "-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----\n"},
    }  # fmt: skip


def account_settings(api: VonageApiFake, key: str, **overrides: Any) -> WithAccount:
    values: dict[str, Any] = {
        "telebridge_public_url": PUBLIC,
        "vonage_application_id": VONAGE_APP,
        "vonage_private_key": key,
        "vonage_signature_secret": "vonage-signature-secret-of-40-characters",
        "vonage_api_host": api.host,
        "vonage_api_key": api.api_key,
        "vonage_api_secret": api.api_secret,
    }
    values.update(overrides)
    return WithAccount(**values)


async def test_vonage_webhooks_change_and_everything_else_is_kept(
    vonage_api: VonageApiFake, private_key: str
) -> None:
    vonage_api.applications[VONAGE_APP] = application()
    settings = account_settings(vonage_api, private_key)
    report = await asyncio.to_thread(configure_vonage, settings, application_id=VONAGE_APP)

    (put,) = [r for r in vonage_api.requests if r.method == "PUT"]
    assert put.path == f"/v2/applications/{VONAGE_APP}"
    assert put.headers["authorization"].startswith("Basic ")
    expected = application()
    voice = expected["capabilities"]["voice"]
    voice["webhooks"] = {
        "answer_url": {"address": f"{PUBLIC}/vonage/answer", "http_method": "GET",
                       "connect_timeout": 500, "socket_timeout": 3000},
        "event_url": {"address": f"{PUBLIC}/vonage/event", "http_method": "POST"},
        "fallback_answer_url": {"address": f"{PUBLIC}/vonage/answer", "http_method": "GET"},
    }  # fmt: skip
    voice["signed_callbacks"] = True
    assert put.json == expected  # the whole application, only the voice webhooks changed
    assert vonage_api.applications[VONAGE_APP] == expected

    text = format_report(report)
    assert re.search(rf"answer_url +{OLD}/answer +-> {PUBLIC}/vonage/answer\n", text)
    assert re.search(r"fallback_answer_method +\(none\) +-> GET\n", text)
    assert re.search(r"signed_callbacks +False +-> True\n", text)
    assert re.search(r"event_method +POST +\(unchanged\)\n", text)
    assert text.endswith("changed 6 setting(s)")


async def test_a_vonage_dry_run_sends_no_update(
    vonage_api: VonageApiFake, private_key: str
) -> None:
    vonage_api.applications[VONAGE_APP] = application()
    settings = account_settings(vonage_api, private_key, vonage_signature_secret=None,
                                vonage_allow_unsigned=True)  # fmt: skip
    report = await asyncio.to_thread(
        configure_vonage, settings, application_id=VONAGE_APP, dry_run=True
    )
    assert [r.method for r in vonage_api.requests] == ["GET"]
    assert vonage_api.applications[VONAGE_APP] == application()
    text = format_report(report)
    assert "dry run: would change 6 setting(s); nothing was changed" in text
    assert "note: set VONAGE_SIGNATURE_SECRET" in text


async def test_vonage_refusals_name_the_setting(
    vonage_api: VonageApiFake, private_key: str
) -> None:
    vonage_api.applications[VONAGE_APP] = application()
    wrong = account_settings(vonage_api, private_key, vonage_api_secret="wrong")
    with pytest.raises(ConfigError, match=r"^VONAGE_API_KEY / VONAGE_API_SECRET: rejected"):
        await asyncio.to_thread(configure_vonage, wrong, application_id=VONAGE_APP)
    settings = account_settings(vonage_api, private_key)
    with pytest.raises(ConfigureError, match=r"^--application-id: no Vonage application nope"):
        await asyncio.to_thread(configure_vonage, settings, application_id="nope")
    assert not [r for r in vonage_api.requests if r.method == "PUT"]


async def test_configure_vonage_asks_for_the_account_key(
    vonage_api: VonageApiFake,
    private_key: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in {
        "TELEBRIDGE_PUBLIC_URL": PUBLIC,
        "VONAGE_API_HOST": vonage_api.host,
        "VONAGE_SIGNATURE_SECRET": "vonage-signature-secret-of-40-characters",
    }.items():
        monkeypatch.setenv(name, value)
    code, _, err = await asyncio.to_thread(run_cli, ["configure", "vonage"])
    assert code == 2 and "--application-id: give the Vonage application" in err
    monkeypatch.setenv("VONAGE_APPLICATION_ID", VONAGE_APP)
    code, _, err = await asyncio.to_thread(run_cli, ["configure", "vonage", "--dry-run"])
    assert code == 2 and "VONAGE_API_KEY / VONAGE_API_SECRET are not set" in err
    assert len(err.strip().splitlines()) == 1
    assert vonage_api.requests == []


@pytest.mark.parametrize("argv", [["configure"], ["configure", "plivo"], ["configure", "vonage"]])
def test_configure_has_help(argv: list[str]) -> None:
    code, out, _ = run_cli([*argv, "--help"])
    assert code == 0 and "usage: telebridge configure" in out
