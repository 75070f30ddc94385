"""The tasks extension through the SDK's in-memory client: tools/call, tasks/get, tasks/cancel."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from conftest import text_of
from mcp import Client, MCPError
from mcp.client import advertise
from mcp.types import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    MISSING_REQUIRED_CLIENT_CAPABILITY,
    CallToolResult,
    TextContent,
)

from mcp_server.mcptasks import (
    EXTENSION_ID,
    REQUEST_CANCELLED,
    CreateTaskResult,
    TaskState,
    TaskUpdate,
    UpdateTaskParams,
    UpdateTaskRequest,
    cancel_task,
    get_task,
)
from mcp_server.mcptasks._ids import TaskIds
from mcptasks.toy import (
    POLL_MS,
    RAW,
    Naps,
    ToyApp,
    assert_valid,
    build_toy,
    raw_call,
    raw_get,
    tasks_client,
    toy_result,
)

pytestmark = pytest.mark.anyio


def wire(result: Any) -> dict[str, Any]:
    data: dict[str, Any] = result.model_dump(by_alias=True, mode="json", exclude_none=True)
    data.pop("_meta", None)
    return data


async def test_a_declaring_client_gets_the_ordinary_result_through_a_task() -> None:
    app = ToyApp()
    naps = Naps()
    seen: list[TaskState] = []

    async def on_status(state: TaskState) -> None:
        seen.append(state)
        if len(seen) == 2:  # the job ends after the client has polled twice
            await app.finish(app.opened[0], "x")

    async with tasks_client(build_toy(app), sleep=naps, on_status=on_status) as client:
        with anyio.fail_after(5):
            result = await client.call_tool("slow", {"label": "x"})
    assert wire(result) == wire(toy_result("x"))
    assert [s.status for s in seen] == ["working", "working", "completed"]
    assert naps.asked == [POLL_MS / 1000] * 2  # the server's pollIntervalMs, between polls


async def test_the_task_is_stored_before_the_answer_and_its_handle_validates() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        created = await raw_call(client, "slow", {"label": "y"})
        record = await app.next_opened()
        assert_valid("CreateTaskResult", created)
        assert created["resultType"] == "task"
        assert created["taskId"] == record.task_id
        assert (created["status"], created["statusMessage"]) == ("working", "queued")
        assert (created["ttlMs"], created["pollIntervalMs"]) == (60_000, POLL_MS)
        assert await app.store.get(record.task_id, "alice") == record

        working = await raw_get(client, record.task_id)
        assert_valid("GetTaskResult", working)
        assert (working["resultType"], working["status"]) == ("complete", "working")
        assert working["statusMessage"] == "running"  # the resolver's word
        assert "result" not in working

        await app.finish(record, "y")
        done = await raw_get(client, record.task_id)
        assert_valid("GetTaskResult", done)
        assert (done["status"], done["statusMessage"]) == ("completed", "done")
        assert done["result"] == wire(toy_result("y"))
        assert done["createdAt"] == created["createdAt"]


async def test_the_task_id_is_derived_unguessable_and_owner_bound() -> None:
    app = ToyApp()
    server = build_toy(app)
    async with tasks_client(server, "alice") as alice, tasks_client(server, "bob") as bob:
        a = (await raw_call(alice, "slow", {"label": "a"}))["taskId"]
        b = (await raw_call(bob, "slow", {"label": "b"}))["taskId"]
    records = {r.owner: r for r in app.store.records.values()}
    assert (records["alice"].task_id, records["bob"].task_id) == (a, b)
    handle = records["alice"].handle
    assert len(a) == 24
    assert a.isascii()
    assert handle not in a
    assert TaskIds(app.secret).mint("alice", handle) == a
    assert TaskIds(b"another-secret-0123456789").mint("alice", handle) != a
    assert TaskIds(app.secret).mint("bob", handle) != a


async def test_a_foreign_task_is_exactly_as_unknown_as_a_made_up_one() -> None:
    app = ToyApp()
    server = build_toy(app)
    async with tasks_client(server, "alice") as alice, tasks_client(server, "bob") as bob:
        task_id = (await raw_call(alice, "slow", {"label": "a"}))["taskId"]
        answers = []
        for client, tid in ((bob, task_id), (alice, "no-such-task"), (bob, "no-such-task")):
            with pytest.raises(MCPError) as caught:
                await raw_get(client, tid)
            answers.append((caught.value.code, caught.value.message, caught.value.error.data))
        with pytest.raises(MCPError) as foreign_cancel:
            await cancel_task(bob.session, task_id)
        assert (await get_task(alice.session, task_id)).status == "working"  # untouched
    assert answers == [(INVALID_PARAMS, "Failed to retrieve task: Task not found", None)] * 3
    assert (foreign_cancel.value.code, foreign_cancel.value.message) == answers[0][:2]
    assert app.cancelled == []


async def test_a_client_without_the_extension_gets_the_ordinary_result() -> None:
    app = ToyApp()
    server = build_toy(app)
    async with Client(server) as plain, tasks_client(server) as declaring:
        result = await plain.call_tool("slow", {"label": "p"})
        with pytest.raises(MCPError) as caught:
            await raw_get(plain, "anything")
        task_id = (await raw_call(declaring, "slow", {"label": "q"}))["taskId"]
        with pytest.raises(MCPError) as on_real_task:
            await raw_get(plain, task_id)
    assert wire(result) == wire(toy_result("p"))
    assert app.store.records == {task_id: app.store.records[task_id]}
    for error in (caught.value, on_real_task.value):
        assert error.code == MISSING_REQUIRED_CLIENT_CAPABILITY
        assert error.error.data == {"requiredCapabilities": {"extensions": {EXTENSION_ID: {}}}}


async def test_advertising_without_claiming_is_still_a_declaration() -> None:
    """The server decides on the request's capabilities, not on what the client can resolve:
    a client that advertises the extension gets the handle (and must handle it)."""
    app = ToyApp()
    async with Client(build_toy(app), extensions=[advertise(EXTENSION_ID)]) as client:
        created = await raw_call(client, "slow", {"label": "z"})
    assert created["resultType"] == "task"


async def test_a_legacy_client_gets_the_ordinary_result_and_no_tasks_methods() -> None:
    app = ToyApp()
    async with Client(
        build_toy(app), mode="legacy", extensions=[advertise(EXTENSION_ID)]
    ) as client:
        result = await client.call_tool("slow", {"label": "old"})
        with pytest.raises(MCPError) as caught:
            await raw_get(client, "anything")
    assert wire(result) == wire(toy_result("old"))
    assert caught.value.code == METHOD_NOT_FOUND
    assert app.store.records == {}


async def test_only_the_configured_tools_become_tasks_and_the_app_may_decline() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        quick = await raw_call(client, "quick", {})
        inline = await raw_call(client, "slow", {"label": "inline"})
    assert quick["structuredContent"] == {"result": "quick"}
    assert inline["structuredContent"] == {"result": "did inline"}
    assert app.store.records == {}


async def test_bad_arguments_get_the_tools_own_validation_error_and_no_task() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        result = await client.call_tool("slow", {"label": 42})
    assert result.is_error is True
    assert "label" in text_of(result)
    assert app.store.records == {}


async def test_cancel_is_the_applications_decision_and_final() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        created = CreateTaskResult.model_validate(await raw_call(client, "slow", {"label": "c"}))
        record = await app.next_opened()
        with anyio.fail_after(5):
            await cancel_task(client.session, created.task_id)
        cancelled = await raw_get(client, created.task_id)
        await app.finish(record)  # the work ends anyway; the task stays cancelled
        again = await raw_get(client, created.task_id)
        with anyio.fail_after(5):
            await cancel_task(client.session, created.task_id)  # acknowledged, changes nothing
    assert_valid("GetTaskResult", cancelled)
    assert cancelled["status"] == "cancelled"
    assert cancelled["statusMessage"].startswith("Stopped following the job")
    assert again == cancelled
    assert app.cancelled == [record.handle]


async def test_a_transparent_call_on_a_cancelled_task_raises_request_cancelled() -> None:
    app = ToyApp()

    client = tasks_client(build_toy(app), sleep=Naps())

    async def cancel_when_opened() -> None:
        await cancel_task(client.session, (await app.next_opened()).task_id)

    async with client, anyio.create_task_group() as tg:
        tg.start_soon(cancel_when_opened)
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            await client.call_tool("slow", {"label": "gone"})
    assert caught.value.code == REQUEST_CANCELLED
    assert "cannot be stopped" in caught.value.message


async def test_a_protocol_failure_is_a_failed_task_and_a_tool_error_a_completed_one() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        one = (await raw_call(client, "slow", {"label": "1"}))["taskId"]
        two = (await raw_call(client, "slow", {"label": "2"}))["taskId"]
        engine = app.live()
        await engine.update(
            one, TaskUpdate(status="failed", error={"code": -32603, "message": "lost"})
        )
        tool_error = CallToolResult(
            content=[TextContent(type="text", text="bad input")], is_error=True
        )
        await engine.update(two, TaskUpdate(status="completed", result=tool_error))
        failed, completed = await raw_get(client, one), await raw_get(client, two)
    assert_valid("GetTaskResult", failed)
    assert (failed["status"], failed["error"]) == ("failed", {"code": -32603, "message": "lost"})
    assert_valid("GetTaskResult", completed)
    assert (completed["status"], completed["result"]["isError"]) == ("completed", True)


async def test_a_transparent_call_on_a_failed_task_raises_its_error() -> None:
    app = ToyApp()

    async def on_status(state: TaskState) -> None:
        if state.status == "working":
            lost = {"code": -32603, "message": "upstream lost", "data": {"retry": False}}
            await app.live().update(state.task_id, TaskUpdate(status="failed", error=lost))

    async with tasks_client(build_toy(app), sleep=Naps(), on_status=on_status) as client:
        with pytest.raises(MCPError) as caught, anyio.fail_after(5):
            await client.call_tool("slow", {"label": "f"})
    assert (caught.value.code, caught.value.message) == (-32603, "upstream lost")
    assert caught.value.error.data == {"retry": False}


async def test_ttl_runs_out_on_the_injected_clock() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app, ttl_ms=1_000)) as client:
        task_id = (await raw_call(client, "slow", {"label": "t"}))["taskId"]
        app.time.now += 0.999
        assert (await raw_get(client, task_id))["status"] == "working"
        app.time.now += 0.001
        with pytest.raises(MCPError) as expired:
            await raw_get(client, task_id)
        assert await app.live().sweep() == 1
        with pytest.raises(MCPError) as gone:
            await raw_get(client, task_id)
    assert (expired.value.code, expired.value.message) == (
        INVALID_PARAMS,
        "Failed to retrieve task: Task has expired",
    )
    assert (gone.value.code, gone.value.message) == (
        INVALID_PARAMS,
        "Failed to retrieve task: Task not found",
    )


async def test_unlimited_ttl_is_sent_as_null() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app, ttl_ms=None)) as client:
        created = await raw_call(client, "slow", {"label": "forever"})
        app.time.now += 10 * 365 * 24 * 3600
        state = await raw_get(client, created["taskId"])
    assert (created["ttlMs"], state["ttlMs"]) == (None, None)
    assert_valid("CreateTaskResult", created)
    assert_valid("GetTaskResult", state)


async def test_a_new_server_on_the_same_store_answers_for_the_old_ones_tasks() -> None:
    app = ToyApp()
    async with tasks_client(build_toy(app)) as client:
        task_id = (await raw_call(client, "slow", {"label": "r"}))["taskId"]
        record = await app.next_opened()
    assert app.engine is None  # the first server's lifespan closed its engine

    app.secret = b"a-secret-the-restart-did-not-keep"
    async with tasks_client(build_toy(app)) as client:
        assert (await raw_get(client, task_id))["status"] == "working"
        await app.finish(record, "r")
        with anyio.fail_after(5):
            state = await get_task(client.session, task_id)
    assert state.status == "completed"
    assert state.result == wire(toy_result("r"))


async def test_a_retried_call_for_the_same_handle_finds_its_task() -> None:
    """The id is a function of owner and handle, and the store's create is idempotent."""
    app = ToyApp()
    app.fixed_handle = "job-fixed"
    async with tasks_client(build_toy(app)) as client:
        first = await raw_call(client, "slow", {"label": "once"})
        second = await raw_call(client, "slow", {"label": "once"})
    assert first["taskId"] == second["taskId"]
    assert len(app.store.records) == 1


