"""The poll lease's holder polls the other processes' ids on the normal cadence (issue 17,
items 1-2: one poller per org endpoint, fair to every process).

Two "processes" (each its own `PollCoalescer`, `SharedPoll`, leases connection and task
group, as separate processes have) share one store's leases: the SQLite ledger file, or Redis
(the replicas' store; skipped without it, failed in CI). Both upstreams go through one rate
limiter, the Seamless poll bucket's (a burst of 5, then one call per 1.04 s). Process A holds
the lease; B's ids must be polled within about one of A's cadence ticks plus the calls A's
round paces before them, whatever A has of its own:

- A's own ids fill every 100-id call (200 of them, or 150 with B asking for 60): before, the
  holder added B's ids only to the room left in a call, so they waited until A's own ids all
  ended (long research batches: many minutes);
- A's own ids are covered by webhook pushes (polled once a minute): before, B's ids waited for
  A's next round, or for its lease to lapse 30 s after its last call.

A `ScaledClock` (virtual time 10x real): the leases' store works in a thread or over a socket,
which a fake clock's driver would take for tasks at rest.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.limits import InMemoryLimiter
from mcp_server.limits.base import SAFETY, WINDOW, BucketKey
from mcp_server.providers.seamless.limits import SEAMLESS_LIMIT
from mcp_server.pushes import PushReconciler
from mcp_server.sharing import WISH_TTL, SharedPoll
from mcp_server.watch import PollCoalescer
from tests.conftest import TEST_EPOCH, NewLeases

pytestmark = pytest.mark.anyio

SCALE = 10.0
POLL = BucketKey("seamless", "k_fairfairfair", "GET /contacts/research/poll")
STEP = WINDOW / SAFETY / SEAMLESS_LIMIT  # 1.04 s: one poll call at the bucket's long-run rate
CADENCE = 5.0
"""The longest pause between two rounds' starts (the Seamless cadence's cap, no jitter)."""
SLACK = 2.0
"""Virtual seconds for the stores' reads and writes between the calls (0.2 s of real time)."""


def interval(n: int) -> float:
    return min(CADENCE, 2.0 * 1.5**n)


class Upstream:
    """A poll endpoint behind the org's one poll bucket; nothing ends during these tests.
    Records which process called it, when, and with which ids."""

    def __init__(self, clock: ScaledClock, limiter: InMemoryLimiter) -> None:
        self.clock = clock
        self.limiter = limiter
        self.calls: list[tuple[str, float, list[str]]] = []
        self.first_polled: dict[str, float] = {}
        self.awaited: set[str] = set()
        self.all_awaited = anyio.Event()

    def poll_for(self, who: str) -> Callable[[Sequence[str]], Awaitable[Mapping[str, str]]]:
        async def poll(ids: Sequence[str]) -> Mapping[str, str]:
            await self.limiter.acquire(POLL, deadline=self.clock.monotonic() + 30.0)
            now = self.clock.monotonic()
            self.calls.append((who, now, list(ids)))
            for i in ids:
                self.first_polled.setdefault(i, now)
            if self.awaited and self.awaited <= self.first_polled.keys():
                self.all_awaited.set()
            return dict.fromkeys(ids, "researching")

        return poll

    def calls_of(self, who: str) -> list[list[str]]:
        return [ids for w, _, ids in self.calls if w == who]


@dataclass
class Process:
    coalescer: PollCoalescer[str]
    shared: SharedPoll[str]


@asynccontextmanager
async def process(
    name: str,
    new_leases: NewLeases,
    clock: ScaledClock,
    upstream: Upstream,
    *,
    max_calls: int = 10,
    push: PushReconciler | None = None,
) -> AsyncIterator[Process]:
    """One process's Seamless-shaped coalescer (100 ids a call) on the shared leases."""
    leases = new_leases(clock, name)
    try:
        async with anyio.create_task_group() as tg:
            poll = upstream.poll_for(name)
            shared: SharedPoll[str] = SharedPoll(
                name="seamless-poll:org:contacts",
                poll=poll,
                leases=leases,
                encode=lambda item: item,
                decode=str,
                is_terminal=lambda item: item == "done",
                max_ids=100,
                clock=clock,
                spawn=tg.start_soon,
            )
            co: PollCoalescer[str] = PollCoalescer(
                poll=poll,
                round_poll=shared,
                on_idle=shared.idle,
                foreign=shared.foreign,
                push=push,
                is_terminal=lambda item: item == "done",
                interval=interval,
                clock=clock,
                spawn=tg.start_soon,
                max_ids=100,
                max_calls_per_round=max_calls,
            )
            yield Process(co, shared)
            tg.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await leases.aclose()


