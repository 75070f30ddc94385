"""Rate buckets on a FakeClock, for both backends (in-process and shared SQLite): an idle window
spent at once, the window never exceeded, server corrections, fairness, refusal."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcp_server._clock import FakeClock
from mcp_server.config import load_settings
from mcp_server.errors import LocalRateLimited
from mcp_server.limits import InMemoryLimiter, SqliteLimiter
from mcp_server.limits.base import (
    SAFETY,
    WINDOW,
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    bucket_key,
)
from mcp_server.models import Provider
from mcp_server.providers.agentseo.limits import agentseo_bucket
from mcp_server.providers.seamless.limits import (
    SEAMLESS_ENDPOINTS,
    SEAMLESS_LIMIT,
    seamless_bucket,
)
from mcp_server.upstream._backoff import DEFAULT_POLICY
from mcp_server.upstream._headers import RateLimitHints, parse_hints

pytestmark = pytest.mark.anyio

RESEARCH = BucketKey("seamless", "k_aaaaaaaaaaaa", "POST /contacts/research")
POLL = BucketKey("seamless", "k_aaaaaaaaaaaa", "GET /contacts/research/poll")
OTHER_TENANT = BucketKey("seamless", "k_bbbbbbbbbbbb", "POST /contacts/research")
WORKLOAD = BucketKey("agentseo", "k_cccccccccccc", "workload")
CONTROL = BucketKey("agentseo", "k_cccccccccccc", "control")
# Derived from the module so the behaviour tests follow the constants; the literal values
# are pinned once, in `test_the_safety_factor_is_the_documented_value`.
SPAN = WINDOW / SAFETY  # a bucket admits `limit` sends in any SPAN seconds
STEP = SPAN / SEAMLESS_LIMIT  # one slot's share of the span (the pause after a bare 429)

AnyLimiter = InMemoryLimiter | SqliteLimiter
Make = Callable[..., AnyLimiter]


class Edge(random.Random):
    """`uniform` returns the low or the high end, so block jitter is exact in assertions."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


@pytest.fixture(params=["memory", "sqlite"])
async def limiter(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Make]:
    """Makes limiters of one backend; every behaviour test runs on both (one arithmetic)."""
    made: list[SqliteLimiter] = []

    def make(clock: FakeClock, **kwargs: Any) -> AnyLimiter:
        kwargs.setdefault("rng", Edge(high=False))
        if request.param == "memory":
            return InMemoryLimiter(clock, **kwargs)
        shared = SqliteLimiter(tmp_path / "jobs.sqlite3", clock, **kwargs)
        made.append(shared)
        return shared

    yield make
    for shared in made:
        await shared.aclose()


async def drain(lim: AnyLimiter, key: BucketKey, n: int) -> list[float]:
    return [await lim.acquire(key) for _ in range(n)]


# --- what the window has left goes out at once ----------------------------------------------


def test_the_safety_factor_is_the_documented_value() -> None:
    # Literal on purpose: a silent change of SAFETY must fail here.
    assert SAFETY == 0.96
    assert SPAN == 62.5


async def test_an_idle_window_is_spent_at_once_then_the_oldest_send_frees_a_slot(
    limiter: Make,
) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=100.0)
    with anyio.fail_after(10):
        waits = await drain(lim, RESEARCH, 61)
    assert waits == [0.0] * 60 + [pytest.approx(SPAN)]
    (snap,) = await lim.snapshot()
    assert (snap.remaining, snap.tokens) == (59, 59.0)  # the first 60 expired, 1 sent since


async def test_agentseo_budgets_come_from_the_plan(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, settings=load_settings({"AGENTSEO_PLAN": "pro"}))
    await lim.acquire(WORKLOAD)
    await lim.acquire(CONTROL)
    snaps = {s.bucket: s for s in await lim.snapshot()}
    assert (snaps["workload"].limit, snaps["control"].limit) == (300, 3000)
    assert (snaps["workload"].remaining, snaps["control"].remaining) == (299, 2999)


