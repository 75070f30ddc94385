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

import contextlib
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

__all__ = ["DEFAULT_PREFIX", "RedisLeases", "RedisLimiter", "redis_client"]

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


@dataclass(frozen=True, slots=True)
class _Keys:
    """The Redis key names of one limiter, under its prefix."""

    prefix: str

    @staticmethod
    def bucket_id(key: BucketKey) -> str:
        return f"{key.provider}:{key.key_fingerprint}:{key.bucket}"

    def bucket(self, key: BucketKey) -> str:
        return f"{self.prefix}:b:{self.bucket_id(key)}"

    @property
    def index(self) -> str:
        return f"{self.prefix}:index"

    def credits(self, provider: Provider, key_fingerprint: str) -> str:
        return f"{self.prefix}:credits:{provider}:{key_fingerprint}"


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
        self._keys = _Keys(DEFAULT_PREFIX if prefix is None else prefix)
        self._server_time = is_system_time(clock) if server_time is None else server_time
        self._load = redis.register_script(_LOAD)
        self._store = redis.register_script(_STORE)

    # -- state ------------------------------------------------------------------------------

    async def _get(self, key: BucketKey) -> _Loaded:
        raw = await self._load(keys=[self._keys.bucket(key)])
        version, state, seconds, micros = cast("list[Any]", raw)
        now = int(seconds) + int(micros) / 1e6 if self._server_time else self._clock.time()
        if state is None:
            return _Loaded(now, "", self._seed(key))
        text = version.decode() if isinstance(version, bytes) else str(version)
        return _Loaded(now, text, self._restore(key, state))

    async def _put(self, key: BucketKey, loaded: _Loaded) -> bool:
        stored = await self._store(
            keys=[self._keys.bucket(key), self._keys.index],
            args=[
                loaded.version,
                json.dumps(loaded.state.to_json()),
                _TTL_MS,
                self._keys.bucket_id(key),
            ],
        )
        return bool(stored)

    def _changing(self, key: BucketKey) -> RuntimeError:
        return RuntimeError(
            f"rate bucket {self._keys.bucket_id(key)} kept changing over {_MAX_TRIES} tries"
        )

    # -- SharedWindowLimiter ----------------------------------------------------------------

    async def _peek(self, key: BucketKey, ahead: int, need: int, urgent: bool) -> float:
        loaded = await self._get(key)
        return loaded.state.wait(loaded.now, ahead, need, urgent=urgent)

    async def _try_take(self, key: BucketKey, need: int, urgent: bool) -> float:
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            wait = loaded.state.wait(loaded.now, 0, need, urgent=urgent)
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
                self._keys.credits(key.provider, key.key_fingerprint), hints.credits, px=_TTL_MS
            )
        for _ in range(_MAX_TRIES):
            loaded = await self._get(key)
            self._observe(loaded.state, loaded.now, status, hints)
            if await self._put(key, loaded):
                return
        raise self._changing(key)

    async def snapshot(self) -> list[BucketSnapshot]:
        """Every bucket any process has used (within a day)."""
        members = await cast("Any", self._redis.smembers(self._keys.index))
        keys: list[BucketKey] = []
        for raw in members:
            text = raw.decode() if isinstance(raw, bytes) else str(raw)
            provider, fingerprint, bucket = text.split(":", 2)
            keys.append(BucketKey(provider, fingerprint, bucket))
        out: list[BucketSnapshot] = []
        for key in sorted(keys, key=sort_key):
            loaded = await self._get(key)
            if loaded.version:  # else expired since it was indexed
                out.append(snapshot_of(key, loaded.state, loaded.now))
        return out

    async def credits(self, provider: Provider, key_fingerprint: str) -> int | None:
        value = await self._redis.get(self._keys.credits(provider, key_fingerprint))
        return None if value is None else int(value)

    async def ping(self) -> None:
        """Raise unless Redis answers (`GET /healthz`)."""
        await cast("Any", self._redis.ping())

    async def aclose(self) -> None:
        """Close the connection pool (the runtime calls this on shutdown)."""
        await self._redis.aclose()


# --------------------------------------------------------------------------------------------
# Poll leases: one poller per org endpoint among replicas (`sharing.SharedPoll`)

_NOW: Final = """
local function now(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
"""

