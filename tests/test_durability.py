"""The job ledger end to end through the real server (issue 5), with in-process restarts.

Each test runs the sandbox as an *external* upstream on real loopback (uvicorn in the test's
task group, one `SandboxState` shared across restarts, so upstream jobs outlive the server)
and builds the jobrelay server with `build_server` more than once on the same `JOBRELAY_DB`,
the way a host restarts `jobrelay serve`. Process crashes (SIGKILL) are in `test_crash.py`.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
import uvicorn
from conftest import TEST_EPOCH, structured, text_of
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings, key_fingerprint, load_settings
from mcp_server.ledger import JobRecord, SqliteLedger
from mcp_server.providers.seamless.targets import target_keys
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import (
    AGENTSEO_PREFIX,
    SEAMLESS_PREFIX,
    create_sandbox_app,
    sandbox_uvicorn_config,
)
from mcp_server.server import build_server

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

SCALE = 200.0
"""Virtual seconds per real second: a 6 s research job takes 30 ms."""
KEY = "durability-test-key"
TENANT = key_fingerprint(KEY)
ADA = {"name": "Ada Lovelace", "company": "Analytical Engines"}
GRACE = {"name": "Grace Hopper", "company": "Compilers Inc"}
TURING = {"name": "Alan Turing", "company": "Bletchley Park"}
CLARKE = {"name": "Joan Clarke", "company": "Bletchley Park"}
PAID_ROUTE = "seamless POST /contacts/research"


class _Uvicorn(uvicorn.Server):
    """uvicorn with an event for "listening", so the fixture waits on it instead of polling."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = anyio.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        self.ready.set()


@dataclass
class Upstream:
    """The sandbox as an external API, plus how to build jobrelay servers pointed at it."""

    state: SandboxState
    clock: ScaledClock
    root: str
    db: Path

    def settings(self, **env: str) -> Settings:
        base = {
            "JOBRELAY_DB": str(self.db),
            "SEAMLESS_API_KEY": KEY,
            "AGENTSEO_API_KEY": KEY,
            "SEAMLESS_BASE_URL": self.root + SEAMLESS_PREFIX,
            "AGENTSEO_BASE_URL": self.root + AGENTSEO_PREFIX,
        }
        return load_settings(base | env)

    @asynccontextmanager
    async def serve(self, **env: str) -> AsyncIterator[Client]:
        """One lifetime of the jobrelay server: start, hand out a client, shut down."""
        server = build_server(self.settings(**env), clock=self.clock)
        async with Client(server) as client:
            yield client

    def research_posts(self) -> int:
        return self.state.requests.get(PAID_ROUTE, 0)


@asynccontextmanager
async def _upstream(tmp_path: Path, faults: Faults, clock: ScaledClock) -> AsyncIterator[Upstream]:
    state = SandboxState(faults=faults, clock=clock)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = _Uvicorn(sandbox_uvicorn_config(create_sandbox_app(state), port=port))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(5):
                await server.ready.wait()
            try:
                yield Upstream(state, clock, f"http://127.0.0.1:{port}", tmp_path / "jobs.sqlite3")
            finally:
                server.should_exit = True


@pytest.fixture
async def upstream(tmp_path: Path) -> AsyncIterator[Upstream]:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    async with _upstream(tmp_path, Faults(time_scale=SCALE, job_seconds=6.0), clock) as up:
        yield up


@pytest.fixture
def make_upstream(tmp_path: Path) -> Callable[..., Any]:
    """An upstream with other faults (e.g. few credits) or another time scale."""

    def make(scale: float = SCALE, clock: ScaledClock | None = None, **faults: Any) -> Any:
        clock = clock or ScaledClock(scale, epoch=TEST_EPOCH)
        return _upstream(tmp_path, Faults(time_scale=scale, **faults), clock)

    return make


async def _call_research(client: Client, kind: str, **arguments: Any) -> Any:
    with anyio.fail_after(10):
        return await client.call_tool("start_research", {"kind": kind, **arguments})


