"""The call log: one SQLite file with a row per call and its timeline, written off the event loop.

Outside code imports from this face. The log imports only the root modules (settings); everything
that records calls (the server, outbound) imports it, never the other way round.
"""

from telebridge.calllog.store import (
    NO_STREAM,
    CallLog,
    CallLogError,
    CallRecord,
    CallRecorder,
    format_table,
    parse_since,
    to_csv,
    to_json_lines,
)

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
