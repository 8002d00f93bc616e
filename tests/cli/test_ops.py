"""Every operations command that calls a carrier's REST API, against every way that API fails.

`telebridge call`, `campaign run`, `configure plivo|vonage` and `doctor` run through `cli.main`
against the local fakes of Plivo's and Vonage's REST APIs (real HTTP servers), which answer an
error status, a body that is not JSON, too late, or not at all (nothing listens). Each command
must end with one line naming the carrier and the request that failed, and exit 1: never a
traceback.
"""

from __future__ import annotations

import asyncio
import csv
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from telebridge.admin import configure
from telebridge.outbound import placing as outbound
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.fake_vonage_api import VonageApiFake
from tests.outbound.test_placing import (
    FROM,
    PUBLIC,
    SECRET,
    TO,
    VONAGE_APP,
    clean_env,
    cli_env,
    plivo_api,
    private_key,
    run_cli,
    vonage_api,
)

__all__ = ["clean_env", "plivo_api", "private_key", "vonage_api"]  # shared fixtures

NUMBER = "+14155550100"
OLD = "https://old.example.com"
CLIENT_TIMEOUT_S = 1  # the SDK clients' timeout in these tests (Vonage's must be whole seconds)


@dataclass(frozen=True)
class Failure:
    """One way a carrier's REST API fails."""

    id: str
    status: int | None = None  # the HTTP status answered
    body: str | None = None  # answered instead of the carrier's JSON
    delay: float = 0.0  # seconds before any answer
    refused: bool = False  # nothing listens at the API's address

    def apply(self, fake: FakePlivoApi | VonageApiFake, only: str | None) -> None:
        fake.fail_status, fake.fail_body, fake.delay = self.status, self.body, self.delay
        fake.fail_only = only

    def named_in(self, line: str) -> bool:
        """Whether the line says how the request failed (the status, when there was one)."""
        return self.status in (None, 200) or str(self.status) in line


FAILURES = [
    Failure("http-400", status=400),
    Failure("http-403", status=403),
    Failure("http-404", status=404),
    Failure("http-500", status=500),
    Failure("http-503", status=503),
    Failure("http-502-html", status=502, body="<html><body>Bad Gateway</body></html>"),
    Failure("refused", refused=True),
    Failure("timeout", delay=3 * CLIENT_TIMEOUT_S + 1),
    Failure("not-json", status=200, body="<html><body>Welcome to the hotel wifi</body></html>"),
    Failure("truncated-json", status=200, body='{"api_id": "0b5c", "message": "cal'),
]
ALL = [pytest.param(f, id=f.id) for f in FAILURES]


def cases(
    stages: list[Any], failures: list[Any], leave_out: Callable[[Failure, str], bool]
) -> list[Any]:
    """Each failure at each stage (a stage's first value is its request pattern), less those
    `leave_out` names: a combination that cannot happen is not generated, rather than skipped."""
    return [
        pytest.param(f.values[0], *s.values, id=f"{f.id}-{s.id}")
        for s in stages
        for f in failures
        if not leave_out(f.values[0], s.values[0])
    ]


