"""The exception tree. Every failure jobrelay can meet is one of these, never a bare exception.

This module is a leaf: it imports nothing from jobrelay at run time (`Provider` is imported for
type checking only), so every layer can raise and catch these (tests/test_architecture.py).

```
Exception
├── JobRelayError                     .code (ErrorCode), .provider, .retryable
│   ├── UpstreamError                 talking to an upstream went wrong (.operation, .method, .path,
│   │                                 .paid: the sender says whether the request spends credits)
│   │   ├── NoResponse                no HTTP response arrived
│   │   │   ├── RequestNotSent        connect/DNS/connect-timeout/pool: provably NOT processed
│   │   │   └── ResponseLost          timeout or reset after sending: MAYBE processed
│   │   │       └── DeadlineExceeded  no answer before the tool call's deadline (.retry_after)
│   │   └── BadResponse               a response, but not the success we need
│   │       │                     (.status, .api_code, .message, .request_id, .hints, .body_excerpt)
│   │       ├── InvalidRequest        400 (and 422 without a known code); .details
│   │       ├── AuthenticationFailed  401
│   │       ├── CreditsExhausted      402 CREDITS_EXHAUSTED, 422 insufficientCredits
│   │       ├── PermissionDenied      403 (Seamless insufficientScope; AgentSEO revoked/policy)
│   │       ├── NotFoundError         404
│   │       ├── Conflict              409
│   │       ├── LicenseMissing        422 missingLicense
│   │       ├── RateLimited           429
│   │       ├── ServerError           5xx
│   │       └── MalformedResponse     a body we could not parse or with the wrong shape
│   │           └── AbsurdAnswer      a well-formed 2xx that cannot be true (e.g. 100,000 ids for 1)
│   ├── LocalRateLimited              our own bucket has no token within the deadline (never sent)
│   │   └── LocalBusy                 no free connection in our own pool in time (never sent)
│   ├── RetryBudgetExhausted          too many recent failures on this upstream; not retrying
│   ├── OutcomeUnknown                a credit-spending POST failed ambiguously; do not resubmit
│   ├── BudgetExceeded                JOBRELAY_CREDIT_BUDGET would be exceeded (never sent)
│   ├── UnknownJob                    a job handle or upstream id that the ledger does not know
│   └── InputProblem                  arguments refused before anything is sent (.field, .next_step)
├── ConfigError                       an environment value jobrelay cannot use (CLI: exit 2)
├── TokenError                        the OAuth token endpoint refused (.status); -> 401 error
├── ValueError
│   ├── FilterProblem                 a search filter we will not send (.field); -> InputProblem
│   └── ShapeError                    a 2xx body without the documented shape; -> Malformed
│
│   defined in their own module (internal signals, or moving here later):
├── LedgerError        (ledger/base)  the ledger file cannot be used (.path, .problem); a local
│                                     storage fault, kept beside the ledger protocol for now
├── StreamUnavailable  (upstream/_sse) no (more) SSE stream here: the caller polls instead
├── DemoError          (demo)         a `jobrelay demo` step did not behave as the script expects
├── _TooLarge          (upstream/_replies) a body over the size cap -> MalformedResponse
└── _ApiError          (sandbox/seamless) the sandbox's own documented error answer
```

`ErrorCode` (the tool-failure codes, re-exported by `models`) and `RateLimitHints` (what one
response said about waiting, carried on `BadResponse.hints`) live here so the tree needs nothing
else.

"No response" and "bad response" are split because they decide whether a credit-spending
POST may be replayed: only `RequestNotSent` and `RateLimited` prove it was not processed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from mcp_server.models import Provider

__all__ = [
    "AbsurdAnswer",
    "AuthenticationFailed",
    "BadResponse",
    "BudgetExceeded",
    "Conflict",
    "CreditsExhausted",
    "DeadlineExceeded",
    "ErrorCode",
    "InvalidRequest",
    "JobRelayError",
    "LicenseMissing",
    "LocalBusy",
    "LocalRateLimited",
    "MalformedResponse",
    "NoResponse",
    "NotBefore",
    "NotFoundError",
    "OutcomeUnknown",
    "PermissionDenied",
    "RateLimitHints",
    "RateLimited",
    "RequestNotSent",
    "ResponseLost",
    "RetryBudgetExhausted",
    "ServerError",
    "UnknownJob",
    "UpstreamError",
    "not_before",
]


class ErrorCode(StrEnum):
    """The fixed enum of tool-failure codes (DESIGN.md section 1)."""

    RATE_LIMITED = "rate_limited"
    LOCAL_RATE_LIMITED = "local_rate_limited"
    CREDITS_EXHAUSTED = "credits_exhausted"
    LICENSE_MISSING = "license_missing"
    AUTH_FAILED = "auth_failed"
    PERMISSION_DENIED = "permission_denied"
    INVALID_INPUT = "invalid_input"
    NOT_FOUND = "not_found"
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_UNREACHABLE = "upstream_unreachable"
    UPSTREAM_DEGRADED = "upstream_degraded"
    OUTCOME_UNKNOWN = "outcome_unknown"
    BUDGET_EXCEEDED = "budget_exceeded"


@dataclass(frozen=True, slots=True)
class RateLimitHints:
    """What one response said about waiting. All durations are seconds from the response."""

    limit: int | None = None
    """Requests allowed per window (`X-RateLimit-Limit`, `RateLimit-Limit`, `RateLimit-Policy`)."""
    remaining: int | None = None
    """Requests left in the current window."""
    reset_after: float | None = None
    """Seconds until the window resets, skew-corrected with the `Date` header; never negative."""
    retry_after: float | None = None
    """Max of `Retry-After`, `retry-after-ms` and the envelope's `retry_after_seconds`."""
    window: float | None = None
    """Window length in seconds, when the server states it (`RateLimit-Policy` `w=`)."""
    credits: int | None = None
    """Seamless `X-PublicAPI-Credits`: research credits left for the org."""
    anomaly: str | None = None
    """Why a hint was discarded (e.g. an epoch misread as a delta), for logs; never for agents."""
    status: int | None = None
    """HTTP status of the response the hints came from, when known (429 makes the reset binding)."""
    passed: bool = False
    """A reset/retry header named a time already in the past: nothing left to wait for."""

    @property
    def blocked(self) -> bool:
        """The server said this window is used up: a 429, or `remaining: 0`."""
        return self.status == 429 or self.remaining == 0

    @property
    def not_before(self) -> float | None:
        """The server's "do not retry before" floor in seconds, if it gave one.

        `Retry-After` (and its siblings) take precedence over the reset headers, as the IETF
        draft requires; the reset is a floor only when the window is used up (RETRY_POLICY.md
        section C.4).
        """
        found = not_before(self)
        return found.seconds if found is not None else None


