"""AgentSEO's advice table: its rows, routes, budgets, vote clues and body reader.

Registered with the provider (`AgentSEOProvider.advice`, by `providers.registry`).
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
from mcp_server.upstream import error_fields

__all__ = ["AGENTSEO"]

_r = CatalogueRow  # short name: the rows below read as a table

_ROWS: Final[tuple[CatalogueRow, ...]] = (
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
            "Ask the user to check AGENTSEO_API_KEY in the AgentSEO dashboard: its status, "
            "domain policy and plan."
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
        next_step="Retry {tool_ref} once{after}.",
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
        do_not=RATE_DO_NOT,
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
        do_not=RATE_DO_NOT,
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
        do_not=SERVER_DO_NOT,
        statuses=("5xx",),
        our_codes=(ErrorCode.UPSTREAM_ERROR,),
        default_wait=30.0,
    ),
    # ---------------------------------------------------------------- submission outcome unknown
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
)

_BUDGETS: Final = frozenset({"workload", "control"})


def _details_reading(details: Mapping[str, object] | None) -> BodyReading:
    """`details.credits_remaining` (402) and `details.budget` (429: workload or control)."""
    if details is None:
        return BodyReading()
    credits = as_number(details.get("credits_remaining"))
    budget = details.get("budget")
    return BodyReading(
        credits=int(credits) if credits is not None else None,
        budget=budget if isinstance(budget, str) and budget in _BUDGETS else None,
    )


def _read_body(top: Mapping[str, object]) -> BodyReading:
    """The error envelope `{"error": {code, message, details, request_id}}`, or a job envelope
    with a `jobId`; the details' credits and budget whichever shape the body has."""
    found = _details_reading(as_mapping(error_fields(top).details))
    if isinstance(top.get("error"), Mapping):
        shape = 3
    elif isinstance(top.get("status"), str) and "jobId" in top:
        shape = 1
    else:
        shape = 0
    return BodyReading(shape=shape, credits=found.credits, budget=found.budget)


def _read_details(details: Mapping[str, object]) -> BodyReading:
    return _details_reading(details)


AGENTSEO: Final = ProviderAdvice(
    name="agentseo",
    service="AgentSEO",
    rows=_ROWS,
    routes=(
        Route("GET", re.compile(r"/jobs/[^/]+/events"), "wait_for_job"),
        Route("GET", re.compile(r"/jobs(/|$)"), "get_job_status"),
        Route("POST", re.compile(r"^(?!.*/(jobs|webhooks|extract)(/|$))"), "start_seo_job"),
    ),
    paid_tools=frozenset({"start_seo_job"}),
    # UPSTREAMS.md section 2: starting jobs draws on the workload budget, following on control.
    rate_budgets={
        "start_seo_job": "workload",
        "get_job_status": "control",
        "wait_for_job": "control",
    },
    clues=VoteClues(
        header_prefixes=(("ratelimit", 2), ("x-api-key", 1)),
        http_statuses=frozenset({402, 409}),
        job_statuses=frozenset({"queued", "processing", "completed", "failed"}),
        code_style=re.compile(r"^[A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+$"),  # UPPER_SNAKE
    ),
    read_body=_read_body,
    read_details=_read_details,
)
