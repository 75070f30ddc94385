"""The advice catalogue: one case per row, routing, detection, sanitising, and robustness.

Exact agent-facing texts for the important paths live in `test_advice_golden.py`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from email.utils import formatdate
from typing import Literal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_server.advice import (
    CATALOGUE,
    advise_error,
    advise_http,
    advise_job,
    catalogue_markdown,
    explain_cli,
    render_text,
)
from mcp_server.errors import (
    BadResponse,
    BudgetExceeded,
    Conflict,
    CreditsExhausted,
    DeadlineExceeded,
    InvalidRequest,
    JobRelayError,
    LicenseMissing,
    LocalBusy,
    LocalRateLimited,
    MalformedResponse,
    NotFoundError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    RetryBudgetExhausted,
    ServerError,
    UnknownJob,
)
from mcp_server.models import Advice, ErrorCode, Provider
from mcp_server.upstream._headers import parse_hints

RESET = 1_790_000_000  # 2026-09-21 14:13:20Z
NOW = float(RESET - 37)  # 14:12:43Z
SEAMLESS_KEY = "fake-seamless-key-0123456789abcdef"
AGENTSEO_KEY = "aseo_live_9f8e7d6c5b4a3210fedcba"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.signature"


def _seamless_429_headers(limit: str = "60") -> dict[str, str]:
    return {
        "X-RateLimit-Limit": limit,
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(RESET),
        "Date": formatdate(NOW, usegmt=True),
    }


def _bad(
    cls: type[BadResponse],
    provider: Provider,
    status: int,
    *,
    method: str = "GET",
    path: str = "/",
    api_code: str | None = None,
    headers: Mapping[str, str] | None = None,
    details: dict[str, object] | None = None,
    request_id: str | None = None,
    message: str = "upstream said no",
    attempts: int = 1,
) -> BadResponse:
    hints = parse_hints(provider, status, headers or {}, None, now=NOW)
    return cls(
        message,
        provider=provider,
        operation="op",
        method=method,
        path=path,
        status=status,
        api_code=api_code,
        request_id=request_id,
        hints=hints,
        details=details,
        attempts=attempts,
    )


class _LocalValidation(JobRelayError):
    """Like the clients' InvalidArguments: refused before sending, with allowed values."""

    code = ErrorCode.INVALID_INPUT

    def __init__(self, message: str, allowed: tuple[str, ...]) -> None:
        super().__init__(message, provider="agentseo")
        self.allowed = allowed


def _http(
    provider: Provider | Literal["auto"] | None,
    status: int | None,
    *,
    code: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: str | Mapping[str, object] | None = None,
    job_status: str | None = None,
) -> Callable[[], Advice]:
    return lambda: advise_http(provider, status, code, headers, body, job_status, now=NOW)


def _err(error: JobRelayError, tool: str | None = None) -> Callable[[], Advice]:
    return lambda: advise_error(error, now=NOW, tool=tool)


def _job(
    provider: Provider | None,
    status: str,
    error: Mapping[str, object] | None = None,
    retry_after: float | None = None,
    job_id: str | None = None,
) -> Callable[[], Advice]:
    return lambda: advise_job(
        provider, status, error=error, retry_after=retry_after, now=NOW, job_id=job_id
    )


_AGENTSEO_ERROR_BODY = {
    "error": {
        "code": "INVALID_PARAMETERS",
        "message": "The request parameters are invalid.",
        "details": {"domain": {"_errors": ["Domain or Business Name is required"]}},
        "request_id": "req_123xyz",
    }
}

