"""Every setting arrives typed through each door a user has: the environment, `.env`, the YAML file.

The names come from config/example.env, so a setting added there is covered here (the test asks for
a value below), and one added to `Settings` but not to example.env or the README's table fails.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from telebridge.settings import ConfigError, Settings, load_private_key, load_settings
from tests.cli.test_main import PREFIXES, clean_env, one_line_error, telebridge

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ENV = REPO / "config" / "example.env"
README = REPO / "README.md"

# `NAME=value`, or `# NAME=value` for an optional setting.
SETTING_LINE = re.compile(r"^(# )?([A-Z][A-Z0-9_]*)=(.*)$")


def example_names() -> list[str]:
    lines = EXAMPLE_ENV.read_text(encoding="utf-8").splitlines()
    return [m.group(2) for m in map(SETTING_LINE.match, lines) if m]


# What a user writes, and the typed value it must become; none of them is the default. "no"
# (Norwegian) and the digits-only keys are what YAML by itself would read as a bool and an int.
VALUES: dict[str, tuple[str, object]] = {
    "TELEBRIDGE_PUBLIC_URL": ("https://bridge.test", "https://bridge.test"),
    "TELEBRIDGE_HOST": ("127.0.0.1", "127.0.0.1"),
    "TELEBRIDGE_PORT": ("9091", 9091),
    "TELEBRIDGE_FLOW": ("ivr", "ivr"),
    "TELEBRIDGE_FLOWS_DIR": ("/srv/flows", Path("/srv/flows")),
    "TELEBRIDGE_NUMBERS": ('{"+14155550100":"sales"}', {"+14155550100": "sales"}),
    "TELEBRIDGE_DB": ("/var/lib/telebridge/calls.db", Path("/var/lib/telebridge/calls.db")),
    "TELEBRIDGE_REDIS_URL": (
        "redis://:pw@redis.internal:6379/1",
        "redis://:pw@redis.internal:6379/1",
    ),
    "TELEBRIDGE_PROCESS_ID": ("bridge-7", "bridge-7"),
    "TELEBRIDGE_SECRET": ("0123456789abcdef0123456789abcdef", "0123456789abcdef0123456789abcdef"),
    "TELEBRIDGE_TOKEN_TTL": ("60", 60.0),
    "TELEBRIDGE_MAX_LEAD_MS": ("500", 500),
    "TELEBRIDGE_MARK_TIMEOUT": ("2.5", 2.5),
    "TELEBRIDGE_MAX_CALLS": ("40", 40),
    "TELEBRIDGE_DRAIN_TIMEOUT": ("0", 0.0),
    "TELEBRIDGE_API_KEY": (
        "key-one-0123456789,key-two-0123456789",
        "key-one-0123456789,key-two-0123456789",
    ),
    "TELEBRIDGE_API_RATE": ("2.5", 2.5),
    "TELEBRIDGE_AGENT_SECRET": ("agent-secret-0123456789", "agent-secret-0123456789"),
    "TELEBRIDGE_CONSOLE": ("local", "local"),
    "WAVES_TRANSPORT": ("sse", "sse"),
    "TELEBRIDGE_LOG_LEVEL": ("debug", "debug"),
    "TELEBRIDGE_LOG_FORMAT": ("json", "json"),
    "TELEBRIDGE_CACHE_MB": ("0", 0),
    "TELEBRIDGE_CACHE_DIR": ("/var/cache/telebridge", Path("/var/cache/telebridge")),
    "TELEBRIDGE_CACHE_DISK_MB": ("2048", 2048),
    "TELEBRIDGE_SHARED_CACHE_MB": ("16", 16),
    "WAVES_API_KEY": ("sk_test", "sk_test"),
    "WAVES_URL": ("ws://127.0.0.1:9000/tts", "ws://127.0.0.1:9000/tts"),
    "WAVES_VOICE": ("arnav", "arnav"),
    "WAVES_MODEL": ("lightning_v3.1_pro", "lightning_v3.1_pro"),
    "WAVES_LANGUAGE": ("no", "no"),
    "WAVES_SPEED": ("1.25", 1.25),
    "WAVES_FIRST_CHUNK_TIMEOUT": ("2", 2.0),
    "WAVES_MAX_IN_FLIGHT": ("8", 8),
    "WAVES_QUEUE_TIMEOUT": ("0.5", 0.5),
    "PLIVO_AUTH_ID": ("MAZTHKYJEXAMPLE12345", "MAZTHKYJEXAMPLE12345"),
    "PLIVO_AUTH_TOKEN": ("0123456789", "0123456789"),
    "PLIVO_API_URL": ("http://127.0.0.1:9001", "http://127.0.0.1:9001"),
    "VONAGE_APPLICATION_ID": (
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
    ),
    "VONAGE_PRIVATE_KEY": ("/run/secrets/vonage.key", "/run/secrets/vonage.key"),
    "VONAGE_SIGNATURE_SECRET": ("sig-secret", "sig-secret"),
    "VONAGE_ALLOW_UNSIGNED": ("true", True),
    "VONAGE_SIGNATURE_MAX_AGE": ("60", 60.0),
    "VONAGE_AUDIO_RATE": ("8000", 8000),
    "VONAGE_API_HOST": ("api-eu.vonage.com", "api-eu.vonage.com"),
    "VONAGE_API_KEY": ("12345678", "12345678"),
    "VONAGE_API_SECRET": ("s3cr3t", "s3cr3t"),
}

# How a user writes a setting in YAML when it is not a plain scalar.
YAML_FORMS = {"TELEBRIDGE_NUMBERS": "telebridge_numbers:\n  +14155550100: sales\n"}


@pytest.fixture(autouse=True)
def clean(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    """No setting from the developer's shell, and a working folder without a `.env`."""
    for name in list(os.environ):
        if name.upper().startswith(PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield


def typed(settings: Settings, name: str) -> object:
    value = getattr(settings, name.lower())
    return value.get_secret_value() if isinstance(value, SecretStr) else value


def assert_every_value_arrived(settings: Settings) -> None:
    for name in example_names():
        _, expected = VALUES[name]
        value = typed(settings, name)
        assert (value, type(value)) == (expected, type(expected)), name


def as_dotenv(values: dict[str, str]) -> str:
    """example.env as a user fills it in: each setting's line uncommented and given a value."""
    out = []
    for line in EXAMPLE_ENV.read_text(encoding="utf-8").splitlines():
        m = SETTING_LINE.match(line)
        out.append(f"{m.group(2)}={values[m.group(2)]}" if m else line)
    return "\n".join(out) + "\n"


def as_yaml(values: dict[str, str], forms: dict[str, str] | None = None) -> str:
    forms = forms or {}
    return "".join(forms.get(n, f"{n.lower()}: {v}\n") for n, v in values.items())


def load_yaml(path: Path, door: str, monkeypatch: pytest.MonkeyPatch) -> Settings:
    if door == "--config":
        return load_settings(path)
    monkeypatch.setenv("TELEBRIDGE_CONFIG", str(path))
    return load_settings()


# --- the documentation lists every setting -------------------------------------------------------


def test_example_env_lists_every_setting_once() -> None:
    names = example_names()
    assert len(names) == len(set(names)), names
    assert set(names) == {field.upper() for field in Settings.model_fields}


def test_the_readme_table_lists_the_same_settings() -> None:
    section = README.read_text(encoding="utf-8").split("\n## Configuration\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    rows = [line.split("|")[1] for line in section.splitlines() if line.startswith("| `")]
    documented = {name for row in rows for name in re.findall(r"`([A-Z][A-Z0-9_]*)`", row)}
    assert documented == set(example_names())


def test_every_setting_has_a_test_value_that_is_not_its_default() -> None:
    assert set(VALUES) == set(example_names()), "give each setting of example.env a value here"
    defaults = Settings.model_construct()
    for name, (_, expected) in VALUES.items():
        assert typed(defaults, name) != expected, f"{name}: pick a value that is not the default"


# --- each door gives the same typed values -------------------------------------------------------


def test_every_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in example_names():
        monkeypatch.setenv(name, VALUES[name][0])
    assert_every_value_arrived(load_settings())


def test_every_setting_from_a_dotenv_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text(as_dotenv({n: v for n, (v, _) in VALUES.items()}))
    assert_every_value_arrived(load_settings())


@pytest.mark.parametrize("door", ["--config", "TELEBRIDGE_CONFIG"])
def test_every_setting_from_the_yaml_file(
    door: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "telebridge.yaml"
    path.write_text(as_yaml({n: VALUES[n][0] for n in example_names()}, YAML_FORMS))
    assert_every_value_arrived(load_yaml(path, door, monkeypatch))


def test_the_yaml_file_named_in_dotenv(tmp_path: Path) -> None:
    (tmp_path / "settings.yaml").write_text("telebridge_port: 9092\n")
    (tmp_path / ".env").write_text("TELEBRIDGE_CONFIG=settings.yaml\n")
    assert load_settings().telebridge_port == 9092


def test_the_environment_names_the_yaml_file_before_dotenv(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a.yaml").write_text("telebridge_port: 9093\n")
    (tmp_path / ".env").write_text("TELEBRIDGE_CONFIG=missing.yaml\n")
    monkeypatch.setenv("TELEBRIDGE_CONFIG", "a.yaml")
    assert load_settings().telebridge_port == 9093


def test_a_missing_yaml_file_named_in_dotenv_names_the_setting(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("TELEBRIDGE_CONFIG=nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"^TELEBRIDGE_CONFIG: cannot read nowhere\.yaml"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("TELEBRIDGE_LOG_LEVEL", "DEBUG", "debug"),
        ("TELEBRIDGE_LOG_FORMAT", " Json ", "json"),
        ("TELEBRIDGE_CONSOLE", "Local", "local"),
        ("WAVES_TRANSPORT", "SSE", "sse"),
    ],
)
def test_word_settings_in_any_case(
    name: str, text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, text)
    assert getattr(load_settings(), name.lower()) == expected


def test_yaml_quoted_text_is_the_same_as_plain(tmp_path: Path) -> None:
    path = tmp_path / "telebridge.yaml"
    path.write_text("vonage_audio_rate: '8000'\ntelebridge_port: \"9091\"\n")
    settings = load_settings(path)
    assert (settings.vonage_audio_rate, settings.telebridge_port) == (8000, 9091)


# --- an empty value is an unset one --------------------------------------------------------------


@pytest.mark.parametrize("source", ["environment", ".env", "YAML empty", "YAML null"])
def test_an_empty_value_is_the_default(
    source: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    defaults = load_settings()
    names = example_names()
    config = None
    if source == "environment":
        for name in names:
            monkeypatch.setenv(name, "")
    elif source == ".env":
        (tmp_path / ".env").write_text(as_dotenv(dict.fromkeys(names, "")))
    else:
        config = tmp_path / "telebridge.yaml"
        config.write_text(as_yaml(dict.fromkeys(names, "''" if source == "YAML empty" else "")))
    assert load_settings(config) == defaults


# --- bad values are named ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("VONAGE_AUDIO_RATE", "8k"),
        ("VONAGE_AUDIO_RATE", "44100"),
        ("TELEBRIDGE_NUMBERS", "+14155550100=sales"),
        ("TELEBRIDGE_NUMBERS", '["+14155550100"]'),
        ("TELEBRIDGE_NUMBERS", '{"+14155550100": 7}'),
        ("TELEBRIDGE_DB", "mysql://bridge:secret@db/calls"),
        ("TELEBRIDGE_REDIS_URL", "http://redis.internal:6379"),
        ("TELEBRIDGE_PROCESS_ID", "host:1"),
    ],
)
def test_a_bad_value_from_the_environment_names_the_setting(
    name: str, text: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, text)
    with pytest.raises(ConfigError, match=f"^{name}: "):
        load_settings()


@pytest.mark.parametrize(
    "url", ["postgresql://bridge:secret@db.internal:5432/calls", "postgres://db/calls"]
)
def test_a_postgresql_call_log_url_is_kept_as_text(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TELEBRIDGE_DB", url)
    assert load_settings().telebridge_db == url


def test_another_database_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEBRIDGE_DB", "mysql://bridge:hunter2@db/calls")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("TELEBRIDGE_DB: mysql:// is not a database")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://:secret@127.0.0.1:6379/0", "rediss://redis.internal:6380/2", "unix:///run/r.sock"],
)
def test_a_redis_url_is_taken(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEBRIDGE_REDIS_URL", url)
    found = load_settings().telebridge_redis_url
    assert found is not None and found.get_secret_value() == url


def test_another_redis_url_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TELEBRIDGE_REDIS_URL", "memcached://user:hunter2@cache:11211")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert str(caught.value).startswith("TELEBRIDGE_REDIS_URL: memcached:// is not a Redis URL")
    assert "hunter2" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_process_id_defaults_to_the_host_and_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    assert load_settings().process_id == f"{socket.gethostname()}-{os.getpid()}"
    monkeypatch.setenv("TELEBRIDGE_PROCESS_ID", "bridge-2")
    assert load_settings().process_id == "bridge-2"


# --- the Vonage private key ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(key: rsa.RSAPrivateKey, fmt: serialization.PrivateFormat) -> str:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()


def test_private_keys_load_from_text_or_file(rsa_key: rsa.RSAPrivateKey, tmp_path: Path) -> None:
    pkcs8 = pem(rsa_key, serialization.PrivateFormat.PKCS8)
    pkcs1 = pem(rsa_key, serialization.PrivateFormat.TraditionalOpenSSL)
    assert load_private_key(pkcs8) == pkcs8
    assert load_private_key(pkcs1) == pkcs8
    assert load_private_key(f"  {pkcs8}\n\n") == pkcs8  # surrounding blanks
    assert load_private_key(pkcs1.strip().replace("\n", "\\n")) == pkcs8  # one-line env value
    key_file = tmp_path / "private"  # no extension: the SDK alone would take it for PEM text
    key_file.write_text(pkcs1)
    assert load_private_key(str(key_file)) == pkcs8
    assert load_private_key(f" {key_file} ") == pkcs8
    escaped = tmp_path / "escaped.key"
    escaped.write_text(pkcs8.strip().replace("\n", "\\n"))
    assert load_private_key(str(escaped)) == pkcs8


def test_a_missing_key_file_is_one_clear_error(tmp_path: Path) -> None:
    for value in (str(tmp_path / "nope.key"), str(tmp_path)):  # missing; a folder
        with pytest.raises(ConfigError) as raised:
            load_private_key(value)
        assert str(raised.value) == "VONAGE_PRIVATE_KEY: neither PEM text nor a readable key file"
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


def test_bad_private_keys_are_named_but_never_echoed(
    rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    encrypted = rsa_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"passphrase"),
    ).decode()
    truncated = pem(rsa_key, serialization.PrivateFormat.PKCS8)[:400]
    not_a_key = tmp_path / "notes.txt"
    not_a_key.write_text("these are not the keys you are looking for")
    unusable = "VONAGE_PRIVATE_KEY: not an unencrypted PEM private key (PKCS#1 or PKCS#8)"
    for value, message in [
        (encrypted, unusable),
        (truncated, unusable),
        (str(not_a_key), unusable),
        ("not-a-key-at-all", "VONAGE_PRIVATE_KEY: neither PEM text nor a readable key file"),
    ]:
        with pytest.raises(ConfigError) as raised:
            load_private_key(value)
        assert str(raised.value) == message
        fragment = max(value.splitlines(), key=len)[-24:]
        assert fragment not in str(raised.value)
        assert raised.value.__cause__ is None and raised.value.__suppress_context__


# --- the CLI -------------------------------------------------------------------------------------


def test_the_cli_takes_the_audio_rate_from_the_environment(tmp_path: Path) -> None:
    # `calls` is the cheapest command that loads every setting; it used to exit 2 here.
    env = clean_env(VONAGE_AUDIO_RATE="8000", TELEBRIDGE_DB=str(tmp_path / "calls.db"))
    result = telebridge("calls", cwd=tmp_path, env=env)
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == "no calls recorded\n"


def test_the_cli_names_a_malformed_numbers_map_in_one_line(tmp_path: Path) -> None:
    env = clean_env(TELEBRIDGE_NUMBERS="+14155550100=sales", TELEBRIDGE_DB=str(tmp_path / "c.db"))
    line = one_line_error(telebridge("calls", cwd=tmp_path, env=env))
    assert line.startswith("telebridge: TELEBRIDGE_NUMBERS: ")