async def test_sixty_seo_jobs_into_an_idle_hobby_window_start_together(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(60):
                tg.start_soon(lim.acquire, WORKLOAD)
    assert clock.slept == []
    with pytest.raises(LocalRateLimited) as caught:
        await lim.acquire(WORKLOAD)  # the 61st would wait a whole span: beyond the inline cap
    assert caught.value.retry_after == pytest.approx(SPAN)


# --- the fixed-window server ---------------------------------------------------------------


class FixedWindowServer:
    """Seamless's documented limiter: `limit` per window aligned to the server's epoch clock."""

    def __init__(self, clock: FakeClock, limit: int = 60, *, already_used: int = 0) -> None:
        self.clock = clock
        self.limit = limit
        self.counts: Counter[int] = Counter()
        self.counts[int(clock.time() // 60)] = already_used  # other consumers of the org
        self.statuses: Counter[int] = Counter()
        self.sent_at: list[float] = []

    def handle(self) -> tuple[int, dict[str, str]]:
        now = self.clock.time()
        window = int(now // 60)
        self.counts[window] += 1
        self.sent_at.append(now)
        used = self.counts[window]
        status = 429 if used > self.limit else 200
        self.statuses[status] += 1
        return status, {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(max(0, self.limit - used)),
            "X-RateLimit-Reset": str((window + 1) * 60),
            "X-PublicAPI-Credits": "250",
            "Date": formatdate(now, usegmt=True),
        }


async def call(lim: AnyLimiter, server: FixedWindowServer, key: BucketKey) -> int:
    await lim.acquire(key)
    status, headers = server.handle()
    await lim.observe(
        key, status, parse_hints("seamless", status, headers, now=server.clock.time())
    )
    return status


@pytest.mark.parametrize("offset", [0.0, 20.0, 59.5], ids=["aligned", "mid", "just-before"])
async def test_200_sequential_calls_never_exceed_the_fixed_window_and_beat_n_over_rate(
    limiter: Make, offset: float
) -> None:
    start = math.floor(1_790_000_000 / 60) * 60 + offset
    clock = FakeClock(start=start)
    lim = limiter(clock, max_inline_wait=100.0)
    server = FixedWindowServer(clock)
    with anyio.fail_after(20):
        for _ in range(200):
            await call(lim, server, RESEARCH)
    assert server.statuses == Counter({200: 200})
    assert max(server.counts.values()) <= 60
    makespan = clock.monotonic()
    assert makespan == pytest.approx(3 * SPAN)  # 60 at 0, 62.5, 125 and 20 at 187.5
    assert makespan <= 1.05 * 200 * 60 / SEAMLESS_LIMIT  # the benchmark target: 1.05 x N/rate


async def test_a_concurrent_burst_of_100_gets_no_429_and_the_first_60_do_not_wait(
    limiter: Make,
) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=1000.0)
    server = FixedWindowServer(clock)
    statuses: list[int] = []
    sent_at: list[float] = []

    async def one() -> None:
        statuses.append(await call(lim, server, RESEARCH))
        sent_at.append(clock.monotonic())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
    assert statuses == [200] * 100
    assert max(server.counts.values()) <= 60
    assert sorted(sent_at) == [0.0] * 60 + [pytest.approx(SPAN)] * 40


async def test_other_consumers_of_the_org_quota_are_seen_through_remaining(
    limiter: Make,
) -> None:
    clock = FakeClock(start=math.floor(1_790_000_000 / 60) * 60)  # window just opened
    lim = limiter(clock, max_inline_wait=1000.0)
    server = FixedWindowServer(clock, already_used=57)
    with anyio.fail_after(10):
        for _ in range(10):
            await call(lim, server, RESEARCH)
    assert server.statuses[429] == 0
    assert server.counts[int(server.sent_at[0] // 60)] == 60  # used to the last slot, not over
    assert server.sent_at[3] - server.sent_at[0] >= 60  # 4th call waited for the reset


_gaps = st.lists(
    st.one_of(
        st.just(0.0), st.floats(min_value=0, max_value=2), st.floats(min_value=0, max_value=90)
    ),
    min_size=1,
    max_size=150,
)


@settings(max_examples=60, deadline=None)
@given(limit=st.integers(min_value=1, max_value=120), gaps=_gaps)
@example(limit=60, gaps=[0.0] * 150)  # worst case: an idle window, then steady demand
@example(limit=7, gaps=[0.0] * 30)
@example(limit=600, gaps=[0.0] * 150)
@example(limit=60, gaps=[0.0] * 60 + [62.5 - 0.1] + [0.05] * 60)  # sends a quantum apart
def test_no_interval_of_one_window_ever_holds_more_than_the_limit(
    limit: int, gaps: list[float]
) -> None:
    async def run() -> list[float]:
        clock = FakeClock()
        lim = InMemoryLimiter(clock, spec_for=lambda _key: BucketSpec(limit), max_inline_wait=1e9)
        times = []
        for gap in gaps:
            clock.advance(gap)
            await lim.acquire(RESEARCH)
            times.append(clock.monotonic())
        return times

    times = anyio.run(run, backend="asyncio")
    first = 0
    for last, t in enumerate(times):
        while times[first] <= t - 60.0:
            first += 1
        assert last - first + 1 <= limit


def test_long_runs_keep_at_least_95_percent_of_the_limit_and_fill_a_minute_to_60() -> None:
    # The bound above is tight, not vacuous: some minute holds exactly 60.
    async def run() -> list[float]:
        clock = FakeClock()
        lim = InMemoryLimiter(clock, max_inline_wait=1e9)
        times = []
        for _ in range(1200):
            await lim.acquire(RESEARCH)
            times.append(clock.monotonic())
        return times

    times = anyio.run(run, backend="asyncio")
    per_window = [sum(1 for s in times if t - WINDOW < s <= t) for t in times]
    assert max(per_window) == 60
    horizon = 10 * SPAN  # whole spans: no partial burst at the end flatters the rate
    per_minute = sum(1 for t in times if t < horizon) / horizon * 60
    assert 0.95 * SEAMLESS_LIMIT <= per_minute <= SEAMLESS_LIMIT


# --- observe(): the server's numbers win ---------------------------------------------------


async def test_remaining_caps_the_sends_until_the_reset(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=60, remaining=1, reset_after=40.0))
    waits = await drain(lim, RESEARCH, 3)
    assert waits == [0.0, pytest.approx(40.0), 0.0]  # the window's own count takes over


async def test_a_larger_remaining_never_adds_slots(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=100.0)
    await drain(lim, RESEARCH, 60)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=60, remaining=55))
    assert await lim.acquire(RESEARCH) == pytest.approx(SPAN)


async def test_a_new_limit_from_the_headers_changes_what_the_window_holds(
    limiter: Make,
) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=100.0)
    await drain(lim, RESEARCH, 60)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=120, remaining=100))
    assert await drain(lim, RESEARCH, 60) == [0.0] * 60
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=30, window=60.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(SPAN)
    (snap,) = await lim.snapshot()
    assert (snap.limit, snap.remaining) == (30, 29)


