"""Backoff, the retry decision table (RETRY_POLICY.md C.6), and the retry budget."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from mcp_server.config import load_settings
from mcp_server.errors import (
    AuthenticationFailed,
    BadResponse,
    BudgetExceeded,
    Conflict,
    CreditsExhausted,
    InvalidRequest,
    JobRelayError,
    LicenseMissing,
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
from mcp_server.upstream._backoff import (
    DEFAULT_POLICY,
    BackoffPolicy,
    RequestKind,
    RetryBudget,
    RetryDecision,
    StopReason,
    counts_against_budget,
    decide,
    full_jitter,
    poll_interval,
    retry_delay,
    sse_reconnect_delay,
)
from mcp_server.upstream._headers import RateLimitHints

READ, STREAM, PAID = RequestKind.READ, RequestKind.STREAM, RequestKind.PAID


class Edge(random.Random):
    """An RNG whose `uniform` always returns the low or the high end: exact golden delays."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


LOW, HIGH = Edge(high=False), Edge(high=True)


def seeded(seed: int = 1234) -> random.Random:
    return random.Random(seed)  # noqa: S311 - seeded jitter for deterministic tests


def bad(cls: type[BadResponse], status: int, hints: RateLimitHints | None = None) -> BadResponse:
    return cls(
        "upstream said no",
        provider="seamless",
        operation="research_contacts",
        method="POST",
        path="/contacts/research",
        status=status,
        hints=hints,
    )


def not_sent() -> RequestNotSent:
    return RequestNotSent("connect failed", provider="agentseo", operation="start")


def lost() -> ResponseLost:
    return ResponseLost("read timeout", provider="agentseo", operation="start")


# --- full jitter ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_index", "ceiling"), [(0, 1.0), (1, 2.0), (2, 4.0), (4, 16.0), (5, 20.0), (9, 20.0)]
)
def test_full_jitter_spans_zero_to_the_capped_exponential(retry_index: int, ceiling: float) -> None:
    assert full_jitter(retry_index, 1.0, 20.0, HIGH) == ceiling
    assert full_jitter(retry_index, 1.0, 20.0, LOW) == 0.1  # never instant
    rng = seeded()
    samples = [full_jitter(retry_index, 1.0, 20.0, rng) for _ in range(2000)]
    assert all(0.1 <= s <= ceiling for s in samples)
    # Full jitter, not "equal jitter": the whole range is used.
    assert min(samples) < 0.1 * ceiling + 0.1
    assert max(samples) > 0.9 * ceiling


def test_full_jitter_survives_absurd_retry_indexes() -> None:
    assert full_jitter(10**6, 1.0, 20.0, HIGH) == 20.0
    assert full_jitter(-3, 1.0, 20.0, HIGH) == 1.0


# --- retry_delay: hints are a floor -----------------------------------------------------------


def test_a_retry_after_hint_is_a_floor_with_at_most_ten_percent_jitter() -> None:
    hints = RateLimitHints(retry_after=5.0, status=503)
    assert retry_delay(hints, 0, "transient", LOW) == 5.0
    assert retry_delay(hints, 0, "transient", HIGH) == 5.5


def test_hint_jitter_is_at_most_one_second() -> None:
    hints = RateLimitHints(retry_after=40.0)
    assert retry_delay(hints, 0, "transient", HIGH) == 41.0


def test_the_reset_binds_on_a_429_even_without_remaining_zero() -> None:
    hints = RateLimitHints(reset_after=30.0, remaining=None)
    assert retry_delay(hints, 0, "rate_limit", LOW) == 30.0
    assert retry_delay(hints, 0, "rate_limit", HIGH) == 31.0


def test_the_reset_does_not_bind_a_5xx_with_remaining_quota() -> None:
    hints = RateLimitHints(reset_after=30.0, remaining=12, status=503)
    assert retry_delay(hints, 0, "transient", HIGH) == 1.0  # plain full jitter, first retry


def test_a_zero_reset_on_a_429_still_waits_one_second() -> None:
    assert retry_delay(RateLimitHints(reset_after=0.0), 0, "rate_limit", LOW) == 1.0


