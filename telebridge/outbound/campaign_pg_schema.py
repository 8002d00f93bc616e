"""The tables of a campaign's state in PostgreSQL (`campaign_pg`): their schema and migrations,
the advisory locks that keep two processes apart, and connecting with one-line errors.

The version is kept as the call log's is (`telebridge_schema`, component "campaign"), migrated
under the call log's advisory lock, so processes starting at once make the tables once. Loaded
only with `campaign_pg`, for a `TELEBRIDGE_DB` URL.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg

from telebridge.calllog import postgres
from telebridge.outbound.campaign_plan import CampaignError

__all__ = [
    "SCHEMA_VERSION",
    "UNFINISHED",
    "Conn",
    "cannot_use",
    "list_digest",
    "lock_key",
    "lock_parts",
    "open_migrated",
]

logger = logging.getLogger(__name__)

Conn = psycopg.Connection[tuple[Any, ...]]

_COMPONENT = "campaign"

# The unfinished campaigns from a list with these bytes (sha256), oldest first.
UNFINISHED = (
    "SELECT c.id FROM campaigns c WHERE c.list_sha256 = %s AND EXISTS (SELECT 1 FROM"
    " campaign_rows r WHERE r.campaign = c.id AND r.outcome IS NULL) ORDER BY c.created_at"
)


def _v1(conn: Conn) -> None:
    conn.execute(
        "CREATE TABLE campaigns (id TEXT PRIMARY KEY, list_sha256 TEXT NOT NULL,"
        " list_path TEXT NOT NULL, plan TEXT NOT NULL, columns TEXT NOT NULL,"
        " created_at TIMESTAMPTZ NOT NULL DEFAULT now())"
    )
    conn.execute("CREATE INDEX campaigns_list ON campaigns (list_sha256)")
    conn.execute(
        "CREATE TABLE campaign_rows (campaign TEXT NOT NULL REFERENCES campaigns (id),"
        " idx INTEGER NOT NULL, line INTEGER NOT NULL, to_number TEXT NOT NULL,"
        " vars TEXT NOT NULL, outcome TEXT, not_before DOUBLE PRECISION NOT NULL DEFAULT 0,"
        " PRIMARY KEY (campaign, idx))"
    )
    conn.execute(
        "CREATE TABLE campaign_attempts (id TEXT PRIMARY KEY, campaign TEXT NOT NULL,"
        " idx INTEGER NOT NULL, n INTEGER NOT NULL, state TEXT NOT NULL, request_id TEXT,"
        " placed_at DOUBLE PRECISION NOT NULL, outcome TEXT, flow_outcome TEXT, digits TEXT,"
        " hangup_cause TEXT, call_id TEXT, detail TEXT,"
        " FOREIGN KEY (campaign, idx) REFERENCES campaign_rows (campaign, idx))"
    )
    conn.execute("CREATE INDEX campaign_attempts_row ON campaign_attempts (campaign, idx)")


# Append only: entry N takes a database from version N to N + 1.
_MIGRATIONS: tuple[Callable[[Conn], None], ...] = (_v1,)
SCHEMA_VERSION = len(_MIGRATIONS)


def list_digest(list_path: Path) -> str:
    """The sha256 of the list's bytes: a copy of the list on another machine finds its campaign."""
    try:
        return hashlib.sha256(list_path.read_bytes()).hexdigest()
    except OSError as exc:
        raise CampaignError(f"{list_path}: cannot read it ({exc.strerror})") from None


def lock_key(name: str) -> int:
    """An advisory lock's key for `name` (a campaign, a list), apart from the migrations' key."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_parts(name: str) -> tuple[int, int]:
    """The two halves `pg_locks` shows of the lock `lock_key(name)` (classid, objid)."""
    key = lock_key(name) & 0xFFFF_FFFF_FFFF_FFFF
    return key >> 32, key & 0xFFFF_FFFF


def _migrate(conn: Conn, where: str) -> None:
    def newer(version: int) -> CampaignError:
        return CampaignError(
            f"TELEBRIDGE_DB: {where} was written by a newer telebridge (campaign schema "
            f"{version}, this one knows {SCHEMA_VERSION}); upgrade telebridge"
        )

    with conn.transaction():  # the call log's lock and versions table (postgres.migrate)
        version = postgres.migrate(conn, _COMPONENT, _MIGRATIONS, newer)
    if version < SCHEMA_VERSION:
        logger.info("campaign state %s: schema %d -> %d", where, version, SCHEMA_VERSION)


def cannot_use(url: str, exc: psycopg.Error) -> CampaignError:
    """The one line for a database that cannot be used, naming the setting, password as ***."""
    return CampaignError(
        f"TELEBRIDGE_DB: cannot use {postgres.redact(url)}: {postgres.reason(exc, url)}"
    )


def open_migrated(url: str) -> Conn:
    """A migrated connection; `CampaignError` naming TELEBRIDGE_DB when it cannot be had."""
    try:
        conn = postgres.connect(url)
    except psycopg.Error as exc:
        raise cannot_use(url, exc) from None
    try:
        _migrate(conn, postgres.redact(url))
    except psycopg.Error as exc:
        conn.close()
        raise cannot_use(url, exc) from None
    except BaseException:
        conn.close()
        raise
    return conn
