"""What every benchmark shares: the machine's description, process figures read from /proc,
percentiles, aligned tables, the common command-line options and the output (text or JSON).

Nothing here starts processes; `bench.harness` does that.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The directory holding the `bench` package: child processes run from there.
REPO_ROOT = Path(__file__).resolve().parent.parent
FLOWS_DIR = Path(__file__).resolve().parent / "flows"
CARRIERS = ("plivo", "vonage")
MAX_PROCESSES = 16

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class BenchError(Exception):
    """The benchmark cannot run or finish; the message says why."""


# --- the machine ---------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or "unknown"
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "cpu model"):
            return value.strip()
    return platform.processor() or "unknown"


def machine_info() -> dict[str, Any]:
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    return {
        "nproc": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "system": f"{platform.system()} {platform.release()}",
    }


def machine_line(info: dict[str, Any]) -> str:
    return (
        f"machine    {info['nproc']} CPUs ({info['usable_cpus']} usable), {info['cpu_model']}, "
        f"{info['implementation']} {info['python']}, {info['system']}"
    )


# --- processes, as the OS sees them --------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    """One reading of a process: CPU seconds used so far (user + system) and resident memory."""

    cpu_seconds: float
    rss_bytes: int


def read_proc(pid: int) -> ProcSample:
    """utime + stime from /proc/<pid>/stat and the resident set from /proc/<pid>/statm."""
    stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    # The command name (field 2) may hold spaces; the fields after its ')' are fixed.
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime = int(fields[11]), int(fields[12])
    resident = int(Path(f"/proc/{pid}/statm").read_text(encoding="ascii").split()[1])
    return ProcSample((utime + stime) / _CLOCK_TICKS, resident * _PAGE_SIZE)


def try_read_proc(pid: int | None) -> ProcSample | None:
    if pid is None:
        return None
    try:
        return read_proc(pid)
    except (OSError, ValueError, IndexError):
        return None  # the process is gone


def read_system_cpu() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs so far, from the first line of /proc/stat."""
    with open("/proc/stat", encoding="ascii") as stat:
        fields = [int(x) for x in stat.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    # guest time is already inside user and nice
    total = sum(fields[:8])
    return total - idle, total


def system_busy(before: tuple[int, int], after: tuple[int, int]) -> float | None:
    """How busy the whole machine was between two readings, as a fraction of all its CPUs."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


def cpu_share(before: ProcSample | None, after: ProcSample | None, seconds: float) -> float | None:
    """CPU used between two readings, as a fraction of one core."""
    if before is None or after is None or seconds <= 0:
        return None
    return (after.cpu_seconds - before.cpu_seconds) / seconds


def raise_fd_limit() -> None:
    """Hundreds of calls need a few sockets each: lift the soft limit to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# --- statistics ----------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was actually observed."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def percentile_with_zeros(positives: Sequence[float], total: int, q: float) -> float | None:
    """Percentile of `total` values of which all but `positives` are zero."""
    if total <= 0:
        return None
    zeros = max(0, total - len(positives))
    rank = max(1, math.ceil(q / 100 * total))
    if rank <= zeros:
        return 0.0
    ordered = sorted(positives)
    return ordered[min(rank - zeros, len(ordered)) - 1]


def median_of(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


# --- command line and output ---------------------------------------------------------------


def int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected numbers separated by commas: {text!r}"
        ) from None
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("every number of calls must be at least 1")
    return values


def add_common_args(parser: argparse.ArgumentParser, *, repeat: int, seconds: float) -> None:
    parser.add_argument("--carrier", choices=CARRIERS, default="plivo")
    parser.add_argument(
        "--seconds", type=float, default=seconds, help="measurement window of each run"
    )
    parser.add_argument(
        "--repeat", type=int, default=repeat, help="runs per step; figures are their medians"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead")
    parser.add_argument(
        "--loadgen-procs",
        type=int,
        default=1,
        help="load-generator processes the simulated calls are spread over",
    )
    parser.add_argument(
        "--tts-chunk-interval",
        type=float,
        default=0.05,
        help="seconds between the stand-in's 150 ms audio chunks (0.05: 3x real time)",
    )
    parser.add_argument(
        "--tts-first-chunk-delay",
        type=float,
        default=0.0,
        help="extra seconds the stand-in waits before a request's first chunk",
    )
    parser.add_argument("--vonage-rate", type=int, choices=(8000, 16000, 24000), default=16000)
    parser.add_argument(
        "--waves-transport",
        choices=("websocket", "sse"),
        default="websocket",
        help="how the bridge reaches the Waves stand-in (WAVES_TRANSPORT), for comparison",
    )
    parser.add_argument(
        "--prompt-cache-mb",
        type=int,
        default=0,
        help="the bridge's prompt cache (TELEBRIDGE_CACHE_MB); default 0: off, so every prompt "
        "streams from the Waves stand-in",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio"),
        default="auto",
        help="the bridge's event loop: auto (uvloop when installed, as `telebridge serve` runs) "
        "or asyncio, for comparison",
    )
    parser.add_argument(
        "--ws",
        default="telebridge",
        help="the bridge's uvicorn WebSocket protocol: telebridge (what `telebridge serve` "
        "runs) or a uvicorn name such as websockets-sansio, for comparison",
    )
    parser.add_argument(
        "--standin-inproc",
        action="store_true",
        help="run the Waves stand-in inside the bridge's process (its CPU then counts as the "
        "bridge's); default: its own process",
    )
    parser.add_argument(
        "--ramp", type=float, default=None, help="seconds over which the calls are started"
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds after the ramp before measuring"
    )
    parser.add_argument(
        "--log-dir", type=Path, default=None, help="keep the child processes' logs here"
    )
    parser.add_argument(
        "--profile-dir",
        type=Path,
        default=None,
        help="write a cProfile of each bridge process here (slows the bridge: hot spots only)",
    )


def check_common_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not 0.5 <= args.seconds <= 3600:
        parser.error("--seconds must be from 0.5 to 3600")
    if not 1 <= args.repeat <= 50:
        parser.error("--repeat must be from 1 to 50")
    if not 1 <= args.loadgen_procs <= 64:
        parser.error("--loadgen-procs must be from 1 to 64")
    if not 0 <= args.tts_chunk_interval <= 1:
        parser.error("--tts-chunk-interval must be from 0 to 1")
    if not 0 <= args.tts_first_chunk_delay <= 5:
        parser.error("--tts-first-chunk-delay must be from 0 to 5")
    if args.ramp is not None and not 0 <= args.ramp <= 600:
        parser.error("--ramp must be from 0 to 600")
    if not 0 <= args.prompt_cache_mb <= 65536:
        parser.error("--prompt-cache-mb must be from 0 to 65536")
    if not 0 <= args.settle <= 600:
        parser.error("--settle must be from 0 to 600")
    if not 1 <= getattr(args, "processes", 1) <= MAX_PROCESSES:
        parser.error(f"--processes must be from 1 to {MAX_PROCESSES}")


def add_processes_arg(parser: argparse.ArgumentParser) -> None:
    """`--processes N`: N bridge processes in one cluster (bench.cluster) instead of one."""
    parser.add_argument(
        "--processes",
        type=int,
        default=1,
        help="bridge processes sharing one private Redis and PostgreSQL (a cluster); calls are "
        "spread over them; bridge CPU and RSS are their sums (default 1: one process, SQLite)",
    )


def process_headers(headers: list[str], processes: int) -> list[str]:
    """The table's headers, saying that the bridge's figures are sums when there are several."""
    if processes == 1:
        return headers
    return [f"{h} (sum of {processes})" if h.startswith("bridge ") else h for h in headers]


def processes_note(processes: int) -> list[str]:
    if processes == 1:
        return []
    return [
        f"{processes} bridge processes joined by one Redis, the call log in one PostgreSQL: "
        f"call i's answer webhook went to process i mod {processes}, its stream to "
        f"(i + 1) mod {processes}; bridge CPU and memory are the sums over the processes"
    ]


def fmt(value: float | None, digits: int = 1, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}{unit}"


def pct(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.0f}%"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Right-aligned columns, two spaces apart."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return lines


def process_cells(s: dict[str, Any]) -> list[str]:
    """The table cells every benchmark ends a row with: who used the CPU, and the loadgen's lag."""
    return [
        pct(s["bridge_cpu"]),
        pct(s["standin_cpu"]),
        pct(s["loadgen_cpu"]),
        pct(s["machine_busy"]),
        fmt(s["loadgen_lag_ms_p99"], 1, " ms"),
    ]


def settings_of(args: argparse.Namespace, **own: object) -> dict[str, object]:
    """The settings line of a benchmark: the shared options, with the benchmark's `own` ones."""
    return {
        "carrier": args.carrier,
        "window": f"{args.seconds:g} s",
        "repeat": args.repeat,
        **own,
        "tts_chunk_interval": args.tts_chunk_interval,
        "prompt_cache_mb": args.prompt_cache_mb,
        "loop": args.loop,
        "ws": args.ws,
        "waves_transport": args.waves_transport,
    }


def emit(
    *,
    as_json: bool,
    benchmark: str,
    machine: dict[str, Any],
    settings: dict[str, Any],
    results: list[dict[str, Any]],
    lines: list[str],
    notes: list[str],
) -> None:
    """Print the figures: aligned lines for people, or one JSON document for programs."""
    notes = list(dict.fromkeys(notes))  # repeats of a run often give the same warning
    if as_json:
        document = {
            "benchmark": benchmark,
            "machine": machine,
            "settings": settings,
            "results": results,
            "notes": notes,
        }
        print(json.dumps(document, indent=2, sort_keys=True))
        return
    print(machine_line(machine))
    described = ", ".join(f"{k} {v}" for k, v in settings.items())
    print(f"benchmark  {benchmark}: {described}")
    for line in lines:
        print(line)
    for note in notes:
        print(f"note: {note}")
    sys.stdout.flush()
