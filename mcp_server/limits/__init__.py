"""Rate limiting: the `Limiter` protocol and its backends, chosen in one place.

`make_limiter(settings, clock=...)` is the one place a backend is picked; the runtime and the
upstream sender hold only the `Limiter` protocol. Today the in-process token buckets
(`limits.memory`); a shared backend (Redis) is added as one more module beside it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp_server.limits.base import BucketKey, BucketSnapshot, BucketSpec, Limiter, bucket_key
from mcp_server.limits.memory import InMemoryLimiter

if TYPE_CHECKING:
    from mcp_server._clock import Clock
    from mcp_server.config import Settings

__all__ = [
    "BucketKey",
    "BucketSnapshot",
    "BucketSpec",
    "InMemoryLimiter",
    "Limiter",
    "bucket_key",
    "make_limiter",
]


def make_limiter(settings: Settings, *, clock: Clock) -> Limiter:
    """The limiter the settings ask for: today always the in-process one."""
    return InMemoryLimiter(clock=clock, agentseo_plan=settings.agentseo_plan)
