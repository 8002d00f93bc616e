"""`telebridge simulate`: one simulated call through the real server stack, told as a timeline.

The bridge runs in this process on a loopback port (or is a running server given by `--url`);
the simulated carrier calls its answer webhook, opens the media stream and plays what it gets in
real time. The timeline merges what the caller saw with what the bridge did.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from telebridge.call.audio import mulaw_to_pcm
from telebridge.settings import Settings
from telebridge.simulator.bridge import LocalBridge
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.recording import write_wav


class SimulationError(Exception):
    """The simulated call could not be placed."""


def make_call(carrier: str, base_url: str, settings: Settings, script: CallScript) -> SimulatedCall:
    if carrier == "plivo":
        from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN
        from telebridge.simulator.plivo import PlivoCall

        token = SIM_PLIVO_AUTH_TOKEN
        if settings.plivo_auth_token is not None:
            token = settings.plivo_auth_token.get_secret_value()
        return PlivoCall(base_url, token, script)
    from telebridge.simulator.vonage import VonageCall

    secret = settings.vonage_signature_secret
    return VonageCall(
        base_url,
        secret.get_secret_value() if secret else None,
        script,
        rate=settings.vonage_audio_rate,
    )


async def simulate(
    settings: Settings, carrier: str, script: CallScript, url: str | None
) -> tuple[SimResult, list[dict[str, Any]], int]:
    """Run one call; returns the carrier's result, the bridge's events and the audio rate."""
    bridge_events: list[dict[str, Any]] = []

    def observe(call_id: str, kind: str, fields: dict[str, Any]) -> None:
        bridge_events.append({"at": time.monotonic(), "event": kind, **fields})

    if url is not None:
        call = make_call(carrier, url, settings, script)
        result = await call.run()
        return result, bridge_events, call.bytes_per_second // _bytes_per_sample(carrier)
    async with LocalBridge(settings=settings, observer=observe) as local:
        call = make_call(carrier, local.url, local.settings, script)
        result = await local.run(call)
        # Let the bridge finish its side of the call (hangup bookkeeping) before it stops.
        for _ in range(100):
            if local.bridge is None or not local.bridge.calls:
                break
            await asyncio.sleep(0.02)
    return result, bridge_events, call.bytes_per_second // _bytes_per_sample(carrier)


def _bytes_per_sample(carrier: str) -> int:
    return 1 if carrier == "plivo" else 2


def timeline(result: SimResult, bridge_events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Caller-side and bridge-side events in time order, `t` in seconds from the call's start."""
    t0 = result.started_at
    stream_at = result.stream_opened_at
    merged: list[dict[str, Any]] = []
    for entry in result.timeline:
        merged.append({"side": "carrier", **entry})
    for entry in bridge_events:
        if entry["event"] in ("prompt", "first_audio", "barge_in", "hangup", "transfer", "ended"):
            merged.append({"side": "bridge", **entry})
    merged.sort(key=lambda e: e["at"])
    out = []
    for entry in merged:
        item = {k: v for k, v in entry.items() if k != "at"}
        item["t"] = round(entry["at"] - t0, 3)
        out.append(item)
    if stream_at is not None and result.first_audio_at is not None:
        out.append(
            {
                "side": "summary",
                "event": "time_to_first_audio",
                "ms": round((result.first_audio_at - stream_at) * 1000, 1),
            }
        )
    return out


def describe(item: dict[str, Any]) -> str:
    event = item["event"]
    detail = {k: v for k, v in item.items() if k not in ("t", "event", "side")}
    if event == "prompt":
        return f'prompt        "{detail.get("text", "")}"'
    if event == "first_audio":
        return f"first audio   bridge added {detail.get('added_ms')} ms after Waves' first chunk"
    if event == "audio":
        return f"audio         arriving (carrier queue {detail.get('lead')} s)"
    if event == "digit":
        return f"key           {detail.get('digit')}"
    if event == "barge_in":
        return "barge-in      prompt cut off"
    if event == "clear":
        return f"clear         {detail.get('dropped')} s of queued audio dropped"
    if event == "mark":
        return f"mark          {detail.get('name')} (queue {detail.get('lead')} s)"
    if event == "played":
        return f"played        {detail.get('name')}"
    if event == "time_to_first_audio":
        return f"first audio reached the carrier {detail['ms']} ms after the stream opened"
    rest = " ".join(f"{k}={v}" for k, v in detail.items())
    return f"{event:<13} {rest}".rstrip()


def write_heard(path: Path, result: SimResult, carrier: str, rate: int) -> float:
    pcm = mulaw_to_pcm(result.heard) if carrier == "plivo" else result.heard
    write_wav(path, pcm, rate)
    return len(pcm) / 2 / rate


def run(
    settings: Settings,
    *,
    carrier: str,
    flow: str | None,
    digits: str,
    out: Path | None,
    as_json: bool,
    url: str | None,
) -> int:
    script = CallScript(digits=digits, flow=flow)
    if settings.uses_standin and url is None and not as_json:
        print("No WAVES_API_KEY: speaking with the embedded offline synthesizer (espeak-ng).")
    result, events, rate = asyncio.run(simulate(settings, carrier, script, url))
    items = timeline(result, events)
    for item in items:
        if as_json:
            print(json.dumps(item))
        else:
            print(f"{item['t']:8.3f}s  {describe(item)}" if "t" in item else describe(item))
    if out is not None and result.heard:
        seconds = write_heard(out, result, carrier, rate)
        if not as_json:
            print(f"wrote {out} ({seconds:.2f} s heard by the caller, {rate} Hz)")
    if result.violations:
        for violation in result.violations:
            print(f"protocol violation: {violation}", file=sys.stderr)
        return 1
    if result.ended_by == "refused":
        print(
            f"the bridge refused the call (answer status {result.answer_status})", file=sys.stderr
        )
        return 1
    return 0
