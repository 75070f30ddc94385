"""The ledger-backed `TaskStore` (issue 16): what `mcptasks` asks of a store, on both ledger
backends (SQLite; PostgreSQL, skipped without a server and failed so in CI): a task row beside
its job, an owner check by the keys of the job's provider, terminal rows never overwritten,
expiry, and the ledger's persistent secret."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, cast

import pytest

from mcp_server.jobs import Caller
from mcp_server.ledger import Ledger, SqliteLedger
from mcp_server.ledger.postgres import PostgresLedger
from mcp_server.mcptasks import TaskRecord, TaskUpdate
from mcp_server.models import JobState
from mcp_server.providers import default_registry
from mcp_server.schemas import JobOutput, Progress

if TYPE_CHECKING:
    from mcp_server.server import JobRelayServer
from mcp_server.tasks import (
    MAX_CALLERS,
    JobTasks,
    LedgerTaskStore,
    owner_key,
    poll_interval_ms,
    progress_message,
)

pytestmark = pytest.mark.anyio

ALICE = owner_key(Caller({"seamless": "k_aaaaaaaaaaaa", "agentseo": "k_bbbbbbbbbbbb"}, {}))
ALICE_OTHER_SEO_KEY = owner_key(
    Caller({"seamless": "k_aaaaaaaaaaaa", "agentseo": "k_cccccccccccc"}, {})
)
BOB = owner_key(Caller({"seamless": "k_dddddddddddd", "agentseo": "k_bbbbbbbbbbbb"}, {}))
T0 = 1_790_000_000.0

OpenStore = Callable[[], AbstractAsyncContextManager[Ledger]]


@pytest.fixture(params=["sqlite", "postgres"])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> OpenStore:
    """Open (again) this test's ledger: an SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return lambda: SqliteLedger.open(tmp_path / "jobs.sqlite3")
    url = request.getfixturevalue("postgres_schema_url")
    return lambda: PostgresLedger.open(url)


def record(task_id: str = "t1", handle: str = "sea_0123456789abcdef", **kw: object) -> TaskRecord:
    fields: dict[str, object] = {
        "task_id": task_id,
        "owner": ALICE,
        "handle": handle,
        "tool": "start_research",
        "created_at": T0,
        "updated_at": T0,
        "ttl_ms": 60_000,
        "poll_interval_ms": 2_000,
        "status_message": "submitting",
    }
    fields.update(kw)
    return TaskRecord(**fields)  # type: ignore[arg-type]


async def test_a_task_row_round_trips_and_a_second_create_returns_the_first(
    open_store: OpenStore,
) -> None:
    async with open_store() as ledger:
        store = LedgerTaskStore(ledger.tasks)
        first = await store.create(record())
        again = await store.create(record(status_message="another"))
        got = await store.get("t1", ALICE)
    assert first == record()
    assert again == record()  # a retried call finds its task
    assert got == record()


async def test_a_task_is_visible_to_the_keys_of_its_jobs_provider_only(
    open_store: OpenStore,
) -> None:
    async with open_store() as ledger:
        store = LedgerTaskStore(ledger.tasks)
        await store.create(record())
        await store.create(record("t2", "seo_0123456789abcdef"))
        seen = {
            (task, who): await store.get(task, owner) is not None
            for task in ("t1", "t2")
            for who, owner in (
                ("alice", ALICE),
                ("alice-other-seo", ALICE_OTHER_SEO_KEY),
                ("bob", BOB),
                ("unscoped", None),
            )
        }
        unknown = await store.get("nope", ALICE)
    assert seen == {
        ("t1", "alice"): True,
        ("t1", "alice-other-seo"): True,  # a Seamless job: the Seamless key decides
        ("t1", "bob"): False,
        ("t1", "unscoped"): True,
        ("t2", "alice"): True,
        ("t2", "alice-other-seo"): False,
        ("t2", "bob"): True,  # Bob uses the same AgentSEO key: the same tenant there
        ("t2", "unscoped"): True,
    }
    assert unknown is None


async def test_a_terminal_task_is_never_overwritten(open_store: OpenStore) -> None:
    async with open_store() as ledger:
        store = LedgerTaskStore(ledger.tasks)
        created = await store.create(record())
        cancelled = created.apply(TaskUpdate(status="cancelled", status_message="stop"), T0 + 1)
        stored = await store.save(cancelled)
        late = cancelled.apply(TaskUpdate(status_message="x"), T0 + 2)
        overwrite = await store.save(replace(late, status="working", status_message="again"))
        missing = await store.save(record("never-created"))
    assert stored == cancelled
    assert overwrite == cancelled
    assert missing is None


async def test_expired_tasks_are_deleted_and_the_secret_outlives_the_process(
    open_store: OpenStore,
) -> None:
    async with open_store() as ledger:
        store = LedgerTaskStore(ledger.tasks)
        await store.create(record("short", ttl_ms=1_000))
        await store.create(record("forever", ttl_ms=None))
        deleted = await store.delete_expired(T0 + 1)
        left = [await store.get(t, None) is not None for t in ("short", "forever")]
        secret = await ledger.tasks.secret("mcp-tasks")
        other = await ledger.tasks.secret("something-else")
    async with open_store() as reopened:
        again = await reopened.tasks.secret("mcp-tasks")
    assert deleted == 1
    assert left == [False, True]
    assert len(secret) == 32
    assert again == secret
    assert other != secret


def test_status_messages_carry_percent_phase_eta_and_stay_bounded() -> None:
    running = JobOutput(
        state=JobState.RUNNING,
        progress=Progress(percent=40, phase="crawling", eta_seconds=90, message="Crawling."),
    )
    hostile = JobOutput(state=JobState.RUNNING, progress=Progress(message="x" * 10_000))
    assert progress_message(running) == "40% done, phase crawling, about 90 s left: Crawling."
    assert len(progress_message(hostile)) <= 300 + len("…[truncated 10,000 chars]")
    assert progress_message(JobOutput(state=JobState.QUEUED)) == (
        "queued: no progress reported yet"
    )


def test_poll_intervals_follow_the_upstream_cadence() -> None:
    seamless = default_registry().get("seamless").task_poll_ms
    agentseo = default_registry().get("agentseo").task_poll_ms
    assert poll_interval_ms(seamless, 5.0) == 5_000
    assert poll_interval_ms(seamless, 0.5) == 2_000  # Seamless: 2 to 5 s
    assert poll_interval_ms(seamless, 30.0) == 5_000
    assert poll_interval_ms(agentseo, 7.0) == 7_000  # AgentSEO: its retry_after_seconds
    assert poll_interval_ms(agentseo, 0.2) == 1_000


def test_the_callers_remembered_for_task_starts_are_bounded_newest_kept() -> None:
    tasks = JobTasks(server=cast("JobRelayServer", object()))
    for n in range(MAX_CALLERS + 50):
        caller = Caller(tenants={"seamless": f"k_{n:012d}"}, sandbox={"seamless": True})
        tasks.remember(owner_key(caller), caller)
    newest = Caller(tenants={"seamless": f"k_{MAX_CALLERS + 49:012d}"}, sandbox={"seamless": True})
    oldest = Caller(tenants={"seamless": f"k_{0:012d}"}, sandbox={"seamless": True})
    assert len(tasks.callers) == MAX_CALLERS
    assert tasks.callers[owner_key(newest)] == newest
    assert owner_key(oldest) not in tasks.callers
