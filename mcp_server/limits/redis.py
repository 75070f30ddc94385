"""The shared `Limiter`: the rate buckets in Redis, one budget for every process and replica.

Every process that names the same `JOBRELAY_REDIS_URL` draws from the same buckets, so N
replicas together stay within an organisation's limits (issue 17). The buckets behave exactly
as the in-process and SQLite ones: each is a `limits._window.WindowState` (the one bucket
arithmetic), seeded from the plan and corrected by every response's headers. The arithmetic is
not written twice: each operation loads the state, runs that code on it, and stores the result
with an atomic server-side Lua script that refuses the write when another process changed the
bucket in between (compare-and-set on a version number); the operation then runs again on the
fresh state. Waiting is `SharedWindowLimiter`'s: predict, refuse what does not fit, take the
slots atomically or sleep the predicted time outside Redis and try again.

**Time.** Bucket timestamps are shared by processes, so they need one clock. With the real
clock (`is_system_time`, production) the time comes from the Redis server (`TIME`, read in
the same script that loads the state): one clock for all replicas, however far their own
clocks drift. With any other injected clock (tests: `FakeClock`, `ScaledClock`) the bucket runs
on that clock's `time()`, because the waits are slept on it: pacing in virtual time can only be
checked against virtual timestamps. Durations (waits, resets) mean the same on both.

**Keys** (all under `prefix`, default `jobrelay:limits`), per provider, key fingerprint (the
org's key) and endpoint or budget: `{prefix}:b:{provider}:{fingerprint}:{bucket}` (a hash:
version and state), the index of buckets `{prefix}:index` and the credits
`{prefix}:credits:{provider}:{fingerprint}`. Idle keys expire after a day. Not Redis
Cluster-ready (the index lives in another slot).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Unpack, cast

from mcp_server._clock import Clock, is_system_time
from mcp_server.errors import ConfigError
from mcp_server.limits._window import (
    LimiterOptions,
    SharedWindowLimiter,
    WindowState,
    snapshot_of,
    sort_key,
)
from mcp_server.limits.base import BucketKey, BucketSnapshot, Limiter
from mcp_server.models import Provider
from mcp_server.upstream import RateLimitHints

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

_LOAD: Final = """
-- KEYS[1] bucket hash. Returns {version or false, state or false, seconds, microseconds}.
local found = redis.call('HMGET', KEYS[1], 'v', 's')
local now = redis.call('TIME')
return {found[1], found[2], now[1], now[2]}
"""

_STORE: Final = """
-- KEYS: 1 bucket hash, 2 the index. ARGV: 1 expected version ('' for a new bucket),
-- 2 state JSON, 3 TTL ms, 4 index member. Returns 1 when stored, 0 when the bucket changed.
local version = redis.call('HGET', KEYS[1], 'v')
if (version or '') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', (tonumber(version) or 0) + 1, 's', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('SADD', KEYS[2], ARGV[4])
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


@dataclass(slots=True)
class _Loaded:
    now: float
    version: str
    state: WindowState


class RedisLimiter(SharedWindowLimiter):
    """Buckets in Redis shared by every process on the same URL; see the module doc.

    Options as `limits._window.WindowLimiter`, plus the client and a key `prefix` (tests give
    each run its own). `server_time` picks the bucket clock: None means Redis `TIME` when
    `clock` is the system's, the injected clock otherwise.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        prefix: str | None = None,
        server_time: bool | None = None,
        **options: Unpack[LimiterOptions],
    ) -> None:
        super().__init__(clock, **options)
        self._redis = redis
        self._prefix = DEFAULT_PREFIX if prefix is None else prefix
        self._server_time = is_system_time(clock) if server_time is None else server_time
        self._load = redis.register_script(_LOAD)
        self._store = redis.register_script(_STORE)

    # -- keys and state ---------------------------------------------------------------------

    @staticmethod
    def _id(key: BucketKey) -> str:
        return f"{key.provider}:{key.key_fingerprint}:{key.bucket}"

    def _hash(self, key: BucketKey) -> str:
        return f"{self._prefix}:b:{self._id(key)}"

    def _index(self) -> str:
        return f"{self._prefix}:index"

    def _credits_key(self, provider: Provider, key_fingerprint: str) -> str:
        return f"{self._prefix}:credits:{provider}:{key_fingerprint}"

    async def _get(self, key: BucketKey) -> _Loaded:
        raw = await self._load(keys=[self._hash(key)])
        version, state, seconds, micros = cast("list[Any]", raw)
        now = int(seconds) + int(micros) / 1e6 if self._server_time else self._clock.time()
        if state is None:
            return _Loaded(now, "", self._seed(key))
        text = version.decode() if isinstance(version, bytes) else str(version)
        return _Loaded(now, text, WindowState.from_json(json.loads(state)))

    async def _put(self, key: BucketKey, loaded: _Loaded) -> bool:
        stored = await self._store(
            keys=[self._hash(key), self._index()],
            args=[loaded.version, json.dumps(loaded.state.to_json()), _TTL_MS, self._id(key)],
        )
        return bool(stored)

    def _changing(self, key: BucketKey) -> RuntimeError:
        return RuntimeError(f"rate bucket {self._id(key)} kept changing over {_MAX_TRIES} tries")

    # -- SharedWindowLimiter ----------------------------------------------------------------

    async def _peek(self, key: BucketKey, ahead: int, need: int) -> float:
        loaded = await self._get(key)
        return loaded.state.wait(loaded.now, ahead, need)

    async def _try_take(self, key: BucketKey, need: int) -> float:
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            wait = loaded.state.wait(loaded.now, 0, need)
            if wait > _EPS:
                return wait
            loaded.state.record(loaded.now, need)
            if await self._put(key, loaded):
                return 0.0
        raise self._changing(key)

    # -- the Limiter protocol ---------------------------------------------------------------

    async def observe(self, key: BucketKey, status: int, hints: RateLimitHints) -> None:
        """Correct the shared bucket from a response, as every backend does (same code)."""
        if hints.credits is not None:
            await self._redis.set(
                self._credits_key(key.provider, key.key_fingerprint), hints.credits, px=_TTL_MS
            )
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            self._observe(loaded.state, loaded.now, status, hints)
            if await self._put(key, loaded):
                return
        raise self._changing(key)

    async def snapshot(self) -> list[BucketSnapshot]:
        """Every bucket any process has used (within a day)."""
        members = await cast("Any", self._redis.smembers(self._index()))
        keys: list[BucketKey] = []
        for raw in members:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            provider, fingerprint, bucket = text.split(":", 2)
            keys.append(BucketKey(cast("Provider", provider), fingerprint, bucket))
        out: list[BucketSnapshot] = []
        for key in sorted(keys, key=sort_key):
            loaded = await self._get(key)
            if loaded.version:  # else expired since it was indexed
                out.append(snapshot_of(key, loaded.state, loaded.now))
        return out

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        value = await self._redis.get(self._credits_key(provider, key_fingerprint))
        return None if value is None else int(value)

    async def ping(self) -> None:
        """Raise unless Redis answers (`GET /healthz`)."""
        await cast("Any", self._redis.ping())

    async def aclose(self) -> None:
        """Close the connection pool (the runtime calls this on shutdown)."""
        await self._redis.aclose()


if TYPE_CHECKING:

    def _conforms(limiter: RedisLimiter) -> Limiter:
        return limiter  # mypy proves RedisLimiter satisfies the Limiter protocol
