"""Outbound campaigns: one call per CSV row, at a bounded rate and concurrency, with retries.
This module runs them (`CampaignRunner`) and holds the entry points the CLI uses.

A campaign runs beside a serving bridge that shares its settings. Each call carries its attempt
id in its signed variables (`attempt`), so the bridge's call log row for it, whether the call
streamed or ended unanswered, can be found, and its outcome read (`outcome` set: the flow's end;
"no-stream": the carrier's hangup cause says busy, no answer or failed).

Everything lives in the campaign's state (a `CampaignStore`): an SQLite file beside the list
(`campaign_state`), or, when `TELEBRIDGE_DB` is a PostgreSQL URL, that database (`campaign_pg`),
where `resume` finds it by the campaign's id or a copy of its list. An attempt is committed there
*before* its call is placed, so after Ctrl-C or a crash `resume` knows every call that may have
gone out and only waits for its outcome: nobody is called twice by accident. The commits
(synchronous; to disk, or waiting out a lost server) run in a thread of the runner's own, so the
event loop keeps following the other calls meanwhile.

Given a cluster `Rate` (`TELEBRIDGE_REDIS_URL`), each call also waits for a slot of that one
rate, which every campaign of the carrier on every process shares, so together they keep it; the
local spacing stays, and is all there is while Redis is away (one warning).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from telebridge.calllog import CallLog, CallLogError, CallRecord
from telebridge.outbound.campaign_csv import Row
from telebridge.outbound.campaign_plan import DEFAULT_RATE, CampaignError, Plan
from telebridge.outbound.campaign_state import Attempt, CampaignState, CampaignStore
from telebridge.outbound.campaign_store import resume, resume_path, start
from telebridge.outbound.placers import PlacementError
from telebridge.outbound.placing import Dialer
from telebridge.outbound.request import OutboundError
from telebridge.outbound.verdicts import UNKNOWN, Verdict, find_call, verdict_of

if TYPE_CHECKING:  # the cluster needs the `cluster` extra (redis); a campaign may run without
    from telebridge.cluster import Rate
    from telebridge.settings import Settings

__all__ = [
    "DEFAULT_RATE",
    "CampaignError",
    "CampaignRunner",
    "CampaignState",
    "CampaignStore",
    "Plan",
    "ProgressSink",
    "resume",
    "resume_path",
    "run_paced",
    "start",
    "summary_line",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

LIVE_LIMIT_S = 4 * 3600.0  # a call still streaming after this long is not coming back


# --- the runner ------------------------------------------------------------------------------


def _state_thread() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-state")


class ProgressSink(Protocol):
    def update(self, total: int, finished: Counter[str], calling: int) -> None: ...
    def event(self, text: str) -> None: ...


class _Silent:
    def update(self, total: int, finished: Counter[str], calling: int) -> None:
        pass

    def event(self, text: str) -> None:
        logger.info("%s", text)


@dataclass
class _Watch:
    """A call that may be out there, followed until the call log gives its outcome."""

    attempt: Attempt
    request_id: str | None = None
    in_flight: bool = False  # its create request has not returned yet: nothing to look up
    seen: bool = False  # the call log has a row for it: the call is live


class CampaignRunner:
    """Places the calls of one campaign and follows them to their outcomes (see module doc)."""

    def __init__(
        self,
        state: CampaignStore,
        dialer: Dialer,
        log: CallLog,
        *,
        progress: ProgressSink | None = None,
        poll_interval: float = 1.0,
        cluster_rate: Rate | None = None,
    ) -> None:
        if dialer.carrier != state.plan.carrier:
            raise CampaignError(f"the campaign is for {state.plan.carrier}, not {dialer.carrier}")
        self.state = state
        self.dialer = dialer
        self.log = log
        self.progress: ProgressSink = progress or _Silent()
        self.poll_interval = poll_interval
        self._watch: dict[str, _Watch] = {}
        self._log_away = False  # the last read of the call log failed
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_create = 0.0  # loop time before which no call may be created
        self.cluster_rate = cluster_rate
        self._rate_away = False  # the last slot could not be taken from the cluster
        self._fatal: CampaignError | None = None
        self._state_thread = _state_thread()

    def _stored(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """`fn` (a use of the state file) run in the state thread, after those asked before it.

        One thread, in order: the connection is never used twice at once, and a row's attempt is
        finished before a later look for the next due row."""
        return asyncio.get_running_loop().run_in_executor(self._state_thread, fn)

    async def run(self) -> Counter[str]:
        """Run until every row has its outcome; returns the rows by outcome."""
        self._state_thread = _state_thread()
        loop = asyncio.get_running_loop()
        try:
            for attempt in await self._stored(self.state.unfinished):
                self._watch[attempt.id] = _Watch(attempt, attempt.request_id)
            if self._watch:
                self.progress.event(f"following {len(self._watch)} call(s) placed before the stop")
            while True:
                await self._collect()
                if self._fatal is not None:
                    raise self._fatal
                pause = await self._launch(loop.time())
                # One read of the counts and the open rows: a commit between two reads could
                # finish the last row after its count was taken.
                total, finished, open_rows = await self._stored(self._tally)
                self.progress.update(total, finished, len(self._watch))
                if not self._watch and open_rows == 0:
                    return finished
                await asyncio.sleep(pause)
        finally:
            if self._tasks:  # let requests already sent record their call ids
                await asyncio.wait(self._tasks)
            # A commit whose wait was cancelled may still run: the caller closes the state next.
            self._state_thread.shutdown(wait=True)

    async def _launch(self, now: float) -> float:
        """Start the calls that are due, within the concurrency cap and the rate."""
        plan = self.state.plan
        while len(self._watch) < plan.concurrency:
            if now < self._next_create:
                return min(self.poll_interval, self._next_create - now)
            claim = self._stored(self._claim)
            try:
                claimed = await asyncio.shield(claim)
            except asyncio.CancelledError:
                # Stopped during the commit: the call goes out, as if stopped just after it (the
                # `finally` of `run` lets its request complete and be recorded).
                if (claimed := await claim) is not None:
                    self._start(*claimed, asyncio.get_running_loop().time())
                raise
            if claimed is None:
                break
            if self.cluster_rate is not None:
                # The row is committed: the call goes out once the slot comes, even if stopped.
                slot = asyncio.ensure_future(self._cluster_slot(self.cluster_rate))
                try:
                    await asyncio.shield(slot)
                except asyncio.CancelledError:
                    await slot
                    self._start(*claimed, asyncio.get_running_loop().time())
                    raise
            # The commit took time (a slow disk): space the calls from when this one really starts.
            now = asyncio.get_running_loop().time()
            self._start(*claimed, now)
        return self.poll_interval

    async def _cluster_slot(self, rate: Rate) -> None:
        """Wait for this call's slot of the cluster's rate; Redis away: go on (local pacing)."""
        from telebridge.cluster import ClusterUnavailable

        try:
            await rate.wait()
        except ClusterUnavailable as exc:
            if not self._rate_away:
                logger.warning("campaign: %s; pacing calls on this process alone", exc)
                self._rate_away = True
            return
        if self._rate_away:
            logger.info("campaign: the cluster's call rate holds again")
            self._rate_away = False

    def _tally(self) -> tuple[int, Counter[str], int]:
        """All rows, the finished ones by outcome, and the open ones (in the state thread)."""
        total, finished = self.state.counts()
        return total, finished, self.state.open_rows()

    def _claim(self) -> tuple[Row, Attempt] | None:
        """The next due row and its new attempt, committed (in the state thread)."""
        row = self.state.next_due(time.time())
        if row is None:
            return None
        return row, self.state.begin(row, time.time())  # on disk before the call is placed

    def _start(self, row: Row, attempt: Attempt, now: float) -> None:
        self._watch[attempt.id] = _Watch(attempt, in_flight=True)
        self._next_create = max(now, self._next_create) + 1.0 / self.state.plan.rate
        task = asyncio.create_task(self._place(attempt, row))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _place(self, attempt: Attempt, row: Row) -> None:
        watch = self._watch[attempt.id]
        variables = {**row.variables, "attempt": attempt.id}
        try:
            try:
                placed = await asyncio.to_thread(self.dialer.call, row.to, variables)
            except PlacementError as exc:
                await self._not_placed(watch, exc)
            except OutboundError as exc:
                await self._done(watch, Verdict("failed", detail=str(exc)))
            else:
                await self._stored(lambda: self.state.placed(attempt, placed.request_id))
                watch.request_id = placed.request_id
        except CampaignError as exc:  # the state cannot be written (its server stayed away)
            self._fatal = self._fatal or exc
        finally:
            watch.in_flight = False

    async def _not_placed(self, watch: _Watch, exc: PlacementError) -> None:
        attempt = watch.attempt
        if exc.rate_limited:
            pause = exc.retry_after or 1.0
            now = asyncio.get_running_loop().time()
            self._next_create = max(self._next_create, now + pause)  # no create while withdrawn
            not_before = time.time() + pause
            await self._stored(lambda: self.state.withdraw(attempt, not_before))
            del self._watch[attempt.id]
            logger.warning("%s: rate limited, pausing %.1f s", self.state.plan.carrier, pause)
        elif exc.placed == "no":
            if exc.status == 401:
                self._fatal = CampaignError(f"{exc}: check the carrier's credentials")
            await self._done(watch, Verdict("failed", detail=str(exc)))
        else:
            # It may be ringing: follow it through the call log like any placed call.
            logger.warning("row %d: %s; following it through the call log", attempt.idx, exc)
            await self._stored(lambda: self.state.placed(attempt, None))

    async def _done(self, watch: _Watch, verdict: Verdict) -> None:
        attempt = watch.attempt
        self._watch.pop(attempt.id, None)
        now = time.time()
        final = await self._stored(lambda: self.state.finish(attempt, verdict, now))
        plan = self.state.plan
        text = f"row {attempt.idx}: attempt {attempt.n}/{plan.retries + 1}: {verdict.outcome}"
        if verdict.detail:
            text += f" ({verdict.detail})"
        if not final:
            text += f", again in {plan.retry_delay:g} s"
        self.progress.event(text)

    async def _collect(self) -> None:
        """Read the outcomes of placed calls from the call log."""
        watched = [w for w in self._watch.values() if not w.in_flight]
        if not watched:
            return
        carrier = self.state.plan.carrier

        def read() -> list[CallRecord | None]:
            return [
                find_call(self.log, carrier, w.attempt.id, w.request_id, w.attempt.placed_at)
                for w in watched
            ]

        try:
            records = await asyncio.to_thread(read)
        except CallLogError as exc:
            # The database is away (a PostgreSQL restart): the outcomes wait in it, and calls
            # placed meanwhile are written there once the bridge's log catches up. Ask again.
            if not self._log_away:
                logger.warning("campaign: %s; waiting for it", exc)
                self._log_away = True
            return
        if self._log_away:
            logger.info("campaign: the call log is readable again")
            self._log_away = False
        now = time.time()
        for watch, record in zip(watched, records, strict=True):
            verdict = verdict_of(record) if record is not None else None
            if verdict is not None:
                await self._done(watch, verdict)
                continue
            watch.seen = watch.seen or record is not None
            if now - watch.attempt.placed_at > (
                LIVE_LIMIT_S if watch.seen else self.state.plan.wait
            ):
                detail = (
                    "the call log never recorded its end"
                    if watch.seen
                    else "no word of the call in the call log: is `telebridge serve` running "
                    "with the same settings (TELEBRIDGE_DB, the carrier credentials, "
                    "TELEBRIDGE_SECRET)?"
                )
                await self._done(watch, Verdict(UNKNOWN, detail=detail))


# --- entry points ----------------------------------------------------------------------------


async def run_paced(runner: CampaignRunner, settings: Settings) -> Counter[str]:
    """`runner.run()`, its call creations paced by the cluster's rate `campaign:<carrier>` when
    `TELEBRIDGE_REDIS_URL` is set; Redis unreachable: local pacing and one warning."""
    url = settings.telebridge_redis_url
    if url is None:
        return await runner.run()
    from telebridge.cluster import Cluster, ClusterUnavailable, Rate

    plan = runner.state.plan
    try:
        cluster = await Cluster.connect(
            url.get_secret_value(), process_id=f"{settings.process_id}-campaign"
        )
    except ClusterUnavailable as exc:
        logger.warning("campaign: %s; pacing calls on this process alone", exc)
        return await runner.run()
    try:
        runner.cluster_rate = Rate(cluster, f"campaign:{plan.carrier}", plan.rate)
        return await runner.run()
    finally:
        await cluster.close()


def summary_line(finished: Counter[str], results: str) -> str:
    tally = ", ".join(f"{n} {o}" for o, n in sorted(finished.items())) or "no rows"
    return f"campaign done: {tally}; results in {results}"
