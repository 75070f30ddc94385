"""The advice catalogue: what jobrelay tells an agent about every failure and job outcome.

An error is a message to the model (STYLE.md principle 3): what happened, whether retrying
helps, when (computed from the response's own headers), the one next call, and what not to do.
The mapping is data: `CATALOGUE` holds one `CatalogueRow` per documented situation
(UPSTREAMS.md error tables and statuses, RETRY_POLICY.md section C.6), each with templates.
The functions below only gather facts (status, code, headers, body, the exception's
attributes) and pick a row through lookup tables, so one test per row covers the behaviour.

Everything here is pure: time comes in as `now` (epoch seconds), so the same input always
yields the same text. Nothing upstream-supplied reaches the text unsanitised: messages are
shortened, markup and tracebacks dropped, braces neutralised and credentials redacted.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Final, Literal, cast

from mcp_server._duration import format_duration
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
)
from mcp_server.models import PROVIDERS, Advice, ErrorCode, Provider
from mcp_server.redact import SECRET_HEADERS, redact
from mcp_server.upstream import RateLimitHints, format_clock, parse_hints, retry_at

__all__ = [
    "CATALOGUE",
    "CatalogueRow",
    "advise_error",
    "advise_http",
    "advise_job",
    "catalogue_markdown",
    "explain_cli",
    "render_text",
]


@dataclass(frozen=True, slots=True)
class CatalogueRow:
    """One documented situation and the advice for it.

    Templates use `str.format_map` placeholders filled by `_context`; every placeholder has a
    value in every situation, so a template can never leak a literal brace or "None".
    """

    key: str
    """Stable id, e.g. `seamless.429`; used by tests and the catalogue resource."""
    provider: Provider | None
    """`None`: applies to either upstream (network, local limits, fallbacks)."""
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


_r = CatalogueRow  # short name: the rows below read as a table


_RATE_DO_NOT = "Do not retry before then: early calls are rejected again."
_SERVER_DO_NOT = (
    "Do not start the same job twice: if a job was being started, check list_jobs first."
)

_ROWS: tuple[CatalogueRow, ...] = (
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
        do_not=_RATE_DO_NOT,
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
        do_not=_SERVER_DO_NOT,
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
        do_not=_SERVER_DO_NOT,
        statuses=("5xx",),
        default_wait=30.0,
    ),
    # ---------------------------------------------------------------- AgentSEO HTTP errors
    _r(
        key="agentseo.400",
        provider="agentseo",
        when="HTTP 400",
        meaning="invalid parameters (INVALID_PARAMETERS; see details)",
        code=ErrorCode.INVALID_INPUT,
        retryable=False,
        title="Invalid AgentSEO parameters",
        what="AgentSEO rejected the parameters (HTTP 400){detail}.",
        next_step="Fix those parameters and call {tool_ref} again.",
        do_not="Do not retry unchanged: it fails the same way.",
        statuses=(400,),
        api_codes=("INVALID_PARAMETERS",),
        status_default=True,
        our_codes=(ErrorCode.INVALID_INPUT,),
        default_tool="start_seo_job",
    ),
    _r(
        key="agentseo.401",
        provider="agentseo",
        when="HTTP 401",
        meaning="API key invalid or missing",
        code=ErrorCode.AUTH_FAILED,
        retryable=False,
        title="AgentSEO authentication failed",
        what="AgentSEO rejected the API key (HTTP 401): it is missing or invalid.",
        next_step="Ask the user to set a valid AGENTSEO_API_KEY and restart jobrelay.",
        do_not="Do not retry: every AgentSEO call fails until the key is fixed.",
        statuses=(401,),
        our_codes=(ErrorCode.AUTH_FAILED,),
    ),
    _r(
        key="agentseo.402",
        provider="agentseo",
        when="HTTP 402",
        meaning="credits exhausted (CREDITS_EXHAUSTED, details.credits_remaining)",
        code=ErrorCode.CREDITS_EXHAUSTED,
        retryable=False,
        title="AgentSEO credits exhausted",
        what=(
            "AgentSEO credits are exhausted (HTTP 402 CREDITS_EXHAUSTED{credits_note}). "
            "Status checks and results still work."
        ),
        next_step="Tell the user to top up AgentSEO credits.",
        do_not="Do not call start_seo_job again until credits are added.",
        statuses=(402,),
        api_codes=("CREDITS_EXHAUSTED",),
        status_default=True,
        our_codes=(ErrorCode.CREDITS_EXHAUSTED,),
    ),
    _r(
        key="agentseo.403",
        provider="agentseo",
        when="HTTP 403",
        meaning="key refused (no code saying why)",
        code=ErrorCode.PERMISSION_DENIED,
        retryable=False,
        title="AgentSEO key refused",
        what=(
            "AgentSEO refused the API key (HTTP 403): it is revoked, expired, or blocked by "
            "an allowed-domain policy{message_note}."
        ),
        next_step=(
            "Ask the user to check AGENTSEO_API_KEY in the AgentSEO dashboard (revoked, "
            "expired, domain policy or plan)."
        ),
        do_not="Do not retry: it fails until the key or the policy is fixed.",
        statuses=(403,),
        our_codes=(ErrorCode.PERMISSION_DENIED,),
    ),
    _r(
        key="agentseo.403.revoked",
        provider="agentseo",
        when="HTTP 403 API_KEY_REVOKED",
        meaning="key revoked or expired",
        code=ErrorCode.PERMISSION_DENIED,
        retryable=False,
        title="AgentSEO key revoked",
        what="AgentSEO refused the API key: it is revoked or expired (HTTP 403 {code}).",
        next_step="Ask the user to create a new AgentSEO API key and set AGENTSEO_API_KEY.",
        do_not="Do not retry: every AgentSEO call fails until the key is replaced.",
        statuses=(403,),
        api_codes=("API_KEY_REVOKED", "API_KEY_EXPIRED"),
    ),
    _r(
        key="agentseo.403.domain",
        provider="agentseo",
        when="HTTP 403 DOMAIN_NOT_ALLOWED",
        meaning="blocked by the key's allowed-domain policy",
        code=ErrorCode.PERMISSION_DENIED,
        retryable=False,
        title="AgentSEO domain policy",
        what=(
            "AgentSEO blocked this request by the key's allowed-domain policy (HTTP 403 "
            "{code}); the key itself is valid."
        ),
        next_step=(
            "Ask the user to allow this target in the key's domain policy (AgentSEO dashboard)."
        ),
        do_not="Do not retry the same target: it is blocked until the policy changes.",
        statuses=(403,),
        api_codes=("DOMAIN_NOT_ALLOWED", "allowed_domain_policy"),
    ),
    _r(
        key="agentseo.403.license",
        provider="agentseo",
        when="HTTP 403 no_active_license",
        meaning="no active plan includes this workflow",
        code=ErrorCode.LICENSE_MISSING,
        retryable=False,
        title="AgentSEO plan missing",
        what=(
            "AgentSEO accepted the key but its account has no active plan that includes this "
            "workflow (HTTP 403 {code})."
        ),
        next_step="Ask the user to activate an AgentSEO plan that includes this workflow.",
        do_not="Do not retry: it fails until a plan is active.",
        statuses=(403,),
        api_codes=("no_active_license",),
    ),
    _r(
        key="agentseo.404",
        provider="agentseo",
        when="HTTP 404",
        meaning="job or endpoint does not exist",
        code=ErrorCode.NOT_FOUND,
        retryable=False,
        title="Not found at AgentSEO",
        what="AgentSEO has no such job or endpoint (HTTP 404){detail}.",
        next_step="Call list_jobs to find the right job id (copy ids from earlier results).",
        do_not="Do not retry with the same id: it stays unknown.",
        statuses=(404,),
        our_codes=(ErrorCode.NOT_FOUND,),
    ),
    _r(
        key="agentseo.409",
        provider="agentseo",
        when="HTTP 409",
        meaning="conflict with an operation in progress",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Conflict at AgentSEO",
        what=(
            "AgentSEO reported a conflict (HTTP 409){detail}; another operation may be "
            "running on this resource."
        ),
        next_step="Retry {tool_ref} once, after get_job_status shows the other operation ended.",
        do_not="Do not retry in a loop: the conflict lasts until the other operation ends.",
        statuses=(409,),
        default_wait=10.0,
    ),
    _r(
        key="agentseo.429.workload",
        provider="agentseo",
        when="HTTP 429 on a job-starting call",
        meaning="per-key workload budget (starting jobs) exhausted",
        code=ErrorCode.RATE_LIMITED,
        retryable=True,
        title="Rate limited by AgentSEO (workload budget)",
        what=(
            "Rate limited by AgentSEO on the workload budget (starting jobs{limit_inline})"
            "{until}. The control budget (status checks and streams) is unaffected."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not=_RATE_DO_NOT,
        statuses=(),  # reached by budget (_rate_key), never as the 429 default
        default_wait=60.0,
        default_tool="start_seo_job",
    ),
    _r(
        key="agentseo.429.control",
        provider="agentseo",
        when="HTTP 429 on /jobs/:id or its events",
        meaning="per-key control budget (status checks and streams) exhausted",
        code=ErrorCode.RATE_LIMITED,
        retryable=True,
        title="Rate limited by AgentSEO (control budget)",
        what=(
            "Rate limited by AgentSEO on the control budget (status checks and streams"
            "{limit_inline}){until}. The workload budget (starting jobs) is unaffected."
        ),
        next_step="Check again with get_job_status{after}, batching job ids into one call.",
        do_not="Do not poll before then: it keeps the control budget exhausted.",
        statuses=(),  # reached by budget (_rate_key), never as the 429 default
        default_wait=60.0,
        default_tool="get_job_status",
    ),
    _r(
        key="agentseo.429",
        provider="agentseo",
        when="HTTP 429, budget not known",
        meaning="a per-key budget (workload or control) exhausted",
        code=ErrorCode.RATE_LIMITED,
        retryable=True,
        title="Rate limited by AgentSEO",
        what=(
            "Rate limited by AgentSEO{limit_note}{until}. Each key has two budgets, workload "
            "(starting jobs) and control (status checks and streams); the other is unaffected."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not=_RATE_DO_NOT,
        statuses=(429,),
        status_default=True,
        our_codes=(ErrorCode.RATE_LIMITED,),
        default_wait=60.0,
    ),
    _r(
        key="agentseo.5xx",
        provider="agentseo",
        when="HTTP 5xx",
        meaning="AgentSEO or its upstream provider failed",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="AgentSEO server error",
        what=(
            "AgentSEO or its upstream provider failed ({http}){request_note}{attempts_note}"
            "{support_note}."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not=_SERVER_DO_NOT,
        statuses=("5xx",),
        our_codes=(ErrorCode.UPSTREAM_ERROR,),
        default_wait=30.0,
    ),
    # ---------------------------------------------------------------- no response
    _r(
        key="network.not_sent",
        provider=None,
        when="network: request not sent",
        meaning="connect error, DNS or connect timeout; provably not processed",
        code=ErrorCode.UPSTREAM_UNREACHABLE,
        retryable=True,
        title="Upstream unreachable",
        what=(
            "Couldn't reach {service}{attempts_note}; the request was never sent, so nothing "
            "was spent. This is likely transient."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not="Do not retry in a loop: if it keeps failing, {service} may be down.",
        statuses=(),
        our_codes=(ErrorCode.UPSTREAM_UNREACHABLE,),
        default_wait=60.0,
    ),
    _r(
        key="network.deadline",
        provider=None,
        when="network: no answer before the call's deadline",
        meaning="the upstream stalled; the call was cut at JOBRELAY_MAX_WAIT_SECONDS",
        code=ErrorCode.UPSTREAM_UNREACHABLE,
        retryable=True,
        title="Upstream did not answer in time",
        what=(
            "{Service} did not answer within this call's time limit{attempts_note}, so "
            "jobrelay stopped waiting. Reading is safe to repeat."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not="Do not retry in a loop: if it keeps failing, {service} may be down.",
        default_wait=30.0,
    ),
    _r(
        key="network.lost",
        provider=None,
        when="network: response lost on a read",
        meaning="timeout or reset after sending a read; safe to repeat",
        code=ErrorCode.UPSTREAM_UNREACHABLE,
        retryable=True,
        title="Connection lost",
        what=(
            "The connection to {service} broke after the request was sent{attempts_note}. "
            "Reading is safe to repeat."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not="Do not retry in a loop: if it keeps failing, {service} may be down.",
        default_wait=60.0,
    ),
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
    _r(
        key="outcome_unknown.agentseo",
        provider="agentseo",
        when="network or 5xx on a job-starting POST",
        meaning="job may have been created; outcome unknown",
        code=ErrorCode.OUTCOME_UNKNOWN,
        retryable=False,
        title="Job submission outcome unknown",
        what=(
            "AgentSEO may have started the job: {cause}, so jobrelay cannot tell whether "
            "credits were spent."
        ),
        next_step="Call {job_check} before anything else.",
        do_not="Do not resubmit: it would spend credits again.",
        job_statuses=("unknown",),
        our_codes=(ErrorCode.OUTCOME_UNKNOWN,),
    ),
    _r(
        key="outcome_unknown",
        provider=None,
        when="network or 5xx on a credit-spending POST",
        meaning="the job may have been created; outcome unknown",
        code=ErrorCode.OUTCOME_UNKNOWN,
        retryable=False,
        title="Submission outcome unknown",
        what=(
            "{Service} may have accepted the job: {cause}, so jobrelay cannot tell whether "
            "credits were spent."
        ),
        next_step="Call {job_check} before anything else.",
        do_not="Do not resubmit: it would spend credits again.",
        job_statuses=("unknown",),
        our_codes=(ErrorCode.OUTCOME_UNKNOWN,),
    ),
    # ---------------------------------------------------------------- jobrelay's own guards
    _r(
        key="local_rate_limited",
        provider=None,
        when="jobrelay: local rate guard",
        meaning="our own token bucket has no slot within the call; nothing sent",
        code=ErrorCode.LOCAL_RATE_LIMITED,
        retryable=True,
        title="Local rate guard",
        what=(
            "jobrelay's own rate guard for {service} {bucket} has no free slot{until}; "
            "nothing was sent. The guard keeps the shared upstream limit from answering 429."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not="Do not retry before then: jobrelay refuses again.",
        our_codes=(ErrorCode.LOCAL_RATE_LIMITED,),
        default_wait=10.0,
    ),
    _r(
        key="local_busy",
        provider=None,
        when="jobrelay: own connection pool busy",
        meaning="no connection of jobrelay's own pool came free in time; nothing sent",
        code=ErrorCode.LOCAL_RATE_LIMITED,
        retryable=True,
        title="jobrelay busy",
        what=(
            "Every connection jobrelay keeps for {service} stayed busy with other calls, so "
            "this one was not sent: {service} was never asked and did not fail."
        ),
        next_step="Retry {tool_ref}{after}.",
        do_not="Do not report {service} as down: the limit is jobrelay's own.",
        our_codes=(ErrorCode.LOCAL_RATE_LIMITED,),
        default_wait=5.0,
    ),
    _r(
        key="upstream_degraded",
        provider=None,
        when="jobrelay: retry budget exhausted",
        meaning="many recent failures; automatic retries paused",
        code=ErrorCode.UPSTREAM_DEGRADED,
        retryable=True,
        title="Upstream degraded",
        what=(
            "{Service} looks degraded: many recent calls failed{cause_note}, so jobrelay is "
            "not retrying automatically{until}."
        ),
        next_step="Retry {tool_ref} once{after}.",
        do_not=(
            "Do not retry in a loop: it prolongs the outage; if the retry fails, tell the "
            "user {service} is having problems."
        ),
        our_codes=(ErrorCode.UPSTREAM_DEGRADED,),
        default_wait=60.0,
    ),
    _r(
        key="budget_exceeded",
        provider=None,
        when="jobrelay: JOBRELAY_CREDIT_BUDGET",
        meaning="daily research-credit budget would be exceeded; nothing sent",
        code=ErrorCode.BUDGET_EXCEEDED,
        retryable=True,
        title="Daily credit budget reached",
        what=(
            "Starting this research would exceed the daily credit budget "
            "(JOBRELAY_CREDIT_BUDGET): {budget_state}; nothing was sent. "
            "The budget resets{at}."
        ),
        next_step="{budget_next}",
        do_not="Do not retry the same batch before the reset: it is refused again.",
        our_codes=(ErrorCode.BUDGET_EXCEEDED,),
    ),
    _r(
        key="malformed",
        provider=None,
        when="unreadable response",
        meaning="not the documented JSON shape",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Unreadable upstream response",
        what=(
            "{Service} sent a response jobrelay could not read{on_endpoint} (not the "
            "documented JSON){request_note}."
        ),
        next_step="Retry {tool_ref} once{after}.",
        do_not="Do not retry in a loop: if it repeats, tell the user {service} sends bad data.",
        default_wait=10.0,
    ),
    _r(
        key="invalid_arguments",
        provider=None,
        when="jobrelay: arguments rejected locally",
        meaning="arguments invalid before anything was sent",
        code=ErrorCode.INVALID_INPUT,
        retryable=False,
        title="Invalid arguments",
        what="jobrelay rejected the arguments before sending anything{detail}.",
        next_step="Fix the arguments and call {tool_ref} again.",
        do_not="Do not retry unchanged: it is refused the same way.",
    ),
    _r(
        key="unknown_job",
        provider=None,
        when="jobrelay: unknown job handle",
        meaning="the ledger has no job with that id",
        code=ErrorCode.NOT_FOUND,
        retryable=False,
        title="Unknown job",
        what="jobrelay has no job {job_quoted} in its ledger (or it belongs to another key).",
        next_step=(
            "Call list_jobs to find the right job_id (handles start with sea_ or seo_), "
            "then retry {tool_ref}."
        ),
        do_not="Do not guess ids: copy them from an earlier result.",
        our_codes=(ErrorCode.NOT_FOUND,),
        default_tool="get_job_status",
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
            "Ask a Seamless admin to add research credits or enable the Public API licence."
        ),
        do_not="Do not resubmit before that: it fails the same way.",
        job_statuses=("no license or credits available",),
    ),
    # ---------------------------------------------------------------- AgentSEO job statuses
    _r(
        key="agentseo.job.pending",
        provider="agentseo",
        when="job status queued or processing",
        meaning="not finished yet",
        code=None,
        retryable=True,
        title="SEO job in progress",
        what="AgentSEO reports {job_name} as {raw_status}; check again{after}.",
        next_step="Call {wait_call}: it follows the job until it finishes.",
        do_not="Do not resubmit: the job is already running and paid for.",
        job_statuses=("queued", "processing"),
        default_wait=2.0,
    ),
    _r(
        key="agentseo.job.completed",
        provider="agentseo",
        when="job status completed",
        meaning="finished; result available",
        code=None,
        retryable=False,
        title="SEO job finished",
        what="AgentSEO finished {job_name}.",
        next_step="Read it with {result_call}.",
        job_statuses=("completed",),
    ),
    _r(
        key="agentseo.job.failed.retryable",
        provider="agentseo",
        when="job status failed, error.retryable true",
        meaning="transient failure; safe to resubmit",
        code=None,
        retryable=True,
        title="SEO job failed transiently",
        what="AgentSEO reports {job_name} as failed with a transient error ({job_error}).",
        next_step="Resubmit it with start_seo_job (same workflow and params){after}.",
        do_not="Do not resubmit in a loop: each new job spends workload budget.",
        job_statuses=("failed/retryable",),
    ),
    _r(
        key="agentseo.job.failed.permanent",
        provider="agentseo",
        when="job status failed, error.retryable false",
        meaning="permanent failure; inputs must change",
        code=None,
        retryable=False,
        title="SEO job failed",
        what="AgentSEO reports {job_name} as failed permanently ({job_error}).",
        next_step=(
            "Change the inputs the error points to, then start a new job with start_seo_job."
        ),
        do_not="Do not resubmit unchanged: it fails the same way.",
        job_statuses=("failed/permanent",),
    ),
    _r(
        key="job.unknown_status",
        provider=None,
        when="unknown job status (e.g. cancelled)",
        meaning="status jobrelay does not know; treated as not finished",
        code=None,
        retryable=True,
        title="Unrecognised job status",
        what=(
            "{Service} reports {job_name} as unrecognised upstream status {raw_status_quoted}; "
            "it is treated as not finished."
        ),
        next_step="Check again with get_job_status{after}.",
        do_not=(
            "Do not resubmit: the job exists upstream; if the status stays, tell the user the "
            "job is {raw_status_quoted}."
        ),
        default_wait=10.0,
    ),
    # ---------------------------------------------------------------- fallbacks by status class
    _r(
        key="generic.400",
        provider=None,
        when="HTTP 400 / 422 (other)",
        meaning="the request was rejected as invalid",
        code=ErrorCode.INVALID_INPUT,
        retryable=False,
        title="Invalid request",
        what="{Service} rejected the request as invalid ({http}){detail}.",
        next_step="Fix the arguments and call {tool_ref} again.",
        do_not="Do not retry unchanged: it fails the same way.",
        statuses=(400, 422),
        our_codes=(ErrorCode.INVALID_INPUT,),
    ),
    _r(
        key="generic.401",
        provider=None,
        when="HTTP 401",
        meaning="credentials rejected",
        code=ErrorCode.AUTH_FAILED,
        retryable=False,
        title="Authentication failed",
        what="{Service} rejected the credentials (HTTP 401).",
        next_step="Ask the user to check the API key for {service} and restart jobrelay.",
        do_not="Do not retry: it fails until the key is fixed.",
        statuses=(401,),
        our_codes=(ErrorCode.AUTH_FAILED,),
    ),
    _r(
        key="generic.402",
        provider=None,
        when="HTTP 402",
        meaning="payment or credits required",
        code=ErrorCode.CREDITS_EXHAUSTED,
        retryable=False,
        title="Credits required",
        what="{Service} says credits or payment are required (HTTP 402){detail}.",
        next_step="Tell the user to check the {service} plan and credits.",
        do_not="Do not start new jobs until credits are added.",
        statuses=(402,),
        our_codes=(ErrorCode.CREDITS_EXHAUSTED,),
    ),
    _r(
        key="generic.403",
        provider=None,
        when="HTTP 403",
        meaning="permission denied",
        code=ErrorCode.PERMISSION_DENIED,
        retryable=False,
        title="Permission denied",
        what="{Service} denied permission (HTTP 403){detail}.",
        next_step="Ask the user to check the key's permissions for {service}.",
        do_not="Do not retry unchanged: it fails the same way.",
        statuses=(403,),
        our_codes=(ErrorCode.PERMISSION_DENIED,),
    ),
    _r(
        key="generic.404",
        provider=None,
        when="HTTP 404 / 410",
        meaning="resource does not exist",
        code=ErrorCode.NOT_FOUND,
        retryable=False,
        title="Not found",
        what="{Service} has no such resource ({http}){detail}.",
        next_step="Call list_jobs to find the right id (copy ids from earlier results).",
        do_not="Do not retry with the same id: it stays unknown.",
        statuses=(404, 410),
    ),
    _r(
        key="generic.408",
        provider=None,
        when="HTTP 408",
        meaning="the server timed out waiting for the request",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Request timeout",
        what="{Service} timed out waiting for the request (HTTP 408){attempts_note}.",
        next_step="Retry {tool_ref}{after}.",
        do_not=_SERVER_DO_NOT,
        statuses=(408,),
        default_wait=5.0,
    ),
    _r(
        key="generic.409",
        provider=None,
        when="HTTP 409",
        meaning="conflict with an operation in progress",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Conflict",
        what=(
            "{Service} reported a conflict (HTTP 409){detail}; another operation may be "
            "running on this resource."
        ),
        next_step="Retry {tool_ref} once, after get_job_status shows the other operation ended.",
        do_not="Do not retry in a loop: the conflict lasts until the other operation ends.",
        statuses=(409,),
        default_wait=10.0,
    ),
    _r(
        key="generic.429",
        provider=None,
        when="HTTP 429",
        meaning="rate limit exceeded",
        code=ErrorCode.RATE_LIMITED,
        retryable=True,
        title="Rate limited",
        what="Rate limited by {service}{limit_note}{until}.",
        next_step="Retry {tool_ref}{after}.",
        do_not=_RATE_DO_NOT,
        statuses=(429,),
        our_codes=(ErrorCode.RATE_LIMITED,),
        default_wait=60.0,
    ),
    _r(
        key="generic.4xx",
        provider=None,
        when="HTTP 4xx (other)",
        meaning="request refused; status not documented",
        code=ErrorCode.INVALID_INPUT,
        retryable=False,
        title="Request refused",
        what="{Service} refused the request ({http}){detail}.",
        next_step="Check the arguments of {tool_ref} (this status is not documented).",
        do_not="Do not retry unchanged: it fails the same way.",
        statuses=("4xx",),
    ),
    _r(
        key="generic.5xx",
        provider=None,
        when="HTTP 5xx",
        meaning="server error",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Upstream server error",
        what="{Service} failed ({http}){request_note}{attempts_note}{support_note}.",
        next_step="Retry {tool_ref}{after}.",
        do_not=_SERVER_DO_NOT,
        statuses=("5xx",),
        our_codes=(ErrorCode.UPSTREAM_ERROR,),
        default_wait=30.0,
    ),
    _r(
        key="generic.success",
        provider=None,
        when="HTTP 1xx-3xx",
        meaning="not an error",
        code=None,
        retryable=False,
        title="Not an error",
        what="{http} is not an error status.",
        next_step="Call explain_error again with the job_status or the response body.",
        statuses=("1xx", "2xx", "3xx"),
    ),
    _r(
        key="generic.unexpected_status",
        provider=None,
        when="HTTP status outside 100-599",
        meaning="not a valid HTTP status",
        code=ErrorCode.UPSTREAM_ERROR,
        retryable=True,
        title="Unexpected status",
        what="{Service} answered with an unexpected status ({http}){detail}.",
        next_step="Retry {tool_ref} once{after}.",
        do_not="Do not retry in a loop: if it repeats, tell the user.",
        default_wait=30.0,
    ),
    _r(
        key="generic.unknown_code",
        provider=None,
        when="unrecognised error code only",
        meaning="a code jobrelay does not know",
        code=None,
        retryable=False,
        title="Unrecognised error code",
        what="jobrelay does not know the error code {code_quoted} from {service}.",
        next_step=(
            "Call explain_error again with http_status and the response headers and body "
            "for specific advice."
        ),
    ),
    _r(
        key="generic.no_input",
        provider=None,
        when="nothing usable given",
        meaning="nothing to explain",
        code=None,
        retryable=False,
        title="Nothing to explain",
        what="Nothing in the input points to a failure or a job outcome.",
        next_step=(
            "Call explain_error again with the http_status, headers and body you saw (a "
            "code or job_status alone also works)."
        ),
    ),
)

CATALOGUE: Final[Mapping[str, CatalogueRow]] = MappingProxyType({r.key: r for r in _ROWS})
"""Every row by key; read-only. `catalogue_markdown` renders it."""

# --------------------------------------------------------------------------------------------
# lookup tables, built once from the rows


def _norm_code(code: str) -> str:
    """`insufficientCredits`, `INSUFFICIENT_CREDITS` and `insufficient-credits` are one code."""
    return code.replace("_", "").replace("-", "").replace(" ", "").lower()


def _index_http() -> dict[tuple[Provider | None, int | str, str | None], str]:
    index: dict[tuple[Provider | None, int | str, str | None], str] = {}
    for row in _ROWS:
        for status in row.statuses:
            for api_code in row.api_codes:
                index.setdefault((row.provider, status, _norm_code(api_code)), row.key)
            if not row.api_codes or row.status_default:
                index.setdefault((row.provider, status, None), row.key)
    return index


def _index_codes() -> dict[tuple[Provider | None, str], str]:
    """Upstream codes and jobrelay's own codes, for `explain_error(code=...)` alone."""
    index: dict[tuple[Provider | None, str], str] = {}
    for row in _ROWS:
        for api_code in row.api_codes:
            index.setdefault((row.provider, _norm_code(api_code)), row.key)
        for ours in row.our_codes:
            index.setdefault((row.provider, _norm_code(ours.value)), row.key)
    return index


