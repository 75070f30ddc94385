"""Seamless.ai's rate limits, as the limiter applies them (UPSTREAMS.md section 1).

One bucket per endpoint template (`POST /contacts/research`, `GET /contacts`, ...), 60/min
each. Limits are per *organisation* and shared with consumers we cannot see, so the response
headers are the real guardrail (the limiter caps our sends at the server's `remaining` and
blocks the bucket until the reset after a 429 or `remaining: 0`).
"""

from __future__ import annotations

from mcp_server.config import Settings
from mcp_server.limits import BucketSpec, RateLimits, request_path

__all__ = [
    "POLL_BURST",
    "POLL_RESERVE",
    "RATE_LIMITS",
    "SEAMLESS_ENDPOINTS",
    "SEAMLESS_LIMIT",
    "seamless_bucket",
]

SEAMLESS_LIMIT = 60
"""Requests per minute per endpoint template, per org."""

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

_BASE_PATH = "/api/client/v1"


def seamless_bucket(method: str, path_template: str) -> str:
    """Bucket name for a Seamless request: its endpoint template, e.g. `GET /contacts`.

    Each endpoint has its own window upstream, so every template (known or not) is a bucket.
    """
    return f"{method.strip().upper()} {request_path(path_template, _BASE_PATH)}"


POLL_BURST = 5
"""A poll endpoint sends at most this many calls at once, then one per 62.5 s / 60 (1.04 s):
a poller keeps its cadence for a long run instead of spending the window on its first rounds
(10 calls a round for 1,000 ids would use up 60 in 15 s and see nothing more for 47 s).
Five: what the window refills while a round pauses its longest (5 s), so pausing wastes none."""

POLL_RESERVE = 9
"""Poll tokens on top of `POLL_BURST` that regular rounds leave: a coalescer's sweep takes them
(`limits.spend_reserve()`) when a round first sees a job end, to poll every other chunk of a
full round (10 calls of 100 ids) at once, since jobs submitted together tend to end together.
They count in the window like every call: never more than 60 in any 62.5 s."""


def _spec(bucket: str, settings: Settings) -> BucketSpec:
    """60/min for every endpoint, whatever the settings; poll endpoints paced."""
    del settings
    if bucket.endswith("/research/poll"):
        return BucketSpec(SEAMLESS_LIMIT, paced_burst=POLL_BURST, reserve=POLL_RESERVE)
    return BucketSpec(SEAMLESS_LIMIT)


RATE_LIMITS = RateLimits(route=seamless_bucket, spec=_spec)
"""Seamless's buckets: one per endpoint template, 60/min each."""