@dataclass(frozen=True, slots=True)
class NotBefore:
    """When the server lets us send again, and which hint said so."""

    seconds: float
    """Seconds from the response."""
    source: Literal["retry_after", "reset"]
    """`Retry-After` (or a sibling), or the window's reset."""


def not_before(
    hints: RateLimitHints | None,
    *,
    used_up: bool = False,
    retry_after_applies: bool = True,
    max_retry_after: float | None = None,
    reset_floor: float | None = None,
) -> NotBefore | None:
    """The one "do not send before" rule; every caller states its policy in the arguments.

    `Retry-After` (and its siblings) take precedence over the reset headers, as the IETF draft
    requires, when it `retry_after_applies` (the limiter believes it only on a 429) and is at
    most `max_retry_after`. The reset is a floor only when the window is used up (`hints.blocked`,
    or `used_up`: the caller knows it was a 429), raised to `reset_floor` (RETRY_POLICY.md
    sections B.4-B.5, C.4).
    """
    if hints is None:
        return None
    retry_after = hints.retry_after
    if (
        retry_after_applies
        and retry_after is not None
        and (max_retry_after is None or retry_after <= max_retry_after)
    ):
        return NotBefore(retry_after, "retry_after")
    if hints.reset_after is not None and (used_up or hints.blocked):
        reset = hints.reset_after
        return NotBefore(reset if reset_floor is None else max(reset, reset_floor), "reset")
    return None