def _index_jobs() -> dict[tuple[Provider | None, str], str]:
    return {(row.provider, s): row.key for row in _ROWS for s in row.job_statuses}


_HTTP_INDEX: Final = _index_http()
_CODE_INDEX: Final = _index_codes()
_JOB_INDEX: Final = _index_jobs()

#: jobrelay's own codes, exactly as the tools report them (`rate_limited`, ...).
_OUR_CODES: Final = frozenset(code.value for code in ErrorCode)
#: Upstream codes that identify their provider even when the caller did not say which.
_CODE_PROVIDER: Final[Mapping[str, Provider]] = {
    _norm_code(c): row.provider for row in _ROWS if row.provider is not None for c in row.api_codes
}

_SERVICE: Final[Mapping[Provider | None, str]] = {
    "seamless": "Seamless",
    "agentseo": "AgentSEO",
    None: "the upstream API",
}
#: (provider, method, path pattern, tool): which MCP tool a failing upstream call came from.
_TOOL_ROUTES: Final[tuple[tuple[Provider, str, re.Pattern[str], str], ...]] = (
    ("seamless", "POST", re.compile(r"/search/"), "search_prospects"),
    ("seamless", "POST", re.compile(r"/(contacts|companies)/research/?$"), "start_research"),
    ("seamless", "GET", re.compile(r"/research/poll"), "get_job_status"),
    ("seamless", "GET", re.compile(r"/(contacts|companies)/?$"), "get_job_result"),
    ("agentseo", "GET", re.compile(r"/jobs/[^/]+/events"), "wait_for_job"),
    ("agentseo", "GET", re.compile(r"/jobs(/|$)"), "get_job_status"),
    ("agentseo", "POST", re.compile(r"^(?!.*/(jobs|webhooks|extract)(/|$))"), "start_seo_job"),
)
#: Credit-spending POSTs: an ambiguous failure on these is `outcome_unknown`, never a retry.
_CREDIT_TOOLS: Final = frozenset({"start_research", "start_seo_job"})
#: AgentSEO budget by the tool the route belongs to (UPSTREAMS.md section 2).
_AGENTSEO_BUDGET: Final[Mapping[str, str]] = {
    "start_seo_job": "workload",
    "get_job_status": "control",
    "wait_for_job": "control",
}

