"""The bridge, or the Waves stand-in, in a process of its own, for the benchmarks.

`python -m bench.server bridge` serves the real app (`create_app` under uvicorn via `ServedApp`)
on a loopback port with simulated carrier credentials, speaking to a Waves stand-in given by
`--waves-url` (or one inside this process with `--standin-inproc`). `python -m bench.server
standin` serves only the stand-in. Each prints one JSON line when ready (`url`, `port`, `pid`)
and serves until SIGINT/SIGTERM, or until its stdin closes with `--stop-on-eof`.

Besides the app's routes the bridge answers `GET /_bench/stats`: the `first_audio` observer
events (monotonic time, `added_ms`), the agent step's utterances (`agent`: its events joined per
utterance, with their monotonic times), counts of every observer event, the live calls, and the
requests it was sent by kind and path (`requests`: "http /plivo/answer", "websocket
/plivo/stream", ...), which show where a cluster's load balancer sent each call.
`--redis-url`, `--db` and `--process-id` make it one process of a cluster (bench.cluster); the
cluster's TELEBRIDGE_SECRET comes from the environment.

`--timing-log PATH` (either role) makes the stand-in append one JSON line per segment it speaks:
its request id, when the segment's first frame and its flush arrived and when its first chunk
left (monotonic times), and whether it was the first segment on its socket. `bench.agent` takes
Waves' part of an utterance's first audio from it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import functools
import json
import logging
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

from starlette.types import ASGIApp, Receive, Scope, Send
from websockets.asyncio.server import ServerConnection

from bench.common import raise_fd_limit
from telebridge.server import Bridge, create_app
from telebridge.server.ws_protocol import StreamWebSocketProtocol
from telebridge.settings import load_settings
from telebridge.simulator.bridge import SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN, SIM_VONAGE_SECRET
from telebridge.simulator.fake_plivo_api import FakePlivoApi
from telebridge.simulator.serving import ServedApp
from telebridge.tts import standin

logger = logging.getLogger(__name__)

STATS_PATH = "/_bench/stats"
# Observer events kept for /_bench/stats; beyond this the oldest are dropped (bounded memory).
MAX_EVENTS = 1_000_000
MAX_PATHS = 100  # request paths counted; others are counted as "other"


class EventRecorder:
    """A call observer that keeps what the benchmarks read back."""

    def __init__(self) -> None:
        self.first_audio: list[tuple[float, float]] = []  # (monotonic time, added_ms)
        # Agent utterances, from agent_text_sent, agent_first_audio and first_audio: (call id,
        # first piece received, first text sent to Waves, first Waves chunk, first carrier
        # frame sent: monotonic times; held_ms, added_ms as the events gave them).
        self.agent: list[tuple[str, float, float, float, float, float, float]] = []
        self._agent_open: dict[str, list[float]] = {}  # call id -> the utterance's figures so far
        self.counts: Counter[str] = Counter()

    def __call__(self, call_id: str, kind: str, fields: dict[str, Any]) -> None:
        self.counts[kind] += 1
        if kind == "first_audio":
            now = time.monotonic()
            added = float(fields.get("added_ms", 0.0))
            self.first_audio.append((now, added))
            if len(self.first_audio) > MAX_EVENTS:
                del self.first_audio[: MAX_EVENTS // 10]
            # An agent call speaks one utterance at a time: its first frame closes the entry.
            entry = self._agent_open.pop(call_id, None)
            if entry is not None and len(entry) == 4:
                piece, sent, held, chunk = entry
                self.agent.append((call_id, piece, sent, chunk, now, held, added))
                if len(self.agent) > MAX_EVENTS:
                    del self.agent[: MAX_EVENTS // 10]
        elif kind == "agent_text_sent":
            # Emitted as the first text goes to Waves; held_ms is since the first piece came.
            now = time.monotonic()
            held = float(fields.get("held_ms", 0.0))
            self._agent_open[call_id] = [now - held / 1000, now, held]
        elif kind == "agent_first_audio":
            entry = self._agent_open.get(call_id)
            if entry is not None and len(entry) == 3:
                entry.append(time.monotonic())  # emitted as the first chunk is taken
        elif kind in ("agent_end", "ended"):
            self._agent_open.pop(call_id, None)


class BenchRoutes:
    """The app, plus `GET /_bench/stats` answered before the app sees the request."""

    def __init__(self, app: ASGIApp, recorder: EventRecorder, bridge: Bridge) -> None:
        self._app = app
        self._recorder = recorder
        self._bridge = bridge
        self._requests: Counter[str] = Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and scope["path"] != STATS_PATH:
            kind = f"{scope['type']} {scope['path']}"
            if kind not in self._requests and len(self._requests) >= MAX_PATHS:
                kind = "other"
            self._requests[kind] += 1
        if scope["type"] == "http" and scope["path"] == STATS_PATH:
            body = json.dumps(
                {
                    "now": time.monotonic(),
                    "active_calls": len(self._bridge.calls),
                    "counts": dict(self._recorder.counts),
                    "first_audio": self._recorder.first_audio,
                    "agent": self._recorder.agent,
                    "requests": dict(self._requests),
                }
            ).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        await self._app(scope, receive, send)


def bind_tcp_loopback(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1 made as `telebridge serve` (uvicorn) makes its own.

    The protocol must be given as IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets whose
    `proto` says TCP, and accepted connections inherit it. A socket made with proto 0 (as
    `telebridge.simulator.serving.bind_loopback` does) leaves Nagle's algorithm on, which holds
    back small messages sent in a burst (one-frame Vonage messages) by 10-40 ms.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(4096)
    sock.setblocking(False)
    return sock


def cache_standin_renders() -> None:
    """Keep espeak's PCM per text, so synthesis CPU does not limit the benchmark.

    The stand-in calls the module's `render` at each request; the bench flows speak a few fixed
    texts, so after the first call each request only sends (paced) chunks, like a fast Waves.
    """
    if not hasattr(standin.render, "cache_info"):
        standin.render = functools.lru_cache(maxsize=64)(standin.render)


class _FirstSend:
    """A stand-in connection that notes when its first message was sent."""

    def __init__(self, ws: ServerConnection) -> None:
        self._ws = ws
        self.first_at: float | None = None

    async def send(self, message: str | bytes) -> None:
        # Timed as it is handed over, encoded: `send` may yield after writing, and the bridge
        # may have read the chunk before this coroutine resumes.
        if self.first_at is None:
            self.first_at = time.monotonic()
        await self._ws.send(message)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ws, name)


class TimedStandin(standin.StandinServer):
    """The stand-in, logging when each segment's first text and its flush arrived and when its
    first chunk left.

    Waves' own time to first byte, as `bench.agent` leaves it out of the bridge's part. It hooks
    two private methods of telebridge's stand-in (a test double), for the benchmarks only; the
    stand-in in telebridge/tts is unchanged.
    """

    def __init__(self, *, timing_log: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timing = timing_log.open("a", encoding="utf-8", buffering=1)  # a line at a time
        self._arrived = 0.0
        self._segments: dict[str, int] = {}  # session id -> segments spoken on that socket
        # session id -> when the first frame of the segment being sent on it arrived (the
        # bridge uses a socket for one request at a time)
        self._text_in: dict[str, float] = {}

    async def stop(self) -> None:
        await super().stop()
        self._timing.close()

    async def _on_message(
        self, ws: ServerConnection, session_id: str, raw: str | bytes, pending: dict[str, Any]
    ) -> bool:
        # `_on_message` runs without a pause up to `_speak`: this is the arrival of its text.
        self._arrived = time.monotonic()
        if session_id not in self._text_in and len(self._text_in) >= 10_000:
            self._text_in.clear()  # bounded; old sockets are long closed
        self._text_in.setdefault(session_id, self._arrived)
        return await super()._on_message(ws, session_id, raw, pending)

    async def _speak(
        self,
        ws: ServerConnection,
        session_id: str,
        ext: str | None,
        text: str,
        body: dict[str, Any],
    ) -> bool:
        arrived = self._arrived
        text_in = self._text_in.pop(session_id, arrived)
        spoken = self._segments.get(session_id, 0)
        if spoken == 0 and len(self._segments) >= 10_000:
            self._segments.clear()  # bounded; old sockets are long closed
        self._segments[session_id] = spoken + 1
        probe = _FirstSend(ws)
        try:
            return await super()._speak(cast(ServerConnection, probe), session_id, ext, text, body)
        finally:
            if probe.first_at is not None and not self._timing.closed:
                line = {
                    "rid": ext,
                    "text_in": text_in,
                    "in": arrived,
                    "first": probe.first_at,
                    "fresh": spoken == 0,
                }
                self._timing.write(json.dumps(line) + "\n")


def make_standin(args: argparse.Namespace) -> standin.StandinServer:
    cache_standin_renders()
    faults = standin.Faults(
        chunk_interval=args.chunk_interval, first_chunk_delay=args.first_chunk_delay
    )
    key = "sk_" + secrets.token_hex(16)
    if args.timing_log is not None:
        return TimedStandin(timing_log=args.timing_log, api_key=key, faults=faults)
    return standin.StandinServer(api_key=key, faults=faults)


async def wait_for_stop(stop_on_eof: bool) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if stop_on_eof:

        def on_stdin() -> None:
            try:
                data = os.read(sys.stdin.fileno(), 4096)
            except OSError:
                data = b""
            if not data:
                loop.remove_reader(sys.stdin.fileno())
                stop.set()

        loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stop.wait()


def announce(**fields: Any) -> None:
    print(json.dumps({"pid": os.getpid(), **fields}), flush=True)


async def serve_standin(args: argparse.Namespace) -> None:
    async with make_standin(args) as server:
        announce(role="standin", waves_url=server.url, api_key=server.api_key)
        await wait_for_stop(args.stop_on_eof)


async def serve_bridge(args: argparse.Namespace) -> None:
    async with contextlib.AsyncExitStack() as stack:
        waves_url, waves_key = args.waves_url, args.waves_key
        if args.standin_inproc or waves_url is None:
            server = await stack.enter_async_context(make_standin(args))
            waves_url, waves_key = server.url, server.api_key
        plivo_api_url = args.plivo_api_url
        if plivo_api_url is None:
            # Never the real Plivo: hangups of this process go to a fake beside it.
            fake = FakePlivoApi(SIM_PLIVO_AUTH_ID, SIM_PLIVO_AUTH_TOKEN)
            plivo_api_url = (await stack.enter_async_context(ServedApp(fake.app()))).url
        sock = bind_tcp_loopback(args.port)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tb-bench-")))
        # In a cluster (bench.cluster): the shared Redis and database, this process's name; the
        # shared TELEBRIDGE_SECRET comes from the environment, never the command line.
        cluster: dict[str, Any] = {}
        if args.redis_url is not None:
            cluster["telebridge_redis_url"] = args.redis_url
            cluster["telebridge_process_id"] = args.process_id
        settings = load_settings(
            None,
            telebridge_public_url=url,
            telebridge_flows_dir=Path(args.flows_dir),
            telebridge_flow=args.flow,
            telebridge_db=args.db or workdir / "calls.db",
            telebridge_numbers={},
            telebridge_log_level=args.log_level,
            plivo_auth_id=SIM_PLIVO_AUTH_ID,
            plivo_auth_token=SIM_PLIVO_AUTH_TOKEN,
            plivo_api_url=plivo_api_url,
            vonage_signature_secret=SIM_VONAGE_SECRET,
            # No REST credentials: a Vonage call is ended by closing its socket, never by a
            # request to the real Vonage API.
            vonage_application_id=None,
            vonage_private_key=None,
            vonage_audio_rate=args.vonage_rate,
            waves_api_key=waves_key,
            waves_url=waves_url,
            waves_transport=args.waves_transport,
            # The prompt cache would serve every prompt of the bench flows (fixed texts) from
            # memory after the first call; off by default so the Waves path is what is measured.
            telebridge_cache_mb=args.prompt_cache_mb,
            # The capacity benchmark looks for the process's own limit, not the configured one.
            telebridge_max_calls=args.max_calls,
            # bench/flows has an agent step (agent.yaml): the bridge refuses to start without one.
            telebridge_agent_secret=args.agent_secret or secrets.token_hex(16),
            **cluster,
        )
        bridge = Bridge.from_settings(settings)
        bridge.freeze_heap = True  # as `telebridge serve` does
        recorder = EventRecorder()
        bridge.observers.append(recorder)
        app = BenchRoutes(create_app(bridge), recorder, bridge)
        served = await stack.enter_async_context(ServedApp(app, sock, ws=ws_protocol(args.ws)))
        announce(role="bridge", url=served.url, port=served.port, waves_url=waves_url)
        await wait_for_stop(args.stop_on_eof)


def ws_protocol(name: str) -> Any:
    return StreamWebSocketProtocol if name == "telebridge" else name


def run_on(loop: str, main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when `loop` is auto and uvloop is installed (as `telebridge serve`
    does), else on asyncio's own loop."""
    if loop == "auto":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(main)
            return
    asyncio.run(main)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.server", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("role", choices=("bridge", "standin"), nargs="?", default="bridge")
    parser.add_argument("--port", type=int, default=0, help="loopback port (0: a free one)")
    parser.add_argument("--flows-dir", default=str(Path(__file__).parent / "flows"))
    parser.add_argument("--flow", default="short")
    parser.add_argument("--plivo-api-url", help="fake Plivo REST API (default: one in-process)")
    parser.add_argument("--waves-url", help="Waves stand-in URL (default: one in-process)")
    parser.add_argument("--waves-key", default=None)
    parser.add_argument("--standin-inproc", action="store_true")
    parser.add_argument("--chunk-interval", type=float, default=0.05)
    parser.add_argument("--first-chunk-delay", type=float, default=0.0)
    parser.add_argument("--vonage-rate", type=int, choices=(8000, 16000, 24000), default=16000)
    parser.add_argument("--waves-transport", choices=("websocket", "sse"), default="websocket")
    parser.add_argument("--prompt-cache-mb", type=int, default=0, help="0: no prompt cache")
    parser.add_argument("--max-calls", type=int, default=100_000, help="TELEBRIDGE_MAX_CALLS")
    parser.add_argument(
        "--redis-url", help="TELEBRIDGE_REDIS_URL: join this cluster (a 127.0.0.1 Redis)"
    )
    parser.add_argument(
        "--db", help="TELEBRIDGE_DB (a 127.0.0.1 PostgreSQL URL; default: SQLite in a temp dir)"
    )
    parser.add_argument("--process-id", default=None, help="TELEBRIDGE_PROCESS_ID")
    parser.add_argument(
        "--agent-secret", default=None, help="TELEBRIDGE_AGENT_SECRET (default: a random one)"
    )
    parser.add_argument(
        "--timing-log",
        type=Path,
        default=None,
        help="the stand-in appends each segment's arrival and first-chunk times here (JSON lines)",
    )
    parser.add_argument(
        "--loop",
        choices=("auto", "asyncio"),
        default="auto",
        help="the bridge's event loop: auto (uvloop when installed, as `telebridge serve`) or "
        "asyncio, for comparison",
    )
    parser.add_argument(
        "--ws",
        default="telebridge",
        help="uvicorn WebSocket protocol: telebridge (what `telebridge serve` uses) or a uvicorn "
        "name such as websockets-sansio, for comparison",
    )
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), default="warning"
    )
    parser.add_argument("--stop-on-eof", action="store_true", help="stop when stdin closes")
    parser.add_argument("--profile", type=Path, help="write a cProfile of this process here")
    args = parser.parse_args(argv)
    for name in ("plivo_api_url", "waves_url", "redis_url", "db"):
        value = getattr(args, name)
        if value is not None and not any(m in value for m in ("//127.0.0.1:", "@127.0.0.1:")):
            parser.error(f"--{name.replace('_', '-')} must be a 127.0.0.1 address")
    if args.waves_url is not None and args.waves_key is None:
        parser.error("--waves-url needs --waves-key")
    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("websockets").setLevel(logging.WARNING)
    raise_fd_limit()
    serve = serve_standin if args.role == "standin" else serve_bridge
    loop = args.loop if args.role == "bridge" else "asyncio"
    if args.profile is None:
        run_on(loop, serve(args))
        return 0
    # Profiling slows the process (about twice): its figures are for finding hot spots only.
    profiler = cProfile.Profile()
    try:
        profiler.runcall(run_on, loop, serve(args))
    finally:
        profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
