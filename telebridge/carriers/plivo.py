"""Plivo without I/O: the bidirectional Audio Stream protocol, answer XML and webhook signatures.

See protocols/plivo.md. `PlivoStream` turns Plivo's JSON stream messages into call events and the
session's commands into `playAudio` / `checkpoint` / `clearAudio` messages.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from typing import Any

from plivo import plivoxml
from plivo.utils.signature_v3 import validate_v3_signature

from telebridge.call.audio import Codec
from telebridge.call.events import (
    CallerAudio,
    CallEvent,
    Cleared,
    Digit,
    Played,
    ProtocolError,
    Started,
    Stopped,
    WireMessage,
    json_object,
)
from telebridge.dtmf import DTMF_KEYS

logger = logging.getLogger(__name__)

CONTENT_TYPE = "audio/x-mulaw;rate=8000"
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz
# Base64 of a playAudio payload stays within 16 KB: 76 frames are 12160 bytes, 16216 in base64.
MAX_FRAMES_PER_MESSAGE = 76


class PlivoStream:
    """One Plivo bidirectional stream. `start` must come first; it names the call and stream."""

    carrier = "plivo"
    codec: Codec = "mulaw"
    sample_rate = 8000
    max_frames_per_message = MAX_FRAMES_PER_MESSAGE

    def __init__(self, *, decode_caller_audio: bool = False) -> None:
        self.call_id: str | None = None
        self.stream_id: str | None = None
        # Caller audio arrives 50 times a second and nothing in the bridge listens to it yet:
        # unless asked to, media messages are recognised by their head and not parsed at all.
        self.decode_caller_audio = decode_caller_audio

    # --- carrier -> bridge --------------------------------------------------------

    def ignorable(self, payload: bytes, text: bool) -> bool:
        # After the start, a media message is caller audio: unless it is decoded, it can go
        # unseen (exactly what `receive` would return for it: nothing).
        if not text or self.decode_caller_audio or self.stream_id is None:
            return False
        head = bytes(payload[:48])
        return b'"event":"media"' in head or b'"event": "media"' in head

    def receive(self, message: str | bytes) -> list[CallEvent]:
        if isinstance(message, bytes):
            raise ProtocolError("binary message on a Plivo stream")
        if not self.decode_caller_audio and self.stream_id is not None and _is_media(message):
            return []
        data = json_object(message)
        event = data.get("event")
        if event == "start":
            return [self._start(data)]
        if self.stream_id is None:
            raise ProtocolError(f"{event!r} before start")
        if event == "media":
            return [self._media(data)]
        if event == "dtmf":
            return [self._dtmf(data)]
        if event in ("playedStream", "played"):
            name = data.get("name")
            if not isinstance(name, str):
                raise ProtocolError(f"{event} without a name")
            return [Played(name)]
        if event == "clearedAudio":
            return [Cleared()]
        if event == "stop":
            return [Stopped()]
        logger.info("plivo: ignoring unknown stream event %r", str(event)[:40])
        return []

    def _start(self, data: Mapping[str, Any]) -> Started:
        if self.stream_id is not None:
            raise ProtocolError("second start on one stream")
        start = data.get("start")
        if not isinstance(start, dict):
            raise ProtocolError("start without a start object")
        call_id, stream_id = start.get("callId"), start.get("streamId")
        if not isinstance(call_id, str) or not call_id or not isinstance(stream_id, str):
            raise ProtocolError("start without callId and streamId")
        fmt = start.get("mediaFormat")
        if isinstance(fmt, dict):
            encoding, rate = fmt.get("encoding"), fmt.get("sampleRate")
            if encoding not in (None, "audio/x-mulaw") or rate not in (None, 8000, "8000"):
                raise ProtocolError(f"unexpected media format {encoding!r} at {rate!r} Hz")
        self.call_id, self.stream_id = call_id, stream_id
        return Started(call_id=call_id, stream_id=stream_id)

    @staticmethod
    def _media(data: Mapping[str, Any]) -> CallerAudio:
        media = data.get("media")
        payload = media.get("payload") if isinstance(media, dict) else None
        if not isinstance(payload, str):
            raise ProtocolError("media without a payload")
        try:
            return CallerAudio(base64.b64decode(payload, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError("media payload is not base64") from None

    @staticmethod
    def _dtmf(data: Mapping[str, Any]) -> Digit:
        dtmf = data.get("dtmf")
        digit = dtmf.get("digit") if isinstance(dtmf, dict) else None
        if not isinstance(digit, str) or digit.upper() not in DTMF_KEYS:
            raise ProtocolError(f"dtmf with an invalid digit {str(digit)[:8]!r}")
        return Digit(digit.upper())

    # --- bridge -> carrier --------------------------------------------------------

    def play(self, frames: bytes) -> list[WireMessage]:
        if not frames:
            return []
        if len(frames) % FRAME_BYTES:
            raise ValueError("playAudio carries whole 20 ms frames only")
        step = MAX_FRAMES_PER_MESSAGE * FRAME_BYTES
        return [
            '{"event":"playAudio","media":{"contentType":"audio/x-mulaw","sampleRate":8000,'
            '"payload":"' + base64.b64encode(frames[i : i + step]).decode("ascii") + '"}}'
            for i in range(0, len(frames), step)
        ]

    def mark(self, name: str) -> list[WireMessage]:
        return [json.dumps({"event": "checkpoint", "streamId": self._sid(), "name": name})]

    def clear(self) -> list[WireMessage]:
        return [json.dumps({"event": "clearAudio", "streamId": self._sid()})]

    def send_digits(self, digits: str) -> list[WireMessage]:
        """Plivo plays DTMF tones into the call on the stream's own `sendDTMF`."""
        return [json.dumps({"event": "sendDTMF", "dtmf": digits})]

    def _sid(self) -> str:
        if self.stream_id is None:
            raise RuntimeError("no stream id before start")
        return self.stream_id


