"""Agent: how much the bridge adds to the first audio of an application's streamed utterance.

`python -m bench.agent --carrier plivo --calls 1,50 --seconds 15 [--repeat N] [--json]`

At each concurrency N, N calls start over the ramp and stay up for the whole run. Their flow
(`bench/flows/agent.yaml`) is one agent step whose WebSocket goes to a fake agent in a process of
its own (`python -m bench.agent serve-agent`, started by the benchmark). On every call the agent
speaks one utterance after another: the first piece ends a sentence ("Hello there. ", which the
bridge flushes to Waves at once), a few more words follow `--piece-gap` apart, the last with
`last: true`; it waits for `played`, pauses about `--pause` seconds, and repeats until the window
ends, then sends `hangup`.

Each utterance whose first piece was sent inside the window is timed across the processes
(time.monotonic() is CLOCK_MONOTONIC, one clock for every process on the machine):

- total: the agent sent the first piece -> the simulated carrier received the utterance's first
  audio message;
- waves: the Waves stand-in's own part, its first segment's text (the flush) arrived -> its first
  chunk left (the stand-in's timing log, `bench.server --timing-log`);
- added: total - waves, what the bridge adds (its work, and the loopback hops between the four
  processes).

The bridge's own view, `bridge-side`, is its observer events joined per utterance: agent_text_sent
`held_ms` (first piece received -> first text sent to Waves) + first_audio `added_ms` (first Waves
chunk -> first carrier frame sent). A second table splits `added` into its hops with the
bridge's event times (bench/README.md says which is which), a third gives calls held, utterances
lost, bridge CPU per call-second and each process's CPU. p50 / p90 / p99 are nearest-rank,
medians over the repeats.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import logging
import math
import os
import random
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.child import Child
from bench.common import (
    FLOWS_DIR,
    BenchError,
    add_common_args,
    check_common_args,
    emit,
    fmt,
    int_list,
    machine_info,
    median_of,
    pct,
    percentile,
    settings_of,
    table,
)
from bench.harness import START_TIMEOUT, BenchEnv, LoadResult, LoadSpec
from bench.steps import LOADGEN_CPU_LIMIT, LOADGEN_LAG_LIMIT_MS, run_notes

logger = logging.getLogger(__name__)

FLOW = "agent"
# One utterance, as a language model would stream it; the first piece ends a sentence.
PIECES = ("Hello there. ", "How can I ", "help you ", "today?")
# The run goes on this long after the window: the last utterance plays, then the agent's hangup.
TAIL = 6.0
PLAYED_TIMEOUT = 15.0  # seconds an utterance may take to be reported played
END_TIMEOUT = 10.0  # seconds the bridge may take to end a call after the agent's hangup
LAG_TICK = 0.05
MAX_UTTERANCES = 1_000_000  # records kept by the agent between two collections (bounded memory)
TARGET_ADDED_P50_MS = 2.0  # the project's target, at TARGET_CALLS agent calls
TARGET_CALLS = 50


# --- the fake agent (its own process) --------------------------------------------------------


@dataclass
class Utterance:
    """One utterance as the fake agent saw it: its call, its id, when its first piece was sent,
    and when `played` came back (None: never)."""

    call: str
    id: str
    sent: float
    played: float | None = None


class FakeAgent:
    """The application end of every call's agent step: speaks, waits for `played`, repeats."""

    def __init__(self, *, pause: float, piece_gap: float) -> None:
        self.pause = pause
        self.piece_gap = piece_gap
        self.stop_at = math.inf  # no new utterance starts after this (the window's end)
        self.utterances: list[Utterance] = []
        self.counts: Counter[str] = Counter()
        self.cpu_seconds: float | None = None
        self.lag_ms: list[float] = []
        self._probes: set[asyncio.Task[None]] = set()

    def begin_window(self, start: float, end: float) -> None:
        self.stop_at = end
        self.counts.clear()  # the warm-up call's are not the run's
        for probe in (self._cpu(start, end), self._lag(start, end)):
            task = asyncio.create_task(probe)
            self._probes.add(task)
            task.add_done_callback(self._probes.discard)

    def collect(self) -> dict[str, Any]:
        """Everything recorded since the last collection; then ready for the next run."""
        data = {
            "utterances": [[u.call, u.id, u.sent, u.played] for u in self.utterances],
            "counts": dict(self.counts),
            "cpu_seconds": self.cpu_seconds,
            "lag_ms": [round(v, 3) for v in self.lag_ms],
        }
        self.utterances, self.counts, self.cpu_seconds, self.lag_ms = [], Counter(), None, []
        self.stop_at = math.inf
        for probe in self._probes:
            probe.cancel()
        return data

    async def _cpu(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        before = time.process_time()
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        self.cpu_seconds = time.process_time() - before

    async def _lag(self, start: float, end: float) -> None:
        await asyncio.sleep(max(0.0, start - time.monotonic()))
        while time.monotonic() < end:
            before = time.monotonic()
            await asyncio.sleep(LAG_TICK)
            self.lag_ms.append(max(0.0, time.monotonic() - before - LAG_TICK) * 1000)

    async def converse(self, ws: ServerConnection) -> None:
        """One call's agent step."""
        self.counts["connections"] += 1
        loop = asyncio.get_running_loop()
        started: asyncio.Future[str] = loop.create_future()
        closed: asyncio.Future[None] = loop.create_future()
        waiting: dict[str, asyncio.Future[float]] = {}
        reader = asyncio.create_task(self._read(ws, started, closed, waiting))
        try:
            await _first(started, closed, timeout=START_TIMEOUT)
            if not started.done():
                self.counts["no_start"] += 1
                return
            await self._speak_until_done(ws, started.result(), closed, waiting)
        except ConnectionClosed:
            pass
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)

    async def _speak_until_done(
        self,
        ws: ServerConnection,
        call_id: str,
        closed: asyncio.Future[None],
        waiting: dict[str, asyncio.Future[float]],
    ) -> None:
        loop = asyncio.get_running_loop()
        rng = random.Random(call_id)  # pauses differ between calls, so utterances interleave
        number = 0
        while not closed.done() and time.monotonic() < self.stop_at:
            number += 1
            uid = f"u{number}"
            played: asyncio.Future[float] = loop.create_future()
            waiting[uid] = played
            utterance = await self._say(ws, call_id, uid, closed)
            if utterance is None:
                return
            await _first(played, closed, timeout=PLAYED_TIMEOUT)
            if played.done():
                utterance.played = played.result()
            elif not closed.done():
                self.counts["played_timeout"] += 1
            waiting.pop(uid, None)
            await asyncio.wait({closed}, timeout=self.pause * rng.uniform(0.5, 1.5))
        if not closed.done():
            await ws.send(json.dumps({"type": "hangup", "reason": "bench window over"}))
            self.counts["hangups_sent"] += 1
            await asyncio.wait({closed}, timeout=END_TIMEOUT)
            if not closed.done():
                self.counts["hangup_not_ended"] += 1

    async def _say(
        self, ws: ServerConnection, call_id: str, uid: str, closed: asyncio.Future[None]
    ) -> Utterance | None:
        utterance: Utterance | None = None
        last = len(PIECES) - 1
        for i, text in enumerate(PIECES):
            message: dict[str, Any] = {"type": "text", "text": text, "id": uid}
            if i == last:
                message["last"] = True
            if i == 0:
                utterance = Utterance(call_id, uid, time.monotonic())
                if len(self.utterances) < MAX_UTTERANCES:
                    self.utterances.append(utterance)
            await ws.send(json.dumps(message))
            if i < last and self.piece_gap > 0:
                await asyncio.wait({closed}, timeout=self.piece_gap)
            if closed.done():
                return None
        return utterance

    async def _read(
        self,
        ws: ServerConnection,
        started: asyncio.Future[str],
        closed: asyncio.Future[None],
        waiting: dict[str, asyncio.Future[float]],
    ) -> None:
        try:
            async for raw in ws:
                if isinstance(raw, bytes):
                    continue  # caller audio: a real application would transcribe it
                message = json.loads(raw)
                kind = message.get("type")
                if kind == "played":
                    future = waiting.get(str(message.get("id")))
                    if future is not None and not future.done():
                        future.set_result(time.monotonic())
                elif kind == "start" and not started.done():
                    started.set_result(str(message.get("call_id", "")))
                elif kind in ("error", "interrupted"):
                    self.counts[kind] += 1
                    if kind == "error" and self.counts[kind] <= 5:
                        logger.warning("bridge error message: %s", message.get("message"))
                elif kind == "end":
                    self.counts[f"end:{message.get('reason')}"] += 1
        except ConnectionClosed:
            pass
        finally:
            if not closed.done():
                closed.set_result(None)


