"""A campaign's state: `CampaignStore`, what the runner needs of it, and `CampaignState`, the
SQLite file beside the list (`LIST.campaign.db`): the plan, the rows as read, and every attempt,
each committed as it happens. The other store is PostgreSQL (`campaign_pg`, loaded only for a
`TELEBRIDGE_DB` URL); the pure parts both share (attempt ids, retries, results) are here.

An attempt is committed *before* its call is placed (`synchronous = FULL`: on disk, not just in
the OS's cache), so after Ctrl-C or a crash `resume` knows every call that may have gone out.
The state is synchronous; the campaign runner calls it from one thread of its own, off the event
loop, one call at a time.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, Self

from telebridge.outbound.campaign_csv import Row, RowResult, write_results
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.verdicts import Verdict

DUPLICATE = "duplicate"  # the number is on an earlier row: called once only
STATE_VERSION = 1


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


class CampaignStore(Protocol):
    """What the runner and the CLI use of a campaign's state, in one thread, one call at a time."""

    plan: Plan
    columns: list[str]
    where: str  # where the state lives, for messages (a file; a database, password as ***)
    resume_with: str  # what `telebridge campaign resume` takes to continue the campaign

    def set_plan(self, plan: Plan) -> None: ...
    def next_due(self, now: float) -> Row | None: ...
    def open_rows(self) -> int: ...
    def counts(self) -> tuple[int, Counter[str]]: ...
    def begin(self, row: Row, now: float) -> Attempt: ...
    def placed(self, attempt: Attempt, request_id: str | None) -> None: ...
    def withdraw(self, attempt: Attempt, not_before: float) -> None: ...
    def finish(self, attempt: Attempt, verdict: Verdict, now: float) -> bool: ...
    def unfinished(self) -> list[Attempt]: ...
    def write_results(self, path: Path) -> None: ...
    def close(self) -> None: ...


def first_outcomes(rows: list[Row]) -> list[str | None]:
    """Each row's outcome before any call: `DUPLICATE` for a number already on an earlier row."""
    seen: set[str] = set()
    outcomes: list[str | None] = []
    for row in rows:
        outcomes.append(DUPLICATE if row.to in seen else None)
        seen.add(row.to)
    return outcomes


def new_attempt(plan: Plan, row: Row, earlier: int, now: float) -> Attempt:
    """The attempt after `earlier` ones for `row`; its id names the campaign, row and number."""
    n = earlier + 1
    return Attempt(f"{plan.campaign_id}-{row.idx}-{n}", row.idx, n, "placing", None, now)


def retries(plan: Plan, attempt: Attempt, verdict: Verdict) -> bool:
    """Whether another attempt follows this one's `verdict`."""
    return verdict.outcome in plan.retry_on and attempt.n <= plan.retries


def plan_json(plan: Plan) -> str:
    return json.dumps(asdict(plan))


def plan_of(text: str) -> Plan:
    return Plan(**{k: _plan_value(k, v) for k, v in json.loads(text).items()})


def row_result(
    to: str, variables: str, outcome: str | None, attempts: int, last: list[Any] | None
) -> RowResult:
    """A results row from stored values: `last` holds the last attempt's flow outcome, digits,
    hangup cause, call id, detail and request id (None: no attempt)."""
    values = [v or "" for v in last] if last else [""] * 6
    flow_outcome, digits, cause, call_id, detail, request_id = values
    last_attempt = (flow_outcome, digits, cause, call_id, detail, request_id)
    return RowResult(to, json.loads(variables), attempts, outcome, last_attempt)


class CampaignState:
    """The state file: the plan, the rows as read, and every attempt, committed as it happens."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.where = self.resume_with = str(path)
        self._conn = conn
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.plan = plan_of(meta["plan"])
        self.columns: list[str] = json.loads(meta["columns"])
        self.list_path = meta.get("list", "")

    @staticmethod
    def _connect(path: Path) -> sqlite3.Connection:
        # Opened here, used by the runner's state thread while it runs: calls never overlap.
        conn = sqlite3.connect(path, isolation_level=None, timeout=5.0, check_same_thread=False)
        conn.execute("PRAGMA synchronous = FULL")  # an attempt must be on disk before its call
        return conn

    @classmethod
    def create(
        cls, path: Path, plan: Plan, columns: list[str], rows: list[Row], list_path: Path
    ) -> Self:
        if path.exists():
            raise CampaignError(
                f"{path} exists: a campaign from this list was started before; continue it with "
                f"`telebridge campaign resume {path}`, or delete the file to start over"
            )
        conn = cls._connect(path)
        try:
            conn.executescript(_SCHEMA)
            conn.execute("BEGIN")
            meta = {"version": str(STATE_VERSION), "plan": plan_json(plan),
                    "columns": json.dumps(columns), "list": str(list_path)}  # fmt: skip
            conn.executemany("INSERT INTO meta VALUES (?, ?)", meta.items())
            for row, outcome in zip(rows, first_outcomes(rows), strict=True):
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
    def open(cls, path: Path) -> Self:
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
        self._conn.execute("UPDATE meta SET value = ? WHERE key = 'plan'", (plan_json(plan),))
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
        attempt = new_attempt(self.plan, row, n, now)
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
        retry = retries(plan, attempt, verdict)
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
        found = self._conn.execute(
            "SELECT r.idx, r.to_number, r.vars, r.outcome, COUNT(a.id),"
            " (SELECT json_array(flow_outcome, digits, hangup_cause, call_id, detail, request_id)"
            "  FROM attempts WHERE idx = r.idx ORDER BY n DESC LIMIT 1)"
            " FROM rows r LEFT JOIN attempts a ON a.idx = r.idx GROUP BY r.idx ORDER BY r.idx"
        ).fetchall()
        results = [
            row_result(to, variables, outcome, attempts, json.loads(last) if last else None)
            for _, to, variables, outcome, attempts, last in found
        ]
        write_results(path, self.columns, results)


def _plan_value(key: str, value: Any) -> Any:
    return tuple(value) if key == "retry_on" else value
