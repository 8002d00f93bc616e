"""The benchmarks run end to end at a tiny size and print their figures; no performance asserted.

Each benchmark is run as its own command (bridge, Waves stand-in and load generator in their own
processes, as for real), for a couple of calls and a second or two; the capacity benchmark also
with two bridge processes in one cluster (a private Redis and PostgreSQL), checking that the
calls went where a round-robin load balancer would send them. The lateness rule the
capacity benchmark judges by is checked on its own, with made-up arrival times.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.common import percentile, percentile_with_zeros, process_headers
from bench.loadgen import Job, MeteredPlayout, WorkerStats, restream

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--seconds", "1.5", "--repeat", "1", "--ramp", "0", "--settle", "0.5"]


def run_bench(module: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def figure_rows(out: str, header_word: str) -> tuple[str, list[str]]:
    """The table's header line and the rows under it (lines starting with a call count)."""
    lines = out.splitlines()
    assert any(line.startswith("machine ") and "CPUs" in line for line in lines), out
    header = next(
        line for line in lines if line.lstrip().startswith("calls") and header_word in line
    )
    rows = [line for line in lines[lines.index(header) + 1 :] if line.split()[:1] == ["2"]]
    return header, rows


def test_latency_prints_its_figures() -> None:
    args = ["--carrier", "plivo", "--calls", "2", "--call-seconds", "1", *TINY]
    out = run_bench("bench.latency", *args)
    header, rows = figure_rows(out, "start->audio p50")
    assert "added p50" in header
    assert len(rows) == 1
    cells = rows[0].split()
    # calls, active, then start->audio p50 and p99 with a unit each: numbers were measured.
    assert cells[0] == "2" and cells[3] == "ms", rows[0]
    float(cells[2])


def test_cost_prints_json_for_vonage() -> None:
    out = run_bench("bench.cost", "--carrier", "vonage", "--calls", "2", "--json", *TINY)
    document = json.loads(out)
    assert document["benchmark"] == "cost"
    assert document["machine"]["nproc"] >= 1
    (result,) = document["results"]
    assert result["calls"] == 2
    assert result["cpu_ms_per_audio_second"] is not None
    assert result["rss_kib_per_call"] is not None
    assert result["rss_peak_kib_per_call"] is not None
    # The peak is looked for over the window too, so it is never below the window's mean.
    assert result["rss_peak_mib"] >= result["rss_mean_mib"] > 0
    assert result["audio_seconds"] > 0


def test_capacity_prints_each_step_and_a_verdict() -> None:
    out = run_bench("bench.capacity", "--carrier", "plivo", "--steps", "2", *TINY)
    header, rows = figure_rows(out, "underruns")
    assert "late p99" in header and "verdict" in header
    assert len(rows) == 1
    assert rows[0].split()[-1] in ("pass", "fail", "inconclusive")
    assert any(line.startswith("capacity ") for line in out.splitlines())


def test_capacity_spreads_calls_over_two_processes() -> None:
    # Two bridges sharing a private Redis, PostgreSQL and secret; three calls numbered 0, 1, 2.
    args = ["--carrier", "plivo", "--steps", "3", "--processes", "2", "--json", *TINY]
    document = json.loads(run_bench("bench.capacity", *args))
    assert document["settings"]["processes"] == 2
    step = document["results"][0]
    # Every call held: each stream was taken by the process that did not mint its token.
    assert step["held"] == 3 and step["failed_calls"] == 0 and step["violations"] == 0, step
    (run,) = step["runs"]
    answers = [p.get("http /plivo/answer", 0) for p in run["requests_by_process"]]
    streams = [p.get("websocket /plivo/stream", 0) for p in run["requests_by_process"]]
    # One warm-up call to each process itself, then call i: webhook to i mod 2, stream to
    # (i + 1) mod 2.
    assert answers == [1 + 2, 1 + 1] and streams == [1 + 1, 1 + 2], run["requests_by_process"]


