"""Hundreds of followed AgentSEO jobs never starve the agent's own calls (issue 14.13).

300 `wait_for_job` calls follow 300 running SEO jobs on the embedded sandbox (real loopback
HTTP, so connection pools are real) while new jobs are started and statuses read. Streams
have their own pool and a cap; jobs beyond it are polled at a paced rate; requests keep the
request pool. Checked by counts and ordering, not wall-clock (figures: BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import TEST_EPOCH, structured
from mcp import Client
from mcp.server.mcpserver import Context

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.server import build_server
from mcp_server.upstream.agentseo import MAX_CONCURRENT_STREAMS

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

FOLLOWED = 300
ROUNDS = 10
SCALE = 10.0
"""Virtual seconds per real second: the 300 s waits last 30 s of real time, well beyond what
the checks take; the jobs (10^6 virtual seconds) never finish during the test."""


def _seo(keyword: str) -> dict[str, Any]:
    return {"workflow": "serp_analysis", "params": {"keyword": keyword}}


async def test_300_followed_seo_jobs_leave_starts_and_status_reads_answered(
    make_settings: Callable[..., Settings],
) -> None:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    state = SandboxState(
        clock=clock, faults=Faults(time_scale=SCALE, job_seconds=1e6, agentseo_plan="agency")
    )
    settings = make_settings(AGENTSEO_PLAN="agency", JOBRELAY_MAX_WAIT_SECONDS="300")
    server = build_server(settings, clock=clock, sandbox_state=state)

    @server.tool(name="probe_followers")
    async def probe(ctx: Context[Any, Any]) -> dict[str, float]:
        runtime = ctx.request_context.lifespan_context
        budget = runtime.budgets["agentseo"]
        return {
            "open_streams": sum(
                c.open_streams for c in runtime.connections["agentseo"].clients.values()
            ),
            "followers": sum(
                h.followers_started for h in runtime.connections["agentseo"]._hubs.values()
            ),
            "budget_spent": budget.max_tokens - budget.tokens,
        }

    async with Client(server) as client:
        job_ids: list[str] = []
        with anyio.fail_after(120):
            for n in range(FOLLOWED):
                started = structured(await client.call_tool("start_seo_job", _seo(f"kw {n}")))
                job_ids.append(started["job_id"])

        under_way = 0
        all_under_way = anyio.Event()
        returned: list[str] = []

        async def follow(job_id: str) -> None:
            reported = False

            async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
                nonlocal reported, under_way
                if not reported:
                    reported = True
                    under_way += 1
                    if under_way == FOLLOWED:
                        all_under_way.set()

            await client.call_tool(
                "wait_for_job",
                {"job_id": job_id, "wait_seconds": 300},
                progress_callback=on_progress,
            )
            returned.append(job_id)

        async with anyio.create_task_group() as tg:
            for job_id in job_ids:
                tg.start_soon(follow, job_id)
            with anyio.fail_after(60):
                await all_under_way.wait()

            answered: list[str] = []
            with anyio.fail_after(60):
                for n in range(ROUNDS):
                    new = await client.call_tool("start_seo_job", _seo(f"new {n}"))
                    assert not new.is_error, new.content
                    new_id = structured(new)["job_id"]
                    status = await client.call_tool(
                        "get_job_status", {"job_ids": [new_id, job_ids[n * 29]]}
                    )
                    assert not status.is_error, status.content
                    states = [j["state"] for j in structured(status)["jobs"]]
                    assert len(states) == 2
                    assert set(states) <= {"queued", "running"}
                    answered.append(new_id)
                probe_result = structured(await client.call_tool("probe_followers", {}))

            # Every check was answered while all 300 waits were still following their jobs.
            assert len(answered) == ROUNDS
            assert returned == []
            assert probe_result["followers"] >= FOLLOWED
            assert 0 < probe_result["open_streams"] <= MAX_CONCURRENT_STREAMS
            # No local wait was booked as an upstream failure (the breaker never moved).
            assert probe_result["budget_spent"] == 0
            tg.cancel_scope.cancel()