#: (row key, how to reach it, a phrase the text must contain). One case per catalogue row.
ROW_CASES: list[tuple[str, Callable[[], Advice], str]] = [
    # Seamless HTTP errors
    (
        "seamless.400",
        _err(
            _bad(InvalidRequest, "seamless", 400, method="POST", path="/contacts/research"),
            tool="start_research",
        ),
        "call start_research again",
    ),
    ("seamless.401", _http("seamless", 401), "SEAMLESS_API_KEY"),
    (
        "seamless.403.insufficientScope",
        _http("auto", 403, body={"code": "insufficientScope", "msg": "Forbidden"}),
        "publicAPI.v1.all",
    ),
    ("seamless.404", _http("seamless", 404), "SEAMLESS_BASE_URL"),
    (
        "seamless.422.insufficientCredits",
        _http("auto", 422, code="insufficientCredits", headers={"X-PublicAPI-Credits": "3"}),
        "has 3 research credits left",
    ),
    (
        "seamless.422.missingLicense",
        _err(_bad(LicenseMissing, "seamless", 422, api_code="missingLicense")),
        "Public API license",
    ),
    (
        "seamless.429",
        _http("auto", 429, code="rateLimitExceeded", headers=_seamless_429_headers()),
        "until 14:13:20Z (in 37 s)",
    ),
    ("seamless.500", _http("seamless", 500), "internal error (HTTP 500)"),
    (
        "seamless.5xx",
        _err(
            _bad(
                ServerError,
                "seamless",
                503,
                path="/contacts/research/poll",
                attempts=3,
                headers={"Retry-After": "20"},
            )
        ),
        "Retry get_job_status after 14:13:03Z (in 20 s)",
    ),
    # AgentSEO HTTP errors
    (
        "agentseo.400",
        _http("auto", 400, body=json.dumps(_AGENTSEO_ERROR_BODY)),
        "domain: Domain or Business Name is required",
    ),
    ("agentseo.401", _http("agentseo", 401), "AGENTSEO_API_KEY"),
    (
        "agentseo.402",
        _http("auto", None, code="CREDITS_EXHAUSTED"),
        "HTTP 402 CREDITS_EXHAUSTED",
    ),
    (
        "agentseo.403",
        _err(_bad(PermissionDenied, "agentseo", 403, message="API key expired")),
        "(API key expired)",
    ),
    (
        "agentseo.403.revoked",
        _http("auto", 403, body={"error": {"code": "API_KEY_REVOKED", "message": "revoked"}}),
        "create a new AgentSEO API key",
    ),
    (
        "agentseo.403.domain",
        _http(
            "agentseo",
            403,
            body={"error": {"code": "DOMAIN_NOT_ALLOWED", "details": {"reason": "x"}}},
        ),
        "the key itself is valid",
    ),
    (
        "agentseo.403.license",
        _err(
            _bad(
                PermissionDenied,
                "agentseo",
                403,
                api_code="FORBIDDEN",
                details={"reason": "no_active_license"},
            )
        ),
        "no active plan that includes this workflow",
    ),
    (
        "agentseo.404",
        _err(_bad(NotFoundError, "agentseo", 404, path="/jobs/{id}")),
        "list_jobs",
    ),
    (
        "agentseo.409",
        _err(_bad(Conflict, "agentseo", 409, method="POST", path="/audit/local")),
        "Retry start_seo_job once after about ",
    ),
    (
        "agentseo.429.workload",
        _err(
            _bad(
                RateLimited,
                "agentseo",
                429,
                method="POST",
                path="/analyze/serp",
                headers={
                    "RateLimit-Limit": "60",
                    "RateLimit-Remaining": "0",
                    "RateLimit-Reset": "12",
                },
            )
        ),
        "workload budget (starting jobs, 60/min) until 14:12:55Z (in 12 s)",
    ),
    (
        "agentseo.429.control",
        _err(
            _bad(
                RateLimited,
                "agentseo",
                429,
                path="/jobs/{id}",
                headers={"RateLimit-Limit": "600", "RateLimit-Reset": "5"},
            )
        ),
        "control budget (status checks and streams, 600/min) until 14:12:48Z (in 5 s)",
    ),
    (
        "agentseo.429",
        _http("auto", 429, headers={"RateLimit-Remaining": "0", "RateLimit-Reset": "8"}),
        "Each key has two budgets",
    ),
    (
        "agentseo.5xx",
        _http(
            "auto",
            502,
            body={"error": {"code": "UPSTREAM_UNAVAILABLE", "request_id": "req_9"}},
        ),
        "report request_id req_9 to AgentSEO support",
    ),
    # No response
    (
        "network.not_sent",
        _err(
            RequestNotSent(
                "connect failed",
                provider="seamless",
                operation="researchContacts",
                method="POST",
                path="/contacts/research",
                attempts=3,
            )
        ),
        "Couldn't reach Seamless after 3 attempts; the request was never sent",
    ),
    (
        "network.deadline",
        _err(
            DeadlineExceeded(
                "stalled",
                provider="seamless",
                operation="searchContacts",
                method="POST",
                path="/search/contacts",
                attempts=2,
                retry_after=30.0,
            )
        ),
        "did not answer within this call's time limit after 2 attempts",
    ),
    (
        "network.lost",
        _err(
            ResponseLost(
                "read timeout",
                provider="agentseo",
                operation="getJob",
                method="GET",
                path="/jobs/{id}",
                attempts=2,
            )
        ),
        "Reading is safe to repeat",
    ),
    (
        "outcome_unknown.seamless",
        _err(
            ResponseLost(
                "read timeout",
                provider="seamless",
                operation="researchContacts",
                method="POST",
                path="/contacts/research",
            )
        ),
        "Do not resubmit before checking",
    ),
    (
        "outcome_unknown.agentseo",
        _err(
            OutcomeUnknown(
                "ambiguous",
                provider="agentseo",
                cause=_bad(ServerError, "agentseo", 500, method="POST", path="/audit/local"),
            )
        ),
        "it answered HTTP 500 after receiving the request",
    ),
    ("outcome_unknown", _job(None, "unknown", job_id="j_7"), 'get_job_status(job_ids=["j_7"])'),
    # jobrelay's own guards
    (
        "local_rate_limited",
        _err(
            LocalRateLimited(
                "no token",
                provider="seamless",
                bucket="POST /contacts/research",
                retry_after=24.2,
            ),
            tool="start_research",
        ),
        "rate guard for Seamless POST /contacts/research has no free slot until 14:13:08Z",
    ),
    (
        "local_busy",
        _err(
            LocalBusy(
                "pool busy",
                provider="agentseo",
                bucket="GET /jobs/{id}",
                retry_after=5.0,
            ),
            tool="get_job_status",
        ),
        "this one was not sent: AgentSEO was never asked and did not fail",
    ),
    (
        "upstream_degraded",
        _err(
            RetryBudgetExhausted(
                "degraded",
                provider="agentseo",
                cause=_bad(ServerError, "agentseo", 503, path="/jobs/{id}"),
            )
        ),
        "many recent calls failed (last: HTTP 503)",
    ),
    (
        "budget_exceeded",
        _err(
            BudgetExceeded(
                "over", provider="seamless", spent=8, budget=10, requested=5, resets_in=35000
            )
        ),
        "Call start_research again with at most 2 targets.",
    ),
    (
        "malformed",
        _err(
            _bad(MalformedResponse, "seamless", 200, path="/contacts/research/poll"),
        ),
        "could not read on GET /contacts/research/poll",
    ),
    (
        "invalid_arguments",
        _err(_LocalValidation("unknown workflow 'seo'", ("serp_analysis", "local_audit"))),
        "(allowed: serp_analysis, local_audit)",
    ),
    ("unknown_job", _err(UnknownJob("nope", job_id="sea_404")), 'no job "sea_404"'),
    # Seamless poll statuses
    (
        "seamless.poll.researching",
        _job("seamless", "researching"),
        "check again after about 14:12:46Z (in about 3 s)",
    ),
    (
        "seamless.poll.done",
        _job(None, "done", job_id="sea_7"),
        'Read it with get_job_result(job_id="sea_7")',
    ),
    ("seamless.poll.missing", _job("seamless", "missing"), "found no record"),
    (
        "seamless.poll.error",
        _http("auto", None, job_status="error"),
        "credits or license",
    ),
    ("seamless.poll.duplicate", _job("seamless", "DUPLICATE"), "no credit was spent"),
    ("seamless.poll.not_found", _job("seamless", "not found"), '(status "not found")'),
    (
        "seamless.poll.already_researched",
        _job("seamless", "contact-already-researched"),
        "skip_dedup_check=true",
    ),
    (
        "seamless.poll.no_license",
        _job("seamless", "No license or credits available"),
        "no Public API licence or no research credits",
    ),
    # AgentSEO job statuses
    (
        "agentseo.job.pending",
        _job("agentseo", "queued", retry_after=4),
        "as queued; check again after 14:12:47Z (in 4 s)",
    ),
    ("agentseo.job.completed", _job("agentseo", "completed"), "get_job_result"),
    (
        "agentseo.job.failed.retryable",
        _job(
            "agentseo",
            "failed",
            {
                "code": "UPSTREAM_FETCH_FAILED",
                "message": "Upstream fetch failed",
                "retryable": True,
            },
        ),
        "(UPSTREAM_FETCH_FAILED: Upstream fetch failed)",
    ),
    (
        "agentseo.job.failed.permanent",
        _job("agentseo", "failed", {"code": "INVALID_DOMAIN", "retryable": False}),
        "failed permanently (INVALID_DOMAIN)",
    ),
    (
        "job.unknown_status",
        _job("agentseo", "cancelled"),
        'unrecognised upstream status "cancelled"',
    ),
    # fallbacks by status class
    ("generic.400", _http(None, 422), "(HTTP 422)"),
    ("generic.401", _http(None, 401), "rejected the credentials"),
    ("generic.402", _http(None, None, code="credits_exhausted"), "credits or payment"),
    ("generic.403", _http(None, 403), "denied permission"),
    ("generic.404", _http("seamless", 410), "(HTTP 410)"),
    ("generic.408", _http("seamless", 408), "timed out"),
    ("generic.409", _http("seamless", 409), "conflict (HTTP 409)"),
    ("generic.429", _http(None, 429, headers={"Retry-After": "7"}), "(in 7 s)"),
    ("generic.4xx", _http("agentseo", 418), "(HTTP 418)"),
    ("generic.5xx", _http(None, 599), "(HTTP 599)"),
    ("generic.success", _http("seamless", 200), "HTTP 200 is not an error status"),
    ("generic.unexpected_status", _http(None, 999), "(HTTP 999)"),
    ("generic.unknown_code", _http(None, None, code="weird"), '"weird"'),
    ("generic.no_input", _http("auto", None), "Call explain_error again with the http_status"),
]


