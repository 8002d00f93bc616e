"""A load-generator process: many simulated carrier calls against the bridge, measured.

Run by `bench.harness` as `python -m bench.loadgen`. It reads its job (one JSON line) from
stdin, prints `ready`, waits for the `go` line that carries the common start time, runs its
call slots and prints its figures as one JSON line. Each slot places calls one after another
(`PlivoCall` / `VonageCall` from the simulator, caller audio at 50 frames a second) until the
run's deadline, so the number of calls in progress stays at the number of slots (or, with the
job's `redial` off, one call per slot, ended by the bridge or at the deadline).

Lateness is measured on the carrier side by `MeteredPlayout`: the carrier's playback queue runs
dry at `queue_end`; an audio message that continues a prompt and arrives after that moment is
late by the difference, and the caller heard a gap (an underrun). See bench/README.md.

Against several bridge processes (`Job.urls`) calls are spread as a round-robin load balancer
would, the answer webhook and the stream independently: call i's webhook goes to process
i mod N and its stream to process (i + 1) mod N, which takes the token another process minted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

from bench.common import raise_fd_limit
from telebridge.flows.fetch import KEEPALIVE_S
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_TOKEN, SIM_VONAGE_SECRET
from telebridge.simulator.carrier import CallScript, SimResult, SimulatedCall
from telebridge.simulator.playout import Playout
from telebridge.simulator.plivo import PlivoCall
from telebridge.simulator.vonage import VonageCall

logger = logging.getLogger(__name__)

# Upper bounds, so no loop runs unbounded whatever the job says.
MAX_CALLS_PER_SLOT = 10_000
CALL_GRACE = 20.0  # seconds a call may outlive its planned hang-up before it is abandoned
LAG_TICK = 0.05  # the loop-lag probe's period


@dataclass
class WorkerStats:
    """Figures of one load generator; only events inside the window count."""

    window_start: float
    window_end: float
    messages: int = 0  # audio messages continuing a prompt
    late_ms: list[float] = field(default_factory=list)  # lateness of those that came late
    calls_with_underrun: int = 0
    audio_seconds: float = 0.0
    call_seconds: float = 0.0
    ttfa_ms: list[float] = field(default_factory=list)  # stream start -> first audio
    lag_ms: list[float] = field(default_factory=list)
    calls_started: int = 0
    calls_measured: int = 0
    no_audio: int = 0
    violations: int = 0
    violation_examples: list[str] = field(default_factory=list)
    ended_by: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    active_mid: int = 0
    max_lead: float = 0.0
    cpu_seconds: float | None = None  # this process's user + system CPU inside the window
    # (call id, arrival) of each prompt's first audio from the window's start on, when the job
    # asks for them (`Job.prompt_starts`).
    prompt_starts: list[tuple[str, float]] = field(default_factory=list)

    def inside(self, t: float) -> bool:
        return self.window_start <= t <= self.window_end

    def as_json(self) -> dict[str, Any]:
        return {
            "messages": self.messages,
            "late_ms": [round(v, 3) for v in self.late_ms],
            "calls_with_underrun": self.calls_with_underrun,
            "audio_seconds": self.audio_seconds,
            "call_seconds": self.call_seconds,
            "ttfa_ms": [round(v, 3) for v in self.ttfa_ms],
            "lag_ms": [round(v, 3) for v in self.lag_ms],
            "calls_started": self.calls_started,
            "calls_measured": self.calls_measured,
            "no_audio": self.no_audio,
            "violations": self.violations,
            "violation_examples": self.violation_examples,
            "ended_by": dict(self.ended_by),
            "errors": dict(self.errors),
            "active_mid": self.active_mid,
            "max_lead": self.max_lead,
            "cpu_seconds": self.cpu_seconds,
            "prompt_starts": self.prompt_starts,
        }

    def merge(self, data: dict[str, Any]) -> None:
        """Add the figures of another load generator (its `as_json()`)."""
        self.messages += int(data["messages"])
        self.late_ms += [float(v) for v in data["late_ms"]]
        self.calls_with_underrun += int(data["calls_with_underrun"])
        self.audio_seconds += float(data["audio_seconds"])
        self.call_seconds += float(data["call_seconds"])
        self.ttfa_ms += [float(v) for v in data["ttfa_ms"]]
        self.lag_ms += [float(v) for v in data["lag_ms"]]
        self.calls_started += int(data["calls_started"])
        self.calls_measured += int(data["calls_measured"])
        self.no_audio += int(data["no_audio"])
        self.violations += int(data["violations"])
        self.violation_examples += list(data["violation_examples"])[:5]
        self.ended_by.update(data["ended_by"])
        self.errors.update(data["errors"])
        self.active_mid += int(data["active_mid"])
        self.max_lead = max(self.max_lead, float(data["max_lead"]))
        self.prompt_starts += [(str(c), float(t)) for c, t in data.get("prompt_starts", [])]


class MeteredPlayout(Playout):
    """The carrier's playback queue, timed like `Playout` but keeping no audio, and metered.

    A prompt starts with the first audio after a mark or a clear; every later message of the
    prompt is needed by the time the queue runs dry (`queue_end` before it is added).
    """

    def __init__(
        self,
        bytes_per_second: int,
        frame_bytes: int,
        stats: WorkerStats,
        call_id: str | None = None,  # given: prompt starts are recorded under it
    ) -> None:
        super().__init__(bytes_per_second, frame_bytes)
        self.stats = stats
        self.call_id = call_id
        self.in_prompt = False
        self.underran = False

    def enqueue(self, now: float, data: bytes) -> float:
        stats = self.stats
        if not self.in_prompt and self.call_id is not None and now >= stats.window_start:
            stats.prompt_starts.append((self.call_id, now))
        if stats.inside(now):
            seconds = len(data) / self.bytes_per_second
            stats.audio_seconds += seconds
            if self.in_prompt:
                stats.messages += 1
                late = now - self.queue_end
                if late > 0:
                    stats.late_ms.append(late * 1000)
                    if not self.underran:
                        self.underran = True
                        stats.calls_with_underrun += 1
        self.in_prompt = True
        start = max(self.queue_end, now)
        self.queue_end = start + len(data) / self.bytes_per_second
        self.max_lead = max(self.max_lead, self.queue_end - now)
        return start

    def mark_time(self, now: float) -> float:
        self.in_prompt = False
        return max(self.queue_end, now)

    def clear(self, now: float) -> float:
        self.in_prompt = False
        dropped = self.lead(now)
        self.queue_end = now
        return dropped

    def heard(self, until: float | None = None) -> bytes:
        return b""  # nothing kept: hours of audio from hundreds of calls would not fit


@dataclass(frozen=True)
class Job:
    carrier: str
    base_url: str
    flow: str
    slots: list[float]  # start offsets of each slot, seconds after the start time
    call_seconds: float  # the caller hangs up this long after the stream opens
    run_seconds: float  # no call runs past start + run_seconds
    window: tuple[float, float]  # offsets of the measurement window
    caller_audio: bool = True
    vonage_rate: int = 16000
    redial: bool = True  # False: each slot places one call only
    prompt_starts: bool = False  # record each prompt's first audio (WorkerStats.prompt_starts)
    # Several bridge processes (empty: `base_url` alone); calls are numbered over all the load
    # generators' slots: slot `slot_ids[k]` places calls slot_id, slot_id + total_slots, ...
    urls: list[str] = field(default_factory=list)
    slot_ids: list[int] = field(default_factory=list)
    total_slots: int = 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        return cls(
            carrier=str(data["carrier"]),
            base_url=str(data["base_url"]),
            flow=str(data["flow"]),
            slots=[float(x) for x in data["slots"]],
            call_seconds=float(data["call_seconds"]),
            run_seconds=float(data["run_seconds"]),
            window=(float(data["window"][0]), float(data["window"][1])),
            caller_audio=bool(data.get("caller_audio", True)),
            vonage_rate=int(data.get("vonage_rate", 16000)),
            redial=bool(data.get("redial", True)),
            prompt_starts=bool(data.get("prompt_starts", False)),
            urls=[str(u) for u in data.get("urls", [])],
            slot_ids=[int(i) for i in data.get("slot_ids", [])],
            total_slots=int(data.get("total_slots", 0)),
        )

    def targets(self, index: int) -> tuple[str, str]:
        """(answer webhook, stream) base URLs of call number `index`."""
        urls = self.urls or [self.base_url]
        return urls[index % len(urls)], urls[(index + 1) % len(urls)]


def restream(url: str | None, base_url: str) -> str | None:
    """The stream URL of an answer, sent to the process at `base_url` instead."""
    if url is None:
        return None
    return urlunsplit(urlsplit(url)._replace(netloc=urlsplit(base_url).netloc))


class SpreadPlivoCall(PlivoCall):
    """A Plivo call whose stream opens on `stream_to` (None: where the answer said)."""

    stream_to: str | None = None

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        url = await super().answer(http)
        return url if self.stream_to is None else restream(url, self.stream_to)


class SpreadVonageCall(VonageCall):
    """A Vonage call whose stream opens on `stream_to` (None: where the answer said)."""

    stream_to: str | None = None

    async def answer(self, http: httpx.AsyncClient) -> str | None:
        url = await super().answer(http)
        return url if self.stream_to is None else restream(url, self.stream_to)


def make_call(job: Job, script: CallScript, stats: WorkerStats, index: int = 0) -> SimulatedCall:
    """Call number `index` of the job's carrier, its playback queue metered into `stats`."""
    answer_to, stream_to = job.targets(index)
    call: SpreadPlivoCall | SpreadVonageCall
    if job.carrier == "plivo":
        call = SpreadPlivoCall(answer_to, SIM_PLIVO_AUTH_TOKEN, script)
    elif job.carrier == "vonage":
        call = SpreadVonageCall(answer_to, SIM_VONAGE_SECRET, script, rate=job.vonage_rate)
    else:
        raise ValueError(f"unknown carrier {job.carrier!r}")
    if stream_to != answer_to:
        call.stream_to = stream_to
    call_id = call.result.call_id if job.prompt_starts else None
    call.playout = MeteredPlayout(call.bytes_per_second, call.frame_bytes, stats, call_id)
    return call


