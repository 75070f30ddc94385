"""The sampled gauges and the write-time counters of issue 19, through the in-memory reader:
jobs by provider and state counted in the ledger (the same from every process sharing it),
each bucket's fill from the limiter's one window arithmetic, credits counted once the write
committed, poll rounds by provider."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from mcp_server import telemetry
from mcp_server._clock import FakeClock, ScaledClock
from mcp_server._gauges import bucket_fills, sample_once
from mcp_server.errors import LocalRateLimited
from mcp_server.ledger import JobRecord, Ledger, LedgerError, SqliteLedger
from mcp_server.ledger import _postgres_schema as postgres_schema
from mcp_server.ledger import _sqlite_schema as sqlite_schema
from mcp_server.ledger._postgres_rows import JOB_COUNTS as POSTGRES_JOB_COUNTS
from mcp_server.ledger._sqlite_rows import JOB_COUNTS as SQLITE_JOB_COUNTS
from mcp_server.ledger.postgres import PostgresLedger
from mcp_server.limits import BucketKey, SqliteLimiter
from mcp_server.models import JobState
from mcp_server.watch import PollCoalescer
from tests.conftest import TEST_EPOCH

pytestmark = pytest.mark.anyio

Points = dict[str, list[tuple[dict[str, Any], Any]]]
RESEARCH = "POST /contacts/research"


def _points(reader: InMemoryMetricReader) -> Points:
    points: Points = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data is not None else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                for p in metric.data.data_points:
                    points.setdefault(metric.name, []).append((dict(p.attributes or {}), p))
    return points


def _values(points: Points, name: str) -> dict[tuple[str, ...], Any]:
    return {tuple(a.values()): p.value for a, p in points.get(name, [])}


@pytest.fixture
def reader() -> Iterator[InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    telemetry.enable(readers=[reader], tracing=False, prometheus=False)
    try:
        yield reader
    finally:
        telemetry.disable()


def _job(provider: str = "seamless", credits: int = 2) -> JobRecord:
    return JobRecord.new(
        provider=provider,
        operation="research_contacts" if provider == "seamless" else "serp_analysis",
        tenant="k_0123456789ab",
        sandbox=True,
        params={"searchResultIds": ["sr-1"]} if provider == "seamless" else {"keyword": "x"},
        credits_requested=credits if provider == "seamless" else 0,
    )


Open = Callable[[], AbstractAsyncContextManager[Ledger]]


@pytest.fixture(params=["sqlite", "postgres"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Open:
    """Opens another connection to one shared ledger each call (another process's view)."""
    if request.param == "sqlite":
        return lambda: SqliteLedger.open(tmp_path / "jobs.sqlite3")
    url: str = request.getfixturevalue("postgres_schema_url")
    return lambda: PostgresLedger.open(url)


class _NoBuckets:
    async def snapshot(self) -> list[Any]:
        return []


# --------------------------------------------------------------------------------------------
# Jobs by provider and state: counted in the ledger, the same from every process


async def test_jobs_by_state_are_counted_in_the_shared_ledger_by_any_process(
    reader: InMemoryMetricReader, open_ledger: Open
) -> None:
    async with open_ledger() as one, open_ledger() as other:
        a = await one.record_intent(_job())
        b = await one.record_intent(_job())
        seo = await one.record_intent(_job("agentseo"))
        await one.complete_submit(
            a.job_id, upstream_ids=["r-1"], state=JobState.RUNNING, raw_status="processing"
        )
        await one.complete_submit(
            b.job_id, upstream_ids=["r-2"], state=JobState.SUCCEEDED, raw_status="done"
        )
        assert await other.job_counts() == {
            ("seamless", JobState.RUNNING): 1,
            ("seamless", JobState.SUCCEEDED): 1,
            ("agentseo", JobState.UNKNOWN): 1,
        }
        # The gauge as the *other* process reports it: the writes it never made counted.
        with anyio.fail_after(10):
            await sample_once(other, _NoBuckets())  # type: ignore[arg-type]
        jobs = _values(_points(reader), "jobrelay.jobs")
        assert jobs == {
            ("seamless", "running"): 1,
            ("seamless", "succeeded"): 1,
            ("agentseo", "unknown"): 1,
        }
        await one.update(a.job_id, state=JobState.SUCCEEDED, raw_status="done")
        await one.fail_submit(seo.job_id, error={"code": "upstream_rejected"}, processed="no")
        with anyio.fail_after(10):
            await sample_once(other, _NoBuckets())  # type: ignore[arg-type]
        jobs = _values(_points(reader), "jobrelay.jobs")
    assert jobs == {
        ("seamless", "running"): 0,  # counted before, none now: reads 0, not its last value
        ("seamless", "succeeded"): 2,
        ("agentseo", "unknown"): 0,
        ("agentseo", "failed"): 1,
    }
    assert all(
        set(a) == {"jobrelay.provider", "jobrelay.job.state"}
        for a, _ in _points(reader)["jobrelay.jobs"]
    )


INDEX = "jobs_by_provider_state"


async def _three_jobs(ledger: Ledger, times: int = 1) -> None:
    """Three more jobs; `times`: the counts expected then, in threes."""
    for provider in ("seamless", "seamless", "agentseo"):
        await ledger.record_intent(_job(provider))
    assert await ledger.job_counts() == {
        ("seamless", JobState.UNKNOWN): 2 * times,
        ("agentseo", JobState.UNKNOWN): times,
    }


async def test_sqlite_counts_jobs_from_the_provider_state_index_alone(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    with anyio.fail_after(20):
        async with SqliteLedger.open(path) as ledger:
            await _three_jobs(ledger)
    conn = sqlite3.connect(path)
    try:
        plan = [str(r[3]) for r in conn.execute(f"EXPLAIN QUERY PLAN {SQLITE_JOB_COUNTS}")]
    finally:
        conn.close()
    # Not "SCAN jobs" (every row with its result, then a temp B-tree: 124 ms at 100,000 jobs).
    assert plan == [f"SCAN jobs USING COVERING INDEX {INDEX}"]


async def test_postgres_counts_jobs_with_an_index_only_scan(postgres_schema_url: str) -> None:
    with anyio.fail_after(20):
        async with PostgresLedger.open(postgres_schema_url) as ledger:
            await _three_jobs(ledger)
    with psycopg.connect(postgres_schema_url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobs")  # the visibility map, as autovacuum keeps it
        # Three rows: the table alone is cheaper to read, so have the planner show what it
        # would do with a large one (tools/bench_job_counts.py: its own choice at 100,000).
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(str(r[0]) for r in conn.execute(f"EXPLAIN {POSTGRES_JOB_COUNTS}"))
    assert f"Index Only Scan using {INDEX} on jobs" in plan, plan


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_a_ledger_from_before_the_index_gets_it_and_keeps_its_jobs(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Migration 3 on a version-2 ledger with jobs in it (both backends)."""
    if backend == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        opened: Open = lambda: SqliteLedger.open(path)  # noqa: E731
        migrations: Any = sqlite_schema
    else:
        url: str = request.getfixturevalue("postgres_schema_url")
        opened = lambda: PostgresLedger.open(url)  # noqa: E731
        migrations = postgres_schema
    version_2 = migrations._MIGRATIONS[:2]
    with anyio.fail_after(30):
        with monkeypatch.context() as before:
            before.setattr(migrations, "_MIGRATIONS", version_2)
            before.setattr(migrations, "SCHEMA_VERSION", 2, raising=False)
            async with opened() as ledger:
                await _three_jobs(ledger)
        assert INDEX not in _indexes(backend, tmp_path, request)
        async with opened() as ledger:
            await _three_jobs(ledger, times=2)  # three more: the first three kept
    assert INDEX in _indexes(backend, tmp_path, request)


def _indexes(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> set[str]:
    if backend == "sqlite":
        conn = sqlite3.connect(tmp_path / "jobs.sqlite3")
        try:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        finally:
            conn.close()
        return {str(r[0]) for r in rows}
    url: str = request.getfixturevalue("postgres_schema_url")
    with psycopg.connect(url) as pg:
        found = pg.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'jobs'").fetchall()
    return {str(r[0]) for r in found}


async def test_sampling_records_nothing_when_metrics_are_off(tmp_path: Path) -> None:
    assert not telemetry.enabled()
    async with SqliteLedger.open(tmp_path / "jobs.sqlite3") as ledger:
        await ledger.record_intent(_job())
        with anyio.fail_after(10):
            await sample_once(ledger, _NoBuckets())  # type: ignore[arg-type]
    reader = InMemoryMetricReader()
    telemetry.enable(readers=[reader], tracing=False, prometheus=False)
    try:
        assert "jobrelay.jobs" not in _points(reader)  # nothing was cached while off
    finally:
        telemetry.disable()


# --------------------------------------------------------------------------------------------
# Bucket fill: the local limiter's view, from the one window arithmetic, no key fingerprint


async def test_bucket_fill_is_the_shared_limiters_window_summed_over_keys(
    reader: InMemoryMetricReader, tmp_path: Path
) -> None:
    clock = FakeClock()
    path = tmp_path / "jobs.sqlite3"
    first = BucketKey("seamless", "k_aaaaaaaaaaaa", RESEARCH)
    second = BucketKey("seamless", "k_bbbbbbbbbbbb", RESEARCH)
    async with SqliteLedger.open(path) as ledger:  # the buckets live in the ledger's file
        one = SqliteLimiter(path, clock)
        other = SqliteLimiter(path, clock)  # another process on the same file
        try:
            with anyio.fail_after(10):
                for _ in range(60):  # the first key's window full
                    await one.acquire(first)
                for _ in range(3):
                    await one.acquire(second)
                clock.advance(10.0)
                with pytest.raises(LocalRateLimited):
                    await one.acquire(first, deadline=clock.monotonic())
                await sample_once(ledger, other)
        finally:
            await one.aclose()
            await other.aclose()
    points = _points(reader)
    where = ("seamless", RESEARCH)
    assert _values(points, "jobrelay.limiter.bucket.used") == {where: 63}
    assert _values(points, "jobrelay.limiter.bucket.capacity") == {where: 120}
    [wait] = _values(points, "jobrelay.limiter.bucket.wait").values()
    assert wait == pytest.approx(60.0 / 0.96 - 10.0)  # the full key's next slot, one span on
    for name in ("used", "capacity", "wait"):
        for attrs, _ in points[f"jobrelay.limiter.bucket.{name}"]:
            assert attrs == {"jobrelay.provider": "seamless", "jobrelay.limiter.bucket": RESEARCH}


def test_bucket_fills_sum_used_and_capacity_and_keep_the_longest_wait() -> None:
    from mcp_server.limits import BucketSnapshot

    def snap(provider: str, fp: str, bucket: str, *, used: int, limit: int, wait: float) -> Any:
        return BucketSnapshot(
            provider, fp, bucket, limit, 60.0, limit - used, 0.0, 0.0, None, used, wait
        )

    fills = bucket_fills(
        [
            snap("seamless", "k_a", RESEARCH, used=5, limit=60, wait=0.0),
            snap("seamless", "k_b", RESEARCH, used=60, limit=60, wait=12.5),
            snap("agentseo", "k_a", "workload", used=1, limit=60, wait=0.0),
        ]
    )
    assert fills == [
        telemetry.BucketFill("seamless", RESEARCH, 65, 120, 12.5),
        telemetry.BucketFill("agentseo", "workload", 1, 60, 0.0),
    ]
    assert "k_a" not in repr(fills)


# --------------------------------------------------------------------------------------------
# Credits spent: counted once the write committed


async def test_credits_spent_are_counted_after_the_commit_not_for_a_rolled_back_write(
    reader: InMemoryMetricReader, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteLedger.open(tmp_path / "jobs.sqlite3") as ledger:
        job = await ledger.record_intent(_job(credits=3))
        rows = ledger._rows
        real = rows.mutate

        async def commit_fails(job_id: str, change: Any, *, durable: bool) -> JobRecord:
            def then_fail(old: JobRecord) -> JobRecord | None:
                change(old)  # the change is computed (and was counted, before the fix)...
                raise sqlite3.OperationalError("disk I/O error")  # ...and rolled back

            return await real(job_id, then_fail, durable=durable)

        monkeypatch.setattr(rows, "mutate", commit_fails)
        with pytest.raises(LedgerError):
            await ledger.complete_submit(
                job.job_id, upstream_ids=["r-1"], state=JobState.RUNNING, raw_status="processing"
            )
        assert "jobrelay.credits.spent" not in _points(reader)
        stored = await ledger.get(job.job_id, tenant=job.tenant)
        assert stored is not None
        assert stored.raw_status == "submitting"  # the write did roll back
        monkeypatch.setattr(rows, "mutate", real)
        await ledger.complete_submit(
            job.job_id, upstream_ids=["r-1"], state=JobState.RUNNING, raw_status="processing"
        )
    points = _points(reader)
    assert _values(points, "jobrelay.credits.spent") == {("seamless",): 3}
    assert _values(points, "jobrelay.job.transitions") == {
        ("seamless", "research_contacts", "running"): 1
    }


# --------------------------------------------------------------------------------------------
# Poll rounds carry the provider they poll for


async def test_poll_round_calls_carry_the_coalescers_provider(
    reader: InMemoryMetricReader,
) -> None:
    clock = ScaledClock(100.0, epoch=TEST_EPOCH)
    seen: list[Sequence[str]] = []

    async def poll(ids: Sequence[str]) -> dict[str, str]:
        seen.append(ids)
        return dict.fromkeys(ids, "done")

    async with anyio.create_task_group() as tg:

        def spawn(fn: Callable[[], Any]) -> None:
            tg.start_soon(fn)

        co: PollCoalescer[str] = PollCoalescer(
            poll=poll,
            is_terminal=lambda item: item == "done",
            interval=lambda _n: 2.0,
            clock=clock,
            spawn=spawn,
            provider="seamless",
        )
        with anyio.fail_after(10):
            async with co.watch(["r-1", "r-2"]):
                while not seen:
                    await anyio.lowlevel.checkpoint()
    rounds = _points(reader)["jobrelay.poll.round.calls"]
    assert [(a, p.sum) for a, p in rounds] == [({"jobrelay.provider": "seamless"}, 1)]
