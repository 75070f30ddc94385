"""Templating: a catalogue row and the facts of one situation become `Advice`.

Every placeholder any template uses gets a value here, so a template can never leak a literal
brace or "None". Time comes in as `now` (epoch seconds): the same input always yields the same
text. Waits are rounded up to whole seconds, with `retry_at = now + wait`.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

from mcp_server._duration import format_duration
from mcp_server.advice.facts import BLOCKED_SLACK, DEFAULT_CAUSE, Facts, http_text
from mcp_server.advice.registry import CATALOGUE, provider_advice, service_name
from mcp_server.advice.table import CatalogueRow
from mcp_server.models import Advice, ErrorCode
from mcp_server.upstream import format_clock, retry_at

__all__ = ["PASSED_UNTIL", "build", "context", "fmt_clock"]

PASSED_UNTIL: Final = " until the time the response states, which has already passed: retry now"


def fmt_clock(at: datetime, now: float) -> str:
    """`10:15:42Z` within a day (the "in N" beside it disambiguates), else with the date."""
    if at.timestamp() - now < 86400:
        return format_clock(at)
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


def _limit_note(row: CatalogueRow, facts: Facts, provider: str | None) -> str:
    """`(org-wide 60/min)`: the limit the response stated, never an assumed one."""
    if row.code is not ErrorCode.RATE_LIMITED:
        return ""
    table = provider_advice(provider)
    scope = table.limit_scope if table is not None else ""
    if facts.limit is None:
        return f" ({scope}, per endpoint)" if scope else ""
    return f" ({scope + ' ' if scope else ''}{facts.limit}/{_per(facts.window)})"


def _per(window: float | None) -> str:
    return "min" if window is None or window == 60 else f"{window:g} s"


def _wait_fragments(
    row: CatalogueRow, facts: Facts, now: float | None
) -> tuple[dict[str, str], float | None, datetime | None]:
    """`until`/`after`/`at` phrases, and the wait and time they state."""
    if now is None:  # the catalogue: no concrete time
        stated = " until the time the response states" if row.retryable else ""
        after = " after the stated wait" if row.retryable else ""
        return {"until": stated, "after": after, "at": " at the next UTC midnight"}, None, None
    if row.retryable and facts.passed and (facts.wait is None or facts.wait <= BLOCKED_SLACK):
        # Nothing left to wait for; 1 s keeps "retry_after_seconds >= 1" for every retry.
        phrases = {"until": PASSED_UNTIL, "after": " now (the stated time has passed)", "at": ""}
        return phrases, 1.0, retry_at(now, 1)
    wait = facts.wait if facts.wait is not None else row.default_wait
    if not row.retryable or wait is None:
        return {"until": "", "after": "", "at": ""}, None, None
    seconds = max(1, math.ceil(wait - 1e-9))
    at = retry_at(now, seconds)
    span = format_duration(seconds)
    if facts.wait is not None:
        clock = fmt_clock(at, now)
        phrases = {
            "until": f" until {clock} (in {span})",
            "after": f" after {clock} (in {span})",
            "at": f" at {clock} (in {span})",
        }
    else:
        clock = fmt_clock(at, now)
        phrases = {
            "until": f" for about {span}, until about {clock} (no reset time was given)",
            "after": f" after about {clock} (in about {span})",
            "at": f" at about {clock} (in about {span})",
        }
    return phrases, float(seconds), at


def _job_fragments(facts: Facts) -> dict[str, str]:
    """Tool calls written as calls (`get_job_result(job_id="sea_1")`) when the id is known."""
    job = facts.job_id
    if job:
        return {
            "job_name": f"job {job}",
            "job_quoted": f'"{job}"',
            "wait_call": f'wait_for_job(job_id="{job}")',
            "result_call": f'get_job_result(job_id="{job}")',
            "job_check": f'get_job_status(job_ids=["{job}"])',
        }
    return {
        "job_name": "the job",
        "job_quoted": "with that id",
        "wait_call": "wait_for_job with the job's job_id",
        "result_call": "get_job_result with the job's job_id",
        "job_check": 'list_jobs(state="unknown") to find the job',
    }


def _budget_fragments(facts: Facts) -> dict[str, str]:
    if facts.spent is not None and facts.credit_budget is not None:
        left = max(facts.credit_budget - facts.spent, 0)
        asked = f", and this needs {facts.requested}" if facts.requested is not None else ""
        state = f"{facts.spent} of {facts.credit_budget} credits are spent today{asked}"
        if left > 0:
            nxt = f"Call start_research again with at most {left} target{'s' if left != 1 else ''}."
        else:
            nxt = "Ask the user to raise JOBRELAY_CREDIT_BUDGET (it is spent for today)."
    else:
        state = "today's budget is used up"
        nxt = "Ask the user to raise JOBRELAY_CREDIT_BUDGET (it is spent for today)."
    return {"budget_state": state, "budget_next": nxt}


def context(
    row: CatalogueRow, facts: Facts, now: float | None
) -> tuple[dict[str, str], float | None, datetime | None]:
    """Every placeholder any template uses, filled for this situation."""
    provider = facts.provider if facts.provider is not None else row.provider
    service = service_name(provider)
    waits, seconds, at = _wait_fragments(row, facts, now)
    http = http_text(facts.http_status)
    rid = facts.request_id
    tool = facts.tool or row.default_tool
    detail = facts.details or facts.message
    raw_status = facts.raw_status or "unknown"
    cause = facts.cause or DEFAULT_CAUSE
    ctx: dict[str, str] = {
        "service": service,
        "Service": service[:1].upper() + service[1:],
        "http": http,
        "on_endpoint": f" on {facts.endpoint}" if facts.endpoint else "",
        "limit_note": _limit_note(row, facts, provider),
        "limit_inline": f", {facts.limit}/{_per(facts.window)}" if facts.limit else "",
        "tool_ref": tool or "the same tool",
        "request_note": f" (request_id {rid})" if rid else "",
        "attempts_note": f" after {facts.attempts} attempts" if facts.attempts > 1 else "",
        "support_note": (
            f"; if it persists, report request_id {rid} to {service} support" if rid else ""
        ),
        "detail": f": {detail}" if detail else "",
        "message_note": f" ({facts.message})" if facts.message else "",
        "credits_phrase": (
            f"has {facts.credits} research credits left"
            if facts.credits is not None
            else "does not have enough research credits"
        )
        + (
            f" and needs {facts.credits_needed} more for this request"
            if facts.credits_needed
            else ""
        ),
        "credits_note": (
            f", credits_remaining={facts.credits}" if facts.credits is not None else ""
        ),
        "raw_status": raw_status,
        "raw_status_quoted": f'"{raw_status}"',
        "job_error": facts.job_error or "no error details given",
        "bucket": (
            f"{facts.bucket} budget" if facts.bucket in {"workload", "control"} else facts.bucket
        )
        or "this endpoint",
        "cause": cause.format(http=http) if "{http}" in cause else cause,
        "cause_note": f" (last: {facts.cause})" if facts.cause else "",
        "code_quoted": f'"{facts.api_code}"' if facts.api_code else "given",
        "code": facts.api_code or "",
        "credits_left": (
            f" With {facts.credits} left, at most {facts.credits} target"
            f"{'s' if facts.credits != 1 else ''} can be researched now."
            if facts.credits
            else ""
        ),
        **waits,
        **_job_fragments(facts),
        **_budget_fragments(facts),
    }
    return ctx, seconds, at


def build(key: str, facts: Facts, now: float) -> Advice:
    row = CATALOGUE[key]
    ctx, seconds, at = context(row, facts, now)
    provider = facts.provider if facts.provider is not None else row.provider
    do_not = row.do_not.format_map(ctx) if row.do_not else None
    if do_not and ctx.get("until") == PASSED_UNTIL and "before then" in do_not:
        do_not = None  # the stated time has passed: there is no "before then" left
    return Advice(
        code=row.code,
        provider=provider,
        title=row.title,
        what_happened=row.what.format_map(ctx),
        retryable=row.retryable,
        retry_after_seconds=seconds,
        retry_at=at,
        next_step=row.next_step.format_map(ctx),
        do_not=do_not,
        http_status=facts.http_status,
        request_id=facts.request_id,
    )
