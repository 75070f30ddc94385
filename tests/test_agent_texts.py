"""The agent's side of every tool (issue 13.4, issue 12.3): each tool driven through the real
MCP client against the sandbox over its representative paths (success, each job state, each
error explain_error knows, bad input), judged on the TEXT block alone, as a host that forwards
only text would show it:

- it says what happened (text before the one `Next:`);
- exactly one next step, with one action (no " or " alternatives in it);
- whenever it tells the agent to wait, the wait is in seconds AND an absolute UTC time;
- at 0 research credits it never suggests researching fewer targets;
- it never says "running" for an unrecognised upstream status;
- its size is bounded by the project's estimator.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from conftest import answer_tokens, assert_agent_safe, call, structured, text_of
from mcp import Client

from mcp_server import _bounds as B
from mcp_server.advice import CATALOGUE
from mcp_server.sandbox import SandboxState

pytestmark = pytest.mark.anyio

_CLOCK = re.compile(r"\b\d\d:\d\d:\d\dZ|\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d)?Z")
"""An absolute UTC time as texts write it (`14:15:01Z`, or with the date beyond a day)."""
_SPAN = re.compile(r"\bin (?:about )?\d[\d,.]* ?(?:s|min|h|d)\b")
"""A wait in (whole or larger) units: `in 12 s`, `in about 60 s`, `in 9 h 45 min`."""
_WAITS = re.compile(r"\b(?:wait|after|later)\b|\buntil \d", re.IGNORECASE)
"""Words that make a next step a wait (`wait_for_job` is a call, not a wait; "until it
finishes" is what the call does, not a time)."""
_STEP = re.compile(r"Next: (.*?[.!?])(?=\s+\S|\s*$)", re.DOTALL)


def next_step(text: str) -> str:
    """The sentence after `Next:`: the one step the text asks for."""
    match = _STEP.search(text)
    assert match, text
    return match.group(1)


def check_text(result: Any, *, label: str, bound: int = B.DEFAULT_ANSWER_TOKENS) -> str:
    """Every rule of the module docstring, on the text block alone; returns the text."""
    text = text_of(result)
    assert text.count("Next:") == 1, (label, text)
    happened = text.split("Next:", 1)[0].strip()
    assert len(happened) >= 15, (label, text)  # what happened comes first
    step = next_step(text)
    assert " or " not in step.lower(), (label, step)
    if _WAITS.search(step) or _SPAN.search(step) or _CLOCK.search(step):
        assert _CLOCK.search(step), (label, step)
        assert _SPAN.search(step), (label, step)
    for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", text):  # no half-stated wait anywhere
        if _SPAN.search(sentence):
            assert _CLOCK.search(sentence), (label, sentence)
    data = result.structured_content or {}
    whole = json.dumps(data)
    if re.search(r"\b0 research credits\b", text) or '"credits_remaining": 0' in whole:
        assert "fewer" not in text, (label, text)
        assert not re.search(r"at most \d+ target", text), (label, text)
    if "unrecognised upstream status" in whole:
        assert "running" not in text, (label, text)
        assert "unrecognised upstream status" in text, (label, text)
    assert answer_tokens(result) <= bound, (label, answer_tokens(result))
    assert_agent_safe(result)
    return text


async def _start(client: Client, email: str, wait: float = 0) -> Any:
    args = {"kind": "contacts", "contacts": [{"email": email}], "wait_seconds": wait}
    return await call(client, "start_research", args)


async def test_research_jobs_in_every_state_through_every_job_tool(client: Client) -> None:
    """start_research, wait_for_job, get_job_status, get_job_result and list_jobs over the
    documented poll statuses, an undocumented one, and the ordinary paths."""
    jobs: dict[str, str] = {}
    for name, email in (
        ("done", "ada@acme.test"),
        ("error", "error@acme.test"),
        ("missing", "missing@acme.test"),
        ("not found", "notfound@acme.test"),
        ("already researched", "already-researched@acme.test"),
        ("no licence", "nolicense@acme.test"),
        ("undocumented", "undocumented@acme.test"),
    ):
        started = await _start(client, email)
        check_text(started, label=f"start {name}")
        jobs[name] = structured(started)["job_id"]
        check_text(
            await call(client, "get_job_result", {"job_id": jobs[name]}), label=f"early {name}"
        )
    for name, job in jobs.items():
        waited = await call(client, "wait_for_job", {"job_id": job, "wait_seconds": 30})
        check_text(waited, label=f"wait {name}")
        status = await call(client, "get_job_status", {"job_ids": [job]})
        check_text(status, label=f"status {name}")
        check_text(await call(client, "get_job_result", {"job_id": job}), label=f"result {name}")
    batch = await call(client, "get_job_status", {"job_ids": [*jobs.values(), "sea_nope"]})
    check_text(batch, label="status batch")
    assert all("next_step" not in j for j in structured(batch)["jobs"])  # said once, overall
    assert "unrecognised upstream status" in text_of(batch)
    check_text(await call(client, "list_jobs", {}), label="list")
    check_text(await call(client, "list_jobs", {"state": "failed"}), label="list failed")
    done = jobs["done"]
    for label, args in (
        ("past the end", {"job_id": done, "offset": 5}),
        ("unknown field", {"job_id": done, "fields": ["nope"]}),
        ("named field", {"job_id": done, "fields": ["email"]}),
    ):
        check_text(await call(client, "get_job_result", args), label=label)


async def test_unknown_ids_point_at_list_jobs(client: Client) -> None:
    for tool, args in (
        ("get_job_status", {"job_ids": ["sea_nope"]}),
        ("wait_for_job", {"job_id": "sea_nope"}),
        ("get_job_result", {"job_id": "seo_nope"}),
    ):
        result = await call(client, tool, args)
        assert result.is_error
        text = check_text(result, label=tool)
        assert next_step(text) == "Call list_jobs to find the right job_id.", text
    check_text(await call(client, "list_jobs", {}), label="empty list")


async def test_an_unknown_submit_outcome_has_one_step_and_no_loop(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"error_rate": 1.0})
    started = await _start(client, "ada@acme.test")
    sandbox_state.set_faults({"error_rate": 0.0})
    job = structured(started)["job_id"]
    text = check_text(started, label="5xx submit")
    assert next_step(text) == f'Call get_job_status(job_ids=["{job}"]) before resubmitting.'
    steps = set()
    for tool, args in (
        ("get_job_status", {"job_ids": [job]}),
        ("wait_for_job", {"job_id": job}),
        ("get_job_result", {"job_id": job}),
    ):
        text = check_text(await call(client, tool, args), label=tool)
        assert "get_job_status" not in next_step(text), text  # the check is done: no loop
        assert "Do not resubmit" in text, text
        steps.add(next_step(text))
    assert len(steps) == 1, steps
    listed = check_text(await call(client, "list_jobs", {}), label="list unknown")
    assert next_step(listed).startswith(f'get_job_status(job_ids=["{job}"])'), listed


