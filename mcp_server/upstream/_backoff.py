"""When to retry, how long to wait, and when to stop (RETRY_POLICY.md section C, DESIGN.md 2).

Everything here is pure policy: no I/O, no sleeping. The HTTP client asks `decide()` after each
failed attempt and either sleeps `decision.delay` on its injected `Clock` or stops and maps
`decision.reason` to an error for the agent.

Testing switch: nothing in this module sleeps, and the clients sleep only through the injected
`Clock` (`mcp_server._clock`). Give them a `FakeClock` and every backoff is instant while the
computed delays stay observable (`FakeClock.slept`). Every random draw takes an injectable
`random.Random`, so a seeded one makes delays deterministic.

Request kinds decide what is safe to replay (DESIGN.md section 2.1):

- `READ`: search, poll, get job, org data. Replaying is harmless.
- `STREAM`: opening an SSE stream. Same rules as `READ`; reconnects after a drop follow
  `sse_reconnect_delay` instead.
- `PAID`: a credit-spending POST (Seamless research, AgentSEO workflow start). Replayed only
  when the upstream provably did not process it: `RequestNotSent`, or a 429 (after the
  reset). Any ambiguous failure stops with `StopReason.UNSAFE_TO_REPLAY`, which the client
  turns into `OutcomeUnknown`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Literal

from mcp_server.errors import (
    BadResponse,
    Conflict,
    JobRelayError,
    MalformedResponse,
    NoResponse,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    ServerError,
    not_before,
)
from mcp_server.upstream._headers import RateLimitHints

if TYPE_CHECKING:
    from mcp_server.config import Settings
    from mcp_server.models import Provider

__all__ = [
    "DEFAULT_POLICY",
    "BackoffKind",
    "BackoffPolicy",
    "RequestKind",
    "RetryBudget",
    "RetryDecision",
    "StopReason",
    "counts_against_budget",
    "decide",
    "full_jitter",
    "hint_jitter",
    "poll_interval",
    "retry_delay",
    "sse_reconnect_delay",
]

_RNG = random.Random()  # noqa: S311 - jitter de-synchronises clients; not a security use
_MAX_EXPONENT = 64  # 2**64 already dwarfs every cap; keeps the float maths finite

BackoffKind = Literal["transient", "rate_limit"]
"""Which backoff family applies when the server gave no usable hint."""


class RequestKind(StrEnum):
    """What a request is, as far as replaying it is concerned."""

    READ = "read"
    STREAM = "stream"
    PAID = "paid"


@dataclass(frozen=True, slots=True)
class BackoffPolicy:
    """The constants of RETRY_POLICY.md section C.2. Seconds unless named otherwise."""

    max_attempts: int = 3
    """Attempts per request, the first included (`JOBRELAY_RETRY_MAX_ATTEMPTS`)."""
    base: float = 1.0
    """5xx/network full-jitter base."""
    cap: float = 20.0
    """5xx/network full-jitter cap."""
    rate_limit_base: float = 2.0
    """429 full-jitter base, used only when the 429 carried no usable hint."""
    rate_limit_cap: float = 60.0
    min_delay: float = 0.1
    """A retry is never instant."""
    max_inline_wait: float = 20.0
    """Longest single sleep inside a tool call; a longer wait goes back to the agent."""
    max_hint: float = 3600.0
    """Server hints above this are treated as an anomaly and ignored."""
    conflict_retries: int = 1
    """A 409 on a read is retried at most this often (only as the first retry)."""
    budget_retry_after: float = 60.0
    """What to tell the agent when the retry budget is exhausted."""
    poll_start: float = 2.0
    poll_factor: float = 1.5
    poll_cap_seamless: float = 5.0
    poll_cap_agentseo: float = 10.0
    poll_jitter: float = 0.2
    """Poll and SSE delays are multiplied by U(1 - jitter, 1 + jitter)."""
    poll_min_hint: float = 1.0
    """A server's poll hint below this is raised to it, so a `0` never becomes a busy loop."""
    sse_base: float = 1.0
    sse_factor: float = 1.6
    sse_cap: float = 30.0
    sse_jitter: float = 0.2
    sse_max_reconnects: int = 3
    """Reconnects per tool call; the counter restarts after any received event."""

    @classmethod
    def from_settings(cls, settings: Settings) -> BackoffPolicy:
        """The default policy with the configured attempt cap."""
        return cls(max_attempts=settings.retry_max_attempts)