def test_hints_above_an_hour_are_ignored_in_favour_of_backoff() -> None:
    hints = RateLimitHints(retry_after=5000.0, status=429)
    assert retry_delay(hints, 0, "rate_limit", HIGH) == 2.0
    assert retry_delay(hints, 3, "rate_limit", HIGH) == 16.0
    assert retry_delay(hints, 9, "rate_limit", HIGH) == 60.0


def test_transient_backoff_without_hints() -> None:
    assert [retry_delay(None, i, "transient", HIGH) for i in range(6)] == [1, 2, 4, 8, 16, 20]


# --- poll and SSE schedules -------------------------------------------------------------------


def test_seamless_poll_schedule_2s_times_1_5_capped_at_5s_with_20_percent_jitter() -> None:
    assert [poll_interval("seamless", i, None, LOW) for i in range(4)] == pytest.approx(
        [1.6, 2.4, 3.6, 4.0]
    )
    assert [poll_interval("seamless", i, None, HIGH) for i in range(4)] == pytest.approx(
        [2.4, 3.6, 5.4, 6.0]
    )


def test_agentseo_poll_schedule_caps_at_10s() -> None:
    assert [poll_interval("agentseo", i, None, LOW) for i in range(6)] == pytest.approx(
        [1.6, 2.4, 3.6, 5.4, 8.0, 8.0]
    )


def test_a_poll_hint_wins_but_never_below_one_second() -> None:
    assert poll_interval("agentseo", 7, 2.0, LOW) == 2.0
    assert poll_interval("agentseo", 7, 2.0, HIGH) == pytest.approx(2.2)
    assert poll_interval("agentseo", 0, 0.0, LOW) == 1.0
    assert poll_interval("agentseo", 0, -4.0, LOW) == 1.6  # unusable hint: schedule


def test_sse_reconnect_backoff_and_server_retry_floor() -> None:
    assert [sse_reconnect_delay(i, None, LOW) for i in range(3)] == pytest.approx(
        [0.8, 1.28, 2.048]
    )
    assert sse_reconnect_delay(20, None, HIGH) == pytest.approx(36.0)  # 30 s cap, +20 %
    assert sse_reconnect_delay(0, 5000, HIGH) == 5.0  # server's retry: wins when larger
    assert sse_reconnect_delay(0, 100, HIGH) == pytest.approx(1.2)  # ours wins when larger
    assert sse_reconnect_delay(0, 10**12, LOW) == pytest.approx(0.8)  # absurd retry: ignored


# --- decide(): the classification table ------------------------------------------------------

RETRY = "retry"
Factory = Callable[[], JobRelayError]

ROWS: list[tuple[str, Factory, dict[RequestKind, str | StopReason]]] = [
    ("connect error", not_sent, {READ: RETRY, STREAM: RETRY, PAID: RETRY}),
    (
        "read timeout after send",
        lost,
        {READ: RETRY, STREAM: RETRY, PAID: StopReason.UNSAFE_TO_REPLAY},
    ),
    ("400", lambda: bad(InvalidRequest, 400), dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE)),
    (
        "401",
        lambda: bad(AuthenticationFailed, 401),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "402 credits",
        lambda: bad(CreditsExhausted, 402),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "403",
        lambda: bad(PermissionDenied, 403),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    ("404", lambda: bad(NotFoundError, 404), dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE)),
    (
        "422 credits",
        lambda: bad(CreditsExhausted, 422),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "422 license",
        lambda: bad(LicenseMissing, 422),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "408",
        lambda: bad(BadResponse, 408),
        {READ: RETRY, STREAM: RETRY, PAID: StopReason.UNSAFE_TO_REPLAY},
    ),
    (
        "409",
        lambda: bad(Conflict, 409),
        {READ: RETRY, STREAM: RETRY, PAID: StopReason.NOT_RETRYABLE},
    ),
    (
        "429",
        lambda: bad(RateLimited, 429, RateLimitHints(remaining=0, reset_after=3.0, status=429)),
        {READ: RETRY, STREAM: RETRY, PAID: RETRY},
    ),
    *[
        (
            str(status),
            (lambda s=status: bad(ServerError, s)),
            {READ: RETRY, STREAM: RETRY, PAID: StopReason.UNSAFE_TO_REPLAY},
        )
        for status in (500, 502, 503, 504)
    ],
    (
        "malformed 2xx",
        lambda: bad(MalformedResponse, 202),
        {READ: RETRY, STREAM: RETRY, PAID: StopReason.UNSAFE_TO_REPLAY},
    ),
    (
        "local limiter",
        lambda: LocalRateLimited("x", provider="seamless", bucket="GET /contacts", retry_after=3),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "retry budget",
        lambda: RetryBudgetExhausted("x", provider="seamless"),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "outcome unknown",
        lambda: OutcomeUnknown("x", provider="seamless", cause=lost()),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "credit budget",
        lambda: BudgetExceeded(
            "x", provider="seamless", spent=1, budget=1, requested=1, resets_in=5
        ),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
    (
        "unknown job",
        lambda: UnknownJob("x", job_id="sea_1"),
        dict.fromkeys(RequestKind, StopReason.NOT_RETRYABLE),
    ),
]

