"""search_prospects filters -> the documented Seamless search body, refusals included."""

from __future__ import annotations

import pytest

from mcp_server.search_filters import FilterProblem, search_body


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
