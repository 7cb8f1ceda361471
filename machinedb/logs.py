"""Logging for the commands: readable lines by default, one JSON object per line on request."""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ALIASES = {"WARN": "WARNING", "FATAL": "CRITICAL"}  # what the logging module accepts too

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


# stomp.py's DEBUG frame dumps include the CONNECT frame's passcode in clear (its own
# redaction expects a space after the colon). Cut the record at the passcode: it is the last
# header of a CONNECT frame, and no delimiter is safe against every possible password.
_PASSCODE = re.compile(r"""(passcode['"]?:).*""", re.DOTALL)


class RedactPasscode(logging.Filter):
    """Replace everything from a ``passcode:`` header to the end of the record with ``***``."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "passcode" in message:
            record.msg, record.args = _PASSCODE.sub(r"\1 ***", message), ()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def parse_level(text: str) -> str:
    """``text`` as one of ``LEVELS`` (any case); ValueError with a one-line reason."""
    level = text.strip().upper()
    level = _ALIASES.get(level, level)
    if level not in LEVELS:
        raise ValueError(f"unknown log level {text!r} (one of {', '.join(LEVELS)})")
    return level


def setup(level: str = "INFO", json: bool = False) -> None:
    """Log to stderr at ``level`` (see ``parse_level``; ValueError for an unknown one)."""
    level = parse_level(level)
    handler = logging.StreamHandler(sys.stderr)
    if json:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # stomp.py logs every frame at INFO and each failed connection attempt as a
    # WARNING; both commands report a broker outage once themselves. Keep it for DEBUG.
    stomp_level = logging.DEBUG if root.level <= logging.DEBUG else logging.CRITICAL
    stomp_logger = logging.getLogger("stomp.py")
    stomp_logger.setLevel(stomp_level)
    if not any(isinstance(f, RedactPasscode) for f in stomp_logger.filters):
        stomp_logger.addFilter(RedactPasscode())
