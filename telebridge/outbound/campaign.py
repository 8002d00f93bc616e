"""Outbound campaigns: one call per CSV row, at a bounded rate and concurrency, with retries.

A campaign runs beside a serving bridge that shares its settings. Each call carries its attempt
id in its signed variables (`attempt`), so the bridge's call log row for it, whether the call
streamed or ended unanswered, can be found, and its outcome read (`outcome` set: the flow's end;
"no-stream": the carrier's hangup cause says busy, no answer or failed).

Everything lives in an SQLite state file beside the list (`LIST.campaign.db`). An attempt is
committed there *before* its call is placed, so after Ctrl-C or a crash `resume` knows every call
that may have gone out and only waits for its outcome: nobody is called twice by accident.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import os
import secrets
import sqlite3
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from telebridge.calllog import CallLog, CallRecord
from telebridge.outbound.placing import (
    OUTCOMES,
    UNKNOWN,
    Dialer,
    OutboundError,
    PlacementError,
    Verdict,
    check_variable_name,
    find_call,
    normalize_number,
    verdict_of,
)

logger = logging.getLogger(__name__)

DUPLICATE = "duplicate"  # the number is on an earlier row: called once only
DEFAULT_RATE = {"plivo": 2.0, "vonage": 3.0}  # Plivo's default CPS; Vonage's hard limit
MAX_RATE = {"vonage": 3.0}
LIVE_LIMIT_S = 4 * 3600.0  # a call still streaming after this long is not coming back
STATE_VERSION = 1
RESULT_FIELDS = ["attempts", "outcome", "flow_outcome", "digits", "hangup_cause", "call_id",
                 "detail"]  # fmt: skip


class CampaignError(Exception):
    """A campaign cannot start or resume; the message names the file, row or option."""


# --- the plan and the state file --------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How a campaign runs; stored in its state file so that `resume` runs it the same way."""

    carrier: str
    from_number: str
    flow: str | None = None
    concurrency: int = 1
    rate: float = 2.0  # call creations per second
    retries: int = 0
    retry_on: tuple[str, ...] = ("busy", "no-answer")
    retry_delay: float = 60.0
    wait: float = 300.0  # seconds to wait for any word of a placed call before "unknown"
    results: str = ""
    campaign_id: str = field(default_factory=lambda: secrets.token_hex(4))

    def checked(self) -> Plan:
        if self.concurrency < 1:
            raise CampaignError("--concurrency: must be at least 1")
        limit = MAX_RATE.get(self.carrier)
        if not self.rate > 0:
            raise CampaignError("--rate: must be more than 0 calls per second")
        if limit is not None and self.rate > limit:
            raise CampaignError(f"--rate: {self.carrier} allows at most {limit:g} calls a second")
        if self.retries < 0:
            raise CampaignError("--retries: must be 0 or more")
        if self.retry_delay < 0:
            raise CampaignError("--retry-delay: must be 0 or more seconds")
        bad = [o for o in self.retry_on if o not in OUTCOMES or o == "answered"]
        if bad:
            raise CampaignError(f"--retry-on: {bad[0]!r} is not one of busy, no-answer, failed")
        return self


