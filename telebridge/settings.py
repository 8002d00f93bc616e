"""The one typed settings object: environment, `.env`, then the YAML file given by `--config`.

Nothing else in telebridge reads `os.environ`. A bad value becomes a `ConfigError` whose message
names the setting, so the CLI can print one line and exit 2. `load_private_key` turns the
Vonage private key setting (PEM text or a key file) into the PEM text that signing uses.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from dotenv import dotenv_values
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

DEFAULT_WAVES_URL = "wss://api.smallest.ai/waves/v1/tts/live"
# TELEBRIDGE_DB given as one of these is a PostgreSQL database (kept as text), else a file path.
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


class ConfigError(Exception):
    """A setting is missing or malformed; the message names it and says what to fix."""


class _TextLoader(yaml.SafeLoader):
    """YAML whose plain scalars stay text, as in the environment, and go through the same parsing.

    Plain YAML would turn `WAVES_LANGUAGE: no` into False and a number key `+14155550100` into an
    int without its plus. Only `~`/`null`/empty (unset) and `<<` keep their YAML meaning; an
    explicit tag such as `!!int` still works.
    """


_KEPT_TAGS = frozenset({"tag:yaml.org,2002:null", "tag:yaml.org,2002:merge"})
_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, pattern) for tag, pattern in resolvers if tag in _KEPT_TAGS]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


class _YamlSource(PydanticBaseSettingsSource):
    """Settings from a YAML mapping; keys are the environment names, in any case."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self._data: dict[str, Any] = {}
        if path is None:
            return
        try:
            loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_TextLoader)
        except OSError as exc:
            raise ConfigError(f"TELEBRIDGE_CONFIG: cannot read {path}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"TELEBRIDGE_CONFIG: {path} is not valid YAML: {exc}") from None
        if loaded is None:
            return
        if not isinstance(loaded, dict):
            raise ConfigError(f"TELEBRIDGE_CONFIG: {path} must hold a mapping of settings")
        # As with env_ignore_empty: `name:` or `name: ''` is the setting left unset.
        self._data = {str(k).lower(): v for k, v in loaded.items() if v is not None and v != ""}

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return {k: v for k, v in self._data.items() if k in self.settings_cls.model_fields}


class Settings(BaseSettings):
    """Every setting of telebridge. Field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        case_sensitive=False,
        # `NAME=` (a .env line left blank, compose's `${NAME}` of an unset variable) means unset,
        # not an empty secret or key.
        env_ignore_empty=True,
    )

    telebridge_host: str = "0.0.0.0"
    telebridge_port: int = Field(8080, ge=1, le=65535)
    telebridge_public_url: str | None = None
    telebridge_flow: str = "demo"
    telebridge_flows_dir: Path = Path("config/flows")
    # The call log: an SQLite file (a path) or a PostgreSQL URL (text, see _db_path_or_url).
    telebridge_db: Path | str = Path("telebridge.db")
    # Joins processes into one cluster through this Redis (server/cluster_link.py); unset: alone.
    telebridge_redis_url: SecretStr | None = None
    # This process's name in the cluster; unset: hostname-pid (see `process_id`).
    telebridge_process_id: str | None = None
    # Key material for stream tokens and call variables (tokens.Keys). Unset: carrier credentials.
    telebridge_secret: SecretStr | None = None
    telebridge_token_ttl: float = Field(120.0, gt=0, le=3600)
    # Audio sent but not yet due to play never exceeds this (contract: at most 2 s).
    telebridge_max_lead_ms: int = Field(1000, ge=100, le=2000)
    # How long to wait for the carrier to confirm the last prompt before hanging up anyway.
    telebridge_mark_timeout: float = Field(5.0, gt=0, le=60)
    telebridge_log_level: Literal["debug", "info", "warning", "error"] = "info"
    telebridge_log_format: Literal["text", "json"] = "text"
    # Most concurrent calls; beyond it the answer webhook replies busy.
    telebridge_max_calls: int = Field(500, ge=1)
    # On SIGTERM: how long active calls may go on before they are ended politely.
    telebridge_drain_timeout: float = Field(30.0, ge=0)
    # Called number -> flow name or path (issue "IVR flows"): a YAML mapping, or JSON text in the
    # environment, decoded by _numbers_from_json so that a malformed one names the setting.
    telebridge_numbers: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)

    # The call API (/v1/): off without a key; several keys separated by commas (rotation).
    telebridge_api_key: SecretStr | None = None
    # Requests a second each API key may make (bursts of twice as many); beyond it 429.
    telebridge_api_rate: float = Field(10.0, gt=0, le=10_000)
    # Signs the agent step's WebSocket handshake (X-Telebridge-Signature); required by flows
    # that have an agent step.
    telebridge_agent_secret: SecretStr | None = None
    # The web console (/console): `key` needs TELEBRIDGE_API_KEY (a Bearer header or the login
    # form); `local` also serves it without a key to loopback clients.
    telebridge_console: Literal["key", "local"] = "key"

    waves_api_key: SecretStr | None = None
    waves_url: str = DEFAULT_WAVES_URL
    # websocket | sse (HTTP streaming) | auto: the WebSocket, and SSE while it cannot be opened.
    waves_transport: Literal["websocket", "sse", "auto"] = "auto"
    waves_voice: str = "emily"
    waves_model: Literal["lightning_v3.1", "lightning_v3.1_pro"] = "lightning_v3.1"
    waves_language: str = "en"
    waves_speed: float = Field(1.0, ge=0.5, le=2.0)
    # Prompt cache (LRU, in memory); 0 turns it off.
    telebridge_cache_mb: int = Field(64, ge=0, le=65536)
    # Optional on-disk layer of the prompt cache (created at start; unset: memory only), so fixed
    # prompts survive a restart and play while Waves is down; bounded by the least recently played.
    telebridge_cache_dir: Path | None = None
    telebridge_cache_disk_mb: int = Field(512, ge=1, le=1_048_576)
    # With TELEBRIDGE_REDIS_URL: most audio the cluster's shared prompt cache keeps in Redis; 0
    # turns the shared layer off (each process then also synthesises the prompts others make).
    telebridge_shared_cache_mb: int = Field(64, ge=0, le=65536)
    # Time allowed for the first audio chunk of a request before it counts as failed.
    # Short on purpose: a failed first try is retried (see call.speaker.RETRY_WINDOW), and dead air
    # stays under ~3 s.
    waves_first_chunk_timeout: float = Field(1.2, gt=0, le=60)
    # Most Waves requests in flight at once (your plan's concurrency units); 0: no cap. Beyond
    # it requests queue in arrival order for at most WAVES_QUEUE_TIMEOUT seconds.
    waves_max_in_flight: int = Field(0, ge=0, le=100_000)
    # How long a request may wait for a free slot or a rate-limit back-off before it fails.
    waves_queue_timeout: float = Field(1.0, gt=0, le=30)

    plivo_auth_id: str | None = None
    plivo_auth_token: SecretStr | None = None
    plivo_api_url: str = "https://api.plivo.com"

    # The account's API key and secret: only `telebridge configure vonage` uses them.
    vonage_api_key: str | None = None
    vonage_api_secret: SecretStr | None = None
    vonage_application_id: str | None = None
    vonage_private_key: SecretStr | None = None
    vonage_signature_secret: SecretStr | None = None
    vonage_allow_unsigned: bool = False
    vonage_audio_rate: Literal[8000, 16000, 24000] = 16000
    vonage_signature_max_age: float = Field(300.0, gt=0)
    # Default REST host when a webhook gave no region_url.
    vonage_api_host: str = "api.nexmo.com"

    @field_validator("telebridge_public_url")
    @classmethod
    def _public_url_shape(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        value = value.rstrip("/")
        if not value.startswith(("https://", "http://")):
            raise ValueError("must start with https:// (or http:// for local testing)")
        if "?" in value or "#" in value:
            raise ValueError("must be a base URL without query or fragment")
        return value

    @field_validator(
        "telebridge_log_level",
        "telebridge_log_format",
        "telebridge_console",
        "waves_transport",
        mode="before",
    )
    @classmethod
    def _word_any_case(cls, value: object) -> object:
        # `INFO`, `Json`, ` sse `: a word setting is read whatever its case and spacing.
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("vonage_audio_rate", mode="before")
    @classmethod
    def _int_from_text(cls, value: object) -> object:
        # A Literal of ints matches ints only, and the environment, .env and YAML give text.
        if isinstance(value, str) and value.strip().isdigit():
            return int(value)
        return value

    @field_validator("telebridge_numbers", mode="before")
    @classmethod
    def _numbers_from_json(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(
                'must be a JSON object of number to flow, e.g. {"+14155550100": "sales"}'
            ) from None

    @field_validator("telebridge_db", mode="before")
    @classmethod
    def _db_path_or_url(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        if value.startswith(POSTGRES_SCHEMES):
            return value
        scheme, sep, _ = value.partition("://")
        if sep and scheme.replace("+", "").isalnum():  # never echo the rest: it may hold a password
            raise ValueError(
                f"{scheme}:// is not a database telebridge can use: give a file path (SQLite) "
                "or a postgresql://user:password@host:5432/db URL"
            )
        return Path(value)

    @field_validator("telebridge_redis_url", mode="before")
    @classmethod
    def _redis_url_scheme(cls, value: object) -> object:
        if value in ("", None):
            return None
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if isinstance(text, str) and not text.startswith(REDIS_SCHEMES):
            scheme, sep, _ = text.partition("://")
            shown = f"{scheme}://" if sep else "this value"  # never echo the rest: a password
            raise ValueError(
                f"{shown} is not a Redis URL: give redis://host:6379/0 (or rediss://, unix://)"
            )
        return value

    @field_validator("telebridge_process_id", mode="before")
    @classmethod
    def _process_id_shape(cls, value: object) -> object:
        if value == "":
            return None
        if isinstance(value, str) and (":" in value or any(c.isspace() for c in value)):
            raise ValueError("must be a name without ':' or spaces, e.g. bridge-1")
        return value

    @field_validator("telebridge_cache_dir", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # An empty TELEBRIDGE_CACHE_DIR= must not mean the working directory.
        return None if value == "" else value

    @field_validator("plivo_api_url", "waves_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("plivo_auth_id")
    @classmethod
    def _plivo_id_shape(cls, value: str | None) -> str | None:
        if not value:
            return None
        if not (value[:2] in ("MA", "SA") and len(value) == 20):
            raise ValueError("must look like MA or SA followed by 18 characters")
        return value

    @model_validator(mode="after")
    def _waves_url_scheme(self) -> Settings:
        if not self.waves_url.startswith(("wss://", "ws://")):
            raise ValueError("WAVES_URL must start with wss:// (or ws://)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = _CONFIG_PATH.get("path")
        return (init_settings, env_settings, dotenv_settings, _YamlSource(settings_cls, config))

    # --- derived values -------------------------------------------------------------

    @property
    def plivo_enabled(self) -> bool:
        return bool(self.plivo_auth_id and self.plivo_auth_token)

    @property
    def vonage_enabled(self) -> bool:
        return bool(self.vonage_signature_secret or self.vonage_allow_unsigned)

    @property
    def process_id(self) -> str:
        """This process's name in the cluster: TELEBRIDGE_PROCESS_ID, else hostname-pid."""
        if self.telebridge_process_id:
            return self.telebridge_process_id
        host = socket.gethostname().replace(":", "-") or "telebridge"
        return f"{host}-{os.getpid()}"

    @property
    def uses_standin(self) -> bool:
        """No Waves key: speech comes from the embedded offline synthesizer."""
        return self.waves_api_key is None

    def public_ws_url(self, path: str) -> str:
        """The public WebSocket URL for `path` (https becomes wss)."""
        base = self.require_public_url()
        if base.startswith("https://"):
            return "wss://" + base[len("https://") :] + path
        return "ws://" + base[len("http://") :] + path

    def require_public_url(self) -> str:
        if not self.telebridge_public_url:
            raise ConfigError(
                "TELEBRIDGE_PUBLIC_URL is not set: give the bridge's public base URL, "
                "e.g. https://bridge.example.com"
            )
        return self.telebridge_public_url


# The YAML path travels through this dict because pydantic-settings builds sources from the
# class; load_settings() sets it for the duration of one construction.
_CONFIG_PATH: dict[str, Path | None] = {}


def load_settings(config: str | Path | None = None, **overrides: Any) -> Settings:
    """Build the settings, raising `ConfigError` with the offending setting's name."""
    if config is None:
        config = os.environ.get("TELEBRIDGE_CONFIG") or _from_dotenv("TELEBRIDGE_CONFIG")
    _CONFIG_PATH["path"] = Path(config) if config else None
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None
    finally:
        _CONFIG_PATH.pop("path", None)


def _from_dotenv(name: str) -> str | None:
    """`name` as `.env` in the working directory sets it (as the settings read `.env`), or None."""
    path = Path(".env")
    if not path.is_file():
        return None
    value = dotenv_values(path, encoding="utf-8").get(name)
    return value or None


def _describe(exc: ValidationError) -> str:
    first = exc.errors()[0]
    loc = [str(part) for part in first["loc"] if part != "__root__"]
    message = first["msg"].removeprefix("Value error, ")
    if not loc:
        return message
    return f"{loc[0].upper()}: {message}"


def load_private_key(value: str) -> str:
    """The application's private key as PKCS#8 PEM text, from PEM text or a file path.

    The SDK only takes PKCS#8 text or a path with an extension; this also takes PKCS#1 keys,
    paths without an extension and PEM whose newlines were escaped into one line. Errors name
    the setting and never echo its value.
    """
    text = value.strip()
    if "-----BEGIN" not in text:
        try:
            text = Path(text).expanduser().read_text(encoding="ascii").strip()
        except (OSError, ValueError):
            raise ConfigError(
                "VONAGE_PRIVATE_KEY: neither PEM text nor a readable key file"
            ) from None
    text = text.replace("\\n", "\n")
    try:
        from cryptography.hazmat.primitives import serialization
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ConfigError("VONAGE_PRIVATE_KEY: the cryptography package is not installed") from None
    try:
        key = serialization.load_pem_private_key(text.encode("ascii", "replace"), password=None)
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    except Exception:  # ValueError, TypeError, UnsupportedAlgorithm: all mean "not usable"
        raise ConfigError(
            "VONAGE_PRIVATE_KEY: not an unencrypted PEM private key (PKCS#1 or PKCS#8)"
        ) from None
    return pem.decode("ascii")
