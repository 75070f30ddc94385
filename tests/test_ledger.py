"""The job ledger: intent before action, tenant scoping, budget, rerun detection, durability.

Time comes from a `FakeClock`, so every timestamp is exact; nothing sleeps. Every wait on
another connection or process is bounded by `anyio.fail_after`.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import anyio
import pytest
from anyio.abc import ByteReceiveStream
from pydantic import ValidationError

import mcp_server.ledger._sqlite_schema as ledger_module
from mcp_server._clock import FakeClock
from mcp_server.config import key_fingerprint
from mcp_server.errors import BudgetExceeded, UnknownJob
from mcp_server.ledger import (
    RAW_OUTCOME_UNKNOWN,
    RAW_REJECTED,
    RAW_SUBMITTING,
    SCHEMA_VERSION,
    JobRecord,
    Ledger,
    LedgerError,
    SqliteLedger,
    new_job_id,
    next_utc_midnight,
    params_fingerprint,
    provider_for_job_id,
    register_credit_budget,
    unregister_credit_budget,
)
from mcp_server.ledger.postgres import PostgresLedger
from mcp_server.models import ErrorCode, ErrorInfo, JobState
from mcp_server.providers.seamless.targets import target_keys

pytestmark = pytest.mark.anyio

ALICE = key_fingerprint("alice-seamless-key")
BOB = key_fingerprint("bob-seamless-key")
NOON = datetime(2026, 3, 14, 12, 0, tzinfo=UTC)
LEDGER_APPLICATION_ID = 0x4A524C59


def clock_at(moment: datetime) -> FakeClock:
    clock = FakeClock(start=moment.timestamp())
    assert datetime.fromtimestamp(clock.time(), UTC) == moment
    return clock


def research(
    tenant: str = ALICE,
    *,
    credits: int = 1,
    targets: list[str] | None = None,
    sandbox: bool = False,
    params: dict[str, object] | None = None,
) -> JobRecord:
    return JobRecord.new(
        provider="seamless",
        operation="research_contacts",
        tenant=tenant,
        sandbox=sandbox,
        params=params if params is not None else {"searchResultIds": ["sr-1"]},
        targets=targets or [],
        credits_requested=credits,
    )


async def researching(ledger: Ledger) -> JobRecord:
    """A research job submitted upstream (`req-1`) and running: its intent as recorded."""
    intent = await ledger.record_intent(research())
    await ledger.complete_submit(
        intent.job_id, upstream_ids=["req-1"], state=JobState.RUNNING, raw_status="researching"
    )
    return intent


def seo_job(tenant: str = ALICE) -> JobRecord:
    return JobRecord.new(
        provider="agentseo",
        operation="seo:serp_analysis",
        tenant=tenant,
        sandbox=True,
        params={"workflow": "serp_analysis", "params": {"keyword": "crm"}},
    )


OUTCOME_UNKNOWN = ErrorInfo(
    code=ErrorCode.OUTCOME_UNKNOWN,
    http_status=502,
    retryable=False,
    next_step="Call get_job_status or list_jobs before resubmitting.",
    provider="seamless",
    request_id="req-9",
)


@pytest.fixture
def clock() -> FakeClock:
    return clock_at(NOON)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "jobrelay" / "jobs.sqlite3"


OpenStore = Callable[..., AbstractAsyncContextManager[Ledger]]


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes `ledger` or `open_store` runs on both backends."""
    return str(request.param)


@pytest.fixture
def open_store(backend: str, db_path: Path, request: pytest.FixtureRequest) -> OpenStore:
    """`open_store(clock=None)`: open (another connection to) this test's ledger. PostgreSQL:
    a schema of its own, dropped afterwards (skipped without a server; CI fails the skip)."""
    if backend == "sqlite":
        return lambda clock=None: SqliteLedger.open(db_path, clock=clock)
    url = request.getfixturevalue("postgres_schema_url")
    return lambda clock=None: PostgresLedger.open(url, clock=clock)


@pytest.fixture
async def ledger(open_store: OpenStore, clock: FakeClock) -> AsyncIterator[Ledger]:
    async with open_store(clock) as opened:
        yield opened


@pytest.fixture
async def sqlite_ledger(db_path: Path, clock: FakeClock) -> AsyncIterator[SqliteLedger]:
    async with SqliteLedger.open(db_path, clock=clock) as opened:
        yield opened


def raw(path: Path) -> sqlite3.Connection:
    """A plain connection, as another program (or the sqlite3 shell) would open the file."""
    return sqlite3.connect(path, isolation_level=None, timeout=0)


def listing(path: Path) -> dict[str, bytes]:
    """Every file beside (and including) the ledger, with its bytes: proof nothing changed."""
    return {p.name: p.read_bytes() for p in sorted(path.parent.iterdir())}


def write_garbage(path: Path) -> None:
    path.parent.mkdir(parents=True)
    path.write_bytes(b"definitely not sqlite \x00\xff" * 64)


def wreck_pages(path: Path, page: int = 4096) -> None:
    """Keep the header page, overwrite the next two: a damaged file that still opens."""
    data = bytearray(path.read_bytes())
    assert len(data) > 4 * page
    data[page : 3 * page] = b"\x07" * (2 * page)
    path.write_bytes(bytes(data))


# --------------------------------------------------------------------------------------------
# Opening a fresh file


async def test_open_creates_directories_and_a_wal_ledger_at_the_current_schema(
    db_path: Path,
) -> None:
    assert not db_path.parent.exists()
    async with SqliteLedger.open(db_path) as opened:
        assert opened.path == db_path
    conn = raw(db_path)
    assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("PRAGMA application_id").fetchone() == (LEDGER_APPLICATION_ID,)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"jobs", "job_upstream_ids", "job_targets", "ledger_secrets", "tasks"}
    conn.close()


async def test_each_backend_satisfies_the_ledger_protocol(ledger: Ledger) -> None:
    as_protocol: Ledger = ledger  # checked by mypy; at runtime, the methods exist
    for name in ("record_intent", "complete_submit", "fail_submit", "update", "get", "lookup"):
        assert callable(getattr(as_protocol, name))


