"""A campaign's CSV files: the list of numbers (and variables) to call, read and checked, and the
results file written from the campaign's state."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from telebridge.outbound.campaign_plan import CampaignError
from telebridge.outbound.request import OutboundError, check_variable_name, normalize_number

RESULT_FIELDS = ["attempts", "outcome", "flow_outcome", "digits", "hangup_cause", "call_id",
                 "detail"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class Row:
    idx: int
    line: int
    to: str
    variables: dict[str, str]


@dataclass(frozen=True, slots=True)
class RowResult:
    """One row of the list as the results file shows it."""

    to: str
    variables: dict[str, str]
    attempts: int
    outcome: str | None  # None: not finished yet
    # The last attempt's flow_outcome, digits, hangup_cause, call_id, detail, request_id ("": none)
    last: tuple[str, str, str, str, str, str]


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


def write_results(path: Path, columns: list[str], results: Iterable[RowResult]) -> None:
    """The results CSV: the list's columns, then each row's attempts and last result.

    Written beside `path` and moved over it, so a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["to", *columns, *RESULT_FIELDS])
        for result in results:
            flow_outcome, digits, cause, call_id, detail, request_id = result.last
            cells = [result.attempts, result.outcome or "pending", flow_outcome, digits, cause,
                     call_id or request_id, detail]  # fmt: skip
            writer.writerow([result.to, *(result.variables.get(c, "") for c in columns), *cells])
    os.replace(tmp, path)
