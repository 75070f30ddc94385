"""Records as Seamless publishes them reach the agent with the fields that matter
(issue 12.4): the default company result shows industry, location, LinkedIn and phone."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from _waits import until_done
from conftest import call, structured, text_of
from mcp import Client

from mcp_server.advice import advise_http
from mcp_server.ledger import SqliteLedger
from mcp_server.sandbox import SandboxState

pytestmark = pytest.mark.anyio


async def test_a_default_company_result_shows_industry_location_linkedin_and_phone(
    client: Client,
) -> None:
    result = await until_done(
        client,
        await call(
            client,
            "start_research",
            {"kind": "companies", "companies": [{"domain": "acme.example"}], "wait_seconds": 30},
        ),
    )
    assert not result.is_error, text_of(result)
    data = structured(result)
    assert data["state"] == "succeeded"
    [company] = data["results"]
    assert {"industry", "location", "linkedin", "phone"} <= set(company), company
    assert "," not in company["phone"]  # the first of the comma list
    assert company["linkedin"].startswith("https://www.linkedin.com/company/")
    page = await call(
        client,
        "get_job_result",
        {"job_id": data["job_id"], "fields": ["industries", "location.city", "topTechnologies"]},
    )
    assert set(structured(page)["items"][0]) == {
        "industries",
        "location.city",
        "topTechnologies",
        "request_id",
    }


async def test_contact_records_carry_nested_locations_and_job_history(client: Client) -> None:
    result = await until_done(
        client,
        await call(
            client,
            "start_research",
            {
                "kind": "contacts",
                "contacts": [{"email": "ada@engines.example"}],
                "wait_seconds": 30,
            },
        ),
    )
    data = structured(result)
    page = await call(
        client,
        "get_job_result",
        {
            "job_id": data["job_id"],
            "fields": ["contactLocation.fullString", "companyLocation.city", "jobHistory"],
        },
    )
    item = structured(page)["items"][0]
    assert item["contactLocation.fullString"]
    assert item["companyLocation.city"]
    assert len(item["jobHistory"]) == 2


async def test_additional_data_of_a_poll_item_is_kept_in_the_ledger(
    client: Client, tmp_path: Path
) -> None:
    result = await until_done(
        client,
        await call(
            client,
            "start_research",
            {"kind": "contacts", "contacts": [{"email": "notfound@x.example"}], "wait_seconds": 30},
        ),
    )
    data = structured(result)
    assert data["state"] == "not_found"
    db = tmp_path / "jobs.sqlite3"
    with sqlite3.connect(db) as conn:
        [(tenant,)] = conn.execute("SELECT tenant FROM jobs WHERE job_id = ?", (data["job_id"],))
    async with SqliteLedger.open(db) as ledger:
        row = await ledger.get(data["job_id"], tenant=tenant)
    assert row is not None
    [item] = (row.snapshot or {})["items"]
    assert item["additional_data"] == {"reason": "No contact matches this target."}


async def test_the_422_advice_says_how_many_credits_are_missing(
    client: Client, sandbox_state: SandboxState
) -> None:
    sandbox_state.faults.initial_credits = 2
    result = await call(
        client,
        "start_research",
        {"kind": "contacts", "contacts": [{"email": f"p{i}@acme.example"} for i in range(5)]},
    )
    assert result.is_error
    assert structured(result)["error"]["code"] == "credits_exhausted"
    assert "needs 3 more for this request" in text_of(result)


def test_explain_error_reads_additional_credits_needed() -> None:
    body = {
        "code": "insufficientCredits",
        "msg": "Not enough credits",
        "data": {"productCategory": "contact", "additionalCreditsNeeded": 7},
    }
    advice = advise_http("seamless", 422, None, None, body, None, now=1_800_000_000.0)
    assert "needs 7 more for this request" in advice.what_happened