_HOLD: Final = (
    _NOW
    + """
-- KEYS[1] lease hash. ARGV: 1 holder, 2 ttl s, 3 now ('' for the server's), 4 key TTL ms.
local t = now(ARGV[3])
local current = redis.call('HMGET', KEYS[1], 'holder', 'expires')
if current[1] and current[1] ~= ARGV[1] and tonumber(current[2]) > t then
  return 0
end
redis.call('HSET', KEYS[1], 'holder', ARGV[1], 'expires', tostring(t + tonumber(ARGV[2])))
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""
)

_RELEASE: Final = """
-- KEYS[1] lease hash. ARGV[1] holder: the lease goes only if it is still ours.
if redis.call('HGET', KEYS[1], 'holder') == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""

_WANT: Final = (
    _NOW
    + """
-- KEYS: 1 wanted-until, 2 done, 3 payloads (hashes by item id).
-- ARGV: 1 ttl s, 2 now ('' for the server's), 3 key TTL ms, 4.. item ids.
local till = now(ARGV[2]) + tonumber(ARGV[1])
local out = {}
for i = 4, #ARGV do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if not current or current < till then
    redis.call('HSET', KEYS[1], ARGV[i], tostring(till))
  end
  out[#out + 1] = redis.call('HGET', KEYS[3], ARGV[i]) or ''
end
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return out
"""
)

_WANTED: Final = (
    _NOW
    + """
-- KEYS: 1 wanted-until, 2 done, 3 payloads. ARGV[1] now ('' for the server's).
local t = now(ARGV[1])
local all = redis.call('HGETALL', KEYS[1])
local out = {}
for i = 1, #all, 2 do
  local id, till = all[i], tonumber(all[i + 1])
  if till < t then
    redis.call('HDEL', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
  elseif redis.call('HEXISTS', KEYS[2], id) == 0 then
    out[#out + 1] = id
  end
end
return out
"""
)

_PUBLISH: Final = """
-- KEYS: 1 wanted-until, 2 done, 3 payloads. ARGV: triples of item id, payload JSON, done (0/1);
-- only ids someone asked for are stored.
for i = 1, #ARGV, 3 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
    if ARGV[i + 2] == '1' then redis.call('HSET', KEYS[2], ARGV[i], '1') end
  end
end
return 1
"""


class RedisLeases:
    """Named expiring leases and a board of wanted and published items in Redis, shared by
    every replica on the URL: the `sharing.Leases` that `SqliteLeases` is for one file.

    Same semantics (`hold` takes a free, expired or own lease and renews it for `ttl`; `want`
    registers ids and returns what was published; `wanted` lists ids still asked for and not
    done; `publish` stores items for ids someone asked for), each operation one Lua script.
    Time as `RedisLimiter`: the server's `TIME` on the system clock, else the injected clock.
    """

    def __init__(
        self,
        redis: Redis,
        clock: Clock,
        *,
        holder: str,
        prefix: str | None = None,
        server_time: bool | None = None,
    ) -> None:
        self._redis = redis
        self._clock = clock
        self.holder = holder
        self._prefix = f"{DEFAULT_PREFIX if prefix is None else prefix}:lease"
        self._server_time = is_system_time(clock) if server_time is None else server_time
        self._hold = redis.register_script(_HOLD)
        self._release = redis.register_script(_RELEASE)
        self._want = redis.register_script(_WANT)
        self._wanted = redis.register_script(_WANTED)
        self._publish = redis.register_script(_PUBLISH)
        self._held: set[str] = set()
        """Names this holder took (released on `aclose`)."""

    def _now(self) -> str:
        return "" if self._server_time else repr(self._clock.time())

    def _board(self, name: str) -> list[str]:
        base = f"{self._prefix}:{name}"
        return [f"{base}:until", f"{base}:done", f"{base}:items"]

    async def aclose(self) -> None:
        """Let the leases this holder took go (the others take over at their next round, not
        after the 15 s expiry), then close the connections."""
        from redis.exceptions import RedisError

        for name in sorted(self._held):
            with contextlib.suppress(RedisError, OSError):  # closing anyway; it then expires
                await self.release(name)
        await self._redis.aclose()

    async def hold(self, name: str, ttl: float) -> bool:
        held = bool(
            await self._hold(
                keys=[f"{self._prefix}:{name}:holder"],
                args=[self.holder, repr(ttl), self._now(), _TTL_MS],
            )
        )
        if held:
            self._held.add(name)
        else:
            self._held.discard(name)
        return held

    async def release(self, name: str) -> None:
        await self._release(keys=[f"{self._prefix}:{name}:holder"], args=[self.holder])
        self._held.discard(name)

    async def want(self, name: str, item_ids: list[str], ttl: float) -> dict[str, Any]:
        if not item_ids:
            return {}
        raw = await self._want(
            keys=self._board(name), args=[repr(ttl), self._now(), _TTL_MS, *item_ids]
        )
        found: dict[str, Any] = {}
        for item_id, payload in zip(item_ids, cast("list[bytes]", raw), strict=True):
            if payload:
                found[item_id] = json.loads(payload)
        return found

    async def wanted(self, name: str) -> list[str]:
        raw = await self._wanted(keys=self._board(name), args=[self._now()])
        ids = cast("list[Any]", raw)
        return sorted(v.decode() if isinstance(v, bytes) else str(v) for v in ids)

    async def publish(self, name: str, items: dict[str, tuple[Any, bool]]) -> None:
        args: list[str] = []
        for item_id, (payload, done) in items.items():
            args += [item_id, json.dumps(payload), "1" if done else "0"]
        if args:
            await self._publish(keys=self._board(name), args=args)


if TYPE_CHECKING:
    from mcp_server.sharing import Leases

    def _conforms(limiter: RedisLimiter) -> Limiter:
        return limiter  # mypy proves RedisLimiter satisfies the Limiter protocol

    def _leases_conform(leases: RedisLeases) -> Leases:
        return leases  # and RedisLeases the sharing.Leases protocol
