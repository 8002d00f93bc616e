"""`telebridge prompts render|list` run in-process through `cli.main`, with a fake Waves renderer
in place of the HTTP sync client: what is made, skipped and failed, the lines and exit codes."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from telebridge.admin import prompts as job
from telebridge.cli import main as cli
from telebridge.cli.prompts import Progress, describe, shorten
from telebridge.settings import Settings
from telebridge.tts import SpeechOptions
from telebridge.tts.cache import PromptCache
from telebridge.tts.cache_folder import PromptFolder, file_name
from telebridge.tts.errors import WavesServerError
from tests.admin.test_prompts import FakeRenderer, pcm_for
from tests.cli.test_main import PREFIXES

MAIN = """
start: welcome
steps:
  welcome:
    say: "Welcome to Acme."
    next: menu
  menu:
    say: "Press 1 for sales."
    voice: arjun
    gather: {retries: 1, reprompt: "Press 1, {{caller}}."}
    routes: {"1": bye}
    default: bye
  bye:
    say: "Goodbye."
    hangup: true
"""
OTHER = """
start: only
steps:
  only:
    say: "Another flow speaking."
    hangup: true
"""
EMILY = SpeechOptions(voice_id="emily")
ARJUN = SpeechOptions(voice_id="arjun")


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    """`telebridge ARGV` in this process: (exit code, stdout, stderr). As in
    tests/outbound/fixtures.py, without importing the server that module's fakes need."""
    out, err = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level  # the commands set up logging: undo that
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # argparse: --help, bad arguments
            code = int(exc.code or 0)
        finally:
            root.handlers[:] = handlers
            root.setLevel(level)
    return code, out.getvalue(), err.getvalue()


class Opened:
    """The fake renderer the command got, and how often it opened one."""

    def __init__(self, fake: FakeRenderer) -> None:
        self.fake = fake
        self.times = 0
        self.limits: list[int] = []


