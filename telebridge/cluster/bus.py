"""`Bus`: requests from any process to the one that holds a call, over Redis pub/sub.

Each process listens on `<prefix>:bus:<process_id>` (its requests, when it `serve`s) and
`<prefix>:bus:<process_id>:replies` (the replies to its own requests). A request is one JSON message
`{"id", "op", "body", "reply"}`; the server's handler answers `{"id", "ok", "body" | "error"}` on
the reply channel. Nobody listening on the target channel is an immediate `BusError`, no reply in
time a `BusTimeout`, Redis lost a `ClusterUnavailable`. When the subscription breaks, the reader
fails the waiting requests and subscribes again until Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from telebridge.cluster.connect import Cluster
from telebridge.cluster.errors import BusError, BusTimeout, ClusterUnavailable

logger = logging.getLogger(__name__)

Handler = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]
"""What serves this process's requests: `await handler(op, body) -> reply body`."""


class Bus:
    """This process's end of the control bus."""

    def __init__(self, cluster: Cluster) -> None:
        self._cluster = cluster
        self._requests = cluster.key("bus", cluster.process_id)
        self._replies = cluster.key("bus", cluster.process_id, "replies")
        self._handler: Handler | None = None
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._answering: set[asyncio.Task[None]] = set()
        self._closing = False

    async def serve(self, handler: Handler) -> None:
        """Answer requests to this process with `handler`; returns once subscribed."""
        self._handler = handler
        if self._pubsub is None:
            await self._start()
        else:
            pubsub = self._pubsub
            await self._cluster.run(lambda _: pubsub.subscribe(self._requests))
            await self._subscribed([self._requests])

    async def request(
        self,
        process_id: str,
        op: str,
        body: dict[str, Any],
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> dict[str, Any]:
        """Ask `process_id` to do `op` with `body`; its reply body (`BusError`, `BusTimeout`)."""
        if self._pubsub is None:
            await self._start()
        request_id = uuid.uuid4().hex
        reply = asyncio.get_running_loop().create_future()
        self._pending[request_id] = reply
        message = json.dumps({"id": request_id, "op": op, "body": body, "reply": self._replies})
        target = self._cluster.key("bus", process_id)
        try:
            heard = await self._cluster.run(lambda r: r.publish(target, message))
            if not heard:
                raise BusError(f"process {process_id} does not serve the bus (op {op!r})")
            try:
                async with asyncio.timeout(timeout):
                    answer = await reply
            except TimeoutError:
                raise BusTimeout(
                    f"no reply from process {process_id} to {op!r} within {timeout:g}s"
                ) from None
        finally:
            self._pending.pop(request_id, None)
        if not answer.get("ok"):
            raise BusError(f"process {process_id} failed {op!r}: {answer.get('error')}")
        body_back: dict[str, Any] = answer.get("body") or {}
        return body_back

    async def close(self) -> None:
        """Stop listening and answering; waiting requests fail with `ClusterUnavailable`."""
        self._closing = True
        tasks = [t for t in (self._reader, *self._answering) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=2.0)
        self._reader = None
        self._fail_pending("the bus is closed")
        await self._drop_pubsub()

    async def _start(self) -> None:
        channels = [self._replies] + ([self._requests] if self._handler else [])

        async def subscribe(r: Redis) -> PubSub:
            pubsub = r.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(*channels)
            except BaseException:
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                raise
            return pubsub

        pubsub = await self._cluster.run(subscribe)
        await self._subscribed(channels)
        if self._pubsub is None:
            self._pubsub = pubsub
        else:  # another caller subscribed meanwhile
            await pubsub.aclose()  # type: ignore[no-untyped-call]
        if self._reader is None:
            self._reader = asyncio.create_task(self._read(), name="cluster-bus")

    async def _subscribed(self, channels: list[str]) -> None:
        # SUBSCRIBE is not waited for by redis-py; until Redis counts us, a request sent to this
        # process would find nobody listening.
        async def counted(r: Redis) -> bool:
            counts = await r.pubsub_numsub(*channels)
            return all(n > 0 for _, n in counts)

        for _ in range(50):
            if await self._cluster.run(counted):
                return
            await asyncio.sleep(0.01)

    async def _read(self) -> None:
        # The flag, not only the cancellation, ends the loop (redis-py can lose a cancellation).
        while not self._closing:
            pubsub = self._pubsub
            if pubsub is None:  # lost: subscribe again once Redis is back
                await asyncio.sleep(self._cluster.heartbeat / 2)
                with contextlib.suppress(ClusterUnavailable):
                    await self._start()
                continue
            try:
                message = await pubsub.get_message(timeout=1.0)
            except (RedisError, OSError) as exc:
                logger.warning("cluster bus lost its subscription: %s", type(exc).__name__)
                self._fail_pending("the bus lost Redis")
                await self._drop_pubsub()
                continue
            if message is not None and message.get("type") == "message":
                self._dispatch(message["channel"].decode(), message["data"])

    def _dispatch(self, channel: str, data: bytes) -> None:
        try:
            parsed = json.loads(data)
            message_id = str(parsed["id"])
        except (ValueError, KeyError, TypeError):
            logger.warning("cluster bus dropped a malformed message on %s", channel)
            return
        if channel == self._replies:
            reply = self._pending.pop(message_id, None)
            if reply is not None and not reply.done():
                reply.set_result(parsed)
        elif channel == self._requests and self._handler is not None:
            task = asyncio.create_task(self._answer(self._handler, parsed))
            self._answering.add(task)
            task.add_done_callback(self._answering.discard)

    async def _answer(self, handler: Handler, request: dict[str, Any]) -> None:
        answer: dict[str, Any] = {"id": request["id"]}
        try:
            answer.update(ok=True, body=await handler(str(request["op"]), request.get("body", {})))
        except Exception as exc:
            answer.update(ok=False, error=f"{type(exc).__name__}: {exc}")
        message = json.dumps(answer)
        reply_to = str(request.get("reply", ""))
        try:
            await self._cluster.run(lambda r: r.publish(reply_to, message))
        except ClusterUnavailable:
            logger.warning("cluster bus could not reply to %s", request.get("op"))

    def _fail_pending(self, why: str) -> None:
        for reply in self._pending.values():
            if not reply.done():
                reply.set_exception(ClusterUnavailable(why))
        self._pending.clear()

    async def _drop_pubsub(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        if pubsub is not None:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