async def _first(*futures: asyncio.Future[Any], timeout: float) -> None:  # noqa: ASYNC109
    """Wait until one of `futures` is done, for at most `timeout` seconds."""
    await asyncio.wait(set(futures), timeout=timeout, return_when=asyncio.FIRST_COMPLETED)


async def serve_agent(pause: float, piece_gap: float) -> None:
    """The agent process: prints its URL, then obeys JSON lines on stdin until it closes.

    `{"window": [start, end]}`: measure over that window and start no utterance after its end;
    `{"collect": true}`: print what was recorded since the last collection (one JSON line).
    """
    agent = FakeAgent(pause=pause, piece_gap=piece_gap)
    loop = asyncio.get_running_loop()
    stdin = asyncio.StreamReader(limit=2**20)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    async with serve(
        agent.converse, "127.0.0.1", 0, compression=None, max_size=2**20, max_queue=256
    ) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        print(json.dumps({"pid": os.getpid(), "address": f"127.0.0.1:{port}"}), flush=True)
        while line := await stdin.readline():
            command = json.loads(line)
            if "window" in command:
                agent.begin_window(float(command["window"][0]), float(command["window"][1]))
            if command.get("collect"):
                print(json.dumps(agent.collect()), flush=True)


# --- joining the processes' timings ----------------------------------------------------------


