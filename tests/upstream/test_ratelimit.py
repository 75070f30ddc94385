"""Token buckets on a FakeClock: bursts, steady pacing, server corrections, fairness, refusal."""

from __future__ import annotations

import math
import random
from collections import Counter
from email.utils import formatdate
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mcp_server._clock import FakeClock
from mcp_server.config import Plan
from mcp_server.errors import LocalRateLimited
from mcp_server.limits import InMemoryLimiter
from mcp_server.limits.base import (
    SAFETY,
    SEAMLESS_BURST,
    SEAMLESS_ENDPOINTS,
    SEAMLESS_LIMIT,
    WINDOW,
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    agentseo_bucket,
    bucket_key,
    default_spec,
    effective_burst,
    seamless_bucket,
)
from mcp_server.models import Provider
from mcp_server.upstream._backoff import DEFAULT_POLICY
from mcp_server.upstream._headers import RateLimitHints, parse_hints

pytestmark = pytest.mark.anyio

RESEARCH = BucketKey("seamless", "k_aaaaaaaaaaaa", "POST /contacts/research")
POLL = BucketKey("seamless", "k_aaaaaaaaaaaa", "GET /contacts/research/poll")
OTHER_TENANT = BucketKey("seamless", "k_bbbbbbbbbbbb", "POST /contacts/research")
WORKLOAD = BucketKey("agentseo", "k_cccccccccccc", "workload")
CONTROL = BucketKey("agentseo", "k_cccccccccccc", "control")
# Derived from the module so the behaviour tests follow the constants; the literal values
# are pinned once, in `test_the_safety_factor_and_bursts_are_the_documented_values`.
STEP = WINDOW / (SEAMLESS_LIMIT * SAFETY)  # seconds per token for a 60/min bucket
BURST = effective_burst(SEAMLESS_LIMIT, SEAMLESS_BURST)  # the burst a Seamless bucket uses


class Edge(random.Random):
    """`uniform` returns the low or the high end, so block jitter is exact in assertions."""

    def __init__(self, high: bool) -> None:
        super().__init__(0)
        self.high = high

    def uniform(self, a: float, b: float) -> float:
        return b if self.high else a


def limiter(clock: FakeClock, **kwargs: Any) -> InMemoryLimiter:
    kwargs.setdefault("rng", Edge(high=False))
    return InMemoryLimiter(clock, **kwargs)


async def drain(lim: InMemoryLimiter, key: BucketKey, n: int) -> list[float]:
    return [await lim.acquire(key) for _ in range(n)]


# --- burst, then steady rate ---------------------------------------------------------------


def test_the_safety_factor_and_bursts_are_the_documented_values() -> None:
    # Literal on purpose: a silent change of SAFETY or of the clamp must fail here.
    assert SAFETY == 0.96
    assert SEAMLESS_BURST == 2
    assert effective_burst(60, 5) == 2
    assert effective_burst(60, 10) == 2
    assert effective_burst(600, 20) == 20
    assert effective_burst(3, 5) == 1
    assert effective_burst(60, 10, safety=0.9) == 6  # the clamp follows the safety factor


async def test_a_drained_seamless_bucket_refills_at_0_96_tokens_per_second() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    assert await drain(lim, RESEARCH, 3) == pytest.approx([0.0, 0.0, 1 / 0.96])
    clock.advance(1.0)
    (snap,) = await lim.snapshot()
    assert snap.tokens == pytest.approx(0.96)


@pytest.mark.parametrize(
    ("plan", "workload_burst", "control_burst"),
    [(Plan.HOBBY, 2, 20), (Plan.STARTER, 4, 20), (Plan.PRO, 10, 20), (Plan.AGENCY, 10, 20)],
)
def test_agentseo_bursts_are_clamped_per_plan(
    plan: Plan, workload_burst: int, control_burst: int
) -> None:
    bursts = []
    for key in (WORKLOAD, CONTROL):
        spec = default_spec(key, plan)
        bursts.append(effective_burst(spec.limit, spec.burst))
    assert bursts == [workload_burst, control_burst]


