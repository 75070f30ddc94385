from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import anyio
import pytest
from conftest import TEST_EPOCH

from mcp_server._clock import ScaledClock
from mcp_server.errors import LocalRateLimited
from mcp_server.sharing import ResultFeed
from mcp_server.watch import Latest, PollCoalescer, StreamHub, wait_newer_until

pytestmark = pytest.mark.anyio

SCALE = 200.0  # 1 virtual second = 5 ms
UNTIL_DONE = 3_600.0
"""The virtual deadline of a wait that must end by its condition, not by its deadline: at
SCALE an hour is 18 real seconds, beyond every test's `fail_after`, so a loaded machine (a
round late by a few hundred real milliseconds) cannot run it out and turn a pass into "not
done". The deadline itself is tested with short budgets on a slower clock, and a wait that
must be cut short by a kick keeps a budget shorter than the round it must beat."""


class FakeEndpoint:
    """A poll endpoint whose items finish after `done_after` polls of them."""

    def __init__(self, done_after: int = 2) -> None:
        self.calls: list[list[str]] = []
        self.seen: dict[str, int] = {}
        self.done_after = done_after
        self.fail_next: Exception | None = None
        self.hold: dict[int, anyio.Event] = {}
        """Call number -> an event the call waits for before it answers."""

    async def poll(self, ids: Sequence[str]) -> Mapping[str, str]:
        self.calls.append(list(ids))
        held = self.hold.get(len(self.calls))
        if held is not None:
            await held.wait()
        if self.fail_next is not None:
            exc, self.fail_next = self.fail_next, None
            raise exc
        out = {}
        for i in ids:
            self.seen[i] = self.seen.get(i, 0) + 1
            out[i] = "done" if self.seen[i] >= self.done_after else "researching"
        return out


async def _wait_all_done(
    co: PollCoalescer[str], ids: list[str], clock: ScaledClock, budget: float
) -> dict[str, str]:
    deadline = clock.monotonic() + budget
    async with co.watch(ids):
        while True:
            seen = co.board.version
            latest = co.latest(ids)
            if len(latest) == len(ids) and all(v == "done" for v in latest.values()):
                return latest
            if not await wait_newer_until(co.board, seen, clock, deadline):
                return latest


def _coalescer(
    tg: anyio.abc.TaskGroup,
    endpoint: FakeEndpoint,
    clock: ScaledClock,
    max_ids: int | None = None,
) -> PollCoalescer[str]:
    def spawn(fn: Callable[[], Awaitable[None]]) -> None:
        tg.start_soon(fn)

    return PollCoalescer(
        poll=endpoint.poll,
        is_terminal=lambda s: s == "done",
        interval=lambda i: min(5.0, 2.0 * 1.5**i),
        clock=clock,
        spawn=spawn,
        max_ids=max_ids,
    )


async def test_many_waiters_share_one_poll_call_per_round() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=3)
    results: dict[int, dict[str, str]] = {}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)

            async def waiter(n: int) -> None:
                results[n] = await _wait_all_done(co, [f"r{n}"], clock, budget=UNTIL_DONE)

            async with anyio.create_task_group() as waiters:
                for n in range(100):
                    waiters.start_soon(waiter, n)
    assert all(r == {f"r{n}": "done"} for n, r in results.items())
    assert len(results) == 100
    # 100 jobs, each done on its third poll: a handful of rounds, never one call per job.
    assert len(endpoint.calls) <= 5
    assert max(len(c) for c in endpoint.calls) == 100
    assert co.calls == len(endpoint.calls)


async def test_terminal_ids_are_not_polled_again_and_loop_stops_when_idle() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            async with co.watch(["a"]):  # another waiter, still there
                assert await _wait_all_done(co, ["a", "b"], clock, budget=UNTIL_DONE) == {
                    "a": "done",
                    "b": "done",
                }
                # Known terminal while watched: a new wait returns without another call.
                before = len(endpoint.calls)
                assert await _wait_all_done(co, ["a"], clock, budget=UNTIL_DONE) == {"a": "done"}
                assert len(endpoint.calls) == before
        # The task group exited: the loop stopped by itself once nothing was pending.


