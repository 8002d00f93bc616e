"""A campaign and `telebridge call --wait` on a PostgreSQL call log that goes away for a while:
they wait for it and go on (the bridge's log buffers what it records meanwhile), instead of
failing mid-run."""

from __future__ import annotations

import asyncio
import logging
import threading
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from telebridge.cli.ops import _wait_for
from telebridge.outbound.campaign import CampaignRunner, start
from telebridge.outbound.campaign_plan import Plan
from telebridge.outbound.placing import UNKNOWN, Dialer
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from tests.outbound.campaign_fixtures import PlayedBridge, people, read_results, write_list
from tests.outbound.fixtures import FROM, clean_env, plivo_api, plivo_settings
from tests.servers.postgres import PostgresServer

__all__ = ["clean_env", "plivo_api"]  # shared fixtures


async def test_a_campaign_waits_out_a_lost_database(
    plivo_api: tuple[FakePlivoApi, str],
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake, url = plivo_api
    settings = plivo_settings(url, tmp_path, telebridge_db=pg_url)
    state = start(write_list(tmp_path / "list.csv", people(3)), Plan(
        carrier="plivo", from_number=FROM, rate=2.0, concurrency=1))  # fmt: skip
    with CallLog(pg_url) as bridge_log, CallLog(pg_url) as log:
        played = PlayedBridge(bridge_log)
        fake.on_create = played.on_create
        runner = CampaignRunner(state, Dialer(settings, "plivo", FROM), log, poll_interval=0.05)
        with caplog.at_level(logging.WARNING, logger="telebridge.outbound.campaign"):
            running = asyncio.create_task(runner.run())
            while not played.creates:
                await asyncio.sleep(0.02)
            await asyncio.to_thread(postgres_server.stop)
            await asyncio.sleep(1.5)  # polls fail meanwhile: the campaign must not
            assert not running.done()
            await asyncio.to_thread(postgres_server.start)
            await asyncio.wait_for(running, 60)
    assert "waiting for it" in caplog.text
    results = Path(state.plan.results)
    state.write_results(results)
    assert [r["outcome"] for r in read_results(results)] == ["answered"] * 3
    state.close()


def test_call_wait_says_when_the_database_could_not_be_read(
    pg_url: str,
    postgres_server: PostgresServer,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    settings = plivo_settings("http://127.0.0.1:9", tmp_path, telebridge_db=pg_url)
    away = threading.Timer(0.5, postgres_server.stop)  # after the first look, before the next
    away.start()
    try:
        verdict = _wait_for(settings, "plivo", "attempt-1", "request-1", 3.0)
    finally:
        away.join()
        postgres_server.start()
    assert verdict.outcome == UNKNOWN and verdict.detail.startswith("could not read it: ")
    err = capsys.readouterr().err
    assert err.count("waiting for it") == 1 and "Traceback" not in err