#: How an ambiguous failure on a credit-spending POST is described, by its cause's class.
_CAUSE_PHRASES: Final[tuple[tuple[type[JobRelayError], str], ...]] = (
    (DeadlineExceeded, "it did not answer within the call's time limit"),
    (ResponseLost, "the connection broke after the request was sent"),
    (MalformedResponse, "its reply could not be read"),
    (ServerError, "it answered {http} after receiving the request"),
)
_DEFAULT_CAUSE = "the submission failed after it was sent"

#: Statuses that say which API they came from (UPSTREAMS.md poll and job statuses).
_JOB_STATUS_PROVIDER: Final[Mapping[str, Provider]] = {
    "researching": "seamless",
    "done": "seamless",
    "missing": "seamless",
    "duplicate": "seamless",
    "error": "seamless",
    "not found": "seamless",
    "contact-already-researched": "seamless",
    "no license or credits available": "seamless",
    "queued": "agentseo",
    "processing": "agentseo",
    "completed": "agentseo",
    "failed": "agentseo",
}
#: HTTP statuses only one of the two APIs documents.
_STATUS_PROVIDER: Final[Mapping[int, Provider]] = {
    402: "agentseo",
    409: "agentseo",
    422: "seamless",
}
#: Header-name prefixes (lower case) and the API that sends (or receives) them.
_HEADER_PROVIDER: Final[tuple[tuple[str, Provider, int], ...]] = (
    ("x-ratelimit-", "seamless", 2),
    ("x-publicapi-credits", "seamless", 2),
    ("ratelimit", "agentseo", 2),
    ("token", "seamless", 1),
    ("x-api-key", "agentseo", 1),
)
_CAMEL_CODE = re.compile(r"^[a-z]+(?:[A-Z][a-z0-9]*)+$")
_SNAKE_UPPER_CODE = re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$")

