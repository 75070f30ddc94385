"""The one place backends are chosen: `ledger.open_ledger` and `limits.make_limiter`."""

from __future__ import annotations

from collections.abc import Callable

import anyio
import pytest

from mcp_server._clock import FakeClock
from mcp_server.config import Settings, key_fingerprint
from mcp_server.ledger import JobRecord, Ledger, SqliteLedger, open_ledger
from mcp_server.limits import InMemoryLimiter, Limiter, bucket_key, make_limiter
from mcp_server.upstream.agentseo import PLAN_BUDGETS, Plan

pytestmark = pytest.mark.anyio

TENANT = key_fingerprint("backend-test-key")


async def test_open_ledger_opens_the_sqlite_file_the_settings_name(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    assert not settings.db_path.exists()
    with anyio.fail_after(10):
        async with open_ledger(settings, clock=FakeClock()) as ledger:
            assert isinstance(ledger, SqliteLedger)
            assert ledger.path == settings.db_path.resolve()
            stored = await _start(ledger)
        assert settings.db_path.exists()
        async with open_ledger(settings) as reopened:  # the same file, so the job is still there
            assert await reopened.get(stored.job_id, tenant=TENANT) == stored


async def _start(ledger: Ledger) -> JobRecord:
    record = JobRecord.new(
        provider="agentseo", operation="seo:serp_analysis", tenant=TENANT, sandbox=True, params={}
    )
    return await ledger.record_intent(record)


@pytest.mark.parametrize("plan", [Plan.HOBBY, Plan.PRO])
async def test_make_limiter_seeds_agentseo_buckets_from_the_configured_plan(
    make_settings: Callable[..., Settings], plan: Plan
) -> None:
    limiter: Limiter = make_limiter(make_settings(AGENTSEO_PLAN=plan.value), clock=FakeClock())
    assert isinstance(limiter, InMemoryLimiter)
    with anyio.fail_after(10):
        await limiter.acquire(bucket_key("agentseo", TENANT, "POST", "/api/v1/serp"))
        (snapshot,) = await limiter.snapshot()
    assert (snapshot.bucket, snapshot.limit) == ("workload", PLAN_BUDGETS[plan][0])
