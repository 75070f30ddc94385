"""The tasks extension over real Streamable HTTP on loopback (SSE, as hosts use it)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client
from mcp.client import advertise
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

from mcp_server.mcptasks import EXTENSION_ID, TaskState, cancel_task, get_task
from mcptasks.toy import (
    POLL_MS,
    Inbox,
    Naps,
    ToyApp,
    assert_notification_valid,
    assert_valid,
    build_toy,
    listening,
    raw_call,
    raw_get,
    serving_http,
    tasks_client,
    toy_result,
)

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]


class Headers:
    """Server middleware that records the `Mcp-Name` header of every tasks/* request."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str | None]] = []

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if ctx.method.startswith("tasks/") and ctx.request is not None:
            self.seen.append((ctx.method, ctx.request.headers.get("mcp-name")))
        return await call_next(ctx)


async def test_a_task_over_http_end_to_end() -> None:
    app = ToyApp()
    headers = Headers()
    inbox = Inbox()
    naps = Naps()
    polls: list[str] = []

    async def on_status(state: TaskState) -> None:
        polls.append(state.status)
        if len(polls) == 2:  # the second job ends after the client has polled twice
            await app.finish(app.opened[1], "t")

    server = build_toy(app, middleware=[headers])
    async with serving_http(server) as url:
        client = tasks_client(url, inbox=inbox, sleep=naps, on_status=on_status)
        async with client:
            created = await raw_call(client, "slow", {"label": "h"})
            record = await app.next_opened()
            assert_valid("CreateTaskResult", created)
            task_id = created["taskId"]
            async with listening(client, inbox, taskIds=[task_id]) as stream:
                assert stream.acked.model_extra == {"taskIds": [task_id]}
                working = await raw_get(client, task_id)
                await app.finish(record, "h")
                await inbox.wait_for(lambda box: "completed" in box.statuses(task_id))
            done = await raw_get(client, task_id)
            with anyio.fail_after(10):
                transparent = await client.call_tool("slow", {"label": "t"})
            with anyio.fail_after(10):
                await cancel_task(client.session, task_id)
                after_cancel = await get_task(client.session, task_id)
    assert_valid("GetTaskResult", working)
    assert_valid("GetTaskResult", done)
    assert done["result"] == toy_result("h").model_dump(
        by_alias=True, mode="json", exclude_none=True
    )
    # The stream's first frame is the task as `tasks/get` resolves it ("running"), so the
    # client's own tasks/get inside the stream changes nothing: one working frame, then done.
    assert inbox.statuses(task_id) == ["working", "completed"]
    for params in inbox.tasks:
        assert_notification_valid(params)
    assert transparent.structured_content == {"result": "did t"}
    assert polls == ["working", "working", "completed"]
    assert naps.asked == [POLL_MS / 1000] * 2
    assert after_cancel.status == "completed"  # cancelling a finished task changes nothing
    assert headers.seen
    assert {name for _method, name in headers.seen} == {task_id, app.opened[1].task_id}


@pytest.mark.parametrize(
    ("mode", "extensions"),
    [("auto", []), ("legacy", [advertise(EXTENSION_ID)])],
    ids=["no-extension", "legacy"],
)
async def test_other_clients_get_the_ordinary_result_over_http(mode: Any, extensions: Any) -> None:
    app = ToyApp()
    async with (
        serving_http(build_toy(app)) as url,
        Client(url, mode=mode, extensions=extensions) as c,
    ):
        with anyio.fail_after(10):
            result = await c.call_tool("slow", {"label": "plain"})
    assert result.structured_content == {"result": "did plain"}
    assert result.is_error is False
    assert app.opened == []