@dataclass(frozen=True, slots=True)
class Row:
    idx: int
    line: int
    to: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class Attempt:
    id: str
    idx: int
    n: int
    state: str  # placing (the request may be out), placed, done
    request_id: str | None
    placed_at: float  # wall clock


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rows (idx INTEGER PRIMARY KEY, line INTEGER NOT NULL,
  to_number TEXT NOT NULL, vars TEXT NOT NULL, outcome TEXT, not_before REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS attempts (id TEXT PRIMARY KEY, idx INTEGER NOT NULL, n INTEGER NOT NULL,
  state TEXT NOT NULL, request_id TEXT, placed_at REAL NOT NULL, outcome TEXT, flow_outcome TEXT,
  digits TEXT, hangup_cause TEXT, call_id TEXT, detail TEXT);
CREATE INDEX IF NOT EXISTS attempts_row ON attempts (idx);
"""


def state_path_for(list_path: Path) -> Path:
    return list_path.with_name(list_path.stem + ".campaign.db")


def read_list(path: Path) -> tuple[list[str], list[Row]]:
    """The variable columns and the rows of a campaign list; raises CampaignError."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(f)
            header = [(h or "").strip() for h in reader.fieldnames or []]
            if "to" not in header:
                raise CampaignError(f"{path}: no column named 'to' (the numbers to call)")
            columns = [h for h in header if h != "to"]
            for name in columns:
                try:
                    check_variable_name(name, f"{path}: column")
                except OutboundError as exc:
                    raise CampaignError(str(exc)) from None
            rows: list[Row] = []
            for record in reader:
                cells = {(k or "").strip(): (v or "").strip() for k, v in record.items()}
                if not any(cells.values()):
                    continue  # a blank line
                line = reader.line_num
                try:
                    to = normalize_number(cells.get("to", ""), f"{path} line {line}: to")
                except OutboundError as exc:
                    raise CampaignError(str(exc)) from None
                variables = {c: cells[c] for c in columns if cells.get(c)}
                rows.append(Row(len(rows) + 1, line, to, variables))
    except OSError as exc:
        raise CampaignError(f"{path}: cannot read: {exc.strerror}") from None
    except (csv.Error, UnicodeDecodeError) as exc:
        raise CampaignError(f"{path}: not a readable UTF-8 CSV file: {exc}") from None
    if not rows:
        raise CampaignError(f"{path}: no rows to call")
    return columns, rows


class CampaignState:
    """The state file: the plan, the rows as read, and every attempt, committed as it happens."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.plan = Plan(**{k: _plan_value(k, v) for k, v in json.loads(meta["plan"]).items()})
        self.columns: list[str] = json.loads(meta["columns"])
        self.list_path = meta.get("list", "")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
        conn.execute("PRAGMA synchronous = FULL")  # an attempt must be on disk before its call
        return conn

    @classmethod
    def create(
        cls, path: Path, plan: Plan, columns: list[str], rows: list[Row], list_path: Path
    ) -> CampaignState:
        if path.exists():
            raise CampaignError(
                f"{path} exists: a campaign from this list was started before; continue it with "
                f"`telebridge campaign resume {path}`, or delete the file to start over"
            )
        conn = cls._connect(path)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            meta = {"version": str(STATE_VERSION), "plan": json.dumps(asdict(plan)),
                    "columns": json.dumps(columns), "list": str(list_path)}  # fmt: skip
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            seen: set[str] = set()
            for row in rows:
                outcome = DUPLICATE if row.to in seen else None
                seen.add(row.to)
                conn.execute(
                    "INSERT INTO rows (idx, line, to_number, vars, outcome) VALUES (?, ?, ?, ?, ?)",
                    (row.idx, row.line, row.to, json.dumps(row.variables), outcome),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.close()
            path.unlink(missing_ok=True)
            raise
        return cls(path, conn)

    @classmethod
    def open(cls, path: Path) -> CampaignState:
        if not path.is_file():
            raise CampaignError(f"{path}: no campaign state file here")
        try:
            conn = cls._connect(path)
            version = conn.execute("SELECT value FROM meta WHERE key = 'version'").fetchone()
        except sqlite3.Error:
            raise CampaignError(f"{path}: not a campaign state file") from None
        if version is None or int(version[0]) != STATE_VERSION:
            conn.close()
            raise CampaignError(f"{path}: written by another telebridge version")
        return cls(path, conn)

    def close(self) -> None:
        self._conn.close()

    def set_plan(self, plan: Plan) -> None:
        self._conn.execute(
            "UPDATE meta SET value = ? WHERE key = 'plan'", (json.dumps(asdict(plan)),)
        )
        self.plan = plan

    def _row(self, found: tuple[Any, ...]) -> Row:
        return Row(found[0], found[1], found[2], json.loads(found[3]))

    def next_due(self, now: float) -> Row | None:
        found = self._conn.execute(
            "SELECT idx, line, to_number, vars FROM rows WHERE outcome IS NULL AND not_before <= ?"
            " AND idx NOT IN (SELECT idx FROM attempts WHERE state != 'done') ORDER BY idx LIMIT 1",
            (now,),
        ).fetchone()
        return None if found is None else self._row(found)

    def open_rows(self) -> int:
        return int(
            self._conn.execute("SELECT COUNT(*) FROM rows WHERE outcome IS NULL").fetchone()[0]
        )

    def counts(self) -> tuple[int, Counter[str]]:
        """All rows, and the finished ones by outcome."""
        found = self._conn.execute("SELECT outcome, COUNT(*) FROM rows GROUP BY outcome").fetchall()
        total = sum(n for _, n in found)
        return total, Counter({o: n for o, n in found if o is not None})

    def begin(self, row: Row, now: float) -> Attempt:
        """Record that a call for `row` is about to be placed (committed before it is)."""
        (n,) = self._conn.execute(
            "SELECT COUNT(*) FROM attempts WHERE idx = ?", (row.idx,)
        ).fetchone()
        attempt = Attempt(f"{self.plan.campaign_id}-{row.idx}-{n + 1}", row.idx, n + 1, "placing",
                          None, now)  # fmt: skip
        self._conn.execute(
            "INSERT INTO attempts (id, idx, n, state, placed_at) VALUES (?, ?, ?, 'placing', ?)",
            (attempt.id, attempt.idx, attempt.n, now),
        )
        return attempt

    def placed(self, attempt: Attempt, request_id: str | None) -> None:
        self._conn.execute(
            "UPDATE attempts SET state = 'placed', request_id = ? WHERE id = ?",
            (request_id, attempt.id),
        )

    def withdraw(self, attempt: Attempt, not_before: float) -> None:
        """The carrier certainly did not place it (rate limited): as if never begun."""
        with self._transaction():
            self._conn.execute("DELETE FROM attempts WHERE id = ?", (attempt.id,))
            self._conn.execute(
                "UPDATE rows SET not_before = ? WHERE idx = ?", (not_before, attempt.idx)
            )

    def finish(self, attempt: Attempt, verdict: Verdict, now: float) -> bool:
        """Record the attempt's result; True when its row is done (no retry follows)."""
        plan = self.plan
        retry = verdict.outcome in plan.retry_on and attempt.n <= plan.retries
        with self._transaction():
            self._conn.execute(
                "UPDATE attempts SET state = 'done', outcome = ?, flow_outcome = ?, digits = ?,"
                " hangup_cause = ?, call_id = ?, detail = ? WHERE id = ?",
                (verdict.outcome, verdict.flow_outcome, verdict.digits, verdict.hangup_cause,
                 verdict.call_id, verdict.detail, attempt.id),
            )  # fmt: skip
            if retry:
                self._conn.execute(
                    "UPDATE rows SET not_before = ? WHERE idx = ?",
                    (now + plan.retry_delay, attempt.idx),
                )
            else:
                self._conn.execute(
                    "UPDATE rows SET outcome = ? WHERE idx = ?", (verdict.outcome, attempt.idx)
                )
        return not retry

    def unfinished(self) -> list[Attempt]:
        """Attempts whose call may be out there (left by a run that stopped)."""
        found = self._conn.execute(
            "SELECT id, idx, n, state, request_id, placed_at FROM attempts"
            " WHERE state != 'done' ORDER BY placed_at"
        ).fetchall()
        return [Attempt(*row) for row in found]

    @contextlib.contextmanager
    def _transaction(self) -> Any:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")

    def write_results(self, path: Path) -> None:
        """The results CSV: the list's columns, then each row's attempts and last result."""
        rows = self._conn.execute(
            "SELECT r.idx, r.to_number, r.vars, r.outcome, COUNT(a.id),"
            " (SELECT json_array(flow_outcome, digits, hangup_cause, call_id, detail, request_id)"
            "  FROM attempts WHERE idx = r.idx ORDER BY n DESC LIMIT 1)"
            " FROM rows r LEFT JOIN attempts a ON a.idx = r.idx GROUP BY r.idx ORDER BY r.idx"
        ).fetchall()
        tmp = path.with_name(path.name + ".tmp")
        with tmp.open("w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["to", *self.columns, *RESULT_FIELDS])
            for _, to, variables, outcome, attempts, last in rows:
                values = json.loads(variables)
                last_values = [v or "" for v in json.loads(last)] if last else [""] * 6
                flow_outcome, digits, cause, call_id, detail, request_id = last_values
                cells = [attempts, outcome or "pending", flow_outcome, digits, cause,
                         call_id or request_id, detail]  # fmt: skip
                writer.writerow([to, *(values.get(c, "") for c in self.columns), *cells])
        os.replace(tmp, path)


def _plan_value(key: str, value: Any) -> Any:
    return tuple(value) if key == "retry_on" else value


# --- the runner ------------------------------------------------------------------------------


class ProgressSink(Protocol):
    def update(self, total: int, finished: Counter[str], calling: int) -> None: ...
    def event(self, text: str) -> None: ...


class _Silent:
    def update(self, total: int, finished: Counter[str], calling: int) -> None:
        pass

    def event(self, text: str) -> None:
        logger.info("%s", text)


@dataclass
class _Watch:
    """A call that may be out there, followed until the call log gives its outcome."""

    attempt: Attempt
    request_id: str | None = None
    in_flight: bool = False  # its create request has not returned yet: nothing to look up
    seen: bool = False  # the call log has a row for it: the call is live


class CampaignRunner:
    """Places the calls of one campaign and follows them to their outcomes (see module doc)."""

    def __init__(
        self,
        state: CampaignState,
        dialer: Dialer,
        log: CallLog,
        *,
        progress: ProgressSink | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        if dialer.carrier != state.plan.carrier:
            raise CampaignError(f"the campaign is for {state.plan.carrier}, not {dialer.carrier}")
        self.state = state
        self.dialer = dialer
        self.log = log
        self.progress: ProgressSink = progress or _Silent()
        self.poll_interval = poll_interval
        self._watch: dict[str, _Watch] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_create = 0.0  # loop time before which no call may be created
        self._fatal: CampaignError | None = None

    async def run(self) -> Counter[str]:
        """Run until every row has its outcome; returns the rows by outcome."""
        for attempt in self.state.unfinished():
            self._watch[attempt.id] = _Watch(attempt, attempt.request_id)
        if self._watch:
            self.progress.event(f"following {len(self._watch)} call(s) placed before the stop")
        loop = asyncio.get_running_loop()
        try:
            while True:
                await self._collect()
                if self._fatal is not None:
                    raise self._fatal
                pause = self._launch(loop.time())
                total, finished = self.state.counts()
                self.progress.update(total, finished, len(self._watch))
                if not self._watch and self.state.open_rows() == 0:
                    return finished
                await asyncio.sleep(pause)
        finally:
            if self._tasks:  # let requests already sent record their call ids
                await asyncio.wait(self._tasks)

    def _launch(self, now: float) -> float:
        """Start the calls that are due, within the concurrency cap and the rate."""
        plan = self.state.plan
        while len(self._watch) < plan.concurrency:
            if now < self._next_create:
                return min(self.poll_interval, self._next_create - now)
            row = self.state.next_due(time.time())
            if row is None:
                break
            attempt = self.state.begin(row, time.time())  # on disk before the call is placed
            self._watch[attempt.id] = _Watch(attempt, in_flight=True)
            self._next_create = max(now, self._next_create) + 1.0 / plan.rate
            task = asyncio.create_task(self._place(attempt, row))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return self.poll_interval

    async def _place(self, attempt: Attempt, row: Row) -> None:
        watch = self._watch[attempt.id]
        variables = {**row.variables, "attempt": attempt.id}
        try:
            placed = await asyncio.to_thread(self.dialer.call, row.to, variables)
        except PlacementError as exc:
            self._not_placed(watch, exc)
        except OutboundError as exc:
            self._done(watch, Verdict("failed", detail=str(exc)))
        else:
            self.state.placed(attempt, placed.request_id)
            watch.request_id = placed.request_id
        finally:
            watch.in_flight = False

    def _not_placed(self, watch: _Watch, exc: PlacementError) -> None:
        attempt = watch.attempt
        if exc.rate_limited:
            pause = exc.retry_after or 1.0
            self.state.withdraw(attempt, time.time() + pause)
            del self._watch[attempt.id]
            now = asyncio.get_running_loop().time()
            self._next_create = max(self._next_create, now + pause)
            logger.warning("%s: rate limited, pausing %.1f s", self.state.plan.carrier, pause)
        elif exc.placed == "no":
            if exc.status == 401:
                self._fatal = CampaignError(f"{exc}: check the carrier's credentials")
            self._done(watch, Verdict("failed", detail=str(exc)))
        else:
            # It may be ringing: follow it through the call log like any placed call.
            logger.warning("row %d: %s; following it through the call log", attempt.idx, exc)
            self.state.placed(attempt, None)

    def _done(self, watch: _Watch, verdict: Verdict) -> None:
        attempt = watch.attempt
        self._watch.pop(attempt.id, None)
        final = self.state.finish(attempt, verdict, time.time())
        plan = self.state.plan
        text = f"row {attempt.idx}: attempt {attempt.n}/{plan.retries + 1}: {verdict.outcome}"
        if verdict.detail:
            text += f" ({verdict.detail})"
        if not final:
            text += f", again in {plan.retry_delay:g} s"
        self.progress.event(text)

    async def _collect(self) -> None:
        """Read the outcomes of placed calls from the call log."""
        watched = [w for w in self._watch.values() if not w.in_flight]
        if not watched:
            return
        carrier = self.state.plan.carrier

        def read() -> list[CallRecord | None]:
            return [
                find_call(self.log, carrier, w.attempt.id, w.request_id, w.attempt.placed_at)
                for w in watched
            ]

        records = await asyncio.to_thread(read)
        now = time.time()
        for watch, record in zip(watched, records, strict=True):
            verdict = verdict_of(record) if record is not None else None
            if verdict is not None:
                self._done(watch, verdict)
                continue
            watch.seen = watch.seen or record is not None
            if now - watch.attempt.placed_at > (
                LIVE_LIMIT_S if watch.seen else self.state.plan.wait
            ):
                detail = (
                    "the call log never recorded its end"
                    if watch.seen
                    else "no word of the call in the call log: is `telebridge serve` running "
                    "with the same settings (TELEBRIDGE_DB, the carrier credentials, "
                    "TELEBRIDGE_SECRET)?"
                )
                self._done(watch, Verdict(UNKNOWN, detail=detail))


# --- entry points ----------------------------------------------------------------------------


def start(list_path: Path, plan: Plan, state_path: Path | None = None) -> CampaignState:
    """Read and check the list, then create the campaign's state file beside it."""
    plan = plan.checked()
    columns, rows = read_list(list_path)
    # Absolute paths: `resume` may run from another folder.
    results = (
        Path(plan.results) if plan.results else list_path.with_name(list_path.stem + ".results.csv")
    )
    plan = replace(plan, results=str(results.resolve()))
    path = state_path or state_path_for(list_path)
    return CampaignState.create(path, plan, columns, rows, list_path.resolve())


def resume_path(path: Path) -> Path:
    """The state file for `path`, which may be the state file or the campaign's list."""
    if path.suffix.lower() == ".csv":
        return state_path_for(path)
    return path


def summary_line(finished: Counter[str], results: str) -> str:
    tally = ", ".join(f"{n} {o}" for o, n in sorted(finished.items())) or "no rows"
    return f"campaign done: {tally}; results in {results}"
