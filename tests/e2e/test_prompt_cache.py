"""The prompt cache's folder across a restart: fixed prompts play byte-exact while Waves is down."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from telebridge.simulator.bridge import LocalBridge
from telebridge.tts.standin import StandinServer
from tests.cli.test_main import REPO, clean_env, one_line_error, telebridge
from tests.e2e.conftest import FLOWS, mulaw_of

GREETING = "Hello from the test line."


def _settings(tmp_path: Path, standin: StandinServer, **overrides: Any) -> dict[str, Any]:
    # Each bridge opens its own Waves client, as a restarted server does: nothing carries over
    # in memory, and no socket opened before the outage slips past the refusal.
    return {
        "waves_api_key": standin.api_key,
        "waves_url": standin.url,
        "telebridge_flows_dir": FLOWS,
        "telebridge_flow": "greet",  # the greeting is the call's only prompt
        "telebridge_db": tmp_path / "calls.db",
        "telebridge_mark_timeout": 2.0,
        **overrides,
    }


async def test_a_restarted_bridge_plays_the_greeting_from_disk_while_waves_refuses(
    tmp_path: Path, standin: StandinServer
) -> None:
    folder = tmp_path / "prompts"  # created at start
    settings = _settings(tmp_path, standin, telebridge_cache_dir=folder)
    async with LocalBridge(**settings) as lb:
        first = await lb.run(lb.plivo_call())
    assert first.heard == mulaw_of(GREETING)
    assert len(list(folder.iterdir())) == 1  # written by shutdown at the latest

    standin.faults.refuse_status = 401
    asked = len(standin.requests)
    async with LocalBridge(**settings) as lb:
        result = await lb.run(lb.plivo_call())
        metrics = (await lb.http.get(f"{lb.url}/metrics")).text
    assert result.violations == []
    assert result.heard == mulaw_of(GREETING)
    assert result.ended_by == "rest-hangup"
    assert len(standin.requests) == asked  # Waves was not asked
    assert "telebridge_prompt_cache_disk_hits 1.0" in metrics


async def test_without_the_folder_the_same_restart_cannot_play(
    tmp_path: Path, standin: StandinServer
) -> None:
    # The control for the test above: it is the folder that makes the difference.
    settings = _settings(tmp_path, standin)
    async with LocalBridge(**settings) as lb:
        assert (await lb.run(lb.plivo_call())).heard == mulaw_of(GREETING)
    standin.faults.refuse_status = 401
    async with LocalBridge(**settings) as lb:
        result = await lb.run(lb.plivo_call())
    assert result.heard == b"" and result.ended_by == "transferred"


def test_serve_refuses_a_folder_it_cannot_create_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("not a folder")
    env = clean_env(
        TELEBRIDGE_PUBLIC_URL="https://bridge.example.com",
        TELEBRIDGE_FLOWS_DIR=str(REPO / "config" / "flows"),
        TELEBRIDGE_DB=str(tmp_path / "calls.db"),
        TELEBRIDGE_CACHE_DIR=str(tmp_path / "file" / "prompts"),
        TELEBRIDGE_PORT="1",  # never bound: the server must not get that far
    )
    line = one_line_error(telebridge("serve", cwd=tmp_path, env=env, timeout=20))
    assert line.startswith("telebridge: TELEBRIDGE_CACHE_DIR: cannot use ")
    assert "file/prompts" in line
