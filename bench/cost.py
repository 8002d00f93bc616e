"""Cost: the bridge's CPU per call-second of audio and its memory per active call.

`python -m bench.cost --carrier plivo --calls 50,200 --seconds 20 [--repeat N]`

N calls start over the ramp and stay up for the whole run (flow `bench/flows/long.yaml`: a
half-minute prompt, repeated), each simulated carrier also sending caller audio at 50 frames a
second as real carriers do. Over the measurement window, whole-process figures of the bridge's
process are read from the OS (/proc/<pid>/stat utime + stime, /proc/<pid>/statm resident set):

- cpu/audio-s: bridge CPU milliseconds per second of audio the carriers received in the window;
- cpu/call-s: the same per second of connected call (stream open) in the window;
- rss/call: (mean resident memory in the window - resident memory after warm-up, before the
  load) / calls held at mid-window;
- rss peak/call: (the highest resident memory from the load's start, its burst of call starts
  over the ramp included, to the window's end - resident memory before the load) / calls
  started (issue 17's method with `--calls 100`: 100 calls start within the 2 s ramp).

With `--processes N` the calls go to N bridge processes in one cluster (see bench.capacity) and
every figure of the bridge is the sum over them.

Medians over the repeats (CPU and memory readings move from run to run); each run uses a fresh
bridge process, so memory freed by an earlier run never hides a later run's growth.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from bench.common import (
    BenchError,
    add_common_args,
    add_processes_arg,
    check_common_args,
    emit,
    fmt,
    int_list,
    machine_info,
    median_of,
    percentile,
    process_cells,
    process_headers,
    processes_note,
    settings_of,
    table,
)
from bench.harness import LoadResult, LoadSpec
from bench.steps import run_steps

FLOW = "long"
MIB = 1024 * 1024


def run_figures(result: LoadResult) -> dict[str, Any]:
    c = result.carriers
    cpu_ms = (result.server_cpu or 0.0) * result.window_seconds * 1000
    held = c.active_mid or result.spec.calls
    return {
        "active_calls": c.active_mid,
        "server_active_calls": result.server_active_mid,
        "cpu_ms_per_audio_second": cpu_ms / c.audio_seconds if c.audio_seconds else None,
        "cpu_ms_per_call_second": cpu_ms / c.call_seconds if c.call_seconds else None,
        "rss_kib_per_call": max(0.0, result.rss_mean - result.rss_base) / held / 1024,
        "rss_peak_kib_per_call": (
            max(0.0, result.rss_peak - result.rss_base) / result.spec.calls / 1024
        ),
        "rss_base_mib": result.rss_base / MIB,
        "rss_mean_mib": result.rss_mean / MIB,
        "rss_peak_mib": result.rss_peak / MIB,
        "audio_seconds": c.audio_seconds,
        "call_seconds": c.call_seconds,
        "bridge_cpu": result.server_cpu,
        "standin_cpu": result.standin_cpu,
        "stores_cpu": result.stores_cpu,
        "loadgen_cpu": result.loadgen_cpu,
        "machine_busy": result.machine_busy,
        "loadgen_lag_ms_p99": percentile(c.lag_ms, 99),
    }


def summarise(calls: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {"calls": calls, "repeats": len(runs)}
    for key in runs[0]:
        summary[key] = median_of(r[key] for r in runs)
    summary["runs"] = runs
    return summary


HEADERS = [
    "calls",
    "active",
    "cpu/audio-s",
    "cpu/call-s",
    "rss/call",
    "rss peak/call",
    "rss base",
    "rss load",
    "bridge cpu",
    "tts cpu",
    "loadgen cpu",
    "machine busy",
    "loadgen lag p99",
]


def row(s: dict[str, Any]) -> list[str]:
    return [
        str(s["calls"]),
        fmt(s["active_calls"], 0),
        fmt(s["cpu_ms_per_audio_second"], 2, " ms"),
        fmt(s["cpu_ms_per_call_second"], 2, " ms"),
        fmt(s["rss_kib_per_call"], 0, " KiB"),
        fmt(s["rss_peak_kib_per_call"], 0, " KiB"),
        fmt(s["rss_base_mib"], 1, " MiB"),
        fmt(s["rss_mean_mib"], 1, " MiB"),
        *process_cells(s),
    ]


async def run(args: argparse.Namespace, machine: dict[str, Any]) -> tuple[list[Any], list[str]]:
    def spec_for(calls: int) -> LoadSpec:
        return LoadSpec(
            carrier=args.carrier,
            calls=calls,
            seconds=args.seconds,
            flow=FLOW,
            ramp=args.ramp if args.ramp is not None else max(1.0, calls / 50),
            settle=args.settle,
            loadgen_procs=args.loadgen_procs,
            caller_audio=not args.no_caller_audio,
        )

    return await run_steps(args, machine, spec_for, run_figures, summarise)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cost",
        description="The bridge's CPU per call-second of audio and memory per active call.",
    )
    parser.add_argument(
        "--calls", type=int_list, default=[50, 200], help="concurrencies, e.g. 50,200"
    )
    parser.add_argument(
        "--no-caller-audio",
        action="store_true",
        help="carriers send no caller audio (for comparison)",
    )
    add_processes_arg(parser)
    add_common_args(parser, repeat=3, seconds=20.0)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    machine = machine_info()
    try:
        summaries, notes = asyncio.run(run(args, machine))
    except BenchError as exc:
        print(f"bench.cost: {exc}", file=sys.stderr)
        return 1
    notes.append(
        "cpu/audio-s: bridge CPU ms per second of audio delivered; cpu/call-s: per second of "
        "connected call; rss/call: (mean RSS under load - RSS before) / calls held; rss "
        "peak/call: (peak RSS from the load's start, the ramp's call starts included, to the "
        "window's end - RSS before) / calls started; whole bridge process from /proc; medians "
        f"over {args.repeat} run(s)"
    )
    notes += processes_note(args.processes)
    emit(
        as_json=args.json,
        benchmark="cost",
        machine=machine,
        settings=settings_of(args, caller_audio=not args.no_caller_audio, processes=args.processes),
        results=summaries,
        lines=table(process_headers(HEADERS, args.processes), [row(s) for s in summaries]),
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