@pytest.fixture(autouse=True)
def short_timeouts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands' SDK clients give up after CLIENT_TIMEOUT_S, so a timeout costs little."""
    monkeypatch.setattr(outbound, "SDK_TIMEOUT_S", CLIENT_TIMEOUT_S)
    monkeypatch.setattr(configure, "SDK_TIMEOUT_S", CLIENT_TIMEOUT_S, raising=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def failed_in_one_line(code: int, out: str, err: str) -> str:
    """Exit 1 with exactly one line on stderr and no traceback; returns that line."""
    assert "Traceback" not in out + err, err
    assert code == 1, (code, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


# --- configure plivo -------------------------------------------------------------------------

# (the request that fails, the words that name it in the line)
PLIVO_STAGES = [
    pytest.param(r"^GET /v1/Account/[^/]+/$", "reading the account", id="account"),
    pytest.param(r"^GET .*/Application/$", "listing applications", id="list"),
    pytest.param(r"^POST .*/Application/$", "creating the application", id="create"),
    pytest.param(r"^GET .*/Number/", "reading the number", id="number"),
    pytest.param(r"^POST .*/Number/", "attaching the number", id="attach"),
]


@pytest.mark.parametrize(
    ("failure", "only", "named"),
    cases(
        PLIVO_STAGES,
        ALL,
        # Nothing listening fails at the first request; a number Plivo does not know is the
        # user's mistake (exit 2), tested apart.
        lambda f, only: (
            (f.refused and "Account" not in only)
            or (f.id == "http-404" and "GET .*/Number/" in only)
        ),
    ),
)
async def test_configure_plivo_names_the_failed_request(
    failure: Failure,
    only: str,
    named: str,
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, f"http://127.0.0.1:{closed_port()}" if failure.refused else url)
    fake.add_number(NUMBER)
    failure.apply(fake, only)
    argv = ["configure", "plivo", "--app-name", "telebridge", "--number", NUMBER]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    line = failed_in_one_line(code, out, err)
    assert line.startswith("telebridge: plivo: ") and named in line, line
    assert failure.named_in(line), line


@pytest.mark.parametrize(
    ("failure", "only", "named"),
    cases(
        [
            pytest.param(r"^GET .*/Application/\d+/$", "reading the application", id="read"),
            pytest.param(r"^POST .*/Application/\d+/$", "updating the application", id="update"),
        ],
        [f for f in ALL if f.id != "refused"],
        # An application Plivo does not know is the user's mistake: exit 2.
        lambda f, only: f.id == "http-404" and only.startswith("^GET"),
    ),
)
async def test_configure_plivo_by_id_names_the_failed_request(
    failure: Failure,
    only: str,
    named: str,
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    app_id = fake.add_application("telebridge", answer_url=f"{OLD}/answer")
    failure.apply(fake, only)
    code, out, err = await asyncio.to_thread(run_cli, ["configure", "plivo", "--app-id", app_id])
    line = failed_in_one_line(code, out, err)
    assert line.startswith("telebridge: plivo: ") and named in line, line
    assert failure.named_in(line), line


# --- configure vonage ------------------------------------------------------------------------


def vonage_env(
    monkeypatch: pytest.MonkeyPatch, api: VonageApiFake, key: str, *, refused: bool = False
) -> None:
    host = f"127.0.0.1:{closed_port()}" if refused else api.host
    for name, value in {
        "TELEBRIDGE_PUBLIC_URL": PUBLIC,
        "TELEBRIDGE_SECRET": SECRET,
        "VONAGE_APPLICATION_ID": VONAGE_APP,
        "VONAGE_PRIVATE_KEY": key,
        "VONAGE_SIGNATURE_SECRET": "vonage-signature-secret-of-40-characters",
        "VONAGE_API_HOST": host,
        "VONAGE_API_KEY": api.api_key,
        "VONAGE_API_SECRET": api.api_secret,
    }.items():
        monkeypatch.setenv(name, value)


def vonage_application() -> dict[str, Any]:
    hooks = {"answer_url": {"address": f"{OLD}/answer", "http_method": "GET"}}
    return {"name": "voice app", "capabilities": {"voice": {"webhooks": hooks}}}


@pytest.mark.parametrize(
    ("failure", "only", "named"),
    cases(
        [
            pytest.param(r"^GET /v2/applications/", "reading the application", id="read"),
            pytest.param(r"^PUT /v2/applications/", "updating the application", id="update"),
        ],
        ALL,
        # Nothing listening fails at the first request; an application Vonage does not know is
        # the user's mistake (exit 2).
        lambda f, only: (
            (f.refused and only.startswith("^PUT"))
            or (f.id == "http-404" and only.startswith("^GET"))
        ),
    ),
)
async def test_configure_vonage_names_the_failed_request(
    failure: Failure,
    only: str,
    named: str,
    vonage_api: VonageApiFake,
    private_key: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vonage_env(monkeypatch, vonage_api, private_key, refused=failure.refused)
    vonage_api.applications[VONAGE_APP] = vonage_application()
    failure.apply(vonage_api, only)
    code, out, err = await asyncio.to_thread(run_cli, ["configure", "vonage"])
    line = failed_in_one_line(code, out, err)
    assert line.startswith("telebridge: vonage: ") and named in line, line
    assert failure.named_in(line), line


# --- call ------------------------------------------------------------------------------------


@pytest.mark.parametrize("failure", ALL)
async def test_a_plivo_call_the_api_fails_is_one_line(
    failure: Failure,
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, f"http://127.0.0.1:{closed_port()}" if failure.refused else url)
    failure.apply(fake, None)
    argv = ["call", "--carrier", "plivo", "--to", TO, "--from", FROM]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    line = failed_in_one_line(code, out, err)
    assert line.startswith("telebridge: the call ") and "plivo" in line, line
    assert failure.named_in(line), line


@pytest.mark.parametrize("failure", ALL)
async def test_a_vonage_call_the_api_fails_is_one_line(
    failure: Failure,
    vonage_api: VonageApiFake,
    private_key: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vonage_env(monkeypatch, vonage_api, private_key, refused=failure.refused)
    monkeypatch.setenv("TELEBRIDGE_DB", str(clean_env / "calls.db"))
    failure.apply(vonage_api, None)
    argv = ["call", "--carrier", "vonage", "--to", TO, "--from", FROM]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    line = failed_in_one_line(code, out, err)
    assert line.startswith("telebridge: the call ") and "vonage" in line, line
    assert failure.named_in(line), line


# --- campaign run ----------------------------------------------------------------------------


def campaign_list(path: Path) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerows([["to", "name"], ["+14155550123", "Ada"], ["+14155550124", "Bob"]])
    return path


def campaign_argv(folder: Path, carrier: str) -> list[str]:
    listed = campaign_list(folder / "list.csv")
    return ["campaign", "run", str(listed), "--carrier", carrier, "--from", FROM,
            "--wait", "0.3", "--poll", "0.05"]  # fmt: skip


def campaign_failed(code: int, out: str, err: str, carrier: str, failure: Failure) -> None:
    """Exit 1, no traceback; each row's failure in a line that names the carrier's answer."""
    assert "Traceback" not in out + err and "exception" not in err.lower(), err
    assert code == 1, (code, out, err)
    assert "campaign done: 2 " in out, out
    for row in (1, 2):
        about = [ln for ln in err.splitlines() if f"row {row}: " in ln and carrier in ln]
        assert about and all(failure.named_in(ln) for ln in about), err


@pytest.mark.parametrize("failure", ALL)
async def test_a_plivo_campaign_the_api_fails_exits_1(
    failure: Failure,
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, f"http://127.0.0.1:{closed_port()}" if failure.refused else url)
    failure.apply(fake, None)
    code, out, err = await asyncio.to_thread(run_cli, campaign_argv(clean_env, "plivo"))
    campaign_failed(code, out, err, "plivo", failure)


@pytest.mark.parametrize("state", ["postgresql", "explicit-file"])
async def test_a_campaign_with_its_state_in_postgresql_the_api_fails_exits_1(
    state: str,
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, url)
    monkeypatch.setenv("TELEBRIDGE_DB", pg_url)
    failure = Failure("http-400", status=400)  # certainly not placed: "failed"
    failure.apply(fake, None)
    argv = campaign_argv(clean_env, "plivo")
    if state == "explicit-file":  # --state wins over the database
        argv += ["--state", str(clean_env / "mine.db")]
    code, out, err = await asyncio.to_thread(run_cli, argv)
    campaign_failed(code, out, err, "plivo", failure)
    (said,) = [ln for ln in err.splitlines() if "state in" in ln]
    if state == "explicit-file":
        assert (
            said.endswith(f"state in {clean_env / 'mine.db'}") and (clean_env / "mine.db").is_file()
        )
    else:
        assert said.endswith(f"state in PostgreSQL {pg_url} (campaign {said.split()[1][:-1]})")
        assert not (clean_env / "list.campaign.db").exists()
    with (clean_env / "list.results.csv").open(encoding="utf-8", newline="") as f:
        assert [r["outcome"] for r in csv.DictReader(f)] == ["failed", "failed"]


@pytest.mark.parametrize("failure", ALL)
async def test_a_vonage_campaign_the_api_fails_exits_1(
    failure: Failure,
    vonage_api: VonageApiFake,
    private_key: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vonage_env(monkeypatch, vonage_api, private_key, refused=failure.refused)
    monkeypatch.setenv("TELEBRIDGE_DB", str(clean_env / "calls.db"))
    failure.apply(vonage_api, None)
    code, out, err = await asyncio.to_thread(run_cli, campaign_argv(clean_env, "vonage"))
    campaign_failed(code, out, err, "vonage", failure)


# --- doctor ----------------------------------------------------------------------------------

FLOW = "start: a\nsteps:\n  a:\n    say: hi\n    hangup: true\n"
# doctor gives each carrier 10 s: a carrier that never answers is the same path as "refused".
DOCTOR = [f for f in ALL if f.id != "timeout"]


def doctor_env(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Every check but the carriers' passes: a flow, the offline synthesizer, a call log."""
    flows = folder / "flows"
    flows.mkdir()
    (flows / "hello.yaml").write_text(FLOW)
    monkeypatch.setenv("TELEBRIDGE_FLOWS_DIR", str(flows))
    monkeypatch.setenv("TELEBRIDGE_FLOW", "hello")
    monkeypatch.setenv("TELEBRIDGE_DB", str(folder / "calls.db"))


def doctor_failed(code: int, out: str, err: str, check: str, failure: Failure) -> None:
    """Exit 1, no traceback, and only the carrier's checks to fix, `check` naming the failure."""
    assert "Traceback" not in out + err, err
    assert code == 1, out
    to_fix = [ln for ln in out.splitlines() if " to fix " in ln]
    assert to_fix and all(ln.startswith(check) for ln in to_fix), out
    assert any(ln.startswith(f"{check} ") and failure.named_in(ln) for ln in to_fix), out


@pytest.mark.parametrize("failure", DOCTOR)
async def test_doctor_names_a_failing_plivo_api(
    failure: Failure,
    plivo_api: tuple[FakePlivoApi, str],
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, url = plivo_api
    cli_env(monkeypatch, clean_env, f"http://127.0.0.1:{closed_port()}" if failure.refused else url)
    doctor_env(monkeypatch, clean_env)
    failure.apply(fake, None)
    code, out, err = await asyncio.to_thread(run_cli, ["doctor"])
    doctor_failed(code, out, err, "Plivo", failure)


@pytest.mark.parametrize(
    ("failure", "only", "check"),
    cases(
        [
            pytest.param(r"^GET /v1/calls", "Vonage", id="application"),
            pytest.param(r"^GET /v2/applications/", "Vonage account", id="account"),
        ],
        DOCTOR,
        # An API that cannot be reached fails both checks: the first one covers it.
        lambda f, check_only: f.refused and "applications" in check_only,
    ),
)
async def test_doctor_names_a_failing_vonage_api(
    failure: Failure,
    only: str,
    check: str,
    vonage_api: VonageApiFake,
    private_key: str,
    clean_env: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    vonage_env(monkeypatch, vonage_api, private_key, refused=failure.refused)
    doctor_env(monkeypatch, clean_env)
    vonage_api.applications[VONAGE_APP] = vonage_application()
    failure.apply(vonage_api, only)
    code, out, err = await asyncio.to_thread(run_cli, ["doctor"])
    doctor_failed(code, out, err, check, failure)
