"""The prompt commands: `prompts render` (make the flows' fixed prompts ahead, through Waves' HTTP
sync endpoint, into the prompt cache's folder) and `prompts list` (which of them are there).

`register(sub, add)` adds them to the `telebridge` parser. A missing TELEBRIDGE_CACHE_DIR, a flow
with errors or an unknown flow is one line and exit 2; `render` exits 1 when a prompt failed.
Progress and notes go to stderr, the summary and listings to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from telebridge.cli.common import (
    EXIT_FAILED,
    AddCommand,
    UsageError,
    nested,
    quiet_logs,
    settings_of,
)
from telebridge.settings import Settings

if TYPE_CHECKING:
    from telebridge.admin.prompts import Job, Outcome
    from telebridge.flows import Flow
    from telebridge.tts.cache_folder import PromptFolder

TEXT_WIDTH = 60  # characters of a prompt's text shown in a line


def shorten(text: str, width: int = TEXT_WIDTH) -> str:
    """`text` on one line, cut to about `width` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 3].rstrip() + "..."


def where(job: Job) -> str:
    return f"step {job.step}, {job.sample_rate} Hz, voice {job.options.voice_id}"


def describe(job: Job) -> str:
    """One prompt at one rate, for a line: flow, step, rate, voice and the text shortened."""
    return f"{job.flow}, {where(job)}: {shorten(job.text)!r}"


class Progress:
    """Prompts made, on stderr: a bar redrawn in place on a terminal, else one line per prompt
    made or failed (so that logs stay readable). Failures are lines on a terminal too."""

    def __init__(self, total: int, stream: TextIO | None = None, *, width: int = 24) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._total = total
        self._width = width
        self._done = 0
        self._failed = 0
        self._drawn = False
        self._draw()

    def done(self, outcome: Outcome) -> None:
        self._done += 1
        if outcome.error is not None:
            self._failed += 1
            self._line(f"failed: {describe(outcome.job)}: {outcome.error}")
        elif not self._tty:
            self._line(f"made: {describe(outcome.job)}")
        self._draw()

    def close(self) -> None:
        if self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False

    def _line(self, text: str) -> None:
        if self._drawn:
            self._stream.write("\r\x1b[2K")
            self._drawn = False
        self._stream.write(text + "\n")
        self._stream.flush()

    def _draw(self) -> None:
        if not self._tty or self._total == 0:
            return
        filled = self._width * self._done // self._total
        bar = f"[{'#' * filled}{'.' * (self._width - filled)}] {self._done}/{self._total} prompts"
        if self._failed:
            bar += f" ({self._failed} failed)"
        self._stream.write("\r\x1b[2K" + bar)
        self._stream.flush()
        self._drawn = True


def note(text: str) -> None:
    print(f"telebridge: {text}", file=sys.stderr)


# --- what the commands share -----------------------------------------------------------------


def _flows(settings: Settings, names: Sequence[str]) -> list[Flow]:
    """The flows named (names in TELEBRIDGE_FLOWS_DIR or files), else every flow the bridge
    serves (TELEBRIDGE_FLOWS_DIR, TELEBRIDGE_FLOW, TELEBRIDGE_NUMBERS)."""
    from telebridge.flows import FlowError, load_flow, resolve_flow
    from telebridge.flows.library import FlowLibrary

    flows_dir = settings.telebridge_flows_dir
    paths: list[Path] = []
    for name in names:
        try:
            path = resolve_flow(name, flows_dir)
        except FlowError as exc:
            have = sorted({p.stem for p in [*flows_dir.glob("*.yaml"), *flows_dir.glob("*.yml")]})
            raise UsageError(f"{exc} (have: {', '.join(have) or 'none'})") from None
        if path.resolve() not in [p.resolve() for p in paths]:
            paths.append(path)
    try:
        if paths:
            return [load_flow(path) for path in paths]
        library = FlowLibrary.from_settings(settings)
        return [library.get(name) for name in library.names]
    except FlowError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise UsageError(f"a flow has errors: {problems}") from None


def _setup(settings: Settings, *, create: bool) -> tuple[PromptFolder, list[int]]:
    """The prompt folder and the rates, with a note for each guess the command makes."""
    from telebridge.admin import prompts as job

    folder = job.prompt_folder(settings, create=create)
    rates, guessed = job.carrier_rates(settings)
    if guessed:
        hz = " and ".join(f"{rate} Hz" for rate in rates)
        note(f"no carrier is configured (Plivo or Vonage): prompts at both carriers' rates, {hz}")
    if settings.uses_standin:
        note(
            f"WAVES_API_KEY is not set: the prompts are the offline stand-in's (espeak-ng), "
            f"not Waves', in {folder.path}"
        )
    return folder, rates


