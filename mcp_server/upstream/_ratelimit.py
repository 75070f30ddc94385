"""Proactive token buckets, so 429s are rare rather than handled (RETRY_POLICY.md section C.7).

One bucket per (provider, API-key fingerprint, bucket name):

- Seamless: one bucket per endpoint template (`POST /contacts/research`, `GET /contacts`, ...),
  60/min by default, burst 2. Limits are per *organisation* and shared with consumers we cannot
  see, so the response headers are the real guardrail: `observe()` lowers our tokens to the
  server's `remaining` and blocks the bucket until the reset after a 429 or `remaining: 0`.
- AgentSEO: `workload` and `control` per key, seeded from the plan (`PLAN_BUDGETS`), burst
  10/20 (clamped per plan, see below), corrected by `RateLimit-Limit`. Routing: every path
  under `/jobs` (poll, SSE connect or reconnect) is `control`; everything else is `workload`.
  Which budget endpoints other than jobs use is undocumented, so unknown routes count against
  the smaller budget: over-counting it only slows us down, under-counting earns a 429.

Why the buckets never exceed a server's limit in any window, even a fixed window aligned to a
clock we do not share: a token bucket with rate `r` and burst `b` admits at most `b + r*T`
requests in any interval of length `T`. With `r = safety * limit / window` and the burst
clamped to `floor((1 - safety) * limit)` (at least 1), that is at most `limit` per window.
The default Seamless bucket (limit 60, rate 0.96/s, burst floor(0.04 * 60) = 2) admits at
most 2 + 57.6, i.e. 59 per minute. AgentSEO's configured bursts clamp the same way per plan:
Hobby workload (60/min) gets 2, Hobby control (600/min) keeps its 20.

Waiting goes through the injected `Clock` (a `FakeClock` makes it instant in tests) and
queues behind an `anyio.Lock`, which serves waiters first come, first served. A wait that
would not fit the caller's deadline or `max_inline_wait` raises `LocalRateLimited` at once,
without taking a token, so the agent can be told when to come back.
"""

from __future__ import annotations

import logging
import math
import random
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

import anyio

from mcp_server._clock import Clock
from mcp_server.config import PLAN_BUDGETS, Plan
from mcp_server.errors import LocalRateLimited
from mcp_server.models import Provider
from mcp_server.upstream._backoff import DEFAULT_POLICY, hint_jitter
from mcp_server.upstream._headers import RateLimitHints

__all__ = [
    "AGENTSEO_BURSTS",
    "AGENTSEO_CONTROL_PREFIXES",
    "SAFETY",
    "SEAMLESS_BURST",
    "SEAMLESS_ENDPOINTS",
    "SEAMLESS_LIMIT",
    "WINDOW",
    "AgentSEOBucket",
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "InMemoryLimiter",
    "Limiter",
    "agentseo_bucket",
    "bucket_key",
    "default_spec",
    "effective_burst",
    "seamless_bucket",
]

_log = logging.getLogger(__name__)

WINDOW = 60.0
"""Both APIs state their limits per minute."""
SAFETY = 0.96
"""Steady state at 96 % of the limit. Not RETRY_POLICY.md C.7's sketch value of 0.9: that
wasted 10 % of a paid budget (benchmark makespan 1.08-1.10 x N/rate, target 1.05). Other
consumers of the org quota are handled by the server's headers (`observe()` lowers tokens to
`remaining`; `remaining: 0` or a 429 blocks until the reset), window misalignment by the
clamped burst (the invariant holds for any alignment); the 4 % left covers network jitter
bunching arrivals (at most 59 of 60 in any minute for Seamless)."""
SEAMLESS_LIMIT = 60
SEAMLESS_BURST = 2
"""The burst actually used: `effective_burst(60, b)` is at most floor(0.04 * 60) = 2 for any
`b`, so a larger configured value would only be clamped and misread as a promise."""
AGENTSEO_BURSTS: dict[str, int] = {"workload": 10, "control": 20}

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

_EPS = 1e-9
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
    burst: int
    window: float = WINDOW


def default_spec(key: BucketKey, plan: Plan = Plan.HOBBY) -> BucketSpec:
    """Seamless 60/min burst 2 per endpoint; AgentSEO from the plan, burst 10/20 (clamped)."""
    if key.provider == "seamless":
        return BucketSpec(SEAMLESS_LIMIT, SEAMLESS_BURST)
    workload, control = PLAN_BUDGETS[plan]
    if key.bucket == "control":
        return BucketSpec(control, AGENTSEO_BURSTS["control"])
    return BucketSpec(workload, AGENTSEO_BURSTS["workload"])


