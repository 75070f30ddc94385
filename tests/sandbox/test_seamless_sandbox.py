"""The simulated Seamless API, through the full sandbox app (FaultMiddleware included).

Virtual time starts on a rate-window boundary at scale 1, so nothing moves on its own during
a test; `_advance` jumps it forward in a few real milliseconds.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
import httpx
import pytest

from mcp_server._clock import ScaledClock
from mcp_server.sandbox import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_INSUFFICIENT_SCOPE,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    Faults,
    SandboxState,
)
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app

pytestmark = pytest.mark.anyio

EPOCH = 1_790_000_040.0  # a multiple of 60: the start of a rate window
BASE = f"http://sandbox.test{SEAMLESS_PREFIX}"
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
RATE_HEADERS = (
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
    "x-publicapi-credits",
    "date",
)
VARYING = {"apiResearchId", "createdAt", "updatedAt"}


def _state(**faults: Any) -> SandboxState:
    return SandboxState(faults=Faults(**faults), clock=ScaledClock(1.0, epoch=EPOCH))


@asynccontextmanager
async def _client(
    state: SandboxState, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    sent = {"Token": "test-key"} if headers is None else headers
    async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=sent) as client:
        yield client


async def _advance(state: SandboxState, seconds: float) -> None:
    """Move virtual time forward by exactly `seconds` (a loaded machine cannot overshoot)."""
    state.clock.advance(seconds)
    await anyio.lowlevel.checkpoint()


def _date_epoch(response: httpx.Response) -> int:
    return int(parsedate_to_datetime(response.headers["date"]).timestamp())


async def _search_ids(client: httpx.AsyncClient, n: int, **filters: Any) -> list[str]:
    r = await client.post("/search/contacts", json={"limit": n, **filters})
    assert r.status_code == 200
    return [hit["searchResultId"] for hit in r.json()["data"]]


async def _research(client: httpx.AsyncClient, body: dict[str, Any]) -> list[str]:
    r = await client.post("/contacts/research", json=body)
    assert r.status_code == 202, r.text
    ids: list[str] = r.json()["requestIds"]
    return ids


async def _poll(
    client: httpx.AsyncClient, ids: list[str], kind: str = "contacts"
) -> list[dict[str, Any]]:
    r = await client.get(f"/{kind}/research/poll", params={"requestIds": ",".join(ids)})
    assert r.status_code == 200
    body = r.json()
    assert body["success"] is True
    data: list[dict[str, Any]] = body["data"]
    return data


# search ------------------------------------------------------------------------------------


async def test_search_hits_carry_every_field_of_the_documented_example() -> None:
    example = json.loads((FIXTURES / "search-contacts.json").read_text())
    documented = set(example["response"]["body"]["data"][0])
    async with _client(_state()) as client:
        r = await client.post("/search/contacts", json={"limit": 5})
    assert r.status_code == 200
    body = r.json()
    assert len(body["data"]) == 5
    for hit in body["data"]:
        assert documented <= set(hit)
    supplemental = body["supplementalData"]
    assert set(supplemental) == {"isMore", "total", "perPage", "nextToken"}
    assert supplemental["perPage"] == 5
    assert supplemental["isMore"] is True
    assert 25 <= supplemental["total"] <= 500
    assert isinstance(supplemental["nextToken"], str)


async def test_search_defaults_to_fifty_hits_when_no_body_is_sent() -> None:
    async with _client(_state()) as client:
        r = await client.post("/search/contacts")
    assert r.status_code == 200
    assert len(r.json()["data"]) == 50  # the documented default
    assert r.json()["supplementalData"]["perPage"] == 50


async def test_search_is_a_pure_function_of_seed_filters_and_position() -> None:
    query = {"limit": 4, "industry": ["Computer Software"]}
    async with _client(_state(seed=7)) as a, _client(_state(seed=7)) as b:
        first = (await a.post("/search/contacts", json=query)).json()
        again = (await b.post("/search/contacts", json=query)).json()
        token = first["supplementalData"]["nextToken"]
        page2 = (await a.post("/search/contacts", json={**query, "nextToken": token})).json()
    async with _client(_state(seed=8)) as c:
        other_seed = (await c.post("/search/contacts", json=query)).json()
    assert first == again
    ids = [hit["searchResultId"] for hit in first["data"]]
    ids2 = [hit["searchResultId"] for hit in page2["data"]]
    assert len(set(ids + ids2)) == 8
    assert page2["supplementalData"]["total"] == first["supplementalData"]["total"]
    assert [hit["searchResultId"] for hit in other_seed["data"]] != ids


async def test_search_walks_to_the_last_page_with_a_null_next_token() -> None:
    async with _client(_state()) as client:
        body = (await client.post("/search/contacts", json={"limit": 50})).json()
        total = body["supplementalData"]["total"]
        seen = len(body["data"])
        while body["supplementalData"]["isMore"]:
            token = body["supplementalData"]["nextToken"]
            r = await client.post("/search/contacts", json={"limit": 50, "nextToken": token})
            body = r.json()
            seen += len(body["data"])
    assert seen == total
    assert body["supplementalData"]["nextToken"] is None


async def test_search_filters_shape_the_hits() -> None:
    filters = {
        "jobTitle": ["Chief Technology Officer", "VP of Engineering"],
        "contactCountry": ["Canada"],
        "companySize": ["201 - 500"],
    }
    async with _client(_state()) as client:
        r = await client.post("/search/contacts", json={"limit": 20, **filters})
    for hit in r.json()["data"]:
        assert hit["title"] in filters["jobTitle"]
        assert hit["country"] == "Canada"
        assert hit["employeeSizeRange"] == "201 - 500"
        assert hit["department"] == "Engineering"


async def test_a_filter_value_containing_nobody_finds_nothing() -> None:
    async with _client(_state()) as client:
        r = await client.post("/search/contacts", json={"jobTitle": ["Nobody"]})
    assert r.json() == {
        "data": [],
        "supplementalData": {"isMore": False, "total": 0, "perPage": 50, "nextToken": None},
    }


async def test_company_search_returns_company_hits() -> None:
    async with _client(_state()) as client:
        r = await client.post("/search/companies", json={"limit": 3, "industry": ["Retail"]})
    hits = r.json()["data"]
    assert len(hits) == 3
    for hit in hits:
        assert hit["industries"][0] == "Retail"
        assert {"searchResultId", "name", "domain", "staffCountRange", "city"} <= set(hit)


@pytest.mark.parametrize(
    ("body", "msg"),
    [
        ({"limit": 0}, "limit must be an integer between 1 and 200."),
        ({"limit": 201}, "limit must be an integer between 1 and 200."),
        ({"limit": True}, "limit must be an integer between 1 and 200."),
        ({"limit": "ten"}, "limit must be an integer between 1 and 200."),
        ({"jobTitle": "CTO"}, "jobTitle must be an array of strings."),
        ({"technologiesIsOr": "yes"}, "technologiesIsOr must be a boolean."),
        ({"nextToken": 5}, "nextToken must be a string or null."),
        (
            {"nextToken": "not-a-token"},
            "nextToken is not valid; pass the nextToken of the previous page unchanged.",
        ),
        ([1, 2], "The request body must be a JSON object."),
    ],
)
async def test_search_rejects_bad_parameters_with_400(body: Any, msg: str) -> None:
    async with _client(_state()) as client:
        r = await client.post("/search/contacts", json=body)
    assert r.status_code == 400
    assert r.json() == {"code": "badRequest", "msg": msg}


async def test_a_next_token_only_continues_the_search_it_came_from() -> None:
    async with _client(_state()) as client:
        first = (await client.post("/search/contacts", json={"industry": ["Retail"]})).json()
        token = first["supplementalData"]["nextToken"]
        r = await client.post(
            "/search/contacts", json={"industry": ["Biotech"], "nextToken": token}
        )
    assert r.status_code == 400
    assert r.json()["msg"].startswith("nextToken belongs to a different search")


# auth and scenario keys --------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Token": ""}, {"Token": "  "}, {"Authorization": "Bearer "}, {"Authorization": "k"}],
)
async def test_missing_credentials_get_401_and_do_not_count(headers: dict[str, str]) -> None:
    async with _client(_state(), headers=headers) as client:
        r = await client.post("/search/contacts", json={})
    assert r.status_code == 401
    assert r.json() == {  # 401 is {message}, as published
        "message": "Missing credentials: send the API key as 'Token: <key>' or an OAuth access "
        "token as 'Authorization: Bearer <token>'.",
    }
    assert r.headers["x-ratelimit-remaining"] == "60"
    assert all(h in r.headers for h in RATE_HEADERS)


async def test_a_bearer_token_the_sandbox_issued_is_accepted_like_a_key() -> None:
    state = _state()
    async with _client(state, headers={}) as client:
        issued = await client.post(
            "/oauth/accessToken",
            json={
                "client_id": "app",
                "client_secret": "s",
                "redirect_uri": "https://app.example/cb",
                "grant_type": "refresh_token",
                "refresh_token": "r",
            },
        )
        token = issued.json()["access_token"]
        ok = await client.post(
            "/search/contacts", json={}, headers={"Authorization": f"Bearer {token}"}
        )
        unknown = await client.post(
            "/search/contacts", json={}, headers={"Authorization": "Bearer oauth-token"}
        )
        await _advance(state, 3600)
        expired = await client.post(
            "/search/contacts", json={}, headers={"Authorization": f"Bearer {token}"}
        )
    assert issued.status_code == 200
    assert issued.json()["expires_at"] == int(EPOCH) + 3600
    assert ok.status_code == 200
    assert (unknown.status_code, expired.status_code) == (401, 401)


async def test_the_revoked_key_gets_401() -> None:
    async with _client(_state(), headers={"Token": KEY_REVOKED}) as client:
        r = await client.get("/contacts/research/poll", params={"requestIds": "a"})
    assert r.status_code == 401
    assert r.json() == {"message": "The API key or access token is invalid, expired or revoked."}


async def test_the_insufficient_scope_key_gets_403_and_counts() -> None:
    auth = {"Authorization": f"Bearer {KEY_INSUFFICIENT_SCOPE}"}
    async with _client(_state(), headers=auth) as client:
        r = await client.post("/search/contacts", json={})
    assert r.status_code == 403
    assert r.json() == {
        "code": "insufficientScope",
        "msg": "The OAuth connection lacks the publicAPI.v1.all scope; re-authorize.",
    }
    assert r.headers["x-ratelimit-remaining"] == "59"


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/search/contacts"),
        ("POST", "/contacts/research"),
        ("GET", "/contacts/research/poll?requestIds=a"),
        ("GET", "/companies?startDate=2026-01-01&endDate=2026-12-31"),
    ],
)
async def test_the_missing_license_key_gets_422_on_every_endpoint(method: str, path: str) -> None:
    async with _client(_state(), headers={"Token": KEY_MISSING_LICENSE}) as client:
        r = await client.request(method, path, json={"searchResultIds": ["x"]})
    assert r.status_code == 422
    assert r.json() == {
        "code": "missingLicense",
        "msg": "This organization has no active Public API license; an admin must enable "
        "Public API access.",
        "data": {"productCategory": "publicApi"},
    }


async def test_the_insufficient_credits_key_fails_research_but_not_search_or_poll() -> None:
    async with _client(_state(), headers={"Token": KEY_INSUFFICIENT_CREDITS}) as client:
        search = await client.post("/search/contacts", json={"limit": 1})
        research = await client.post(
            "/contacts/research",
            json={"searchResultIds": [search.json()["data"][0]["searchResultId"]]},
        )
        poll = await client.get("/contacts/research/poll", params={"requestIds": "a"})
    assert search.status_code == 200
    assert poll.status_code == 200
    assert research.status_code == 422
    assert research.json() == {
        "code": "insufficientCredits",
        "msg": "Not enough research credits: this request needs 1, the organization has 0.",
        "data": {"productCategory": "contact", "additionalCreditsNeeded": 1},
    }
    assert research.headers["x-publicapi-credits"] == "0"


# research, credits, lifecycle --------------------------------------------------------------


async def test_research_returns_202_with_one_request_id_per_target() -> None:
    example = json.loads((FIXTURES / "research-contacts.json").read_text())
    state = _state()
    sent = example["request"]["body"]
    ids_part = {k: v for k, v in sent.items() if k not in ("contacts", "isJobChange")}
    contacts_part = {k: v for k, v in sent.items() if k != "searchResultIds"}
    async with _client(state) as client:
        both = await client.post("/contacts/research", json=sent)
        r = await client.post("/contacts/research", json=ids_part)
        r2 = await client.post("/contacts/research", json=contacts_part)
    # The published example sends both arrays, but the API takes one or the other.
    assert both.status_code == 400
    assert both.json()["msg"] == "Send either searchResultIds or contacts, not both."
    assert (r.status_code, r2.status_code) == (202, 202)
    body = r.json()
    assert set(body) == {"success", "requestIds"}
    assert body["success"] is True
    assert len(set(body["requestIds"] + r2.json()["requestIds"])) == 3
    assert r2.headers["x-publicapi-credits"] == "997"
    assert state.stats()["paid_posts"] == 2


async def test_credits_decrease_only_on_research() -> None:
    async with _client(_state()) as client:
        ids = await _search_ids(client, 2)
        credits = [(await client.post("/search/contacts", json={})).headers["x-publicapi-credits"]]
        rids = await _research(client, {"searchResultIds": ids})
        r = await client.get("/contacts/research/poll", params={"requestIds": ",".join(rids)})
        credits.append(r.headers["x-publicapi-credits"])
        r = await client.post("/companies/research", json={"companies": [{"domain": "a.com"}]})
        credits.append(r.headers["x-publicapi-credits"])
    assert credits == ["1000", "998", "997"]


async def test_a_batch_beyond_the_credits_left_is_refused_whole() -> None:
    state = _state(initial_credits=2)
    three = {"contacts": [{"email": f"p{i}@acme.test"} for i in range(3)]}
    async with _client(state) as client:
        refused = await client.post("/contacts/research", json=three)
        two = await client.post("/contacts/research", json={"contacts": three["contacts"][:2]})
        one_more = await client.post("/contacts/research", json={"contacts": three["contacts"][2:]})
    assert refused.status_code == 422
    assert refused.json() == {
        "code": "insufficientCredits",
        "msg": "Not enough research credits: this request needs 3, the organization has 2.",
        "data": {"productCategory": "contact", "additionalCreditsNeeded": 1},
    }
    assert refused.headers["x-publicapi-credits"] == "2"
    assert two.status_code == 202
    assert two.headers["x-publicapi-credits"] == "0"
    assert one_more.status_code == 422
    assert state.stats()["paid_posts"] == 1


async def test_jobs_research_for_job_seconds_then_end_done_missing_or_error() -> None:
    state = _state(job_seconds=20)
    targets = {
        "contacts": [
            {"contactName": "Jane Smith", "companyName": "Acme Corp", "domain": "acme.test"},
            {"contactName": "Nobody Known", "companyName": "Acme Corp"},
            {"email": "someone@missing.test"},
            {"contactName": "Eve Error", "companyName": "Acme Corp"},
        ]
    }
    async with _client(state) as client:
        ids = await _research(client, targets)
        before = await _poll(client, ids)
        await _advance(state, 10)
        halfway = await _poll(client, ids)
        await _advance(state, 10)
        after = await _poll(client, ids)
    assert [e["status"] for e in before] == ["researching"] * 4
    assert [e["status"] for e in halfway] == ["researching"] * 4
    assert all("contact" not in e for e in before + halfway)
    assert [e["status"] for e in after] == ["done", "missing", "missing", "error"]
    assert [e["requestId"] for e in after] == ids
    done, nobody, missing, error = after
    assert done["message"] == ""
    assert done["contact"]["fullName"] == "Jane Smith"
    assert done["contact"]["apiResearchId"] == ids[0]
    assert nobody["message"] == missing["message"] == "No matching contact was found."
    assert error["message"] == "Research failed while processing this contact."
    assert "contact" not in nobody
    assert "contact" not in error


async def test_a_request_id_passed_as_search_result_id_ends_missing() -> None:
    state = _state(job_seconds=1)
    async with _client(state) as client:
        ids = await _research(client, {"searchResultIds": ["6Ei5iKuSHzJXvqjVPWiZ_"]})
        await _advance(state, 1)
        [entry] = await _poll(client, ids)
    assert entry["status"] == "missing"
    assert entry["searchResultId"] == "6Ei5iKuSHzJXvqjVPWiZ_"
    assert "a requestId is not a searchResultId" in entry["message"]


async def test_poll_entries_carry_the_documented_fields_and_a_full_record() -> None:
    example = json.loads((FIXTURES / "poll-contacts.json").read_text())
    documented = example["response"]["body"]["data"][0]
    state = _state(job_seconds=1)
    async with _client(state) as client:
        sr_ids = await _search_ids(client, 1)
        ids = await _research(client, {"searchResultIds": sr_ids})
        await _advance(state, 1)
        [entry] = await _poll(client, ids)
    assert set(entry) == set(documented) | {"additionalData"}  # additionalData: in the schema
    assert entry["additionalData"] == {}
    assert entry["searchResultId"] == sr_ids[0]
    record = entry["contact"]
    assert set(documented["contact"]) <= set(record)
    assert 3500 < len(json.dumps(record)) < 7000


async def test_a_search_hit_researches_into_the_same_person() -> None:
    state = _state(job_seconds=1)
    async with _client(state) as client:
        hit = (await client.post("/search/contacts", json={"limit": 1})).json()["data"][0]
        ids = await _research(client, {"searchResultIds": [hit["searchResultId"]]})
        await _advance(state, 1)
        [entry] = await _poll(client, ids)
    record = entry["contact"]
    assert (record["fullName"], record["company"], record["title"]) == (
        hit["name"],
        hit["company"],
        hit["title"],
    )
    assert record["lIProfileUrl"] == hit["liUrl"]


async def test_a_descriptor_is_reflected_in_its_record() -> None:
    state = _state(job_seconds=1)
    descriptor = {
        "contactName": "John Q Doe",
        "companyName": "Acme Corp",
        "title": "Software Engineer",
        "domain": "https://www.Acme.com/",
        "email": "john.doe@acme.com",
        "liProfileUrl": "https://www.linkedin.com/in/johndoe",
    }
    async with _client(state) as client:
        ids = await _research(client, {"contacts": [descriptor]})
        await _advance(state, 1)
        [entry] = await _poll(client, ids)
    r = entry["contact"]
    assert (r["firstName"], r["middleName"], r["lastName"]) == ("John", "Q", "Doe")
    assert (r["company"], r["companyDomain"]) == ("Acme Corp", "acme.com")
    assert r["title"] == "Software Engineer"
    assert r["department"] == "Engineering"
    assert (r["email"], r["email1"]) == ("john.doe@acme.com", "john.doe@acme.com")
    assert r["lIProfileUrl"] == "https://www.linkedin.com/in/johndoe"


async def test_records_depend_on_seed_and_target_not_on_request_order() -> None:
    a = {"contacts": [{"email": "a@acme.test"}]}
    b = {"contacts": [{"liProfileUrl": "https://www.linkedin.com/in/bee"}]}

    async def records(seed: int, order: list[dict[str, Any]]) -> list[dict[str, Any]]:
        state = _state(seed=seed, job_seconds=1)
        async with _client(state) as client:
            ids = [(await _research(client, body))[0] for body in order]
            await _advance(state, 1)
            entries = await _poll(client, ids)
        out = [{k: v for k, v in e["contact"].items() if k not in VARYING} for e in entries]
        return out if order[0] is a else out[::-1]

    forward = await records(3, [a, b])
    backward = await records(3, [b, a])
    other_seed = await records(4, [a, b])
    assert forward == backward
    assert forward != other_seed


# dedupe ------------------------------------------------------------------------------------


async def test_researching_a_target_again_is_a_free_duplicate_with_the_existing_record() -> None:
    state = _state(job_seconds=5)
    async with _client(state) as client:
        sr_ids = await _search_ids(client, 1)
        [first] = await _research(client, {"searchResultIds": sr_ids})
        r = await client.post("/contacts/research", json={"searchResultIds": sr_ids})
        [second] = r.json()["requestIds"]
        early = await _poll(client, [second])
        await _advance(state, 5)
        late = await _poll(client, [first, second])
    assert r.headers["x-publicapi-credits"] == "999"
    assert second != first
    assert early[0]["status"] == "duplicate"
    assert "contact" not in early[0]
    assert early[0]["message"] == (
        f"Already being researched as request {first}; poll that request for the result. "
        "No credit was spent."
    )
    original, duplicate = late
    assert duplicate["status"] == "duplicate"
    assert duplicate["contact"] == original["contact"]
    assert duplicate["contact"]["apiResearchId"] == first
    assert duplicate["message"] == (
        f"Already researched as request {first}; the existing result is returned and no credit "
        "was spent."
    )


async def test_the_same_person_by_another_spelling_or_identifier_is_a_duplicate() -> None:
    state = _state()
    first = {"liProfileUrl": "https://www.linkedin.com/in/JDoe/", "contactName": "J Doe"}
    same = [
        {"liProfileUrl": "http://linkedin.com/in/jdoe?trk=x"},
        {"contactName": "j  doe", "domain": "acme.test", "email": "other@acme.test"},
    ]
    async with _client(state) as client:
        await _research(client, {"contacts": [{**first, "domain": "acme.test"}]})
        ids = await _research(client, {"contacts": same})
        statuses = [e["status"] for e in await _poll(client, ids)]
        r = await client.get("/contacts/research/poll", params={"requestIds": ids[0]})
    assert statuses == ["duplicate", "duplicate"]
    assert r.headers["x-publicapi-credits"] == "999"


async def test_skip_deduplication_check_researches_and_charges_again() -> None:
    state = _state()
    body = {"contacts": [{"email": "jane@acme.test"}]}
    async with _client(state) as client:
        await _research(client, body)
        r = await client.post("/contacts/research", json={**body, "skipDeduplicationCheck": True})
        [entry] = await _poll(client, r.json()["requestIds"])
    assert entry["status"] == "researching"
    assert r.headers["x-publicapi-credits"] == "998"


async def test_a_target_repeated_within_one_batch_is_charged_once() -> None:
    async with _client(_state()) as client:
        r = await client.post(
            "/contacts/research",
            json={"contacts": [{"email": "x@acme.test"}, {"email": "X@acme.test"}]},
        )
        statuses = [e["status"] for e in await _poll(client, r.json()["requestIds"])]
    assert statuses == ["researching", "duplicate"]
    assert r.headers["x-publicapi-credits"] == "999"


async def test_targets_that_ended_missing_or_error_are_not_deduplicated() -> None:
    async with _client(_state()) as client:
        body = {"contacts": [{"email": "nobody@acme.test"}, {"email": "error@acme.test"}]}
        await _research(client, body)
        r = await client.post("/contacts/research", json=body)
        statuses = [e["status"] for e in await _poll(client, r.json()["requestIds"])]
    assert statuses == ["researching", "researching"]
    assert r.headers["x-publicapi-credits"] == "996"


# companies ---------------------------------------------------------------------------------


async def test_company_research_polls_into_a_company_record_and_is_never_deduplicated() -> None:
    example = json.loads((FIXTURES / "poll-companies.json").read_text())
    documented = set(example["response"]["body"]["data"][1]["company"])
    state = _state(job_seconds=1)
    async with _client(state) as client:
        hit = (await client.post("/search/companies", json={"limit": 1})).json()["data"][0]
        body = {"searchResultIds": [hit["searchResultId"]], "companies": [{"domain": "Acme.com"}]}
        ids = (await client.post("/companies/research", json=body)).json()["requestIds"]
        again = await client.post(
            "/companies/research", json={"companies": [{"companyName": "X Missing"}]}
        )
        await _advance(state, 1)
        entries = await _poll(client, [*ids, *again.json()["requestIds"]], kind="companies")
    assert again.headers["x-publicapi-credits"] == "997"
    assert [e["status"] for e in entries] == ["done", "done", "missing"]
    from_search, by_domain, _ = entries
    # The published example also shows `companyId`, which the published schema does not have.
    assert documented - {"companyId"} <= set(from_search["company"])
    assert from_search["company"]["name"] == hit["name"]
    assert by_domain["company"]["domain"] == "acme.com"
    assert {"industries", "staffCount", "revenueRange", "location", "linkedInProfileUrl"} <= set(
        by_domain["company"]
    )
    assert by_domain["company"]["location"]["fullString"]
    assert "," not in by_domain["company"]["phones"].split(", ")[0]


async def test_request_ids_are_per_endpoint() -> None:
    async with _client(_state()) as client:
        ids = await _research(client, {"contacts": [{"email": "a@acme.test"}]})
        [entry] = await _poll(client, ids, kind="companies")
        made = await client.post("/companies/research", json={"companies": [{"domain": "a.test"}]})
        company_ids = made.json()["requestIds"]
        [contact_entry] = await _poll(client, company_ids)
    # The company poll item has no message field as published: just the status.
    assert entry == {"requestId": ids[0], "status": "missing"}
    assert contact_entry == {
        "requestId": company_ids[0],
        "searchResultId": "",
        "status": "missing",
        "message": "Unknown requestId for this endpoint; requestIds come from POST "
        "/contacts/research (a searchResultId is not a requestId).",
    }


# poll spellings ----------------------------------------------------------------------------


async def test_poll_accepts_every_request_ids_spelling() -> None:
    async with _client(_state()) as client:
        ids = await _research(client, {"contacts": [{"email": f"{n}@acme.test"} for n in "abc"]})
        spellings = [
            [("requestIds", ",".join(ids))],
            [("requestIds[]", i) for i in ids],  # sent percent-encoded: requestIds%5B%5D
            [("requestIds", i) for i in ids],
            [("requestIds", f"{ids[0]}, {ids[1]}"), ("requestIds[]", ids[2])],
            [("requestIds", ",".join(ids)), ("requestIds[]", ids[0])],
        ]
        answers = []
        for params in spellings:
            r = await client.get(f"/contacts/research/poll?{urlencode(params)}")
            assert r.status_code == 200
            answers.append([e["requestId"] for e in r.json()["data"]])
    assert answers == [ids] * len(spellings)


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("", "requestIds is required (requestIds=a,b or requestIds[]=a&requestIds[]=b)."),
        (
            "?requestIds=,",
            "requestIds is required (requestIds=a,b or requestIds[]=a&requestIds[]=b).",
        ),
        (
            "?requestIds=" + ",".join(f"r{i}" for i in range(101)),
            "At most 100 requestIds per poll; got 101.",
        ),
    ],
)
async def test_poll_rejects_missing_or_too_many_ids(query: str, msg: str) -> None:
    async with _client(_state()) as client:
        r = await client.get(f"/contacts/research/poll{query}")
    assert r.status_code == 400
    assert r.json() == {"code": "badRequest", "msg": msg}


# rate limits -------------------------------------------------------------------------------


async def test_the_61st_call_in_a_window_gets_429_until_the_epoch_reset() -> None:
    state = _state()
    async with _client(state) as client:
        ok = [await client.post("/search/contacts", json={"limit": 1}) for _ in range(60)]
        limited = await client.post("/search/contacts", json={"limit": 1})
        still = await client.post("/search/contacts", json={"limit": 1})
        other_endpoint = await client.post("/search/companies", json={"limit": 1})
        await _advance(state, 60)
        next_window = await client.post("/search/contacts", json={"limit": 1})
    assert [r.status_code for r in ok] == [200] * 60
    assert [int(r.headers["x-ratelimit-remaining"]) for r in ok] == list(range(59, -1, -1))
    assert limited.status_code == still.status_code == 429
    assert limited.json() == {
        "code": "rateLimitExceeded",
        "message": "Rate limit exceeded for /search/contacts: 60 requests per minute per "
        "organization. Retry after X-RateLimit-Reset.",
    }
    assert "retry-after" not in limited.headers
    assert limited.headers["x-ratelimit-limit"] == "60"
    assert limited.headers["x-ratelimit-remaining"] == "0"
    reset = int(limited.headers["x-ratelimit-reset"])
    assert reset == EPOCH + 60
    assert reset == _date_epoch(limited) // 60 * 60 + 60
    assert limited.headers["x-publicapi-credits"] == "1000"
    assert other_endpoint.status_code == 200
    assert other_endpoint.headers["x-ratelimit-remaining"] == "59"
    assert next_window.status_code == 200
    assert next_window.headers["x-ratelimit-remaining"] == "59"
    assert int(next_window.headers["x-ratelimit-reset"]) == _date_epoch(next_window) // 60 * 60 + 60
    assert int(next_window.headers["x-ratelimit-reset"]) >= EPOCH + 120


async def test_every_endpoint_has_its_own_window_shared_by_all_keys() -> None:
    state = _state(seamless_rate_limit=2)
    paths = [
        ("POST", "/search/contacts"),
        ("POST", "/search/companies"),
        ("POST", "/contacts/research"),
        ("POST", "/companies/research"),
        ("GET", "/contacts/research/poll?requestIds=a"),
        ("GET", "/companies/research/poll?requestIds=a"),
        ("GET", "/contacts?startDate=2026-01-01&endDate=2026-12-31"),
        ("GET", "/companies?startDate=2026-01-01&endDate=2026-12-31"),
    ]
    bodies = {"/contacts/research": {"contacts": [{"email": "a@b.test"}]}}
    bodies["/companies/research"] = {"companies": [{"domain": "b.test"}]}
    async with (
        _client(state, headers={"Token": "key-one"}) as one,
        _client(state, headers={"Token": "key-two"}) as two,
    ):
        statuses = []
        for method, path in paths:
            body = bodies.get(path)
            a = await one.request(method, path, json=body)
            b = await two.request(method, path, json=body)
            c = await one.request(method, path, json=body)
            statuses.append((a.status_code < 300, b.status_code < 300, c.status_code))
            assert c.headers["x-ratelimit-limit"] == "2"
    assert statuses == [(True, True, 429)] * len(paths)


# bad requests and unknown paths ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "msg"),
    [
        (b"", "The request body must be a JSON object."),
        (b'"text"', "The request body must be a JSON object."),
        (b"{}", "Nothing to research: send searchResultIds and/or contacts."),
        (b'{"searchResultIds": "abc"}', "searchResultIds must be an array of non-empty strings."),
        (b'{"searchResultIds": [1]}', "searchResultIds must be an array of non-empty strings."),
        (b'{"contacts": {"email": "a@b.c"}}', "contacts must be an array of objects."),
        (b'{"contacts": [{"email": 5}]}', "contacts[0].email must be a string."),
        (
            b'{"contacts": [{"contactName": "Solo"}]}',
            "contacts[0] needs liProfileUrl, liSalesNavUrl, liRecruiterUrl, email, or contactName "
            "with companyName or domain.",
        ),
        (
            b'{"contacts": [{"email": "a@b.c"}], "isJobChange": "no"}',
            "isJobChange must be a boolean.",
        ),
        (
            json.dumps({"searchResultIds": [f"id{i}" for i in range(101)]}).encode(),
            "At most 100 targets per request; got 101.",
        ),
    ],
)
async def test_bad_research_bodies_get_400_and_charge_nothing(content: bytes, msg: str) -> None:
    state = _state()
    async with _client(state) as client:
        r = await client.post("/contacts/research", content=content)
    assert r.status_code == 400
    assert r.json() == {"code": "badRequest", "msg": msg}
    assert r.headers["x-publicapi-credits"] == "1000"
    assert state.stats()["paid_posts"] == 0


async def test_invalid_or_deeply_nested_json_is_a_400_not_a_500() -> None:
    async with _client(_state()) as client:
        broken = await client.post("/contacts/research", content=b"{oops")
        deep = await client.post("/search/contacts", content=b"[" * 100_000 + b"]" * 100_000)
        company = await client.post("/companies/research", json={"companies": [{}]})
    assert broken.status_code == deep.status_code == company.status_code == 400
    assert broken.json()["msg"].startswith("The request body is not valid JSON")
    assert company.json() == {
        "code": "badRequest",
        "msg": "companies[0] needs companyName or domain.",
    }


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/nope"), ("DELETE", "/contacts/research"), ("POST", "/contacts/research/")],
)
async def test_unknown_paths_and_methods_get_a_json_404(method: str, path: str) -> None:
    async with _client(_state()) as client:
        r = await client.request(method, path)
    assert r.status_code == 404
    assert r.json() == {"code": "notFound", "msg": f"No such endpoint: {method} {path}."}
    assert all(h in r.headers for h in RATE_HEADERS)


# org data ----------------------------------------------------------------------------------


async def test_org_data_lists_finished_records_in_the_date_window() -> None:
    state = _state(job_seconds=1)
    day = "2026-09-21"  # EPOCH's UTC date
    async with _client(state) as client:
        ids = await _research(
            client, {"contacts": [{"email": f"{n}@acme.test"} for n in ("a", "b", "c", "nobody")]}
        )
        researching = await client.get("/contacts", params={"startDate": day, "endDate": day})
        await _research(client, {"contacts": [{"email": "a@acme.test"}]})  # a duplicate
        await _advance(state, 1)
        page1 = await client.get("/contacts", params={"startDate": day, "endDate": day, "limit": 2})
        page2 = await client.get(
            "/contacts", params={"startDate": day, "endDate": day, "limit": 2, "page": 2}
        )
        before = await client.get(
            "/contacts", params={"startDate": "2026-01-01", "endDate": "2026-09-20"}
        )
    assert researching.json() == {"data": []}  # as published: no paging metadata
    assert set(page1.json()) == {"data"}
    assert (len(page1.json()["data"]), len(page2.json()["data"])) == (2, 1)
    listed = [r["apiResearchId"] for r in page1.json()["data"] + page2.json()["data"]]
    assert listed == ids[:3]
    assert before.json() == {"data": []}


@pytest.mark.parametrize(
    ("query", "msg"),
    [
        ("", "startDate and endDate are required (ISO 8601, e.g. 2026-01-31)."),
        (
            "?startDate=2026-01-01",
            "startDate and endDate are required (ISO 8601, e.g. 2026-01-31).",
        ),
        (
            "?startDate=yesterday&endDate=2026-01-01",
            "startDate must be an ISO 8601 date or date-time; got 'yesterday'.",
        ),
        ("?startDate=2026-02-01&endDate=2026-01-01", "endDate must not be before startDate."),
        (
            "?startDate=2026-01-01&endDate=2026-02-01&limit=501",
            "limit must be an integer between 1 and 500.",
        ),
        (
            "?startDate=2026-01-01&endDate=2026-02-01&page=0",
            "page must be an integer between 1 and 1000000.",
        ),
    ],
)
async def test_org_data_requires_a_valid_date_window(query: str, msg: str) -> None:
    async with _client(_state()) as client:
        r = await client.get(f"/companies{query}")
    assert r.status_code == 400
    assert r.json() == {"code": "badRequest", "msg": msg}


# reset -------------------------------------------------------------------------------------


async def test_reset_drops_jobs_credits_spent_and_rate_windows() -> None:
    state = _state(seamless_rate_limit=3)
    async with _client(state) as client:
        ids = await _research(client, {"contacts": [{"email": "a@acme.test"}]})
        await client.post("/contacts/research", json={"contacts": [{"email": "b@acme.test"}]})
        await client.post("/contacts/research", json={"contacts": [{"email": "c@acme.test"}]})
        limited = await client.post(
            "/contacts/research", json={"contacts": [{"email": "d@x.test"}]}
        )
        control = await client.post("http://sandbox.test/_sandbox/reset")
        [entry] = await _poll(client, ids)
        again = await client.post(
            "/contacts/research", json={"contacts": [{"email": "a@acme.test"}]}
        )
        [fresh] = await _poll(client, again.json()["requestIds"])
    assert limited.status_code == 429
    assert control.json() == {"reset": True}
    assert entry["status"] == "missing"
    assert again.status_code == 202
    assert again.headers["x-ratelimit-limit"] == "60"
    assert again.headers["x-ratelimit-remaining"] == "59"
    assert again.headers["x-publicapi-credits"] == "999"
    assert fresh["status"] == "researching"
