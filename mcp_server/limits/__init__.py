"""Rate limiting: the `Limiter` protocol and its backends, chosen in one place.

`make_limiter(settings, clock=...)` is the one place a backend is picked; the runtime and the
upstream sender hold only the `Limiter` protocol. The in-process buckets (`limits.memory`), or
buckets in the SQLite ledger file shared by every process using it (`limits.sqlite`); both
run the same arithmetic (`limits._window`).
"""

from __future__ import annotations

import os
import secrets
from typing import TYPE_CHECKING

from mcp_server._clock import is_system_time
from mcp_server.limits.base import BucketKey, BucketSnapshot, BucketSpec, Limiter, bucket_key
from mcp_server.limits.memory import InMemoryLimiter
from mcp_server.limits.sqlite import SqliteLeases, SqliteLimiter

if TYPE_CHECKING:
    from mcp_server._clock import Clock
    from mcp_server.config import Settings

__all__ = [
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "InMemoryLimiter",
    "Limiter",
    "SqliteLeases",
    "SqliteLimiter",
    "bucket_key",
    "make_leases",
    "make_limiter",
]


def make_limiter(settings: Settings, *, clock: Clock) -> Limiter:
    """The limiter the settings ask for (close it with `aclose()` when it has one).

    The ledger is an SQLite file and the clock is the system's: buckets in that file, shared
    by every process that uses it (`SqliteLimiter`). Otherwise (an in-memory database, or a
    test's scaled or fake clock, whose time other processes do not share): in this process.
    """
    if _shared_sqlite_file(settings) and is_system_time(clock):
        return SqliteLimiter(settings.db_path, clock, agentseo_plan=settings.agentseo_plan)
    return InMemoryLimiter(clock=clock, agentseo_plan=settings.agentseo_plan)


def make_leases(settings: Settings, *, clock: Clock) -> SqliteLeases | None:
    """Poll leases shared by the processes of one SQLite ledger, when `make_limiter` shares
    the buckets too (same rule); None when this process polls alone."""
    if _shared_sqlite_file(settings) and is_system_time(clock):
        holder = f"{os.getpid()}-{secrets.token_hex(4)}"
        return SqliteLeases(settings.db_path, clock, holder=holder)
    return None


def _shared_sqlite_file(settings: Settings) -> bool:
    return str(settings.db_path) not in (":memory:", "") and "://" not in str(settings.db_path)
