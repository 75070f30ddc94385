"""The in-process `Limiter`: sliding-window buckets in this process's memory (see `limits.base`
for the contract and `limits._window` for the arithmetic every backend shares)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Unpack

import anyio

from mcp_server._clock import Clock
from mcp_server.limits._window import (
    LimiterOptions,
    WindowLimiter,
    WindowState,
    snapshot_of,
    sort_key,
)
from mcp_server.limits.base import (
    BucketKey,
    BucketSnapshot,
    Limiter,
    spending_reserve,
)
from mcp_server.models import Provider
from mcp_server.upstream import RateLimitHints

__all__ = ["InMemoryLimiter"]

_EPS = 1e-9


class _Bucket:
    """One bucket: the shared window state plus this process's FIFO queue."""

    def __init__(self, state: WindowState) -> None:
        self.state = state
        self.queued = 0
        self.lock = anyio.Lock()


class InMemoryLimiter(WindowLimiter):
    """Sliding-window buckets in this process (RETRY_POLICY.md C.7, issue 17.7); options as
    `limits._window.WindowLimiter`."""

    def __init__(self, clock: Clock, **options: Unpack[LimiterOptions]) -> None:
        super().__init__(clock, **options)
        self._buckets: dict[BucketKey, _Bucket] = {}
        self._credits: dict[tuple[Provider, str], int] = {}

    def _bucket(self, key: BucketKey) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = _Bucket(self._seed(key))
            self._buckets[key] = bucket
        return bucket

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Take `cost` slots, waiting in FIFO order; return the seconds waited.

        The wait is predicted on entry (counting everyone queued ahead) and refused at once
        when it does not fit; it is checked again after each sleep in case a 429 arrived
        meanwhile. A cost above the limit waits for an empty window. Under
        `spend_reserve()` the send may take a paced bucket's reserve.
        """
        if not (math.isfinite(cost) and cost > 0):
            raise ValueError("cost must be a positive number")
        need = math.ceil(cost - _EPS)
        bucket = self._bucket(key)
        state = bucket.state
        urgent = spending_reserve()
        started = self._clock.monotonic()
        wait = state.wait(started, bucket.queued, need, urgent=urgent)
        self._check_wait(key, wait, started, started, deadline)
        bucket.queued += need
        try:
            async with bucket.lock:
                while True:
                    now = self._clock.monotonic()
                    wait = state.wait(now, 0, need, urgent=urgent)
                    if wait <= _EPS:
                        break
                    self._check_wait(key, wait, started, now, deadline)
                    await self._clock.sleep(wait)
                state.record(now, need)
        finally:
            bucket.queued -= need
        return self._clock.monotonic() - started

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the bucket from a response: the server's numbers win over our estimate."""
        if hints.credits is not None:
            self._credits[(key.provider, key.key_fingerprint)] = hints.credits
        self._observe(self._bucket(key).state, self._clock.monotonic(), status, hints)

    async def snapshot(self) -> list[BucketSnapshot]:
        now = self._clock.monotonic()
        return [
            snapshot_of(key, self._buckets[key].state, now)
            for key in sorted(self._buckets, key=sort_key)
        ]

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        return self._credits.get((provider, key_fingerprint))


if TYPE_CHECKING:

    def _conforms(limiter: InMemoryLimiter) -> Limiter:
        return limiter  # mypy proves InMemoryLimiter satisfies the Limiter protocol
