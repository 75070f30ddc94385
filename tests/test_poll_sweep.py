"""Jobs that end together are all seen at once: the poll sweep on the bucket's reserve (issue 17,
the scale check's regression after item 7).

`python tools/bench.py --only scale` waits 45 s on ten 100-target research jobs that end
together 40 s after their POSTs (1,000 ids: ten 100-id poll calls a round). With 60 poll calls
a minute each chunk is polled every 10.4 s at best, and the cadence pause came after the whole
round (a chunk every ~15 s): 27-53 of 1,000 waits ran out before their job's chunk came round.
Now the pause counts from the round's start, and the first call that sees a job end sweeps the
chunks of the jobs started with it at once, on the poll bucket's reserve (`BucketSpec.reserve`,
taken only under `spend_reserve()`). The window's limit is unchanged: never more than 60 calls
in any 60 s (nor in any 62.5 s). Fake time throughout: `VirtualClock` jumps when the limiter
sleeps, and to the next cadence deadline when every task is blocked; nothing sleeps for real.
The coalescer runs on the in-process limiter (the SQLite one works in a thread, which the
driver would take for a blocked task); the reserve's arithmetic is checked on both.
"""

from __future__ import annotations

import bisect
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager

import anyio
import pytest

from mcp_server._clock import FakeClock
from mcp_server.limits import InMemoryLimiter, SqliteLimiter, spend_reserve
from mcp_server.limits._window import WindowState
from mcp_server.limits.base import SAFETY, WINDOW, BucketKey, BucketSpec
from mcp_server.providers.seamless.connection import MAX_POLL_CALLS_PER_ROUND
from mcp_server.providers.seamless.limits import POLL_BURST, POLL_RESERVE, SEAMLESS_LIMIT
from mcp_server.pushes import PushReconciler
from mcp_server.upstream import MAX_POLL_IDS
from mcp_server.watch import SWEEP_PAD, PollCoalescer
from tests.conftest import most_in_any

pytestmark = pytest.mark.anyio

POLL = BucketKey("seamless", "k_sweepsweep", "GET /contacts/research/poll")
STEP = WINDOW / SAFETY / SEAMLESS_LIMIT  # 1.0417 s: one poll slot at the long-run rate
JOB_SECONDS = 40.0
WAIT_SECONDS = 45.0
JOBS = 10
POST_GAP = 0.1
"""The scale bench's research POSTs go out one tool call after another."""


class VirtualClock(FakeClock):
    """A `FakeClock` whose `move_on_after` ends on fake time: when a sleep passes its
    deadline, or when `drive` (a background task) finds every other task blocked and jumps
    the clock to the earliest open deadline."""

    def __init__(self) -> None:
        super().__init__()
        self._timers: list[tuple[float, int, anyio.CancelScope]] = []
        self._made = 0

    @contextmanager  # type: ignore[override]  # used as `with`, like a CancelScope
    def move_on_after(self, seconds: float) -> Iterator[anyio.CancelScope]:
        self._made += 1
        entry = (self.monotonic() + max(0.0, seconds), self._made, anyio.CancelScope())
        bisect.insort(self._timers, entry)
        try:
            with entry[2] as scope:
                yield scope
        finally:
            self._timers.remove(entry)

    def advance(self, seconds: float) -> None:
        super().advance(seconds)
        for at, _, scope in self._timers:
            if at <= self.monotonic():
                scope.cancel()

    async def drive(self) -> None:
        while True:
            await anyio.wait_all_tasks_blocked()
            if self._timers:
                self.advance(self._timers[0][0] - self.monotonic())
            await anyio.lowlevel.checkpoint()


class Upstream:
    """A poll endpoint behind the real limiter: each id is done from its job's end on."""

    def __init__(self, clock: FakeClock, limiter: InMemoryLimiter | SqliteLimiter) -> None:
        self.clock = clock
        self.limiter = limiter
        self.ends: dict[str, float] = {}
        self.calls: list[tuple[float, list[str], bool]] = []
        """(time, ids, made under `spend_reserve()`) of every call."""
        self.seen_done: dict[str, float] = {}
        self.all_seen = anyio.Event()

    def job(self, name: str, start: float, size: int = MAX_POLL_IDS) -> dict[str, float]:
        ids = {f"{name}-{n:03d}": start for n in range(size)}
        self.ends.update(dict.fromkeys(ids, start + JOB_SECONDS))
        return ids

    async def poll(self, ids: Sequence[str]) -> Mapping[str, str]:
        from mcp_server.limits.base import spending_reserve

        await self.limiter.acquire(POLL, deadline=self.clock.monotonic() + 30.0)
        now = self.clock.monotonic()
        self.calls.append((now, list(ids), spending_reserve()))
        out = {i: "done" if now >= self.ends[i] else "researching" for i in ids}
        for i, v in out.items():
            if v == "done":
                self.seen_done.setdefault(i, now)
        if len(self.seen_done) == len(self.ends):
            self.all_seen.set()
        return out


