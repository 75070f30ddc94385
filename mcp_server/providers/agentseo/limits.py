"""AgentSEO's rate limits, as the limiter applies them (UPSTREAMS.md section 2).

Two budgets per key, `workload` and `control`, seeded from the plan (`AGENTSEO_PLAN`,
`upstream.agentseo.PLAN_BUDGETS`) and corrected by `RateLimit-Limit`. Routing: every path
under `/jobs` (poll, SSE connect or reconnect) is `control`; everything else is `workload`.
Which budget endpoints other than jobs use is undocumented, so unknown routes count against
the smaller budget: over-counting it only slows us down, under-counting earns a 429.
"""

from __future__ import annotations

from typing import Literal

from mcp_server.config import Settings
from mcp_server.limits import BucketSpec, RateLimits, request_path
from mcp_server.providers.agentseo.settings import AgentSEOSettings

__all__ = [
    "AGENTSEO_CONTROL_PREFIXES",
    "BACKGROUND_POLL_SHARE",
    "RATE_LIMITS",
    "AgentSEOBucket",
    "agentseo_bucket",
    "background_polls_per_second",
]

#: AgentSEO paths (below the base URL) that count against `control`; all others: `workload`.
AGENTSEO_CONTROL_PREFIXES: tuple[str, ...] = ("/jobs",)

AgentSEOBucket = Literal["workload", "control"]

_BASE_PATH = "/api/v1"


def agentseo_bucket(method: str, path: str) -> AgentSEOBucket:
    """`control` for `/jobs/...` (poll, SSE), `workload` for everything else (see module doc).

    The method does not matter: AgentSEO splits its budgets by what a request does.
    """
    del method  # part of the signature so every provider's routing reads alike
    clean = request_path(path, _BASE_PATH)
    for prefix in AGENTSEO_CONTROL_PREFIXES:
        if clean == prefix or clean.startswith(prefix + "/"):
            return "control"
    return "workload"


def _spec(bucket: str, settings: Settings) -> BucketSpec:
    """The configured plan's budget for `workload` or `control`."""
    workload, control = settings.of(AgentSEOSettings).budgets
    return BucketSpec(control if bucket == "control" else workload)


RATE_LIMITS = RateLimits(route=agentseo_bucket, spec=_spec)
"""AgentSEO's buckets: `workload` and `control`, from the plan."""


BACKGROUND_POLL_SHARE = 0.2
"""The share of the plan's `control` budget that status polls of followed jobs beyond the
stream cap may use, all jobs of a key together: 2/s on Hobby (600/min, the fixed rate before),
10/s on Pro, 33/s on Agency. The rest stays for the agent's own calls (issue 14.13). A fixed
2/s polled 236 jobs beyond the 64 streams once every ~2 minutes on any plan."""


def background_polls_per_second(settings: Settings) -> float:
    """Status polls per second for followed jobs without a stream, from the plan's budget."""
    _, control = settings.of(AgentSEOSettings).budgets
    return control / 60.0 * BACKGROUND_POLL_SHARE
