"""Golden texts: exactly what an agent reads on the paths that matter most.

A change to any of these strings is a change to the product's voice; update them on purpose.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import formatdate

from mcp_server.advice import advise_error, advise_http, advise_job, render_text
from mcp_server.errors import (
    AuthenticationFailed,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    ResponseLost,
    ServerError,
)
from mcp_server.models import ErrorCode
from mcp_server.upstream._headers import parse_hints

RESET = 1_790_000_000  # 2026-09-21 14:13:20Z
NOW = float(RESET - 37)  # 14:12:43Z


def _seamless_429_headers(date: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(RESET),
        "X-PublicAPI-Credits": "120",
        "Date": formatdate(date, usegmt=True),
    }


def test_seamless_429_from_the_client_names_endpoint_limit_and_reset() -> None:
    headers = _seamless_429_headers(NOW)
    error = RateLimited(
        "rate limited",
        provider="seamless",
        operation="researchContacts",
        method="POST",
        path="/contacts/research",
        status=429,
        api_code="rateLimitExceeded",
        hints=parse_hints("seamless", 429, headers, None, now=NOW),
    )
    advice = advise_error(error, now=NOW)
    assert render_text(advice) == (
        "Rate limited by Seamless on POST /contacts/research (org-wide 60/min) until 14:13:20Z "
        "(in 37 s). Other Seamless endpoints have their own windows, so status checks of "
        "pending jobs (one batched get_job_status call) still work. "
        "Next: Retry start_research after 14:13:20Z (in 37 s). "
        "Do not retry before then: early calls are rejected again."
    )
    assert advice.code is ErrorCode.RATE_LIMITED
    assert advice.retryable
    assert advice.retry_after_seconds == 37
    assert advice.retry_at == datetime(2026, 9, 21, 14, 13, 20, tzinfo=UTC)
    assert advice.http_status == 429


def test_seamless_429_wait_is_measured_against_the_date_header_not_the_local_clock() -> None:
    local_now = NOW + 100  # our clock runs 100 s ahead of Seamless's
    advice = advise_http(
        "auto",
        429,
        None,
        _seamless_429_headers(NOW),
        '{"code": "rateLimitExceeded", "message": "Rate limit exceeded"}',
        None,
        now=local_now,
    )
    assert advice.provider == "seamless"
    assert advice.retry_after_seconds == 37
    assert advice.what_happened == (
        "Rate limited by Seamless (org-wide 60/min) until 14:15:00Z (in 37 s). "
        "Other Seamless endpoints have their own windows, so status checks of pending jobs "
        "(one batched get_job_status call) still work."
    )


def test_agentseo_402_credits_exhausted() -> None:
    body = {
        "error": {
            "code": "CREDITS_EXHAUSTED",
            "message": "No credits left.",
            "details": {"credits_remaining": 0},
            "request_id": "req_402",
        }
    }
    advice = advise_http("auto", 402, None, {"RateLimit-Remaining": "5"}, body, None, now=NOW)
    assert render_text(advice) == (
        "AgentSEO credits are exhausted (HTTP 402 CREDITS_EXHAUSTED, credits_remaining=0). "
        "Status checks and results still work. "
        "Next: Tell the user to top up AgentSEO credits. "
        "Do not call start_seo_job again until credits are added."
    )
    assert advice.code is ErrorCode.CREDITS_EXHAUSTED
    assert not advice.retryable
    assert advice.request_id == "req_402"


def test_seamless_422_insufficient_credits_reads_the_credit_header() -> None:
    advice = advise_http(
        "auto",
        422,
        None,
        {"X-PublicAPI-Credits": "0"},
        {"code": "insufficientCredits", "msg": "Insufficient credits"},
        None,
        now=NOW,
    )
    assert render_text(advice) == (
        "The Seamless org has 0 research credits left; research needs credits "
        "(HTTP 422 insufficientCredits). search_prospects, get_job_status and get_job_result "
        "stay free. Next: Tell the user to add Seamless research credits. "
        "Do not retry the same start_research: it fails until credits are added."
    )
    assert advice.code is ErrorCode.CREDITS_EXHAUSTED


def test_seamless_422_missing_license() -> None:
    advice = advise_http(
        "auto", 422, None, None, {"code": "missingLicense", "msg": "No license"}, None, now=NOW
    )
    assert render_text(advice) == (
        "The Seamless org has no active Public API license (HTTP 422 missingLicense). "
        "Next: Ask a Seamless admin to enable Public API access for the org. "
        "Do not retry: Seamless calls fail until the license is active."
    )
    assert advice.code is ErrorCode.LICENSE_MISSING


def test_seamless_401() -> None:
    error = AuthenticationFailed(
        "unauthorized",
        provider="seamless",
        operation="searchContacts",
        method="POST",
        path="/search/contacts",
        status=401,
    )
    assert render_text(advise_error(error, now=NOW)) == (
        "Seamless rejected the API key (HTTP 401): it is missing, invalid, expired or revoked. "
        "Next: Ask the user to set a valid SEAMLESS_API_KEY (sent as the Token header) and "
        "restart jobrelay. "
        "Do not retry: every Seamless call fails until the key is fixed."
    )


def test_agentseo_401() -> None:
    advice = advise_http("agentseo", 401, None, None, None, None, now=NOW)
    assert render_text(advice) == (
        "AgentSEO rejected the API key (HTTP 401): it is missing or invalid. "
        "Next: Ask the user to set a valid AGENTSEO_API_KEY and restart jobrelay. "
        "Do not retry: every AgentSEO call fails until the key is fixed."
    )
    assert advice.code is ErrorCode.AUTH_FAILED


def test_seamless_403_insufficient_scope() -> None:
    error = PermissionDenied(
        "forbidden",
        provider="seamless",
        operation="researchContacts",
        method="POST",
        path="/contacts/research",
        status=403,
        api_code="insufficientScope",
    )
    advice = advise_error(error, now=NOW)
    assert render_text(advice) == (
        "Seamless refused access (HTTP 403 insufficientScope): the OAuth connection lacks the "
        "scope publicAPI.v1.all. "
        "Next: Ask the user to re-authorize the Seamless connection with the scope "
        "publicAPI.v1.all. "
        "Do not retry until it is re-authorized: it fails the same way."
    )
    assert advice.code is ErrorCode.PERMISSION_DENIED


def test_agentseo_403_revoked() -> None:
    body = {"error": {"code": "API_KEY_REVOKED", "message": "This API key has been revoked."}}
    advice = advise_http("agentseo", 403, None, None, body, None, now=NOW)
    assert render_text(advice) == (
        "AgentSEO refused the API key: it is revoked or expired (HTTP 403 API_KEY_REVOKED). "
        "Next: Ask the user to create a new AgentSEO API key and set AGENTSEO_API_KEY. "
        "Do not retry: every AgentSEO call fails until the key is replaced."
    )


def test_agentseo_403_domain_policy_and_plan() -> None:
    domain = {"error": {"code": "DOMAIN_NOT_ALLOWED", "details": {"reason": "x"}}}
    assert render_text(advise_http("agentseo", 403, None, None, domain, None, now=NOW)) == (
        "AgentSEO blocked this request by the key's allowed-domain policy (HTTP 403 "
        "DOMAIN_NOT_ALLOWED); the key itself is valid. "
        "Next: Ask the user to allow this target in the key's domain policy (AgentSEO "
        "dashboard). Do not retry the same target: it is blocked until the policy changes."
    )
    plan = {"error": {"code": "FORBIDDEN", "details": {"reason": "no_active_license"}}}
    assert render_text(advise_http("auto", 403, None, None, plan, None, now=NOW)) == (
        "AgentSEO accepted the key but its account has no active plan that includes this "
        "workflow (HTTP 403 no_active_license). "
        "Next: Ask the user to activate an AgentSEO plan that includes this workflow. "
        "Do not retry: it fails until a plan is active."
    )


def test_agentseo_403_without_a_code_names_every_cause() -> None:
    body = {"error": {"code": "FORBIDDEN", "message": "API key revoked"}}
    advice = advise_http("agentseo", 403, None, None, body, None, now=NOW)
    assert render_text(advice) == (
        "AgentSEO refused the API key (HTTP 403): it is revoked, expired, or blocked by an "
        "allowed-domain policy (API key revoked). "
        "Next: Ask the user to check AGENTSEO_API_KEY in the AgentSEO dashboard: its status, "
        "domain policy and plan. "
        "Do not retry: it fails until the key or the policy is fixed."
    )


def test_agentseo_400_renders_details_as_field_message() -> None:
    body = (
        '{"error": {"code": "INVALID_PARAMETERS", "message": "The request parameters are '
        'invalid.", "details": {"domain": {"_errors": ["Domain or Business Name is required"]}}, '
        '"request_id": "req_123xyz"}}'
    )
    advice = advise_http("auto", 400, None, None, body, None, now=NOW)
    assert render_text(advice) == (
        "AgentSEO rejected the parameters (HTTP 400): domain: Domain or Business Name is "
        "required. "
        "Next: Fix those parameters and call start_seo_job again. "
        "Do not retry unchanged: it fails the same way."
    )
    assert advice.request_id == "req_123xyz"


def test_agentseo_429_on_a_workload_call_names_the_budget() -> None:
    headers = {"RateLimit-Limit": "60", "RateLimit-Remaining": "0", "RateLimit-Reset": "12"}
    error = RateLimited(
        "rate limited",
        provider="agentseo",
        operation="localAudit",
        method="POST",
        path="/audit/local",
        status=429,
        hints=parse_hints("agentseo", 429, headers, None, now=NOW),
    )
    assert render_text(advise_error(error, now=NOW)) == (
        "Rate limited by AgentSEO on the workload budget (starting jobs, 60/min) until "
        "14:12:55Z (in 12 s). The control budget (status checks and streams) is unaffected. "
        "Next: Retry start_seo_job after 14:12:55Z (in 12 s). "
        "Do not retry before then: early calls are rejected again."
    )


def test_job_failed_retryable() -> None:
    advice = advise_job(
        "agentseo",
        "failed",
        error={
            "code": "UPSTREAM_FETCH_FAILED",
            "message": "Upstream fetch failed",
            "retryable": True,
        },
        retry_after=30,
        now=NOW,
        job_id="seo_7f3a",
    )
    assert render_text(advice) == (
        "AgentSEO reports job seo_7f3a as failed with a transient error "
        "(UPSTREAM_FETCH_FAILED: Upstream fetch failed). "
        "Next: Resubmit it with start_seo_job (same workflow and params) after 14:13:13Z "
        "(in 30 s). "
        "Do not resubmit in a loop: each new job spends workload budget."
    )
    assert advice.code is None
    assert advice.retryable
    assert advice.retry_after_seconds == 30


def test_job_failed_permanently() -> None:
    advice = advise_job(
        "agentseo",
        "failed",
        error={"code": "INVALID_LOCATION", "message": "Unknown location 'Atlantis'"},
        now=NOW,
        job_id="seo_7f3a",
    )
    assert render_text(advice) == (
        "AgentSEO reports job seo_7f3a as failed permanently "
        "(INVALID_LOCATION: Unknown location 'Atlantis'). "
        "Next: Change the inputs the error points to, then start a new job with start_seo_job. "
        "Do not resubmit unchanged: it fails the same way."
    )
    assert not advice.retryable
    assert advice.retry_after_seconds is None


def test_outcome_unknown_after_a_lost_research_response() -> None:
    cause = ResponseLost(
        "read timeout",
        provider="seamless",
        operation="researchContacts",
        method="POST",
        path="/contacts/research",
    )
    advice = advise_error(OutcomeUnknown("ambiguous", provider="seamless", cause=cause), now=NOW)
    assert render_text(advice) == (
        "Seamless may have accepted the research: the connection broke after the request was "
        "sent, so jobrelay cannot tell whether credits were spent. If the check finds nothing, "
        "one resubmit of contact research is safe (Seamless deduplicates contacts, not "
        "companies). "
        'Next: Call list_jobs(state="unknown") to find the job before resubmitting. '
        "Do not resubmit before checking: it could spend credits again."
    )
    assert advice.code is ErrorCode.OUTCOME_UNKNOWN
    assert not advice.retryable


def test_outcome_unknown_after_a_5xx_on_a_workload_post() -> None:
    cause = ServerError(
        "bad gateway",
        provider="agentseo",
        operation="serpAnalysis",
        method="POST",
        path="/analyze/serp",
        status=502,
        request_id="req_5",
    )
    advice = advise_error(OutcomeUnknown("ambiguous", provider="agentseo", cause=cause), now=NOW)
    assert render_text(advice) == (
        "AgentSEO may have started the job: it answered HTTP 502 after receiving the request, "
        "so jobrelay cannot tell whether credits were spent. "
        'Next: Call list_jobs(state="unknown") to find the job before anything else. '
        "Do not resubmit: it would spend credits again."
    )
    assert advice.request_id == "req_5"


def test_outcome_unknown_job_state_with_its_handle() -> None:
    advice = advise_job("agentseo", "unknown", now=NOW, job_id="seo_7f3a")
    assert advice.next_step == 'Call get_job_status(job_ids=["seo_7f3a"]) before anything else.'
    assert advice.do_not == "Do not resubmit: it would spend credits again."


def test_seamless_research_in_progress() -> None:
    advice = advise_job("seamless", "researching", now=NOW, job_id="sea_1")
    assert render_text(advice) == (
        "Seamless is still researching job sea_1; check again after about 14:12:46Z (in about "
        '3 s). Next: Call wait_for_job(job_id="sea_1"): it returns when the research finishes. '
        "Do not resubmit: the research is already running and paid for."
    )


def test_seamless_duplicate() -> None:
    advice = advise_job("seamless", "duplicate", now=NOW, job_id="sea_1")
    assert render_text(advice) == (
        "Already researched earlier: Seamless returned the existing record for job sea_1, and "
        "no credit was spent. "
        'Next: Read it with get_job_result(job_id="sea_1"). '
        "Do not resubmit: the answer is the same record."
    )
