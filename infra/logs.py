"""Logging of every process: readable text or one JSON object per line, with
secrets redacted and repeated messages rate-limited.

:func:`configure_logging` is called once by the CLI (worker, API, tools).
Fields passed with ``extra=`` (``key``, ``partition``, ``offset``,
``registration``, ``outcome``, ...) become JSON members, or ``name=value``
pairs after a text line. Values of fields whose name looks like a secret
(token, password, secret, authorization, ...) and bearer tokens or JWTs inside
messages are replaced by ``[redacted]``.

An error loop (the broker down: thousands of identical errors a minute) is cut
by :class:`RateLimitingHandler`: per logger, level and message template at
most ``MASTERY_LOG_RATE_LIMIT`` lines per ``MASTERY_LOG_RATE_INTERVAL_S``; the
rest are counted and reported in one ``suppressed N similar messages`` line
when the window ends.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

from infra.settings import Settings

__all__ = [
    "JsonFormatter",
    "RateLimitingHandler",
    "TextFormatter",
    "configure_logging",
    "redact",
]

REDACTED = "[redacted]"

#: Attributes every LogRecord has; anything else on a record came from ``extra=``
#: (except uvicorn's ANSI-coloured copy of its message).
_STANDARD = frozenset(
    set(vars(logging.LogRecord("", 0, "", 0, "", (), None)))
    | {"message", "asctime", "color_message"}
)
_SECRET_NAME = re.compile(
    r"token|secret|password|passwd|authorization|api_?key|credential|cookie",
    re.IGNORECASE,
)
_SECRET_TEXT = re.compile(
    # bearer credentials, JWTs (three base64url parts, the first a JSON header),
    # and the password of a URL's user info.
    r"(?i:bearer)\s+[A-Za-z0-9._~+/=-]+"
    r"|eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
    r"|(?<=://)[^/@\s:]*:[^/@\s]+(?=@)"
)


def redact(text: str) -> str:
    """``text`` with bearer tokens, JWTs and URL passwords replaced."""
    return _SECRET_TEXT.sub(REDACTED, text)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, value in vars(record).items():
        if name in _STANDARD or name.startswith("_"):
            continue
        if _SECRET_NAME.search(name):
            fields[name] = REDACTED
        elif isinstance(value, str):
            fields[name] = redact(value)
        else:
            fields[name] = value
    return fields


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(
        timespec="milliseconds"
    )


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``timestamp``, ``level``, ``logger``, ``message``,
    the ``extra=`` fields, and ``exc_info`` (the traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "timestamp": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        entry |= _extras(record)
        if record.exc_info:
            entry["exc_info"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            entry["exc_info"] = redact(record.exc_text)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """``2026-01-01T00:00:00.000+00:00 INFO logger: message key=value ...``."""

    def format(self, record: logging.LogRecord) -> str:
        line = (
            f"{_timestamp(record)} {record.levelname} {record.name}: "
            f"{redact(record.getMessage())}"
        )
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        return line


class _Window:
    __slots__ = ("count", "example", "start", "suppressed")

    def __init__(self, start: float, example: logging.LogRecord) -> None:
        self.start = start
        self.count = 0
        self.suppressed = 0
        self.example = example


class RateLimitingHandler(logging.Handler):
    """Passes at most ``limit`` records per ``interval_s`` for each (logger,
    level, message template) to ``target``; counts the rest, and reports them in
    one line when their window has ended (at the next record of any kind, or
    when the handler is flushed or closed)."""

    def __init__(
        self,
        target: logging.Handler,
        *,
        limit: int,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.target = target
        self.limit = limit
        self.interval_s = interval_s
        self._clock = clock
        self._windows: dict[tuple[str, int, str], _Window] = {}
        self._guard = threading.Lock()
        self._next_sweep = 0.0

    def emit(self, record: logging.LogRecord) -> None:
        now = self._clock()
        key = (record.name, record.levelno, str(record.msg))
        with self._guard:
            summaries = self._expired(now)
            window = self._windows.get(key)
            if window is not None and now - window.start >= self.interval_s:
                del self._windows[key]  # ended since the last sweep
                if window.suppressed:
                    summaries.append(self._summary(window))
                window = None
            if window is None:
                window = self._windows[key] = _Window(now, record)
            window.count += 1
            passed = window.count <= self.limit
            if not passed:
                window.suppressed += 1
        for summary in summaries:
            self.target.handle(summary)
        if passed:
            self.target.handle(record)

    def _expired(self, now: float, *, force: bool = False) -> list[logging.LogRecord]:
        # Other keys' windows are swept at most once a second: a log call
        # stays O(1) however many distinct messages there are.
        if now < self._next_sweep and not force:
            return []
        self._next_sweep = now + min(1.0, self.interval_s)
        summaries = []
        for key, window in list(self._windows.items()):
            if now - window.start >= self.interval_s:
                del self._windows[key]
                if window.suppressed:
                    summaries.append(self._summary(window))
        return summaries

    def _summary(self, window: _Window) -> logging.LogRecord:
        example = window.example
        return logging.makeLogRecord(
            {
                "name": example.name,
                "levelno": example.levelno,
                "levelname": example.levelname,
                "msg": "suppressed %d similar messages in %.0f s: %s",
                "args": (window.suppressed, self.interval_s, str(example.msg)),
                "suppressed": window.suppressed,
            }
        )

    def flush(self) -> None:
        with self._guard:
            summaries = self._expired(float("inf"), force=True)
            self._next_sweep = 0.0
        for summary in summaries:
            self.target.handle(summary)
        self.target.flush()

    def close(self) -> None:
        self.flush()
        self.target.close()
        super().close()


def configure_logging(settings: Settings, *, stream: TextIO | None = None) -> None:
    """Install our handler on the root logger, replacing one installed before
    (other handlers, such as pytest's capture, are left alone)."""
    target = logging.StreamHandler(stream or sys.stderr)
    target.setFormatter(
        JsonFormatter() if settings.log_format == "json" else TextFormatter()
    )
    handler = RateLimitingHandler(
        target,
        limit=settings.log_rate_limit,
        interval_s=settings.log_rate_interval_s,
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if isinstance(old, RateLimitingHandler):
            root.removeHandler(old)
            old.close()
    root.addHandler(handler)
    root.setLevel(settings.log_level)
