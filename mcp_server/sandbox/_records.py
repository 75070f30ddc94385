"""Deterministic fake Seamless data: every value is a pure function of (seed, identity).

A record must not depend on request order or on `SandboxState.rng`, so each identity draws
from its own `random.Random`, seeded by a BLAKE2 digest of the seed and a key. All random
draws happen in a fixed order before overrides (search filters, research descriptors) are
applied, so overriding one field never shifts the others.

Generated data is visibly fake: company domains end in `.example` (RFC 2606), phone numbers
use the fictional 555-01xx range, and no generated name or company contains the words the
sandbox uses as outcome triggers ("error", "missing", "nobody").

Only `createdAt`, `updatedAt` and `apiResearchId` of a researched record vary between runs:
they carry the job's virtual completion time and its request id.
"""

from __future__ import annotations

import hashlib
import random
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

#: Tenures and "time at role" are measured against this fixed date, not the clock.
REFERENCE_YEAR, REFERENCE_MONTH = 2026, 3

_FIRST = (
    "Jane", "John", "Maria", "David", "Aisha", "Wei", "Carlos", "Priya", "Liam", "Olivia",
    "Noah", "Emma", "Mateo", "Sofia", "Ethan", "Chloe", "Lucas", "Amara", "Kenji", "Hannah",
    "Omar", "Grace", "Diego", "Leah", "Samuel", "Nora", "Ravi", "Elena", "Marcus", "Ivy",
    "Tomas", "Zara", "Felix", "Maya", "Andre", "Lena", "Hugo", "Clara", "Isaac", "Ruby",
)  # fmt: skip
_MIDDLE = ("", "", "", "", "A.", "James", "Marie", "Lee", "Ann", "J.")
_LAST = (
    "Smith", "Johnson", "Garcia", "Chen", "Patel", "Okafor", "Nguyen", "Rossi", "Kowalski",
    "Mueller", "Tanaka", "Silva", "Khan", "Brown", "Davis", "Martinez", "Lopez", "Wilson",
    "Anderson", "Thomas", "Moore", "Jackson", "Lee", "Harris", "Clark", "Lewis", "Walker",
    "Hall", "Young", "King", "Wright", "Scott", "Green", "Baker", "Adams", "Nelson", "Hill",
    "Campbell", "Mitchell", "Roberts",
)  # fmt: skip
_COMPANY_HEAD = (
    "Northwind", "Bluefin", "Cedar", "Summit", "Harbor", "Ironwood", "Brightpath", "Silverline",
    "Redwood", "Keystone", "Clearwater", "Pinnacle", "Lumen", "Granite", "Evergreen", "Horizon",
    "Copperleaf", "Starling", "Meridian", "Oakridge", "Riverbend", "Skyline", "Sterling",
    "Tidewater", "Vantage", "Willow", "Aspen", "Beacon", "Cobalt", "Falcon", "Juniper", "Maple",
    "Nimbus", "Orchid", "Quarry", "Sable", "Topaz", "Vertex", "Zephyr", "Atlas",
)  # fmt: skip
_COMPANY_TAIL = (
    "Labs", "Systems", "Analytics", "Logistics", "Health", "Software", "Partners", "Robotics",
    "Foods", "Energy", "Capital", "Media", "Networks", "Dynamics", "Works", "Bio", "Solutions",
    "Security", "Cloud", "Retail",
)  # fmt: skip
_POOL_SIZE = 200
"""Distinct companies that generated contacts work at (so colleagues share a company)."""

# (industry, SIC, NAICS, what it makes)
_INDUSTRIES = (
    ("Computer Software", "7372", "511210", "workflow software"),
    ("Software Development", "7371", "541511", "developer tools"),
    ("Information Technology & Services", "7373", "541512", "managed IT services"),
    ("Hospital & Health Care", "8062", "622110", "patient care services"),
    ("Financial Services", "6199", "523999", "payments and lending products"),
    ("Logistics & Supply Chain", "4731", "488510", "freight and fulfilment services"),
    ("Retail", "5399", "452319", "consumer goods"),
    ("Marketing & Advertising", "7311", "541810", "campaign analytics"),
    ("Renewables & Environment", "4911", "221114", "solar energy systems"),
    ("Biotechnology", "2836", "325414", "diagnostic assays"),
    ("Food & Beverages", "2099", "311999", "packaged foods"),
    ("Computer & Network Security", "7382", "561621", "threat detection"),
    ("Telecommunications", "4813", "517311", "connectivity services"),
    ("Construction", "1542", "236220", "commercial construction"),
    ("Education Management", "8299", "611710", "learning platforms"),
)
_AUDIENCES = ("mid-market companies", "enterprises", "small businesses", "public agencies")