@dataclass
class Segment:
    """The stand-in's timing of one segment it spoke."""

    text_in: float  # the segment's first frame arrived
    arrived: float  # its flush arrived (Waves can speak it)
    first_chunk: float
    fresh: bool  # the first segment on its socket (the bridge opened a new one to Waves)


@dataclass(frozen=True)
class BridgeTimes:
    """One utterance inside the bridge, from its observer events (bench.server's recorder)."""

    piece: float  # its first piece reached the agent step
    sent: float  # its first text went to Waves
    chunk: float  # Waves' first chunk was taken
    frame: float  # its first carrier frame was sent
    held_ms: float
    added_ms: float

    @classmethod
    def by_call(cls, entries: Sequence[Sequence[Any]]) -> dict[str, list[BridgeTimes]]:
        """/_bench/stats `agent` entries, by call id, in order."""
        calls: dict[str, list[BridgeTimes]] = {}
        for call, *times in entries:
            calls.setdefault(str(call), []).append(cls(*(float(t) for t in times)))
        for listed in calls.values():
            listed.sort(key=lambda b: b.piece)
        return calls


# Where the added time goes, in order: agent -> bridge, the bridge holding the text, bridge ->
# Waves (a socket, the text frame, the stand-in reading it), the flush frame after it, Waves ->
# bridge (the chunk read and decoded), the bridge sending the first frame, bridge -> carrier.
HOPS = ("in", "held", "to waves", "flush", "from waves", "out", "to carrier")


@dataclass
class Joined:
    """The utterances of one run whose first piece was sent inside the window."""

    sent: int = 0
    unplayed: int = 0  # `played` never came back
    no_audio: int = 0  # the carrier received none of its audio
    unmatched: int = 0  # no stand-in record for it
    added_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    waves_ms: list[float] = field(default_factory=list)
    bridge_side_ms: list[float] = field(default_factory=list)  # held_ms + added_ms events
    added_fresh_ms: list[float] = field(default_factory=list)  # first segment on a new socket
    added_pooled_ms: list[float] = field(default_factory=list)
    hops_ms: dict[str, list[float]] = field(default_factory=lambda: {h: [] for h in HOPS})


def _first_after(items: Sequence[Any], key: Sequence[float], t: float) -> Any | None:
    i = bisect.bisect_left(key, t)
    return items[i] if i < len(items) else None


def call_of(request_id: str) -> str:
    """The call id in the bridge's Waves request id (`<call id>-<utterance number>`)."""
    return request_id.rsplit("-", 1)[0]


