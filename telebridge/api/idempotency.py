"""`Idempotency-Key` for `POST /v1/calls`: a request retried with the same key gets the first
one's answer and places no second call, while the first is still running too.

Answers are kept `ttl` seconds (a day), at most `max_keys` of them, in this process's memory,
and, given `shared` (the server gives the cluster's, with `TELEBRIDGE_REDIS_URL`), in the cluster
too, so a retry that reaches another process is answered the same; without a cluster a restart
forgets them. A key reused with a different body is refused (422).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from telebridge.api.bodies import ApiError

__all__ = ["Answer", "IdempotencyStore", "SharedAnswers", "SharedClaim"]

MAX_KEY_CHARS = 255
# Answers that say "try again later" are not kept: the retry must really try again.
NOT_KEPT = frozenset({429, 503})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]
    headers: dict[str, str]


class SharedClaim(Protocol):
    """What the shared memory holds for a key: `mine` (this request runs), else the first
    request's fingerprint and answer (`{"status", "body", "headers"}`)."""

    @property
    def mine(self) -> bool: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def answer(self) -> dict[str, Any] | None: ...


class SharedAnswers(Protocol):
    """Answers shared by several processes. `claim` returns None when the memory cannot be
    reached (this process's memory alone then counts) and raises `ApiError` when the first
    request is still running past the lease (409) or failed while this one waited (500)."""

    async def claim(self, client: str, key: str, fingerprint: str) -> SharedClaim | None: ...
    async def settle(
        self, client: str, key: str, fingerprint: str, answer: dict[str, Any]
    ) -> None: ...
    async def drop(self, client: str, key: str) -> None: ...


@dataclass(slots=True)
class _Entry:
    fingerprint: str
    at: float
    answer: asyncio.Future[Answer]


class IdempotencyStore:
    def __init__(
        self,
        *,
        ttl: float = 86400.0,
        max_keys: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        shared: Callable[[], SharedAnswers | None] | None = None,
    ) -> None:
        self._shared = shared
        self._ttl = ttl
        self._max = max_keys
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], _Entry] = OrderedDict()

    @staticmethod
    def check_key(key: str) -> None:
        if not key or len(key) > MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
            raise ApiError(400, f"Idempotency-Key: 1 to {MAX_KEY_CHARS} printable ASCII characters")

    async def run(
        self,
        client: str,
        key: str,
        request: dict[str, Any],
        work: Callable[[], Awaitable[Answer]],
    ) -> tuple[Answer, bool]:
        """The answer for `key` (True: replayed from an earlier request), running `work` once."""
        self._expire()
        fingerprint = hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()
        entry = self._entries.get((client, key))
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise ApiError(422, "Idempotency-Key was already used with a different request")
            return await asyncio.shield(entry.answer), True
        future: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._entries[(client, key)] = _Entry(fingerprint, self._clock(), future)
        shared = self._shared() if self._shared is not None else None
        try:
            claim = None if shared is None else await shared.claim(client, key, fingerprint)
        except BaseException as exc:
            self._fail(client, key, future, exc)
            raise
        if claim is not None and not claim.mine:
            # Another process ran the first request with this key.
            if claim.fingerprint != fingerprint or claim.answer is None:
                reused = ApiError(422, "Idempotency-Key was already used with a different request")
                self._fail(client, key, future, reused)
                raise reused
            answer = Answer(claim.answer["status"], claim.answer["body"], claim.answer["headers"])
            future.set_result(answer)
            return answer, True
        owned = shared if claim is not None else None
        try:
            answer = await work()
        except ApiError as exc:
            answer = Answer(exc.status, exc.body(), exc.headers)
        except BaseException as exc:
            # Not known whether it placed a call: keep no answer, and fail those waiting.
            self._fail(client, key, future, ApiError(500, "the first request with this key failed"))
            if owned is not None:
                await asyncio.shield(owned.drop(client, key))
            raise exc from None
        if answer.status in NOT_KEPT:
            self._entries.pop((client, key), None)
        future.set_result(answer)
        if owned is not None:
            if answer.status in NOT_KEPT:
                await owned.drop(client, key)
            else:
                kept = {"status": answer.status, "body": answer.body, "headers": answer.headers}
                await owned.settle(client, key, fingerprint, kept)
        return answer, False

    def _fail(
        self, client: str, key: str, future: asyncio.Future[Answer], exc: BaseException
    ) -> None:
        """No answer for `key`: forget it here, and fail the requests waiting for it."""
        self._entries.pop((client, key), None)
        if not isinstance(exc, ApiError):
            exc = ApiError(500, "the first request with this key failed")
        future.set_exception(exc)
        future.exception()  # retrieved: nobody may be waiting

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if entry.at >= cutoff and len(self._entries) <= self._max:
                break
            if not entry.answer.done():
                break  # still running: never dropped under a waiting retry
            del self._entries[key]