_REQUEST_ID_HEADERS: Final = ("x-request-id", "request-id", "x-amzn-requestid")

# --------------------------------------------------------------------------------------------
# sanitising and formatting

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


def _clean_text(value: object, secrets: Iterable[str], limit: int = _MESSAGE_CHARS) -> str | None:
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


def _clean_token(value: object, secrets: Iterable[str]) -> str | None:
    """A code, id or tool name: shown only when it looks like one and is not a credential."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not _SAFE_TOKEN.match(text) or text in {"None", "null"}:
        return None
    if any(secret in text for secret in secrets):
        return None
    return text


def _clean_status(value: str, secrets: Iterable[str]) -> str | None:
    """An upstream job status as sent (Seamless has some with spaces), when it looks like one."""
    text = " ".join(value.split())
    if not _SAFE_STATUS.match(text) or any(secret in text for secret in secrets):
        return None
    return text


def _clean_endpoint(method: str, path: str) -> str | None:
    """`GET /jobs/{id}` is shown as `GET /jobs/:id`: braces never reach the agent."""
    path = re.sub(r"\{(\w+)\}", r":\1", path.split("?", 1)[0]).strip()
    if not path or not re.match(r"^/[\w/.:~-]*$", path):
        return None
    return f"{method.upper()} {path}" if method else path


def _number(value: object) -> float | None:
    """A finite, non-negative number from a body field (bools and garbage are not numbers)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            return None
    else:
        return None
    if not math.isfinite(number) or number < 0:
        return None
    return number