# department -> (title, seniority), most senior first
_TITLES: dict[str, tuple[tuple[str, str], ...]] = {
    "Engineering": (
        ("Chief Technology Officer", "C-Level"),
        ("VP of Engineering", "VP"),
        ("Director of Engineering", "Director"),
        ("Engineering Manager", "Manager"),
        ("Senior Software Engineer", "Senior"),
        ("Software Engineer", "Entry"),
    ),
    "Sales": (
        ("Chief Revenue Officer", "C-Level"),
        ("VP of Sales", "VP"),
        ("Director of Sales", "Director"),
        ("Sales Manager", "Manager"),
        ("Account Executive", "Senior"),
        ("Sales Development Representative", "Entry"),
    ),
    "Marketing": (
        ("Chief Marketing Officer", "C-Level"),
        ("VP of Marketing", "VP"),
        ("Director of Demand Generation", "Director"),
        ("Marketing Manager", "Manager"),
        ("Content Strategist", "Senior"),
        ("Marketing Coordinator", "Entry"),
    ),
    "Finance": (
        ("Chief Financial Officer", "C-Level"),
        ("VP of Finance", "VP"),
        ("Finance Director", "Director"),
        ("Finance Manager", "Manager"),
        ("Senior Financial Analyst", "Senior"),
        ("Financial Analyst", "Entry"),
    ),
    "Operations": (
        ("Chief Operating Officer", "C-Level"),
        ("VP of Operations", "VP"),
        ("Director of Operations", "Director"),
        ("Operations Manager", "Manager"),
        ("Operations Analyst", "Entry"),
    ),
    "IT": (
        ("Chief Information Officer", "C-Level"),
        ("VP of IT", "VP"),
        ("IT Director", "Director"),
        ("IT Manager", "Manager"),
        ("Systems Administrator", "Senior"),
    ),
    "Human Resources": (
        ("Chief People Officer", "C-Level"),
        ("VP of People", "VP"),
        ("HR Director", "Director"),
        ("Talent Acquisition Manager", "Manager"),
        ("Recruiter", "Entry"),
    ),
    "Customer Success": (
        ("VP of Customer Success", "VP"),
        ("Director of Customer Success", "Director"),
        ("Customer Success Manager", "Manager"),
        ("Customer Success Associate", "Entry"),
    ),
}
_DEPARTMENTS = tuple(_TITLES)

# (city, state, country, timezone, phone area code, zip)
_LOCATIONS = (
    ("New York", "New York", "United States", "Eastern (EST)", "212", "10001"),
    ("Columbus", "Ohio", "United States", "Eastern (EST)", "614", "43215"),
    ("Jacksonville", "Florida", "United States", "Eastern (EST)", "904", "32202"),
    ("Austin", "Texas", "United States", "Central (CST)", "512", "78701"),
    ("Chicago", "Illinois", "United States", "Central (CST)", "312", "60601"),
    ("Denver", "Colorado", "United States", "Mountain (MST)", "303", "80202"),
    ("Seattle", "Washington", "United States", "Pacific (PST)", "206", "98101"),
    ("San Francisco", "California", "United States", "Pacific (PST)", "415", "94105"),
    ("Menlo Park", "California", "United States", "Pacific (PST)", "650", "94025"),
    ("Boston", "Massachusetts", "United States", "Eastern (EST)", "617", "02110"),
    ("Atlanta", "Georgia", "United States", "Eastern (EST)", "404", "30303"),
    ("Toronto", "Ontario", "Canada", "Eastern (EST)", "416", "M5H 2N2"),
    ("London", "England", "United Kingdom", "Greenwich (GMT)", "20", "EC2A 4NE"),
    ("Berlin", "Berlin", "Germany", "Central European (CET)", "30", "10115"),
    ("Sydney", "New South Wales", "Australia", "Australian Eastern (AEST)", "2", "2000"),
)
# (band as the published companySize / companyRevenue enums write it, a typical number)
_SIZES = (
    ("2 - 10", 8),
    ("11 - 50", 34),
    ("51 - 200", 120),
    ("201 - 500", 340),
    ("501 - 1,000", 760),
    ("1,001 - 5,000", 2400),
    ("5,001 - 10,000", 7200),
    ("10,001+", 15000),
)
_REVENUES = (
    ("$100K - $1M", 600_000),
    ("$1M - $5M", 3_000_000),
    ("$5M - $20M", 12_000_000),
    ("$20M - $50M", 35_000_000),
    ("$50M - $100M", 75_000_000),
    ("$100M - $500M", 250_000_000),
    ("$500M - $1B", 750_000_000),
    ("$1B+", 1_000_000_001),
)
_FUNDING_ROUNDS = ("Seed", "Series A", "Series B", "Series C", "Series D", "Series E")
_TECHNOLOGIES = (
    "Salesforce", "HubSpot", "AWS", "Google Cloud", "Azure", "Snowflake", "Stripe", "Zendesk",
    "Slack", "Okta", "Workday", "Shopify", "Segment", "Datadog", "Marketo",
)  # fmt: skip
_STREETS = ("Market St", "Main St", "Broadway", "Park Ave", "Harbor Blvd", "Lake Dr", "Elm St")
_EMAIL_VERDICTS = ("valid", "valid", "valid", "catch-all", "unknown")


# identities ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CompanySpec:
    """What is known about a company before generation; `None` fields are generated."""

    key: str
    """Identity of the target (search position or descriptor); seeds the generated fields."""
    name: str | None = None
    domain: str | None = None
    industry: str | None = None
    country: str | None = None
    size_range: str | None = None
    revenue_range: str | None = None
    technologies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ContactSpec:
    """What is known about a contact before generation; `None` fields are generated."""

    key: str
    name: str | None = None
    company_name: str | None = None
    domain: str | None = None
    title: str | None = None
    seniority: str | None = None
    department: str | None = None
    email: str | None = None
    li_url: str | None = None
    industry: str | None = None
    country: str | None = None
    size_range: str | None = None
    revenue_range: str | None = None
    technologies: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Company:
    company_id: str
    name: str
    domain: str
    domain_alias: str
    description: str
    industry: str
    industries: tuple[str, ...]
    sic: str
    naics: str
    staff_count: int
    size_range: str
    annual_revenue: int
    revenue_range: str
    founded: int
    company_type: str
    ticker: str
    phones: tuple[str, str, str]
    phone_confidence: tuple[int, int, int]
    street: str
    city: str
    state: str
    zip_code: str
    country: str
    timezone: str
    li_slug: str
    li_id: str
    funding_total: int
    funding_date: str
    funding_rounds: tuple[str, ...]
    technologies: tuple[str, ...]
    last_modified: str

    @property
    def li_url(self) -> str:
        return f"https://www.linkedin.com/company/{self.li_slug}"


