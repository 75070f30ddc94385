"""The nine tools through the SDK's in-memory client, against the embedded sandbox (issue 4).

Every test runs the real server (`build_server`) with the sandbox on real loopback and a
virtual clock shared by both (`TEST_SCALE`, 100x: a 6 s job takes 60 ms). Exact wording of
the important texts is in `test_tools_golden.py`; failures are in `test_tools_errors.py`.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import pytest
from conftest import (
    CONTRACT_TOOLS,
    TEST_EPOCH,
    assert_agent_safe,
    call,
    loopback_sandbox,
    structured,
    text_of,
)
from mcp import Client, StdioServerParameters

from mcp_server import _bounds
from mcp_server._clock import ScaledClock
from mcp_server.sandbox import Faults, SandboxState

pytestmark = pytest.mark.anyio

TOOLS = set(CONTRACT_TOOLS)
POLL = "seamless GET /contacts/research/poll"
EVENTS = "agentseo GET /jobs/{job_id}/events"
ADA = {"name": "Ada Lovelace", "company": "Analytical Engines"}
GRACE = {"name": "Grace Hopper", "company": "Compilers Inc"}


def _tool_list_json(tools: list[Any]) -> str:
    return json.dumps([t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools])


async def _search_ids(client: Client, n: int, kind: str = "contacts") -> list[str]:
    found = await call(client, "search_prospects", {"kind": kind, "limit": n})
    return [item["search_result_id"] for item in structured(found)["items"]]


async def _research(client: Client, ids: list[str], **extra: Any) -> dict[str, Any]:
    started = await call(
        client, "start_research", {"kind": "contacts", "search_result_ids": ids, **extra}
    )
    assert not started.is_error, text_of(started)
    return structured(started)


# --------------------------------------------------------------------------------------------
# The tool list


async def test_the_nine_tools_are_listed_with_their_annotations(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == TOOLS

    def hint(value: bool | None, default: bool) -> bool:
        return default if value is None else value  # MCP's defaults for an omitted hint

    hints = {
        name: (
            hint(t.annotations.read_only_hint, False),
            # idempotentHint only means something for tools that are not read-only
            hint(t.annotations.idempotent_hint, False) or hint(t.annotations.read_only_hint, False),
            hint(t.annotations.open_world_hint, True),
        )
        for name, t in tools.items()
        if t.annotations is not None
    }
    assert hints == {
        "search_prospects": (True, True, True),
        "start_research": (False, False, True),
        "start_seo_job": (False, False, True),
        "get_job_status": (True, True, True),
        "wait_for_job": (True, True, True),
        "get_job_result": (True, True, False),
        "list_jobs": (True, True, False),
        "explain_error": (True, True, False),
        "get_usage": (True, True, False),
    }
    for name in ("start_research", "start_seo_job"):
        annotations = tools[name].annotations
        assert annotations is not None
        assert annotations.destructive_hint is False  # spends credits, deletes nothing


async def test_the_tool_list_stays_within_its_token_budget(client: Client) -> None:
    tools = (await client.list_tools()).tools
    tokens = _bounds.tokens(
        [t.model_dump(by_alias=True, mode="json", exclude_none=True) for t in tools]
    )
    assert tokens <= _bounds.TOOL_LIST_TOKENS, f"tools/list is ~{tokens} tokens"


async def test_every_argument_of_every_tool_is_described(client: Client) -> None:
    """Issue 13.5: no input property without a description, however obvious its name."""
    undescribed = [
        f"{tool.name}.{name}"
        for tool in (await client.list_tools()).tools
        for name, prop in tool.input_schema["properties"].items()
        if not str(prop.get("description") or "").strip()
    ]
    assert undescribed == []


async def test_input_schemas_are_compact_and_typed(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    whole = _tool_list_json(list(tools.values()))
    for noise in ('"null"', '"title": "Kind"', '"anyOf"'):
        assert noise not in whole, noise
    for tool in tools.values():  # $defs only for a shape repeated (search filters' terms)
        assert set(tool.input_schema.get("$defs", {})) <= {"s0"}, tool.name
    props = {name: t.input_schema["properties"] for name, t in tools.items()}
    assert props["search_prospects"]["kind"] == {
        "description": "What to find",
        "enum": ["contacts", "companies"],
    }
    assert props["search_prospects"]["limit"] == {
        "default": 10,
        "description": "Hits per page",
        "maximum": 50,
        "minimum": 1,
        "type": "integer",
    }
    assert props["start_seo_job"]["workflow"]["enum"] == [
        "serp_analysis",
        "keyword_metrics",
        "local_audit",
        "local_audit_batch",
    ]
    assert props["list_jobs"]["state"]["enum"] == [
        "queued",
        "running",
        "succeeded",
        "failed",
        "not_found",
        "duplicate",
        "unknown",
    ]
    contact = props["start_research"]["contacts"]["items"]
    assert set(contact["properties"]) == {
        "name",
        "company",
        "domain",
        "title",
        "email",
        "linkedin_url",
        "sales_nav_url",
        "recruiter_url",
    }
    assert props["get_job_status"]["job_ids"]["maxItems"] == 100
    assert tools["start_research"].input_schema["required"] == ["kind"]
    for tool in tools.values():
        description = tool.description or ""
        assert description.count(". ") >= 2, tool.name  # three sentences at least
        assert f"Example: {tool.name}(" in description, tool.name
        assert tool.output_schema is None, tool.name  # served by jobrelay://schemas/{tool}


# --------------------------------------------------------------------------------------------
# Happy paths


async def test_search_returns_search_result_ids_and_says_to_research_them(client: Client) -> None:
    result = await call(
        client, "search_prospects", {"kind": "contacts", "query": "CTO", "limit": 3}
    )
    assert not result.is_error
    data = structured(result)
    assert data["kind"] == "contacts"
    assert data["sandbox"] is True
    assert len(data["items"]) == 3
    assert all(set(i) >= {"search_result_id", "name", "company"} for i in data["items"])
    ids = [i["search_result_id"] for i in data["items"]]
    text = text_of(result)
    listed = ", ".join(f'"{i}"' for i in ids)
    assert f'Next: start_research(kind="contacts", search_result_ids=[{listed}], ' in text
    for n, item in enumerate(data["items"], 1):  # every hit on its own line, id included
        assert f"\n{n}. {item['name']} | " in text
        assert f"search_result_id {item['search_result_id']}" in text
    assert f'next_token="{data["next_token"]}"' in text
    assert_agent_safe(result)

    page2 = await call(
        client,
        "search_prospects",
        {"kind": "contacts", "query": "CTO", "limit": 3, "next_token": data["next_token"]},
    )
    assert not {i["search_result_id"] for i in structured(page2)["items"]} & set(ids)


async def test_companies_search_and_research_end_to_end(client: Client) -> None:
    ids = await _search_ids(client, 2, kind="companies")
    started = await call(
        client,
        "start_research",
        {
            "kind": "companies",
            "search_result_ids": ids,
            "companies": [{"domain": "acme.example"}],
            "wait_seconds": 30,
        },
    )
    data = structured(started)
    assert (data["state"], data["results_total"]) == ("succeeded", 3)
    assert all({"name", "domain"} <= set(r) for r in data["results"])


async def test_research_then_wait_then_result_pages_and_projects(
    client: Client, sandbox_state: SandboxState
) -> None:
    ids = await _search_ids(client, 3)
    started = await _research(client, ids, contacts=[ADA])
    job_id = started["job_id"]
    assert job_id.startswith("sea_")
    assert (started["state"], started["provider"]) == ("running", "seamless")
    assert len(started["items"]) == 4
    assert started["credits_remaining"] == 996
    assert started["next_check_after_seconds"] > 0

    waited = await call(client, "wait_for_job", {"job_id": job_id, "wait_seconds": 30})
    assert not waited.is_error
    data = structured(waited)
    assert (data["job_id"], data["state"], data["raw_status"]) == (job_id, "succeeded", "done")
    assert data["results_total"] == 4
    assert "next_check_after_seconds" not in data
    first = data["results"][0]
    assert set(first) <= {
        "request_id",
        "name",
        "title",
        "company",
        "domain",
        "email",
        "phone",
        "linkedin",
    }
    assert set(first["email"]) >= {"address", "confidence"}
    assert_agent_safe(waited)

    page = await call(client, "get_job_result", {"job_id": job_id, "offset": 1, "limit": 2})
    pdata = structured(page)
    assert (pdata["offset"], pdata["total"], pdata["next_offset"], len(pdata["items"])) == (
        1,
        4,
        3,
        2,
    )
    assert pdata["items"] == data["results"][1:3]
    assert f'get_job_result(job_id="{job_id}", offset=3, limit=2)' in text_of(page)
    assert_agent_safe(page)

    picked = await call(
        client, "get_job_result", {"job_id": job_id, "fields": ["email2", "fullName", "nope"]}
    )
    items = structured(picked)["items"]
    assert set(items[0]) == {"email2", "fullName", "request_id"}
    assert "email2" in structured(picked)["fields_available"]
    assert "Unknown fields: nope" in text_of(picked)
    assert_agent_safe(picked)
    # Ids and descriptors went in two POSTs (Seamless takes one kind per request); looking
    # at results never goes upstream again.
    assert sandbox_state.stats()["requests"]["seamless POST /contacts/research"] == 2


async def test_a_ten_contact_research_result_stays_small(client: Client) -> None:
    """DESIGN 2.6: the default projection keeps a 10-contact result far below 8k tokens."""
    ids = await _search_ids(client, 10)
    done = await call(
        client, "start_research", {"kind": "contacts", "search_result_ids": ids, "wait_seconds": 30}
    )
    data = structured(done)
    with anyio.fail_after(30):  # as an agent does: wait again until it is done
        while data["state"] == "running":
            done = await call(client, "wait_for_job", {"job_id": data["job_id"]})
            data = structured(done)
    assert (data["state"], data["results_total"], len(data["results"])) == ("succeeded", 10, 10)
    page = await call(client, "get_job_result", {"job_id": data["job_id"]})
    for result in (done, page):
        tokens = len(json.dumps(result.structured_content) + text_of(result)) / 4
        assert tokens < 2500, tokens


async def test_research_on_several_targets_is_one_job_with_one_request_id_each(
    client: Client, sandbox_state: SandboxState
) -> None:
    started = await _research(
        client, [], contacts=[ADA, GRACE, {"linkedin_url": "https://linkedin.com/in/x"}]
    )
    assert [i["target"] for i in started["items"]] == [
        "Ada Lovelace @ Analytical Engines",
        "Grace Hopper @ Compilers Inc",
        "https://linkedin.com/in/x",
    ]
    assert len({i["request_id"] for i in started["items"]}) == 3
    assert sandbox_state.stats()["paid_posts"] == 1


async def test_start_research_with_wait_seconds_is_the_one_call_common_case(
    client: Client,
) -> None:
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    ids = await _search_ids(client, 2)
    result = await call(
        client,
        "start_research",
        {"kind": "contacts", "search_result_ids": ids, "wait_seconds": 30},
        progress_callback=on_progress,
    )
    assert structured(result)["state"] == "succeeded"
    assert seen == [
        (0.0, 100.0, "0 of 2 targets finished"),
        (100.0, 100.0, "2 of 2 targets finished"),
    ]


async def test_seo_job_waits_with_progress_in_order_only_on_change_ending_at_100(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    # A phase every 3 s. At the suite's 100x they were 30 ms apart in real time, and a loaded
    # machine (a full run beside other work) once merged two of them into one notification
    # (3 seen); at 25x they are 120 ms apart, the job lasts 1.2 s of real time.
    sandbox_state.set_faults({"job_seconds": 30.0, "time_scale": 25.0})
    seen: list[tuple[float, float | None, str | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        seen.append((progress, total, message))

    async with make_client() as client:
        result = await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": "pizza oven"}, "wait_seconds": 45},
            progress_callback=on_progress,
        )
    data = structured(result)
    assert (data["state"], data["raw_status"], data["results_total"]) == (
        "succeeded",
        "completed",
        1,
    )
    assert data["results"][0]["keyword"] == "pizza oven"
    percents = [p for p, _, _ in seen]
    assert percents == sorted(set(percents)), seen  # strictly increasing: no repeats
    assert len(percents) >= 4, seen  # the stream's phases, not just start and end
    assert percents[0] == 0.0
    assert percents[-1] == 100.0
    assert {total for _, total, _ in seen} == {100.0}
    assert str(seen[0][2]).startswith("queued")
    assert str(seen[-1][2]).startswith("completed")
    assert_agent_safe(result)


async def test_seo_workflows_validate_params_and_finish(
    make_client: Callable[..., Any],
) -> None:
    cases = {
        "keyword_metrics": {"keywords": ["pizza", "pasta"]},
        "local_audit": {"business_name": "Joe's Pizza", "location": "Austin, TX"},
        "local_audit_batch": {
            "targets": [
                {"domain": "a.example", "location": "Austin, TX"},
                {"business_name": "B's", "location": "Austin, TX", "location_code": 2840},
            ]
        },
    }
    # Each start waits until its job ends: an hour of virtual time (36 real s, beyond `call`'s
    # fail_after) where 30 s (0.3 real s) ran out on a loaded machine with the job still going.
    async with make_client(JOBRELAY_MAX_WAIT_SECONDS="3600") as client:
        for workflow, params in cases.items():
            result = await call(
                client,
                "start_seo_job",
                {"workflow": workflow, "params": params, "wait_seconds": 3600},
            )
            data = structured(result)
            assert (data["state"], data["operation"]) == ("succeeded", f"seo:{workflow}"), data
            assert data["results_total"] == (2 if workflow == "local_audit_batch" else 1)


async def test_status_of_a_batch_is_one_poll_call_for_all_open_research_jobs(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"job_seconds": 600.0})
    async with make_client() as client:
        jobs = [(await _research(client, [], contacts=[c]))["job_id"] for c in (ADA, GRACE)]
        seo = structured(
            await call(
                client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
            )
        )
        first_request_id = await call(client, "get_job_status", {"job_ids": [jobs[0]]})
        raw_id = structured(first_request_id)["jobs"][0]["items"][0]["request_id"]
        before = sandbox_state.stats()["requests"].get(POLL, 0)
        status = await call(
            client, "get_job_status", {"job_ids": [jobs[1], raw_id, "nope", seo["job_id"]]}
        )
    assert sandbox_state.stats()["requests"][POLL] == before + 1
    data = structured(status)
    assert [j["job_id"] for j in data["jobs"]] == [jobs[1], jobs[0], "nope", seo["job_id"]]
    assert [j.get("state") for j in data["jobs"]] == ["running", "running", None, "queued"]
    assert data["jobs"][2]["error"]["code"] == "not_found"
    assert data["next_check_after_seconds"] > 0
    assert not status.is_error  # one unknown id among known ones is information
    assert text_of(status) == (
        "4 jobs: 1 queued, 2 running, 1 unknown id.\n"
        f"1. {jobs[1]}: research_contacts running, 0%\n"
        f"2. {jobs[0]}: research_contacts running, 0%\n"
        "3. 'nope': unknown id\n"
        f"4. {seo['job_id']}: seo:serp_analysis queued, 0%\n"
        f'Next: wait_for_job(job_id="{jobs[1]}") (next update expected '
        f"{text_of(status).rsplit('expected ', 1)[1]}"
    )
    assert re.search(r"expected \d\d:\d\d:\d\dZ \(in \d+ s\)\)\.$", text_of(status))


async def test_list_jobs_finds_paid_work_newest_first_and_filters(client: Client) -> None:
    research = (await _research(client, [], contacts=[ADA], wait_seconds=30))["job_id"]
    seo = structured(
        await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": "x"}, "wait_seconds": 30},
        )
    )["job_id"]
    listed = structured(await call(client, "list_jobs", {}))
    assert [j["job_id"] for j in listed["jobs"]] == [seo, research]
    assert [j["state"] for j in listed["jobs"]] == ["succeeded", "succeeded"]
    only = structured(await call(client, "list_jobs", {"provider": "seamless"}))
    assert [j["job_id"] for j in only["jobs"]] == [research]
    none = await call(client, "list_jobs", {"state": "running"})
    assert structured(none)["jobs"] == []
    assert_agent_safe(none)


async def test_explain_error_computes_the_wait_from_the_headers(
    client: Client, clock: ScaledClock
) -> None:
    reset = int(clock.time()) + 40
    result = await call(
        client,
        "explain_error",
        {"http_status": 429, "headers": {"X-RateLimit-Reset": str(reset)}},
    )
    assert not result.is_error
    advice = structured(result)["advice"]
    assert (advice["code"], advice["provider"], advice["retryable"]) == (
        "rate_limited",
        "seamless",
        True,
    )
    # The wait is what is left until the stated reset, whenever the advice is computed.
    retry_at = datetime.fromisoformat(advice["retry_at"]).timestamp()
    assert abs(retry_at - reset) <= 1, (retry_at, reset)
    assert 0 < advice["retry_after_seconds"] <= 41
    assert str(reset) not in text_of(result)
    assert_agent_safe(result)


async def test_get_usage_reports_buckets_and_credits_after_a_call(client: Client) -> None:
    await _research(client, [], contacts=[ADA])
    result = await call(client, "get_usage", {})
    data = structured(result)
    seamless, agentseo = data["providers"]
    assert (seamless["provider"], seamless["credits_remaining"], seamless["sandbox"]) == (
        "seamless",
        999,
        True,
    )
    assert {b["bucket"] for b in seamless["buckets"]} == {"POST /contacts/research"}
    assert agentseo["provider"] == "agentseo"
    assert data["credits_spent_today"] == 1
    assert text_of(result).startswith("Seamless: 999 research credits left")
    assert_agent_safe(result)


# --------------------------------------------------------------------------------------------
# Bounded waiting


@asynccontextmanager
async def _slow_client(make_settings: Callable[..., Any], **env: str) -> AsyncIterator[Any]:
    """A server and sandbox at 2x virtual time with 600 s jobs, for measuring wait lengths:
    the 2 virtual seconds of margin the tests allow are a whole real second of call overhead,
    which a loaded machine (load 5 on 2 cores) needs; at 10x it was 0.2 s and flaked there.
    A 3 s wait takes 1.5 s of real time."""
    from mcp_server.server import build_server

    slow = ScaledClock(2.0, epoch=TEST_EPOCH)
    state = SandboxState(clock=slow, faults=Faults(time_scale=2.0, job_seconds=600.0))
    server = build_server(make_settings(**env), clock=slow, sandbox_state=state)
    async with Client(server) as client:
        yield client, slow


async def test_a_wait_that_runs_out_hands_back_the_handle_state_and_when_to_look_again(
    make_settings: Callable[..., Any],
) -> None:
    async with _slow_client(make_settings) as (client, clock):
        job_id = (await _research(client, [], contacts=[ADA]))["job_id"]
        before = clock.monotonic()
        waited = await call(client, "wait_for_job", {"job_id": job_id, "wait_seconds": 3})
        took = clock.monotonic() - before
    assert 3 <= took < 3 + 2, took
    assert not waited.is_error
    data = structured(waited)
    assert (data["job_id"], data["state"]) == (job_id, "running")
    assert data["next_check_after_seconds"] == 5.0
    assert f'(in 5 s). Next: wait_for_job(job_id="{job_id}").' in text_of(waited)
    assert_agent_safe(waited)


async def test_no_wait_is_longer_than_jobrelay_max_wait_seconds(
    make_settings: Callable[..., Any],
) -> None:
    async with _slow_client(make_settings, JOBRELAY_MAX_WAIT_SECONDS="3") as (client, clock):
        listed = {t.name: t.input_schema for t in (await client.list_tools()).tools}
        for name in ("start_seo_job", "start_research", "wait_for_job"):
            assert listed[name]["properties"]["wait_seconds"]["maximum"] == 3, name
        refused = await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": "x"}, "wait_seconds": 300},
        )
        before = clock.monotonic()
        started = await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": "x"}, "wait_seconds": 3},
        )
        took_start = clock.monotonic() - before
        before = clock.monotonic()
        research = await call(
            client,
            "start_research",
            {"kind": "contacts", "contacts": [ADA], "wait_seconds": 3},
        )
        took_research = clock.monotonic() - before
        listed_jobs = structured(await call(client, "list_jobs", {}))["jobs"]
    # Above the cap is refused before anything starts: the schema's maximum is the server's.
    assert refused.is_error
    assert structured(refused)["error"]["code"] == "invalid_input"
    assert "wait_seconds" in text_of(refused)
    assert "less than or equal to 3" in text_of(refused)
    assert len(listed_jobs) == 2  # the refused start left no row
    assert 3 <= took_start < 3 + 2, took_start
    assert 3 <= took_research < 3 + 2, took_research  # the submit counts against the wait
    assert structured(started)["state"] == "queued"  # 3 s into a 600 s job
    assert structured(research)["state"] == "running"


async def test_concurrent_waits_on_research_jobs_share_one_poll_call_per_round(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"job_seconds": 12.0})
    async with make_client() as client:
        jobs = [
            (await _research(client, [], contacts=[{"name": f"Person {i}", "company": "Co"}]))[
                "job_id"
            ]
            for i in range(8)
        ]
        results: dict[str, Any] = {}

        async def wait(job_id: str) -> None:
            results[job_id] = await call(client, "wait_for_job", {"job_id": job_id})

        async with anyio.create_task_group() as tg:
            for job_id in jobs:
                tg.start_soon(wait, job_id)
    assert {structured(r)["state"] for r in results.values()} == {"succeeded"}
    polls = sandbox_state.stats()["requests"][POLL]
    # 12 s at the 2 s -> 5 s cadence is 4-5 rounds; eight separate pollers would make 30+.
    assert polls <= 6, polls


def _count_writes_and_renders(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Ledger updates, "results read" flags and job renderings per job id, counted at the
    class level."""
    from mcp_server.jobs.render import Renderer
    from mcp_server.ledger import JobRecord, SqliteLedger

    counts: Counter[str] = Counter()
    update, flag, job_output = SqliteLedger.update, SqliteLedger.flag, Renderer.job_output

    async def counted_update(self: SqliteLedger, job_id: str, **kwargs: Any) -> JobRecord:
        marks_read = (kwargs.get("snapshot") or {}).get("result_read")
        counts[f"{'read by rewrite' if marks_read else 'update'} {job_id}"] += 1
        return await update(self, job_id, **kwargs)

    async def counted_flag(self: SqliteLedger, job_id: str, key: str) -> None:
        counts[f"{'read' if key == 'result_read' else 'flag'} {job_id}"] += 1
        await flag(self, job_id, key)

    def counted_output(self: Renderer, rec: JobRecord, **kwargs: Any) -> Any:
        # Renders that project results (a status check renders state only, never results).
        counts[f"render {rec.job_id}"] += 1 if kwargs.get("with_results", True) else 0
        return job_output(self, rec, **kwargs)

    monkeypatch.setattr(SqliteLedger, "update", counted_update)
    monkeypatch.setattr(SqliteLedger, "flag", counted_flag)
    monkeypatch.setattr(Renderer, "job_output", counted_output)
    return counts


