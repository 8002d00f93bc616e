"""The keys a caller pressed, waiting for the flow, and whether a key cuts the prompt off.

A prompt started with barge-in is interruptible: the first key pressed while it still plays
cuts it off (once), and the prompt then counts as interrupted until the next one starts.
"""

from __future__ import annotations

import asyncio
from collections import deque

__all__ = ["KeyBuffer"]


class KeyBuffer:
    """DTMF keys in the order pressed, and the barge-in state of the current prompt."""

    def __init__(self) -> None:
        self._digits: deque[str] = deque()
        self._pressed = asyncio.Event()
        self.interruptible = False  # a key now cuts the prompt off
        self.interrupted = False  # a key cut the current prompt off

    @property
    def pending(self) -> bool:
        """Keys have been pressed that the flow has not taken yet."""
        return bool(self._digits)

    def start_prompt(self, barge_in: bool) -> None:
        """A new prompt begins: keys cut it off only with `barge_in`."""
        self.interruptible = barge_in
        self.interrupted = False

    def press(self, digit: str, *, prompt_playing: bool) -> bool:
        """Keep a key press; True when it cuts the prompt off (the caller then clears it)."""
        self._digits.append(digit)
        self._pressed.set()
        if self.interruptible and prompt_playing:
            self.interruptible = False
            self.interrupted = True
            return True
        return False

    def take(self) -> str:
        """The keys pressed so far, forgotten here."""
        digits = "".join(self._digits)
        self._digits.clear()
        return digits

    async def next_digit(self, timeout: float) -> str | None:  # noqa: ASYNC109
        """The oldest key not taken yet, waiting up to `timeout` seconds for one."""
        if not self._digits:
            self._pressed.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._pressed.wait()
            except TimeoutError:
                return None
        return self._digits.popleft() if self._digits else None
