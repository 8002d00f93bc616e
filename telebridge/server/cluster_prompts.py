"""`ClusterPrompts`: the prompt cache's shared layer (`SharedPrompts`, tts/shared_prompts.py) over
the cluster: complete prompts in a `Store` bounded by `TELEBRIDGE_SHARED_CACHE_MB`, and syntheses
under way as `Fills` whose chunks the other processes follow. A maker publishes in the background,
in order, renewing its claim while it waits, so a maker that dies is given up on after `CLAIM_TTL`.

Made by `ClusterLink.prompts`. While Redis is lost each process makes its prompts alone: said once
by a WARNING, counted in `errors`, and Redis is not asked again until the heartbeat reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from telebridge.cluster import Cluster, ClusterUnavailable, Store
from telebridge.cluster.fills import END, ERROR, Fill, FillLost, Fills
from telebridge.tts.shared_prompts import Following, Owned, PromptLost, Stored, Waiting

__all__ = ["ClusterPrompts"]

logger = logging.getLogger(__name__)

CHUNK = "chunk"
WAIT = "wait"
# A maker whose claim is not renewed for this long is taken for dead; it renews thrice as often.
CLAIM_TTL = 3.0
# A fill's chunks stay this long after its last entry (late followers find the audio in the store).
STREAM_TTL = 30.0
# A follower gives up on a fill (and makes the prompt itself, if nobody heard it yet) after this.
FOLLOW_TIMEOUT = 60.0
# Most entries of one fill, and most sent in one round trip.
MAX_PIECES = 4096
BATCH = 64
# How long shutting down waits for the publishing under way.
CLOSE_WAIT = 2.0


class ClusterPrompts:
    """Prompts shared by the cluster's processes, at most `max_bytes` kept in Redis (one prompt
    at most a quarter of it, as in memory); `namespace` keeps apart audio of different makers."""

    def __init__(
        self, cluster: Cluster, max_bytes: int, namespace: str, *, claim_ttl: float = CLAIM_TTL
    ) -> None:
        self._cluster = cluster
        name = f"prompts.{namespace}"
        self._store = Store(cluster, name, max_bytes)
        self._fills = Fills(
            cluster, name, claim_ttl=claim_ttl, stream_ttl=STREAM_TTL, max_entries=MAX_PIECES
        )
        self.renew_every = claim_ttl / 3
        self.max_prompt_bytes = max_bytes // 4
        self.errors = 0  # prompts (or publishings) that Redis failed: made by this process alone
        self._alone = False
        self._publishing: set[asyncio.Task[None]] = set()
        cluster.on_beat(self._heard)

    async def open(self, name: str) -> Stored | Owned | Following | None:
        if self._alone or self._cluster.degraded:
            self.lost(self._cluster.reason)
            return None
        try:
            audio = await self._store.get(name)
            if audio is not None:
                return Stored(audio)
            claimed = await self._fills.claim(name)
            if isinstance(claimed, str):
                return Following(self._follow(name, claimed))
            try:  # kept by its maker between the look and the claim?
                audio = await self._store.get(name)
            except BaseException:
                _Publisher(self, claimed, name).fail()  # its followers need not wait for the ttl
                raise
            if audio is None:
                return Owned(_Publisher(self, claimed, name))
            with contextlib.suppress(ClusterUnavailable):
                await claimed.close(ERROR, b"kept meanwhile")  # its followers look again
            return Stored(audio)
        except ClusterUnavailable as exc:
            self.lost(str(exc))
            return None

    async def _follow(self, name: str, fill_id: str) -> AsyncIterator[bytes | Waiting]:
        try:
            async for kind, data in self._fills.follow(name, fill_id, FOLLOW_TIMEOUT):
                if kind == CHUNK:
                    yield data
                elif kind == WAIT:
                    yield Waiting(_seconds(data))
        except FillLost as exc:
            raise PromptLost(str(exc)) from None
        except ClusterUnavailable as exc:
            self.lost(str(exc))
            raise PromptLost("Redis was lost while following the prompt") from None

    async def keep(self, name: str, audio: bytes) -> None:
        if len(audio) <= self.max_prompt_bytes:
            await self._store.put(name, audio)

    def publishing(self, task: asyncio.Task[None]) -> None:
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    def lost(self, reason: str | None) -> None:
        self.errors += 1
        if not self._alone:
            self._alone = True
            logger.warning(
                "cluster: %s: each process synthesises its prompts alone until Redis is back",
                reason or "Redis cannot be reached",
            )

    async def _heard(self) -> None:
        # Run by the heartbeat once Redis answered it.
        if self._alone:
            self._alone = False
            logger.info("cluster: the shared prompt cache is back")

    async def aclose(self) -> None:
        tasks = list(self._publishing)
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=CLOSE_WAIT)
            for task in late:
                task.cancel()


class _Publisher:
    """`PromptPublisher`: what our synthesis does, sent to the fill in order by one task."""

    def __init__(self, prompts: ClusterPrompts, fill: Fill, name: str) -> None:
        self._prompts = prompts
        self._fill = fill
        self._name = name
        self._queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._bytes = 0
        self._closed = False
        task = asyncio.get_running_loop().create_task(self._run(), name="cluster-prompt")
        prompts.publishing(task)

    def chunk(self, audio: bytes) -> None:
        self._bytes += len(audio)
        if self._bytes > self._prompts.max_prompt_bytes:
            self._close(ERROR, b"too long to share")
        else:
            self._put(CHUNK, audio)

    def waiting(self, seconds: float | None) -> None:
        self._put(WAIT, b"" if seconds is None else f"{seconds:.3f}".encode())

    def finish(self, audio: bytes) -> None:
        self._close(END, audio)

    def fail(self) -> None:
        self._close(ERROR, b"its synthesis failed or was abandoned")

    def _put(self, kind: str, data: bytes) -> None:
        if not self._closed:
            self._queue.put_nowait((kind, data))

    def _close(self, kind: str, data: bytes) -> None:
        self._put(kind, data)
        self._closed = True

    async def _run(self) -> None:
        fill = self._fill
        try:
            while not fill.closed:
                try:
                    async with asyncio.timeout(self._prompts.renew_every):
                        batch = [await self._queue.get()]
                except TimeoutError:
                    if not await fill.renew():
                        return  # taken over (our claim expired while Redis was away)
                    continue
                while len(batch) < BATCH and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                kind, data = batch[-1]
                if kind == END:
                    # Kept before the end is told, so nobody who sees the claim gone misses both.
                    await self._prompts.keep(self._name, data)
                    batch[-1] = (END, b"")
                await fill.add(batch)
        except ClusterUnavailable as exc:
            self._prompts.lost(str(exc))
        except Exception:
            logger.exception("cluster: publishing a prompt failed")


def _seconds(data: bytes) -> float | None:
    """A wait's length as the maker wrote it (empty: no longer waiting; garbage: as empty)."""
    try:
        return max(0.0, float(data)) if data else None
    except ValueError:
        return None
