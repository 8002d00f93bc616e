"""`Cluster`: one process's connection to the cluster's Redis, its heartbeat, and `degraded`.

Every Redis operation of the cluster goes through `Cluster.run`, which bounds it in time and turns
any Redis failure into `ClusterUnavailable` (a one-line message without the URL's password) and
marks the cluster degraded. The heartbeat renews this process's liveness key and, through the
renewers the registry and semaphores register with `on_beat`, their entries; a successful beat
clears `degraded` again. Stop the heartbeat (close, or die) and everything expires after `ttl`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from telebridge.cluster.errors import ClusterUnavailable
from telebridge.logs import redact

logger = logging.getLogger(__name__)

T = TypeVar("T")
Renewer = Callable[[], Awaitable[None]]


def safe_url(url: str) -> tuple[str, str]:
    """`url` with its password replaced by `***`, and the password (empty when there is none)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url, ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = parts.username or ""
    shown = urlunsplit((parts.scheme, f"{user}:***@{host}", parts.path, parts.query, ""))
    return shown, unquote(parts.password)


class Cluster:
    """This process (`process_id`) in the cluster; made by `await Cluster.connect(url, ...)`."""

    def __init__(
        self, client: Redis, *, process_id: str, prefix: str, heartbeat: float, ttl: float, url: str
    ) -> None:
        if not process_id or ":" in process_id:
            raise ValueError(f"process_id must be non-empty without ':', not {process_id!r}")
        if not 0 < heartbeat * 2 <= ttl:
            raise ValueError(f"ttl ({ttl}s) must be at least twice the heartbeat ({heartbeat}s)")
        self.client = client
        self.process_id = process_id
        self.prefix = prefix
        self.heartbeat = heartbeat
        self.ttl = ttl
        self.url, self._password = safe_url(url)
        # One operation may take this long before it counts as Redis lost; well under the ttl.
        self.op_timeout = min(1.0, ttl / 4)
        self._renewers: list[Renewer] = []
        self._reason: str | None = None
        self._beating: asyncio.Task[None] | None = None
        self._closed = False
        self._joined = False  # degraded is worth a log line only once we had joined

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        process_id: str,
        prefix: str = "telebridge",
        heartbeat: float = 2.0,
        ttl: float = 6.0,
    ) -> Cluster:
        """Connect, write the first heartbeat, start beating; `ClusterUnavailable` if we cannot."""
        shown, password = safe_url(url)
        timeout = min(1.0, ttl / 4)
        try:
            client = Redis.from_url(
                url,
                socket_timeout=timeout,
                socket_connect_timeout=timeout,
                # One retry: a pooled connection from before a Redis restart fails once, stale.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise ClusterUnavailable(
                f"TELEBRIDGE_REDIS_URL {shown} is not a Redis URL: {redact(str(exc), password)}"
            ) from None
        cluster = cls(
            client, process_id=process_id, prefix=prefix, heartbeat=heartbeat, ttl=ttl, url=url
        )
        try:
            await cluster.beat()
        except ClusterUnavailable:
            await client.aclose()
            raise
        cluster._joined = True
        cluster._beating = asyncio.create_task(cluster._beat_forever(), name="cluster-heartbeat")
        return cluster

    @property
    def degraded(self) -> bool:
        """True while Redis is lost: the last operation or heartbeat failed. `reason` says why."""
        return self._reason is not None

    @property
    def reason(self) -> str | None:
        """Why the cluster is degraded (one line, no password), or None when it is not."""
        return self._reason

    @property
    def ttl_ms(self) -> int:
        return int(self.ttl * 1000)

    def key(self, *parts: str) -> str:
        """A Redis key of this cluster: the prefix and `parts`, joined by ':'."""
        return ":".join((self.prefix, *parts))

    def script(self, lua: str) -> AsyncScript:
        """A Lua script, loaded again by redis-py when Redis forgot it (a restart)."""
        return self.client.register_script(lua)

    def on_beat(self, renewer: Renewer) -> None:
        """Run `renewer` on every heartbeat, after this process's liveness key is renewed."""
        self._renewers.append(renewer)

    async def run(self, operation: Callable[[Redis], Awaitable[T]]) -> T:
        """`operation(client)`, bounded in time; any Redis failure -> `ClusterUnavailable`."""
        if self._closed:
            raise ClusterUnavailable("the cluster connection is closed")
        try:
            async with asyncio.timeout(self.op_timeout * 2):
                return await operation(self.client)
        except (RedisError, OSError, TimeoutError) as exc:
            reason = self._describe(exc)
            if self._reason is None and self._joined:
                logger.warning("cluster degraded: %s", reason)
            self._reason = reason
            raise ClusterUnavailable(reason) from None

    def _describe(self, exc: BaseException) -> str:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        if isinstance(exc, TimeoutError) and not str(exc):
            detail = f"no answer within {self.op_timeout * 2:g}s"
        return redact(f"Redis at {self.url}: {detail}", self._password)

    async def beat(self) -> None:
        """One heartbeat now: the liveness key, then every renewer; a success clears `degraded`."""
        ttl_ms = self.ttl_ms
        stamp = str(time.time())
        await self.run(lambda r: r.set(self.key("proc", self.process_id), stamp, px=ttl_ms))
        for renew in self._renewers:
            await renew()
        if self._reason is not None:
            logger.info("cluster back: Redis at %s answers again", self.url)
            self._reason = None

    async def processes(self) -> list[str]:
        """The ids of the processes whose heartbeat is alive."""
        pattern = self.key("proc", "*")

        async def scan(r: Redis) -> list[str]:
            return [k.decode().rpartition(":")[2] async for k in r.scan_iter(match=pattern)]

        return sorted(await self.run(scan))

    async def _beat_forever(self) -> None:
        # The flag, not only the cancellation, ends the loop: a cancellation that lands inside
        # redis-py can be lost.
        while not self._closed:
            await asyncio.sleep(self.heartbeat)
            try:
                await self.beat()
            except ClusterUnavailable:
                pass  # `run` marked us degraded; the next beat tries again
            except Exception:
                logger.exception("cluster heartbeat failed")

    async def close(self) -> None:
        """Stop the heartbeat and disconnect. Entries are not removed: they expire after `ttl`."""
        self._closed = True
        if self._beating is not None:
            self._beating.cancel()
            await asyncio.wait([self._beating], timeout=self.heartbeat + 2 * self.op_timeout)
            self._beating = None
        await self.client.aclose()
