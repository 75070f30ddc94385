"""Pushed items (webhook deliveries) in the poll coalescer: `PushReconciler` decides which
watched ids still need polling (issue 18.2); `PollCoalescer.pushed` tells it a push arrived and
`PollCoalescer.deliver` (the path another replica's poll results take) wakes the waiters."""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable, Mapping

import anyio
import pytest
from conftest import TEST_EPOCH
from test_watch import FakeEndpoint, TwoReplicaFanout

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.pushes import (
    MAX_SHARED_IDS,
    PushMessage,
    PushReconciler,
    PushShare,
    UnreadablePush,
    read_push_message,
)
from mcp_server.watch import PollCoalescer, wait_newer_until

pytestmark = pytest.mark.anyio

SCALE = 200.0


def test_inactive_until_a_push_arrives_then_due_at_expected_completion_or_slow_cadence() -> None:
    clock = FakeClock()
    r = PushReconciler(clock=clock, slow_interval=60, active_for=600, factor=1.5, margin=10)
    r.started("a", 0.0)
    assert r.due_at("a") == -math.inf  # no push yet: the normal cadence
    clock.advance(8)
    r.arrived("a")  # took 8 s
    assert r.active()
    assert r.expected_seconds() == pytest.approx(22.0)  # 1.5 x 8 + 10
    r.started("b", 8.0)
    assert r.due(["b"]) == []
    clock.advance(21.9)
    assert r.due(["b"]) == []
    clock.advance(0.2)  # past 8 + 22: its push is overdue, poll it as usual
    assert r.due(["b"]) == ["b"]
    r.polled(["b"])
    assert r.due(["b"]) == ["b"]  # overdue stays due (expected completion has passed)


def test_the_slow_cadence_polls_a_long_job_now_and_then() -> None:
    clock = FakeClock()
    r = PushReconciler(clock=clock, slow_interval=60, active_for=10_000, margin=10)
    r.started("quick", 0.0)
    clock.advance(400)
    r.arrived("quick")  # a 400 s job: the next is expected within 610 s (capped at 600)
    assert r.expected_seconds() == 600
    r.started("slow", 400.0)
    clock.advance(59)
    assert r.due(["slow"]) == []
    clock.advance(1.5)
    assert r.due(["slow"]) == ["slow"]  # 60 s since its start: a reconciliation poll
    r.polled(["slow"])
    assert r.due(["slow"]) == []


def test_pushes_stop_counting_after_a_quiet_spell_and_ids_are_forgotten() -> None:
    clock = FakeClock()
    r = PushReconciler(clock=clock, active_for=600)
    r.started("a", 0.0)
    r.arrived("a")
    r.started("b", 0.0)
    assert r.due(["b"]) == []
    clock.advance(601)
    assert not r.active()
    assert r.due(["b"]) == ["b"]
    r.expedite(["c"])
    r.forget("b")
    r.forget("c")
    assert r._started == {}  # nothing kept for gone ids
    assert r._polled == {}


def _coalescer(
    tg: anyio.abc.TaskGroup, endpoint: FakeEndpoint, clock: ScaledClock, push: PushReconciler
) -> PollCoalescer[str]:
    def spawn(fn: Callable[[], Awaitable[None]]) -> None:
        tg.start_soon(fn)

    return PollCoalescer(
        poll=endpoint.poll,
        is_terminal=lambda s: s == "done",
        interval=lambda i: min(5.0, 2.0 * 1.5**i),
        clock=clock,
        spawn=spawn,
        push=push,
    )


def _push(co: PollCoalescer[str], items: dict[str, str]) -> bool:
    """What `SeamlessConnection.receive_push` does with a delivery (its `publish_results`
    also sends it to the other replicas, which have none here)."""
    co.pushed(list(items))
    return co.deliver(items)


async def _until_done(co: PollCoalescer[str], ids: list[str], clock: ScaledClock) -> bool:
    deadline = clock.monotonic() + 120
    async with co.watch(ids):
        while True:
            seen = co.board.version
            if all(co.latest(ids).get(i) == "done" for i in ids):
                return True
            if not await wait_newer_until(co.board, seen, clock, deadline):
                return False


async def test_pushed_ids_are_not_polled_and_their_waiters_wake_on_the_push() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=100)  # polling alone would never finish them
    push = PushReconciler(clock=clock)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock, push)
            push.started("old", clock.monotonic() - 5)
            _push(co, {"old": "done"})  # pushes arrive: 5 s jobs, expected within 17.5 s
            now = clock.monotonic()
            co.started({"a": now, "b": now})
            done: list[bool] = []

            async def waiter() -> None:
                done.append(await _until_done(co, ["a", "b"], clock))

            tg.start_soon(waiter)
            with clock.move_on_after(5):  # 5 virtual seconds: nothing is due, nothing polled
                await anyio.Event().wait()
            assert endpoint.calls == []
            assert _push(co, {"a": "done", "b": "done"}) is True  # watched here
    assert done == [True]
    assert endpoint.calls == []
    assert push.pushes == 3


async def test_a_lost_push_is_reconciled_by_polling_once_overdue() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint(done_after=1)
    push = PushReconciler(clock=clock, margin=2)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            co = _coalescer(tg, endpoint, clock, push)
            push.started("old", clock.monotonic() - 4)
            _push(co, {"old": "done"})  # expected within 1.5 x 4 + 2 = 8 s
            start = clock.monotonic()
            co.started({"lost": start})
            assert await _until_done(co, ["lost"], clock)
            took = clock.monotonic() - start
    assert endpoint.calls == [["lost"]]  # one poll, once overdue
    assert 8 <= took < 20