async def _research(client: Client, *contacts: Mapping[str, str], **extra: Any) -> Any:
    return await _call_research(client, "contacts", contacts=list(contacts), **extra)


async def _listed(client: Client, **args: Any) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        result = await client.call_tool("list_jobs", args)
    assert not result.is_error, text_of(result)
    jobs: list[dict[str, Any]] = structured(result)["jobs"]
    return jobs


# --------------------------------------------------------------------------------------------
# Restarts: started in one server lifetime, found and finished in the next


async def test_research_started_before_a_restart_is_listed_and_finished_after_it(
    upstream: Upstream,
) -> None:
    async with upstream.serve() as first:
        started = await _research(first, ADA)
    assert not started.is_error, text_of(started)
    job_id = structured(started)["job_id"]
    request_id = structured(started)["items"][0]["request_id"]
    assert structured(started)["state"] == "running"
    assert not structured(started).get("warnings")  # 999 credits left: no low-credit warning

    async with upstream.serve() as second:
        listed = await _listed(second)
        assert [(j["job_id"], j["state"]) for j in listed] == [(job_id, "running")]
        assert f'wait_for_job(job_id="{job_id}")' in listed[0]["advice"]
        with anyio.fail_after(10):
            resource = await second.read_resource(f"jobrelay://jobs/{job_id}")
        described = json.loads(getattr(resource.contents[0], "text", ""))
        assert (described["job_id"], described["state"]) == (job_id, "running")

        with anyio.fail_after(10):
            waited = await second.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 30})
        assert not waited.is_error, text_of(waited)
        assert structured(waited)["state"] == "succeeded"
        assert structured(waited)["results_total"] == 1
        assert f"Research job {job_id} finished" in text_of(waited), text_of(waited)

        # The raw upstream id resolves to the same job after the restart, from the ledger.
        with anyio.fail_after(10):
            by_raw_id = await second.call_tool("get_job_status", {"job_ids": [request_id]})
        assert [(j["job_id"], j["state"]) for j in structured(by_raw_id)["jobs"]] == [
            (job_id, "succeeded")
        ]

    async with upstream.serve() as third:  # a finished job stays finished, with its result
        with anyio.fail_after(10):
            page = await third.call_tool("get_job_result", {"job_id": job_id})
        assert not page.is_error, text_of(page)
        assert structured(page)["total"] == 1
        assert structured(page)["items"][0]["request_id"] == request_id
    assert upstream.research_posts() == 1
    assert upstream.state.stats()["paid_posts"] == 1
    assert upstream.state.stats()["duplicate_paid_posts"] == 0


async def test_seo_job_started_before_a_restart_is_followed_to_the_end_after_it(
    upstream: Upstream,
) -> None:
    async with upstream.serve() as first:
        with anyio.fail_after(10):
            started = await first.call_tool(
                "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "durable"}}
            )
    assert not started.is_error, text_of(started)
    job_id = structured(started)["job_id"]
    assert job_id.startswith("seo_")
    assert structured(started)["state"] in {"queued", "running"}

    async with upstream.serve() as second:
        assert [(j["job_id"], j["provider"]) for j in await _listed(second)] == [
            (job_id, "agentseo")
        ]
        with anyio.fail_after(10):
            waited = await second.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 30})
    assert not waited.is_error, text_of(waited)
    assert structured(waited)["state"] == "succeeded"
    assert upstream.state.stats()["paid_posts"] == 1


async def _interrupted_intent(
    up: Upstream, *targets: Mapping[str, str], kind: Literal["contacts", "companies"] = "contacts"
) -> JobRecord:
    """What a process killed between the ledger write and the POST's answer leaves behind:
    the intent row and nothing else (test_crash.py makes this happen with SIGKILL)."""
    keys = (
        target_keys("contacts", contacts=targets)
        if kind == "contacts"
        else target_keys("companies", companies=targets)
    )
    async with SqliteLedger.open(up.db, clock=up.clock) as ledger:
        return await ledger.record_intent(
            JobRecord.new(
                provider="seamless",
                operation=f"research_{kind}",
                tenant=TENANT,
                sandbox=False,
                params={"kind": kind, "targets": [dict(t) for t in targets]},
                targets=keys,
                credits_requested=len(targets),
            )
        )


