"""Placing one outbound call: the `Dialer`'s own checks, the `telebridge call` command, and one
call answered by the real bridge."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import SecretStr

from telebridge.calllog import CallLog
from telebridge.outbound.placing import Dialer, OutboundError, Verdict, find_call, verdict_of
from telebridge.settings import ConfigError, Settings
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN, LocalBridge
from telebridge.simulator.fake_plivo_api import FakePlivoApi, RecordedRequest
from telebridge.simulator.plivo import signed_headers
from telebridge.tokens import CALL_VARS, sign_call_variables
from telebridge.tts import WavesClient
from telebridge.tts.standin import StandinServer
from tests.e2e.conftest import mulaw_of
from tests.outbound.fixtures import (
    AUTH_ID,
    AUTH_TOKEN,
    FROM,
    PUBLIC,
    SECRET,
    TO,
    VONAGE_APP,
    clean_env,
    cli_env,
    plivo_api,
    plivo_settings,
    private_key,
    run_cli,
    signed_vars,
    vonage_api,
)

# The shared fixtures and values, also imported from here by the configure, doctor and ops tests.
__all__ = ["AUTH_ID", "AUTH_TOKEN", "FROM", "PUBLIC", "SECRET", "TO", "VONAGE_APP", "clean_env",
           "cli_env", "plivo_api", "private_key", "run_cli", "vonage_api"]  # fmt: skip


# --- the dialer's own checks ----------------------------------------------------------------


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


# --- the command ----------------------------------------------------------------------------


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