@pytest.fixture
def renderer(monkeypatch: pytest.MonkeyPatch) -> Opened:
    opened = Opened(FakeRenderer())

    @contextlib.asynccontextmanager
    async def fake_open(settings: Settings, *, limit: int = 4) -> AsyncIterator[FakeRenderer]:
        opened.times += 1
        opened.limits.append(limit)
        yield opened.fake

    monkeypatch.setattr(job, "open_renderer", fake_open)
    return opened


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Flows `main` and `other`, a cache folder, a Waves key and Plivo: only what a test sets."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.upper().startswith(PREFIXES)]:
        monkeypatch.delenv(name)
    flows = tmp_path / "flows"
    flows.mkdir()
    (flows / "main.yaml").write_text(MAIN, encoding="utf-8")
    (flows / "other.yaml").write_text(OTHER, encoding="utf-8")
    values = {
        "TELEBRIDGE_FLOWS_DIR": str(flows),
        "TELEBRIDGE_FLOW": "main",
        "TELEBRIDGE_CACHE_DIR": str(tmp_path / "cache"),
        "WAVES_API_KEY": "sk_test_key",
        "PLIVO_AUTH_ID": "MA" + "0" * 18,
        "PLIVO_AUTH_TOKEN": "token",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return tmp_path


def cached(folder: Path, text: str, rate: int, options: SpeechOptions) -> bytes | None:
    """What a serving bridge's folder reads for a call's key."""
    return PromptFolder(folder, 2**30).read(PromptCache.key(text, rate, options))


# --- render -----------------------------------------------------------------------------------


def test_render_makes_every_fixed_prompt_for_the_serving_bridge(
    env: Path, renderer: Opened
) -> None:
    code, out, err = run_cli(["prompts", "render"])
    assert (code, out) == (0, "prompts: 4 made, 0 already there, 0 failed\n")
    assert err.splitlines() == [
        "made: main, step welcome, 8000 Hz, voice emily: 'Welcome to Acme.'",
        "made: main, step menu, 8000 Hz, voice arjun: 'Press 1 for sales.'",
        "made: main, step bye, 8000 Hz, voice emily: 'Goodbye.'",
        "made: other, step only, 8000 Hz, voice emily: 'Another flow speaking.'",
    ]
    assert "\r" not in err
    folder = env / "cache"
    assert cached(folder, "Welcome to Acme.", 8000, EMILY) == pcm_for(
        "Welcome to Acme.", 8000, EMILY
    )
    assert cached(folder, "Press 1 for sales.", 8000, ARJUN) == pcm_for(
        "Press 1 for sales.", 8000, ARJUN
    )
    assert len(os.listdir(folder)) == 4
    assert renderer.limits == [4]


def test_a_second_render_finds_them_all_there_and_asks_nothing(env: Path, renderer: Opened) -> None:
    assert run_cli(["prompts", "render"])[0] == 0
    renderer.fake.requests.clear()
    code, out, err = run_cli(["prompts", "render"])
    assert (code, out, err) == (0, "prompts: 0 made, 4 already there, 0 failed\n", "")
    assert (renderer.fake.requests, renderer.times) == ([], 1)


def test_a_failed_prompt_is_named_the_others_made_and_the_exit_is_1(
    env: Path, renderer: Opened
) -> None:
    renderer.fake.failing["Goodbye."] = WavesServerError("Waves answered HTTP 500")
    code, out, err = run_cli(["prompts", "render", "main"])
    assert (code, out) == (1, "prompts: 2 made, 0 already there, 1 failed\n")
    assert sorted(err.splitlines()) == [
        "failed: main, step bye, 8000 Hz, voice emily: 'Goodbye.': Waves answered HTTP 500",
        "made: main, step menu, 8000 Hz, voice arjun: 'Press 1 for sales.'",
        "made: main, step welcome, 8000 Hz, voice emily: 'Welcome to Acme.'",
    ]
    assert cached(env / "cache", "Goodbye.", 8000, EMILY) is None
    assert cached(env / "cache", "Welcome to Acme.", 8000, EMILY) is not None


def test_prompts_the_folders_bound_pushed_out_are_failures(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened
) -> None:
    monkeypatch.setenv("TELEBRIDGE_CACHE_DISK_MB", "1")
    renderer.fake.answer = b"\x00" * 400_000  # 4 prompts of 400 kB: 2 fit in 1 MB
    code, out, err = run_cli(["prompts", "render"])
    assert (code, out) == (1, "prompts: 2 made, 0 already there, 2 failed\n")
    reason = (
        ": pushed out of the folder by later prompts: TELEBRIDGE_CACHE_DISK_MB (1) is too small "
        "for them all"
    )
    assert sum(line.endswith(reason) for line in err.splitlines()) == 2
    assert len(os.listdir(env / "cache")) == 2


def test_flows_are_chosen_by_name_or_by_file(env: Path, renderer: Opened) -> None:
    outside = env / "elsewhere.yaml"
    outside.write_text(OTHER.replace("Another flow", "A file"), encoding="utf-8")
    code, out, _ = run_cli(["prompts", "render", "other", str(outside)])
    assert (code, out) == (0, "prompts: 2 made, 0 already there, 0 failed\n")
    assert sorted(r[0] for r in renderer.fake.requests) == [
        "A file speaking.",
        "Another flow speaking.",
    ]


def test_the_rates_of_the_configured_carriers(env: Path, monkeypatch: pytest.MonkeyPatch,
                                              renderer: Opened) -> None:  # fmt: skip
    monkeypatch.setenv("VONAGE_ALLOW_UNSIGNED", "true")
    monkeypatch.setenv("VONAGE_AUDIO_RATE", "24000")
    code, out, err = run_cli(["prompts", "render", "other"])
    assert (code, out, err.count("\n")) == (0, "prompts: 2 made, 0 already there, 0 failed\n", 2)
    assert sorted(r[1] for r in renderer.fake.requests) == [8000, 24000]


def test_without_a_carrier_both_rates_are_made_and_it_says_so(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened
) -> None:
    monkeypatch.delenv("PLIVO_AUTH_ID")
    code, out, err = run_cli(["prompts", "render", "other"])
    assert (code, out) == (0, "prompts: 2 made, 0 already there, 0 failed\n")
    assert err.splitlines()[0] == (
        "telebridge: no carrier is configured (Plivo or Vonage): prompts at both carriers' "
        "rates, 8000 Hz and 16000 Hz"
    )
    assert sorted(r[1] for r in renderer.fake.requests) == [8000, 16000]


def test_without_a_waves_key_the_standins_prompts_go_to_its_own_folder(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened
) -> None:
    monkeypatch.delenv("WAVES_API_KEY")
    code, out, err = run_cli(["prompts", "render", "other"])
    assert (code, out) == (0, "prompts: 1 made, 0 already there, 0 failed\n")
    assert err.splitlines()[0] == (
        "telebridge: WAVES_API_KEY is not set: the prompts are the offline stand-in's "
        f"(espeak-ng), not Waves', in {env / 'cache' / 'standin'}"
    )
    key = PromptCache.key("Another flow speaking.", 8000, EMILY)
    assert os.listdir(env / "cache") == ["standin"]
    assert os.listdir(env / "cache" / "standin") == [file_name(key)]


def test_waves_max_in_flight_lowers_how_many_at_once(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened
) -> None:
    monkeypatch.setenv("WAVES_MAX_IN_FLIGHT", "2")
    assert run_cli(["prompts", "render"])[0] == 0
    assert (renderer.limits, renderer.fake.most_in_flight <= 2) == ([2], True)


def test_dry_run_lists_what_it_would_make_and_asks_nothing(env: Path, renderer: Opened) -> None:
    code, out, err = run_cli(["prompts", "render", "main", "--dry-run"])
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "to make: main, step welcome, 8000 Hz, voice emily: 'Welcome to Acme.'",
        "to make: main, step menu, 8000 Hz, voice arjun: 'Press 1 for sales.'",
        "to make: main, step bye, 8000 Hz, voice emily: 'Goodbye.'",
        "prompts: 3 to make, 0 already there",
    ]
    assert (renderer.times, renderer.fake.requests) == (0, [])
    assert not (env / "cache").exists()


