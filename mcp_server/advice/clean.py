"""Untrusted text made safe to show an agent: one line, short, no markup, braces or credentials.

Everything an upstream or a paste supplies passes through here before it reaches a template:
messages are shortened, markup and tracebacks dropped, braces neutralised, epochs shown as times
and credentials redacted (with the one redaction set of `mcp_server.redact`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import cast

from mcp_server.redact import redact

__all__ = [
    "as_mapping",
    "clean_endpoint",
    "clean_job_status",
    "clean_status",
    "clean_text",
    "clean_token",
    "render_details",
    "scrub_status",
    "shown_status",
]

_SAFE_TOKEN = re.compile(r"^[A-Za-z0-9_.:/@+=-]{1,100}$")
_SAFE_STATUS = re.compile(r"^[A-Za-z0-9_.:/@+=-]+( [A-Za-z0-9_.:/@+=-]+){0,7}$")
_HTML = re.compile(r"<\s*/?\s*[A-Za-z!][^>]*>")
_EPOCH = re.compile(r"(?<![\w.])1\d{9}(?:\d{3})?(?![\w.])")
_MESSAGE_CHARS = 160
_DETAIL_ITEMS = 3


def _epoch_to_time(match: re.Match[str]) -> str:
    """An epoch inside upstream text is shown as a time, never as a bare number of seconds."""
    value = int(match.group(0))
    seconds = value / 1000 if value >= 10**12 else value
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def clean_text(value: object, secrets: Iterable[str], limit: int = _MESSAGE_CHARS) -> str | None:
    """Upstream prose made safe to show: one line, short, no markup, braces or credentials."""
    if not isinstance(value, str):
        return None
    text = " ".join(value.split())
    if not text or "traceback" in text.lower() or _HTML.search(text):
        return None
    if text.lower() in {"none", "null", "undefined"}:
        return None
    text = redact(text, secrets)
    text = text.replace("{", "(").replace("}", ")").replace("None", "none")
    text = _EPOCH.sub(_epoch_to_time, text)
    text = text.rstrip(" .")
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text or None


def clean_token(value: object, secrets: Iterable[str]) -> str | None:
    """A code, id or tool name: shown only when it looks like one and is not a credential."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not _SAFE_TOKEN.match(text) or text in {"None", "null"}:
        return None
    if any(secret in text for secret in secrets):
        return None
    return text


def clean_job_status(value: str, secrets: Iterable[str]) -> str | None:
    """A job status given to explain_error or found in a body, lower case; Seamless's have
    spaces (`not found`, `No license or credits available`), so words are kept."""
    return clean_status(value.strip().lower(), secrets)


def clean_status(value: str, secrets: Iterable[str]) -> str | None:
    """An upstream job status as sent (Seamless has some with spaces), when it looks like one."""
    text = " ".join(value.split())
    if not _SAFE_STATUS.match(text) or any(secret in text for secret in secrets):
        return None
    return text if len(text) <= _STATUS_CHARS else text[:_STATUS_CHARS] + "…"


_STATUS_CHARS = 60
"""Longest upstream status repeated to the agent; longer ones are cut and marked."""


def shown_status(value: str) -> str:
    """An upstream job status as it may be shown to an agent: sanitised and bounded."""
    return clean_status(value, ()) or scrub_status(value, ())


def scrub_status(value: str, secrets: Iterable[str]) -> str:
    """An unrecognised status as far as it is safe to show: characters outside the status
    alphabet become `?`, bounded; one holding a credential is not shown at all."""
    text = " ".join(re.sub(r"[^A-Za-z0-9_.:/@+= -]", "?", value).split())
    if not text or any(secret and secret in value for secret in secrets):
        return "unrecognised"
    return text if len(text) <= _STATUS_CHARS else text[:_STATUS_CHARS] + "…"


def clean_endpoint(method: str, path: str) -> str | None:
    """`GET /jobs/{id}` is shown as `GET /jobs/:id`: braces never reach the agent."""
    path = re.sub(r"\{(\w+)\}", r":\1", path.split("?", 1)[0]).strip()
    if not path or not re.match(r"^/[\w/.:~-]*$", path):
        return None
    return f"{method.upper()} {path}" if method else path


def render_details(details: object, secrets: Iterable[str]) -> str | None:
    """AgentSEO `details` as `field: message; ...` (zod-style `_errors` or flat dicts)."""
    items: list[str] = []
    secrets = tuple(secrets)

    def add(path: list[str], message: object) -> None:
        text = clean_text(message, secrets, 100)
        if text and len(items) < _DETAIL_ITEMS:
            where = ".".join(p for p in path if p)
            items.append(f"{where}: {text}" if where else text)

    def walk(path: list[str], node: object, depth: int) -> None:
        if depth > 6 or len(items) >= _DETAIL_ITEMS:
            return
        if isinstance(node, Mapping):
            field_name = node.get("field", node.get("path", node.get("loc")))
            if isinstance(node.get("message"), str) and field_name is not None:
                parts = field_name if isinstance(field_name, list | tuple) else [field_name]
                add([*path, *(str(p) for p in parts)], node["message"])
                return
            for key, value in node.items():
                name = str(key)
                if name == "_errors":
                    walk(path, value, depth + 1)
                elif name not in {"credits_remaining", "request_id", "retry_after_seconds"}:
                    clean = clean_token(name, secrets) or "?"
                    walk([*path, clean], value, depth + 1)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(path, value, depth + 1)
        elif isinstance(node, str):
            add(path, node)

    walk([], details, 0)
    return "; ".join(items) or None


def as_mapping(value: object) -> Mapping[str, object] | None:
    return cast(Mapping[str, object], value) if isinstance(value, Mapping) else None
