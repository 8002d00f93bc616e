"""Logging for the bridge: the call id on every line, JSON on request, and no secrets ever.

Stream tokens ride in WebSocket URLs and uvicorn logs those URLs; keys and bearer tokens can show
up in library messages. A filter on the root handler rewrites them before any line is written.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import time

# The call a log line belongs to: set by the stream endpoint, inherited by the call's tasks.
current_call: contextvars.ContextVar[str] = contextvars.ContextVar("telebridge_call", default="-")

_SECRETS = [
    (re.compile(r"([?&](?:token|t|vars)=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(Bearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1[redacted]"),
    (re.compile(r"\bsk_[A-Za-z0-9_-]{6,}"), "sk_[redacted]"),
    (re.compile(r"(-----BEGIN [A-Z ]*PRIVATE KEY-----).*?(-----END)", re.S), r"\1[redacted]\2"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


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
