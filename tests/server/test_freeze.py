"""`telebridge serve` freezes its start-up heap out of the cyclic collector once started, so a
full collection (which pauses every call) walks only what the calls made; apps built by tests and
the simulator, which share their process, leave the collector alone."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from telebridge.server import Bridge, create_app
from telebridge.settings import Settings
from telebridge.simulator.serving import ServedApp

FLOWS = Path(__file__).resolve().parents[2] / "config" / "flows"


@pytest.fixture(autouse=True)
def thawed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.chdir(tmp_path)  # the call log file of each bridge goes here
    gc.unfreeze()
    yield
    gc.unfreeze()  # this test process goes on collecting everything


def bridge(*, freeze: bool) -> Bridge:
    values: dict[str, Any] = {"telebridge_flows_dir": FLOWS, "telebridge_flow": "demo"}
    made = Bridge.from_settings(Settings(**values))
    made.freeze_heap = freeze
    return made


async def test_a_serving_bridge_freezes_what_it_built_at_start() -> None:
    async with ServedApp(create_app(bridge(freeze=True))):
        assert gc.get_freeze_count() > 10_000  # modules, flows, clients, the call log


async def test_an_app_in_a_shared_process_freezes_nothing() -> None:
    async with ServedApp(create_app(bridge(freeze=False))):
        assert gc.get_freeze_count() == 0