# --------------------------------------------------------------------------------------------
# Intent before action


async def test_every_field_round_trips_through_the_file(
    ledger: Ledger, open_store: OpenStore, backend: str, db_path: Path, clock: FakeClock
) -> None:
    params = {"contacts": [{"contactName": "Zoë Ångström", "companyName": "Acme"}], "n": 1.5}
    intent = JobRecord.new(
        provider="seamless",
        operation="research_contacts",
        tenant=ALICE,
        sandbox=True,
        params=params,
        targets=["name:zoë ångström|acme", "sr:abc"],
        credits_requested=3,
        warnings=["Acme was researched 3 days ago (sea_0000000000000001)."],
    )
    stored = await ledger.record_intent(intent)
    assert stored.state is JobState.UNKNOWN
    assert stored.raw_status == RAW_SUBMITTING
    assert stored.created_at == stored.updated_at == NOON
    assert stored.finished_at is None

    clock.advance(2)
    submitted = await ledger.complete_submit(
        intent.job_id,
        upstream_ids=["req-b", "req-a"],
        state=JobState.RUNNING,
        raw_status="researching",
        snapshot={"items": [{"request_id": "req-b", "raw_status": "researching"}]},
        credits_seen=97,
        next_check_at=NOON + timedelta(seconds=5),
    )
    assert submitted.upstream_ids == ["req-b", "req-a"]
    assert submitted.next_check_at == NOON + timedelta(seconds=5)

    clock.advance(8)
    final = await ledger.update(
        intent.job_id,
        state=JobState.SUCCEEDED,
        raw_status="done",
        snapshot={"items": [{"request_id": "req-b", "raw_status": "done"}]},
        result={"records": {"req-b": {"name": "Zoë Ångström", "emails": ["z@acme.com"]}}},
        credits_seen=95,
        add_warnings=["Only 95 research credits left."],
    )
    expected = intent.model_copy(
        update={
            "upstream_ids": ["req-b", "req-a"],
            "credits_seen": 95,
            "state": JobState.SUCCEEDED,
            "raw_status": "done",
            "snapshot": {"items": [{"request_id": "req-b", "raw_status": "done"}]},
            "result": {"records": {"req-b": {"name": "Zoë Ångström", "emails": ["z@acme.com"]}}},
            "warnings": [
                "Acme was researched 3 days ago (sea_0000000000000001).",
                "Only 95 research credits left.",
            ],
            "created_at": NOON,
            "updated_at": NOON + timedelta(seconds=10),
            "finished_at": NOON + timedelta(seconds=10),
            "next_check_at": None,
        }
    )
    assert final == expected

    async with open_store() as reopened:  # a restart reads the same record
        assert await reopened.get(intent.job_id, tenant=ALICE) == expected

    if backend != "sqlite":
        return
    conn = raw(db_path)
    row = conn.execute(
        "SELECT params_fingerprint, created_at FROM jobs WHERE job_id = ?", (intent.job_id,)
    ).fetchone()
    conn.close()
    assert row == (params_fingerprint(params), "2026-03-14T12:00:00.000000Z")


async def test_intent_is_visible_to_another_connection_before_the_post(
    ledger: Ledger, open_store: OpenStore
) -> None:
    intent = await ledger.record_intent(research(credits=2))
    async with open_store() as other:
        seen = await other.get(intent.job_id, tenant=ALICE)
    assert seen is not None
    assert (seen.state, seen.raw_status, seen.upstream_ids) == (
        JobState.UNKNOWN,
        RAW_SUBMITTING,
        [],
    )
    assert await ledger.nonterminal() == [seen]


async def test_a_submit_that_was_not_processed_is_rejected_and_spends_nothing(
    ledger: Ledger,
) -> None:
    intent = await ledger.record_intent(research(credits=4, targets=["sr:x"]))
    error = ErrorInfo(
        code=ErrorCode.RATE_LIMITED,
        http_status=429,
        retryable=True,
        retry_after_seconds=12,
        next_step="Try again in 12 s.",
        provider="seamless",
    )
    failed = await ledger.fail_submit(intent.job_id, error=error, processed="no")
    assert (failed.state, failed.raw_status) == (JobState.FAILED, RAW_REJECTED)
    assert failed.error == error.model_dump(mode="json")
    assert failed.finished_at == NOON
    assert await ledger.credits_spent_today() == 0
    assert await ledger.recent_targets(["sr:x"], tenant=ALICE) == {}
    assert await ledger.nonterminal() == []
    assert await ledger.get(intent.job_id, tenant=ALICE) == failed


async def test_an_ambiguous_submit_stays_unknown_with_advice_and_still_counts(
    ledger: Ledger,
) -> None:
    intent = await ledger.record_intent(research(credits=4, targets=["sr:x"]))
    unknown = await ledger.fail_submit(intent.job_id, error=OUTCOME_UNKNOWN, processed="maybe")
    assert (unknown.state, unknown.raw_status) == (JobState.UNKNOWN, RAW_OUTCOME_UNKNOWN)
    assert unknown.error == {
        "code": "outcome_unknown",
        "http_status": 502,
        "retryable": False,
        "retry_after_seconds": None,
        "retry_at": None,
        "next_step": "Call get_job_status or list_jobs before resubmitting.",
        "provider": "seamless",
        "request_id": "req-9",
    }
    assert unknown.finished_at is None
    assert await ledger.credits_spent_today() == 4  # it may have been paid
    assert await ledger.recent_targets(["sr:x"], tenant=ALICE) == {"sr:x": intent.job_id}
    assert await ledger.nonterminal() == [unknown]


async def test_fail_submit_accepts_a_plain_error_dict(ledger: Ledger) -> None:
    intent = await ledger.record_intent(research())
    failed = await ledger.fail_submit(
        intent.job_id, error={"code": "invalid_input", "next_step": "Fix it."}, processed="no"
    )
    assert failed.error == {"code": "invalid_input", "next_step": "Fix it."}


