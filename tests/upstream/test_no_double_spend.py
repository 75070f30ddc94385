"""Credits are never spent twice by accident (DESIGN.md section 2.1).

A credit-spending POST (Seamless research, an AgentSEO workflow) is sent again only when the
first attempt provably was not processed: the connection failed before sending, or a 429
whose reset fits the call. After anything ambiguous it is sent exactly once and the caller
gets `OutcomeUnknown`. Requests are counted on the server side: in a MockTransport handler,
and in the sandbox's `/_sandbox/stats`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.errors import (
    MalformedResponse,
    OutcomeUnknown,
    RateLimited,
    RequestNotSent,
    ResponseLost,
    ServerError,
)
from mcp_server.limits import InMemoryLimiter
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.upstream import AgentSEOClient, JobEnvelope, SeamlessClient
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget

pytestmark = pytest.mark.anyio

Step = Callable[[httpx.Request], httpx.Response]
Make = Callable[[httpx.AsyncBaseTransport, FakeClock], "Paid"]


class Server:
    """Plays the upstream: each request takes the next step; counts what actually arrived."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.arrived = 0
        """Requests the server received (a connect error means it never arrived)."""

    def __call__(self, request: httpx.Request) -> httpx.Response:
        step = self.steps.pop(0)
        return step(request)  # may raise: a transport failure

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def _arrives(server: Server, response: httpx.Response) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        server.arrived += 1
        return response

    return step


def _arrives_then_times_out(server: Server) -> Step:
    def step(request: httpx.Request) -> httpx.Response:
        server.arrived += 1
        raise httpx.ReadTimeout("timed out waiting for the response", request=request)

    return step


