"""Seamless.ai's advice table: its rows, routes, vote clues and body readers.

Registered with the provider (`SeamlessProvider.advice`, by `providers.registry`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

from mcp_server.advice.catalogue import RATE_DO_NOT, SERVER_DO_NOT
from mcp_server.advice.clean import as_mapping
from mcp_server.advice.table import BodyReading, CatalogueRow, ProviderAdvice, Route, VoteClues
from mcp_server.coerce import as_number
from mcp_server.models import ErrorCode

__all__ = ["SEAMLESS"]

_r = CatalogueRow  # short name: the rows below read as a table

_ROWS: Final[tuple[CatalogueRow, ...]] = (
    # ---------------------------------------------------------------- Seamless HTTP errors
    _r(
        key="seamless.400",
        provider="seamless",
        when="HTTP 400",
        meaning="invalid or missing parameters",
        code=ErrorCode.INVALID_INPUT,
        retryable=False,
        title="Invalid Seamless request",
        what="Seamless rejected the request as invalid (HTTP 400){detail}.",
        next_step=(
            "Fix the arguments and call {tool_ref} again (searchResultIds come from "
            "search_prospects, requestIds from start_research)."
        ),
        do_not="Do not retry unchanged: it fails the same way.",
        statuses=(400,),
    ),
    _r(
        key="seamless.401",
        provider="seamless",
        when="HTTP 401",
        meaning="API key or token missing, invalid, expired or revoked",
        code=ErrorCode.AUTH_FAILED,
        retryable=False,
        title="Seamless authentication failed",
        what=(
            "Seamless rejected the API key (HTTP 401): it is missing, invalid, expired or revoked."
        ),
        next_step=(
            "Ask the user to set a valid SEAMLESS_API_KEY (sent as the Token header) "
            "and restart jobrelay."
        ),
        do_not="Do not retry: every Seamless call fails until the key is fixed.",
        statuses=(401,),
        our_codes=(ErrorCode.AUTH_FAILED,),
    ),
    _r(
        key="seamless.403.insufficientScope",
        provider="seamless",
        when="HTTP 403",
        meaning="OAuth connection lacks scope publicAPI.v1.all",
        code=ErrorCode.PERMISSION_DENIED,
        retryable=False,
        title="Seamless scope missing",
        what=(
            "Seamless refused access (HTTP 403 insufficientScope): the OAuth connection "
            "lacks the scope publicAPI.v1.all."
        ),
        next_step=(
            "Ask the user to re-authorize the Seamless connection with the scope publicAPI.v1.all."
        ),
        do_not="Do not retry until it is re-authorized: it fails the same way.",
        statuses=(403,),
        api_codes=("insufficientScope",),
        our_codes=(ErrorCode.PERMISSION_DENIED,),
    ),
    _r(
        key="seamless.404",
        provider="seamless",
        when="HTTP 404",
        meaning="wrong URL, path or id",
        code=ErrorCode.NOT_FOUND,
        retryable=False,
        title="Not found at Seamless",
        what=(
            "Seamless returned 404: the id or the path does not exist{detail}. "
            "If every call gets 404, SEAMLESS_BASE_URL is wrong."
        ),
        next_step=(
            "Call list_jobs to find the right id (copy ids from earlier results: requestIds "
            "are not searchResultIds)."
        ),
        do_not="Do not retry with the same id: it stays unknown.",
        statuses=(404,),
        our_codes=(ErrorCode.NOT_FOUND,),
    ),
    _r(
        key="seamless.422.insufficientCredits",
        provider="seamless",
        when="HTTP 422",
        meaning="not enough research credits (X-PublicAPI-Credits)",
        code=ErrorCode.CREDITS_EXHAUSTED,
        retryable=False,
        title="Seamless research credits exhausted",
        what=(
            "The Seamless org {credits_phrase}; research needs credits "
            "(HTTP 422 insufficientCredits).{credits_left} search_prospects, get_job_status "
            "and get_job_result stay free."
        ),
        next_step="Tell the user to add Seamless research credits.",
        do_not="Do not retry the same start_research: it fails until credits are added.",
        statuses=(422,),
        api_codes=("insufficientCredits",),
        our_codes=(ErrorCode.CREDITS_EXHAUSTED,),
    ),
    _r(
        key="seamless.422.missingLicense",
        provider="seamless",
        when="HTTP 422",
        meaning="no active Public API license",
        code=ErrorCode.LICENSE_MISSING,
        retryable=False,
        title="Seamless Public API license missing",
        what="The Seamless org has no active Public API license (HTTP 422 missingLicense).",
        next_step="Ask a Seamless admin to enable Public API access for the org.",
        do_not="Do not retry: Seamless calls fail until the license is active.",
        statuses=(422,),
        api_codes=("missingLicense",),
        our_codes=(ErrorCode.LICENSE_MISSING,),
    ),
    _r(
        key="seamless.429",
        provider="seamless",
        when="HTTP 429",
        meaning="org-wide per-endpoint rate limit exceeded; wait until X-RateLimit-Reset",
        code=ErrorCode.RATE_LIMITED,
        retryable=True,
        title="Rate limited by Seamless",
        what=(
            "Rate limited by Seamless{on_endpoint}{limit_note}{until}. "
            "Other Seamless endpoints have their own windows, so status checks of pending "
            "jobs (one batched get_job_status call) still work."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not=RATE_DO_NOT,
        statuses=(429,),
        api_codes=("rateLimitExceeded",),
        status_default=True,
        our_codes=(ErrorCode.RATE_LIMITED,),
        default_wait=60.0,
    ),
    _r(
        key="seamless.500",
        provider="seamless",
        when="HTTP 500",
        meaning="Seamless platform error",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Seamless internal error",
        what=(
            "Seamless had an internal error (HTTP 500){request_note}{attempts_note}{support_note}."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not=SERVER_DO_NOT,
        statuses=(500,),
        status_default=True,
        our_codes=(ErrorCode.UPSTREAM_ERROR,),
        default_wait=30.0,
    ),
    _r(
        key="seamless.5xx",
        provider="seamless",
        when="HTTP 502/503/504 (5xx)",
        meaning="Seamless unavailable or overloaded",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Seamless unavailable",
        what="Seamless is unavailable ({http}){request_note}{attempts_note}{support_note}.",
        next_step="Retry {tool_ref}{after}.",
        do_not=SERVER_DO_NOT,
        statuses=("5xx",),
        default_wait=30.0,
    ),
    # ---------------------------------------------------------------- submission outcome unknown
    _r(
        key="outcome_unknown.seamless",
        provider="seamless",
        when="network or 5xx on POST research",
        meaning="research may have been accepted; outcome unknown",
        code=ErrorCode.OUTCOME_UNKNOWN,
        retryable=False,
        title="Research outcome unknown",
        what=(
            "Seamless may have accepted the research: {cause}, so jobrelay cannot tell "
            "whether credits were spent. If the check finds nothing, one resubmit of contact "
            "research is safe (Seamless deduplicates contacts, not companies)."
        ),
        next_step="Call {job_check} before resubmitting.",
        do_not="Do not resubmit before checking: it could spend credits again.",
        job_statuses=("unknown",),
        our_codes=(ErrorCode.OUTCOME_UNKNOWN,),
    ),
    # ---------------------------------------------------------------- Seamless poll statuses
    _r(
        key="seamless.poll.researching",
        provider="seamless",
        when="poll status researching",
        meaning="still processing; poll again in 2-5 s",
        code=None,
        retryable=True,
        title="Research in progress",
        what="Seamless is still researching {job_name}; check again{after}.",
        next_step="Call {wait_call}: it returns when the research finishes.",
        do_not="Do not resubmit: the research is already running and paid for.",
        job_statuses=("researching",),
        default_wait=3.0,
    ),
    _r(
        key="seamless.poll.done",
        provider="seamless",
        when="poll status done",
        meaning="research complete",
        code=None,
        retryable=False,
        title="Research finished",
        what="Seamless finished researching {job_name}.",
        next_step="Read it with {result_call}.",
        job_statuses=("done",),
    ),
    _r(
        key="seamless.poll.missing",
        provider="seamless",
        when="poll status missing",
        meaning="no record found",
        code=None,
        retryable=False,
        title="No record found",
        what="Seamless found no record for {job_name}{message_note}.",
        next_step="Tell the user no match was found for this target.",
        do_not=(
            "Do not resubmit the same target: it comes back missing again; only a more "
            "specific one (domain or LinkedIn URL) can match."
        ),
        job_statuses=("missing",),
    ),
    _r(
        key="seamless.poll.error",
        provider="seamless",
        when="poll status error",
        meaning="processing failed (typically credits or license)",
        code=None,
        retryable=False,
        title="Research failed",
        what=(
            "Seamless research failed for {job_name}{message_note}; this is typically a "
            "credits or license problem."
        ),
        next_step="Call get_usage to check research credits before resubmitting once.",
        do_not="Do not resubmit in a loop: each attempt may spend a credit.",
        job_statuses=("error",),
    ),
    _r(
        key="seamless.poll.duplicate",
        provider="seamless",
        when="poll status duplicate",
        meaning="already researched; existing record returned, no credit spent",
        code=None,
        retryable=False,
        title="Already researched",
        what=(
            "Already researched earlier: Seamless returned the existing record for "
            "{job_name}, and no credit was spent."
        ),
        next_step="Read it with {result_call}.",
        do_not="Do not resubmit: the answer is the same record.",
        job_statuses=("duplicate",),
    ),
    _r(
        key="seamless.poll.not_found",
        provider="seamless",
        when="poll status not found",
        meaning="no record found",
        code=None,
        retryable=False,
        title="Target not found",
        what='Seamless found no record for {job_name} (status "not found"){message_note}.',
        next_step="Tell the user no match was found for this target.",
        do_not=(
            "Do not resubmit the same target: it comes back not found again; only a more "
            "specific one (domain or LinkedIn URL) can match."
        ),
        job_statuses=("not found",),
    ),
    _r(
        key="seamless.poll.already_researched",
        provider="seamless",
        when="poll status contact-already-researched",
        meaning="researched recently; not researched again",
        code=None,
        retryable=False,
        title="Researched recently",
        what=(
            "Seamless had already researched {job_name} recently, so it did not research it "
            "again (no fresh research to pay for){message_note}. The earlier record is in the "
            "organisation's researched contacts, and in an earlier job if jobrelay ran it "
            "(list_jobs). Fresh research needs skip_dedup_check=true and a credit."
        ),
        next_step="Read any record that came back with {result_call}.",
        do_not="Do not resubmit unchanged: Seamless answers the same way.",
        job_statuses=("contact-already-researched",),
    ),
    _r(
        key="seamless.poll.no_license",
        provider="seamless",
        when="poll status No license or credits available",
        meaning="no Public API licence or research credits for this target",
        code=None,
        retryable=False,
        title="No licence or credits",
        what=(
            "Seamless could not research {job_name}: the organisation has no Public API "
            "licence or no research credits left{message_note}; get_usage shows the credits "
            "last seen."
        ),
        next_step=(
            "Ask a Seamless admin to check the org's Public API licence and research credits."
        ),
        do_not="Do not resubmit before that: it fails the same way.",
        job_statuses=("no license or credits available",),
    ),
)


def _credits_needed(data: Mapping[str, object] | None) -> int | None:
    """A 422's `data.additionalCreditsNeeded`: how many more credits the request needs."""
    needed = as_number(data.get("additionalCreditsNeeded")) if data is not None else None
    return int(needed) if needed else None