CASES = [
    pytest.param(factory, kind, expected, id=f"{name}-{kind}")
    for name, factory, table in ROWS
    for kind, expected in table.items()
]


@pytest.mark.parametrize(("factory", "kind", "expected"), CASES)
def test_first_failure_follows_the_classification_table(
    factory: Factory, kind: RequestKind, expected: str | StopReason
) -> None:
    decision = decide(kind, factory(), 1, rng=seeded())
    if expected == RETRY:
        assert decision.retry
        assert decision.delay is not None
        assert 0.1 <= decision.delay <= DEFAULT_POLICY.max_inline_wait
        assert decision.reason is None
    else:
        assert decision == RetryDecision(retry=False, reason=StopReason(expected))


@pytest.mark.parametrize("kind", list(RequestKind))
def test_a_429_is_retried_only_after_the_reset(kind: RequestKind) -> None:
    error = bad(RateLimited, 429, RateLimitHints(remaining=0, reset_after=7.0, status=429))
    assert decide(kind, error, 1, rng=LOW) == RetryDecision.again(7.0)
    assert decide(kind, error, 1, rng=HIGH) == RetryDecision.again(7.7)


def test_a_429_without_hints_uses_the_rate_limit_backoff() -> None:
    assert decide(PAID, bad(RateLimited, 429), 2, rng=HIGH) == RetryDecision.again(4.0)


def test_a_503_retry_after_is_honoured_on_reads() -> None:
    error = bad(ServerError, 503, RateLimitHints(retry_after=3.0, status=503))
    assert decide(READ, error, 1, rng=LOW) == RetryDecision.again(3.0)


def test_a_conflict_is_retried_once_on_reads() -> None:
    assert decide(READ, bad(Conflict, 409), 1, rng=HIGH) == RetryDecision.again(1.0)
    assert decide(READ, bad(Conflict, 409), 2, rng=HIGH) == RetryDecision.stop(
        StopReason.NOT_RETRYABLE
    )


@pytest.mark.parametrize("kind", list(RequestKind))
@pytest.mark.parametrize(
    "factory",
    [lost, lambda: bad(ServerError, 500), lambda: bad(MalformedResponse, 202)],
    ids=["response-lost", "500", "malformed"],
)
def test_paid_requests_are_never_replayed_after_an_ambiguous_failure_at_any_attempt(
    kind: RequestKind, factory: Factory
) -> None:
    for attempt in (1, 2):
        decision = decide(kind, factory(), attempt, rng=seeded())
        assert decision.retry is (kind is not PAID)
        if kind is PAID:
            assert decision.reason is StopReason.UNSAFE_TO_REPLAY


# --- attempt caps, deadlines, inline wait ------------------------------------------------------


def test_three_attempts_by_default() -> None:
    assert decide(READ, not_sent(), 2, rng=HIGH) == RetryDecision.again(2.0)
    assert decide(READ, not_sent(), 3, rng=HIGH) == RetryDecision.stop(
        StopReason.ATTEMPTS_EXHAUSTED, 4.0
    )