async def test_a_seamless_bucket_allows_its_burst_then_paces_at_the_safety_rate() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    with anyio.fail_after(5):
        waits = await drain(lim, RESEARCH, 8)
    assert waits[:BURST] == [0.0] * BURST
    assert waits[BURST:] == pytest.approx([STEP] * (8 - BURST))
    assert clock.monotonic() == pytest.approx((8 - BURST) * STEP)


async def test_idle_time_refills_up_to_the_burst_only() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
    clock.advance(3600)
    waits = await drain(lim, RESEARCH, BURST + 1)
    assert waits == pytest.approx([0.0] * BURST + [STEP])


async def test_agentseo_budgets_come_from_the_plan() -> None:
    clock = FakeClock()
    lim = limiter(clock, agentseo_plan=Plan.PRO)
    await lim.acquire(WORKLOAD)
    await lim.acquire(CONTROL)
    snaps = {s.bucket: s for s in await lim.snapshot()}
    assert (snaps["workload"].limit, snaps["control"].limit) == (300, 3000)


async def test_the_hobby_workload_burst_is_clamped_so_a_minute_never_exceeds_60() -> None:
    # Configured burst 10, but 10 + 57.6 would exceed 60 in a minute: the bucket uses 2.
    clock = FakeClock()
    lim = limiter(clock)
    waits = await drain(lim, WORKLOAD, 3)
    assert waits == pytest.approx([0.0, 0.0, STEP])


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


async def call(lim: InMemoryLimiter, server: FixedWindowServer, key: BucketKey) -> int:
    await lim.acquire(key)
    status, headers = server.handle()
    await lim.observe(
        key, status, parse_hints("seamless", status, headers, now=server.clock.time())
    )
    return status


@pytest.mark.parametrize("offset", [0.0, 20.0, 59.5], ids=["aligned", "mid", "just-before"])
async def test_200_sequential_calls_never_exceed_the_fixed_window_within_5_percent_of_n_over_rate(
    offset: float,
) -> None:
    start = math.floor(1_790_000_000 / 60) * 60 + offset
    clock = FakeClock(start=start)
    lim = limiter(clock)
    server = FixedWindowServer(clock)
    with anyio.fail_after(5):
        for _ in range(200):
            await call(lim, server, RESEARCH)
    assert server.statuses == Counter({200: 200})
    assert max(server.counts.values()) <= 60
    makespan = clock.monotonic()
    assert makespan == pytest.approx((200 - BURST) * STEP, rel=0.01)
    assert makespan <= 1.05 * 200 * 60 / SEAMLESS_LIMIT  # the benchmark target: 1.05 x N/rate


async def test_a_concurrent_burst_of_100_gets_no_429() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=1000.0)
    server = FixedWindowServer(clock)
    statuses: list[int] = []

    async def one() -> None:
        statuses.append(await call(lim, server, RESEARCH))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(100):
                tg.start_soon(one)
    assert statuses == [200] * 100
    assert max(server.counts.values()) <= 60


async def test_other_consumers_of_the_org_quota_are_seen_through_remaining() -> None:
    clock = FakeClock(start=math.floor(1_790_000_000 / 60) * 60)  # window just opened
    lim = limiter(clock, max_inline_wait=1000.0)
    server = FixedWindowServer(clock, already_used=57)
    with anyio.fail_after(5):
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
@given(
    limit=st.integers(min_value=1, max_value=120),
    burst=st.integers(min_value=1, max_value=50),
    gaps=_gaps,
)
@example(limit=60, burst=10, gaps=[0.0] * 150)  # worst case: full bucket, then steady demand
@example(limit=7, burst=3, gaps=[0.0] * 30)
@example(limit=600, burst=20, gaps=[0.0] * 150)
def test_no_interval_of_one_window_ever_holds_more_than_the_limit(
    limit: int, burst: int, gaps: list[float]
) -> None:
    async def run() -> list[float]:
        clock = FakeClock()
        lim = InMemoryLimiter(
            clock, spec_for=lambda _key: BucketSpec(limit, burst), max_inline_wait=1e9
        )
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


