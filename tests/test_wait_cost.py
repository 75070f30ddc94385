"""The cost of waiting grows linearly: O(1) work per waiter per event (issue 17.6).

Many `wait_for_job` calls on a few SEO jobs followed over SSE, on the embedded sandbox in
virtual time. Instead of timing anything, the test counts the operations the wait path makes
(wake-ups of waiters, progress notifications, ledger reads and writes, upstream followers) at
two sizes, and checks that each is bounded per waiter and per event of that waiter's own job
(or per job, for what waiters share), the same bound at 8 and at 48 waiters: any work that
scanned every waiter, or woke every waiter on every job's event, would blow the bounds at the
larger size. CPU and memory per wait are measured by `tools/bench.py --only waits`
(BENCHMARKS.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import anyio
import pytest
from conftest import TEST_EPOCH, structured
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.ledger.sqlite import SqliteLedger
from mcp_server.sandbox._state import Faults, SandboxState
from mcp_server.server import build_server
from mcp_server.watch import Latest, StreamHub

pytestmark = pytest.mark.anyio

SCALE = 20.0
JOB_SECONDS = 60.0
"""Virtual; three real seconds per job (so the waits join while it runs, even on a loaded
machine), well inside the 300 s (15 s real) waits."""
JOBS = 4
STATES = 11
"""States of a successful SEO job in the sandbox (queued, 10% ... 90%, completed): one SSE
event each."""


def _counting(
    monkeypatch: pytest.MonkeyPatch, counts: Counter[str], owner: type, name: str
) -> None:
    original = getattr(owner, name)

    async def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        counts[name] += 1
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


async def _waits(make_settings: Callable[..., Settings], waiters: int) -> dict[str, Any]:
    """`waiters` concurrent waits, waiter i on job i mod JOBS, all run to the job's end."""
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    state = SandboxState(
        clock=clock, faults=Faults(time_scale=SCALE, job_seconds=JOB_SECONDS, agentseo_plan="pro")
    )
    settings = make_settings(AGENTSEO_PLAN="pro", JOBRELAY_MAX_WAIT_SECONDS="300")
    server = build_server(settings, clock=clock, sandbox_state=state)
    counts: Counter[str] = Counter()
    progress: Counter[int] = Counter()
    states: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        for name in ("get", "find_by_upstream_id", "update"):
            _counting(mp, counts, SqliteLedger, name)
        _counting(mp, counts, Latest, "wait_newer")
        _counting(mp, counts, StreamHub, "_run")
        async with Client(server) as client:
            job_ids = []
            with anyio.fail_after(30):
                for j in range(JOBS):
                    args = {"workflow": "serp_analysis", "params": {"keyword": f"cost {j}"}}
                    started = await client.call_tool("start_seo_job", args)
                    job_ids.append(structured(started)["job_id"])
            before = Counter(counts)

            async def wait(i: int) -> None:
                async def on_progress(_p: float, _t: float | None, _m: str | None) -> None:
                    progress[i] += 1

                result = await client.call_tool(
                    "wait_for_job",
                    {"job_id": job_ids[i % JOBS], "wait_seconds": 300},
                    progress_callback=on_progress,
                )
                states.append(structured(result)["state"])

            with anyio.fail_after(60):
                async with anyio.create_task_group() as tg:
                    for i in range(waiters):
                        tg.start_soon(wait, i)
    during = counts - before
    return {"counts": during, "progress": progress, "states": states}


@pytest.mark.parametrize("waiters", [8, 48])
async def test_work_per_wait_is_bounded_per_waiter_and_per_event(
    make_settings: Callable[..., Settings], waiters: int
) -> None:
    got = await _waits(make_settings, waiters)
    counts, progress = got["counts"], got["progress"]
    assert got["states"] == ["succeeded"] * waiters
    # One upstream follower per job, however many wait on it.
    assert counts["_run"] == JOBS
    # Each waiter wakes at most once per event of its own job (plus the follower's end): a
    # publish that woke the waiters of every job would make this JOBS times larger.
    assert counts["wait_newer"] <= waiters * (STATES + 1)
    assert counts["wait_newer"] > 0  # the count is live
    # A progress notification per state the waiter saw, never more (the snapshot's state
    # and the stream's replay of it are one).
    assert all(progress[i] <= STATES for i in range(waiters)), progress
    assert sum(progress.values()) > 0
    # Ledger: one read per wait to find the job; writes per job, not per waiter (the
    # shared fold stores the final envelopes once; the result is marked read once).
    assert 0 < counts["get"] + counts["find_by_upstream_id"] <= waiters, counts
    assert 0 < counts["update"] <= 2 * JOBS, counts
