"""Structured logs: one JSON object per line on stderr.

Every record carries `ts`, `level`, `logger`, `msg`, `service`, and — when set in the current
context — `request_id` (set by the gRPC request-id interceptor) and `event_id` (set by the
Kafka consumer around each handled event, see `bind_event_id`). Anything passed with
`extra={...}` is added as further fields.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TextIO

__all__ = [
    "JsonFormatter",
    "bind_event_id",
    "bind_request_id",
    "configure_logging",
    "current_event_id",
    "current_request_id",
    "event_id_var",
    "request_id_var",
]

request_id_var: ContextVar[str | None] = ContextVar("langerhans_request_id", default=None)
event_id_var: ContextVar[str | None] = ContextVar("langerhans_event_id", default=None)

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_RESERVED = frozenset(
    vars(logging.LogRecord("", logging.INFO, "", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName"}
)


def current_request_id() -> str | None:
    return request_id_var.get()


def current_event_id() -> str | None:
    return event_id_var.get()


@contextmanager
def bind_request_id(request_id: str) -> Iterator[None]:
    """Tag every log record inside the block with `request_id`."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


@contextmanager
def bind_event_id(event_id: str) -> Iterator[None]:
    """Tag every log record inside the block with `event_id` (the CloudEvents `ce_id`)."""
    token = event_id_var.set(event_id)
    try:
        yield
    finally:
        event_id_var.reset(token)


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            "service": self.service,
        }
        request_id = request_id_var.get()
        if request_id is not None:
            entry["request_id"] = request_id
        event_id = event_id_var.get()
        if event_id is not None:
            entry["event_id"] = event_id
        for key, value in vars(record).items():
            if key not in _RESERVED and key not in entry:
                entry[key] = _jsonable(value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class _ContextTextFormatter(logging.Formatter):
    """Human-readable lines for a terminal, still showing the request and event ids."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        ids = [
            f"{name}={value}"
            for name, value in (
                ("request_id", request_id_var.get()),
                ("event_id", event_id_var.get()),
            )
            if value is not None
        ]
        return f"{line} [{' '.join(ids)}]" if ids else line


class _LangerhansHandler(logging.StreamHandler[TextIO]):
    """Marks the handler we installed so `configure_logging` can replace it (idempotent)."""


def configure_logging(
    settings: Any, *, stream: TextIO | None = None, level: str | None = None
) -> logging.Handler:
    """Install the process-wide log handler for `settings.service_name` and return it.

    Uses `settings.log_level` and `settings.log_json`. Calling it again replaces the handler.
    """
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _LangerhansHandler):
            root.removeHandler(handler)
    handler = _LangerhansHandler(stream if stream is not None else sys.stderr)
    if settings.log_json:
        handler.setFormatter(JsonFormatter(settings.service_name))
    else:
        handler.setFormatter(
            _ContextTextFormatter(
                f"%(asctime)s %(levelname)s {settings.service_name} %(name)s: %(message)s"
            )
        )
    root.addHandler(handler)
    root.setLevel((level or settings.log_level).upper())
    logging.captureWarnings(True)
    return handler
