from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mcp_server import _bounds
from mcp_server.projection import (
    project_company,
    project_contact,
    project_search_item,
    project_seo_result,
    select_fields,
    unknown_fields,
)

FIXTURES = Path(__file__).parent / "fixtures"


def _fixture_contact() -> dict[str, Any]:
    body = json.loads((FIXTURES / "poll-contacts.json").read_text())
    contact: dict[str, Any] = body["response"]["body"]["data"][0]["contact"]
    return contact


def test_contact_projection_keeps_what_an_agent_needs() -> None:
    projected = project_contact(_fixture_contact())
    assert projected == {
        "name": "Jane Smith",
        "title": "Finance Director",
        "company": "Acme Corp",
        "domain": "acmecorp.com",
        "email": {"address": "jsmith@example.com", "confidence": 97, "status": "valid"},
        "phone": {"number": "415.555.0101", "type": "mobile", "confidence": 98},
        "linkedin": "https://www.linkedin.com/in/janesmith",
    }


def test_ten_projected_contacts_are_far_below_the_token_budget() -> None:
    full = _fixture_contact()
    ten = [project_contact(full) for _ in range(10)]
    assert len(json.dumps(full)) > 4000
    assert len(json.dumps(ten)) / 4 < 1000  # tokens, chars/4 estimate


def test_best_email_prefers_selected_then_confidence() -> None:
    record = {
        "email1": "a@x.com",
        "email1TotalAI": "40%",
        "email2": "b@x.com",
        "email2TotalAI": "90%",
    }
    assert project_contact(record)["email"] == {"address": "b@x.com", "confidence": 90}
    record["email1Selected"] = True
    assert project_contact(record)["email"]["address"] == "a@x.com"


def test_direct_phone_beats_company_switchboard() -> None:
    record = {
        "contactPhone1": "1",
        "contactPhone1TotalAI": "60%",
        "companyPhone1": "2",
        "companyPhone1TotalAI": "99%",
    }
    assert project_contact(record)["phone"]["number"] == "1"


def test_missing_and_odd_values_are_dropped_not_crashing() -> None:
    assert project_contact({"fullName": "  ", "title": None, "email1TotalAI": "n/a"}) == {}
    assert project_contact({"email1": "x@y.z", "email1TotalAI": "abc%"})["email"] == {
        "address": "x@y.z",
        "confidence": None,
    }


def test_company_and_search_projections() -> None:
    company = {  # the published company record's shapes (UPSTREAMS.md 1)
        "name": "Seamless.AI",
        "domain": "seamless.ai",
        "industries": "Computer Software, Internet",
        "phones": "+1 614 555 0100, +1 614 555 0101",
        "phonesAiScores": "97%, 40%",
        "location": {"city": "Columbus", "state": "Ohio", "fullString": "Columbus, Ohio, US"},
        "linkedInProfileUrl": "https://www.linkedin.com/company/seamless-ai",
        "staffCountRange": "201 - 500 employees",
        "staffCount": "320",
    }
    assert project_company(company) == {
        "name": "Seamless.AI",
        "domain": "seamless.ai",
        "industry": "Computer Software",
        "employees": "201 - 500 employees",
        "location": "Columbus, Ohio, US",
        "linkedin": "https://www.linkedin.com/company/seamless-ai",
        "phone": "+1 614 555 0100",
    }
    no_full = {"name": "X", "location": {"city": "Columbus", "state": "OH"}}
    assert project_company(no_full)["location"] == "Columbus, OH"
    company_hit = {"searchResultId": "s", "name": "X", "industries": ["Banking"], "city": "NY"}
    assert project_search_item("companies", company_hit) == {
        "search_result_id": "s",
        "name": "X",
        "industry": "Banking",
        "location": "NY",
    }
    hit = {"searchResultId": "sr1", "name": "T G", "company": "Seamless", "country": "US"}
    assert project_search_item("contacts", hit) == {
        "search_result_id": "sr1",
        "name": "T G",
        "company": "Seamless",
        "location": "US",
    }


def test_seo_result_is_shrunk_but_keeps_agent_workflow() -> None:
    result = {
        "agent_workflow": {"decision": "target", "confidence": 0.8, "next_calls": ["a"]},
        "results": [{"position": i, "url": f"https://e/{i}"} for i in range(50)],
        "summary": "x" * 1000,
    }
    shrunk = project_seo_result(result)
    assert shrunk["agent_workflow"] == result["agent_workflow"]
    assert len(shrunk["results"]) == 6
    assert shrunk["results"][-1] == "<45 more>"
    assert len(shrunk["summary"]) == 300


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (["title"], {"title": "Finance Director"}),
        (["email2", "nope"], {"email2": "jane.smith@example.com"}),
    ],
)
def test_select_fields(fields: list[str], expected: dict[str, Any]) -> None:
    assert select_fields(_fixture_contact(), fields) == expected


def test_select_dotted_paths_and_unknown_fields() -> None:
    rec = {"agent_workflow": {"decision": "go"}, "rows": [{"a": 1}]}
    assert select_fields(rec, ["agent_workflow.decision", "rows.0.a", "rows.5"]) == {
        "agent_workflow.decision": "go",
        "rows.0.a": 1,
    }
    assert unknown_fields([rec], ["rows", "zzz"]) == ["zzz"]


def test_fit_drops_trailing_items_over_the_cap() -> None:
    budget = _bounds.item_budget(_bounds.MAX_ANSWER_TOKENS)
    items = ["x" * 1000] * 200
    kept, cut = _bounds.fit_items(items, budget)
    assert cut
    assert _bounds.tokens(kept) <= budget
    assert _bounds.fit_items(["a"], budget) == (["a"], False)