@dataclass(frozen=True, slots=True)
class Contact:
    contact_id: str
    first: str
    middle: str
    last: str
    title: str
    department: str
    seniority: str
    emails: tuple[str, str, str]
    email_confidence: tuple[int, int, int]
    email_verdicts: tuple[str, str, str]
    phone1: str
    phone1_confidence: int
    phone1_type: str
    phone2: str
    phone2_type: str
    city: str
    state: str
    country: str
    timezone: str
    li_url: str
    sales_nav_url: str
    recruiter_url: str
    x_url: str
    months_at_company: int
    months_at_role: int
    former_company: str
    former_title: str
    former_started: str
    former_ended: str
    last_modified: str
    company: Company

    @property
    def full_name(self) -> str:
        return " ".join(p for p in (self.first, self.middle, self.last) if p)


# helpers ------------------------------------------------------------------------------------


def _digest(seed: int, parts: Sequence[str]) -> bytes:
    text = "\x1f".join([str(seed), *parts])
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def _rng(seed: int, *parts: str) -> random.Random:
    return random.Random(int.from_bytes(_digest(seed, parts), "big"))


def stable_uuid(seed: int, *parts: str) -> str:
    """A uuid-shaped id (version 3 layout, like Seamless' searchResultIds) for (seed, parts)."""
    return str(uuid.UUID(bytes=_digest(seed, parts), version=3))


def stable_number(seed: int, *parts: str, digits: int = 9) -> str:
    low = 10 ** (digits - 1)
    return str(low + int.from_bytes(_digest(seed, parts), "big") % (9 * low))


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "", text.lower()) or "company"


def _months_ago(months: int) -> str:
    y, m = divmod(REFERENCE_YEAR * 12 + REFERENCE_MONTH - 1 - months, 12)
    return f"{y:04d}-{m + 1:02d}-01"


def _duration(months: int) -> str:
    years, rest = divmod(months, 12)
    if years and rest:
        return f"{years} Yr {rest} Mo"
    return f"{years} Yr" if years else f"{rest} Mo"


def _phone(area: str, n: int) -> str:
    return f"{area}.555.01{n % 100:02d}"


def _pick_named(
    options: Sequence[tuple[str, int]], wanted: str | None, drawn: int
) -> tuple[str, int]:
    """The option named `wanted` (with its number), or the drawn one; unknown names kept as-is."""
    if wanted is None:
        return options[drawn]
    for option in options:
        if option[0] == wanted:
            return option
    return wanted, options[drawn][1]


def _split_name(name: str) -> tuple[str, str, str]:
    parts = name.split()
    if not parts:
        return "", "", ""
    if len(parts) == 1:
        return parts[0], "", ""
    return parts[0], " ".join(parts[1:-1]), parts[-1]


_SENIORITY_WORDS = (
    (("vp", "vice"), "VP"),
    (("chief", "cto", "ceo", "cfo", "coo", "cmo", "cio", "cro", "founder", "owner", "president"),
     "C-Level"),
    (("director", "head"), "Director"),
    (("manager", "lead"), "Manager"),
    (("senior", "principal", "staff"), "Senior"),
)  # fmt: skip
_DEPARTMENT_WORDS = (
    (("engineer", "engineering", "developer", "technology", "cto"), "Engineering"),
    (("sales", "account", "revenue", "cro"), "Sales"),
    (("marketing", "content", "brand", "growth", "cmo"), "Marketing"),
    (("finance", "financial", "controller", "accounting", "cfo"), "Finance"),
    (("people", "talent", "recruiter", "recruiting", "hr"), "Human Resources"),
    (("customer", "success", "support"), "Customer Success"),
    (("it", "information", "systems", "cio"), "IT"),
    (("operations", "operating", "coo"), "Operations"),
)


def _infer(title: str, rules: tuple[tuple[tuple[str, ...], str], ...]) -> str | None:
    """The first rule with a whole word of `title` among its words."""
    words = set(re.findall(r"[a-z]+", title.lower()))
    for keys, value in rules:
        if words.intersection(keys):
            return value
    return None


@lru_cache(maxsize=8)
def _company_pool(seed: int) -> tuple[str, ...]:
    names = [f"{h} {t}" for h in _COMPANY_HEAD for t in _COMPANY_TAIL]
    _rng(seed, "company-pool").shuffle(names)
    return tuple(names[:_POOL_SIZE])


@lru_cache(maxsize=8)
def _pool_by_domain(seed: int) -> dict[str, str]:
    return {f"{slug(n)}.example": n for n in _company_pool(seed)}


def _generated_company_name(seed: int, key: str) -> str:
    rng = _rng(seed, "company-name", key)
    return f"{rng.choice(_COMPANY_HEAD)} {rng.choice(_COMPANY_TAIL)}"


# builders -----------------------------------------------------------------------------------