def _is_media(message: str) -> bool:
    head = message[:48]
    return '"event":"media"' in head or '"event": "media"' in head


# --- webhooks -------------------------------------------------------------------------


def answer_xml(stream_url: str, status_callback_url: str) -> str:
    """The answer to an answer webhook: one bidirectional μ-law stream that keeps the call."""
    element = plivoxml.StreamElement(
        stream_url,
        bidirectional=True,
        keepCallAlive=True,
        contentType=CONTENT_TYPE,
        statusCallbackUrl=status_callback_url,
        statusCallbackMethod="POST",
    )
    return str(plivoxml.ResponseElement().add(element).to_string(pretty=False))


def empty_xml() -> str:
    return str(plivoxml.ResponseElement().to_string(pretty=False))


def dial_xml(number: str, timeout: int | None = None) -> str:
    """XML that connects the caller to `number` (the target of a transfer), ringing `timeout` s."""
    dial = plivoxml.DialElement(timeout=timeout).add(plivoxml.NumberElement(number.lstrip("+")))
    return str(plivoxml.ResponseElement().add(dial).to_string(pretty=False))


def refusal_xml(text: str, reason: str = "rejected") -> str:
    """Speak a short apology and hang up (unknown flow, busy bridge)."""
    response = plivoxml.ResponseElement()
    response.add(plivoxml.SpeakElement(text))
    response.add(plivoxml.HangupElement(reason=reason))
    return str(response.to_string(pretty=False))


def signature_valid(
    *,
    method: str,
    url: str,
    params: Mapping[str, str],
    signature: str | None,
    nonce: str | None,
    auth_token: str,
) -> bool:
    """Check `X-Plivo-Signature-V3` for a request Plivo made to the public `url`."""
    if not signature or not nonce or not auth_token:
        return False
    try:
        return bool(
            validate_v3_signature(
                method.upper(), url, nonce, auth_token, signature.replace(" ", ""), dict(params)
            )
        )
    except Exception:  # the SDK's argument validators raise on odd input: that is a bad signature
        logger.debug("plivo: signature check raised", exc_info=True)
        return False