def effective_burst(limit: int, burst: int, safety: float = SAFETY) -> int:
    """The burst actually used: at most `(1 - safety) * limit`, so that `burst + rate * window`
    never exceeds `limit` (see the module docstring); at least 1."""
    return max(1, min(burst, math.floor((1.0 - safety) * limit + _EPS)))


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
    """Requests that could be sent right now without waiting (the local burst)."""
    blocked_for: float
    """Time until the bucket sends again after a 429 or `remaining: 0`; 0 when not blocked."""
    reset_in: float | None
    """Time until the window reset the server last announced; None if unknown or passed."""


class Limiter(Protocol):
    """What the clients need from rate limiting; in memory now, shareable (Redis) later."""

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Wait for a slot; return seconds waited. `deadline` is monotonic on the clock.

        Raises `LocalRateLimited` (with `retry_after`) without taking a token when the wait
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


class _Bucket:
    """State of one bucket. Times are monotonic seconds of the limiter's clock."""

    def __init__(self, spec: BucketSpec, safety: float, now: float) -> None:
        self.safety = safety
        self.configured_burst = spec.burst
        self.limit = spec.limit
        self.window = spec.window
        self.burst = effective_burst(spec.limit, spec.burst, safety)
        self.tokens = float(self.burst)
        self.updated = now
        self.blocked_until = -math.inf
        self.queued = 0.0
        self.lock = anyio.Lock()
        self.sent: deque[float] = deque()
        self.server_remaining: int | None = None
        self.server_fresh_until = -math.inf
        self.sent_since_seen = 0
        self.reset_at: float | None = None

    @property
    def rate(self) -> float:
        return self.limit / self.window * self.safety

    def refill(self, now: float) -> None:
        elapsed = max(0.0, now - self.updated)
        self.tokens = min(float(self.burst), self.tokens + elapsed * self.rate)
        self.updated = max(self.updated, now)

    def eta(self, now: float, need: float) -> float:
        """Seconds until `need` tokens (this caller plus those queued ahead) are available."""
        start = max(now, self.blocked_until)
        available = min(float(self.burst), self.tokens + (start - now) * self.rate)
        if available >= need - _EPS:
            return start - now
        return start - now + (need - available) / self.rate

    def set_limit(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.burst = effective_burst(limit, self.configured_burst, self.safety)
        self.tokens = min(self.tokens, float(self.burst))

    def record_send(self, now: float) -> None:
        self.sent.append(now)
        self.sent_since_seen += 1
        self.prune(now)

    def prune(self, now: float) -> None:
        while self.sent and self.sent[0] <= now - self.window:
            self.sent.popleft()

    def remaining(self, now: float) -> int:
        if self.blocked_until > now:
            return 0
        self.prune(now)
        estimate = self.limit - len(self.sent)
        if self.server_remaining is not None and now < self.server_fresh_until:
            estimate = min(estimate, self.server_remaining - self.sent_since_seen)
        return max(0, estimate)


class InMemoryLimiter:
    """Token buckets in this process (RETRY_POLICY.md C.7); see the module docstring.

    `spec_for` overrides the starting limits per bucket (default: `default_spec` with the plan).
    `rng` jitters the end of a block so clients told the same reset do not stampede.
    """

    def __init__(
        self,
        clock: Clock,
        *,
        agentseo_plan: Plan = Plan.HOBBY,
        safety: float = SAFETY,
        max_inline_wait: float = DEFAULT_POLICY.max_inline_wait,
        max_hint: float = DEFAULT_POLICY.max_hint,
        spec_for: Callable[[BucketKey], BucketSpec] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        if not 0.0 < safety <= 1.0:
            raise ValueError("safety must be in (0, 1]")
        self._clock = clock
        self._plan = agentseo_plan
        self._safety = safety
        self._max_inline_wait = max_inline_wait
        self._max_hint = max_hint
        self._spec_for = spec_for
        self._rng = rng
        self._buckets: dict[BucketKey, _Bucket] = {}
        self._credits: dict[tuple[Provider, str], int] = {}

    def _bucket(self, key: BucketKey) -> _Bucket:
        bucket = self._buckets.get(key)
        if bucket is None:
            spec = self._spec_for(key) if self._spec_for else default_spec(key, self._plan)
            bucket = _Bucket(spec, self._safety, self._clock.monotonic())
            self._buckets[key] = bucket
        return bucket

    def _refuse_if_too_long(
        self, key: BucketKey, wait: float, started: float, now: float, deadline: float | None
    ) -> None:
        too_long = (now - started) + wait > self._max_inline_wait + _EPS
        if too_long or (deadline is not None and now + wait > deadline + _EPS):
            raise LocalRateLimited(
                f"Local rate guard: {key.bucket} exhausted; next slot in {math.ceil(wait)}s.",
                provider=key.provider,
                bucket=key.bucket,
                retry_after=wait,
            )

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Take `cost` tokens, waiting in FIFO order; return the seconds waited.

        The wait is predicted on entry (counting everyone queued ahead) and refused at once
        when it does not fit; it is checked again after each sleep in case a 429 arrived
        meanwhile. A cost above the burst waits for a full bucket and leaves it in debt.
        """
        if not (math.isfinite(cost) and cost > 0):
            raise ValueError("cost must be a positive number")
        bucket = self._bucket(key)
        started = self._clock.monotonic()
        bucket.refill(started)
        need = min(cost, float(bucket.burst))
        self._refuse_if_too_long(
            key, bucket.eta(started, bucket.queued + need), started, started, deadline
        )
        bucket.queued += need
        try:
            async with bucket.lock:
                while True:
                    now = self._clock.monotonic()
                    bucket.refill(now)
                    wait = bucket.eta(now, min(cost, float(bucket.burst)))
                    if wait <= _EPS:
                        break
                    self._refuse_if_too_long(key, wait, started, now, deadline)
                    await self._clock.sleep(wait)
                bucket.tokens -= cost
                bucket.record_send(now)
        finally:
            bucket.queued -= need
        return self._clock.monotonic() - started

    def _block_wait(self, bucket: _Bucket, status: int, hints: RateLimitHints) -> float | None:
        """How long the server told us to stop, per RETRY_POLICY.md B.4-B.5, or None."""
        retry_after = hints.retry_after
        if status == 429 and retry_after is not None and retry_after <= self._max_hint:
            return retry_after
        if (status == 429 or hints.remaining == 0) and hints.reset_after is not None:
            reset = hints.reset_after
            if reset > 2 * bucket.window:
                # Suspicious for a per-window limit: probably a misread reset. Block for one
                # window; if the server disagrees it will say so again with a fresh 429.
                _log.warning(
                    "reset of %.0f s on a %.0f s window looks wrong; blocking %.0f s",
                    reset,
                    bucket.window,
                    bucket.window,
                )
                return bucket.window
            return max(reset, 1.0)
        return None

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the bucket from a response: the server's numbers win over our estimate."""
        bucket = self._bucket(key)
        now = self._clock.monotonic()
        bucket.refill(now)
        if hints.credits is not None:
            self._credits[(key.provider, key.key_fingerprint)] = hints.credits
        window = hints.window if hints.window is not None else bucket.window
        if hints.limit is not None and (hints.limit != bucket.limit or window != bucket.window):
            bucket.set_limit(hints.limit, window)
        if hints.remaining is not None:
            bucket.tokens = min(bucket.tokens, float(hints.remaining))
            bucket.server_remaining = hints.remaining
            bucket.sent_since_seen = 0
            fresh = hints.reset_after if hints.reset_after is not None else bucket.window
            bucket.server_fresh_until = now + fresh
        if hints.reset_after is not None:
            bucket.reset_at = now + hints.reset_after
        wait = self._block_wait(bucket, status, hints)
        if wait is not None:
            bucket.tokens = min(bucket.tokens, 0.0)
            bucket.blocked_until = max(bucket.blocked_until, now + hint_jitter(wait, self._rng))
        elif status == 429:
            bucket.tokens = min(bucket.tokens, 0.0)  # no usable hint: the refill paces us

    async def snapshot(self) -> list[BucketSnapshot]:
        now = self._clock.monotonic()
        out: list[BucketSnapshot] = []
        for key in sorted(self._buckets, key=lambda k: (k.provider, k.key_fingerprint, k.bucket)):
            bucket = self._buckets[key]
            bucket.refill(now)
            reset_in = None
            if bucket.reset_at is not None and bucket.reset_at > now:
                reset_in = bucket.reset_at - now
            out.append(
                BucketSnapshot(
                    provider=key.provider,
                    key_fingerprint=key.key_fingerprint,
                    bucket=key.bucket,
                    limit=bucket.limit,
                    window=bucket.window,
                    remaining=bucket.remaining(now),
                    tokens=max(0.0, bucket.tokens),
                    blocked_for=max(0.0, bucket.blocked_until - now),
                    reset_in=reset_in,
                )
            )
        return out

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        return self._credits.get((provider, key_fingerprint))