def test_calls_are_spread_as_a_round_robin_balancer_would() -> None:
    urls = ["http://127.0.0.1:1001", "http://127.0.0.1:1002", "http://127.0.0.1:1003"]
    job = Job("plivo", urls[0], "medium", [0.0], 10.0, 10.0, (0.0, 5.0), urls=urls)
    assert [job.targets(i) for i in range(4)] == [
        (urls[0], urls[1]),
        (urls[1], urls[2]),
        (urls[2], urls[0]),
        (urls[0], urls[1]),
    ]
    alone = Job("plivo", urls[0], "medium", [0.0], 10.0, 10.0, (0.0, 5.0))
    assert alone.targets(7) == (urls[0], urls[0])
    stream = "ws://127.0.0.1:1001/plivo/stream?token=abc.def"
    assert restream(stream, urls[2]) == "ws://127.0.0.1:1003/plivo/stream?token=abc.def"
    assert restream(None, urls[2]) is None
    assert process_headers(["calls", "bridge cpu"], 3) == ["calls", "bridge cpu (sum of 3)"]
    assert process_headers(["calls", "bridge cpu"], 1) == ["calls", "bridge cpu"]


def test_agent_prints_its_figures() -> None:
    # A window long enough for each call's agent to begin an utterance inside it.
    args = ["--carrier", "plivo", "--calls", "2", "--pause", "0.1", *TINY, "--seconds", "3"]
    out = run_bench("bench.agent", *args)
    lines = out.splitlines()
    assert any(line.startswith("machine ") and "CPUs" in line for line in lines), out
    tables = {}
    for word in ("added p50", "to waves", "cpu/call-s"):
        header = next(line for line in lines if line.startswith("calls") and word in line)
        tables[word] = (header, lines[lines.index(header) + 1].split())
    header, cells = tables["added p50"]
    assert "total p50" in header and "waves p50" in header and "bridge-side p50" in header
    assert cells[0] == "2", out
    int(cells[1])  # utterances measured
    header, cells = tables["cpu/call-s"]
    assert "agent cpu" in header and cells[0] == "2", out
    assert any(line.startswith("note: added = total - waves") for line in lines), out


def test_bad_arguments_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench.latency", "--calls", "0"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert "--calls" in done.stderr


# --- the lateness rule -----------------------------------------------------------------------


def test_lateness_counts_only_messages_that_continue_a_prompt() -> None:
    stats = WorkerStats(0.0, 100.0)
    playout = MeteredPlayout(8000, 160, stats)  # μ-law: 800 bytes are 100 ms
    playout.enqueue(10.00, b"\xff" * 800)  # a prompt's first message: never late
    playout.enqueue(10.05, b"\xff" * 800)  # queue runs until 10.1: on time
    playout.enqueue(10.25, b"\xff" * 800)  # queue ran dry at 10.2: 50 ms late
    assert stats.messages == 2
    assert stats.late_ms == pytest.approx([50.0])
    assert stats.calls_with_underrun == 1
    playout.mark_time(10.30)  # the prompt ends
    playout.enqueue(12.00, b"\xff" * 800)  # the next prompt's first message, after a pause
    assert stats.messages == 2
    playout.clear(12.05)
    playout.enqueue(12.50, b"\xff" * 800)  # audio after a clear starts afresh too
    playout.enqueue(12.70, b"\xff" * 800)  # ran dry at 12.6: late again, same call
    assert stats.late_ms == pytest.approx([50.0, 100.0])
    assert stats.calls_with_underrun == 1
    assert stats.audio_seconds == pytest.approx(0.6)


def test_lateness_outside_the_window_is_ignored() -> None:
    stats = WorkerStats(20.0, 30.0)
    playout = MeteredPlayout(8000, 160, stats)
    playout.enqueue(10.0, b"\xff" * 160)
    playout.enqueue(11.0, b"\xff" * 160)
    assert stats.messages == 0 and stats.late_ms == [] and stats.audio_seconds == 0


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 99) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([float(v) for v in range(1, 101)], 99) == 99.0
    # One late message among 200 is below the 99th percentile; among 50 it is not.
    assert percentile_with_zeros([50.0], 200, 99) == 0.0
    assert percentile_with_zeros([50.0], 50, 99) == 50.0
    assert percentile_with_zeros([], 0, 99) is None
