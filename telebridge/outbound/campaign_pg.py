"""A campaign's state in PostgreSQL (`TELEBRIDGE_DB=postgresql://...`): `PostgresCampaignState`,
the same store as the SQLite file (`campaign_state`) in the call log's database, so `resume` works
from any machine, by the campaign's id or by a copy of its list.

Tables `campaigns` (one per run: its plan, columns and the sha256 of the list's bytes),
`campaign_rows` and `campaign_attempts`, keyed by campaign id (their schema and migrations in
`campaign_pg_schema`). Only a URL loads this module (and psycopg).

One process runs a campaign at a time: it holds a session advisory lock on the campaign's id (a
second `resume` is refused; the lock goes with the holder's connection). Every write is committed
before the call returns, so an attempt is in the database before its call is placed. A lost server
is waited out: each use is retried, with backoff, for up to `OUTAGE_LIMIT_S` (one warning, one
line when it is back), then the campaign stops with one line saying how to resume it. Retrying
never doubles anything: an attempt is inserted by its id (`ON CONFLICT DO NOTHING`), and the
other writes set values rather than add to them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from telebridge.calllog import postgres
from telebridge.outbound.campaign_csv import Row, write_results
from telebridge.outbound.campaign_pg_schema import (
    UNFINISHED,
    Conn,
    cannot_use,
    list_digest,
    lock_key,
    lock_parts,
    open_migrated,
)
from telebridge.outbound.campaign_plan import CampaignError, Plan
from telebridge.outbound.campaign_state import (
    Attempt,
    first_outcomes,
    new_attempt,
    plan_json,
    plan_of,
    retries,
    row_result,
)
from telebridge.outbound.verdicts import Verdict

__all__ = ["HOLD_WAIT_S", "OUTAGE_LIMIT_S", "PostgresCampaignState"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

OUTAGE_LIMIT_S = 120.0  # how long a lost server is waited for before the campaign stops
_FIRST_PAUSE_S, _MAX_PAUSE_S = 0.05, 2.0
HOLD_WAIT_S = 3.0  # how long `open` waits for a campaign held by a process that just ended


class PostgresCampaignState:
    """One campaign's state in the database at `url` (see module doc); make it with `create`
    or `open`, close it when done. Satisfies `CampaignStore`."""

    def __init__(self, url: str, conn: Conn, campaign_id: str) -> None:
        self.url = url
        self.campaign_id = campaign_id
        self.where = f"PostgreSQL {postgres.redact(url)} (campaign {campaign_id})"
        self.resume_with = campaign_id
        self.outage_limit = OUTAGE_LIMIT_S
        self._conn: Conn | None = conn
        self._away_since: float | None = None
        self._given_up: CampaignError | None = None
        found = conn.execute(
            "SELECT plan, columns FROM campaigns WHERE id = %s", (campaign_id,)
        ).fetchone()
        if found is None:
            raise CampaignError(f"campaign {campaign_id}: not in {postgres.redact(url)}")
        self.plan: Plan = plan_of(found[0])
        self.columns: list[str] = json.loads(found[1])
        self._backend_pid = conn.info.backend_pid
        if not self._hold(conn, HOLD_WAIT_S):
            raise CampaignError(
                f"campaign {campaign_id} is being run by another process (it holds the campaign"
                f" in {postgres.redact(url)}); stop that one first"
            )

    def _hold(self, conn: Conn, wait: float) -> bool:
        """Take this campaign's session lock: one process runs a campaign at a time. A process
        just killed holds it until the server notices its connection closed: wait a little."""
        deadline = time.monotonic() + wait
        while True:
            ((held,),) = conn.execute(
                "SELECT pg_try_advisory_lock(%s)", (lock_key("campaign:" + self.campaign_id),)
            ).fetchall()
            if held or time.monotonic() >= deadline:
                return bool(held)
            time.sleep(0.1)

    @classmethod
    def create(
        cls, url: str, plan: Plan, columns: list[str], rows: list[Row], list_path: Path
    ) -> PostgresCampaignState:
        """A new campaign; refused while one from a list with the same bytes is unfinished."""
        digest = list_digest(list_path)
        conn = open_migrated(url)
        try:
            with conn.transaction():
                # Two runs of one list at once: the second waits here, then sees the first.
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key("list:" + digest),))
                found = conn.execute(UNFINISHED, (digest,)).fetchone()
                if found is not None:
                    raise CampaignError(
                        f"{list_path}: campaign {found[0]} from this list is unfinished; continue"
                        f" it with `telebridge campaign resume {found[0]}`"
                    )
                made = conn.execute(
                    "INSERT INTO campaigns (id, list_sha256, list_path, plan, columns)"
                    " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING id",
                    (plan.campaign_id, digest, str(list_path), plan_json(plan),
                     json.dumps(columns)),
                ).fetchone()  # fmt: skip
                if made is None:
                    raise CampaignError(f"campaign id {plan.campaign_id} is taken: run it again")
                cid = plan.campaign_id
                values = [
                    (cid, row.idx, row.line, row.to, json.dumps(row.variables), outcome)
                    for row, outcome in zip(rows, first_outcomes(rows), strict=True)
                ]
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO campaign_rows (campaign, idx, line, to_number, vars, outcome)"
                        " VALUES (%s, %s, %s, %s, %s, %s)",
                        values,
                    )
            return cls(url, conn, plan.campaign_id)
        except psycopg.Error as exc:
            conn.close()
            raise cannot_use(url, exc) from None
        except BaseException:
            conn.close()
            raise

    @classmethod
    def open(cls, url: str, key: str) -> PostgresCampaignState:
        """The campaign `key` names: its id, or a list (`.csv`) whose bytes an unfinished
        campaign was started from."""
        conn = open_migrated(url)
        try:
            if key.lower().endswith(".csv") or Path(key).is_file():
                digest = list_digest(Path(key))
                found = conn.execute(UNFINISHED, (digest,)).fetchall()
                if not found:
                    raise CampaignError(
                        f"{key}: no unfinished campaign from this list in {postgres.redact(url)}"
                    )
                key = str(found[-1][0])
            return cls(url, conn, key)
        except psycopg.Error as exc:
            conn.close()
            raise cannot_use(url, exc) from None
        except BaseException:
            conn.close()
            raise

    def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            conn.close()

    # --- a lost server, waited out ------------------------------------------------------------

    def _use(self, fn: Callable[[Conn], T]) -> T:
        """`fn` on the connection, again on a new one while the server is away (up to the
        limit); `fn` must be safe to run twice (its first COMMIT may have happened unseen)."""
        if self._given_up is not None:
            raise self._given_up
        pause = _FIRST_PAUSE_S
        while True:
            try:
                if self._conn is None:
                    self._conn = self._reconnect()
                result = fn(self._conn)
            except (psycopg.OperationalError, psycopg.InterfaceError) as exc:
                self._lost(exc)
                time.sleep(pause)
                pause = min(2 * pause, _MAX_PAUSE_S)
                continue
            if self._away_since is not None:
                away = time.monotonic() - self._away_since
                logger.info(
                    "campaign state %s: the database is back after %.0f s", self.where, away
                )
                self._away_since = None
            return result

    def _reconnect(self) -> Conn:
        conn = postgres.connect(self.url)
        try:
            if not self._hold(conn, 0):
                # Held by this process's lost session, which the server has not seen end (the
                # network went silent): end it, then take the lock on the next try.
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_locks WHERE locktype = 'advisory'"
                    " AND pid = %s AND classid::bigint = %s AND objid::bigint = %s",
                    (self._backend_pid, *lock_parts("campaign:" + self.campaign_id)),
                )
                raise psycopg.OperationalError("the campaign's lock is not free yet")
        except BaseException:
            conn.close()
            raise
        self._backend_pid = conn.info.backend_pid
        return conn

    def _lost(self, exc: BaseException) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            with contextlib.suppress(psycopg.Error):
                conn.close()
        now = time.monotonic()
        why = postgres.reason(exc, self.url)
        if self._away_since is None:
            self._away_since = now
            logger.warning(
                "campaign state %s: %s; waiting for it (up to %.0f s)",
                self.where, why, self.outage_limit,
            )  # fmt: skip
        elif now - self._away_since > self.outage_limit:
            self._given_up = CampaignError(
                f"TELEBRIDGE_DB: {postgres.redact(self.url)} away for {self.outage_limit:.0f} s"
                f" ({why}); calls placed are recorded; continue with "
                f"`telebridge campaign resume {self.campaign_id}` once it is back"
            )
            raise self._given_up

    def _rows(self, sql: str, params: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        def rows(conn: Conn) -> list[tuple[Any, ...]]:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []

        return self._use(rows)

    # --- the store ------------------------------------------------------------------------------

    def set_plan(self, plan: Plan) -> None:
        self._rows(
            "UPDATE campaigns SET plan = %s WHERE id = %s", (plan_json(plan), self.campaign_id)
        )
        self.plan = plan

    def next_due(self, now: float) -> Row | None:
        found = self._rows(
            "SELECT idx, line, to_number, vars FROM campaign_rows r WHERE campaign = %s"
            " AND outcome IS NULL AND not_before <= %s AND NOT EXISTS (SELECT 1 FROM"
            " campaign_attempts a WHERE a.campaign = r.campaign AND a.idx = r.idx"
            " AND a.state != 'done') ORDER BY idx LIMIT 1",
            (self.campaign_id, now),
        )
        return None if not found else Row(found[0][0], found[0][1], found[0][2],
                                          json.loads(found[0][3]))  # fmt: skip

    def open_rows(self) -> int:
        ((n,),) = self._rows(
            "SELECT COUNT(*) FROM campaign_rows WHERE campaign = %s AND outcome IS NULL",
            (self.campaign_id,),
        )
        return int(n)

    def counts(self) -> tuple[int, Counter[str]]:
        """All rows, and the finished ones by outcome."""
        found = self._rows(
            "SELECT outcome, COUNT(*) FROM campaign_rows WHERE campaign = %s GROUP BY outcome",
            (self.campaign_id,),
        )
        total = sum(int(n) for _, n in found)
        return total, Counter({o: int(n) for o, n in found if o is not None})

    def begin(self, row: Row, now: float) -> Attempt:
        """Record that a call for `row` is about to be placed (committed before it is)."""
        ((earlier,),) = self._rows(
            "SELECT COUNT(*) FROM campaign_attempts WHERE campaign = %s AND idx = %s",
            (self.campaign_id, row.idx),
        )
        attempt = new_attempt(self.plan, row, int(earlier), now)
        # By its id: sent again after a lost answer, the attempt is still recorded once.
        self._rows(
            "INSERT INTO campaign_attempts (id, campaign, idx, n, state, placed_at)"
            " VALUES (%s, %s, %s, %s, 'placing', %s) ON CONFLICT (id) DO NOTHING",
            (attempt.id, self.campaign_id, attempt.idx, attempt.n, now),
        )
        return attempt

    def placed(self, attempt: Attempt, request_id: str | None) -> None:
        self._rows(
            "UPDATE campaign_attempts SET state = 'placed', request_id = %s WHERE id = %s",
            (request_id, attempt.id),
        )

    def withdraw(self, attempt: Attempt, not_before: float) -> None:
        """The carrier certainly did not place it (rate limited): as if never begun."""

        def withdraw(conn: Conn) -> None:
            with conn.transaction():
                conn.execute("DELETE FROM campaign_attempts WHERE id = %s", (attempt.id,))
                conn.execute(
                    "UPDATE campaign_rows SET not_before = %s WHERE campaign = %s AND idx = %s",
                    (not_before, self.campaign_id, attempt.idx),
                )

        self._use(withdraw)

    def finish(self, attempt: Attempt, verdict: Verdict, now: float) -> bool:
        """Record the attempt's result; True when its row is done (no retry follows)."""
        retry = retries(self.plan, attempt, verdict)
        row = (self.campaign_id, attempt.idx)

        def finish(conn: Conn) -> None:
            with conn.transaction():
                conn.execute(
                    "UPDATE campaign_attempts SET state = 'done', outcome = %s, flow_outcome = %s,"
                    " digits = %s, hangup_cause = %s, call_id = %s, detail = %s WHERE id = %s",
                    (verdict.outcome, verdict.flow_outcome, verdict.digits, verdict.hangup_cause,
                     verdict.call_id, verdict.detail, attempt.id),
                )  # fmt: skip
                if retry:
                    conn.execute(
                        "UPDATE campaign_rows SET not_before = %s WHERE campaign = %s AND idx = %s",
                        (now + self.plan.retry_delay, *row),
                    )
                else:
                    conn.execute(
                        "UPDATE campaign_rows SET outcome = %s WHERE campaign = %s AND idx = %s",
                        (verdict.outcome, *row),
                    )

        self._use(finish)
        return not retry

    def unfinished(self) -> list[Attempt]:
        """Attempts whose call may be out there (left by a run that stopped)."""
        found = self._rows(
            "SELECT id, idx, n, state, request_id, placed_at FROM campaign_attempts"
            " WHERE campaign = %s AND state != 'done' ORDER BY placed_at",
            (self.campaign_id,),
        )
        return [Attempt(*row) for row in found]

    def write_results(self, path: Path) -> None:
        """The results CSV, as the SQLite state writes it."""
        found = self._rows(
            "SELECT r.to_number, r.vars, r.outcome, (SELECT COUNT(*) FROM campaign_attempts a"
            "  WHERE a.campaign = r.campaign AND a.idx = r.idx),"
            " l.flow_outcome, l.digits, l.hangup_cause, l.call_id, l.detail, l.request_id,"
            " l.id IS NOT NULL"
            " FROM campaign_rows r LEFT JOIN LATERAL (SELECT * FROM campaign_attempts a"
            "  WHERE a.campaign = r.campaign AND a.idx = r.idx ORDER BY n DESC LIMIT 1) l ON true"
            " WHERE r.campaign = %s ORDER BY r.idx",
            (self.campaign_id,),
        )
        results = [
            row_result(to, variables, outcome, int(n), list(last[:6]) if last[6] else None)
            for to, variables, outcome, n, *last in found
        ]
        write_results(path, self.columns, results)
