"""What the call API does to a live call: speak on it, end it, transfer it (`CallSession`'s
methods for the outside world, kept apart from the call's own lifecycle)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from telebridge.call.state import CallState
from telebridge.flows import SpeechOverrides
from telebridge.flows.model import TRANSFER_TIMEOUT
from telebridge.tts.errors import TTSError

if TYPE_CHECKING:
    from telebridge.call.playout import Playout
    from telebridge.call.speaker import Speaker

__all__ = ["TRANSFER_CLOSE_WAIT", "CallNotLive", "OutsideControl"]

logger = logging.getLogger("telebridge.call.session")

# After a transfer the carrier takes the caller elsewhere and closes the stream itself.
TRANSFER_CLOSE_WAIT = 10.0


class CallNotLive(Exception):
    """The call cannot take that request now (it is ending, or already being ended)."""


class OutsideControl:
    """The call API's side of `CallSession` (which provides everything declared here)."""

    call_id: str
    ended_by: dict[str, str]
    _speaker: Speaker
    _playout: Playout
    _announcements: set[asyncio.Task[None]]
    _stop_reason: str | None
    _stop_action: Callable[[], Awaitable[str]] | None
    _flow_task: asyncio.Task[str] | None

    @property
    def state(self) -> CallState:
        raise NotImplementedError

    def _emit(self, kind: str, **fields: object) -> None:
        raise NotImplementedError

    async def stop(self, reason: str) -> None:
        raise NotImplementedError

    async def transfer(self, to: str, timeout: float) -> bool:  # noqa: ASYNC109
        raise NotImplementedError

    async def hangup(self, reason: str) -> None:
        raise NotImplementedError

    async def _await_close(self, limit: float) -> None:
        raise NotImplementedError

    def announce(self, text: str, overrides: SpeechOverrides, *, interrupt: bool) -> None:
        """Speak `text` after the utterance under way, or at once with `interrupt` (which cuts
        off what is playing and drops what was announced before). The flow goes on."""
        self._require_live()
        if interrupt:
            self._emit("api_interrupt")
            for task in self._announcements:
                task.cancel()
            self._speaker.cut()
            self._playout.clear()
        task = asyncio.create_task(self._announce(text, overrides), name=f"say:{self.call_id}")
        self._announcements.add(task)
        task.add_done_callback(self._announcements.discard)

    async def _announce(self, text: str, overrides: SpeechOverrides) -> None:
        self._emit("api_say", text=text)
        try:
            await self._speaker.say(text, barge_in=False, overrides=overrides)
        except TTSError as exc:
            # The caller missed an announcement; the flow, which did not ask for it, goes on.
            logger.error("call %s: speech asked for by the API failed: %s", self.call_id, exc)
            if self._speaker.failure is exc:
                self._speaker.failure = None

    async def _finish_announcements(self, limit: float) -> None:
        pending = set(self._announcements)
        if pending:
            _, late = await asyncio.wait(pending, timeout=limit)
            for task in late:
                task.cancel()

    async def end_from_outside(self, reason: str, *, by: str = "api") -> None:
        """Hang up once what is queued (announcements too) has played; the flow stops now."""
        self._require_live()
        self.ended_by = {"by": by, "reason": reason}
        await self.stop(f"{by}-hangup")

    async def transfer_from_outside(self, to: str, *, by: str = "api") -> None:
        """Transfer once what is queued has played; the flow stops now. Refused: hang up."""
        self._require_live()
        self.ended_by = {"by": by, "transfer": to}

        async def transfer() -> str:
            if await self.transfer(to, TRANSFER_TIMEOUT):
                await self._await_close(TRANSFER_CLOSE_WAIT)
                return "transfer"
            await self.hangup("error:transfer failed")
            return "error:transfer failed"

        self._stop_action = transfer
        await self.stop(f"{by}-transfer")

    def _require_live(self) -> None:
        if self.state is not CallState.STREAMING:
            raise CallNotLive(f"the call is {self.state.value}")
        if self._stop_reason is not None:
            raise CallNotLive(f"the call is being ended ({self._stop_reason})")
        if self._flow_task is None or self._flow_task.done():
            raise CallNotLive("the call's flow has ended")
