"""Result rows as text: what a host that forwards only the text block shows the agent.

The text block must stand alone (issue 13): finished research lists every shown contact on one
line, SEO results their essential rows, `list_jobs` one line per job. The format is one line
per item with ` | ` between parts, not JSON: measured with the project's estimator
(`_bounds.tokens`), a sandbox contact costs ~68 tokens as a line against ~110 as compact JSON
of the same projection, and a SERP analysis ~350 (ten rows) against ~760 (five rows), with
nothing an agent needs left out (docs/answers.md). Everything here is pure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mcp_server import _bounds as B

LINE_CHARS = 600
"""Longest line for one item; longer ones end with `…`."""
PART_CHARS = 150
"""Longest value inside a line; longer ones are cut with `_bounds.TRUNCATED`."""


def _s(value: object) -> str | None:
    if value is None or value == "" or isinstance(value, bool):
        return None
    if isinstance(value, float):
        return f"{value:g}"
    return B.cut_text(str(value), PART_CHARS)


def _line(parts: Sequence[str | None]) -> str:
    text = " | ".join(p for p in parts if p)
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"


def _pct(value: object) -> str | None:
    return f"{value}%" if isinstance(value, int | float) and not isinstance(value, bool) else None


def _paren(*parts: str | None) -> str:
    inner = ", ".join(p for p in parts if p)
    return f" ({inner})" if inner else ""


def contact_line(p: Mapping[str, Any]) -> str:
    """`Ada Lovelace | CTO, Acme (acme.com) | ada@acme.com (98%, valid) | +1 555 (mobile, 90%)
    | linkedin.com/in/ada` from a projected contact."""
    role = ", ".join(x for x in (_s(p.get("title")), _s(p.get("company"))) if x)
    if p.get("domain"):
        role = f"{role} ({p['domain']})" if role else str(p["domain"])
    email = p.get("email") if isinstance(p.get("email"), Mapping) else None
    phone = p.get("phone") if isinstance(p.get("phone"), Mapping) else None
    mail = (
        f"{email.get('address')}{_paren(_pct(email.get('confidence')), _s(email.get('status')))}"
        if email
        else "no email"
    )
    tel = (
        f"{phone.get('number')}{_paren(_s(phone.get('type')), _pct(phone.get('confidence')))}"
        if phone
        else "no phone"
    )
    return _line([_s(p.get("name")) or "(no name)", role or None, mail, tel, _s(p.get("linkedin"))])


def company_line(p: Mapping[str, Any]) -> str:
    employees = _s(p.get("employees"))
    return _line(
        [
            _s(p.get("name")) or "(no name)",
            _s(p.get("domain")),
            _s(p.get("industry")),
            f"{employees} employees" if employees else None,
            _s(p.get("revenue")),
            _s(p.get("location")),
            _s(p.get("phone")),
            _s(p.get("linkedin")),
        ]
    )


def search_line(p: Mapping[str, Any]) -> str:
    """A search hit: who or what, and the search_result_id to research it with."""
    return _line(
        [
            _s(p.get("name")) or "(no name)",
            _s(p.get("title")),
            _s(p.get("company")) or _s(p.get("industry")),
            _s(p.get("domain")),
            _s(p.get("location")),
            f"search_result_id {p.get('search_result_id')}",
        ]
    )


def _location(value: object) -> str | None:
    if isinstance(value, Mapping):
        return _s(value.get("name")) or _s(value.get("code"))
    return _s(value)


def _decision(result: Mapping[str, Any]) -> str | None:
    wf = result.get("agent_workflow")
    if isinstance(wf, Mapping) and wf.get("decision"):
        return f"decision: {wf['decision']}"
    return None


def seo_lines(record: Mapping[str, Any], rows: int = 10) -> list[str]:
    """The essential rows of one AgentSEO result: a head line, then up to `rows` rows."""
    workflow = record.get("workflow")
    if workflow == "serp_analysis":
        head = _line(
            [
                f"SERP {_s(record.get('keyword'))!r} in {_location(record.get('location'))}",
                f"intent {record.get('search_intent')}" if record.get("search_intent") else None,
                f"difficulty {record.get('difficulty')}" if "difficulty" in record else None,
                _decision(record),
            ]
        )
        out = [head]
        for r in _rows(record.get("results"), rows):
            out.append(_line([f"#{r.get('position')} {_s(r.get('title'))}", _s(r.get("url"))]))
        return out
    if workflow == "keyword_metrics":
        out = [
            _line([f"Keyword metrics in {_location(record.get('location'))}", _decision(record)])
        ]
        for k in _rows(record.get("keywords"), rows):
            out.append(
                _line(
                    [
                        _s(k.get("keyword")),
                        f"volume {k.get('search_volume')}/mo",
                        f"KD {k.get('keyword_difficulty')}",
                        f"CPC {k.get('cpc')} {k.get('currency') or ''}".rstrip(),
                        f"competition {k.get('competition_level')}",
                        _s(k.get("search_intent")),
                    ]
                )
            )
        return out
    if workflow == "local_audit":
        target, scores = _m(record.get("target")), _m(record.get("scores"))
        pack, reviews = _m(record.get("local_pack")), _m(record.get("reviews"))
        head = _line(
            [
                f"Local audit {_s(target.get('business_name')) or _s(target.get('domain'))}"
                f" in {_location(target.get('location'))}",
                f"overall {scores.get('overall')}/100" if "overall" in scores else None,
                "local pack #" + str(pack.get("position")) if pack.get("present") else None,
                f"{reviews.get('count')} reviews, {reviews.get('average_rating')}*"
                if reviews
                else None,
                _decision(record),
            ]
        )
        out = [head]
        for i in _rows(record.get("issues"), rows):
            out.append(
                _line([f"[{i.get('severity')}] {_s(i.get('title'))}", _s(i.get("recommendation"))])
            )
        return out
    return [_line([B.cut_text(B.compact_json(record), LINE_CHARS)])]


def _m(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _rows(value: object, n: int) -> list[Mapping[str, Any]]:
    if not isinstance(value, list):
        return []
    return [v for v in value[:n] if isinstance(v, Mapping)]


def fields_line(item: Mapping[str, Any]) -> str:
    """A `fields=[...]` item: `key=value; ...` with values as compact JSON."""
    parts = []
    for key, value in item.items():
        shown = value if isinstance(value, str) else B.compact_json(value)
        parts.append(f"{key}={shown}")
    return "; ".join(parts)


def numbered(
    items: Sequence[Mapping[str, Any]],
    line: Callable[[Mapping[str, Any]], str | list[str]],
    *,
    start: int = 1,
    budget_tokens: int,
) -> tuple[list[str], int]:
    """`N. line` per item, within `budget_tokens`; returns the lines and how many items fit."""
    out: list[str] = []
    used = 0
    shown = 0
    for n, item in enumerate(items, start):
        rendered = line(item)
        rows = rendered if isinstance(rendered, list) else [rendered]
        block = [f"{n}. {rows[0]}", *(f"   {r}" for r in rows[1:])]
        cost = B.tokens("\n".join(block)) + 1
        if out and used + cost > budget_tokens:
            break
        out.extend(block)
        used += cost
        shown += 1
    return out, shown


def ago(seconds: float) -> str:
    """`just now`, `4 min ago`, `3 h ago`, `2 d ago`."""
    s = max(0, int(seconds))
    if s < 60:
        return "just now"
    if s < 3600:
        return f"{s // 60} min ago"
    if s < 86400:
        return f"{s // 3600} h ago"
    return f"{s // 86400} d ago"