async def test_complete_submit_clears_an_earlier_error_and_needs_an_upstream_id(
    ledger: Ledger,
) -> None:
    intent = await ledger.record_intent(research())
    await ledger.fail_submit(intent.job_id, error=OUTCOME_UNKNOWN, processed="maybe")
    with pytest.raises(ValueError, match="at least one upstream id"):
        await ledger.complete_submit(
            intent.job_id, upstream_ids=[], state=JobState.QUEUED, raw_status="researching"
        )
    found = await ledger.complete_submit(
        intent.job_id, upstream_ids=["req-1"], state=JobState.QUEUED, raw_status="researching"
    )
    assert (found.state, found.error, found.upstream_ids) == (JobState.QUEUED, None, ["req-1"])


async def test_a_submit_that_finishes_at_once_stores_its_result_and_finish_time(
    ledger: Ledger, clock: FakeClock
) -> None:
    intent = await ledger.record_intent(seo_job())
    clock.advance(1.5)
    done = await ledger.complete_submit(
        intent.job_id,
        upstream_ids=["job-1"],
        state=JobState.SUCCEEDED,
        raw_status="completed",
        result={"results": [{"job_id": "job-1", "result": {"rank": 3}}]},
        next_check_at=NOON,
    )
    assert done.result == {"results": [{"job_id": "job-1", "result": {"rank": 3}}]}
    assert done.finished_at == NOON + timedelta(seconds=1.5)
    assert done.next_check_at is None


async def test_update_keeps_every_field_it_is_not_given(ledger: Ledger, clock: FakeClock) -> None:
    intent = await ledger.record_intent(research())
    await ledger.complete_submit(
        intent.job_id,
        upstream_ids=["req-1"],
        state=JobState.QUEUED,
        raw_status="researching",
        credits_seen=50,
    )
    first = await ledger.update(
        intent.job_id,
        state=JobState.RUNNING,
        raw_status="researching",
        snapshot={"items": [1]},
        result={"partial": True},
        error={"code": "rate_limited"},
        next_check_at=NOON + timedelta(seconds=3),
        add_warnings=["w1"],
    )
    clock.advance(1)
    second = await ledger.update(
        intent.job_id, state=JobState.RUNNING, raw_status="still", add_warnings=["w1", "w2"]
    )
    assert second == first.model_copy(
        update={
            "raw_status": "still",
            "warnings": ["w1", "w2"],
            "updated_at": NOON + timedelta(seconds=1),
        }
    )
    assert second.credits_seen == 50


async def test_a_finished_job_is_never_reopened_by_a_stale_status(
    ledger: Ledger, clock: FakeClock
) -> None:
    intent = await researching(ledger)
    done = await ledger.update(
        intent.job_id, state=JobState.SUCCEEDED, raw_status="done", result={"r": 1}
    )
    clock.advance(4)
    stale = await ledger.update(
        intent.job_id, state=JobState.RUNNING, raw_status="researching", snapshot={"old": 1}
    )
    assert stale == done
    assert await ledger.get(intent.job_id, tenant=ALICE) == done

    duplicate = await ledger.update(intent.job_id, state=JobState.DUPLICATE, raw_status="dup")
    assert duplicate.finished_at == done.finished_at == NOON  # first finish time is kept
    assert duplicate.result == {"r": 1}


async def test_a_flag_sets_one_snapshot_key_and_only_the_write_time(
    ledger: Ledger, clock: FakeClock
) -> None:
    intent = await researching(ledger)
    done = await ledger.update(
        intent.job_id,
        state=JobState.SUCCEEDED,
        raw_status="done",
        snapshot={"items": [{"request_id": "req-1", "raw_status": "done"}]},
        result={"records": {"req-1": {"name": "Ada", "emails": ["ada@example.com"]}}},
        add_warnings=["w1"],
    )
    clock.advance(2)
    await ledger.flag(intent.job_id, "result_read")
    flagged = await ledger.get(intent.job_id, tenant=ALICE)
    assert flagged == done.model_copy(
        update={
            "snapshot": {**(done.snapshot or {}), "result_read": True},
            "updated_at": NOON + timedelta(seconds=2),
        }
    )
    await ledger.flag(intent.job_id, "result_read")  # again: the same row
    assert (await ledger.get(intent.job_id, tenant=ALICE)) == flagged

    bare = await ledger.record_intent(research(targets=["t2"]))
    await ledger.flag(bare.job_id, "seen")
    got = await ledger.get(bare.job_id, tenant=ALICE)
    assert got is not None
    assert got.snapshot == {"seen": True}
    assert got.state == JobState.UNKNOWN

    await ledger.flag(new_job_id("seamless"), "result_read")  # a missing job: nothing
    with pytest.raises(ValueError, match="not a flag name"):
        await ledger.flag(intent.job_id, "a.b")


async def test_writes_to_a_handle_the_ledger_does_not_know_raise_unknown_job(
    ledger: Ledger,
) -> None:
    missing = new_job_id("seamless")
    with pytest.raises(UnknownJob) as info:
        await ledger.update(missing, state=JobState.RUNNING, raw_status="x")
    assert info.value.job_id == missing
    with pytest.raises(UnknownJob):
        await ledger.complete_submit(
            missing, upstream_ids=["r"], state=JobState.QUEUED, raw_status="x"
        )
    with pytest.raises(UnknownJob):
        await ledger.fail_submit(missing, error=OUTCOME_UNKNOWN, processed="no")


async def test_recording_the_same_handle_twice_is_refused(ledger: Ledger) -> None:
    intent = await ledger.record_intent(research())
    with pytest.raises(ValueError, match="already in the ledger"):
        await ledger.record_intent(intent)
    assert len(await ledger.list(tenant=ALICE)) == 1


# --------------------------------------------------------------------------------------------
# Tenants and reads


