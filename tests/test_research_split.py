"""Contact research given both search_result_ids and descriptors: Seamless takes one or the
other per POST, so jobrelay sends two POSTs under one job handle, each with its own intent row
written before anything is sent (DESIGN.md policy 2), and never re-sends either."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from mcp_server._clock import FakeClock
from mcp_server.config import Settings
from mcp_server.errors import OutcomeUnknown, ResponseLost
from mcp_server.jobs import Caller, JobService
from mcp_server.ledger import RAW_SUBMITTING, SqliteLedger
from mcp_server.models import JobState
from mcp_server.providers.seamless.connection import SeamlessConnection
from mcp_server.schemas import ContactTarget, JobOutput
from mcp_server.upstream._models import ResearchAccepted

pytestmark = pytest.mark.anyio
TENANT = "k_0123456789ab"


class Crash(Exception):
    """The process dies here (nothing after it runs)."""


class FakeSeamless:
    def __init__(self, fail_second: BaseException | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.fail_second = fail_second
        self.credits: int | None = None

    async def research(self, kind: str, **kwargs: Any) -> ResearchAccepted:
        self.calls.append({"kind": kind, **kwargs})
        n = len(self.calls)
        if n == 2 and self.fail_second is not None:
            raise self.fail_second
        targets = list(kwargs.get("search_result_ids") or []) + list(kwargs.get("contacts") or [])
        ids = [f"req-{n}-{i}" for i in range(len(targets))]
        return ResearchAccepted(kind="contacts", request_ids=ids, credits=900)


class FakeConnection(SeamlessConnection):
    """The Seamless provider's connection with its wire client replaced by the fake."""

    def __init__(self, seamless: FakeSeamless) -> None:
        self._seamless = seamless

    def client(self, caller: Caller) -> Any:
        del caller
        return self._seamless


CALLER = Caller(tenants={"seamless": TENANT, "agentseo": TENANT}, sandbox={"seamless": False})


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[SqliteLedger]:
    async with SqliteLedger.open(tmp_path / "jobs.sqlite3") as opened:
        yield opened


def _service(settings: Settings, ledger: SqliteLedger, fake: FakeSeamless) -> JobService:
    return JobService(
        settings=settings, ledger=ledger, clock=FakeClock(start=1_800_000_000.0),
        connections={"seamless": FakeConnection(fake)},
    )  # fmt: skip


async def _start(service: JobService) -> Any:
    return await service.start_research(
        CALLER,
        kind="contacts",
        search_result_ids=["sr-1", "sr-2"],
        contacts=[ContactTarget(email="ada@engines.example")],
        companies=[],
        allow_rerun=False,
        wait_seconds=0,
        progress=None,
        job_change=True,
    )


async def test_ids_and_descriptors_go_in_two_posts_under_one_handle(
    make_settings: Callable[..., Settings], ledger: SqliteLedger
) -> None:
    fake = FakeSeamless()
    outcome = await _start(_service(make_settings(), ledger, fake))
    assert not outcome.failed, outcome.text
    assert [(c.get("search_result_ids", []), c["contacts"]) for c in fake.calls] == [
        (["sr-1", "sr-2"], []),
        ([], [{"email": "ada@engines.example"}]),
    ]
    # isJobChange only with the descriptors
    assert [c["is_job_change"] for c in fake.calls] == [False, True]
    out = outcome.output
    assert isinstance(out, JobOutput)
    assert [i.request_id for i in out.items or []] == ["req-1-0", "req-1-1", "req-2-0"]
    rows = await ledger.list(tenant=TENANT, provider="seamless", limit=10)
    assert len(rows) == 2
    job = next(r for r in rows if r.job_id == out.job_id)
    part = next(r for r in rows if r.job_id != out.job_id)
    assert job.upstream_ids == ["req-1-0", "req-1-1", "req-2-0"]
    assert part.params["part_of"] == job.job_id
    assert (job.credits_requested, part.credits_requested) == (2, 1)  # counted once each
    assert part.upstream_ids == []  # a raw id finds the job, never the part row
    listed = await _service(make_settings(), ledger, fake).list_jobs(
        CALLER, provider="seamless", state=None, since_hours=None, limit=10
    )
    assert [j.job_id for j in listed.output.jobs] == [job.job_id]  # type: ignore[attr-defined]


async def test_an_ambiguous_second_post_leaves_its_own_row_unknown_and_is_not_resent(
    make_settings: Callable[..., Settings], ledger: SqliteLedger
) -> None:
    lost = ResponseLost(
        "connection reset after sending", provider="seamless", operation="researchContacts"
    )
    fake = FakeSeamless(OutcomeUnknown("may have been processed", provider="seamless", cause=lost))
    outcome = await _start(_service(make_settings(), ledger, fake))
    assert len(fake.calls) == 2
    out = outcome.output
    assert isinstance(out, JobOutput)
    assert out.state is JobState.RUNNING  # the first part runs on
    rows = {r.job_id: r for r in await ledger.list(tenant=TENANT, provider="seamless", limit=9)}
    part = next(r for r in rows.values() if r.job_id != out.job_id)
    assert (part.state, part.raw_status) == (JobState.UNKNOWN, "outcome_unknown")
    assert rows[out.job_id].upstream_ids == ["req-1-0", "req-1-1"]
    assert any(part.job_id in w and "list_jobs" in w for w in out.warnings or []), out.warnings


async def test_a_crash_between_the_posts_leaves_the_second_intent_submitting(
    make_settings: Callable[..., Settings], ledger: SqliteLedger
) -> None:
    fake = FakeSeamless(Crash("killed"))
    with pytest.raises(Crash):
        await _start(_service(make_settings(), ledger, fake))
    # After a restart: the part is an intent without an outcome, listed as unknown; nothing
    # sends it again.
    fresh = FakeSeamless()
    listed = await _service(make_settings(), ledger, fresh).list_jobs(
        CALLER, provider="seamless", state=None, since_hours=None, limit=10
    )
    jobs = listed.output.jobs  # type: ignore[attr-defined]
    states = sorted((j.state, j.raw_status) for j in jobs)
    assert states == sorted([(JobState.RUNNING, "researching"), (JobState.UNKNOWN, RAW_SUBMITTING)])
    assert fresh.calls == []
