"""Small answers (DESIGN.md section 2.6): project upstream records to what an agent needs.

A Seamless contact record has ~100 fields (~4.3k characters). By default an agent sees a
handful: name, title, company, best email and phone with their confidence, LinkedIn. The full
record is one `get_job_result(fields=[...])` away. Everything here is pure.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mcp_server.json_types import JSON, JSONObject

_PERCENT = re.compile(r"^\s*(\d{1,3})(?:\.\d+)?\s*%?\s*$")


def _confidence(value: object) -> int | None:
    """Seamless writes confidence as "98%"; return 98, or None when absent or unparseable."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return max(0, min(100, int(value)))
    if isinstance(value, str) and (m := _PERCENT.match(value)):
        return min(100, int(m.group(1)))
    return None


def _text(record: Mapping[str, Any], *keys: str) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value)
    return None


def _best_email(record: Mapping[str, Any]) -> dict[str, Any] | None:
    candidates: list[tuple[int, int, str, str | None]] = []
    for i in (1, 2, 3):
        address = _text(record, f"email{i}")
        if not address:
            continue
        conf = _confidence(record.get(f"email{i}TotalAI")) or 0
        selected = 1 if record.get(f"email{i}Selected") is True else 0
        candidates.append((selected, conf, address, _text(record, f"email{i}EmailAI")))
    if not candidates:
        address = _text(record, "email")
        return {"address": address, "confidence": None} if address else None
    _, conf, chosen, status = max(candidates, key=lambda c: (c[0], c[1]))
    best: dict[str, Any] = {"address": chosen, "confidence": conf or None}
    if status:
        best["status"] = status
    return best


def _best_phone(record: Mapping[str, Any]) -> dict[str, Any] | None:
    candidates: list[tuple[int, int, str, str]] = []
    for i, prefix in enumerate(("contactPhone1", "contactPhone2", "companyPhone1")):
        number = _text(record, prefix)
        if not number:
            continue
        conf = _confidence(record.get(f"{prefix}TotalAI"))
        # Direct lines first, then confidence: a 60 % mobile beats a 99 % switchboard.
        direct = 1 if prefix.startswith("contact") else 0
        candidates.append((direct, conf if conf is not None else 50 - i, number, prefix))
    if not candidates:
        return None
    _, _, best, prefix = max(candidates, key=lambda c: (c[0], c[1]))
    return {
        "number": best,
        "type": _text(record, f"{prefix}DataType"),
        "confidence": _confidence(record.get(f"{prefix}TotalAI")),
    }


def project_contact(record: Mapping[str, JSON]) -> JSONObject:
    """The default view of a researched contact."""
    out: dict[str, Any] = {
        "name": _text(record, "fullName", "name"),
        "title": _text(record, "title"),
        "company": _text(record, "company"),
        "domain": _text(record, "companyDomain", "website", "domain"),
        "email": _best_email(record),
        "phone": _best_phone(record),
        "linkedin": _text(record, "lIProfileUrl", "liProfileUrl", "liUrl"),
    }
    return {k: v for k, v in out.items() if v is not None}


def project_company(record: Mapping[str, JSON]) -> JSONObject:
    """The default view of a researched company, from the published record's names:
    `industries` and `phones` are comma lists (the first is shown), `location` an object."""
    out: dict[str, Any] = {
        "name": _text(record, "name"),
        "domain": _text(record, "domain"),
        "industry": _first(record.get("industries")),
        "employees": _text(record, "staffCountRange", "staffCount"),
        "revenue": _text(record, "revenueRange", "annualRevenue"),
        "location": _location(record),
        "linkedin": _text(record, "linkedInProfileUrl"),
        "phone": _first(record.get("phones")),
    }
    return {k: v for k, v in out.items() if v is not None}


def _first(value: object) -> str | None:
    """The first entry of a comma list ("a, b") or of an array."""
    if isinstance(value, list):
        value = next((v for v in value if isinstance(v, str) and v.strip()), None)
    if isinstance(value, str):
        head = value.split(",", 1)[0].strip()
        return head or None
    return None