async def test_reads_never_cross_tenants(ledger: Ledger) -> None:
    alice = await ledger.record_intent(research(ALICE, targets=["sr:shared"]))
    alice = await ledger.complete_submit(
        alice.job_id, upstream_ids=["req-shared"], state=JobState.QUEUED, raw_status="q"
    )
    assert await ledger.get(alice.job_id, tenant=BOB) is None
    assert await ledger.find_by_upstream_id("req-shared", tenant=BOB) is None
    assert await ledger.lookup([alice.job_id, "req-shared"], tenant=BOB) == {}
    assert await ledger.list(tenant=BOB) == []
    assert await ledger.recent_targets(["sr:shared"], tenant=BOB) == {}

    bob = await ledger.record_intent(research(BOB, targets=["sr:shared"]))
    bob = await ledger.complete_submit(
        bob.job_id, upstream_ids=["req-shared"], state=JobState.QUEUED, raw_status="q"
    )
    assert await ledger.find_by_upstream_id("req-shared", tenant=BOB) == bob
    assert await ledger.find_by_upstream_id("req-shared", tenant=ALICE) == alice
    assert await ledger.lookup([alice.job_id, "req-shared", "nope"], tenant=ALICE) == {
        alice.job_id: alice,
        "req-shared": alice,
    }
    assert await ledger.list(tenant=ALICE) == [alice]
    assert await ledger.nonterminal(tenant=BOB) == [bob]


async def test_list_filters_by_provider_state_and_age_newest_first(
    ledger: Ledger, clock: FakeClock
) -> None:
    old = await ledger.record_intent(research())  # 12:00
    clock.advance(3600)
    seo = await ledger.record_intent(seo_job())  # 13:00
    clock.advance(1800)
    same_a = await ledger.record_intent(research())  # 13:30, same instant as the next
    same_b = await ledger.record_intent(research())
    same_b = await ledger.fail_submit(same_b.job_id, error=OUTCOME_UNKNOWN, processed="no")
    ids = [r.job_id for r in await ledger.list(tenant=ALICE)]
    assert ids == [same_b.job_id, same_a.job_id, seo.job_id, old.job_id]

    assert [r.job_id for r in await ledger.list(tenant=ALICE, provider="agentseo")] == [seo.job_id]
    assert await ledger.list(tenant=ALICE, state=JobState.FAILED) == [same_b]
    recent = await ledger.list(tenant=ALICE, provider="seamless", since_hours=1)
    assert [r.job_id for r in recent] == [same_b.job_id, same_a.job_id]
    at_13_15 = await ledger.list(tenant=ALICE, since_hours=1, now=NOON + timedelta(minutes=75))
    assert [r.job_id for r in at_13_15] == [same_b.job_id, same_a.job_id, seo.job_id]
    page = await ledger.list(tenant=ALICE, limit=2, offset=1)
    assert [r.job_id for r in page] == [same_a.job_id, seo.job_id]
    with pytest.raises(ValueError, match="limit"):
        await ledger.list(tenant=ALICE, limit=0)
    with pytest.raises(ValueError, match="offset"):
        await ledger.list(tenant=ALICE, offset=-1)


async def test_nonterminal_returns_exactly_the_open_states_oldest_first(
    ledger: Ledger, clock: FakeClock
) -> None:
    by_state: dict[JobState, str] = {}
    for state in JobState:
        clock.advance(1)
        intent = await ledger.record_intent(research())
        if state is not JobState.UNKNOWN:
            await ledger.complete_submit(
                intent.job_id, upstream_ids=["r"], state=state, raw_status=state.value
            )
        by_state[state] = intent.job_id
    bobs = await ledger.record_intent(research(BOB))

    open_states = [s for s in JobState if not s.terminal]
    assert open_states == [JobState.QUEUED, JobState.RUNNING, JobState.UNKNOWN]
    everyone = await ledger.nonterminal()
    assert [r.job_id for r in everyone] == [by_state[s] for s in open_states] + [bobs.job_id]
    assert [r.job_id for r in await ledger.nonterminal(tenant=BOB)] == [bobs.job_id]


async def test_reopening_the_ledger_keeps_every_job(
    open_store: OpenStore, clock: FakeClock
) -> None:
    async with open_store(clock) as first:
        running = await first.record_intent(research(targets=["sr:1"]))
        await first.complete_submit(
            running.job_id, upstream_ids=["req-1"], state=JobState.RUNNING, raw_status="r"
        )
        clock.advance(1)
        pending = await first.record_intent(seo_job())
        before = await first.list(tenant=ALICE)
    assert len(before) == 2

    async with open_store(clock_at(NOON + timedelta(days=1))) as second:
        assert await second.list(tenant=ALICE) == before
        assert [r.job_id for r in await second.nonterminal()] == [running.job_id, pending.job_id]
        assert (await second.find_by_upstream_id("req-1", tenant=ALICE)) == before[1]
        assert await second.recent_targets(["sr:1"], tenant=ALICE) == {"sr:1": running.job_id}


# --------------------------------------------------------------------------------------------
# Credit budget


async def test_spend_counts_the_current_utc_day_only(open_store: OpenStore) -> None:
    before_midnight = datetime(2026, 3, 14, 23, 59, tzinfo=UTC)
    clock = clock_at(before_midnight)
    async with open_store(clock) as ledger:
        await ledger.record_intent(research(credits=3))
        clock.advance(120)  # 00:01 UTC on the 15th
        await ledger.record_intent(research(credits=4))

        assert await ledger.credits_spent_today() == 4
        assert await ledger.credits_spent_today(now=before_midnight) == 3
        # 01:30 in UTC+2 is still 23:30 UTC on the 14th
        plus_two = datetime(2026, 3, 15, 1, 30, tzinfo=timezone(timedelta(hours=2)))
        assert await ledger.credits_spent_today(now=plus_two) == 3
        assert await ledger.credits_spent_today(now=before_midnight - timedelta(days=1)) == 0

        # the budget resets at the next UTC midnight (`usage` reads it from `next_utc_midnight`)
        assert next_utc_midnight(before_midnight) == datetime(2026, 3, 15, tzinfo=UTC)
        assert next_utc_midnight(plus_two) == datetime(2026, 3, 15, tzinfo=UTC)
    assert next_utc_midnight(datetime(2026, 3, 15, tzinfo=UTC)) == datetime(2026, 3, 16, tzinfo=UTC)


