"""Facts: everything known about one situation, and how an exception is read into them.

A situation is a catalogue row key plus `Facts`; `compose.build` turns the pair into `Advice`.
Readers here take an exception from the clients, the ledger or the limiter; `parse.py` reads
pasted input. Every value is sanitised on the way in (`clean.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final, cast

from mcp_server.advice import registry
from mcp_server.advice.clean import clean_endpoint, clean_text, clean_token, render_details
from mcp_server.advice.table import BodyReading
from mcp_server.errors import (
    AbsurdAnswer,
    BadResponse,
    BudgetExceeded,
    DeadlineExceeded,
    JobRelayError,
    LocalBusy,
    LocalRateLimited,
    MalformedResponse,
    NoResponse,
    OutcomeUnknown,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    RetryBudgetExhausted,
    ServerError,
    UnknownJob,
    UpstreamError,
    not_before,
)
from mcp_server.models import ErrorCode
from mcp_server.upstream import RateLimitHints

__all__ = [
    "BLOCKED_SLACK",
    "DEFAULT_CAUSE",
    "Facts",
    "apply_hints",
    "http_text",
    "merge_wait",
    "read_error",
    "refined_code",
]


@dataclass(slots=True)
class Facts:
    """Everything known about one situation, already sanitised."""

    provider: str | None = None
    http_status: int | None = None
    api_code: str | None = None
    message: str | None = None
    details: str | None = None
    request_id: str | None = None
    wait: float | None = None
    """A stated "not before", seconds from `now` (server hint or jobrelay's own)."""
    limit: int | None = None
    window: float | None = None
    credits: int | None = None
    credits_needed: int | None = None
    """How many more credits the request needs (Seamless 422 `additionalCreditsNeeded`)."""
    endpoint: str | None = None
    tool: str | None = None
    attempts: int = 1
    job_id: str | None = None
    raw_status: str | None = None
    job_error: str | None = None
    budget: str | None = None
    bucket: str | None = None
    cause: str | None = None
    spent: int | None = None
    credit_budget: int | None = None
    requested: int | None = None
    secrets: tuple[str, ...] = field(default_factory=tuple)
    passed: bool = False
    """The response's reset/retry time lies in the past: nothing is left to wait for."""


#: A wait this short after a past reset is the 429 floor, not a stated wait.
BLOCKED_SLACK: Final = 1.0
DEFAULT_CAUSE: Final = "the submission failed after it was sent"

#: How an ambiguous failure on a credit-spending POST is described, by its cause's class.
_CAUSE_PHRASES: Final[tuple[tuple[type[JobRelayError], str], ...]] = (
    (DeadlineExceeded, "it did not answer within the call's time limit"),
    (ResponseLost, "the connection broke after the request was sent"),
    (MalformedResponse, "its reply could not be read"),
    (ServerError, "it answered {http} after receiving the request"),
)


def http_text(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "an error response"


def merge_wait(current: float | None, new: float | None) -> float | None:
    """All hints mean "not before": take the max; a day or more is a misparse, ignored."""
    if new is None or not math.isfinite(new) or new < 0 or new >= 86400:
        return current
    return new if current is None else max(current, new)


def apply_hints(facts: Facts, hints: RateLimitHints, status: int | None) -> None:
    """The server's "not before" (RETRY_POLICY.md section B.4-5), limit and credits."""
    found = not_before(hints, used_up=status == 429)  # a 429 binds even without hints.status
    wait = found.seconds if found is not None else None
    facts.wait = merge_wait(facts.wait, wait)
    facts.passed = facts.passed or (hints.passed and not (wait and wait > BLOCKED_SLACK))
    facts.limit = hints.limit if hints.limit is not None and hints.limit > 0 else facts.limit
    facts.window = hints.window if hints.window and hints.window > 0 else facts.window
    if hints.credits is not None and hints.credits >= 0:
        facts.credits = hints.credits


def refined_code(code: str | None, details: object) -> str | None:
    """A generic code (`FORBIDDEN`, or none) refined by `details.reason` when the body gives
    one: AgentSEO says "no_active_license" or "allowed_domain_policy" only there."""
    reason = details.get("reason") if isinstance(details, Mapping) else None
    if isinstance(reason, str) and reason and (not code or registry.norm_code(code) == "forbidden"):
        return reason
    return code


def _facts_from_upstream(error: UpstreamError, tool: str | None) -> tuple[Facts, str | None]:
    route_tool = registry.route(error.provider, error.method, error.path)
    facts = Facts(
        provider=error.provider,
        endpoint=clean_endpoint(error.method, error.path),
        tool=tool or route_tool,
        attempts=max(1, error.attempts),
    )
    if isinstance(error, BadResponse):
        facts.http_status = error.status
        facts.api_code = clean_token(refined_code(error.api_code, error.details), ())
        facts.request_id = clean_token(error.request_id, ())
        table = registry.provider_advice(error.provider)
        reading = table.read_details(error.details) if table is not None else BodyReading()
        facts.credits_needed = reading.credits_needed
        if reading.show_details:
            facts.details = render_details(error.details, ())
        facts.message = clean_text(error.message, ()) if not facts.details else None
        facts.credits = reading.credits
        apply_hints(facts, error.hints, error.status)
    return facts, route_tool


def _cause_phrase(cause: UpstreamError | None) -> str:
    if isinstance(cause, AbsurdAnswer):
        return (
            f"it answered with {cause.count:,} request ids for {cause.expected} target(s), "
            "which cannot be true (a protocol error; the first "
            f"{len(cause.sample):,} are kept in the job for inspection)"
        )
    for cls, phrase in _CAUSE_PHRASES:
        if isinstance(cause, cls):
            return phrase
    return DEFAULT_CAUSE


def _outcome_key(provider: str | None) -> str:
    key = f"outcome_unknown.{provider}"
    return key if provider and key in registry.CATALOGUE else "outcome_unknown"


def _from_upstream(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    upstream = cast(UpstreamError, error)
    facts, route = _facts_from_upstream(upstream, tool)
    spends = (
        upstream.paid if upstream.paid is not None else registry.paid_tool(upstream.provider, route)
    )
    ambiguous = isinstance(upstream, ResponseLost | ServerError | MalformedResponse)
    if spends and ambiguous and not isinstance(upstream, RequestNotSent):
        facts.cause = _cause_phrase(upstream)
        facts.wait = None
        return _outcome_key(upstream.provider), facts
    if isinstance(upstream, MalformedResponse):
        return "malformed", facts
    if isinstance(upstream, RequestNotSent):
        return "network.not_sent", facts
    if isinstance(upstream, DeadlineExceeded):
        facts.wait = merge_wait(None, upstream.retry_after)
        return "network.deadline", facts
    if isinstance(upstream, NoResponse):
        return "network.lost", facts
    if isinstance(upstream, BadResponse):
        if isinstance(upstream, RateLimited) and (
            key := registry.rate_key(facts.provider, facts.budget, route)
        ):
            return key, facts
        code = refined_code(upstream.api_code, upstream.details)
        return registry.http_key(upstream.provider, upstream.status, code), facts
    return registry.code_key(upstream.provider, upstream.code.value) or "generic.5xx", facts


def _from_outcome_unknown(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    unknown = cast(OutcomeUnknown, error)
    facts, _ = _facts_from_upstream(unknown.cause, tool)
    facts.cause = _cause_phrase(unknown.cause)
    facts.wait = None
    facts.job_id = clean_token(getattr(unknown, "job_id", None), ())
    return _outcome_key(unknown.provider), facts


def _from_local(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    local = cast(LocalRateLimited, error)
    bucket = clean_endpoint(*local.bucket.split(" ", 1)) if " " in local.bucket else None
    facts = Facts(
        provider=local.provider,
        tool=tool,
        bucket=bucket or clean_token(local.bucket, ()),
        wait=merge_wait(None, local.retry_after),
    )
    return ("local_busy" if isinstance(local, LocalBusy) else "local_rate_limited"), facts


def _from_degraded(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    degraded = cast(RetryBudgetExhausted, error)
    cause = degraded.cause
    facts = Facts(provider=degraded.provider, tool=tool)
    if cause is not None:
        facts.tool = tool or registry.route(cause.provider, cause.method, cause.path)
        if isinstance(cause, BadResponse):
            facts.cause = http_text(cause.status)
        elif isinstance(cause, NoResponse):
            facts.cause = "no response"
    facts.wait = merge_wait(None, degraded.retry_after)
    return "upstream_degraded", facts


def _from_unknown_job(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    job = cast(UnknownJob, error)
    return "unknown_job", Facts(tool=tool, job_id=clean_token(job.job_id, ()))


#: Exception class -> how to read it; the first matching class wins (most specific first).
_ERROR_READERS: Final[
    tuple[tuple[type[JobRelayError], Callable[[JobRelayError, str | None], tuple[str, Facts]]], ...]
] = (
    (OutcomeUnknown, _from_outcome_unknown),
    (UpstreamError, _from_upstream),
    (LocalRateLimited, _from_local),
    (RetryBudgetExhausted, _from_degraded),
    (UnknownJob, _from_unknown_job),
)


def _from_budget(budget: BudgetExceeded, tool: str | None, now: float) -> Facts:
    midnight = (math.floor(now / 86400) + 1) * 86400
    return Facts(
        provider=budget.provider,
        tool=tool or "start_research",
        spent=budget.spent,
        credit_budget=budget.budget,
        requested=budget.requested,
        wait=float(midnight - math.ceil(now)),  # lands exactly on midnight when rounded up
    )


def _from_other(error: JobRelayError, tool: str | None) -> tuple[str, Facts]:
    facts = Facts(provider=error.provider, tool=tool)
    if error.code is ErrorCode.INVALID_INPUT:  # validated locally, e.g. an unknown workflow
        facts.message = clean_text(error.message, ())
        allowed = getattr(error, "allowed", ())
        if isinstance(allowed, tuple | list) and allowed:
            shown = ", ".join(t for a in allowed[:12] if (t := clean_token(a, ())))
            facts.message = f"{facts.message or 'invalid value'} (allowed: {shown})"
        return "invalid_arguments", facts
    return registry.code_key(error.provider, error.code.value) or "generic.5xx", facts


def read_error(
    error: JobRelayError, tool: str | None, now: float, *, job_id: str | None = None
) -> tuple[str, Facts, float]:
    """The row key and facts for an exception, and the `now` to word it at.

    `tool` is already sanitised; `job_id`, when given, is the handle an upstream failure
    belongs to (it replaces the one read from the error). The breaker's instant is fixed:
    every rendering of a `RetryBudgetExhausted` with `until`, whenever it happens, names the
    same retry_at (whole seconds from a whole-second `now`).
    """
    if isinstance(error, BudgetExceeded):
        return "budget_exceeded", _from_budget(error, tool, now), now
    for cls, reader in _ERROR_READERS:
        if isinstance(error, cls):
            key, facts = reader(error, tool)
            facts.job_id = job_id or facts.job_id
            if isinstance(error, RetryBudgetExhausted) and error.until is not None:
                whole = math.floor(now)
                facts.wait = max(1.0, error.until - whole)
                return key, facts, whole
            return key, facts, now
    key, facts = _from_other(error, tool)
    return key, facts, now