async def test_wait_returns_at_deadline_with_latest_state() -> None:
    clock = ScaledClock(
        20.0, epoch=TEST_EPOCH
    )  # slower: the upper bound below must survive a loaded machine
    endpoint = FakeEndpoint(done_after=10_000)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            start = clock.monotonic()
            latest = await _wait_all_done(co, ["x"], clock, budget=7)
            elapsed = clock.monotonic() - start
    assert latest == {"x": "researching"}
    assert 7 <= elapsed < 12  # returns at its deadline, not a poll interval (or more) late


async def test_poll_error_is_published_and_loop_backs_off_by_its_hint() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    endpoint.fail_next = LocalRateLimited(
        "no token", provider="seamless", bucket="GET /contacts/research/poll", retry_after=9.0
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            async with co.watch(["q"]):
                seen = co.board.version
                assert await wait_newer_until(co.board, seen, clock, clock.monotonic() + UNTIL_DONE)
                first = co.board.value
                assert first is not None
                assert isinstance(first.error, LocalRateLimited)
                assert first.retry_after == 9.0
                t0 = clock.monotonic()
                seen = co.board.version
                assert await wait_newer_until(co.board, seen, clock, clock.monotonic() + UNTIL_DONE)
                assert clock.monotonic() - t0 >= 9.0
                assert co.latest(["q"]) == {"q": "done"}


async def test_an_unexpected_failure_of_a_round_is_retried_not_the_end_of_the_loop() -> None:
    """A shared lease store that is locked (sqlite3.OperationalError) or gone raises what is not
    a JobRelayError; the loop must keep polling (and the server's task group must not crash):
    the waiter still gets its item from the next round, after the cadence floor."""
    import sqlite3

    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    endpoint.fail_next = sqlite3.OperationalError("database is locked")
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            t0 = clock.monotonic()
            assert await _wait_all_done(co, ["q"], clock, UNTIL_DONE) == {"q": "done"}
            assert len(endpoint.calls) == 2
            assert clock.monotonic() - t0 >= 2.0  # the retry kept the cadence floor


async def test_items_are_forgotten_once_nobody_watches_them() -> None:
    # A finished research item carries the whole record; the ledger keeps it, the coalescer
    # must not (it would grow for as long as the server runs).
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            async with co.watch(["a", "b"]), co.watch(["b", "b"]):
                assert await _wait_all_done(co, ["a", "b"], clock, budget=UNTIL_DONE) == {
                    "a": "done",
                    "b": "done",
                }
                assert co.latest(["a", "b"]) == {"a": "done", "b": "done"}
            assert co.latest(["a", "b"]) == {}
            # A direct poll (get_job_status) answers, and keeps nothing nobody watches.
            assert await co.poll_now(["c"]) == {"c": "done"}
            assert co.latest(["c"]) == {}
            async with co.watch(["c"]):
                assert await co.poll_now(["c"]) == {"c": "done"}
                assert co.latest(["c"]) == {"c": "done"}


async def test_a_round_publishes_each_chunk_while_the_next_is_still_being_fetched() -> None:
    # Seamless takes 100 ids per call and paces calls at about one a second: a waiter whose
    # ids came back in the first call must not wait (holding them) for the last call.
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    second_call = endpoint.hold[2] = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock, max_ids=2)
            async with co.watch(["a", "b", "c", "d", "e"]):
                assert await _wait_all_done(co, ["a", "b"], clock, budget=UNTIL_DONE) == {
                    "a": "done",
                    "b": "done",
                }
                assert endpoint.calls == [["a", "b"], ["c", "d"]]  # the second is still open
                assert co.latest(["c", "d", "e"]) == {}
                second_call.set()
                assert await _wait_all_done(co, ["c", "d", "e"], clock, budget=UNTIL_DONE) == {
                    "c": "done",
                    "d": "done",
                    "e": "done",
                }
    assert endpoint.calls == [["a", "b"], ["c", "d"], ["e"]]
    assert co.calls == 3


