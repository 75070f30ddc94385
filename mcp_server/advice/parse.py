"""Pasted input for `explain_error`: headers, a response body (JSON or text), codes, a status.

The body is read once into `Body`: the common fields (code, message, request id, details, the
envelope's `retry_after_seconds`, a job item's status) here, and what only one provider sends
through its table's `read_body`. When the caller did not say which API it was, every registered
provider's clues vote (`detect_provider`); a tie is unknown.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final

from mcp_server.advice import registry
from mcp_server.advice.clean import as_mapping, clean_job_status, clean_text, clean_token
from mcp_server.advice.table import BodyReading
from mcp_server.coerce import as_number
from mcp_server.models import ErrorCode
from mcp_server.redact import SECRET_HEADERS
from mcp_server.upstream import error_fields

__all__ = ["Body", "detect_provider", "first_token", "parse_body", "secrets_of"]

#: jobrelay's own codes, exactly as the tools report them (`rate_limited`, ...).
_OUR_CODES: Final = frozenset(code.value for code in ErrorCode)
#: A body's shape counts this many votes for its provider.
_SHAPE_VOTES: Final = 3


@dataclass(slots=True)
class Body:
    """What a response body said, whichever API and shape it came in."""

    mapping: Mapping[str, object] | None = None
    code: str | None = None
    message: str | None = None
    request_id: str | None = None
    details: object = None
    retry_after: float | None = None
    credits: int | None = None
    credits_needed: int | None = None
    job_status: str | None = None
    job_error: Mapping[str, object] | None = None
    job_id: str | None = None
    budget: str | None = None
    shape: str | None = None
    """The provider whose shape the body has, if one claims it."""


def parse_body(body: str | Mapping[str, object] | None, secrets: tuple[str, ...]) -> Body:
    """An error envelope, a flat error, a job envelope or a poll result; garbage yields nothing."""
    data: object = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return Body()
    top = as_mapping(data)
    if top is None:
        return Body()
    parsed = Body(mapping=top)
    fields = error_fields(top)
    parsed.code = clean_token(fields.code, secrets)
    parsed.message = clean_text(fields.message, secrets)
    parsed.request_id = clean_token(fields.request_id, secrets)
    parsed.details = fields.details
    parsed.retry_after = as_number(fields.retry_after)
    _read_provider_parts(parsed, top)
    _parse_job(parsed, top, secrets)
    return parsed


def _read_provider_parts(parsed: Body, top: Mapping[str, object]) -> None:
    """Each provider's reading; the surest shape names the body's provider (first on a tie)."""
    best = 0
    for name in registry.provider_names():
        table = registry.provider_advice(name)
        reading = table.read_body(top) if table is not None else BodyReading()
        if reading.shape > best:
            best, parsed.shape = reading.shape, name
        parsed.credits = parsed.credits if parsed.credits is not None else reading.credits
        parsed.credits_needed = parsed.credits_needed or reading.credits_needed
        parsed.budget = parsed.budget or reading.budget


def _parse_job(parsed: Body, top: Mapping[str, object], secrets: tuple[str, ...]) -> None:
    """A job envelope or the first item of a poll result (a list under `data`)."""
    item = top
    rows = top.get("data")
    if isinstance(rows, list) and rows and (first := as_mapping(rows[0])) is not None:
        item = first
    status = item.get("status")
    if isinstance(status, str) and ("jobId" in item or "requestId" in item):
        parsed.job_status = clean_job_status(status, secrets)
        parsed.job_id = clean_token(item.get("jobId", item.get("requestId")), secrets)
        parsed.job_error = as_mapping(item.get("error"))
        if parsed.job_error is not None:  # a failed job's error is not an HTTP error body
            parsed.code = None
        if parsed.message is None:
            parsed.message = clean_text(item.get("message"), secrets)


def detect_provider(
    headers: Mapping[str, str],
    body: Body,
    code: str | None,
    status: int | None,
    job_status: str | None,
) -> str | None:
    """Votes from headers, body shape, code style, status and job status; a tie is unknown."""
    names = registry.provider_names()
    votes = dict.fromkeys(names, 0)
    owner = registry.code_owner(code) if code and code not in _OUR_CODES else None
    for name in names:
        table = registry.provider_advice(name)
        if table is None:
            continue
        clues = table.clues
        for header in headers:
            weight = next((w for p, w in clues.header_prefixes if header.startswith(p)), 0)
            votes[name] += weight
        if code and code not in _OUR_CODES:
            if owner == name:
                votes[name] += 3
            elif owner is None and clues.code_style is not None and clues.code_style.match(code):
                votes[name] += 1
        if status is not None and status in clues.http_statuses:
            votes[name] += 1
        if job_status is not None and job_status in clues.job_statuses:
            votes[name] += 2
    if body.shape in votes:
        votes[body.shape] += _SHAPE_VOTES
    ranked = sorted(votes.items(), key=lambda item: item[1], reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def secrets_of(lower_headers: Mapping[str, str]) -> tuple[str, ...]:
    """Credential values from the pasted headers (and their Bearer tokens): never shown."""
    found: list[str] = []
    for name, value in lower_headers.items():
        if name in SECRET_HEADERS or "key" in name or "secret" in name or "token" in name:
            for candidate in (value.strip(), re.sub(r"(?i)^bearer\s+", "", value.strip())):
                if len(candidate) >= 6 and candidate not in found:
                    found.append(candidate)
    return tuple(found)


def first_token(
    lower_headers: Mapping[str, str], names: Iterable[str], secrets: tuple[str, ...]
) -> str | None:
    """The first of `names` present in the headers, when it looks like an id."""
    for name in names:
        if name in lower_headers:
            return clean_token(lower_headers[name], secrets)
    return None
