"""Log lines for people and for log shippers (issue 19): the stderr handler's formatter.

`JOBRELAY_LOG_FORMAT=json` (`configure_logging`): one JSON object per line on stderr, with
timestamp, level, event, logger, and job_id/provider/upstream_id/request_id when known; the
default stays human-readable. Both formats redact the configured keys and tokens. Imports
nothing from jobrelay but `redact` (a leaf).
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Final

from mcp_server.redact import redact

__all__ = ["REQUEST_ID", "TEXT_FORMAT", "JsonFormatter", "configure_logging"]

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "jobrelay_request_id", default=None
)
"""The JSON-RPC id of the MCP request being handled (set by `_operations`), for log lines."""


_LOG_FIELDS: Final = ("job_id", "provider", "upstream_id", "request_id")
"""A record's `extra` names these (`upstream_id`: the provider's own id of a job, where the
line knows no jobrelay handle); `request_id` defaults to the MCP request being handled."""


class JsonFormatter(logging.Formatter):
    """One JSON object per record: timestamp (UTC, ISO 8601), level, event, logger, and
    job_id/provider/upstream_id/request_id when known (a record's `extra`, or the MCP request
    being handled); every text field is redacted of `secrets`."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._secrets = tuple(s for s in secrets if s)

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "event": self._clean(record.getMessage()),
            "logger": record.name,
        }
        for name in _LOG_FIELDS:
            value = getattr(record, name, None)
            if value is None and name == "request_id":
                value = REQUEST_ID.get()
            if value is not None:
                out[name] = self._clean(str(value))
        if record.exc_info:
            out["exception"] = self._clean(self.formatException(record.exc_info))
        return json.dumps(out, ensure_ascii=False, default=str)


class _RedactingFormatter(logging.Formatter):
    """The human-readable default, redacted of `secrets` too."""

    def __init__(self, fmt: str, secrets: Iterable[str]) -> None:
        super().__init__(fmt)
        self._secrets = tuple(s for s in secrets if s)

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record), self._secrets)


TEXT_FORMAT: Final = "%(levelname)s %(name)s: %(message)s"


def configure_logging(log_format: str, secrets: Iterable[str] = ()) -> None:
    """The root logger's stderr handler: `text` (the default) or `json`; both redact
    `secrets` (the configured keys and tokens)."""
    root = logging.getLogger()
    formatter: logging.Formatter
    if log_format == "json":
        formatter = JsonFormatter(secrets)
    else:
        formatter = _RedactingFormatter(TEXT_FORMAT, secrets)
    handlers: list[logging.Handler] = [
        h for h in root.handlers if getattr(h, "stream", None) is sys.stderr
    ]
    if not handlers:
        handlers.append(logging.StreamHandler(sys.stderr))
        root.addHandler(handlers[0])
    for handler in handlers:
        handler.setFormatter(formatter)
