"""`{{ name }}` placeholders in flow text: finding them, checking them and filling them.

A placeholder is a variable name between double braces, with optional spaces inside the braces.
There is no escaping and no expression language: text is spoken, not programmed. An unknown
variable at run time renders as the empty string and is logged at warning, so a call never fails
because a webhook forgot a field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

logger = logging.getLogger(__name__)

# Braces inside a placeholder are not allowed, so "{{ a {{ b }}" leaves an unclosed "{{".
_PLACEHOLDER = re.compile(r"\{\{([^{}]*)\}\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def is_variable_name(name: str) -> bool:
    """True for names a placeholder or a `set` may use (identifier-like)."""
    return _NAME.fullmatch(name) is not None


def names(text: str) -> list[str]:
    """The variable names `text` refers to, in order of first use."""
    found: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1).strip()
        if is_variable_name(name) and name not in found:
            found.append(name)
    return found


def errors(text: str) -> list[str]:
    """What is malformed in `text`'s placeholders (empty when all are fine)."""
    problems: list[str] = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1).strip()
        if not is_variable_name(name):
            problems.append(f"placeholder {match.group(0)!r} does not name a variable")
    rest = _PLACEHOLDER.sub("", text)
    if "{{" in rest:
        problems.append("'{{' is never closed with '}}'")
    elif "}}" in rest:
        problems.append("'}}' has no opening '{{'")
    return problems


def render(text: str, variables: Mapping[str, str], *, where: str = "") -> str:
    """`text` with each placeholder replaced by its variable's value.

    `where` says which step asked, for the warning about an unknown variable.
    """

    def fill(match: re.Match[str]) -> str:
        name = match.group(1).strip()
        if not is_variable_name(name):
            # The loader rejects these, so only hand-built flows get here: leave them visible.
            return match.group(0)
        value = variables.get(name)
        if value is None:
            logger.warning("unknown variable %r in %s: rendered as empty", name, where or "text")
            return ""
        return value

    return _PLACEHOLDER.sub(fill, text)