async def test_an_unwatched_push_is_delivered_but_not_kept() -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    endpoint = FakeEndpoint()
    async with anyio.create_task_group() as tg:
        co = _coalescer(tg, endpoint, clock, PushReconciler(clock=clock))
        version = co.board.version
        assert _push(co, {"x": "done"}) is False
        assert co.board.version == version  # nobody here to wake
        assert co.latest(["x"]) == {}  # nobody watches it: the ledger is where it lives
        assert co.expedite(["x"]) is False


# --------------------------------------------------------------------------------------------
# Arrivals shared between replicas (`PushShare`)

ENDPOINTS = ("contacts", "companies")


def test_a_relayed_arrival_is_learnt_like_one_received_here_and_counted_apart() -> None:
    clock = FakeClock()
    r = PushReconciler(clock=clock, slow_interval=60, active_for=600, factor=1.5, margin=10)
    r.arrived("elsewhere", took=400.0, relayed=True)  # never started here: its time is given
    assert r.active()
    assert r.expected_seconds() == 600  # 1.5 x 400 + 10, capped
    assert (r.pushes, r.relayed) == (0, 1)
    r.started("mine", 0.0)
    assert r.due(["mine"]) == []  # polled on the slow cadence only
    r.arrived("unknown", took=None, relayed=True)  # no time known: activity only
    assert r.expected_seconds() == 600


def test_push_messages_round_trip() -> None:
    sent = PushMessage("companies", {"r1": 12.5, "r2": None}).encode()
    assert read_push_message(sent, ENDPOINTS) == PushMessage("companies", {"r1": 12.5, "r2": None})
    hint = PushMessage(hinted=["r3"]).encode()
    assert read_push_message(hint, ENDPOINTS) == PushMessage(None, {}, ["r3"])


@pytest.mark.parametrize(
    "message",
    [
        "",
        "{",
        "[]",
        '"text"',
        '{"arrived": {"r1": 1}, "endpoint": "contacts"}',  # no version
        '{"v": 2, "arrived": {"r1": 1}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": 1}}',  # no endpoint
        '{"v": 1, "arrived": {"r1": 1}, "endpoint": "searches"}',
        '{"v": 1, "arrived": {"r1": 1}, "endpoint": ["contacts"]}',
        '{"v": 1, "arrived": ["r1"], "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": -1}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": NaN}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": Infinity}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": true}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"r1": "12"}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"": 1}, "endpoint": "contacts"}',
        '{"v": 1, "arrived": {"' + "x" * 201 + '": 1}, "endpoint": "contacts"}',
        '{"v": 1, "hinted": "r1"}',
        '{"v": 1, "hinted": [1]}',
        '{"v": 1, "hinted": [null]}',
        '{"v": 1, "hinted": ' + json.dumps([f"r{i}" for i in range(MAX_SHARED_IDS + 1)]) + "}",
        "[" * 100_000,
    ],
)
def test_an_unreadable_push_message_is_refused(message: str) -> None:
    with pytest.raises(UnreadablePush):
        read_push_message(message, ENDPOINTS)


async def test_arrivals_and_hints_reach_the_other_replica_and_bad_messages_are_ignored() -> None:
    """Replica a tells b of its arrivals and hints; what b cannot read, or fails to apply, is
    logged and ignored, and the next message is applied all the same."""
    fanout = TwoReplicaFanout()
    applied: list[tuple[str, dict[str, float | None]]] = []
    hinted: list[list[str]] = []
    fail_next = [False]

    def on_arrived(endpoint: str, took: Mapping[str, float | None]) -> None:
        if fail_next[0]:
            fail_next[0] = False
            raise RuntimeError("a reconciler broke")
        applied.append((endpoint, dict(took)))

    def share(side: str) -> PushShare:
        return PushShare(
            topic="pushes:t1",
            fanout=fanout.replica(side),
            endpoints=ENDPOINTS,
            on_arrived=on_arrived,
            on_hinted=hinted.append,
        )

    a, b = share("a"), share("b")
    await a.arrived("contacts", {"r1": 30.0})
    await a.hinted(["r2"])
    assert applied == [("contacts", {"r1": 30.0})]
    assert hinted == [["r2"]]
    assert a.ignored == 0  # a never hears its own messages

    side_a = fanout.replica("a")
    await side_a.send("pushes:t1", "not json")
    await side_a.send("pushes:t1", '{"v": 1, "arrived": {"r3": 1}, "endpoint": "elsewhere"}')
    fail_next[0] = True
    await side_a.send("pushes:t1", PushMessage("contacts", {"r4": 1.0}).encode())
    assert b.ignored == 3
    await a.arrived("companies", {"r5": None})  # the listener still works
    assert applied[-1] == ("companies", {"r5": None})
    assert len(applied) == 2

    b.close()
    await a.arrived("contacts", {"r6": 2.0})
    assert len(applied) == 2  # closed: b no longer listens
    await a.arrived("contacts", {})  # nothing to tell: nothing sent
    assert all(message != PushMessage("contacts", {}).encode() for _, _, message in fanout.sent)
