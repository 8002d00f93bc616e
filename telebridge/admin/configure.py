"""Point a carrier at the bridge: its webhook URLs built from `TELEBRIDGE_PUBLIC_URL`.

Plivo: create or update an application's answer, hangup and fallback URLs and attach numbers to
it. Vonage: set a voice application's answer, event and fallback URLs and turn on signed
callbacks. Vonage's update replaces the whole application, so it is fetched first and sent back
with only those fields changed; a Plivo update is sent with the application's current values
for the settings Plivo's SDK would have reset. With `dry_run` nothing is changed: the report
says what would be.

Errors: a mistake in what was asked (an application or number that does not exist) is a
`ConfigureError` naming the option, rejected credentials a `ConfigError` naming the settings,
and anything else the carrier's API does wrong (an error status, no answer in time, an answer
that is not JSON) a `CarrierFailure` naming the carrier and the request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import requests

from telebridge import e164
from telebridge.carriers import paths
from telebridge.settings import ConfigError, Settings

logger = logging.getLogger(__name__)


# Seconds the carrier's API has to answer each request.
SDK_TIMEOUT_S = 10


class ConfigureError(Exception):
    """The carrier cannot be configured as asked; the message names the option or setting."""


class CarrierFailure(Exception):
    """The carrier's API failed (an error status, no answer in time, an answer that makes no
    sense); the message names the carrier and the request."""


@dataclass(frozen=True, slots=True)
class Change:
    name: str
    before: str
    after: str

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass
class Report:
    """What configuring did (or, with dry_run, would do)."""

    carrier: str
    target: str  # "application telebridge (app_id 123)"
    fields: list[Change] = field(default_factory=list)
    numbers: list[Change] = field(default_factory=list)
    created: bool = False
    dry_run: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def changes(self) -> int:
        return sum(c.changed for c in self.fields) + sum(c.changed for c in self.numbers)


def _text(value: object) -> str:
    return "" if value is None else str(value)


# --- Plivo -----------------------------------------------------------------------------------


def plivo_urls(settings: Settings) -> dict[str, str]:
    base = settings.require_public_url()
    return {
        "answer_url": f"{base}{paths.PLIVO_ANSWER}",
        "answer_method": "POST",
        "hangup_url": f"{base}{paths.PLIVO_HANGUP}",
        "hangup_method": "POST",
        # Plivo asks the fallback when the answer URL failed three times: the bridge again, as
        # the failure is most often a short outage or a slow restart.
        "fallback_answer_url": f"{base}{paths.PLIVO_ANSWER}",
        "fallback_method": "POST",
    }


def _plivo_client(settings: Settings) -> Any:
    from telebridge.carriers.plivo_rest import make_client

    if not (settings.plivo_auth_id and settings.plivo_auth_token):
        raise ConfigError("PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN are not set: needed to configure Plivo")
    token = settings.plivo_auth_token.get_secret_value()
    client = make_client(
        settings.plivo_auth_id, token, settings.plivo_api_url, timeout=SDK_TIMEOUT_S
    )
    # Credentials first, so that a wrong token is named as such whatever is asked next.
    _plivo_call("reading the account", client, "GET", ())
    return client


def _plivo_call(
    what: str,
    client: Any,
    method: str,
    path: tuple[str, ...],
    data: dict[str, Any] | None = None,
    *,
    not_found: str | None = None,
) -> Any:
    """One request to Plivo's API, sent once; its answer (attributes of the JSON object).

    Not through the SDK's resources (`client.applications.create`...): on a 5xx those send the
    request again, twice (one create could make three applications), and their lists read an
    error answer as an AttributeError. A 404 is the user's mistake named by `not_found` when
    given (an id or number they typed); otherwise, like any other failure, the carrier's.
    """
    from plivo import exceptions as errors

    from telebridge.carriers.plivo_rest import failure_text

    try:
        answer = client.request(method, path, data)
    except errors.AuthenticationError:
        raise ConfigError("PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN: rejected by Plivo") from None
    except errors.ResourceNotFoundError as exc:
        if not_found is not None:
            raise ConfigureError(not_found) from None
        raise CarrierFailure(f"plivo: {what} failed: {failure_text(exc)}") from None
    except (errors.PlivoRestError, requests.RequestException) as exc:
        raise CarrierFailure(f"plivo: {what} failed: {failure_text(exc)}") from None
    if answer is None:  # a 2xx with an empty body, where Plivo always says something
        raise CarrierFailure(f"plivo: {what} failed: an empty answer")
    return answer


def _find_plivo_app(client: Any, name: str) -> Any | None:
    found: list[Any] = []
    offset = 0
    while True:
        query = {"limit": 20, "offset": offset, "app_name": name}
        page = _plivo_call("listing applications", client, "GET", ("Application",), query)
        objects = getattr(page, "objects", None)
        if not isinstance(objects, list):
            raise CarrierFailure("plivo: listing applications failed: the answer has no list")
        # Exact names only: a filter on Plivo's side may match more loosely.
        found += [a for a in objects if _text(getattr(a, "app_name", "")) == name]
        more = getattr(getattr(page, "meta", None), "next", None)
        if not objects or not more:
            break
        offset += len(objects)
    if len(found) > 1:
        ids = ", ".join(_text(getattr(a, "app_id", "")) for a in found)
        raise ConfigureError(f"--app-name: several Plivo applications are named {name!r} ({ids}): "
                             "pick one with --app-id")  # fmt: skip
    return found[0] if found else None


# Plivo's own defaults for a new application, stated as its SDK's create states them.
_NEW_PLIVO_APP = {
    "message_method": "POST",
    "default_number_app": False,
    "default_endpoint_app": False,
    "log_incoming_messages": True,
}


def _keep(app: Any) -> dict[str, Any]:
    """The settings the SDK's update would have reset to defaults, at their current values: sent
    back with the URLs, so that an update changes those and nothing else whatever Plivo does with
    fields not given."""
    kept: dict[str, Any] = {}
    for ours, theirs in (("default_number_app", "default_app"),
                         ("default_endpoint_app", "default_endpoint_app"),
                         ("log_incoming_messages", "log_incoming_messages"),
                         ("public_uri", "public_uri")):  # fmt: skip
        value = getattr(app, theirs, None)
        if isinstance(value, bool):
            kept[ours] = value
        elif isinstance(value, str) and value.lower() in ("true", "false"):
            kept[ours] = value.lower() == "true"
    if getattr(app, "message_url", None):
        kept["message_url"] = _text(app.message_url)
    if getattr(app, "message_method", None):
        kept["message_method"] = _text(app.message_method)
    return kept


def _app_id_of(uri: object) -> str:
    """`/v1/Account/MA.../Application/123/` -> `123`."""
    parts = [p for p in _text(uri).split("/") if p]
    return parts[-1] if parts else ""


def _plivo_number(text: str) -> str:
    """`text` as Plivo names a number: E.164 digits without the "+"."""
    number = e164.parse(text)
    if number is None:
        raise ConfigureError(f"--number: {text.strip()!r} is not an E.164 number ({e164.RULE})")
    return number.lstrip("+")


def configure_plivo(
    settings: Settings,
    *,
    app_name: str | None = None,
    app_id: str | None = None,
    numbers: list[str] | tuple[str, ...] = (),
    dry_run: bool = False,
) -> Report:
    """Create or update the Plivo application and attach `numbers` to it."""
    if bool(app_name) == bool(app_id):
        raise ConfigureError("give --app-name NAME or --app-id ID (one of them)")
    wanted_numbers = [_plivo_number(n) for n in numbers]
    urls = plivo_urls(settings)
    client = _plivo_client(settings)
    if app_id:
        missing = f"--app-id: no Plivo application {app_id}"
        app = _plivo_call(
            "reading the application", client, "GET", ("Application", app_id), not_found=missing
        )
    else:
        assert app_name is not None
        app = _find_plivo_app(client, app_name)
    # Every number is checked before anything changes: a typo must not leave half a set-up.
    attached: dict[str, str] = {}
    for number in wanted_numbers:
        missing = f"--number: +{number} is not a number of this Plivo account"
        found = _plivo_call(
            "reading the number", client, "GET", ("Number", number), not_found=missing
        )
        attached[number] = _app_id_of(getattr(found, "application", None))
    report = Report("plivo", "", dry_run=dry_run, created=app is None)
    current = {k: _text(getattr(app, k, "")) if app is not None else "" for k in urls}
    report.fields = [Change(k, current[k], v) for k, v in urls.items()]
    if app is None:
        assert app_name is not None
        report.target = f"application {app_name} (new)"
        target_id = ""
        if not dry_run:
            body = {"app_name": app_name, **urls, **_NEW_PLIVO_APP}
            made = _plivo_call("creating the application", client, "POST", ("Application",), body)
            target_id = _text(getattr(made, "app_id", ""))
            if not target_id:
                raise CarrierFailure("plivo: creating the application failed: no app_id answered")
            report.target = f"application {app_name} (app_id {target_id}, new)"
    else:
        target_id = _text(getattr(app, "app_id", app_id))
        report.target = f"application {_text(getattr(app, 'app_name', ''))} (app_id {target_id})"
        if report.changes and not dry_run:
            body = {**urls, **_keep(app)}
            path = ("Application", target_id)
            _plivo_call("updating the application", client, "POST", path, body)
    for number, before in attached.items():
        change = Change(f"+{number}", before, target_id or "(new application)")
        report.numbers.append(change)
        if change.changed and not dry_run:
            path = ("Number", number)
            _plivo_call("attaching the number", client, "POST", path, {"app_id": target_id})
    return report


# --- Vonage ----------------------------------------------------------------------------------

VONAGE_WEBHOOKS = (  # (webhook, path, method)
    ("answer_url", paths.VONAGE_ANSWER, "GET"),
    ("event_url", paths.VONAGE_EVENT, "POST"),
    ("fallback_answer_url", paths.VONAGE_ANSWER, "GET"),
)


def _vonage_account(settings: Settings) -> tuple[str, str]:
    # Not settings the bridge itself needs; read them if this telebridge knows them.
    key = getattr(settings, "vonage_api_key", None)
    secret: Any = getattr(settings, "vonage_api_secret", None)
    if hasattr(secret, "get_secret_value"):
        secret = secret.get_secret_value()
    if not key or not secret:
        raise ConfigError(
            "VONAGE_API_KEY / VONAGE_API_SECRET are not set: Vonage's applications API needs "
            "the account's API key and secret (dashboard, API settings)"
        )
    return str(key), str(secret)


def _vonage_client(settings: Settings) -> Any:
    from vonage import Auth

    from telebridge.carriers.vonage_rest import make_client

    key, secret = _vonage_account(settings)
    auth = Auth(api_key=key, api_secret=secret)
    # One try, as with Plivo: a failure is reported at once, and running again is harmless.
    return make_client(auth, settings.vonage_api_host, timeout=SDK_TIMEOUT_S, max_retries=0)


def _vonage_call(what: str, fn: Any, *args: Any, not_found: str | None = None) -> dict[str, Any]:
    """`fn(*args)`, a request whose answer is the application (JSON). A 404 is the user's
    mistake named by `not_found` when given; otherwise, like any other failure, the carrier's."""
    from vonage import VonageError
    from vonage_http_client.errors import HttpRequestError

    try:
        answer = fn(*args)
    except HttpRequestError as exc:
        status = exc.response.status_code
        if status == 401:
            raise ConfigError("VONAGE_API_KEY / VONAGE_API_SECRET: rejected by Vonage") from None
        if status == 404 and not_found is not None:
            raise ConfigureError(not_found) from None
        raise CarrierFailure(f"vonage: {what} failed: HTTP {status}") from None
    except (VonageError, requests.RequestException) as exc:
        raise CarrierFailure(f"vonage: {what} failed: {type(exc).__name__}") from None
    if not isinstance(answer, dict):  # the SDK reads a body that is not JSON as None
        raise CarrierFailure(f"vonage: {what} failed: the answer is not JSON")
    return answer


