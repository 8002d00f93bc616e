"""Capacity: the most concurrent calls one bridge process (or `--processes N` of them in one
cluster) holds with audio that is never late.

`python -m bench.capacity --carrier plivo [--steps 50,100,200,400 | --start 50 --max-calls N]
[--processes N]`

Steps up the number of concurrent calls (doubling from `--start`, or the given `--steps`). At
each step N calls start over the ramp and stay up for the whole run (flow
`bench/flows/medium.yaml`: a ten-second prompt, repeated, so new prompts keep starting), with
caller audio at 50 frames a second. A step passes when, inside the measurement window:

- no underrun: no audio message continuing a prompt arrived after the carrier's playback
  queue had run dry (the caller would hear a gap);
- p99 lateness < 20 ms, over all such messages (an on-time message counts as 0 ms late);
- every call is held: N streams open at mid-window, and no call failed or broke the protocol.

Lateness is measured on the carrier side (see `bench.loadgen.MeteredPlayout`): the queue runs
dry at the end of the audio received so far (played in real time from its arrival); a message
arriving after that moment is late by the difference. It stops at the first step that fails,
or whose load generator was saturated (the result is then inconclusive), or at the cap.

With `--processes N` the N bridges share a Redis, a PostgreSQL and a secret (bench.cluster), the
calls' webhooks and streams are spread over them (bench.loadgen), and the bridge's CPU is their
sum; the pass criteria are the same.
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
    pct,
    percentile,
    percentile_with_zeros,
    process_cells,
    process_headers,
    processes_note,
    settings_of,
    table,
)
from bench.harness import BenchEnv, LoadResult, LoadSpec
from bench.steps import loadgen_saturated, run_notes

FLOW = "medium"
LATENESS_LIMIT_MS = 20.0
# Share of connected call time that must be audio: the flow's prompts leave ~0.4 s in ~10.7 s
# silent, so a lower share means prompts started late, which underruns (measured inside a
# prompt only) would not show.
AUDIO_SHARE_MIN = 0.9
MAX_STEPS = 16

HEADERS = [
    "calls",
    "held",
    "underruns",
    "calls w/ underrun",
    "late p99",
    "late max",
    "messages",
    "audio share",
    "bridge cpu",
    "tts cpu",
    "loadgen cpu",
    "machine busy",
    "loadgen lag p99",
    "verdict",
]


def run_figures(result: LoadResult) -> dict[str, Any]:
    c = result.carriers
    return {
        "held": c.active_mid,
        "underruns": len(c.late_ms),
        "calls_with_underrun": c.calls_with_underrun,
        "late_ms_p99": percentile_with_zeros(c.late_ms, c.messages, 99),
        "late_ms_max": max(c.late_ms, default=0.0),
        "messages": c.messages,
        "audio_share": c.audio_seconds / c.call_seconds if c.call_seconds else None,
        "failed_calls": sum(c.errors.values()) + c.no_audio,
        "violations": c.violations,
        "bridge_cpu": result.server_cpu,
        "standin_cpu": result.standin_cpu,
        "stores_cpu": result.stores_cpu,
        "loadgen_cpu": result.loadgen_cpu,
        "machine_busy": result.machine_busy,
        "loadgen_lag_ms_p99": percentile(c.lag_ms, 99),
        "loadgen_saturated": loadgen_saturated(result),
        # Where the calls went, each process's requests (JSON only: not a median).
        "requests_by_process": result.stats.get("requests_by_process", [result.stats["requests"]]),
    }


def verdict(calls: int, run: dict[str, Any]) -> str:
    ok = (
        run["underruns"] == 0
        and run["late_ms_p99"] is not None
        and run["late_ms_p99"] < LATENESS_LIMIT_MS
        and run["held"] >= calls
        and run["audio_share"] is not None
        and run["audio_share"] >= AUDIO_SHARE_MIN
        and run["failed_calls"] == 0
        and run["violations"] == 0
    )
    if ok:
        return "pass"
    return "inconclusive" if run["loadgen_saturated"] else "fail"


def summarise(calls: int, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians over the repeats; the step passes only if every repeat passed."""
    verdicts = [verdict(calls, r) for r in runs]
    summary: dict[str, Any] = {"calls": calls, "repeats": len(runs)}
    for key in runs[0]:
        if key not in ("loadgen_saturated", "requests_by_process"):
            summary[key] = median_of(float(r[key]) for r in runs if r[key] is not None)
    if all(v == "pass" for v in verdicts):
        summary["verdict"] = "pass"
    elif "fail" in verdicts:
        summary["verdict"] = "fail"
    else:
        summary["verdict"] = "inconclusive"
    summary["runs"] = [{**r, "verdict": v} for r, v in zip(runs, verdicts, strict=True)]
    return summary