async def test_a_submit_cut_off_before_the_api_answered_is_listed_unknown_with_advice(
    upstream: Upstream,
) -> None:
    job_id = (await _interrupted_intent(upstream, ADA)).job_id

    async with upstream.serve() as client:
        listed = await _listed(client)
        with anyio.fail_after(10):
            waited = await client.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 5})
            resource = await client.read_resource(f"jobrelay://jobs/{job_id}")

    assert [(j["job_id"], j["state"], j["raw_status"]) for j in listed] == [
        (job_id, "unknown", "submitting")
    ]
    assert "Do not resubmit blindly" in listed[0]["advice"]
    assert not waited.is_error
    data = structured(waited)
    assert (data["job_id"], data["state"], data["advice"]["code"]) == (
        job_id,
        "unknown",
        "outcome_unknown",
    )
    assert "next_check_after_seconds" not in data  # waiting again cannot change it
    text = text_of(waited)
    assert job_id in text
    assert "may or may not have been accepted" in text
    assert "Do not resubmit" in text
    described = json.loads(getattr(resource.contents[0], "text", ""))
    assert (described["state"], described["advice"]["code"]) == ("unknown", "outcome_unknown")
    assert upstream.research_posts() == 0  # looking never sends anything


async def test_status_and_list_of_an_interrupted_submit_point_to_the_advice_not_to_waiting(
    upstream: Upstream,
) -> None:
    """No upstream id exists for a row left `submitting`, so waiting can never change it; the
    text (often all a host forwards) must carry the advice instead of "wait_for_job"."""
    job_id = (await _interrupted_intent(upstream, ADA)).job_id
    async with upstream.serve() as client:
        with anyio.fail_after(10):
            status = await client.call_tool("get_job_status", {"job_ids": [job_id]})
            listed = await client.call_tool("list_jobs", {})
    assert not status.is_error
    job = structured(status)["jobs"][0]
    assert (job["state"], job["advice"]["code"]) == ("unknown", "outcome_unknown")
    assert "next_check_after_seconds" not in structured(status)
    assert "wait_for_job" not in text_of(status), text_of(status)
    assert "dashboard before starting it again" in text_of(status), text_of(status)
    assert "wait_for_job" not in text_of(listed), text_of(listed)


async def test_one_resubmit_of_an_interrupted_contact_research_goes_out_deduplicated(
    upstream: Upstream,
) -> None:
    """DESIGN 2.1 and the outcome_unknown advice: Seamless deduplicates contact research, so
    one careful resubmit is safe. It must be possible without allow_rerun (which turns the
    deduplication off), must name the interrupted job, and a second one is refused."""
    interrupted = (await _interrupted_intent(upstream, ADA)).job_id
    async with upstream.serve() as client:
        again = await _research(client, ADA)
        twice = await _research(client, ADA)

    assert not again.is_error, text_of(again)
    data = structured(again)
    assert data.get("job_id") not in (None, interrupted), data
    assert any(interrupted in w for w in data.get("warnings", [])), data
    sent = [json.loads(key.split(" ", 2)[2]) for key in upstream.state.post_bodies]
    assert sent == [
        {
            # deduplication left on: skipDeduplicationCheck (default false) is not sent
            "contacts": [{"contactName": ADA["name"], "companyName": ADA["company"]}],
        }
    ]
    assert "job_id" not in structured(twice)
    assert data["job_id"] in text_of(twice)
    assert upstream.research_posts() == 1


