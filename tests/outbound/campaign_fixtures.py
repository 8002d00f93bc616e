"""Shared test fixtures of campaigns: lists written as CSV, the results read back, and the test
playing the serving bridge in the call log for each call the fake Plivo REST API creates."""

from __future__ import annotations

import asyncio
import csv
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from telebridge.calllog import CallLog, CallRecorder
from telebridge.simulator.fake_plivo_api import FakePlivoApi, RecordedRequest
from telebridge.tokens import Keys
from tests.outbound.fixtures import FROM, signed_vars

CAUSES = {"busy": "Busy Line", "no-answer": "No Answer", "failed": "Invalid Destination Address"}


def number(i: int) -> str:
    return f"+1415555{i:04d}"


@dataclass
class PlayedBridge:
    """Plays the serving bridge: writes each created call's fate into the call log.

    `script` gives, per number, the fate of each attempt in turn ("answered", "busy",
    "no-answer", "failed", or "silent": nothing is ever recorded); the default is answered.
    """

    log: CallLog
    script: dict[str, list[str]] = field(default_factory=dict)
    duration: float = 0.15
    creates: list[tuple[float, str, str]] = field(default_factory=list)  # (at, to, attempt)
    live: int = 0
    max_live: int = 0
    keys: Keys | None = None  # the serving bridge's; None: those of TELEBRIDGE_SECRET=SECRET

    def created(self, to: str) -> int:
        return sum(1 for _, n, _ in self.creates if n == to)

    async def on_create(self, request: RecordedRequest, request_uuid: str) -> None:
        to = "+" + request.body["to"]
        variables = signed_vars(request.body["answer_url"], self.keys)
        assert signed_vars(request.body["hangup_url"], self.keys) == variables
        self.creates.append((request.at, to, variables["attempt"]))
        fates = self.script.get(to, [])
        n = self.created(to)
        fate = fates[n - 1] if n <= len(fates) else "answered"
        self.live += 1
        self.max_live = max(self.max_live, self.live)
        call_id = str(uuid.uuid4())  # Plivo's CallUUID: never the request_uuid
        try:
            if fate == "answered":
                recorder = self.log.start_call(
                    carrier="plivo", call_id=call_id, direction="outbound",
                    from_number=FROM, to_number=to, flow="remind", variables=variables,
                )  # fmt: skip
                await asyncio.sleep(self.duration)
                recorder.step_entered("remind")
                recorder.digits_collected("remind", "1")
                recorder.finish("completed")
            elif fate != "silent":
                await asyncio.sleep(self.duration)
                # What the bridge's /plivo/hangup records for a call that never streamed.
                CallRecorder(self.log, "plivo", call_id).vars_set(variables)
                self.log.record_hangup("plivo", call_id, CAUSES[fate], 0)
        finally:
            self.live -= 1


@pytest.fixture
async def bridge(
    plivo_api: tuple[FakePlivoApi, str], tmp_path: Path
) -> AsyncIterator[tuple[PlayedBridge, str]]:
    fake, url = plivo_api
    with CallLog(tmp_path / "calls.db") as log:
        played = PlayedBridge(log)
        fake.on_create = played.on_create
        yield played, url


def write_list(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def people(n: int) -> list[dict[str, str]]:
    return [{"to": number(i), "name": f"Person {i}", "time": f"{i} pm"} for i in range(1, n + 1)]


def read_results(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))
