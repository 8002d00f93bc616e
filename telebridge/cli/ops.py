"""The commands that place calls: `call` and `campaign run|resume`.

`register(sub, add)` adds them to the `telebridge` parser. Mistakes in arguments or settings end
as `UsageError`/`ConfigError` (one line, exit 2). A carrier's API failing (an error status, no
answer, an answer that makes no sense) is one line naming the carrier and the request, exit 1;
so is a campaign with rows that failed or whose outcome is unknown.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from telebridge.cli.common import AddCommand, UsageError, failed, nested, quiet_logs, settings_of
from telebridge.settings import ConfigError, Settings

# --- call ------------------------------------------------------------------------------------


def cmd_call(args: argparse.Namespace) -> int:
    from telebridge.outbound import placing as outbound

    settings = settings_of(args)
    quiet_logs()
    try:
        variables = outbound.parse_vars(args.var or [])
        dialer = outbound.Dialer(settings, args.carrier, args.from_, flow=args.flow)
        attempt = "call-" + secrets.token_hex(6)
        placed = dialer.call(args.to, {**variables, "attempt": attempt})
    except outbound.OutboundError as exc:
        raise UsageError(str(exc)) from None
    except outbound.PlacementError as exc:
        if exc.status == 401:
            raise UsageError(f"{exc}: check {_credential_names(args.carrier)}") from None
        if exc.placed == "no":
            return failed(f"the call was not placed: {exc}")
        return failed(f"the call may have been placed (look before calling again): {exc}")
    kind = "request_uuid" if args.carrier == "plivo" else "call uuid"
    print(
        f"{args.carrier} call to {placed.to} placed: {kind} {placed.request_id} (attempt {attempt})"
    )
    if not args.wait:
        return 0
    verdict = _wait_for(settings, args.carrier, attempt, placed.request_id, args.wait_timeout)
    line = verdict.outcome
    if verdict.flow_outcome:
        line += f", flow ended: {verdict.flow_outcome}"
    if verdict.digits:
        line += f", keys: {verdict.digits}"
    if verdict.hangup_cause:
        line += f", hangup cause: {verdict.hangup_cause}"
    print(line + (f" ({verdict.detail})" if verdict.detail else ""))
    return 0 if verdict.outcome == "answered" else 1


def _wait_for(settings: Settings, carrier: str, attempt: str, request_id: str, limit: float) -> Any:
    from telebridge import calllog
    from telebridge.outbound import placing as outbound

    try:
        log = calllog.CallLog.from_settings(settings)
    except calllog.CallLogError as exc:
        raise UsageError(str(exc)) from None
    deadline = time.monotonic() + limit
    unreadable: calllog.CallLogError | None = None  # the database is away: wait for it
    try:
        while time.monotonic() < deadline:
            try:
                record = outbound.find_call(log, carrier, attempt, request_id)
            except calllog.CallLogError as exc:
                if unreadable is None:
                    print(f"telebridge: {exc}; waiting for it", file=sys.stderr)
                unreadable = exc
            else:
                unreadable = None
                verdict = outbound.verdict_of(record) if record is not None else None
                if verdict is not None:
                    return verdict
            time.sleep(1.0)
    finally:
        log.close()
    if unreadable is not None:
        return outbound.Verdict(outbound.UNKNOWN, detail=f"could not read it: {unreadable}")
    return outbound.Verdict(
        outbound.UNKNOWN, detail=f"no outcome in the call log after {limit:g} s"
    )


def _credential_names(carrier: str) -> str:
    if carrier == "plivo":
        return "PLIVO_AUTH_ID / PLIVO_AUTH_TOKEN"
    return "VONAGE_APPLICATION_ID / VONAGE_PRIVATE_KEY"


# --- campaign --------------------------------------------------------------------------------


class Progress:
    """The campaign's progress on stderr: a bar redrawn in place on a terminal, else one line
    per finished attempt (so that logs stay readable)."""

    def __init__(self, stream: TextIO | None = None, *, width: int = 24) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._width = width
        self._line = ""

    def update(self, total: int, finished: Counter[str], calling: int) -> None:
        if not self._tty:
            return
        done = sum(finished.values())
        filled = self._width * done // max(total, 1)
        tally = ", ".join(f"{n} {o}" for o, n in sorted(finished.items()))
        line = f"[{'#' * filled}{'.' * (self._width - filled)}] {done}/{total} done, "
        line += f"{calling} calling" + (f" ({tally})" if tally else "")
        if line != self._line:
            self._line = line
            self._stream.write("\r\x1b[2K" + line)
            self._stream.flush()

    def event(self, text: str) -> None:
        if self._tty:
            self._stream.write("\r\x1b[2K" + text + "\n" + self._line)
        else:
            self._stream.write(text + "\n")
        self._stream.flush()

    def close(self) -> None:
        if self._tty and self._line:
            self._stream.write("\n")
            self._stream.flush()


def _retry_on(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def cmd_campaign_run(args: argparse.Namespace) -> int:
    from telebridge.outbound import campaign
    from telebridge.outbound import placing as outbound

    settings = settings_of(args)
    quiet_logs()
    rate = args.rate if args.rate is not None else campaign.DEFAULT_RATE[args.carrier]
    plan = campaign.Plan(
        carrier=args.carrier,
        from_number=args.from_,
        flow=args.flow,
        concurrency=args.concurrency,
        rate=rate,
        retries=args.retries,
        retry_on=_retry_on(args.retry_on),
        retry_delay=args.retry_delay,
        wait=args.wait,
        results=args.results or "",
    )
    try:
        dialer = outbound.Dialer(settings, args.carrier, args.from_, flow=args.flow)
        plan = replace(plan, from_number=dialer.from_)
        state = campaign.start(
            Path(args.list),
            plan,
            Path(args.state) if args.state else None,
            database=settings.telebridge_db,
        )
    except (outbound.OutboundError, campaign.CampaignError) as exc:
        raise UsageError(str(exc)) from None
    print(f"campaign {plan.campaign_id}: state in {state.where}", file=sys.stderr)
    return _run(settings, state, dialer, args.poll)


def cmd_campaign_resume(args: argparse.Namespace) -> int:
    from telebridge.outbound import campaign
    from telebridge.outbound import placing as outbound

    settings = settings_of(args)
    quiet_logs()
    try:
        state = campaign.resume(args.file, database=settings.telebridge_db)
    except campaign.CampaignError as exc:
        raise UsageError(str(exc)) from None
    try:
        plan = state.plan
        if args.concurrency is not None or args.rate is not None:
            plan = replace(
                plan,
                concurrency=args.concurrency or plan.concurrency,
                rate=args.rate or plan.rate,
            ).checked()
            state.set_plan(plan)
        dialer = outbound.Dialer(settings, plan.carrier, plan.from_number, flow=plan.flow)
    except (outbound.OutboundError, campaign.CampaignError) as exc:
        state.close()
        raise UsageError(str(exc)) from None
    except ConfigError:
        state.close()
        raise
    return _run(settings, state, dialer, args.poll)


def _run(settings: Settings, state: Any, dialer: Any, poll: float) -> int:
    from telebridge import calllog
    from telebridge.outbound import campaign
    from telebridge.outbound import placing as outbound

    progress = Progress()
    try:
        log = calllog.CallLog.from_settings(settings)
    except calllog.CallLogError as exc:
        state.close()
        raise UsageError(str(exc)) from None
    runner = campaign.CampaignRunner(state, dialer, log, progress=progress, poll_interval=poll)
    results = Path(state.plan.results)
    try:
        finished = asyncio.run(campaign.run_paced(runner, settings))
    except KeyboardInterrupt:
        progress.close()
        print(
            f"stopped: calls placed so far are recorded; continue with "
            f"`telebridge campaign resume {state.resume_with}`",
            file=sys.stderr,
        )
        return 130
    except campaign.CampaignError as exc:
        progress.close()
        raise UsageError(str(exc)) from None
    finally:
        try:
            state.write_results(results)
        except campaign.CampaignError as exc:  # its database stayed away: resume writes them
            print(f"telebridge: the results were not written: {exc}", file=sys.stderr)
        finally:
            state.close()
            log.close()
    progress.close()
    print(campaign.summary_line(finished, str(results)))
    # Busy and unanswered are the callees' answers; a failure or an unknown outcome (the carrier
    # refused or did not confirm the call, among others) leaves a row for the user to look at.
    return 1 if finished["failed"] or finished[outbound.UNKNOWN] else 0


# --- registration ----------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def register(sub: Any, add: AddCommand) -> None:
    """Add `call` and `campaign` to the `telebridge` subparsers."""
    carriers = ["plivo", "vonage"]

    call = add("call", "place one outbound call that runs a flow", cmd_call)
    call.add_argument("--carrier", choices=carriers, required=True)
    call.add_argument("--to", required=True, metavar="NUMBER", help="E.164 number to call")
    call.add_argument(
        "--from", dest="from_", required=True, metavar="NUMBER", help="your carrier number"
    )
    call.add_argument("--flow", help="flow name (default: the bridge's TELEBRIDGE_FLOW)")
    call.add_argument(
        "--var", action="append", metavar="KEY=VALUE", help="a flow variable (repeatable)"
    )
    call.add_argument(
        "--wait", action="store_true", help="wait for the call's outcome in the call log"
    )
    call.add_argument(
        "--wait-timeout", type=_positive_float, default=900.0, metavar="SECONDS",
        help="give up waiting after this long (default 900)",
    )  # fmt: skip

    add_campaign = nested(sub, "campaign", "place one call per row of a CSV list")
    run = add_campaign("run", "start a campaign: one call per CSV row", cmd_campaign_run)
    run.add_argument("list", metavar="LIST.csv", help="column `to`; other columns are variables")
    run.add_argument("--carrier", choices=carriers, required=True)
    run.add_argument("--from", dest="from_", required=True, metavar="NUMBER")
    run.add_argument("--flow", help="flow name (default: the bridge's TELEBRIDGE_FLOW)")
    run.add_argument(
        "--concurrency", type=_positive_int, default=5, metavar="N",
        help="calls in progress at once (default 5)",
    )  # fmt: skip
    run.add_argument(
        "--rate", type=_positive_float, metavar="R",
        help="calls started per second (default: plivo 2, vonage 3, Vonage's limit)",
    )  # fmt: skip
    run.add_argument(
        "--retries", type=int, default=0, metavar="K", help="extra attempts per row (default 0)"
    )
    run.add_argument(
        "--retry-on", default="busy,no-answer", metavar="OUTCOMES",
        help="outcomes that earn a retry: busy,no-answer,failed (default busy,no-answer)",
    )  # fmt: skip
    run.add_argument(
        "--retry-delay", type=float, default=60.0, metavar="SECONDS",
        help="wait before a retry (default 60)",
    )  # fmt: skip
    run.add_argument(
        "--wait", type=_positive_float, default=300.0, metavar="SECONDS",
        help="how long a placed call may go unseen in the call log before it counts as "
        "unknown (default 300)",
    )  # fmt: skip
    run.add_argument("--results", metavar="OUT.csv", help="default: LIST.results.csv")
    run.add_argument(
        "--state", metavar="FILE",
        help="state file (default: LIST.campaign.db; with a PostgreSQL TELEBRIDGE_DB, that "
        "database, unless this is given)",
    )  # fmt: skip
    run.add_argument(
        "--poll", type=_positive_float, default=1.0, metavar="SECONDS",
        help="how often to read outcomes from the call log (default 1)",
    )  # fmt: skip

    resume = add_campaign(
        "resume", "continue a stopped campaign; calls already placed are not placed again",
        cmd_campaign_resume,
    )  # fmt: skip
    resume.add_argument(
        "file", metavar="STATE|LIST.csv|ID",
        help="the state file, or the list; with a PostgreSQL TELEBRIDGE_DB also the campaign id",
    )  # fmt: skip
    resume.add_argument("--concurrency", type=_positive_int, metavar="N")
    resume.add_argument("--rate", type=_positive_float, metavar="R")
    resume.add_argument("--poll", type=_positive_float, default=1.0, metavar="SECONDS")
