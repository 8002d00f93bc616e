"""Simulated Vonage: signed answer and event webhooks, and the WebSocket audio protocol.

Vonage's signed-webhook JWT (HS256 with the signature secret, `payload_hash` of the body) is made
here with PyJWT from Vonage's published rules, not with the code the bridge checks it with.
Audio from the bridge must be binary messages of exactly one 20 ms L16 frame.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import httpx
import jwt

from telebridge.carriers import paths
from telebridge.simulator.carrier import CallScript, SimulatedCall


def vonage_jwt(secret: str, body: bytes, *, iat: float | None = None) -> str:
    """A signed-webhook token as Vonage makes it for a request with `body`."""
    claims = {
        "iat": int(time.time() if iat is None else iat),
        "jti": str(uuid.uuid4()),
        "iss": "Vonage",
        "api_key": "abcd1234",
        "application_id": "aaaaaaaa-bbbb-cccc-dddd-0123456789ab",
        "payload_hash": hashlib.sha256(body).hexdigest(),
    }
    return str(jwt.encode(claims, secret, algorithm="HS256"))


class VonageCall(SimulatedCall):
    carrier = "vonage"

    def __init__(
        self,
        base_url: str,
        signature_secret: str | None,
        script: CallScript | None = None,
        *,
        rate: int = 16000,
        call_id: str | None = None,
        answer_query: str = "",
        method: str = "GET",
        region_url: str = "https://api-us-3.vonage.com",
    ) -> None:
        super().__init__(base_url, call_id or str(uuid.uuid4()), script or CallScript())
        self.secret = signature_secret
        self.rate = rate
        self.frame_bytes = rate // 50 * 2
        self.bytes_per_second = rate * 2
        self.playout.bytes_per_second = self.bytes_per_second
        self.playout.frame_bytes = self.frame_bytes
        self.answer_query = answer_query
        self.method = method
        # Where the bridge sends this call's REST requests; tests point it at a local fake.
        self.region_url = region_url
        self.conversation = "CON-" + str(uuid.uuid4())
        self.ncco: list[dict[str, Any]] = []
        self.headers: dict[str, Any] = {}
        self._silence = b"\x00" * self.frame_bytes

    def _auth(self, body: bytes) -> dict[str, str]:
        if self.secret is None:
            return {}
        return {"Authorization": f"Bearer {vonage_jwt(self.secret, body)}"}

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        fields = {
            "to": self.script.callee,
            "from": self.script.caller,
            "uuid": self.result.call_id,
            "conversation_uuid": self.conversation,
            "region_url": self.region_url,
        }
        query = self.answer_query
        if self.script.flow:
            query = f"flow={self.script.flow}" + (f"&{query}" if query else "")
        url = f"{self.base_url}{paths.VONAGE_ANSWER}"
        if self.method == "GET":
            params = {**dict(httpx.QueryParams(query)), **fields}
            response = await http.get(url, params=params, headers=self._auth(b""))
        else:
            body = json.dumps(fields).encode()
            target = url + (f"?{query}" if query else "")
            headers = {"Content-Type": "application/json", **self._auth(body)}
            response = await http.post(target, content=body, headers=headers)
        self.result.answer_status = response.status_code
        self.note("answer", status=response.status_code)
        if response.status_code != 200:
            return None
        try:
            self.ncco = response.json()
        except ValueError:
            self.violation("answer is not JSON")
            return None
        if not isinstance(self.ncco, list) or not self.ncco:
            self.violation("answer is not an NCCO array")
            return None
        last = self.ncco[-1]
        if last.get("action") != "connect":
            self.note("no_stream", ncco=self.ncco)
            return None
        endpoint = (last.get("endpoint") or [{}])[0]
        if endpoint.get("type") != "websocket":
            self.violation(f"connect endpoint type {endpoint.get('type')!r}")
            return None
        want = f"audio/l16;rate={self.rate}"
        if endpoint.get("content-type") != want:
            self.violation(f"content-type {endpoint.get('content-type')!r}, expected {want!r}")
        self.headers = dict(endpoint.get("headers") or {})
        if len(json.dumps(self.headers)) > 512:
            self.violation("endpoint headers over 512 bytes")
        return str(endpoint.get("uri", ""))

    def start_message(self) -> str:
        return json.dumps(
            {
                "event": "websocket:connected",
                "content-type": f"audio/l16;rate={self.rate}",
                **self.headers,
            }
        )

    def parse(self, message: str | bytes) -> tuple[str, Any]:
        if isinstance(message, bytes):
            if len(message) != self.frame_bytes:
                # Vonage drops the socket on this ("unexpected frame size").
                self.violation(f"binary message of {len(message)} bytes, not {self.frame_bytes}")
            return "audio", message
        try:
            data = json.loads(message)
        except ValueError:
            self.violation("text message is not JSON")
            return "other", None
        action = data.get("action")
        if action == "notify":
            payload = data.get("payload") or {}
            return "mark", str(payload.get("mark"))
        if action == "clear":
            return "clear", None
        self.violation(f"unknown text message {message[:80]!r}")
        return "other", None

    def caller_frame(self) -> bytes:
        frame = self.voice_frame()
        return self._silence if frame is None else frame

    def digit_message(self, digit: str) -> str:
        return json.dumps({"event": "websocket:dtmf", "digit": digit, "duration": 260})

    def played_message(self, name: str) -> str:
        return json.dumps({"event": "websocket:notify", "payload": {"mark": name}})

    def cleared_message(self) -> str:
        return json.dumps({"event": "websocket:cleared"})

    async def after_end(self, http: httpx.AsyncClient) -> None:
        if self.result.stream_opened_at is None:
            return
        event = {
            "status": "completed",
            "uuid": self.result.call_id,
            "conversation_uuid": self.conversation,
            "duration": str(int(time.monotonic() - self.result.started_at)),
            "to": self.script.callee,
            "from": self.script.caller,
            "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        }
        body = json.dumps(event).encode()
        response = await http.post(
            f"{self.base_url}{paths.VONAGE_EVENT}",
            content=body,
            headers={"Content-Type": "application/json", **self._auth(body)},
        )
        self.note("event_callback", status=response.status_code)