def _render_details(details: object, secrets: Iterable[str]) -> str | None:
    """AgentSEO `details` as `field: message; ...` (zod-style `_errors` or flat dicts)."""
    items: list[str] = []
    secrets = tuple(secrets)

    def add(path: list[str], message: object) -> None:
        text = _clean_text(message, secrets, 100)
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
                    clean = _clean_token(name, secrets) or "?"
                    walk([*path, clean], value, depth + 1)
        elif isinstance(node, list | tuple):
            for value in node:
                walk(path, value, depth + 1)
        elif isinstance(node, str):
            add(path, node)

    walk([], details, 0)
    return "; ".join(items) or None


def _fmt_clock(at: datetime, now: float) -> str:
    """`10:15:42Z` within a day (the "in N" beside it disambiguates), else with the date."""
    if at.timestamp() - now < 86400:
        return format_clock(at)
    return at.strftime("%Y-%m-%d %H:%M:%SZ")


# --------------------------------------------------------------------------------------------
# facts -> advice


@dataclass(slots=True)
class _Facts:
    """Everything known about one situation, already sanitised."""

    provider: Provider | None = None
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
    """Seamless 422 `data.additionalCreditsNeeded`: how many more credits the request needs."""
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


def _http_text(status: int | None) -> str:
    return f"HTTP {status}" if status is not None else "an error response"


def _limit_note(row: CatalogueRow, facts: _Facts, provider: Provider | None) -> str:
    """`(org-wide 60/min)`: the limit the response stated, never an assumed one."""
    if row.code is not ErrorCode.RATE_LIMITED:
        return ""
    if facts.limit is None:
        return " (org-wide, per endpoint)" if provider == "seamless" else ""
    scope = "org-wide " if provider == "seamless" else ""
    return f" ({scope}{facts.limit}/{_per(facts.window)})"


def _per(window: float | None) -> str:
    return "min" if window is None or window == 60 else f"{window:g} s"


def _wait_fragments(
    row: CatalogueRow, facts: _Facts, now: float | None
) -> tuple[dict[str, str], float | None, datetime | None]:
    """`until`/`after`/`at` phrases, and the wait and time they state."""
    if now is None:  # the catalogue: no concrete time
        stated = " until the time the response states" if row.retryable else ""
        after = " after the stated wait" if row.retryable else ""
        return {"until": stated, "after": after, "at": " at the next UTC midnight"}, None, None
    if row.retryable and facts.passed and (facts.wait is None or facts.wait <= _BLOCKED_SLACK):
        # Nothing left to wait for; 1 s keeps "retry_after_seconds >= 1" for every retry.
        phrases = {"until": _PASSED_UNTIL, "after": " now (the stated time has passed)", "at": ""}
        return phrases, 1.0, retry_at(now, 1)
    wait = facts.wait if facts.wait is not None else row.default_wait
    if not row.retryable or wait is None:
        return {"until": "", "after": "", "at": ""}, None, None
    seconds = max(1, math.ceil(wait - 1e-9))
    at = retry_at(now, seconds)
    span = format_duration(seconds)
    if facts.wait is not None:
        clock = _fmt_clock(at, now)
        phrases = {
            "until": f" until {clock} (in {span})",
            "after": f" after {clock} (in {span})",
            "at": f" at {clock} (in {span})",
        }
    else:
        clock = _fmt_clock(at, now)
        phrases = {
            "until": f" for about {span}, until about {clock} (no reset time was given)",
            "after": f" after about {clock} (in about {span})",
            "at": f" at about {clock} (in about {span})",
        }
    return phrases, float(seconds), at


def _job_fragments(facts: _Facts) -> dict[str, str]:
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
        "job_check": 'list_jobs(state="unknown"), then get_job_status on that job,',
    }


def _budget_fragments(facts: _Facts) -> dict[str, str]:
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


def _context(
    row: CatalogueRow, facts: _Facts, now: float | None
) -> tuple[dict[str, str], float | None, datetime | None]:
    """Every placeholder any template uses, filled for this situation."""
    provider = facts.provider if facts.provider is not None else row.provider
    service = _SERVICE[provider]
    waits, seconds, at = _wait_fragments(row, facts, now)
    http = _http_text(facts.http_status)
    rid = facts.request_id
    tool = facts.tool or row.default_tool
    detail = facts.details or facts.message
    raw_status = facts.raw_status or "unknown"
    cause = facts.cause or _DEFAULT_CAUSE
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


def _build(key: str, facts: _Facts, now: float) -> Advice:
    row = CATALOGUE[key]
    ctx, seconds, at = _context(row, facts, now)
    provider = facts.provider if facts.provider is not None else row.provider
    do_not = row.do_not.format_map(ctx) if row.do_not else None
    if do_not and ctx.get("until") == _PASSED_UNTIL and "before then" in do_not:
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


def _status_class(status: int) -> str | None:
    return f"{status // 100}xx" if 100 <= status <= 599 else None


def _http_key(provider: Provider | None, status: int, api_code: str | None) -> str:
    """Most specific row first: provider+status+code, provider+status, provider+class, generic."""
    code = _norm_code(api_code) if api_code else None
    cls = _status_class(status)
    if cls is None:
        return "generic.unexpected_status"
    candidates: list[tuple[Provider | None, int | str, str | None]] = []
    for who in (provider, None) if provider is not None else (None,):
        if code is not None:
            candidates.append((who, status, code))
        candidates += [(who, status, None), (who, cls, None)]
    for candidate in candidates:
        if candidate in _HTTP_INDEX:
            return _HTTP_INDEX[candidate]
    return "generic.5xx" if status >= 500 else "generic.4xx"


def _code_key(provider: Provider | None, code: str) -> str | None:
    norm = _norm_code(code)
    for who in (provider, None):
        if (who, norm) in _CODE_INDEX:
            return _CODE_INDEX[(who, norm)]
    owner = _CODE_PROVIDER.get(norm)
    return _CODE_INDEX.get((owner, norm)) if owner else None


def _route(provider: Provider | None, method: str, path: str) -> str | None:
    for who, verb, pattern, tool in _TOOL_ROUTES:
        if (
            who == provider
            and verb == method.upper()
            and pattern.search(path.split("?", maxsplit=1)[0])
        ):
            return tool
    return None