async def test_several_waits_on_one_research_job_fold_and_render_it_once(
    make_client: Callable[..., Any], sandbox_state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each waiter used to fold every poll round into its own copy of the job (a ledger write
    # and a decoded row each) and render the result itself: memory grew with waiters x size.
    sandbox_state.set_faults({"job_seconds": 12.0})
    counts = _count_writes_and_renders(monkeypatch)
    async with make_client() as client:
        job_id = (await _research(client, [], contacts=[ADA]))["job_id"]
        results: list[Any] = []

        async def wait() -> None:
            results.append(await call(client, "wait_for_job", {"job_id": job_id}))

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait)
        status = [await call(client, "get_job_status", {"job_ids": [job_id]}) for _ in range(3)]
    assert [structured(r)["state"] for r in results] == ["succeeded"] * 5
    assert all(structured(r) == structured(results[0]) for r in results)
    assert all(text_of(r) == text_of(results[0]) for r in results)
    # Status is status: the count of results, never the results themselves.
    assert [structured(r)["jobs"][0].get("results") for r in status] == [None] * 3
    assert [structured(r)["jobs"][0]["results_total"] for r in status] == [1] * 3
    # One target: one change (researching -> done), written once; rendered once when
    # started and once for the five waiters together; "results read" noted once, as a flag:
    # not an update, which decodes and encodes the whole row again (~450 KB for 100 targets).
    assert counts[f"update {job_id}"] == 1
    assert counts[f"read {job_id}"] == 1
    assert counts[f"read by rewrite {job_id}"] == 0
    assert counts[f"render {job_id}"] == 2


async def test_several_waits_on_one_seo_job_share_one_stream_and_one_final_write(
    make_client: Callable[..., Any], sandbox_state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 10 s of job (all five attach first) inside a 45 s wait: 0.35 s of real margin at the
    # test scale, so a loaded machine still sees the end (30 s of job in a 30 s wait did not).
    sandbox_state.set_faults({"job_seconds": 10.0})
    counts = _count_writes_and_renders(monkeypatch)
    async with make_client() as client:
        job_id = structured(
            await call(
                client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
            )
        )["job_id"]
        results: list[Any] = []

        async def wait() -> None:
            results.append(
                await call(client, "wait_for_job", {"job_id": job_id, "wait_seconds": 45})
            )

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(wait)
    assert [structured(r)["state"] for r in results] == ["succeeded"] * 5
    assert all(structured(r) == structured(results[0]) for r in results)
    assert sandbox_state.stats()["requests"][EVENTS] == 1
    assert counts[f"update {job_id}"] == 1  # the final envelopes, stored once for five waiters
    assert counts[f"render {job_id}"] == 2  # started; then finished, once for all five


class _CancelOnFirstRead(Counter[str]):
    """The sandbox's request counter, cancelling `scope` when a GET is counted."""

    scope: anyio.CancelScope | None = None

    def __setitem__(self, key: str, value: int) -> None:
        super().__setitem__(key, value)
        if self.scope is not None and " GET " in key:
            self.scope.cancel()


async def test_cancelling_a_wait_never_cancels_the_paid_job(
    client: Client, sandbox_state: SandboxState
) -> None:
    research = (await _research(client, [], contacts=[ADA]))["job_id"]
    seo = structured(
        await call(
            client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
        )
    )["job_id"]
    # The agent gives up once the wait is under way: on the first read the sandbox sees
    # (a poll or a stream), however loaded the machine, never after a fixed real delay.
    reads = _CancelOnFirstRead(sandbox_state.requests)
    sandbox_state.requests = reads
    for job_id in (research, seo):
        with anyio.fail_after(30), anyio.CancelScope() as scope:
            reads.scope = scope
            await client.call_tool("wait_for_job", {"job_id": job_id})
        reads.scope = None
        assert scope.cancelled_caught
    for job_id in (research, seo):
        after = await call(client, "wait_for_job", {"job_id": job_id})
        assert structured(after)["state"] == "succeeded", text_of(after)
        result = await call(client, "get_job_result", {"job_id": job_id})
        assert structured(result)["total"] == 1
    requests = sandbox_state.stats()["requests"]
    assert not [k for k in requests if " DELETE " in k or "cancel" in k.lower()]
    assert requests["seamless POST /contacts/research"] == 1
    assert requests["agentseo POST /analyze/serp"] == 1


async def test_cancelling_start_research_mid_submit_still_records_the_paid_job(
    client: Client, sandbox_state: SandboxState, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The agent gives up at the worst moment: while the sandbox is handling the paid POST (the
    # cancel is issued from inside the sandbox's handler, so it can never land before the POST
    # arrived, however loaded the machine). The job must still be recorded, exactly once.
    record = sandbox_state.record_paid_post
    with anyio.CancelScope() as scope:

        def record_then_cancel(*args: Any, **kwargs: Any) -> None:
            record(*args, **kwargs)
            scope.cancel()

        monkeypatch.setattr(sandbox_state, "record_paid_post", record_then_cancel)
        with anyio.fail_after(30):
            await client.call_tool("start_research", {"kind": "contacts", "contacts": [ADA]})
    # Issued mid-POST. Whether the call then raises depends on where the next checkpoint
    # falls (in-process, the handler runs in this task); what matters is what was recorded.
    assert scope.cancel_called
    monkeypatch.setattr(sandbox_state, "record_paid_post", record)
    listed = structured(await call(client, "list_jobs", {}))["jobs"]
    assert [(j["state"], j["raw_status"], j["targets"]) for j in listed] == [
        ("running", "researching", 1)
    ]
    assert sandbox_state.stats()["paid_posts"] == 1
    assert sandbox_state.stats()["duplicate_paid_posts"] == 0


# --------------------------------------------------------------------------------------------
# A real MCP client over stdio


@pytest.mark.slow
async def test_search_research_wait_result_over_a_real_stdio_subprocess(tmp_path: Path) -> None:
    # The subprocess runs on real time; the sandbox's jobs take 10 ms of it, so the wait's
    # first poll already sees them done (the Seamless cadence would add 2 s otherwise). Most
    # of this test's few seconds is the subprocess importing the MCP SDK.
    scale = 100.0
    state = SandboxState(
        clock=ScaledClock(scale, epoch=TEST_EPOCH), faults=Faults(time_scale=scale, job_seconds=1.0)
    )
    from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX

    key = "stdio-test-key-7f3a9c"
    async with loopback_sandbox(state) as root:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
            "SEAMLESS_API_KEY": key,
            "AGENTSEO_API_KEY": key,
            "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
            "AGENTSEO_BASE_URL": root + AGENTSEO_PREFIX,
        }
        params = StdioServerParameters(
            command=sys.executable, args=["-m", "mcp_server", "serve"], env=env, cwd=Path.cwd()
        )
        with anyio.fail_after(15):
            async with Client(params) as client:
                ids = await _search_ids(client, 2)
                job_id = (await _research(client, ids))["job_id"]
                listed = await client.call_tool("list_jobs", {})  # lets the job finish
                waited = await client.call_tool("wait_for_job", {"job_id": job_id})
                page = await client.call_tool("get_job_result", {"job_id": job_id})
    assert [j["job_id"] for j in structured(listed)["jobs"]] == [job_id]
    assert structured(waited)["state"] == "succeeded", text_of(waited)
    assert structured(page)["total"] == 2
    for result in (waited, page):
        assert_agent_safe(result, secrets=[key])
    assert re.search(r"results 1-2 of 2", text_of(page))


async def test_usage_says_not_to_start_research_when_the_org_has_no_credits(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(
        SEAMLESS_API_KEY="sandbox-insufficient-credits", JOBRELAY_SANDBOX="1"
    ) as client:
        await call(client, "search_prospects", {"kind": "contacts", "query": "CTO", "limit": 1})
        result = await call(client, "get_usage", {})
    text = text_of(result)
    assert "Seamless: 0 research credits left" in text
    assert text.endswith(
        "Next: tell the user research needs more Seamless credits; "
        "search_prospects, get_job_status and get_job_result stay free."
    )
    assert "start jobs as needed" not in text