class JobRelayError(Exception):
    """Base of every jobrelay failure."""

    code: ErrorCode = ErrorCode.UPSTREAM_ERROR
    retryable: bool = False

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider


class UpstreamError(JobRelayError):
    """Talking to an upstream went wrong."""

    paid: bool | None = None
    """Whether the request spends credits (a PAID call), set by the sender, which knows the
    request's kind; `None` when the error was built elsewhere (advice then goes by the route)."""

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        operation: str,
        method: str = "GET",
        path: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(message, provider=provider)
        self.operation = operation
        self.method = method
        self.path = path
        self.attempts = attempts

    @property
    def endpoint(self) -> str:
        """`METHOD /path/template`, the rate-limit bucket name."""
        return f"{self.method} {self.path}"


class NoResponse(UpstreamError):
    """No HTTP response arrived."""

    code = ErrorCode.UPSTREAM_UNREACHABLE
    retryable = True


class RequestNotSent(NoResponse):
    """The request never left: connect error, DNS, connect or pool timeout. Safe to replay."""


class ResponseLost(NoResponse):
    """The request was sent but no (complete) response came back. It may have been processed."""


class DeadlineExceeded(ResponseLost):
    """No complete answer before the tool call's deadline (`JOBRELAY_MAX_WAIT_SECONDS`, all
    attempts together): the attempt was cut, so it may have been processed. `retry_after`
    is when looking again is reasonable, seconds from when it was raised."""

    local_cut = True
    """Cut by jobrelay's own clock: not counted against the upstream's retry budget."""

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        operation: str,
        method: str = "GET",
        path: str = "",
        attempts: int = 1,
        retry_after: float = 30.0,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            operation=operation,
            method=method,
            path=path,
            attempts=attempts,
        )
        self.retry_after = retry_after


class BadResponse(UpstreamError):
    """An HTTP response arrived, but it is not the success we need."""

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        operation: str,
        method: str = "GET",
        path: str = "",
        status: int,
        api_code: str | None = None,
        request_id: str | None = None,
        hints: RateLimitHints | None = None,
        body_excerpt: str = "",
        details: dict[str, object] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            operation=operation,
            method=method,
            path=path,
            attempts=attempts,
        )
        self.status = status
        self.api_code = api_code
        self.request_id = request_id
        self.hints = hints or RateLimitHints()
        self.body_excerpt = body_excerpt
        self.details = details or {}


class InvalidRequest(BadResponse):
    code = ErrorCode.INVALID_INPUT


class AuthenticationFailed(BadResponse):
    code = ErrorCode.AUTH_FAILED


class CreditsExhausted(BadResponse):
    code = ErrorCode.CREDITS_EXHAUSTED


class PermissionDenied(BadResponse):
    code = ErrorCode.PERMISSION_DENIED


class NotFoundError(BadResponse):
    code = ErrorCode.NOT_FOUND


class Conflict(BadResponse):
    code = ErrorCode.UPSTREAM_ERROR
    retryable = True


class LicenseMissing(BadResponse):
    code = ErrorCode.LICENSE_MISSING


class RateLimited(BadResponse):
    code = ErrorCode.RATE_LIMITED
    retryable = True


class ServerError(BadResponse):
    code = ErrorCode.UPSTREAM_ERROR
    retryable = True


class MalformedResponse(BadResponse):
    code = ErrorCode.UPSTREAM_ERROR
    retryable = True


