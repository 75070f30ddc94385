"""The rendering of finished jobs is shared while the record is unchanged, and only then."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from mcp_server import advice as advice_mod
from mcp_server._clock import FakeClock
from mcp_server.config import Settings, key_fingerprint
from mcp_server.errors import LocalRateLimited
from mcp_server.jobs import JobService
from mcp_server.ledger import JobRecord, Ledger
from mcp_server.models import JobState

TENANT = key_fingerprint("render-test-key")
WHEN = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def _service(make_settings: Callable[..., Settings]) -> JobService:
    # Rendering reads neither the ledger nor the clients.
    return JobService(
        settings=make_settings(),
        ledger=cast(Ledger, object()),
        clock=FakeClock(start=1_800_000_000.0),
    )


def _finished(
    job_id: str, name: str = "Ada Lovelace", state: JobState = JobState.SUCCEEDED
) -> JobRecord:
    record: dict[str, Any] = {"name": name, "title": "Analyst", "company": {"name": "Engines"}}
    return JobRecord.new(
        provider="seamless",
        operation="research_contacts",
        tenant=TENANT,
        sandbox=True,
        params={"contacts": [{"name": name}]},
        credits_requested=1,
    ).model_copy(
        update={
            "job_id": job_id,
            "upstream_ids": ["req-1"],
            "state": state,
            "raw_status": {
                JobState.SUCCEEDED: "done",
                JobState.FAILED: "error",
                JobState.RUNNING: "researching",
            }[state],
            "snapshot": {
                "kind": "contacts",
                "items": [{"request_id": "req-1", "raw_status": "done", "target": name}],
            },
            "result": {"records": {"req-1": record}},
            "created_at": WHEN,
            "updated_at": WHEN,
            "finished_at": WHEN if state.terminal else None,
        }
    )


def test_the_same_finished_row_gets_the_same_rendering_without_rendering_again(
    make_settings: Callable[..., Settings],
) -> None:
    service = _service(make_settings)
    first = service._render(_finished("sea_aaaaaaaaaaaaaaaa"))
    again = service._render(_finished("sea_aaaaaaaaaaaaaaaa"))  # another read of the same row
    assert again is first
    assert "Ada Lovelace" in str(first.output.model_dump())


def test_a_changed_record_is_rendered_anew(make_settings: Callable[..., Settings]) -> None:
    service = _service(make_settings)
    first = service._render(_finished("sea_aaaaaaaaaaaaaaaa"))
    rewritten = _finished("sea_aaaaaaaaaaaaaaaa", name="Grace Hopper")  # a later write
    changed = service._render(
        rewritten.model_copy(update={"updated_at": WHEN + timedelta(microseconds=1)})
    )
    assert changed is not first
    assert "Grace Hopper" in str(changed.output.model_dump())
    assert "Ada Lovelace" not in str(changed.output.model_dump())


def test_warnings_and_unfinished_or_failed_jobs_are_never_served_from_the_cache(
    make_settings: Callable[..., Settings],
) -> None:
    service = _service(make_settings)
    plain = service._render(_finished("sea_aaaaaaaaaaaaaaaa"))
    warned = service._render(_finished("sea_aaaaaaaaaaaaaaaa"), warnings=["Only 3 credits left."])
    assert warned is not plain
    assert "Only 3 credits left." in warned.text
    assert service._render(_finished("sea_aaaaaaaaaaaaaaaa")) is plain
    failed = _finished("sea_bbbbbbbbbbbbbbbb", state=JobState.FAILED)
    assert service._render(failed) is not service._render(failed)  # its advice depends on now
    running = _finished("sea_cccccccccccccccc", state=JobState.RUNNING)
    assert service._render(running) is not service._render(running)  # its next step, too
    # A succeeded job's first rendering (started) or one with a failed check are not the plain
    # rendering, and are never handed out as it.
    done = _finished("sea_dddddddddddddddd")
    started = service._render(done, started=True)
    assert started is not service._render(done, started=True)
    slow = LocalRateLimited("no token", provider="seamless", bucket="poll", retry_after=3.0)
    problem = advice_mod.advise_error(slow, now=WHEN.timestamp(), tool="wait_for_job")
    checked = service._render(done, problem=problem)
    assert checked is not service._render(done, problem=problem)
    assert service._render(done) is service._render(done)


def test_the_cache_keeps_only_the_most_recently_used_jobs(
    make_settings: Callable[..., Settings],
) -> None:
    service = _service(make_settings)
    service.renderer.cache_size = 2
    a, b, c = (f"sea_{ch * 16}" for ch in "abc")
    first_a = service._render(_finished(a))
    service._render(_finished(b))
    assert service._render(_finished(a)) is first_a  # a is now the most recent
    service._render(_finished(c))  # evicts b, the least recently used
    assert list(service.renderer._rendered) == [a, c]
