"""MCP tasks (issue 16) over the real transports: Streamable HTTP on loopback (two tenants by
their key headers), and stdio with a real `python -m mcp_server serve` subprocess killed with
SIGKILL while tasks run, then restarted on the same `JOBRELAY_DB`. Answers are checked against
the extension's schema (skipped when `../shared/reference/` does not have it)."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import pytest
from conftest import http_serving, text_of
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcptasks.toy import (
    Inbox,
    assert_notification_valid,
    assert_valid,
    listening,
    raw_call,
    raw_get,
)
from test_crash import (  # the external sandbox subprocess and the stdio server shim
    _SERVE_WITH_PIDFILE,
    HoldingProxy,
    Sandbox,
    _base_env,
    errlog,  # noqa: F401  # fixture
    sandbox,  # noqa: F401  # fixture
)

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.mcptasks import TasksClient, get_task
from mcp_server.sandbox import SandboxState

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

SERP = {"workflow": "serp_analysis", "params": {"keyword": "crm"}}
ADA = {"kind": "contacts", "contacts": [{"name": "Ada Lovelace", "company": "Analytical"}]}
GRACE = {"kind": "contacts", "contacts": [{"name": "Grace Hopper", "company": "Compilers"}]}
PAID_ROUTE = "seamless POST /contacts/research"


def keys(name: str) -> dict[str, str]:
    return {
        "X-Seamless-Api-Key": f"seamless-key-of-{name}-0a1b2c3d",
        "X-AgentSEO-Api-Key": f"agentseo-key-of-{name}-4e5f6a7b",
    }


async def until_terminal(client: Client, inbox: Inbox, task_ids: list[str]) -> None:
    async with listening(client, inbox, taskIds=task_ids) as stream:
        assert stream.acked.model_extra == {"taskIds": task_ids}
        # A restarted server may first wait out a lease the killed one held (4 s) and then
        # its poll cadence: the inbox's own 5 s default is too short for that.
        await inbox.wait_for(
            lambda box: all(any(s != "working" for s in box.statuses(t)) for t in task_ids),
            within=30,
        )


async def until_submitted(client: Client, inbox: Inbox, task_ids: list[str]) -> None:
    """Until the submits behind these tasks have their upstream answer in the ledger. A task
    is created at the intent row, before its POST: "submitting to ..." until the answer is
    recorded (a kill before that leaves the job `unknown`, as it should)."""

    def submitted(answers: list[dict[str, Any]]) -> bool:
        return not any(a.get("statusMessage", "").startswith("submitting") for a in answers)

    async with listening(client, inbox, taskIds=task_ids):
        with anyio.fail_after(30):
            while True:
                seen = len(inbox.tasks)  # before the gets: a change after them wakes us
                if submitted([await raw_get(client, t) for t in task_ids]):
                    return
                await inbox.wait_for(lambda box, seen=seen: len(box.tasks) > seen)


# --------------------------------------------------------------------------------------------
# Streamable HTTP


@asynccontextmanager
async def over_http(
    url: str, headers: dict[str, str], clock: ScaledClock, inbox: Inbox, *, mode: Any = "auto"
) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=headers, timeout=30.0) as http,
        Client(
            streamable_http_client(url, http_client=http),
            mode=mode,
            extensions=[TasksClient(on_notification=inbox.on_task, sleep=clock.sleep)],
            message_handler=inbox.on_message,
        ) as client,
    ):
        yield client


async def test_tasks_over_http_are_bound_to_the_tenant(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    alice_inbox, bob_inbox = Inbox(), Inbox()
    async with (
        http_serving(make_settings(), clock, sandbox_state) as (url, _http, _stopped),
        over_http(url, keys("alice"), clock, alice_inbox) as alice,
        over_http(url, keys("bob"), clock, bob_inbox) as bob,
    ):
        created = await raw_call(alice, "start_seo_job", SERP)
        task_id = created["taskId"]
        with pytest.raises(MCPError) as foreign:
            await get_task(bob.session, task_id)
        with pytest.raises(MCPError) as wrong:
            await get_task(bob.session, task_id[:-2] + ("AA" if task_id[-2:] != "AA" else "BB"))
        async with listening(bob, bob_inbox, taskIds=[task_id]) as bobs_stream:
            bob_acked = bobs_stream.acked.model_extra
        await until_terminal(alice, alice_inbox, [task_id])
        final = await raw_get(alice, task_id)
        with anyio.fail_after(20):
            research = await alice.call_tool("start_research", ADA)
    assert_valid("CreateTaskResult", created)
    assert_valid("GetTaskResult", final)
    for params in alice_inbox.tasks:
        assert_notification_valid(params)
    assert final["status"] == "completed"
    assert final["result"]["structuredContent"]["state"] == "succeeded"
    # Another tenant's task reads exactly like an id that does not exist.
    assert (foreign.value.error.code, foreign.value.error.message) == (
        wrong.value.error.code,
        wrong.value.error.message,
    )
    assert bob_acked == {"taskIds": []}
    assert bob_inbox.tasks == []
    assert research.structured_content is not None
    assert research.structured_content["state"] == "succeeded"


async def test_a_legacy_http_client_sees_todays_result(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    async with (
        http_serving(make_settings(), clock, sandbox_state) as (url, _http, _stopped),
        over_http(url, keys("carol"), clock, Inbox(), mode="legacy") as client,
    ):
        with anyio.fail_after(10):
            started = await client.call_tool("start_seo_job", SERP)
    assert started.structured_content is not None
    job_id = started.structured_content["job_id"]
    assert text_of(started).startswith(f"SEO serp_analysis job {job_id} started (queued).")


# --------------------------------------------------------------------------------------------
# stdio, kill -9, restart on the same ledger


@asynccontextmanager
async def serve(
    upstream: Sandbox,
    tmp_path: Path,
    log: TextIO,
    n: int,
    inbox: Inbox,
    *,
    seamless: str | None = None,
) -> AsyncIterator[tuple[Client, Path]]:
    pidfile = tmp_path / f"serve-{n}.pid"
    env = _base_env(tmp_path) | {
        "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
        "SEAMLESS_API_KEY": "tasks-test-key",
        "AGENTSEO_API_KEY": "tasks-test-key",
        "SEAMLESS_BASE_URL": seamless or upstream.seamless,
        "AGENTSEO_BASE_URL": upstream.agentseo,
    }
    params = StdioServerParameters(
        command=sys.executable, args=["-c", _SERVE_WITH_PIDFILE, str(pidfile)], env=env
    )
    with anyio.fail_after(30):
        async with Client(
            stdio_client(params, errlog=log),
            extensions=[TasksClient(on_notification=inbox.on_task)],
            message_handler=inbox.on_message,
        ) as client:
            yield client, pidfile


@pytest.mark.slow
async def test_tasks_survive_kill_9_and_reach_their_end_after_a_restart(
    sandbox: Sandbox,  # noqa: F811  # the fixture imported above
    tmp_path: Path,
    errlog: TextIO,  # noqa: F811
) -> None:
    import os
    import signal

    await sandbox.set_faults(job_seconds=3.0)  # real seconds: running when the server dies
    first_inbox = Inbox()
    async with HoldingProxy.running(sandbox.root) as proxy:
        async with serve(sandbox, tmp_path, errlog, 1, first_inbox, seamless=proxy.seamless()) as (
            first,
            pidfile,
        ):
            research = await raw_call(first, "start_research", ADA)
            seo = await raw_call(first, "start_seo_job", SERP)
            before = [await raw_get(first, t["taskId"]) for t in (research, seo)]
            # Their POSTs were answered (and recorded) before anything is held.
            await until_submitted(first, first_inbox, [research["taskId"], seo["taskId"]])
            # A third submit is held in flight upstream: its task (and intent row) exist, its
            # POST has left the server and has no answer when the process dies.
            proxy.hold_paid_posts()
            in_flight = await raw_call(first, "start_research", GRACE)
            with anyio.fail_after(30):
                await proxy.held.wait()
            os.kill(int(pidfile.read_text()), signal.SIGKILL)
            with pytest.raises(MCPError):  # the server is gone
                await raw_get(first, research["taskId"])
        paid_before_restart = (await sandbox.stats())["requests"].get(PAID_ROUTE, 0)

        ids = [research["taskId"], seo["taskId"], in_flight["taskId"]]
        second_inbox = Inbox()
        async with serve(sandbox, tmp_path, errlog, 2, second_inbox) as (second, _pid):
            answered = [await raw_get(second, t) for t in ids]
            await until_terminal(second, second_inbox, ids[:2])
            finals = [await raw_get(second, t) for t in ids]
        stats = await sandbox.stats()  # Grace's POST is still held by the proxy

    for created in (research, seo, in_flight):
        assert_valid("CreateTaskResult", created)
    for answer in [*before, *answered, *finals]:
        assert_valid("GetTaskResult", answer)
    assert [b["status"] for b in before] == ["working", "working"]
    assert [a["taskId"] for a in answered] == ids  # every task still answers after the restart
    assert [f["status"] for f in finals] == ["completed"] * 3
    assert finals[0]["result"]["structuredContent"]["state"] == "succeeded"
    assert finals[1]["result"]["structuredContent"]["state"] == "succeeded"
    unknown = finals[2]["result"]["structuredContent"]
    assert unknown["state"] == "unknown"
    assert unknown["advice"]["code"] == "outcome_unknown"
    assert paid_before_restart == 1  # Ada's (Grace's never reached the sandbox)
    assert stats["requests"][PAID_ROUTE] == 1  # nothing resubmitted
    assert stats["duplicate_paid_posts"] == 0


async def test_an_unusable_key_header_is_the_tools_own_refusal_not_a_task(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    inbox = Inbox()
    headers = {"X-Seamless-Api-Key": "has spaces in it"}
    async with (
        http_serving(make_settings(), clock, sandbox_state) as (url, _http, _stopped),
        over_http(url, headers, clock, inbox) as client,
    ):
        refused = await raw_call(client, "start_research", ADA)
        with pytest.raises(MCPError) as on_get:
            await get_task(client.session, "any-task")
    assert refused.get("resultType", "complete") == "complete"
    assert refused["isError"] is True
    assert refused["structuredContent"]["error"]["code"] == "invalid_input"
    assert "X-Seamless-Api-Key header" in refused["content"][0]["text"]
    assert "X-Seamless-Api-Key header" in on_get.value.error.message