def test_steady_demand_on_a_seamless_bucket_fills_a_minute_to_59_of_60() -> None:
    # The bound above is tight, not vacuous: burst 2 plus 57 paced sends (57.6 a minute).
    async def run() -> list[float]:
        clock = FakeClock()
        lim = limiter(clock, max_inline_wait=1e9)
        times = []
        for _ in range(150):
            await lim.acquire(RESEARCH)
            times.append(clock.monotonic())
        return times

    times = anyio.run(run, backend="asyncio")
    per_window = [sum(1 for s in times if t - WINDOW < s <= t) for t in times]
    assert max(per_window) == 59


# --- observe(): the server's numbers win ---------------------------------------------------


async def test_remaining_lowers_the_local_tokens() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=60, remaining=1, reset_after=40.0))
    waits = await drain(lim, RESEARCH, 3)
    assert waits == pytest.approx([0.0, STEP, STEP])  # a full bucket would give 0, 0, STEP


async def test_a_larger_remaining_never_adds_tokens() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=60, remaining=55))
    assert await lim.acquire(RESEARCH) == pytest.approx(STEP)


async def test_a_new_limit_from_the_headers_changes_the_rate() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=120, remaining=100))
    assert await lim.acquire(RESEARCH) == pytest.approx(STEP / 2)  # twice the rate
    await lim.observe(RESEARCH, 200, RateLimitHints(limit=30, window=60.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(STEP * 2)  # half the rate
    (snap,) = await lim.snapshot()
    assert snap.limit == 30


async def test_a_429_blocks_the_bucket_until_the_reset() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0)
    await lim.observe(RESEARCH, 429, RateLimitHints(limit=60, remaining=0, reset_after=30.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(30.0)
    # After the reset the bucket refills normally: it does not stay at zero.
    assert await lim.acquire(RESEARCH) == 0.0


async def test_the_end_of_a_block_is_jittered_by_at_most_ten_percent() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0, rng=Edge(high=True))
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=5.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(5.5)


async def test_remaining_zero_on_a_success_also_blocks_until_the_reset() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 200, RateLimitHints(remaining=0, reset_after=12.0))
    assert await lim.acquire(RESEARCH) == pytest.approx(12.0)


async def test_retry_after_on_a_429_takes_precedence_over_the_reset() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    hints = RateLimitHints(retry_after=4.0, remaining=0, reset_after=50.0)
    await lim.observe(CONTROL, 429, hints)
    assert await lim.acquire(CONTROL) == pytest.approx(4.0)


async def test_a_suspicious_reset_is_clamped_to_one_window() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=100.0)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=300.0))
    (snap,) = await lim.snapshot()
    assert snap.blocked_for == pytest.approx(60.0)
    assert snap.reset_in == pytest.approx(300.0)  # the raw value is still reported


async def test_a_429_without_hints_empties_the_bucket() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 429, RateLimitHints())
    assert await lim.acquire(RESEARCH) == pytest.approx(STEP)


async def test_a_429_arriving_while_a_caller_waits_extends_its_wait() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=60.0)
    await drain(lim, RESEARCH, BURST)
    waited: list[float] = []

    async def waiter() -> None:
        waited.append(await lim.acquire(RESEARCH))

    async def server_says_429() -> None:
        while not clock.slept:
            await anyio.lowlevel.checkpoint()
        await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=10.0))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            tg.start_soon(server_says_429)
    assert waited == pytest.approx([STEP + 10.0])


# --- refusal without consuming a token ------------------------------------------------------


async def test_a_wait_past_the_deadline_raises_without_taking_a_token() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
    with pytest.raises(LocalRateLimited) as caught:
        await lim.acquire(RESEARCH, deadline=clock.monotonic() + 0.5)
    assert caught.value.retry_after == pytest.approx(STEP)
    assert caught.value.bucket == "POST /contacts/research"
    assert caught.value.provider == "seamless"
    assert (
        str(caught.value) == "Local rate guard: POST /contacts/research exhausted; next slot in 2s."
    )
    assert clock.slept == []  # refused at once, not after waiting
    # Had the refused call taken a token, this one would wait two steps.
    assert await lim.acquire(RESEARCH, deadline=clock.monotonic() + 5) == pytest.approx(STEP)


async def test_a_wait_above_the_inline_cap_raises_even_without_a_deadline() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=30.0))
    with pytest.raises(LocalRateLimited) as caught:
        await lim.acquire(RESEARCH)
    assert caught.value.retry_after == pytest.approx(30.0)
    (snap,) = await lim.snapshot()
    assert snap.remaining == 0
    assert snap.blocked_for == pytest.approx(30.0)


