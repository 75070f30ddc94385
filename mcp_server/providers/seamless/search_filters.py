"""`search_prospects` arguments -> the Seamless search body, as published (UPSTREAMS.md 1).

`query` becomes `contactKeyword`/`companyKeyword`, `location` the documented country/state/zip
arrays (Seamless has no city filter), and every list filter is checked against the enum and the
item limit the OpenAPI file states, so a bad value is refused here with the allowed values
instead of being sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal

from mcp_server.errors import FilterProblem
from mcp_server.providers.seamless import enums

__all__ = ["FilterProblem", "search_body"]

Kind = Literal["contacts", "companies"]


# (contacts field, companies field or None when contacts only, max items, enum or None)
_Spec = tuple[str, str | None, int, tuple[str, ...] | None]
_FILTERS: Final[Mapping[str, _Spec]] = {
    "company_name": ("companyName", "companyName", 100, None),
    "company_domain": ("companyDomain", "companyDomain", 100, None),
    "full_name": ("fullName", None, 10, None),
    "title": ("jobTitle", None, 10, None),
    "seniority": ("seniority", None, 5, enums.SENIORITY),
    "department": ("department", None, 5, enums.DEPARTMENT),
    "industry": ("industry", "industry", 5, None),  # enum per kind, below
    "company_size": ("companySize", "companySize", 10, enums.COMPANY_SIZE),
    "company_revenue": ("companyRevenue", "companyRevenue", 10, enums.COMPANY_REVENUE),
    "technologies": ("technologies", "technologies", 10, None),
    "country": ("contactCountry", "companyCountry", 10, None),
    "state": ("contactState", "companyState", 10, None),
    "zip": ("contactZipCode", "companyZipCode", 10, None),
}
_CONTACTS_ONLY: Final = ("location_type", "job_change", "job_change_days")
_INDUSTRY: Final[Mapping[Kind, tuple[str, ...]]] = {
    "contacts": enums.CONTACT_INDUSTRY,
    "companies": enums.COMPANY_INDUSTRY,
}
_KEYWORD: Final[Mapping[Kind, str]] = {"contacts": "contactKeyword", "companies": "companyKeyword"}
_SHOWN: Final = 12
"""Allowed values quoted in a refusal; a longer list (industries) shows the closest ones."""

_US_STATES: Final = {
    "AL": "Alabama", "AK": "Alaska", "AZ": "Arizona", "AR": "Arkansas", "CA": "California",
    "CO": "Colorado", "CT": "Connecticut", "DE": "Delaware", "DC": "District of Columbia",
    "FL": "Florida", "GA": "Georgia", "HI": "Hawaii", "ID": "Idaho", "IL": "Illinois",
    "IN": "Indiana", "IA": "Iowa", "KS": "Kansas", "KY": "Kentucky", "LA": "Louisiana",
    "ME": "Maine", "MD": "Maryland", "MA": "Massachusetts", "MI": "Michigan", "MN": "Minnesota",
    "MS": "Mississippi", "MO": "Missouri", "MT": "Montana", "NE": "Nebraska", "NV": "Nevada",
    "NH": "New Hampshire", "NJ": "New Jersey", "NM": "New Mexico", "NY": "New York",
    "NC": "North Carolina", "ND": "North Dakota", "OH": "Ohio", "OK": "Oklahoma",
    "OR": "Oregon", "PA": "Pennsylvania", "RI": "Rhode Island", "SC": "South Carolina",
    "SD": "South Dakota", "TN": "Tennessee", "TX": "Texas", "UT": "Utah", "VT": "Vermont",
    "VA": "Virginia", "WA": "Washington", "WV": "West Virginia", "WI": "Wisconsin",
    "WY": "Wyoming",
}  # fmt: skip
_STATE_NAMES: Final = {v.lower() for v in _US_STATES.values()}
_ZIP: Final = re.compile(r"^(\d{5}(-\d{4})?|[A-Z]\d[A-Z] ?\d[A-Z]\d|\d{4,6})$", re.I)
_COUNTRY_ALIASES: Final = {
    "usa": "United States", "us": "United States", "u.s.": "United States",
    "united states of america": "United States", "uk": "United Kingdom",
    "great britain": "United Kingdom", "england": "United Kingdom",
}  # fmt: skip


def _fold(value: str) -> str:
    return re.sub(r"[\s,]+", "", value).lower()


def _terms(value: Any, name: str, limit: int) -> list[str]:
    raw = [value] if isinstance(value, str) else list(value)
    out = list(dict.fromkeys(v.strip() for v in raw if isinstance(v, str) and v.strip()))
    if len(out) > limit:
        raise FilterProblem(
            f"filters.{name} takes at most {limit} values (Seamless's limit); got {len(out)}.",
            field=f"filters.{name}",
        )
    return out


def _canonical(values: Sequence[str], allowed: tuple[str, ...], name: str) -> list[str]:
    """Each value as Seamless spells it (case, spaces and thousands commas forgiven)."""
    by_fold = {_fold(a): a for a in allowed}
    out: list[str] = []
    for v in values:
        hit = by_fold.get(_fold(v))
        if hit is None:
            if len(allowed) <= _SHOWN:
                shown = ", ".join(f"'{a}'" for a in allowed)
                hint = f"allowed: {shown}"
            else:
                import difflib  # only for a refused value (0.2 MB of imports otherwise)

                close = difflib.get_close_matches(v, allowed, n=6, cutoff=0.3)
                shown = ", ".join(f"'{a}'" for a in close) or ", ".join(
                    f"'{a}'" for a in allowed[:6]
                )
                hint = f"closest of the {len(allowed)} allowed: {shown}"
            raise FilterProblem(
                f"filters.{name}: {v!r} is not a Seamless value; {hint}.",
                field=f"filters.{name}",
            )
        out.append(hit)
    return list(dict.fromkeys(out))


def _split_location(text: str) -> dict[str, list[str]]:
    """'Texas', 'TX', '10001', 'Germany', 'Texas, United States' -> state/zip/country."""
    found: dict[str, list[str]] = {"country": [], "state": [], "zip": []}
    parts = [p.strip() for p in text.split(",") if p.strip()]
    for i, part in enumerate(parts):
        if _ZIP.match(part) and any(ch.isdigit() for ch in part):
            found["zip"].append(part)
        elif part.upper() in _US_STATES and len(part) == 2:
            found["state"].append(part.upper())
        elif part.lower() in _STATE_NAMES:
            found["state"].append(part.title())
        elif i == len(parts) - 1:
            found["country"].append(_COUNTRY_ALIASES.get(part.lower(), part))
        else:  # 'Austin, TX': a place before the state or country is a city
            raise FilterProblem(
                f"filters.location {text!r}: Seamless filters by country, state or zip, not "
                "by city; give e.g. 'Texas', '78701' or 'United States'.",
                field="filters.location",
            )
    return {k: v for k, v in found.items() if v}


def search_body(kind: Kind, query: str | None, filters: Mapping[str, Any]) -> dict[str, Any]:
    """The documented search body for `kind` (without `limit`/`nextToken`)."""
    f = {k: v for k, v in filters.items() if v not in (None, "", [])}
    body: dict[str, Any] = {}
    if query and query.strip():
        body[_KEYWORD[kind]] = [query.strip()]
    location = f.pop("location", None)
    if isinstance(location, str):
        for key, values in _split_location(location).items():
            given = f.get(key)
            merged = ([given] if isinstance(given, str) else list(given or [])) + values
            f[key] = merged
    for name, (contact_field, company_field, limit, allowed) in _FILTERS.items():
        if name not in f:
            continue
        wire = contact_field if kind == "contacts" else company_field
        if wire is None:
            raise FilterProblem(
                f"filters.{name} applies to kind 'contacts' only; for companies use company "
                "name/domain, industry, size, revenue, technologies and location filters.",
                field=f"filters.{name}",
            )
        values = _terms(f[name], name, limit)
        enum = _INDUSTRY[kind] if name == "industry" else allowed
        if enum is not None:
            values = _canonical(values, enum, name)
        if values:
            body[wire] = values
    extra = [n for n in _CONTACTS_ONLY if n in f]
    if extra and kind != "contacts":
        raise FilterProblem(
            f"filters.{extra[0]} applies to kind 'contacts' only.", field=f"filters.{extra[0]}"
        )
    if "location_type" in f:
        body["locationType"] = f["location_type"]
    if "job_change" in f or "job_change_days" in f:
        changes: dict[str, Any] = {}
        if "job_change" in f:
            changes["changeType"] = f["job_change"]
        if "job_change_days" in f:
            changes["dayRange"] = f"Last {int(f['job_change_days'])} Days"
        body["jobChanges"] = changes
    return body