def _location(record: Mapping[str, Any]) -> str | None:
    """A place as one line: a location object's `fullString` (or its parts), else the flat
    `city`/`state`/`country` of search hits."""
    for key in ("location", "contactLocation", "companyLocation"):
        nested = record.get(key)
        if isinstance(nested, Mapping):
            return _text(nested, "fullString") or _location(nested)
    parts = [_text(record, k) for k in ("city", "state", "country")]
    return ", ".join(p for p in parts if p) or None


def project_search_item(kind: str, item: Mapping[str, JSON]) -> JSONObject:
    """A search hit: the `search_result_id` to research, and enough to choose."""
    if kind == "contacts":
        out: dict[str, Any] = {
            "search_result_id": _text(item, "searchResultId"),
            "name": _text(item, "name"),
            "title": _text(item, "title"),
            "company": _text(item, "company"),
            "domain": _text(item, "domain"),
            "seniority": _text(item, "seniority"),
            "location": _location(item),
            "linkedin": _text(item, "liUrl"),
        }
    else:
        out = {
            "search_result_id": _text(item, "searchResultId"),
            "name": _text(item, "name"),
            "domain": _text(item, "domain"),
            "industry": _first(item.get("industries")),
            "employees": _text(item, "staffCountRange", "employeeCount"),
            "location": _location(item),
        }
    return {k: v for k, v in out.items() if v is not None}


def project_seo_result(result: Mapping[str, JSON]) -> JSONObject:
    """The default view of an AgentSEO result: the decision block plus a short summary.

    `agent_workflow` is what the API designed for agents; lists elsewhere are cut to five
    entries and long strings to 300 characters. `get_job_result(fields=...)` has the rest.
    """
    shrunk: dict[str, Any] = _shrink(dict(result), list_items=5, text_chars=300, depth=3)
    return shrunk


def _shrink(value: Any, *, list_items: int, text_chars: int, depth: int) -> Any:
    if isinstance(value, str):
        return value if len(value) <= text_chars else value[: text_chars - 1] + "…"
    if isinstance(value, Mapping):
        if depth <= 0:
            return f"<{len(value)} fields>"
        return {
            str(k): _shrink(v, list_items=list_items, text_chars=text_chars, depth=depth - 1)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        if depth <= 0:
            return f"<{len(value)} items>"
        head = [
            _shrink(v, list_items=list_items, text_chars=text_chars, depth=depth - 1)
            for v in value[:list_items]
        ]
        if len(value) > list_items:
            head.append(f"<{len(value) - list_items} more>")
        return head
    return value


def select_fields(record: Mapping[str, JSON], fields: Sequence[str]) -> JSONObject:
    """Pick `fields` (top-level names, or dotted paths like `agent_workflow.decision`)."""
    out: dict[str, Any] = {}
    for path in fields:
        node: Any = record
        for part in path.split("."):
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = _MISSING
                break
        if node is not _MISSING:
            out[path] = node
    return out


def unknown_fields(records: Iterable[Mapping[str, JSON]], fields: Sequence[str]) -> list[str]:
    """Requested fields that no record has, so the agent can be told which names exist."""
    seen: set[str] = set()
    for record in records:
        seen.update(select_fields(record, fields))
    return [f for f in fields if f not in seen]


def available_fields(records: Iterable[Mapping[str, JSON]], limit: int = 120) -> list[str]:
    names: dict[str, None] = {}
    for record in records:
        for key in record:
            names.setdefault(str(key), None)
            if len(names) >= limit:
                return list(names)
    return list(names)


class _Missing:
    pass


_MISSING = _Missing()


def field_paths(record: JSON, prefix: str = "", depth: int = 2) -> list[str]:
    """`name` and, one level down, `name.child` paths of a sample record (the names a
    provider's `result_fields` lists for `jobrelay://fields/<name>`)."""
    out: list[str] = []
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        path = f"{prefix}{key}"
        out.append(path)
        if depth > 1 and isinstance(value, dict):
            out += field_paths(value, path + ".", depth - 1)
    return out
