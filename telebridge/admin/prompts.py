"""Making the flows' fixed prompts ahead of calls (`telebridge prompts`): each one synthesised
once through Waves' HTTP sync endpoint and stored in the prompt cache's folder, so that a serving
bridge plays it without asking Waves, even while Waves is down.

What is stored must be found by the serving bridge, so everything here is its own: the speech
options a call uses for a step (`speech_for` over the WAVES_* defaults), the carriers' rates, the
cache key (`PromptCache.key`), the file format and the folder (`folder_for`, `PromptFolder`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from telebridge.call.speaker import speech_for
from telebridge.flows.model import Flow
from telebridge.flows.prompts import fixed_prompts
from telebridge.settings import ConfigError, Settings
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import (
    Key,
    PromptFolder,
    file_name,
    folder_for,
    holds,
    open_folder,
    prompt_files,
)
from telebridge.tts.errors import TTSError, WavesRateLimited
from telebridge.tts.speech import SpeechOptions

__all__ = ["DEFAULT_CONCURRENCY", "PLIVO_RATE", "RATE_LIMITED_TRIES", "Job", "Outcome",
           "Renderer", "carrier_rates", "concurrency", "evicted", "open_renderer", "other_files",
           "partition", "plan", "prompt_folder", "render"]  # fmt: skip

# Prompts synthesised at once, unless WAVES_MAX_IN_FLIGHT allows fewer.
DEFAULT_CONCURRENCY = 4
PLIVO_RATE = 8000  # Plivo streams are 8 kHz mu-law (carriers/plivo.py)
# A prompt Waves refuses as over the plan's limit (429) is asked for again, after the wait the
# server names (Retry-After) or 1, 2, 4, 8 s, this many times in all before it fails.
RATE_LIMITED_TRIES = 5
MAX_RATE_LIMITED_WAIT_S = 30.0

logger = logging.getLogger(__name__)


class Renderer(Protocol):
    """Whole prompts as PCM16LE: the Waves HTTP sync client, or a test's fake."""

    async def render(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> bytes: ...


@dataclass(frozen=True, slots=True)
class Job:
    """One prompt at one rate, named by the flow and step that first speak it."""

    flow: str
    step: str
    text: str
    options: SpeechOptions
    sample_rate: int

    @property
    def key(self) -> Key:
        return PromptCache.key(self.text, self.sample_rate, self.options)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of a job: `error` is None when its audio is in the folder."""

    job: Job
    error: str | None = None


def carrier_rates(settings: Settings) -> tuple[list[int], bool]:
    """The rates the configured carriers play at, and whether none is configured (then the
    rates of both, since a flow may be called on either)."""
    rates: list[int] = []
    if settings.plivo_enabled:
        rates.append(PLIVO_RATE)
    if settings.vonage_enabled:
        rates.append(settings.vonage_audio_rate)
    guessed = not rates
    if guessed:
        rates = [PLIVO_RATE, settings.vonage_audio_rate]
    return sorted(set(rates)), guessed


def concurrency(settings: Settings) -> int:
    """Prompts rendered at once: DEFAULT_CONCURRENCY, or WAVES_MAX_IN_FLIGHT when lower."""
    cap = settings.waves_max_in_flight
    return min(DEFAULT_CONCURRENCY, cap) if cap > 0 else DEFAULT_CONCURRENCY


def prompt_folder(settings: Settings, *, create: bool) -> PromptFolder:
    """The folder the serving bridge reads prompts from; `create` makes it (and proves it
    writable). Raises `ConfigError` naming TELEBRIDGE_CACHE_DIR."""
    directory = settings.telebridge_cache_dir
    if directory is None:
        raise ConfigError(
            "TELEBRIDGE_CACHE_DIR is not set: name the prompt cache's folder "
            "(the one the serving bridge uses)"
        )
    path = folder_for(directory, standin=settings.uses_standin)
    if create:
        try:
            open_folder(path)
        except OSError as exc:
            raise ConfigError(
                f"TELEBRIDGE_CACHE_DIR: cannot use {directory} for the prompt cache: "
                f"{exc.strerror or exc}"
            ) from None
    return PromptFolder(path, settings.telebridge_cache_disk_mb * 2**20)


def plan(flows: Iterable[Flow], settings: Settings, rates: Sequence[int]) -> list[Job]:
    """Every fixed prompt of `flows` at every rate, each distinct key once (the first flow and
    step that speak it name it)."""
    base = SpeechOptions.from_settings(settings)
    jobs: list[Job] = []
    seen: set[Key] = set()
    for flow in flows:
        for prompt in fixed_prompts(flow):
            options = speech_for(base, prompt.overrides)
            for rate in rates:
                job = Job(flow.name, prompt.step, prompt.text, options, rate)
                if job.key not in seen:
                    seen.add(job.key)
                    jobs.append(job)
    return jobs


def partition(jobs: Iterable[Job], folder: PromptFolder) -> tuple[list[Job], list[Job]]:
    """(the jobs to make, the jobs whose audio the folder already holds intact)."""
    todo: list[Job] = []
    there: list[Job] = []
    for job in jobs:
        (there if holds(folder.path, job.key) else todo).append(job)
    return todo, there


def evicted(jobs: Iterable[Job], folder: PromptFolder) -> list[Job]:
    """The jobs whose audio is no longer in the folder: writing later prompts pushed it out
    (the folder keeps at most TELEBRIDGE_CACHE_DISK_MB)."""
    return [job for job in jobs if not holds(folder.path, job.key)]


def other_files(jobs: Iterable[Job], folder: PromptFolder) -> set[str]:
    """The prompt files in the folder that are none of `jobs`' (other flows, texts since
    changed, other voices or rates)."""
    return prompt_files(folder.path) - {file_name(job.key) for job in jobs}


async def render(
    todo: Sequence[Job],
    renderer: Renderer,
    folder: PromptFolder,
    *,
    limit: int = DEFAULT_CONCURRENCY,
    on_done: Callable[[Outcome], None] | None = None,
) -> list[Outcome]:
    """Make each job, `limit` at a time, storing its audio in `folder`; the outcomes are in the
    order of `todo`. A failure of Waves (`TTSError`) fails its job only: the others go on."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    outcomes: dict[int, Outcome] = {}
    pending = iter(enumerate(todo))  # shared by the workers: each job is taken once
    writing = asyncio.Lock()  # one write (and its eviction scan) at a time

    async def worker() -> None:
        for index, job in pending:
            outcome = await _make(job, renderer, folder, writing)
            outcomes[index] = outcome
            if on_done is not None:
                on_done(outcome)

    async with asyncio.TaskGroup() as group:
        for _ in range(min(limit, len(todo))):
            group.create_task(worker())
    return [outcomes[index] for index in range(len(todo))]


