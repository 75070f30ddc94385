"""The Redis limiter: one budget for every replica, paced exactly as the in-process buckets.

Needs a real Redis (`redis_url` skips without one; CI fails the skip). Pacing is asserted on
the injected clock: a `FakeClock` where calls are sequential (then the waits must equal the
in-process limiter's to the microsecond), a `ScaledClock` where replicas run concurrently (then
the send times the buckets booked in Redis must never put more than the limit in any window).
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import astuple
from typing import Any

import anyio
import pytest
import redis.asyncio

from mcp_server._clock import Clock, FakeClock, ScaledClock, SystemClock
from mcp_server.config import Settings, key_fingerprint
from mcp_server.errors import LocalRateLimited, RateLimitHints
from mcp_server.limits import (
    BucketKey,
    BucketSpec,
    InMemoryLimiter,
    Limiter,
    make_leases,
    make_limiter,
)
from mcp_server.limits.base import SAFETY, bucket_key
from mcp_server.limits.redis import RedisLeases, RedisLimiter

pytestmark = pytest.mark.anyio

TENANT = key_fingerprint("shared-org-key")
RESEARCH = bucket_key("seamless", TENANT, "POST", "/contacts/research")
POLL = bucket_key("seamless", TENANT, "GET", "/contacts/research/poll")
SERP = bucket_key("agentseo", TENANT, "POST", "/api/v1/serp")

Step = tuple[str, BucketKey, Any]
SPAN = 6.0 / SAFETY  # the sliding window of a 6 s bucket: 6.25 s


def small(_key: BucketKey) -> BucketSpec:
    """3 per 6 s: waits show up within a few calls."""
    return BucketSpec(limit=3, window=6.0)


def seeded(seed: int) -> random.Random:
    return random.Random(seed)  # noqa: S311 - seeded jitter, so both limiters draw alike


@asynccontextmanager
async def replicas(
    url: str, prefix: str, clock: Clock, n: int, **kwargs: Any
) -> AsyncIterator[list[RedisLimiter]]:
    """`n` limiters as `n` replicas would have them: each its own client, one Redis."""
    async with AsyncExitStack() as stack:
        out = []
        for _ in range(n):
            client = redis.asyncio.Redis.from_url(url, socket_timeout=10)
            limiter = RedisLimiter(client, clock, prefix=prefix, **kwargs)
            stack.push_async_callback(limiter.aclose)
            out.append(limiter)
        yield out


async def run(steps: list[Step], pick: Callable[[int], Limiter]) -> list[float | str]:
    """Play `steps` one after the other; step i goes to `pick(i)`. Returns what each gave."""
    seen: list[float | str] = []
    for i, (op, key, arg) in enumerate(steps):
        limiter = pick(i)
        if op == "acquire":
            try:
                seen.append(round(await limiter.acquire(key, deadline=arg), 6))
            except LocalRateLimited as exc:
                seen.append(f"refused {exc.retry_after:.6f}")
        else:
            status, hints = arg
            await limiter.observe(key, status, hints)
            seen.append("observed")
    return seen


SCENARIOS: dict[str, list[Step]] = {
    "an idle window at once, then the window decides": [("acquire", RESEARCH, None)] * 6,
    "remaining 0 blocks until the reset": [
        ("acquire", RESEARCH, None),
        ("observe", RESEARCH, (200, RateLimitHints(limit=60, remaining=0, reset_after=30.0))),
        ("acquire", RESEARCH, None),
        ("acquire", RESEARCH, None),
    ],
    "a 429's retry-after blocks; a deadline that cannot wait is refused": [
        ("acquire", POLL, None),
        ("observe", POLL, (429, RateLimitHints(retry_after=12.0))),
        ("acquire", POLL, 5.0),
        ("acquire", POLL, None),
    ],
    "the server's limit and remaining win": [
        ("acquire", SERP, None),
        ("observe", SERP, (200, RateLimitHints(limit=120, remaining=3, reset_after=20.0))),
        *[("acquire", SERP, None)] * 5,
        ("observe", SERP, (200, RateLimitHints(limit=120, remaining=100, credits=7))),
        ("acquire", SERP, None),
    ],
}


@pytest.mark.parametrize("name", SCENARIOS)
async def test_three_replicas_in_turn_pace_exactly_like_one_in_process_limiter(
    redis_url: str, redis_prefix: str, name: str
) -> None:
    steps = SCENARIOS[name]
    memory_clock, redis_clock = FakeClock(), FakeClock()
    memory = InMemoryLimiter(memory_clock, rng=seeded(7), spec_for=small)
    with anyio.fail_after(20):
        expected = await run(steps, lambda _i: memory)
        async with replicas(
            redis_url, redis_prefix, redis_clock, 3, rng=seeded(7), spec_for=small
        ) as rs:
            got = await run(steps, lambda i: rs[i % 3])
            shared = await rs[1].snapshot()
            credits = await rs[2].credits("agentseo", TENANT)
    assert got == expected
    assert redis_clock.monotonic() == pytest.approx(memory_clock.monotonic(), abs=1e-6)
    local = await memory.snapshot()
    assert [astuple(s)[:4] for s in shared] == [astuple(s)[:4] for s in local]
    for mine, theirs in zip(shared, local, strict=True):
        assert astuple(mine)[4:] == pytest.approx(astuple(theirs)[4:], abs=1e-5)
    assert credits == await memory.credits("agentseo", TENANT)


async def test_one_replica_pays_for_what_the_other_sent(redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock()
    with anyio.fail_after(20):
        async with replicas(redis_url, redis_prefix, clock, 2, spec_for=small) as (a, b):
            assert [await a.acquire(RESEARCH) for _ in range(3)] == [0.0] * 3  # the window
            assert await b.acquire(RESEARCH) == pytest.approx(SPAN)  # a's sends count for b
            await a.observe(RESEARCH, 429, RateLimitHints(retry_after=10.0))
            waited = await b.acquire(RESEARCH)
            assert 10.0 <= waited <= 11.0  # the block, plus at most 10 % jitter
            # A different endpoint of the same org has a window of its own.
            assert await b.acquire(POLL) == 0.0
            # Naive replicas (each in-process) would both have sent at once.
            naive = [InMemoryLimiter(FakeClock(), spec_for=small) for _ in range(2)]
            assert [await n.acquire(RESEARCH) for n in naive * 3] == [0.0] * 6


async def test_a_refused_acquire_takes_nothing(redis_url: str, redis_prefix: str) -> None:
    clock = FakeClock()
    with anyio.fail_after(20):
        async with replicas(redis_url, redis_prefix, clock, 2, spec_for=small) as (a, b):
            for _ in range(3):
                await a.acquire(RESEARCH)
            for _ in range(3):
                with pytest.raises(LocalRateLimited) as refused:
                    await b.acquire(RESEARCH, deadline=clock.monotonic() + 0.5)
                assert refused.value.retry_after == pytest.approx(SPAN)
            assert await a.acquire(RESEARCH) == pytest.approx(SPAN)  # not 3 windows later


class Booking(RedisLimiter):
    """Records the time of every take the shared bucket accepted."""

    booked: list[float]

    async def _try_take(self, key: BucketKey, need: int, urgent: bool = False) -> float:
        for _ in range(100):
            loaded = await self._get(key)
            wait = loaded.state.wait(loaded.now, 0, need, urgent=urgent)
            if wait > 1e-9:
                return wait
            loaded.state.record(loaded.now, need)
            if await self._put(key, loaded):
                self.booked.append(loaded.now)
                return 0.0
        raise AssertionError("the bucket kept changing")


async def test_concurrent_replicas_never_book_more_than_the_limit_in_any_window(
    redis_url: str, redis_prefix: str
) -> None:
    """3 replicas x 12 concurrent acquires on a 10-per-6-s bucket: the take times the shared
    bucket accepted keep every 6.25 s window (so every 6 s one) at or under 10."""
    spec = BucketSpec(limit=10, window=6.0)
    clock = ScaledClock(20.0, epoch=1_790_000_000.0)
    booked: list[float] = []
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            rs = []
            for _ in range(3):
                limiter = Booking(
                    redis.asyncio.Redis.from_url(redis_url, socket_timeout=10),
                    clock,
                    prefix=redis_prefix,
                    spec_for=lambda _k: spec,
                    max_inline_wait=600,
                )
                limiter.booked = booked
                stack.push_async_callback(limiter.aclose)
                rs.append(limiter)
            async with anyio.create_task_group() as tg:
                for limiter in rs:
                    for _ in range(12):
                        tg.start_soon(limiter.acquire, RESEARCH)
    times = sorted(booked)
    assert len(times) == 36
    for i, start in enumerate(times):
        assert sum(1 for t in times[i:] if t < start + SPAN - 1e-6) <= 10
    assert times[10] - times[0] >= SPAN - 1e-6  # the 11th waited for the window


async def test_make_limiter_picks_redis_when_the_url_is_set(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    limiter = make_limiter(make_settings(JOBRELAY_REDIS_URL=redis_url), clock=FakeClock())
    assert isinstance(limiter, RedisLimiter)
    await limiter.aclose()
    leases = make_leases(make_settings(JOBRELAY_REDIS_URL=redis_url), clock=FakeClock())
    assert isinstance(leases, RedisLeases)
    await leases.aclose()
    # A PostgreSQL ledger without Redis: no shared file, so buckets and polls stay in process.
    pg = make_settings(JOBRELAY_DB="postgresql://u@127.0.0.1/x")
    assert isinstance(make_limiter(pg, clock=SystemClock()), InMemoryLimiter)
    assert make_leases(pg, clock=SystemClock()) is None
    assert isinstance(make_limiter(make_settings(), clock=FakeClock()), InMemoryLimiter)


class GatedClock(FakeClock):
    """A `FakeClock` whose first sleep waits until the test opens the gate."""

    def __init__(self) -> None:
        super().__init__()
        self.sleeping = anyio.Event()
        self.gate = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        if not self.sleeping.is_set():
            self.sleeping.set()
            await self.gate.wait()
        await super().sleep(seconds)


async def test_a_block_seen_while_a_replica_waits_holds_it_back(
    redis_url: str, redis_prefix: str
) -> None:
    clock = GatedClock()
    waited: list[float] = []

    async def third() -> None:
        waited.append(await a.acquire(RESEARCH))

    with anyio.fail_after(20):
        async with replicas(redis_url, redis_prefix, clock, 2, rng=seeded(1), spec_for=small) as (
            a,
            b,
        ):
            for _ in range(3):
                await a.acquire(RESEARCH)
            async with anyio.create_task_group() as tg:
                tg.start_soon(third)
                await clock.sleeping.wait()  # waiting 6.25 s for the window, asleep
                await b.observe(RESEARCH, 429, RateLimitHints(retry_after=10.0))
                clock.gate.set()
    assert clock.slept[0] == pytest.approx(SPAN)
    assert waited[0] >= 10.0  # it did not go out in the middle of the block
    assert clock.monotonic() == pytest.approx(waited[0])


async def test_with_a_real_clock_the_buckets_run_on_the_redis_server_time(
    redis_url: str, redis_prefix: str
) -> None:
    from mcp_server._clock import SystemClock

    clock = SystemClock()
    with anyio.fail_after(20):
        async with replicas(redis_url, redis_prefix, clock, 2, spec_for=small) as (a, b):
            assert a._server_time
            assert b._server_time
            await a.acquire(RESEARCH)
            await b.acquire(RESEARCH)
            await a.acquire(RESEARCH)
            with pytest.raises(LocalRateLimited) as refused:  # refused at once: nothing sleeps
                await b.acquire(RESEARCH, deadline=clock.monotonic() + 0.1)
    assert SPAN - 1.0 < refused.value.retry_after <= SPAN
