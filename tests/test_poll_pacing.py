"""A poll endpoint's budget is paced, so a long run keeps its poll cadence (issue 17, after 17.7).

The regression: with the idle-window burst on every bucket, a coalescer polling 1,000 research
ids (10 calls a round, a round every 2-5 s) spent all 60 poll calls of the window in its first
15 s and then saw nothing for 47 s, so 100-target jobs ending 40 s in were not seen before 45 s
waits ran out (`python tools/bench.py --only scale`: 170 of 1,000 waits unfinished). Submits
still burst (tests/test_idle_window.py, tests/upstream/test_ratelimit.py). FakeClock: no
sleeping, time jumps only when the limiter or the modelled round pause sleeps.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from pydantic import SecretStr

from mcp_server._clock import FakeClock
from mcp_server.config import Settings
from mcp_server.limits import InMemoryLimiter, SqliteLimiter
from mcp_server.limits._window import WindowState
from mcp_server.limits.base import SAFETY, WINDOW, BucketKey, BucketSpec
from mcp_server.providers.agentseo.connection import AgentSEOConnection
from mcp_server.providers.agentseo.limits import background_polls_per_second
from mcp_server.providers.base import Caller, ProviderEnv
from mcp_server.providers.seamless.connection import MAX_POLL_CALLS_PER_ROUND
from mcp_server.providers.seamless.limits import POLL_BURST, SEAMLESS_LIMIT
from mcp_server.upstream._backoff import DEFAULT_POLICY, RetryBudget, poll_interval

pytestmark = pytest.mark.anyio

KEY = "k_pacepacepace"
POLL = BucketKey("seamless", KEY, "GET /contacts/research/poll")
COMPANY_POLL = BucketKey("seamless", KEY, "GET /companies/research/poll")
RESEARCH = BucketKey("seamless", KEY, "POST /contacts/research")
STEP = WINDOW / SAFETY / SEAMLESS_LIMIT  # 1.0417 s: one poll slot at the long-run rate

AnyLimiter = InMemoryLimiter | SqliteLimiter


async def _rounds(
    lim: AnyLimiter, clock: FakeClock, chunks: int, until: float
) -> list[list[float]]:
    """`PollCoalescer`'s loop as the scale bench drives it: each round polls every chunk (at
    most `MAX_POLL_CALLS_PER_ROUND` calls, rotating), each call through the limiter, then
    pauses the Seamless cadence (2 s rising to 5 s; no jitter). When each chunk was polled."""
    polled: list[list[float]] = [[] for _ in range(chunks)]
    rotation = 0
    index = 0
    with anyio.fail_after(10):
        while clock.monotonic() < until:
            for k in range(min(chunks, MAX_POLL_CALLS_PER_ROUND)):
                chunk = (rotation + k) % chunks
                await lim.acquire(POLL)
                polled[chunk].append(clock.monotonic())
            rotation += MAX_POLL_CALLS_PER_ROUND
            await clock.sleep(poll_interval("seamless", index, rng=_NoJitter()))
            index += 1
    return polled


class _NoJitter:
    def uniform(self, low: float, high: float) -> float:
        return (low + high) / 2


async def test_a_thousand_ids_are_each_polled_again_between_40_and_45_s(
    local_limiter: Callable[[FakeClock], AnyLimiter],
) -> None:
    clock = FakeClock()
    lim = local_limiter(clock)
    polled = await _rounds(lim, clock, chunks=10, until=60.0)
    # The best cadence 60 calls a minute allow for 10 chunks: each every 10 calls (10.4 s).
    cadence = MAX_POLL_CALLS_PER_ROUND * STEP
    # Every 100-id chunk is seen within one cadence after its job ends 40 s in. With the
    # window's burst on the poll bucket the calls stopped at 15 s until 62.5 s.
    for times in polled:
        assert any(40.0 <= t <= 40.0 + cadence + 1e-6 for t in times), times
    # ... and steadily: no chunk waits much longer than that between two polls (up to 1.5 s
    # more while the pause grows from 2 s to 5 s; the burst refills during the pause).
    gaps = [b - a for times in polled for a, b in itertools.pairwise(times)]
    assert max(gaps) <= cadence + 1.5 + 1e-6
    # The budget is still used fully and never exceeded: at most 60 calls in any 62.5 s.
    sent = sorted(t for times in polled for t in times)
    assert all(sum(1 for u in sent if s <= u < s + WINDOW / SAFETY) <= 60 for s in sent)


async def test_a_poll_bucket_bursts_five_then_paces_while_submits_burst_the_window(
    local_limiter: Callable[[FakeClock], AnyLimiter],
) -> None:
    clock = FakeClock()
    lim = local_limiter(clock)
    with anyio.fail_after(10):
        research = [await lim.acquire(RESEARCH) for _ in range(60)]
        polls = [await lim.acquire(POLL) for _ in range(10)]
        other = await lim.acquire(COMPANY_POLL)
    assert research == [0.0] * 60
    assert POLL_BURST == 5
    assert polls[:5] == [0.0] * 5
    assert polls[5:] == pytest.approx([STEP] * 5)
    assert other == 0.0  # another poll endpoint has its own pace
    assert clock.monotonic() == pytest.approx(5 * STEP)


async def test_an_idle_poll_bucket_refills_its_burst_at_the_long_run_rate(
    local_limiter: Callable[[FakeClock], AnyLimiter],
) -> None:
    clock = FakeClock()
    lim = local_limiter(clock)
    with anyio.fail_after(10):
        for _ in range(5):
            await lim.acquire(POLL)
        await clock.sleep(2 * STEP)
        again = [await lim.acquire(POLL) for _ in range(3)]
        usage = {b.bucket: b for b in await lim.snapshot()}
    assert again == pytest.approx([0.0, 0.0, STEP])
    assert usage[POLL.bucket].tokens == 0  # what could go out right now: none
    assert usage[POLL.bucket].remaining == 52  # what the window has left: 60 - 8


def test_a_stored_state_is_paced_as_its_spec_says_now() -> None:
    """A bucket stored before pacing existed (no `paced_*` keys) still decodes; the limiter
    applies the spec's pacing to it (`WindowLimiter._restore`)."""
    state = WindowState.seeded(BucketSpec(60, paced_burst=5), SAFETY)
    state.record(0.0, 5)
    data = state.to_json()
    assert WindowState.from_json(json.loads(json.dumps(data))).paced_at == pytest.approx(5 * STEP)
    old: dict[str, Any] = {k: v for k, v in data.items() if not k.startswith("paced")}
    lim = InMemoryLimiter(FakeClock())
    restored = lim._restore(POLL, json.dumps(old))  # the backends' one decoder
    assert restored.paced_burst == POLL_BURST
    assert restored.wait(0.0) == 0.0  # no stored pace: a full burst, as a fresh bucket