def _read_body(top: Mapping[str, object]) -> BodyReading:
    """Seamless error bodies are flat (`{"code", "msg" | "message", "data"}`); its poll
    answers list their items under `data`, each with a `requestId`."""
    if (
        not isinstance(top.get("error"), Mapping)
        and "code" in top
        and ("msg" in top or "message" in top)
    ):
        return BodyReading(shape=3, credits_needed=_credits_needed(as_mapping(top.get("data"))))
    rows = top.get("data")
    if isinstance(rows, list) and rows and as_mapping(rows[0]) is not None:
        return BodyReading(shape=2)
    if isinstance(top.get("status"), str) and "requestId" in top and "jobId" not in top:
        return BodyReading(shape=1)
    return BodyReading()


def _read_details(details: Mapping[str, object]) -> BodyReading:
    """A 422's `data` (`{productCategory, additionalCreditsNeeded}`) is not worth showing.
    Credits left come from `X-PublicAPI-Credits`, not the body."""
    return BodyReading(credits_needed=_credits_needed(details), show_details=False)


SEAMLESS: Final = ProviderAdvice(
    name="seamless",
    service="Seamless",
    rows=_ROWS,
    routes=(
        Route("POST", re.compile(r"/search/"), "search_prospects"),
        Route("POST", re.compile(r"/(contacts|companies)/research/?$"), "start_research"),
        Route("GET", re.compile(r"/research/poll"), "get_job_status"),
        Route("GET", re.compile(r"/(contacts|companies)/?$"), "get_job_result"),
    ),
    paid_tools=frozenset({"start_research"}),
    limit_scope="org-wide",
    clues=VoteClues(
        header_prefixes=(("x-ratelimit-", 2), ("x-publicapi-credits", 2), ("token", 1)),
        http_statuses=frozenset({422}),
        job_statuses=frozenset(
            {
                "researching",
                "done",
                "missing",
                "duplicate",
                "error",
                "not found",
                "contact-already-researched",
                "no license or credits available",
            }
        ),
        code_style=re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)+$"),  # camelCase
    ),
    read_body=_read_body,
    read_details=_read_details,
)
