"""`SharedSlots`: the cap on Waves requests in flight when other processes share it (a cluster's
`WAVES_MAX_IN_FLIGHT`). The guard takes its slots through one when it is given one; the server
implements it. tts knows nothing of how the slots are shared."""

from __future__ import annotations

from typing import Protocol

__all__ = ["SharedSlots"]


class SharedSlots(Protocol):
    # The timeout is the guard's deadline: the slot's wait is bounded by the prompt's own.
    async def acquire(self, timeout: float) -> str | None:  # noqa: ASYNC109
        """A slot within `timeout` s, in arrival order across processes: its token. None when the
        shared cap cannot be reached now (the guard then counts this process's requests alone);
        `TimeoutError` when no slot came free in time."""
        ...

    def release(self, token: str) -> None:
        """Give the slot of `token` back, without waiting for it to be given."""
        ...
