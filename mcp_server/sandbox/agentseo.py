"""The simulated AgentSEO API v1 (UPSTREAMS.md section 2), in virtual time.

Public API: `create_agentseo_app(state)`, mounted by `app.py` under `/agentseo/api/v1` inside
`FaultMiddleware` (latency, 5xx, malformed JSON, request counting). Everything else here is
documented behaviour or a [fill] choice, listed below so clients can be tested against it.

Endpoints (paths relative to the mount):
- `POST /analyze/serp` `{keyword, location?, location_code?, device?, depth?}` and
  `POST /keyword-metrics/overview` `{keywords: [..1-100], location?, location_code?}` [fill:
  neither path nor body is in the published reference (UPSTREAMS.md section 2 lists only the
  local audit, search, extract, jobs and webhooks); they are jobrelay's choice, kept from the
  first version, and `tests/test_contract_agentseo.py` marks them as unpublished]
- `POST /audit/local` `{domain, location, location_code?, language?}`: `domain` is a domain or
  a business name (as published); other keys are a 400 [fill].
- `POST /audit/local/batch` `{"targets": [<audit/local body>, ..1-50]}` or a bare array
  [fill: the body and the limit are not documented; the limit is jobrelay's
  `MAX_BATCH_TARGETS`]: 202 with an array of job ids, as published; `?sync` is ignored there.
- `GET /jobs/{id}`: 200 with the current envelope in every state; 404 `NOT_FOUND` when the id
  is unknown to this key (jobs are scoped to the API key that created them [fill]).
- `GET /jobs/{id}/events`: Server-Sent Events (below). Utility endpoints (`/extract`,
  `/webhooks/...`) are not simulated: 404.

Order of checks [fill]: route (404/405) -> `x-api-key` (missing: 401 `UNAUTHORIZED`;
`sandbox-revoked`: 403 `API_KEY_REVOKED` on every endpoint) -> rate budget (429) -> on
workload endpoints only, the scenario keys `sandbox-insufficient-credits` (402
`CREDITS_EXHAUSTED`, `details.credits_remaining: 0`), `sandbox-missing-license` (403
`FORBIDDEN`, `details.reason: "no_active_license"`) and `sandbox-insufficient-scope` (403
`DOMAIN_NOT_ALLOWED`, `details.reason: "allowed_domain_policy"`); polling and SSE keep working
for those keys -> body validation (400 `INVALID_PARAMETERS`, zod-style `details` such as
`{"domain": {"_errors": ["Domain or Business Name is required"]}}`; invalid JSON, wrong types
and an empty body are 400s too, never 500). `location_code` wins over `location`; an unknown
`location` name is kept as free text. `null` and `""` count as absent for optional fields [fill].

Every response carries `x-request-id: req_...` (the same id as `error.request_id`) and a
virtual-time `Date`. Every response that reached a budget (everything after the key check)
carries `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset` (delta seconds to the end
of the window [fill]); 401, key-revoked 403 and unknown-route 404/405 responses do not.

Rate limits: per API key, a fixed window of 60 virtual seconds starting at the window's first
request [fill], for each budget of `PLAN_BUDGETS[faults.agentseo_plan]`: workload (the four
POSTs; a batch is one request [fill]) and control (`GET /jobs/{id}` and each `/events`
connect). Every request that reaches the budget counts, including later 400/402/403s; a
rejected (429) one does not. The 429 (`RATE_LIMITED`) has `RateLimit-Remaining: 0` and no
`Retry-After` (UPSTREAMS: Retry-After is not the rate-limit signal) [fill].

Jobs: 202 with the documented envelope; `project_id` / `workflow_id` are added when the
`x-project-id` / `x-workflow-id` headers were sent [fill: names]. `poll_url` and `events_url`
are built from the request's root path, so they resolve where the app is actually mounted
(`/agentseo/api/v1/jobs/<id>` in the sandbox; the real API documents `/api/v1/jobs/<id>`).
`?sync=true` (or `1`) holds the request up to `SYNC_WINDOW_SECONDS` virtual seconds: 200 with
the terminal envelope (completed with `result`, or failed with `error`) if the job ends in time,
else 202 with the envelope and `Retry-After` = its `retry_after_seconds`.

Lifecycle, in tenths of `faults.job_seconds` (read when the job is created): 0 queued/queued 0%
-> 1 processing/fetching 10% -> 2 20% -> 3 waiting_upstream 30% (`indeterminate: true`) -> 4 ->
5 -> 6 analyzing 60% -> 7 -> 8 -> 9 finalizing 90% -> 10 completed/completed 100% with `result`.
`retry_after_seconds` is `clamp(eta // 5, 2, 10)` while running, null once completed.
Deterministic failure triggers (`_seo_results`): a target text (keyword, any keyword, domain,
business name) containing `fail-transient` retries upstream (attempt 2 at 5, attempt 3 at 7)
and ends `failed` at 10 with `{"code": "UPSTREAM_FETCH_FAILED", "retryable": true}` and
`retry_after_seconds: 30`; one containing `fail-permanent` ends `failed` at 3 with
`{"code": "INVALID_TARGET", "retryable": false}` and `retry_after_seconds: null`. Results are
deterministic from `(seed, parameters)`.

SSE (`GET /jobs/{id}/events`; always a stream for a known job, whatever `Accept` says):
- The body starts with the line `retry: 1000` (no blank line after it, so no event is dispatched
  by it); each event is `id: <n>\\nevent: <type>\\ndata: <envelope JSON, one line>\\n\\n`.
- Ids are per job, 1, 2, 3, ...: the n-th distinct state of the job (status, phase, percent or
  attempt changed). Type `status` when status, phase or attempt changed (and for id 1),
  `progress` when only the percent did, `completed` / `failed` for the terminal event, after
  which the server ends the response. The data of event n is the envelope as of the moment the
  state began, so a replayed event is byte-identical to the original.
- Fresh connect: the current state first, then each change live. With `Last-Event-ID: n`: every
  event after n (missed ones are replayed), then live. A terminal job replays up to its terminal
  event and closes; if the client already has the terminal event, 204 (the HTML spec's "stop
  reconnecting"). A non-numeric `Last-Event-ID` is ignored.
- Keep-alive: the comment line `: ping` (also without a blank line: parsers that keep the last
  event id, such as httpx-sse 0.4, would otherwise dispatch an empty event) after every
  `SSE_PING_SECONDS` virtual seconds without output.
- `faults.sse_drop_after_events = N`: each connection ends after its N-th event, without the
  terminal event (a clean end of the body, not a TCP reset [fill]); resuming with
  `Last-Event-ID` continues without repeats or gaps. The stream also ends when the client
  disconnects (watched concurrently, so a sleeping stream stops at once) or on a sandbox reset.

Per-instance data (jobs, rate windows) is dropped when `state.generation` changes.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import AsyncGenerator, Callable, Mapping
from contextlib import aclosing, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, NotRequired, TypedDict

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mcp_server.sandbox._persist import MAX_KEPT_JOBS, decode, encode, key_fingerprint
from mcp_server.sandbox._seo_results import (
    KeywordMetricsParams,
    LocalAuditParams,
    Location,
    SerpParams,
    WorkflowName,
    WorkflowParams,
    WorkflowResult,
    failure_mode,
    generate_result,
    resolve_location,
    workflow_name,
)
from mcp_server.sandbox._state import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_INSUFFICIENT_SCOPE,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    SandboxState,
)
from mcp_server.upstream.agentseo import MAX_BATCH_TARGETS as CLIENT_MAX_BATCH_TARGETS
from mcp_server.upstream.agentseo import PLAN_BUDGETS, Plan

__all__ = [
    "MAX_BATCH_TARGETS",
    "MAX_KEYWORDS",
    "RATE_WINDOW_SECONDS",
    "SSE_PING_SECONDS",
    "SSE_RETRY_MS",
    "SYNC_WINDOW_SECONDS",
    "create_agentseo_app",
]

SYNC_WINDOW_SECONDS = 10.0
"""Virtual seconds a `?sync=true` request waits for its job before answering 202."""
SSE_RETRY_MS = 1000
"""The `retry:` value sent at the start of every event stream."""
SSE_PING_SECONDS = 15.0
"""Virtual seconds of silence after which an event stream sends `: ping`."""
RATE_WINDOW_SECONDS = 60.0
"""Length of each per-key rate window, virtual seconds."""
MAX_KEYWORDS = 100
MAX_BATCH_TARGETS = CLIENT_MAX_BATCH_TARGETS
"""Not documented: the sandbox's choice, the same limit as jobrelay's tool and client."""
_MAX_TEXT = 700
_MAX_ATTEMPTS = 3
_TRANSIENT_RETRY_AFTER = 30

Budget = Literal["workload", "control"]
Status = Literal["queued", "processing", "completed", "failed"]


# -- envelope shapes ----------------------------------------------------------------------------


class ProgressBody(TypedDict):
    percent: int
    indeterminate: bool
    eta_seconds: int | None


class UpstreamBody(TypedDict):
    provider: str
    task_id: str | None
    status_code: int | None
    status_message: str | None
    next_poll_at: str | None


class JobErrorBody(TypedDict):
    code: str
    message: str
    retryable: bool


class Envelope(TypedDict):
    jobId: str
    status: Status
    phase: str
    progress: ProgressBody
    attempt: int
    max_attempts: int
    message: str
    poll_url: str
    events_url: str
    retry_after_seconds: int | None
    upstream: UpstreamBody
    project_id: NotRequired[str]
    workflow_id: NotRequired[str]
    result: NotRequired[WorkflowResult]
    error: NotRequired[JobErrorBody]


# -- jobs ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Step:
    """One distinct state of a job; step n (1-based) is SSE event id n."""

    at: float
    """Virtual epoch seconds at which the state begins."""
    status: Status
    phase: str
    percent: int
    attempt: int
    message: str
    indeterminate: bool = False
    upstream_code: int | None = None
    upstream_message: str | None = None


_FETCH_MESSAGES: dict[WorkflowName, str] = {
    "serp_analysis": "Fetching live SERP data.",
    "keyword_metrics": "Fetching keyword metrics.",
    "local_audit": "Collecting local listings and profile data.",
}
_WAITING = "Waiting for upstream provider results."
_REJECTED = "The upstream provider rejected the target."
_NO_RESULTS = "The upstream provider did not return results."
# DataForSEO-style task statuses shown in `upstream`.
_HANDED = (40601, "Task Handed.")
_IN_QUEUE = (40602, "Task In Queue.")
_OK = (20000, "Ok.")
_INTERNAL = (50000, "Internal Error.")
_INVALID_FIELD = (40501, "Invalid Field.")


def _timeline(params: WorkflowParams, start: float, span: float) -> list[_Step]:
    """Every state the job will pass through, fixed at creation (see the module docstring)."""
    fetching = _FETCH_MESSAGES[workflow_name(params)]
    # (tenths of job_seconds, status, phase, percent, message, upstream status, attempt)
    rows: list[tuple[int, Status, str, int, str, tuple[int, str] | None, int]] = [
        (0, "queued", "queued", 0, "Job queued.", None, 1),
        (1, "processing", "fetching", 10, fetching, _HANDED, 1),
        (2, "processing", "fetching", 20, fetching, _HANDED, 1),
    ]
    mode = failure_mode(params)
    if mode == "permanent":
        rows.append((3, "failed", "failed", 20, _REJECTED, _INVALID_FIELD, 1))
    elif mode == "transient":
        retry = "Upstream fetch failed; retrying (attempt {} of " + f"{_MAX_ATTEMPTS})."
        rows += [
            (3, "processing", "waiting_upstream", 30, _WAITING, _IN_QUEUE, 1),
            (4, "processing", "waiting_upstream", 40, _WAITING, _IN_QUEUE, 1),
            (5, "processing", "fetching", 50, retry.format(2), _INTERNAL, 2),
            (6, "processing", "waiting_upstream", 60, _WAITING, _IN_QUEUE, 2),
            (7, "processing", "fetching", 70, retry.format(3), _INTERNAL, 3),
            (8, "processing", "waiting_upstream", 80, _WAITING, _IN_QUEUE, 3),
            (10, "failed", "failed", 80, _NO_RESULTS, _INTERNAL, _MAX_ATTEMPTS),
        ]
    else:
        rows += [
            (3, "processing", "waiting_upstream", 30, _WAITING, _IN_QUEUE, 1),
            (4, "processing", "waiting_upstream", 40, _WAITING, _IN_QUEUE, 1),
            (5, "processing", "waiting_upstream", 50, _WAITING, _IN_QUEUE, 1),
            (6, "processing", "analyzing", 60, "Analyzing results.", _OK, 1),
            (7, "processing", "analyzing", 70, "Analyzing results.", _OK, 1),
            (8, "processing", "analyzing", 80, "Analyzing results.", _OK, 1),
            (9, "processing", "finalizing", 90, "Finalizing results.", _OK, 1),
            (10, "completed", "completed", 100, "Job completed.", _OK, 1),
        ]
    steps = []
    for tenths, status, phase, percent, message, upstream, attempt in rows:
        code, text = upstream if upstream is not None else (None, None)
        indeterminate = phase in ("queued", "waiting_upstream")
        at = start + span * tenths / 10  # exact for round spans: 10 * 3 / 10 == 3.0
        steps.append(_Step(at, status, phase, percent, attempt, message, indeterminate, code, text))
    return steps


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{int(epoch * 1000) % 1000:03d}Z"
    )


def _ceil(x: float) -> int:
    """Ceil that ignores float noise (59.0000000001 -> 59)."""
    return max(0, math.ceil(x - 1e-6))


@dataclass
class _Job:
    id: str
    key_fp: str
    """Fingerprint of the API key that created the job (the key itself is never kept)."""
    params: WorkflowParams
    created: float
    planned_end: float
    steps: list[_Step]
    base_path: str
    task_id: str
    seed: int
    project_id: str | None = None
    workflow_id: str | None = None
    _result: WorkflowResult | None = None
    _frames: dict[int, bytes] = field(default_factory=dict)

    @property
    def last_id(self) -> int:
        return len(self.steps)

    @property
    def ends_at(self) -> float:
        return self.steps[-1].at

    def index_at(self, now: float) -> int:
        """The 1-based id of the state current at `now` (step 1 starts at creation)."""
        n = 1
        while n < len(self.steps) and self.steps[n].at <= now:
            n += 1
        return n

    def terminal_at(self, now: float) -> bool:
        return self.index_at(now) == self.last_id

    def result(self) -> WorkflowResult:
        if self._result is None:
            self._result = generate_result(self.seed, self.params, as_of=self.created)
        return self._result

    def envelope(self, index: int, at: float) -> Envelope:
        step = self.steps[index - 1]
        running = step.status in ("queued", "processing")
        if running:
            eta: int | None = _ceil(self.planned_end - at)
        else:
            eta = 0 if step.status == "completed" else None
        if running:
            retry_after: int | None = max(2, min(10, (eta or 0) // 5))
        elif step.status == "failed" and step.upstream_code == _INTERNAL[0]:
            retry_after = _TRANSIENT_RETRY_AFTER
        else:
            retry_after = None
        waiting = running and step.phase in ("fetching", "waiting_upstream")
        env: Envelope = {
            "jobId": self.id,
            "status": step.status,
            "phase": step.phase,
            "progress": {
                "percent": step.percent,
                "indeterminate": step.indeterminate,
                "eta_seconds": eta,
            },
            "attempt": step.attempt,
            "max_attempts": _MAX_ATTEMPTS,
            "message": step.message,
            "poll_url": f"{self.base_path}/jobs/{self.id}",
            "events_url": f"{self.base_path}/jobs/{self.id}/events",
            "retry_after_seconds": retry_after,
            "upstream": {
                "provider": "dataforseo",
                "task_id": None if step.status == "queued" else self.task_id,
                "status_code": step.upstream_code,
                "status_message": step.upstream_message,
                "next_poll_at": _iso(at + (retry_after or 0)) if waiting else None,
            },
        }
        if self.project_id is not None:
            env["project_id"] = self.project_id
        if self.workflow_id is not None:
            env["workflow_id"] = self.workflow_id
        if step.status == "completed":
            env["result"] = self.result()
        elif step.status == "failed":
            retryable = step.upstream_code == _INTERNAL[0]
            env["error"] = {
                "code": "UPSTREAM_FETCH_FAILED" if retryable else "INVALID_TARGET",
                "message": (
                    f"The upstream provider failed after {_MAX_ATTEMPTS} attempts; "
                    "resubmitting later may succeed."
                    if retryable
                    else "The upstream provider rejected the target; change the inputs."
                ),
                "retryable": retryable,
            }
        return env

    def event_type(self, index: int) -> str:
        step = self.steps[index - 1]
        if step.status in ("completed", "failed"):
            return step.status
        if index == 1:
            return "status"
        prev = self.steps[index - 2]
        same = (prev.status, prev.phase, prev.attempt) == (step.status, step.phase, step.attempt)
        return "progress" if same else "status"

    def frame(self, index: int) -> bytes:
        """SSE event `index`, rendered once so replays are byte-identical."""
        cached = self._frames.get(index)
        if cached is None:
            data = json.dumps(self.envelope(index, self.steps[index - 1].at), separators=(",", ":"))
            cached = f"id: {index}\nevent: {self.event_type(index)}\ndata: {data}\n\n".encode()
            self._frames[index] = cached
        return cached


# -- per-instance store -------------------------------------------------------------------------


@dataclass
class _Window:
    start: float
    count: int = 0


@dataclass(frozen=True, slots=True)
class _RateInfo:
    limit: int
    remaining: int
    reset: int
    allowed: bool

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(self.reset),
        }


@dataclass
class _Store:
    generation: int
    jobs: dict[str, _Job] = field(default_factory=dict)
    windows: dict[tuple[str, Budget], _Window] = field(default_factory=dict)


# -- validation (zod-like error trees) ----------------------------------------------------------


class _Issues:
    """Collects errors into zod's `format()` shape: `{"field": {"_errors": [...]}}`."""

    def __init__(self) -> None:
        self.tree: dict[str, Any] = {}
        self.count = 0

    def add(self, path: tuple[str | int, ...], message: str) -> None:
        node = self.tree
        for part in path:
            node = node.setdefault(str(part), {})
        node.setdefault("_errors", []).append(message)
        self.count += 1


