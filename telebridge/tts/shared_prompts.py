"""`SharedPrompts`: the prompt cache's layer shared with other processes (a cluster's): complete
audio kept for all, and syntheses under way that another process can follow chunk by chunk, so a
prompt is synthesised once for all of them. The prompt cache asks it on a miss; the server
implements it. tts knows nothing of how it is shared."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from telebridge.tts.cache_folder import Key, encode_key

__all__ = [
    "Following",
    "Owned",
    "PromptLost",
    "PromptPublisher",
    "SharedPrompts",
    "Stored",
    "Waiting",
    "shared_name",
]


class PromptLost(Exception):
    """A synthesis followed from another process ended without its end: that process failed,
    died or gave up, or the shared layer was lost. Its chunks are not the whole prompt."""


@dataclass(frozen=True)
class Waiting:
    """The followed synthesis waits to be admitted to Waves for at least `seconds` more (0: a turn
    may come at any moment), or, with None, no longer waits."""

    seconds: float | None


class PromptPublisher(Protocol):
    """Our claim on a prompt the others follow: what our synthesis does, told as it happens.
    Each method returns at once (the publishing runs in the background)."""

    def chunk(self, audio: bytes) -> None: ...

    def waiting(self, seconds: float | None) -> None: ...

    def finish(self, audio: bytes) -> None:
        """The synthesis is complete and `audio` is all of it: keep it for the others."""
        ...

    def fail(self) -> None:
        """The synthesis failed or was abandoned: followers synthesise it themselves."""
        ...


@dataclass(frozen=True)
class Stored:
    """The complete audio, kept by the others."""

    audio: bytes


@dataclass(frozen=True)
class Owned:
    """Nobody makes it: we do, telling `publisher` as we go."""

    publisher: PromptPublisher


@dataclass(frozen=True)
class Following:
    """Another process is making it: its chunks (and admission waits) as they come; ends after
    the last chunk or raises `PromptLost`."""

    chunks: AsyncIterator[bytes | Waiting]


class SharedPrompts(Protocol):
    async def open(self, name: str) -> Stored | Owned | Following | None:
        """What the others have of prompt `name` (see `shared_name`); None when they cannot be
        reached now (the prompt is then this process's alone). Never raises for the shared layer's
        own failures."""
        ...

    async def aclose(self) -> None:
        """Finish the publishing under way (bounded), at shutdown."""
        ...


def shared_name(key: Key) -> str:
    """A short stable name of `key` (its text may be long): the same in every process."""
    return hashlib.sha256(encode_key(key)).hexdigest()