async def test_spend_is_per_ledger_across_tenants_and_sandbox_is_kept_apart(
    ledger: Ledger,
) -> None:
    await ledger.record_intent(research(ALICE, credits=3))
    await ledger.record_intent(research(BOB, credits=4))
    await ledger.record_intent(research(ALICE, credits=5, sandbox=True))
    await ledger.record_intent(seo_job().model_copy(update={"credits_requested": 7}))

    assert await ledger.credits_spent_today(sandbox=False) == 7
    assert await ledger.credits_spent_today(sandbox=True) == 5
    assert await ledger.credits_spent_today() == 12  # AgentSEO jobs are not research credits
    assert await ledger.credits_spent_today(tenant=ALICE, sandbox=False) == 3


async def test_starting_research_over_the_budget_is_refused_and_records_nothing(
    ledger: Ledger,
) -> None:
    first = await ledger.record_intent(research(credits=3), budget=5)
    with pytest.raises(BudgetExceeded) as info:
        await ledger.record_intent(research(credits=3), budget=5)
    refusal = info.value
    assert (refusal.spent, refusal.budget, refusal.requested) == (3, 5, 3)
    assert refusal.resets_in == 12 * 3600
    assert refusal.code is ErrorCode.BUDGET_EXCEEDED
    assert refusal.message == (
        "This research needs 3 credit(s), but 3 of today's budget of 5 "
        "(JOBRELAY_CREDIT_BUDGET) are already spent or reserved. The budget resets at "
        "2026-03-15T00:00:00Z (in 12 h)."
    )
    assert await ledger.list(tenant=ALICE) == [first]

    await ledger.record_intent(research(credits=2), budget=5)  # exactly at the budget: fine
    await ledger.record_intent(research(credits=9, sandbox=True), budget=10)  # own sandbox day
    await ledger.record_intent(seo_job(), budget=0)  # AgentSEO jobs are not budgeted
    await ledger.fail_submit(first.job_id, error=OUTCOME_UNKNOWN, processed="no")
    await ledger.record_intent(research(credits=3), budget=5)  # the rejected 3 came back
    assert await ledger.credits_spent_today(sandbox=False) == 5


async def test_the_budget_counts_the_providers_registered_with_it(ledger: Ledger) -> None:
    """Which providers' credits the budget counts is data the provider registry hands the
    ledger (`register_credit_budget`, for a provider declaring `paid_per_target`), not a
    provider named in the ledger's SQL."""
    await ledger.record_intent(seo_job().model_copy(update={"credits_requested": 7}))
    await ledger.record_intent(research(credits=3, sandbox=True))
    assert await ledger.credits_spent_today() == 3  # only Seamless is registered with it

    def seo(credits: int) -> JobRecord:
        return seo_job().model_copy(update={"credits_requested": credits})

    register_credit_budget("agentseo")
    try:
        assert await ledger.credits_spent_today() == 10
        with pytest.raises(BudgetExceeded) as info:
            await ledger.record_intent(seo(1), budget=10)
        assert (info.value.spent, info.value.requested) == (10, 1)
    finally:
        unregister_credit_budget("agentseo")
    await ledger.record_intent(seo(1), budget=10)  # not counted again: accepted

    unregister_credit_budget("seamless")
    try:
        assert await ledger.credits_spent_today() == 0
        await ledger.record_intent(research(credits=50, sandbox=True), budget=10)
    finally:
        register_credit_budget("seamless")
    assert await ledger.credits_spent_today() == 53


async def test_concurrent_starts_from_two_ledgers_never_overshoot_the_budget(
    open_store: OpenStore,
) -> None:
    accepted: list[str] = []
    refused: list[int] = []

    async def start(target: Ledger) -> None:
        try:
            record = await target.record_intent(research(credits=1), budget=10)
        except BudgetExceeded as exc:
            refused.append(exc.spent)
        else:
            accepted.append(record.job_id)

    with anyio.fail_after(10):
        async with open_store() as one, open_store() as two:
            async with anyio.create_task_group() as tg:
                for i in range(20):
                    tg.start_soon(start, one if i % 2 else two)
            assert await one.credits_spent_today() == 10
    assert len(accepted) == 10
    assert refused == [10] * 10


# --------------------------------------------------------------------------------------------
# Re-research warnings


async def test_recent_targets_name_the_latest_earlier_job_within_the_window(
    open_store: OpenStore,
) -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    clock = clock_at(start)
    async with open_store(clock) as ledger:
        oldest = await ledger.record_intent(research(targets=["li:a", "email:a@x.com"]))  # day 0
        clock.advance(5 * 86400)
        middle = await ledger.record_intent(research(targets=["li:a", "sr:b"]))  # day 5
        clock.advance(5 * 86400)
        newest = await ledger.record_intent(research(targets=["li:a"]))  # day 10
        await ledger.fail_submit(newest.job_id, error=OUTCOME_UNKNOWN, processed="no")
        keys = ["li:a", "email:a@x.com", "sr:b", "domain:never.com"]

        assert await ledger.recent_targets(keys, tenant=ALICE) == {
            "li:a": middle.job_id,  # the rejected day-10 job spent nothing: not a rerun
            "email:a@x.com": oldest.job_id,
            "sr:b": middle.job_id,
        }
        at_day_30 = start + timedelta(days=30)
        assert await ledger.recent_targets(keys, tenant=ALICE, now=at_day_30) == {
            "li:a": middle.job_id,
            "email:a@x.com": oldest.job_id,  # exactly 30 days old: still inside
            "sr:b": middle.job_id,
        }
        at_day_32 = start + timedelta(days=32)
        assert await ledger.recent_targets(keys, tenant=ALICE, now=at_day_32) == {
            "li:a": middle.job_id,
            "sr:b": middle.job_id,
        }
        assert await ledger.recent_targets(keys, tenant=ALICE, now=at_day_32, within_days=7) == {}
        before_any = start - timedelta(days=1)
        assert await ledger.recent_targets(keys, tenant=ALICE, now=before_any) == {}