async def test_a_failed_call_keeps_the_chunks_before_it_and_ends_the_round() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    endpoint.hold[2] = held = anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock, max_ids=2)
            async with co.watch(["a", "b", "c", "d", "e"]):
                assert await _wait_all_done(co, ["a", "b"], clock, budget=UNTIL_DONE)
                endpoint.fail_next = LocalRateLimited(
                    "no token", provider="seamless", bucket="GET /poll", retry_after=9.0
                )
                seen = co.board.version
                t0 = clock.monotonic()
                held.set()
                assert await wait_newer_until(co.board, seen, clock, clock.monotonic() + UNTIL_DONE)
                failed = co.board.value
                assert failed is not None
                assert isinstance(failed.error, LocalRateLimited)
                assert co.latest(["a", "b", "c", "d", "e"]) == {"a": "done", "b": "done"}
                # The rest waits for the next round, after the hinted 9 s: this new wait on
                # unseen ids kicks the loop, and a kick never cuts a hinted wait short.
                assert await _wait_all_done(co, ["c", "d", "e"], clock, budget=UNTIL_DONE)
                assert clock.monotonic() - t0 >= 9.0
    assert endpoint.calls == [["a", "b"], ["c", "d"], ["c", "d"], ["e"]]


async def test_a_direct_poll_is_chunked_too_and_shares_what_it_got() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock, max_ids=2)
            seen = co.board.version
            assert await co.poll_now(["a", "b", "c"]) == dict.fromkeys("abc", "done")
            assert endpoint.calls == [["a", "b"], ["c"]]
            assert co.board.version == seen + 1  # one publish: waiters fold it once
            endpoint.fail_next = LocalRateLimited(
                "no token", provider="seamless", bucket="GET /poll", retry_after=1.0
            )
            with pytest.raises(LocalRateLimited):
                await co.poll_now(["x"])
            assert co.board.version == seen + 2  # waiters still learn of the attempt


async def test_a_direct_poll_counts_for_the_cadence_floor_of_a_kicked_loop() -> None:
    # get_job_status polls at t1; a new waiter kicks the idle loop right after: the loop's
    # next call still keeps the 2 s floor from t1, so the two never go out back to back.
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=10_000)
    at: list[float] = []

    async def timed_poll(ids: Sequence[str]) -> Mapping[str, str]:
        at.append(clock.monotonic())
        return await endpoint.poll(ids)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            def spawn(fn: Callable[[], Awaitable[None]]) -> None:
                tg.start_soon(fn)

            co: PollCoalescer[str] = PollCoalescer(
                poll=timed_poll,
                is_terminal=lambda v: v == "done",
                interval=lambda _round: 60.0,
                clock=clock,
                spawn=spawn,
            )
            async with co.watch(["a"]):
                seen = co.board.version
                assert await wait_newer_until(co.board, seen, clock, clock.monotonic() + UNTIL_DONE)
                await clock.sleep(10.0)  # the loop now pauses 60 s between rounds
                await co.poll_now(["a"])
                seen = co.board.version
                async with co.watch(["b"]):  # unseen id: kicks the loop
                    assert await wait_newer_until(co.board, seen, clock, clock.monotonic() + 30)
                tg.cancel_scope.cancel()
    assert len(at) == 3
    assert at[2] - at[1] >= 2.0


async def test_cancelled_waiter_does_not_stop_shared_loop() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=3)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock)
            with anyio.move_on_after(0.001) as scope:
                await _wait_all_done(co, ["z"], clock, budget=UNTIL_DONE)
            assert scope.cancelled_caught  # the first wait really was cut off mid-wait
            assert await _wait_all_done(co, ["z"], clock, budget=UNTIL_DONE) == {"z": "done"}


