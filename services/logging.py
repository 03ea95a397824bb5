"""Logging for both processes: one format, and the request id on every line.

`text` is for people; `json` writes one JSON object per line for log pipelines. Structured
fields passed with `extra={"fields": {...}}` become keys of the JSON object (and `key=value`
pairs in text).
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import sys
import time
from typing import Any

import orjson

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def fingerprint(secret_ish: str) -> str:
    """Names a session in logs without writing its key (keys may carry user ids)."""
    return hashlib.blake2b(secret_ish.encode(), digest_size=6).hexdigest()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


class _TextFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__(
            f"%(asctime)s %(levelname)s {process} [%(request_id)s] %(name)s: %(message)s"
        )

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields: dict[str, Any] | None = getattr(record, "fields", None)
        if fields:
            line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
        return line


class _JsonFormatter(logging.Formatter):
    def __init__(self, process: str) -> None:
        super().__init__()
        self._process = process

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "process": self._process,
            "logger": record.name,
            "request_id": getattr(record, "request_id", "-"),
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", None) or {})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class _OneLineFailures(logging.Filter):
    """Libraries that log an expected failure with its traceback (asyncpg's pool, while the
    database is away) get one line: the exception's text, no stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()}: {type(error).__name__}: {error}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


ONE_LINE_LOGGERS = ("asyncpg.pool",)


def configure_logging(level: str = "info", process: str = "clawgate", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(_JsonFormatter(process) if fmt == "json" else _TextFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name in ONE_LINE_LOGGERS:
        logging.getLogger(name).addFilter(_OneLineFailures())
    root.setLevel(level.upper())
