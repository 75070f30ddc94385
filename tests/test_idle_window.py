"""Spend what the window allows (issue 17.7), end to end against the sandbox's honest windows.

The sandbox answers the 61st request of a window with 429 (tests/sandbox), so sending more than
the window holds fails here; sending less than it could (pacing from the first request) shows
as `local_rate_limited` refusals for the calls that would queue past the 20 s inline cap.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.sandbox import Faults, SandboxState
from tests.conftest import TEST_EPOCH, call, structured

pytestmark = pytest.mark.anyio

SCALE = 5.0
"""Slower than the suite's 100x: 60 concurrent calls cost real CPU time, which at 100x would
become minutes of virtual time and time out the upstream calls instead of testing the window
(at 5x the 20 s inline cap is 4 s real, still far above what the 60 calls take)."""


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(SCALE, epoch=TEST_EPOCH)


@pytest.fixture
def sandbox_state(clock: ScaledClock) -> SandboxState:
    return SandboxState(clock=clock, faults=Faults(time_scale=SCALE, job_seconds=6.0))


def _count_429(state: SandboxState) -> int:
    return sum(n for key, n in state.responses.items() if key.endswith(" 429"))


async def _sixty_at_once(client: Client, tool: str, args_for: Any) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []

    async def one(i: int) -> None:
        results.append(structured(await call(client, tool, args_for(i))))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(one, i)
    return results


async def test_sixty_seo_jobs_into_an_idle_window_all_start_with_no_429(
    client: Client, sandbox_state: SandboxState
) -> None:
    results = await _sixty_at_once(
        client,
        "start_seo_job",
        lambda i: {"workflow": "serp_analysis", "params": {"keyword": f"idle kw {i:02d}"}},
    )
    assert [r.get("error", {}).get("code") for r in results] == [None] * 60
    assert len({r["job_id"] for r in results}) == 60
    assert sandbox_state.stats()["paid_posts"] == 60
    assert _count_429(sandbox_state) == 0


async def test_sixty_research_posts_into_an_idle_window_all_start_with_no_429(
    client: Client, sandbox_state: SandboxState
) -> None:
    results = await _sixty_at_once(
        client,
        "start_research",
        lambda i: {
            "kind": "contacts",
            "contacts": [{"name": f"Idle Person{i:02d}", "company": f"Idleco {i:02d}"}],
        },
    )
    assert [r.get("error", {}).get("code") for r in results] == [None] * 60
    assert sandbox_state.stats()["paid_posts"] == 60
    assert _count_429(sandbox_state) == 0
