"""Streamable HTTP over real loopback: the SDK client in both protocol eras, progress, health,
body limit, graceful shutdown mid-wait."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from conftest import CONTRACT_TOOLS, TEST_EPOCH, call, http_serving
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from mcp_server._clock import ScaledClock
from mcp_server._http_app import MAX_REQUEST_BODY_BYTES
from mcp_server.config import Settings, key_fingerprint, load_settings
from mcp_server.ledger import SqliteLedger
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.server import SANDBOX_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

TEST_SCALE = 200.0
WAIT = 300
"""Virtual seconds a call may wait for a job (1.5 s real): jobs take 6, even on a busy machine."""

TOOLS = set(CONTRACT_TOOLS)
MODES = ["auto", "legacy"]


@asynccontextmanager
async def mcp_client(
    url: str, mode: str, headers: Mapping[str, str] | None = None
) -> AsyncIterator[Client]:
    timeout = httpx2.Timeout(30.0, read=60.0)
    async with (
        httpx2.AsyncClient(headers=dict(headers or {}), timeout=timeout) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so one server (building one takes ~0.3 s) serves the whole module."""
    return "asyncio"


@pytest.fixture(scope="module")
async def served(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    clock = ScaledClock(TEST_SCALE, epoch=TEST_EPOCH)
    state = SandboxState(clock=clock, faults=Faults(time_scale=TEST_SCALE, job_seconds=6.0))
    settings = load_settings(
        {
            "JOBRELAY_DB": str(tmp_path_factory.mktemp("http") / "jobs.db"),
            "JOBRELAY_MAX_WAIT_SECONDS": str(WAIT),
        }
    )
    async with http_serving(settings, clock, state) as (url, _http, _stopped):
        yield url


@pytest.mark.parametrize("mode", MODES)
async def test_every_tool_is_listed_and_callable_over_http(served: str, mode: str) -> None:
    async with mcp_client(served, mode) as client:
        listed = await client.list_tools()
        assert {t.name for t in listed.tools} == TOOLS

        found = ok(await call(client, "search_prospects", {"kind": "contacts", "query": "cto"}))
        ids = [i["search_result_id"] for i in found["items"][:2]]
        research = ok(
            await call(
                client,
                "start_research",
                {
                    "kind": "contacts",
                    "search_result_ids": ids,
                    "allow_rerun": True,  # the module's server already researched them
                    "skip_dedup_check": True,  # and Seamless would answer duplicate
                    "wait_seconds": WAIT,
                },
            )
        )
        assert research["state"] == "succeeded"
        seo = ok(
            await call(
                client,
                "start_seo_job",
                {"workflow": "serp_analysis", "params": {"keyword": "shoes"}},
            )
        )
        status = ok(await call(client, "get_job_status", {"job_ids": [seo["job_id"]]}))
        assert seo["job_id"] in str(status)
        waited = ok(
            await call(client, "wait_for_job", {"job_id": seo["job_id"], "wait_seconds": WAIT})
        )
        assert waited["state"] == "succeeded"
        page = ok(await call(client, "get_job_result", {"job_id": research["job_id"]}))
        assert page["job_id"] == research["job_id"]
        assert page["total"] == len(ids)
        listed_jobs = ok(await call(client, "list_jobs", {}))
        assert {j["job_id"] for j in listed_jobs["jobs"]} >= {research["job_id"], seo["job_id"]}
        advice = ok(await call(client, "explain_error", {"http_status": 429}))
        assert advice["advice"]["retryable"] is True
        usage = ok(await call(client, "get_usage", {}))
        assert [p["provider"] for p in usage["providers"]] == ["seamless", "agentseo"]


@pytest.mark.parametrize("mode", MODES)
async def test_progress_notifications_reach_http_clients(served: str, mode: str) -> None:
    seen: list[float] = []
    totals: set[float | None] = set()
    finished = anyio.Event()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        # Recorded, not asserted here: the SDK logs and drops a callback's exception.
        totals.add(total)
        seen.append(progress)
        if progress >= 100:
            finished.set()

    async with mcp_client(served, mode) as client:
        result = await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": "boots"}, "wait_seconds": WAIT},
            progress_callback=on_progress,
        )
        assert ok(result)["state"] == "succeeded"
        with anyio.fail_after(5):
            await finished.wait()
    assert seen[0] < 100.0
    assert seen == sorted(seen)
    assert seen[-1] == 100.0
    assert totals == {100.0}


