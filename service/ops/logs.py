"""Logs: one JSON object per line, each tied to the request it belongs to.

A log line never identifies a patient nor carries health data: the access line
names the route template (``/fhir/{resource_type}/{id}``), never the path or the
query string, which may hold an INS or a name; bodies are never logged.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import orjson

REQUEST_ID: ContextVar[str | None] = ContextVar("carnet_request_id", default=None)
"""The id of the request being served, for every line logged while serving it."""

_HANDLER_NAME = "carnet"
_QUIET = ("httpx", "httpcore", "botocore", "boto3", "s3transfer", "aiosqlite", "asyncio")


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "logger", "message", "request_id", ...fields}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


class TextFormatter(logging.Formatter):
    """For a terminal: the same facts, as ``key=value`` after the message."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = dict(getattr(record, "fields", None) or {})
        request_id = getattr(record, "request_id", None)
        if request_id:
            extras["request_id"] = request_id
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return line


def _stamped(factory: Callable[..., logging.LogRecord]) -> Callable[..., logging.LogRecord]:
    """Records remember the request they were made in, whenever they are formatted."""

    def make(*args: Any, **kwargs: Any) -> logging.LogRecord:
        made = factory(*args, **kwargs)
        made.request_id = REQUEST_ID.get()
        return made

    make.carnet_stamped = True  # type: ignore[attr-defined]
    return make


def configure_logging(level: str, log_format: str) -> None:
    """One handler on the root logger (stderr); uvicorn's loggers flow into it.

    Idempotent: each uvicorn worker calls it again when it builds its app.
    """
    if not getattr(logging.getLogRecordFactory(), "carnet_stamped", False):
        logging.setLogRecordFactory(_stamped(logging.getLogRecordFactory()))
    root = logging.getLogger()
    for handler in list(root.handlers):
        if handler.get_name() == _HANDLER_NAME:
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # httpx logs every URL it calls at INFO: the portal's in-process FHIR searches carry an
    # INS in their query string, webhook URLs are the apps' own.
    for name in _QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def _utc(created: float) -> str:
    seconds = int(created)
    return (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
            + f".{int((created - seconds) * 1000):03d}Z")