def test_every_catalogue_row_has_exactly_one_case() -> None:
    keys = [key for key, _, _ in ROW_CASES]
    assert len(keys) == len(set(keys))
    assert set(keys) == set(CATALOGUE)


def test_row_titles_are_unique_so_each_case_identifies_its_row() -> None:
    titles = [row.title for row in CATALOGUE.values()]
    assert len(titles) == len(set(titles))


@pytest.mark.parametrize(
    ("key", "produce", "phrase"), ROW_CASES, ids=[key for key, _, _ in ROW_CASES]
)
def test_each_row_is_reached_and_says_its_facts(
    key: str, produce: Callable[[], Advice], phrase: str
) -> None:
    row = CATALOGUE[key]
    advice = produce()
    assert advice.title == row.title
    assert advice.code == row.code
    assert advice.retryable == row.retryable
    assert phrase in render_text(advice)
    assert advice.next_step
    if not advice.retryable:
        assert advice.retry_after_seconds is None
        assert advice.retry_at is None


_FORBIDDEN = ("Traceback", "None", "{", "}", str(RESET), "<html", "  ")


@pytest.mark.parametrize(
    ("key", "produce"), [(k, p) for k, p, _ in ROW_CASES], ids=[k for k, _, _ in ROW_CASES]
)
def test_no_row_shows_tracebacks_raw_epochs_none_or_braces(
    key: str, produce: Callable[[], Advice]
) -> None:
    advice = produce()
    text = render_text(advice)
    for phrase in _FORBIDDEN:
        assert phrase not in text, (key, phrase)
    assert text.count("Next:") == 1
    if advice.retry_after_seconds is not None:
        assert advice.retry_after_seconds == int(advice.retry_after_seconds)
        assert advice.retry_at is not None
        assert advice.retry_at.timestamp() >= NOW + advice.retry_after_seconds


