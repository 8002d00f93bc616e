"""`ClusterAnswers`: the call API's `Idempotency-Key` answers shared by the cluster
(`SharedAnswers` of api/idempotency.py over cluster/answers.py), so a `POST /v1/calls` retried
onto another process places no second call. While Redis is lost each process remembers its own
answers only (the cluster link warns once)."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from telebridge.api.bodies import ApiError
from telebridge.cluster import ClusterUnavailable
from telebridge.cluster.answers import Answers, Claim
from telebridge.server.cluster_link import ClusterLink

__all__ = ["ClusterAnswers"]

logger = logging.getLogger(__name__)


class ClusterAnswers:
    def __init__(self, link: ClusterLink, *, lease: float = 60.0) -> None:
        self._link = link
        # `lease`: how long a request may run before a retry elsewhere stops waiting for it.
        self._answers = Answers(link.cluster, lease=lease)

    async def claim(self, client: str, key: str, fingerprint: str) -> Claim | None:
        if self._link.cluster.degraded:
            self._link.fell_back()
            return None
        try:
            return await self._answers.claim(client, key, fingerprint)
        except ClusterUnavailable:
            self._link.fell_back()
            return None
        except TimeoutError:
            raise ApiError(
                409, "a request with this Idempotency-Key is still running on another process"
            ) from None
        except LookupError:
            raise ApiError(500, "the first request with this key failed") from None

    async def settle(self, client: str, key: str, fingerprint: str, answer: dict[str, Any]) -> None:
        try:
            await self._answers.settle(client, key, fingerprint, answer)
        except ClusterUnavailable:
            logger.warning("cluster: an Idempotency-Key answer is kept by this process only")

    async def drop(self, client: str, key: str) -> None:
        with contextlib.suppress(ClusterUnavailable):  # else the claim's lease ends it
            await self._answers.drop(client, key)
