"""Runs one load: the bridge in its own process, simulated carriers in load-generator processes.

`BenchEnv` owns what outlives a run (the Waves stand-in process and a fake Plivo REST API in
this process; with `processes` > 1 also the Redis and PostgreSQL the bridges share, see
`bench.cluster`). `BenchEnv.run(spec)` starts fresh bridge processes, warms each up with one
call, starts the load generators, reads the bridges' CPU and memory from /proc over the
measurement window (summed over the processes), then collects the carriers' figures and the
bridges' `first_audio` events.
`bench.agent` adds its own flows folder, an agent process told the window (`on_window`) and the
stand-in's timing log (`standin_timing`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.child import Child
from bench.cluster import SharedStores, merge_stats
from bench.common import (
    BenchError,
    ProcSample,
    cpu_share,
    read_system_cpu,
    system_busy,
    try_read_proc,
)
from bench.loadgen import CALL_GRACE, Job, WorkerStats, make_call
from bench.server import STATS_PATH
from telebridge.flows.fetch import KEEPALIVE_S
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN
from telebridge.simulator.carrier import CallScript
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.serving import ServedApp

logger = logging.getLogger(__name__)

START_TIMEOUT = 30.0  # seconds a child process may take to say it is ready
WARMUP_TRIES = 3
WARMUP_SECONDS = 10.0
RSS_SAMPLE_EVERY = 0.5


@dataclass(frozen=True)
class LoadSpec:
    carrier: str
    calls: int
    seconds: float  # the measurement window
    flow: str
    call_seconds: float | None = None  # None: each call lasts the whole run
    ramp: float = 2.0  # calls start evenly over this many seconds
    settle: float = 2.0  # then this long passes before the window opens
    loadgen_procs: int = 1
    caller_audio: bool = True
    flows_dir: Path | None = None  # the bridge's flows folder (None: bench/flows)
    tail: float = 0.0  # the run goes on this long after the window, for calls to end themselves
    redial: bool = True  # False: each slot places one call only, meant to last the whole run
    prompt_starts: bool = False  # carriers record (call id, arrival) of each prompt's first audio


@dataclass
class LoadResult:
    spec: LoadSpec
    window_seconds: float
    server_cpu: float | None  # share of one core over the window (the bridges' sum)
    standin_cpu: float | None
    stores_cpu: float | None  # Redis and PostgreSQL of several processes (None: one process)
    loadgen_cpu: float | None  # all load generators together
    loadgen_cpu_max: float | None  # the busiest one
    # The bridges' resident memory (summed over the processes): after warm-up, before the
    # load; mean and max over the window; the peak from the load's start to the window's end.
    rss_base: int
    rss_mean: float
    rss_max: int
    rss_peak: int
    server_active_mid: int
    machine_busy: float | None  # the whole machine, as a fraction of all its CPUs
    added_ms: list[float]  # the bridge's first_audio events inside the window
    server_counts: dict[str, int]
    carriers: WorkerStats
    notes: list[str] = field(default_factory=list)
    window: tuple[float, float] = (0.0, 0.0)  # monotonic times of the measurement window
    stats: dict[str, Any] = field(default_factory=dict)  # the bridges' /_bench/stats at the end
    processes: int = 1


class BenchEnv:
    """The Waves stand-in (own process unless `standin_inproc`) and a fake Plivo REST API."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> BenchEnv:
        """The environment the shared command-line options describe."""
        return cls(
            chunk_interval=args.tts_chunk_interval,
            first_chunk_delay=args.tts_first_chunk_delay,
            standin_inproc=args.standin_inproc,
            vonage_rate=args.vonage_rate,
            log_dir=args.log_dir,
            profile_dir=args.profile_dir,
            prompt_cache_mb=args.prompt_cache_mb,
            ws=args.ws,
            loop=args.loop,
            waves_transport=args.waves_transport,
            processes=getattr(args, "processes", 1),
        )

    def __init__(
        self,
        *,
        chunk_interval: float = 0.05,
        first_chunk_delay: float = 0.0,
        standin_inproc: bool = False,
        vonage_rate: int = 16000,
        log_dir: Path | None = None,
        profile_dir: Path | None = None,
        prompt_cache_mb: int = 0,
        ws: str = "telebridge",
        loop: str = "auto",
        waves_transport: str = "websocket",
        standin_timing: bool = False,
        processes: int = 1,
    ) -> None:
        self.ws = ws
        self.loop = loop
        self.waves_transport = waves_transport
        self.chunk_interval = chunk_interval
        self.first_chunk_delay = first_chunk_delay
        self.standin_inproc = standin_inproc
        self.vonage_rate = vonage_rate
        self._stack = contextlib.AsyncExitStack()
        self._runs = 0
        self._keep_logs = log_dir
        self.profile_dir = profile_dir
        self.prompt_cache_mb = prompt_cache_mb
        self.standin_timing = standin_timing
        # The stand-in's timing log (JSON lines, see bench.server), when `standin_timing`.
        self.timing_log: Path | None = None
        self.log_dir = Path(".")
        self.standin: Child | None = None
        self.waves: dict[str, Any] = {}
        self.plivo_api_url = ""
        self.processes = processes
        self.stores: SharedStores | None = None

    async def __aenter__(self) -> BenchEnv:
        await self._stack.__aenter__()
        try:
            self.log_dir = self._stack.enter_context(_log_dir(self._keep_logs))
            if self.standin_timing:
                self.timing_log = self.log_dir / "standin-timing.jsonl"
            fake = FakePlivoApi(SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN)
            self.plivo_api_url = (await self._stack.enter_async_context(ServedApp(fake.app()))).url
            if not self.standin_inproc:
                self.standin = Child(
                    "standin", "bench.server", self._tts_args("standin"), self.log_dir
                )
                self._stack.push_async_callback(self.standin.stop)
                await self.standin.start()
                self.waves = await self.standin.read_json(START_TIMEOUT)
            if self.processes > 1:
                self.stores = SharedStores()
                self._stack.push_async_callback(self.stores.close)
                await self.stores.start()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _tts_args(self, role: str) -> list[str]:
        args = [
            role,
            "--stop-on-eof",
            "--chunk-interval",
            str(self.chunk_interval),
            "--first-chunk-delay",
            str(self.first_chunk_delay),
        ]
        if self.timing_log is not None:
            args += ["--timing-log", str(self.timing_log.resolve())]
        return args

    def _bridge_args(self, name: str, flow: str, flows_dir: Path | None = None) -> list[str]:
        args = [
            *self._tts_args("bridge"),
            *("--flow", flow, "--plivo-api-url", self.plivo_api_url),
            *("--vonage-rate", str(self.vonage_rate)),
            *("--prompt-cache-mb", str(self.prompt_cache_mb)),
            *("--ws", self.ws, "--loop", self.loop),
            *("--waves-transport", self.waves_transport),
        ]
        if flows_dir is not None:
            args += ["--flows-dir", str(flows_dir.resolve())]
        if self.profile_dir is not None:
            self.profile_dir.mkdir(parents=True, exist_ok=True)
            args += ["--profile", str(self.profile_dir.resolve() / f"{name}.prof")]
        if self.stores is not None:
            args += self.stores.bridge_args(name)
        if self.standin_inproc:
            return [*args, "--standin-inproc"]
        return [*args, "--waves-url", self.waves["waves_url"], "--waves-key", self.waves["api_key"]]

    def _bridges(self, spec: LoadSpec) -> list[Child]:
        """This run's bridge processes (not started): one, or `processes` sharing the stores."""
        names = [f"bridge-{self._runs}"]
        if self.processes > 1:
            names = [f"bridge-{self._runs}-{k}" for k in range(self.processes)]
        env = self.stores.env if self.stores is not None else None
        return [
            Child(
                name,
                "bench.server",
                self._bridge_args(name, spec.flow, spec.flows_dir),
                self.log_dir,
                env,
            )
            for name in names
        ]

    async def run(
        self,
        spec: LoadSpec,
        on_window: Callable[[float, float], Awaitable[None]] | None = None,
    ) -> LoadResult:
        """One run; `on_window(start, end)` is told the window's monotonic times as the load
        starts (before the window opens)."""
        self._runs += 1
        if self.stores is not None:
            await self.stores.fresh()
        bridges = self._bridges(spec)
        workers: list[Child] = []
        try:
            urls: list[str] = []
            for bridge in bridges:
                await bridge.start()
            for bridge in bridges:
                urls.append(str((await bridge.read_json(START_TIMEOUT))["url"]))
            # Idle connections are dropped before uvicorn's 5 s keep-alive timeout closes them:
            # a request sent on a connection the server is closing fails at random otherwise.
            limits = httpx.Limits(keepalive_expiry=KEEPALIVE_S)
            async with httpx.AsyncClient(timeout=15, limits=limits) as http:
                await self._check_carrier(http, urls[0], spec.carrier)
                for url in urls:
                    await self._warm_up(http, url, spec)
                await asyncio.sleep(0.5)
                base = [try_read_proc(bridge.pid) for bridge in bridges]
                workers = await self._start_workers(spec, urls)
                return await self._measure(spec, urls, http, bridges, workers, base, on_window)
        except httpx.HTTPError as exc:
            tails = "\n".join(bridge.log_tail() for bridge in bridges)
            raise BenchError(f"the bridge stopped answering ({exc!r}):\n{tails}") from None
        finally:
            for child in [*bridges, *workers]:
                await child.stop()

    async def _check_carrier(self, http: httpx.AsyncClient, url: str, carrier: str) -> None:
        if carrier == "vonage":
            response = await http.get(f"{url}/vonage/answer")
            if response.status_code == 404:
                raise BenchError("this build of the bridge does not serve /vonage/* yet")

    async def _warm_up(self, http: httpx.AsyncClient, url: str, spec: LoadSpec) -> None:
        """One call first, so the stand-in has rendered the flow's text and sockets are open."""
        job = self._job(spec, [url], [0.0])
        ended_by = ""
        for _ in range(WARMUP_TRIES):
            script = CallScript(flow=spec.flow, caller_audio=False, hangup_after=WARMUP_SECONDS)
            call = make_call(job, script, WorkerStats(0.0, 0.0))
            task = asyncio.create_task(call.run(http))
            # Hang up as soon as audio arrives: the warm-up is for the first prompt only.
            for _ in range(int(WARMUP_SECONDS / 0.05)):
                if task.done() or call.result.first_audio_at is not None:
                    break
                await asyncio.sleep(0.05)
            await call.end("caller-hangup")
            result = await task
            if result.first_audio_at is not None:
                return
            ended_by = result.ended_by
        raise BenchError(f"the warm-up call heard no audio (ended by {ended_by})")

    def _job(
        self, spec: LoadSpec, urls: list[str], slots: list[float], slot_ids: list[int] | None = None
    ) -> Job:
        window_end = spec.ramp + spec.settle + spec.seconds
        run_seconds = window_end + spec.tail
        return Job(
            carrier=spec.carrier,
            base_url=urls[0],
            flow=spec.flow,
            slots=slots,
            call_seconds=spec.call_seconds if spec.call_seconds is not None else run_seconds,
            run_seconds=run_seconds,
            window=(spec.ramp + spec.settle, window_end),
            caller_audio=spec.caller_audio,
            vonage_rate=self.vonage_rate,
            redial=spec.redial,
            prompt_starts=spec.prompt_starts,
            urls=urls if len(urls) > 1 else [],
            slot_ids=slot_ids if slot_ids is not None else list(range(len(slots))),
            total_slots=spec.calls,
        )

    async def _start_workers(self, spec: LoadSpec, urls: list[str]) -> list[Child]:
        offsets = [i * spec.ramp / spec.calls for i in range(spec.calls)]
        ids = list(range(spec.calls))
        count = min(spec.loadgen_procs, spec.calls)
        workers = [
            Child(f"loadgen-{self._runs}-{k}", "bench.loadgen", [], self.log_dir)
            for k in range(count)
        ]
        for k, worker in enumerate(workers):
            await worker.start()
            job = self._job(spec, urls, offsets[k::count], ids[k::count])
            await worker.send(dataclasses.asdict(job))
        for worker in workers:
            if await worker.read_line(START_TIMEOUT) != "ready":
                raise BenchError(f"{worker.name} did not say ready")
        return workers

    async def _measure(
        self,
        spec: LoadSpec,
        urls: list[str],
        http: httpx.AsyncClient,
        bridges: list[Child],
        workers: list[Child],
        base: list[ProcSample | None],
        on_window: Callable[[float, float], Awaitable[None]] | None = None,
    ) -> LoadResult:
        start_at = time.monotonic() + 0.3
        for worker in workers:
            await worker.send({"start_at": start_at})
        job = self._job(spec, urls, [])
        window_start, window_end = start_at + job.window[0], start_at + job.window[1]
        if on_window is not None:
            await on_window(window_start, window_end)
        pids = {bridge.name: bridge.pid for bridge in bridges}
        pids["standin"] = self.standin.pid if self.standin else None
        stores = self.stores.pids() if self.stores is not None else []
        # The peak is looked for from the load's start: a burst of call starts is in the ramp.
        peak = 0
        while time.monotonic() < window_start:
            peak = max(peak, _bridges_rss(bridges))
            await asyncio.sleep(min(RSS_SAMPLE_EVERY, max(0.0, window_start - time.monotonic())))
        before = {name: try_read_proc(pid) for name, pid in pids.items()}
        stores_before = [try_read_proc(pid) for pid in stores]
        machine_before = read_system_cpu()
        t0 = time.monotonic()
        rss: list[int] = []
        active_mid = -1
        for _ in range(int(spec.seconds / RSS_SAMPLE_EVERY) + 2):
            now = time.monotonic()
            if now >= window_end:
                break
            rss.append(_bridges_rss(bridges))
            if active_mid < 0 and now >= (window_start + window_end) / 2:
                active_mid = 0
                for url in urls:
                    active_mid += int((await http.get(url + STATS_PATH)).json()["active_calls"])
            await asyncio.sleep(min(RSS_SAMPLE_EVERY, max(0.0, window_end - time.monotonic())))
        after = {name: try_read_proc(pid) for name, pid in pids.items()}
        stores_after = [try_read_proc(pid) for pid in stores]
        machine_after = read_system_cpu()
        t1 = time.monotonic()
        carriers = WorkerStats(window_start, window_end)
        loadgen: list[float] = []
        for worker in workers:
            data = await worker.read_json(job.run_seconds + CALL_GRACE + 30)
            carriers.merge(data)
            if data.get("cpu_seconds") is not None:
                loadgen.append(float(data["cpu_seconds"]) / spec.seconds)
        stats = merge_stats([(await http.get(url + STATS_PATH)).json() for url in urls])
        added = [ms for t, ms in stats["first_audio"] if window_start <= t <= window_end]
        shares = {name: cpu_share(before[name], after[name], t1 - t0) for name in pids}
        bridge_shares = [shares[bridge.name] for bridge in bridges]
        return LoadResult(
            spec=spec,
            window_seconds=t1 - t0,
            server_cpu=None if None in bridge_shares else sum(s or 0.0 for s in bridge_shares),
            standin_cpu=shares["standin"],
            stores_cpu=_cpu_of(stores_before, stores_after, t1 - t0) if stores else None,
            loadgen_cpu=sum(loadgen) if loadgen else None,
            loadgen_cpu_max=max(loadgen) if loadgen else None,
            rss_base=sum(b.rss_bytes for b in base if b is not None),
            rss_mean=sum(rss) / len(rss) if rss else 0.0,
            rss_max=max(rss, default=0),
            rss_peak=max(peak, *rss) if rss else peak,
            server_active_mid=max(0, active_mid),
            machine_busy=system_busy(machine_before, machine_after),
            added_ms=added,
            server_counts={str(k): int(v) for k, v in stats["counts"].items()},
            carriers=carriers,
            window=(window_start, window_end),
            stats=stats,
            processes=len(bridges),
        )


def _cpu_of(
    before: list[ProcSample | None], after: list[ProcSample | None], seconds: float
) -> float:
    """The share of one core a set of processes used (those gone by the end count 0)."""
    shares = (cpu_share(b, a, seconds) for b, a in zip(before, after, strict=True))
    return sum(share or 0.0 for share in shares)


def _bridges_rss(bridges: list[Child]) -> int:
    """The bridges' resident memory together (a process gone counts 0)."""
    samples = [try_read_proc(bridge.pid) for bridge in bridges]
    return sum(sample.rss_bytes for sample in samples if sample is not None)


@contextlib.contextmanager
def _log_dir(keep: Path | None) -> Iterator[Path]:
    """Child logs live in a temporary directory, or in `keep` when one is given."""
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="tb-bench-logs-") as path:
        yield Path(path)
