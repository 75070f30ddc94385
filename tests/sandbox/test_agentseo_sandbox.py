"""The simulated AgentSEO API, request by request, through the mounted sandbox app.

Time is a stepped virtual clock: it moves only when the test advances it or the app sleeps
through it (`?sync=true`), so every envelope field, header and budget can be asserted exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from email.utils import formatdate
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from mcp_server._clock import ScaledClock
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, create_sandbox_app
from mcp_server.upstream.agentseo import PLAN_BUDGETS, Plan

EPOCH = 1_790_000_000.0
UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
REQ_RE = re.compile(r"^req_[A-Za-z0-9_-]{16}$")
SERP = {"keyword": "running shoes", "location_code": 2840}


class SteppedClock(ScaledClock):
    """Virtual time that moves only when advanced or slept through (a sleep returns at once)."""

    def __init__(self) -> None:
        super().__init__(1.0, epoch=EPOCH)
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now

    def time(self) -> float:
        return EPOCH + self.now

    def rescale(self, scale: float) -> None:
        self.scale = scale

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)
        await anyio.lowlevel.checkpoint()


class Sandbox:
    def __init__(self, state: SandboxState, clock: SteppedClock, client: httpx.AsyncClient) -> None:
        self.state = state
        self.clock = clock
        self.client = client

    async def post(self, path: str, body: Any, *, key: str = "k", **kwargs: Any) -> httpx.Response:
        return await self.client.post(path, json=body, headers={"x-api-key": key}, **kwargs)

    async def get(self, path: str, *, key: str = "k", **kwargs: Any) -> httpx.Response:
        headers = {"x-api-key": key, **kwargs.pop("headers", {})}
        return await self.client.get(path, headers=headers, **kwargs)

    async def job(self, job_id: str, key: str = "k") -> dict[str, Any]:
        r = await self.get(f"/jobs/{job_id}", key=key)
        assert r.status_code == 200, r.text
        body: dict[str, Any] = r.json()
        return body


def make_state(**faults: Any) -> tuple[SandboxState, SteppedClock]:
    clock = SteppedClock()
    return SandboxState(clock=clock, faults=Faults(**{"job_seconds": 10.0, **faults})), clock


@pytest.fixture
async def sandbox() -> AsyncIterator[Sandbox]:
    state, clock = make_state()
    transport = httpx.ASGITransport(create_sandbox_app(state))
    async with httpx.AsyncClient(
        transport=transport, base_url=f"http://sandbox{AGENTSEO_PREFIX}"
    ) as client:
        yield Sandbox(state, clock, client)


def error_of(r: httpx.Response) -> dict[str, Any]:
    """The error object, after checking the envelope shape and the request id it shares."""
    body = r.json()
    assert list(body) == ["error"]
    err: dict[str, Any] = body["error"]
    assert list(err) == ["code", "message", "details", "request_id"]
    assert REQ_RE.match(err["request_id"])
    assert r.headers["x-request-id"] == err["request_id"]
    return err


def rate_headers(r: httpx.Response) -> tuple[str, str, str]:
    return (
        r.headers["ratelimit-limit"],
        r.headers["ratelimit-remaining"],
        r.headers["ratelimit-reset"],
    )


# -- envelopes ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_workflow_post_answers_202_with_the_documented_queued_envelope(
    sandbox: Sandbox,
) -> None:
    r = await sandbox.post("/analyze/serp", SERP)

    assert r.status_code == 202
    body = r.json()
    job_id = body["jobId"]
    assert UUID_RE.match(job_id)
    assert body == {
        "jobId": job_id,
        "status": "queued",
        "phase": "queued",
        "progress": {"percent": 0, "indeterminate": True, "eta_seconds": 10},
        "attempt": 1,
        "max_attempts": 3,
        "message": "Job queued.",
        "poll_url": f"/agentseo/api/v1/jobs/{job_id}",
        "events_url": f"/agentseo/api/v1/jobs/{job_id}/events",
        "retry_after_seconds": 2,
        "upstream": {
            "provider": "dataforseo",
            "task_id": None,
            "status_code": None,
            "status_message": None,
            "next_poll_at": None,
        },
    }
    assert REQ_RE.match(r.headers["x-request-id"])
    assert r.headers["date"] == formatdate(EPOCH, usegmt=True)
    assert rate_headers(r) == ("60", "59", "60")
    assert "retry-after" not in r.headers
    assert sandbox.state.stats()["paid_posts"] == 1


@pytest.mark.anyio
async def test_poll_url_from_the_envelope_resolves_on_the_mounted_app(sandbox: Sandbox) -> None:
    created = (await sandbox.post("/analyze/serp", SERP)).json()
    r = await sandbox.client.get(f"http://sandbox{created['poll_url']}", headers={"x-api-key": "k"})
    assert r.status_code == 200
    assert r.json()["jobId"] == created["jobId"]


@pytest.mark.anyio
async def test_attribution_headers_are_echoed_on_the_job(sandbox: Sandbox) -> None:
    r = await sandbox.client.post(
        "/analyze/serp",
        json=SERP,
        headers={"x-api-key": "k", "x-project-id": "proj-1", "x-workflow-id": "wf-9"},
    )
    created = r.json()
    assert (created["project_id"], created["workflow_id"]) == ("proj-1", "wf-9")
    polled = await sandbox.job(created["jobId"])
    assert (polled["project_id"], polled["workflow_id"]) == ("proj-1", "wf-9")
    plain = (await sandbox.post("/analyze/serp", SERP)).json()
    assert "project_id" not in plain
    assert "workflow_id" not in plain


# (virtual second, status, phase, percent, indeterminate, eta, retry_after, upstream code)
LIFECYCLE = [
    (0.5, "queued", "queued", 0, True, 10, 2, None),
    (1.5, "processing", "fetching", 10, False, 9, 2, 40601),
    (2.5, "processing", "fetching", 20, False, 8, 2, 40601),
    (3.5, "processing", "waiting_upstream", 30, True, 7, 2, 40602),
    (5.5, "processing", "waiting_upstream", 50, True, 5, 2, 40602),
    (6.5, "processing", "analyzing", 60, False, 4, 2, 20000),
    (8.5, "processing", "analyzing", 80, False, 2, 2, 20000),
    (9.5, "processing", "finalizing", 90, False, 1, 2, 20000),
    (10.0, "completed", "completed", 100, False, 0, None, 20000),
]


@pytest.mark.anyio
async def test_job_moves_through_phases_as_virtual_time_passes(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    seen = []
    for at, *_ in LIFECYCLE:
        sandbox.clock.now = at
        env = await sandbox.job(job_id)
        seen.append(
            (
                at,
                env["status"],
                env["phase"],
                env["progress"]["percent"],
                env["progress"]["indeterminate"],
                env["progress"]["eta_seconds"],
                env["retry_after_seconds"],
                env["upstream"]["status_code"],
            )
        )
    assert seen == LIFECYCLE


@pytest.mark.anyio
async def test_waiting_envelope_names_the_upstream_task_and_next_poll(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.now = 3.5
    env = await sandbox.job(job_id)
    assert env["message"] == "Waiting for upstream provider results."
    assert env["upstream"]["status_message"] == "Task In Queue."
    assert re.match(r"^\d{8}-1535-0066-0000-[0-9a-f]{12}$", env["upstream"]["task_id"])
    assert env["upstream"]["task_id"].endswith(job_id.replace("-", "")[-12:])
    # 3.5 s + retry_after 2 s after the epoch
    assert env["upstream"]["next_poll_at"] == "2026-09-21T14:13:25.500Z"


@pytest.mark.anyio
async def test_long_job_suggests_longer_polls_capped_at_ten_seconds() -> None:
    state, clock = make_state(job_seconds=200.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(create_sandbox_app(state)),
        base_url=f"http://sandbox{AGENTSEO_PREFIX}",
        headers={"x-api-key": "k"},
    ) as client:
        job_id = (await client.post("/analyze/serp", json=SERP)).json()["jobId"]
        clock.now = 170.0
        near_end = (await client.get(f"/jobs/{job_id}")).json()
        clock.now = 50.0
        early = (await client.get(f"/jobs/{job_id}")).json()
    assert (early["progress"]["eta_seconds"], early["retry_after_seconds"]) == (150, 10)
    assert (near_end["progress"]["eta_seconds"], near_end["retry_after_seconds"]) == (30, 6)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "workflow"),
    [
        ("/analyze/serp", SERP, "serp_analysis"),
        (
            "/keyword-metrics/overview",
            {"keywords": ["crm software", "best crm"]},
            "keyword_metrics",
        ),
        ("/audit/local", {"domain": "acme.com", "location": "Austin, TX"}, "local_audit"),
    ],
)
async def test_completed_job_carries_a_result_with_agent_workflow(
    sandbox: Sandbox, path: str, body: dict[str, Any], workflow: str
) -> None:
    job_id = (await sandbox.post(path, body)).json()["jobId"]
    sandbox.clock.now = 10.0
    env = await sandbox.job(job_id)

    assert env["status"] == "completed"
    assert "error" not in env
    result = env["result"]
    assert result["workflow"] == workflow
    flow = result["agent_workflow"]
    assert list(flow) == [
        "decision",
        "confidence",
        "recommended_actions",
        "evidence",
        "limitations",
        "next_calls",
    ]
    assert isinstance(flow["decision"], str)
    assert 0 < flow["confidence"] <= 1
    assert flow["recommended_actions"]
    assert flow["evidence"]
    assert any("Simulated sandbox data" in x for x in flow["limitations"])
    for call in flow["next_calls"]:
        assert call["method"] == "POST"
        assert call["path"] in {"/analyze/serp", "/keyword-metrics/overview", "/audit/local"}


@pytest.mark.anyio
async def test_serp_result_lists_ranked_results_features_and_difficulty(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", {**SERP, "depth": 20})).json()["jobId"]
    sandbox.clock.now = 10.0
    result = (await sandbox.job(job_id))["result"]
    assert [r["position"] for r in result["results"]] == list(range(1, 21))
    assert len({r["domain"] for r in result["results"]}) == 20
    for item in result["results"]:
        assert item["url"].startswith(f"https://www.{item['domain']}/")
        assert item["title"]
        assert item["snippet"]
    assert 1 <= result["difficulty"] <= 100
    assert len(result["features"]) >= 2
    assert result["location"] == {"code": 2840, "name": "United States"}


@pytest.mark.anyio
async def test_results_are_deterministic_per_seed_and_location_code_wins(
    sandbox: Sandbox,
) -> None:
    async def result_of(body: dict[str, Any]) -> dict[str, Any]:
        job_id = (await sandbox.post("/analyze/serp", body)).json()["jobId"]
        sandbox.clock.advance(10.0)
        result: dict[str, Any] = (await sandbox.job(job_id))["result"]
        return result

    first = await result_of(SERP)
    again = await result_of(SERP)
    named_and_coded = await result_of({**SERP, "location": "London,England,United Kingdom"})
    uk = await result_of({"keyword": "running shoes", "location": "London,England,United Kingdom"})
    sandbox.state.set_faults({"seed": 7})
    reseeded = await result_of(SERP)

    assert again == first
    assert named_and_coded == first
    assert uk["location"] == {"code": 1006886, "name": "London,England,United Kingdom"}
    assert uk["results"] != first["results"]
    assert reseeded["results"] != first["results"]


@pytest.mark.anyio
async def test_keyword_metrics_have_volume_cpc_competition_and_a_monthly_trend(
    sandbox: Sandbox,
) -> None:
    body = {"keywords": ["crm software", "CRM Software", "best crm"]}
    job_id = (await sandbox.post("/keyword-metrics/overview", body)).json()["jobId"]
    sandbox.clock.now = 10.0
    result = (await sandbox.job(job_id))["result"]
    rows = result["keywords"]
    assert [r["keyword"] for r in rows] == ["crm software", "best crm"]  # case-insensitive dedupe
    for row in rows:
        assert row["search_volume"] > 0
        assert row["cpc"] >= 0
        assert 0 <= row["competition"] <= 1
        assert row["competition_level"] in {"LOW", "MEDIUM", "HIGH"}
        assert [p["month"] for p in row["trend"]][-1] == "2026-09"  # the job's virtual month
        assert len(row["trend"]) == 12
    assert result["totals"] == {
        "keywords": 2,
        "search_volume": sum(r["search_volume"] for r in rows),
    }


@pytest.mark.anyio
async def test_local_audit_scores_and_issues(sandbox: Sandbox) -> None:
    body = {"domain": "https://www.Acme-Plumbing.com/contact", "location": "Austin, TX"}
    job_id = (await sandbox.post("/audit/local", body)).json()["jobId"]
    sandbox.clock.now = 10.0
    result = (await sandbox.job(job_id))["result"]
    assert result["target"] == {
        "domain": "acme-plumbing.com",
        "business_name": "Acme Plumbing",
        "location": {"code": None, "name": "Austin, TX"},
    }
    scores = result["scores"]
    assert set(scores) == {
        "overall",
        "google_business_profile",
        "reviews",
        "citations",
        "nap_consistency",
        "on_page",
    }
    assert all(0 <= v <= 100 for v in scores.values())
    for issue in result["issues"]:
        assert issue["severity"] in {"high", "medium", "low"}
        assert issue["recommendation"]


# -- failures -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fail_transient_target_retries_upstream_then_fails_retryable(
    sandbox: Sandbox,
) -> None:
    job_id = (await sandbox.post("/analyze/serp", {"keyword": "shoes fail-transient"})).json()[
        "jobId"
    ]
    attempts = []
    for at in (1.5, 4.5, 5.5, 6.5, 7.5, 8.5, 9.9):
        sandbox.clock.now = at
        env = await sandbox.job(job_id)
        attempts.append((env["attempt"], env["phase"], env["upstream"]["status_code"]))
    sandbox.clock.now = 10.0
    final = await sandbox.job(job_id)

    assert attempts == [
        (1, "fetching", 40601),
        (1, "waiting_upstream", 40602),
        (2, "fetching", 50000),
        (2, "waiting_upstream", 40602),
        (3, "fetching", 50000),
        (3, "waiting_upstream", 40602),
        (3, "waiting_upstream", 40602),
    ]
    assert final["status"] == "failed"
    assert final["phase"] == "failed"
    assert final["attempt"] == final["max_attempts"] == 3
    assert final["error"] == {
        "code": "UPSTREAM_FETCH_FAILED",
        "message": "The upstream provider failed after 3 attempts; resubmitting later may succeed.",
        "retryable": True,
    }
    assert final["retry_after_seconds"] == 30
    assert final["progress"] == {"percent": 80, "indeterminate": False, "eta_seconds": None}
    assert "result" not in final


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/analyze/serp", {"keyword": "fail-permanent"}),
        ("/keyword-metrics/overview", {"keywords": ["ok", "x fail-permanent fail-transient"]}),
        ("/audit/local", {"domain": "fail-permanent.example.com", "location": "Austin"}),
        ("/audit/local", {"domain": "Fail-Permanent Pizza", "location": "Austin"}),
    ],
)
async def test_fail_permanent_target_fails_early_and_not_retryable(
    sandbox: Sandbox, path: str, body: dict[str, Any]
) -> None:
    job_id = (await sandbox.post(path, body)).json()["jobId"]
    sandbox.clock.now = 2.9
    assert (await sandbox.job(job_id))["status"] == "processing"
    sandbox.clock.now = 3.0
    final = await sandbox.job(job_id)
    assert final["status"] == "failed"
    assert final["error"] == {
        "code": "INVALID_TARGET",
        "message": "The upstream provider rejected the target; change the inputs.",
        "retryable": False,
    }
    assert final["retry_after_seconds"] is None
    assert final["upstream"]["status_code"] == 40501


# -- sync=true ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sync_answers_200_with_the_result_when_the_job_ends_in_the_window(
    sandbox: Sandbox,
) -> None:
    r = await sandbox.post("/analyze/serp", SERP, params={"sync": "true"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "completed"
    assert body["result"]["workflow"] == "serp_analysis"
    assert sandbox.clock.now == 10.0  # held for the job's 10 virtual seconds
    assert "retry-after" not in r.headers
    assert await sandbox.job(body["jobId"]) == body


@pytest.mark.anyio
async def test_sync_answers_200_with_the_error_when_the_job_fails_in_the_window(
    sandbox: Sandbox,
) -> None:
    r = await sandbox.post("/analyze/serp", {"keyword": "fail-permanent"}, params={"sync": "1"})
    assert r.status_code == 200
    assert r.json()["error"]["code"] == "INVALID_TARGET"
    assert sandbox.clock.now == 3.0


@pytest.mark.anyio
async def test_sync_answers_202_with_retry_after_when_the_window_ends_first() -> None:
    state, clock = make_state(job_seconds=60.0)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(create_sandbox_app(state)),
        base_url=f"http://sandbox{AGENTSEO_PREFIX}",
        headers={"x-api-key": "k"},
    ) as client:
        r = await client.post("/analyze/serp", json=SERP, params={"sync": "true"})
    assert r.status_code == 202
    assert clock.now == 10.0
    body = r.json()
    assert (body["status"], body["phase"], body["progress"]["percent"]) == (
        "processing",
        "fetching",
        10,
    )
    assert body["progress"]["eta_seconds"] == 50
    assert body["retry_after_seconds"] == 10
    assert r.headers["retry-after"] == "10"
    assert "result" not in body


# -- validation ---------------------------------------------------------------------------------

REQUIRED = "Domain or Business Name is required"
NO_LOCATION = "Location or location_code is required"


def errs(*messages: str) -> dict[str, list[str]]:
    return {"_errors": list(messages)}


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("path", "body", "details"),
    [
        ("/analyze/serp", {}, {"keyword": errs("Required")}),
        ("/analyze/serp", {"keyword": 5}, {"keyword": errs("Expected string, received number")}),
        (
            "/analyze/serp",
            {"keyword": "  "},
            {"keyword": errs("String must contain at least 1 character(s)")},
        ),
        (
            "/analyze/serp",
            {"keyword": "x", "location_code": "2840"},
            {"location_code": errs("Expected number, received string")},
        ),
        (
            "/analyze/serp",
            {"keyword": "x", "location_code": 28.5},
            {"location_code": errs("Expected integer, received float")},
        ),
        (
            "/analyze/serp",
            {"keyword": "x", "depth": 0},
            {"depth": errs("Number must be greater than or equal to 1")},
        ),
        (
            "/analyze/serp",
            {"keyword": "x", "device": "tablet"},
            {
                "device": errs(
                    "Invalid enum value. Expected 'desktop' | 'mobile', received 'tablet'"
                )
            },
        ),
        ("/analyze/serp", [SERP], errs("Expected object, received array")),
        ("/keyword-metrics/overview", {}, {"keywords": errs("Required")}),
        (
            "/keyword-metrics/overview",
            {"keywords": "crm"},
            {"keywords": errs("Expected array, received string")},
        ),
        (
            "/keyword-metrics/overview",
            {"keywords": []},
            {"keywords": errs("Array must contain at least 1 element(s)")},
        ),
        (
            "/keyword-metrics/overview",
            {"keywords": ["x"] * 101},
            {"keywords": errs("Array must contain at most 100 element(s)")},
        ),
        (
            "/keyword-metrics/overview",
            {"keywords": ["ok", True]},
            {"keywords": {"1": errs("Expected string, received boolean")}},
        ),
        ("/audit/local", {"location": "Austin"}, {"domain": errs(REQUIRED)}),
        (
            "/audit/local",
            {"domain": "", "location": "Austin"},
            {"domain": errs(REQUIRED)},
        ),
        (
            "/audit/local",
            {"business_name": "Joe's", "location": "Austin"},
            errs("Unrecognized key(s) in object: 'business_name'"),
        ),
        ("/audit/local", {"domain": "Joe's"}, {"location": errs(NO_LOCATION)}),
        ("/audit/local", {}, {"domain": errs(REQUIRED), "location": errs(NO_LOCATION)}),
        ("/audit/local/batch", {}, {"targets": errs("Required")}),
        (
            "/audit/local/batch",
            {"targets": []},
            {"targets": errs("Array must contain at least 1 element(s)")},
        ),
        (
            "/audit/local/batch",
            {"targets": [{"domain": "a.com", "location": "x"}, {"location": "y"}, 3]},
            {
                "targets": {
                    "1": {"domain": errs(REQUIRED)},
                    "2": errs("Expected object, received number"),
                }
            },
        ),
        (
            "/audit/local/batch",
            [{"domain": "B"}],
            {"targets": {"0": {"location": errs(NO_LOCATION)}}},
        ),
        ("/audit/local/batch", "a.com", errs("Expected object, received string")),
    ],
)
async def test_invalid_parameters_are_400_with_zod_style_details(
    sandbox: Sandbox, path: str, body: Any, details: dict[str, Any]
) -> None:
    r = await sandbox.post(path, body)
    assert r.status_code == 400
    err = error_of(r)
    assert err["code"] == "INVALID_PARAMETERS"
    assert err["message"] == "The request parameters are invalid."
    assert err["details"] == details
    assert rate_headers(r) == ("60", "59", "60")
    assert sandbox.state.stats()["paid_posts"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe", b'{"keyword": "x"'])
async def test_unparseable_body_is_400_not_500(sandbox: Sandbox, raw: bytes) -> None:
    r = await sandbox.client.post(
        "/analyze/serp",
        content=raw,
        headers={"x-api-key": "k", "content-type": "application/json"},
    )
    assert r.status_code == 400
    assert error_of(r)["details"] == {"_errors": ["Malformed JSON in request body"]}


@pytest.mark.anyio
async def test_empty_body_is_validated_as_an_empty_object(sandbox: Sandbox) -> None:
    r = await sandbox.client.post("/audit/local", headers={"x-api-key": "k"})
    assert r.status_code == 400
    assert set(error_of(r)["details"]) == {"domain", "location"}


# -- auth and scenario keys ---------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("headers", [{}, {"x-api-key": ""}, {"x-api-key": "   "}])
async def test_missing_key_is_401_without_rate_headers(
    sandbox: Sandbox, headers: dict[str, str]
) -> None:
    for r in (
        await sandbox.client.post("/analyze/serp", json=SERP, headers=headers),
        await sandbox.client.get("/jobs/abc", headers=headers),
    ):
        assert r.status_code == 401
        err = error_of(r)
        assert err["code"] == "UNAUTHORIZED"
        assert err["message"] == "Missing or invalid API key. Send it in the x-api-key header."
        assert err["details"] == {}
        assert "ratelimit-limit" not in r.headers
        assert r.headers["date"] == formatdate(EPOCH, usegmt=True)


@pytest.mark.anyio
async def test_revoked_key_is_403_on_workload_and_control_endpoints(sandbox: Sandbox) -> None:
    for r in (
        await sandbox.post("/analyze/serp", SERP, key="sandbox-revoked"),
        await sandbox.get("/jobs/abc", key="sandbox-revoked"),
        await sandbox.get("/jobs/abc/events", key="sandbox-revoked"),
    ):
        assert r.status_code == 403
        err = error_of(r)
        assert err["code"] == "API_KEY_REVOKED"
        assert err["message"] == "This API key has been revoked or has expired."
        assert "ratelimit-limit" not in r.headers


@pytest.mark.anyio
async def test_credits_exhausted_key_gets_402_on_work_but_can_still_poll(
    sandbox: Sandbox,
) -> None:
    key = "sandbox-insufficient-credits"
    for path, body in [
        ("/analyze/serp", SERP),
        ("/keyword-metrics/overview", {"keywords": ["x"]}),
        ("/audit/local", {"domain": "a.com", "location": "x"}),
        ("/audit/local/batch", {"targets": [{"domain": "a.com", "location": "x"}]}),
    ]:
        r = await sandbox.post(path, body, key=key)
        assert r.status_code == 402
        err = error_of(r)
        assert err["code"] == "CREDITS_EXHAUSTED"
        assert err["details"] == {"credits_remaining": 0}
        assert r.headers["ratelimit-limit"] == "60"
    polled = await sandbox.get("/jobs/some-job", key=key)
    assert polled.status_code == 404  # polling reaches the job lookup, not a 402
    assert polled.headers["ratelimit-limit"] == "600"
    assert sandbox.state.stats()["paid_posts"] == 0


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "code", "reason"),
    [
        ("sandbox-missing-license", "FORBIDDEN", "no_active_license"),
        ("sandbox-insufficient-scope", "DOMAIN_NOT_ALLOWED", "allowed_domain_policy"),
    ],
)
async def test_license_and_scope_keys_get_403_on_work_only(
    sandbox: Sandbox, key: str, code: str, reason: str
) -> None:
    r = await sandbox.post("/audit/local", {"domain": "a.com", "location": "x"}, key=key)
    assert r.status_code == 403
    err = error_of(r)
    assert (err["code"], err["details"]) == (code, {"reason": reason})
    assert rate_headers(r) == ("60", "59", "60")
    assert (await sandbox.get("/jobs/x", key=key)).status_code == 404


# -- not found ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_unknown_job_and_other_keys_job_are_404(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    for r, wanted in (
        (await sandbox.get("/jobs/no-such-job"), "no-such-job"),
        (await sandbox.get(f"/jobs/{job_id}", key="another-key"), job_id),
        (await sandbox.get(f"/jobs/{job_id}/events", key="another-key"), job_id),
    ):
        assert r.status_code == 404
        err = error_of(r)
        assert err["code"] == "NOT_FOUND"
        assert err["message"] == f"Job {wanted} was not found."
        assert err["details"] == {"jobId": wanted}
        assert r.headers["ratelimit-limit"] == "600"


@pytest.mark.anyio
async def test_unknown_endpoint_and_wrong_method_use_the_error_envelope(
    sandbox: Sandbox,
) -> None:
    missing = await sandbox.post("/extract", {"url": "https://example.com"})
    wrong = await sandbox.get("/analyze/serp")
    assert missing.status_code == 404
    assert error_of(missing)["code"] == "NOT_FOUND"
    assert wrong.status_code == 405
    assert error_of(wrong)["code"] == "METHOD_NOT_ALLOWED"
    stats = sandbox.state.stats()["responses"]
    assert stats["agentseo POST /extract 404"] == 1
    assert stats["agentseo GET /analyze/serp 405"] == 1


# -- rate limits --------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("plan", list(Plan))
async def test_each_plan_announces_its_workload_and_control_budgets(
    sandbox: Sandbox, plan: Plan
) -> None:
    sandbox.state.set_faults({"agentseo_plan": plan.value})
    workload, control = PLAN_BUDGETS[plan]
    work = await sandbox.post("/analyze/serp", SERP)
    poll = await sandbox.get(f"/jobs/{work.json()['jobId']}")
    assert rate_headers(work) == (str(workload), str(workload - 1), "60")
    assert rate_headers(poll) == (str(control), str(control - 1), "60")


@pytest.mark.anyio
async def test_workload_budget_runs_out_independently_of_control(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.advance(20.0)
    for i in range(58):
        r = await sandbox.post("/analyze/serp", {"keyword": f"k{i}"})
        assert r.status_code == 202
    last = await sandbox.post("/audit/local", {})  # a 400 still spends the budget
    assert last.status_code == 400
    assert rate_headers(last) == ("60", "0", "40")

    limited = await sandbox.post("/analyze/serp", SERP)
    assert limited.status_code == 429
    err = error_of(limited)
    assert err["code"] == "RATE_LIMITED"
    assert err["message"] == "Rate limit exceeded for the workload budget (60 requests per minute)."
    assert err["details"] == {"budget": "workload", "limit": 60, "reset_seconds": 40}
    assert rate_headers(limited) == ("60", "0", "40")
    assert "retry-after" not in limited.headers
    assert sandbox.state.stats()["paid_posts"] == 59

    polled = await sandbox.get(f"/jobs/{job_id}")
    assert polled.status_code == 200
    assert rate_headers(polled) == ("600", "599", "60")

    sandbox.clock.advance(39.5)
    assert (await sandbox.post("/analyze/serp", SERP)).status_code == 429
    assert rate_headers(await sandbox.post("/analyze/serp", SERP))[2] == "1"
    sandbox.clock.advance(0.5)
    fresh = await sandbox.post("/analyze/serp", SERP)
    assert fresh.status_code == 202
    assert rate_headers(fresh) == ("60", "59", "60")


@pytest.mark.anyio
async def test_control_budget_counts_polls_and_event_stream_connects(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.now = 10.0  # terminal, so an event stream ends and ASGITransport returns
    for _ in range(598):
        assert (await sandbox.get(f"/jobs/{job_id}")).status_code == 200
    stream = await sandbox.get(f"/jobs/{job_id}/events")
    assert stream.status_code == 200
    assert rate_headers(stream) == ("600", "1", "60")
    assert (await sandbox.get(f"/jobs/{job_id}")).status_code == 200

    limited = await sandbox.get(f"/jobs/{job_id}/events")
    assert limited.status_code == 429
    assert limited.headers["content-type"] == "application/json"
    assert error_of(limited)["details"]["budget"] == "control"
    assert rate_headers(limited) == ("600", "0", "60")
    assert (await sandbox.post("/analyze/serp", SERP)).status_code == 202  # workload unaffected


@pytest.mark.anyio
async def test_budgets_are_per_api_key(sandbox: Sandbox) -> None:
    for _ in range(60):
        await sandbox.post("/analyze/serp", {}, key="alice")
    assert (await sandbox.post("/analyze/serp", {}, key="alice")).status_code == 429
    other = await sandbox.post("/analyze/serp", SERP, key="bob")
    assert other.status_code == 202
    assert rate_headers(other) == ("60", "59", "60")


# -- batch, duplicates, reset -------------------------------------------------------------------


@pytest.mark.anyio
async def test_batch_queues_one_job_per_target(sandbox: Sandbox) -> None:
    body = {
        "targets": [
            {"domain": "acme.com", "location": "Austin, TX"},
            {"domain": "Joe's Pizza", "location": "Austin, TX", "location_code": 1023191},
        ]
    }
    r = await sandbox.client.post(
        "/audit/local/batch", json=body, headers={"x-api-key": "k", "x-workflow-id": "wf"}
    )
    assert r.status_code == 202
    ids = r.json()  # an array of job ids, as published
    assert isinstance(ids, list)
    assert len(ids) == 2
    assert all(isinstance(i, str) for i in ids)
    assert rate_headers(r) == ("60", "59", "60")  # one workload request
    assert sandbox.state.stats()["paid_posts"] == 1
    first = await sandbox.job(ids[0])
    assert first["status"] == "queued"
    assert first["workflow_id"] == "wf"

    sandbox.clock.now = 10.0
    second = await sandbox.job(ids[1])
    assert second["result"]["target"]["business_name"] == "Joe's Pizza"
    assert second["result"]["target"]["location"] == {
        "code": 1023191,
        "name": "New York,New York,United States",
    }
    bare = await sandbox.post("/audit/local/batch", body["targets"])
    assert bare.status_code == 202
    assert len(bare.json()) == 2


@pytest.mark.anyio
async def test_identical_workflow_posts_are_recorded_as_duplicate_spend(
    sandbox: Sandbox,
) -> None:
    await sandbox.post("/analyze/serp", SERP)
    await sandbox.post("/analyze/serp", SERP)
    await sandbox.post("/analyze/serp", {"keyword": "other"})
    stats = sandbox.state.stats()
    assert (stats["paid_posts"], stats["duplicate_paid_posts"]) == (3, 1)
    assert stats["responses"]["agentseo POST /analyze/serp 202"] == 3


@pytest.mark.anyio
async def test_reset_drops_jobs_and_rate_windows(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    for _ in range(59):
        await sandbox.post("/analyze/serp", {})
    assert (await sandbox.post("/analyze/serp", SERP)).status_code == 429

    sandbox.state.reset()
    assert (await sandbox.get(f"/jobs/{job_id}")).status_code == 404
    fresh = await sandbox.post("/analyze/serp", SERP)
    assert fresh.status_code == 202
    assert rate_headers(fresh) == ("60", "59", "60")


# -- event stream through the in-process transport (complete streams only) ----------------------


@pytest.mark.anyio
async def test_event_stream_of_a_finished_job_is_retry_then_the_terminal_event(
    sandbox: Sandbox,
) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.now = 15.0
    final = await sandbox.job(job_id)

    r = await sandbox.get(f"/jobs/{job_id}/events")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert r.headers["cache-control"] == "no-cache"
    data = json.dumps(final, separators=(",", ":"))
    assert r.text == f"retry: 1000\nid: 11\nevent: completed\ndata: {data}\n\n"


@pytest.mark.anyio
async def test_event_stream_resumed_past_the_terminal_event_is_204(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.now = 10.0
    r = await sandbox.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "11"})
    assert r.status_code == 204
    assert r.content == b""
    assert r.headers["ratelimit-limit"] == "600"


@pytest.mark.anyio
async def test_event_stream_replays_missed_events_of_a_finished_job(sandbox: Sandbox) -> None:
    job_id = (await sandbox.post("/analyze/serp", SERP)).json()["jobId"]
    sandbox.clock.now = 10.0
    r = await sandbox.get(f"/jobs/{job_id}/events", headers={"Last-Event-ID": "8"})
    lines = r.text.splitlines()
    assert lines[0] == "retry: 1000"
    assert [ln for ln in lines if ln.startswith(("id:", "event:"))] == [
        "id: 9",
        "event: progress",
        "id: 10",
        "event: status",
        "id: 11",
        "event: completed",
    ]


@pytest.mark.anyio
async def test_an_audit_needs_location_even_with_a_location_code(sandbox: Sandbox) -> None:
    """Published: `location` is required on /audit/local; `location_code` only wins over it."""
    for path, body in (
        ("/audit/local", {"domain": "acme.com", "location_code": 2840}),
        ("/audit/local/batch", {"targets": [{"domain": "acme.com", "location_code": 2840}]}),
    ):
        r = await sandbox.client.post(path, json=body, headers={"x-api-key": "k"})
        assert r.status_code == 400, (path, r.text)
        assert "Location is required" in r.text
