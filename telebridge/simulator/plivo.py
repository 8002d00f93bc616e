"""Simulated Plivo: signed answer and hangup webhooks, and the bidirectional Audio Stream protocol.

The signature is computed here from Plivo's V3 rules (not with the SDK the bridge uses to check
it), so a test that passes shows the two agree. Stream messages follow protocols/plivo.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
import uuid
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from telebridge.carriers import paths
from telebridge.simulator.carrier import CallScript, SimulatedCall

MAX_PAYLOAD_B64 = 16 * 1024


def plivo_v3_signature(
    method: str, url: str, params: dict[str, str], nonce: str, token: str
) -> str:
    """X-Plivo-Signature-V3 for a request Plivo makes to `url` with form `params`."""
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"
    query = sorted(parse_qsl(parts.query, keep_blank_values=True))
    if method.upper() == "GET":
        query = sorted([*query, *params.items()])
        signed = base + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    else:
        if params:
            signed = base + "?" + "&".join(f"{k}={v}" for k, v in query)
            if query:
                signed += "."
            signed += "".join(f"{k}{v}" for k, v in sorted(params.items()))
        else:
            signed = base + ("?" + "&".join(f"{k}={v}" for k, v in query) if query else "")
    mac = hmac.new(token.encode(), f"{signed}.{nonce}".encode(), hashlib.sha256).digest()
    return base64.b64encode(mac).decode()


def signed_headers(method: str, url: str, params: dict[str, str], token: str) -> dict[str, str]:
    nonce = secrets.token_hex(10)
    return {
        "X-Plivo-Signature-V3": plivo_v3_signature(method, url, params, nonce, token),
        "X-Plivo-Signature-V3-Nonce": nonce,
    }


class PlivoCall(SimulatedCall):
    carrier = "plivo"
    frame_bytes = 160
    bytes_per_second = 8000

    def __init__(
        self,
        base_url: str,
        auth_token: str,
        script: CallScript | None = None,
        *,
        call_id: str | None = None,
        answer_query: str = "",
    ) -> None:
        super().__init__(base_url, call_id or str(uuid.uuid4()), script or CallScript())
        self.auth_token = auth_token
        self.answer_query = answer_query
        self.stream_id = str(uuid.uuid4())
        self._seq = 0
        self._chunk = 0
        self._silence = base64.b64encode(b"\xff" * 160).decode()
        self.answer_xml = ""

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        query = self.answer_query
        if self.script.flow:
            query = f"flow={self.script.flow}" + (f"&{query}" if query else "")
        url = f"{self.base_url}{paths.PLIVO_ANSWER}" + (f"?{query}" if query else "")
        params = {
            "CallUUID": self.result.call_id,
            "From": self.script.caller,
            "To": self.script.callee,
            "CallStatus": "in-progress",
            "Direction": "inbound",
            "Event": "StartApp",
        }
        response = await http.post(
            url, data=params, headers=signed_headers("POST", url, params, self.auth_token)
        )
        self.result.answer_status = response.status_code
        self.answer_xml = response.text
        self.note("answer", status=response.status_code)
        if response.status_code != 200:
            return None
        if not response.headers.get("content-type", "").startswith("application/xml"):
            self.violation(f"answer content-type {response.headers.get('content-type')}")
        try:
            root = ET.fromstring(response.text)
        except ET.ParseError:
            self.violation("answer is not XML")
            return None
        stream = root.find("Stream")
        if root.tag != "Response" or stream is None or not (stream.text or "").strip():
            self.note("no_stream", xml=response.text[:200])
            return None
        for attr, want in (
            ("bidirectional", "true"),
            ("keepCallAlive", "true"),
            ("contentType", "audio/x-mulaw;rate=8000"),
        ):
            if stream.get(attr) != want:
                self.violation(f"<Stream {attr}={stream.get(attr)!r}>, expected {want!r}")
        return (stream.text or "").strip()

    def start_message(self) -> str:
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "start": {
                    "callId": self.result.call_id,
                    "streamId": self.stream_id,
                    "accountId": "MA" + "X" * 18,
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                },
                "extra_headers": "",
            }
        )

    def parse(self, message: str | bytes) -> tuple[str, Any]:
        if isinstance(message, bytes):
            self.violation("binary message on a Plivo stream")
            return "other", None
        try:
            data = json.loads(message)
        except ValueError:
            self.violation("message is not JSON")
            return "other", None
        event = data.get("event")
        if event == "playAudio":
            media = data.get("media") or {}
            if media.get("contentType") != "audio/x-mulaw" or media.get("sampleRate") != 8000:
                self.violation(
                    f"playAudio format {media.get('contentType')}/{media.get('sampleRate')}"
                )
            payload = media.get("payload", "")
            if len(payload) > MAX_PAYLOAD_B64:
                self.violation(f"playAudio payload of {len(payload)} base64 bytes")
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                self.violation("playAudio payload is not base64")
                return "other", None
            if not audio or len(audio) % self.frame_bytes:
                self.violation(f"playAudio of {len(audio)} bytes: not whole 20 ms frames")
            return "audio", audio
        if event in ("checkpoint", "clearAudio") and data.get("streamId") != self.stream_id:
            self.violation(f"{event} for stream {data.get('streamId')!r}")
        if event == "checkpoint":
            return "mark", str(data.get("name"))
        if event == "clearAudio":
            return "clear", None
        if event == "sendDTMF":
            digits = data.get("dtmf")
            if not isinstance(digits, str) or not digits:
                self.violation(f"sendDTMF without digits: {data!r}"[:120])
                return "other", None
            return "tones", digits
        self.violation(f"unknown event {event!r} from the bridge")
        return "other", None

    def caller_frame(self) -> str:
        self._chunk += 1
        return json.dumps(
            {
                "event": "media",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "media": {
                    "track": "inbound",
                    "timestamp": str(int(time.time() * 1000)),
                    "chunk": self._chunk,
                    "payload": self._caller_payload(),
                },
            }
        )

    def _caller_payload(self) -> str:
        frame = self.voice_frame()
        return self._silence if frame is None else base64.b64encode(frame).decode("ascii")

    def digit_message(self, digit: str) -> str:
        return json.dumps(
            {
                "event": "dtmf",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "dtmf": {
                    "track": "inbound",
                    "digit": digit,
                    "timestamp": str(int(time.time() * 1000)),
                },
            }
        )

    def played_message(self, name: str) -> str:
        return json.dumps(
            {
                "event": "playedStream",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
                "name": name,
            }
        )

    def cleared_message(self) -> str:
        return json.dumps(
            {
                "event": "clearedAudio",
                "sequenceNumber": self._next_seq(),
                "streamId": self.stream_id,
            }
        )

    def stop_message(self) -> str:
        return json.dumps(
            {"event": "stop", "sequenceNumber": self._next_seq(), "streamId": self.stream_id}
        )

    async def after_end(self, http: httpx.AsyncClient) -> None:
        if self.result.stream_opened_at is None:
            return
        url = f"{self.base_url}{paths.PLIVO_HANGUP}"
        duration = str(int(time.monotonic() - self.result.started_at))
        cause = {"rest-hangup": "NORMAL_CLEARING", "caller-hangup": "NORMAL_CLEARING"}.get(
            self.result.ended_by, "NORMAL_CLEARING"
        )
        params = {
            "CallUUID": self.result.call_id,
            "From": self.script.caller,
            "To": self.script.callee,
            "CallStatus": "completed",
            "Duration": duration,
            "BillDuration": duration,
            "HangupCauseName": cause,
            "HangupSource": "Callee" if self.result.ended_by == "rest-hangup" else "Caller",
        }
        response = await http.post(
            url, data=params, headers=signed_headers("POST", url, params, self.auth_token)
        )
        self.note("hangup_callback", status=response.status_code)