async def test_stream_hub_shares_one_follower_per_job() -> None:
    follows: list[str] = []
    gate = anyio.Event()

    async def follow(job_id: str) -> AsyncIterator[int]:
        follows.append(job_id)
        for pct in (10, 50):
            yield pct
        await gate.wait()
        yield 100

    seen: dict[int, list[int]] = {}
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:

            def spawn(fn: Callable[[], Awaitable[None]]) -> None:
                tg.start_soon(fn)

            hub: StreamHub[int] = StreamHub(
                follow=follow, is_terminal=lambda p: p == 100, spawn=spawn
            )

            async def waiter(n: int) -> None:
                got: list[int] = []
                async with hub.watch("job1") as topic:
                    while True:
                        version = topic.latest.version
                        if topic.latest.value is not None and (
                            not got or got[-1] != topic.latest.value
                        ):
                            got.append(topic.latest.value)
                        if topic.latest.value == 100 or topic.finished:
                            break
                        await topic.latest.wait_newer(version)
                seen[n] = got

            async with anyio.create_task_group() as waiters:
                for n in range(5):
                    waiters.start_soon(waiter, n)
                await anyio.wait_all_tasks_blocked()
                gate.set()
    assert follows == ["job1"]
    assert hub.followers_started == 1
    assert all(v[-1] == 100 for v in seen.values())


async def test_latest_wakes_all_waiters() -> None:
    latest: Latest[str] = Latest()
    woke: list[int] = []

    async def w(n: int) -> None:
        await latest.wait_newer(0)
        woke.append(n)

    with anyio.fail_after(2):
        async with anyio.create_task_group() as tg:
            for n in range(3):
                tg.start_soon(w, n)
            await anyio.wait_all_tasks_blocked()
            latest.publish("x")
    assert sorted(woke) == [0, 1, 2]


class TwoReplicaFanout:
    """An in-process `sharing.Fanout` between replicas "a" and "b" (Redis's role): a send
    reaches the other replica's listeners, never the sender's."""

    def __init__(self) -> None:
        self.listeners: dict[tuple[str, str], list[Callable[[str], None]]] = {}
        self.sent: list[tuple[str, str, str]] = []

    def replica(self, name: str) -> _Side:
        return _Side(self, name)


class _Side:
    def __init__(self, hub: TwoReplicaFanout, name: str) -> None:
        self.hub, self.name = hub, name

    async def send(self, topic: str, message: str) -> None:
        self.hub.sent.append((self.name, topic, message))
        for (replica, t), listeners in self.hub.listeners.items():
            if t == topic and replica != self.name:
                for listener in listeners:
                    listener(message)

    def listen(self, topic: str, listener: Callable[[str], None]) -> Callable[[], None]:
        self.hub.listeners.setdefault((self.name, topic), []).append(listener)
        return lambda: self.hub.listeners[(self.name, topic)].remove(listener)


async def test_results_published_on_one_replica_wake_the_waiters_of_every_replica() -> None:
    """`ResultFeed` is the one publish path: a poll's items (`share`) and items learnt
    otherwise, e.g. a webhook delivery (`publish`), reach waiters on both replicas; an
    unchanged item is not sent again."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    fanout = TwoReplicaFanout()
    endpoint_a, endpoint_b = FakeEndpoint(done_after=10**6), FakeEndpoint(done_after=10**6)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co_a, co_b = _coalescer(tg, endpoint_a, clock), _coalescer(tg, endpoint_b, clock)
            feeds = [
                ResultFeed(topic="t", deliver=co.deliver, encode=str, decode=str, fanout=side)
                for co, side in ((co_a, fanout.replica("a")), (co_b, fanout.replica("b")))
            ]
            async with co_b.watch(["r1"]):
                seen = co_b.board.version
                await feeds[0].share({"r1": "researching", "r9": "researching"})
                assert co_b.latest(["r1", "r9"]) == {"r1": "researching"}  # watched ids only
                assert co_b.board.version > seen  # its waiters were woken
                await feeds[0].share({"r1": "researching"})
                assert len(fanout.sent) == 1  # unchanged: not sent again
                async with co_a.watch(["r1"]):
                    await feeds[0].publish({"r1": "done"})  # e.g. a webhook delivery on a
                    assert co_a.latest(["r1"]) == {"r1": "done"}
                    assert co_b.latest(["r1"]) == {"r1": "done"}
            tg.cancel_scope.cancel()
    for feed in feeds:
        feed.close()
    assert fanout.listeners == {("a", "t"): [], ("b", "t"): []}
