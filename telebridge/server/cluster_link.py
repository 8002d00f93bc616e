"""`ClusterLink`: this process's part in a cluster (`TELEBRIDGE_REDIS_URL`): its calls in the
cluster's registry (claimed when a stream starts, their step kept current, released at the end),
the bus that serves the call API's say, hangup and transfer for them to the other processes, the
calls the call API placed as the whole cluster knows them (cluster/placed.py), `ClusterSlots`, the
cluster-wide `WAVES_MAX_IN_FLIGHT`, and the prompt cache's shared layer (`ClusterPrompts`,
server/cluster_prompts.py).

Made by the app's lifespan. When Redis is lost calls go on: control and `GET /v1/calls` see only
this process's calls and the Waves cap counts this process alone, said once by a WARNING;
`degraded` says so for `/readyz` until the heartbeat reaches Redis again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from telebridge.api.bodies import ApiError
from telebridge.cluster import (
    Bus,
    BusError,
    BusTimeout,
    Cluster,
    ClusterUnavailable,
    Handler,
    Registry,
    Semaphore,
)
from telebridge.cluster.placed import SharedPlaced
from telebridge.server.cluster_prompts import ClusterPrompts
from telebridge.server.placed import KEEP_S, QUEUED_FOR_S, PlacedCall, State
from telebridge.settings import Settings

__all__ = ["ClusterLink", "ClusterSlots", "check_cluster"]

logger = logging.getLogger(__name__)

# How long a request forwarded to the process holding a call may take to be answered.
FORWARD_TIMEOUT = 5.0
# How often a request to a holder whose bus does not listen (yet) is tried again.
RESUBSCRIBE_POLL = 0.1
# How long shutting down waits for the registry's last writes (entries expire anyway).
CLOSE_WAIT = 2.0

Job = Callable[[], Awaitable[None]]


async def check_cluster(settings: Settings) -> None:
    """Join and leave the cluster once: `ClusterUnavailable` (one line) when it cannot be done."""
    link = await ClusterLink.connect(settings)
    await link.close()


class ClusterLink:
    """This process (`process_id`) in the cluster; made by `await ClusterLink.connect(settings)`."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.registry = Registry(cluster)
        self.bus = Bus(cluster)
        self.placements = SharedPlaced(cluster, keep=KEEP_S, queued_for=QUEUED_FOR_S)
        # Claims, steps and releases are written in order, one at a time, off the call's path.
        self._jobs: asyncio.Queue[Job] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._held: set[str] = set()
        self._states: dict[str, str] = {}  # the state last written of each call held here
        self._alone = False  # fell back to this process alone (warned once)
        self._closed = False
        cluster.on_beat(self._heard)

    @classmethod
    async def connect(cls, settings: Settings) -> ClusterLink:
        url = settings.telebridge_redis_url
        if url is None:
            raise ValueError("TELEBRIDGE_REDIS_URL is not set")
        try:
            cluster = await Cluster.connect(url.get_secret_value(), process_id=settings.process_id)
        except ClusterUnavailable as exc:
            message = str(exc)
            if not message.startswith("TELEBRIDGE_REDIS_URL"):
                message = f"TELEBRIDGE_REDIS_URL: cannot join the cluster: {message}"
            raise ClusterUnavailable(message) from None
        link = cls(cluster)
        link._worker = asyncio.create_task(link._work(), name="cluster-calls")
        logger.info("joined the cluster at %s as %s", cluster.url, cluster.process_id)
        return link

    @property
    def process_id(self) -> str:
        return self.cluster.process_id

    @property
    def degraded(self) -> str | None:
        """What works only in part while Redis is lost (one line), or None."""
        reason = self.cluster.reason
        if reason is None:
            return None
        return (
            f"cluster: {reason}: control and GET /v1/calls see only this process's calls, "
            "WAVES_MAX_IN_FLIGHT counts this process alone, prompts are synthesised alone"
        )

    def fell_back(self) -> None:
        """Redis could not be reached: say once what that means (the heartbeat says when back)."""
        if not self._alone:
            self._alone = True
            logger.warning(
                "cluster unavailable: calls go on; the call API acts on this process's calls "
                "only and WAVES_MAX_IN_FLIGHT counts this process alone until Redis is back"
            )

    async def _heard(self) -> None:
        # Run by the heartbeat once Redis answered it again.
        if self._alone:
            self._alone = False
            logger.info("cluster: shared control and the shared Waves cap are back")

    # --- this process's calls (the bridge, synchronously) -------------------------------

    def claim(self, call_id: str, info: dict[str, Any]) -> None:
        """A call's stream started here: hold it in the registry with `info`."""
        self._held.add(call_id)
        self._queue(lambda: self._claim(call_id, info))

    def observe(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        """A call observer: keeps the step of a call held here current."""
        if kind == "step" and call_id in self._held:
            step = fields.get("step")
            self._queue(lambda: self._update(call_id, step))

    def release(self, call_id: str) -> None:
        """The call is over here."""
        self._states.pop(call_id, None)
        if call_id in self._held:
            self._held.discard(call_id)
            self._queue(lambda: self.registry.release(call_id))

    def _queue(self, job: Job) -> None:
        if not self._closed:
            self._jobs.put_nowait(job)

    async def _claim(self, call_id: str, info: dict[str, Any]) -> None:
        if not await self.registry.claim(call_id, info):
            self._held.discard(call_id)
            logger.warning("call %s is held by another process of the cluster", call_id)

    async def _update(self, call_id: str, step: Any) -> None:
        if call_id in self._held:
            await self.registry.update(call_id, step=step)

    async def _work(self) -> None:
        while True:
            job = await self._jobs.get()
            try:
                await job()
            except ClusterUnavailable:
                self.fell_back()  # the registry writes its claims again once Redis is back
            except Exception:
                logger.exception("cluster: a registry write failed")
            finally:
                self._jobs.task_done()

    # --- the state of this process's calls ----------------------------------------------

    def state_changed(self, call_id: str, state: str) -> None:
        """The state a call held here shows (`LiveCall.as_api`); written when it changed."""
        if call_id in self._held and self._states.get(call_id, "streaming") != state:
            self._states[call_id] = state
            self._queue(lambda: self._write_state(call_id, state))

    async def _write_state(self, call_id: str, state: str) -> None:
        if call_id in self._held:
            await self.registry.update(call_id, state=state)

    # --- the calls the call API placed ---------------------------------------------------

    async def placed(self, placed: PlacedCall) -> None:
        """A call this process just placed, known to the cluster when this returns (or only to
        this process while Redis is lost)."""
        if self.cluster.degraded:  # not on the request's path: known here only, said once
            self.fell_back()
            return
        try:
            await self.placements.add(placed.request_id, placed.as_record())
        except ClusterUnavailable:
            self.fell_back()

    def placed_changed(self, attempt: str, state: State, call_id: str | None) -> None:
        """A placed call's stream started or it ended here (`PlacedCalls.listen`)."""
        if state == "live" and call_id:
            self._queue(lambda: self.placements.streaming(attempt, call_id))
        elif state == "ended":
            self._queue(lambda: self.placements.ended(attempt, call_id))

    async def placed_call(self, request_id: str, at: float) -> PlacedCall | None:
        """The cluster's record of the call placed as `request_id` (None: unknown, or Redis
        lost)."""
        try:
            record = await self.placements.get(request_id)
        except ClusterUnavailable:
            self.fell_back()
            return None
        return PlacedCall.from_record(record, at) if record is not None else None

    async def placed_queued(self, here: list[PlacedCall], at: float) -> list[PlacedCall]:
        """The placed calls of the whole cluster still queued; `here` (this process's) are kept
        where the cluster does not know them yet, and dropped where it knows them further on."""
        try:
            queued = [PlacedCall.from_record(r, at) for r in await self.placements.queued()]
            known = {p.request_id for p in queued}
            states = await self.placements.states(
                [p.request_id for p in here if p.request_id not in known]
            )
        except ClusterUnavailable:
            self.fell_back()
            return here
        return queued + [
            p for p in here if p.request_id not in known and states.get(p.request_id) is None
        ]

    # --- the other processes (the desk) -------------------------------------------------

    async def calls(self) -> list[dict[str, Any]]:
        """The calls other processes hold, as `GET /v1/calls` shows them ([] without Redis)."""
        try:
            entries = await self.registry.calls()
        except ClusterUnavailable:
            self.fell_back()
            return []
        others = []
        for entry in entries:
            owner = entry.pop("process_id", None)
            if owner != self.process_id:
                others.append(entry)
        return others

    async def forward(self, call_id: str, op: str, body: dict[str, Any]) -> dict[str, Any] | None:
        """`op` done by the process holding `call_id`: its answer, or None when no other
        process holds it (or Redis is lost: then only this process's calls count)."""
        # Just after Redis is back, the holder's heartbeat may have written its call again
        # before its bus listens: nobody serving is tried again while the holder holds the call.
        deadline = time.monotonic() + self.cluster.heartbeat
        while True:
            try:
                owner = await self.registry.owner(call_id)
                if owner is None or owner == self.process_id:
                    return None
                return await self.bus.request(owner, op, body, FORWARD_TIMEOUT)
            except ClusterUnavailable:
                self.fell_back()
                return None
            except BusTimeout:
                raise ApiError(504, f"the process holding the call did not answer {op}") from None
            except BusError as exc:
                if time.monotonic() < deadline:
                    await asyncio.sleep(RESUBSCRIBE_POLL)
                    continue
                logger.warning("cluster: call %s: %s", call_id, exc)
                raise ApiError(502, "the process holding the call cannot be reached") from None

    async def serve(self, handler: Handler) -> None:
        """Answer the other processes' requests for this process's calls with `handler`."""
        try:
            await self.bus.serve(handler)
        except ClusterUnavailable:
            self.fell_back()  # the bus subscribes again once Redis is back

    def slots(self, limit: int) -> ClusterSlots:
        """The cluster-wide cap of `limit` Waves requests in flight."""
        return ClusterSlots(self, Semaphore(self.cluster, "waves", limit))

    def prompts(self, max_bytes: int, namespace: str) -> ClusterPrompts:
        """The prompt cache's shared layer, keeping at most `max_bytes` of audio in Redis."""
        return ClusterPrompts(self.cluster, max_bytes, namespace)

    async def close(self) -> None:
        """Stop: the last registry writes (bounded), the bus, the connection."""
        self._closed = True
        if self._worker is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_WAIT):
                    await self._jobs.join()
            self._worker.cancel()
            await asyncio.wait([self._worker], timeout=CLOSE_WAIT)
            self._worker = None
        await self.bus.close()
        await self.cluster.close()


class ClusterSlots:
    """`SharedSlots` (tts/slots.py) over a cluster semaphore; None while Redis is lost."""

    def __init__(self, link: ClusterLink, semaphore: Semaphore) -> None:
        self._link = link
        self._semaphore = semaphore
        self._releases: set[asyncio.Task[None]] = set()

    # The timeout is the guard's deadline for the prompt.
    async def acquire(self, timeout: float) -> str | None:  # noqa: ASYNC109
        if self._link.cluster.degraded:
            self._link.fell_back()
            return None
        try:
            return await self._semaphore.acquire(timeout)  # SemaphoreTimeout is a TimeoutError
        except ClusterUnavailable:
            self._link.fell_back()
            return None

    def release(self, token: str) -> None:
        async def give_back() -> None:
            with contextlib.suppress(ClusterUnavailable):  # else its lease ends with the ttl
                await self._semaphore.release(token)

        task = asyncio.get_running_loop().create_task(give_back())
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