def build_company(seed: int, spec: CompanySpec) -> Company:
    """A company; its attributes are keyed by its domain, so any path to it agrees."""
    if spec.name and spec.domain:
        name, domain = spec.name, spec.domain
    elif spec.domain:
        domain = spec.domain
        name = _pool_by_domain(seed).get(domain) or _generated_company_name(seed, domain)
    elif spec.name:
        name = spec.name
        domain = f"{slug(name)}.example"
    else:
        pool = _company_pool(seed)
        name = pool[_rng(seed, "pool-pick", spec.key).randrange(len(pool))]
        domain = f"{slug(name)}.example"
    domain = domain.lower()

    rng = _rng(seed, "company", domain)
    ind = _INDUSTRIES[rng.randrange(len(_INDUSTRIES))]
    second = _INDUSTRIES[rng.randrange(len(_INDUSTRIES))][0]
    size_i = rng.randrange(len(_SIZES))
    rev_i = rng.randrange(len(_REVENUES))
    loc_i = rng.randrange(len(_LOCATIONS))
    founded = rng.randrange(1975, 2023)
    ctype = rng.choice(("Private", "Private", "Private", "Public", "Private"))  # Public|Private
    phone_n = [rng.randrange(100) for _ in range(3)]
    phone_conf = (rng.randrange(90, 100), rng.randrange(10, 40), rng.randrange(1, 10))
    street_no = rng.randrange(10, 2000)
    street = rng.choice(_STREETS)
    li_id = str(rng.randrange(1000, 99_999_999))
    rounds = _FUNDING_ROUNDS[: rng.randrange(len(_FUNDING_ROUNDS) + 1)]
    funding_total = rng.randrange(1, 400) * 1_000_000 if rounds else 0
    funding_date = f"{rng.randrange(2015, 2026)}-{rng.randrange(1, 13):02d}-01" if rounds else ""
    techs = tuple(sorted(rng.sample(_TECHNOLOGIES, rng.randrange(3, 7))))
    audience = rng.choice(_AUDIENCES)
    modified = f"2026-0{rng.randrange(1, 3)}-{rng.randrange(1, 29):02d}"

    industry, sic, naics, makes = ind
    if spec.industry is not None:
        industry = spec.industry
    size_range, staff = _pick_named(_SIZES, spec.size_range, size_i)
    revenue_range, revenue = _pick_named(_REVENUES, spec.revenue_range, rev_i)
    city, state, country, tz, area, zip_code = _LOCATIONS[loc_i]
    if spec.country is not None and spec.country != country:
        same = [loc for loc in _LOCATIONS if loc[2] == spec.country]
        city, state, country, tz, area, zip_code = (
            same[loc_i % len(same)] if same else ("", "", spec.country, "", area, "")
        )
    if spec.technologies:
        techs = tuple(dict.fromkeys([*spec.technologies, *techs]))
    base = domain.rsplit(".", 1)[0]
    return Company(
        company_id=stable_number(seed, "company-id", domain, digits=8),
        name=name,
        domain=domain,
        domain_alias=f"{base}.net",
        description=f"{name} provides {makes} for {audience}.",
        industry=industry,
        industries=tuple(dict.fromkeys((industry, second))),
        sic=sic,
        naics=naics,
        staff_count=staff,
        size_range=size_range,
        annual_revenue=revenue,
        revenue_range=revenue_range,
        founded=founded,
        company_type=ctype,
        ticker=slug(name)[:4].upper() if ctype == "Public" else "",
        phones=(_phone(area, phone_n[0]), _phone(area, phone_n[1]), _phone(area, phone_n[2])),
        phone_confidence=phone_conf,
        street=f"{street_no} {street}",
        city=city,
        state=state,
        zip_code=zip_code,
        country=country,
        timezone=tz,
        li_slug=re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "company",
        li_id=li_id,
        funding_total=funding_total,
        funding_date=funding_date,
        funding_rounds=rounds[-1:],
        technologies=techs,
        last_modified=modified,
    )


