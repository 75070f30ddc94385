"""The embedded sandbox keeps its jobs across server restarts, beside the ledger (issue 14.7).

Two server lifetimes on one JOBRELAY_DB: jobs started in the first are still known (running,
then finished) in the second, instead of `not_found` / a 404 loop between list_jobs and
wait_for_job.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import TEST_EPOCH, structured
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.sandbox import Faults, JobFile, SandboxState, sandbox_path
from mcp_server.server import SANDBOX_KEY, build_server

pytestmark = pytest.mark.anyio

RESEARCH = {"kind": "contacts", "contacts": [{"name": "Ada Lovelace", "company": "Acme"}]}
SEO = {"workflow": "serp_analysis", "params": {"keyword": "pizza oven"}}
SCALE = 100.0


async def _start_both(client: Client) -> tuple[str, str]:
    with anyio.fail_after(30):
        research = structured(await client.call_tool("start_research", RESEARCH))
        seo = structured(await client.call_tool("start_seo_job", SEO))
    return research["job_id"], seo["job_id"]


async def test_a_restarted_servers_sandbox_still_knows_running_jobs(
    make_settings: Callable[..., Settings],
) -> None:
    """The default wiring (no test state): real time, 6 s sandbox jobs, two lifetimes."""
    settings = make_settings()
    async with Client(build_server(settings)) as client:
        research_id, seo_id = await _start_both(client)

    kept = sandbox_path(settings.db_path)
    assert kept.name == settings.db_path.name + "-sandbox"
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    text = kept.read_text()
    assert SANDBOX_KEY not in text  # a key fingerprint, never the key
    assert "Ada Lovelace" in text
    assert "pizza oven" in text

    async with Client(build_server(settings)) as client:
        with anyio.fail_after(30):
            status = structured(
                await client.call_tool("get_job_status", {"job_ids": [research_id, seo_id]})
            )
    states = {job["job_id"]: job["state"] for job in status["jobs"]}
    assert set(states) == {research_id, seo_id}
    assert set(states.values()) <= {"queued", "running", "succeeded"}, status


async def test_jobs_of_an_earlier_lifetime_finish_in_the_next(
    make_settings: Callable[..., Settings],
) -> None:
    """The first lifetime runs at real speed (the 60 s jobs are surely still running when it
    ends), the second at 200x (they finish within its waits)."""
    settings = make_settings(JOBRELAY_MAX_WAIT_SECONDS="300")
    path = sandbox_path(settings.db_path)

    def lifetime(clock: ScaledClock, scale: float) -> Any:
        state = SandboxState(
            clock=clock,
            faults=Faults(time_scale=scale, job_seconds=60.0),
            jobs_file=JobFile(path),
        )
        return build_server(settings, clock=clock, sandbox_state=state)

    first = ScaledClock(1.0, epoch=TEST_EPOCH)
    async with Client(lifetime(first, 1.0)) as client:
        research_id, seo_id = await _start_both(client)
        status = structured(
            await client.call_tool("get_job_status", {"job_ids": [research_id, seo_id]})
        )
        assert {j["state"] for j in status["jobs"]} <= {"queued", "running"}

    # The next process: a fresh sandbox state, virtual time going on from where it was.
    second = ScaledClock(200.0, epoch=first.time())
    async with Client(lifetime(second, 200.0)) as client:
        for job_id in (research_id, seo_id):
            with anyio.fail_after(30):
                done = structured(
                    await client.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 300})
                )
            assert done["state"] == "succeeded", done
        with anyio.fail_after(10):
            page = structured(await client.call_tool("get_job_result", {"job_id": research_id}))
        assert page["total"] == 1
        assert "Ada" in json.dumps(page)


def test_an_unreadable_sandbox_file_is_set_aside_and_the_sandbox_starts_empty(
    tmp_path: Path,
) -> None:
    path = tmp_path / "jobs.db-sandbox"
    path.write_text("{not json")
    jobs = JobFile(path)
    state = SandboxState(jobs_file=jobs)
    from mcp_server.sandbox.app import create_sandbox_app

    create_sandbox_app(state)  # the apps register their sections and read the file
    assert (tmp_path / "jobs.db-sandbox.unreadable").read_text() == "{not json"
    state.jobs_changed()
    saved = json.loads(path.read_text())
    assert saved["version"] == 1
    assert saved["sections"]["agentseo"] == {"jobs": []}
    assert not (tmp_path / "jobs.db-sandbox.tmp").exists()  # replaced, not left behind


async def test_the_file_keeps_the_newest_jobs_up_to_the_cap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import httpx

    from mcp_server.sandbox import agentseo
    from mcp_server.sandbox.app import AGENTSEO_PREFIX, create_sandbox_app

    monkeypatch.setattr(agentseo, "MAX_KEPT_JOBS", 2)
    path = tmp_path / "jobs.db-sandbox"
    state = SandboxState(clock=ScaledClock(SCALE, epoch=TEST_EPOCH), jobs_file=JobFile(path))
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    ids = []
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as http:
        for n in range(3):
            created = await http.post(
                f"{AGENTSEO_PREFIX}/analyze/serp",
                json={"keyword": f"kw {n}", "location": "United States"},
                headers={"x-api-key": "k"},
            )
            assert created.status_code == 202, created.text
            ids.append(created.json()["jobId"])
    kept = [job["id"] for job in json.loads(path.read_text())["sections"]["agentseo"]["jobs"]]
    assert kept == ids[1:]