class AbsurdAnswer(MalformedResponse):
    """A 2xx whose content cannot be true, e.g. a research POST answered with more (or fewer)
    request ids than targets. Not trusted; on a paid POST it means "outcome unknown". Keeps a
    bounded sample of the ids (`sample`, at most `MAX_KEPT_IDS`) and their `count`."""

    MAX_KEPT_IDS = 1000

    def __init__(
        self,
        message: str,
        *,
        sample: list[str],
        count: int,
        expected: int,
        provider: Provider,
        operation: str,
        method: str = "GET",
        path: str = "",
        status: int,
        api_code: str | None = None,
        request_id: str | None = None,
        hints: RateLimitHints | None = None,
        body_excerpt: str = "",
        details: dict[str, object] | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(
            message,
            provider=provider,
            operation=operation,
            method=method,
            path=path,
            status=status,
            api_code=api_code,
            request_id=request_id,
            hints=hints,
            body_excerpt=body_excerpt,
            details=details,
            attempts=attempts,
        )
        self.sample = sample[: self.MAX_KEPT_IDS]
        self.count = count
        self.expected = expected


class LocalRateLimited(JobRelayError):
    """Our own token bucket cannot give a token within the call's deadline; nothing was sent."""

    code = ErrorCode.LOCAL_RATE_LIMITED
    retryable = True

    def __init__(self, message: str, *, provider: Provider, bucket: str, retry_after: float):
        super().__init__(message, provider=provider)
        self.bucket = bucket
        self.retry_after = retry_after


class LocalBusy(LocalRateLimited):
    """No connection of our own pool came free in time (httpx `PoolTimeout`): nothing was sent
    and the upstream was never asked, so it is not an upstream failure (never counted by the
    retry budget, never `upstream_degraded`)."""


class RetryBudgetExhausted(JobRelayError):
    """Too many recent retryable failures on one upstream: we stop retrying for a while."""

    code = ErrorCode.UPSTREAM_DEGRADED
    retryable = True

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        cause: UpstreamError | None = None,
        retry_after: float = 60.0,
        until: float | None = None,
    ):
        super().__init__(message, provider=provider)
        self.cause = cause
        self.retry_after = retry_after
        """Seconds from when it was raised until the announced instant."""
        self.until = until
        """The announced instant (epoch seconds): the breaker's fixed reopening time."""


class OutcomeUnknown(JobRelayError):
    """A credit-spending POST failed after it may have been processed. Never replayed."""

    code = ErrorCode.OUTCOME_UNKNOWN

    def __init__(self, message: str, *, provider: Provider, cause: UpstreamError) -> None:
        super().__init__(message, provider=provider)
        self.cause = cause


class BudgetExceeded(JobRelayError):
    """Starting this research would exceed JOBRELAY_CREDIT_BUDGET for the UTC day."""

    code = ErrorCode.BUDGET_EXCEEDED

    def __init__(
        self,
        message: str,
        *,
        provider: Provider,
        spent: int,
        budget: int,
        requested: int,
        resets_in: float,
    ) -> None:
        super().__init__(message, provider=provider)
        self.spent = spent
        self.budget = budget
        self.requested = requested
        self.resets_in = resets_in


class UnknownJob(JobRelayError):
    """A job handle or upstream id the ledger does not know (or that belongs to another tenant)."""

    code = ErrorCode.NOT_FOUND

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class InputProblem(JobRelayError):
    """Arguments jobrelay rejects before anything is sent; the message names the fix."""

    code = ErrorCode.INVALID_INPUT

    def __init__(
        self,
        message: str,
        *,
        field: str,
        provider: str | None = None,
        next_step: str | None = None,
    ) -> None:
        super().__init__(message, provider=provider)
        self.field = field
        self.next_step = next_step
        """Overrides the default "call the tool again with `field` fixed"."""


# ---- outside JobRelayError: turned into one of the above (or a CLI exit) where they are caught


class ConfigError(Exception):
    """The environment holds a value jobrelay cannot use; the message says which and why."""


class FilterProblem(ValueError):
    """A filter jobrelay will not send; `field` names the argument to fix."""

    def __init__(self, message: str, *, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class ShapeError(ValueError):
    """A 2xx body that parsed but does not have the documented shape (becomes Malformed)."""


class TokenError(Exception):
    """The token endpoint refused or answered something unusable; the message is safe."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