async def test_an_interrupted_company_research_is_not_advised_as_safe_to_resubmit(
    upstream: Upstream,
) -> None:
    """Seamless deduplicates contact research only (UPSTREAMS.md: `duplicate` is for
    contacts), so the advice for an interrupted *company* research must not promise a free
    resubmit, and a resubmit is refused, naming the interrupted job."""
    acme = {"name": "Acme", "domain": "acme.example"}
    interrupted = (await _interrupted_intent(upstream, acme, kind="companies")).job_id
    async with upstream.serve() as client:
        with anyio.fail_after(10):
            waited = await client.call_tool(
                "wait_for_job", {"job_id": interrupted, "wait_seconds": 5}
            )
        again = await _call_research(client, "companies", companies=[acme])

    advice = structured(waited)["advice"]
    assert advice["code"] == "outcome_unknown"
    promise = "deduplicates"
    assert promise not in advice["what_happened"], advice
    assert promise not in text_of(waited), text_of(waited)
    assert "job_id" not in structured(again)
    assert interrupted in text_of(again)
    assert upstream.state.requests.get("seamless POST /companies/research", 0) == 0


# --------------------------------------------------------------------------------------------
# Guardrails, also across restarts (they read the ledger, not process memory)


async def test_research_over_the_daily_budget_is_refused_saying_what_was_spent_and_when_it_resets(
    make_upstream: Callable[..., Any],
) -> None:
    # Scale 1 on a clock 1 h 50 min before a UTC midnight: the ledger and the advice share it,
    # so the reset wording is fixed whatever the real time of day.
    clock = ScaledClock(1.0, epoch=datetime(2026, 9, 21, 22, 10, tzinfo=UTC).timestamp())
    async with make_upstream(clock=clock, scale=1.0, job_seconds=600.0) as up:
        async with up.serve(JOBRELAY_CREDIT_BUDGET="3") as first:
            spent = await _research(first, ADA, GRACE)
        assert not spent.is_error, text_of(spent)

        async with up.serve(JOBRELAY_CREDIT_BUDGET="3") as second:
            refused = await _research(second, TURING, CLARKE)
            listed = await _listed(second)

    assert refused.is_error
    error = structured(refused)["error"]
    assert error["code"] == "budget_exceeded"
    assert error["retry_at"] == "2026-09-22T00:00:00Z"
    text = text_of(refused)
    assert "2 of 3 credits are spent today, and this needs 2; nothing was sent." in text, text
    assert "The budget resets at 00:00:00Z (in 1 h 50 min)." in text, text
    assert "JOBRELAY_CREDIT_BUDGET" in text
    assert len(listed) == 1  # the refused research left no row behind
    assert up.research_posts() == 1


async def test_concurrent_starts_on_two_servers_sharing_a_ledger_never_overshoot_the_budget(
    make_upstream: Callable[..., Any],
) -> None:
    people = [{"name": f"Person {i}", "company": "Concurrency Ltd"} for i in range(8)]
    results: list[Any] = []

    async def start(client: Client, person: Mapping[str, str]) -> None:
        results.append(await _research(client, person))

    async with (
        make_upstream(scale=1.0, job_seconds=600.0) as up,
        up.serve(JOBRELAY_CREDIT_BUDGET="5") as one,
        up.serve(JOBRELAY_CREDIT_BUDGET="5") as two,
    ):
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for i, person in enumerate(people):
                    tg.start_soon(start, one if i % 2 else two, person)
        seen_by_one = {j["job_id"] for j in await _listed(one)}
        seen_by_two = {j["job_id"] for j in await _listed(two)}

    accepted = [structured(r)["job_id"] for r in results if not r.is_error]
    refused = [structured(r)["error"]["code"] for r in results if r.is_error]
    assert len(accepted) == 5
    assert refused == ["budget_exceeded"] * 3
    assert seen_by_one == seen_by_two == set(accepted)  # each server lists the other's jobs
    assert up.research_posts() == 5
    assert up.state.stats()["duplicate_paid_posts"] == 0