async def _watch_until_seen(
    clock: VirtualClock,
    upstream: Upstream,
    starts: dict[str, float],
    *,
    sweep_calls: int = POLL_RESERVE,
    interval: Callable[[int], float] = lambda n: min(5.0, 2.0 * 1.5**n),
    until: float = WAIT_SECONDS,
) -> None:
    """The Seamless coalescer's shape (100 ids a call, 10 calls a round) watching every id
    until all were seen done or `until` (fake seconds) passed."""
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.drive)
            co: PollCoalescer[str] = PollCoalescer(
                poll=upstream.poll,
                is_terminal=lambda s: s == "done",
                interval=interval,
                clock=clock,
                spawn=tg.start_soon,
                max_ids=MAX_POLL_IDS,
                max_calls_per_round=MAX_POLL_CALLS_PER_ROUND,
                sweep_calls=sweep_calls,
            )
            async with co.watch(list(starts)):
                co.started(starts)
                with clock.move_on_after(until - clock.monotonic()):
                    await upstream.all_seen.wait()
            tg.cancel_scope.cancel()


@pytest.mark.parametrize("setup", [0.5, 1.0, 2.0, 3.3])
async def test_ten_jobs_ending_together_are_all_seen_within_the_sweep(setup: float) -> None:
    """The scale bench's shape: ten 100-target jobs POSTed 0.1 s apart, waited on from
    `setup` seconds later (the SEO jobs start in between) for 45 s. Each `setup` puts the
    rotation at another phase when the jobs end."""
    clock = VirtualClock()
    upstream = Upstream(clock, InMemoryLimiter(clock))
    starts: dict[str, float] = {}
    for j in range(JOBS):
        starts.update(upstream.job(f"job{j}", start=-setup + j * POST_GAP))
    await _watch_until_seen(clock, upstream, starts)

    first = min(upstream.seen_done.values())
    spread = (JOBS - 1) * POST_GAP
    # Every chunk is polled again and seen done within the sweep after the first is seen
    # done: a job started later is swept when the same duration ends it, plus the pad.
    for j in range(JOBS):
        seen = upstream.seen_done.get(f"job{j}-000")
        assert seen is not None, f"job{j} not seen done within the waits"
        assert seen <= first + spread + SWEEP_PAD + 1e-6, (j, first, seen)
        assert seen <= WAIT_SECONDS + 1e-6  # the waits began at 0
    swept = [c for c in upstream.calls if c[2]]
    assert 1 <= len(swept) <= POLL_RESERVE
    calls = [t for t, _, _ in upstream.calls]
    assert most_in_any(calls, WINDOW) <= SEAMLESS_LIMIT
    assert most_in_any(calls, WINDOW / SAFETY) <= SEAMLESS_LIMIT


async def test_the_cadence_counts_from_the_rounds_start() -> None:
    """A round whose call takes 1.5 s starts the next 4 s after it started (the per-id
    cadence, DESIGN.md 2.5), not 4 s after it ended; a round longer than the interval is
    followed by the next at once (its calls are paced by the limiter, not by the pause)."""
    clock = VirtualClock()
    upstream = Upstream(clock, InMemoryLimiter(clock))
    starts = upstream.job("slow", start=0.0, size=1)
    inner = upstream.poll

    async def slow(ids: Sequence[str]) -> Mapping[str, str]:
        items = await inner(ids)
        await clock.sleep(1.5)
        return items

    upstream.poll = slow  # type: ignore[method-assign]
    await _watch_until_seen(clock, upstream, starts, interval=lambda _n: 4.0, until=13.0)
    assert [t for t, _, _ in upstream.calls] == pytest.approx([0.0, 4.0, 8.0, 12.0])