async def test_health_check_says_ok_with_the_documented_fields_only(served: str) -> None:
    base = served.removesuffix("/mcp")
    async with httpx.AsyncClient() as http:
        response = await http.get(f"{base}/healthz")
        assert response.status_code == 200
        assert response.json()["status"] == "ok"
        assert set(response.json()) == {"status", "ledger", "redis", "providers"}
        assert "server" not in response.headers  # no software banner
        assert (await http.post(f"{base}/healthz")).status_code == 405


async def test_a_body_over_the_limit_is_refused_with_413(served: str) -> None:
    body = (
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"'
        + b"x" * (MAX_REQUEST_BODY_BYTES)
        + b'"}}'
    )
    async with httpx.AsyncClient() as http:
        response = await http.post(
            served,
            content=body,
            headers={"content-type": "application/json", "accept": "application/json"},
        )
    assert response.status_code == 413


async def test_unknown_paths_are_404(served: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(served.removesuffix("/mcp") + "/admin")
    assert response.status_code == 404


async def test_shutdown_mid_wait_returns_the_handles_and_keeps_the_jobs(
    make_settings: Callable[..., Settings],
) -> None:
    """Real time and jobs that never finish: only shutdown can end these waits early. One
    client per protocol era waits at the same time."""
    clock = ScaledClock(1.0, epoch=TEST_EPOCH)
    state = SandboxState(clock=clock, faults=Faults(time_scale=1.0, job_seconds=3600.0))
    settings = make_settings()
    results: dict[str, tuple[str, CallToolResult]] = {}

    async with http_serving(settings, clock, state) as (url, http, _stopped):

        async def wait(mode: str, waiting: anyio.Event) -> None:
            async def on_progress(
                progress: float, total: float | None, message: str | None
            ) -> None:
                waiting.set()

            async with mcp_client(url, mode) as client:
                started = ok(
                    await call(
                        client,
                        "start_seo_job",
                        {"workflow": "serp_analysis", "params": {"keyword": mode}},
                    )
                )
                result = await call(
                    client,
                    "wait_for_job",
                    {"job_id": started["job_id"], "wait_seconds": 40},
                    progress_callback=on_progress,
                )
                results[mode] = (started["job_id"], result)

        with anyio.fail_after(8):
            async with anyio.create_task_group() as tg:
                events = {mode: anyio.Event() for mode in MODES}
                for mode in MODES:
                    tg.start_soon(wait, mode, events[mode])
                for event in events.values():
                    await event.wait()
                http.should_exit = True

    assert set(results) == set(MODES)
    db = settings.db_path
    assert not await anyio.Path(f"{db}-wal").exists()  # the ledger was closed cleanly
    async with SqliteLedger.open(db) as ledger:
        for job_id, result in results.values():
            ended = ok(result)
            assert ended["job_id"] == job_id
            assert ended["state"] in {"queued", "running"}
            assert f'wait_for_job(job_id="{job_id}")' in str(result.content)
            record = await ledger.get(job_id, tenant=key_fingerprint(SANDBOX_KEY))
            assert record is not None
            assert record.upstream_ids


async def test_shutdown_ends_open_event_streams_instead_of_waiting_for_them(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> None:
    """A handshake-era client keeps a GET event stream open; uvicorn alone would wait for it
    until its graceful timeout (8 s)."""
    async with (
        http_serving(make_settings(), clock, sandbox_state) as (url, http, stopped),
        mcp_client(url, "legacy") as client,
    ):
        await client.list_tools()
        with anyio.fail_after(5):
            while not http.guard.open_streams:  # noqa: ASYNC110  # opened in the background
                await anyio.sleep(0.01)
        http.should_exit = True
        with anyio.fail_after(3):
            await stopped.wait()