def test_the_attempt_cap_comes_from_settings() -> None:
    policy = BackoffPolicy.from_settings(load_settings({"JOBRELAY_RETRY_MAX_ATTEMPTS": "5"}))
    assert policy.max_attempts == 5
    assert decide(READ, not_sent(), 4, policy=policy, rng=HIGH) == RetryDecision.again(8.0)
    assert decide(READ, not_sent(), 5, policy=policy, rng=HIGH).reason is (
        StopReason.ATTEMPTS_EXHAUSTED
    )
    single = BackoffPolicy(max_attempts=1)
    assert decide(READ, not_sent(), 1, policy=single).reason is StopReason.ATTEMPTS_EXHAUSTED


def test_a_wait_past_the_deadline_is_returned_not_slept() -> None:
    error = bad(RateLimited, 429, RateLimitHints(remaining=0, reset_after=10.0, status=429))
    decision = decide(PAID, error, 1, now=100.0, deadline=105.0, rng=LOW)
    assert decision == RetryDecision.stop(StopReason.DEADLINE, 10.0)
    assert decide(PAID, error, 1, now=100.0, deadline=110.0, rng=LOW) == RetryDecision.again(10.0)


def test_a_wait_longer_than_the_inline_cap_is_returned_to_the_agent() -> None:
    error = bad(RateLimited, 429, RateLimitHints(remaining=0, reset_after=37.0, status=429))
    decision = decide(PAID, error, 1, now=0.0, deadline=1000.0, rng=HIGH)
    assert decision == RetryDecision.stop(StopReason.WAIT_TOO_LONG, 38.0)


def test_a_deadline_without_now_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="needs the current monotonic time"):
        decide(READ, not_sent(), 1, deadline=5.0)


def test_the_decision_is_deterministic_under_a_seeded_rng() -> None:
    first = [decide(READ, not_sent(), a, rng=seeded(7)) for a in (1, 2)]
    again = [decide(READ, not_sent(), a, rng=seeded(7)) for a in (1, 2)]
    assert first == again


# --- retry budget ----------------------------------------------------------------------------


def test_budget_arithmetic() -> None:
    budget = RetryBudget()
    assert budget.tokens == 10.0
    for _ in range(4):
        budget.record_failure()
    assert budget.tokens == 6.0
    assert budget.can_retry()
    budget.record_failure()
    assert budget.tokens == 5.0
    assert not budget.can_retry()  # strictly above the threshold
    budget.record_success()
    assert budget.tokens == 5.1
    assert budget.can_retry()  # one success re-opens retries
    for _ in range(100):
        budget.record_success()
    assert budget.tokens == 10.0  # capped
    for _ in range(100):
        budget.record_failure()
    assert budget.tokens == 0.0  # floored


def test_only_retryable_class_failures_cost_budget_tokens() -> None:
    budget = RetryBudget()
    free: list[JobRelayError] = [
        bad(InvalidRequest, 400),
        bad(NotFoundError, 404),
        bad(Conflict, 409),
        bad(CreditsExhausted, 422),
        LocalRateLimited("x", provider="seamless", bucket="b", retry_after=1.0),
    ]
    for error in free:
        assert not counts_against_budget(error)
        budget.record(error)
    assert budget.tokens == 10.0
    costly: list[JobRelayError] = [
        not_sent(),
        lost(),
        bad(ServerError, 502),
        bad(RateLimited, 429),
        bad(MalformedResponse, 200),
        bad(BadResponse, 408),
    ]
    for error in costly:
        assert counts_against_budget(error)
        budget.record(error)
    assert budget.tokens == 4.0
    budget.record(None)
    assert budget.tokens == 4.1


def test_an_exhausted_budget_stops_retries_and_suggests_a_minute() -> None:
    budget = RetryBudget()
    for _ in range(5):
        budget.record_failure()
    decision = decide(READ, bad(ServerError, 500), 1, budget=budget, rng=HIGH)
    assert decision == RetryDecision.stop(StopReason.BUDGET_EXHAUSTED, 60.0)
    # The budget never blocks what the table refuses anyway.
    assert decide(READ, bad(NotFoundError, 404), 1, budget=budget).reason is (
        StopReason.NOT_RETRYABLE
    )
