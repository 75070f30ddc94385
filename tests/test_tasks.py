"""Long jobs as MCP tasks (issue 16), in-process: the jobrelay server with the SDK client's
extension hooks (`TasksClient`, a `ClientExtension` with a `ResultClaim`), on the embedded
sandbox in virtual time. Every task answer is checked against the extension's schema
(`../shared/reference/mcp-ext-tasks.schema.json`; those checks skip when it is absent).
Transports and kill -9 durability: `test_tasks_transports.py`."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import text_of
from mcp import Client, MCPError
from mcp.client import advertise
from mcp.types import INVALID_PARAMS, MISSING_REQUIRED_CLIENT_CAPABILITY
from mcptasks.toy import (
    Inbox,
    assert_notification_valid,
    assert_valid,
    listening,
    raw_call,
    raw_get,
)

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.mcptasks import EXTENSION_ID, TasksClient, TaskState, cancel_task, get_task
from mcp_server.sandbox import SandboxState
from mcp_server.server import build_server

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

DAY_MS = 24 * 60 * 60 * 1000
SERP = {"workflow": "serp_analysis", "params": {"keyword": "crm"}}
ADA = {"kind": "contacts", "contacts": [{"name": "Ada Lovelace", "company": "Analytical"}]}


@pytest.fixture
def build(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> Callable[..., Any]:
    def make(**env: str) -> Any:
        return build_server(make_settings(**env), clock=clock, sandbox_state=sandbox_state)

    return make


def tasks_client(server: Any, clock: ScaledClock, inbox: Inbox | None = None, **kw: Any) -> Client:
    """A client that declares the extension; it waits between polls on the virtual clock."""
    inbox = inbox or Inbox()
    return Client(
        server,
        extensions=[TasksClient(on_notification=inbox.on_task, sleep=clock.sleep, **kw)],
        message_handler=inbox.on_message,
    )


def task_rows(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(db) as conn:
        return [(str(t), str(j)) for t, j in conn.execute("SELECT task_id, job_id FROM tasks")]


async def until_terminal(client: Client, inbox: Inbox, task_id: str) -> dict[str, Any]:
    """Listen for the task until it ends (notifications, not polling); its final tasks/get."""
    async with listening(client, inbox, taskIds=[task_id]) as stream:
        assert stream.acked.model_extra == {"taskIds": [task_id]}
        await inbox.wait_for(
            lambda box: any(s != "working" for s in box.statuses(task_id)),
        )
    return await raw_get(client, task_id)


@asynccontextmanager
async def plain(server: Any) -> AsyncIterator[Client]:
    async with Client(server) as client:
        yield client


async def test_start_seo_job_answers_a_task_that_ends_with_the_tools_own_result(
    build: Callable[..., Any], clock: ScaledClock, tmp_path: Path
) -> None:
    server = build()
    inbox = Inbox()
    async with tasks_client(server, clock, inbox) as client:
        created = await raw_call(client, "start_seo_job", SERP)
        working = await raw_get(client, created["taskId"])
        final = await until_terminal(client, inbox, created["taskId"])
    assert_valid("CreateTaskResult", created)
    assert created["resultType"] == "task"
    assert created["status"] == "working"
    assert created["ttlMs"] >= DAY_MS
    assert 1_000 <= created["pollIntervalMs"] <= 60_000
    assert created["statusMessage"] == "submitting to AgentSEO"
    assert_valid("GetTaskResult", working)
    assert_valid("GetTaskResult", final)
    for params in inbox.tasks:
        assert_notification_valid(params)
    assert final["status"] == "completed"
    assert final["taskId"] == created["taskId"]
    result = final["result"]
    job_id = result["structuredContent"]["job_id"]
    assert result["structuredContent"]["state"] == "succeeded"
    # The task's result is exactly what wait_for_job answers for the job, to a plain client.
    async with plain(server) as other:
        with anyio.fail_after(10):
            waited = await other.call_tool("wait_for_job", {"job_id": job_id})
    assert result["structuredContent"] == waited.structured_content
    assert result["content"][0]["text"] == text_of(waited)
    assert result.get("isError", False) is False
    # The task row sits in the ledger beside its job.
    assert task_rows(tmp_path / "jobs.sqlite3") == [(created["taskId"], job_id)]


async def test_research_as_a_task_is_transparent_to_a_tasks_client(
    build: Callable[..., Any], clock: ScaledClock
) -> None:
    polled: list[TaskState] = []

    async def on_status(state: TaskState) -> None:
        polled.append(state)

    async with tasks_client(build(), clock, on_status=on_status) as client:
        with anyio.fail_after(20):
            result = await client.call_tool("start_research", ADA)
    assert not result.is_error, text_of(result)
    assert result.structured_content is not None
    assert result.structured_content["state"] == "succeeded"
    assert text_of(result).startswith("Research job sea_")
    assert polled[-1].status == "completed"
    assert all(p.status == "working" for p in polled[:-1])
    for state in polled:
        assert state.ttl_ms is not None
        assert state.ttl_ms >= DAY_MS
        assert state.status_message
    for state in polled[:-1]:  # Seamless's documented 2-5 s cadence
        assert state.poll_interval_ms is not None
        assert 2_000 <= state.poll_interval_ms <= 5_000


async def test_wait_for_job_is_a_task_of_its_own_on_a_running_job(
    build: Callable[..., Any], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    sandbox_state.faults.job_seconds = 20.0
    inbox = Inbox()
    async with tasks_client(build(), clock, inbox) as client:
        started = await raw_call(client, "start_seo_job", SERP)
        with anyio.fail_after(10):
            listed = await client.call_tool("list_jobs", {})
        assert listed.structured_content is not None
        job_id = listed.structured_content["jobs"][0]["job_id"]
        created = await raw_call(client, "wait_for_job", {"job_id": job_id})
        final = await until_terminal(client, inbox, created["taskId"])
        again = await raw_call(client, "wait_for_job", {"job_id": job_id})
    assert_valid("CreateTaskResult", created)
    assert created["taskId"] != started["taskId"]
    assert final["status"] == "completed"
    assert final["result"]["structuredContent"]["job_id"] == job_id
    assert final["result"]["structuredContent"]["state"] == "succeeded"
    assert again["taskId"] not in (created["taskId"], started["taskId"])  # a task per wait


@pytest.mark.parametrize(
    ("mode", "extensions"),
    [("auto", []), ("legacy", [advertise(EXTENSION_ID)])],
    ids=["no-extension", "legacy"],
)
async def test_other_clients_see_todays_results(
    build: Callable[..., Any], clock: ScaledClock, tmp_path: Path, mode: Any, extensions: Any
) -> None:
    server = build()
    async with Client(server, mode=mode, extensions=extensions) as client:
        with anyio.fail_after(10):
            # The job is queued for its first 0.6 virtual seconds, 6 real ms at the test scale:
            # a loaded machine answers the POST later and rightly says "running". Virtual time
            # stands (nearly) still during the start, so the answer is the queued one.
            scale = clock.scale
            clock.rescale(1e-6)
            started = await client.call_tool("start_seo_job", SERP)
            clock.rescale(scale)
            assert started.structured_content is not None
            job_id = started.structured_content["job_id"]
            waited = await client.call_tool("wait_for_job", {"job_id": job_id})
    assert text_of(started) == (
        f"SEO serp_analysis job {job_id} started (queued). Next: "
        f'wait_for_job(job_id="{job_id}"). Do not start it again: that pays twice.'
    )
    assert waited.structured_content is not None
    assert waited.structured_content["state"] == "succeeded"
    assert task_rows(tmp_path / "jobs.sqlite3") == []


async def test_arguments_the_tool_refuses_are_refused_as_an_ordinary_result(
    build: Callable[..., Any], clock: ScaledClock, tmp_path: Path
) -> None:
    async with tasks_client(build(), clock) as client:
        bad_workflow = await raw_call(client, "start_seo_job", {"workflow": "nope", "params": {}})
        bad_params = await raw_call(
            client, "start_seo_job", {"workflow": "serp_analysis", "params": {}}
        )
        unknown_arg = await raw_call(client, "wait_for_job", {"job": "seo_0"})
        no_job = await raw_call(client, "wait_for_job", {"job_id": "seo_0123456789abcdef"})
    for answer in (bad_workflow, bad_params, unknown_arg, no_job):
        assert "resultType" not in answer or answer["resultType"] == "complete", answer
        assert answer["isError"] is True
    assert bad_workflow["structuredContent"]["error"]["code"] == "invalid_input"
    assert bad_params["structuredContent"]["error"]["code"] == "invalid_input"
    assert "keyword" in bad_params["content"][0]["text"]
    assert no_job["structuredContent"]["error"]["code"] == "not_found"
    assert task_rows(tmp_path / "jobs.sqlite3") == []


async def test_an_upstream_refusal_completes_the_task_with_the_advice(
    build: Callable[..., Any], clock: ScaledClock
) -> None:
    server = build(SEAMLESS_API_KEY="sandbox-insufficient-credits", JOBRELAY_SANDBOX="1")
    inbox = Inbox()
    async with tasks_client(server, clock, inbox) as client:
        created = await raw_call(client, "start_research", ADA)
        final = await until_terminal(client, inbox, created["taskId"])
    assert_valid("GetTaskResult", final)
    assert final["status"] == "completed"  # a failed job is information, not a protocol error
    assert final["result"]["isError"] is True
    assert final["result"]["structuredContent"]["error"]["code"] == "credits_exhausted"


async def test_an_unknown_submit_outcome_completes_the_task_with_outcome_unknown(
    build: Callable[..., Any], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    server = build()
    sandbox_state.faults.error_rate = 1.0  # every answer a 5xx: the POST may have been processed
    inbox = Inbox()
    async with tasks_client(server, clock, inbox) as client:
        created = await raw_call(client, "start_seo_job", SERP)
        final = await until_terminal(client, inbox, created["taskId"])
    assert_valid("GetTaskResult", final)
    assert final["status"] == "completed"
    result = final["result"]
    assert result["structuredContent"]["error"]["code"] == "outcome_unknown"
    job_id = result["structuredContent"]["job_id"]
    assert job_id.startswith("seo_")
    # The one next step checks this very job by its handle (issue 13.4), as the tool says.
    assert f'get_job_status(job_ids=["{job_id}"])' in result["content"][0]["text"]


async def test_cancel_stops_following_says_the_job_runs_on_and_keeps_it_findable(
    build: Callable[..., Any], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    sandbox_state.faults.job_seconds = 10_000.0  # still running when cancelled
    server = build()
    async with tasks_client(server, clock) as client:
        created = await raw_call(client, "start_seo_job", SERP)
        with anyio.fail_after(10):
            await cancel_task(client.session, created["taskId"])
            after = await raw_get(client, created["taskId"])
            await cancel_task(client.session, created["taskId"])  # again: still cancelled
            listed = await client.call_tool("list_jobs", {})
    assert_valid("GetTaskResult", after)
    assert after["status"] == "cancelled"
    message = after["statusMessage"]
    assert "stopped following" in message
    assert "can stop a job once started" in message
    assert "not refunded" in message
    assert listed.structured_content is not None
    [job] = listed.structured_content["jobs"]
    assert job["state"] in ("queued", "running")
    assert job["job_id"] in message


async def test_a_removed_jobs_task_ends_with_a_clear_answer(
    build: Callable[..., Any], clock: ScaledClock, sandbox_state: SandboxState, tmp_path: Path
) -> None:
    sandbox_state.faults.job_seconds = 10_000.0
    server = build()
    async with tasks_client(server, clock) as client:
        created = await raw_call(client, "start_seo_job", SERP)
        [(_task, job_id)] = task_rows(tmp_path / "jobs.sqlite3")
        with sqlite3.connect(tmp_path / "jobs.sqlite3") as conn:
            conn.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))
        final = await raw_get(client, created["taskId"])
    assert_valid("GetTaskResult", final)
    assert final["status"] == "completed"
    assert final["result"]["isError"] is True
    assert final["result"]["structuredContent"]["error"]["code"] == "not_found"
    assert "no longer in the ledger" in final["result"]["content"][0]["text"]


async def test_bad_task_requests_get_the_extensions_errors(
    build: Callable[..., Any], clock: ScaledClock
) -> None:
    server = build()
    async with tasks_client(server, clock) as client:
        created = await raw_call(client, "start_seo_job", SERP)
        with pytest.raises(MCPError) as unknown:
            await get_task(client.session, "no-such-task")
        with pytest.raises(MCPError) as unknown_cancel:
            await cancel_task(client.session, "no-such-task")
    async with plain(server) as other:
        with pytest.raises(MCPError) as missing:
            await get_task(other.session, created["taskId"])
    assert unknown.value.error.code == INVALID_PARAMS
    assert unknown.value.error.message == "Failed to retrieve task: Task not found"
    assert unknown_cancel.value.error.code == INVALID_PARAMS
    assert missing.value.error.code == MISSING_REQUIRED_CLIENT_CAPABILITY


async def test_tasks_and_listeners_of_one_job_share_its_one_upstream_stream(
    build: Callable[..., Any], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    """Three tasks on one AgentSEO job (the start and two waits, each with its follower) and
    a listen stream on all three: one SSE connection upstream, not one per task or listener."""
    sandbox_state.faults.job_seconds = 30.0
    inbox = Inbox()
    async with tasks_client(build(), clock, inbox) as client:
        started = await raw_call(client, "start_seo_job", SERP)
        first = await raw_get(client, started["taskId"])
        assert first["status"] == "working"
        with anyio.fail_after(10):
            listed = await client.call_tool("list_jobs", {})
        assert listed.structured_content is not None
        job_id = listed.structured_content["jobs"][0]["job_id"]
        waits = [await raw_call(client, "wait_for_job", {"job_id": job_id}) for _ in range(2)]
        ids = [started["taskId"], *(w["taskId"] for w in waits)]
        async with listening(client, inbox, taskIds=ids) as stream:
            assert stream.acked.model_extra == {"taskIds": ids}
            await inbox.wait_for(
                lambda box: all("completed" in box.statuses(t) for t in ids),
            )
        finals = [await raw_get(client, t) for t in ids]
    assert [f["status"] for f in finals] == ["completed"] * 3
    assert {f["result"]["structuredContent"]["job_id"] for f in finals} == {job_id}
    for params in inbox.tasks:
        assert_notification_valid(params)
    working = [n for n in inbox.tasks if n["status"] == "working"]
    assert any("%" in n.get("statusMessage", "") for n in working), working
    streams = sandbox_state.stats()["requests"].get("agentseo GET /jobs/{job_id}/events", 0)
    assert streams == 1


async def test_a_start_refused_before_its_ledger_row_is_an_ordinary_result(
    build: Callable[..., Any], clock: ScaledClock, tmp_path: Path
) -> None:
    """Over the credit budget nothing is written or sent: no task, the tool's own refusal."""
    async with tasks_client(build(JOBRELAY_CREDIT_BUDGET="0"), clock) as client:
        refused = await raw_call(client, "start_research", ADA)
    assert "resultType" not in refused or refused["resultType"] == "complete", refused
    assert refused["isError"] is True
    assert refused["structuredContent"]["error"]["code"] == "budget_exceeded"
    assert task_rows(tmp_path / "jobs.sqlite3") == []
