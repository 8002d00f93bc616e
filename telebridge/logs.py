"""Logging for the bridge: the call id on every line, JSON on request, and no secrets ever.

Stream tokens ride in WebSocket URLs and uvicorn logs those URLs; keys and bearer tokens can show
up in library messages. `redact` is the one place that takes them out: a filter on the root handler
applies it before any line is written, and `redacting_logger` applies it (plus one known secret)
for libraries that format their own records, such as websockets logging handshake headers.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

# The call a log line belongs to: set by the stream endpoint, inherited by the call's tasks.
current_call: contextvars.ContextVar[str] = contextvars.ContextVar("telebridge_call", default="-")

_SECRETS = [
    (re.compile(r"([?&](?:token|t|vars)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\bsk_[A-Za-z0-9_-]{6,}"), "sk_[redacted]"),
    (re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?(-----END)", re.S), r"\1[redacted]\2"),
]


def redact(text: str, secret: str = "") -> str:
    """`text` without `secret` (taken out verbatim) and without anything shaped like a secret:
    stream tokens in URLs, bearer tokens, `sk_` keys, private keys."""
    if secret:
        text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


class _Redacting(logging.LoggerAdapter[logging.Logger]):
    """Formats each record itself so that it can take a secret out of the final text."""

    def __init__(self, base: logging.Logger, secret: str) -> None:
        super().__init__(base, {})
        self._secret = secret

    def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
        if not self.isEnabledFor(level):
            return
        values: object = args[0] if len(args) == 1 and isinstance(args[0], Mapping) else args
        try:
            text = str(msg) % values if args else str(msg)
        except (TypeError, ValueError):
            text = f"{msg} {args}"
        self.logger.log(level, "%s", redact(text, self._secret), **kwargs)


def redacting_logger(base: logging.Logger, secret: str) -> logging.LoggerAdapter[logging.Logger]:
    """A logger that never lets `secret` (or anything `redact` knows) through, even on a
    handler without the root filter: for libraries that log headers, such as websockets."""
    return _Redacting(base, secret)


class CallContextFilter(logging.Filter):
    """Adds `call_id` to every record and scrubs secrets out of its message."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.call_id = current_call.get()
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "call_id": getattr(record, "call_id", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(call_id)s] %(message)s")

    def formatException(self, ei: object) -> str:
        return redact(super().formatException(ei))  # type: ignore[arg-type]


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    """Configure the root logger (and uvicorn's) once for the process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallContextFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers[:] = []
        logger.propagate = True
    # websockets logs frames and headers at debug level: never let that through.
    logging.getLogger("websockets").setLevel(logging.WARNING)
