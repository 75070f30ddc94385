"""The in-process `Limiter`: token buckets in this process's memory (see `limits.base`)."""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

import anyio

from mcp_server._clock import Clock
from mcp_server.config import Plan
from mcp_server.errors import LocalRateLimited, not_before
from mcp_server.limits.base import (
    SAFETY,
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    Limiter,
    default_spec,
    effective_burst,
)
from mcp_server.models import Provider
from mcp_server.upstream import DEFAULT_POLICY, RateLimitHints, hint_jitter

__all__ = ["InMemoryLimiter"]

_log = logging.getLogger(__name__)
_EPS = 1e-9


class _Bucket:
    """State of one bucket. Times are monotonic seconds of the limiter's clock."""

    def __init__(self, spec: BucketSpec, safety: float, now: float) -> None:
        self.safety = safety
        self.configured_burst = spec.burst
        self.limit = spec.limit
        self.window = spec.window
        self.burst = effective_burst(spec.limit, spec.burst, safety)
        self.tokens = float(self.burst)
        self.updated = now
        self.blocked_until = -math.inf
        self.queued = 0.0
        self.lock = anyio.Lock()
        self.sent: deque[float] = deque()
        self.server_remaining: int | None = None
        self.server_fresh_until = -math.inf
        self.sent_since_seen = 0
        self.reset_at: float | None = None

    @property
    def rate(self) -> float:
        return self.limit / self.window * self.safety

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def eta(self, now: float, need: float) -> float:
        """Seconds until `need` tokens (this caller plus those queued ahead) are available."""
        start = max(now, self.blocked_until)
        available = min(float(self.burst), self.tokens + (start - now) * self.rate)
        if available >= need - _EPS:
            return start - now
        return start - now + (need - available) / self.rate

    def set_limit(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.burst = effective_burst(limit, self.configured_burst, self.safety)
        self.tokens = min(self.tokens, float(self.burst))

    def record_send(self, now: float) -> None:
        self.sent.append(now)
        self.sent_since_seen += 1
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()

    def remaining(self, now: float) -> int:
        if self.blocked_until > now:
            return 0
        self.prune(now)
        estimate = self.limit - len(self.sent)
        if self.server_remaining is not None and now < self.server_fresh_until:
            estimate = min(estimate, self.server_remaining - self.sent_since_seen)
        return max(0, estimate)


class InMemoryLimiter:
    """Token buckets in this process (RETRY_POLICY.md C.7); see the module docstring.

    `spec_for` overrides the starting limits per bucket (default: `default_spec` with the plan).
    `rng` jitters the end of a block so clients told the same reset do not stampede.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        agentseo_plan: Plan = Plan.HOBBY,
        safety: float = SAFETY,
        max_inline_wait: float = DEFAULT_POLICY.max_inline_wait,
        max_hint: float = DEFAULT_POLICY.max_hint,
        spec_for: Callable[[BucketKey], BucketSpec] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < safety <= 1.0:
            raise ValueError("safety must be in (0, 1]")
        self._clock = clock
        self._plan = agentseo_plan
        self._safety = safety
        self._max_inline_wait = max_inline_wait
        self._max_hint = max_hint
        self._spec_for = spec_for
        self._rng = rng
        self._buckets: dict[BucketKey, _Bucket] = {}
        self._credits: dict[tuple[Provider, str], int] = {}

    def _bucket(self, key: BucketKey) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            spec = self._spec_for(key) if self._spec_for else default_spec(key, self._plan)
            bucket = _Bucket(spec, self._safety, self._clock.monotonic())
            self._buckets[key] = bucket
        return bucket

    def _refuse_if_too_long(
        self, key: BucketKey, wait: float, started: float, now: float, deadline: float | None
    ) -> None:
        too_long = (now - started) + wait > self._max_inline_wait + _EPS
        if too_long or (deadline is not None and now + wait > deadline + _EPS):
            raise LocalRateLimited(
                f"Local rate guard: {key.bucket} exhausted; next slot in {math.ceil(wait)}s.",
                provider=key.provider,
                bucket=key.bucket,
                retry_after=wait,
            )

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Take `cost` tokens, waiting in FIFO order; return the seconds waited.

        The wait is predicted on entry (counting everyone queued ahead) and refused at once
        when it does not fit; it is checked again after each sleep in case a 429 arrived
        meanwhile. A cost above the burst waits for a full bucket and leaves it in debt.
        """
        if not (math.isfinite(cost) and cost > 0):
            raise ValueError("cost must be a positive number")
        bucket = self._bucket(key)
        started = self._clock.monotonic()
        bucket.refill(started)
        need = min(cost, float(bucket.burst))
        self._refuse_if_too_long(
            key, bucket.eta(started, bucket.queued + need), started, started, deadline
        )
        bucket.queued += need
        try:
            async with bucket.lock:
                while True:
                    now = self._clock.monotonic()
                    bucket.refill(now)
                    wait = bucket.eta(now, min(cost, float(bucket.burst)))
                    if wait <= _EPS:
                        break
                    self._refuse_if_too_long(key, wait, started, now, deadline)
                    await self._clock.sleep(wait)
                bucket.tokens -= cost
                bucket.record_send(now)
        finally:
            bucket.queued -= need
        return self._clock.monotonic() - started

    def _block_wait(self, bucket: _Bucket, status: int, hints: RateLimitHints) -> float | None:
        """How long the server told us to stop, per RETRY_POLICY.md B.4-B.5, or None."""
        found = not_before(
            hints,
            used_up=status == 429,
            retry_after_applies=status == 429,  # a 503's Retry-After is not about the window
            max_retry_after=self._max_hint,
            reset_floor=1.0,
        )
        if found is not None and found.source == "reset":
            reset = hints.reset_after or 0.0
            if reset > 2 * bucket.window:
                # Suspicious for a per-window limit: probably a misread reset. Block for one
                # window; if the server disagrees it will say so again with a fresh 429.
                _log.warning(
                    "reset of %.0f s on a %.0f s window looks wrong; blocking %.0f s",
                    reset,
                    bucket.window,
                    bucket.window,
                )
                return bucket.window
        return found.seconds if found is not None else None

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the bucket from a response: the server's numbers win over our estimate."""
        bucket = self._bucket(key)
        now = self._clock.monotonic()
        bucket.refill(now)
        if hints.credits is not None:
            self._credits[(key.provider, key.key_fingerprint)] = hints.credits
        window = hints.window if hints.window is not None else bucket.window
        if hints.limit is not None and (hints.limit != bucket.limit or window != bucket.window):
            bucket.set_limit(hints.limit, window)
        if hints.remaining is not None:
            bucket.tokens = min(bucket.tokens, float(hints.remaining))
            bucket.server_remaining = hints.remaining
            bucket.sent_since_seen = 0
            fresh = hints.reset_after if hints.reset_after is not None else bucket.window
            bucket.server_fresh_until = now + fresh
        if hints.reset_after is not None:
            bucket.reset_at = now + hints.reset_after
        wait = self._block_wait(bucket, status, hints)
        if wait is not None:
            bucket.tokens = min(bucket.tokens, 0.0)
            bucket.blocked_until = max(bucket.blocked_until, now + hint_jitter(wait, self._rng))
        elif status == 429:
            bucket.tokens = min(bucket.tokens, 0.0)  # no usable hint: the refill paces us

    async def snapshot(self) -> list[BucketSnapshot]:
        now = self._clock.monotonic()
        out: list[BucketSnapshot] = []
        for key in sorted(self._buckets, key=lambda k: (k.provider, k.key_fingerprint, k.bucket)):
            bucket = self._buckets[key]
            bucket.refill(now)
            reset_in = None
            if bucket.reset_at is not None and bucket.reset_at > now:
                reset_in = bucket.reset_at - now
            out.append(
                BucketSnapshot(
                    provider=key.provider,
                    key_fingerprint=key.key_fingerprint,
                    bucket=key.bucket,
                    limit=bucket.limit,
                    window=bucket.window,
                    remaining=bucket.remaining(now),
                    tokens=max(0.0, bucket.tokens),
                    blocked_for=max(0.0, bucket.blocked_until - now),
                    reset_in=reset_in,
                )
            )
        return out

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        return self._credits.get((provider, key_fingerprint))


if TYPE_CHECKING:

    def _conforms(limiter: InMemoryLimiter) -> Limiter:
        return limiter  # mypy proves InMemoryLimiter satisfies the Limiter protocol
