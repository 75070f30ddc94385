"""The retry loop every upstream call runs, and the replay-safety rule it keeps.

Each failure is marked with how many attempts it took and whether the call spends credits
(`paid`, carried on the error so advice never guesses it), counted by the retry budget, and
handed to `_backoff.decide`. A credit-spending POST is replayed only when it was provably not
processed; when it may have been, the caller gets `OutcomeUnknown` instead of a second charge.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import NoReturn, TypeVar

from mcp_server._clock import Clock
from mcp_server.errors import LocalRateLimited, UpstreamError
from mcp_server.upstream._backoff import (
    BackoffPolicy,
    RequestKind,
    RetryBudget,
    StopReason,
    decide,
)
from mcp_server.upstream._client import Call
from mcp_server.upstream._failures import Failures

__all__ = ["Retrier"]

R = TypeVar("R")


class Retrier:
    """Runs one upstream's calls to success, or to the error that ends them."""

    def __init__(
        self, failures: Failures, clock: Clock, policy: BackoffPolicy, budget: RetryBudget
    ) -> None:
        self._failures = failures
        self.clock = clock
        self.policy = policy
        self.budget = budget

    async def run(
        self, call: Call, attempt: Callable[[int], Awaitable[R]], *, deadline: float
    ) -> R:
        """`attempt(n)` for n = 1, 2, ... until it succeeds or `decide` says stop.

        Raises: `LocalRateLimited` (nothing sent; after a retry, the upstream's last answer
        instead), the last `UpstreamError` (with `.attempts` and `.paid`), `OutcomeUnknown`
        (PAID call that may have been processed), `RetryBudgetExhausted`.
        """
        number = 0
        last: UpstreamError | None = None
        while True:
            number += 1
            try:
                result = await attempt(number)
            except LocalRateLimited as exc:
                if last is None:
                    raise
                # A retry found no slot in time: the upstream's own answer says more.
                raise last from exc
            except UpstreamError as err:
                err.attempts = number
                err.paid = call.kind is RequestKind.PAID
                self.budget.record(err, self.clock.monotonic())
                decision = decide(
                    call.kind,
                    err,
                    number,
                    policy=self.policy,
                    budget=self.budget,
                    now=self.clock.monotonic(),
                    deadline=deadline,
                )
                if decision.retry and decision.delay is not None:
                    last = err
                    await self.clock.sleep(decision.delay)
                    continue
                self._give_up(call, err, decision.reason)
            else:
                self.budget.record(None, self.clock.monotonic())
                return result

    def _give_up(self, call: Call, err: UpstreamError, reason: StopReason | None) -> NoReturn:
        if reason is StopReason.UNSAFE_TO_REPLAY:
            raise self._failures.outcome_unknown(call, err) from err
        if reason is StopReason.BUDGET_EXHAUSTED:
            now = self.clock.monotonic()
            until, until_epoch = self.budget.trip(
                now, self.clock.time(), self.policy.budget_retry_after
            )
            raise self._failures.degraded(
                err, retry_after=max(0.0, until - now), until=until_epoch
            ) from err
        raise err
