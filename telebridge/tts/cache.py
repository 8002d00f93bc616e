"""A prompt cache in front of Waves: fixed prompts play without a round trip.

Audio is cached by everything that shapes it (text, voice, model, speed, language, rate) in a
size-bounded LRU. A prompt being synthesised is shared while it streams: a second request for it
(the answer webhook started it early, or two calls greet at once) reads the same chunks as they
arrive instead of asking Waves twice. Only complete audio is kept: a failed or interrupted request
leaves nothing behind.

A shared synthesis is asked for on behalf of every reader, so no one call's deadline bounds it
(the Waves guard's own queue timeout does); each reader still gives up at its own deadline while
the synthesis waits for the guard to admit it, as it would have alone.

With a folder, complete audio is also written to disk in the background, and a prompt missing from
memory is looked up there before Waves is asked, as part of the same shared synthesis: fixed
prompts survive a restart and still play while Waves is down.

With a shared layer (`SharedPrompts`, a cluster's), a prompt missing here is looked for there next:
complete audio kept by another process, or another process's synthesis under way, followed chunk by
chunk; else this process claims it, and the others follow its chunks. A followed synthesis that
ends without its end is made here instead, from the start while no reader has heard a chunk of
it (else the prompt fails as a Waves failure mid-prompt does). Its admission waits are relayed, so
each reader still gives up at its own deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from telebridge.tts.cache_folder import Key, PromptFolder
from telebridge.tts.errors import WavesRateLimited, WavesTruncated
from telebridge.tts.guard import admission_wait, speech_deadline
from telebridge.tts.segmented import text_speech
from telebridge.tts.shared_prompts import (
    Following,
    Owned,
    PromptLost,
    PromptPublisher,
    SharedPrompts,
    Stored,
    Waiting,
    shared_name,
)
from telebridge.tts.speech import SpeechOptions, Synthesizer, TextSpeech

logger = logging.getLogger(__name__)

__all__ = ["Key", "PromptCache"]

DEFAULT_DISK_MAX_BYTES = 512 * 2**20
# Looks in the shared layer for one prompt, at most: each synthesis followed there and lost before
# anyone here heard it (its process died or failed) costs one; then the prompt is made here alone.
SHARED_ATTEMPTS = 3


@dataclass
class _Fill:
    """A synthesis in progress that several readers can follow."""

    chunks: list[bytes] = field(default_factory=list)
    done: bool = False
    error: BaseException | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    readers: int = 0
    task: asyncio.Task[None] | None = None
    # Started by a reader (not a prefetch): its hit or miss is counted once the source is known.
    counted: bool = False
    # While the guard holds the synthesis back: the earliest time it can be admitted.
    admit_at: float | None = None
    # A reader took a chunk: the chunks can no longer be replaced by another synthesis's.
    heard: bool = False
    # Told of the admission waits too, while other processes follow this synthesis.
    relay: PromptPublisher | None = None

    def waiting(self, until: float | None) -> None:
        """The guard's report on admission (see `guard.admission_wait`): readers re-check."""
        if until != self.admit_at:
            self.admit_at = until
            self.changed.set()
            if self.relay is not None:
                self.relay.waiting(None if until is None else max(0.0, until - time.monotonic()))


