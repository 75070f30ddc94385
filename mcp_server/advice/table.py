"""The typed shapes of the advice data: one catalogue row, and what a provider contributes.

A provider's knowledge for advice is data of one shape, `ProviderAdvice`: its rows, the routes
that say which tool a failing call came from, the clues the pasted-input parser votes with, and
the readers of its bodies. The core (`registry`, `facts`, `parse`, `compose`) names no provider.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from mcp_server.models import ErrorCode

__all__ = ["BodyReading", "CatalogueRow", "ProviderAdvice", "Route", "VoteClues"]


@dataclass(frozen=True, slots=True)
class CatalogueRow:
    """One documented situation and the advice for it.

    Templates use `str.format_map` placeholders filled by `compose.context`; every placeholder
    has a value in every situation, so a template can never leak a literal brace or "None".
    """

    key: str
    """Stable id, e.g. `seamless.429`; used by tests and the catalogue resource."""
    provider: str | None
    """`None`: applies to any upstream (network, local limits, fallbacks)."""
    when: str
    """The situation, for the catalogue table: `HTTP 429`, `poll status researching`, ..."""
    meaning: str
    """What it means, one short phrase, for the catalogue table."""
    code: ErrorCode | None
    """The tool-error code; `None` for job outcomes (a result, not a tool failure)."""
    retryable: bool
    """Whether doing the same thing again (after the wait) can succeed."""
    title: str
    what: str
    next_step: str
    do_not: str | None = None
    statuses: tuple[int | str, ...] = ()
    """HTTP statuses (`429`) or classes (`"5xx"`, `"4xx"`, `"2xx"`) this row answers."""
    api_codes: tuple[str, ...] = ()
    """Upstream codes that select this row; a row without codes is its statuses' default."""
    status_default: bool = False
    """Also the advice for its statuses when the upstream code is absent or unknown."""
    job_statuses: tuple[str, ...] = ()
    """Raw job statuses (lower case); `failed/retryable` and `failed/permanent` split failures."""
    our_codes: tuple[ErrorCode, ...] = ()
    """jobrelay's own codes that land here when `explain_error` gets only a code."""
    default_wait: float | None = None
    """Seconds to suggest when retryable and the server stated no wait."""
    default_tool: str | None = None
    """The tool to name in the next step when the caller did not say which one failed."""


@dataclass(frozen=True, slots=True)
class Route:
    """Which MCP tool a failing upstream call came from: method and a path pattern."""

    method: str
    pattern: re.Pattern[str]
    tool: str


@dataclass(frozen=True, slots=True)
class BodyReading:
    """What a provider reads from a body beyond the common fields (code, message, ids)."""

    shape: int = 0
    """How surely this is the provider's own shape: 0 not at all; the highest reading wins."""
    credits: int | None = None
    """Credits left, when the body states them."""
    credits_needed: int | None = None
    """How many more credits the request needs, when the body states it."""
    budget: str | None = None
    """The rate budget that ran out, when the body names one (a key into `rate_budgets`)."""
    show_details: bool = True
    """Whether the body's `details` are worth showing to the agent (field: message; ...)."""


def _no_reading(_body: Mapping[str, object]) -> BodyReading:
    return BodyReading()


@dataclass(frozen=True, slots=True)
class VoteClues:
    """What in pasted input points to this provider when the caller did not say which."""

    header_prefixes: tuple[tuple[str, int], ...] = ()
    """(lower-case header-name prefix, weight); the first matching prefix counts per header."""
    http_statuses: frozenset[int] = frozenset()
    """HTTP statuses only this provider documents (one vote each)."""
    job_statuses: frozenset[str] = frozenset()
    """Job statuses (lower case) only this provider sends (two votes)."""
    code_style: re.Pattern[str] | None = None
    """The shape of this provider's error codes, for codes no row names (one vote)."""


@dataclass(frozen=True, slots=True)
class ProviderAdvice:
    """Everything advice knows about one provider, as data (issue 15 item 1).

    A provider declares its table as `JobProvider.advice` (the built-in ones in
    `providers/<name>/advice.py`), registered with the provider; `register_provider_advice`
    registers one on its own.
    """

    name: str
    """The provider's name as jobs and errors carry it, e.g. `seamless`."""
    service: str
    """How texts name it, e.g. `Seamless`."""
    rows: tuple[CatalogueRow, ...]
    """Its catalogue rows, in the order the catalogue resource lists them."""
    routes: tuple[Route, ...] = ()
    """Upstream method and path -> the MCP tool, for the next step."""
    paid_tools: frozenset[str] = frozenset()
    """Tools whose POST spends credits: an ambiguous failure there is `outcome_unknown`."""
    rate_budgets: Mapping[str, str] = field(default_factory=dict)
    """Tool -> the rate budget it draws on; a 429 then reads row `<name>.429.<budget>`."""
    limit_scope: str = ""
    """How its rate limits apply, for the 429 text, e.g. `org-wide` (then "per endpoint")."""
    clues: VoteClues = VoteClues()
    read_body: Callable[[Mapping[str, object]], BodyReading] = _no_reading
    """Reads a pasted body (decoded JSON object): its shape and provider-specific facts."""
    read_details: Callable[[Mapping[str, object]], BodyReading] = _no_reading
    """Reads the `details` an `UpstreamError` of this provider carries."""
