"""The call log: one SQLite file with a row per call and its timeline, written off the event loop.

Modules: schema (the file, its migrations, stored values), writer (the writer thread), records
(`CallRecord` and reading), log (`CallLog`, `CallRecorder`), format (CLI output). Outside code
imports from this face. The log imports only the root modules (settings); everything
that records calls (the server, outbound) imports it, never the other way round.
"""

from telebridge.calllog.format import format_table, parse_since, to_csv, to_json_lines
from telebridge.calllog.log import CallLog, CallRecorder
from telebridge.calllog.records import CallRecord
from telebridge.calllog.schema import NO_STREAM, CallLogError

__all__ = [
    "NO_STREAM",
    "CallLog",
    "CallLogError",
    "CallRecord",
    "CallRecorder",
    "format_table",
    "parse_since",
    "to_csv",
    "to_json_lines",
]