def read_timing_log(path: Path, offset: int) -> tuple[dict[str, list[Segment]], int]:
    """The stand-in's records from `offset` on, by call id, in order; and the new offset."""
    segments: dict[str, list[Segment]] = {}
    with path.open("rb") as log:
        log.seek(offset)
        data = log.read()
    complete = data[: data.rfind(b"\n") + 1]  # a line being written is read next time
    for line in complete.splitlines():
        record = json.loads(line)
        rid = record.get("rid")
        if not isinstance(rid, str):
            continue
        segment = Segment(
            float(record.get("text_in", record["in"])),
            float(record["in"]),
            float(record["first"]),
            bool(record["fresh"]),
        )
        segments.setdefault(call_of(rid), []).append(segment)
    for listed in segments.values():
        listed.sort(key=lambda s: s.arrived)
    return segments, offset + len(complete)


def join(
    utterances: Sequence[Utterance],
    prompt_starts: Sequence[tuple[str, float]],
    segments: dict[str, list[Segment]],
    bridge: dict[str, list[BridgeTimes]],
    window: tuple[float, float],
) -> Joined:
    """Each utterance sent inside `window` with, on its call, the first audio the carrier
    received after it (before its `played`), the stand-in's first segment and the bridge's
    events that came after it.

    A call speaks one utterance at a time (the agent waits for `played`), so on one call the
    first of each after the send belongs to that utterance.
    """
    arrivals: dict[str, list[float]] = {}
    for call, at in prompt_starts:
        arrivals.setdefault(call, []).append(at)
    for listed in arrivals.values():
        listed.sort()
    joined = Joined()
    for u in utterances:
        if not window[0] <= u.sent <= window[1]:
            continue
        joined.sent += 1
        if u.played is None:
            joined.unplayed += 1
        times = arrivals.get(u.call, [])
        arrival: float | None = _first_after(times, times, u.sent)
        if arrival is None or (u.played is not None and arrival > u.played):
            joined.no_audio += 1
            continue
        on_call = segments.get(u.call, [])
        segment: Segment | None = _first_after(on_call, [s.arrived for s in on_call], u.sent)
        if segment is None or segment.arrived > arrival:
            joined.unmatched += 1
            continue
        total = (arrival - u.sent) * 1000
        waves = (segment.first_chunk - segment.arrived) * 1000
        joined.total_ms.append(total)
        joined.waves_ms.append(waves)
        joined.added_ms.append(total - waves)
        (joined.added_fresh_ms if segment.fresh else joined.added_pooled_ms).append(total - waves)
        events = bridge.get(u.call, [])
        inside: BridgeTimes | None = _first_after(events, [e.piece for e in events], u.sent)
        if inside is None or inside.frame > arrival:
            continue
        joined.bridge_side_ms.append(inside.held_ms + inside.added_ms)
        steps = (u.sent, inside.piece, inside.sent, segment.text_in, segment.arrived)
        steps_back = (segment.first_chunk, inside.chunk, inside.frame, arrival)
        gaps = [b - a for a, b in itertools.pairwise(steps)]
        gaps += [b - a for a, b in itertools.pairwise(steps_back)]
        for hop, gap in zip(HOPS, gaps, strict=True):
            joined.hops_ms[hop].append(gap * 1000)
    return joined


# --- the benchmark ---------------------------------------------------------------------------


class AgentProcess:
    """The fake agent's process, for the whole benchmark."""

    def __init__(self, log_dir: Path, *, pause: float, piece_gap: float) -> None:
        args = ["serve-agent", "--pause", str(pause), "--piece-gap", str(piece_gap)]
        self.child = Child("agent", "bench.agent", args, log_dir)
        self.address = ""

    async def __aenter__(self) -> AgentProcess:
        await self.child.start()
        try:
            self.address = str((await self.child.read_json(START_TIMEOUT))["address"])
        except BaseException:
            await self.child.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.child.stop()

    async def window(self, start: float, end: float) -> None:
        await self.child.send({"window": [start, end]})

    async def collect(self) -> dict[str, Any]:
        await self.child.send({"collect": True})
        return await self.child.read_json(START_TIMEOUT)