def _connect_fails(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused", request=request)


class Paid:
    """One provider's credit-spending call, so each test runs against both APIs."""

    def __init__(self, provider: str, client: SeamlessClient | AgentSEOClient) -> None:
        self.provider = provider
        self.client = client

    async def spend(self) -> object:
        if isinstance(self.client, SeamlessClient):
            return await self.client.research("contacts", search_result_ids=["s1", "s2"])
        return await self.client.start("serp_analysis", {"keyword": "running shoes"})


def _seamless(transport: httpx.AsyncBaseTransport, clock: FakeClock) -> Paid:
    client = SeamlessClient(
        "https://api.seamless.test/api/client/v1",
        "sk-test",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        transport=transport,
        tenant="k_test",
    )
    return Paid("seamless", client)


def _agentseo(transport: httpx.AsyncBaseTransport, clock: FakeClock) -> Paid:
    client = AgentSEOClient(
        "https://seo.test/api/v1",
        "sk-test",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(),
        budget=RetryBudget(),
        transport=transport,
        tenant="k_test",
    )
    return Paid("agentseo", client)


PROVIDERS = [pytest.param(_seamless, id="seamless"), pytest.param(_agentseo, id="agentseo")]

ACCEPTED: dict[str, Any] = {
    "seamless": {"success": True, "requestIds": ["r1", "r2"]},
    "agentseo": {"jobId": "j1", "status": "queued"},
}


def _accepted(paid: Paid) -> httpx.Response:
    return httpx.Response(202, json=ACCEPTED[paid.provider])


# ---- ambiguous failures: sent once, OutcomeUnknown --------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_read_timeout_after_sending_is_never_resent(make: Make) -> None:
    server = Server()
    server.steps = [_arrives_then_times_out(server)] * 5
    paid = make(server.transport(), FakeClock())
    with anyio.fail_after(5):
        async with paid.client:
            with pytest.raises(OutcomeUnknown) as info:
                await paid.spend()
    assert server.arrived == 1
    assert isinstance(info.value.cause, ResponseLost)
    assert info.value.cause.attempts == 1
    assert info.value.code.value == "outcome_unknown"
    assert "not resubmitted" in info.value.message


@pytest.mark.parametrize("status", [500, 502, 503])
@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_5xx_is_never_resent(make: Make, status: int) -> None:
    server = Server()
    server.steps = [_arrives(server, httpx.Response(status, json={"code": "oops"}))] * 5
    paid = make(server.transport(), FakeClock())
    with anyio.fail_after(5):
        async with paid.client:
            with pytest.raises(OutcomeUnknown) as info:
                await paid.spend()
    assert server.arrived == 1
    cause = info.value.cause
    assert isinstance(cause, ServerError)
    assert cause.status == status
    assert cause.attempts == 1


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_garbled_2xx_is_never_resent(make: Make) -> None:
    server = Server()
    server.steps = [_arrives(server, httpx.Response(202, content=b'{"requestIds": ["r'))] * 5
    paid = make(server.transport(), FakeClock())
    async with paid.client:
        with pytest.raises(OutcomeUnknown) as info:
            await paid.spend()
    assert server.arrived == 1
    assert isinstance(info.value.cause, MalformedResponse)


# ---- provably not processed: retried ------------------------------------------------------------


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_connect_error_is_retried_because_nothing_was_sent(make: Make) -> None:
    server = Server()
    clock = FakeClock()
    paid = make(server.transport(), clock)
    server.steps = [_connect_fails, _arrives(server, _accepted(paid))]
    async with paid.client:
        result = await paid.spend()
    assert server.arrived == 1
    assert result is not None
    assert len(clock.slept) >= 1


@pytest.mark.parametrize("make", PROVIDERS)
async def test_connect_errors_give_up_after_max_attempts_without_outcome_unknown(
    make: Make,
) -> None:
    server = Server(_connect_fails, _connect_fails, _connect_fails)
    paid = make(server.transport(), FakeClock())
    async with paid.client:
        with pytest.raises(RequestNotSent) as info:
            await paid.spend()
    assert server.arrived == 0
    assert info.value.attempts == 3


def _rate_limited(provider: str, clock: FakeClock, wait: int) -> httpx.Response:
    if provider == "seamless":
        headers = {
            "X-RateLimit-Limit": "60",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": str(int(clock.time()) + wait),
        }
        return httpx.Response(429, json={"code": "rateLimitExceeded"}, headers=headers)
    headers = {"RateLimit-Limit": "60", "RateLimit-Remaining": "0", "RateLimit-Reset": str(wait)}
    return httpx.Response(429, json={"error": {"code": "RATE_LIMITED"}}, headers=headers)


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_429_whose_reset_fits_is_retried_after_the_reset(make: Make) -> None:
    server = Server()
    clock = FakeClock()
    paid = make(server.transport(), clock)
    server.steps = [
        _arrives(server, _rate_limited(paid.provider, clock, 5)),
        _arrives(server, _accepted(paid)),
    ]
    async with paid.client:
        result = await paid.spend()
    assert result is not None
    assert server.arrived == 2  # the first was refused by the server, not processed
    assert 4.0 <= clock.monotonic() <= 8.0  # waited for the reset


@pytest.mark.parametrize("make", PROVIDERS)
async def test_a_429_whose_reset_does_not_fit_is_handed_back(make: Make) -> None:
    server = Server()
    clock = FakeClock()
    paid = make(server.transport(), clock)
    server.steps = [_arrives(server, _rate_limited(paid.provider, clock, 45))]
    async with paid.client:
        with pytest.raises(RateLimited) as info:
            await paid.spend()
    assert server.arrived == 1
    assert info.value.hints.reset_after is not None
    assert 44 <= info.value.hints.reset_after <= 46
    assert clock.monotonic() == 0.0  # nothing slept: the agent is told when to come back


# ---- the same, counted by the sandbox -------------------------------------------------------


class Sandbox:
    def __init__(self, **faults: Any) -> None:
        self.clock = ScaledClock(1000.0, epoch=TEST_EPOCH)
        self.state = SandboxState(faults=Faults(time_scale=1000.0, **faults), clock=self.clock)
        self.transport = httpx.ASGITransport(create_sandbox_app(self.state))

    async def stats(self) -> dict[str, Any]:
        async with httpx.AsyncClient(transport=self.transport, base_url="http://sb") as c:
            response = await c.get("/_sandbox/stats")
        stats: dict[str, Any] = response.json()
        return stats

    def seamless(self) -> SeamlessClient:
        return SeamlessClient(
            "http://sb" + SEAMLESS_PREFIX,
            "sk-test",
            clock=self.clock,
            limiter=InMemoryLimiter(self.clock),
            policy=BackoffPolicy(),
            budget=RetryBudget(),
            transport=self.transport,
            tenant="k_test",
        )

    def agentseo(self) -> AgentSEOClient:
        return AgentSEOClient(
            "http://sb" + AGENTSEO_PREFIX,
            "sk-test",
            clock=self.clock,
            limiter=InMemoryLimiter(self.clock),
            policy=BackoffPolicy(),
            budget=RetryBudget(),
            transport=self.transport,
            tenant="k_test",
        )


def _sent(stats: dict[str, Any], route: str) -> int:
    return sum(n for key, n in stats["requests"].items() if key == route)


async def test_sandbox_counts_one_research_post_after_a_5xx() -> None:
    sandbox = Sandbox(error_rate=1.0)
    with anyio.fail_after(5):
        async with sandbox.seamless() as client:
            with pytest.raises(OutcomeUnknown):
                await client.research("contacts", search_result_ids=["s1"])
        async with sandbox.agentseo() as seo:
            with pytest.raises(OutcomeUnknown):
                await seo.start("serp_analysis", {"keyword": "k"})
    stats = await sandbox.stats()
    assert _sent(stats, "seamless POST /contacts/research") == 1
    assert _sent(stats, "agentseo POST /analyze/serp") == 1


async def test_sandbox_counts_one_paid_post_after_a_garbled_202() -> None:
    sandbox = Sandbox(malformed_rate=1.0)
    with anyio.fail_after(5):
        async with sandbox.seamless() as client:
            with pytest.raises(OutcomeUnknown):
                await client.research("contacts", search_result_ids=["s1"])
        async with sandbox.agentseo() as seo:
            with pytest.raises(OutcomeUnknown):
                await seo.start("serp_analysis", {"keyword": "k"})
    stats = await sandbox.stats()
    assert stats["paid_posts"] == 2  # processed (and charged) once each...
    assert stats["duplicate_paid_posts"] == 0  # ...and never again


async def test_sandbox_reads_are_retried_where_paid_posts_are_not() -> None:
    sandbox = Sandbox(error_rate=1.0)
    with anyio.fail_after(5):
        async with sandbox.agentseo() as seo:
            with pytest.raises(ServerError):
                await seo.get_job("j1", deadline=sandbox.clock.monotonic() + 3600)
    stats = await sandbox.stats()
    assert _sent(stats, "agentseo GET /jobs/{job_id}") == 3


async def test_a_healthy_sandbox_accepts_each_paid_post_once() -> None:
    sandbox = Sandbox()
    async with sandbox.seamless() as client, sandbox.agentseo() as seo:
        accepted = await client.research("contacts", search_result_ids=["s1"])
        env = await seo.start("serp_analysis", {"keyword": "k"})
    assert len(accepted.request_ids) == 1
    assert isinstance(env, JobEnvelope)
    stats = await sandbox.stats()
    assert stats["paid_posts"] == 2
    assert stats["duplicate_paid_posts"] == 0