DEFAULT_POLICY = BackoffPolicy()


def _exp(base: float, factor: float, index: int) -> float:
    return base * factor ** min(max(0, index), _MAX_EXPONENT)


def full_jitter(
    retry_index: int, base: float, cap: float, rng: random.Random | None = None
) -> float:
    """AWS full jitter with a 0.1 s floor: `max(0.1, U(0, min(cap, base * 2**retry_index)))`.

    `retry_index` is 0 for the first retry.
    """
    rng = rng or _RNG
    return max(DEFAULT_POLICY.min_delay, rng.uniform(0.0, min(cap, _exp(base, 2.0, retry_index))))


def hint_jitter(floor: float, rng: random.Random | None = None) -> float:
    """A server's "not before" plus at most min(1 s, 10 %), so clients told the same reset
    instant do not all arrive at once (IETF ratelimit draft, "Resource exhaustion")."""
    rng = rng or _RNG
    return floor + rng.uniform(0.0, min(1.0, 0.1 * floor))


def _usable_hint(hint: float | None, policy: BackoffPolicy) -> float | None:
    if hint is None or not math.isfinite(hint) or not 0.0 <= hint <= policy.max_hint:
        return None
    return hint


def _hint_floor(hints: RateLimitHints | None, kind: BackoffKind) -> float | None:
    """The server's floor; on a 429 the reset binds even if the hints lack the status."""
    found = not_before(hints, used_up=kind == "rate_limit", reset_floor=1.0)
    return found.seconds if found is not None else None


def retry_delay(
    hints: RateLimitHints | None,
    retry_index: int,
    kind: BackoffKind = "transient",
    rng: random.Random | None = None,
    *,
    policy: BackoffPolicy = DEFAULT_POLICY,
) -> float:
    """Seconds to wait before retry number `retry_index` (0 = first retry), RETRY_POLICY C.4.

    A usable server hint (0..`max_hint` s) is a floor plus a little jitter; without one,
    full jitter with the transient (1 s/20 s) or rate-limit (2 s/60 s) constants.
    """
    floor = _usable_hint(_hint_floor(hints, kind), policy)
    if floor is not None:
        return max(policy.min_delay, hint_jitter(floor, rng))
    if kind == "rate_limit":
        return full_jitter(retry_index, policy.rate_limit_base, policy.rate_limit_cap, rng)
    return full_jitter(retry_index, policy.base, policy.cap, rng)


def _spread(value: float, jitter: float, rng: random.Random | None) -> float:
    return value * (rng or _RNG).uniform(1.0 - jitter, 1.0 + jitter)


def poll_interval(
    provider: Provider,
    poll_index: int,
    hint: float | None = None,
    rng: random.Random | None = None,
    *,
    policy: BackoffPolicy = DEFAULT_POLICY,
) -> float:
    """Seconds until the next status poll of a pending job (not a retry: no budget used).

    A server hint (`retry_after_seconds`, `Retry-After`) wins, floored at `poll_min_hint`;
    otherwise 2 s x 1.5**poll_index, capped at 5 s (Seamless) or 10 s (AgentSEO), x U(0.8, 1.2).
    """
    usable = _usable_hint(hint, policy)
    if usable is not None:
        return hint_jitter(max(usable, policy.poll_min_hint), rng)
    cap = policy.poll_cap_seamless if provider == "seamless" else policy.poll_cap_agentseo
    delay = min(cap, _exp(policy.poll_start, policy.poll_factor, poll_index))
    return _spread(delay, policy.poll_jitter, rng)


def sse_reconnect_delay(
    reconnect_index: int,
    server_retry_ms: float | None = None,
    rng: random.Random | None = None,
    *,
    policy: BackoffPolicy = DEFAULT_POLICY,
) -> float:
    """Seconds before SSE reconnect number `reconnect_index` (0 = first since the last event).

    `max(server retry:, 1 s x 1.6**n capped at 30 s x U(0.8, 1.2))`: the server's `retry:`
    field (ms) is a floor, our own backoff protects a server that asks for too little.
    """
    backoff = _spread(
        min(policy.sse_cap, _exp(policy.sse_base, policy.sse_factor, reconnect_index)),
        policy.sse_jitter,
        rng,
    )
    server = None if server_retry_ms is None else server_retry_ms / 1000.0
    usable = _usable_hint(server, policy)
    return backoff if usable is None else max(usable, backoff)