def row(s: dict[str, Any]) -> list[str]:
    return [
        str(s["calls"]),
        fmt(s["held"], 0),
        fmt(s["underruns"], 0),
        fmt(s["calls_with_underrun"], 0),
        fmt(s["late_ms_p99"], 1, " ms"),
        fmt(s["late_ms_max"], 1, " ms"),
        fmt(s["messages"], 0),
        pct(s["audio_share"]),
        *process_cells(s),
        s["verdict"],
    ]


def steps_of(args: argparse.Namespace) -> list[int]:
    if args.steps:
        return list(args.steps)[:MAX_STEPS]
    steps: list[int] = []
    calls = args.start
    while calls <= args.max_calls and len(steps) < MAX_STEPS:
        steps.append(calls)
        calls *= 2
    return steps


async def run(
    args: argparse.Namespace, machine: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[str]]:
    summaries: list[dict[str, Any]] = []
    notes: list[str] = []
    async with BenchEnv.from_args(args) as env:
        for calls in steps_of(args):
            runs: list[dict[str, Any]] = []
            for _ in range(args.repeat):
                spec = LoadSpec(
                    carrier=args.carrier,
                    calls=calls,
                    seconds=args.seconds,
                    flow=FLOW,
                    ramp=args.ramp if args.ramp is not None else max(1.0, calls / 50),
                    settle=args.settle,
                    loadgen_procs=args.loadgen_procs,
                )
                result = await env.run(spec)
                runs.append(run_figures(result))
                notes += run_notes(result, machine["nproc"])
            summary = summarise(calls, runs)
            summaries.append(summary)
            if not args.json:
                # Each step as it finishes (a capacity run takes minutes); figures go to stdout.
                heads = process_headers(HEADERS, args.processes)
                cells = ", ".join(f"{h} {c}" for h, c in zip(heads, row(summary), strict=True))
                print(f"... step: {cells}", file=sys.stderr, flush=True)
            if summary["verdict"] != "pass":
                break
    return summaries, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.capacity",
        description="Concurrent calls one bridge process (or a cluster of N) holds with no late "
        "audio.",
    )
    parser.add_argument(
        "--steps",
        type=int_list,
        default=None,
        help="concurrencies to try in order, e.g. 50,100,200,400",
    )
    parser.add_argument("--start", type=int, default=50, help="first step (then doubling)")
    parser.add_argument("--max-calls", type=int, default=1600, help="the cap")
    add_processes_arg(parser)
    add_common_args(parser, repeat=1, seconds=15.0)
    args = parser.parse_args(argv)
    check_common_args(parser, args)
    if not 1 <= args.start <= args.max_calls <= 100_000:
        parser.error("need 1 <= --start <= --max-calls <= 100000")
    machine = machine_info()
    try:
        summaries, notes = asyncio.run(run(args, machine))
    except BenchError as exc:
        print(f"bench.capacity: {exc}", file=sys.stderr)
        return 1
    passed = [s["calls"] for s in summaries if s["verdict"] == "pass"]
    last = summaries[-1] if summaries else None
    if last is not None and last["verdict"] == "pass":
        capacity = f"at least {last['calls']} calls (the cap was reached)"
    elif passed:
        capacity = f"{max(passed)} calls ({last['calls'] if last else '?'} calls: "
        capacity += f"{last['verdict'] if last else '?'})"
    else:
        capacity = f"below {summaries[0]['calls']} calls" if summaries else "unknown"
    lines = table(process_headers(HEADERS, args.processes), [row(s) for s in summaries])
    lines.append(f"capacity   {capacity}")
    notes.append(
        f"pass: no underrun, p99 lateness < {LATENESS_LIMIT_MS:g} ms, every call held, audio "
        f"for >= {AUDIO_SHARE_MIN:.0%} of call time; "
        f"lateness from the carrier side; a step passes only if all {args.repeat} run(s) pass"
    )
    notes += processes_note(args.processes)
    emit(
        as_json=args.json,
        benchmark="capacity",
        machine=machine,
        settings=settings_of(args, processes=args.processes),
        results=[*summaries, {"capacity": capacity}],
        lines=lines,
        notes=notes,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
