"""The `telebridge` command: serve, simulate, flows check, calls, call, campaign, configure, doctor,
prompts.

User mistakes (arguments, settings, flow files) end with one line naming what to fix and exit 2,
never a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from telebridge import __version__
from telebridge.cli import admin as cli_admin
from telebridge.cli import ops as cli_ops
from telebridge.cli import prompts as cli_prompts
from telebridge.cli.common import EXIT_USAGE, Handler, UsageError, command, settings_of
from telebridge.cli.common import Parser as _Parser
from telebridge.dtmf import DTMF_KEYS
from telebridge.logs import setup_logging
from telebridge.settings import ConfigError

if TYPE_CHECKING:
    from telebridge.calllog import CallLog
    from telebridge.settings import Settings

# --- serve -----------------------------------------------------------------------------


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from telebridge.flows import FlowError
    from telebridge.server import WS_MAX_MESSAGE, Bridge, DrainingServer, create_app
    from telebridge.server.ws_protocol import StreamWebSocketProtocol

    overrides: dict[str, object] = {}
    if args.host is not None:
        overrides["telebridge_host"] = args.host
    if args.port is not None:
        overrides["telebridge_port"] = args.port
    settings = settings_of(args, **overrides)
    setup_logging(settings.telebridge_log_level, settings.telebridge_log_format)
    settings.require_public_url()
    try:
        bridge = Bridge.from_settings(settings)
    except FlowError as exc:
        problems = "; ".join(str(p) for p in exc.problems)
        raise UsageError(f"refusing to start, a flow has errors: {problems}") from None
    sock = _listen(settings.telebridge_host, settings.telebridge_port)
    try:  # before serving: an unusable call log or cluster is one line and exit 2
        _check_cluster(settings)
        bridge.calllog = _open_calllog(settings)
    except BaseException:
        sock.close()
        raise
    bridge.freeze_heap = True  # a long-lived process of its own (see server/app.py)
    app = create_app(bridge)
    config = uvicorn.Config(
        app,
        host=settings.telebridge_host,
        port=settings.telebridge_port,
        log_level=settings.telebridge_log_level,
        log_config=None,  # ours: call ids, JSON on request, secrets redacted
        loop="auto",  # uvloop when installed (it is a dependency on Linux and macOS)
        ws=StreamWebSocketProtocol,  # uvicorn's sans-I/O protocol, minus a pause per message
        ws_max_size=WS_MAX_MESSAGE,
        ws_per_message_deflate=False,  # compressing 20 ms audio frames costs CPU for nothing
        proxy_headers=True,
    )
    server = DrainingServer(config, bridge)
    try:
        with sock:
            server.run(sockets=[sock])
    finally:
        bridge.calllog.close()
    return 0


def _open_calllog(settings: Settings) -> CallLog:
    from telebridge.calllog import CallLog, CallLogError

    try:
        return CallLog.from_settings(settings)
    except CallLogError as exc:
        raise UsageError(str(exc)) from None


def _check_cluster(settings: Settings) -> None:
    """Join the cluster once and leave: Redis unreachable at start is one line naming the setting
    (the app's lifespan joins it for good)."""
    if settings.telebridge_redis_url is None:
        return
    from telebridge.server.app import NO_REDIS

    try:
        from telebridge.cluster import ClusterUnavailable
        from telebridge.server.cluster_link import check_cluster
    except ImportError:
        raise UsageError(NO_REDIS) from None
    try:
        asyncio.run(check_cluster(settings))
    except ClusterUnavailable as exc:
        raise UsageError(str(exc)) from None


def _listen(host: str, port: int) -> socket.socket:
    """The listening socket, made here so that a port in use is one clear line, not a log."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise UsageError(f"TELEBRIDGE_HOST: cannot listen on {host!r}: {exc}") from None
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        reason = exc.strerror or str(exc)
        raise UsageError(
            f"TELEBRIDGE_PORT: cannot listen on {host}:{port}: {reason.lower()}"
        ) from None
    sock.set_inheritable(True)
    return sock


# --- flows check -----------------------------------------------------------------------


def cmd_flows_check(args: argparse.Namespace) -> int:
    from telebridge.flows import check_files

    errors, warnings = check_files([Path(p) for p in args.files])
    if not errors and not _agent_secret_set():
        from telebridge.flows import load_flow
        from telebridge.flows.library import agent_secret_missing

        for path in args.files:
            errors += agent_secret_missing(load_flow(Path(path)))
    for problem in warnings:
        print(f"warning: {problem}")
    for problem in errors:
        print(str(problem))
    if errors:
        return 1
    print(
        f"{len(args.files)} flow file(s) OK" + (f", {len(warnings)} warning(s)" if warnings else "")
    )
    return 0


def _agent_secret_set() -> bool:
    from telebridge.settings import ConfigError, load_settings

    try:
        return load_settings().telebridge_agent_secret is not None
    except ConfigError:
        return True  # other settings are broken: `flows check` judges the files alone


# --- simulate --------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    from telebridge.simulator import command

    settings = settings_of(args)
    setup_logging("debug" if args.verbose else "error")
    if args.url is None and args.flow and args.flow.endswith((".yaml", ".yml")):
        # A flow file: the in-process bridge serves it as its default flow.
        if not Path(args.flow).is_file():
            raise UsageError(f"--flow: no such flow file {args.flow!r}")
        settings = settings.model_copy(update={"telebridge_flow": args.flow})
        args.flow = None
    if args.url is None:
        # The in-process bridge serves the flows: refuse a bad flow before placing the call.
        from telebridge.flows import FlowError
        from telebridge.flows.library import FlowLibrary, UnknownFlow

        try:
            library = FlowLibrary.from_settings(settings)
            if args.flow:
                library.get(args.flow)
        except FlowError as exc:
            problems = "; ".join(str(p) for p in exc.problems)
            raise UsageError(f"a flow has errors: {problems}") from None
        except UnknownFlow:
            raise UsageError(
                f"--flow: no flow named {args.flow!r} in {settings.telebridge_flows_dir} "
                f"(have: {', '.join(library.names)})"
            ) from None
    bad = set(args.digits) - DTMF_KEYS - {"w"}
    if bad:
        raise UsageError(
            f"--digits: {''.join(sorted(bad))!r} are not keys (0-9 * # A-D, w to skip)"
        )
    return command.run(
        settings,
        carrier=args.carrier,
        flow=args.flow,
        digits=args.digits,
        out=Path(args.out) if args.out else None,
        as_json=args.json,
        url=args.url.rstrip("/") if args.url else None,
    )


# --- calls -----------------------------------------------------------------------------


def cmd_calls(args: argparse.Namespace) -> int:
    from telebridge import calllog

    settings = settings_of(args)
    since = None
    if args.since:
        try:
            since = calllog.parse_since(args.since)
        except ValueError as exc:
            raise UsageError(f"--since: {exc}") from None
    try:
        log = calllog.CallLog.from_settings(settings)
    except calllog.CallLogError as exc:
        raise UsageError(str(exc)) from None
    try:
        records = log.list_calls(since=since, limit=args.limit)
    except calllog.CallLogError as exc:  # a database server lost since it was opened
        raise UsageError(str(exc)) from None
    finally:
        log.close()
    if args.json:
        text = calllog.to_json_lines(records)
    elif args.csv:
        text = calllog.to_csv(records)
    else:
        text = calllog.format_table(records)
    if text:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return 0


# --- parser ----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="telebridge", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--version", action="version", version=f"telebridge {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    def add(name: str, help: str, handler: Handler) -> argparse.ArgumentParser:
        return command(sub, name, help, handler)

    serve = add("serve", "run the bridge (uvicorn)", cmd_serve)
    serve.add_argument("--host", help="listen address (default 0.0.0.0 or TELEBRIDGE_HOST)")
    serve.add_argument("--port", type=int, help="listen port (default 8080 or TELEBRIDGE_PORT)")

    sim = add("simulate", "place a simulated call through the real server stack", cmd_simulate)
    sim.add_argument("--carrier", choices=["plivo", "vonage"], required=True)
    sim.add_argument("--flow", help="flow name, or a flow file (.yaml) (default: TELEBRIDGE_FLOW)")
    sim.add_argument(
        "--digits", default="", help="keys the caller presses, one per prompt (w: let one pass)"
    )
    sim.add_argument("--out", metavar="FILE.wav", help="write what the caller heard")
    sim.add_argument("--json", action="store_true", help="print the timeline as JSON lines")
    sim.add_argument("--url", help="call a running bridge at this public URL instead")
    sim.add_argument("--verbose", action="store_true", help="show the bridge's logs")

    calls = add("calls", "list recorded calls from the call log (TELEBRIDGE_DB)", cmd_calls)
    fmt = calls.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="one JSON object per line")
    fmt.add_argument("--csv", action="store_true", help="CSV with a header row")
    calls.add_argument("--since", help="only calls since then: ISO date/time or an age like 2h, 7d")
    calls.add_argument("--limit", type=int, help="only the newest N calls")

    cli_ops.register(sub, add)
    cli_admin.register(sub, add)
    cli_prompts.register(sub, add)

    flows = sub.add_parser("flows", help="work with flow files", description="work with flow files")
    flows_sub = flows.add_subparsers(dest="flows_command", metavar="ACTION", parser_class=_Parser)
    flows_sub.required = True
    check = flows_sub.add_parser(
        "check", help="validate flow files", description="validate flow files: exit 0 when valid"
    )
    check.add_argument("files", nargs="+", metavar="FILE")
    check.set_defaults(handler=cmd_flows_check)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except (ConfigError, UsageError) as exc:
        print(f"telebridge: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