async def test_the_queue_ahead_counts_so_late_callers_are_refused_at_once() -> None:
    clock = FakeClock()
    lim = limiter(clock)  # max inline wait 20 s
    paced = math.floor(DEFAULT_POLICY.max_inline_wait / STEP)  # 19 sends paced within 20 s
    ok: list[float] = []
    refused: list[tuple[float, float]] = []

    async def one() -> None:
        try:
            ok.append(await lim.acquire(RESEARCH))
        except LocalRateLimited as exc:
            refused.append((clock.monotonic(), exc.retry_after))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for _ in range(30):
                tg.start_soon(one)
    # 2 from the burst plus 19 more within 20 s (19 / 0.96 = 19.8 s; a 20th would be 20.8 s).
    assert paced == 19
    assert len(ok) == BURST + paced
    assert max(ok) == pytest.approx(paced * STEP)
    assert [t for t, _ in refused] == [0.0] * (30 - len(ok))  # refused before anything slept
    # Refused callers do not queue, so each is told the same next free slot: the 22nd.
    assert [r for _, r in refused] == pytest.approx([(paced + 1) * STEP] * (30 - len(ok)))


async def test_cost_must_be_positive() -> None:
    lim = limiter(FakeClock())
    with pytest.raises(ValueError, match="positive"):
        await lim.acquire(RESEARCH, cost=0)


# --- fairness, partitioning, cancellation ------------------------------------------------------


async def test_waiters_are_served_first_come_first_served() -> None:
    clock = FakeClock()
    lim = limiter(clock, max_inline_wait=1000.0)
    order: list[int] = []
    waited: dict[int, float] = {}

    async def one(i: int) -> None:
        waited[i] = await lim.acquire(RESEARCH)
        order.append(i)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
    assert order == list(range(40))
    assert [waited[i] for i in range(40)] == pytest.approx(
        [0.0] * BURST + [(i - BURST + 1) * STEP for i in range(BURST, 40)]
    )


async def test_buckets_are_partitioned_by_key_endpoint_and_provider() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
    await lim.observe(RESEARCH, 429, RateLimitHints(remaining=0, reset_after=15.0))
    assert await drain(lim, OTHER_TENANT, BURST) == [0.0] * BURST
    assert await drain(lim, POLL, BURST) == [0.0] * BURST
    assert await drain(lim, CONTROL, 20) == [0.0] * 20
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


async def test_a_cancelled_waiter_gives_its_place_back() -> None:
    clock = GatedClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)

    async def probe() -> float:
        try:
            await lim.acquire(RESEARCH, deadline=clock.monotonic())
        except LocalRateLimited as exc:
            return exc.retry_after
        raise AssertionError("the bucket was expected to be empty")

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lim.acquire, RESEARCH)
            await clock.sleeping.wait()
            assert await probe() == pytest.approx(2 * STEP)  # behind the sleeping waiter
            tg.cancel_scope.cancel()
        assert await probe() == pytest.approx(STEP)  # its place was given back


# --- snapshot and credits ------------------------------------------------------------------


async def test_snapshot_reports_every_bucket_sorted_with_estimates() -> None:
    clock = FakeClock()
    lim = limiter(clock)
    await drain(lim, RESEARCH, BURST)
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
            tokens=2.0,
            blocked_for=0.0,
            reset_in=None,
        ),
        BucketSnapshot(
            provider="seamless",
            key_fingerprint="k_aaaaaaaaaaaa",
            bucket="POST /contacts/research",
            limit=60,
            window=60.0,
            remaining=40,
            tokens=2.0,
            blocked_for=0.0,
            reset_in=20.0,
        ),
    ]
    await lim.acquire(RESEARCH)
    snap = (await lim.snapshot())[1]
    assert snap.remaining == 39
    clock.advance(21.0)
    snap = (await lim.snapshot())[1]
    assert (snap.remaining, snap.reset_in) == (57, None)  # window passed: only our own sends


async def test_credits_are_kept_per_provider_and_key() -> None:
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