def _rate_key(facts: _Facts, route_tool: str | None) -> str | None:
    """AgentSEO 429s name the budget that ran out (workload vs control), when it is known."""
    if facts.provider != "agentseo":
        return None
    budget = facts.budget or (_AGENTSEO_BUDGET.get(route_tool) if route_tool else None)
    if budget is None:
        return None
    facts.budget = budget
    return f"agentseo.429.{budget}"


def _apply_hints(facts: _Facts, hints: RateLimitHints, status: int | None) -> None:
    """The server's "not before" (RETRY_POLICY.md section B.4-5), limit and credits."""
    wait = hints.not_before
    if wait is None and status == 429 and hints.reset_after is not None:
        wait = hints.reset_after  # hints built without the status still bind on a 429
    facts.wait = _merge_wait(facts.wait, wait)
    facts.passed = facts.passed or (hints.passed and not (wait and wait > _BLOCKED_SLACK))
    facts.limit = hints.limit if hints.limit is not None and hints.limit > 0 else facts.limit
    facts.window = hints.window if hints.window and hints.window > 0 else facts.window
    if hints.credits is not None and hints.credits >= 0:
        facts.credits = hints.credits


_PASSED_UNTIL = " until the time the response states, which has already passed: retry now"
#: A wait this short after a past reset is the 429 floor, not a stated wait.
_BLOCKED_SLACK = 1.0


def _merge_wait(current: float | None, new: float | None) -> float | None:
    """All hints mean "not before": take the max; a day or more is a misparse, ignored."""
    if new is None or not math.isfinite(new) or new < 0 or new >= 86400:
        return current
    return new if current is None else max(current, new)


# --------------------------------------------------------------------------------------------
# advise_error


def _facts_from_upstream(error: UpstreamError, tool: str | None) -> tuple[_Facts, str | None]:
    route_tool = _route(error.provider, error.method, error.path)
    facts = _Facts(
        provider=error.provider,
        endpoint=_clean_endpoint(error.method, error.path),
        tool=tool or route_tool,
        attempts=max(1, error.attempts),
    )
    if isinstance(error, BadResponse):
        facts.http_status = error.status
        facts.api_code = _clean_token(_refined_code(error.api_code, error.details), ())
        facts.request_id = _clean_token(error.request_id, ())
        if error.provider == "seamless":  # 422 `data`: {productCategory, additionalCreditsNeeded}
            needed = _number(error.details.get("additionalCreditsNeeded"))
            facts.credits_needed = int(needed) if needed else None
        else:
            facts.details = _render_details(error.details, ())
        facts.message = _clean_text(error.message, ()) if not facts.details else None
        credits = _number(error.details.get("credits_remaining"))
        facts.credits = int(credits) if credits is not None else None
        _apply_hints(facts, error.hints, error.status)
    return facts, route_tool


def _refined_code(code: str | None, details: object) -> str | None:
    """A generic code (`FORBIDDEN`, or none) refined by `details.reason` when the body gives
    one: AgentSEO says "no_active_license" or "allowed_domain_policy" only there."""
    reason = details.get("reason") if isinstance(details, Mapping) else None
    if isinstance(reason, str) and reason and (not code or _norm_code(code) == "forbidden"):
        return reason
    return code


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
    return _DEFAULT_CAUSE


def _outcome_key(provider: Provider | None) -> str:
    return f"outcome_unknown.{provider}" if provider else "outcome_unknown"


def _from_upstream(error: JobRelayError, tool: str | None) -> tuple[str, _Facts]:
    upstream = cast(UpstreamError, error)
    facts, route = _facts_from_upstream(upstream, tool)
    spends = upstream.paid if upstream.paid is not None else route in _CREDIT_TOOLS
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
        facts.wait = _merge_wait(None, upstream.retry_after)
        return "network.deadline", facts
    if isinstance(upstream, NoResponse):
        return "network.lost", facts
    if isinstance(upstream, BadResponse):
        if isinstance(upstream, RateLimited) and (key := _rate_key(facts, route)):
            return key, facts
        code = _refined_code(upstream.api_code, upstream.details)
        return _http_key(upstream.provider, upstream.status, code), facts
    return _code_key(upstream.provider, upstream.code.value) or "generic.5xx", facts


def _from_outcome_unknown(error: JobRelayError, tool: str | None) -> tuple[str, _Facts]:
    unknown = cast(OutcomeUnknown, error)
    facts, _ = _facts_from_upstream(unknown.cause, tool)
    facts.cause = _cause_phrase(unknown.cause)
    facts.wait = None
    facts.job_id = _clean_token(getattr(unknown, "job_id", None), ())
    return _outcome_key(unknown.provider), facts


def _from_local(error: JobRelayError, tool: str | None) -> tuple[str, _Facts]:
    local = cast(LocalRateLimited, error)
    bucket = _clean_endpoint(*local.bucket.split(" ", 1)) if " " in local.bucket else None
    facts = _Facts(
        provider=local.provider,
        tool=tool,
        bucket=bucket or _clean_token(local.bucket, ()),
        wait=_merge_wait(None, local.retry_after),
    )
    return ("local_busy" if isinstance(local, LocalBusy) else "local_rate_limited"), facts


def _from_degraded(error: JobRelayError, tool: str | None) -> tuple[str, _Facts]:
    degraded = cast(RetryBudgetExhausted, error)
    cause = degraded.cause
    facts = _Facts(provider=degraded.provider, tool=tool)
    if cause is not None:
        facts.tool = tool or _route(cause.provider, cause.method, cause.path)
        if isinstance(cause, BadResponse):
            facts.cause = _http_text(cause.status)
        elif isinstance(cause, NoResponse):
            facts.cause = "no response"
    facts.wait = _merge_wait(None, degraded.retry_after)
    return "upstream_degraded", facts


def _from_budget(error: JobRelayError, tool: str | None, now: float) -> tuple[str, _Facts]:
    budget = cast(BudgetExceeded, error)
    midnight = (math.floor(now / 86400) + 1) * 86400
    facts = _Facts(
        provider="seamless",
        tool=tool or "start_research",
        spent=budget.spent,
        credit_budget=budget.budget,
        requested=budget.requested,
        wait=float(midnight - math.ceil(now)),  # lands exactly on midnight when rounded up
    )
    return "budget_exceeded", facts


def _from_unknown_job(error: JobRelayError, tool: str | None) -> tuple[str, _Facts]:
    job = cast(UnknownJob, error)
    return "unknown_job", _Facts(tool=tool, job_id=_clean_token(job.job_id, ()))


#: Exception class -> how to read it; the first matching class wins (most specific first).
_ERROR_READERS: Final[
    tuple[
        tuple[type[JobRelayError], Callable[[JobRelayError, str | None], tuple[str, _Facts]]], ...
    ]
] = (
    (OutcomeUnknown, _from_outcome_unknown),
    (UpstreamError, _from_upstream),
    (LocalRateLimited, _from_local),
    (RetryBudgetExhausted, _from_degraded),
    (UnknownJob, _from_unknown_job),
)


def advise_error(error: JobRelayError, *, now: float, tool: str | None = None) -> Advice:
    """Advice for an exception from the clients, the ledger or the limiter.

    `tool` names the MCP tool that failed, for the next step; when omitted it is inferred
    from the upstream route. Waits come from the error's parsed hints, rounded up to whole
    seconds, with `retry_at = now + wait`.
    """
    clean_tool = _clean_token(tool, ())
    if isinstance(error, BudgetExceeded):
        key, facts = _from_budget(error, clean_tool, now)
        return _build(key, facts, now)
    for cls, reader in _ERROR_READERS:
        if isinstance(error, cls):
            key, facts = reader(error, clean_tool)
            if isinstance(error, RetryBudgetExhausted) and error.until is not None:
                # The breaker's instant is fixed: every rendering, whenever it happens, names
                # the same retry_at (whole seconds from a whole-second `now`).
                whole = math.floor(now)
                facts.wait = max(1.0, error.until - whole)
                return _build(key, facts, whole)
            return _build(key, facts, now)
    facts = _Facts(provider=error.provider, tool=clean_tool)
    if error.code is ErrorCode.INVALID_INPUT:  # validated locally, e.g. an unknown workflow
        facts.message = _clean_text(error.message, ())
        allowed = getattr(error, "allowed", ())
        if isinstance(allowed, tuple | list) and allowed:
            shown = ", ".join(t for a in allowed[:12] if (t := _clean_token(a, ())))
            facts.message = f"{facts.message or 'invalid value'} (allowed: {shown})"
        return _build("invalid_arguments", facts, now)
    return _build(_code_key(error.provider, error.code.value) or "generic.5xx", facts, now)