def build_contact(seed: int, spec: ContactSpec) -> Contact:
    """A contact at a company; descriptor fields given in `spec` win over generated ones."""
    rng = _rng(seed, "contact", spec.key)
    first, middle, last = rng.choice(_FIRST), rng.choice(_MIDDLE), rng.choice(_LAST)
    dept_i = rng.randrange(len(_DEPARTMENTS))
    title_i = rng.randrange(100)
    loc_i = rng.randrange(len(_LOCATIONS))
    email_conf = (rng.randrange(85, 100), rng.randrange(60, 98), rng.randrange(30, 90))
    verdicts = (rng.choice(_EMAIL_VERDICTS), rng.choice(_EMAIL_VERDICTS), "unknown")
    phone_n = (rng.randrange(100), rng.randrange(100))
    phone1_conf = rng.randrange(70, 100)
    phone1_type = rng.choice(("mobile", "mobile", "direct"))
    months_company = rng.randrange(2, 121)
    months_role = rng.randrange(1, months_company + 1)
    former_months = rng.randrange(12, 73)
    tag = _digest(seed, ("contact-tag", spec.key)).hex()
    former_company_key = f"former:{spec.key}"
    modified = (
        f"2026-0{rng.randrange(1, 3)}-{rng.randrange(1, 29):02d}T"
        f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:{rng.randrange(60):02d}Z"
    )

    if spec.name:
        first, middle, last = _split_name(spec.name)
    department = spec.department or (spec.title and _infer(spec.title, _DEPARTMENT_WORDS))
    department = department or _DEPARTMENTS[dept_i]
    titles = _TITLES.get(department) or _TITLES[_DEPARTMENTS[dept_i]]
    drawn_title, drawn_seniority = titles[title_i % len(titles)]
    if spec.seniority:
        match = [t for t in titles if t[1] == spec.seniority]
        drawn_title, drawn_seniority = match[0] if match else (drawn_title, spec.seniority)
    title = spec.title or drawn_title
    seniority = (
        spec.seniority or (spec.title and _infer(spec.title, _SENIORITY_WORDS)) or drawn_seniority
    )
    former_title = titles[min(len(titles) - 1, title_i % len(titles) + 1)][0]

    company = build_company(
        seed,
        CompanySpec(
            key=f"employer:{spec.key}",
            name=spec.company_name,
            domain=spec.domain,
            industry=spec.industry,
            size_range=spec.size_range,
            revenue_range=spec.revenue_range,
            technologies=spec.technologies,
        ),
    )
    city, state, country, tz, area, _zip = _LOCATIONS[loc_i]
    if spec.country is not None and spec.country != country:
        same = [loc for loc in _LOCATIONS if loc[2] == spec.country]
        city, state, country, tz, area, _zip = (
            same[loc_i % len(same)] if same else ("", "", spec.country, "", area, "")
        )
    local_first, local_last = slug(first) or "contact", slug(last) or tag[:6]
    domain = company.domain
    emails = (
        f"{local_first[0]}{local_last}@{domain}",
        f"{local_first}.{local_last}@{domain}",
        f"{local_first}{local_last[0]}@{domain}",
    )
    if spec.email:
        others = [e for e in emails if e.lower() != spec.email.lower()]
        emails = (spec.email, others[0], others[1])
    handle = f"{local_first}-{local_last}-{tag[:6]}"
    former_name = build_company(seed, CompanySpec(key=former_company_key)).name
    if former_name == company.name:
        former_name = _generated_company_name(seed, former_company_key)
    return Contact(
        contact_id=stable_number(seed, "contact-id", spec.key),
        first=first,
        middle=middle,
        last=last,
        title=title,
        department=department,
        seniority=seniority,
        emails=emails,
        email_confidence=email_conf,
        email_verdicts=verdicts,
        phone1=_phone(area, phone_n[0]),
        phone1_confidence=phone1_conf,
        phone1_type=phone1_type,
        phone2=_phone(area, phone_n[1]),
        phone2_type="main",
        city=city,
        state=state,
        country=country,
        timezone=tz,
        li_url=spec.li_url or f"https://www.linkedin.com/in/{handle}",
        sales_nav_url=f"https://www.linkedin.com/sales/lead/ACwAA{tag[6:18].upper()}",
        recruiter_url=f"https://www.linkedin.com/talent/search/profile/AEMAA{tag[18:30].upper()}",
        x_url=f"https://twitter.com/{local_first}{local_last}{tag[:2]}",
        months_at_company=months_company,
        months_at_role=months_role,
        former_company=former_name,
        former_title=former_title,
        former_started=_months_ago(months_company + former_months),
        former_ended=_months_ago(months_company + 1),
        last_modified=modified,
        company=company,
    )


# search -------------------------------------------------------------------------------------