def test_linkedin_url_variants_share_one_key() -> None:
    variants = [
        "https://www.linkedin.com/in/johndoe",
        "https://www.linkedin.com/in/johndoe/",
        "http://linkedin.com/in/johndoe",
        "linkedin.com/in/johndoe/",
        "www.linkedin.com/in/JohnDoe?trk=public_profile",
        " https://uk.linkedin.com/in/johndoe/#about ",
    ]
    keys = {tuple(target_keys("contacts", contacts=[{"linkedin_url": v}])) for v in variants}
    assert keys == {("li:linkedin.com/in/johndoe",)}


def test_email_case_and_spacing_do_not_matter() -> None:
    assert target_keys("contacts", contacts=[{"email": "  John.Doe@ACME.com "}]) == [
        "email:john.doe@acme.com"
    ]


def test_contact_keys_pair_the_name_with_company_and_domain_in_either_spelling() -> None:
    ours = {
        "name": " John   Doe ",
        "company": "Acme Corp",
        "domain": "https://www.Acme.com/about",
        "title": "CTO",
        "email": "jd@acme.com",
        "linkedin_url": "https://www.linkedin.com/in/johndoe/",
    }
    expected = [
        "sr:11ad7a1c",
        "li:linkedin.com/in/johndoe",
        "email:jd@acme.com",
        "name:john doe|acme corp",
        "name:john doe|acme.com",
    ]
    assert target_keys("contacts", contacts=[ours], search_result_ids=[" 11ad7a1c "]) == expected
    seamless_spelling = {
        "contactName": "John Doe",
        "companyName": "ACME CORP",
        "domain": "acme.com",
        "email": "JD@acme.com",
        "liProfileUrl": "linkedin.com/in/JohnDoe",
    }
    assert (
        target_keys("contacts", contacts=[seamless_spelling], search_result_ids=["11ad7a1c"])
        == expected
    )


def test_company_keys_use_domain_and_name_and_drop_duplicates() -> None:
    keys = target_keys(
        "companies",
        companies=[{"name": "Acme | Corp", "domain": "ACME.com."}, {"domain": "www.acme.com"}],
        search_result_ids=["s1", "s1", ""],
    )
    assert keys == ["sr:s1", "domain:acme.com", "name:acme corp"]


def test_descriptors_without_enough_to_identify_give_no_keys() -> None:
    assert target_keys("contacts", contacts=[{"name": "John"}, {"title": "CTO"}, {}]) == []
    assert target_keys("companies", companies=[{"domain": "  "}]) == []


def test_descriptors_of_the_other_kind_are_refused() -> None:
    with pytest.raises(ValueError, match="as contacts"):
        target_keys("contacts", companies=[{"domain": "acme.com"}])
    with pytest.raises(ValueError, match="as companies"):
        target_keys("companies", contacts=[{"email": "a@b.c"}])


# --------------------------------------------------------------------------------------------
# Records, handles


def test_job_handles_carry_their_provider() -> None:
    sea, seo = new_job_id("seamless"), new_job_id("agentseo")
    assert sea.startswith("sea_")
    assert seo.startswith("seo_")
    assert len(sea) == len(seo) == 20
    assert sea != new_job_id("seamless")
    assert provider_for_job_id(sea) == "seamless"
    assert provider_for_job_id(seo) == "agentseo"
    assert provider_for_job_id("6Ei5iKuSHzJXvqjVPWiZ_") is None
    assert provider_for_job_id("sea_notahandle") is None


def test_params_fingerprint_ignores_key_order_only() -> None:
    a = params_fingerprint({"a": 1, "b": [1, 2], "c": {"x": "é", "y": None}})
    b = params_fingerprint({"c": {"y": None, "x": "é"}, "b": [1, 2], "a": 1})
    assert a == b
    assert len(a) == 64
    assert a != params_fingerprint({"a": 1, "b": [2, 1], "c": {"x": "é", "y": None}})
    assert research(params={"z": 1, "y": 2}).params_fingerprint == params_fingerprint(
        {"y": 2, "z": 1}
    )


