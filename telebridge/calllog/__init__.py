"""The call log: a row per call and its timeline, written off the event loop, in one SQLite file
(the default) or a PostgreSQL database shared by several processes (`TELEBRIDGE_DB=postgresql://`).

Modules: db (`Db`, what both backends offer the queries), schema (the SQLite file, its migrations,
stored values), sqlite (its `Db`), postgres (connecting, its schema and migrations, its `Db`; only
loaded for a URL, so SQLite users never import psycopg), changes (what a recorded change does to
the tables), writer (the writer thread, which rides out a lost server), records (`CallRecord` and
reading), log (`CallLog`, `CallRecorder`), format (CLI output). Outside code imports from this
face. The log imports only the root modules (settings); everything that records calls (the
server, outbound) imports it, never the other way round.
"""

from telebridge.calllog.format import format_table, parse_since, to_csv, to_json_lines
from telebridge.calllog.log import CallLog, CallRecorder
from telebridge.calllog.records import CallRecord
from telebridge.calllog.schema import NO_STREAM, CallLogError


def probe_postgres(url: str) -> str:
    """Whether the PostgreSQL database at `url` can be reached, and its schema, in one line
    (for `telebridge doctor`); raises `CallLogError`. Loads psycopg."""
    from telebridge.calllog.postgres import probe

    return probe(url)


__all__ = [
    "NO_STREAM",
    "CallLog",
    "CallLogError",
    "CallRecord",
    "CallRecorder",
    "format_table",
    "parse_since",
    "probe_postgres",
    "to_csv",
    "to_json_lines",
]
