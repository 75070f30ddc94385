"""The exact text an agent reads on the important paths (issue 4, item 6).

Hosts often forward only the text block, so its wording is contract: what happened, the one
next step (`Next:`), what not to do. Times in a text are checked against the same result's
structured `retry_at` / `retry_after_seconds`, so every character is still pinned down.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import assert_agent_safe, call, loopback_sandbox, structured, text_of
from mcp import Client

from mcp_server._clock import ScaledClock
from mcp_server.config import load_settings
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX
from mcp_server.server import build_server

pytestmark = pytest.mark.anyio

ADA = {"name": "Ada Lovelace", "company": "Analytical Engines"}
KEY = "golden-test-key-5e1f0c"
MINUTE = 1_790_000_000 - 1_790_000_000 % 60
"""An epoch at the start of a minute (2026-09-21 14:13:00Z)."""


def _at(iso: str) -> str:
    """`2026-09-21T14:15:01Z` -> `14:15:01Z`, as texts write a time within the day."""
    return iso[11:19] + "Z"


def _error(result: Any) -> dict[str, Any]:
    assert result.is_error, text_of(result)
    error: dict[str, Any] = structured(result)["error"]
    return error


# --------------------------------------------------------------------------------------------
# Rate limits answered by the API itself (429 with its reset): the sandbox as an external API


@asynccontextmanager
async def _real_time_upstream(tmp_path: Path, **faults: Any) -> AsyncIterator[tuple[str, Any]]:
    """The sandbox on loopback at real speed, and settings pointing jobrelay at it like at the
    real APIs, with waits capped at 5 s so a minute-long reset cannot be waited out inline.

    Time starts 5 s into a minute, so Seamless' per-minute windows reset about 55 s later:
    longer than any wait jobrelay would sit out inside a call (a poll's own 30 s included).
    """
    clock = ScaledClock(1.0, epoch=MINUTE + 5)
    state = SandboxState(clock=clock, faults=Faults(**faults))
    async with loopback_sandbox(state) as root:
        settings = load_settings(
            {
                "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
                "SEAMLESS_API_KEY": KEY,
                "AGENTSEO_API_KEY": KEY,
                "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
                "AGENTSEO_BASE_URL": root + AGENTSEO_PREFIX,
                "JOBRELAY_MAX_WAIT_SECONDS": "5",
            }
        )
        yield root, build_server(settings, clock=clock)


async def test_seamless_429_names_the_endpoint_the_limit_and_the_reset(tmp_path: Path) -> None:
    async with _real_time_upstream(tmp_path, seamless_rate_limit=1) as (root, server):
        # Another user of the same org spends the endpoint's window first.
        async with httpx.AsyncClient(base_url=root) as other:
            spent = await other.post(
                SEAMLESS_PREFIX + "/search/contacts", headers={"Token": "colleague"}, json={}
            )
        assert spent.headers["x-ratelimit-remaining"] == "0"
        async with Client(server) as client:
            result = await call(client, "search_prospects", {"kind": "contacts"})
    error = _error(result)
    at, wait = _at(error["retry_at"]), int(error["retry_after_seconds"])
    assert (error["code"], error["http_status"], error["provider"]) == (
        "rate_limited",
        429,
        "seamless",
    )
    assert 0 < wait <= 61
    assert text_of(result) == (
        f"Rate limited by Seamless on POST /search/contacts (org-wide 1/min) until {at} "
        f"(in {wait} s). Other Seamless endpoints have their own windows, so status checks of "
        "pending jobs (one batched get_job_status call) still work. Next: Retry "
        f"search_prospects after {at} (in {wait} s). Do not retry before then: early calls "
        "are rejected again."
    )
    assert spent.headers["x-ratelimit-reset"] not in text_of(result)
    assert_agent_safe(result, secrets=[KEY])


async def test_agentseo_429_names_the_budget_and_the_reset(tmp_path: Path) -> None:
    async with _real_time_upstream(tmp_path) as (root, server):
        # The key's workload budget (hobby: 60/min) spent elsewhere, by invalid bodies.
        async with httpx.AsyncClient(base_url=root) as other:
            for _ in range(60):
                spent = await other.post(
                    AGENTSEO_PREFIX + "/analyze/serp", headers={"x-api-key": KEY}, json={}
                )
        assert spent.headers["ratelimit-remaining"] == "0"
        async with Client(server) as client:
            result = await call(
                client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
            )
            listed = await call(client, "list_jobs", {})
    error = _error(result)
    at, wait = _at(error["retry_at"]), int(error["retry_after_seconds"])
    assert (error["code"], error["http_status"], error["provider"]) == (
        "rate_limited",
        429,
        "agentseo",
    )
    assert error["request_id"].startswith("req_")
    assert text_of(result) == (
        "Rate limited by AgentSEO on the workload budget (starting jobs, 60/min) until "
        f"{at} (in {wait} s). The control budget (status checks and streams) is unaffected. "
        f"Next: Retry start_seo_job after {at} (in {wait} s). Do not retry before then: early "
        "calls are rejected again."
    )
    assert_agent_safe(result, secrets=[KEY])
    assert structured(listed)["jobs"][0]["state"] == "failed"  # provably not started


# --------------------------------------------------------------------------------------------
# Credits, license, keys and permissions: the sandbox's scenario keys


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            (
                "AGENTSEO",
                "sandbox-insufficient-credits",
                "start_seo_job",
                {"workflow": "serp_analysis", "params": {"keyword": "x"}},
                (
                    "AgentSEO credits are exhausted (HTTP 402 CREDITS_EXHAUSTED, "
                    "credits_remaining=0). Status checks and results still work. Next: Tell the "
                    "user to top up AgentSEO credits. Do not call start_seo_job again until "
                    "credits are added."
                ),
            ),
            id="402-agentseo-credits",
        ),
        pytest.param(
            (
                "SEAMLESS",
                "sandbox-insufficient-credits",
                "start_research",
                {"kind": "contacts", "contacts": [ADA]},
                (
                    "The Seamless org has 0 research credits left and needs 1 more for this "
                    "request; research needs credits (HTTP 422 insufficientCredits). "
                    "search_prospects, get_job_status and get_job_result stay free. Next: Tell "
                    "the user to add Seamless research credits. Do not retry the same "
                    "start_research: it fails until credits are added."
                ),
            ),
            id="422-seamless-insufficient-credits",
        ),
        pytest.param(
            (
                "SEAMLESS",
                "sandbox-missing-license",
                "search_prospects",
                {"kind": "contacts"},
                (
                    "The Seamless org has no active Public API license (HTTP 422 missingLicense). "
                    "Next: Ask a Seamless admin to enable Public API access for the org. Do not "
                    "retry: Seamless calls fail until the license is active."
                ),
            ),
            id="422-seamless-missing-license",
        ),
        pytest.param(
            (
                "SEAMLESS",
                "sandbox-revoked",
                "search_prospects",
                {"kind": "contacts"},
                (
                    "Seamless rejected the API key (HTTP 401): it is missing, invalid, expired "
                    "or revoked. Next: Ask the user to set a valid SEAMLESS_API_KEY (sent as the "
                    "Token header) and restart jobrelay. Do not retry: every Seamless call fails "
                    "until the key is fixed."
                ),
            ),
            id="401-seamless",
        ),
        pytest.param(
            (
                "SEAMLESS",
                "sandbox-insufficient-scope",
                "start_research",
                {"kind": "contacts", "contacts": [ADA]},
                (
                    "Seamless refused access (HTTP 403 insufficientScope): the OAuth connection "
                    "lacks the scope publicAPI.v1.all. Next: Ask the user to re-authorize the "
                    "Seamless connection with the scope publicAPI.v1.all. Do not retry until it is "
                    "re-authorized: it fails the same way."
                ),
            ),
            id="403-seamless-scope",
        ),
        pytest.param(
            (
                "AGENTSEO",
                "sandbox-insufficient-scope",
                "start_seo_job",
                {"workflow": "serp_analysis", "params": {"keyword": "x"}},
                (
                    "AgentSEO blocked this request by the key's allowed-domain policy (HTTP 403 "
                    "DOMAIN_NOT_ALLOWED); the key itself is valid. Next: Ask the user to allow "
                    "this target in the key's domain policy (AgentSEO dashboard). Do not retry "
                    "the same target: it is blocked until the policy changes."
                ),
            ),
            id="403-agentseo-domain-policy",
        ),
        pytest.param(
            (
                "AGENTSEO",
                "sandbox-revoked",
                "start_seo_job",
                {"workflow": "serp_analysis", "params": {"keyword": "x"}},
                (
                    "AgentSEO refused the API key: it is revoked or expired (HTTP 403 "
                    "API_KEY_REVOKED). Next: Ask the user to create a new AgentSEO API key and "
                    "set AGENTSEO_API_KEY. Do not retry: every AgentSEO call fails until the key "
                    "is replaced."
                ),
            ),
            id="403-agentseo-revoked",
        ),
    ],
)
async def test_account_failures_say_what_happened_and_who_must_fix_it(
    make_client: Callable[..., Any], case: tuple[str, str, str, dict[str, Any], str]
) -> None:
    provider, key, tool, args, expected = case
    async with make_client(**{f"{provider}_API_KEY": key, "JOBRELAY_SANDBOX": "1"}) as client:
        result = await call(client, tool, args)
    _error(result)
    assert text_of(result) == expected
    assert_agent_safe(result, secrets=[key])


# --------------------------------------------------------------------------------------------
# Jobs that failed upstream: normal results with advice


async def test_a_transient_seo_failure_says_when_a_resubmit_may_succeed(client: Client) -> None:
    result = await call(
        client,
        "start_seo_job",
        {
            "workflow": "serp_analysis",
            "params": {"keyword": "x fail-transient"},
            "wait_seconds": 30,
        },
    )
    assert not result.is_error
    data = structured(result)
    advice = data["advice"]
    job, at, wait = data["job_id"], _at(advice["retry_at"]), int(advice["retry_after_seconds"])
    assert (data["state"], data["raw_status"], advice["retryable"]) == ("failed", "failed", True)
    assert 25 <= wait <= 30  # the job's 30 s, counted from when it failed
    assert text_of(result) == (
        f"AgentSEO reports job {job} as failed with a transient error (UPSTREAM_FETCH_FAILED: "
        "The upstream provider failed after 3 attempts; resubmitting later may succeed). "
        f"Next: Resubmit it with start_seo_job (same workflow and params) after {at} "
        f"(in {wait} s). "
        "Do not resubmit in a loop: each new job spends workload budget."
    )
    assert_agent_safe(result)


async def test_a_permanent_seo_failure_says_to_change_the_inputs(client: Client) -> None:
    result = await call(
        client,
        "start_seo_job",
        {"workflow": "serp_analysis", "params": {"keyword": "fail-permanent"}, "wait_seconds": 30},
    )
    assert not result.is_error
    data = structured(result)
    assert (data["state"], data["advice"]["retryable"]) == ("failed", False)
    assert text_of(result) == (
        f"AgentSEO reports job {data['job_id']} as failed permanently (INVALID_TARGET: The "
        "upstream provider rejected the target; change the inputs). Next: Change the inputs "
        "the error points to, then start a new job with start_seo_job. Do not resubmit "
        "unchanged: it fails the same way."
    )
    assert_agent_safe(result)


async def test_a_failed_research_job_is_information_with_advice(client: Client) -> None:
    result = await call(
        client,
        "start_research",
        {"kind": "contacts", "contacts": [{"name": "Ann error", "company": "Acme"}]}
        | {"wait_seconds": 30},
    )
    assert not result.is_error
    data = structured(result)
    assert (data["state"], data["raw_status"]) == ("failed", "error")
    assert text_of(result) == (
        f"Seamless research failed for job {data['job_id']}; this is typically a credits or "
        "license problem. Next: Call get_usage to check research credits before resubmitting "
        "once. Do not resubmit in a loop: each attempt may spend a credit."
    )
    assert_agent_safe(result)


async def test_a_research_target_with_no_record_is_reported_not_found(client: Client) -> None:
    result = await call(
        client,
        "start_research",
        {"kind": "contacts", "contacts": [{"name": "Nobody", "company": "Missing Inc"}]}
        | {"wait_seconds": 30},
    )
    data = structured(result)
    assert (data["state"], data["raw_status"]) == ("not_found", "missing")
    assert text_of(result) == (
        f"Seamless found no record for job {data['job_id']}. Next: Tell the user no match was "
        "found for this target. Do not resubmit the same target: it comes back missing again; "
        "only a more specific one (domain or LinkedIn URL) can match."
    )


# --------------------------------------------------------------------------------------------
# Waiting, results, lookups


async def test_a_wait_that_times_out_hands_back_the_handle(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"job_seconds": 600.0})
    started = await call(client, "start_research", {"kind": "contacts", "contacts": [ADA]})
    job = structured(started)["job_id"]
    assert text_of(started) == (
        f"Research job {job} started for 1 target(s) (running; 999 research credits left). "
        f'Next: wait_for_job(job_id="{job}"). Do not start it again: that pays twice.'
    )
    waited = await call(client, "wait_for_job", {"job_id": job, "wait_seconds": 2})
    assert re.fullmatch(
        rf"Research job {job} is still running \(0%, 0 of 1 targets finished\); next update "
        rf"expected \d\d:\d\d:\d\dZ \(in 5 s\)\. Next: wait_for_job\(job_id=\"{job}\"\)\. "
        r"Do not start it again: that pays twice\.",
        text_of(waited),
    ), text_of(waited)
    assert_agent_safe(waited)


async def test_finished_research_and_its_pages(client: Client) -> None:
    found = structured(await call(client, "search_prospects", {"kind": "contacts", "limit": 12}))
    ids = [i["search_result_id"] for i in found["items"]]
    done = await call(
        client,
        "start_research",
        {"kind": "contacts", "search_result_ids": ids, "wait_seconds": 30},
    )
    job = structured(done)["job_id"]
    lines = text_of(done).splitlines()
    assert lines[0] == f"Research job {job} finished: 12 result(s), 10 shown:"
    _assert_contact_lines(lines[1:11], structured(done)["results"], start=1)
    assert lines[11:] == [f'Next: get_job_result(job_id="{job}", offset=10) for results 11-12.']
    rest = await call(client, "get_job_result", {"job_id": job, "offset": 10})
    lines = text_of(rest).splitlines()
    assert lines[0] == f"Job {job}: results 11-12 of 12:"
    _assert_contact_lines(lines[1:3], structured(rest)["items"], start=11)
    assert lines[3:] == [
        f'Other fields: get_job_result(job_id="{job}", fields=[...]); names at '
        "jobrelay://fields/seamless. Next: use these results; nothing more to fetch."
    ]
    first = await call(client, "get_job_result", {"job_id": job, "limit": 5})
    assert text_of(first).splitlines()[-1] == (
        f'Next: get_job_result(job_id="{job}", offset=5, limit=5).'
    )
    past = await call(client, "get_job_result", {"job_id": job, "offset": 40})
    assert text_of(past) == (
        f"Job {job} has 12 result(s); offset 40 is past the end. "
        f'Next: get_job_result(job_id="{job}", offset=10) for the last page.'
    )


def _assert_contact_lines(lines: list[str], items: list[dict[str, Any]], *, start: int) -> None:
    """Each shown contact on its own line, with everything needed to act on it."""
    assert len(lines) == len(items)
    for n, (line, item) in enumerate(zip(lines, items, strict=True), start):
        assert line.startswith(f"{n}. {item['name']} | {item['title']}, {item['company']}"), line
        email, phone = item["email"], item["phone"]
        assert f"{email['address']} ({email['confidence']}%" in line, line
        assert f"{phone['number']} ({phone['type']}, {phone['confidence']}%)" in line, line
        assert line.endswith(f" | {item['linkedin']}"), line


async def test_researching_the_same_targets_again_is_refused_with_the_earlier_job(
    client: Client,
) -> None:
    first = structured(
        await call(client, "start_research", {"kind": "contacts", "contacts": [ADA]})
    )["job_id"]
    again = await call(client, "start_research", {"kind": "contacts", "contacts": [ADA]})
    assert not again.is_error
    assert structured(again)["sandbox"] is True
    assert text_of(again) == (
        "Not started: 1 target(s) (ada lovelace|analytical engines) were researched in the "
        f"last 30 days, in job(s) {first}. Nothing was spent. Fresh research of them needs "
        "allow_rerun=true and pays again. Next: Read the earlier results with "
        f'get_job_result(job_id="{first}"). Do not resubmit without allow_rerun: the same '
        "targets are refused again."
    )
    assert_agent_safe(again)


async def test_an_unknown_job_id_points_to_list_jobs(client: Client) -> None:
    result = await call(client, "wait_for_job", {"job_id": "sea_123"})
    assert _error(result)["code"] == "not_found"
    assert text_of(result) == (
        'jobrelay has no job "sea_123" in its ledger (or it belongs to another key). Next: '
        "Call list_jobs to find the right job_id. Do not guess ids: copy them from an earlier "
        "result (handles start with sea_ and seo_)."
    )


async def test_a_submit_with_an_unknown_outcome_says_check_before_resubmitting(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"error_rate": 1.0})
    result = await call(client, "start_research", {"kind": "contacts", "contacts": [ADA]})
    error = _error(result)
    job = structured(result)["job_id"]
    assert (error["code"], error["retryable"]) == ("outcome_unknown", False)
    status = error["http_status"]
    assert text_of(result) == (
        f"Job {job}: Seamless may have accepted the research: it answered HTTP {status} after "
        "receiving the request, so jobrelay cannot tell whether credits were spent. If the "
        "check finds nothing, one resubmit of contact research is safe (Seamless deduplicates "
        "contacts, not companies). Next: Call "
        f'get_job_status(job_ids=["{job}"]) before resubmitting. Do '
        "not resubmit before checking: it could spend credits again."
    )
    # That check is the last one jobrelay can make (no upstream id): it leaves the loop.
    checked = await call(client, "get_job_status", {"job_ids": [job]})
    assert text_of(checked).endswith(
        f"Next: Ask the user whether {job}'s work shows in the Seamless dashboard before "
        "starting it again. Do not resubmit until then, and do not check this job again: "
        "jobrelay has no upstream id for it, so its answer will not change."
    ), text_of(checked)
    assert_agent_safe(checked)
    assert sandbox_state.stats()["requests"]["seamless POST /contacts/research"] == 1  # no replay
    assert_agent_safe(result)


async def test_the_daily_credit_budget_refuses_before_sending(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    async with make_client(JOBRELAY_CREDIT_BUDGET="1") as client:
        result = await call(
            client,
            "start_research",
            {"kind": "contacts", "contacts": [ADA, {"name": "B C", "company": "D"}]},
        )
    error = _error(result)
    assert (error["code"], error["retryable"]) == ("budget_exceeded", True)
    assert re.fullmatch(
        r"Starting this research would exceed the daily credit budget \(JOBRELAY_CREDIT_BUDGET\): "
        r"0 of 1 credits are spent today, and this needs 2; nothing was sent\. The budget resets "
        r"at 00:00:00Z \(in [\w ]+\)\. Next: Call start_research again with at most 1 target\. "
        r"Do not retry the same batch before the reset: it is refused again\.",
        text_of(result),
    ), text_of(result)
    assert sandbox_state.stats()["paid_posts"] == 0
    assert_agent_safe(result)


async def test_invalid_arguments_name_the_field_and_the_allowed_values(client: Client) -> None:
    missing = await call(client, "search_prospects", {})
    assert text_of(missing) == (
        "Invalid arguments for search_prospects: kind is required (one of 'contacts', "
        "'companies'). Next: Call search_prospects again with kind fixed. "
        "Do not retry unchanged: it is refused the same way, and nothing was sent."
    )
    wrong = await call(client, "list_jobs", {"state": "done"})
    assert text_of(wrong) == (
        "Invalid arguments for list_jobs: state: input should be 'queued', 'running', "
        "'succeeded', 'failed', 'not_found', 'duplicate' or 'unknown' (got 'done'). "
        "Next: Call list_jobs again with state fixed. "
        "Do not retry unchanged: it is refused the same way, and nothing was sent."
    )
    unknown = await call(client, "wait_for_job", {"job_id": "sea_1", "timeout": 30})
    assert text_of(unknown) == (
        "Invalid arguments for wait_for_job: timeout is not a known argument (known: job_id, "
        "wait_seconds). Next: Call wait_for_job again without timeout. "
        "Do not retry unchanged: it is refused the same way, and nothing was sent."
    )
    params = await call(
        client, "start_seo_job", {"workflow": "local_audit", "params": {"domain": "a.example"}}
    )
    assert text_of(params) == (
        "local_audit needs params.location (e.g. 'Austin, TX'); location_code may be added, "
        "not used instead. "
        "Next: Call start_seo_job again with params.location fixed. "
        "Do not retry unchanged: it is refused the same way, and nothing was sent."
    )
    for result in (missing, wrong, unknown, params):
        assert _error(result)["code"] == "invalid_input"
        assert_agent_safe(result)


async def test_a_poll_refused_during_a_wait_says_so_with_one_next_step(
    tmp_path: Path,
) -> None:
    upstream = _real_time_upstream(tmp_path, seamless_rate_limit=1, job_seconds=600.0)
    async with upstream as (root, server), Client(server) as client:
        started = await call(client, "start_research", {"kind": "contacts", "contacts": [ADA]})
        job = structured(started)["job_id"]
        async with httpx.AsyncClient(base_url=root) as other:  # the org's poll window, spent
            await other.get(
                SEAMLESS_PREFIX + "/contacts/research/poll",
                params={"requestIds": "x"},
                headers={"Token": "colleague"},
            )
        with anyio.fail_after(10):
            waited = await client.call_tool("wait_for_job", {"job_id": job, "wait_seconds": 1})
    assert not waited.is_error  # the job is fine; only looking at it was refused
    data = structured(waited)
    advice = data["advice"]
    at, wait = _at(advice["retry_at"]), int(advice["retry_after_seconds"])
    assert (data["state"], advice["code"]) == ("running", "rate_limited")
    assert data["next_check_after_seconds"] == advice["retry_after_seconds"]
    assert text_of(waited) == (
        f"Research job {job} is still running (0%, 0 of 1 targets finished), but checking it "
        "failed: Rate limited by Seamless on GET /contacts/research/poll (org-wide 1/min) "
        f"until {at} (in {wait} s). Other Seamless endpoints have their own windows, so status "
        "checks of pending jobs (one batched get_job_status call) still work. Next: Retry "
        f"wait_for_job after {at} (in {wait} s). Do not retry before then: early calls are "
        "rejected again."
    )
    assert_agent_safe(waited, secrets=[KEY])