class RetryBudget:
    """gRPC-style retry throttling for one upstream (RETRY_POLICY.md section C.5), with a
    breaker that keeps its word (issue 20.6).

    Starts full at `max_tokens`. Each retryable-class failure costs 1 token, each success earns
    `token_ratio`; retries are allowed only while tokens exceed `threshold`. First attempts
    never consult it, so one success after an outage re-opens retries. Keep one per upstream.

    When a retry is refused the breaker *opens* (`trip`): no automatic retries until one fixed
    instant, `open_until` (monotonic) / `open_until_epoch` (whole epoch seconds, what agents
    are told). Later refusals while it is open announce the same instant; it never moves
    later. From that instant the breaker is *half-open*: the next outcome decides, a success
    closes it with a full budget, a failure opens it again for another cooldown.
    """

    def __init__(
        self, max_tokens: float = 10.0, token_ratio: float = 0.1, threshold: float = 5.0
    ) -> None:
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self.threshold = threshold
        self._tokens = max_tokens
        self.open_until: float | None = None
        self.open_until_epoch: float | None = None
        self.trips = 0
        """Times the breaker opened (for tests and benchmarks)."""

    @property
    def tokens(self) -> float:
        return self._tokens

    def is_open(self, now: float | None) -> bool:
        """Open (retries paused until the announced instant) at monotonic `now`."""
        return self.open_until is not None and now is not None and now < self.open_until

    def can_retry(self, now: float | None = None) -> bool:
        if self.is_open(now):
            return False
        return self._tokens > self.threshold + 1e-9

    def trip(self, now: float, now_epoch: float, cooldown: float) -> tuple[float, float]:
        """Open the breaker (if it is not open already) and return the announced instant as
        (monotonic, epoch). While open, every caller gets the same instant."""
        if self.is_open(now) and self.open_until is not None and self.open_until_epoch:
            return self.open_until, self.open_until_epoch
        until_epoch = float(math.ceil(now_epoch + cooldown))
        until = now + (until_epoch - now_epoch)
        self.open_until, self.open_until_epoch = until, until_epoch
        self.trips += 1
        return until, until_epoch

    def record_success(self, now: float | None = None) -> None:
        if self.open_until is not None and now is not None and now >= self.open_until:
            # Half-open probe succeeded: close with a full budget.
            self.open_until = self.open_until_epoch = None
            self._tokens = self.max_tokens
            return
        self._tokens = min(self.max_tokens, round(self._tokens + self.token_ratio, 9))

    def record_failure(self) -> None:
        self._tokens = max(0.0, round(self._tokens - 1.0, 9))

    def record(self, error: JobRelayError | None, now: float | None = None) -> None:
        """Book one attempt's outcome: `None` is a success; only retryable-class failures
        (network, 5xx, 408, 429, malformed) cost a token. 4xx, pending polls and local-limiter
        rejections are not the upstream's health and are not counted. `now` (monotonic) lets
        a success after the announced instant close the breaker."""
        if error is None:
            self.record_success(now)
        elif counts_against_budget(error):
            self.record_failure()


def counts_against_budget(error: JobRelayError) -> bool:
    """Whether `error` says something about the upstream's health (RETRY_POLICY C.5).

    An attempt cut by the call's own deadline (`local_cut`) does not: how long it had was
    jobrelay's decision, not the upstream's failure."""
    if getattr(error, "local_cut", False):
        return False
    if isinstance(error, NoResponse | RateLimited | ServerError | MalformedResponse):
        return True
    return isinstance(error, BadResponse) and (error.status in {408, 429} or error.status >= 500)