async def test_bad_input_names_what_to_fix(client: Client) -> None:
    for tool, args in (
        ("search_prospects", {"kind": "contacts", "filters": {"seniority": "Emperor"}}),
        ("search_prospects", {"kind": "contacts", "limit": 0}),
        ("search_prospects", {"kind": "people"}),
        ("start_research", {"kind": "contacts"}),
        ("start_research", {"kind": "contacts", "contacts": [{"nickname": "x"}]}),
        ("start_seo_job", {"workflow": "serp_analysis", "params": {}}),
        ("start_seo_job", {"workflow": "nope", "params": {}}),
        ("get_job_status", {"job_ids": []}),
        ("wait_for_job", {"job_id": "x" * 500}),
        ("get_job_result", {"job_id": "sea_1", "limit": 500}),
        ("explain_error", {}),
        ("explain_error", {"http_status": 42}),
    ):
        result = await call(client, tool, args)
        assert result.is_error, (tool, args, text_of(result))
        check_text(result, label=f"{tool} {args}"[:80])


async def test_search_and_seo_success(client: Client) -> None:
    for kind in ("contacts", "companies"):
        result = await call(client, "search_prospects", {"kind": kind, "query": "CTO"})
        check_text(result, label=f"search {kind}")
    for workflow, params in (
        ("serp_analysis", {"keyword": "crm"}),
        ("keyword_metrics", {"keywords": ["crm", "erp"]}),
        ("local_audit", {"domain": "acme.example", "location": "Austin, TX"}),
    ):
        result = await call(
            client, "start_seo_job", {"workflow": workflow, "params": params, "wait_seconds": 45}
        )
        assert not result.is_error, text_of(result)
        check_text(result, label=workflow)
        job = structured(result)["job_id"]
        check_text(await call(client, "get_job_result", {"job_id": job}), label=f"{workflow} r")


