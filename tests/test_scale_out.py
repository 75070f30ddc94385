"""Two replicas on one PostgreSQL ledger and one Redis: a job started on one is followed,
finished and budgeted on the other, and the rate buckets one used are the other's too.

Both servers run in-process on the shared sandbox and virtual clock (`make_client`); each
has its own runtime, ledger connection pool and Redis client, as two processes would.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

import mcp_server.limits.redis as redis_limits
from tests.conftest import call, structured, text_of

pytestmark = pytest.mark.anyio

ADA = {"name": "Ada Lovelace", "company": "Analytical Engines", "domain": "engines.example"}


async def test_a_job_started_on_one_replica_is_finished_and_counted_on_the_other(
    make_client: Callable[..., Any],
    postgres_schema_url: str,
    redis_url: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_limits, "DEFAULT_PREFIX", redis_prefix)
    env = {"JOBRELAY_DB": postgres_schema_url, "JOBRELAY_REDIS_URL": redis_url}
    with anyio.fail_after(60):
        async with make_client(**env) as one, make_client(**env) as two:
            started = await call(
                one, "start_research", {"kind": "contacts", "contacts": [ADA], "wait_seconds": 0}
            )
            assert not started.is_error, text_of(started)
            job_id = structured(started)["job_id"]

            waited = await call(two, "wait_for_job", {"job_id": job_id, "wait_seconds": 30})
            assert not waited.is_error, text_of(waited)
            assert structured(waited)["state"] == "succeeded"

            listed = structured(await call(one, "list_jobs", {}))
            assert [j["job_id"] for j in listed["jobs"]] == [job_id]
            assert listed["jobs"][0]["state"] == "succeeded"  # the other replica's poll

            usage = structured(await call(two, "get_usage", {}))
    seamless = usage["providers"][0]
    buckets = {b["bucket"] for b in seamless["buckets"]}
    assert "POST /contacts/research" in buckets  # sent by replica one, seen by replica two
    assert usage["credits_spent_today"] == 1
