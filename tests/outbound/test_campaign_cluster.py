"""Campaigns joined by a real Redis (`TELEBRIDGE_REDIS_URL`): two runners, each with its own
cluster connection as two processes would have, together keep one `--rate` of call creation;
with Redis away a campaign paces its calls alone after one warning."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from telebridge.calllog import CallLog
from telebridge.cluster import Cluster, Rate
from telebridge.outbound.campaign import CampaignRunner, run_paced, start
from telebridge.outbound.campaign_plan import Plan
from telebridge.outbound.campaign_state import CampaignStore
from telebridge.outbound.placing import Dialer
from tests.outbound.campaign_fixtures import PlayedBridge, bridge, people, write_list
from tests.outbound.fixtures import FROM, plivo_api, plivo_settings
from tests.servers.redis import RedisServer, free_port, private_redis

__all__ = ["bridge", "plivo_api", "private_redis"]  # shared fixtures

RATE = 5.0  # calls a second, for the whole cluster


@pytest.fixture
def states(tmp_path: Path) -> Iterator[list[CampaignStore]]:
    made: list[CampaignStore] = []
    yield made
    for state in made:
        state.close()


def campaign(tmp_path: Path, name: str, rows: int, made: list[CampaignStore]) -> CampaignStore:
    folder = tmp_path / name
    folder.mkdir()
    plan = Plan(carrier="plivo", from_number=FROM, rate=RATE, concurrency=rows)
    state = start(write_list(folder / "list.csv", people(rows)), plan)
    made.append(state)
    return state


@pytest.fixture
async def clusters(private_redis: RedisServer) -> AsyncIterator[list[Cluster]]:
    joined = [await Cluster.connect(private_redis.url, process_id=name) for name in ("one", "two")]
    yield joined
    for cluster in joined:
        await cluster.close()


async def test_two_campaigns_on_two_connections_keep_one_rate_together(
    bridge: tuple[PlayedBridge, str],
    clusters: list[Cluster],
    tmp_path: Path,
    states: list[CampaignStore],
) -> None:
    played, url = bridge
    played.duration = 0.01
    settings = plivo_settings(url, tmp_path)
    with CallLog(settings.telebridge_db) as log:
        runners = [
            CampaignRunner(
                campaign(tmp_path, name, 5, states),
                Dialer(settings, "plivo", FROM),
                log,
                poll_interval=0.03,
                cluster_rate=Rate(cluster, "campaign:plivo", RATE),
            )
            for name, cluster in zip(("a", "b"), clusters, strict=True)
        ]
        await asyncio.wait_for(asyncio.gather(*(r.run() for r in runners)), 60)
    times = sorted(at for at, _, _ in played.creates)
    assert len(times) == 10
    # Each alone would make its 5 calls in 0.8 s, side by side; together they take 9 slots.
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert min(gaps) > 0.5 / RATE, gaps
    assert times[-1] - times[0] >= 9 / RATE * 0.9


async def test_with_redis_away_a_campaign_paces_its_calls_alone_after_one_warning(
    bridge: tuple[PlayedBridge, str],
    clusters: list[Cluster],
    private_redis: RedisServer,
    tmp_path: Path,
    states: list[CampaignStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    played, url = bridge
    played.duration = 0.01
    settings = plivo_settings(url, tmp_path)
    private_redis.stop()
    caplog.set_level(logging.WARNING, logger="telebridge.outbound.campaign")
    with CallLog(settings.telebridge_db) as log:
        runner = CampaignRunner(
            campaign(tmp_path, "a", 4, states),
            Dialer(settings, "plivo", FROM),
            log,
            poll_interval=0.03,
            cluster_rate=Rate(clusters[0], "campaign:plivo", RATE),
        )
        finished = await asyncio.wait_for(runner.run(), 60)
    assert finished["answered"] == 4, finished
    times = sorted(at for at, _, _ in played.creates)
    # The local pacing (1 / RATE apart when sent; at once without it): what the fake API saw
    # carries the jitter of each request's thread and connection on a loaded machine.
    assert min(b - a for a, b in itertools.pairwise(times)) > 0.3 / RATE
    warned = [r for r in caplog.records if "pacing calls on this process alone" in r.message]
    assert len(warned) == 1, [r.message for r in caplog.records]


async def test_run_paced_without_a_reachable_redis_warns_once_and_runs(
    bridge: tuple[PlayedBridge, str],
    tmp_path: Path,
    states: list[CampaignStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    played, url = bridge
    played.duration = 0.01
    nobody = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    settings = plivo_settings(url, tmp_path, telebridge_redis_url=nobody)
    caplog.set_level(logging.WARNING, logger="telebridge.outbound.campaign")
    with CallLog(settings.telebridge_db) as log:
        runner = CampaignRunner(
            campaign(tmp_path, "a", 2, states),
            Dialer(settings, "plivo", FROM),
            log,
            poll_interval=0.03,
        )
        finished = await asyncio.wait_for(run_paced(runner, settings), 60)
    assert finished["answered"] == 2, finished
    warned = [r.message for r in caplog.records if "alone" in r.message]
    assert len(warned) == 1 and "hunter2" not in warned[0], warned
