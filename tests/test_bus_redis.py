"""Notifications across replicas: the MCP SDK's `SubscriptionBus` over Redis pub/sub.

Needs a real Redis (skipped without, failed in CI). Each test uses a channel of its own.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
import redis.asyncio
from mcp.server.subscriptions import ResourceUpdated, ServerEvent, ToolsListChanged

from mcp_server.bus import RedisSubscriptionBus, event_from_json, event_to_json
from mcp_server.config import Settings

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def buses(url: str, channel: str, n: int) -> AsyncIterator[list[RedisSubscriptionBus]]:
    """`n` replicas' buses, each running its Redis subscription in a task."""
    async with AsyncExitStack() as stack:
        tg = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tg.cancel_scope.cancel)
        out = []
        for _ in range(n):
            bus = RedisSubscriptionBus(redis.asyncio.Redis.from_url(url), channel=channel)
            stack.push_async_callback(bus.aclose)
            await tg.start(bus.run)
            out.append(bus)
        yield out


class Inbox:
    """A listener that queues what it is given, so a test can await each delivery."""

    def __init__(self) -> None:
        self.send, self.receive = anyio.create_memory_object_stream[ServerEvent](100)

    def __call__(self, event: ServerEvent) -> None:
        self.send.send_nowait(event)

    def close(self) -> None:
        self.send.close()
        self.receive.close()

    def pending(self) -> list[ServerEvent]:
        out = []
        while True:
            try:
                out.append(self.receive.receive_nowait())
            except anyio.WouldBlock:
                return out


async def test_an_event_published_on_one_replica_reaches_listeners_on_all_of_them_once(
    redis_url: str, redis_prefix: str
) -> None:
    event = ResourceUpdated(uri="jobrelay://jobs/sea_0123456789abcdef")
    here, there, far = Inbox(), Inbox(), Inbox()
    with anyio.fail_after(10):
        async with buses(redis_url, f"{redis_prefix}:events", 3) as (one, two, three):
            one.subscribe(here)
            two.subscribe(there)
            unsubscribe = three.subscribe(far)
            await one.publish(event)
            assert here.pending() == [event]  # delivered here at once, not through Redis
            assert await there.receive.receive() == event
            assert await far.receive.receive() == event
            unsubscribe()
            await two.publish(ToolsListChanged())
            assert there.pending() == [ToolsListChanged()]
            # Redis keeps a channel's order: one's own echo came (and was dropped) before this.
            assert await here.receive.receive() == ToolsListChanged()
            assert here.pending() == []
            await three.publish(ResourceUpdated(uri="jobrelay://jobs/other"))
            assert await there.receive.receive() == ResourceUpdated(uri="jobrelay://jobs/other")
    assert far.pending() == []  # unsubscribed: not even its own event
    for inbox in (here, there, far):
        inbox.close()


def test_events_round_trip_and_foreign_messages_are_ignored() -> None:
    for event in (ToolsListChanged(), ResourceUpdated(uri="jobrelay://jobs/x")):
        assert event_from_json(event_to_json(event, "abc")) == ("abc", event)
    for junk in (b"not json", b"{}", b'{"origin": "a", "kind": "resource_updated"}', b"[1]"):
        assert event_from_json(junk) is None


async def test_a_redis_that_cannot_be_reached_loses_cues_but_never_fails_the_publisher() -> None:
    bus = RedisSubscriptionBus(
        redis.asyncio.Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=1)
    )
    inbox = Inbox()
    bus.subscribe(inbox)
    with anyio.fail_after(10):
        await bus.publish(ToolsListChanged())
        await bus.aclose()
    assert inbox.pending() == [ToolsListChanged()]
    inbox.close()


async def test_the_server_uses_the_redis_bus_when_the_url_is_set(
    make_settings: Callable[..., Settings], redis_url: str
) -> None:
    from mcp_server.server import build_server

    server: Any = build_server(make_settings(JOBRELAY_REDIS_URL=redis_url))
    assert isinstance(server._subscriptions, RedisSubscriptionBus)
    await server._subscriptions.aclose()
    plain: Any = build_server(make_settings())
    assert not isinstance(plain._subscriptions, RedisSubscriptionBus)


async def test_topic_messages_and_task_events_reach_the_other_replicas_only(
    redis_url: str, redis_prefix: str
) -> None:
    """The watchers' topics (`send`/`listen`) and the tasks engine's "task changed" events
    (`RedisTaskEvents`) ride the same subscription: never back to the sender's listeners
    (those were told directly), never to a topic nobody listens to."""
    from mcp_server.bus import RedisTaskEvents

    got: dict[str, list[str]] = {"one": [], "two": [], "tasks_one": [], "tasks_two": []}
    arrived = {name: anyio.Event() for name in ("tasks_one", "tasks_two")}

    def task_listener(name: str) -> Callable[[str], None]:
        def listener(task_id: str) -> None:
            got[name].append(task_id)
            arrived[name].set()

        return listener

    with anyio.fail_after(10):
        async with buses(redis_url, f"{redis_prefix}:bus", 2) as (one, two):
            tasks_one, tasks_two = RedisTaskEvents(one), RedisTaskEvents(two)
            one.listen("results:t", got["one"].append)
            stop = two.listen("results:t", got["two"].append)
            tasks_one.subscribe(task_listener("tasks_one"))
            tasks_two.subscribe(task_listener("tasks_two"))
            await one.send("results:t", '{"r1": "done"}')
            await one.send("results:nobody", "x")
            await tasks_one.publish("task-1")
            assert got["tasks_one"] == ["task-1"]  # the publisher's own listeners at once
            await arrived["tasks_two"].wait()  # Redis keeps the channel's order: all are in
            assert got["two"] == ['{"r1": "done"}']
            assert got["tasks_two"] == ["task-1"]
            stop()
            await one.send("results:t", "after")
            arrived["tasks_one"] = anyio.Event()
            await tasks_two.publish("task-2")
            await arrived["tasks_one"].wait()
    assert got["one"] == []  # its own messages never come back to it
    assert got["two"] == ['{"r1": "done"}']  # unsubscribed before "after"
    assert got["tasks_one"] == ["task-1", "task-2"]
    assert one.sent == 4
