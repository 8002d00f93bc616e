"""A benchmark's steps and what their runs warn about: each concurrency run `--repeat` times
(`run_steps`), and the notes of one run (`run_notes`): a saturated load generator, a CPU-bound
machine, failed calls, protocol violations.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from bench.common import percentile
from bench.harness import BenchEnv, LoadResult, LoadSpec

# Above these, the load generator's own timing is suspect and its figures are flagged.
LOADGEN_CPU_LIMIT = 0.85
LOADGEN_LAG_LIMIT_MS = 20.0
MACHINE_BUSY_LIMIT = 0.9


def loadgen_saturated(result: LoadResult) -> bool:
    lag = percentile(result.carriers.lag_ms, 99)
    return (result.loadgen_cpu_max or 0.0) > LOADGEN_CPU_LIMIT or (
        lag is not None and lag > LOADGEN_LAG_LIMIT_MS
    )


def run_notes(result: LoadResult, cpus: int | None) -> list[str]:
    """Warnings about one run: saturation, failed calls, protocol violations."""
    notes: list[str] = []
    calls = result.spec.calls
    c = result.carriers
    if loadgen_saturated(result):
        lag = percentile(c.lag_ms, 99)
        notes.append(
            f"{calls} calls: the load generator was near saturation (busiest process "
            f"{(result.loadgen_cpu_max or 0) * 100:.0f}% of a core, loop lag p99 "
            f"{lag or 0:.1f} ms): its timings are pessimistic; try --loadgen-procs"
        )
    mine = (result.server_cpu, result.standin_cpu, result.loadgen_cpu, result.stores_cpu)
    ours = sum(x or 0.0 for x in mine)
    busy = result.machine_busy
    if busy is not None and busy > MACHINE_BUSY_LIMIT and cpus:
        others = max(0.0, busy * cpus - ours)
        notes.append(
            f"{calls} calls: the machine was CPU-bound ({busy * 100:.0f}% of its {cpus} "
            f"CPUs busy; the benchmark's processes used {ours * 100:.0f}% of a core, other "
            f"processes about {others * 100:.0f}%): they competed for CPU"
        )
    if result.stores_cpu is not None:
        notes.append(
            f"{calls} calls: Redis and PostgreSQL used {result.stores_cpu * 100:.0f}% of a core "
            "(not in bridge cpu)"
        )
    if c.violations:
        notes.append(
            f"{calls} calls: {c.violations} protocol violations, e.g. {c.violation_examples[:2]}"
        )
    if c.errors:
        notes.append(f"{calls} calls: failed calls {dict(c.errors)}")
    if c.no_audio:
        notes.append(f"{calls} calls: {c.no_audio} calls measured heard no audio")
    troubles = {k: v for k, v in result.server_counts.items() if k in ("tts_error", "mark_timeout")}
    if troubles:
        notes.append(f"{calls} calls: bridge events {troubles}")
    return notes


async def run_steps(
    args: argparse.Namespace,
    machine: dict[str, Any],
    spec_for: Callable[[int], LoadSpec],
    figures: Callable[[LoadResult], dict[str, Any]],
    summarise: Callable[[int, list[dict[str, Any]]], dict[str, Any]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each concurrency in `args.calls`, `args.repeat` times: summaries and notes."""
    summaries: list[dict[str, Any]] = []
    notes: list[str] = []
    async with BenchEnv.from_args(args) as env:
        for calls in args.calls:
            runs: list[dict[str, Any]] = []
            for _ in range(args.repeat):
                result = await env.run(spec_for(calls))
                runs.append(figures(result))
                notes += run_notes(result, machine["nproc"])
            summaries.append(summarise(calls, runs))
            if not args.json:
                print(f"... {calls} calls done", file=sys.stderr, flush=True)
    return summaries, notes
