"""Rate limiting: the `Limiter` protocol and its backends, chosen in one place.

`make_limiter(settings, clock=...)` is the one place a backend is picked; the runtime and the
upstream sender hold only the `Limiter` protocol. The in-process buckets (`limits.memory`),
buckets in the SQLite ledger file shared by every process using it (`limits.sqlite`), or with
`JOBRELAY_REDIS_URL` buckets in Redis shared by every process and replica on that URL
(`limits.redis`, needs the `redis` extra); all run the same arithmetic (`limits._window`).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from mcp_server._clock import is_system_time
from mcp_server.limits.base import (
    BucketKey,
    BucketSnapshot,
    BucketSpec,
    Limiter,
    RateLimits,
    bucket_key,
    rate_limits,
    register_rate_limits,
    request_path,
    spend_reserve,
    unregister_rate_limits,
)
from mcp_server.limits.memory import InMemoryLimiter
from mcp_server.limits.sqlite import SqliteLeases, SqliteLimiter

if TYPE_CHECKING:
    from mcp_server._clock import Clock
    from mcp_server.config import Settings
    from mcp_server.limits.redis import RedisLeases

__all__ = [
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "InMemoryLimiter",
    "Limiter",
    "RateLimits",
    "SqliteLeases",
    "SqliteLimiter",
    "bucket_key",
    "make_leases",
    "make_limiter",
    "rate_limits",
    "register_rate_limits",
    "request_path",
    "spend_reserve",
    "unregister_rate_limits",
]


def make_limiter(settings: Settings, *, clock: Clock) -> Limiter:
    """The limiter the settings ask for (close it with `aclose()` when it has one).

    `JOBRELAY_REDIS_URL` set: buckets in Redis, shared by every process and replica on it
    (`RedisLimiter`; no connection is made until the first request). Else, the ledger an
    SQLite file and the clock the system's: buckets in that file, shared by every process
    that uses it (`SqliteLimiter`). Otherwise (a PostgreSQL ledger without Redis, an
    in-memory database, or a test's scaled or fake clock): in this process.
    """
    if settings.redis_url is not None:
        from mcp_server.limits.redis import RedisLimiter, redis_client

        client = redis_client(settings.redis_url.get_secret_value())
        return RedisLimiter(client, clock, settings=settings)
    if _shared_sqlite_file(settings) and is_system_time(clock):
        return SqliteLimiter(settings.db_path, clock, settings=settings)
    return InMemoryLimiter(clock=clock, settings=settings)


def make_leases(settings: Settings, *, clock: Clock) -> SqliteLeases | RedisLeases | None:
    """Poll leases shared with the other processes, wherever `make_limiter` shares the buckets
    (same rule: Redis, else one SQLite ledger file); None when this process polls alone."""
    holder = f"{os.getpid()}-{secrets.token_hex(4)}"
    if settings.redis_url is not None:
        from mcp_server.limits.redis import RedisLeases, redis_client

        client = redis_client(settings.redis_url.get_secret_value())
        return RedisLeases(client, clock, holder=holder)
    if _shared_sqlite_file(settings) and is_system_time(clock):
        return SqliteLeases(settings.db_path, clock, holder=holder)
    return None


def _shared_sqlite_file(settings: Settings) -> bool:
    if settings.db_url is not None:  # the ledger is in PostgreSQL: no shared file
        return False
    return str(settings.db_path) not in (":memory:", "") and "://" not in str(settings.db_path)
