"""Shared test fixtures of outbound calls (also used by the campaign, configure, doctor and ops
tests): the fake carrier REST APIs, settings that reach them, signed-variable checks, the CLI run
in-process."""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from telebridge.cli import main as cli
from telebridge.settings import Settings, load_settings
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.fake_vonage_api import VonageApiFake
from telebridge.simulator.serving import ServedApp
from telebridge.tokens import CALL_VARS, Keys, read_call_variables

AUTH_ID = "MA" + "OUTBOUNDTEST000000"
AUTH_TOKEN = "outbound-test-token"
SECRET = "outbound-test-secret-of-enough-length"
PUBLIC = "https://bridge.example.com"
FROM = "+14155550100"
TO = "+14155550123"
VONAGE_APP = "aaaaaaaa-bbbb-cccc-dddd-0123456789ab"


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