@pytest.mark.parametrize("provider", ["seamless", "agentseo"])
def test_catalogue_markdown_lists_every_row_of_the_provider_once(provider: Provider) -> None:
    text = catalogue_markdown(provider)
    table_rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    expected = [r for r in CATALOGUE.values() if r.provider in (provider, None)]
    assert len(table_rows) == len(expected) + 2  # two header lines
    for row in expected:
        assert any(line.startswith(f"| {row.when} |") for line in table_rows), row.key
    for phrase in ("None", "{", "Traceback"):
        assert phrase not in text
    other = "agentseo" if provider == "seamless" else "seamless"
    assert not any(r.title in text for r in CATALOGUE.values() if r.provider == other)


def test_catalogue_markdown_rejects_an_unknown_provider() -> None:
    with pytest.raises(ValueError, match="unknown provider 'github'"):
        catalogue_markdown("github")  # type: ignore[arg-type]  # URI input is a plain str


def test_catalogue_markdown_marks_retryable_rows() -> None:
    text = catalogue_markdown("seamless")
    line = next(x for x in text.splitlines() if x.startswith("| HTTP 429 |"))
    assert "`rateLimitExceeded`" in line
    assert "`rate_limited`" in line
    assert "yes, after the wait" in line
    line = next(x for x in text.splitlines() if x.startswith("| HTTP 401 |"))
    assert "| no |" in line


# ------------------------------------------------------------------------- routing


def test_server_error_on_a_research_post_is_outcome_unknown_not_a_retry() -> None:
    error = _bad(ServerError, "seamless", 502, method="POST", path="/contacts/research")
    advice = advise_error(error, now=NOW)
    assert advice.code is ErrorCode.OUTCOME_UNKNOWN
    assert not advice.retryable
    assert "it answered HTTP 502 after receiving the request" in advice.what_happened


def test_server_error_on_a_read_is_retryable_and_counts_attempts() -> None:
    error = _bad(ServerError, "agentseo", 503, path="/jobs/{id}", attempts=3, request_id="req_77")
    advice = advise_error(error, now=NOW)
    assert advice.code is ErrorCode.UPSTREAM_ERROR
    assert advice.retryable
    assert advice.retry_after_seconds == 30
    assert advice.what_happened == (
        "AgentSEO or its upstream provider failed (HTTP 503) (request_id req_77) after 3 "
        "attempts; if it persists, report request_id req_77 to AgentSEO support."
    )
    assert advice.request_id == "req_77"
    assert advice.next_step == "Retry get_job_status after about 14:13:13Z (in about 30 s)."


def test_request_not_sent_on_a_research_post_stays_retryable() -> None:
    error = RequestNotSent(
        "dns", provider="seamless", operation="r", method="POST", path="/companies/research"
    )
    advice = advise_error(error, now=NOW)
    assert advice.code is ErrorCode.UPSTREAM_UNREACHABLE
    assert advice.retryable
    assert advice.next_step == "Retry start_research after about 14:13:43Z (in about 60 s)."
    assert advice.do_not == "Do not retry in a loop: if it keeps failing, Seamless may be down."


def test_malformed_reply_to_a_workload_post_is_outcome_unknown() -> None:
    error = _bad(MalformedResponse, "agentseo", 202, method="POST", path="/audit/local")
    advice = advise_error(error, now=NOW)
    assert advice.code is ErrorCode.OUTCOME_UNKNOWN
    assert "its reply could not be read" in advice.what_happened