# --------------------------------------------------------------------------------------------
# advise_http


@dataclass(slots=True)
class _Body:
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
    shape: Provider | None = None


def _as_mapping(value: object) -> Mapping[str, object] | None:
    return cast(Mapping[str, object], value) if isinstance(value, Mapping) else None


def _parse_body(body: str | Mapping[str, object] | None, secrets: tuple[str, ...]) -> _Body:
    """Either documented error shape, a job envelope or a poll result; garbage yields nothing."""
    data: object = body
    if isinstance(body, str):
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            return _Body()
    top = _as_mapping(data)
    if top is None:
        return _Body()
    parsed = _Body(mapping=top)
    inner = _as_mapping(top.get("error"))
    if inner is not None:  # AgentSEO error envelope, or a failed job's error
        parsed.shape = "agentseo"
        source: Mapping[str, object] = inner
    else:
        source = top
        if "code" in top and ("msg" in top or "message" in top):
            parsed.shape = "seamless"
    parsed.code = _clean_token(source.get("code"), secrets)
    parsed.message = _clean_text(source.get("message", source.get("msg")), secrets)
    parsed.request_id = _clean_token(
        source.get("request_id", top.get("request_id", top.get("requestId"))), secrets
    )
    parsed.details = source.get("details")
    details = _as_mapping(parsed.details)
    parsed.retry_after = _number(top.get("retry_after_seconds", source.get("retry_after_seconds")))
    seamless_data = _as_mapping(top.get("data")) if parsed.shape == "seamless" else None
    if seamless_data is not None:
        needed = _number(seamless_data.get("additionalCreditsNeeded"))
        parsed.credits_needed = int(needed) if needed else None
    if details is not None:
        credits = _number(details.get("credits_remaining"))
        parsed.credits = int(credits) if credits is not None else None
        budget = details.get("budget")
        parsed.budget = budget if budget in {"workload", "control"} else None
    _parse_job(parsed, top, secrets)
    return parsed


def _parse_job(parsed: _Body, top: Mapping[str, object], secrets: tuple[str, ...]) -> None:
    """An AgentSEO job envelope or the first item of a Seamless poll result."""
    item = top
    rows = top.get("data")
    if isinstance(rows, list) and rows and (first := _as_mapping(rows[0])) is not None:
        item = first
        parsed.shape = parsed.shape or "seamless"
    status = item.get("status")
    if isinstance(status, str) and ("jobId" in item or "requestId" in item):
        parsed.job_status = _clean_token(status.strip().lower(), secrets)
        parsed.job_id = _clean_token(item.get("jobId", item.get("requestId")), secrets)
        parsed.job_error = _as_mapping(item.get("error"))
        if parsed.job_error is not None:  # a failed job's error is not an HTTP error body
            parsed.code = None
        if parsed.shape is None:
            parsed.shape = "agentseo" if "jobId" in item else "seamless"
        if parsed.message is None:
            parsed.message = _clean_text(item.get("message"), secrets)


def _detect_provider(
    headers: Mapping[str, str],
    body: _Body,
    code: str | None,
    status: int | None,
    job_status: str | None,
) -> Provider | None:
    """Votes from headers, body shape, code style, status and job status; a tie is unknown."""
    votes: dict[Provider, int] = {"seamless": 0, "agentseo": 0}
    for name in headers:
        for prefix, who, weight in _HEADER_PROVIDER:
            if name.startswith(prefix):
                votes[who] += weight
                break
    if body.shape is not None:
        votes[body.shape] += 3
    if code and code not in _OUR_CODES:
        owner = _CODE_PROVIDER.get(_norm_code(code))
        if owner is not None:
            votes[owner] += 3
        elif _CAMEL_CODE.match(code):
            votes["seamless"] += 1
        elif _SNAKE_UPPER_CODE.match(code):
            votes["agentseo"] += 1
    if status is not None and status in _STATUS_PROVIDER:
        votes[_STATUS_PROVIDER[status]] += 1
    if job_status is not None and job_status in _JOB_STATUS_PROVIDER:
        votes[_JOB_STATUS_PROVIDER[job_status]] += 2
    if votes["seamless"] == votes["agentseo"]:
        return None
    return "seamless" if votes["seamless"] > votes["agentseo"] else "agentseo"


def _as_int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def advise_http(  # noqa: PLR0917  # positional order is the explain_error argument contract
    provider: Provider | Literal["auto"] | None,
    http_status: int | None,
    code: str | None,
    headers: Mapping[str, str] | None,
    body: str | Mapping[str, object] | None,
    job_status: str | None,
    *,
    now: float,
) -> Advice:
    """Advice for whatever an agent or a human pasted: status, code, headers, body, job status.

    The engine behind the `explain_error` tool and `jobrelay explain`. `provider` "auto" (or
    None) detects the API from the input. Never raises: unknown combinations get advice by
    status class, and empty input gets advice on what to pass.
    """
    raw_headers = headers if isinstance(headers, Mapping) else {}
    lower = {str(k).strip().lower(): str(v) for k, v in raw_headers.items()}
    secrets = _secrets(lower)
    status = _as_int(http_status)
    parsed = _parse_body(body if isinstance(body, str | Mapping) else None, secrets)
    given_code = _clean_token(code, secrets) if code is not None else None
    the_code = given_code or _clean_token(_refined_code(parsed.code, parsed.details), secrets)
    wanted_status = job_status.strip().lower() if isinstance(job_status, str) else None
    the_job_status = _clean_token(wanted_status, secrets) if wanted_status else None
    if the_job_status is None and (status is None or status < 400):
        the_job_status = parsed.job_status
    who: Provider | None
    if provider in PROVIDERS:
        who = provider
    else:
        who = _detect_provider(lower, parsed, the_code, status, the_job_status)

    hints = parse_hints(who, status or 0, lower, parsed.mapping, now=now)  # never raises
    facts = _Facts(
        provider=who,
        http_status=status,
        api_code=the_code,
        request_id=parsed.request_id or _first_token(lower, _REQUEST_ID_HEADERS, secrets),
        details=_render_details(parsed.details, secrets),
        message=parsed.message,
        credits=parsed.credits,
        credits_needed=parsed.credits_needed,
        budget=parsed.budget,
        job_id=parsed.job_id,
        secrets=secrets,
    )
    if facts.details:
        facts.message = None
    _apply_hints(facts, hints, status)
    facts.wait = _merge_wait(facts.wait, parsed.retry_after)

    if status is not None and not 100 <= status < 400:
        key = _rate_key(facts, None) if status == 429 else None
        return _build(key or _http_key(who, status, the_code), facts, now)
    if the_job_status:
        return _advise_job_facts(who, the_job_status, parsed.job_error, facts, now)
    if the_code:
        key = _code_key(who, the_code)
        if key is None:
            return _build("generic.unknown_code", facts, now)
        found = CATALOGUE[key]
        facts.provider = who or found.provider
        if key.startswith("agentseo.429") and (budget_key := _rate_key(facts, None)):
            key = budget_key
        return _build(key, facts, now)
    if status is not None:
        return _build(_http_key(who, status, None), facts, now)
    if hints.remaining == 0 and (hints.reset_after is not None or hints.retry_after is not None):
        return _build(_http_key(who, 429, None), facts, now)
    return _build("generic.no_input", facts, now)