def write_flow(folder: Path, address: str, *, listen: bool) -> Path:
    """A flows folder holding bench/flows/agent.yaml with the fake agent's address."""
    flow = yaml.safe_load((FLOWS_DIR / f"{FLOW}.yaml").read_text(encoding="utf-8"))
    flow["vars"]["agent_address"] = address
    flow["steps"]["assistant"]["agent"]["listen"] = listen
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{FLOW}.yaml").write_text(json.dumps(flow, indent=2), encoding="utf-8")
    return folder


def run_figures(result: LoadResult, agent: dict[str, Any], joined: Joined) -> dict[str, Any]:
    c = result.carriers
    cpu_ms = (result.server_cpu or 0.0) * result.window_seconds * 1000
    agent_cpu = agent.get("cpu_seconds")
    measured = len(joined.added_ms)
    return {
        "calls_held": c.active_mid,
        "utterances": measured,
        "sent": joined.sent,
        "unplayed": joined.unplayed,
        "no_audio": joined.no_audio,
        "unmatched": joined.unmatched,
        "added_ms_p50": percentile(joined.added_ms, 50),
        "added_ms_p90": percentile(joined.added_ms, 90),
        "added_ms_p99": percentile(joined.added_ms, 99),
        "total_ms_p50": percentile(joined.total_ms, 50),
        "total_ms_p90": percentile(joined.total_ms, 90),
        "total_ms_p99": percentile(joined.total_ms, 99),
        "waves_ms_p50": percentile(joined.waves_ms, 50),
        "waves_ms_p90": percentile(joined.waves_ms, 90),
        "waves_ms_p99": percentile(joined.waves_ms, 99),
        "bridge_side_ms_p50": percentile(joined.bridge_side_ms, 50),
        "bridge_side_ms_p99": percentile(joined.bridge_side_ms, 99),
        **{
            f"hop_{hop.replace(' ', '_')}_ms_p{q}": percentile(joined.hops_ms[hop], q)
            for hop in HOPS
            for q in (50, 99)
        },
        "added_ms_p50_fresh_socket": percentile(joined.added_fresh_ms, 50),
        "added_ms_p50_pooled_socket": percentile(joined.added_pooled_ms, 50),
        "fresh_socket_share": len(joined.added_fresh_ms) / measured if measured else None,
        "cpu_ms_per_call_second": cpu_ms / c.call_seconds if c.call_seconds else None,
        "bridge_cpu": result.server_cpu,
        "standin_cpu": result.standin_cpu,
        "agent_cpu": float(agent_cpu) / result.spec.seconds if agent_cpu is not None else None,
        "loadgen_cpu": result.loadgen_cpu,
        "machine_busy": result.machine_busy,
        "loadgen_lag_ms_p99": percentile(c.lag_ms, 99),
        "agent_lag_ms_p99": percentile([float(v) for v in agent.get("lag_ms", [])], 99),
        "ended_by": dict(c.ended_by),
        "agent_counts": dict(agent.get("counts", {})),
    }


COUNTED = ("utterances", "sent", "unplayed", "no_audio", "unmatched")
MERGED = ("ended_by", "agent_counts")


