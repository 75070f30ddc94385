"""Proactive token buckets, so 429s are rare rather than handled (RETRY_POLICY.md section C.7).

One bucket per (provider, API-key fingerprint, bucket name). Which bucket a request draws
from, and where a bucket starts before any response has corrected it, is the provider's
knowledge: each provider declares its `RateLimits` (`JobProvider.rate_limits`; the built-in
ones in `providers/<name>/limits.py`) and the provider registry registers them here
(`register_rate_limits`), so this module names no provider. Responses correct the buckets:
`observe()` caps our sends at the server's `remaining` and blocks the bucket until the reset
after a 429 or `remaining: 0`.

The burst is whatever the window has left (issue 17.7): a bucket admits up to `limit` sends
in any `window / SAFETY` seconds, so 60 research POSTs into an idle window go out at once, and
no window of the server's, however aligned, ever holds more than `limit` (the arithmetic and
its proof are in `limits._window`, shared by every backend). A poll endpoint's spec is paced
instead (`BucketSpec.paced_burst`): a poller's first rounds must not spend the window its
later rounds need.

Waiting goes through the injected `Clock` (a `FakeClock` makes it instant in tests) and
queues behind an `anyio.Lock`, which serves waiters first come, first served. A wait that
would not fit the caller's deadline or `max_inline_wait` raises `LocalRateLimited` at once,
without taking a slot, so the agent can be told when to come back.

This module is the contract (`Limiter`, `BucketKey`, `BucketSpec`, `RateLimits` and their
registration); the backends are `limits.memory.InMemoryLimiter` (one process),
`limits.sqlite.SqliteLimiter` (every process sharing one SQLite `JOBRELAY_DB`) and
`limits.redis.RedisLimiter`, and `mcp_server.limits.make_limiter` picks the backend from the
settings.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final, Protocol
from urllib.parse import urlsplit

from mcp_server.config import Settings
from mcp_server.models import Provider
from mcp_server.upstream import RateLimitHints

__all__ = [
    "RATE_LIMITS",
    "SAFETY",
    "WINDOW",
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "Limiter",
    "RateLimits",
    "bucket_key",
    "default_spec",
    "rate_limits",
    "register_rate_limits",
    "request_path",
    "spend_reserve",
    "spending_reserve",
    "unregister_rate_limits",
]

WINDOW = 60.0
"""Both built-in APIs state their limits per minute."""
SAFETY = 0.96
"""Long runs send at 96 % of the limit: a bucket admits `limit` sends per `WINDOW / SAFETY`
(62.5 s for a minute). The 2.5 s slack covers network jitter bunching arrivals, so a server
window, whatever its alignment, never counts more than `limit` of ours. Other consumers of an
org quota are handled by the server's headers (`remaining`, and `remaining: 0` or a 429 blocks
until the reset). Not RETRY_POLICY.md C.7's sketch value of 0.9: that wasted 10 % of a paid
budget (benchmark makespan 1.08-1.10 x N/rate, target 1.05)."""


def request_path(path: str, base: str) -> str:
    """`/a/b` from a template, a path with a query, or a full URL; the API's base path removed."""
    path = path.strip()
    if "://" in path:
        path = urlsplit(path).path
    path = path.split("?", 1)[0].split("#", 1)[0]
    path = "/" + re.sub(r"/{2,}", "/", path).strip("/")
    if path == base or path.startswith(base + "/"):
        path = path[len(base) :] or "/"
    return path


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """Where a bucket starts before any response has corrected it."""

    limit: int
    window: float = WINDOW
    paced_burst: int | None = None
    """None: the burst is whatever the window has left (submits, issue 17.7). A number: at
    most that many sends at once, then one per `window / SAFETY / limit` (a poll endpoint:
    an early burst of rounds must not use up the window a long run's later rounds need)."""
    reserve: int = 0
    """A paced bucket's sends held back beyond `paced_burst`: only a send made under
    `spend_reserve()` takes them (a poller's sweep when jobs end, issue 17 scale fix), so
    regular sends never spend the last `reserve` tokens of the pace. The window's `limit` is
    unchanged: reserved sends count in it like any other. Ignored when not paced."""


_SPEND_RESERVE: ContextVar[bool] = ContextVar("jobrelay_spend_reserve", default=False)


@contextmanager
def spend_reserve() -> Iterator[None]:
    """Sends made in this block (this task) may take a paced bucket's `reserve`: the caller
    knows they are worth more than the regular cadence (a sweep when jobs end)."""
    token = _SPEND_RESERVE.set(True)
    try:
        yield
    finally:
        _SPEND_RESERVE.reset(token)


def spending_reserve() -> bool:
    """Whether the current task's sends may take a paced bucket's reserve."""
    return _SPEND_RESERVE.get()


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A provider's rate-limit knowledge, declared by the provider (`JobProvider.rate_limits`)
    and registered with it: the limiter builds every bucket of that provider from it."""

    route: Callable[[str, str], str]
    """`(method, path)` -> the name of the bucket the request draws from. The path may be a
    template, carry a query, or be a full URL."""
    spec: Callable[[str, Settings], BucketSpec]
    """`(bucket name, settings)` -> where that bucket starts (e.g. from a configured plan)."""


RATE_LIMITS: Final[dict[Provider, RateLimits]] = {}
"""Each registered provider's `RateLimits`, as the provider registry registered them
(`providers.registry` calls `register_rate_limits`); the limiter knows no provider itself."""


def register_rate_limits(provider: Provider, limits: RateLimits) -> None:
    """Requests of `provider` are limited as `limits` says (called by the provider registry)."""
    RATE_LIMITS[provider] = limits


def unregister_rate_limits(provider: Provider) -> None:
    RATE_LIMITS.pop(provider, None)


def rate_limits(provider: Provider) -> RateLimits:
    """The registered `RateLimits` of `provider`; LookupError naming the fix if none."""
    try:
        return RATE_LIMITS[provider]
    except KeyError:
        raise LookupError(
            f"no rate limits registered for provider {provider!r} "
            "(providers register theirs through mcp_server.providers.registry)"
        ) from None


@dataclass(frozen=True, slots=True)
class BucketKey:
    """Identifies one bucket: limits are per provider, per API key, per endpoint/budget."""

    provider: Provider
    key_fingerprint: str
    bucket: str


def bucket_key(provider: Provider, key_fingerprint: str, method: str, path: str) -> BucketKey:
    """The bucket a request to `method path` draws from, as its provider routes it."""
    return BucketKey(provider, key_fingerprint, rate_limits(provider).route(method, path))


def default_spec(key: BucketKey, settings: Settings) -> BucketSpec:
    """Where `key`'s bucket starts, as its provider declares it for these settings."""
    return rate_limits(key.provider).spec(key.bucket, settings)


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
    used: int
    """Our own sends in the current window (the local limiter's count, across processes for
    a shared backend)."""
    wait: float
    """Time a new request would wait for a slot now (window, block and server count)."""


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
