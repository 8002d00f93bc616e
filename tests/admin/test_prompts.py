"""Making the flows' fixed prompts ahead, with a fake Waves renderer: the serving bridge's exact
keys and files, prompts already there skipped, failures counted and named, a bounded number at
once."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from telebridge.admin import prompts as job
from telebridge.call.speaker import speech_for
from telebridge.flows import Flow, load_flow
from telebridge.flows.runner import step_overrides
from telebridge.settings import ConfigError, Settings, load_settings
from telebridge.tts import SpeechOptions
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import PromptFolder, encode, file_name, open_folder
from telebridge.tts.errors import TTSError, WavesRateLimited, WavesServerError
from telebridge.tts.http_sync import WavesHttpClient
from telebridge.tts.standin import StandinServer
from tests.cli.test_main import PREFIXES

MAIN = """
start: welcome
steps:
  welcome:
    say: "Welcome."
    next: menu
  menu:
    say: "Press 1."
    voice: arjun
    speed: 1.25
    language: hi
    gather: {retries: 1, no_input: "Hello?"}
    routes: {"1": bye}
    default: bye
  bye:
    say: "Goodbye {{caller}}."
    hangup: true
"""
OTHER = """
start: a
steps:
  a:
    say: "Welcome."
    voice: emily
    next: b
  b:
    say: "Other flow."
    hangup: true