def configure_vonage(settings: Settings, *, application_id: str, dry_run: bool = False) -> Report:
    """Set the application's voice webhooks to the bridge and turn on signed callbacks."""
    base = settings.require_public_url()
    client = _vonage_client(settings)
    http, path = client.http_client, f"/v2/applications/{application_id}"
    missing = f"--application-id: no Vonage application {application_id}"
    data = _vonage_call("reading the application", http.get, http.api_host, path, None, "basic",
                        not_found=missing)  # fmt: skip
    # Everything as it came, but the read-only parts: the update replaces the application.
    body = {k: v for k, v in data.items() if k not in ("id", "_links")}
    voice = body.setdefault("capabilities", {}).setdefault("voice", {})
    webhooks = voice.setdefault("webhooks", {})
    report = Report("vonage", f"application {_text(data.get('name'))} ({application_id})")
    report.dry_run = dry_run
    for name, route, method in VONAGE_WEBHOOKS:
        hook = webhooks.setdefault(name, {})
        for key, value in (("address", base + route), ("http_method", method)):
            label = name if key == "address" else name.removesuffix("_url") + "_method"
            report.fields.append(Change(label, _text(hook.get(key)), value))
            hook[key] = value  # other keys (timeouts) stay as they were
    report.fields.append(Change("signed_callbacks", _text(voice.get("signed_callbacks")), "True"))
    voice["signed_callbacks"] = True
    if report.changes and not dry_run:
        _vonage_call("updating the application", http.put, http.api_host, path, body, "basic")
    if settings.vonage_signature_secret is None:
        report.notes.append(
            "set VONAGE_SIGNATURE_SECRET to the account's signature secret so the bridge can "
            "check the signed callbacks"
        )
    return report


def format_report(report: Report) -> str:
    """Before and after of each field, then what was (or would be) changed."""
    lines = [f"{report.carrier} {report.target}:"]
    rows = [(c.name, c.before or "(none)", c.after, c.changed) for c in report.fields]
    rows += [(f"number {c.name}", c.before or "(none)", c.after, c.changed) for c in report.numbers]
    width = max((len(r[0]) for r in rows), default=0)
    before_width = max((len(r[1]) for r in rows), default=0)
    for name, before, after, changed in rows:
        shown = f"-> {after}" if changed else "(unchanged)"
        lines.append(f"  {name.ljust(width)}  {before.ljust(before_width)}  {shown}")
    if not report.changes:
        lines.append("nothing to change: it already points at this bridge")
    else:
        what = f"{report.changes} setting(s)" + (" of a new application" if report.created else "")
        lines.append(
            f"dry run: would change {what}; nothing was changed"
            if report.dry_run
            else f"changed {what}"
        )
    lines += [f"note: {note}" for note in report.notes]
    return "\n".join(lines)