def test_tool_argument_wins_over_the_route_guess() -> None:
    error = _bad(RateLimited, "seamless", 429, method="POST", path="/search/contacts")
    assert "Retry search_prospects" in advise_error(error, now=NOW).next_step
    assert "Retry wait_for_job" in advise_error(error, now=NOW, tool="wait_for_job").next_step


def test_seamless_429_limit_comes_from_the_header_not_a_constant() -> None:
    advice = advise_http(
        "seamless", 429, None, _seamless_429_headers(limit="30"), None, None, now=NOW
    )
    assert "(org-wide 30/min)" in advice.what_happened


def test_seamless_429_without_reset_suggests_a_minute_and_says_why() -> None:
    advice = advise_http("seamless", 429, None, {}, None, None, now=NOW)
    assert advice.retry_after_seconds == 60
    assert advice.what_happened.startswith(
        "Rate limited by Seamless (org-wide, per endpoint) for about 60 s, until about "
        "14:13:43Z (no reset time was given)."
    )


def test_credit_exhaustion_from_the_error_details() -> None:
    error = _bad(
        CreditsExhausted,
        "agentseo",
        402,
        method="POST",
        path="/analyze/serp",
        api_code="CREDITS_EXHAUSTED",
        details={"credits_remaining": 0},
    )
    advice = advise_error(error, now=NOW)
    assert "credits_remaining=0" in advice.what_happened
    assert advice.do_not == "Do not call start_seo_job again until credits are added."


def test_unknown_job_without_a_tool_points_at_list_jobs() -> None:
    advice = advise_error(UnknownJob("x", job_id="seo_nope"), now=NOW)
    assert advice.code is ErrorCode.NOT_FOUND
    assert advice.next_step.startswith("Call list_jobs to find the right job_id")


def test_budget_resets_at_the_next_utc_midnight_computed_from_now() -> None:
    advice = advise_error(
        BudgetExceeded("over", provider="seamless", spent=10, budget=10, requested=1, resets_in=1),
        now=NOW,
    )
    assert advice.retry_at == datetime(2026, 9, 22, tzinfo=UTC)
    assert advice.retry_after_seconds == 35237
    assert "The budget resets at 00:00:00Z (in 9 h 48 min)." in advice.what_happened
    assert advice.next_step == (
        "Ask the user to raise JOBRELAY_CREDIT_BUDGET (it is spent for today)."
    )


def test_degraded_waits_the_budget_cooldown() -> None:
    advice = advise_error(RetryBudgetExhausted("x", provider="seamless"), now=NOW)
    assert advice.code is ErrorCode.UPSTREAM_DEGRADED
    assert advice.retry_after_seconds == 60
    assert "not retrying automatically until 14:13:43Z (in 60 s)" in advice.what_happened


def test_generic_jobrelay_error_falls_back_by_its_code() -> None:
    class Odd(JobRelayError):
        code = ErrorCode.AUTH_FAILED

    advice = advise_error(Odd("x", provider="agentseo"), now=NOW)
    assert advice.title == CATALOGUE["agentseo.401"].title


def test_our_own_codes_explain_without_a_status() -> None:
    advice = advise_http("seamless", None, "rate_limited", None, None, None, now=NOW)
    assert advice.title == CATALOGUE["seamless.429"].title
    advice = advise_http("auto", None, "outcome_unknown", None, None, None, now=NOW)
    assert advice.code is ErrorCode.OUTCOME_UNKNOWN


def test_status_decides_over_a_job_status_when_it_is_an_error() -> None:
    advice = advise_http("agentseo", 401, None, None, None, "processing", now=NOW)
    assert advice.code is ErrorCode.AUTH_FAILED


def test_job_envelope_in_the_body_is_read_as_a_job_outcome() -> None:
    body = {
        "jobId": "123e4567",
        "status": "failed",
        "error": {"code": "UPSTREAM_FETCH_FAILED", "message": "fetch failed", "retryable": "true"},
        "retry_after_seconds": 15,
    }
    advice = advise_http("auto", 200, None, None, body, None, now=NOW)
    assert advice.title == CATALOGUE["agentseo.job.failed.retryable"].title
    assert advice.provider == "agentseo"
    assert advice.retry_after_seconds == 15
    assert "job 123e4567" in advice.what_happened


def test_seamless_poll_body_is_read_as_a_job_outcome() -> None:
    body = {"success": True, "data": [{"requestId": "r-1", "status": "missing", "message": "x"}]}
    advice = advise_http("auto", 200, None, None, json.dumps(body), None, now=NOW)
    assert advice.title == CATALOGUE["seamless.poll.missing"].title
    assert advice.provider == "seamless"