def record(stats: WorkerStats, result: SimResult, closed_at: float) -> None:
    opened = result.stream_opened_at
    stats.ended_by[result.ended_by or "unknown"] += 1
    for text in result.violations:
        stats.violations += 1
        if len(stats.violation_examples) < 5:
            stats.violation_examples.append(text[:200])
    if opened is None:
        return
    overlap = min(closed_at, stats.window_end) - max(opened, stats.window_start)
    stats.call_seconds += max(0.0, overlap)
    if stats.inside(opened):
        stats.calls_measured += 1
        if result.first_audio_at is None:
            stats.no_audio += 1
        else:
            stats.ttfa_ms.append((result.first_audio_at - opened) * 1000)
    stats.max_lead = max(stats.max_lead, result.max_lead)


class Worker:
    def __init__(self, job: Job, start_at: float) -> None:
        self.job = job
        self.start_at = start_at
        self.deadline = start_at + job.run_seconds
        self.stats = WorkerStats(start_at + job.window[0], start_at + job.window[1])
        self.live: set[SimulatedCall] = set()

    async def run(self) -> WorkerStats:
        # keepalive_expiry below uvicorn's 5 s keep-alive timeout (see flows/fetch.py).
        limits = httpx.Limits(
            max_connections=4096, max_keepalive_connections=256, keepalive_expiry=KEEPALIVE_S
        )
        async with httpx.AsyncClient(timeout=15, limits=limits) as http:
            probes = [
                asyncio.create_task(self._lag_probe()),
                asyncio.create_task(self._mid()),
                asyncio.create_task(self._cpu()),
            ]
            try:
                async with asyncio.TaskGroup() as group:
                    ids = self.job.slot_ids or range(len(self.job.slots))
                    for offset, slot_id in zip(self.job.slots, ids, strict=True):
                        group.create_task(self._slot(http, offset, slot_id))
            finally:
                for probe in probes:
                    probe.cancel()
                await asyncio.gather(*probes, return_exceptions=True)
        return self.stats

    async def _slot(self, http: httpx.AsyncClient, offset: float, slot_id: int) -> None:
        await asyncio.sleep(max(0.0, self.start_at + offset - time.monotonic()))
        every = self.job.total_slots or len(self.job.slots)
        for n in range(MAX_CALLS_PER_SLOT if self.job.redial else 1):
            remaining = self.deadline - time.monotonic()
            if remaining < 0.5:
                return
            hang_up = min(self.job.call_seconds, remaining)
            script = CallScript(
                flow=self.job.flow, caller_audio=self.job.caller_audio, hangup_after=hang_up
            )
            call = make_call(self.job, script, self.stats, slot_id + n * every)
            self.stats.calls_started += 1
            self.live.add(call)
            try:
                async with asyncio.timeout(hang_up + CALL_GRACE):
                    result = await call.run(http)
            except Exception as exc:  # one failed call must not stop the run; count it
                self.stats.errors[type(exc).__name__] += 1
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(2):
                        await call.end("abandoned")
                await asyncio.sleep(0.2)
                continue
            finally:
                self.live.discard(call)
            record(self.stats, result, time.monotonic())
            if result.ended_by == "refused":
                await asyncio.sleep(0.2)  # no hot loop against a bridge that refuses

    async def _lag_probe(self) -> None:
        """How late this loop wakes up: if it lags, its arrival times are late too."""
        while time.monotonic() < self.deadline:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK)
            after = time.monotonic()
            if self.stats.inside(after):
                self.stats.lag_ms.append(max(0.0, after - before - LAG_TICK) * 1000)

    async def _cpu(self) -> None:
        """Own CPU over the window (getrusage via process_time): this process may be gone
        before the harness could read /proc at the window's end."""
        await asyncio.sleep(max(0.0, self.stats.window_start - time.monotonic()))
        before = time.process_time()
        await asyncio.sleep(max(0.0, self.stats.window_end - time.monotonic()))
        self.stats.cpu_seconds = time.process_time() - before

    async def _mid(self) -> None:
        middle = (self.stats.window_start + self.stats.window_end) / 2
        await asyncio.sleep(max(0.0, middle - time.monotonic()))
        self.stats.active_mid = sum(
            1 for c in self.live if c.result.stream_opened_at is not None and not c.result.ended_by
        )


def main() -> int:
    if sys.argv[1:]:
        print(__doc__)
        return 0 if sys.argv[1] in ("-h", "--help") else 2
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    raise_fd_limit()
    line = sys.stdin.readline()
    if not line.strip():
        message = "bench.loadgen: expects its job as a JSON line on stdin (bench.harness runs it)"
        print(message, file=sys.stderr)
        return 2
    job = Job.from_json(json.loads(line))
    print("ready", flush=True)
    go = json.loads(sys.stdin.readline())
    stats = asyncio.run(Worker(job, float(go["start_at"])).run())
    print(json.dumps(stats.as_json()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
