"""One log format for every safewatch process: JSON lines when not on a terminal, readable on one.

Every record carries the same keys (`ts`, `level`, `service`, `logger`, `msg`, plus any
`extra={...}` fields), so the worker's, the alert service's and the gateway's logs can be
read by one tool. Nothing writes terminal escape codes into a log file.
"""

from __future__ import annotations

import datetime as dt
import logging
import sys
from typing import IO

import orjson

# Attributes every LogRecord has; anything else on a record came from `extra=` and is logged.
_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime", "service"}
# Libraries that are chatty at INFO; their warnings and errors still come through.
_QUIET = ("faust", "mode", "aiokafka", "kafka", "httpx", "httpcore", "uvicorn.access")


class JsonFormatter(logging.Formatter):
    """A record as one JSON object per line."""

    def __init__(self, service: str):
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()


class TextFormatter(logging.Formatter):
    """Readable lines for a person at a terminal, with the same fields."""

    def __init__(self, service: str):
        super().__init__("%(asctime)s %(levelname)-7s " + service + " %(name)s: %(message)s", "%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extra = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        return line + ("  " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")


def setup_logging(service: str, level: str | int = "info", stream: IO[str] | None = None) -> None:
    """Send every log record of this process to `stream` (stderr) in the one format."""
    stream = stream or sys.stderr
    handler = logging.StreamHandler(stream)
    handler.setFormatter(TextFormatter(service) if stream.isatty() else JsonFormatter(service))
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    if root.level > logging.DEBUG:
        for name in _QUIET:
            logging.getLogger(name).setLevel(logging.WARNING)