def test_done_from_agentseo_is_not_seamless_done() -> None:
    advice = advise_job("agentseo", "done", now=NOW, job_id="seo_1")
    assert advice.title == CATALOGUE["job.unknown_status"].title
    assert advice.what_happened.startswith(
        'AgentSEO reports job seo_1 with unrecognised upstream status "done"'
    )


def test_job_error_that_is_not_an_object_is_ignored() -> None:
    advice = advise_job("agentseo", "failed", error="boom", now=NOW)  # type: ignore[arg-type]  # stored junk
    assert "(no error details given)" in advice.what_happened


def test_failed_job_without_error_details_is_permanent() -> None:
    advice = advise_job("agentseo", "failed", now=NOW)
    assert not advice.retryable
    assert "(no error details given)" in advice.what_happened
    assert "the job" in advice.what_happened


def test_headers_alone_with_an_exhausted_window_read_as_a_rate_limit() -> None:
    advice = advise_http("auto", None, None, _seamless_429_headers(), None, None, now=NOW)
    assert advice.code is ErrorCode.RATE_LIMITED
    assert advice.provider == "seamless"
    assert advice.retry_after_seconds == 37


def test_pending_job_with_a_server_hint_uses_it() -> None:
    advice = advise_job("seamless", "researching", retry_after=4.2, now=NOW)
    assert advice.retry_after_seconds == 5
    assert advice.code is None


# ------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"headers": {"X-RateLimit-Remaining": "3"}, "http_status": 500}, "seamless"),
        ({"headers": {"x-publicapi-credits": "0"}, "http_status": 422}, "seamless"),
        ({"headers": {"RateLimit-Remaining": "0"}, "http_status": 500}, "agentseo"),
        ({"body": '{"code": "foo", "msg": "bar"}', "http_status": 400}, "seamless"),
        ({"body": {"error": {"code": "X", "message": "y"}}, "http_status": 400}, "agentseo"),
        ({"code": "insufficientCredits"}, "seamless"),
        ({"code": "somethingCamelCase", "http_status": 400}, "seamless"),
        ({"code": "SOME_UPPER_CODE", "http_status": 400}, "agentseo"),
        ({"job_status": "researching"}, "seamless"),
        ({"job_status": "Duplicate"}, "seamless"),
        ({"job_status": "processing"}, "agentseo"),
        ({"job_status": "completed"}, "agentseo"),
        ({"http_status": 402}, "agentseo"),
        ({"http_status": 500}, None),
        ({"code": "rate_limited"}, None),
        (
            {"headers": {"X-RateLimit-Limit": "60", "RateLimit-Limit": "60"}, "http_status": 429},
            None,
        ),
    ],
)
def test_auto_detects_the_provider(kwargs: dict[str, object], expected: str | None) -> None:
    args: dict[str, object] = {
        "http_status": None,
        "code": None,
        "headers": None,
        "body": None,
        "job_status": None,
    } | kwargs
    advice = advise_http("auto", now=NOW, **args)  # type: ignore[arg-type]  # kwargs table
    assert advice.provider == expected


def test_explicit_provider_overrides_detection() -> None:
    advice = advise_http(
        "agentseo", 429, None, {"X-RateLimit-Reset": str(RESET)}, None, None, now=NOW
    )
    assert advice.provider == "agentseo"
    assert advice.title == CATALOGUE["agentseo.429"].title


# ------------------------------------------------------------------------- sanitising


def test_credentials_in_pasted_headers_are_never_echoed() -> None:
    headers = {
        "Token": SEAMLESS_KEY,
        "x-api-key": AGENTSEO_KEY,
        "Authorization": f"Bearer {BEARER}",
    }
    body = {
        "error": {
            "code": "INVALID_PARAMETERS",
            "message": f"key {SEAMLESS_KEY} and {AGENTSEO_KEY} rejected",
            "details": {"auth": {"_errors": [f"Bearer {BEARER} is bad"]}},
            "request_id": AGENTSEO_KEY,
        }
    }
    for status in (400, 401, 403, 429, 500):
        text = render_text(advise_http("auto", status, None, headers, body, None, now=NOW))
        for secret in (SEAMLESS_KEY, AGENTSEO_KEY, BEARER):
            assert secret not in text


def test_upstream_text_is_cleaned_before_it_reaches_the_agent() -> None:
    body = {
        "error": {
            "code": "INVALID_PARAMETERS",
            "message": "x",
            "details": {
                "q": {"_errors": ["must match {pattern} before 1790000000"]},
                "html": {"_errors": ["<html><body>Bad Gateway</body></html>"]},
                "trace": {"_errors": ["Traceback (most recent call last): boom"]},
            },
        }
    }
    advice = advise_http("agentseo", 400, None, None, body, None, now=NOW)
    assert advice.what_happened == (
        "AgentSEO rejected the parameters (HTTP 400): q: must match (pattern) before "
        "2026-09-21 14:13:20Z."
    )