class PromptCache:
    """A `Synthesizer` that remembers what `inner` said. `max_bytes` 0 turns storing off.

    `directory` (which must exist: see `cache_folder.open_folder`) adds the on-disk layer, holding
    at most `disk_max_bytes`; it works with `max_bytes` 0 too (every hit then reads the file).
    `shared` adds the layer shared with other processes, looked in after the disk.
    """

    def __init__(
        self,
        inner: Synthesizer,
        *,
        max_bytes: int,
        directory: Path | None = None,
        disk_max_bytes: int = DEFAULT_DISK_MAX_BYTES,
        shared: SharedPrompts | None = None,
    ) -> None:
        self._inner = inner
        self._max_bytes = max_bytes
        self._store: OrderedDict[Key, bytes] = OrderedDict()
        self._size = 0
        self._fills: dict[Key, _Fill] = {}
        self._folder = PromptFolder(directory, disk_max_bytes) if directory is not None else None
        self._writes: set[asyncio.Task[None]] = set()
        self._write_lock = asyncio.Lock()  # one write (and its eviction scan) at a time
        self._shared = shared
        self._closed = False
        self.hits = 0
        self.misses = 0
        self.disk_hits = 0
        self.shared_hits = 0  # complete audio from the shared layer
        self.follows = 0  # another process's synthesis followed to its end

    @property
    def size(self) -> int:
        return self._size

    @staticmethod
    def key(text: str, sample_rate: int, options: SpeechOptions) -> Key:
        return (text, options.voice_id, options.model, options.speed, options.language, sample_rate)

    def stream(
        self, *, sample_rate: int, options: SpeechOptions, request_id: str | None = None
    ) -> TextSpeech:
        """Streamed text is not known ahead: it goes past the cache to Waves."""
        return text_speech(
            self._inner, sample_rate=sample_rate, options=options, request_id=request_id
        )

    def synthesize(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> AsyncIterator[bytes]:
        return self._synthesize(text, sample_rate, options, request_id)

    async def _synthesize(
        self, text: str, sample_rate: int, options: SpeechOptions, request_id: str | None
    ) -> AsyncIterator[bytes]:
        key = self.key(text, sample_rate, options)
        audio = self._store.get(key)
        if audio is not None:
            self.hits += 1
            self._store.move_to_end(key)
            yield audio
            return
        fill = self._fills.get(key)
        if fill is None:
            fill = self._start(key, text, sample_rate, options, request_id, counted=True)
        else:
            self.hits += 1
        fill.readers += 1
        try:
            seen = 0
            while True:
                while seen < len(fill.chunks):
                    seen += 1
                    fill.heard = True
                    yield fill.chunks[seen - 1]
                if fill.error is not None:
                    raise fill.error
                if fill.done:
                    return
                fill.changed.clear()
                await self._wait(fill)
        finally:
            fill.readers -= 1
            if fill.readers == 0 and not fill.done and fill.task is not None:
                # Nobody listens any more (barge-in, hang-up): stop Waves for this prompt.
                fill.task.cancel()

    @staticmethod
    async def _wait(fill: _Fill) -> None:
        """Wait for news of `fill`; while it waits for admission, only until our own deadline."""
        deadline = speech_deadline.get()
        if fill.admit_at is None or deadline is None:
            await fill.changed.wait()
            return
        if fill.admit_at > deadline:
            raise WavesRateLimited(
                "Waves cannot take this prompt before the call's deadline",
                retry_after=max(0.0, fill.admit_at - time.monotonic()),
            )
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await fill.changed.wait()
        except TimeoutError:
            message = "Waves did not take this prompt by the call's deadline"
            raise WavesRateLimited(message) from None

    def prefetch(self, text: str, *, sample_rate: int, options: SpeechOptions) -> None:
        """Start synthesising `text` now so a call about to connect finds it ready."""
        key = self.key(text, sample_rate, options)
        if key in self._store or key in self._fills:
            return
        fill = self._start(key, text, sample_rate, options, None)
        # Kept alive without a reader until the call connects (or it completes and is stored).
        fill.readers += 1
        assert fill.task is not None
        fill.task.add_done_callback(lambda _: self._release(fill))

    @staticmethod
    def _release(fill: _Fill) -> None:
        fill.readers -= 1

    def _start(
        self,
        key: Key,
        text: str,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None,
        *,
        counted: bool = False,
    ) -> _Fill:
        fill = _Fill(counted=counted)
        self._fills[key] = fill
        # Not the starting call's context: its deadline would bound every call that joins.
        context = contextvars.copy_context()
        context.run(speech_deadline.set, None)
        context.run(admission_wait.set, fill.waiting)
        fill.task = asyncio.create_task(
            self._fill(key, fill, text, sample_rate, options, request_id), context=context
        )
        return fill

    async def _fill(
        self,
        key: Key,
        fill: _Fill,
        text: str,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None,
    ) -> None:
        try:
            audio = await self._read_disk(key)
            if audio is not None:
                self.disk_hits += 1
                self._count(fill, hit=True)
                fill.chunks.append(audio)
            else:
                audio = await self._from_shared(key, fill, text, sample_rate, options, request_id)
                if audio is None:
                    self._count(fill, hit=False)
                    audio = await self._from_waves(fill, text, sample_rate, options, request_id)
                self._write_disk(key, audio)
            fill.done = True
            self._keep(key, audio)
        except asyncio.CancelledError:
            fill.error = asyncio.CancelledError()
            raise
        except Exception as exc:
            fill.error = exc
        finally:
            self._fills.pop(key, None)
            fill.changed.set()

    def _count(self, fill: _Fill, *, hit: bool) -> None:
        if fill.counted:
            if hit:
                self.hits += 1
            else:
                self.misses += 1

    async def _from_waves(
        self,
        fill: _Fill,
        text: str,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None,
        publisher: PromptPublisher | None = None,
    ) -> bytes:
        """Synthesise into `fill` (telling `publisher`, whose followers hear it too)."""
        chunks = self._inner.synthesize(
            text, sample_rate=sample_rate, options=options, request_id=request_id
        )
        fill.relay = publisher
        try:
            async for chunk in chunks:
                fill.chunks.append(chunk)
                fill.changed.set()
                if publisher is not None:
                    publisher.chunk(chunk)
            audio = b"".join(fill.chunks)
        except BaseException:
            if publisher is not None:
                publisher.fail()
            raise
        finally:
            fill.relay = None
            with contextlib.suppress(Exception):
                await chunks.aclose()  # type: ignore[attr-defined]
        if publisher is not None:
            publisher.finish(audio)
        return audio

    async def _from_shared(
        self,
        key: Key,
        fill: _Fill,
        text: str,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None,
    ) -> bytes | None:
        """The audio by way of the shared layer (kept there, followed, or made here and told to
        it); None when the prompt is this process's alone (no layer, or it cannot be reached)."""
        if self._shared is None:
            return None
        name = shared_name(key)
        for _ in range(SHARED_ATTEMPTS):
            found = await self._shared.open(name)
            if found is None:
                return None
            if isinstance(found, Stored):
                self.shared_hits += 1
                self._count(fill, hit=True)
                fill.chunks.append(found.audio)
                return found.audio
            if isinstance(found, Owned):
                self._count(fill, hit=False)
                return await self._from_waves(
                    fill, text, sample_rate, options, request_id, found.publisher
                )
            audio = await self._follow(fill, found)
            if audio is not None:
                self.follows += 1
                self._count(fill, hit=True)
                return audio
        return None

    @staticmethod
    async def _follow(fill: _Fill, following: Following) -> bytes | None:
        """Another process's synthesis into `fill`: its audio, or None when it was lost before
        any reader heard a chunk of it (`fill` is then as it was)."""
        try:
            async for item in following.chunks:
                if isinstance(item, Waiting):
                    until = None if item.seconds is None else time.monotonic() + item.seconds
                    fill.waiting(until)
                    continue
                fill.chunks.append(item)
                fill.changed.set()
        except PromptLost as exc:
            fill.waiting(None)
            if fill.heard:
                message = f"the process synthesising this prompt stopped before its end: {exc}"
                raise WavesTruncated(message) from None
            logger.info("prompt cache: %s; synthesising it here", exc)
            fill.chunks.clear()
            return None
        finally:
            with contextlib.suppress(Exception):
                await following.chunks.aclose()  # type: ignore[attr-defined]
        fill.waiting(None)
        return b"".join(fill.chunks)

    def _keep(self, key: Key, audio: bytes) -> None:
        if not audio or len(audio) > self._max_bytes // 4:
            return  # one prompt never takes more than a quarter of the cache
        self._store[key] = audio
        self._size += len(audio)
        while self._size > self._max_bytes:
            _, dropped = self._store.popitem(last=False)
            self._size -= len(dropped)

    # --- the on-disk layer -------------------------------------------------------------

    async def _read_disk(self, key: Key) -> bytes | None:
        if self._folder is None:
            return None
        try:
            return await asyncio.to_thread(self._folder.read, key)
        except Exception:  # the disk is an optimisation: Waves still answers
            logger.exception("prompt cache: reading from %s failed", self._folder.path)
            return None

    def _write_disk(self, key: Key, audio: bytes) -> None:
        """Store complete audio on disk in the background (the caller is already hearing it)."""
        folder = self._folder
        if folder is None or self._closed or not audio or len(audio) > folder.max_bytes // 4:
            return  # as in memory, one prompt never takes more than a quarter of the folder
        task = asyncio.create_task(self._persist(folder, key, audio))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _persist(self, folder: PromptFolder, key: Key, audio: bytes) -> None:
        try:
            async with self._write_lock:
                await asyncio.to_thread(folder.write, key, audio)
        except Exception:
            logger.exception("prompt cache: writing to %s failed", folder.path)

    async def aclose(self) -> None:
        """Stop syntheses nobody will hear and finish the disk writes under way (shutdown), then
        what the shared layer still publishes."""
        self._closed = True
        fills = [f.task for f in self._fills.values() if f.task is not None]
        for task in fills:
            task.cancel()
        # A write runs in a thread that cannot be cancelled: wait for it to end cleanly.
        await asyncio.gather(*fills, *self._writes, return_exceptions=True)
        if self._shared is not None:
            await self._shared.aclose()