# --- prompts render --------------------------------------------------------------------------


def cmd_prompts_render(args: argparse.Namespace) -> int:
    from telebridge.admin import prompts as job

    settings = settings_of(args)
    quiet_logs()
    folder, rates = _setup(settings, create=not args.dry_run)
    jobs = job.plan(_flows(settings, args.flows), settings, rates)
    todo, there = job.partition(jobs, folder)
    if args.dry_run:
        for item in todo:
            print(f"to make: {describe(item)}")
        print(f"prompts: {len(todo)} to make, {len(there)} already there")
        return 0
    outcomes: list[Outcome] = []
    if todo:
        progress = Progress(len(todo))
        try:
            outcomes = asyncio.run(_render(settings, todo, folder, progress))
        finally:
            progress.close()
    made = [o.job for o in outcomes if o.error is None]
    failed = len(outcomes) - len(made)
    # Writing prompts evicts the least recently played files beyond TELEBRIDGE_CACHE_DISK_MB.
    gone = job.evicted([*made, *there], folder)
    if gone:
        reason = (
            f"pushed out of the folder by later prompts: TELEBRIDGE_CACHE_DISK_MB "
            f"({settings.telebridge_cache_disk_mb}) is too small for them all"
        )
        for item in gone:
            print(f"failed: {describe(item)}: {reason}", file=sys.stderr)
    lost = set(gone)
    made_kept = sum(1 for item in made if item not in lost)
    there_kept = sum(1 for item in there if item not in lost)
    failed += len(gone)
    print(f"prompts: {made_kept} made, {there_kept} already there, {failed} failed")
    return EXIT_FAILED if failed else 0


async def _render(
    settings: Settings, todo: list[Job], folder: PromptFolder, progress: Progress
) -> list[Outcome]:
    from telebridge.admin import prompts as job

    limit = job.concurrency(settings)
    async with job.open_renderer(settings, limit=limit) as renderer:
        return await job.render(todo, renderer, folder, limit=limit, on_done=progress.done)


# --- prompts list ----------------------------------------------------------------------------


def cmd_prompts_list(args: argparse.Namespace) -> int:
    from telebridge.admin import prompts as job

    settings = settings_of(args)
    quiet_logs()
    folder, rates = _setup(settings, create=False)
    every: list[Job] = []
    for flow in _flows(settings, args.flows):
        jobs = job.plan([flow], settings, rates)
        every += jobs
        _, there = job.partition(jobs, folder)
        cached = set(there)
        print(f"{flow.name}: {len(jobs)} fixed prompt(s), {len(cached)} cached")
        for item in jobs:
            state = "cached" if item in cached else "missing"
            print(f"  {state:<7}  {where(item)}: {shorten(item.text)!r}")
    others = len(job.other_files(every, folder))
    print(f"{others} other file(s) in {folder.path}: prompts of none of these flows")
    return 0


# --- parser ----------------------------------------------------------------------------------


def register(sub: Any, add: AddCommand) -> None:
    """Add `prompts render` and `prompts list` to the `telebridge` subparsers."""
    add_prompts = nested(
        sub, "prompts", "the flows' fixed prompts, made ahead into the prompt cache's folder"
    )
    flows_help = (
        "a flow name in TELEBRIDGE_FLOWS_DIR or a flow file (default: every flow the bridge serves)"
    )
    render = add_prompts(
        "render",
        "synthesise every fixed prompt (no variables) of the flows through Waves' HTTP sync "
        "endpoint, at each carrier's rate, into the prompt cache's folder TELEBRIDGE_CACHE_DIR",
        cmd_prompts_render,
    )
    render.add_argument("flows", nargs="*", metavar="FLOW", help=flows_help)
    render.add_argument(
        "--dry-run", action="store_true", help="list the prompts to make, make none"
    )
    listing = add_prompts(
        "list",
        "show each fixed prompt of the flows at each rate, cached or missing in "
        "TELEBRIDGE_CACHE_DIR",
        cmd_prompts_list,
    )
    listing.add_argument("flows", nargs="*", metavar="FLOW", help=flows_help)
