"""Contract tests: what jobrelay sends to Seamless, and what its sandbox answers, against the
OpenAPI file Seamless publishes (`../shared/reference/seamless-openapi.json`, see `_openapi`).

Requests are captured on their way to the in-process sandbox, so each test checks both sides:
the client's request against the request schema, the sandbox's answer against the response
schema for its status.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH

from mcp_server._clock import ScaledClock
from mcp_server.limits import InMemoryLimiter
from mcp_server.providers.seamless import enums
from mcp_server.providers.seamless.search_filters import search_body
from mcp_server.sandbox import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    Faults,
    SandboxState,
)
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.schemas import ContactTarget
from mcp_server.upstream import SeamlessClient
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget
from tests import _openapi

pytestmark = pytest.mark.anyio

BASE = "http://sandbox.test" + SEAMLESS_PREFIX
SCALE = 1000.0


class Recorder(httpx.AsyncBaseTransport):
    """The sandbox in process, keeping every request and response it saw."""

    def __init__(self, state: SandboxState) -> None:
        self.inner = httpx.ASGITransport(create_sandbox_app(state))
        self.seen: list[tuple[httpx.Request, int, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        raw = await response.aread()
        self.seen.append((request, response.status_code, json.loads(raw) if raw else None))
        return httpx.Response(
            response.status_code, headers=response.headers, content=raw, request=request
        )


class World:
    def __init__(self, **faults: Any) -> None:
        self.clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
        self.state = SandboxState(faults=Faults(time_scale=SCALE, **faults), clock=self.clock)
        self.transport = Recorder(self.state)

    def client(self, key: str = "sk-contract") -> SeamlessClient:
        return SeamlessClient(
            BASE,
            key,
            clock=self.clock,
            limiter=InMemoryLimiter(self.clock),
            policy=BackoffPolicy(max_attempts=1),
            budget=RetryBudget(),
            transport=self.transport,
            tenant="k_" + key[-6:],
            # At 1000x, the default 45 virtual seconds are 45 real ms: a loaded machine could
            # pass them between two lines. These tests check shapes, not deadlines.
            default_wait=10.0 * SCALE,
        )

    def check_all(self) -> int:
        """Validate every request body/query and every response seen; returns how many."""
        for request, status, body in self.transport.seen:
            path = urlsplit(str(request.url)).path.removeprefix(SEAMLESS_PREFIX)
            method = request.method.lower()
            if request.content:
                _openapi.validate_request(path, method, json.loads(request.content))
            else:
                query = parse_qs(urlsplit(str(request.url)).query, keep_blank_values=True)
                _openapi.validate_query(path, method, query)
            _openapi.validate_response(path, method, status, body)
        return len(self.transport.seen)


@pytest.fixture(autouse=True)
def _spec_present() -> None:
    _openapi.spec()  # skips with the reason when the reference file is absent


# ---- the helper itself can fail ---------------------------------------------------------------


def test_the_helper_refuses_what_the_schema_does_not_allow() -> None:
    _openapi.validate_request("/search/contacts", "post", {"contactKeyword": ["cto"]})
    with pytest.raises(AssertionError, match="keyword"):
        _openapi.validate_request("/search/contacts", "post", {"keyword": "cto"})
    with pytest.raises(AssertionError, match="name"):
        _openapi.validate_request("/companies/research", "post", {"companies": [{"name": "A"}]})
    with pytest.raises(AssertionError, match="seniority"):
        _openapi.validate_request("/search/contacts", "post", {"seniority": ["Boss"]})
    with pytest.raises(AssertionError, match="message"):
        _openapi.validate_response("/contacts/research", "post", 401, {"code": "x", "msg": "y"})
    with pytest.raises(AssertionError, match="does not document status 403"):
        _openapi.validate_response("/contacts/research", "post", 403, {})


def test_our_enums_are_the_published_ones() -> None:
    doc = _openapi.spec()["paths"]
    contacts = doc["/search/contacts"]["post"]["requestBody"]["content"]["application/json"]
    companies = doc["/search/companies"]["post"]["requestBody"]["content"]["application/json"]
    c, co = contacts["schema"]["properties"], companies["schema"]["properties"]
    assert tuple(c["seniority"]["items"]["enum"]) == enums.SENIORITY
    assert tuple(c["department"]["items"]["enum"]) == enums.DEPARTMENT
    assert tuple(c["companySize"]["items"]["enum"]) == enums.COMPANY_SIZE
    assert tuple(co["companySize"]["items"]["enum"]) == enums.COMPANY_SIZE
    assert tuple(c["companyRevenue"]["items"]["enum"]) == enums.COMPANY_REVENUE
    assert tuple(c["industry"]["items"]["enum"]) == enums.CONTACT_INDUSTRY
    assert tuple(co["industry"]["items"]["enum"]) == enums.COMPANY_INDUSTRY
    assert tuple(c["locationType"]["enum"]) == enums.LOCATION_TYPE
    changes = c["jobChanges"]["properties"]
    assert tuple(changes["changeType"]["enum"]) == enums.JOB_CHANGE_TYPE
    assert tuple(changes["dayRange"]["enum"]) == enums.JOB_CHANGE_DAYS


# ---- every request the client can send ----------------------------------------------------------

SEARCH_CASES: list[tuple[str, str | None, dict[str, Any]]] = [
    ("contacts", None, {}),
    ("contacts", "cto fintech", {}),
    ("contacts", None, {"company_name": "Acme", "company_domain": ["acme.com", "b.io"]}),
    ("contacts", None, {"full_name": "Ada Lovelace"}),
    ("contacts", None, {"title": ["CTO", "VP Engineering"]}),
    ("contacts", None, {"seniority": ["vp", "C-Level"]}),
    ("contacts", None, {"department": "engineering"}),
    ("contacts", None, {"industry": "Computer Software"}),
    ("contacts", None, {"company_size": "51-200", "company_revenue": "$5M - $20M"}),
    ("contacts", None, {"technologies": ["Salesforce"]}),
    ("contacts", None, {"location": "Texas"}),
    ("contacts", None, {"location": "10001, United States", "location_type": "company"}),
    ("contacts", None, {"country": "Germany", "state": ["CA"], "zip": "94105"}),
    ("contacts", None, {"job_change": "New Hire", "job_change_days": 90}),
    ("companies", None, {}),
    ("companies", "payments", {"company_name": "Acme"}),
    ("companies", None, {"industry": "Banking", "company_size": "11 - 50"}),
    ("companies", None, {"company_revenue": ["$1B+"], "technologies": "HubSpot"}),
    ("companies", None, {"location": "NY", "country": "Canada", "zip": "30301"}),
]


@pytest.mark.parametrize(("kind", "query", "filters"), SEARCH_CASES)
async def test_every_search_request_is_a_documented_body(
    kind: Any, query: str | None, filters: dict[str, Any]
) -> None:
    world = World()
    body = search_body(kind, query, filters)
    with anyio.fail_after(10):
        async with world.client() as client:
            page = await client.search(kind, body, limit=2)
            if page.next_token:
                await client.search(kind, body, limit=2, next_token=page.next_token)
    assert world.check_all() >= 1
    assert world.transport.seen[0][1] == 200


CONTACT_KINDS: list[dict[str, Any]] = [
    {"name": "Ada Lovelace", "company": "Analytical Engines"},
    {"name": "Ada Lovelace", "domain": "engines.example"},
    {"email": "ada@engines.example"},
    {"linkedin_url": "https://www.linkedin.com/in/ada"},
    {"sales_nav_url": "https://www.linkedin.com/sales/lead/ACoAAA1"},
    {"recruiter_url": "https://www.linkedin.com/talent/profile/AEMAA1"},
    {"name": "Ada", "company": "AE", "title": "CTO", "email": "a@ae.example"},
]


def _wire_contact(target: Mapping[str, Any]) -> dict[str, Any]:
    from mcp_server.providers.seamless.research import wire_contact as _seamless_contact

    return _seamless_contact(ContactTarget.model_validate(target))


@pytest.mark.parametrize("target", CONTACT_KINDS)
@pytest.mark.parametrize(("job_change", "skip"), [(False, False), (True, True)])
async def test_contact_research_by_each_identifier_then_poll(
    target: dict[str, Any], job_change: bool, skip: bool
) -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            accepted = await client.research(
                "contacts",
                contacts=[_wire_contact(target)],
                is_job_change=job_change,
                skip_dedup=skip,
            )
            await client.poll("contacts", accepted.request_ids)
            await world.clock.sleep(2.0)
            await client.poll("contacts", accepted.request_ids)
    assert world.check_all() == 3
    sent = json.loads(world.transport.seen[0][0].content)
    assert ("isJobChange" in sent) is job_change


async def test_research_by_search_result_ids_then_poll_both_kinds() -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            for kind in ("contacts", "companies"):
                page = await client.search(kind, {}, limit=2)
                accepted = await client.research(kind, search_result_ids=page.search_result_ids)
                await world.clock.sleep(2.0)
                await client.poll(kind, [*accepted.request_ids, "never-issued"])
    assert world.check_all() == 6


async def test_org_data_requests_and_answers() -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            for kind in ("contacts", "companies"):
                page = await client.search(kind, {}, limit=1)
                await client.research(kind, search_result_ids=page.search_result_ids)
            await world.clock.sleep(2.0)
            for kind in ("contacts", "companies"):
                records = await client.get_records(
                    kind, start_date="2000-01-01", end_date="2999-12-31"
                )
                assert len(records.items) == 1
    assert world.check_all() == 6


@pytest.mark.parametrize(
    "company",
    [
        {"companyName": "Acme"},
        {"domain": "acme.example"},
        {"companyName": "A", "domain": "a.io"},
        {"domain": "error.example"},  # polls `error`
        {"companyName": "Missing Co"},  # polls `missing`
    ],
)
async def test_company_research_by_descriptor_then_poll(company: dict[str, str]) -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            accepted = await client.research("companies", companies=[company], skip_dedup=True)
            await world.clock.sleep(2.0)
            await client.poll("companies", accepted.request_ids)
    assert world.check_all() == 2


async def test_a_missing_target_polls_as_documented() -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            accepted = await client.research(
                "contacts", contacts=[{"email": "nobody@missing.example"}]
            )
            await world.clock.sleep(2.0)
            items = await client.poll("contacts", accepted.request_ids)
    assert items[0].status == "missing"
    assert world.check_all() == 2


@pytest.mark.parametrize(
    "email",
    [
        "nobody@missing.example",
        "notfound@acme.example",
        "already-researched@acme.example",
        "nolicense@acme.example",
        "undocumented@acme.example",
        "boom@error.example",
    ],
)
async def test_each_poll_status_is_a_documented_answer(email: str) -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            accepted = await client.research("contacts", contacts=[{"email": email}])
            await client.poll("contacts", accepted.request_ids)  # researching (or on-hold)
            await world.clock.sleep(2.0)
            items = await client.poll("contacts", accepted.request_ids)
    assert items[0].status != "researching"
    assert world.check_all() == 3


# ---- sandbox answers ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["contacts", "companies"])
async def test_sandbox_hits_and_records_are_the_published_shapes(kind: Any) -> None:
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client() as client:
            page = await client.search(kind, {}, limit=5)
            accepted = await client.research(kind, search_result_ids=page.search_result_ids)
            await client.poll(kind, accepted.request_ids)
            await world.clock.sleep(2.0)
            await client.poll(kind, accepted.request_ids)
    world.check_all()


# ---- error bodies -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "status"),
    [
        (KEY_REVOKED, 401),
        (KEY_INSUFFICIENT_CREDITS, 422),
        (KEY_MISSING_LICENSE, 422),
    ],
)
async def test_documented_error_bodies(key: str, status: int) -> None:
    world = World()
    with anyio.fail_after(10):
        async with world.client(key) as client:
            with pytest.raises(Exception):  # noqa: B017,PT011 - the client's error tree
                await client.research("contacts", contacts=[{"email": "a@b.example"}])
    assert world.transport.seen[-1][1] == status
    assert world.check_all() >= 1


async def test_a_500_body_is_the_published_one() -> None:
    """Only 500 is documented among the 5xx the sandbox can inject; its body is checked."""
    world = World(error_rate=1.0)
    statuses: list[int] = []
    async with httpx.AsyncClient(
        transport=world.transport, base_url=BASE, headers={"Token": "k"}
    ) as http:
        for _ in range(20):
            r = await http.post("/search/contacts", json={})
            statuses.append(r.status_code)
            if r.status_code == 500:
                _openapi.validate_response("/search/contacts", "post", 500, r.json())
                break
    assert statuses[-1] == 500, statuses


def test_an_absent_reference_file_skips_with_the_reason(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setattr(_openapi, "SPEC_FILE", tmp_path / "seamless-openapi.json")
    _openapi._load.cache_clear()
    try:
        with pytest.raises(pytest.skip.Exception, match="Seamless OpenAPI file not found at"):
            _openapi.spec()
    finally:
        monkeypatch.undo()
        _openapi._load.cache_clear()


def test_sandbox_company_bands_are_the_published_enums() -> None:
    """Size and revenue bands on sandbox records are values the search filters accept."""
    from mcp_server.sandbox import _records

    seen_sizes: set[str] = set()
    seen_revenues: set[str] = set()
    for i in range(400):
        co = _records.build_company(7, _records.CompanySpec(key=f"band-{i}.example"))
        seen_sizes.add(co.size_range)
        seen_revenues.add(co.revenue_range)
    assert seen_sizes <= set(enums.COMPANY_SIZE), seen_sizes - set(enums.COMPANY_SIZE)
    assert seen_revenues <= set(enums.COMPANY_REVENUE), seen_revenues - set(enums.COMPANY_REVENUE)
    assert len(seen_sizes) >= 6
    assert len(seen_revenues) >= 6


# ---- auth and headers ([OA] security schemes, [OAU], [TK]) ----------------------------------


async def test_the_token_refresh_and_the_bearer_calls_are_documented_requests() -> None:
    """POST /oauth/accessToken (grant_type=refresh_token) validates against its schema, and the
    calls after it carry `Authorization: Bearer`, never `Token` as well [OAU]."""
    from pydantic import SecretStr

    from mcp_server.upstream._oauth import TOKEN_PATH, OAuthClient, RefreshingAuth

    world = World(job_seconds=1.0)
    auth = RefreshingAuth(
        OAuthClient("jobrelay-app", SecretStr("client-secret-0123"), "https://app.example/cb"),
        SecretStr("refresh-token-0123"),
        token_url=BASE + TOKEN_PATH,
        now=world.clock.time,
    )
    client = SeamlessClient(
        BASE,
        "oauth-client:jobrelay-app",
        clock=world.clock,
        limiter=InMemoryLimiter(world.clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=world.transport,
        tenant="k_oauth0000000",
        auth=auth,
        default_wait=10.0 * SCALE,
    )
    with anyio.fail_after(10):
        async with client:
            page = await client.search("contacts", {}, limit=1)
            accepted = await client.research("contacts", search_result_ids=page.search_result_ids)
            await client.poll("contacts", accepted.request_ids)
    assert world.check_all() == 4
    token_request, *calls = (r for r, _, _ in world.transport.seen)
    assert token_request.url.path == SEAMLESS_PREFIX + TOKEN_PATH
    assert json.loads(token_request.content)["grant_type"] == "refresh_token"
    for request in calls:
        assert request.headers["authorization"].startswith("Bearer ")
        assert "token" not in request.headers


async def test_api_key_calls_carry_token_without_a_scheme_and_json_bodies() -> None:
    """`Token: <key>` (no scheme, no Authorization) [OA]; POST bodies are application/json."""
    world = World(job_seconds=1.0)
    with anyio.fail_after(10):
        async with world.client("sk-contract-key") as client:
            page = await client.search("companies", {}, limit=1)
            accepted = await client.research("companies", search_result_ids=page.search_result_ids)
            await client.poll("companies", accepted.request_ids)
    assert world.check_all() == 3
    for request, _, _ in world.transport.seen:
        assert request.headers["token"] == "sk-contract-key"
        assert "authorization" not in request.headers
        assert request.headers["user-agent"].startswith("jobrelay/")
        if request.method == "POST":
            assert request.headers["content-type"] == "application/json"


# ---- documented answers the sandbox may not produce, read by the client --------------------


def _mock_client(handler: Any) -> SeamlessClient:
    from mcp_server._clock import FakeClock

    clock = FakeClock(TEST_EPOCH)
    return SeamlessClient(
        "https://api.seamless.ai/api/client/v1",
        "sk-contract",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=httpx.MockTransport(handler),
        tenant="k_contract",
    )


async def test_every_documented_contact_poll_status_is_read_verbatim() -> None:
    """[OA] "common values" plus one the docs say may be added; each item validates."""
    from mcp_server.models import JobState
    from mcp_server.providers.seamless.adapter import seamless_state

    statuses = {
        "r1": ("queued", JobState.QUEUED),
        "r2": ("researching", JobState.RUNNING),
        "r3": ("not found", JobState.NOT_FOUND),
        "r4": ("contact-already-researched", JobState.DUPLICATE),
        "r5": ("No license or credits available", JobState.FAILED),
        "r6": ("missing", JobState.NOT_FOUND),
        "r7": ("duplicate", JobState.DUPLICATE),
        "r8": ("error", JobState.FAILED),
    }
    body = {
        "success": True,
        "data": [
            {
                "requestId": rid,
                "searchResultId": f"s{rid}",
                "status": status,
                "message": "no credits" if rid == "r5" else "",
                "additionalData": {"reason": "license"} if rid == "r5" else {},
            }
            for rid, (status, _) in statuses.items()
        ],
    }
    _openapi.validate_response("/contacts/research/poll", "get", 200, body)

    def handler(request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.url.query.decode())
        _openapi.validate_query("/contacts/research/poll", "get", query)
        return httpx.Response(200, json=body)

    with anyio.fail_after(5):
        async with _mock_client(handler) as client:
            items = await client.poll("contacts", list(statuses))
    assert {i.request_id: i.status for i in items} == {k: v[0] for k, v in statuses.items()}
    assert {i.request_id: seamless_state(i.status) for i in items} == {
        k: v[1] for k, v in statuses.items()
    }
    assert next(i for i in items if i.request_id == "r5").additional_data == {"reason": "license"}


@pytest.mark.parametrize(
    ("status", "body", "error", "details"),
    [
        (401, {"message": "Invalid token"}, "AuthenticationFailed", {}),
        (
            422,
            {
                "code": "insufficientCredits",
                "msg": "Not enough credits",
                "data": {"productCategory": "contacts", "additionalCreditsNeeded": 3},
            },
            "CreditsExhausted",
            {"productCategory": "contacts", "additionalCreditsNeeded": 3},
        ),
        (
            422,
            {"code": "missingLicense", "msg": "No license", "data": {"productCategory": "x"}},
            "LicenseMissing",
            {"productCategory": "x"},
        ),
    ],
)
async def test_documented_error_bodies_are_read(
    status: int, body: dict[str, Any], error: str, details: dict[str, Any]
) -> None:
    from mcp_server import errors

    _openapi.validate_response("/contacts/research", "post", status, body)
    with anyio.fail_after(5), pytest.raises(getattr(errors, error)) as caught:
        async with _mock_client(lambda _r: httpx.Response(status, json=body)) as client:
            await client.research("contacts", search_result_ids=["s1"])
    assert caught.value.details == details
    assert caught.value.message.endswith(body.get("message", body.get("msg", "")))


async def test_a_429_waits_for_the_epoch_reset_and_reads_credits() -> None:
    """[SC][RL]: 429 `{code: rateLimitExceeded, message}`; `X-RateLimit-Reset` is epoch
    seconds; `X-PublicAPI-Credits` is the org's research credits left."""
    from mcp_server.errors import RateLimited

    reset = int(TEST_EPOCH) + 42
    headers = {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(reset),
        "X-PublicAPI-Credits": "17",
    }
    body = {"code": "rateLimitExceeded", "message": "Too many requests"}
    with anyio.fail_after(5), pytest.raises(RateLimited) as caught:
        async with _mock_client(lambda _r: httpx.Response(429, json=body, headers=headers)) as c:
            await c.search("contacts", {})
    hints = caught.value.hints
    assert (hints.limit, hints.remaining, hints.credits) == (60, 0, 17)
    assert hints.reset_after == pytest.approx(42, abs=1)
    assert caught.value.api_code == "rateLimitExceeded"
