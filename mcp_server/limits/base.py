"""Proactive token buckets, so 429s are rare rather than handled (RETRY_POLICY.md section C.7).

One bucket per (provider, API-key fingerprint, bucket name):

- Seamless: one bucket per endpoint template (`POST /contacts/research`, `GET /contacts`, ...),
  60/min by default. Limits are per *organisation* and shared with consumers we cannot see, so
  the response headers are the real guardrail: `observe()` caps our sends at the server's
  `remaining` and blocks the bucket until the reset after a 429 or `remaining: 0`.
- AgentSEO: `workload` and `control` per key, seeded from the plan (`PLAN_BUDGETS`), corrected
  by `RateLimit-Limit`. Routing: every path under `/jobs` (poll, SSE connect or reconnect) is
  `control`; everything else is `workload`. Which budget endpoints other than jobs use is
  undocumented, so unknown routes count against the smaller budget: over-counting it only
  slows us down, under-counting earns a 429.

The burst is whatever the window has left (issue 17.7): a bucket admits up to `limit` sends
in any `window / SAFETY` seconds, so 60 research POSTs into an idle window go out at once, and
no window of the server's, however aligned, ever holds more than `limit` (the arithmetic and
its proof are in `limits._window`, shared by every backend).

Waiting goes through the injected `Clock` (a `FakeClock` makes it instant in tests) and
queues behind an `anyio.Lock`, which serves waiters first come, first served. A wait that
would not fit the caller's deadline or `max_inline_wait` raises `LocalRateLimited` at once,
without taking a slot, so the agent can be told when to come back.

This module is the contract (`Limiter`, `BucketKey`, the bucket specs and routing); the
backends are `limits.memory.InMemoryLimiter` (one process) and `limits.sqlite.SqliteLimiter`
(every process sharing one SQLite `JOBRELAY_DB`), and
`mcp_server.limits.make_limiter` picks the backend from the settings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from mcp_server.config import PLAN_BUDGETS, Plan
from mcp_server.models import Provider
from mcp_server.upstream import RateLimitHints

__all__ = [
    "AGENTSEO_CONTROL_PREFIXES",
    "SAFETY",
    "SEAMLESS_ENDPOINTS",
    "SEAMLESS_LIMIT",
    "WINDOW",
    "AgentSEOBucket",
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "Limiter",
    "agentseo_bucket",
    "bucket_key",
    "default_spec",
    "seamless_bucket",
]

WINDOW = 60.0
"""Both APIs state their limits per minute."""
SAFETY = 0.96
"""Long runs send at 96 % of the limit: a bucket admits `limit` sends per `WINDOW / SAFETY`
(62.5 s for a minute). The 2.5 s slack covers network jitter bunching arrivals, so a server
window, whatever its alignment, never counts more than `limit` of ours. Other consumers of an
org quota are handled by the server's headers (`remaining`, and `remaining: 0` or a 429 blocks
until the reset). Not RETRY_POLICY.md C.7's sketch value of 0.9: that wasted 10 % of a paid
budget (benchmark makespan 1.08-1.10 x N/rate, target 1.05)."""
SEAMLESS_LIMIT = 60

#: The Seamless endpoint templates, each with its own per-org window (UPSTREAMS.md section 1).
SEAMLESS_ENDPOINTS: tuple[str, ...] = (
    "POST /search/contacts",
    "POST /search/companies",
    "POST /contacts/research",
    "POST /companies/research",
    "GET /contacts/research/poll",
    "GET /companies/research/poll",
    "GET /contacts",
    "GET /companies",
)

#: AgentSEO paths (below the base URL) that count against `control`; all others: `workload`.
AGENTSEO_CONTROL_PREFIXES: tuple[str, ...] = ("/jobs",)

AgentSEOBucket = Literal["workload", "control"]

_SEAMLESS_BASE_PATH = "/api/client/v1"
_AGENTSEO_BASE_PATH = "/api/v1"


def _path(path: str, base: str) -> str:
    """`/a/b` from a template, a path with a query, or a full URL; the API's base path removed."""
    path = path.strip()
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = "/" + re.sub(r"/{2,}", "/", path).strip("/")
    if path == base or path.startswith(base + "/"):
        path = path[len(base) :] or "/"
    return path


def seamless_bucket(method: str, path_template: str) -> str:
    """Bucket name for a Seamless request: its endpoint template, e.g. `GET /contacts`.

    Each endpoint has its own window upstream, so every template (known or not) is a bucket.
    """
    return f"{method.strip().upper()} {_path(path_template, _SEAMLESS_BASE_PATH)}"


def agentseo_bucket(method: str, path: str) -> AgentSEOBucket:
    """`control` for `/jobs/...` (poll, SSE), `workload` for everything else (see module doc).

    The method does not matter: AgentSEO splits its budgets by what a request does.
    """
    del method  # part of the signature so both mapping functions read alike
    clean = _path(path, _AGENTSEO_BASE_PATH)
    for prefix in AGENTSEO_CONTROL_PREFIXES:
        if clean == prefix or clean.startswith(prefix + "/"):
            return "control"
    return "workload"


@dataclass(frozen=True, slots=True)
class BucketKey:
    """Identifies one bucket: limits are per provider, per API key, per endpoint/budget."""

    provider: Provider
    key_fingerprint: str
    bucket: str


def bucket_key(provider: Provider, key_fingerprint: str, method: str, path: str) -> BucketKey:
    """The bucket a request to `method path` draws from."""
    if provider == "seamless":
        return BucketKey(provider, key_fingerprint, seamless_bucket(method, path))
    return BucketKey(provider, key_fingerprint, agentseo_bucket(method, path))


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Where a bucket starts before any response has corrected it."""

    limit: int
    window: float = WINDOW


def default_spec(key: BucketKey, plan: Plan = Plan.HOBBY) -> BucketSpec:
    """Seamless 60/min per endpoint; AgentSEO workload/control from the plan."""
    if key.provider == "seamless":
        return BucketSpec(SEAMLESS_LIMIT)
    workload, control = PLAN_BUDGETS[plan]
    return BucketSpec(control if key.bucket == "control" else workload)


@dataclass(frozen=True, slots=True)
class BucketSnapshot:
    """One bucket as `get_usage` shows it. Durations in seconds from the snapshot."""

    provider: Provider
    key_fingerprint: str
    bucket: str
    limit: int
    """Requests per window: configured, or as the server last stated."""
    window: float
    remaining: int
    """Estimated requests left in the current window (ours and, when seen, the server's)."""
    tokens: float
    """Requests that could be sent right now without waiting (what the window has left)."""
    blocked_for: float
    """Time until the bucket sends again after a 429 or `remaining: 0`; 0 when not blocked."""
    reset_in: float | None
    """Time until the window reset the server last announced; None if unknown or passed."""


class Limiter(Protocol):
    """What the clients need from rate limiting: in this process, or shared between processes."""

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Wait for a slot; return seconds waited. `deadline` is monotonic on the clock.

        Raises `LocalRateLimited` (with `retry_after`) without taking a slot when the wait
        would not fit the deadline or the inline-wait cap.
        """
        ...

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Learn from one response (every response, success or error)."""
        ...

    async def snapshot(self) -> list[BucketSnapshot]:
        """Every bucket seen so far, sorted by provider, key and bucket."""
        ...

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        """Research credits the provider last reported for this key's org, if any."""
        ...