def ids(prefix: str, n: int) -> list[str]:
    return [f"{prefix}-{k:03d}" for k in range(n)]


@pytest.mark.parametrize(
    ("own", "theirs", "max_calls"),
    [
        (200, 1, 10),  # every call of A's rounds full of its own ids
        (150, 60, 10),  # more asked than the 50 left in A's second call
        (200, 1, 2),  # A's rounds capped at 2 calls: its chunks and B's take turns
        (150, 1, 10),  # the room in A's second call is enough (held on main too)
    ],
)
async def test_the_holder_polls_another_process_ids_on_the_cadence_whatever_it_has_of_its_own(
    new_leases: NewLeases, own: int, theirs: int, max_calls: int
) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    upstream = Upstream(clock, InMemoryLimiter(clock))
    mine, asked = ids("a", own), ids("b", theirs)
    chunks = math.ceil((own + theirs) / 100)
    rounds = math.ceil(chunks / max_calls)  # rounds until every chunk had its turn
    # B's first ask waits for A's next tick, then for the calls A's rounds pace before B's
    # ids (every call of a round, each round in turn): at worst this long.
    bound = rounds * CADENCE + rounds * min(chunks, max_calls) * STEP + SLACK
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            a, b = [
                await stack.enter_async_context(
                    process(name, new_leases, clock, upstream, max_calls=max_calls)
                )
                for name in ("a", "b")
            ]
            await stack.enter_async_context(a.coalescer.watch(mine))
            with clock.move_on_after(10.0):
                while not upstream.calls:  # A's first round takes the lease
                    await a.coalescer.board.wait_newer(a.coalescer.board.version)
            assert upstream.calls_of("a"), "A never polled"
            upstream.awaited = set(asked)
            asked_at = clock.monotonic()
            await stack.enter_async_context(b.coalescer.watch(asked))
            with clock.move_on_after(bound + CADENCE):
                await upstream.all_awaited.wait()
            late = [i for i in asked if i not in upstream.first_polled]
            assert not late, f"{len(late)} of B's {theirs} ids never polled in {bound:.1f} s"
            took = max(upstream.first_polled[i] for i in asked) - asked_at
            # B's waiters have their items at B's next round (read from the board).
            with clock.move_on_after(CADENCE + SLACK):
                while len(b.coalescer.latest(asked)) < theirs:
                    await b.coalescer.board.wait_newer(b.coalescer.board.version)
            got = len(b.coalescer.latest(asked))
    assert took <= bound, (took, bound)
    assert got == theirs
    assert upstream.calls_of("b") == []  # one poller: A held the lease throughout
    assert max(len(c) for c in upstream.calls_of("a")) <= 100


