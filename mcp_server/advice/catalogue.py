"""The provider-neutral rows of the advice catalogue: network, jobrelay's own guards, fallbacks.

Data, one `CatalogueRow` per documented situation (UPSTREAMS.md, RETRY_POLICY.md section C.6).
Each provider contributes its own rows through its `ProviderAdvice` table (e.g.
`providers/seamless/advice.py`); `registry.py` puts them together.
"""

from __future__ import annotations

from typing import Final

from mcp_server.advice.table import CatalogueRow
from mcp_server.models import ErrorCode

__all__ = ["GENERIC_ROWS", "RATE_DO_NOT", "SERVER_DO_NOT"]

_r = CatalogueRow  # short name: the rows below read as a table

RATE_DO_NOT: Final = "Do not retry before then: early calls are rejected again."
SERVER_DO_NOT: Final = (
    "Do not start the same job twice: if a job was being started, check list_jobs first."
)

GENERIC_ROWS: Final[tuple[CatalogueRow, ...]] = (
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
        next_step="Call list_jobs to find the right job_id.",
        do_not=(
            "Do not guess ids: copy them from an earlier result (handles start with sea_ and seo_)."
        ),
        our_codes=(ErrorCode.NOT_FOUND,),
        default_tool="get_job_status",
    ),
    # ---------------------------------------------------------------- job statuses
    _r(
        key="job.unknown_status",
        provider=None,
        when="unknown job status (e.g. cancelled)",
        meaning="status jobrelay does not know; treated as not finished",
        code=None,
        retryable=True,
        title="Unrecognised job status",
        what=(
            "{Service} reports {job_name} with unrecognised upstream status {raw_status_quoted} "
            "(not in its documentation); jobrelay keeps watching it as not finished."
        ),
        next_step="Call {wait_call}{after}.",
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
        do_not=SERVER_DO_NOT,
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
        next_step="Retry {tool_ref} once{after}.",
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
        do_not=RATE_DO_NOT,
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
        do_not=SERVER_DO_NOT,
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
        next_step="Call explain_error again with the http_status, headers and body you saw.",
    ),
)