async def _make(
    job: Job, renderer: Renderer, folder: PromptFolder, writing: asyncio.Lock
) -> Outcome:
    try:
        pcm = await _render(job, renderer)
    except TTSError as exc:
        return Outcome(job, str(exc) or exc.kind)
    if not pcm:
        return Outcome(job, "Waves answered no audio")
    if len(pcm) % 2:
        return Outcome(job, f"Waves answered {len(pcm)} bytes: not whole PCM16 samples")
    async with writing:
        await asyncio.to_thread(folder.write, job.key, pcm)
        stored = await asyncio.to_thread(holds, folder.path, job.key)
    if stored:
        return Outcome(job)
    if len(pcm) > folder.max_bytes:
        return Outcome(job, f"{len(pcm)} bytes of audio do not fit in TELEBRIDGE_CACHE_DISK_MB")
    return Outcome(job, f"could not be written to {folder.path}")


async def _render(job: Job, renderer: Renderer) -> bytes:
    """The job's audio; a refusal as over the rate limit is waited out and asked again."""
    pause, attempt = 1.0, 1
    while True:
        try:
            return await renderer.render(job.text, sample_rate=job.sample_rate, options=job.options)
        except WavesRateLimited as exc:
            if attempt == RATE_LIMITED_TRIES:
                raise WavesRateLimited(
                    f"{exc} (refused {attempt} times; try fewer at once: WAVES_MAX_IN_FLIGHT)",
                    retry_after=exc.retry_after,
                ) from None
            wait = pause if exc.retry_after is None else exc.retry_after
        wait = max(0.0, min(MAX_RATE_LIMITED_WAIT_S, wait))
        logger.warning("prompt %s/%s: Waves is at its limit; asking again in %g s",
                       job.flow, job.step, wait)  # fmt: skip
        await asyncio.sleep(wait)
        pause, attempt = pause * 2, attempt + 1


@contextlib.asynccontextmanager
async def open_renderer(
    settings: Settings, *, limit: int = DEFAULT_CONCURRENCY
) -> AsyncIterator[Renderer]:
    """Waves' HTTP sync client; without WAVES_API_KEY, on the embedded stand-in, as
    `telebridge serve` speaks then (its prompts go to the stand-in's own folder)."""
    from telebridge.tts.http_sync import WavesHttpClient
    from telebridge.tts.standin import StandinServer

    async with contextlib.AsyncExitStack() as stack:
        if settings.waves_api_key is None:
            standin = StandinServer(api_key="sk_" + secrets.token_hex(16))
            await stack.enter_async_context(standin)
            url, key = standin.url, standin.api_key
        else:
            url, key = settings.waves_url, settings.waves_api_key.get_secret_value()
        yield await stack.enter_async_context(WavesHttpClient(url, key, max_connections=limit))
