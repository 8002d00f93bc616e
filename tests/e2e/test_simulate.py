"""`telebridge simulate`: one call through the real stack, told as a timeline and written as a WAV.

The command runs as users run it (a subprocess from the repository root, default flow `demo`);
the WAV's contents are checked in-process against what the simulated carrier received.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from array import array
from pathlib import Path
from typing import Any

import pytest

from telebridge.call.audio import mulaw_to_pcm
from telebridge.flows.wav import read_wav
from telebridge.settings import load_settings
from telebridge.simulator.carrier import CallScript
from telebridge.simulator.command import simulate, timeline, write_heard
from tests.e2e.conftest import FLOWS, l16_of, mulaw_of

REPO = Path(__file__).resolve().parents[2]
PREFIXES = ("WAVES_", "PLIVO_", "VONAGE_", "TELEBRIDGE_")
HOURS = "We are open from nine to five, Monday to Friday."
GOODBYE = "Thank you for calling. Goodbye."
MENU = "Press 1 for hours, or 2 to hear this again. This prompt is long enough to be cut off."


def rms(pcm: bytes) -> float:
    samples = array("h", pcm)
    return math.sqrt(sum(s * s for s in samples) / max(1, len(samples)))


def heard_pcm(carrier: str, text: str, rate: int) -> bytes:
    """What the WAV holds for a whole prompt: μ-law decoded for Plivo, L16 as is for Vonage."""
    return mulaw_to_pcm(mulaw_of(text)) if carrier == "plivo" else l16_of(text, rate)


def start_simulation(carrier: str, tmp_path: Path, env: dict[str, str]) -> subprocess.Popen[str]:
    command = ["simulate", "--carrier", carrier, "--digits", "1", "--json"]
    command += ["--out", str(tmp_path / f"{carrier}.wav")]
    return subprocess.Popen(
        [sys.executable, "-m", "telebridge", *command],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_simulate_prints_a_timeline_and_writes_what_the_caller_heard(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith(PREFIXES)}
    env["TELEBRIDGE_DB"] = str(tmp_path / "calls.db")  # not the repository's own call log
    # Both calls run at once: each plays in real time.
    runs = {carrier: start_simulation(carrier, tmp_path, env) for carrier in ("plivo", "vonage")}
    try:
        outputs = {carrier: run.communicate(timeout=90) for carrier, run in runs.items()}
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()
    for carrier, (out, err) in outputs.items():
        run = runs[carrier]
        assert run.returncode == 0, err
        items: list[dict[str, Any]] = [json.loads(line) for line in out.splitlines()]
        seen = [item["event"] for item in items]
        for event in ("prompt", "first_audio", "audio", "mark", "played", "hangup"):
            assert event in seen, (carrier, event, seen)
        # The key cut the menu off: the bridge barged in and the carrier was told to clear.
        assert seen.index("digit") < seen.index("barge_in") < seen.index("clear")
        prompts = [item["text"] for item in items if item["event"] == "prompt"]
        assert prompts[1:] == [HOURS, GOODBYE]
        times = [item["t"] for item in items if "t" in item]
        assert times == sorted(times)
        [summary] = [item for item in items if item.get("side") == "summary"]
        assert 0 < summary["ms"] < 2000

        pcm, rate = read_wav(tmp_path / f"{carrier}.wav")
        assert rate == (8000 if carrier == "plivo" else 16000)
        tail = heard_pcm(carrier, HOURS, rate) + heard_pcm(carrier, GOODBYE, rate)
        assert pcm.endswith(tail)
        # About 0.8 s of the menu (the key press), then the two prompts whole.
        menu_seconds = (len(pcm) - len(tail)) / 2 / rate
        assert 0.5 < menu_seconds < 1.5
        assert rms(pcm) > 500

    # Both calls are in the call log the command was given.
    listed = subprocess.run(
        [sys.executable, "-m", "telebridge", "calls", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    calls = [json.loads(line) for line in listed.stdout.splitlines()]
    assert sorted(c["carrier"] for c in calls) == ["plivo", "vonage"]
    for call in calls:
        assert (call["flow"], call["steps"], call["digits"], call["outcome"]) == (
            "demo",
            ["menu", "hours", "goodbye"],
            "1",
            "hangup",
        )


@pytest.mark.parametrize("carrier", ["plivo", "vonage"])
async def test_the_wav_is_the_audio_received_minus_what_was_cleared(
    carrier: str, tmp_path: Path
) -> None:
    settings = load_settings(
        None,
        waves_api_key=None,
        telebridge_flows_dir=FLOWS,
        telebridge_flow="menu",
        telebridge_db=tmp_path / "calls.db",
        vonage_audio_rate=16000,
    )
    script = CallScript(digits="1", press_after=0.5, flow="menu")
    result, events, rate = await simulate(settings, carrier, script, None)

    assert result.violations == []
    out = tmp_path / "heard.wav"
    seconds = write_heard(out, result, carrier, rate)
    pcm, wav_rate = read_wav(out)
    assert wav_rate == rate == (8000 if carrier == "plivo" else 16000)
    assert pcm == (mulaw_to_pcm(result.heard) if carrier == "plivo" else result.heard)
    assert seconds == len(pcm) / 2 / rate

    # The carrier received the whole menu up to the clear, but the caller heard only its start.
    def audio(text: str) -> bytes:
        return mulaw_of(text) if carrier == "plivo" else l16_of(text, rate)

    tail = audio("Nine to five.") + audio("Goodbye.")
    assert result.received.endswith(tail) and result.heard.endswith(tail)
    sent_menu = result.received[: -len(tail)]
    heard_menu = result.heard[: -len(tail)]
    assert audio(MENU).startswith(sent_menu) and sent_menu.startswith(heard_menu)
    assert len(heard_menu) < len(sent_menu)

    # The merged timeline: the bridge's events and the carrier's, in time order.
    items = timeline(result, events)
    seen = [item["event"] for item in items]
    assert seen.index("digit") < seen.index("barge_in") < seen.index("clear")
    assert [i["text"] for i in items if i["event"] == "prompt"] == [
        MENU,
        "Nine to five.",
        "Goodbye.",
    ]