"""
EMILY = SpeechOptions(voice_id="emily", model="lightning_v3.1", language="en", speed=1.0)
ARJUN = SpeechOptions(voice_id="arjun", model="lightning_v3.1", language="hi", speed=1.25)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No settings of the developer's: only what a test gives."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith(PREFIXES)]:
        monkeypatch.delenv(name)
    return tmp_path


def settings(tmp_path: Path, **values: Any) -> Settings:
    given: dict[str, Any] = {"telebridge_cache_dir": tmp_path / "cache", "waves_api_key": "sk_x"}
    given.update(values)
    return load_settings(None, **given)


def flow(tmp_path: Path, name: str, text: str) -> Flow:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return load_flow(path)


def pcm_for(text: str, rate: int, options: SpeechOptions) -> bytes:
    """Audio unique to what shapes it, of even length."""
    data = f"{text}|{rate}|{options.voice_id}|{options.speed}".encode()
    return data + b"\x00" * (len(data) % 2)


class FakeRenderer:
    """A renderer that answers `pcm_for`, fails for `failing` texts, and can hold every request
    at `gate` to show how many run at once."""

    def __init__(self, failing: dict[str, TTSError] | None = None) -> None:
        self.failing = failing or {}
        self.requests: list[tuple[str, int, SpeechOptions]] = []
        self.gate: asyncio.Event | None = None
        self.in_flight = 0
        self.most_in_flight = 0
        self.answer: bytes | None = None  # instead of pcm_for
        self.refusals: dict[str, int] = {}  # text: times it is refused as over the limit first
        self.retry_after: float | None = 0.01

    async def render(
        self,
        text: str,
        *,
        sample_rate: int,
        options: SpeechOptions,
        request_id: str | None = None,
    ) -> bytes:
        self.requests.append((text, sample_rate, options))
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.gate is not None:
                await self.gate.wait()
            if text in self.failing:
                raise self.failing[text]
            if self.refusals.get(text, 0) > 0:
                self.refusals[text] -= 1
                raise WavesRateLimited("Waves answered HTTP 429", retry_after=self.retry_after)
            return self.answer if self.answer is not None else pcm_for(text, sample_rate, options)
        finally:
            self.in_flight -= 1


def opened(s: Settings) -> PromptFolder:
    return job.prompt_folder(s, create=True)


# --- what is made: the serving bridge's keys --------------------------------------------------


def test_the_plan_has_the_keys_the_serving_bridge_looks_up(env: Path) -> None:
    s = settings(env, plivo_auth_id="MA" + "0" * 18, plivo_auth_token="t")
    main = flow(env, "main", MAIN)
    jobs = job.plan([main], s, [8000])
    assert [j.key for j in jobs] == [
        ("Welcome.", "emily", "lightning_v3.1", 1.0, "en", 8000),
        ("Press 1.", "arjun", "lightning_v3.1", 1.25, "hi", 8000),
        ("Hello?", "arjun", "lightning_v3.1", 1.25, "hi", 8000),
    ]
    # ... which is what a call asks the cache for: speech_for over the settings' speech.
    step = main.steps["menu"]
    options = speech_for(SpeechOptions.from_settings(s), step_overrides(step))
    assert jobs[1].key == PromptCache.key("Press 1.", 8000, options)
    assert [(j.flow, j.step) for j in jobs] == [("main", "welcome"), ("main", "menu"),
                                                ("main", "menu")]  # fmt: skip


def test_the_plan_follows_the_settings_speech(env: Path) -> None:
    s = settings(env, waves_voice="nova", waves_model="lightning_v3.1_pro", waves_speed=0.9)
    jobs = job.plan([flow(env, "main", MAIN)], s, [16000])
    assert jobs[0].key == ("Welcome.", "nova", "lightning_v3.1_pro", 0.9, "en", 16000)
    assert jobs[1].key == ("Press 1.", "arjun", "lightning_v3.1_pro", 1.25, "hi", 16000)


def test_each_distinct_prompt_and_rate_is_made_once_across_flows(env: Path) -> None:
    # OTHER says "Welcome." with voice emily, which is the default voice: the same audio.
    s = settings(env)
    jobs = job.plan([flow(env, "main", MAIN), flow(env, "other", OTHER)], s, [8000, 16000])
    assert [(j.flow, j.step, j.text, j.sample_rate) for j in jobs] == [
        ("main", "welcome", "Welcome.", 8000),
        ("main", "welcome", "Welcome.", 16000),
        ("main", "menu", "Press 1.", 8000),
        ("main", "menu", "Press 1.", 16000),
        ("main", "menu", "Hello?", 8000),
        ("main", "menu", "Hello?", 16000),
        ("other", "b", "Other flow.", 8000),
        ("other", "b", "Other flow.", 16000),
    ]


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"plivo_auth_id": "MA" + "0" * 18, "plivo_auth_token": "t"}, ([8000], False)),
        ({"vonage_allow_unsigned": True, "vonage_audio_rate": 24000}, ([24000], False)),
        (
            {
                "plivo_auth_id": "MA" + "0" * 18,
                "plivo_auth_token": "t",
                "vonage_signature_secret": "s",
                "vonage_audio_rate": 16000,
            },
            ([8000, 16000], False),
        ),
        (
            {
                "plivo_auth_id": "MA" + "0" * 18,
                "plivo_auth_token": "t",
                "vonage_allow_unsigned": True,
                "vonage_audio_rate": 8000,
            },
            ([8000], False),
        ),
        ({}, ([8000, 16000], True)),
        ({"vonage_audio_rate": 24000}, ([8000, 24000], True)),
    ],
)
def test_the_rates_are_the_configured_carriers_or_both(
    env: Path, values: dict[str, Any], expected: tuple[list[int], bool]
) -> None:
    assert job.carrier_rates(settings(env, **values)) == expected


@pytest.mark.parametrize(("cap", "expected"), [(0, 4), (1, 1), (3, 3), (4, 4), (50, 4)])
def test_a_few_prompts_at_once_never_more_than_waves_max_in_flight(
    env: Path, cap: int, expected: int
) -> None:
    assert job.concurrency(settings(env, waves_max_in_flight=cap)) == expected


# --- the folder -------------------------------------------------------------------------------


def test_without_telebridge_cache_dir_there_is_no_folder(env: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        job.prompt_folder(load_settings(None), create=False)
    assert str(raised.value) == (
        "TELEBRIDGE_CACHE_DIR is not set: name the prompt cache's folder "
        "(the one the serving bridge uses)"
    )


def test_the_folder_is_the_serving_bridges_for_waves_and_for_the_standin(env: Path) -> None:
    waves = job.prompt_folder(settings(env), create=True)
    assert (waves.path, waves.max_bytes) == (env / "cache", 512 * 2**20)
    offline = job.prompt_folder(
        settings(env, waves_api_key=None, telebridge_cache_disk_mb=3), create=False
    )
    assert (offline.path, offline.max_bytes) == (env / "cache" / "standin", 3 * 2**20)
    assert (env / "cache").is_dir() and not (env / "cache" / "standin").exists()


def test_a_folder_that_cannot_be_made_names_the_setting(env: Path) -> None:
    (env / "file").write_text("not a folder")
    with pytest.raises(ConfigError) as raised:
        job.prompt_folder(settings(env, telebridge_cache_dir=env / "file"), create=True)
    assert str(raised.value).startswith(
        f"TELEBRIDGE_CACHE_DIR: cannot use {env / 'file'} for the prompt cache: "
    )


# --- rendering --------------------------------------------------------------------------------


async def test_rendered_prompts_read_back_through_the_bridges_folder(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000, 16000])
    fake = FakeRenderer()
    done: list[job.Outcome] = []
    outcomes = await job.render(jobs, fake, folder, limit=2, on_done=done.append)
    assert outcomes == [job.Outcome(j) for j in jobs]
    assert sorted(done, key=lambda o: jobs.index(o.job)) == outcomes
    assert sorted(fake.requests, key=repr) == sorted(
        [(j.text, j.sample_rate, j.options) for j in jobs], key=repr
    )
    # A serving bridge's PromptFolder, looking up the key a call makes, finds the audio.
    bridge = PromptFolder(env / "cache", 512 * 2**20)
    for item in jobs:
        assert bridge.read(item.key) == pcm_for(item.text, item.sample_rate, item.options)
    key = PromptCache.key("Press 1.", 16000, ARJUN)
    assert bridge.read(key) == pcm_for("Press 1.", 16000, ARJUN)
    assert sorted(os.listdir(env / "cache")) == sorted(file_name(j.key) for j in jobs)


async def test_prompts_already_there_are_skipped_and_damaged_ones_made_again(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])
    await job.render(jobs[:2], FakeRenderer(), folder)
    damaged = folder.path / file_name(jobs[1].key)
    damaged.write_bytes(damaged.read_bytes()[:-1])
    todo, there = job.partition(jobs, folder)
    assert (todo, there) == ([jobs[1], jobs[2]], [jobs[0]])
    fake = FakeRenderer()
    await job.render(todo, fake, folder)
    assert sorted(r[0] for r in fake.requests) == ["Hello?", "Press 1."]
    assert job.partition(jobs, folder) == ([], jobs)


async def test_a_failed_prompt_is_named_and_the_others_are_made(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])
    fake = FakeRenderer({"Press 1.": WavesServerError("Waves answered HTTP 500")})
    outcomes = await job.render(jobs, fake, folder)
    assert [(o.job.flow, o.job.step, o.job.sample_rate, o.error) for o in outcomes] == [
        ("main", "welcome", 8000, None),
        ("main", "menu", 8000, "Waves answered HTTP 500"),
        ("main", "menu", 8000, None),
    ]
    assert job.partition(jobs, folder) == ([jobs[1]], [jobs[0], jobs[2]])


async def test_a_prompt_refused_as_over_the_limit_is_asked_again(
    env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])
    fake = FakeRenderer()
    fake.refusals["Press 1."] = job.RATE_LIMITED_TRIES - 1
    outcomes = await job.render(jobs, fake, folder)
    assert [o.error for o in outcomes] == [None, None, None]
    asked = [r[0] for r in fake.requests]
    assert asked.count("Press 1.") == job.RATE_LIMITED_TRIES  # refused 4 times, then made
    assert asked.count("Welcome.") == 1
    assert job.partition(jobs, folder) == ([], jobs)
    assert "Waves is at its limit; asking again in 0.01 s" in caplog.text


async def test_a_prompt_refused_every_time_fails_saying_so(env: Path) -> None:
    s = settings(env)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])[:1]
    fake = FakeRenderer()
    fake.refusals[jobs[0].text] = 99
    fake.retry_after = 0.0
    [outcome] = await job.render(jobs, fake, opened(s))
    assert outcome.error == (
        f"Waves answered HTTP 429 (refused {job.RATE_LIMITED_TRIES} times; "
        "try fewer at once: WAVES_MAX_IN_FLIGHT)"
    )
    assert len(fake.requests) == job.RATE_LIMITED_TRIES


async def test_a_429_from_waves_http_with_retry_after_is_waited_out(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])[:1]
    async with StandinServer() as standin, WavesHttpClient(standin.url, standin.api_key) as waves:
        standin.faults.http_status, standin.faults.retry_after = 429, 0.3
        loop = asyncio.get_running_loop()
        started = loop.time()
        making = asyncio.create_task(job.render(jobs, waves, folder))
        await asyncio.sleep(0.1)
        standin.faults.http_status = None  # the plan has room again
        assert await making == [job.Outcome(jobs[0])]
        assert loop.time() - started >= 0.3  # the server's Retry-After, not 1 s, not at once
    assert job.partition(jobs, folder) == ([], jobs)


@pytest.mark.parametrize(
    ("answer", "error"),
    [
        (b"", "Waves answered no audio"),
        (b"\x01\x02\x03", "Waves answered 3 bytes: not whole PCM16 samples"),
    ],
)
async def test_audio_that_is_not_pcm16_is_a_failure_and_not_stored(
    env: Path, answer: bytes, error: str
) -> None:
    s = settings(env)
    folder = opened(s)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])[:1]
    fake = FakeRenderer()
    fake.answer = answer
    assert await job.render(jobs, fake, folder) == [job.Outcome(jobs[0], error)]
    assert os.listdir(folder.path) == []


async def test_an_error_that_is_not_waves_failing_is_not_hidden(env: Path) -> None:
    s = settings(env)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])
    fake = FakeRenderer({"Welcome.": RuntimeError("a bug")})  # type: ignore[dict-item]
    with pytest.raises(ExceptionGroup) as raised:
        await job.render(jobs, fake, opened(s), limit=1)
    assert [str(e) for e in raised.value.exceptions] == ["a bug"]


async def test_no_more_than_limit_prompts_are_rendered_at_once(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    text = "start: a\nsteps:\n  a:\n" + "".join(
        f"    say: 'Prompt {i}.'\n    next: s{i}\n  s{i}:\n" for i in range(9)
    )
    text += "    say: 'Last.'\n    hangup: true\n"
    jobs = job.plan([flow(env, "many", text)], s, [8000])
    assert len(jobs) == 10
    fake = FakeRenderer()
    fake.gate = asyncio.Event()
    task = asyncio.create_task(job.render(jobs, fake, folder, limit=3))
    for _ in range(20):  # let every worker that can start do so
        await asyncio.sleep(0)
    assert (fake.in_flight, len(fake.requests)) == (3, 3)
    fake.gate.set()
    outcomes = await task
    assert fake.most_in_flight == 3
    assert [o.error for o in outcomes] == [None] * 10
    assert len(fake.requests) == 10


async def test_a_limit_below_one_is_refused(env: Path) -> None:
    s = settings(env)
    with pytest.raises(ValueError):
        await job.render([], FakeRenderer(), opened(s), limit=0)


async def test_prompts_pushed_out_by_the_folders_bound_are_found(env: Path) -> None:
    s = settings(env)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])
    sizes = [len(encode(j.key, pcm_for(j.text, j.sample_rate, j.options))) for j in jobs]
    small = PromptFolder(env / "small", max_bytes=sizes[1] + sizes[2])  # the last two fit
    open_folder(small.path)
    played = iter([1_000_000.0, 2_000_000.0])

    def age(outcome: job.Outcome) -> None:
        # The order the folder evicts in, without relying on the clock's resolution.
        when = next(played, None)
        if when is not None:
            os.utime(small.path / file_name(outcome.job.key), (when, when))

    outcomes = await job.render(jobs, FakeRenderer(), small, limit=1, on_done=age)
    assert [o.error for o in outcomes] == [None, None, None]
    assert job.evicted(jobs, small) == [jobs[0]]


async def test_a_prompt_bigger_than_the_whole_folder_fails(env: Path) -> None:
    s = settings(env)
    jobs = job.plan([flow(env, "main", MAIN)], s, [8000])[:1]
    tiny = PromptFolder(env / "tiny", max_bytes=8)
    open_folder(tiny.path)
    outcomes = await job.render(jobs, FakeRenderer(), tiny)
    size = len(pcm_for(jobs[0].text, 8000, EMILY))
    assert outcomes == [
        job.Outcome(jobs[0], f"{size} bytes of audio do not fit in TELEBRIDGE_CACHE_DISK_MB")
    ]


async def test_other_files_are_the_prompt_files_of_none_of_the_jobs(env: Path) -> None:
    s = settings(env)
    folder = opened(s)
    main = job.plan([flow(env, "main", MAIN)], s, [8000])
    other = job.plan([flow(env, "other", OTHER)], s, [8000])
    await job.render(main + other, FakeRenderer(), folder)
    (folder.path / "notes.txt").write_text("not a prompt")
    (folder.path / (file_name(main[0].key) + ".123.tmp")).write_text("a write under way")
    assert other[0].key == main[0].key  # "Welcome." in both flows is one file
    assert job.other_files(main, folder) == {file_name(other[1].key)}
    assert job.other_files(main + other, folder) == set()
