"""Every answer fits an agent's context (issue 13 items 1-2, issue 20 item 5), measured with the
project's one estimator (`_bounds.tokens`) on results received through the real SDK client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import (
    TEST_EPOCH,
    TEST_SCALE,
    answer_tokens,
    assert_agent_safe,
    call,
    structured,
    text_of,
)
from mcp import Client

from mcp_server import _bounds as B
from mcp_server._clock import ScaledClock
from mcp_server.config import load_settings
from mcp_server.resources import fields_markdown
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.server import build_server

pytestmark = pytest.mark.anyio

UNTIL_DONE = 3_600.0
"""`wait_seconds` of a wait that must end with its job: an hour of virtual time (36 real s at
TEST_SCALE, beyond `call`'s fail_after), where 30-45 s (0.3-0.45 real s) ran out on a loaded
machine with the job still going. The `client` below allows waits that long."""


@pytest.fixture
async def client(make_client: Callable[..., Any]) -> AsyncIterator[Client]:
    """conftest's `client`, allowed to wait UNTIL_DONE."""
    async with make_client(JOBRELAY_MAX_WAIT_SECONDS=str(int(UNTIL_DONE))) as c:
        yield c


async def _research(client: Client, n: int, *, tag: str, wait: float = 0) -> dict[str, Any]:
    contacts = [{"name": f"Person {tag}{i}", "company": f"Company {tag}"} for i in range(n)]
    args = {"kind": "contacts", "contacts": contacts, "wait_seconds": wait}
    result = await call(client, "start_research", args)
    assert not result.is_error, text_of(result)
    return structured(result)


async def test_status_of_100_finished_jobs_is_status_only_and_under_8k(client: Client) -> None:
    jobs = [(await _research(client, 1, tag=f"s{i}-"))["job_id"] for i in range(100)]
    await call(client, "wait_for_job", {"job_id": jobs[-1], "wait_seconds": UNTIL_DONE})
    status = await call(client, "get_job_status", {"job_ids": jobs})
    data = structured(status)
    assert [j["job_id"] for j in data["jobs"]] == jobs
    assert {j["state"] for j in data["jobs"]} == {"succeeded"}
    assert all("results" not in j for j in data["jobs"])  # status is status
    assert all(j["results_total"] == 1 for j in data["jobs"])
    assert answer_tokens(status) <= B.DEFAULT_ANSWER_TOKENS, answer_tokens(status)
    assert text_of(status).startswith("100 jobs: 100 succeeded.")
    assert text_of(status).count("Next:") == 1
    # The same id 100 times is answered once.
    same = await call(client, "get_job_status", {"job_ids": [jobs[0]] * 100})
    assert [j["job_id"] for j in structured(same)["jobs"]] == [jobs[0]]
    assert answer_tokens(same) <= 1_000, answer_tokens(same)
    assert_agent_safe(same)


async def _one_each(client: Client, emails: list[str]) -> list[str]:
    jobs = []
    for email in emails:
        args = {"kind": "contacts", "contacts": [{"email": email}], "wait_seconds": 0}
        result = await call(client, "start_research", args)
        assert not result.is_error, text_of(result)
        jobs.append(structured(result)["job_id"])
    await call(client, "wait_for_job", {"job_id": jobs[-1], "wait_seconds": UNTIL_DONE})
    return jobs


def _assert_status_bounded(status: Any, jobs: list[str]) -> None:
    """Both blocks within the default bound, each job once, each next step said once."""
    data = structured(status)
    assert [j["job_id"] for j in data["jobs"]] == jobs
    assert B.tokens(text_of(status)) <= B.DEFAULT_ANSWER_TOKENS, B.tokens(text_of(status))
    assert B.tokens(data) <= B.DEFAULT_ANSWER_TOKENS, B.tokens(data)
    assert answer_tokens(status) <= B.DEFAULT_ANSWER_TOKENS, answer_tokens(status)
    steps = data.get("next_steps") or []
    assert len(steps) == len(set(steps))
    assert all("next_step" not in j for j in data["jobs"])
    for job in data["jobs"]:  # nothing lost: every advised job still points at its step
        if job["state"] in ("failed", "not_found"):
            assert steps[job["next_step_ref"]]
    assert_agent_safe(status)


async def test_status_of_100_failed_jobs_says_their_common_advice_once(client: Client) -> None:
    jobs = await _one_each(client, [f"error{i}@acme.test" for i in range(100)])
    status = await call(client, "get_job_status", {"job_ids": jobs})
    _assert_status_bounded(status, jobs)
    data = structured(status)
    assert {j["state"] for j in data["jobs"]} == {"failed"}
    assert len(data["next_steps"]) == 1
    assert text_of(status).startswith("100 jobs: 100 failed.")
    assert text_of(status).endswith(f"All 100 ended alike. Next: {data['next_steps'][0]}")


async def test_status_of_100_jobs_in_mixed_states_is_bounded(client: Client) -> None:
    kinds = ["error", "missing", "notfound", "nolicense", "already-researched", "undocumented"]
    emails = [
        f"{kinds[i % 7]}{i}@acme.test" if i % 7 < 6 else f"ok{i}@acme.test" for i in range(100)
    ]
    jobs = await _one_each(client, emails)
    status = await call(client, "get_job_status", {"job_ids": jobs})
    _assert_status_bounded(status, jobs)
    states = {j["state"] for j in structured(status)["jobs"]}
    assert {"failed", "not_found", "duplicate", "running", "succeeded"} <= states, states


async def test_results_are_cut_at_item_boundaries_to_their_bounds(client: Client) -> None:
    job = (await _research(client, 50, tag="r", wait=UNTIL_DONE))["job_id"]
    waited = await call(client, "wait_for_job", {"job_id": job})
    assert structured(waited)["state"] == "succeeded"
    assert answer_tokens(waited) <= B.DEFAULT_ANSWER_TOKENS
    default = await call(client, "get_job_result", {"job_id": job})
    assert answer_tokens(default) <= B.DEFAULT_ANSWER_TOKENS
    every = [
        line.strip("`")
        for line in fields_markdown("seamless").split("## contacts")[1].split("##")[0].split(", ")
    ]
    every = [f.strip().strip("`") for f in every if f.strip()]
    assert len(every) > 40
    offset, seen = 0, 0
    for _ in range(50):  # follow the text's own Next: until nothing is left
        page = await call(
            client,
            "get_job_result",
            {"job_id": job, "fields": every[: B.MAX_FIELDS], "limit": 50, "offset": offset},
        )
        assert answer_tokens(page) <= B.MAX_ANSWER_TOKENS, answer_tokens(page)
        data = structured(page)
        assert data.get("items"), text_of(page)
        seen += len(data["items"])
        if data.get("next_offset") is None:
            break
        assert "page cut to fit the size limit" in text_of(page)
        assert (
            f'Next: get_job_result(job_id="{job}", offset={data["next_offset"]}, fields='
            in text_of(page)
        )
        offset = data["next_offset"]
    assert seen == 50


class _Inflate(httpx.AsyncBaseTransport):
    """In front of the sandbox: every poll record's title becomes 5 MB (issue 20 item 5)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if "research/poll" not in request.url.path or response.status_code != 200:
            return response
        body = json.loads(await response.aread())
        for item in body.get("data") or []:
            for key in ("record", "contact", "company"):  # i12 may rename the record's key
                if isinstance(item.get(key), dict):
                    item[key]["title"] = "T" * 5_000_000
        headers = {k: v for k, v in response.headers.items() if k.lower() != "content-length"}
        return httpx.Response(response.status_code, headers=headers, json=body)


@asynccontextmanager
async def _inflated(tmp_path: Path) -> AsyncIterator[Client]:
    clock = ScaledClock(TEST_SCALE, epoch=TEST_EPOCH)
    state = SandboxState(clock=clock, faults=Faults(time_scale=TEST_SCALE, job_seconds=6.0))
    transport = _Inflate(httpx.ASGITransport(app=create_sandbox_app(state)))
    settings = load_settings(
        {
            "JOBRELAY_DB": str(tmp_path / "jobs.db"),
            "SEAMLESS_API_KEY": "sandbox-key-1",
            "SEAMLESS_BASE_URL": "http://sandbox.test" + SEAMLESS_PREFIX,
            "JOBRELAY_SANDBOX": "0",
            "AGENTSEO_API_KEY": "unused",
            "JOBRELAY_MAX_WAIT_SECONDS": str(int(UNTIL_DONE)),
        }
    )
    server = build_server(settings, clock=clock, transports={"seamless": transport})
    async with Client(server) as client:
        yield client


async def test_an_oversized_record_is_shown_truncated_and_no_next_step_loops(
    tmp_path: Path,
) -> None:
    async with _inflated(tmp_path) as client:
        job = (await _research(client, 1, tag="big", wait=UNTIL_DONE))["job_id"]
        waited = await call(client, "wait_for_job", {"job_id": job})
        page = await call(client, "get_job_result", {"job_id": job})
        past = await call(client, "get_job_result", {"job_id": job, "offset": 5})
    for result in (waited, page):
        assert answer_tokens(result) <= B.DEFAULT_ANSWER_TOKENS, answer_tokens(result)
        assert "TTT…[truncated 4,999,850 chars]" in text_of(result)
        assert "Person big0" in text_of(result)  # the record is shown, e-mail and all
        assert "@" in text_of(result)
        assert_agent_safe(result)
    assert structured(page)["items"][0]["title"].endswith("[truncated 4,998,000 chars]")
    assert "1 result(s), 1 shown" in text_of(waited)
    assert text_of(page).endswith("Next: use these results; nothing more to fetch.")
    # Past the end points at the last page, never back at the call that just answered.
    assert text_of(past).endswith(
        f'Next: get_job_result(job_id="{job}", offset=0) for the last page.'
    )


async def test_no_tool_answer_exceeds_the_hard_bound(client: Client) -> None:
    """The largest legal requests of every listing tool stay within MAX_ANSWER_TOKENS."""
    with anyio.fail_after(30):
        jobs = [(await _research(client, 100, tag=f"m{i}-"))["job_id"] for i in range(2)]
        await call(client, "wait_for_job", {"job_id": jobs[-1], "wait_seconds": UNTIL_DONE})
        await call(client, "wait_for_job", {"job_id": jobs[0], "wait_seconds": UNTIL_DONE})
    biggest = 0
    for tool, args in (
        ("search_prospects", {"kind": "contacts", "limit": 50, "query": "q" * B.MAX_QUERY_CHARS}),
        ("get_job_status", {"job_ids": jobs}),
        ("wait_for_job", {"job_id": jobs[0]}),
        ("get_job_result", {"job_id": jobs[0], "limit": 50}),
        ("list_jobs", {"limit": 100}),
        ("get_usage", {}),
        ("explain_error", {"http_status": 429, "body": "x" * B.MAX_BODY_CHARS}),
    ):
        result = await call(client, tool, args)
        biggest = max(biggest, answer_tokens(result))
        assert answer_tokens(result) <= B.MAX_ANSWER_TOKENS, (tool, answer_tokens(result))
    assert biggest > 0


def test_the_estimator_is_compact_json_over_three() -> None:
    value = {"a": [1, 2, 3], "b": "é"}
    assert B.tokens(value) == -(-len('{"a":[1,2,3],"b":"é"}') // 3)
    assert B.tokens("abcd") == 2


async def test_list_jobs_text_names_every_job_and_points_at_unread_paid_work(
    client: Client,
) -> None:
    paid = (await _research(client, 2, tag="paid", wait=UNTIL_DONE))["job_id"]  # shown once: read
    unread = (await _research(client, 1, tag="unread"))["job_id"]
    seo_args = {
        "workflow": "serp_analysis",
        "params": {"keyword": "crm"},
        "wait_seconds": UNTIL_DONE,
    }
    seo = structured(await call(client, "start_seo_job", seo_args))["job_id"]  # newer, free-ish
    await call(client, "get_job_status", {"job_ids": [unread]})  # status never marks it read
    listed = await call(client, "list_jobs", {})
    text = text_of(listed)
    lines = text.splitlines()
    assert lines[0] == "3 job(s), newest first:"
    assert lines[1].startswith(f"1. {seo} | seo serp_analysis | succeeded | results read | ")
    assert lines[2].startswith(f"2. {unread} | research_contacts | succeeded | 1 target(s) | ")
    assert "results NOT read yet" in lines[2]
    assert lines[3].startswith(f"3. {paid} | research_contacts | succeeded | 2 target(s) | ")
    assert lines[-1] == (
        f'Next: get_job_result(job_id="{unread}") (finished, results not read yet).'
    )
    assert_agent_safe(listed)
    assert [j["result_read"] for j in structured(listed)["jobs"]] == [True, False, True]
    await call(client, "get_job_result", {"job_id": unread})
    again = text_of(await call(client, "list_jobs", {})).splitlines()[-1]
    assert again == f'Next: get_job_result(job_id="{unread}") to read its results again.'
