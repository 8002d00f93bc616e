"""`telebridge doctor` against the local Waves stand-in and the carrier REST fakes."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telebridge.admin.doctor import (
    Check,
    check_calllog,
    check_public_url,
    check_secret,
    diagnose,
    format_table,
)
from telebridge.calllog import CallLog
from telebridge.settings import load_settings
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.tts.standin import StandinServer
from tests.flows.fakes import unused_port
from tests.outbound.test_placing import (
    AUTH_ID,
    AUTH_TOKEN,
    PUBLIC,
    SECRET,
    VONAGE_APP,
    clean_env,
    plivo_api,
    private_key,
    run_cli,
    vonage_api,
)

__all__ = ["clean_env", "plivo_api", "private_key", "vonage_api"]  # shared fixtures

FLOW = "start: a\nsteps:\n  a:\n    say: hi\n    hangup: true\n"


@pytest.fixture
async def standin() -> AsyncIterator[StandinServer]:
    async with StandinServer(api_key="sk_doctor_test_key") as server:
        yield server


@pytest.fixture
def healthy(
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
    plivo_api: tuple[FakePlivoApi, str],
    standin: StandinServer,
) -> FakePlivoApi:
    """Settings every check accepts: Plivo at its fake, Waves at the stand-in."""
    fake, url = plivo_api
    flows = clean_env / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text(FLOW)
    for name, value in {
        "TELEBRIDGE_PUBLIC_URL": PUBLIC,
        "TELEBRIDGE_SECRET": SECRET,
        "TELEBRIDGE_FLOWS_DIR": str(flows),
        "TELEBRIDGE_FLOW": "hello",
        "TELEBRIDGE_DB": str(clean_env / "calls.db"),
        "WAVES_API_KEY": standin.api_key,
        "WAVES_URL": standin.url,
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
        "PLIVO_API_URL": url,
    }.items():
        monkeypatch.setenv(name, value)
    return fake


def rows(out: str) -> dict[str, tuple[str, str]]:
    """The table as {check: (status, detail)}."""
    found = {}
    for line in out.splitlines()[1:]:
        match = re.fullmatch(r"(.+?) +(fine|to fix) +(.*)", line)
        assert match, line
        found[match[1]] = (match[2], match[3])
    return found


async def test_all_fine_exits_0(healthy: FakePlivoApi, standin: StandinServer) -> None:
    code, out, err = await asyncio.to_thread(run_cli, ["doctor"])
    table = rows(out)
    assert code == 0, out + err
    assert out.splitlines()[0].split() == ["check", "status", "detail"]
    assert {status for status, _ in table.values()} == {"fine"}
    # WAVES_TRANSPORT=auto uses both the WebSocket and HTTP streaming: each is checked.
    for transport in ("WebSocket", "HTTP streaming"):
        detail = table[f"speech ({transport})"][1]
        assert detail.startswith(f"WAVES_API_KEY accepted by {standin.url}")
    assert "speech (HTTP sync)" not in table  # only with a cache folder, for prompts render
    assert standin.requests and standin.requests[0]["text"] == "Hello."
    spoken = [r for r in standin.http_requests if r["path"] == "/waves/v1/tts/live"]
    assert [r["body"]["text"] for r in spoken] == ["Hello."]
    assert table["Plivo"][1].startswith("credentials accepted")
    assert [r.path for r in healthy.requests] == [f"/v1/Account/{AUTH_ID}/"]
    assert "Vonage is off" in table["Vonage"][1]
    assert table["flows"][1] == "1 flow(s), default hello"
    assert table["signing keys"] == ("fine", "from TELEBRIDGE_SECRET")
    assert SECRET not in out and AUTH_TOKEN not in out


async def test_rejected_keys_and_a_bad_url_are_to_fix(
    healthy: FakePlivoApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAVES_API_KEY", "sk_wrong")
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "wrong")
    monkeypatch.setenv("TELEBRIDGE_PUBLIC_URL", "http://127.0.0.1:8080")
    monkeypatch.delenv("TELEBRIDGE_SECRET")
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    table = rows(out)
    assert code == 1
    for transport in ("WebSocket", "HTTP streaming"):
        assert table[f"speech ({transport})"] == ("to fix", "WAVES_API_KEY: rejected by Waves")
    assert table["Plivo"] == ("to fix", "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN: rejected by Plivo")
    assert table["public URL"][0] == "to fix" and "not reachable" in table["public URL"][1]
    # Without TELEBRIDGE_SECRET the keys are derived: nothing to fix, nothing to invent.
    assert table["signing keys"] == (
        "fine",
        "TELEBRIDGE_SECRET is not set: derived, plivo from PLIVO_AUTH_TOKEN",
    )
    assert table["flows"][0] == "fine"
    assert "sk_wrong" not in out and "wrong" not in table["Plivo"][1].replace("rejected", "")


async def test_without_a_waves_key_the_offline_synthesizer_is_checked(
    healthy: FakePlivoApi, monkeypatch: pytest.MonkeyPatch, standin: StandinServer
) -> None:
    monkeypatch.delenv("WAVES_API_KEY")
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    table = rows(out)
    assert code == 0
    for transport in ("WebSocket", "HTTP streaming"):
        status, detail = table[f"speech ({transport})"]
        assert status == "fine"
        assert detail.startswith("WAVES_API_KEY is not set: the offline synthesizer speaks")
    assert standin.requests == [] and standin.http_requests == []  # Waves was not asked


@pytest.mark.parametrize(
    ("transport", "cache", "checked"),
    [
        ("websocket", False, ["WebSocket"]),
        ("sse", False, ["HTTP streaming"]),
        ("sse", True, ["HTTP streaming", "HTTP sync"]),
    ],
)
async def test_each_transport_the_bridge_would_use_is_checked(
    healthy: FakePlivoApi,
    monkeypatch: pytest.MonkeyPatch,
    standin: StandinServer,
    clean_env: Path,
    transport: str,
    cache: bool,
    checked: list[str],
) -> None:
    monkeypatch.setenv("WAVES_TRANSPORT", transport)
    if cache:
        monkeypatch.setenv("TELEBRIDGE_CACHE_DIR", str(clean_env / "prompts"))
    code, out, err = await asyncio.to_thread(run_cli, ["doctor"])
    table = rows(out)
    assert code == 0, out + err
    assert sorted(n for n in table if n.startswith("speech")) == sorted(
        f"speech ({name})" for name in checked
    )
    assert (standin.requests != []) == ("WebSocket" in checked)


async def test_a_refused_websocket_is_to_fix_and_says_calls_would_use_sse(
    healthy: FakePlivoApi, standin: StandinServer
) -> None:
    standin.faults.refuse_status = 503
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    table = rows(out)
    assert code == 1
    status, detail = table["speech (WebSocket)"]
    assert status == "to fix"
    assert "HTTP 503" in detail and "would speak over HTTP streaming" in detail
    assert table["speech (HTTP streaming)"][0] == "fine"


async def test_vonage_credentials_are_checked_with_a_signed_get(
    healthy: FakePlivoApi,
    monkeypatch: pytest.MonkeyPatch,
    vonage_api: VonageApiFake,
    private_key: str,
) -> None:
    for name, value in {
        "VONAGE_APPLICATION_ID": VONAGE_APP,
        "VONAGE_PRIVATE_KEY": private_key,
        "VONAGE_SIGNATURE_SECRET": "vonage-signature-secret-of-40-characters",
        "VONAGE_API_HOST": vonage_api.host,
    }.items():
        monkeypatch.setenv(name, value)
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    assert code == 0, out
    assert rows(out)["Vonage"] == ("fine", f"application {VONAGE_APP} accepted")
    (get,) = vonage_api.requests
    assert (get.method, get.path) == ("GET", "/v1/calls")
    assert get.headers["authorization"].startswith("Bearer ")

    monkeypatch.delenv("VONAGE_SIGNATURE_SECRET")
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    assert code == 1
    assert rows(out)["Vonage"][1].startswith("VONAGE_SIGNATURE_SECRET is not set")


async def test_malformed_settings_are_one_row(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEBRIDGE_PORT", "eighty")
    code, out, _ = await asyncio.to_thread(run_cli, ["doctor"])
    assert code == 1
    ((name, (status, detail)),) = rows(out).items()
    assert (name, status) == ("settings", "to fix") and detail.startswith("TELEBRIDGE_PORT:")


@pytest.mark.parametrize(
    ("url", "fine"),
    [
        ("https://bridge.example.com", True),
        ("http://bridge.example.com", False),
        ("https://localhost:8443", False),
        ("https://10.0.0.5", False),
        ("https://93.184.216.34", True),
    ],
)
def test_public_url_shape(url: str, fine: bool) -> None:
    assert check_public_url(load_settings(None, telebridge_public_url=url)).ok is fine


def test_no_carrier_at_all_is_to_fix(tmp_path: Path) -> None:
    def load() -> object:
        return load_settings(
            None, telebridge_public_url=PUBLIC, telebridge_db=tmp_path / "c.db",
            plivo_auth_id=None, plivo_auth_token=None, vonage_signature_secret=None,
        )  # fmt: skip

    checks = [c for c in diagnose(load) if not c.name.startswith("speech")]  # type: ignore[arg-type]
    assert Check("carriers", False, "neither Plivo nor Vonage is configured") in checks
    assert "to fix" in format_table(checks)


def test_signing_keys_need_a_secret_or_a_credential_every_process_has() -> None:
    def check(**values: object) -> Check:
        base: dict[str, object] = {
            "plivo_auth_id": None,
            "plivo_auth_token": None,
            "vonage_signature_secret": None,
            "telebridge_secret": None,
        }
        return check_secret(load_settings(None, **{**base, **values}))

    nothing = check()
    assert not nothing.ok and nothing.detail.startswith("TELEBRIDGE_SECRET is not set and no")
    assert check(telebridge_secret="short") == Check(
        "signing keys", False, "TELEBRIDGE_SECRET is shorter than 16 characters"
    )
    # Vonage taking unsigned webhooks, without its private key: nothing shared to derive from.
    unsigned = check(vonage_allow_unsigned=True, plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN)
    assert not unsigned.ok and "VONAGE_SIGNATURE_SECRET nor VONAGE_PRIVATE_KEY" in unsigned.detail
    both = check(plivo_auth_id=AUTH_ID, plivo_auth_token=AUTH_TOKEN,
                 vonage_signature_secret="vonage-signature-secret-of-40-characters")  # fmt: skip
    assert both == Check("signing keys", True, "TELEBRIDGE_SECRET is not set: derived, plivo from "
                         "PLIVO_AUTH_TOKEN, vonage from VONAGE_SIGNATURE_SECRET")  # fmt: skip


def test_a_postgresql_call_log_is_reached(pg_url: str) -> None:
    check = check_calllog(load_settings(None, telebridge_db=pg_url))
    assert check.ok and "PostgreSQL" in check.detail
    CallLog(pg_url).close()
    check = check_calllog(load_settings(None, telebridge_db=pg_url))
    assert check.ok and "schema 1" in check.detail


def test_an_unreachable_postgresql_call_log_is_to_fix() -> None:
    url = f"postgresql://bridge:hunter2-secret@127.0.0.1:{unused_port()}/calls"
    check = check_calllog(load_settings(None, telebridge_db=url))
    assert not check.ok
    assert check.detail.startswith("TELEBRIDGE_DB: cannot use postgresql://bridge:***@")
    assert "hunter2" not in check.detail