def test_dry_run_after_a_render_has_nothing_to_make(env: Path, renderer: Opened) -> None:
    run_cli(["prompts", "render", "other"])
    code, out, _ = run_cli(["prompts", "render", "--dry-run"])
    assert code == 0
    assert out.splitlines()[-1] == "prompts: 3 to make, 1 already there"


@pytest.mark.parametrize("command", [["render"], ["render", "--dry-run"], ["list"]])
def test_without_telebridge_cache_dir_it_is_one_line_and_exit_2(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened, command: list[str]
) -> None:
    monkeypatch.delenv("TELEBRIDGE_CACHE_DIR")
    code, out, err = run_cli(["prompts", *command])
    assert (code, out) == (2, "")
    assert err == (
        "telebridge: TELEBRIDGE_CACHE_DIR is not set: name the prompt cache's folder "
        "(the one the serving bridge uses)\n"
    )


def test_an_unknown_flow_is_one_line_and_exit_2(env: Path, renderer: Opened) -> None:
    code, out, err = run_cli(["prompts", "render", "nope"])
    assert (code, out) == (2, "")
    flows = env / "flows"
    assert err == (
        f"telebridge: nope: no such flow; tried nope, {flows / 'nope.yaml'}, "
        f"{flows / 'nope.yml'} (have: main, other)\n"
    )
    assert renderer.times == 0


def test_a_flow_with_errors_is_one_line_and_exit_2(env: Path, renderer: Opened) -> None:
    broken = env / "flows" / "broken.yaml"
    broken.write_text("start: a\nsteps:\n  a:\n    say: hi\n    next: nowhere\n", encoding="utf-8")
    code, out, err = run_cli(["prompts", "render"])
    assert (code, out) == (2, "")
    assert err == (
        f"telebridge: a flow has errors: {broken}:5: step 'a': next names missing step 'nowhere'\n"
    )
    code, _, err = run_cli(["prompts", "list", "broken"])
    assert code == 2 and err.startswith("telebridge: a flow has errors: ")
    assert renderer.times == 0


def test_render_help_names_the_setting(env: Path) -> None:
    code, out, _ = run_cli(["prompts", "render", "--help"])
    assert code == 0
    assert out.startswith("usage: telebridge prompts render [-h] [--config CONFIG] [--dry-run]")
    assert "TELEBRIDGE_CACHE_DIR" in out