async def test_two_batches_each_get_one_sweep_and_no_window_holds_more_than_60_calls() -> None:
    """Two batches, 5 jobs then 10 started 27 s later: 15 chunks, so rounds rotate (10 calls a
    round) at the full pace for 70 s. Each batch is swept once, when its first job is seen
    done. The first ends 38 s in, with the window half used: its sweep goes out at once. The
    second ends 65 s in, when the regular rounds have used the window (60 calls in 62.5 s):
    the reserve is a reserve of the pace, not of the window, so its sweep waits for the
    window's slots, one a step, as the rotation would (a window reserve would slow every
    regular round to 51 calls a minute). The calls stay within the limit in every window."""
    clock = VirtualClock()
    upstream = Upstream(clock, InMemoryLimiter(clock))
    starts: dict[str, float] = {}
    for j in range(5):
        starts.update(upstream.job(f"early{j}", start=-2.0 + j * POST_GAP))
    for j in range(10):
        starts.update(upstream.job(f"late{j}", start=25.0 + j * POST_GAP))
    await _watch_until_seen(clock, upstream, starts, until=120.0)
    assert upstream.all_seen.is_set()
    early = [upstream.seen_done[f"early{j}-000"] for j in range(5)]
    assert max(early) <= min(early) + 4 * POST_GAP + SWEEP_PAD + 1e-6, early
    late = [upstream.seen_done[f"late{j}-000"] for j in range(10)]
    assert max(late) <= min(late) + 9 * STEP + SWEEP_PAD + 1e-6, late
    swept = [c for c in upstream.calls if c[2]]
    assert 0 < len(swept) <= 4 + 9  # one sweep per batch: the others of each
    calls = [t for t, _, _ in upstream.calls]
    assert len(calls) > SEAMLESS_LIMIT  # long enough for the window to matter
    assert most_in_any(calls, WINDOW) <= SEAMLESS_LIMIT
    assert most_in_any(calls, WINDOW / SAFETY) <= SEAMLESS_LIMIT


async def test_regular_sends_leave_the_reserve_which_urgent_sends_take_at_once(
    local_limiter: Callable[[FakeClock], InMemoryLimiter | SqliteLimiter],
) -> None:
    """Every backend runs the same arithmetic (`limits._window`)."""
    clock = FakeClock()
    lim = local_limiter(clock)
    with anyio.fail_after(10):
        regular = [await lim.acquire(POLL) for _ in range(POLL_BURST + 1)]
        assert regular == pytest.approx([0.0] * POLL_BURST + [STEP])
        with spend_reserve():
            urgent = [await lim.acquire(POLL) for _ in range(POLL_RESERVE + 1)]
        # Regular sends kept the reserve whole: it goes out at once, then one a step.
        assert urgent == pytest.approx([0.0] * POLL_RESERVE + [STEP])
        # Regular sends wait until the pace is back within the burst, reserve untouched.
        before = clock.monotonic()
        await lim.acquire(POLL)
        assert clock.monotonic() - before == pytest.approx((POLL_RESERVE + 1) * STEP)


def test_a_stored_state_is_reserved_as_its_spec_says_now() -> None:
    """A bucket stored before the reserve existed (no `reserve` key) still decodes; the limiter
    applies the spec's reserve to it (`WindowLimiter._restore`, every backend's decoder)."""
    state = WindowState.seeded(BucketSpec(60, paced_burst=POLL_BURST, reserve=3), SAFETY)
    data = state.to_json()
    assert WindowState.from_json(json.loads(json.dumps(data))).reserve == 3
    old = {k: v for k, v in data.items() if k != "reserve"}
    assert WindowState.from_json(old).reserve == 0
    restored = InMemoryLimiter(FakeClock())._restore(POLL, json.dumps(old))
    assert restored.reserve == POLL_RESERVE


async def test_a_sweep_leaves_the_ids_pushes_stand_in_for() -> None:
    """With webhook pushes arriving, ids are polled only when due (`pushes.due_ids`): a sweep
    does not poll the others early either. Job `a` is expedited (a push hinted at it) and seen
    done; job `b`, started with it, is not due until its expected push time (10 s)."""
    clock = VirtualClock()
    upstream = Upstream(clock, InMemoryLimiter(clock))
    upstream.job("a", start=-41.0)  # both long done upstream
    upstream.job("b", start=-41.0)
    starts = {i: 0.0 if i.startswith("a") else 0.1 for i in upstream.ends}  # as the ledger says
    push = PushReconciler(clock=clock)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(clock.drive)
            co: PollCoalescer[str] = PollCoalescer(
                poll=upstream.poll,
                is_terminal=lambda s: s == "done",
                interval=lambda n: min(5.0, 2.0 * 1.5**n),
                clock=clock,
                spawn=tg.start_soon,
                max_ids=MAX_POLL_IDS,
                push=push,
                sweep_calls=POLL_RESERVE,
            )
            co.pushed(["elsewhere"])  # pushes arrive: polling drops to the due ids
            async with co.watch(list(starts)):
                co.started(starts)
                assert co.expedite([i for i in starts if i.startswith("a")])
                with clock.move_on_after(30.0):
                    await upstream.all_seen.wait()
            tg.cancel_scope.cancel()
    assert upstream.all_seen.is_set()
    assert [c[2] for c in upstream.calls] == [False, False]  # no sweep call
    assert upstream.calls[0][1][0].startswith("a")
    assert upstream.calls[0][0] < 1.0
    assert upstream.calls[1][1][0].startswith("b")
    assert upstream.calls[1][0] >= 10.0 + 0.1 - 1e-6  # when b's push was due, not swept