async def test_tasks_update_is_acknowledged_for_own_tasks_only() -> None:
    app = ToyApp()
    server = build_toy(app)
    async with tasks_client(server, "alice") as alice, tasks_client(server, "bob") as bob:
        task_id = (await raw_call(alice, "slow", {"label": "u"}))["taskId"]
        request = UpdateTaskRequest(
            params=UpdateTaskParams(task_id=task_id, input_responses={"k": {}})
        )
        ack = await alice.session.send_request(request, RAW)
        with pytest.raises(MCPError) as caught:
            await bob.session.send_request(request, RAW)
        state = await raw_get(alice, task_id)
    assert_valid("UpdateTaskResult", ack)
    assert caught.value.code == INVALID_PARAMS
    assert state["status"] == "working"


async def test_a_broken_resolver_leaves_polling_on_the_stored_state(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = ToyApp()

    async def broken(record: Any) -> TaskUpdate:
        raise RuntimeError("ledger unreadable")

    app.resolve = broken  # type: ignore[method-assign]  # swap in a failing resolver
    async with tasks_client(build_toy(app)) as client:
        task_id = (await raw_call(client, "slow", {"label": "b"}))["taskId"]
        state = await raw_get(client, task_id)
    assert (state["status"], state["statusMessage"]) == ("working", "queued")
    assert "task resolver failed" in caplog.text


async def test_a_failing_starter_is_an_internal_error_that_reveals_nothing() -> None:
    app = ToyApp()

    async def broken(call: Any) -> None:
        raise RuntimeError("store down at /var/secret/tasks.db")

    app.start = broken  # type: ignore[method-assign]  # swap in a failing starter
    async with tasks_client(build_toy(app)) as client:
        with pytest.raises(MCPError) as caught:
            await raw_call(client, "slow", {"label": "s"})
        assert (await client.call_tool("quick", {})).structured_content == {"result": "quick"}
    assert caught.value.code == -32603
    assert "secret" not in str(caught.value.error)