# --- list -------------------------------------------------------------------------------------


def test_list_shows_each_prompt_cached_or_missing_and_the_other_files(
    env: Path, monkeypatch: pytest.MonkeyPatch, renderer: Opened
) -> None:
    run_cli(["prompts", "render", "other"])
    # A file no flow speaks any more (a text since changed).
    stale = PromptCache.key("Old text.", 8000, EMILY)
    PromptFolder(env / "cache", 2**30).write(stale, b"\x00\x00")
    monkeypatch.setenv("VONAGE_ALLOW_UNSIGNED", "true")
    code, out, err = run_cli(["prompts", "list"])
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        "main: 6 fixed prompt(s), 0 cached",
        "  missing  step welcome, 8000 Hz, voice emily: 'Welcome to Acme.'",
        "  missing  step welcome, 16000 Hz, voice emily: 'Welcome to Acme.'",
        "  missing  step menu, 8000 Hz, voice arjun: 'Press 1 for sales.'",
        "  missing  step menu, 16000 Hz, voice arjun: 'Press 1 for sales.'",
        "  missing  step bye, 8000 Hz, voice emily: 'Goodbye.'",
        "  missing  step bye, 16000 Hz, voice emily: 'Goodbye.'",
        "other: 2 fixed prompt(s), 1 cached",
        "  cached   step only, 8000 Hz, voice emily: 'Another flow speaking.'",
        "  missing  step only, 16000 Hz, voice emily: 'Another flow speaking.'",
        f"1 other file(s) in {env / 'cache'}: prompts of none of these flows",
    ]
    assert renderer.times == 1  # the render's; listing asks nothing


def test_list_of_a_folder_not_made_yet_shows_everything_missing(env: Path) -> None:
    code, out, _ = run_cli(["prompts", "list", "other"])
    assert code == 0
    assert out.splitlines() == [
        "other: 1 fixed prompt(s), 0 cached",
        "  missing  step only, 8000 Hz, voice emily: 'Another flow speaking.'",
        f"0 other file(s) in {env / 'cache'}: prompts of none of these flows",
    ]
    assert not (env / "cache").exists()


# --- the lines --------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def a_job(text: str, step: str = "menu") -> job.Job:
    return job.Job("main", step, text, EMILY, 8000)


def test_on_a_terminal_the_bar_is_redrawn_in_place_and_failures_are_lines() -> None:
    screen = Terminal()
    progress = Progress(3, screen, width=6)
    progress.done(job.Outcome(a_job("One.")))
    progress.done(job.Outcome(a_job("Two.", "bye"), "Waves answered HTTP 503"))
    progress.done(job.Outcome(a_job("Three.")))
    progress.close()
    assert screen.getvalue() == (
        "\r\x1b[2K[......] 0/3 prompts"
        "\r\x1b[2K[##....] 1/3 prompts"
        "\r\x1b[2Kfailed: main, step bye, 8000 Hz, voice emily: 'Two.': Waves answered HTTP 503\n"
        "\r\x1b[2K[####..] 2/3 prompts (1 failed)"
        "\r\x1b[2K[######] 3/3 prompts (1 failed)"
        "\n"
    )


def test_off_a_terminal_each_prompt_is_one_plain_line() -> None:
    log = io.StringIO()
    progress = Progress(2, log)
    progress.done(job.Outcome(a_job("One.")))
    progress.done(job.Outcome(a_job("Two."), "Waves answered HTTP 503"))
    progress.close()
    assert log.getvalue() == (
        "made: main, step menu, 8000 Hz, voice emily: 'One.'\n"
        "failed: main, step menu, 8000 Hz, voice emily: 'Two.': Waves answered HTTP 503\n"
    )


def test_a_long_text_is_shortened_to_one_line_of_about_sixty_characters() -> None:
    text = "Thank you for calling Acme.\nFor opening hours, press 1. For sales, press 2, or hold."
    short = shorten(text)
    assert short == "Thank you for calling Acme. For opening hours, press 1. F..."
    assert len(short) == 60
    assert shorten("Hi.\n") == "Hi."
    assert describe(a_job(text)).endswith(
        ": 'Thank you for calling Acme. For opening hours, press 1. F...'"
    )
