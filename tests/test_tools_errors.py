"""Failures through the tools (issue 4): the structured error of DESIGN.md, advice that agrees
with `explain_error`, failed jobs as normal results, and nothing secret or internal leaking.

Exact wording lives in `test_tools_golden.py`; this module checks shapes and invariants over
every failure the sandbox can produce.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any

import pytest
from conftest import ERROR_KEYS, assert_agent_safe, call, read, structured, text_of
from mcp import Client

from mcp_server.jobs import JobService
from mcp_server.models import ErrorCode
from mcp_server.sandbox import SandboxState

pytestmark = pytest.mark.anyio

ADA = {"name": "Ada Lovelace", "company": "Analytical Engines"}
SERP = {"workflow": "serp_analysis", "params": {"keyword": "pizza"}}
RESEARCH = {"kind": "contacts", "contacts": [ADA]}
SECRET = "FAKE-key-9d2f4c1b7a3e5f60"


def _error(result: Any) -> dict[str, Any]:
    assert result.is_error, text_of(result)
    error: dict[str, Any] = structured(result)["error"]
    assert set(error) == ERROR_KEYS, error
    assert error["code"] in {c.value for c in ErrorCode}
    assert error["next_step"] in text_of(result)  # the text says the same as the structure
    return error


# (env, tool, arguments, code, http_status, provider, retryable)
SCENARIOS = [
    pytest.param(
        {"SEAMLESS_API_KEY": "sandbox-revoked"},
        "search_prospects",
        {"kind": "contacts"},
        ("auth_failed", 401, "seamless", False),
        id="seamless-401",
    ),
    pytest.param(
        {"SEAMLESS_API_KEY": "sandbox-insufficient-scope"},
        "start_research",
        RESEARCH,
        ("permission_denied", 403, "seamless", False),
        id="seamless-403",
    ),
    pytest.param(
        {"SEAMLESS_API_KEY": "sandbox-missing-license"},
        "start_research",
        RESEARCH,
        ("license_missing", 422, "seamless", False),
        id="seamless-422-license",
    ),
    pytest.param(
        {"SEAMLESS_API_KEY": "sandbox-insufficient-credits"},
        "start_research",
        RESEARCH,
        ("credits_exhausted", 422, "seamless", False),
        id="seamless-422-credits",
    ),
    pytest.param(
        {"AGENTSEO_API_KEY": "sandbox-insufficient-credits"},
        "start_seo_job",
        SERP,
        ("credits_exhausted", 402, "agentseo", False),
        id="agentseo-402",
    ),
    pytest.param(
        {"AGENTSEO_API_KEY": "sandbox-revoked"},
        "start_seo_job",
        SERP,
        ("permission_denied", 403, "agentseo", False),
        id="agentseo-403-revoked",
    ),
    pytest.param(
        {"AGENTSEO_API_KEY": "sandbox-missing-license"},
        "start_seo_job",
        SERP,
        ("license_missing", 403, "agentseo", False),  # details.reason tells it apart
        id="agentseo-403-license",
    ),
]


@pytest.mark.parametrize(("env", "tool", "args", "expected"), SCENARIOS)
async def test_documented_failures_are_structured_errors_that_explain_error_agrees_with(
    make_client: Callable[..., Any],
    env: dict[str, str],
    tool: str,
    args: dict[str, Any],
    expected: tuple[str, int, str, bool],
) -> None:
    async with make_client(JOBRELAY_SANDBOX="1", **env) as client:
        result = await call(client, tool, args)
        error = _error(result)
        explained = await call(
            client,
            "explain_error",
            {"provider": error["provider"], "http_status": error["http_status"]}
            | ({"code": _api_code(env)} if _api_code(env) else {}),
        )
        listed = await call(client, "list_jobs", {})
    assert (error["code"], error["http_status"], error["provider"], error["retryable"]) == expected
    advice = structured(explained)["advice"]
    assert (advice["code"], advice["retryable"]) == (error["code"], error["retryable"])
    assert_agent_safe(result, secrets=env.values())
    # A submit the API provably refused is no open job: nothing to wait for.
    assert all(j["state"] == "failed" for j in structured(listed)["jobs"])


def _without_wait(text: str) -> str:
    return re.sub(r"\d\d:\d\d:\d\dZ \(in \d+ s\)", "HH:MM:SSZ (in N s)", text)


def _api_code(env: dict[str, str]) -> str | None:
    key = next(iter(env.values()))
    return {
        ("sandbox-insufficient-credits", "SEAMLESS_API_KEY"): "insufficientCredits",
        ("sandbox-missing-license", "SEAMLESS_API_KEY"): "missingLicense",
        ("sandbox-insufficient-scope", "SEAMLESS_API_KEY"): "insufficientScope",
        ("sandbox-insufficient-credits", "AGENTSEO_API_KEY"): "CREDITS_EXHAUSTED",
        ("sandbox-revoked", "AGENTSEO_API_KEY"): "API_KEY_REVOKED",
        ("sandbox-missing-license", "AGENTSEO_API_KEY"): "no_active_license",
        ("sandbox-insufficient-scope", "AGENTSEO_API_KEY"): "DOMAIN_NOT_ALLOWED",
    }.get((key, next(iter(env))))


async def test_reads_keep_working_for_a_key_without_credits(
    make_client: Callable[..., Any],
) -> None:
    """402/422 credit errors stop new jobs only: search, status and lists still answer."""
    async with make_client(
        JOBRELAY_SANDBOX="1",
        SEAMLESS_API_KEY="sandbox-insufficient-credits",
        AGENTSEO_API_KEY="sandbox-insufficient-credits",
    ) as client:
        found = await call(client, "search_prospects", {"kind": "contacts", "limit": 1})
        listed = await call(client, "list_jobs", {})
        usage = await call(client, "get_usage", {})
    assert not found.is_error
    assert not listed.is_error
    assert structured(usage)["providers"][0]["credits_remaining"] == 0


async def test_failed_upstream_jobs_are_normal_results_with_advice(client: Client) -> None:
    cases: list[tuple[str, dict[str, Any], bool]] = [
        ("start_seo_job", SERP | {"params": {"keyword": "fail-permanent"}}, False),
        ("start_seo_job", SERP | {"params": {"keyword": "fail-transient"}}, True),
        (
            "start_research",
            {"kind": "contacts", "contacts": [{"name": "error", "domain": "x"}]},
            False,
        ),
    ]
    for tool, args, retryable in cases:
        result = await call(client, tool, args | {"wait_seconds": 30})
        assert not result.is_error, text_of(result)
        data = structured(result)
        assert "error" not in data
        assert data["state"] == "failed"
        assert data["advice"]["retryable"] is retryable
        assert data["advice"]["next_step"] in text_of(result)
        assert_agent_safe(result)
        status = await call(client, "get_job_status", {"job_ids": [data["job_id"]]})
        assert not status.is_error
        # The same job, the same advice; a stated wait counts from the failure, not the look.
        looked = structured(status)["jobs"][0]["advice"]
        if retryable:  # the same moment, give or take the rounding to whole seconds
            stated = datetime.fromisoformat(data["advice"]["retry_at"])
            assert abs((datetime.fromisoformat(looked["retry_at"]) - stated).total_seconds()) <= 1
        assert looked.get("retry_after_seconds", 0) <= data["advice"].get("retry_after_seconds", 0)
        assert _without_wait(text_of(status)) == _without_wait(text_of(result))
        page = await call(client, "get_job_result", {"job_id": data["job_id"]})
        assert _without_wait(structured(page)["advice"]["next_step"]) == _without_wait(
            data["advice"]["next_step"]
        )
        assert_agent_safe(page)


async def test_the_local_rate_guard_refuses_before_the_api_would(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    # 10x (the shared clock slows down too): the refusal's minute lasts 6 real seconds, so the
    # usage report below still sees the bucket blocked on a loaded machine.
    sandbox_state.set_faults({"seamless_rate_limit": 2, "time_scale": 10.0})
    async with make_client() as client:
        results = [
            await call(client, "search_prospects", {"kind": "contacts", "query": str(i)})
            for i in range(3)
        ]
        usage = await call(client, "get_usage", {})
    assert [r.is_error for r in results] == [False, False, True]
    assert re.search(
        r"Seamless POST /search/contacts is blocked until (\d\d:\d\d:\d\dZ \(in \d+ s\))\. "
        r"Next: wait until \1 before calls that use POST /search/contacts\.$",
        text_of(usage),
    ), text_of(usage)
    assert_agent_safe(usage)
    error = _error(results[2])
    assert (error["code"], error["retryable"], error["http_status"]) == (
        "local_rate_limited",
        True,
        None,
    )
    assert error["retry_after_seconds"] > 0
    assert error["retry_at"] is not None
    assert_agent_safe(results[2])
    responses = sandbox_state.stats()["responses"]
    assert not [k for k in responses if k.endswith(" 429")]  # avoided, not provoked


async def test_an_unreachable_api_is_a_retryable_error_after_retries(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(
        SEAMLESS_API_KEY=SECRET,
        SEAMLESS_BASE_URL="http://127.0.0.1:9/api",  # discard port: nothing listens
        JOBRELAY_RETRY_MAX_ATTEMPTS="2",
    ) as client:
        result = await call(client, "search_prospects", {"kind": "contacts"})
    error = _error(result)
    assert (error["code"], error["retryable"], error["provider"]) == (
        "upstream_unreachable",
        True,
        "seamless",
    )
    assert_agent_safe(result, secrets=[SECRET])


async def test_server_errors_and_broken_bodies_never_reach_the_agent_raw(
    client: Client, sandbox_state: SandboxState
) -> None:
    for faults in ({"error_rate": 1.0}, {"malformed_rate": 1.0}):
        sandbox_state.set_faults({"error_rate": 0.0, "malformed_rate": 0.0} | faults)
        result = await call(client, "search_prospects", {"kind": "companies"})
        error = _error(result)
        assert error["code"] in {"upstream_error", "upstream_degraded"}, error
        assert "<html" not in text_of(result).lower()
        assert_agent_safe(result)


async def test_seo_submit_with_an_unknown_outcome_is_never_replayed(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"error_rate": 1.0})
    result = await call(client, "start_seo_job", SERP)
    error = _error(result)
    assert (error["code"], error["retryable"]) == ("outcome_unknown", False)
    job_id = structured(result)["job_id"]
    sandbox_state.set_faults({"error_rate": 0.0})
    assert sandbox_state.stats()["requests"]["agentseo POST /analyze/serp"] == 1
    waited = await call(client, "wait_for_job", {"job_id": job_id, "wait_seconds": 5})
    assert not waited.is_error
    data = structured(waited)
    assert (data["state"], data["advice"]["code"]) == ("unknown", "outcome_unknown")
    assert "wait_for_job" not in text_of(waited)  # waiting cannot resolve it
    assert_agent_safe(waited)
    page = await call(client, "get_job_result", {"job_id": job_id})
    assert structured(page)["advice"]["code"] == "outcome_unknown"
    assert "wait_for_job" not in text_of(page)
    assert_agent_safe(page)
    # Neither the wait nor the result read sent the start again (the faults are off by now,
    # so a replay would have gone through).
    assert sandbox_state.stats()["requests"]["agentseo POST /analyze/serp"] == 1
    assert sandbox_state.stats()["paid_posts"] <= 1


async def test_no_secret_reaches_results_resources_or_advice(
    make_client: Callable[..., Any],
) -> None:
    async with make_client(
        JOBRELAY_SANDBOX="1", SEAMLESS_API_KEY=SECRET, AGENTSEO_API_KEY=SECRET
    ) as client:
        outputs: list[Any] = [
            await call(client, "search_prospects", {"kind": "contacts", "limit": 1}),
            await call(client, "start_research", RESEARCH | {"wait_seconds": 30}),
            await call(client, "start_seo_job", SERP | {"wait_seconds": 30}),
            await call(client, "list_jobs", {}),
            await call(client, "get_usage", {}),
            await call(
                client,
                "explain_error",
                {
                    "http_status": 401,
                    "headers": {"Token": SECRET, "x-api-key": SECRET},
                    "body": {"code": "unauthorized", "msg": f"bad key {SECRET}"},
                },
            ),
            await call(client, "explain_error", {"http_status": 400, "body": f"key={SECRET}"}),
        ]
        job_id = structured(outputs[1])["job_id"]
        resources = [
            await read(client, f"jobrelay://jobs/{job_id}"),
            await read(client, "jobrelay://usage"),
        ]
    for result in outputs:
        text = text_of(result) + json.dumps(result.structured_content)
        assert SECRET not in text
        assert SECRET[-8:] not in text  # not even a tail of it
    for resource in resources:
        assert SECRET not in resource.model_dump_json()


async def test_explain_error_without_anything_to_explain_is_invalid_input(
    client: Client,
) -> None:
    result = await call(client, "explain_error", {"provider": "seamless"})
    assert _error(result)["code"] == "invalid_input"
    assert_agent_safe(result)


async def test_an_unknown_tool_lists_the_real_ones(client: Client) -> None:
    result = await call(client, "start_job", {})
    assert _error(result)["code"] == "invalid_input"
    assert "start_research, start_seo_job" in text_of(result)


async def test_a_bug_in_a_tool_is_a_short_error_and_a_logged_traceback(
    client: Client, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("internal detail /srv/jobrelay/secret.py line 12")

    monkeypatch.setattr(JobService, "list_jobs", broken)
    with caplog.at_level(logging.ERROR, logger="mcp_server.server"):
        result = await call(client, "list_jobs", {})
    error = _error(result)
    assert error["code"] == "upstream_error"
    assert "internal detail" not in text_of(result)
    assert text_of(result).startswith("jobrelay hit an internal error in list_jobs.")
    assert_agent_safe(result)
    assert any(r.exc_info for r in caplog.records)  # the traceback went to the log
