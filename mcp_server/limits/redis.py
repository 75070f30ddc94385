"""The shared `Limiter`: the token buckets in Redis, one budget for every process and replica.

Every process that names the same `JOBRELAY_REDIS_URL` draws from the same buckets, so N
replicas together stay within an organisation's limits (issue 17). The buckets behave exactly
as the in-process ones (`limits.memory`): the same specs, seeded from the plan, corrected by
every response's headers. The arithmetic is not written twice: each operation loads the
bucket's state, runs `limits.memory`'s own bucket code on it, and stores the result with an
atomic server-side Lua script that refuses the write when another process changed the bucket
in between (compare-and-set on a version number); the operation then simply runs again on the
fresh state. Contention is low (at most one write per request sent or response seen), so a
retry is rare and cheap.

Waiting is a reservation: `acquire` books its tokens at once, at the instant they will be
there (after everyone booked ahead of it: the bucket's state is kept as of its last booking,
which is the in-process bucket's FIFO queue written down), then sleeps on the injected clock.
If a 429 blocked the bucket during that sleep, it gives its tokens back and queues again, so a
block is never followed by a burst of stale reservations. A wait that would not fit the
deadline or `max_inline_wait` raises `LocalRateLimited` without taking anything, as in memory.

**Time.** Bucket timestamps are shared by processes, so they need one clock. With a real
clock (`SystemClock`, production) the time comes from the Redis server (`TIME`, read in the
same script that loads the state): one clock for all replicas, however far their own clocks
drift. With any other injected clock (tests: `FakeClock`, `ScaledClock`) the bucket runs on
that clock's `time()`, because the waits are slept on it: pacing in virtual time can only be
checked against virtual timestamps. Durations (waits, resets) mean the same on both.

**Keys** (all under `prefix`, default `jobrelay:limits`), per provider, key fingerprint (the
org's key) and endpoint or budget: `{prefix}:b:{provider}:{fingerprint}:{bucket}` (a hash:
version and state), `...:sent` (a sorted set of send times, for `remaining`), the index of
buckets `{prefix}:index` and the credits `{prefix}:credits:{provider}:{fingerprint}`. Idle
keys expire after a day. Not Redis Cluster-ready (the index lives in another slot).
"""

from __future__ import annotations

import json
import math
import random
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, cast

from mcp_server._clock import Clock, SystemClock
from mcp_server.config import Plan
from mcp_server.errors import ConfigError
from mcp_server.limits.base import (
    SAFETY,
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    Limiter,
    default_spec,
)
from mcp_server.limits.memory import InMemoryLimiter, _Bucket
from mcp_server.models import Provider
from mcp_server.upstream import DEFAULT_POLICY, RateLimitHints

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["DEFAULT_PREFIX", "RedisLimiter", "redis_client"]

DEFAULT_PREFIX: Final = "jobrelay:limits"
_TTL_MS: Final = 86_400_000
"""Idle buckets expire after a day: the state of a window long past is worth nothing."""
_MAX_TRIES: Final = 100
_SOCKET_TIMEOUT: Final = 10.0
"""Seconds one Redis command may take before it fails instead of hanging a request."""
_EPS: Final = 1e-9

#: The bucket's fields stored as JSON (everything `_Bucket` keeps but its lock, queue and
#: send log: the reservation replaces the queue, the sorted set the log).
_FIELDS: Final = (
    "configured_burst",
    "limit",
    "window",
    "burst",
    "tokens",
    "updated",
    "blocked_until",
    "server_remaining",
    "server_fresh_until",
    "sent_since_seen",
    "reset_at",
)

_LOAD: Final = """
-- KEYS[1] bucket hash. Returns {version or false, state or false, seconds, microseconds}.
local found = redis.call('HMGET', KEYS[1], 'v', 's')
local now = redis.call('TIME')
return {found[1], found[2], now[1], now[2]}
"""

_STORE: Final = """
-- KEYS: 1 bucket hash, 2 its send log, 3 the index.
-- ARGV: 1 expected version ('' for a new bucket), 2 state JSON, 3 TTL ms, 4 index member,
--       5 prune sends at or before this time, 6 send time to log ('' for none),
--       7 log member to add or remove, 8 '1' to remove that member.
local version = redis.call('HGET', KEYS[1], 'v')
if (version or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', (tonumber(version) or 0) + 1, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
if ARGV[6] ~= '' then
  redis.call('ZADD', KEYS[2], ARGV[6], ARGV[7])
end
if ARGV[8] == '1' then
  redis.call('ZREM', KEYS[2], ARGV[7])
end
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[5])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return 1
"""


