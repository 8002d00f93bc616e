"""Latency: how soon a caller hears the first audio, and how much of that the bridge adds.

`python -m bench.latency --carrier plivo --calls 1,50,200 [--seconds N] [--repeat N]`

At each concurrency N, N call slots each place calls of `--call-seconds` one after another
(flow `bench/flows/short.yaml`: a short prompt repeated), so calls keep starting while N are in
progress. Two figures, p50 and p99, medians over the repeats:

- start->audio: carrier side, from the simulated carrier opening the stream WebSocket (and
  sending start / connected) to its first audio message; it includes the Waves stand-in's time
  to the first chunk. One sample per call whose stream opened inside the window.
- added: bridge side, the `first_audio` observer events: first Waves chunk received -> first
  carrier frame sent, leaving out any time the pacer held audio back on purpose. One sample per
  prompt that began inside the window.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bench.common import (
    BenchError,
    add_common_args,
    check_common_args,
    emit,
    fmt,
    int_list,
    machine_info,
    median_of,
    percentile,
    process_cells,
    settings_of,
    table,
)
from bench.harness import LoadResult, LoadSpec
from bench.steps import run_steps

FLOW = "short"


def run_figures(result: LoadResult) -> dict[str, Any]:
    c = result.carriers
    return {
        "active_calls": c.active_mid,
        "start_to_audio_ms_p50": percentile(c.ttfa_ms, 50),
        "start_to_audio_ms_p99": percentile(c.ttfa_ms, 99),
        "bridge_added_ms_p50": percentile(result.added_ms, 50),
        "bridge_added_ms_p99": percentile(result.added_ms, 99),
        "stream_starts": len(c.ttfa_ms),
        "prompts": len(result.added_ms),
        "bridge_cpu": result.server_cpu,
        "standin_cpu": result.standin_cpu,
        "loadgen_cpu": result.loadgen_cpu,
        "machine_busy": result.machine_busy,
        "loadgen_lag_ms_p99": percentile(c.lag_ms, 99),
    }


def summarise(calls: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats of each figure; sample counts are summed."""
    summary: dict[str, Any] = {"calls": calls, "repeats": len(runs)}
    for key in runs[0]:
        if key in ("stream_starts", "prompts"):
            summary[key] = sum(r[key] for r in runs)
        else:
            summary[key] = median_of(r[key] for r in runs)
    summary["runs"] = runs
    return summary


def row(s: dict[str, Any]) -> list[str]:
    return [
        str(s["calls"]),
        fmt(s["active_calls"], 0),
        fmt(s["start_to_audio_ms_p50"], 1, " ms"),
        fmt(s["start_to_audio_ms_p99"], 1, " ms"),
        fmt(s["bridge_added_ms_p50"], 2, " ms"),
        fmt(s["bridge_added_ms_p99"], 2, " ms"),
        str(s["stream_starts"]),
        str(s["prompts"]),
        *process_cells(s),
    ]


HEADERS = [
    "calls",
    "active",
    "start->audio p50",
    "p99",
    "added p50",
    "p99",
    "starts",
    "prompts",
    "bridge cpu",
    "tts cpu",
    "loadgen cpu",
    "machine busy",
    "loadgen lag p99",
]


async def run(args: argparse.Namespace, machine: dict[str, Any]) -> tuple[list[Any], list[str]]:
    def spec_for(calls: int) -> LoadSpec:
        return LoadSpec(
            carrier=args.carrier,
            calls=calls,
            seconds=args.seconds,
            flow=FLOW,
            call_seconds=args.call_seconds,
            ramp=args.ramp if args.ramp is not None else args.call_seconds,
            settle=args.settle,
            loadgen_procs=args.loadgen_procs,
        )

    return await run_steps(args, machine, spec_for, run_figures, summarise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.latency",
        description="Time to first audio and the latency the bridge adds, at each concurrency.",
    )
    parser.add_argument(
        "--calls", type=int_list, default=[1, 50, 200], help="concurrencies, e.g. 1,50,200"
    )
    parser.add_argument(
        "--call-seconds",
        type=float,
        default=6.0,
        help="each call lasts this long, then its slot places the next",
    )
    add_common_args(parser, repeat=3, seconds=15.0)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if not 1 <= args.call_seconds <= 600:
        parser.error("--call-seconds must be from 1 to 600")
    machine = machine_info()
    try:
        summaries, notes = asyncio.run(run(args, machine))
    except BenchError as exc:
        print(f"bench.latency: {exc}", file=sys.stderr)
        return 1
    lines = table(HEADERS, [row(s) for s in summaries])
    notes.append(
        "start->audio: stream opened -> first audio message, carrier side; added: first Waves "
        "chunk -> first carrier frame, bridge side (first_audio events); p50/p99 are medians "
        f"over {args.repeat} run(s) of each run's nearest-rank percentile"
    )
    emit(
        as_json=args.json,
        benchmark="latency",
        machine=machine,
        settings=settings_of(args, call_seconds=args.call_seconds),
        results=summaries,
        lines=lines,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
