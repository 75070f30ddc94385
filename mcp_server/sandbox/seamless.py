"""The simulated Seamless.ai Public API v1 (UPSTREAMS.md section 1), mounted by `app.py`.

Faults (5xx, latency, malformed JSON) and request counting live in `FaultMiddleware`; this
module implements only the documented behaviour, plus these choices where the docs are silent:

Auth and order of checks
    `Token: <key>`: any non-empty key is valid. `Authorization: Bearer <token>`: a token this
    sandbox issued and not expired, or a scenario key (`Token` wins when both are sent).
    `POST /oauth/accessToken` (JSON `client_id`, `client_secret`, `redirect_uri`,
    `grant_type` authorization_code|refresh_token with `code`|`refresh_token`) answers
    `{access_token, refresh_token, expires_at}`. Not documented, so the sandbox's choices:
    any client id/secret/code/refresh token is accepted except `sandbox-revoked` (401);
    `expires_at` is epoch seconds, tokens live `TOKEN_SECONDS`; every answer carries a new
    refresh token and earlier ones stay valid; issued tokens are kept across restarts with
    the jobs (expired ones are forgotten); the token endpoint has no rate window; a
    token issued to client id `sandbox-insufficient-scope` lacks the scope (403
    `insufficientScope` on every call). Checks run in this order: 401 (missing key, or
    `sandbox-revoked`) -> 429 -> 403 `insufficientScope` (`sandbox-insufficient-scope`) ->
    422 `missingLicense` (`sandbox-missing-license`, on every endpoint: the whole Public API
    is unlicensed) -> 400 (payload) -> 422 `insufficientCredits` (research POSTs only; always
    for `sandbox-insufficient-credits`, whose responses also say `X-PublicAPI-Credits: 0`).
    Error bodies as published: 401 and 500 `{"message"}`; 422 `{"code", "msg", "data"}` with
    `data.productCategory` and, for `insufficientCredits`, `data.additionalCreditsNeeded`
    (credits needed beyond those left; with `sandbox-insufficient-credits`, all of them);
    429 `{"code": "rateLimitExceeded", "message"}`. The 400, 403 (`insufficientScope`) and
    404 bodies are NOT DOCUMENTED: the sandbox's choice is `{"code", "msg"}` with codes
    `badRequest`, `insufficientScope`, `notFound`. A wrong method on a known path, or a
    trailing slash, is a 404 too (no 405, no redirect).

Rate limits
    `faults.seamless_rate_limit` (default 60) requests per fixed virtual-time window of 60 s
    aligned to the epoch minute, per endpoint, shared by every key (one org per sandbox). A
    request counts once it is authenticated and not rejected with 429: 401s and 429s do not
    count, 400/403/422 do. Every response carries `X-RateLimit-Limit`,
    `X-RateLimit-Remaining`, `X-RateLimit-Reset` (epoch seconds, integer: the end of the
    current window), `X-PublicAPI-Credits` and a virtual `Date` taken from the same instant.
    404s carry an untouched window. No `Retry-After`.

Credits
    The org has `faults.initial_credits` minus what it spent. Each researched target costs 1
    credit when it is queued, whatever its outcome; duplicates and `contact-already-researched`
    targets cost nothing (NOT DOCUMENTED for the latter: the sandbox's choice). A batch that
    needs more credits than are left is refused whole (422, nothing charged, nothing queued).
    Polls, token requests, search and org data cost nothing (the docs say so for search and
    org data; for polls and tokens it is NOT DOCUMENTED, the sandbox's choice).

Research targets and outcomes
    One `requestId` per target, `searchResultIds` first, then `contacts`/`companies` in order.
    At most 100 targets per POST. A descriptor needs `liProfileUrl`, `email`, or
    `contactName` with `companyName` or `domain` (contacts); `name` or `domain` (companies).
    A job is `researching` for `faults.job_seconds` virtual seconds, then terminal:

    - `error` when the target's name, company, email, LinkedIn URL or domain contains "error";
    - `missing` when it contains "missing" or "nobody", or when a `searchResultId` is neither
      from a search of this sandbox nor uuid-shaped (e.g. a requestId passed by mistake);
    - contacts only (the documented company statuses are missing/researching/done/error):
      `not found` for "notfound", `contact-already-researched` for "already-researched",
      `No license or credits available` for "nolicense", and `on-hold` (an undocumented
      status, the sandbox's choice, to exercise "more may be added") for "undocumented",
      which never ends;
    - `done` otherwise, with a full record. Generated names never contain these words, and
      uuid-shaped ids the sandbox never issued still resolve (to a record derived from the id).

Deduplication (contacts only: the docs list `duplicate` for contacts)
    A contact target is identified by its searchResultId, LinkedIn URL, email, and name with
    company or domain (case and URL form normalised). Researching a target whose earlier job
    ends `done` again, in a later POST or the same one, queues a `duplicate` job at no cost
    unless `skipDeduplicationCheck` is true; its poll says `duplicate` at once and carries
    the existing record (with the original `apiResearchId`) once the original is done. How
    long "recently" lasts is NOT DOCUMENTED: the sandbox's choice is for as long as it runs
    (until `POST /_sandbox/reset`).

Polling
    `requestIds=a,b`, `requestIds[]=a&requestIds[]=b` and repeated `requestIds=a&requestIds=b`
    all work, also mixed; duplicates are answered once; at most 100 ids. An id this endpoint
    never issued (wrong endpoint, a searchResultId, an id from before a reset) is answered with
    status `missing` and a message saying so, so a waiting client always reaches a terminal
    state (NOT DOCUMENTED: the sandbox's choice). Company poll items carry only `requestId`,
    `status` and, when done, `company`, as published.

Search
    `limit` default 50 as documented; the docs state no maximum, so 1-200 is the sandbox's
    choice. Opaque `nextToken` bound to the filters it came from. Only the documented filter
    names of each kind are accepted (any other key is a 400: what the API does with unknown
    keys is NOT DOCUMENTED, the sandbox's choice); list filters must be arrays of strings
    (enum values are not checked here: the OpenAPI file says location and technology values
    are samples). Hits are a pure function of (seed, filters, position); `jobTitle`,
    `seniority`, `department`, `industry`, `contactCountry`, `companySize`,
    `companyRevenue`, `technologies` and `companyCountry` shape the hits. A filter value
    containing "nobody" gives zero hits. Response: `data` and
    `supplementalData{isMore,total,perPage,nextToken}`.

Org data
    `GET /contacts` / `GET /companies`: records of jobs that finished `done` with completion
    time in [`startDate`, `endDate`] (documented as ISO date-times; a date alone is accepted,
    the sandbox's choice, and a date-only `endDate` covers that whole day), oldest first,
    `page` (from 1) and `limit` 1-500 (default 500), answered as `{data}` without paging
    metadata, as published.

Org data (jobs, rate windows, credits spent, the dedupe and searchResultId indexes) belongs to
the `SandboxState`, so every app built on one state shares it, and it is dropped when
`state.generation` changes (`POST /_sandbox/reset`).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate
from functools import partial
from typing import Any, Literal

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_server.sandbox import _records
from mcp_server.sandbox._persist import MAX_KEPT_JOBS, decode, encode
from mcp_server.sandbox._records import CompanySpec, ContactSpec
from mcp_server.sandbox._state import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_INSUFFICIENT_SCOPE,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    SandboxState,
)
from mcp_server.sandbox._webhooks import webhooks_of

WINDOW_SECONDS = 60
TOKEN_SECONDS = 3600
"""Lifetime of an issued access token (not documented: the sandbox's choice)."""
MAX_RESEARCH_TARGETS = 100
MAX_POLL_IDS = 100
SEARCH_LIMIT_DEFAULT, SEARCH_LIMIT_MAX = 50, 200
"""Default as documented; the docs state no maximum, the cap of 200 is the sandbox's choice."""
ORG_LIMIT_DEFAULT, ORG_LIMIT_MAX = 500, 500
_SEARCH_INDEX_MAX = 200_000
"""searchResultIds remembered per instance; the oldest are forgotten beyond this."""

Kind = Literal["contact", "company"]
Outcome = Literal[
    "done",
    "missing",
    "error",
    "not found",
    "contact-already-researched",
    "No license or credits available",
    "on-hold",
]
_Spec = ContactSpec | CompanySpec
_PLURAL: dict[Kind, str] = {"contact": "contacts", "company": "companies"}

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", re.I)
_SEARCH_LISTS: dict[Kind, frozenset[str]] = {
    "contact": frozenset(
        {
            "companyName", "companyDomain", "contactState", "contactCountry", "contactZipCode",
            "department", "industry", "fullName", "contactKeyword", "jobTitle", "seniority",
            "companyFoundedOn", "companySize", "companyRevenue", "technologies", "newsTypes",
            "newsTypeDates", "companyLatestFundingDates", "companyLatestFundingClassifications",
            "companyLatestFundingTotals",
        }
    ),
    "company": frozenset(
        {
            "companyName", "companyDomain", "companyState", "companyCountry", "companyZipCode",
            "industry", "companyKeyword", "companySize", "companyRevenue", "technologies",
            "foundedOn", "newsTypes", "newsTypeDates", "latestFundingDates",
            "latestFundingClassifications", "latestFundingTotals",
        }
    ),
}  # fmt: skip
_SEARCH_SCALARS: dict[Kind, frozenset[str]] = {
    "contact": frozenset(
        {
            "companyNameSearchType", "locationType", "technologiesIsOr", "companyType",
            "lastModifiedAfter", "lastModifiedBefore", "jobChanges", "pastCompany",
        }
    ),
    "company": frozenset({"companyNameSearchType", "technologiesIsOr", "companyType"}),
}  # fmt: skip
_LIST_FILTERS = _SEARCH_LISTS["contact"] | _SEARCH_LISTS["company"]
_BOOL_FILTERS = frozenset({"technologiesIsOr"})
_SCENARIO_KEYS = frozenset(
    {KEY_REVOKED, KEY_INSUFFICIENT_SCOPE, KEY_MISSING_LICENSE, KEY_INSUFFICIENT_CREDITS}
)
_CONTACT_FIELDS = (
    "contactName", "companyName", "title", "domain", "email",
    "liProfileUrl", "liSalesNavUrl", "liRecruiterUrl",
)  # fmt: skip
_RESEARCH_FIELDS: dict[Kind, frozenset[str]] = {
    "contact": frozenset({"searchResultIds", "contacts", "isJobChange", "skipDeduplicationCheck"}),
    "company": frozenset({"searchResultIds", "companies", "skipDeduplicationCheck"}),
}
_STR_FILTERS = frozenset(
    {"locationType", "companyNameSearchType", "lastModifiedAfter", "lastModifiedBefore"}
)


class _ApiError(Exception):
    """A documented error response; raised anywhere in a handler, rendered by the wrapper."""

    def __init__(
        self, status: int, code: str, msg: str, *, data: dict[str, Any] | None = None
    ) -> None:
        super().__init__(msg)
        self.status = status
        self.code = code
        self.msg = msg
        self.data = data

    def body(self) -> dict[str, Any]:
        """The published body for the status (see the module docstring)."""
        if self.status in (401, 500):
            return {"message": self.msg}
        if self.status == 429:
            return {"code": self.code, "message": self.msg}
        body: dict[str, Any] = {"code": self.code, "msg": self.msg}
        if self.status == 422 and self.data is not None:
            body["data"] = self.data
        return body


def _bad(msg: str) -> _ApiError:
    return _ApiError(400, "badRequest", msg)


@dataclass(eq=False)
class _Job:
    request_id: str
    kind: Kind
    search_result_id: str
    spec: _Spec | None
    """None when the searchResultId resolves to nothing (the job ends `missing`)."""
    outcome: Outcome
    message: str
    ready_at: float
    duplicate_of: _Job | None = None
    record: dict[str, Any] | None = None


@dataclass
class _Window:
    start: int
    count: int = 0


@dataclass
class _Org:
    """Everything one sandbox instance remembers; replaced when the generation changes."""

    generation: int
    spent: int = 0
    windows: dict[str, _Window] = field(default_factory=dict)
    jobs: dict[Kind, dict[str, _Job]] = field(
        default_factory=lambda: {"contact": {}, "company": {}}
    )
    dedupe: dict[str, _Job] = field(default_factory=dict)
    search_index: dict[str, _Spec] = field(default_factory=dict)
    tokens: dict[str, _Token] = field(default_factory=dict)
    """OAuth access tokens this sandbox issued."""


@dataclass(frozen=True)
class _Token:
    expires_at: float
    scoped: bool
    """False for a connection authorized without `publicAPI.v1.all` (a 403 scenario)."""


@dataclass
class _Call:
    """One authenticated request: its instant, key and the org it acts on."""

    now: float
    key: str
    org: _Org


_Handler = Callable[[Request, _Call], Awaitable[tuple[int, dict[str, Any]]]]


# normalisation ------------------------------------------------------------------------------


def _norm_text(value: str) -> str:
    return " ".join(value.lower().split())


def _norm_url(value: str) -> str:
    v = value.strip().lower()
    v = re.sub(r"^[a-z]+://", "", v)
    v = re.sub(r"^www\.", "", v)
    return re.split(r"[?#]", v, maxsplit=1)[0].rstrip("/")


def _norm_domain(value: str) -> str:
    return _norm_url(value).split("/", 1)[0]


def _outcome_for(kind: Kind, *texts: str | None) -> Outcome:
    """The deterministic outcome triggers (see the module docstring)."""
    text = " ".join(t.lower() for t in texts if t)
    if "error" in text:
        return "error"
    if "missing" in text or "nobody" in text:
        return "missing"
    if kind == "contact":  # the company poll enum is only missing|researching|done|error
        if "notfound" in text:
            return "not found"
        if "already-researched" in text:
            return "contact-already-researched"
        if "nolicense" in text:
            return "No license or credits available"
        if "undocumented" in text:
            return "on-hold"
    return "done"


_MESSAGES: dict[tuple[Kind, Outcome], str] = {
    ("contact", "done"): "",
    ("company", "done"): "",
    ("contact", "missing"): "No matching contact was found.",
    ("company", "missing"): "No matching company was found.",
    ("contact", "error"): "Research failed while processing this contact.",
    ("company", "error"): "Research failed while processing this company.",
    ("contact", "not found"): "No contact matches this target.",
    ("contact", "contact-already-researched"): (
        "This contact was researched recently; it was not researched again."
    ),
    ("contact", "No license or credits available"): (
        "The organization has no Public API license or research credits for this request."
    ),
    ("contact", "on-hold"): "",
}
_UNKNOWN_SEARCH_RESULT = (
    "No search result has this searchResultId; pass a searchResultId from /search/{kinds} "
    "(a requestId is not a searchResultId)."
)
_UNKNOWN_REQUEST = (
    "Unknown requestId for this endpoint; requestIds come from POST /{kinds}/research "
    "(a searchResultId is not a requestId)."
)


# request parsing ----------------------------------------------------------------------------


async def _json_object(request: Request, *, allow_empty: bool) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        if allow_empty:
            return {}
        raise _bad("The request body must be a JSON object.")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise _bad(f"The request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise _bad("The request body must be a JSON object.")
    return data


def _opt_bool(body: Mapping[str, Any], name: str) -> bool:
    value = body.get(name)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise _bad(f"{name} must be a boolean.")
    return value


def _opt_str_list(body: Mapping[str, Any], name: str) -> list[str]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise _bad(f"{name} must be an array of non-empty strings.")
    return [v.strip() for v in value]


def _opt_object_list(
    body: Mapping[str, Any], name: str, fields: tuple[str, ...]
) -> list[dict[str, str]]:
    value = body.get(name)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise _bad(f"{name} must be an array of objects.")
    out: list[dict[str, str]] = []
    for i, item in enumerate(value):
        clean: dict[str, str] = {}
        for f in fields:
            v = item.get(f)
            if v is None:
                continue
            if not isinstance(v, str):
                raise _bad(f"{name}[{i}].{f} must be a string.")
            if v.strip():
                clean[f] = v.strip()
        out.append(clean)
    return out


def _int_param(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            value = None
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(f"{name} must be an integer between {low} and {high}.")
    return value


def _search_filters(body: Mapping[str, Any], kind: Kind) -> dict[str, Any]:
    filters = {k: v for k, v in body.items() if k not in ("limit", "nextToken")}
    known = _SEARCH_LISTS[kind] | _SEARCH_SCALARS[kind]
    unknown = sorted(set(filters) - known)
    if unknown:  # the sandbox's choice: the docs do not say what the API does with these
        raise _bad(
            f"Unknown search filter(s) {', '.join(unknown)} for {_PLURAL[kind]}; "
            f"documented: {', '.join(sorted(known))}."
        )
    for name, value in filters.items():
        if value is None:
            continue
        if name in _LIST_FILTERS and not (
            isinstance(value, list) and all(isinstance(v, str) for v in value)
        ):
            raise _bad(f"{name} must be an array of strings.")
        if name in _BOOL_FILTERS and not isinstance(value, bool):
            raise _bad(f"{name} must be a boolean.")
        if name in _STR_FILTERS and not isinstance(value, str):
            raise _bad(f"{name} must be a string.")
    return {k: v for k, v in filters.items() if v is not None}


def _query_id(seed: int, kind: Kind, filters: Mapping[str, Any]) -> str:
    canonical = json.dumps(filters, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{seed}|{kind}|{canonical}".encode()).hexdigest()[:16]


def _encode_token(offset: int, query_id: str) -> str:
    raw = json.dumps({"offset": offset, "searchId": query_id}, separators=(",", ":"))
    return base64.b64encode(raw.encode()).decode()


def _decode_token(token: object, query_id: str) -> int:
    if token is None or token == "":
        return 0
    if not isinstance(token, str):
        raise _bad("nextToken must be a string or null.")
    try:
        data = json.loads(base64.b64decode(token, validate=True))
    except (ValueError, binascii.Error, RecursionError):
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("offset"), int):
        raise _bad("nextToken is not valid; pass the nextToken of the previous page unchanged.")
    if data.get("searchId") != query_id:
        raise _bad(
            "nextToken belongs to a different search; send the same filters as the first page."
        )
    return max(0, int(data["offset"]))


def _request_ids(request: Request) -> list[str]:
    ids: list[str] = []
    for name, value in request.query_params.multi_items():
        if name in ("requestIds", "requestIds[]"):
            ids.extend(p.strip() for p in value.split(",") if p.strip())
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise _bad("requestIds is required (requestIds=a,b or requestIds[]=a&requestIds[]=b).")
    if len(ids) > MAX_POLL_IDS:
        raise _bad(f"At most {MAX_POLL_IDS} requestIds per poll; got {len(ids)}.")
    return ids


def _date_param(request: Request, name: str, *, end: bool) -> float:
    raw = request.query_params.get(name, "").strip()
    if not raw:
        raise _bad("startDate and endDate are required (ISO 8601, e.g. 2026-01-31).")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise _bad(f"{name} must be an ISO 8601 date or date-time; got {raw!r}.") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = moment.timestamp()
    if end and len(raw) == 10:  # a bare date covers that whole day
        stamp += 86_400 - 0.001
    return stamp


# the app ------------------------------------------------------------------------------------


_ORGS: dict[int, _Org] = {}
"""The org of each live SandboxState (by id; dropped when the state is collected)."""


def _org_of(state: SandboxState) -> _Org:
    """One org per sandbox instance, however many apps are built on its state."""
    org = _ORGS.get(id(state))
    if org is None:
        weakref.finalize(state, _ORGS.pop, id(state), None)
    if org is None or org.generation != state.generation:
        org = _ORGS[id(state)] = _Org(generation=state.generation)
    return org


class _SeamlessSandbox:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        if state.jobs_file is not None:
            state.jobs_file.register("seamless", self._dump, self._load)

    # persistence (`_persist`) ---------------------------------------------------------------
    def _dump(self) -> dict[str, Any]:
        org = self.org
        every = [(kind, job) for kind, jobs in org.jobs.items() for job in jobs.values()]
        kept = sorted(every, key=lambda kj: kj[1].ready_at)[-MAX_KEPT_JOBS:]
        ids = {job.request_id for _kind, job in kept}

        def original(job: _Job) -> str | None:
            dup = job.duplicate_of
            return dup.request_id if dup is not None and dup.request_id in ids else None

        return {
            "spent": org.spent,
            "jobs": [
                {
                    "request_id": job.request_id,
                    "kind": kind,
                    "search_result_id": job.search_result_id,
                    "spec": encode(job.spec),
                    "outcome": job.outcome,
                    "message": job.message,
                    "ready_at": job.ready_at,
                    "duplicate_of": original(job),
                }
                for kind, job in kept
            ],
            "dedupe": {k: j.request_id for k, j in org.dedupe.items() if j.request_id in ids},
            "tokens": {t: [v.expires_at, v.scoped] for t, v in org.tokens.items()},
        }

    def _load(self, data: Any) -> None:
        org = self.org
        by_id: dict[str, _Job] = {}
        originals: list[tuple[_Job, str | None]] = []
        for item in data["jobs"]:
            kind = item["kind"]
            spec = decode(item["spec"], (ContactSpec, CompanySpec))
            if kind not in org.jobs or not (
                spec is None or isinstance(spec, ContactSpec | CompanySpec)
            ):
                raise ValueError("a research job of an unknown kind")
            job = _Job(
                request_id=str(item["request_id"]),
                kind=kind,
                search_result_id=str(item["search_result_id"]),
                spec=spec,
                outcome=item["outcome"],
                message=str(item["message"]),
                ready_at=float(item["ready_at"]),
            )
            by_id[job.request_id] = job
            originals.append((job, item.get("duplicate_of")))
        for job, original in originals:
            if original is not None:
                job.duplicate_of = by_id[original]
        for job in by_id.values():
            org.jobs[job.kind][job.request_id] = job
        org.dedupe.update({key: by_id[rid] for key, rid in data["dedupe"].items()})
        org.spent = int(data["spent"])
        for token, (expires_at, scoped) in (data.get("tokens") or {}).items():
            org.tokens[str(token)] = _Token(expires_at=float(expires_at), scoped=bool(scoped))

    # shared plumbing -----------------------------------------------------------------------
    @property
    def org(self) -> _Org:
        return _org_of(self.state)

    def credits_left(self, key: str = "") -> int:
        if key == KEY_INSUFFICIENT_CREDITS:
            return 0
        return max(0, self.state.faults.initial_credits - self.org.spent)

    def _window(self, endpoint: str, now: float) -> _Window:
        start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        window = self.org.windows.get(endpoint)
        if window is None or window.start != start:
            window = self.org.windows[endpoint] = _Window(start)
        return window

    def _respond(
        self, status: int, body: dict[str, Any], *, now: float, window: _Window, key: str
    ) -> Response:
        limit = self.state.faults.seamless_rate_limit
        headers = {
            "X-RateLimit-Limit": str(limit),
            "X-RateLimit-Remaining": str(max(0, limit - window.count)),
            "X-RateLimit-Reset": str(window.start + WINDOW_SECONDS),
            "X-PublicAPI-Credits": str(self.credits_left(key)),
            "Date": formatdate(now, usegmt=True),
        }
        return JSONResponse(body, status_code=status, headers=headers)

    def _credential(self, request: Request, now: float) -> str:
        token = request.headers.get("token", "").strip()
        if token:
            return token
        scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
        value = value.strip()
        if scheme.lower() == "bearer" and value:
            if value in _SCENARIO_KEYS:
                return value
            issued = self.org.tokens.get(value)
            if issued is None or now >= issued.expires_at:
                raise _ApiError(
                    401,
                    "unauthorized",
                    "The access token is invalid or expired; get a new one from "
                    "POST /oauth/accessToken.",
                )
            return value if issued.scoped else KEY_INSUFFICIENT_SCOPE
        raise _ApiError(
            401,
            "unauthorized",
            "Missing credentials: send the API key as 'Token: <key>' or an OAuth access "
            "token as 'Authorization: Bearer <token>'.",
        )

    def _admit(self, request: Request, endpoint: str, window: _Window) -> str:
        """Auth, then the rate window (counting this request), then the scenario keys."""
        key = self._credential(request, self.state.now())
        if key == KEY_REVOKED:
            raise _ApiError(
                401, "unauthorized", "The API key or access token is invalid, expired or revoked."
            )
        limit = self.state.faults.seamless_rate_limit
        if window.count >= limit:
            raise _ApiError(
                429,
                "rateLimitExceeded",
                f"Rate limit exceeded for {endpoint}: {limit} requests per minute per "
                "organization. Retry after X-RateLimit-Reset.",
            )
        window.count += 1
        if key == KEY_INSUFFICIENT_SCOPE:
            raise _ApiError(
                403,
                "insufficientScope",
                "The OAuth connection lacks the publicAPI.v1.all scope; re-authorize.",
            )
        if key == KEY_MISSING_LICENSE:
            raise _ApiError(
                422,
                "missingLicense",
                "This organization has no active Public API license; an admin must enable "
                "Public API access.",
                data={"productCategory": "publicApi"},
            )
        return key

    def endpoint(self, name: str, handler: _Handler) -> Callable[[Request], Awaitable[Response]]:
        """Wrap a handler with admission, error rendering and the headers every response has."""

        async def run(request: Request) -> Response:
            now = self.state.now()
            window = self._window(name, now)
            key = ""
            try:
                key = self._admit(request, name, window)
                status, body = await handler(request, _Call(now=now, key=key, org=self.org))
            except _ApiError as exc:
                status, body = exc.status, exc.body()
            return self._respond(status, body, now=now, window=window, key=key)

        return run

    async def not_found(self, request: Request, exc: Exception) -> Response:
        del exc
        now = self.state.now()
        path = request.scope.get("path", "")
        root = request.scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        body = {"code": "notFound", "msg": f"No such endpoint: {request.method} {path}."}
        start = int(now // WINDOW_SECONDS) * WINDOW_SECONDS
        return self._respond(404, body, now=now, window=_Window(start), key="")

    # OAuth ---------------------------------------------------------------------------------
    async def access_token(self, request: Request) -> Response:
        """`POST /oauth/accessToken` (see the module docstring): issues tokens it then accepts."""
        now = self.state.now()
        window = _Window(int(now // WINDOW_SECONDS) * WINDOW_SECONDS)
        try:
            status, body = self._token_answer(await _json_object(request, allow_empty=False), now)
        except _ApiError as exc:
            status, body = exc.status, exc.body()
        return self._respond(status, body, now=now, window=window, key="")

    def _token_answer(self, body: Mapping[str, Any], now: float) -> tuple[int, dict[str, Any]]:
        for name in ("client_id", "client_secret", "redirect_uri", "grant_type"):
            if not isinstance(body.get(name), str) or not body[name].strip():
                raise _bad(f"{name} is required.")
        grant = body["grant_type"]
        if grant not in ("authorization_code", "refresh_token"):
            raise _bad("grant_type must be authorization_code or refresh_token.")
        proof = "code" if grant == "authorization_code" else "refresh_token"
        if not isinstance(body.get(proof), str) or not body[proof].strip():
            raise _bad(f"{proof} is required with grant_type {grant}.")
        if KEY_REVOKED in (body["client_secret"], body[proof]):
            raise _ApiError(401, "unauthorized", f"The {proof} or client secret is not valid.")
        access = self.state.new_id("sbx_at_", 24)
        scoped = body["client_id"] != KEY_INSUFFICIENT_SCOPE
        expires_at = int(now + TOKEN_SECONDS)
        org = self.org
        for stale in [t for t, v in org.tokens.items() if v.expires_at <= now]:
            del org.tokens[stale]  # expired tokens are forgotten, so the set stays small
        org.tokens[access] = _Token(expires_at=expires_at, scoped=scoped)
        self.state.jobs_changed()  # issued tokens are kept with the jobs across restarts
        refresh = self.state.new_id("sbx_rt_", 24)
        return 200, {"access_token": access, "refresh_token": refresh, "expires_at": expires_at}

    # search --------------------------------------------------------------------------------
    async def search_contacts(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return await self._search(request, call, "contact")

    async def search_companies(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return await self._search(request, call, "company")

    async def _search(
        self, request: Request, call: _Call, kind: Kind
    ) -> tuple[int, dict[str, Any]]:
        body = await _json_object(request, allow_empty=True)
        limit = _int_param(body, "limit", SEARCH_LIMIT_DEFAULT, 1, SEARCH_LIMIT_MAX)
        filters = _search_filters(body, kind)
        seed = self.state.faults.seed
        query_id = _query_id(seed, kind, filters)
        offset = _decode_token(body.get("nextToken"), query_id)
        total = _records.search_total(seed, query_id, filters)
        index = call.org.search_index
        data: list[dict[str, Any]] = []
        for i in range(offset, min(total, offset + limit)):
            sr_id = _records.stable_uuid(seed, f"{kind}-search", query_id, str(i))
            if kind == "contact":
                contact = _records.contact_search_spec(seed, query_id, i, filters)
                hit = _records.contact_summary(_records.build_contact(seed, contact), sr_id)
                spec: _Spec = contact
            else:
                company = _records.company_search_spec(seed, query_id, i, filters)
                hit = _records.company_summary(_records.build_company(seed, company), sr_id)
                spec = company
            index.pop(sr_id, None)  # re-insert: most recently seen is forgotten last
            index[sr_id] = spec
            data.append(hit)
        while len(index) > _SEARCH_INDEX_MAX:
            del index[next(iter(index))]
        end = offset + len(data)
        more = end < total
        return 200, {
            "data": data,
            "supplementalData": {
                "isMore": more,
                "total": total,
                "perPage": limit,
                "nextToken": _encode_token(end, query_id) if more else None,
            },
        }

    # research ------------------------------------------------------------------------------
    def _resolve_search_result(self, kind: Kind, sr_id: str, org: _Org) -> _Spec | None:
        spec = org.search_index.get(sr_id)
        if spec is not None:
            wanted = ContactSpec if kind == "contact" else CompanySpec
            return spec if isinstance(spec, wanted) else None
        if not _UUID.match(sr_id):
            return None
        if kind == "contact":
            return ContactSpec(key=f"sr:{sr_id.lower()}")
        return CompanySpec(key=f"sr:{sr_id.lower()}")

    def _contact_keys(self, spec: ContactSpec, sr_id: str | None) -> list[str]:
        """Every identity under which this contact counts as already researched."""
        c = _records.build_contact(self.state.faults.seed, spec)
        keys = [f"sr:{sr_id.lower()}"] if sr_id else []
        keys.append(f"li:{_norm_url(c.li_url)}")
        keys.append(f"em:{c.emails[0].lower()}")
        name = _norm_text(c.full_name)
        keys.append(f"nm:{name}|{c.company.domain}")
        keys.append(f"nm:{name}|{_norm_text(c.company.name)}")
        return keys

    def _descriptor_contact(self, d: Mapping[str, str], i: int) -> ContactSpec:
        li = d.get("liProfileUrl") or d.get("liSalesNavUrl") or d.get("liRecruiterUrl")
        email, name = d.get("email"), d.get("contactName")
        company, domain = d.get("companyName"), d.get("domain")
        if not (li or email or (name and (company or domain))):
            raise _bad(
                f"contacts[{i}] needs liProfileUrl, liSalesNavUrl, liRecruiterUrl, email, or "
                "contactName with companyName or domain."
            )
        if domain:
            domain = _norm_domain(domain)
        elif email and "@" in email:
            domain = _norm_domain(email.rsplit("@", 1)[1])
        if li:
            key = f"li:{_norm_url(li)}"
        elif email:
            key = f"em:{email.lower()}"
        else:
            key = f"nm:{_norm_text(name or '')}|{domain or _norm_text(company or '')}"
        return ContactSpec(
            key=key,
            name=name,
            company_name=company,
            domain=domain,
            title=d.get("title"),
            email=email,
            li_url=li,
        )

    def _descriptor_company(self, d: Mapping[str, str], i: int) -> CompanySpec:
        name, domain = d.get("companyName"), d.get("domain")
        if not (name or domain):
            raise _bad(f"companies[{i}] needs companyName or domain.")
        domain = _norm_domain(domain) if domain else None
        key = f"dom:{domain}" if domain else f"nm:{_norm_text(name or '')}"
        return CompanySpec(key=key, name=name, domain=domain)

    def _new_job(self, kind: Kind, sr_id: str, spec: _Spec | None, now: float) -> _Job:
        seed = self.state.faults.seed
        if spec is None:
            outcome: Outcome = "missing"
            message = _UNKNOWN_SEARCH_RESULT.format(kinds=_PLURAL[kind])
        else:
            if isinstance(spec, ContactSpec):
                c = _records.build_contact(seed, spec)
                outcome = _outcome_for(
                    kind, c.full_name, c.company.name, c.emails[0], c.li_url, c.company.domain
                )
            else:
                co = _records.build_company(seed, spec)
                outcome = _outcome_for(kind, co.name, co.domain)
            message = _MESSAGES[(kind, outcome)]
        if not sr_id:  # descriptors get the id of the search hit they stand for
            sr_id = _records.stable_uuid(seed, f"{kind}-target", spec.key if spec else "")
        return _Job(
            request_id=self.state.new_id(),
            kind=kind,
            search_result_id=sr_id,
            spec=spec,
            outcome=outcome,
            message=message,
            ready_at=now + self.state.faults.job_seconds,
        )

    async def research_contacts(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return await self._research(request, call, "contact")

    async def research_companies(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return await self._research(request, call, "company")

    async def _research(
        self, request: Request, call: _Call, kind: Kind
    ) -> tuple[int, dict[str, Any]]:
        body = await _json_object(request, allow_empty=False)
        allowed = _RESEARCH_FIELDS[kind]
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise _bad(
                f"Unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(allowed))}."
            )
        sr_ids = _opt_str_list(body, "searchResultIds")
        job_change = _opt_bool(body, "isJobChange")
        skip_dedupe = _opt_bool(body, "skipDeduplicationCheck")
        targets: list[tuple[str, _Spec | None]] = [
            (sr, self._resolve_search_result(kind, sr, call.org)) for sr in sr_ids
        ]
        if kind == "contact":
            descriptors = _opt_object_list(body, "contacts", _CONTACT_FIELDS)
            if sr_ids and descriptors:
                raise _bad("Send either searchResultIds or contacts, not both.")
            if job_change and not descriptors:
                raise _bad("isJobChange applies to contacts only.")
            targets += [("", self._descriptor_contact(d, i)) for i, d in enumerate(descriptors)]
        else:
            descriptors = _opt_object_list(body, "companies", ("companyName", "domain"))
            targets += [("", self._descriptor_company(d, i)) for i, d in enumerate(descriptors)]
        if not targets:
            raise _bad(f"Nothing to research: send searchResultIds and/or {_PLURAL[kind]}.")
        if len(targets) > MAX_RESEARCH_TARGETS:
            raise _bad(f"At most {MAX_RESEARCH_TARGETS} targets per request; got {len(targets)}.")

        # Plan first, so a refused batch leaves no trace.
        org = call.org
        batch: dict[str, _Job] = {}
        planned: list[tuple[_Job, list[str]]] = []
        for sr_id, spec in targets:
            job = self._new_job(kind, sr_id, spec, call.now)
            keys: list[str] = []
            if kind == "contact" and isinstance(spec, ContactSpec):
                keys = self._contact_keys(spec, sr_id or None)
                if not skip_dedupe:
                    job.duplicate_of = next(
                        (o for k in keys if (o := org.dedupe.get(k) or batch.get(k))), None
                    )
                if job.duplicate_of is None and job.outcome == "done":
                    for k in keys:
                        batch.setdefault(k, job)
            planned.append((job, keys))
        needed = sum(
            1
            for job, _ in planned
            if job.duplicate_of is None and job.outcome != "contact-already-researched"
        )
        available = self.credits_left(call.key)
        if call.key == KEY_INSUFFICIENT_CREDITS or needed > available:
            raise _ApiError(
                422,
                "insufficientCredits",
                f"Not enough research credits: this request needs {needed}, the organization "
                f"has {available}.",
                data={
                    "productCategory": kind,
                    "additionalCreditsNeeded": max(1, needed - available),
                },
            )

        self.state.record_paid_post("seamless", f"/{_PLURAL[kind]}/research", body)
        org.spent += needed
        for job, keys in planned:
            org.jobs[kind][job.request_id] = job
            if job.duplicate_of is None and job.outcome == "done":
                for k in keys:
                    org.dedupe.setdefault(k, job)
        self.state.jobs_changed()
        deliveries = webhooks_of(self.state)  # `_webhooks`: done targets are pushed when due
        for job, _ in planned:
            if job.duplicate_of is None and job.outcome == "done":
                deliveries.finished_at(
                    kind, job.request_id, job.ready_at, partial(self._record, job)
                )
        return 202, {"success": True, "requestIds": [job.request_id for job, _ in planned]}

    # poll ----------------------------------------------------------------------------------
    def _record(self, job: _Job) -> dict[str, Any]:
        if job.record is None:
            seed = self.state.faults.seed
            if isinstance(job.spec, ContactSpec):
                contact = _records.build_contact(seed, job.spec)
                job.record = _records.contact_record(
                    contact, request_id=job.request_id, created_at=job.ready_at
                )
            elif isinstance(job.spec, CompanySpec):
                company = _records.build_company(seed, job.spec)
                job.record = _records.company_record(
                    company, request_id=job.request_id, created_at=job.ready_at
                )
            else:
                raise AssertionError("only done jobs have records")
        return job.record

    def _entry(self, kind: Kind, request_id: str, job: _Job | None, now: float) -> dict[str, Any]:
        if job is None:
            if kind == "company":
                return {"requestId": request_id, "status": "missing"}
            return {
                "requestId": request_id,
                "searchResultId": "",
                "status": "missing",
                "message": _UNKNOWN_REQUEST.format(kinds=_PLURAL[kind]),
            }
        entry: dict[str, Any] = {
            "requestId": job.request_id,
            "searchResultId": job.search_result_id,
        }
        original = job.duplicate_of
        if original is not None:
            entry["status"] = "duplicate"
            if now >= original.ready_at:
                entry["message"] = (
                    f"Already researched as request {original.request_id}; the existing "
                    "result is returned and no credit was spent."
                )
                entry[kind] = self._record(original)
            else:
                entry["message"] = (
                    f"Already being researched as request {original.request_id}; poll that "
                    "request for the result. No credit was spent."
                )
        elif job.outcome == "on-hold":
            entry["status"] = job.outcome
            entry["message"] = ""
        elif now < job.ready_at:
            entry["status"] = "researching"
            entry["message"] = ""
        else:
            entry["status"] = job.outcome
            entry["message"] = job.message
            if job.outcome == "done":
                entry[kind] = self._record(job)
        if kind == "company":  # the published company poll item has no message or searchResultId
            return {k: v for k, v in entry.items() if k not in ("message", "searchResultId")}
        # `additionalData` is free-form "(e.g., error details)"; what goes in it is the
        # sandbox's choice: the outcome's message for a failed or unanswered target.
        entry["additionalData"] = (
            {"reason": entry["message"]}
            if entry["status"] not in ("done", "researching", "duplicate") and entry["message"]
            else {}
        )
        return entry

    async def poll_contacts(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return self._poll(request, call, "contact")

    async def poll_companies(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return self._poll(request, call, "company")

    def _poll(self, request: Request, call: _Call, kind: Kind) -> tuple[int, dict[str, Any]]:
        jobs = call.org.jobs[kind]
        data = [self._entry(kind, i, jobs.get(i), call.now) for i in _request_ids(request)]
        return 200, {"success": True, "data": data}

    # org data ------------------------------------------------------------------------------
    async def list_contacts(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return self._list(request, call, "contact")

    async def list_companies(self, request: Request, call: _Call) -> tuple[int, dict[str, Any]]:
        return self._list(request, call, "company")

    def _list(self, request: Request, call: _Call, kind: Kind) -> tuple[int, dict[str, Any]]:
        params = request.query_params
        page = _int_param(params, "page", 1, 1, 1_000_000)
        limit = _int_param(params, "limit", ORG_LIMIT_DEFAULT, 1, ORG_LIMIT_MAX)
        start = _date_param(request, "startDate", end=False)
        end = _date_param(request, "endDate", end=True)
        if end < start:
            raise _bad("endDate must not be before startDate.")
        rows = sorted(
            (
                job
                for job in call.org.jobs[kind].values()
                if job.duplicate_of is None
                and job.outcome == "done"
                and job.ready_at <= call.now
                and start <= job.ready_at <= end
            ),
            key=lambda job: job.ready_at,
        )
        first = (page - 1) * limit
        chunk = rows[first : first + limit]
        return 200, {"data": [self._record(job) for job in chunk]}  # no paging metadata


def create_seamless_app(state: SandboxState) -> Starlette:
    """The Seamless Public API v1 paths, relative to `/api/client/v1`."""
    api = _SeamlessSandbox(state)
    table: list[tuple[str, str, _Handler]] = [
        ("POST", "/search/contacts", api.search_contacts),
        ("POST", "/search/companies", api.search_companies),
        ("POST", "/contacts/research", api.research_contacts),
        ("POST", "/companies/research", api.research_companies),
        ("GET", "/contacts/research/poll", api.poll_contacts),
        ("GET", "/companies/research/poll", api.poll_companies),
        ("GET", "/contacts", api.list_contacts),
        ("GET", "/companies", api.list_companies),
    ]
    routes = [
        Route(path, api.endpoint(path, handler), methods=[method])
        for method, path, handler in table
    ]
    routes.append(Route("/oauth/accessToken", api.access_token, methods=["POST"]))
    app = Starlette(routes=routes, exception_handlers={HTTPException: api.not_found})
    app.router.redirect_slashes = False  # a trailing slash is an unknown path (JSON 404)
    return app
