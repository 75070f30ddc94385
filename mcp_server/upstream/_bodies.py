"""Where the fields of an upstream error body are: the one reader of both APIs' error shapes.

Seamless: `{"message"}` (401, 500), `{"code", "msg", "data"}` (422), `{"code", "message"}` (429).
AgentSEO: `{"error": {"code", "message", "details", "request_id"}}`, `retry_after_seconds` at
the top or inside `error`. The values come back as sent (unsanitised): the sender shortens and
redacts them for its exceptions, advice cleans them for agents, each with its own limits.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

__all__ = ["ErrorFields", "decode_json", "error_fields", "scalar_text"]


def decode_json(raw: bytes) -> Any:
    """JSON or `ValueError`; bytes are decoded leniently so a stray byte is not a crash."""
    return json.loads(raw.decode("utf-8", errors="replace"))


def scalar_text(value: object) -> str | None:
    """A code/message/id from a body, only if it is a plain string or number."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        text = str(value).strip()
        return text or None
    return None


def _first(*candidates: object) -> object:
    """The first candidate that is a usable scalar (see `scalar_text`), as sent."""
    return next((c for c in candidates if scalar_text(c) is not None), None)


@dataclass(frozen=True, slots=True)
class ErrorFields:
    """The fields of one error body, as sent; `None` where the body has none."""

    code: object = None
    message: object = None
    request_id: object = None
    details: object = None
    """`details` of the `error` object, else of the body."""
    data: object = None
    """The body's `data` (Seamless 422: `{productCategory, additionalCreditsNeeded}`)."""
    retry_after: object = None
    """`retry_after_seconds` at the top, else inside the `error` object."""


def error_fields(body: Mapping[str, object]) -> ErrorFields:
    """Read both APIs' error shapes from a decoded JSON object; never raises."""
    nested = body.get("error")
    inner = cast(Mapping[str, object], nested) if isinstance(nested, Mapping) else {}
    return ErrorFields(
        code=_first(inner.get("code"), body.get("code")),
        message=_first(
            inner.get("message"),
            inner.get("msg"),
            body.get("msg"),
            body.get("message"),
            nested,  # {"error": "Unauthorized"}
        ),
        request_id=_first(inner.get("request_id"), body.get("request_id"), body.get("requestId")),
        details=inner.get("details", body.get("details")),
        data=body.get("data"),
        retry_after=(
            body["retry_after_seconds"]
            if "retry_after_seconds" in body
            else inner.get("retry_after_seconds")
        ),
    )