def test_html_error_page_body_is_not_shown() -> None:
    page = "<!DOCTYPE html><html><body><h1>502 Bad Gateway</h1></body></html>"
    advice = advise_http("seamless", 502, None, None, page, None, now=NOW)
    assert "<" not in render_text(advice)
    assert advice.what_happened == "Seamless is unavailable (HTTP 502)."


def test_details_render_flat_field_message_lists() -> None:
    body = {
        "error": {
            "code": "INVALID_PARAMETERS",
            "details": [
                {"field": "location", "message": "unknown location"},
                {"path": ["params", "keyword"], "message": "required"},
            ],
        }
    }
    advice = advise_http("agentseo", 400, None, None, body, None, now=NOW)
    assert advice.what_happened.endswith(": location: unknown location; params.keyword: required.")


def test_endpoint_templates_are_shown_without_braces() -> None:
    error = _bad(MalformedResponse, "agentseo", 200, path="/jobs/{id}")
    assert "on GET /jobs/:id" in advise_error(error, now=NOW).what_happened


def test_an_epoch_in_a_delta_header_is_never_shown_as_a_wait() -> None:
    headers = {"RateLimit-Reset": str(RESET), "RateLimit-Remaining": "0"}
    advice = advise_http("agentseo", 429, None, headers, None, None, now=NOW)
    assert advice.retry_after_seconds == 37
    assert str(RESET) not in render_text(advice)


def test_a_wait_over_a_day_is_a_misparse_and_falls_back() -> None:
    advice = advise_http("auto", 429, None, None, {"retry_after_seconds": 10**7}, None, now=NOW)
    assert advice.retry_after_seconds == 60
    assert "no reset time was given" in advice.what_happened


def test_long_upstream_messages_are_cut_short() -> None:
    body = {"code": "badThing", "msg": "word " * 100}
    advice = advise_http("seamless", 400, None, None, body, None, now=NOW)
    detail = advice.what_happened.split("(HTTP 400): ", 1)[1]
    assert len(detail) <= 161
    assert detail.endswith("….")


@pytest.mark.parametrize(
    ("retry_after", "phrase"),
    [
        (0.2, "until 14:12:44Z (in 1 s)"),
        (119, "until 14:14:42Z (in 119 s)"),
        (119.5, "until 14:14:43Z (in 2 min)"),
        (150, "until 14:15:13Z (in 2 min 30 s)"),
        (3600, "until 15:12:43Z (in 1 h)"),
        (6621, "until 16:03:04Z (in 1 h 51 min)"),
        (7260, "until 16:13:43Z (in 2 h 1 min)"),
    ],
)
def test_waits_are_rounded_up_and_shown_in_readable_units(retry_after: float, phrase: str) -> None:
    error = LocalRateLimited(
        "x", provider="seamless", bucket="POST /search/contacts", retry_after=retry_after
    )
    assert phrase in advise_error(error, now=NOW).what_happened


# ------------------------------------------------------------------------- presentation


def test_render_text_joins_what_next_and_do_not() -> None:
    advice = Advice(
        title="t", what_happened="A.", retryable=False, next_step="B.", do_not="Do not C."
    )
    assert render_text(advice) == "A. Next: B. Do not C."
    assert render_text(advice.model_copy(update={"do_not": None})) == "A. Next: B."


def test_explain_cli_formats_the_advice_for_a_terminal() -> None:
    out = explain_cli(
        429,
        None,
        "seamless",
        [
            f"X-RateLimit-Reset:{RESET}",
            "X-RateLimit-Limit: 60",
            f"Date:{formatdate(NOW, usegmt=True)}",
        ],
        now=NOW,
    )
    assert out == (
        "Rate limited by Seamless (HTTP 429, rate_limited)\n"
        "\n"
        "Rate limited by Seamless (org-wide 60/min) until 14:13:20Z (in 37 s). "
        "Other Seamless endpoints have their own windows, so status checks of pending jobs "
        "(one batched get_job_status call) still work.\n"
        "Retry: yes, after 14:13:20Z (in 37 s).\n"
        "Next step: Retry the same tool after 14:13:20Z (in 37 s).\n"
        "Avoid: Do not retry before then: early calls are rejected again.\n"
    )


def test_explain_cli_non_retryable_and_auto_provider() -> None:
    out = explain_cli(422, "missingLicense", "auto", [], now=NOW)
    assert out.splitlines()[0] == (
        "Seamless Public API license missing (HTTP 422, license_missing)"
    )
    assert "Retry: no, retrying won't help." in out


@pytest.mark.parametrize("bad", ["NoColonHere", ":value", "Bad Name:1", "X-Rate\tLimit:1"])
def test_explain_cli_names_the_malformed_header(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(f"bad --header {bad!r}")):
        explain_cli(429, None, "seamless", ["X-RateLimit-Limit:60", bad], now=NOW)


def test_explain_cli_rejects_an_unknown_provider() -> None:
    with pytest.raises(ValueError, match="bad --provider 'github'"):
        explain_cli(429, None, "github", [], now=NOW)


