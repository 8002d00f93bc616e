"""Prometheus metrics for one bridge, fed by the call sessions' events.

Each `Bridge` has its own registry, so several bridges in one process (tests, benchmarks) do not
mix their figures. `/metrics` serves it in the text exposition format.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from telebridge.server.cluster_prompts import ClusterPrompts
    from telebridge.tts.cache import PromptCache
    from telebridge.tts.guard import WavesGuard

LATENCY_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)


class Metrics:
    """Counters and histograms of calls, speech and audio; an observer of call events."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.active = Gauge(
            "telebridge_active_calls", "Calls streaming now", ["carrier"], registry=r
        )
        self.calls = Counter(
            "telebridge_calls", "Calls ended, by outcome", ["carrier", "outcome"], registry=r
        )
        self.refused = Counter(
            "telebridge_calls_refused", "Calls answered busy", ["carrier", "reason"], registry=r
        )
        self.first_audio = Histogram(
            "telebridge_time_to_first_audio_seconds",
            "Stream start to the first audio frame sent to the carrier",
            ["carrier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.added = Histogram(
            "telebridge_added_latency_seconds",
            "First Waves chunk of a prompt to its first carrier frame",
            ["carrier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.waves_errors = Counter(
            "telebridge_waves_errors", "Waves failures, by kind", ["kind"], registry=r
        )
        self.underruns = Counter(
            "telebridge_underruns",
            "Times a carrier queue ran dry mid-prompt",
            ["carrier"],
            registry=r,
        )
        self.barge_ins = Counter(
            "telebridge_barge_ins", "Prompts cut off by a key", ["carrier"], registry=r
        )
        self.agent_text_to_audio = Histogram(
            "telebridge_agent_text_to_audio_seconds",
            "Agent step: an utterance's first text piece to its first Waves audio",
            ["carrier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_waves = Histogram(
            "telebridge_agent_waves_first_audio_seconds",
            "Agent step: an utterance's first text sent to Waves to its first audio (Waves' part)",
            ["carrier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_held = Histogram(
            "telebridge_agent_text_held_seconds",
            "Agent step: an utterance's first piece to its first text sent to Waves (the bridge "
            "holds text for a sentence or clause boundary, at most 0.3 s)",
            ["carrier"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.agent_interruptions = Counter(
            "telebridge_agent_interruptions",
            "Agent utterances cut off, by who cut them (agent: a clear; key: a barge-in)",
            ["carrier", "by"],
            registry=r,
        )
        self.cache_hits = Gauge(
            "telebridge_prompt_cache_hits", "Prompts served from the cache", registry=r
        )
        self.cache_misses = Gauge(
            "telebridge_prompt_cache_misses", "Prompts synthesised by Waves", registry=r
        )
        self.cache_bytes = Gauge(
            "telebridge_prompt_cache_bytes", "Audio held in the cache", registry=r
        )
        self.cache_disk_hits = Gauge(
            "telebridge_prompt_cache_disk_hits",
            "Prompts served from the cache folder (TELEBRIDGE_CACHE_DIR)",
            registry=r,
        )
        self.cache_shared_hits = Gauge(
            "telebridge_prompt_cache_shared_hits",
            "Prompts served from the cluster's shared cache (kept by another process)",
            registry=r,
        )
        self.cache_follows = Gauge(
            "telebridge_prompt_cache_follows",
            "Prompts heard as another process of the cluster synthesised them",
            registry=r,
        )
        self.cache_shared_errors = Gauge(
            "telebridge_prompt_cache_shared_errors",
            "Prompts synthesised alone because the cluster's Redis could not be reached",
            registry=r,
        )
        self.waves_in_flight = Gauge(
            "telebridge_waves_requests_in_flight", "Waves requests under way", registry=r
        )
        self.waves_waits = Gauge(
            "telebridge_waves_admission_waits",
            "Waves requests that waited for a back-off or a free slot",
            registry=r,
        )
        self.waves_shed = Gauge(
            "telebridge_waves_requests_shed",
            "Waves requests refused without asking Waves (key refused, backing off, queue full)",
            registry=r,
        )
        self.waves_refused = Gauge(
            "telebridge_waves_key_refused", "1 while Waves refuses the API key", registry=r
        )
        self.waves_transport = Gauge(
            "telebridge_waves_transport",
            "1 for the Waves transport prompts go over now (websocket or sse)",
            ["transport"],
            registry=r,
        )
        self.waves_switches = Counter(
            "telebridge_waves_transport_switches",
            "Times prompts moved to another Waves transport (WAVES_TRANSPORT=auto)",
            ["to"],
            registry=r,
        )
        self._calls: dict[str, tuple[str, float, bool]] = {}  # call id -> carrier, start, heard

    def observe(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        if kind == "started":
            carrier = str(fields.get("carrier", "?"))
            self._calls[call_id] = (carrier, time.monotonic(), False)
            self.active.labels(carrier).inc()
            return
        state = self._calls.get(call_id)
        if state is None:
            return
        carrier, started, heard = state
        if kind == "first_audio":
            self.added.labels(carrier).observe(float(fields.get("added_ms", 0)) / 1000)
            if not heard:
                self.first_audio.labels(carrier).observe(time.monotonic() - started)
                self._calls[call_id] = (carrier, started, True)
        elif kind == "tts_error":
            self.waves_errors.labels(str(fields.get("error", "unknown"))).inc()
        elif kind == "barge_in":
            self.barge_ins.labels(carrier).inc()
        elif kind == "agent_first_audio":
            self.agent_text_to_audio.labels(carrier).observe(fields["text_to_audio_ms"] / 1000)
            self.agent_waves.labels(carrier).observe(fields["waves_ms"] / 1000)
        elif kind == "agent_text_sent":
            self.agent_held.labels(carrier).observe(fields["held_ms"] / 1000)
        elif kind == "agent_clear" and fields.get("interrupted"):
            self.agent_interruptions.labels(carrier, str(fields.get("by"))).inc(
                int(fields["interrupted"])
            )
        elif kind == "ended":
            self._calls.pop(call_id, None)
            self.active.labels(carrier).dec()
            outcome = str(fields.get("outcome") or "ended").split(" ")[0]
            self.calls.labels(carrier, outcome[:40]).inc()
            underruns = int(fields.get("underruns", 0))
            if underruns:
                self.underruns.labels(carrier).inc(underruns)

    def watch_cache(self, cache: PromptCache) -> None:
        self.cache_hits.set_function(lambda: cache.hits)
        self.cache_misses.set_function(lambda: cache.misses)
        self.cache_bytes.set_function(lambda: cache.size)
        self.cache_disk_hits.set_function(lambda: cache.disk_hits)
        self.cache_shared_hits.set_function(lambda: cache.shared_hits)
        self.cache_follows.set_function(lambda: cache.follows)

    def watch_shared_prompts(self, shared: ClusterPrompts) -> None:
        self.cache_shared_errors.set_function(lambda: shared.errors)

    def watch_guard(self, guard: WavesGuard) -> None:
        self.waves_in_flight.set_function(lambda: guard.in_flight)
        self.waves_waits.set_function(lambda: guard.waits)
        self.waves_shed.set_function(lambda: guard.shed)
        self.waves_refused.set_function(lambda: 1 if guard.state == "refused" else 0)

    def watch_transport(self, current: Callable[[], str]) -> None:
        """Report which transport `current()` names; count each switch with `switched`."""
        for name in ("websocket", "sse"):
            self.waves_transport.labels(name).set_function(
                lambda name=name: 1 if current() == name else 0  # type: ignore[misc]
            )

    def switched(self, to: str) -> None:
        self.waves_switches.labels(to).inc()

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