# --- AgentSEO: jobs followed beyond the stream cap -------------------------------------------


@pytest.mark.parametrize(("plan", "per_second"), [("hobby", 2.0), ("pro", 10.0)])
async def test_jobs_beyond_the_stream_cap_are_polled_at_a_share_of_the_plans_control_budget(
    make_settings: Callable[..., Settings], plan: str, per_second: float
) -> None:
    """The connection's client paces its background polls (jobs without a stream) at 20 % of
    the plan's control budget: 2/s on Hobby as before, 10/s on Pro instead of a fixed 2/s
    (which polled 236 jobs beyond the 64 streams once every ~2 minutes)."""
    settings = make_settings(AGENTSEO_PLAN=plan)
    assert background_polls_per_second(settings) == pytest.approx(per_second)
    clock = FakeClock()
    env = ProviderEnv(
        settings=settings,
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=DEFAULT_POLICY,
        budget=RetryBudget(),
        spawn=lambda _run: None,
        base_url="http://127.0.0.1:9/api/v1",
        sandboxed=True,
        key_for=lambda _tenant: SecretStr("k"),
    )
    connection = AgentSEOConnection(env)
    client = connection.client(Caller(tenants={"agentseo": "t"}, sandbox={"agentseo": True}))
    try:
        with anyio.fail_after(10):
            for _ in range(21):
                assert await client._pacer.turn(math.inf)  # the turns `follow` polls on
        assert clock.monotonic() == pytest.approx(20 / per_second)
    finally:
        await connection.aclose()