def _filter_strings(filters: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for value in filters.values():
        if isinstance(value, str):
            out.append(value)
        elif isinstance(value, list):
            out.extend(v for v in value if isinstance(v, str))
    return out


def search_total(seed: int, query_id: str, filters: Mapping[str, Any]) -> int:
    """How many hits a search has: 25-500, or 0 when any filter value contains "nobody"."""
    if any("nobody" in s.lower() for s in _filter_strings(filters)):
        return 0
    return 25 + _rng(seed, "search-total", query_id).randrange(476)


def _choice(rng: random.Random, values: object) -> str | None:
    """One of the filter's values (drawn even when absent, so draws stay aligned)."""
    n = rng.randrange(1_000_000)
    if isinstance(values, list) and values:
        picked = values[n % len(values)]
        return picked if isinstance(picked, str) else None
    return None


def _technologies(filters: Mapping[str, Any]) -> tuple[str, ...]:
    techs = filters.get("technologies")
    if isinstance(techs, list):
        return tuple(t for t in techs if isinstance(t, str))
    return ()


def contact_search_spec(
    seed: int, query_id: str, index: int, filters: Mapping[str, Any]
) -> ContactSpec:
    """Hit number `index` of a contact search; list filters pick its title, seniority, ..."""
    rng = _rng(seed, "contact-search", query_id, str(index))
    return ContactSpec(
        key=f"search:{query_id}:{index}",
        title=_choice(rng, filters.get("jobTitle")),
        seniority=_choice(rng, filters.get("seniority")),
        department=_choice(rng, filters.get("department")),
        industry=_choice(rng, filters.get("industry")),
        country=_choice(rng, filters.get("contactCountry")),
        size_range=_choice(rng, filters.get("companySize")),
        revenue_range=_choice(rng, filters.get("companyRevenue")),
        technologies=_technologies(filters),
    )


def company_search_spec(
    seed: int, query_id: str, index: int, filters: Mapping[str, Any]
) -> CompanySpec:
    """Hit number `index` of a company search; list filters pick its industry, size, ..."""
    rng = _rng(seed, "company-search", query_id, str(index))
    name = _generated_company_name(seed, f"search:{query_id}:{index}")
    return CompanySpec(
        key=f"search:{query_id}:{index}",
        name=name,
        domain=f"{slug(name)}{index}.example",
        industry=_choice(rng, filters.get("industry")),
        country=_choice(rng, filters.get("companyCountry") or filters.get("contactCountry")),
        size_range=_choice(rng, filters.get("companySize")),
        revenue_range=_choice(rng, filters.get("companyRevenue")),
        technologies=_technologies(filters),
    )


# output shapes ------------------------------------------------------------------------------


def contact_summary(c: Contact, search_result_id: str) -> dict[str, Any]:
    """A contact search hit, shaped like fixtures/seamless/search-contacts.json."""
    co = c.company
    return {
        "searchResultId": search_result_id,
        "name": c.full_name,
        "company": co.name,
        "title": c.title,
        "department": c.department,
        "seniority": c.seniority,
        "domain": co.domain,
        "city": c.city,
        "state": c.state,
        "country": c.country,
        "companyCity": co.city,
        "companyState": co.state,
        "companyCountry": co.country,
        "liUrl": c.li_url,
        "companyLIProfileUrl": co.li_url,
        "sicCode": co.sic,
        "industries": list(co.industries),
        "startedAtCurrentCompany": _months_ago(c.months_at_company),
        "titleStartedAt": _months_ago(c.months_at_role),
        "timeAtRole": _duration(c.months_at_role),
        "timeAtCompany": _duration(c.months_at_company),
        "companyFoundedOn": f"{co.founded}-01-01",
        "lastModifiedAt": c.last_modified,
        "companyRevenue": co.revenue_range,
        "employeeSizeRange": co.size_range,
        "timezone": c.timezone,
        "firstName": c.first,
        "middleName": c.middle,
        "lastName": c.last,
        "companyDomainAlias": co.domain_alias,
        "contactXUrl": c.x_url,
        "companyFundingTotal": str(co.funding_total) if co.funding_total else "",
        **({"companyLatestFundingDate": co.funding_date} if co.funding_date else {}),
        "companyLatestFundingClassifications": list(co.funding_rounds),
        "jobChangeAlert": _job_change_alert(c),
        "companyType": co.company_type,
        "stockTicker": co.ticker,
    }


def company_summary(co: Company, search_result_id: str) -> dict[str, Any]:
    """A company search hit, with the published hit's field names."""
    out: dict[str, Any] = {
        "searchResultId": search_result_id,
        "name": co.name,
        "street1": co.street,
        "city": co.city,
        "state": co.state,
        "postCode": co.zip_code,
        "country": co.country,
        "domain": co.domain,
        "description": co.description,
        "liUrl": co.li_url,
        "sicCode": co.sic,
        "industries": list(co.industries),
        "revenueRange": co.revenue_range,
        "annualRevenue": str(co.annual_revenue),
        "staffCountRange": co.size_range,
        "employeeCount": str(co.staff_count),
        "numContacts": str(max(1, co.staff_count // 3)),
        "technologies": list(co.technologies),
        "linkedInId": co.li_id,
        "companyLIURL": co.li_url,
        "foundedOn": f"{co.founded}-01-01",
        "newsAndEvents": _news(co),
        "fundingTotal": str(co.funding_total) if co.funding_total else "",
        "latestFundingClassifications": list(co.funding_rounds),
        "companyType": co.company_type,
        "stockTicker": co.ticker,
    }
    if co.funding_date:
        out["latestFundingDate"] = co.funding_date
    return out


_COUNTRY_CODES: dict[str, tuple[str, str, int]] = {
    "United States": ("US", "USA", 840),
    "Canada": ("CA", "CAN", 124),
    "United Kingdom": ("GB", "GBR", 826),
    "Germany": ("DE", "DEU", 276),
    "Australia": ("AU", "AUS", 36),
}
_STATE_ABBR = {
    "New York": "NY", "Ohio": "OH", "Florida": "FL", "Texas": "TX", "Illinois": "IL",
    "Colorado": "CO", "Washington": "WA", "California": "CA", "Massachusetts": "MA",
    "Georgia": "GA", "Ontario": "ON", "New South Wales": "NSW",
}  # fmt: skip
_POST_CODES = {loc[0]: loc[5] for loc in _LOCATIONS}


def _place(city: str, state: str, country: str) -> dict[str, Any]:
    """The published location object's common fields (contactLocation, companyLocation)."""
    alpha2, alpha3, numeric = _COUNTRY_CODES.get(country, ("", "", 0))
    out: dict[str, Any] = {
        "city": city,
        "state": state,
        "stateAbbr": _STATE_ABBR.get(state, state),
        "postCode": _POST_CODES.get(city, ""),
        "country": country,
        "countryAbbr": alpha2,
        "countryAlpha2": alpha2,
        "countryAlpha3": alpha3,
        "fullString": ", ".join(p for p in (city, state, country) if p),
    }
    if numeric:
        out["countryNumeric"] = numeric
    return {k: v for k, v in out.items() if v not in ("", None)}


def _news(co: Company) -> list[dict[str, str]]:
    """One dated news item for funded companies, none otherwise (the sandbox's choice)."""
    if not co.funding_date:
        return []
    return [
        {
            "title": f"{co.name} raises {co.funding_rounds[-1]} funding",
            "url": f"https://news.example/{slug(co.name)}/funding",
            "date": f"{co.funding_date}T09:00:00Z",
            "type": "Investment",
        }
    ]


def _job_change_alert(c: Contact) -> str | None:
    """`New Hire`, `New Promotion` or null, the documented values."""
    if c.months_at_company <= 6:
        return "New Hire"
    if c.months_at_role <= 6:
        return "New Promotion"
    return None


def iso_time(epoch: float) -> str:
    """Seamless' timestamp format: `2026-01-15T10:30:00.000Z`."""
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _q(text: str) -> str:
    return re.sub(r"\s+", "+", text.strip())


def contact_record(c: Contact, *, request_id: str, created_at: float) -> dict[str, Any]:
    """A researched contact: every field of fixtures/seamless/poll-contacts.json, and location."""
    co = c.company
    name, company, domain = c.full_name, co.name, co.domain
    place = _q(f"{co.city} {co.state}") if co.city else _q(co.country)
    e1, e2, e3 = c.emails
    stamp = iso_time(created_at)
    return {
        "contactId": c.contact_id,
        "username": "api-user@sandbox.example",
        "createdAt": stamp,
        "updatedAt": stamp,
        "firstName": c.first,
        "middleName": c.middle,
        "lastName": c.last,
        "fullName": name,
        "name": name,
        "nameOriginal": name,
        "email": e1,
        "personalEmail": "",
        "contactPhone1": c.phone1,
        "contactPhone1TotalAI": f"{c.phone1_confidence}%",
        "contactPhone1DataType": c.phone1_type,
        "contactPhone2": c.phone2,
        "contactPhone2DataType": c.phone2_type,
        "companyPhone1": co.phones[0],
        "companyPhone1TotalAI": f"{co.phone_confidence[0]}%",
        "companyPhone1DataType": "company",
        "companyPhone2": co.phones[1],
        "companyPhone2TotalAI": f"{co.phone_confidence[1]}%",
        "companyPhone2DataType": "company",
        "companyPhone3": co.phones[2],
        "companyPhone3TotalAI": f"{co.phone_confidence[2]}%",
        "companyPhone3DataType": "company",
        "company": company,
        "companyOriginal": company,
        "companyDescription": co.description,
        "companyFounded": str(co.founded),
        "companyIndustry": co.industry,
        "companyStaffCount": co.staff_count,
        "companyStaffCountRange": f"{co.size_range} employees",
        "companyAnnualRevenue": str(co.annual_revenue),
        "companyDomain": domain,
        "companyRevenueRange": co.revenue_range,
        "companyLIProfileUrl": co.li_url,
        "companyLinkedInId": co.li_id,
        "title": c.title,
        "department": c.department,
        "seniority": c.seniority,
        "lIProfileUrl": c.li_url,
        "lISalesNavUrl": c.sales_nav_url,
        "lIRecruiterUrl": c.recruiter_url,
        "website": domain,
        "emailDomain": domain,
        "image": "",
        "email1": e1,
        "email1Selected": True,
        "email1TotalAI": f"{c.email_confidence[0]}%",
        "email1EmailAI": c.email_verdicts[0],
        "email2": e2,
        "email2TotalAI": f"{c.email_confidence[1]}%",
        "email2EmailAI": c.email_verdicts[1],
        "email3": e3,
        "email3TotalAI": f"{c.email_confidence[2]}%",
        "email3EmailAI": c.email_verdicts[2],
        "advertisingIntelligence": f"http://www.moat.com/advertiser/{slug(company)}",
        "alexaScore": f"http://www.alexa.com/siteinfo/{domain}",
        "companyNews": f"https://www.google.com/search?q={_q(company)}&tbm=nws",
        "employeeReviews": f"http://www.glassdoor.com/Reviews/{_q(company)}-reviews.htm",
        "googleFinance": f"http://www.google.com/finance?q={_q(company)}",
        "googleResearch": f"https://www.google.com/search?q={_q(name)}+{_q(company)}",
        "jobPostings": f"http://www.glassdoor.com/Job/jobs.htm?sc.keyword={_q(company)}",
        "localSportsTeams": f"https://www.google.com/search?q={place}+sports+teams",
        "localWeather": f"https://www.google.com/search?q={place}+weather",
        "paidSearchIntelligence": f"http://www.semrush.com/info/{domain}",
        "paidSearchKeywordsIntelligence": (
            f"http://www.keywordspy.com/research/search.aspx?q={domain}&tab=domain-overview"
        ),
        "searchMarketingIntelligence": f"http://www.ispionage.com/research/US/{domain}",
        "secFilings": (
            f"https://www.sec.gov/cgi-bin/browse-edgar?company={_q(company)}"
            "&owner=exclude&action=getcompany"
        ),
        "seoResearch": f"https://ahrefs.com/site-explorer/overview/subdomains?target={domain}",
        "similarWebsites": f"https://www.similarsitesearch.com/search/?URL={domain}",
        "socialMediaMentions": f"http://socialmention.com/search?q={domain}&t=all&btnG=Search",
        "socialMediaPosts": f"http://www.social-searcher.com/social-buzz/?q5={domain}",
        "socialPosts": f"http://www.icerocket.com/search?q={_q(name)}",
        "websiteAudit": f"http://www.similarweb.com/website/{domain}",
        "websiteAudit2": f"https://www.woorank.com/en/www/{domain}",
        "websiteGrader": f"https://website.grader.com/tests/{domain}",
        "webTechnologies": f"https://builtwith.com/{domain}",
        "whois": f"http://www.whois.com/whois/{domain}",
        "wikipedia": f"https://en.wikipedia.org/wiki/{company.replace(' ', '_')}",
        "yahooFinance": f"http://finance.yahoo.com/q?s={_q(company)}",
        "formerCompany": c.former_company,
        "formerTitle": c.former_title,
        "formerStartedAt": c.former_started,
        "formerEndedAt": c.former_ended,
        "titleStartedAt": _months_ago(c.months_at_role),
        "startedAtCurrentCompany": _months_ago(c.months_at_company),
        "timeAtRole": _duration(c.months_at_role),
        "timeAtCompany": _duration(c.months_at_company),
        "jobChangeAlert": _job_change_alert(c),
        "companyType": co.company_type,
        "stockTicker": co.ticker,
        "apiResearchId": request_id,
        "jobHistory": [
            {
                "companyName": company,
                "title": c.title,
                "startedAt": f"{_months_ago(c.months_at_role)}T00:00:00Z",
            },
            {
                "companyName": c.former_company,
                "title": c.former_title,
                "startedAt": f"{c.former_started}T00:00:00Z",
                "endedAt": f"{c.former_ended}T00:00:00Z",
            },
        ],
        "newsAndEvents": _news(co),
        "companyFundingTotal": str(co.funding_total) if co.funding_total else "",
        **({"companyLatestFundingDate": co.funding_date} if co.funding_date else {}),
        "companyLatestFundingClassifications": list(co.funding_rounds),
        "contactLocation": {
            **_place(c.city, c.state, c.country),
            "timezone": c.timezone,
        },
        "companyLocation": {"street1": co.street, **_place(co.city, co.state, co.country)},
    }


def company_record(co: Company, *, request_id: str, created_at: float) -> dict[str, Any]:
    """A researched company with the published record's fields: scalars are strings,
    `phones`, `phonesAiScores`, `industries` and `topTechnologies` are comma lists and
    `location` an object."""
    stamp = iso_time(created_at)
    name, domain = co.name, co.domain
    place = _q(f"{co.city} {co.state}") if co.city else _q(co.country)
    out: dict[str, Any] = {
        "apiResearchId": request_id,
        "createdAt": stamp,
        "updatedAt": stamp,
        "name": name,
        "domain": domain,
        "description": co.description,
        "phones": ", ".join(p for p in co.phones if p),
        "phonesAiScores": ", ".join(
            f"{c}%" for p, c in zip(co.phones, co.phone_confidence, strict=True) if p
        ),
        "industries": ", ".join(co.industries),
        "location": {
            k: v
            for k, v in {"street1": co.street, **_place(co.city, co.state, co.country)}.items()
            if k not in ("stateAbbr", "countryNumeric")  # not in the company record's location
        },
        "linkedInProfileUrl": co.li_url,
        "linkedInId": co.li_id,
        "foundedOn": f"{co.founded}-01-01",
        "sicCode": co.sic,
        "staffCount": str(co.staff_count),
        "staffCountRange": co.size_range,
        "annualRevenue": str(co.annual_revenue),
        "revenueRange": co.revenue_range,
        "topTechnologies": ", ".join(co.technologies),
        "companyType": co.company_type,
        "stockTicker": co.ticker,
        "fundingTotal": str(co.funding_total) if co.funding_total else "",
        "latestFundingClassifications": list(co.funding_rounds),
        "newsAndEvents": _news(co),
        "advertisingIntelligenceUrl": f"http://www.moat.com/advertiser/{slug(name)}",
        "alexaScoreUrl": f"http://www.alexa.com/siteinfo/{domain}",
        "employeeReviewsUrl": f"http://www.glassdoor.com/Reviews/{_q(name)}-reviews.htm",
        "googleFinanceUrl": f"http://www.google.com/finance?q={_q(name)}",
        "googleResearchUrl": f"https://www.google.com/search?q={_q(name)}",
        "intelUrl": f"https://www.google.com/search?q={_q(name)}+intel",
        "jobPostingsUrl": f"http://www.glassdoor.com/Job/jobs.htm?sc.keyword={_q(name)}",
        "localSportsTeamsUrl": f"https://www.google.com/search?q={place}+sports+teams",
        "localWeatherUrl": f"https://www.google.com/search?q={place}+weather",
        "newsUrl": f"https://www.google.com/search?q={_q(name)}&tbm=nws",
        "paidSearchIntelligenceUrl": f"http://www.semrush.com/info/{domain}",
        "paidSearchKeywordsIntelligenceUrl": (
            f"http://www.keywordspy.com/research/search.aspx?q={domain}&tab=domain-overview"
        ),
        "searchMarketingIntelligenceUrl": f"http://www.ispionage.com/research/US/{domain}",
        "secFilingsUrl": (
            f"https://www.sec.gov/cgi-bin/browse-edgar?company={_q(name)}"
            "&owner=exclude&action=getcompany"
        ),
        "seoResearchUrl": f"https://ahrefs.com/site-explorer/overview/subdomains?target={domain}",
        "similarWebsitesUrl": f"https://www.similarsitesearch.com/search/?URL={domain}",
        "socialMediaMentionsUrl": f"http://socialmention.com/search?q={domain}&t=all",
        "socialMediaPostsUrl": f"http://www.social-searcher.com/social-buzz/?q5={domain}",
        "socialPostsUrl": f"http://www.icerocket.com/search?q={_q(name)}",
        "webTechnologiesUrl": f"https://builtwith.com/{domain}",
        "websiteAuditUrl": f"http://www.similarweb.com/website/{domain}",
        "websiteAudit2Url": f"https://www.woorank.com/en/www/{domain}",
        "websiteGraderUrl": f"https://website.grader.com/tests/{domain}",
        "whoisUrl": f"http://www.whois.com/whois/{domain}",
        "wikipediaUrl": f"https://en.wikipedia.org/wiki/{name.replace(' ', '_')}",
        "yahooFinanceUrl": f"http://finance.yahoo.com/q?s={_q(name)}",
    }
    if co.funding_date:
        out["latestFundingDate"] = co.funding_date
    return out
