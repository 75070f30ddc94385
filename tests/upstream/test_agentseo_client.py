"""AgentSEOClient request/response behaviour against the sandbox (in process) and MockTransport.

Streaming (`follow`) is tested over a real loopback server in `test_sse.py`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.errors import (
    AuthenticationFailed,
    BadResponse,
    CreditsExhausted,
    InvalidRequest,
    MalformedResponse,
    NotFoundError,
    OutcomeUnknown,
    PermissionDenied,
    RateLimited,
    ServerError,
)
from mcp_server.limits import InMemoryLimiter
from mcp_server.sandbox import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_INSUFFICIENT_SCOPE,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    Faults,
    SandboxState,
)
from mcp_server.sandbox.app import AGENTSEO_PREFIX, create_sandbox_app
from mcp_server.upstream import (
    WORKFLOW_ENDPOINTS,
    AgentSEOClient,
    InvalidArguments,
    JobEnvelope,
)
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget
from mcp_server.upstream.agentseo import MAX_BATCH_TARGETS

AUDIT = {"domain": "Joe's Pizza", "location": "Austin, TX"}
ORIGIN = "http://sandbox.test"
BASE = ORIGIN + AGENTSEO_PREFIX


class World:
    def __init__(self, scale: float = 1000.0, **faults: Any) -> None:
        self.clock = ScaledClock(scale, epoch=TEST_EPOCH)
        self.state = SandboxState(faults=Faults(time_scale=scale, **faults), clock=self.clock)
        self.transport = httpx.ASGITransport(create_sandbox_app(self.state))

    def client(
        self,
        key: str = "sk-test",
        *,
        policy: BackoffPolicy | None = None,
        limiter: InMemoryLimiter | None = None,
    ) -> AgentSEOClient:
        return AgentSEOClient(
            BASE,
            key,
            clock=self.clock,
            limiter=limiter or InMemoryLimiter(self.clock),
            policy=policy or BackoffPolicy(),
            budget=RetryBudget(),
            transport=self.transport,
            tenant="k_" + key[-6:],
        )

    def responses(self, route: str) -> dict[int, int]:
        out: dict[int, int] = {}
        for key, n in self.state.responses.items():
            head, _, status = key.rpartition(" ")
            if head == f"agentseo {route}":
                out[int(status)] = out.get(int(status), 0) + n
        return out


def _mock(
    handler: Callable[[httpx.Request], httpx.Response], base: str = "https://seo.example/api/v1"
) -> AgentSEOClient:
    clock = FakeClock()
    return AgentSEOClient(
        base,
        "sk-mock",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=httpx.MockTransport(handler),
        tenant="k_mock",
    )


def _envelope(job_id: str = "j1", status: str = "processing", **extra: Any) -> dict[str, Any]:
    return {"jobId": job_id, "status": status, **extra}


# ---- success rows -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_202_queues_a_job_and_get_job_reads_it() -> None:
    # Real time: the queued state lasts seconds, so a loaded machine still sees it; then the
    # clock jumps past the job's end instead of waiting for it.
    world = World(scale=1.0, job_seconds=60.0)
    async with world.client() as client:
        env = await client.start("serp_analysis", {"keyword": "running shoes"})
        assert isinstance(env, JobEnvelope)
        assert env.status == "queued"
        assert env.terminal is False
        assert env.progress is not None
        assert env.progress.percent == 0
        assert env.poll_url == f"{AGENTSEO_PREFIX}/jobs/{env.job_id}"
        world.clock.advance(world.state.faults.job_seconds + 1)
        done = await client.get_job(env.job_id)
    assert done.job_id == env.job_id
    assert done.status == "completed"
    assert done.terminal
    assert isinstance(done.result, dict)
    assert world.responses("POST /analyze/serp") == {202: 1}
    assert world.responses("GET /jobs/{job_id}") == {200: 1}


@pytest.mark.anyio
async def test_sync_returns_the_finished_job_with_200_and_attribution_headers_echo() -> None:
    world = World(job_seconds=2.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            env = await client.start(
                "keyword_metrics",
                {"keywords": ["a", "b"]},
                sync=True,
                project_id="proj-1",
                workflow_id="wf-9",
            )
    assert isinstance(env, JobEnvelope)
    assert env.status == "completed"
    assert env.result is not None
    assert env.project_id == "proj-1"
    assert env.workflow_id == "wf-9"
    assert world.responses("POST /keyword-metrics/overview") == {200: 1}


@pytest.mark.anyio
async def test_batch_audit_returns_one_envelope_per_target() -> None:
    world = World(job_seconds=600.0)
    async with world.client() as client:
        envs = await client.start(
            "local_audit_batch",
            {
                "targets": [
                    {"domain": "a.com", "location": "Paris"},
                    {"domain": "b.com", "location": "Lyon"},
                ]
            },
        )
    assert isinstance(envs, list)
    assert len(envs) == 2
    assert all(e.status == "queued" for e in envs)
    assert len({e.job_id for e in envs}) == 2


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body",
    [
        ["j1", "j2"],
        {"jobIds": ["j1", "j2"]},
        {"jobIds": ["j1", "j2"], "jobs": [_envelope("j1", "queued"), _envelope("j2", "queued")]},
    ],
)
async def test_batch_answers_in_any_documented_shape(body: object) -> None:
    """Documented: an array of job ids; objects are still read, defensively."""
    async with _mock(lambda _: httpx.Response(202, json=body)) as client:
        envs = await client.start("local_audit_batch", {"targets": [AUDIT, AUDIT]})
    assert isinstance(envs, list)
    assert [(e.job_id, e.status) for e in envs] == [("j1", "queued"), ("j2", "queued")]


@pytest.mark.anyio
@pytest.mark.parametrize("n", [0, MAX_BATCH_TARGETS + 1])
async def test_a_batch_outside_the_limit_is_refused_before_sending(n: int) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json=["j"])

    async with _mock(handler) as client:
        with pytest.raises(InvalidArguments, match=f"1 to {MAX_BATCH_TARGETS} targets"):
            await client.start("local_audit_batch", {"targets": [AUDIT] * n})
    assert sent == []


@pytest.mark.anyio
async def test_unknown_workflow_names_the_allowed_ones_and_sends_nothing() -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json=_envelope())

    async with _mock(handler) as client:
        with pytest.raises(InvalidArguments) as info:
            await client.start("backlink_audit", {})
    err = info.value
    assert err.allowed == ("serp_analysis", "keyword_metrics", "local_audit", "local_audit_batch")
    assert err.allowed == tuple(WORKFLOW_ENDPOINTS)
    assert err.message == (
        "Unknown AgentSEO workflow 'backlink_audit'; allowed: serp_analysis, keyword_metrics, "
        "local_audit, local_audit_batch."
    )
    assert err.code.value == "invalid_input"
    assert sent == []


@pytest.mark.anyio
async def test_workflows_post_to_their_endpoints_with_params_as_the_body() -> None:
    seen: list[tuple[str, str, Any, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(
            (
                request.method,
                request.url.path,
                json.loads(request.content),
                request.url.params.get("sync"),
            )
        )
        return httpx.Response(202, json=_envelope())

    async with _mock(handler) as client:
        await client.start("serp_analysis", {"keyword": "k"}, sync=True)
        await client.start("keyword_metrics", {"keywords": ["k"]})
        await client.start("local_audit", {"domain": "a.com", "location": "Paris"})
    assert seen == [
        ("POST", "/api/v1/analyze/serp", {"keyword": "k"}, "true"),
        ("POST", "/api/v1/keyword-metrics/overview", {"keywords": ["k"]}, None),
        ("POST", "/api/v1/audit/local", {"domain": "a.com", "location": "Paris"}, None),
    ]


# ---- the documented error table, one row each ---------------------------------------------------


def _check(err: BadResponse, status: int, code: str) -> None:
    assert (err.status, err.api_code) == (status, code)
    assert err.provider == "agentseo"
    assert err.request_id is not None
    assert err.request_id.startswith("req_")


@pytest.mark.anyio
async def test_400_invalid_parameters_with_details() -> None:
    world = World()
    async with world.client() as client:
        with pytest.raises(InvalidRequest) as info:
            await client.start("local_audit", {})
    _check(info.value, 400, "INVALID_PARAMETERS")
    assert info.value.details["domain"] == {"_errors": ["Domain or Business Name is required"]}
    assert info.value.hints.limit == 60
    assert info.value.attempts == 1


@pytest.mark.anyio
async def test_401_missing_key() -> None:
    world = World()
    async with world.client("") as client:
        with pytest.raises(AuthenticationFailed) as info:
            await client.get_job("x")
    _check(info.value, 401, "UNAUTHORIZED")


@pytest.mark.anyio
async def test_402_credits_exhausted() -> None:
    world = World()
    async with world.client(KEY_INSUFFICIENT_CREDITS) as client:
        with pytest.raises(CreditsExhausted) as info:
            await client.start("serp_analysis", {"keyword": "k"})
    _check(info.value, 402, "CREDITS_EXHAUSTED")
    assert info.value.details == {"credits_remaining": 0}
    assert info.value.attempts == 1


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("key", "code"),
    [
        (KEY_REVOKED, "API_KEY_REVOKED"),
        (KEY_INSUFFICIENT_SCOPE, "DOMAIN_NOT_ALLOWED"),
        (KEY_MISSING_LICENSE, "FORBIDDEN"),
    ],
)
async def test_403_revoked_or_blocked_by_policy(key: str, code: str) -> None:
    world = World()
    async with world.client(key) as client:
        with pytest.raises(PermissionDenied) as info:
            await client.start("serp_analysis", {"keyword": "k"})
    _check(info.value, 403, code)


@pytest.mark.anyio
async def test_404_unknown_job() -> None:
    world = World()
    async with world.client() as client:
        with pytest.raises(NotFoundError) as info:
            await client.get_job("no-such-job")
    _check(info.value, 404, "NOT_FOUND")
    assert info.value.message.endswith("HTTP 404 NOT_FOUND: Job no-such-job was not found.")
    assert info.value.endpoint == "GET /jobs/{id}"


@pytest.mark.anyio
async def test_429_workload_budget_exceeded() -> None:
    # Real time: 61 requests cannot outlast the 60 s window. Each request comes from a fresh
    # process (its own limiter), as when several workers share one key: only the server can
    # see the total, so only the server can say 429.
    world = World(1.0)
    with anyio.fail_after(10):
        for _ in range(60):
            async with world.client() as client:
                await client.start("serp_analysis", {"keyword": "k"})
        async with world.client(policy=BackoffPolicy(max_attempts=1)) as client:
            with pytest.raises(RateLimited) as info:
                await client.start("serp_analysis", {"keyword": "k"})
    err = info.value
    _check(err, 429, "RATE_LIMITED")
    assert err.hints.limit == 60
    assert err.hints.remaining == 0
    assert err.hints.reset_after is not None
    assert 1 <= err.hints.reset_after <= 60
    assert err.details["budget"] == "workload"
    assert world.responses("POST /analyze/serp") == {202: 60, 429: 1}


@pytest.mark.anyio
async def test_5xx_on_a_read_is_retried_then_raised() -> None:
    world = World(error_rate=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            with pytest.raises(ServerError) as info:
                await client.get_job("any", deadline=world.clock.monotonic() + 3600)
    err = info.value
    assert err.status in (500, 502, 503)
    assert err.api_code in ("INTERNAL_ERROR", "UPSTREAM_UNAVAILABLE")
    assert err.request_id is not None
    assert err.attempts == 3
    assert sum(world.responses("GET /jobs/{job_id}").values()) == 3


# ---- envelopes and URLs -----------------------------------------------------------------------


@pytest.mark.anyio
async def test_envelopes_tolerate_unknown_statuses_and_wrong_types() -> None:
    body = _envelope(
        "j1",
        "cancelled",
        progress={"percent": "half", "eta_seconds": 3},
        attempt="one",
        error="boom",
        upstream=[1],
        brand_new_field={"x": 1},
    )
    async with _mock(lambda _: httpx.Response(200, json=body)) as client:
        env = await client.get_job("j1")
    assert env.status == "cancelled"
    assert env.terminal is False
    assert env.progress is not None
    assert env.progress.percent is None
    assert env.progress.eta_seconds == 3
    assert env.attempt is None
    assert env.error is None
    assert env.upstream is None
    assert env.model_extra == {"brand_new_field": {"x": 1}}


@pytest.mark.anyio
@pytest.mark.parametrize("body", [{"status": "queued"}, ["j1"], {"jobId": ""}, "queued"])
async def test_a_job_body_without_a_job_id_is_malformed(body: object) -> None:
    async with _mock(lambda _: httpx.Response(200, json=body)) as client:
        with pytest.raises(MalformedResponse):
            await client.get_job("j1")


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("poll_url", "expected"),
    [
        ("/api/v1/jobs/j1?via=poll_url", "https://seo.example/api/v1/jobs/j1?via=poll_url"),
        (
            "https://seo.example/api/v1/jobs/j1?via=absolute",
            "https://seo.example/api/v1/jobs/j1?via=absolute",
        ),
        ("https://evil.example/api/v1/jobs/j1", "https://seo.example/api/v1/jobs/j1"),
        ("http://seo.example/api/v1/jobs/j1", "https://seo.example/api/v1/jobs/j1"),
        ("https://seo.example:8443/api/v1/jobs/j1", "https://seo.example/api/v1/jobs/j1"),
        (None, "https://seo.example/api/v1/jobs/j1"),
    ],
)
async def test_poll_url_is_followed_only_on_the_configured_origin(
    poll_url: str | None, expected: str
) -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(str(request.url))
        assert request.headers["x-api-key"] == "sk-mock"
        return httpx.Response(200, json=_envelope())

    async with _mock(handler) as client:
        await client.get_job("j1", poll_url=poll_url)
    assert urls == [expected]


@pytest.mark.anyio
async def test_job_ids_cannot_escape_the_jobs_path() -> None:
    urls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        urls.append(request.url.raw_path.decode())
        return httpx.Response(200, json=_envelope())

    async with _mock(handler) as client:
        await client.get_job("../../admin?x=1")
    assert urls == ["/api/v1/jobs/..%2F..%2Fadmin%3Fx%3D1"]


@pytest.mark.anyio
@pytest.mark.parametrize(
    "body", [{"nothing": "here"}, "text", [["nested"]], [True], {"jobs": [], "jobIds": []}]
)
async def test_an_unreadable_batch_answer_is_malformed(body: object) -> None:
    async with _mock(lambda _: httpx.Response(202, json=body)) as client:
        with pytest.raises(OutcomeUnknown) as info:
            await client.start("local_audit_batch", {"targets": [AUDIT]})
    # A PAID call that got an unreadable 2xx was processed: never replayed, outcome unknown.
    assert isinstance(info.value.cause, MalformedResponse)


@pytest.mark.anyio
async def test_rate_limit_buckets_are_reported_per_key() -> None:
    world = World()
    async with world.client() as client:
        await client.start("serp_analysis", {"keyword": "k"})
        env = await client.start("serp_analysis", {"keyword": "k2"})
        assert isinstance(env, JobEnvelope)
        await client.get_job(env.job_id)
        buckets = {(b.bucket, b.limit) for b in await client.rate_limits()}
    assert buckets == {("workload", 60), ("control", 600)}
