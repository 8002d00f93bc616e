"""Phone numbers: the one E.164 rule that call placing, flow files and transfers all check.

The canonical form, the one flows, the call log and the carriers are given, is "+", a country
code (which never starts with 0), then the rest of the number: 7 to 15 digits in all. E.164
allows at most 15; the shortest numbers in use have 7 (Niue's +683 4002, Saint Helena's
+290 xxxx), so a rule of 8 would refuse real people. People type numbers with spaces, dashes,
dots, brackets, "00" for "+", or without the "+" (spreadsheets drop it): `parse` reads those.
"""

from __future__ import annotations

import re
from typing import Any

MIN_DIGITS = 7
MAX_DIGITS = 15
RULE = f"'+', the country code, {MIN_DIGITS} to {MAX_DIGITS} digits in all, e.g. +14155550123"

_CANONICAL = re.compile(rf"\+[1-9][0-9]{{{MIN_DIGITS - 1},{MAX_DIGITS - 1}}}")
_SEPARATORS = str.maketrans("", "", " -().\u00a0")


def is_e164(text: str) -> bool:
    """Whether `text` is a number in the canonical form, `+14155550123`."""
    return _CANONICAL.fullmatch(text) is not None


def parse(text: str) -> str | None:
    """The number `text` means, in the canonical form; None when it is not a number.

    `+1 (415) 555-0123`, `0014155550123` and `14155550123` all mean `+14155550123`: without
    "+" or "00" the digits must start with the country code.
    """
    cleaned = text.strip().translate(_SEPARATORS)
    if cleaned.startswith("00"):  # the international prefix many lists use instead of "+"
        cleaned = "+" + cleaned[2:]
    elif not cleaned.startswith("+"):
        cleaned = "+" + cleaned
    return cleaned if is_e164(cleaned) else None


def numbers_of(call: dict[str, Any]) -> dict[str, Any]:
    """`call` (a call as the API shows it) with its `from` and `to` in the canonical form when
    they are numbers (carriers send digits only); other values as they are. Changes `call`."""
    for name in ("from", "to"):
        value = call.get(name)
        if isinstance(value, str) and (number := parse(value)) is not None:
            call[name] = number
    return call
