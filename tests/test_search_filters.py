"""search_prospects filters -> the documented Seamless search body, refusals included."""

from __future__ import annotations

import pytest
from conftest import assert_agent_safe, call, structured, text_of
from mcp import Client

from mcp_server.providers.seamless.search_filters import FilterProblem, search_body
from mcp_server.sandbox import SandboxState


def test_query_and_location_map_to_documented_fields() -> None:
    assert search_body("contacts", "cto", {"location": "Texas"}) == {
        "contactKeyword": ["cto"],
        "contactState": ["Texas"],
    }
    assert search_body("companies", "pay", {"location": "10001, USA"}) == {
        "companyKeyword": ["pay"],
        "companyZipCode": ["10001"],
        "companyCountry": ["United States"],
    }


def test_enum_values_are_canonicalised() -> None:
    body = search_body(
        "contacts",
        None,
        {"seniority": ["vp", "c-level"], "company_size": "501-1000", "job_change_days": 90},
    )
    assert body == {
        "seniority": ["VP", "C-Level"],
        "companySize": ["501 - 1,000"],
        "jobChanges": {"dayRange": "Last 90 Days"},
    }


@pytest.mark.parametrize(
    ("kind", "filters", "field", "names"),
    [
        ("contacts", {"seniority": "Boss"}, "filters.seniority", "'C-Level', 'VP'"),
        ("contacts", {"industry": "Softwar"}, "filters.industry", "closest of the"),
        ("contacts", {"title": [str(i) for i in range(11)]}, "filters.title", "at most 10"),
        ("companies", {"title": "CTO"}, "filters.title", "contacts' only"),
        ("companies", {"location_type": "company"}, "filters.location_type", "contacts"),
        ("contacts", {"location": "Austin, TX"}, "filters.location", "not by city"),
    ],
)
def test_bad_filters_are_refused_naming_the_fix(
    kind: str, filters: dict[str, object], field: str, names: str
) -> None:
    with pytest.raises(FilterProblem) as info:
        search_body(kind, None, filters)  # type: ignore[arg-type]
    assert info.value.field == field
    assert names in info.value.message


@pytest.mark.anyio
async def test_a_bad_filter_through_the_tool_is_invalid_input_and_sends_nothing(
    client: Client, sandbox_state: SandboxState
) -> None:
    result = await call(
        client,
        "search_prospects",
        {"kind": "contacts", "filters": {"department": "Sorcery"}},
    )
    assert result.is_error
    error = structured(result)["error"]
    assert error["code"] == "invalid_input"
    assert "filters.department" in error["next_step"]
    assert "'Engineering'" in text_of(result)  # the allowed values are named
    assert_agent_safe(result)
    assert not any("search" in k for k in sandbox_state.stats()["requests"])


@pytest.mark.anyio
async def test_new_filters_reach_the_sandbox_as_documented_fields(
    client: Client, sandbox_state: SandboxState
) -> None:
    result = await call(
        client,
        "search_prospects",
        {
            "kind": "contacts",
            "query": "payments",
            "filters": {"seniority": ["VP", "director"], "location": "Texas", "zip": "78701"},
            "limit": 3,
        },
    )
    assert not result.is_error, text_of(result)
    assert len(structured(result)["items"]) == 3