def redis_client(url: str) -> Redis:
    """An asyncio client (with its connection pool) for `url`; ConfigError when the optional
    `redis` package is missing. Connects lazily: nothing is sent until the first command."""
    try:
        from redis.asyncio import Redis
    except ImportError as exc:
        raise ConfigError(
            "JOBRELAY_REDIS_URL is set but the Redis client is not installed. Fix: "
            "pip install 'jobrelay[redis]', or unset JOBRELAY_REDIS_URL."
        ) from exc
    return Redis.from_url(url, socket_timeout=_SOCKET_TIMEOUT, socket_connect_timeout=5.0)


class _At:
    """A clock frozen at one instant of the bucket's time: lets `InMemoryLimiter.observe`
    (which never sleeps) run its arithmetic on a loaded bucket at the shared time."""

    def __init__(self, now: float) -> None:
        self._now = now

    def monotonic(self) -> float:
        return self._now

    def time(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:  # pragma: no cover - observe never sleeps
        del seconds
        raise AssertionError("a bucket operation never sleeps")

    def move_on_after(self, seconds: float) -> Any:  # pragma: no cover - idem
        del seconds
        raise AssertionError("a bucket operation never waits")


@dataclass(slots=True)
class _Loaded:
    now: float
    version: str
    bucket: _Bucket


def _encode_float(value: float | None) -> float | str | None:
    if value is None or math.isfinite(value):
        return value
    return "-inf" if value < 0 else "inf"


def _decode_float(value: object) -> float | None:
    if value is None:
        return None
    return float(cast("float | str", value))


class RedisLimiter:
    """Token buckets in Redis shared by every process on the same URL; see the module doc.

    Same arguments as `InMemoryLimiter`, plus the client and a key `prefix` (tests give each
    run its own). `server_time` picks the bucket clock: None means Redis `TIME` when `clock`
    is a `SystemClock`, the injected clock otherwise.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        prefix: str | None = None,
        agentseo_plan: Plan = Plan.HOBBY,
        safety: float = SAFETY,
        max_inline_wait: float = DEFAULT_POLICY.max_inline_wait,
        max_hint: float = DEFAULT_POLICY.max_hint,
        spec_for: Callable[[BucketKey], BucketSpec] | None = None,
        rng: random.Random | None = None,
        server_time: bool | None = None,
    ) -> None:
        if not 0.0 < safety <= 1.0:
            raise ValueError("safety must be in (0, 1]")
        self._redis = redis
        self._clock = clock
        self._prefix = DEFAULT_PREFIX if prefix is None else prefix
        self._plan = agentseo_plan
        self._safety = safety
        self._max_inline_wait = max_inline_wait
        self._max_hint = max_hint
        self._spec_for = spec_for
        self._rng = rng
        self._server_time = isinstance(clock, SystemClock) if server_time is None else server_time
        self._load = redis.register_script(_LOAD)
        self._store = redis.register_script(_STORE)

    # -- keys and state ---------------------------------------------------------------------

    def _id(self, key: BucketKey) -> str:
        return f"{key.provider}:{key.key_fingerprint}:{key.bucket}"

    def _hash(self, key: BucketKey) -> str:
        return f"{self._prefix}:b:{self._id(key)}"

    def _index(self) -> str:
        return f"{self._prefix}:index"

    def _credits_key(self, provider: Provider, key_fingerprint: str) -> str:
        return f"{self._prefix}:credits:{provider}:{key_fingerprint}"

    def _scratch(self, now: float) -> InMemoryLimiter:
        """The in-process limiter's rules, at `now`, for one loaded bucket."""
        return InMemoryLimiter(
            _At(now),
            agentseo_plan=self._plan,
            safety=self._safety,
            max_inline_wait=self._max_inline_wait,
            max_hint=self._max_hint,
            spec_for=self._spec_for,
            rng=self._rng,
        )

    async def _get(self, key: BucketKey) -> _Loaded:
        raw = await self._load(keys=[self._hash(key)])
        version, state, seconds, micros = cast("list[Any]", raw)
        now = int(seconds) + int(micros) / 1e6 if self._server_time else self._clock.time()
        if state is None:
            spec = self._spec_for(key) if self._spec_for else default_spec(key, self._plan)
            return _Loaded(now, "", _Bucket(spec, self._safety, now))
        fields = json.loads(state)
        bucket = _Bucket(
            BucketSpec(int(fields["limit"]), int(fields["configured_burst"]), fields["window"]),
            self._safety,
            now,
        )
        for name in _FIELDS:
            value = fields[name]
            if name in {"configured_burst", "limit", "burst", "sent_since_seen"}:
                setattr(bucket, name, int(value))
            elif name == "server_remaining":
                setattr(bucket, name, None if value is None else int(value))
            else:
                setattr(bucket, name, _decode_float(value))
        return _Loaded(
            now, version.decode() if isinstance(version, bytes) else str(version), bucket
        )

    async def _put(
        self,
        key: BucketKey,
        loaded: _Loaded,
        *,
        sent_at: float | None = None,
        member: str = "",
        unsend: bool = False,
    ) -> bool:
        bucket = loaded.bucket
        state = json.dumps({name: _encode_float(getattr(bucket, name)) for name in _FIELDS})
        stored = await self._store(
            keys=[self._hash(key), self._hash(key) + ":sent", self._index()],
            args=[
                loaded.version,
                state,
                _TTL_MS,
                self._id(key),
                repr(loaded.now - bucket.window),
                "" if sent_at is None else repr(sent_at),
                member,
                "1" if unsend else "0",
            ],
        )
        return bool(stored)

    # -- the Limiter protocol ---------------------------------------------------------------

    async def acquire(
        self, key: BucketKey, *, cost: float = 1.0, deadline: float | None = None
    ) -> float:
        """Reserve `cost` tokens in the shared bucket, sleep until they are due; return the
        seconds waited. Refuses (`LocalRateLimited`, nothing taken) when that does not fit."""
        if not (math.isfinite(cost) and cost > 0):
            raise ValueError("cost must be a positive number")
        started = self._clock.monotonic()
        while True:
            due, member = await self._reserve(key, cost, started, deadline)
            if due > _EPS:
                await self._clock.sleep(due)
            if await self._keep_or_return(key, cost, member):
                return self._clock.monotonic() - started

    async def _reserve(
        self, key: BucketKey, cost: float, started: float, deadline: float | None
    ) -> tuple[float, str]:
        member = secrets.token_hex(8)
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            bucket, now = loaded.bucket, loaded.now
            # The bucket's state is as of its last booking, which may lie in the future (the
            # callers queued ahead): this caller's turn starts there, as in the FIFO queue.
            turn = max(now, bucket.updated)
            bucket.refill(turn)
            due = turn + bucket.eta(turn, min(cost, float(bucket.burst)))
            local = self._clock.monotonic()
            self._scratch(now)._refuse_if_too_long(key, due - now, started, local, deadline)
            bucket.refill(due)
            bucket.tokens -= cost
            bucket.sent_since_seen += 1
            if await self._put(key, loaded, sent_at=due, member=member):
                return due - now, member
        raise RuntimeError(f"rate bucket {self._id(key)} kept changing under {_MAX_TRIES} tries")

    async def _keep_or_return(self, key: BucketKey, cost: float, member: str) -> bool:
        """After the sleep: keep the tokens, or give them back when a block (a 429 or
        `remaining: 0` seen meanwhile) now stands in the way, so the caller queues again."""
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            bucket = loaded.bucket
            if bucket.blocked_until <= loaded.now + _EPS:
                return True
            bucket.refill(loaded.now)
            bucket.tokens += cost
            bucket.sent_since_seen = max(0, bucket.sent_since_seen - 1)
            if await self._put(key, loaded, member=member, unsend=True):
                return False
        raise RuntimeError(f"rate bucket {self._id(key)} kept changing under {_MAX_TRIES} tries")

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the shared bucket from a response, by `InMemoryLimiter.observe`'s rules."""
        if hints.credits is not None:
            await self._redis.set(
                self._credits_key(key.provider, key.key_fingerprint), hints.credits, px=_TTL_MS
            )
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            scratch = self._scratch(loaded.now)
            scratch._buckets[key] = loaded.bucket
            await scratch.observe(key, status, hints)
            if await self._put(key, loaded):
                return
        raise RuntimeError(f"rate bucket {self._id(key)} kept changing under {_MAX_TRIES} tries")

    async def snapshot(self) -> list[BucketSnapshot]:
        """Every bucket any process has used (within a day), as `InMemoryLimiter` shows it."""
        members = await cast("Any", self._redis.smembers(self._index()))
        keys: list[BucketKey] = []
        for raw in members:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            provider, fingerprint, bucket = text.split(":", 2)
            keys.append(BucketKey(cast("Provider", provider), fingerprint, bucket))
        keys.sort(key=lambda k: (k.provider, k.key_fingerprint, k.bucket))
        out: list[BucketSnapshot] = []
        for key in keys:
            loaded = await self._get(key)
            if not loaded.version:
                continue  # expired since it was indexed
            sent = cast(
                "list[tuple[bytes, float]]",
                await self._redis.zrangebyscore(
                    self._hash(key) + ":sent",
                    loaded.now - loaded.bucket.window,
                    "+inf",
                    withscores=True,
                ),
            )
            loaded.bucket.sent.extend(sorted(float(score) for _member, score in sent))
            scratch = self._scratch(loaded.now)
            scratch._buckets[key] = loaded.bucket
            out.extend(await scratch.snapshot())
        return out

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        value = await self._redis.get(self._credits_key(provider, key_fingerprint))
        return None if value is None else int(value)

    async def aclose(self) -> None:
        """Close the connection pool (the runtime calls this on shutdown)."""
        await self._redis.aclose()


if TYPE_CHECKING:

    def _conforms(limiter: RedisLimiter) -> Limiter:
        return limiter  # mypy proves RedisLimiter satisfies the Limiter protocol