async def test_researching_a_target_again_after_a_restart_names_the_earlier_job_and_sends_nothing(
    upstream: Upstream,
) -> None:
    async with upstream.serve() as first:
        earlier = structured(await _research(first, ADA))["job_id"]

    async with upstream.serve() as second:
        again = await _research(second, {"name": "ada  LOVELACE", "company": "Analytical Engines"})
        listed = await _listed(second)

    assert not again.is_error  # information, not a tool failure
    data = structured(again)
    assert "job_id" not in data
    assert data["advice"]["title"] == "Already researched"
    assert earlier in data["advice"]["what_happened"]
    assert "ada lovelace|analytical engines" in data["advice"]["what_happened"]
    assert "Nothing was spent" in data["advice"]["what_happened"]
    text = text_of(again)
    assert f'get_job_result(job_id="{earlier}")' in text, text
    assert "allow_rerun=true" in text, text
    assert [j["job_id"] for j in listed] == [earlier]
    assert upstream.research_posts() == 1


async def test_allow_rerun_researches_again_and_still_warns(upstream: Upstream) -> None:
    async with upstream.serve() as first:
        earlier = structured(await _research(first, ADA))["job_id"]
    async with upstream.serve() as second:
        rerun = await _research(second, ADA, allow_rerun=True)
        listed = await _listed(second)

    assert not rerun.is_error, text_of(rerun)
    data = structured(rerun)
    assert data["job_id"] != earlier
    assert data["state"] == "running"
    [warning] = data["warnings"]
    assert warning.startswith("Re-researching 1 target(s) already researched in the last 30 days")
    assert warning.endswith("(allow_rerun=true): fresh research spends credits.")
    assert warning in text_of(rerun)
    assert {j["job_id"] for j in listed} == {earlier, data["job_id"]}
    assert upstream.research_posts() == 2
    assert upstream.state.stats()["paid_posts"] == 2


async def test_the_rerun_warning_with_allow_rerun_names_the_earlier_job(
    upstream: Upstream,
) -> None:
    """Issue 5: the warning names the earlier job, so an agent that passed allow_rerun=true
    by habit can still find the results it already paid for."""
    async with upstream.serve() as client:
        earlier = structured(await _research(client, ADA))["job_id"]
        rerun = await _research(client, ADA, allow_rerun=True)
    assert not rerun.is_error, text_of(rerun)
    assert any(earlier in w for w in structured(rerun).get("warnings", [])), structured(rerun)


async def test_low_credits_reported_by_the_api_are_warned_about_in_the_result(
    make_upstream: Callable[..., Any],
) -> None:
    async with make_upstream(job_seconds=6.0, initial_credits=20) as up, up.serve() as client:
        started = await _research(client, ADA)
    assert not started.is_error, text_of(started)
    data = structured(started)
    warning = (
        "Only 19 Seamless research credits left for the organisation; each researched target "
        "uses one."
    )
    assert data["credits_remaining"] == 19
    assert data["warnings"] == [warning]
    assert warning in text_of(started)


async def test_the_ledger_keeps_time_by_the_servers_clock(
    make_upstream: Callable[..., Any],
) -> None:
    """Budget days, the 30-day rerun window and `created_at` must all come from one clock:
    the server's. With the ledger on the system clock and the server on a virtual one (tests,
    `jobrelay demo`), the rerun check looks in the wrong window and sends a target twice."""
    epoch = datetime(2030, 1, 1, 6, 0, tzinfo=UTC).timestamp()
    clock = ScaledClock(SCALE, epoch=epoch)
    async with make_upstream(clock=clock) as up:
        async with up.serve() as first:
            await _research(first, ADA)
        async with up.serve() as second:
            again = await _research(second, ADA)
            listed = await _listed(second)
    assert [j["created_at"][:10] for j in listed] == ["2030-01-01"]
    assert "job_id" not in structured(again), text_of(again)
    assert up.research_posts() == 1
