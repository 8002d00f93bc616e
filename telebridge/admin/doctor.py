"""`telebridge doctor`: checks that the settings are complete and that every service accepts them.

Each check is one row, fine or to fix, with one line saying why. The network checks are cheap:
one short synthesis through Waves (or the offline synthesizer when no key is set) and one
authenticated GET per configured carrier. Blocking SDK calls run here outside any event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests

from telebridge.settings import ConfigError, Settings, load_private_key, load_settings

MIN_SECRET_CHARS = 16
PROBE_TEXT = "Hello."


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def _fine(name: str, detail: str) -> Check:
    return Check(name, True, detail)


def _fix(name: str, detail: str) -> Check:
    return Check(name, False, detail)


# --- settings --------------------------------------------------------------------------------


def check_public_url(settings: Settings) -> Check:
    url = settings.telebridge_public_url
    name = "public URL"
    if not url:
        return _fix(name, "TELEBRIDGE_PUBLIC_URL is not set: carriers need the bridge's https URL")
    host = urlsplit(url).hostname or ""
    try:
        address = ipaddress.ip_address(host)
        private = address.is_loopback or address.is_private or address.is_link_local
    except ValueError:
        private = host == "localhost" or host.endswith((".local", ".internal", ".localhost"))
    if private:
        return _fix(name, f"TELEBRIDGE_PUBLIC_URL: {url} is not reachable from the carriers")
    if not url.startswith("https://"):
        return _fix(name, f"TELEBRIDGE_PUBLIC_URL: {url} must be https:// (streams need wss://)")
    return _fine(name, f"{url} (streams at {settings.public_ws_url('/')})")


def check_secret(settings: Settings) -> Check:
    from telebridge.tokens import CREDENTIALS, Keys

    name = "signing keys"
    keys = Keys.from_settings(settings)
    if keys.source("plivo") == "TELEBRIDGE_SECRET":
        assert settings.telebridge_secret is not None
        if len(settings.telebridge_secret.get_secret_value()) < MIN_SECRET_CHARS:
            return _fix(name, f"TELEBRIDGE_SECRET is shorter than {MIN_SECRET_CHARS} characters")
        return _fine(name, "from TELEBRIDGE_SECRET")
    if settings.vonage_enabled and keys.source("vonage") is None:
        return _fix(
            name,
            "TELEBRIDGE_SECRET is not set and neither is VONAGE_SIGNATURE_SECRET nor "
            "VONAGE_PRIVATE_KEY: each process signs Vonage tokens with a key of its own",
        )
    derived = [f"{c} from {keys.source(c)}" for c in CREDENTIALS if keys.source(c)]
    if not derived:
        return _fix(
            name,
            "TELEBRIDGE_SECRET is not set and no carrier credential is: each process signs with "
            "a key of its own, and outbound calls cannot be placed",
        )
    return _fine(name, f"TELEBRIDGE_SECRET is not set: derived, {', '.join(derived)}")


def check_flows(settings: Settings) -> Check:
    from telebridge.flows import FlowError
    from telebridge.flows.library import FlowLibrary

    try:
        library = FlowLibrary.from_settings(settings)
    except FlowError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "errors"
        return _fix("flows", f"TELEBRIDGE_FLOW / TELEBRIDGE_FLOWS_DIR: {first}")
    return _fine("flows", f"{len(library.names)} flow(s), default {library.default}")


def check_calllog(settings: Settings) -> Check:
    if isinstance(settings.telebridge_db, str):  # a PostgreSQL URL
        from telebridge.calllog import CallLogError, probe_postgres

        try:
            return _fine("call log", probe_postgres(settings.telebridge_db))
        except CallLogError as exc:
            return _fix("call log", str(exc))
    path = Path(settings.telebridge_db)
    folder = path.parent
    if path.is_dir():
        return _fix("call log", f"TELEBRIDGE_DB: {path} is a directory")
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        return _fix("call log", f"TELEBRIDGE_DB: cannot write in {folder}")
    return _fine("call log", f"{path}" + ("" if path.exists() else " (created on first call)"))


# --- Waves -----------------------------------------------------------------------------------


# Which transports the bridge would use: prompts over the WebSocket and/or SSE (WAVES_TRANSPORT),
# and HTTP sync for `telebridge prompts render` once there is a cache folder.
_USED = {"websocket": ("websocket",), "sse": ("sse",), "auto": ("websocket", "sse")}
_NAMES = {"websocket": "WebSocket", "sse": "HTTP streaming", "http": "HTTP sync"}


def transports_used(settings: Settings) -> list[str]:
    used = list(_USED[settings.waves_transport])
    if settings.telebridge_cache_dir is not None:
        used.append("http")
    return used


async def _speak(transport: str, url: str, key: str, wait: float) -> int:
    """Bytes of audio one short prompt gives over `transport`."""
    from telebridge.tts import SpeechOptions, WavesClient
    from telebridge.tts.http_sync import WavesHttpClient
    from telebridge.tts.sse import WavesSSEClient

    options = SpeechOptions(voice_id="emily")
    if transport == "http":
        async with WavesHttpClient(url, key, timeout=wait) as sync:
            return len(await sync.render(PROBE_TEXT, sample_rate=8000, options=options))
    client: WavesClient | WavesSSEClient
    if transport == "websocket":
        client = WavesClient(url, key, first_chunk_timeout=wait, open_timeout=wait)
    else:
        client = WavesSSEClient(url, key, first_chunk_timeout=wait, open_timeout=wait)
    async with client:
        audio = 0
        async with contextlib.aclosing(
            client.synthesize(PROBE_TEXT, sample_rate=8000, options=options)
        ) as chunks:
            async for chunk in chunks:
                audio += len(chunk)
        return audio


async def _speak_offline(transports: list[str]) -> list[int | Exception]:
    import secrets

    from telebridge.tts.standin import StandinServer

    results: list[int | Exception] = []
    async with StandinServer(api_key="sk_" + secrets.token_hex(8)) as standin:
        for transport in transports:
            try:
                results.append(await _speak(transport, standin.url, standin.api_key, 10.0))
            except Exception as exc:
                results.append(exc)
    return results


def check_waves(settings: Settings) -> list[Check]:
    """One check for each Waves transport the bridge would use."""
    from telebridge.tts.errors import TTSError, WavesAuthError, WavesForbiddenError

    transports = transports_used(settings)
    if settings.waves_api_key is None:
        try:
            results = asyncio.run(_speak_offline(transports))
        except (TTSError, OSError) as exc:
            results = [exc for _ in transports]
        checks = []
        for transport, result in zip(transports, results, strict=True):
            name = f"speech ({_NAMES[transport]})"
            if isinstance(result, Exception):
                detail = f"WAVES_API_KEY is not set and the offline synthesizer failed: {result}"
                checks.append(_fix(name, detail))
            else:
                detail = f"WAVES_API_KEY is not set: the offline synthesizer speaks ({_ms(result)})"
                checks.append(_fine(name, detail))
        return checks
    key = settings.waves_api_key.get_secret_value()
    # A first connection (TLS, a cold start) may take longer than one prompt's budget.
    wait = max(5.0, settings.waves_first_chunk_timeout)
    checks = []
    for transport in transports:
        name = f"speech ({_NAMES[transport]})"
        try:
            audio = asyncio.run(_speak(transport, settings.waves_url, key, wait))
        except (WavesAuthError, WavesForbiddenError):
            checks.append(_fix(name, "WAVES_API_KEY: rejected by Waves"))
            continue
        except TTSError as exc:
            hint = ""
            if transport == "websocket" and settings.waves_transport == "auto":
                hint = " (calls would speak over HTTP streaming, later to first audio)"
            checks.append(_fix(name, f"WAVES_URL: {settings.waves_url}: {exc}{hint}"))
            continue
        if audio == 0:
            checks.append(_fix(name, f"WAVES_URL: {settings.waves_url} answered without audio"))
        else:
            detail = f"WAVES_API_KEY accepted by {settings.waves_url} ({_ms(audio)})"
            checks.append(_fine(name, detail))
    return checks


def _ms(pcm_bytes: int) -> str:
    return f"{pcm_bytes * 1000 // 16000} ms of audio"  # 8 kHz PCM16


# --- carriers --------------------------------------------------------------------------------


def check_plivo(settings: Settings) -> Check:
    from plivo import exceptions as errors

    from telebridge.carriers.plivo_rest import failure_text, make_client

    if not settings.plivo_enabled:
        return _fine("Plivo", "not configured (PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN): Plivo is off")
    assert settings.plivo_auth_id and settings.plivo_auth_token
    token = settings.plivo_auth_token.get_secret_value()
    try:
        client = make_client(settings.plivo_auth_id, token, settings.plivo_api_url, timeout=10)
        account = client.account.get()
    except errors.AuthenticationError:
        return _fix("Plivo", "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN: rejected by Plivo")
    except errors.PlivoRestError as exc:
        return _fix("Plivo", f"PLIVO_API_URL: {settings.plivo_api_url}: {failure_text(exc)}")
    except requests.exceptions.InvalidJSONError:
        return _fix("Plivo", f"PLIVO_API_URL: {settings.plivo_api_url} answered, not in JSON")
    except requests.RequestException as exc:
        return _fix("Plivo", f"PLIVO_API_URL: cannot reach {settings.plivo_api_url} "
                             f"({type(exc).__name__})")  # fmt: skip
    return _fine("Plivo", f"credentials accepted (account {getattr(account, 'name', '') or '-'})")


def _vonage_get(auth: Any, host: str, path: str, auth_type: str) -> str | None:
    """None when the GET succeeded, else what went wrong."""
    from vonage import VonageError
    from vonage_http_client.errors import HttpRequestError

    from telebridge.carriers.vonage_rest import make_client

    try:
        client = make_client(auth, host, timeout=10)
        answer = client.http_client.get(client.http_client.api_host, path, None, auth_type)
    except HttpRequestError as exc:
        return f"HTTP {exc.response.status_code}"
    except (VonageError, requests.RequestException) as exc:
        return type(exc).__name__
    # The SDK reads a body that is not JSON as None: a proxy's page, not Vonage.
    return None if isinstance(answer, dict) else "a body that is not JSON"


def check_vonage(settings: Settings) -> list[Check]:
    from vonage import Auth

    from telebridge.carriers.vonage_rest import host_of

    app_id, key = settings.vonage_application_id, settings.vonage_private_key
    if not settings.vonage_enabled:
        if app_id or key:
            return [_fix("Vonage", "VONAGE_SIGNATURE_SECRET is not set: Vonage webhooks are "
                                   "refused (or set VONAGE_ALLOW_UNSIGNED=true)")]  # fmt: skip
        return [_fine("Vonage", "not configured (VONAGE_SIGNATURE_SECRET): Vonage is off")]
    checks: list[Check] = []
    if settings.vonage_signature_secret is None:
        checks.append(_fix("Vonage webhooks", "VONAGE_ALLOW_UNSIGNED is on: anyone can post "
                                              "webhooks; set VONAGE_SIGNATURE_SECRET"))  # fmt: skip
    host = host_of(settings.vonage_api_host)
    if not (app_id and key):
        checks.append(_fine("Vonage", "webhooks on; no VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY: "
                                      "no transfers or outbound calls"))  # fmt: skip
    else:
        try:
            auth = Auth(application_id=app_id, private_key=load_private_key(key.get_secret_value()))
        except ConfigError as exc:
            return [*checks, _fix("Vonage", str(exc))]
        problem = _vonage_get(auth, host, "/v1/calls?page_size=1", "jwt")
        if problem is None:
            checks.append(_fine("Vonage", f"application {app_id} accepted"))
        else:
            checks.append(_fix("Vonage", f"VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY: "
                                         f"{host} answered {problem}"))  # fmt: skip
    # The account's key and secret are optional (only `configure vonage` needs them).
    api_key: Any = getattr(settings, "vonage_api_key", None)
    api_secret: Any = getattr(settings, "vonage_api_secret", None)
    if hasattr(api_secret, "get_secret_value"):
        api_secret = api_secret.get_secret_value()
    if api_key and api_secret and app_id:
        auth = Auth(api_key=str(api_key), api_secret=str(api_secret))
        problem = _vonage_get(auth, host, f"/v2/applications/{app_id}", "basic")
        checks.append(
            _fine("Vonage account", "VONAGE_API_KEY / VONAGE_API_SECRET accepted")
            if problem is None
            else _fix("Vonage account", f"VONAGE_API_KEY / VONAGE_API_SECRET: {problem}")
        )
    return checks


# --- all of it -------------------------------------------------------------------------------


def diagnose(load: Callable[[], Settings] = load_settings) -> list[Check]:
    """Every check, in order. Blocks: call it from a thread in async code."""
    try:
        settings = load()
    except ConfigError as exc:
        return [_fix("settings", str(exc))]
    checks = [_fine("settings", "loaded")]
    for check in (check_public_url, check_secret, check_flows, check_calllog):
        checks.append(check(settings))
    checks += check_waves(settings)
    checks.append(check_plivo(settings))
    checks += check_vonage(settings)
    if not (settings.plivo_enabled or settings.vonage_enabled):
        checks.append(_fix("carriers", "neither Plivo nor Vonage is configured"))
    return checks


def format_table(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = [f"{'check'.ljust(width)}  status  detail"]
    lines += [
        f"{c.name.ljust(width)}  {'fine' if c.ok else 'to fix':6}  {c.detail}" for c in checks
    ]
    return "\n".join(lines) + "\n"