async def test_a_429_blocks_the_bucket_until_the_reset(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0)
    await lim.observe(RESEARCH, 429, RateLimitHints(limit=60, remaining=0, reset_after=30.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(30.0)
    # After the reset the bucket sends normally: it does not stay at zero.
    assert await lim.acquire(RESEARCH) == 0.0


async def test_the_end_of_a_block_is_jittered_by_at_most_ten_percent(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0, rng=Edge(high=True))
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=5.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(5.5)


async def test_remaining_zero_on_a_success_also_blocks_until_the_reset(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 200, RateLimitHints(remaining=0, reset_after=12.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(12.0)


async def test_retry_after_on_a_429_takes_precedence_over_the_reset(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    hints = RateLimitHints(retry_after=4.0, remaining=0, reset_after=50.0)
    await lim.observe(CONTROL, 429, hints)
    assert await lim.acquire(CONTROL) == pytest.approx(4.0)


async def test_a_suspicious_reset_is_clamped_to_one_window(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=100.0)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=300.0))
    (snap,) = await lim.snapshot()
    assert snap.blocked_for == pytest.approx(60.0)
    assert snap.wait == pytest.approx(60.0)  # a new request waits out the block
    assert snap.reset_in == pytest.approx(300.0)  # the raw value is still reported


async def test_a_429_without_hints_pauses_one_slot(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 429, RateLimitHints())
    assert await lim.acquire(RESEARCH) == pytest.approx(STEP)


async def test_a_429_arriving_while_a_caller_waits_extends_its_wait(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=200.0)
    await drain(lim, RESEARCH, 60)
    waited: list[float] = []

    async def waiter() -> None:
        waited.append(await lim.acquire(RESEARCH))

    async def server_says_429() -> None:
        while not clock.slept:
            await anyio.lowlevel.checkpoint()
        await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=100.0))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(server_says_429)
    assert waited == [pytest.approx(SPAN + 100.0)]  # the 429 came as its sleep ended


# --- refusal without consuming a slot -------------------------------------------------------


async def test_a_wait_past_the_deadline_raises_without_taking_a_slot(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 429, RateLimitHints(retry_after=1.5))
    with pytest.raises(LocalRateLimited) as caught:
        await lim.acquire(RESEARCH, deadline=clock.monotonic() + 0.5)
    assert caught.value.retry_after == pytest.approx(1.5)
    assert caught.value.bucket == "POST /contacts/research"
    assert caught.value.provider == "seamless"
    assert (
        str(caught.value) == "Local rate guard: POST /contacts/research exhausted; next slot in 2s."
    )
    assert clock.slept == []  # refused at once, not after waiting
    clock.advance(2.0)
    (snap,) = await lim.snapshot()
    assert snap.remaining == 60  # the refused call took nothing


async def test_a_wait_above_the_inline_cap_raises_even_without_a_deadline(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=30.0))
    with pytest.raises(LocalRateLimited) as caught:
        await lim.acquire(RESEARCH)
    assert caught.value.retry_after == pytest.approx(30.0)
    (snap,) = await lim.snapshot()
    assert snap.remaining == 0
    assert snap.blocked_for == pytest.approx(30.0)


