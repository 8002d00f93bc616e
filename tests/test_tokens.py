"""Signing keys derived from the settings, and the signed call variables they protect."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from telebridge.settings import ConfigError, Settings, load_settings
from telebridge.tokens import (
    CALL_VARS,
    PLIVO_TRANSFER,
    STREAM_TOKEN,
    Keys,
    StreamGrant,
    TokenError,
    mint_stream_token,
    read_call_variables,
    read_stream_token,
    sign_call_variables,
    sign_claims,
    signing_key,
)

PLIVO_TOKEN = "plivo-auth-token-of-the-account"
VONAGE_SECRET = "vonage-signature-secret-of-40-characters"
SECRET = "an-explicit-telebridge-secret"
NO_CREDENTIALS: dict[str, Any] = {
    "telebridge_secret": None,
    "plivo_auth_id": None,
    "plivo_auth_token": None,
    "vonage_signature_secret": None,
    "vonage_private_key": None,
}


def settings(**values: Any) -> Settings:
    return load_settings(None, **{**NO_CREDENTIALS, **values})


@pytest.fixture(scope="module")
def pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ).decode()


def test_the_same_settings_give_the_same_keys_in_another_process() -> None:
    serve = settings(plivo_auth_token=PLIVO_TOKEN, vonage_signature_secret=VONAGE_SECRET)
    call = settings(plivo_auth_token=PLIVO_TOKEN, vonage_signature_secret=VONAGE_SECRET)
    assert serve is not call
    for purpose in (STREAM_TOKEN, CALL_VARS, PLIVO_TRANSFER):
        for carrier in ("plivo", "vonage"):
            mine, theirs = Keys.from_settings(serve), Keys.from_settings(call)
            assert mine.key(purpose, carrier) == theirs.key(purpose, carrier)
            assert len(mine.key(purpose, carrier)) == 32
    assert signing_key(serve, CALL_VARS, "plivo") == Keys.from_settings(call).key(
        CALL_VARS, "plivo"
    )


def test_each_purpose_and_carrier_has_its_own_key() -> None:
    keys = Keys.from_settings(
        settings(plivo_auth_token=PLIVO_TOKEN, vonage_signature_secret=VONAGE_SECRET)
    )
    derived = [
        keys.key(purpose, carrier)
        for purpose in (STREAM_TOKEN, CALL_VARS, PLIVO_TRANSFER)
        for carrier in ("plivo", "vonage")
    ]
    assert len(set(derived)) == len(derived)
    # A stream token is no call-variables token, even with the same claims shape.
    grant = StreamGrant(carrier="plivo", call_id="CALL-1", flow="demo")
    token = mint_stream_token(keys.key(CALL_VARS, "plivo"), grant, 60)
    with pytest.raises(TokenError):
        read_stream_token(keys.key(STREAM_TOKEN, "plivo"), token, carrier="plivo")


def test_a_carriers_keys_come_from_its_own_credentials_only() -> None:
    plivo_only = Keys.from_settings(settings(plivo_auth_token=PLIVO_TOKEN))
    both = Keys.from_settings(
        settings(plivo_auth_token=PLIVO_TOKEN, vonage_signature_secret=VONAGE_SECRET)
    )
    # Placing Plivo calls from a shell without the Vonage settings still matches the bridge.
    assert plivo_only.key(CALL_VARS, "plivo") == both.key(CALL_VARS, "plivo")
    assert (both.source("plivo"), both.source("vonage")) == (
        "PLIVO_AUTH_TOKEN",
        "VONAGE_SIGNATURE_SECRET",
    )
    rotated = Keys.from_settings(settings(plivo_auth_token=PLIVO_TOKEN + "-new"))
    assert rotated.key(CALL_VARS, "plivo") != plivo_only.key(CALL_VARS, "plivo")


def test_an_explicit_secret_overrides_the_credentials() -> None:
    one = Keys.from_settings(settings(telebridge_secret=SECRET, plivo_auth_token=PLIVO_TOKEN))
    other = Keys.from_settings(settings(telebridge_secret=SECRET, plivo_auth_token="another"))
    derived = Keys.from_settings(settings(plivo_auth_token=PLIVO_TOKEN))
    assert one.key(STREAM_TOKEN, "plivo") == other.key(STREAM_TOKEN, "plivo")
    assert one.key(STREAM_TOKEN, "plivo") != derived.key(STREAM_TOKEN, "plivo")
    assert one.source("plivo") == one.source("vonage") == "TELEBRIDGE_SECRET"
    # The secret is key material, not the key: a token signed with it raw does not verify.
    assert one.key(STREAM_TOKEN, "plivo") != SECRET.encode()


def test_without_anything_shared_a_process_keeps_a_key_of_its_own() -> None:
    for blank in (None, "", "   "):
        nothing = settings(telebridge_secret=blank, plivo_auth_token=blank)
        one, other = Keys.from_settings(nothing), Keys.from_settings(nothing)
        assert one.source("plivo") is None
        assert one.key(STREAM_TOKEN, "plivo") == one.key(STREAM_TOKEN, "plivo")
        assert one.key(STREAM_TOKEN, "plivo") != other.key(STREAM_TOKEN, "plivo")
        with pytest.raises(ConfigError) as refused:
            signing_key(nothing, CALL_VARS, "plivo")
        message = str(refused.value)
        assert message.startswith("TELEBRIDGE_SECRET is not set and neither is PLIVO_AUTH_TOKEN")
        assert "\n" not in message


def test_vonage_keys_prefer_the_signature_secret_then_the_private_key(
    pem: str, tmp_path: Path
) -> None:
    path = tmp_path / "private.key"
    path.write_text(pem)
    as_text = Keys.from_settings(settings(vonage_private_key=pem, vonage_allow_unsigned=True))
    as_path = Keys.from_settings(settings(vonage_private_key=str(path)))
    assert as_text.source("vonage") == "VONAGE_PRIVATE_KEY"
    # The same key as PEM text or as a file: the same keys (its path is no secret at all).
    assert as_text.key(CALL_VARS, "vonage") == as_path.key(CALL_VARS, "vonage")
    # The bridge may lack the private key, never the signature secret: that one wins.
    with_secret = settings(vonage_private_key=pem, vonage_signature_secret=VONAGE_SECRET)
    without_key = settings(vonage_signature_secret=VONAGE_SECRET)
    assert Keys.from_settings(with_secret).key(CALL_VARS, "vonage") == Keys.from_settings(
        without_key
    ).key(CALL_VARS, "vonage")
    # A key file that cannot be read derives nothing (what calls Vonage with it says why).
    missing = Keys.from_settings(settings(vonage_private_key=str(tmp_path / "missing.key")))
    assert missing.source("vonage") is None


def test_no_secret_is_logged_or_shown(caplog: pytest.LogCaptureFixture, pem: str) -> None:
    values = {"plivo_auth_token": PLIVO_TOKEN, "vonage_private_key": pem}
    with caplog.at_level(logging.DEBUG):
        keys = Keys.from_settings(settings(**values))
        for carrier in ("plivo", "vonage"):
            key = keys.key(CALL_VARS, carrier)
            read_call_variables(key, sign_call_variables(key, {"a": "b"}, 60))
        explicit = Keys.from_settings(settings(telebridge_secret=SECRET))
    shown = caplog.text + repr(keys) + repr(explicit) + str(keys)
    for secret in (PLIVO_TOKEN, SECRET, "PRIVATE KEY", keys.key(CALL_VARS, "plivo").hex()):
        assert secret not in shown
    assert repr(keys) == "Keys(plivo: PLIVO_AUTH_TOKEN, vonage: VONAGE_PRIVATE_KEY)"


# --- signed call variables -------------------------------------------------------------------


def test_call_variables_verify_until_they_expire() -> None:
    key = Keys(SECRET.encode()).key(CALL_VARS, "plivo")
    token = sign_call_variables(key, {"name": "Ada"}, 3600, now=1000.0)
    assert read_call_variables(key, token, now=4599.0) == {"name": "Ada"}
    with pytest.raises(TokenError, match="expired"):
        read_call_variables(key, token, now=4601.0)
    with pytest.raises(TokenError):
        read_call_variables(Keys(b"other").key(CALL_VARS, "plivo"), token, now=1000.0)
    body, mac = token.split(".")
    with pytest.raises(TokenError):
        read_call_variables(key, body[:-2] + "AA." + mac, now=1000.0)


def test_call_variables_without_an_expiry_are_refused() -> None:
    key = Keys(SECRET.encode()).key(CALL_VARS, "plivo")
    with pytest.raises(TokenError, match="malformed"):
        read_call_variables(key, sign_claims(key, {"v": {"name": "Ada"}}))