def summarise(calls: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each figure; counts are summed."""
    summary: dict[str, Any] = {"calls": calls, "repeats": len(runs)}
    for key in runs[0]:
        if key in COUNTED:
            summary[key] = sum(r[key] for r in runs)
        elif key in MERGED:
            merged: Counter[str] = Counter()
            for r in runs:
                merged.update(r[key])
            summary[key] = dict(merged)
        else:
            summary[key] = median_of(r[key] for r in runs)
    summary["runs"] = runs
    return summary


LATENCY_HEADERS = [
    "calls",
    "utterances",
    "added p50",
    "p90",
    "p99",
    "total p50",
    "p90",
    "p99",
    "waves p50",
    "p90",
    "p99",
    "bridge-side p50",
    "p99",
]
COST_HEADERS = [
    "calls",
    "held",
    "lost",
    "cpu/call-s",
    "bridge cpu",
    "tts cpu",
    "agent cpu",
    "loadgen cpu",
    "machine busy",
    "loadgen lag p99",
]


HOP_HEADERS = ["calls", *HOPS]


def hop_row(s: dict[str, Any]) -> list[str]:
    cells = []
    for hop in HOPS:
        name = hop.replace(" ", "_")
        p50, p99 = s[f"hop_{name}_ms_p50"], s[f"hop_{name}_ms_p99"]
        cells.append(f"{fmt(p50, 2)} / {fmt(p99, 2)}")
    return [str(s["calls"]), *cells]


def latency_row(s: dict[str, Any]) -> list[str]:
    ms = [
        fmt(s[f"{kind}_ms_p{q}"], 2 if kind == "added" else 1, " ms")
        for kind in ("added", "total", "waves")
        for q in (50, 90, 99)
    ]
    return [
        str(s["calls"]),
        str(s["utterances"]),
        *ms,
        fmt(s["bridge_side_ms_p50"], 2, " ms"),
        fmt(s["bridge_side_ms_p99"], 2, " ms"),
    ]


def cost_row(s: dict[str, Any]) -> list[str]:
    return [
        str(s["calls"]),
        fmt(s["calls_held"], 0),
        str(s["unplayed"] + s["no_audio"]),
        fmt(s["cpu_ms_per_call_second"], 2, " ms"),
        pct(s["bridge_cpu"]),
        pct(s["standin_cpu"]),
        pct(s["agent_cpu"]),
        pct(s["loadgen_cpu"]),
        pct(s["machine_busy"]),
        fmt(s["loadgen_lag_ms_p99"], 1, " ms"),
    ]


def agent_notes(calls: int, figures: dict[str, Any]) -> list[str]:
    """Warnings about one run that the shared run notes do not cover."""
    notes: list[str] = []
    cpu, lag = figures["agent_cpu"], figures["agent_lag_ms_p99"]
    if (cpu or 0.0) > LOADGEN_CPU_LIMIT or (lag or 0.0) > LOADGEN_LAG_LIMIT_MS:
        notes.append(
            f"{calls} calls: the fake agent was near saturation ({pct(cpu)} of a core, loop lag "
            f"p99 {fmt(lag, 1, ' ms')}): utterances started late (their timings stay valid)"
        )
    if figures["unplayed"] or figures["no_audio"]:
        notes.append(
            f"{calls} calls: of {figures['sent']} utterances sent in the window, "
            f"{figures['unplayed']} were never reported played and {figures['no_audio']} "
            "brought no audio to the carrier"
        )
    if figures["unmatched"]:
        notes.append(
            f"{calls} calls: {figures['unmatched']} utterances had audio but no stand-in record"
        )
    ended = {
        k: v for k, v in figures["ended_by"].items() if k not in ("bridge-closed", "rest-hangup")
    }
    if ended:
        notes.append(f"{calls} calls: calls not ended by the agent's hangup: {ended}")
    counts = figures["agent_counts"]
    troubles = {
        k: v
        for k, v in counts.items()
        if k in ("error", "interrupted", "no_start", "played_timeout", "hangup_not_ended")
        or (k.startswith("end:") and k != "end:hangup")
    }
    if troubles:
        notes.append(f"{calls} calls: the agent saw {troubles}")
    return notes


async def run(args: argparse.Namespace, machine: dict[str, Any]) -> tuple[list[Any], list[str]]:
    summaries: list[dict[str, Any]] = []
    notes: list[str] = []
    env = BenchEnv.from_args(args)
    env.standin_timing = True
    async with env, AgentProcess(env.log_dir, pause=args.pause, piece_gap=args.piece_gap) as agent:
        flows_dir = write_flow(env.log_dir / "agent-flows", agent.address, listen=args.listen)
        assert env.timing_log is not None
        offset = 0
        for calls in args.calls:
            runs: list[dict[str, Any]] = []
            for _ in range(args.repeat):
                spec = LoadSpec(
                    carrier=args.carrier,
                    calls=calls,
                    seconds=args.seconds,
                    flow=FLOW,
                    ramp=args.ramp if args.ramp is not None else 3.0,
                    settle=args.settle,
                    loadgen_procs=args.loadgen_procs,
                    flows_dir=flows_dir,
                    tail=TAIL,
                    redial=False,
                    prompt_starts=True,
                )
                try:
                    result = await env.run(spec, on_window=agent.window)
                finally:
                    recorded = await agent.collect()
                segments, offset = read_timing_log(env.timing_log, offset)
                utterances = [
                    Utterance(str(c), str(i), float(t), None if p is None else float(p))
                    for c, i, t, p in recorded["utterances"]
                ]
                bridge = BridgeTimes.by_call(result.stats.get("agent", []))
                joined = join(
                    utterances, result.carriers.prompt_starts, segments, bridge, result.window
                )
                figures = run_figures(result, recorded, joined)
                runs.append(figures)
                notes += run_notes(result, machine["nproc"]) + agent_notes(calls, figures)
            summaries.append(summarise(calls, runs))
            if not args.json:
                print(f"... {calls} calls done", file=sys.stderr, flush=True)
    return summaries, notes


def summary_notes(summaries: list[dict[str, Any]], args: argparse.Namespace) -> list[str]:
    notes: list[str] = []
    for s in summaries:
        if s["utterances"]:
            notes.append(
                f"{s['calls']} calls: added p50 on a new Waves socket "
                f"{fmt(s['added_ms_p50_fresh_socket'], 2, ' ms')}, on a pooled one "
                f"{fmt(s['added_ms_p50_pooled_socket'], 2, ' ms')} "
                f"({pct(s['fresh_socket_share'])} of utterances opened a new socket)"
            )
        if s["calls"] == TARGET_CALLS and s["added_ms_p50"] is not None:
            met = "met" if s["added_ms_p50"] < TARGET_ADDED_P50_MS else "missed"
            notes.append(
                f"target: added p50 under {TARGET_ADDED_P50_MS:g} ms at {TARGET_CALLS} calls: "
                f"{s['added_ms_p50']:.2f} ms, {met}"
            )
    notes.append(
        "added = total - waves; total: agent sent the first piece -> carrier received the first "
        "audio; waves: the stand-in got the first segment -> sent its first chunk; bridge-side: "
        "the bridge's held_ms + added_ms events; lost: utterances never played or never heard; "
        f"p50/p90/p99 are medians over {args.repeat} run(s) of each run's nearest-rank percentile"
    )
    return notes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["serve-agent"]:
        return agent_main(argv[1:])
    parser = argparse.ArgumentParser(
        prog="python -m bench.agent",
        description="The latency the bridge adds to the first audio of an agent's utterances.",
    )
    parser.add_argument("--calls", type=int_list, default=[1, 50], help="concurrencies, e.g. 1,50")
    parser.add_argument(
        "--pause",
        type=float,
        default=0.4,
        help="seconds the agent pauses after `played` (each pause 0.5 to 1.5 times this)",
    )
    parser.add_argument(
        "--piece-gap", type=float, default=0.03, help="seconds between an utterance's text pieces"
    )
    parser.add_argument(
        "--no-listen",
        dest="listen",
        action="store_false",
        help="the agent step does not send the caller's audio to the agent (default: it does)",
    )
    add_common_args(parser, repeat=3, seconds=15.0)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if not 0 <= args.pause <= 10:
        parser.error("--pause must be from 0 to 10")
    if not 0 <= args.piece_gap <= 0.25:
        parser.error("--piece-gap must be from 0 to 0.25 (the bridge flushes held text at 0.3 s)")
    machine = machine_info()
    try:
        summaries, notes = asyncio.run(run(args, machine))
    except BenchError as exc:
        print(f"bench.agent: {exc}", file=sys.stderr)
        return 1
    notes += summary_notes(summaries, args)
    lines = [
        *table(LATENCY_HEADERS, [latency_row(s) for s in summaries]),
        "",
        "where the added time goes (ms, p50 / p99):",
        *table(HOP_HEADERS, [hop_row(s) for s in summaries]),
        "",
        *table(COST_HEADERS, [cost_row(s) for s in summaries]),
    ]
    emit(
        as_json=args.json,
        benchmark="agent",
        machine=machine,
        settings=settings_of(
            args, listen=args.listen, pause=f"{args.pause:g} s", piece_gap=f"{args.piece_gap:g} s"
        ),
        results=summaries,
        lines=lines,
        notes=notes,
    )
    return 0


def agent_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.agent serve-agent")
    parser.add_argument("--pause", type=float, default=0.4)
    parser.add_argument("--piece-gap", type=float, default=0.03)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_agent(args.pause, args.piece_gap))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
