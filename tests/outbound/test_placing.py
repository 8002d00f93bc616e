"""Outbound calls: numbers and variables checked, signed URLs, both carriers' REST APIs (local
fakes), the `telebridge call` command, and one call answered by the real bridge."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from telebridge.calllog import CallLog
from telebridge.cli import main as cli
from telebridge.outbound.placing import (
    Dialer,
    OutboundError,
    PlacementError,
    Verdict,
    find_call,
    hangup_outcome,
    normalize_number,
    parse_vars,
    verdict_of,
)
from telebridge.settings import ConfigError, Settings, load_settings
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.fake_plivo_api import FakePlivoApi, RecordedRequest
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.simulator.plivo import signed_headers
from telebridge.simulator.serving import ServedApp, bind_loopback
from telebridge.tokens import CALL_VARS, Keys, TokenError, read_call_variables, sign_call_variables
from telebridge.tts import WavesClient
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import mulaw_of

AUTH_ID = "MA" + "OUTBOUNDTEST000000"
AUTH_TOKEN = "outbound-test-token"
SECRET = "outbound-test-secret-of-enough-length"
PUBLIC = "https://bridge.example.com"
FROM = "+14155550100"
TO = "+14155550123"
VONAGE_APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


# --- shared fixtures (also used by the campaign, configure and doctor tests) ----------------


@pytest.fixture
async def plivo_api() -> AsyncIterator[tuple[FakePlivoApi, str]]:
    """The fake Plivo REST API on a loopback port, and its base URL."""
    fake = FakePlivoApi(AUTH_ID, AUTH_TOKEN)
    async with ServedApp(fake.app(), lifespan="off") as served:
        yield fake, served.url


@pytest.fixture(scope="module")
def private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.fixture
async def vonage_api(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[VonageApiFake]:
    async with VonageApiFake() as fake:
        # The SDK offers no CA option; requests honours this variable for every session.
        monkeypatch.setenv("REQUESTS_CA_BUNDLE", fake.ca_path)
        yield fake


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """No settings from the environment or a .env file: each test gives its own."""
    monkeypatch.chdir(tmp_path)
    for name in ("TELEBRIDGE_CONFIG", "TELEBRIDGE_SECRET", "TELEBRIDGE_PUBLIC_URL"):
        monkeypatch.delenv(name, raising=False)
    yield tmp_path


def plivo_settings(api_url: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telebridge_public_url": PUBLIC,
        "telebridge_secret": SECRET,
        "telebridge_db": tmp_path / "calls.db",
        "plivo_auth_id": AUTH_ID,
        "plivo_auth_token": AUTH_TOKEN,
        "plivo_api_url": api_url,
    }
    values.update(overrides)
    return load_settings(None, **values)


def vonage_settings(api: VonageApiFake, key: str, tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "telebridge_public_url": PUBLIC,
        "telebridge_secret": SECRET,
        "telebridge_db": tmp_path / "calls.db",
        "vonage_application_id": VONAGE_APP,
        "vonage_private_key": key,
        "vonage_signature_secret": "vonage-signature-secret-of-40-characters",
        "vonage_api_host": api.host,
    }
    values.update(overrides)
    return load_settings(None, **values)


def signed_vars(url: str, keys: Keys | None = None) -> dict[str, str]:
    """The variables a callback URL carries, checked as a bridge with `keys` (or SECRET) does."""
    parts = urlsplit(url)
    carrier = parts.path.split("/")[1]
    token = parse_qs(parts.query)["vars"][0]
    keys = keys or Keys(SECRET.encode())
    return read_call_variables(keys.key(CALL_VARS, carrier), token)


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`telebridge ARGV` through `cli.main`, in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the commands set up logging: undo that
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = int(exc.code or 0)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


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


@pytest.mark.parametrize(
    ("carrier", "cause", "outcome"),
    [
        ("plivo", "Busy Line", "busy"),
        ("plivo", "USER_BUSY", "busy"),
        ("plivo", "No Answer", "no-answer"),
        ("plivo", "Ring Timeout Reached", "no-answer"),
        ("plivo", "NO_USER_RESPONSE", "no-answer"),
        ("plivo", "Rejected", "busy"),
        ("plivo", "Invalid Destination Address", "failed"),
        ("plivo", "Normal Hangup", "failed"),  # answered, yet never streamed
        ("vonage", "busy", "busy"),
        ("vonage", "timeout", "no-answer"),
        ("vonage", "unanswered", "no-answer"),
        ("vonage", "cancelled", "no-answer"),
        ("vonage", "rejected", "failed"),
        ("vonage", "failed", "failed"),
        ("vonage", "", "failed"),
    ],
)
def test_hangup_causes_map_to_outcomes(carrier: str, cause: str, outcome: str) -> None:
    assert hangup_outcome(carrier, cause) == outcome


# --- settings an outbound call needs --------------------------------------------------------


class NoPlacer:
    carrier = "plivo"

    def place(self, *, to: str, from_: str, urls: Any) -> str:
        raise AssertionError("no call may be placed")


def test_outbound_calls_need_the_shared_secret_or_carrier_credentials(tmp_path: Path) -> None:
    no_secret = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_secret=None)
    Dialer(no_secret, "plivo", FROM)  # derives its key from PLIVO_AUTH_TOKEN
    nothing = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_secret=None,
                             plivo_auth_id=None, plivo_auth_token=None)  # fmt: skip
    with pytest.raises(ConfigError) as refused:
        Dialer(nothing, "plivo", FROM, placer=NoPlacer())
    assert str(refused.value).startswith(
        "TELEBRIDGE_SECRET is not set and neither is PLIVO_AUTH_TOKEN: "
    )
    assert "\n" not in str(refused.value)


def test_outbound_calls_need_a_public_url_and_credentials(tmp_path: Path) -> None:
    no_url = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_public_url=None)
    with pytest.raises(ConfigError, match=r"^TELEBRIDGE_PUBLIC_URL"):
        Dialer(no_url, "plivo", FROM)
    no_plivo = plivo_settings("http://127.0.0.1:9", tmp_path, plivo_auth_token=None)
    with pytest.raises(ConfigError, match=r"^PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN"):
        Dialer(no_plivo, "plivo", FROM)
    with pytest.raises(ConfigError, match=r"^VONAGE_APPLICATION_ID"):
        Dialer(no_plivo, "vonage", FROM)


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


async def test_a_bad_number_is_refused_before_any_request(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> None:
    fake, url = plivo_api
    dialer = Dialer(plivo_settings(url, tmp_path), "plivo", FROM)
    with pytest.raises(OutboundError, match=r"not an E.164 number"):
        await asyncio.to_thread(dialer.call, "555-012")
    with pytest.raises(OutboundError, match="is the --from number"):
        await asyncio.to_thread(dialer.call, FROM)
    assert fake.requests == []


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
    (answer,) = create.json["answer_url"]
    (event,) = create.json["event_url"]
    assert answer.startswith(f"{PUBLIC}/vonage/answer?vars=")
    assert event.startswith(f"{PUBLIC}/vonage/event?vars=")
    assert signed_vars(answer) == signed_vars(event) == {"name": "Ada", "direction": "outbound"}
    assert placed.request_id == vonage_api.created[0]


async def test_vonage_needs_its_webhooks_enabled_on_the_bridge(
    vonage_api: VonageApiFake, private_key: str, tmp_path: Path
) -> None:
    settings = vonage_settings(vonage_api, private_key, tmp_path, vonage_signature_secret=None)
    with pytest.raises(ConfigError, match=r"^VONAGE_SIGNATURE_SECRET"):
        Dialer(settings, "vonage", FROM)


# --- what became of the call ----------------------------------------------------------------


def test_the_call_log_row_is_found_by_its_attempt_id(tmp_path: Path) -> None:
    with CallLog(tmp_path / "calls.db") as log:
        recorder = log.start_call(
            carrier="plivo", call_id="uuid-1", direction="outbound", from_number=FROM,
            to_number=TO, flow="demo", variables={"attempt": "a-1", "direction": "outbound"},
        )  # fmt: skip
        assert find_call(log, "plivo", "a-1", "request-1") is not None
        assert verdict_of(find_call(log, "plivo", "a-1", None)) is None  # type: ignore[arg-type]
        recorder.digits_collected("menu", "1")
        recorder.finish("completed")
        record = find_call(log, "plivo", "a-1", None)
        assert record is not None
        verdict = verdict_of(record)
        assert verdict is not None
        assert (verdict.outcome, verdict.flow_outcome, verdict.digits) == (
            "answered",
            "completed",
            "1",
        )
        assert find_call(log, "vonage", "a-1", None) is None  # another carrier's row
        # Only calls from when the attempt was placed on are searched.
        assert find_call(log, "plivo", "a-1", None, since=time.time() - 60) is not None
        assert find_call(log, "plivo", "a-1", None, since=time.time() + 3600) is None
        assert find_call(log, "plivo", "a-2", None) is None

        # Vonage: found by the uuid create_call answered, before any variables reach the log.
        log.record_hangup("vonage", "leg-1", "busy", 0)
        record = find_call(log, "vonage", "a-3", "leg-1")
        assert record is not None and verdict_of(record) is not None
        assert verdict_of(record).outcome == "busy"  # type: ignore[union-attr]


# --- the command ----------------------------------------------------------------------------


def cli_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, api_url: str) -> None:
    values = {
        "TELEBRIDGE_PUBLIC_URL": PUBLIC,
        "TELEBRIDGE_SECRET": SECRET,
        "TELEBRIDGE_DB": str(tmp_path / "calls.db"),
        "PLIVO_AUTH_ID": AUTH_ID,
        "PLIVO_AUTH_TOKEN": AUTH_TOKEN,
        "PLIVO_API_URL": api_url,
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)


async def test_the_call_command_prints_the_request_id(
    plivo_api: tuple[FakePlivoApi, str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    argv = ["call", "--carrier", "plivo", "--to", TO, "--from", FROM, "--var", "name=Ada"]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err
    (create,) = fake.calls_to("/Call/")
    variables = signed_vars(create.body["answer_url"])
    assert variables["name"] == "Ada" and variables["attempt"].startswith("call-")
    assert "request_uuid" in out and variables["attempt"] in out


async def test_the_call_command_refuses_mistakes_in_one_line(
    plivo_api: tuple[FakePlivoApi, str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    base = ["call", "--carrier", "plivo", "--from", FROM]
    for argv, expected in [
        ([*base, "--to", "12"], "--to: '12' is not an E.164 number"),
        ([*base, "--to", TO, "--var", "x"], "--var: 'x' is not KEY=VALUE"),
        (["call", "--carrier", "sip", "--to", TO, "--from", FROM], "invalid choice"),
    ]:
        code, _, err = await asyncio.to_thread(run_cli, argv)
        assert code == 2
        assert expected in err and len(err.strip().splitlines()) == 1, err
    monkeypatch.delenv("TELEBRIDGE_PUBLIC_URL")
    code, _, err = await asyncio.to_thread(run_cli, [*base, "--to", TO])
    assert code == 2 and err.startswith("telebridge: TELEBRIDGE_PUBLIC_URL is not set")
    monkeypatch.setenv("TELEBRIDGE_PUBLIC_URL", PUBLIC)
    monkeypatch.setenv("PLIVO_AUTH_TOKEN", "wrong")
    code, _, err = await asyncio.to_thread(run_cli, [*base, "--to", TO])
    assert code == 2 and "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN" in err
    assert len(fake.calls_to("/Call/")) == 1  # only the call with the wrong token was sent


@pytest.mark.parametrize(
    "argv",
    [["call"], ["campaign"], ["campaign", "run"], ["campaign", "resume"], ["doctor"]],
)
def test_every_command_has_help(argv: list[str]) -> None:
    code, out, _ = run_cli([*argv, "--help"])
    assert code == 0 and "usage: telebridge" in out


# --- end to end: the real bridge answers the outbound call ----------------------------------

REMIND = (
    'start: hi\nsteps:\n  hi:\n    say: "Hello {{name}}, see you at {{time}}."\n    hangup: true\n'
)


@contextlib.asynccontextmanager
async def outbound_bridge(tmp_path: Path, **overrides: Any) -> AsyncIterator[LocalBridge]:
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "remind.yaml").write_text(REMIND)
    settings: dict[str, Any] = {
        "waves_api_key": None,
        "telebridge_flows_dir": flows,
        "telebridge_flow": "remind",
        "telebridge_db": tmp_path / "calls.db",
        "telebridge_secret": SECRET,
        "telebridge_mark_timeout": 2.0,
        **overrides,
    }
    async with (
        StandinServer() as standin,
        WavesClient(standin.url, standin.api_key) as tts,
        LocalBridge(tts=tts, **settings) as local,
    ):
        yield local


async def test_the_bridge_answers_an_outbound_call_with_its_variables(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with outbound_bridge(tmp_path) as local:
        dialer = Dialer(local.settings, "plivo", FROM, flow="remind")
        variables = {"name": "Ada", "time": "nine", "attempt": "e2e-1"}
        placed = await asyncio.to_thread(dialer.call, TO, variables)

        # Plivo now calls the answer URL the create request named, signed as Plivo signs.
        (create,) = local.plivo_api.calls_to("/Call/")
        answer = urlsplit(create.body["answer_url"])
        assert f"{answer.scheme}://{answer.netloc}" == local.url
        result = await local.run(local.plivo_call(answer_query=answer.query))
        assert not result.violations
        assert result.heard == mulaw_of("Hello Ada, see you at nine.")

        # Forged or expired variables never start the flow: nobody hears a half-filled script.
        assert local.bridge is not None
        key = local.bridge.keys.key(CALL_VARS, "plivo")
        expired = sign_call_variables(key, {"name": "Ada", "time": "nine"}, ttl=-1)
        for query in (answer.query.replace("vars=", "vars=x"), f"flow=remind&vars={expired}"):
            call = local.plivo_call(answer_query=query)
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="telebridge"):
                result = await local.run(call)
            assert (result.answer_status, result.ended_by) == (403, "refused"), query
            (line,) = [r.getMessage() for r in caplog.records]
            assert result.call_id in line and "call variables" in line
            assert result.heard == b""
            assert local.bridge.pending == {}  # no stream was granted

        assert local.bridge is not None and local.bridge.calllog is not None
        log = local.bridge.calllog
        record = await asyncio.to_thread(find_call, log, "plivo", "e2e-1", placed.request_id)
        assert record is not None and record.direction == "outbound"
        verdict = verdict_of(record)
        assert verdict is not None and verdict.outcome == "answered"


def serve_env(settings: Settings) -> dict[str, str]:
    """The settings beyond the defaults, as the environment `telebridge serve` runs with."""
    env = {}
    for name, value in settings.model_dump(exclude_defaults=True).items():
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        env[name.upper()] = json.dumps(value) if isinstance(value, dict) else str(value)
    return env


async def test_the_call_command_needs_nothing_beyond_the_serve_settings(
    tmp_path: Path, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with outbound_bridge(tmp_path, telebridge_secret=None) as local:
        env = serve_env(local.settings)
        assert "TELEBRIDGE_SECRET" not in env and "PLIVO_AUTH_TOKEN" in env
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        argv = ["call", "--carrier", "plivo", "--to", TO, "--from", FROM, "--flow", "remind",
                "--var", "name=Ada", "--var", "time=nine"]  # fmt: skip
        code, out, err = await asyncio.to_thread(run_cli, argv)
        assert code == 0, err
        assert "request_uuid" in out

        # The bridge with those settings verifies the variables the command signed.
        (create,) = local.plivo_api.calls_to("/Call/")
        answer = urlsplit(create.body["answer_url"])
        result = await local.run(local.plivo_call(answer_query=answer.query))
        assert not result.violations
        assert result.heard == mulaw_of("Hello Ada, see you at nine.")


async def test_an_unanswered_outbound_call_is_traced_by_its_hangup_url(tmp_path: Path) -> None:
    async with outbound_bridge(tmp_path) as local:
        dialer = Dialer(local.settings, "plivo", FROM, flow="remind")
        await asyncio.to_thread(dialer.call, TO, {"attempt": "e2e-2"})
        hangup_url = local.plivo_api.calls_to("/Call/")[0].body["hangup_url"]
        # Plivo reports the call busy: it never reached the answer URL.
        params = {"CallUUID": "never-streamed", "HangupCauseName": "Busy Line", "Duration": "0",
                  "From": FROM.lstrip("+"), "To": TO.lstrip("+"), "CallStatus": "busy"}  # fmt: skip
        response = await local.http.post(
            hangup_url,
            data=params,
            headers=signed_headers("POST", hangup_url, params, SIM_PLIVO_AUTH_TOKEN),
        )
        assert response.status_code == 200
        assert local.bridge is not None and local.bridge.calllog is not None
        record = await asyncio.to_thread(find_call, local.bridge.calllog, "plivo", "e2e-2", None)
        assert record is not None
        assert verdict_of(record) == Verdict(
            "busy", hangup_cause="Busy Line", call_id="never-streamed"
        )


async def test_call_wait_reports_the_outcome_from_the_call_log(
    plivo_api: tuple[FakePlivoApi, str], clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    with CallLog(clean_env / "calls.db") as log:

        async def bridge_plays(request: RecordedRequest, request_uuid: str) -> None:
            # The bridge's side: the answered call streams, runs its flow and ends.
            variables = signed_vars(request.body["answer_url"])
            recorder = log.start_call(
                carrier="plivo", call_id="CallUUID-1", direction="outbound", from_number=FROM,
                to_number=TO, flow="demo", variables=variables,
            )  # fmt: skip
            recorder.digits_collected("menu", "2")
            recorder.finish("completed")

        fake.on_create = bridge_plays
        argv = ["call", "--carrier", "plivo", "--to", TO, "--from", FROM, "--wait"]
        code, out, err = await asyncio.to_thread(run_cli, argv)
    assert code == 0, err
    assert out.splitlines()[-1] == "answered, flow ended: completed, keys: 2"