async def test_a_holder_whose_ids_pushes_cover_still_polls_the_others_ids_on_the_cadence(
    new_leases: NewLeases,
) -> None:
    """A's only id is covered by webhook pushes (its next poll a minute away): A keeps the
    lease, and its loop still wakes on the cadence to poll what B asks for."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    upstream = Upstream(clock, InMemoryLimiter(clock))
    push = PushReconciler(clock=clock)
    bound = CADENCE + STEP + SLACK
    with anyio.fail_after(60):
        async with AsyncExitStack() as stack:
            a = await stack.enter_async_context(
                process("a", new_leases, clock, upstream, push=push)
            )
            b = await stack.enter_async_context(process("b", new_leases, clock, upstream))
            await stack.enter_async_context(a.coalescer.watch(["a-1"]))
            a.coalescer.started({"a-1": clock.monotonic()})
            with clock.move_on_after(10.0):
                while not upstream.calls:  # A's first round takes the lease
                    await a.coalescer.board.wait_newer(a.coalescer.board.version)
            assert upstream.calls_of("a") == [["a-1"]]
            # Deliveries arrive (jobs take 200 s): a-1 is next polled 60 s after its poll.
            push.arrived("elsewhere", took=200.0)
            assert push.due_at("a-1") >= clock.monotonic() + 50.0
            # A's next tick passes with nothing of its own due (before, its loop then paused
            # until a-1's poll a minute away); only then does B ask.
            await clock.sleep(CADENCE)
            upstream.awaited = {"b-1"}
            asked_at = clock.monotonic()
            await stack.enter_async_context(b.coalescer.watch(["b-1"]))
            with clock.move_on_after(bound + CADENCE):
                await upstream.all_awaited.wait()
            polled = upstream.first_polled.get("b-1")
            a_polls = sum(c.count("a-1") for c in upstream.calls_of("a"))
    assert polled is not None, f"B's id not polled within {bound + CADENCE:.1f} s"
    assert polled - asked_at <= bound, (polled - asked_at, bound)
    assert upstream.calls_of("b") == []  # A kept the lease: one poller
    assert a_polls == 1  # A's own id stays on the pushes' slow cadence


def _board_poll(name: str, leases: object, upstream: list[list[str]]) -> SharedPoll[str]:
    async def poll(ids: Sequence[str]) -> Mapping[str, str]:
        upstream.append(list(ids))
        return dict.fromkeys(ids, "researching")

    return SharedPoll(
        name=name,
        poll=poll,
        leases=leases,  # type: ignore[arg-type]
        encode=lambda item: item,
        decode=str,
        is_terminal=lambda item: item == "done",
        max_ids=100,
    )


async def test_asks_stand_between_two_rounds_and_the_longest_asked_come_first(
    new_leases: NewLeases,
) -> None:
    """An ask stands longer than the asker's slowest round apart (`WISH_TTL`; it was the 4 s
    lease's TTL, shorter than a 5-6 s round: the holder's round could fall between two asks),
    and the holder hands the asks in the order it first saw them, not by id."""
    clock = FakeClock()
    calls: list[list[str]] = []
    la, lb, lc = (new_leases(clock, n) for n in "abc")
    a, b, c = (_board_poll("p", leases, calls) for leases in (la, lb, lc))
    try:
        with anyio.fail_after(10):
            await a(["a-1"])  # a holds the lease
            assert await b(["r9"]) == {}
            assert await a.foreign(["a-1"]) == ["r9"]
            clock.advance(1.0)
            assert await c(["r1"]) == {}
            assert await a.foreign(["a-1"]) == ["r9", "r1"]  # oldest first, not by id
            clock.advance(CADENCE * 1.2)  # B's and C's slowest next rounds have not come yet
            assert await a.foreign(["a-1"]) == ["r9", "r1"]
            clock.advance(WISH_TTL)  # they stopped asking: their waiters left
            assert await a.foreign(["a-1"]) == []
            assert await b.foreign(["r9"]) == []  # not the holder: nothing to hand
    finally:
        for leases in (la, lb, lc):
            await leases.aclose()


async def test_an_id_both_processes_wait_on_is_published_for_the_other(
    new_leases: NewLeases,
) -> None:
    """B waits on an id A polls as its own: A publishes it for B (before, only ids A did not
    watch itself were published, so B read nothing until A's own ids all ended)."""
    clock = FakeClock()
    calls: list[list[str]] = []
    la, lb = new_leases(clock, "a"), new_leases(clock, "b")
    a, b = _board_poll("p", la, calls), _board_poll("p", lb, calls)
    try:
        with anyio.fail_after(10):
            await a(["r1"])
            assert await b(["r1"]) == {}
            await a(["r1"])
            assert calls == [["r1"], ["r1"]]  # polled once a call, not twice
            assert await b(["r1"]) == {"r1": "researching"}
    finally:
        await la.aclose()
        await lb.aclose()
