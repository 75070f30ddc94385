"""`notifications/tasks` through `subscriptions/listen` with a `taskIds` filter (in-memory)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import anyio
import pytest
from mcp import Client, MCPError
from mcp.shared.subscriptions import SUBSCRIPTION_ID_META_KEY
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    Request,
    SubscriptionsListenResult,
)

from mcp_server.mcptasks import EXTENSION_ID, TaskUpdate
from mcptasks.toy import (
    Inbox,
    ToyApp,
    assert_notification_valid,
    build_toy,
    listening,
    raw_call,
    raw_get,
    tasks_client,
)

pytestmark = pytest.mark.anyio


async def test_a_listener_gets_each_change_of_the_tasks_it_named_and_nothing_else() -> None:
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app), inbox=inbox) as client:
        watched = (await raw_call(client, "slow", {"label": "w"}))["taskId"]
        other = (await raw_call(client, "slow", {"label": "o"}))["taskId"]
        first, second = await app.next_opened(), await app.next_opened()
        async with listening(client, inbox, taskIds=[watched]) as stream:
            assert stream.acked.model_extra == {"taskIds": [watched]}
            await inbox.wait_for(lambda box: box.statuses(watched) == ["working"])  # current state
            await app.live().update(watched, TaskUpdate(status_message="40 %"))
            await app.finish(second)  # not watched: no notification
            await app.finish(first, "w")
            await inbox.wait_for(lambda box: len(box.statuses(watched)) == 3)
            final = await raw_get(client, watched)
    assert [n["taskId"] for n in inbox.tasks] == [watched] * 3
    # The first frame is resolved as tasks/get would be: the toy's resolver says "running".
    assert [n.get("statusMessage") for n in inbox.tasks] == ["running", "40 %", "done"]
    assert inbox.statuses(watched) == ["working", "working", "completed"]
    assert other not in {n["taskId"] for n in inbox.tasks}
    last = inbox.tasks[-1]
    assert last["_meta"] == {SUBSCRIPTION_ID_META_KEY: last["_meta"][SUBSCRIPTION_ID_META_KEY]}
    assert {k: v for k, v in last.items() if k != "_meta"} == {
        k: v for k, v in final.items() if k not in {"_meta", "resultType"}
    }  # identical to what tasks/get answers
    for params in inbox.tasks:
        assert_notification_valid(params)


async def test_an_unchanged_task_sends_nothing() -> None:
    """A watcher refreshing a task that did not move must not spam listeners."""
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app), inbox=inbox) as client:
        task_id = (await raw_call(client, "slow", {"label": "s"}))["taskId"]
        record = await app.next_opened()
        await raw_get(client, task_id)  # the resolver says "running" once
        async with listening(client, inbox, taskIds=[task_id]):
            await inbox.wait_for(lambda box: len(box.tasks) == 1)
            for _ in range(3):
                await app.live().refresh(task_id)
            await app.finish(record)
            await inbox.wait_for(lambda box: box.statuses(task_id)[-1] == "completed")
    assert inbox.statuses(task_id) == ["working", "completed"]


async def test_unknown_and_foreign_ids_are_left_out_of_the_acknowledgement() -> None:
    app = ToyApp()
    server = build_toy(app)
    inbox = Inbox()
    async with (
        tasks_client(server, "alice") as alice,
        tasks_client(server, "bob", inbox=inbox) as bob,
    ):
        alices = (await raw_call(alice, "slow", {"label": "a"}))["taskId"]
        bobs = (await raw_call(bob, "slow", {"label": "b"}))["taskId"]
        await app.next_opened()
        await app.next_opened()
        async with listening(bob, inbox, taskIds=[alices, "made-up", bobs, bobs]) as stream:
            await app.live().update(alices, TaskUpdate(status_message="secret progress"))
            await app.live().update(bobs, TaskUpdate(status_message="mine"))
            await inbox.wait_for(lambda box: "mine" in [n.get("statusMessage") for n in box.tasks])
    assert stream.acked.model_extra == {"taskIds": [bobs]}
    assert {n["taskId"] for n in inbox.tasks} == {bobs}


async def test_one_stream_carries_task_and_core_notifications() -> None:
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app), inbox=inbox) as client:
        task_id = (await raw_call(client, "slow", {"label": "m"}))["taskId"]
        async with listening(client, inbox, taskIds=[task_id], toolsListChanged=True) as stream:
            await client.call_tool("touch_tools", {})
            await inbox.wait_for(lambda box: "notifications/tools/list_changed" in box.other)
    assert stream.acked.tools_list_changed is True
    assert stream.acked.model_extra == {"taskIds": [task_id]}


async def test_a_core_only_listen_is_left_to_the_sdk() -> None:
    app = ToyApp()
    async with (
        tasks_client(build_toy(app)) as client,
        client.listen(tools_list_changed=True) as sub,
    ):
        assert sub.honored.tools_list_changed is True
        assert sub.honored.model_extra == {}
        await client.call_tool("touch_tools", {})
        with anyio.fail_after(5):
            event = await sub.__anext__()
    assert type(event).__name__ == "ToolsListChanged"


async def test_asking_for_task_notifications_needs_the_capability() -> None:
    app = ToyApp()
    inbox = Inbox()
    async with Client(build_toy(app), message_handler=inbox.on_message) as client:
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            async with listening(client, inbox, taskIds=["x"]):
                pass  # pragma: no cover - the request is refused before any acknowledgement
    assert caught.value.code == MISSING_REQUIRED_CLIENT_CAPABILITY
    assert caught.value.error.data == {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}}


@pytest.mark.parametrize(
    ("task_ids", "phrase"),
    [("one-id", "must be a list"), ([1, 2], "must be a list"), (["t"] * 300, "at most 256")],
)
async def test_a_malformed_or_oversized_task_filter_is_refused_clearly(
    task_ids: object, phrase: str
) -> None:
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app), inbox=inbox) as client:
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            async with listening(client, inbox, taskIds=task_ids):
                pass  # pragma: no cover - refused before any acknowledgement
        assert (await client.call_tool("quick", {})).structured_content == {"result": "quick"}
    assert caught.value.code == INVALID_PARAMS
    assert phrase in caught.value.message


async def test_closing_the_engine_ends_streams_gracefully() -> None:
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app), inbox=inbox) as client:
        task_id = (await raw_call(client, "slow", {"label": "e"}))["taskId"]
        async with listening(client, inbox, taskIds=[task_id]) as stream:
            engine = app.live()
            assert len(engine.streams) == 1
            engine.close()
            with anyio.fail_after(5):
                await stream.ended.wait()
    [result] = stream.result
    assert result.meta is not None
    assert (
        result.meta[SUBSCRIPTION_ID_META_KEY] == inbox.tasks[0]["_meta"][SUBSCRIPTION_ID_META_KEY]
    )


class EagerBus:
    """A `TaskEventBus` that hands events over without yielding, like a burst from a remote
    bus arriving while the stream is busy writing."""

    def __init__(self) -> None:
        self.listeners: list[Callable[[str], None]] = []

    async def publish(self, task_id: str) -> None:
        for listener in list(self.listeners):
            listener(task_id)

    def subscribe(self, listener: Callable[[str], None]) -> Callable[[], None]:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)


async def test_a_stream_whose_backlog_overflows_is_ended_not_grown() -> None:
    app = ToyApp()
    inbox = Inbox()
    bus = EagerBus()
    async with tasks_client(build_toy(app, bus=bus, max_buffered_events=2), inbox=inbox) as client:
        task_id = (await raw_call(client, "slow", {"label": "burst"}))["taskId"]
        async with listening(client, inbox, taskIds=[task_id]) as stream:
            for _ in range(3):
                await bus.publish(task_id)
            with anyio.fail_after(5):
                await stream.ended.wait()
        assert app.live().streams == set()
        assert bus.listeners == []
    assert len(stream.result) == 1  # the stream ended with its final result


async def test_streams_beyond_the_limit_are_refused() -> None:
    app = ToyApp()
    inbox = Inbox()
    async with tasks_client(build_toy(app, max_streams=1), inbox=inbox) as client:
        task_id = (await raw_call(client, "slow", {"label": "one"}))["taskId"]
        async with listening(client, inbox, taskIds=[task_id]):
            with pytest.raises(MCPError) as caught, anyio.fail_after(5):
                async with listening(client, inbox, taskIds=[task_id]):
                    pass  # pragma: no cover - refused before any acknowledgement
    assert (caught.value.code, caught.value.message) == (
        INTERNAL_ERROR,
        "Subscription limit reached",
    )


async def test_a_legacy_listen_with_task_ids_is_not_a_method() -> None:
    app = ToyApp()
    inbox = Inbox()
    client = Client(build_toy(app), mode="legacy", message_handler=inbox.on_message)
    async with client:
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            async with listening(client, inbox, taskIds=["x"]):
                pass  # pragma: no cover - refused before any acknowledgement
    assert caught.value.code == METHOD_NOT_FOUND


async def test_a_malformed_core_filter_next_to_task_ids_is_invalid_params() -> None:
    class RawListen(Request[dict[str, Any], Literal["subscriptions/listen"]]):
        method: Literal["subscriptions/listen"] = "subscriptions/listen"

    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        notifications = {"taskIds": ["x"], "resourceSubscriptions": "not-a-list"}
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            await client.session.send_request(
                RawListen(params={"notifications": notifications}), SubscriptionsListenResult
            )
    assert caught.value.code == INVALID_PARAMS
    assert "subscriptions/listen" in caught.value.message