def _js_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _text(
    obj: Mapping[str, object],
    key: str,
    issues: _Issues,
    prefix: tuple[str | int, ...] = (),
    *,
    required: bool = False,
) -> str | None:
    value = obj.get(key)
    path = (*prefix, key)
    if value is None:
        if required:
            issues.add(path, "Required")
        return None
    if not isinstance(value, str):
        issues.add(path, f"Expected string, received {_js_type(value)}")
        return None
    value = value.strip()
    if not value:  # "" is absent for an optional field, as zod's truthiness refinements see it
        if required:
            issues.add(path, "String must contain at least 1 character(s)")
        return None
    if len(value) > _MAX_TEXT:
        issues.add(path, f"String must contain at most {_MAX_TEXT} character(s)")
        return None
    return value


def _integer(
    obj: Mapping[str, object],
    key: str,
    issues: _Issues,
    prefix: tuple[str | int, ...] = (),
    *,
    low: int = 1,
    high: int | None = None,
) -> int | None:
    value = obj.get(key)
    path = (*prefix, key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        issues.add(path, f"Expected number, received {_js_type(value)}")
        return None
    if isinstance(value, float) and not value.is_integer():
        issues.add(path, "Expected integer, received float")
        return None
    number = int(value)
    if number < low:
        issues.add(path, f"Number must be greater than or equal to {low}")
        return None
    if high is not None and number > high:
        issues.add(path, f"Number must be less than or equal to {high}")
        return None
    return number


def _location(
    obj: Mapping[str, object],
    issues: _Issues,
    prefix: tuple[str | int, ...] = (),
    *,
    required: bool,
) -> Location | None:
    before = issues.count
    name = _text(obj, "location", issues, prefix)
    code = _integer(obj, "location_code", issues, prefix)
    if name is None and code is None and required and issues.count == before:
        issues.add((*prefix, "location"), "Location or location_code is required")
    return resolve_location(name, code, default=not required)


def _serp_params(body: Mapping[str, object], issues: _Issues) -> SerpParams | None:
    keyword = _text(body, "keyword", issues, required=True)
    location = _location(body, issues, required=False)
    device = body.get("device", "desktop")
    if device is None:
        device = "desktop"
    if device not in ("desktop", "mobile"):
        issues.add(
            ("device",),
            f"Invalid enum value. Expected 'desktop' | 'mobile', received '{device}'",
        )
    depth = _integer(body, "depth", issues, low=1, high=100)
    if issues.count or keyword is None or location is None:
        return None
    return SerpParams(
        keyword=keyword,
        location=location,
        device="mobile" if device == "mobile" else "desktop",
        depth=depth or 10,
    )


def _keyword_params(body: Mapping[str, object], issues: _Issues) -> KeywordMetricsParams | None:
    raw = body.get("keywords")
    keywords: list[str] = []
    if raw is None:
        issues.add(("keywords",), "Required")
    elif not isinstance(raw, list):
        issues.add(("keywords",), f"Expected array, received {_js_type(raw)}")
    elif not raw:
        issues.add(("keywords",), "Array must contain at least 1 element(s)")
    elif len(raw) > MAX_KEYWORDS:
        issues.add(("keywords",), f"Array must contain at most {MAX_KEYWORDS} element(s)")
    else:
        seen: set[str] = set()
        as_map = {str(i): v for i, v in enumerate(raw)}
        for i in range(len(raw)):
            kw = _text(as_map, str(i), issues, ("keywords",), required=True)
            if kw is not None and kw.lower() not in seen:
                seen.add(kw.lower())
                keywords.append(kw)
    location = _location(body, issues, required=False)
    if issues.count or location is None:
        return None
    return KeywordMetricsParams(keywords=tuple(keywords), location=location)


_DOMAIN_RE = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def _domain(raw: str) -> str | None:
    """Accept `example.com`, `https://www.example.com/path`; return the bare host."""
    host = re.sub(r"^[a-z][a-z0-9+.-]*://", "", raw.strip().lower()).split("/")[0].split(":")[0]
    host = host.removeprefix("www.")
    return host if _DOMAIN_RE.match(host) else None


_AUDIT_KEYS = frozenset({"domain", "location", "location_code", "language"})


def _audit_params(
    body: Mapping[str, object], issues: _Issues, prefix: tuple[str | int, ...] = ()
) -> LocalAuditParams | None:
    """`domain` holds a domain or a business name, as published; `language` is optional
    (default en). Other keys are refused (the sandbox's choice: the docs list no others)."""
    before = issues.count
    unknown = sorted(k for k in body if k not in _AUDIT_KEYS)
    if unknown:
        keys = ", ".join(f"'{k}'" for k in unknown)
        issues.add(prefix, f"Unrecognized key(s) in object: {keys}")
    raw_domain = _text(body, "domain", issues, prefix)
    _text(body, "language", issues, prefix)
    domain: str | None = None
    name: str | None = None
    if raw_domain is not None:
        domain = _domain(raw_domain)
        if domain is None:  # not a domain: a business name, as the docs allow
            name = raw_domain.strip()
    elif issues.count == before:
        issues.add((*prefix, "domain"), "Domain or Business Name is required")
    location = _location(body, issues, prefix, required=True)
    if body.get("location") is None and issues.count == before:
        # Published: `location` is required; `location_code` only wins over it.
        issues.add((*prefix, "location"), "Location is required")
    if issues.count > before or location is None:
        return None
    return LocalAuditParams(domain=domain, business_name=name, location=location)


def _batch_params(body: object, issues: _Issues) -> list[LocalAuditParams] | None:
    raw = body.get("targets") if isinstance(body, dict) else body
    if raw is None:
        issues.add(("targets",), "Required")
        return None
    if not isinstance(raw, list):
        issues.add(("targets",), f"Expected array, received {_js_type(raw)}")
        return None
    if not raw:
        issues.add(("targets",), "Array must contain at least 1 element(s)")
        return None
    if len(raw) > MAX_BATCH_TARGETS:
        issues.add(("targets",), f"Array must contain at most {MAX_BATCH_TARGETS} element(s)")
        return None
    targets: list[LocalAuditParams] = []
    for i, item in enumerate(raw):
        if not isinstance(item, dict):
            issues.add(("targets", i), f"Expected object, received {_js_type(item)}")
            continue
        parsed = _audit_params(item, issues, ("targets", i))
        if parsed is not None:
            targets.append(parsed)
    return None if issues.count else targets


def _object_body(
    parse: Callable[[Mapping[str, object], _Issues], WorkflowParams | None],
) -> Callable[[object, _Issues], WorkflowParams | None]:
    """Adapt a field parser to any JSON body: non-objects fail as zod's root error."""

    def parse_any(body: object, issues: _Issues) -> WorkflowParams | None:
        if not isinstance(body, dict):
            issues.add((), f"Expected object, received {_js_type(body)}")
            return None
        return parse(body, issues)

    return parse_any


def _parse_batch(body: object, issues: _Issues) -> list[LocalAuditParams] | None:
    if not isinstance(body, dict | list):
        issues.add((), f"Expected object, received {_js_type(body)}")
        return None
    return _batch_params(body, issues)


# -- the app ------------------------------------------------------------------------------------


class _EventStreamResponse(StreamingResponse):
    """A stream that also ends as soon as the client disconnects, whatever the ASGI version.

    Starlette only watches for `http.disconnect` below ASGI spec 2.4; a stream asleep until its
    next event or ping must not outlive its client.
    """

    def __init__(self, chunks: AsyncGenerator[bytes, None], headers: Mapping[str, str]) -> None:
        super().__init__(chunks, headers=headers, media_type="text/event-stream")
        self._chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        del scope  # only ever used for HTTP

        async def watch_disconnect(cancel: anyio.CancelScope) -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            cancel.cancel()

        async with aclosing(self._chunks), anyio.create_task_group() as tg:
            tg.start_soon(watch_disconnect, tg.cancel_scope)
            with suppress(OSError):  # the client went away mid-send: nothing left to do
                await self.stream_response(send)
            tg.cancel_scope.cancel()


async def _sleep_until(state: SandboxState, target: float) -> None:
    delay = target - state.now()
    if delay > 0:
        await state.sleep(delay)


class _AgentSeo:
    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self._store = _Store(state.generation)
        if state.jobs_file is not None:
            state.jobs_file.register("agentseo", self._dump, self._load)

    # persistence (`_persist`) ---------------------------------------------------------------
    def _dump(self) -> dict[str, Any]:
        return {
            "jobs": [
                {
                    "id": job.id,
                    "key_fp": job.key_fp,
                    "params": encode(job.params),
                    "created": job.created,
                    "planned_end": job.planned_end,
                    "steps": encode(job.steps),
                    "base_path": job.base_path,
                    "task_id": job.task_id,
                    "seed": job.seed,
                    "project_id": job.project_id,
                    "workflow_id": job.workflow_id,
                }
                for job in sorted(self.store.jobs.values(), key=lambda j: j.created)[
                    -MAX_KEPT_JOBS:
                ]
            ]
        }

    def _load(self, data: Any) -> None:
        classes = (SerpParams, KeywordMetricsParams, LocalAuditParams, Location, _Step)
        jobs: dict[str, _Job] = {}
        for item in data["jobs"]:
            params = decode(item["params"], classes)
            steps = decode(item["steps"], classes)
            if not isinstance(params, SerpParams | KeywordMetricsParams | LocalAuditParams):
                raise TypeError("job parameters of an unknown workflow")
            if not isinstance(steps, list) or not steps:
                raise TypeError("a job without steps")
            job = _Job(
                id=str(item["id"]),
                key_fp=str(item["key_fp"]),
                params=params,
                created=float(item["created"]),
                planned_end=float(item["planned_end"]),
                steps=steps,
                base_path=str(item["base_path"]),
                task_id=str(item["task_id"]),
                seed=int(item["seed"]),
                project_id=item.get("project_id"),
                workflow_id=item.get("workflow_id"),
            )
            jobs[job.id] = job
        self.store.jobs.update(jobs)

    # state ----------------------------------------------------------------------------------
    @property
    def store(self) -> _Store:
        if self._store.generation != self.state.generation:
            self._store = _Store(self.state.generation)
        return self._store

    def _take(self, key: str, budget: Budget) -> _RateInfo:
        plan = Plan(self.state.faults.agentseo_plan)
        workload, control = PLAN_BUDGETS[plan]
        limit = workload if budget == "workload" else control
        now = self.state.now()
        windows = self.store.windows
        window = windows.get((key, budget))
        if window is None or now >= window.start + RATE_WINDOW_SECONDS:
            window = windows[(key, budget)] = _Window(now)
        reset = max(1, _ceil(window.start + RATE_WINDOW_SECONDS - now))
        if window.count >= limit:
            return _RateInfo(limit, 0, reset, allowed=False)
        window.count += 1
        return _RateInfo(limit, limit - window.count, reset, allowed=True)

    # responses ------------------------------------------------------------------------------
    def _headers(self, request_id: str, rate: _RateInfo | None) -> dict[str, str]:
        headers = {"x-request-id": request_id, "Date": self.state.http_date()}
        if rate is not None:
            headers.update(rate.headers())
        return headers

    def _json(
        self,
        body: object,
        status: int,
        request_id: str,
        rate: _RateInfo | None,
        extra: Mapping[str, str] | None = None,
    ) -> Response:
        headers = self._headers(request_id, rate)
        if extra:
            headers.update(extra)
        return JSONResponse(body, status_code=status, headers=headers)

    def _error(
        self,
        status: int,
        code: str,
        message: str,
        request_id: str,
        *,
        rate: _RateInfo | None = None,
        details: object = None,
    ) -> Response:
        body = {
            "error": {
                "code": code,
                "message": message,
                "details": {} if details is None else details,
                "request_id": request_id,
            }
        }
        return self._json(body, status, request_id, rate)

    def _request_id(self) -> str:
        return self.state.new_id("req_", 16)

    def _authenticate(self, request: Request, request_id: str) -> str | Response:
        key = request.headers.get("x-api-key", "").strip()
        if not key:
            return self._error(
                401,
                "UNAUTHORIZED",
                "Missing or invalid API key. Send it in the x-api-key header.",
                request_id,
            )
        if key == KEY_REVOKED:
            return self._error(
                403, "API_KEY_REVOKED", "This API key has been revoked or has expired.", request_id
            )
        return key

    def _workload_scenario(self, key: str, request_id: str, rate: _RateInfo) -> Response | None:
        if key == KEY_INSUFFICIENT_CREDITS:
            return self._error(
                402,
                "CREDITS_EXHAUSTED",
                "Your account has no credits left. Top up to start new jobs.",
                request_id,
                rate=rate,
                details={"credits_remaining": 0},
            )
        if key == KEY_MISSING_LICENSE:
            return self._error(
                403,
                "FORBIDDEN",
                "This API key has no active plan that includes this workflow.",
                request_id,
                rate=rate,
                details={"reason": "no_active_license"},
            )
        if key == KEY_INSUFFICIENT_SCOPE:
            return self._error(
                403,
                "DOMAIN_NOT_ALLOWED",
                "This API key's allowed-domain policy blocks this request.",
                request_id,
                rate=rate,
                details={"reason": "allowed_domain_policy"},
            )
        return None

    def _rate_limited(self, request_id: str, rate: _RateInfo, budget: Budget) -> Response:
        return self._error(
            429,
            "RATE_LIMITED",
            f"Rate limit exceeded for the {budget} budget ({rate.limit} requests per minute).",
            request_id,
            rate=rate,
            details={"budget": budget, "limit": rate.limit, "reset_seconds": rate.reset},
        )

    # jobs -----------------------------------------------------------------------------------
    def _create_job(self, request: Request, key: str, params: WorkflowParams) -> _Job:
        now = self.state.now()
        span = float(self.state.faults.job_seconds)
        job_id = str(uuid.uuid4())
        task_id = datetime.fromtimestamp(now, UTC).strftime("%m%d%H%M") + (
            f"-1535-0066-0000-{job_id.replace('-', '')[-12:]}"
        )
        job = _Job(
            id=job_id,
            key_fp=key_fingerprint(key),
            params=params,
            created=now,
            planned_end=now + span,
            steps=_timeline(params, now, span),
            base_path=str(request.scope.get("root_path", "")).rstrip("/"),
            task_id=task_id,
            seed=self.state.faults.seed,
            project_id=request.headers.get("x-project-id") or None,
            workflow_id=request.headers.get("x-workflow-id") or None,
        )
        self.store.jobs[job_id] = job
        self.state.jobs_changed()
        return job

    async def _workflow(
        self,
        request: Request,
        path: str,
        parse: Callable[[object, _Issues], WorkflowParams | list[LocalAuditParams] | None],
    ) -> Response:
        request_id = self._request_id()
        key = self._authenticate(request, request_id)
        if isinstance(key, Response):
            return key
        rate = self._take(key, "workload")
        if not rate.allowed:
            return self._rate_limited(request_id, rate, "workload")
        blocked = self._workload_scenario(key, request_id, rate)
        if blocked is not None:
            return blocked

        issues = _Issues()
        raw = await request.body()
        body: object
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:  # also UnicodeDecodeError
            issues.add((), "Malformed JSON in request body")
            body = None
        parsed: WorkflowParams | list[LocalAuditParams] | None = None
        if not issues.count:
            parsed = parse(body, issues)
        if issues.count or parsed is None:
            return self._error(
                400,
                "INVALID_PARAMETERS",
                "The request parameters are invalid.",
                request_id,
                rate=rate,
                details=issues.tree,
            )

        self.state.record_paid_post("agentseo", path, body)
        if isinstance(parsed, list):
            jobs = [self._create_job(request, key, p) for p in parsed]
            return self._json([j.id for j in jobs], 202, request_id, rate)  # an array of ids

        job = self._create_job(request, key, parsed)
        sync = request.query_params.get("sync", "").lower() in ("true", "1")
        if sync:
            deadline = job.created + SYNC_WINDOW_SECONDS
            await _sleep_until(self.state, min(job.ends_at, deadline))
        now = self.state.now()
        env = job.envelope(job.index_at(now), now)
        if env["status"] in ("completed", "failed"):
            return self._json(env, 200, request_id, rate)
        extra = {"Retry-After": str(env["retry_after_seconds"] or 1)} if sync else None
        return self._json(env, 202, request_id, rate, extra)

    def _find_job(self, request: Request, request_id: str) -> tuple[_Job, _RateInfo] | Response:
        key = self._authenticate(request, request_id)
        if isinstance(key, Response):
            return key
        rate = self._take(key, "control")
        if not rate.allowed:
            return self._rate_limited(request_id, rate, "control")
        job_id = str(request.path_params["job_id"])
        job = self.store.jobs.get(job_id)
        if job is None or job.key_fp != key_fingerprint(key):
            message = f"Job {job_id} was not found."
            return self._error(
                404, "NOT_FOUND", message, request_id, rate=rate, details={"jobId": job_id}
            )
        return job, rate

    # endpoints ------------------------------------------------------------------------------
    async def analyze_serp(self, request: Request) -> Response:
        return await self._workflow(request, "/analyze/serp", _object_body(_serp_params))

    async def keyword_overview(self, request: Request) -> Response:
        return await self._workflow(
            request, "/keyword-metrics/overview", _object_body(_keyword_params)
        )

    async def audit_local(self, request: Request) -> Response:
        return await self._workflow(request, "/audit/local", _object_body(_audit_params))

    async def audit_local_batch(self, request: Request) -> Response:
        return await self._workflow(request, "/audit/local/batch", _parse_batch)

    async def get_job(self, request: Request) -> Response:
        request_id = self._request_id()
        found = self._find_job(request, request_id)
        if isinstance(found, Response):
            return found
        job, rate = found
        now = self.state.now()
        return self._json(job.envelope(job.index_at(now), now), 200, request_id, rate)

    async def job_events(self, request: Request) -> Response:
        request_id = self._request_id()
        found = self._find_job(request, request_id)
        if isinstance(found, Response):
            return found
        job, rate = found
        last_seen: int | None = None
        header = request.headers.get("last-event-id", "").strip()
        if header.isdigit():
            last_seen = int(header)
        now = self.state.now()
        if last_seen is not None and last_seen >= job.last_id and job.terminal_at(now):
            return Response(status_code=204, headers=self._headers(request_id, rate))
        first = job.index_at(now) if last_seen is None else min(last_seen + 1, job.last_id)
        headers = self._headers(request_id, rate)
        headers.update({"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return _EventStreamResponse(self._events(job, first), headers)

    async def _events(self, job: _Job, first: int) -> AsyncGenerator[bytes, None]:
        """Event `first` onwards: replayed from the log as far as it goes, then live."""
        state = self.state
        generation = state.generation
        drop_after = state.faults.sse_drop_after_events
        yield f"retry: {SSE_RETRY_MS}\n".encode()
        sent = 0
        next_id = first
        last_write = state.now()
        while state.generation == generation:
            now = state.now()
            if next_id <= job.index_at(now):
                yield job.frame(next_id)
                sent += 1
                last_write = now
                if next_id == job.last_id:
                    return
                next_id += 1
                if drop_after is not None and sent >= drop_after:
                    return
                continue
            ping_at = last_write + SSE_PING_SECONDS
            if now >= ping_at:
                yield b": ping\n"
                last_write = now
                continue
            await _sleep_until(state, min(ping_at, job.steps[next_id - 1].at))

    async def not_found(self, request: Request, exc: Exception) -> Response:
        """Unknown routes and wrong methods, in the API's error envelope."""
        del request
        if isinstance(exc, HTTPException) and exc.status_code == 405:
            return self._error(
                405,
                "METHOD_NOT_ALLOWED",
                "Method not allowed for this endpoint.",
                self._request_id(),
            )
        return self._error(404, "NOT_FOUND", "Endpoint not found.", self._request_id())


def create_agentseo_app(state: SandboxState) -> Starlette:
    """The AgentSEO API v1 simulation (module docstring), sharing `state` with the sandbox."""
    api = _AgentSeo(state)
    return Starlette(
        routes=[
            Route("/analyze/serp", api.analyze_serp, methods=["POST"]),
            Route("/keyword-metrics/overview", api.keyword_overview, methods=["POST"]),
            Route("/audit/local", api.audit_local, methods=["POST"]),
            Route("/audit/local/batch", api.audit_local_batch, methods=["POST"]),
            Route("/jobs/{job_id}", api.get_job, methods=["GET"]),
            Route("/jobs/{job_id}/events", api.job_events, methods=["GET"]),
        ],
        exception_handlers={404: api.not_found, 405: api.not_found},
    )