def test_explain_cli_never_echoes_a_pasted_key() -> None:
    out = explain_cli(401, None, "auto", [f"x-api-key:{AGENTSEO_KEY}"], now=NOW)
    assert AGENTSEO_KEY not in out
    assert "AGENTSEO_API_KEY" in out


# ------------------------------------------------------------------------- robustness

_HEADER_NAMES = st.sampled_from(
    [
        "X-RateLimit-Limit",
        "X-RateLimit-Remaining",
        "X-RateLimit-Reset",
        "X-PublicAPI-Credits",
        "RateLimit-Limit",
        "RateLimit-Remaining",
        "RateLimit-Reset",
        "RateLimit",
        "RateLimit-Policy",
        "Retry-After",
        "retry-after-ms",
        "Date",
        "Token",
        "x-api-key",
        "X-Request-Id",
    ]
)
_HEADER_VALUES = st.one_of(
    st.text(max_size=40),
    st.integers(min_value=-(10**16), max_value=10**16).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.just(formatdate(NOW, usegmt=True)),
)
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**20), max_value=10**20)
    | st.floats()
    | st.text(max_size=30),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "error",
                    "code",
                    "msg",
                    "message",
                    "details",
                    "request_id",
                    "retry_after_seconds",
                    "credits_remaining",
                    "status",
                    "jobId",
                    "requestId",
                    "data",
                    "retryable",
                    "_errors",
                    "field",
                ]
            )
            | st.text(max_size=8),
            inner,
            max_size=5,
        )
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    provider=st.sampled_from(["seamless", "agentseo", "auto", None]),
    status=st.none() | st.integers(min_value=-5, max_value=1000),
    code=st.none()
    | st.text(max_size=30)
    | st.sampled_from(["insufficientCredits", "CREDITS_EXHAUSTED", "rate_limited"]),
    headers=st.none()
    | st.dictionaries(_HEADER_NAMES | st.text(max_size=12), _HEADER_VALUES, max_size=6),
    body=st.none()
    | st.text(max_size=60)
    | _JSON.map(json.dumps)
    | st.dictionaries(st.text(max_size=8), _JSON, max_size=4),
    job_status=st.none()
    | st.text(max_size=12)
    | st.sampled_from(["failed", "queued", "done", "unknown"]),
)
def test_advise_http_never_raises_and_always_gives_a_next_step(
    *,
    provider: Provider | None,
    status: int | None,
    code: str | None,
    headers: dict[str, str] | None,
    body: object,
    job_status: str | None,
) -> None:
    advice = advise_http(provider, status, code, headers, body, job_status, now=NOW)  # type: ignore[arg-type]  # arbitrary JSON on purpose
    assert advice.next_step.strip()
    text = render_text(advice)
    assert "{" not in text
    assert "Traceback" not in text
    if advice.retry_after_seconds is not None:
        assert 1 <= advice.retry_after_seconds < 86400


@pytest.mark.parametrize(("key", "make", "phrase"), ROW_CASES, ids=[c[0] for c in ROW_CASES])
def test_every_next_step_is_one_action(key: str, make: Callable[[], Advice], phrase: str) -> None:
    """Issue 13 item 4: one action per next step; the alternatives live in what happened or
    in what not to do."""
    step = make().next_step
    assert ";" not in step, (key, step)
    assert "meanwhile" not in step.lower(), (key, step)
    assert ", or " not in step, (key, step)
    assert step.count(". ") == 0, (key, step)  # one sentence


def test_research_credits_next_step_follows_the_credits_left() -> None:
    some = _http("auto", 422, code="insufficientCredits", headers={"X-PublicAPI-Credits": "3"})()
    assert some.next_step == "Tell the user to add Seamless research credits."
    assert "With 3 left, at most 3 targets can be researched now." in some.what_happened
    none = _http("auto", 422, code="insufficientCredits", headers={"X-PublicAPI-Credits": "0"})()
    assert none.next_step == "Tell the user to add Seamless research credits."
    assert "fewer" not in render_text(none)
    assert "at most" not in render_text(none)


def test_agentseo_403_bodies_are_told_apart() -> None:
    def explain(body: dict[str, object]) -> Advice:
        return advise_http("auto", 403, None, {}, {"error": body}, None, now=NOW)

    revoked = explain({"code": "API_KEY_REVOKED", "message": "revoked"})
    domain = explain({"code": "DOMAIN_NOT_ALLOWED", "details": {"reason": "x"}})
    licence = explain({"code": "FORBIDDEN", "details": {"reason": "no_active_license"}})
    assert revoked.title == "AgentSEO key revoked"
    assert domain.title == "AgentSEO domain policy"
    assert licence.title == "AgentSEO plan missing"
    assert licence.code is ErrorCode.LICENSE_MISSING
    assert len({revoked.next_step, domain.next_step, licence.next_step}) == 3
