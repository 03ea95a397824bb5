"""Logging for both processes: one format, and the request id on every line (and, while a
traced span is current, its `trace_id` and `span_id`).

`text` is for people; `json` writes one JSON object per line for log pipelines. Structured
fields passed with `extra={"fields": {...}}` become keys of the JSON object (and `key=value`
pairs in text).

Lines are written in batches: a record is kept, and what has gathered is formatted and written
with one write every `FLUSH_SECONDS`, when `BATCH` records wait, or at once for a warning or
worse: a write per line costs a system call per record, and a QueueHandler with a writer thread
costs more than that (the thread contends for the interpreter on every record).
"""

from __future__ import annotations

import atexit
import contextvars
import hashlib
import logging
import sys
import threading
import time
from typing import Any, TextIO

import orjson

from services.tracing import trace_ids

request_id_var: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="-")


def fingerprint(secret_ish: str) -> str:
    """Names a session in logs without writing its key (keys may carry user ids)."""
    return hashlib.blake2b(secret_ish.encode(), digest_size=6).hexdigest()


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        # Taken here, while the span is current: the line is formatted later, in a batch.
        ids = trace_ids()
        if ids is not None:
            record.trace_id, record.span_id = ids
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
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            line += f" trace_id={trace_id} span_id={getattr(record, 'span_id', '')}"
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
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", "")
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


FLUSH_SECONDS = 0.2
BATCH = 256


class _BatchedWriter(logging.Handler):
    def __init__(self, stream: TextIO) -> None:
        super().__init__()
        self._stream = stream
        self._waiting: list[logging.LogRecord] = []
        self._stop = threading.Event()
        self._timer = threading.Thread(target=self._flush_often, name="log-writer", daemon=True)
        self._timer.start()

    def emit(self, record: logging.LogRecord) -> None:
        self._waiting.append(record)  # under the handler's lock, as flush is
        if record.levelno >= logging.WARNING or len(self._waiting) >= BATCH:
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            waiting, self._waiting = self._waiting, []
            if not waiting:
                return
            lines = []
            for record in waiting:
                try:
                    lines.append(self.format(record))
                except Exception:
                    self.handleError(record)
            try:
                self._stream.write("\n".join(lines) + "\n")
                self._stream.flush()
            except (OSError, ValueError):  # stderr closed: nothing to tell
                pass

    def _flush_often(self) -> None:
        while not self._stop.wait(FLUSH_SECONDS):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self.flush()
        super().close()


def configure_logging(level: str = "info", process: str = "clawgate", fmt: str = "text") -> None:
    root = logging.getLogger()
    for old in root.handlers:
        old.close()
    handler = _BatchedWriter(sys.stderr)
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(_JsonFormatter(process) if fmt == "json" else _TextFormatter(process))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    for name in ONE_LINE_LOGGERS:
        logging.getLogger(name).addFilter(_OneLineFailures())
    root.setLevel(level.upper())


def flush_logs() -> None:
    """Writes what is waiting now: for a process about to end without running atexit (uvicorn
    ends the edge by raising the signal it caught again, with its default action)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


atexit.register(flush_logs)