def test_records_refuse_what_must_never_be_stored() -> None:
    with pytest.raises(ValidationError, match="tenant"):
        research(tenant="FAKE-key-the-raw-api-key")
    with pytest.raises(ValidationError, match="credentials"):
        research(params={"contacts": [{"name": "x", "headers": {"Token": "secret"}}]})
    with pytest.raises(ValidationError, match="must start with 'seo_'"):
        JobRecord.new(
            provider="agentseo",
            operation="seo:serp_analysis",
            tenant=ALICE,
            sandbox=True,
            params={},
            job_id=new_job_id("seamless"),
        )
    with pytest.raises(ValidationError, match="timezone-aware"):
        research().model_validate(
            {**research().model_dump(), "created_at": datetime(2026, 1, 1)}  # noqa: DTZ001
        )
    assert research().model_validate(
        {**research().model_dump(), "next_check_at": "2026-01-01T02:00:00+02:00"}
    ).next_check_at == datetime(2026, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# Concurrency


_CHILD_WRITER = textwrap.dedent(
    """
    import sys

    import anyio

    from mcp_server.config import key_fingerprint
    from mcp_server.ledger import JobRecord, SqliteLedger
    from mcp_server.models import JobState
    from mcp_server.providers import default_registry

    default_registry()  # the providers register their handle prefixes with the ledger

    async def main(path: str, count: int) -> None:
        tenant = key_fingerprint("alice-seamless-key")
        async with SqliteLedger.open(path) as ledger:
            print("ready", flush=True)
            sys.stdin.readline()
            for i in range(count):
                record = await ledger.record_intent(
                    JobRecord.new(provider="seamless", operation="research_contacts",
                                  tenant=tenant, sandbox=False, params={"child": i},
                                  credits_requested=1)
                )
                await ledger.complete_submit(record.job_id, upstream_ids=[f"child-{i}"],
                                             state=JobState.QUEUED, raw_status="researching")
                await ledger.update(record.job_id, state=JobState.SUCCEEDED, raw_status="done",
                                    result={"i": i})


    anyio.run(main, sys.argv[1], int(sys.argv[2]))
    """
)


async def _read_line(stream: ByteReceiveStream) -> bytes:
    line = b""
    while not line.endswith(b"\n"):
        line += await stream.receive(1)
    return line


@pytest.mark.slow
async def test_concurrent_writers_in_tasks_instances_and_processes_lose_nothing(
    db_path: Path,
) -> None:
    child_count, task_count = 40, 50

    async def write(target: SqliteLedger, label: str) -> None:
        record = await target.record_intent(research(params={"writer": label}))
        await target.complete_submit(
            record.job_id, upstream_ids=[label], state=JobState.QUEUED, raw_status="researching"
        )
        await target.update(
            record.job_id, state=JobState.SUCCEEDED, raw_status="done", result={"by": label}
        )

    with anyio.fail_after(30):
        async with SqliteLedger.open(db_path) as one, SqliteLedger.open(db_path) as two:
            async with await anyio.open_process(
                [sys.executable, "-c", _CHILD_WRITER, str(db_path), str(child_count)]
            ) as child:
                assert child.stdin is not None
                assert child.stdout is not None
                assert await _read_line(child.stdout) == b"ready\n"
                await child.stdin.send(b"go\n")
                async with anyio.create_task_group() as tg:
                    for i in range(task_count):
                        tg.start_soon(write, one, f"one-{i}")
                        tg.start_soon(write, two, f"two-{i}")
                assert await child.wait() == 0

            everything = await one.list(tenant=ALICE, limit=1000)
    total = child_count + 2 * task_count
    assert len(everything) == total
    assert {r.state for r in everything} == {JobState.SUCCEEDED}
    labels = {r.upstream_ids[0] for r in everything}
    expected = {f"child-{i}" for i in range(child_count)}
    expected |= {f"{who}-{i}" for who in ("one", "two") for i in range(task_count)}
    assert labels == expected
    assert all(r.result is not None for r in everything)


async def test_a_write_blocked_by_another_process_fails_with_a_clear_error(
    db_path: Path,
) -> None:
    async with SqliteLedger.open(db_path, busy_timeout=0.1) as ledger:
        intent = await ledger.record_intent(research())
        holder = raw(db_path)
        holder.execute("BEGIN EXCLUSIVE")
        try:
            with anyio.fail_after(5), pytest.raises(LedgerError) as info:
                await ledger.update(intent.job_id, state=JobState.RUNNING, raw_status="r")
            assert await ledger.get(intent.job_id, tenant=ALICE) == intent  # reads still work
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert info.value.problem == "locked"
        assert str(db_path) in info.value.message
        assert "waited 0.1 s" in info.value.message
        after = await ledger.update(intent.job_id, state=JobState.RUNNING, raw_status="r")
        assert after.state is JobState.RUNNING


async def test_a_closed_ledger_refuses_calls(open_store: OpenStore) -> None:
    async with open_store() as ledger:
        pass
    with pytest.raises(LedgerError) as info:
        await ledger.get("sea_0000000000000000", tenant=ALICE)
    assert info.value.problem == "closed"
    await ledger.close()  # idempotent


class _Reader:
    """Stands in for the ledger's loop-thread read connection; fails every call with `error`."""

    def __init__(self, real: sqlite3.Connection, error: sqlite3.Error) -> None:
        self.real = real
        self.error = error
        self.in_transaction = False
        self.calls = 0

    def execute(self, sql: str, *params: object) -> sqlite3.Cursor:
        del sql, params
        self.calls += 1
        raise self.error

    def close(self) -> None:
        self.real.close()


def _sqlite_error(cls: type[sqlite3.Error], message: str, code: int) -> sqlite3.Error:
    error = cls(message)
    error.sqlite_errorcode = code  # as sqlite3 sets it on errors it raises
    return error


async def test_point_reads_run_on_the_loop_thread_without_a_worker_thread(
    sqlite_ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await sqlite_ledger.complete_submit(
        (await sqlite_ledger.record_intent(research())).job_id,
        upstream_ids=["req-1"],
        state=JobState.RUNNING,
        raw_status="researching",
    )
    hops: list[object] = []

    async def counted(*args: object, **kwargs: object) -> object:
        hops.append(args[0])
        raise AssertionError("a point read went through a worker thread")

    monkeypatch.setattr(anyio.to_thread, "run_sync", counted)
    assert await sqlite_ledger.get(stored.job_id, tenant=ALICE) == stored
    assert await sqlite_ledger.find_by_upstream_id("req-1", tenant=ALICE) == stored
    assert await sqlite_ledger.lookup([stored.job_id, "req-1", "nope"], tenant=ALICE) == {
        stored.job_id: stored,
        "req-1": stored,
    }
    assert await sqlite_ledger.get(stored.job_id, tenant=BOB) is None
    assert hops == []


async def test_both_connections_keep_a_small_page_cache(sqlite_ledger: SqliteLedger) -> None:
    # 2 MiB each by default; a finished research row is ~450 KB (BENCHMARKS.md, scale).
    for conn in (sqlite_ledger._db._conn, sqlite_ledger._db._reader):
        assert conn is not None
        assert conn.execute("PRAGMA cache_size").fetchone()[0] == -512


async def test_a_point_read_that_finds_the_file_busy_falls_back_to_a_waiting_worker_thread(
    sqlite_ledger: SqliteLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    stored = await sqlite_ledger.record_intent(research())
    busy = _Reader(
        sqlite_ledger._db._reader,  # type: ignore[arg-type]  # the real one, closed with the ledger
        _sqlite_error(sqlite3.OperationalError, "database is locked", sqlite3.SQLITE_BUSY),
    )
    monkeypatch.setattr(sqlite_ledger._db, "_reader", busy)
    assert await sqlite_ledger.get(stored.job_id, tenant=ALICE) == stored
    assert await sqlite_ledger.lookup([stored.job_id], tenant=ALICE) == {stored.job_id: stored}
    assert busy.calls == 2  # each read tried the loop-thread connection first


async def test_a_point_read_that_fails_otherwise_raises_a_ledger_error_naming_the_file(
    sqlite_ledger: SqliteLedger, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = _Reader(
        sqlite_ledger._db._reader,  # type: ignore[arg-type]  # the real one, closed with the ledger
        _sqlite_error(sqlite3.DatabaseError, "database disk image is malformed", 11),
    )
    monkeypatch.setattr(sqlite_ledger._db, "_reader", broken)
    with pytest.raises(LedgerError) as info:
        await sqlite_ledger.get("sea_0000000000000000", tenant=ALICE)
    assert str(db_path) in info.value.message
    assert info.value.problem == "corrupt"


# --------------------------------------------------------------------------------------------
# Files that cannot be used


async def test_a_file_that_is_not_a_database_is_refused_and_left_untouched(
    db_path: Path,
) -> None:
    write_garbage(db_path)
    before = listing(db_path)
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(db_path):
            pass
    assert info.value.problem == "corrupt"
    assert info.value.path == db_path
    assert info.value.message.startswith(f"The job ledger at {db_path} is damaged")
    assert "file is not a database" in info.value.message
    assert f"mv '{db_path}' '{db_path}.damaged'" in info.value.message
    assert listing(db_path) == before


async def test_a_damaged_ledger_is_refused_and_left_untouched(db_path: Path) -> None:
    async with SqliteLedger.open(db_path) as ledger:
        for i in range(40):
            await ledger.record_intent(research(params={"pad": "x" * 400, "i": i}))
    wreck_pages(db_path)
    before = listing(db_path)
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(db_path):
            pass
    assert info.value.problem == "corrupt"
    assert "is damaged" in info.value.message
    assert listing(db_path) == before


async def test_another_programs_database_is_refused_and_left_untouched(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    conn = raw(db_path)
    conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
    conn.close()
    before = listing(db_path)
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(db_path):
            pass
    assert info.value.problem == "not_a_ledger"
    assert info.value.message.startswith(f"{db_path} is an SQLite database but not a jobrelay")
    assert listing(db_path) == before


async def test_a_schema_newer_than_this_code_is_refused_and_left_untouched(
    db_path: Path,
) -> None:
    async with SqliteLedger.open(db_path) as ledger:
        await ledger.record_intent(research())
    conn = raw(db_path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    before = listing(db_path)
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(db_path):
            pass
    assert info.value.problem == "too_new"
    assert info.value.message == (
        f"The job ledger at {db_path} has schema version {SCHEMA_VERSION + 1}, but this "
        f"jobrelay knows versions up to {SCHEMA_VERSION}: it was written by a newer jobrelay. "
        "jobrelay has not changed it. Upgrade jobrelay, or set JOBRELAY_DB to another file."
    )
    assert listing(db_path) == before


@pytest.mark.parametrize("wal", [True, False], ids=["wal-ledger", "rollback-journal-file"])
async def test_a_database_locked_by_another_process_fails_fast_at_open(
    db_path: Path, wal: bool
) -> None:
    if wal:
        async with SqliteLedger.open(db_path):
            pass
    else:
        db_path.parent.mkdir(parents=True)
    holder = raw(db_path)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with anyio.fail_after(5), pytest.raises(LedgerError) as info:
            async with SqliteLedger.open(db_path, busy_timeout=0.1):
                pass
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert info.value.problem == "locked"
    assert info.value.message.startswith(
        f"The job ledger at {db_path} is locked by another process (waited 0.1 s for it)."
    )
    async with SqliteLedger.open(db_path, busy_timeout=0.1):  # free again: opens
        pass


async def test_a_path_under_a_file_is_refused_as_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("x")
    target = blocker / "jobs.sqlite3"
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(target):
            pass
    assert info.value.problem == "unwritable"
    assert info.value.message.startswith(f"Cannot create or write the job ledger at {target}")
    assert "set JOBRELAY_DB to a writable path" in info.value.message
    assert blocker.read_text() == "x"


async def test_a_directory_given_as_the_ledger_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(tmp_path):
            pass
    assert info.value.problem == "unwritable"
    assert " is a directory. Fix: point JOBRELAY_DB at a file inside it" in info.value.message


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0,
    reason="needs POSIX permissions that apply (root ignores them)",
)
async def test_a_read_only_directory_is_refused_as_unwritable(tmp_path: Path) -> None:
    locked_dir = tmp_path / "ro"
    locked_dir.mkdir()
    locked_dir.chmod(0o500)
    try:
        with pytest.raises(LedgerError) as info:
            async with SqliteLedger.open(locked_dir / "jobs.sqlite3"):
                pass
    finally:
        locked_dir.chmod(0o700)
    assert info.value.problem == "unwritable"


# --------------------------------------------------------------------------------------------
# Migrations


async def test_a_new_migration_runs_once_and_keeps_the_data(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteLedger.open(db_path) as ledger:
        kept = await ledger.record_intent(research())
    ran: list[int] = []

    def add_note_column(conn: sqlite3.Connection) -> None:
        ran.append(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute("ALTER TABLE jobs ADD COLUMN note TEXT")

    monkeypatch.setattr(ledger_module, "_MIGRATIONS", (*ledger_module._MIGRATIONS, add_note_column))
    for _ in range(2):
        async with SqliteLedger.open(db_path) as ledger:
            assert await ledger.get(kept.job_id, tenant=ALICE) == kept
    assert ran == [SCHEMA_VERSION]  # ran once, from the version before it
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION + 1,)
    assert "note" in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}
    conn.close()


async def test_a_failing_migration_is_rolled_back_whole(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with SqliteLedger.open(db_path) as ledger:
        kept = await ledger.record_intent(research())

    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("CREATE TABLE half_done (x)")
        conn.execute("ALTER TABLE no_such_table ADD COLUMN y")

    monkeypatch.setattr(ledger_module, "_MIGRATIONS", (*ledger_module._MIGRATIONS, broken))
    with pytest.raises(LedgerError) as info:
        async with SqliteLedger.open(db_path):
            pass
    assert info.value.problem == "migration_failed"
    assert f"version {SCHEMA_VERSION} to {SCHEMA_VERSION + 1}" in info.value.message
    assert "rolled back" in info.value.message
    conn = raw(db_path)
    assert conn.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert conn.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'").fetchall() == []
    conn.close()

    monkeypatch.undo()
    async with SqliteLedger.open(db_path) as ledger:
        assert await ledger.get(kept.job_id, tenant=ALICE) == kept