@pytest.mark.parametrize(
    "key", ["sandbox-insufficient-credits", "sandbox-missing-license", "sandbox-revoked"]
)
async def test_upstream_refusals(make_client: Callable[..., Any], key: str) -> None:
    async with make_client(
        JOBRELAY_SANDBOX="1", SEAMLESS_API_KEY=key, AGENTSEO_API_KEY=key
    ) as client:
        research = await _start(client, "ada@acme.test")
        seo = await call(
            client, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
        )
        usage = await call(client, "get_usage", {})
    for label, result in (("research", research), ("seo", seo)):
        assert result.is_error, text_of(result)
        check_text(result, label=f"{key} {label}")
    check_text(usage, label=f"{key} usage")


async def test_zero_credits_never_suggest_fewer_targets(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.set_faults({"initial_credits": 1})
    check_text(await _start(client, "ada@acme.test", wait=30), label="last credit")
    two = {"kind": "contacts", "contacts": [{"email": "b@acme.test"}, {"email": "c@acme.test"}]}
    refused = await call(client, "start_research", two)
    assert refused.is_error, text_of(refused)
    check_text(refused, label="0 credits")
    check_text(await call(client, "get_usage", {}), label="usage at 0")
    said = await call(client, "explain_error", {"code": "insufficientCredits", "http_status": 422})
    check_text(said, label="explained 422")


async def test_get_usage_states_times_as_utc(make_client: Callable[..., Any]) -> None:
    async with make_client(JOBRELAY_CREDIT_BUDGET="1") as client:
        fresh = check_text(await call(client, "get_usage", {}), label="usage")
        assert re.search(r"resets at \d\d:\d\d:\d\dZ \(in [^)]+\)", fresh), fresh
        check_text(await _start(client, "ada@acme.test", wait=30), label="spend budget")
        over = await _start(client, "bob@acme.test")
        assert over.is_error
        check_text(over, label="budget exceeded")
        check_text(await call(client, "get_usage", {}), label="budget spent")


def _explain_cases() -> list[dict[str, Any]]:
    """One explain_error call per way the catalogue can be reached: each upstream code, each
    job status, each HTTP status, for the row's provider (or auto)."""
    cases: list[dict[str, Any]] = []
    for row in CATALOGUE.values():
        provider = row.provider or "auto"
        cases += [{"code": c, "provider": provider} for c in row.api_codes]
        cases += [{"job_status": s, "provider": provider} for s in row.job_statuses]
        cases += [
            {"http_status": s, "provider": provider} for s in row.statuses if isinstance(s, int)
        ]
    unique = {json.dumps(c, sort_keys=True): c for c in cases}
    return list(unique.values())


async def test_explain_error_over_the_whole_catalogue(client: Client) -> None:
    cases = _explain_cases()
    assert len(cases) > 40
    cases += [
        {"job_status": "not found"},
        {"job_status": "No license or credits available"},
        {"job_status": "contact-already-researched"},
        {"job_status": "on-hold"},
        {"http_status": 409, "provider": "seamless"},
        {"http_status": 429, "headers": {"Retry-After": "30"}},
        {"body": {"error": {"code": "FORBIDDEN"}}, "http_status": 403, "provider": "agentseo"},
    ]
    for args in cases:
        result = await call(client, "explain_error", args)
        check_text(result, label=json.dumps(args))


@pytest.mark.parametrize(
    ("pasted", "says"),
    [
        ("not found", 'status "not found"'),
        ("No license or credits available", "no Public API licence or no research credits"),
        ("  No   License or credits AVAILABLE ", "no Public API licence or no research credits"),
    ],
)
async def test_explain_error_reads_seamless_statuses_pasted_with_spaces(
    client: Client, pasted: str, says: str
) -> None:
    result = await call(client, "explain_error", {"job_status": pasted})
    text = check_text(result, label=pasted)
    assert says in text, text
    assert structured(result)["advice"]["provider"] == "seamless"
    assert "Nothing in the input" not in text


async def test_a_conflict_wait_is_given_in_seconds_and_utc(client: Client) -> None:
    result = await call(client, "explain_error", {"http_status": 409, "provider": "seamless"})
    advice = structured(result)["advice"]
    step = next_step(check_text(result, label="409"))
    at = advice["retry_at"][11:19] + "Z"
    assert step == (
        f"Retry the same tool once after about {at} "
        f"(in about {int(advice['retry_after_seconds'])} s)."
    ), step