class StopReason(StrEnum):
    """Why `decide()` said not to retry; each maps to one outcome for the agent."""

    NOT_RETRYABLE = "not_retryable"
    """Retrying cannot help (4xx, local errors): surface the error itself."""
    UNSAFE_TO_REPLAY = "unsafe_to_replay"
    """A PAID request may have been processed: raise `OutcomeUnknown`, never replay."""
    ATTEMPTS_EXHAUSTED = "attempts_exhausted"
    """`max_attempts` reached: surface the last error with the attempt count."""
    BUDGET_EXHAUSTED = "budget_exhausted"
    """The upstream's retry budget is spent: raise `RetryBudgetExhausted`."""
    WAIT_TOO_LONG = "wait_too_long"
    """The wait exceeds `max_inline_wait`: don't sleep, return `retry_after` to the agent."""
    DEADLINE = "deadline"
    """The wait would end after the call's deadline: don't sleep, return `retry_after`."""


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """The outcome of `decide()`. Exactly one of `delay` (retry) and `reason` (stop) is set."""

    retry: bool
    delay: float | None = None
    """Seconds to sleep before the next attempt (when `retry`)."""
    reason: StopReason | None = None
    """Why not (when not `retry`)."""
    retry_after: float | None = None
    """When stopping but coming back later can help: the wait to give the agent, seconds."""

    @classmethod
    def again(cls, delay: float) -> RetryDecision:
        return cls(retry=True, delay=delay)

    @classmethod
    def stop(cls, reason: StopReason, retry_after: float | None = None) -> RetryDecision:
        return cls(retry=False, reason=reason, retry_after=retry_after)


def _classify(
    kind: RequestKind, error: JobRelayError, attempt: int, policy: BackoffPolicy
) -> BackoffKind | StopReason:
    """The table of RETRY_POLICY.md C.6: a backoff family if retrying is allowed, else why not.

    STREAM connects follow the READ rules; only PAID requests are restricted.
    """
    paid = kind is RequestKind.PAID
    if isinstance(error, RequestNotSent):
        return "transient"
    if isinstance(error, ResponseLost):
        return StopReason.UNSAFE_TO_REPLAY if paid else "transient"
    if isinstance(error, NoResponse):
        # Not known to be unsent: treat like a lost response.
        return StopReason.UNSAFE_TO_REPLAY if paid else "transient"
    if not isinstance(error, BadResponse):
        return StopReason.NOT_RETRYABLE
    if isinstance(error, RateLimited) or error.status == 429:
        return "rate_limit"  # rejected before processing: safe even for PAID, after the reset
    if isinstance(error, MalformedResponse):
        # A garbled 2xx on a PAID POST means it *was* processed; a retry would pay twice.
        return StopReason.UNSAFE_TO_REPLAY if paid else "transient"
    if isinstance(error, ServerError) or error.status >= 500 or error.status == 408:
        return StopReason.UNSAFE_TO_REPLAY if paid else "transient"
    if isinstance(error, Conflict) or error.status == 409:
        if paid or attempt > policy.conflict_retries:
            return StopReason.NOT_RETRYABLE
        return "transient"
    return StopReason.NOT_RETRYABLE


def decide(
    kind: RequestKind,
    error: JobRelayError,
    attempt: int,
    *,
    policy: BackoffPolicy = DEFAULT_POLICY,
    budget: RetryBudget | None = None,
    now: float | None = None,
    deadline: float | None = None,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Whether to retry after attempt number `attempt` (1 = the first) failed with `error`.

    `deadline` and `now` are monotonic seconds on the caller's clock: a delay that would end
    after the deadline, or that exceeds `policy.max_inline_wait`, is not slept but returned to
    the agent. The budget is only read; the caller books outcomes with `budget.record()`.
    Order of checks: the classification table, the attempt cap, the budget, then the wait.
    """
    if deadline is not None and now is None:
        raise ValueError("decide(): a deadline needs the current monotonic time `now`")
    verdict = _classify(kind, error, attempt, policy)
    if isinstance(verdict, StopReason):
        return RetryDecision.stop(verdict)
    hints = error.hints if isinstance(error, BadResponse) else None
    delay = retry_delay(hints, attempt - 1, verdict, rng, policy=policy)
    if attempt >= policy.max_attempts:
        return RetryDecision.stop(StopReason.ATTEMPTS_EXHAUSTED, delay)
    if budget is not None and not budget.can_retry(now):
        wait = max(policy.budget_retry_after, delay)
        return RetryDecision.stop(StopReason.BUDGET_EXHAUSTED, wait)
    if delay > policy.max_inline_wait:
        return RetryDecision.stop(StopReason.WAIT_TOO_LONG, delay)
    if deadline is not None and now is not None and now + delay > deadline:
        return RetryDecision.stop(StopReason.DEADLINE, delay)
    return RetryDecision.again(delay)