async def test_the_queue_ahead_counts_so_late_callers_are_refused_at_once(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)  # max inline wait 20 s
    assert DEFAULT_POLICY.max_inline_wait < SPAN
    ok: list[float] = []
    refused: list[tuple[float, float]] = []

    async def one() -> None:
        try:
            ok.append(await lim.acquire(RESEARCH))
        except LocalRateLimited as exc:
            refused.append((clock.monotonic(), exc.retry_after))

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for _ in range(75):
                tg.start_soon(one)
    assert ok == [0.0] * 60  # the idle window, at once
    assert [t for t, _ in refused] == [0.0] * 15  # refused before anything slept
    assert [r for _, r in refused] == [pytest.approx(SPAN)] * 15


async def test_cost_must_be_positive(limiter: Make) -> None:
    lim = limiter(FakeClock())
    with pytest.raises(ValueError, match="positive"):
        await lim.acquire(RESEARCH, cost=0)


# --- fairness, partitioning, cancellation ------------------------------------------------------


async def test_waiters_are_served_first_come_first_served(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=1000.0, spec_for=lambda _key: BucketSpec(3))
    order: list[int] = []
    waited: dict[int, float] = {}

    async def one(i: int) -> None:
        waited[i] = await lim.acquire(RESEARCH)
        order.append(i)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            for i in range(12):
                tg.start_soon(one, i)
    assert order == list(range(12))
    assert [waited[i] for i in range(12)] == pytest.approx([(i // 3) * SPAN for i in range(12)])


async def test_buckets_are_partitioned_by_key_endpoint_and_provider(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, 60)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=15.0))
    assert await drain(lim, OTHER_TENANT, 60) == [0.0] * 60
    other_endpoint = BucketKey(RESEARCH.provider, RESEARCH.key_fingerprint, "POST /search/contacts")
    assert await drain(lim, other_endpoint, 60) == [0.0] * 60
    assert await drain(lim, POLL, 5) == [0.0] * 5  # paced after 5 (tests/test_poll_pacing.py)
    assert await drain(lim, CONTROL, 600) == [0.0] * 600
    assert clock.monotonic() == 0.0


class GatedClock(FakeClock):
    """A FakeClock whose sleeps wait for a gate, so a test can act on a sleeping waiter."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = anyio.Event()
        self.sleeping = anyio.Event()

    async def sleep(self, seconds: float) -> None:
        self.sleeping.set()
        await self.gate.wait()
        await super().sleep(seconds)


async def test_a_cancelled_waiter_gives_its_place_back(limiter: Make) -> None:
    clock = GatedClock()
    lim = limiter(clock, max_inline_wait=200.0, spec_for=lambda _key: BucketSpec(1))
    await drain(lim, RESEARCH, 1)

    async def probe() -> float:
        try:
            await lim.acquire(RESEARCH, deadline=clock.monotonic())
        except LocalRateLimited as exc:
            return exc.retry_after
        raise AssertionError("the bucket was expected to be full")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lim.acquire, RESEARCH)
            await clock.sleeping.wait()
            assert await probe() == pytest.approx(2 * SPAN)  # behind the sleeping waiter
            tg.cancel_scope.cancel()
        assert await probe() == pytest.approx(SPAN)  # its place was given back


# --- snapshot and credits ------------------------------------------------------------------


async def test_snapshot_reports_every_bucket_sorted_with_estimates(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, 2)
    await lim.observe(
        RESEARCH, 202, RateLimitHints(limit=60, remaining=40, reset_after=25.0, credits=17)
    )
    await lim.acquire(WORKLOAD)
    clock.advance(5.0)
    assert await lim.snapshot() == [
        BucketSnapshot(
            provider="agentseo",
            key_fingerprint="k_cccccccccccc",
            bucket="workload",
            limit=60,
            window=60.0,
            remaining=59,
            tokens=59.0,
            blocked_for=0.0,
            reset_in=None,
            used=1,
            wait=0.0,
        ),
        BucketSnapshot(
            provider="seamless",
            key_fingerprint="k_aaaaaaaaaaaa",
            bucket="POST /contacts/research",
            limit=60,
            window=60.0,
            remaining=40,
            tokens=40.0,
            blocked_for=0.0,
            reset_in=pytest.approx(20.0),
            used=2,
            wait=0.0,
        ),
    ]
    await lim.acquire(RESEARCH)
    snap = (await lim.snapshot())[1]
    assert snap.remaining == 39
    clock.advance(21.0)
    snap = (await lim.snapshot())[1]
    assert (snap.remaining, snap.reset_in) == (57, None)  # window passed: only our own sends
    assert (snap.used, snap.wait) == (3, 0.0)
    await drain(lim, RESEARCH, 57)  # the window full: the next slot frees one span after
    snap = (await lim.snapshot())[1]
    assert (snap.used, snap.remaining) == (60, 0)
    assert snap.wait == pytest.approx(SPAN - 26.0)  # the first two sends, 26 s ago


async def test_credits_are_kept_per_provider_and_key(limiter: Make) -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert await lim.credits("seamless", RESEARCH.key_fingerprint) is None
    await lim.observe(POLL, 200, RateLimitHints(credits=12))
    await lim.observe(RESEARCH, 200, RateLimitHints())  # no header: last seen value kept
    assert await lim.credits("seamless", RESEARCH.key_fingerprint) == 12
    assert await lim.credits("seamless", OTHER_TENANT.key_fingerprint) is None
    await lim.observe(RESEARCH, 422, RateLimitHints(credits=0))
    assert await lim.credits("seamless", RESEARCH.key_fingerprint) == 0


# --- routing --------------------------------------------------------------------------------


@pytest.mark.parametrize("endpoint", SEAMLESS_ENDPOINTS)
def test_each_seamless_endpoint_template_is_its_own_bucket(endpoint: str) -> None:
    method, path = endpoint.split(" ")
    assert seamless_bucket(method.lower(), path + "/") == endpoint


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/contacts/research/poll?requestIds=a,b", "GET /contacts/research/poll"),
        ("get", "https://api.seamless.ai/api/client/v1/contacts", "GET /contacts"),
        ("POST", "//search//contacts", "POST /search/contacts"),
    ],
)
def test_seamless_bucket_names_ignore_query_base_path_and_slashes(
    method: str, path: str, expected: str
) -> None:
    assert seamless_bucket(method, path) == expected


@pytest.mark.parametrize(
    ("method", "path", "expected"),
    [
        ("GET", "/jobs/{job_id}", "control"),
        ("GET", "/jobs/{job_id}/events", "control"),
        ("GET", "/api/v1/jobs/123e4567", "control"),
        ("GET", "https://www.agentseo.dev/api/v1/jobs/1/events", "control"),
        ("POST", "/audit/local", "workload"),
        ("POST", "/audit/local/batch", "workload"),
        ("POST", "/analyze/serp?sync=true", "workload"),
        ("POST", "/keyword-metrics/overview", "workload"),
        ("POST", "/extract", "workload"),
        ("GET", "/webhooks/endpoints", "workload"),  # undocumented: the smaller budget
        ("POST", "/jobsearch", "workload"),  # a prefix only matches whole segments
    ],
)
def test_agentseo_routes_map_to_workload_or_control(method: str, path: str, expected: str) -> None:
    assert agentseo_bucket(method, path) == expected


@pytest.mark.parametrize(
    ("provider", "method", "path", "bucket"),
    [
        ("seamless", "POST", "/contacts/research", "POST /contacts/research"),
        ("agentseo", "GET", "/jobs/1", "control"),
        ("agentseo", "POST", "/analyze/serp", "workload"),
    ],
)
def test_bucket_key_builds_the_key_for_a_request(
    provider: Provider, method: str, path: str, bucket: str
) -> None:
    assert bucket_key(provider, "k_x", method, path) == BucketKey(provider, "k_x", bucket)