def _secrets(lower_headers: Mapping[str, str]) -> tuple[str, ...]:
    """Credential values from the pasted headers (and their Bearer tokens): never shown."""
    found: list[str] = []
    for name, value in lower_headers.items():
        if name in SECRET_HEADERS or "key" in name or "secret" in name or "token" in name:
            for candidate in (value.strip(), re.sub(r"(?i)^bearer\s+", "", value.strip())):
                if len(candidate) >= 6 and candidate not in found:
                    found.append(candidate)
    return tuple(found)


def _first_token(
    lower_headers: Mapping[str, str], names: Iterable[str], secrets: tuple[str, ...]
) -> str | None:
    for name in names:
        if name in lower_headers:
            return _clean_token(lower_headers[name], secrets)
    return None


# --------------------------------------------------------------------------------------------
# advise_job


def _job_error_text(error: Mapping[str, object] | None, secrets: tuple[str, ...]) -> str | None:
    if error is None:
        return None
    code = _clean_token(error.get("code"), secrets)
    message = _clean_text(error.get("message"), secrets)
    if code and message:
        return f"{code}: {message}"
    return code or message


def _truthy(value: object) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes"}
    return value is True


def _advise_job_facts(
    provider: Provider | None,
    raw_status: str,
    error: Mapping[str, object] | None,
    facts: _Facts,
    now: float,
) -> Advice:
    status = raw_status.strip().lower()
    who = provider or _JOB_STATUS_PROVIDER.get(status)
    facts.provider = who
    facts.raw_status = _clean_status(raw_status, facts.secrets) or "unrecognised"
    lookup = status
    if status == "failed":
        retryable = _truthy(error.get("retryable")) if error is not None else False
        lookup = "failed/retryable" if retryable else "failed/permanent"
        facts.job_error = _job_error_text(error, facts.secrets)
        if error is not None:
            facts.wait = _merge_wait(facts.wait, _number(error.get("retry_after_seconds")))
    elif status == "error" and error is not None and facts.message is None:
        facts.message = _clean_text(error.get("message"), facts.secrets)
    if status == "unknown":
        facts.cause = facts.cause or _DEFAULT_CAUSE
    # Only the status's own API gives it meaning: AgentSEO `done` is an unknown status.
    for candidate in ((who, lookup), (None, lookup)):
        if candidate in _JOB_INDEX:
            return _build(_JOB_INDEX[candidate], facts, now)
    return _build("job.unknown_status", facts, now)


def advise_job(
    provider: Provider | None,
    raw_status: str,
    *,
    error: Mapping[str, object] | None = None,
    retry_after: float | None = None,
    now: float,
    job_id: str | None = None,
    message: str | None = None,
) -> Advice:
    """Advice for a job outcome (a normal result, not a tool failure).

    `raw_status` is the upstream status (Seamless poll or AgentSEO job); `error` the AgentSEO
    `error` object of a failed job; `retry_after` the envelope's `retry_after_seconds`;
    `message` a Seamless poll item's `message`.
    """
    error = error if isinstance(error, Mapping) else None  # stored envelopes may hold junk
    facts = _Facts(
        provider=provider,
        job_id=_clean_token(job_id, ()),
        wait=_merge_wait(None, retry_after),
        message=_clean_text(message, ()) if message else None,
    )
    return _advise_job_facts(
        provider, raw_status if isinstance(raw_status, str) else "", error, facts, now
    )


# --------------------------------------------------------------------------------------------
# presentation


def render_text(advice: Advice) -> str:
    """The text block of a tool result: what happened (with when), the next step, what not to do."""
    parts = [advice.what_happened, f"Next: {advice.next_step}"]
    if advice.do_not:
        parts.append(advice.do_not)
    return " ".join(parts)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _catalogue_cells(row: CatalogueRow, provider: Provider) -> list[str]:
    facts = _Facts(provider=provider)
    ctx, _, _ = _context(row, facts, None)
    upstream = ", ".join(f"`{c}`" for c in row.api_codes) or "-"
    ours = f"`{row.code.value}`" if row.code else "- (job outcome)"
    retry = "yes, after the wait" if row.retryable else "no"
    return [
        row.when,
        upstream,
        ours,
        row.meaning,
        retry,
        row.next_step.format_map(ctx),
    ]


def catalogue_markdown(provider: Provider) -> str:
    """The whole catalogue for one provider, as markdown (resource `jobrelay://errors/{p}`).

    Raises `ValueError` for a provider name that is not one of `PROVIDERS` (URI input).
    """
    if provider not in PROVIDERS:
        raise ValueError(f"unknown provider {provider!r}: expected seamless or agentseo")
    name = _SERVICE[provider]
    header = (
        "| when | upstream code | jobrelay code | meaning | retry? | next step |\n"
        "|---|---|---|---|---|---|"
    )
    sections = [
        (f"## {name}", [r for r in _ROWS if r.provider == provider]),
        (
            "## Any provider (network, jobrelay's own guards, fallbacks)",
            [r for r in _ROWS if r.provider is None],
        ),
    ]
    lines = [
        f"# jobrelay advice catalogue: {name}",
        "",
        "Every failure and job outcome jobrelay explains for this API, one row each. Waits are "
        "computed from the response's own headers when it happens; `explain_error` gives the "
        "advice for a concrete status, code, headers and body.",
    ]
    for title, rows in sections:
        lines += ["", title, "", header]
        for row in rows:
            cells = _catalogue_cells(row, provider)
            lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def _parse_header_args(headers: Iterable[str]) -> dict[str, str]:
    parsed: dict[str, str] = {}
    for arg in headers:
        name, sep, value = arg.partition(":")
        if (
            not sep
            or not name.strip()
            or not re.match(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", name.strip())
        ):
            raise ValueError(
                f"bad --header {arg!r}: expected NAME:VALUE, e.g. X-RateLimit-Reset:1790000000"
            )
        parsed[name.strip()] = value.strip()
    return parsed


def explain_cli(
    status: int | None,
    code: str | None,
    provider: str,
    headers: list[str],
    *,
    body: str | None = None,
    job_status: str | None = None,
    now: float | None = None,
) -> str:
    """`jobrelay explain` output for a terminal; `ValueError` names a malformed argument.

    Takes what `explain_error` takes: a status, code, headers, the response body (JSON or
    text) and a job's status, any of them optional but at least one.
    """
    if provider not in {"auto", *PROVIDERS}:
        raise ValueError(f"bad --provider {provider!r}: expected seamless, agentseo or auto")
    if status is None and not (code or body or job_status):
        raise ValueError("give an HTTP STATUS, --code, --body or --job-status")
    parsed = _parse_header_args(headers)
    moment = time.time() if now is None else now
    chosen = cast(Provider | Literal["auto"], provider)
    advice = advise_http(chosen, status, code, parsed, body, job_status, now=moment)
    service = _SERVICE[advice.provider] if advice.provider else "unknown API"
    label = advice.code.value if advice.code else "no error code"
    facts = [f"HTTP {status}" if status is not None else None, label]
    if job_status:
        facts.insert(0, f"job status {_clean_token(job_status, ()) or '?'}")
    context = ", ".join(f for f in facts if f)
    if service not in advice.title:
        context = f"{service}, {context}"
    lines = [f"{advice.title} ({context})", "", advice.what_happened]
    if advice.retryable and _PASSED_UNTIL in advice.what_happened:
        lines.append("Retry: yes, now (the reset time the response states has passed).")
    elif (
        advice.retryable and advice.retry_at is not None and advice.retry_after_seconds is not None
    ):
        wait = format_duration(int(advice.retry_after_seconds))
        lines.append(f"Retry: yes, after {_fmt_clock(advice.retry_at, moment)} (in {wait}).")
    else:
        lines.append("Retry: " + ("yes." if advice.retryable else "no, retrying won't help."))
    lines.append(f"Next step: {advice.next_step}")
    if advice.do_not:
        lines.append(f"Avoid: {advice.do_not}")
    return "\n".join(lines) + "\n"


def wait_phrase(seconds: float, now: float) -> str:
    """`14:12:55Z (in 12 s)`: a wait as an absolute UTC time and in seconds."""
    whole = max(1, math.ceil(seconds - 1e-9))
    return f"{_fmt_clock(retry_at(now, whole), now)} (in {format_duration(whole)})"
