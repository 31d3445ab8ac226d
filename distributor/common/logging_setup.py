"""The process's log: one line per event, in logfmt (as Tempo and the rest of the Grafana stack write it)
or JSON, with Tempo's level names; and a rate limit for lines that clients can cause at will.

A line carries `level`, `ts` (UTC, milliseconds), `caller` (file:line), `msg`, then the event's own
fields, given as `log.info("request refused", extra=fields(tenant="acme", status=429))`:

    level=info ts=2026-11-29T05:15:36.791Z caller=service.py:236 msg="distributor ready" server=...
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

# Tempo's names (its -log.level takes debug, info, warn, error); `warning` is Python's, also accepted.
LOG_LEVELS: Mapping[str, int] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
TEMPO_LOG_LEVELS = ("debug", "info", "warn", "error")
LOG_FORMATS = ("logfmt", "json")
DEFAULT_LOG_LEVEL = "info"
DEFAULT_LOG_FORMAT = "logfmt"
# Libraries that log at debug level about their own workings (asyncio's selector, grpc's polling,
# aiohttp's access lines): held at warn even under `debug`, so debug shows this service's own lines.
LIBRARY_LOGGERS = ("asyncio", "grpc", "aiohttp", "urllib3", "hpack", "h2")
# The attribute of a LogRecord holding its fields (set through `extra=fields(...)`).
FIELDS_ATTRIBUTE = "log_fields"
_LEVEL_NAMES = {
    logging.DEBUG: "debug",
    logging.INFO: "info",
    logging.WARNING: "warn",
    logging.ERROR: "error",
    logging.CRITICAL: "error",
}


def fields(**values: object) -> dict[str, object]:
    """The `extra` argument of a logging call that adds key=value fields to its line."""
    return {FIELDS_ATTRIBUTE: values}


def level_name(levelno: int) -> str:
    """Tempo's name of a level (`warn`, not `warning`)."""
    return _LEVEL_NAMES.get(levelno) or logging.getLevelName(levelno).lower()


def parse_log_level(name: str) -> int:
    """The logging level of a name (debug, info, warn, warning, error; any case); ValueError otherwise."""
    try:
        return LOG_LEVELS[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown log level {name!r}: use debug, info, warn or error") from None


def parse_log_format(name: str) -> str:
    normalized = name.strip().lower()
    if normalized not in LOG_FORMATS:
        raise ValueError(f"unknown log format {name!r}: use {' or '.join(LOG_FORMATS)}")
    return normalized


def record_items(record: logging.LogRecord, formatter: logging.Formatter) -> list[tuple[str, object]]:
    """The key/value pairs of one line, in order: level, ts, caller, msg, the event's fields, then the
    exception or stack if any."""
    moment = datetime.fromtimestamp(record.created, UTC)
    items: list[tuple[str, object]] = [
        ("level", level_name(record.levelno)),
        ("ts", f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"),
        ("caller", f"{record.filename}:{record.lineno}"),
        ("msg", record.getMessage()),
    ]
    if not record.name.startswith("distributor"):
        items.append(("logger", record.name))  # a library's line: say whose
    extra = getattr(record, FIELDS_ATTRIBUTE, None)
    if isinstance(extra, Mapping):
        reserved = {key for key, _ in items}
        items.extend((str(key), value) for key, value in extra.items() if key not in reserved)
    if record.exc_info:
        items.append(("err", formatter.formatException(record.exc_info)))
    elif record.exc_text:
        items.append(("err", record.exc_text))
    if record.stack_info:
        items.append(("stack", formatter.formatStack(record.stack_info)))
    return items


class LogfmtFormatter(logging.Formatter):
    """`key=value` pairs separated by spaces; a value is quoted (with Go's escapes) when it holds a
    space, `=`, `"`, a control character or is not valid text, as go-logfmt does."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(
            f"{_logfmt_key(key)}={_logfmt_value(value)}" for key, value in record_items(record, self)
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per line, the same keys as logfmt."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, object] = {}
        for key, value in record_items(record, self):
            document[key] = (
                value if isinstance(value, (str, int, float, bool)) or value is None else str(value)
            )
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"), default=str)


def _logfmt_key(key: str) -> str:
    cleaned = "".join("_" if c <= " " or c in '="' else c for c in key)
    return cleaned or "_"


def _logfmt_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if any(c <= " " or c in '="\\' or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        return _quoted(text)
    return text


_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _quoted(text: str) -> str:
    out = ['"']
    for c in text:
        escaped = _ESCAPES.get(c)
        if escaped is not None:
            out.append(escaped)
        elif c < " " or c == "\x7f" or 0xD800 <= ord(c) <= 0xDFFF:
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if parse_log_format(log_format) == "json" else LogfmtFormatter()


def configure_logging(
    level: str = DEFAULT_LOG_LEVEL,
    log_format: str = DEFAULT_LOG_FORMAT,
    stream: TextIO | None = None,
    quiet_libraries: bool = True,
) -> None:
    """Send every log line to `stream` (stderr) in `log_format`, at `level` and above. The libraries'
    loggers stay at warn unless `quiet_libraries` is false. Called again, it replaces what it set."""
    levelno = parse_log_level(level)
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(formatter_for(log_format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_distributor_handler", False)]:
        root.removeHandler(old)
    handler._distributor_handler = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(levelno)
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(max(levelno, logging.WARNING) if quiet_libraries else logging.NOTSET)


class LimitedLog:
    """Lines that clients can cause at will (refused requests) or that repeat while a backend is down
    (retries), at most `limit` per reason in each `window` seconds: past that, a reason's lines are
    counted, not written, and the first line of that reason in a later window is preceded by one line
    saying how many were left out. An attack can then add at most `limit` + 1 lines per reason and
    window, however fast it sends."""

    def __init__(
        self,
        logger: logging.Logger,
        limit: int = 10,
        window: float = 60.0,
        clock: Callable[[], float] | None = None,
        on_suppressed: Callable[[str], None] | None = None,
    ) -> None:
        self._logger = logger
        self._limit = limit
        self._window = window
        self._clock = clock or time.monotonic
        self._on_suppressed = on_suppressed
        self._windows: dict[str, list[float]] = {}  # reason -> [window start, lines written, suppressed]
        self._lock = threading.Lock()  # forwarder and receiver lines come from the loop; tests, threads

    def log(self, level: int, reason: str, message: str, *args: Any, **extra_fields: object) -> bool:
        """Write the line unless its reason has had `limit` lines in the current window; True if
        written. `reason` is added to the line's fields."""
        if not self._logger.isEnabledFor(level):
            return False
        now = self._clock()
        with self._lock:
            state = self._windows.get(reason)
            left_out = 0
            if state is None or now - state[0] >= self._window:
                left_out = int(state[2]) if state is not None else 0
                state = self._windows[reason] = [now, 0, 0]
            if state[1] >= self._limit:
                state[2] += 1
                if self._on_suppressed is not None:
                    self._on_suppressed(reason)
                return False
            state[1] += 1
        if left_out:
            self._logger.log(
                level,
                "%d more lines of reason %s were left out in the previous %ds (at most %d per reason)",
                left_out,
                reason,
                round(self._window),
                self._limit,
                extra=fields(reason=reason, suppressed=left_out),
                stacklevel=2,
            )
        self._logger.log(level, message, *args, extra=fields(reason=reason, **extra_fields), stacklevel=2)
        return True
