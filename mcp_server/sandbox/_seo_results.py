"""Deterministic, plausible AgentSEO workflow results for the sandbox.

Every result is a pure function of `(seed, params)`: the same request under the same seed
yields the same SERP, metrics or audit, across jobs and sandbox restarts, so tests and
benchmarks can assert on content. The only other input is `as_of` (virtual epoch seconds),
used solely to label the months of a keyword trend. Nothing here touches `SandboxState.rng`:
drawing from a shared RNG would make results depend on request order.

Failure triggers live here too, because they are a property of the parameters:
a target text (keyword, any of `keywords`, `domain`, `business_name`) containing
`fail-permanent` fails with `INVALID_TARGET` (not retryable); one containing `fail-transient`
fails with `UPSTREAM_FETCH_FAILED` (retryable). Permanent wins when both appear.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, TypedDict

__all__ = [
    "FAIL_PERMANENT_MARKER",
    "FAIL_TRANSIENT_MARKER",
    "KNOWN_LOCATIONS",
    "AgentWorkflow",
    "FailureMode",
    "KeywordMetricsParams",
    "KeywordMetricsResult",
    "LocalAuditParams",
    "LocalAuditResult",
    "Location",
    "NextCall",
    "SerpParams",
    "SerpResult",
    "WorkflowName",
    "WorkflowParams",
    "WorkflowResult",
    "failure_mode",
    "generate_result",
    "resolve_location",
    "workflow_name",
]

FAIL_TRANSIENT_MARKER = "fail-transient"
FAIL_PERMANENT_MARKER = "fail-permanent"

WorkflowName = Literal["serp_analysis", "keyword_metrics", "local_audit"]
FailureMode = Literal["transient", "permanent"]

#: DataForSEO-style location codes the sandbox knows by name (case-insensitive lookup).
KNOWN_LOCATIONS: dict[int, str] = {
    2840: "United States",
    2826: "United Kingdom",
    2124: "Canada",
    2036: "Australia",
    2276: "Germany",
    2250: "France",
    2356: "India",
    1023191: "New York,New York,United States",
    1014221: "Chicago,Illinois,United States",
    1026201: "Austin,Texas,United States",
    1006886: "London,England,United Kingdom",
}
_CODES_BY_NAME = {name.lower(): code for code, name in KNOWN_LOCATIONS.items()}
_DEFAULT_LOCATION_CODE = 2840


# -- parameters ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Location:
    """A resolved location: `code` wins over `name` when the request gave both."""

    code: int | None
    name: str | None

    def key(self) -> str:
        """What identifies the location for result generation (code if known, else name)."""
        if self.code is not None:
            return f"code:{self.code}"
        return f"name:{(self.name or '').strip().lower()}"

    def label(self) -> str:
        if self.name:
            return self.name
        return f"location {self.code}" if self.code is not None else "unspecified location"

    def as_params(self) -> dict[str, int | str]:
        """The location as request parameters, for `next_calls`."""
        if self.code is not None:
            return {"location_code": self.code}
        return {"location": self.name or ""}


def resolve_location(name: str | None, code: int | None, *, default: bool) -> Location | None:
    """Apply "code wins": a given code is used as is (its name looked up), else the name.

    An unknown name is kept as free text (local audits take addresses); `default` picks the
    United States when neither was given, as SERP and keyword endpoints do.
    """
    if code is not None:
        return Location(code, KNOWN_LOCATIONS.get(code))
    if name is not None:
        known = _CODES_BY_NAME.get(name.strip().lower())
        if known is not None:
            return Location(known, KNOWN_LOCATIONS[known])
        return Location(None, name.strip())
    if default:
        return Location(_DEFAULT_LOCATION_CODE, KNOWN_LOCATIONS[_DEFAULT_LOCATION_CODE])
    return None


@dataclass(frozen=True, slots=True)
class SerpParams:
    keyword: str
    location: Location
    device: Literal["desktop", "mobile"] = "desktop"
    depth: int = 10


@dataclass(frozen=True, slots=True)
class KeywordMetricsParams:
    keywords: tuple[str, ...]
    location: Location


@dataclass(frozen=True, slots=True)
class LocalAuditParams:
    domain: str | None
    business_name: str | None
    location: Location


WorkflowParams = SerpParams | KeywordMetricsParams | LocalAuditParams


def workflow_name(params: WorkflowParams) -> WorkflowName:
    if isinstance(params, SerpParams):
        return "serp_analysis"
    if isinstance(params, KeywordMetricsParams):
        return "keyword_metrics"
    return "local_audit"


def _target_texts(params: WorkflowParams) -> list[str]:
    if isinstance(params, SerpParams):
        return [params.keyword]
    if isinstance(params, KeywordMetricsParams):
        return list(params.keywords)
    return [t for t in (params.domain, params.business_name) if t]


def failure_mode(params: WorkflowParams) -> FailureMode | None:
    """The documented deterministic failure triggers (see the module docstring)."""
    texts = [t.lower() for t in _target_texts(params)]
    if any(FAIL_PERMANENT_MARKER in t for t in texts):
        return "permanent"
    if any(FAIL_TRANSIENT_MARKER in t for t in texts):
        return "transient"
    return None


# -- result shapes ------------------------------------------------------------------------------


class NextCall(TypedDict):
    method: Literal["POST"]
    path: str
    """Relative to the API base (e.g. `/keyword-metrics/overview`)."""
    body: dict[str, object]
    reason: str


class AgentWorkflow(TypedDict):
    decision: str
    confidence: float
    recommended_actions: list[str]
    evidence: list[str]
    limitations: list[str]
    next_calls: list[NextCall]


class LocationBody(TypedDict):
    code: int | None
    name: str | None


class SerpItem(TypedDict):
    position: int
    type: Literal["organic"]
    url: str
    title: str
    domain: str
    snippet: str


class SerpResult(TypedDict):
    workflow: Literal["serp_analysis"]
    keyword: str
    location: LocationBody
    device: str
    search_intent: str
    difficulty: int
    total_results: int
    features: list[str]
    results: list[SerpItem]
    agent_workflow: AgentWorkflow


class TrendPoint(TypedDict):
    month: str
    search_volume: int


class KeywordMetrics(TypedDict):
    keyword: str
    search_volume: int
    cpc: float
    currency: Literal["USD"]
    competition: float
    competition_level: Literal["LOW", "MEDIUM", "HIGH"]
    keyword_difficulty: int
    search_intent: str
    trend: list[TrendPoint]


class KeywordMetricsResult(TypedDict):
    workflow: Literal["keyword_metrics"]
    location: LocationBody
    keywords: list[KeywordMetrics]
    totals: dict[str, int]
    agent_workflow: AgentWorkflow


class AuditScores(TypedDict):
    overall: int
    google_business_profile: int
    reviews: int
    citations: int
    nap_consistency: int
    on_page: int | None


class AuditIssue(TypedDict):
    id: str
    severity: Literal["high", "medium", "low"]
    category: str
    title: str
    recommendation: str


class AuditTarget(TypedDict):
    domain: str | None
    business_name: str
    location: LocationBody


class LocalPack(TypedDict):
    present: bool
    position: int | None


class ReviewStats(TypedDict):
    count: int
    average_rating: float
    response_rate: float


class LocalAuditResult(TypedDict):
    workflow: Literal["local_audit"]
    target: AuditTarget
    scores: AuditScores
    local_pack: LocalPack
    reviews: ReviewStats
    issues: list[AuditIssue]
    website_found: bool
    agent_workflow: AgentWorkflow


WorkflowResult = SerpResult | KeywordMetricsResult | LocalAuditResult

_SIMULATED = "Simulated sandbox data: plausible and deterministic, not live measurements."


# -- generation ---------------------------------------------------------------------------------


def _rng(seed: int, *parts: object) -> random.Random:
    """An RNG keyed by the seed and the canonical parameters, independent of request order."""
    raw = json.dumps([seed, *parts], sort_keys=True, separators=(",", ":"), default=str)
    return random.Random(int.from_bytes(hashlib.sha256(raw.encode()).digest()[:8], "big"))


def _location_body(location: Location) -> LocationBody:
    return {"code": location.code, "name": location.name}


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "topic"


def _intent(keyword: str, rng: random.Random) -> str:
    words = set(keyword.lower().split())
    if words & {"buy", "price", "prices", "cheap", "deal", "deals", "coupon", "order"}:
        return "transactional"
    if words & {"best", "top", "vs", "review", "reviews", "compare", "alternatives"}:
        return "commercial"
    if words & {"how", "what", "why", "guide", "tutorial", "ideas", "examples"}:
        return "informational"
    if "near me" in keyword.lower() or words & {"login", "contact", "hours"}:
        return "navigational"
    return rng.choice(("informational", "commercial", "informational", "transactional"))


_AUTHORITY_DOMAINS = (
    "wikipedia.org",
    "reddit.com",
    "youtube.com",
    "forbes.com",
    "nerdwallet.com",
    "investopedia.com",
    "medium.com",
    "quora.com",
    "hubspot.com",
    "g2.com",
    "capterra.com",
    "nytimes.com",
    "healthline.com",
    "yelp.com",
    "amazon.com",
)
_UGC = {"reddit.com", "quora.com", "medium.com", "youtube.com"}
_FEATURES = (
    "featured_snippet",
    "people_also_ask",
    "local_pack",
    "images",
    "video",
    "top_stories",
    "knowledge_panel",
    "shopping",
    "related_searches",
    "sitelinks",
)


def _serp_item(position: int, domain: str, keyword: str, rng: random.Random) -> SerpItem:
    kw_title = keyword.title()
    slug = _slug(keyword)
    year = 2026
    templates = (
        (f"{kw_title}: The Complete Guide ({year})", f"/guides/{slug}"),
        (f"What Is {kw_title}? Everything You Need to Know", f"/learn/{slug}"),
        (f"{rng.randint(5, 15)} Best {kw_title} Options Compared", f"/best-{slug}"),
        (f"How to Choose {kw_title} (Expert Tips)", f"/blog/how-to-choose-{slug}"),
        (f"{kw_title} Pricing, Reviews & Alternatives", f"/{slug}/reviews"),
        (f"{kw_title} for Beginners: A Step-by-Step Guide", f"/{slug}-for-beginners"),
    )
    if domain == "wikipedia.org":
        title, path = f"{kw_title} - Wikipedia", f"/wiki/{slug.replace('-', '_').title()}"
    elif domain == "reddit.com":
        title, path = f"Anyone tried {keyword}? : r/{slug.split('-')[0]}", f"/r/{slug}/comments"
    elif domain == "youtube.com":
        title, path = f"{kw_title} Explained in 10 Minutes", "/watch"
    else:
        title, path = rng.choice(templates)
    snippet = rng.choice(
        (
            f"Learn everything about {keyword}: costs, pros and cons, and how to get started.",
            f"We compared the top {keyword} options on price, features and support.",
            f"{kw_title} explained: what it is, how it works, and what to watch out for.",
            f"Updated for {year}. Our editors tested {keyword} so you don't have to.",
            f"Real users discuss {keyword}, share experiences and recommendations.",
        )
    )
    return {
        "position": position,
        "type": "organic",
        "url": f"https://www.{domain}{path}",
        "title": title,
        "domain": domain,
        "snippet": snippet,
    }


def _serp(seed: int, params: SerpParams) -> SerpResult:
    rng = _rng(seed, "serp_analysis", params.keyword.lower(), params.location.key(), params.device)
    keyword = params.keyword
    slug = _slug(keyword)
    brand = slug.split("-")[0]
    pool = list(_AUTHORITY_DOMAINS)
    rng.shuffle(pool)
    own = [f"{brand}.com", f"{brand}hq.com", f"the{brand}guide.com", f"get{brand}.io"]
    domains: list[str] = []
    while len(domains) < params.depth:
        source = own if own and rng.random() < 0.3 else pool
        if not source:
            source = own
        if not source:  # depth beyond both pools: numbered niche sites
            domains.append(f"{brand}-site{len(domains) + 1}.com")
            continue
        domains.append(source.pop())
    results = [_serp_item(i + 1, d, keyword, rng) for i, d in enumerate(domains)]

    intent = _intent(keyword, rng)
    words = len(keyword.split())
    difficulty = max(1, min(100, rng.randint(15, 90) - 8 * max(0, words - 2)))
    features = sorted(rng.sample(_FEATURES, rng.randint(2, 5)), key=_FEATURES.index)
    if intent == "navigational" and "local_pack" not in features:
        features.append("local_pack")
    ugc = [r["domain"] for r in results[:10] if r["domain"] in _UGC]

    if difficulty < 35:
        decision = "target_now"
    elif difficulty < 65:
        decision = "target_with_supporting_content"
    else:
        decision = "prefer_long_tail_variants"
    actions: list[str] = []
    if "featured_snippet" in features:
        actions.append(
            "Answer the query in a 40-60 word paragraph under an H2 to compete for the "
            "featured snippet."
        )
    if "people_also_ask" in features:
        actions.append("Add an FAQ section that covers the People Also Ask questions.")
    if "video" in features:
        actions.append("Publish a short explainer video; video results appear on page one.")
    if "local_pack" in features:
        actions.append("Audit the local presence: a local pack sits above organic results.")
    if decision == "prefer_long_tail_variants":
        actions.append(f"Target longer variants of '{keyword}' before the head term.")
    else:
        actions.append(f"Create a page that matches the {intent} intent of '{keyword}'.")
    evidence = [
        f"Keyword difficulty {difficulty}/100 for {params.location.label()} ({params.device}).",
        "SERP features: " + ", ".join(features) + ".",
        f"{len(ugc)} forum/video results in the top 10" + (f" ({', '.join(ugc)})." if ugc else "."),
    ]
    next_calls: list[NextCall] = [
        {
            "method": "POST",
            "path": "/keyword-metrics/overview",
            "body": {
                "keywords": [keyword, f"best {keyword}", f"{keyword} guide"],
                **params.location.as_params(),
            },
            "reason": "Check volume, CPC and competition before committing content.",
        }
    ]
    if decision == "prefer_long_tail_variants":
        next_calls.append(
            {
                "method": "POST",
                "path": "/analyze/serp",
                "body": {"keyword": f"{keyword} for beginners", **params.location.as_params()},
                "reason": "A long-tail variant is likely easier to rank for.",
            }
        )
    return {
        "workflow": "serp_analysis",
        "keyword": keyword,
        "location": _location_body(params.location),
        "device": params.device,
        "search_intent": intent,
        "difficulty": difficulty,
        "total_results": rng.randint(120_000, 950_000_000),
        "features": features,
        "results": results,
        "agent_workflow": {
            "decision": decision,
            "confidence": round(rng.uniform(0.6, 0.92), 2),
            "recommended_actions": actions,
            "evidence": evidence,
            "limitations": [
                f"One snapshot for {params.location.label()} on {params.device}; "
                "rankings change daily.",
                _SIMULATED,
            ],
            "next_calls": next_calls,
        },
    }


# Google Ads-style volume buckets.
_VOLUMES = (
    10, 20, 30, 50, 70, 90, 110, 140, 170, 210, 260, 320, 390, 480, 590, 720, 880, 1000,
    1300, 1600, 1900, 2400, 2900, 3600, 4400, 5400, 6600, 8100, 9900, 12100, 14800, 18100,
    22200, 27100, 33100, 40500, 49500, 60500, 74000, 90500, 110000, 135000, 165000, 201000,
)  # fmt: skip


def _months_back(as_of: float, n: int) -> list[str]:
    """`n` month labels ending with the month of `as_of`, oldest first."""
    now = datetime.fromtimestamp(as_of, UTC)
    index = now.year * 12 + now.month - 1
    return [f"{i // 12:04d}-{i % 12 + 1:02d}" for i in range(index - n + 1, index + 1)]


def _keyword_row(seed: int, keyword: str, location: Location, months: list[str]) -> KeywordMetrics:
    rng = _rng(seed, "keyword_metrics", keyword.lower(), location.key())
    words = len(keyword.split())
    top = len(_VOLUMES) - 1 - 6 * max(0, words - 1)
    volume = _VOLUMES[rng.randint(0, max(3, top))]
    intent = _intent(keyword, rng)
    commercial = intent in {"commercial", "transactional"}
    competition = round(rng.uniform(0.35, 1.0) if commercial else rng.uniform(0.02, 0.7), 2)
    level: Literal["LOW", "MEDIUM", "HIGH"] = (
        "LOW" if competition < 0.33 else "MEDIUM" if competition < 0.66 else "HIGH"
    )
    peak = rng.randrange(12)
    trend: list[TrendPoint] = []
    for i, month in enumerate(months):
        season = 1.0 + 0.25 * (1 - min(abs(i - peak), 12 - abs(i - peak)) / 6)
        trend.append({"month": month, "search_volume": int(volume * season * rng.uniform(0.8, 1))})
    return {
        "keyword": keyword,
        "search_volume": volume,
        "cpc": round(rng.uniform(0.4, 14.0) if commercial else rng.uniform(0.05, 4.0), 2),
        "currency": "USD",
        "competition": competition,
        "competition_level": level,
        "keyword_difficulty": max(1, min(100, rng.randint(10, 85) - 5 * max(0, words - 2))),
        "search_intent": intent,
        "trend": trend,
    }


def _keyword_metrics(seed: int, params: KeywordMetricsParams, as_of: float) -> KeywordMetricsResult:
    months = _months_back(as_of, 12)
    rows = [_keyword_row(seed, k, params.location, months) for k in params.keywords]
    ranked = sorted(
        rows, key=lambda r: (-r["search_volume"] / (r["keyword_difficulty"] + 10), r["keyword"])
    )
    best = ranked[0]
    easy = [r for r in rows if r["keyword_difficulty"] < 50 and r["search_volume"] >= 100]
    decision = "prioritize_keywords" if easy else "expand_keyword_set"
    actions = [
        f"Prioritize '{r['keyword']}' ({r['search_volume']:,}/mo, KD {r['keyword_difficulty']})."
        for r in ranked[:3]
    ]
    if not easy:
        actions.append("Find lower-difficulty variants: none of these has KD < 50 and 100+/mo.")
    evidence = [
        f"'{r['keyword']}': {r['search_volume']:,}/mo, CPC ${r['cpc']:.2f}, "
        f"competition {r['competition_level'].lower()}, KD {r['keyword_difficulty']}."
        for r in rows[:10]
    ]
    rng = _rng(seed, "keyword_metrics:summary", [r["keyword"].lower() for r in rows])
    return {
        "workflow": "keyword_metrics",
        "location": _location_body(params.location),
        "keywords": rows,
        "totals": {
            "keywords": len(rows),
            "search_volume": sum(r["search_volume"] for r in rows),
        },
        "agent_workflow": {
            "decision": decision,
            "confidence": round(rng.uniform(0.65, 0.9), 2),
            "recommended_actions": actions,
            "evidence": evidence,
            "limitations": [
                "Volumes are monthly averages of the last 12 months, rounded to buckets.",
                _SIMULATED,
            ],
            "next_calls": [
                {
                    "method": "POST",
                    "path": "/analyze/serp",
                    "body": {"keyword": best["keyword"], **params.location.as_params()},
                    "reason": "See who ranks for the best opportunity and which features show.",
                }
            ],
        },
    }


_ISSUES: tuple[tuple[str, str, str, str, str], ...] = (
    # (score field, id, category, title, recommendation)
    (
        "google_business_profile",
        "gbp_incomplete",
        "google_business_profile",
        "Google Business Profile is missing hours, services or photos",
        "Complete every profile field and add at least 10 recent photos.",
    ),
    (
        "reviews",
        "few_recent_reviews",
        "reviews",
        "Few recent reviews and unanswered reviews",
        "Ask recent customers for reviews and reply to every review within a week.",
    ),
    (
        "citations",
        "missing_citations",
        "citations",
        "Missing from major local directories",
        "List the business on the main directories for its category and city.",
    ),
    (
        "nap_consistency",
        "nap_inconsistent",
        "citations",
        "Name, address or phone differ across listings",
        "Use one canonical name, address and phone everywhere and fix the mismatches.",
    ),
    (
        "on_page",
        "no_local_schema",
        "on_page",
        "No LocalBusiness structured data on the website",
        "Add LocalBusiness schema with the same name, address and phone as the profile.",
    ),
)


def _local_audit(seed: int, params: LocalAuditParams) -> LocalAuditResult:
    rng = _rng(
        seed,
        "local_audit",
        (params.domain or "").lower(),
        (params.business_name or "").strip().lower(),
        params.location.key(),
    )
    name = params.business_name or (params.domain or "business").split(".")[0].replace("-", " ")
    name = name.strip().title() if not params.business_name else name.strip()
    gbp = rng.randint(35, 98)
    reviews = rng.randint(25, 95)
    citations = rng.randint(30, 95)
    nap = rng.randint(40, 100)
    on_page = rng.randint(30, 95) if params.domain else None
    parts = [gbp, reviews, citations, nap] + ([on_page] if on_page is not None else [])
    overall = round(sum(parts) / len(parts))
    scores: AuditScores = {
        "overall": overall,
        "google_business_profile": gbp,
        "reviews": reviews,
        "citations": citations,
        "nap_consistency": nap,
        "on_page": on_page,
    }
    by_field: dict[str, int | None] = {
        "google_business_profile": gbp,
        "reviews": reviews,
        "citations": citations,
        "nap_consistency": nap,
        "on_page": on_page,
    }
    issues: list[AuditIssue] = []
    for field_name, issue_id, category, title, recommendation in _ISSUES:
        value = by_field[field_name]
        if value is None or value >= 75:
            continue
        severity: Literal["high", "medium", "low"] = (
            "high" if value < 50 else "medium" if value < 65 else "low"
        )
        issues.append(
            {
                "id": issue_id,
                "severity": severity,
                "category": category,
                "title": title,
                "recommendation": recommendation,
            }
        )
    if params.domain is None:
        issues.append(
            {
                "id": "no_website",
                "severity": "medium",
                "category": "on_page",
                "title": "No website was given or linked from the profile",
                "recommendation": "Link a website from the profile; it is a local ranking signal.",
            }
        )
    in_pack = overall >= 60 and rng.random() < 0.7
    if overall >= 80:
        decision = "maintain_and_monitor"
    elif overall >= 60:
        decision = "fix_priority_issues"
    else:
        decision = "overhaul_local_presence"
    rank = {"high": 0, "medium": 1, "low": 2}
    issues.sort(key=lambda i: (rank[i["severity"]], i["id"]))
    query = f"{name} {params.location.label().split(',')[0]}"
    return {
        "workflow": "local_audit",
        "target": {
            "domain": params.domain,
            "business_name": name,
            "location": _location_body(params.location),
        },
        "scores": scores,
        "local_pack": {"present": in_pack, "position": rng.randint(1, 3) if in_pack else None},
        "reviews": {
            "count": rng.randint(3, 480),
            "average_rating": round(rng.uniform(3.2, 4.9), 1),
            "response_rate": round(rng.uniform(0.0, 1.0), 2),
        },
        "issues": issues,
        "website_found": params.domain is not None,
        "agent_workflow": {
            "decision": decision,
            "confidence": round(rng.uniform(0.6, 0.9), 2),
            "recommended_actions": [i["recommendation"] for i in issues[:4]]
            or ["Keep the profile current and keep collecting reviews."],
            "evidence": [f"Overall local score {overall}/100."]
            + [f"{i['title']} ({i['severity']})." for i in issues[:4]],
            "limitations": [
                f"Audited for {params.location.label()} only.",
                _SIMULATED,
            ],
            "next_calls": [
                {
                    "method": "POST",
                    "path": "/analyze/serp",
                    "body": {"keyword": query, **params.location.as_params()},
                    "reason": "See which competitors own the local results for this business.",
                }
            ],
        },
    }


def generate_result(seed: int, params: WorkflowParams, *, as_of: float) -> WorkflowResult:
    """The completed job's `result` for these parameters (pure; see the module docstring)."""
    if isinstance(params, SerpParams):
        return _serp(seed, params)
    if isinstance(params, KeywordMetricsParams):
        return _keyword_metrics(seed, params, as_of)
    return _local_audit(seed, params)
