"""Logging: JSON lines in containers (no terminal), readable lines on a terminal.

Messages never carry secrets: passwords live in `SecretStr` and in files, and the code
logs names and paths only.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

from rich.console import Console
from rich.logging import RichHandler


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            payload.update(extra)
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload)


def setup(
    level: int = logging.INFO,
    json_lines: bool | None = None,
    names: tuple[str, ...] = ("redisops",),
) -> None:
    """Configure the named loggers (default `redisops`); output goes to stderr."""
    if json_lines is None:
        json_lines = not sys.stderr.isatty()
    handler: logging.Handler
    if json_lines:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        handler = RichHandler(
            console=Console(stderr=True),
            show_path=False,
            show_level=False,
            markup=False,
            log_time_format="%H:%M:%S",
        )
    for name in names:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level)
        logger.propagate = False


def progress(logger_name: str = "redisops") -> logging.Logger:
    return logging.getLogger(logger_name)
