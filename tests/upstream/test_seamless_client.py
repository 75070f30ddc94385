"""SeamlessClient against the sandbox (in process) and, for odd bodies, a MockTransport."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import httpx
import pytest

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.errors import (
    AuthenticationFailed,
    CreditsExhausted,
    InvalidRequest,
    LicenseMissing,
    MalformedResponse,
    NotFoundError,
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
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.upstream import (
    CompanyDescriptor,
    ContactDescriptor,
    InvalidArguments,
    SeamlessClient,
)
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget

ORIGIN = "http://sandbox.test"
BASE = ORIGIN + SEAMLESS_PREFIX
SCALE = 1000.0
HOUR = 3600.0
"""A deadline that real-time scheduling delays (amplified 1000x) can never reach."""


class World:
    """A sandbox in process, sharing one scaled clock with the clients built on it."""

    def __init__(self, scale: float = SCALE, *, epoch: float | None = None, **faults: Any) -> None:
        self.clock = ScaledClock(scale, epoch=epoch)
        self.state = SandboxState(faults=Faults(time_scale=scale, **faults), clock=self.clock)
        self.transport = httpx.ASGITransport(create_sandbox_app(self.state))

    def client(
        self,
        key: str = "sk-test",
        *,
        base: str = BASE,
        policy: BackoffPolicy | None = None,
        limiter: InMemoryLimiter | None = None,
    ) -> SeamlessClient:
        return SeamlessClient(
            base,
            key,
            clock=self.clock,
            limiter=limiter or InMemoryLimiter(self.clock),
            policy=policy or BackoffPolicy(),
            budget=RetryBudget(),
            transport=self.transport,
            tenant="k_" + key[-6:],
        )

    def responses(self, route: str) -> dict[int, int]:
        """Responses the sandbox sent for `seamless <METHOD> <template>`, by status."""
        out: dict[int, int] = {}
        for key, n in self.state.responses.items():
            head, _, status = key.rpartition(" ")
            if head == f"seamless {route}":
                out[int(status)] = out.get(int(status), 0) + n
        return out


def _mock(handler: Callable[[httpx.Request], httpx.Response]) -> SeamlessClient:
    clock = FakeClock()
    return SeamlessClient(
        "https://api.example.test/api/client/v1",
        "sk-mock",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=httpx.MockTransport(handler),
        tenant="k_mock",
    )


# ---- the happy path ---------------------------------------------------------------------------


@pytest.mark.anyio
async def test_search_research_poll_and_records_round_trip() -> None:
    world = World(job_seconds=60.0)  # 60 ms of real time: the first poll sees it running
    with anyio.fail_after(10):
        async with world.client() as client:
            page = await client.search("contacts", {"jobTitle": ["CTO"]}, limit=3)
            assert len(page.items) == 3
            assert page.is_more is True
            assert page.next_token
            assert page.total is not None
            assert page.total >= 3
            ids = page.search_result_ids
            assert len(ids) == 3

            second = await client.search(
                "contacts", {"jobTitle": ["CTO"]}, limit=3, next_token=page.next_token
            )
            assert set(second.search_result_ids).isdisjoint(ids)

            accepted = await client.research("contacts", search_result_ids=ids)
            assert accepted.kind == "contacts"
            assert len(accepted.request_ids) == 3
            assert accepted.credits == 997
            assert client.credits == 997

            items = await client.poll("contacts", accepted.request_ids)
            assert [i.request_id for i in items] == accepted.request_ids
            assert {i.status for i in items} == {"researching"}
            await world.clock.sleep(world.state.faults.job_seconds + 1)
            items = await client.poll("contacts", accepted.request_ids)
            assert {i.status for i in items} == {"done"}
            assert all(i.terminal for i in items)
            assert all(i.record and i.record.get("contactId") for i in items)
            assert [i.search_result_id for i in items] == ids

            records = await client.get_records(
                "contacts", start_date="2000-01-01", end_date="2999-12-31", page=1, limit=10
            )
            assert len(records.items) == 3
            assert records.page == 1

            buckets = {b.bucket for b in await client.rate_limits()}
    assert buckets == {
        "POST /search/contacts",
        "POST /contacts/research",
        "GET /contacts/research/poll",
        "GET /contacts",
    }
    assert world.state.stats()["paid_posts"] == 1


@pytest.mark.anyio
async def test_company_research_with_descriptors() -> None:
    world = World()
    with anyio.fail_after(10):
        async with world.client() as client:
            accepted = await client.research(
                "companies",
                companies=[
                    CompanyDescriptor(company_name="Acme", domain="acme.com"),
                    {"domain": "b.io"},
                ],
            )
            await world.clock.sleep(world.state.faults.job_seconds + 1)
            items = await client.poll("companies", accepted.request_ids)
    assert len(accepted.request_ids) == 2
    assert [i.status for i in items] == ["done", "done"]
    assert items[0].record is not None
    assert items[0].record["domain"] == "acme.com"


# ---- the documented error table, one row each --------------------------------------------------


@pytest.mark.anyio
async def test_400_invalid_parameters() -> None:
    world = World()
    async with world.client() as client:
        with pytest.raises(InvalidRequest) as info:
            await client.search("contacts", {}, limit=500)
    err = info.value
    assert (err.status, err.api_code) == (400, "badRequest")
    assert err.message.endswith("limit must be an integer between 1 and 200.")
    assert err.endpoint == "POST /search/contacts"
    assert err.hints.limit == 60
    assert err.hints.remaining == 59
    assert err.hints.credits == 1000
    assert err.request_id is None  # Seamless sends none
    assert err.attempts == 1


@pytest.mark.anyio
@pytest.mark.parametrize("key", [KEY_REVOKED, ""])
async def test_401_bad_or_missing_key(key: str) -> None:
    world = World()
    async with world.client(key) as client:
        with pytest.raises(AuthenticationFailed) as info:
            await client.search("contacts", {})
    # The published 401 body is {message}: no code.
    assert (info.value.status, info.value.api_code) == (401, None)
    assert "invalid" in info.value.message or "Missing credentials" in info.value.message
    assert info.value.attempts == 1


@pytest.mark.anyio
async def test_403_insufficient_scope() -> None:
    world = World()
    async with world.client(KEY_INSUFFICIENT_SCOPE) as client:
        with pytest.raises(PermissionDenied) as info:
            await client.poll("contacts", ["abc"])
    assert (info.value.status, info.value.api_code) == (403, "insufficientScope")


@pytest.mark.anyio
async def test_404_wrong_path() -> None:
    world = World()
    async with world.client(base=BASE + "/v9") as client:
        with pytest.raises(NotFoundError) as info:
            await client.search("contacts", {})
    assert (info.value.status, info.value.api_code) == (404, "notFound")
    assert "No such endpoint" in info.value.message


@pytest.mark.anyio
async def test_422_insufficient_credits() -> None:
    world = World()
    async with world.client(KEY_INSUFFICIENT_CREDITS) as client:
        with pytest.raises(CreditsExhausted) as info:
            await client.research("contacts", search_result_ids=["a"])
        assert client.credits == 0
    err = info.value
    assert (err.status, err.api_code) == (422, "insufficientCredits")
    assert err.details == {"productCategory": "contact", "additionalCreditsNeeded": 1}
    assert err.hints.credits == 0
    assert err.attempts == 1
    assert world.responses("POST /contacts/research") == {422: 1}


@pytest.mark.anyio
async def test_422_missing_license() -> None:
    world = World()
    async with world.client(KEY_MISSING_LICENSE) as client:
        with pytest.raises(LicenseMissing) as info:
            await client.search("companies", {})
    assert (info.value.status, info.value.api_code) == (422, "missingLicense")


@pytest.mark.anyio
async def test_429_when_another_consumer_used_the_org_window() -> None:
    # Real time (scale 1) from the start of a minute: the whole exchange takes milliseconds,
    # so the window cannot roll over between the two requests.
    world = World(1.0, epoch=1_790_000_040.0, seamless_rate_limit=1)
    async with world.client("sk-other") as other:
        await other.poll("contacts", ["abc"])
    async with world.client(policy=BackoffPolicy(max_attempts=1)) as client:
        with pytest.raises(RateLimited) as info:
            await client.poll("contacts", ["abc"])
    err = info.value
    assert (err.status, err.api_code) == (429, "rateLimitExceeded")
    assert err.message == (
        "Seamless GET /contacts/research/poll: HTTP 429 rateLimitExceeded: Rate limit exceeded "
        "for /contacts/research/poll: 1 requests per minute per organization. "
        "Retry after X-RateLimit-Reset."
    )
    assert err.hints.limit == 1
    assert err.hints.remaining == 0
    assert err.hints.reset_after is not None
    assert 58 <= err.hints.reset_after <= 60
    assert world.responses("GET /contacts/research/poll") == {200: 1, 429: 1}


@pytest.mark.anyio
async def test_500_is_retried_for_reads_then_raised() -> None:
    world = World(error_rate=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            with pytest.raises(ServerError) as info:
                await client.search("contacts", {}, deadline=world.clock.monotonic() + HOUR)
    err = info.value
    assert err.status in (500, 502, 503)
    assert err.api_code is None  # the published 500 body is {message}
    assert "Internal server error" in err.message
    assert err.attempts == 3
    assert sum(world.responses("POST /search/contacts").values()) == 3


@pytest.mark.anyio
async def test_202_research_queued() -> None:
    world = World()
    async with world.client() as client:
        accepted = await client.research(
            "contacts",
            contacts=[
                ContactDescriptor(contact_name="Jane Roe", company_name="Acme", domain="acme.com")
            ],
        )
    assert len(accepted.request_ids) == 1
    assert world.responses("POST /contacts/research") == {202: 1}


# ---- request shapes and tolerant parsing (MockTransport) ----------------------------------------


@pytest.mark.anyio
async def test_poll_sends_one_comma_joined_call_per_hundred_ids() -> None:
    queries: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.query.decode())
        ids = request.url.params["requestIds"].split(",")
        return httpx.Response(
            200, json={"success": True, "data": [{"requestId": i, "status": "done"} for i in ids]}
        )

    ids = [f"r{n}" for n in range(150)]
    async with _mock(handler) as client:
        items = await client.poll("contacts", [*ids, "r0", " ", ""])
    assert len(queries) == 2
    assert queries[0] == "requestIds=" + ",".join(ids[:100])
    assert queries[1] == "requestIds=" + ",".join(ids[100:])
    assert [i.request_id for i in items] == ids
    async with _mock(handler) as client:
        assert await client.poll("contacts", []) == []
    assert len(queries) == 2  # no ids, no call


@pytest.mark.anyio
async def test_poll_tolerates_missing_fields_and_unknown_statuses() -> None:
    body = {
        "success": True,
        "data": [
            {"requestId": "a", "status": "queued_v2", "message": ["x"]},
            {"requestId": "b"},
            {"status": "done"},
            "junk",
            {"requestId": 7, "status": "done", "contact": ["not", "a", "record"]},
            {"requestId": "c", "status": "done", "contact": {"contactId": "1"}},
        ],
    }
    async with _mock(lambda _: httpx.Response(200, json=body)) as client:
        items = await client.poll("contacts", ["a", "b", "c", "7"])
    assert [(i.request_id, i.status) for i in items] == [
        ("a", "queued_v2"),
        ("b", "unknown"),
        ("7", "done"),
        ("c", "done"),
    ]
    assert items[0].message is None
    assert items[0].terminal is False
    assert items[2].record is None
    assert items[3].record == {"contactId": "1"}


@pytest.mark.anyio
@pytest.mark.parametrize("body", [{"success": True}, {"data": "nope"}, [], "text"])
async def test_a_poll_body_without_a_data_list_is_malformed(body: object) -> None:
    async with _mock(lambda _: httpx.Response(200, json=body)) as client:
        with pytest.raises(MalformedResponse) as info:
            await client.poll("contacts", ["a"])
    assert info.value.status == 200


@pytest.mark.anyio
async def test_research_bodies_use_the_documented_field_names() -> None:
    bodies: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        bodies.append(body)
        targets = sum(len(body.get(k, [])) for k in ("searchResultIds", "contacts", "companies"))
        ids = [f"r{i + 1}" for i in range(targets)]  # one requestId per target, as documented
        return httpx.Response(
            202, json={"success": True, "requestIds": ids}, headers={"X-PublicAPI-Credits": "9"}
        )

    async with _mock(handler) as client:
        accepted = await client.research(
            "contacts",
            contacts=[
                ContactDescriptor(contact_name="John Doe", li_profile_url="https://li/x"),
                ContactDescriptor(li_sales_nav_url="https://li/s", li_recruiter_url="https://li/r"),
                {"contactName": "Ann", "companyName": "Co", "email": None},
            ],
            is_job_change=True,
            skip_dedup=True,
        )
        await client.research("contacts", search_result_ids=["s1", " "])
        await client.research("companies", companies=[CompanyDescriptor(company_name="Acme")])
        with pytest.raises(InvalidArguments, match="not both"):
            await client.research("contacts", search_result_ids=["s1"], contacts=[{"email": "a@b"}])
        with pytest.raises(InvalidArguments, match="isJobChange"):
            await client.research("contacts", search_result_ids=["s1"], is_job_change=True)
    assert bodies[0] == {
        "contacts": [
            {"contactName": "John Doe", "liProfileUrl": "https://li/x"},
            {"liSalesNavUrl": "https://li/s", "liRecruiterUrl": "https://li/r"},
            {"contactName": "Ann", "companyName": "Co"},
        ],
        "isJobChange": True,
        "skipDeduplicationCheck": True,
    }
    # Defaults (false) are left out: isJobChange goes only with contacts when asked.
    assert bodies[1] == {"searchResultIds": ["s1"]}
    assert bodies[2] == {"companies": [{"companyName": "Acme"}]}
    assert len(bodies) == 3  # the refused calls sent nothing
    assert accepted.request_ids == ["r1", "r2", "r3"]
    assert accepted.credits == 9


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "kwargs", "argument"),
    [
        ("people", {"search_result_ids": ["a"]}, "kind"),
        ("contacts", {}, "search_result_ids"),
        ("contacts", {"search_result_ids": [" "]}, "search_result_ids"),
        ("contacts", {"companies": [{"name": "Acme"}]}, "companies"),
        ("companies", {"contacts": [{"contactName": "A"}]}, "contacts"),
    ],
)
async def test_bad_research_arguments_are_refused_before_sending(
    kind: Any, kwargs: dict[str, Any], argument: str
) -> None:
    sent: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(202, json={"success": True, "requestIds": ["r"]})

    async with _mock(handler) as client:
        with pytest.raises(InvalidArguments) as info:
            await client.research(kind, **kwargs)
    assert info.value.argument == argument
    assert isinstance(info.value, ValueError)
    assert sent == []


@pytest.mark.anyio
async def test_search_page_fields_tolerate_wrong_types() -> None:
    body = {
        "data": [{"searchResultId": "s1", "name": "A"}, "junk"],
        "supplementalData": {"isMore": "yes", "total": "12", "perPage": None, "nextToken": 5},
    }
    async with _mock(lambda _: httpx.Response(200, json=body)) as client:
        page = await client.search("companies", {"industry": ["Software"]}, limit=1)
    assert page.items == [{"searchResultId": "s1", "name": "A"}]
    assert page.total == 12
    assert page.per_page is None
    assert page.next_token == "5"
    assert page.is_more is True  # no boolean given: more exists when a token came back


# ---- staying under the limit ------------------------------------------------------------------


@pytest.mark.anyio
async def test_200_polls_through_the_limiter_never_see_a_429() -> None:
    world = World()
    # The limiter's inline-wait cap is virtual time too: widened so a loaded test machine
    # (1 ms late = 1 s at this scale) cannot turn a 1 s pacing wait into a refusal.
    limiter = InMemoryLimiter(world.clock, max_inline_wait=HOUR)
    with anyio.fail_after(30):
        async with world.client(limiter=limiter) as client:
            for _ in range(200):
                await client.poll("contacts", ["r1", "r2"], deadline=world.clock.monotonic() + HOUR)
    assert world.responses("GET /contacts/research/poll") == {200: 200}
