"""HTTP clients for the two upstream APIs: Seamless.ai and AgentSEO.

Everything the rest of jobrelay needs is exported here; the `_modules` are plumbing.
Imports are lazy (PEP 562): importing one name loads only the module that defines it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp_server.upstream._backoff import (
        DEFAULT_POLICY,
        BackoffPolicy,
        RequestKind,
        RetryBudget,
        hint_jitter,
        poll_interval,
    )
    from mcp_server.upstream._bodies import ErrorFields, error_fields
    from mcp_server.upstream._client import same_origin
    from mcp_server.upstream._failures import DEADLINE_RETRY_AFTER, InvalidArguments
    from mcp_server.upstream._headers import RateLimitHints, format_clock, parse_hints, retry_at
    from mcp_server.upstream._models import (
        AGENTSEO_TERMINAL,
        SEAMLESS_TERMINAL,
        CompanyDescriptor,
        ContactDescriptor,
        JobEnvelope,
        JobError,
        JobProgress,
        JobUpstream,
        PollItem,
        RecordsPage,
        ResearchAccepted,
        SeamlessKind,
        SearchPage,
    )
    from mcp_server.upstream._oauth import TOKEN_PATH, BearerAuth, OAuthClient, RefreshingAuth
    from mcp_server.upstream.agentseo import WORKFLOW_ENDPOINTS, AgentSEOClient
    from mcp_server.upstream.seamless import MAX_POLL_IDS, SeamlessClient

__all__ = [
    "AGENTSEO_TERMINAL",
    "DEADLINE_RETRY_AFTER",
    "DEFAULT_POLICY",
    "MAX_POLL_IDS",
    "SEAMLESS_TERMINAL",
    "TOKEN_PATH",
    "WORKFLOW_ENDPOINTS",
    "AgentSEOClient",
    "BackoffPolicy",
    "BearerAuth",
    "CompanyDescriptor",
    "ContactDescriptor",
    "ErrorFields",
    "InvalidArguments",
    "JobEnvelope",
    "JobError",
    "JobProgress",
    "JobUpstream",
    "OAuthClient",
    "PollItem",
    "RateLimitHints",
    "RecordsPage",
    "RefreshingAuth",
    "RequestKind",
    "ResearchAccepted",
    "RetryBudget",
    "SeamlessClient",
    "SeamlessKind",
    "SearchPage",
    "error_fields",
    "format_clock",
    "hint_jitter",
    "parse_hints",
    "poll_interval",
    "retry_at",
    "same_origin",
]

_HOMES = {
    "ErrorFields": "_bodies",
    "error_fields": "_bodies",
    "DEFAULT_POLICY": "_backoff",
    "AGENTSEO_TERMINAL": "_models",
    "DEADLINE_RETRY_AFTER": "_failures",
    "MAX_POLL_IDS": "seamless",
    "SEAMLESS_TERMINAL": "_models",
    "WORKFLOW_ENDPOINTS": "agentseo",
    "AgentSEOClient": "agentseo",
    "BackoffPolicy": "_backoff",
    "CompanyDescriptor": "_models",
    "ContactDescriptor": "_models",
    "InvalidArguments": "_failures",
    "JobEnvelope": "_models",
    "JobError": "_models",
    "JobProgress": "_models",
    "JobUpstream": "_models",
    "PollItem": "_models",
    "RateLimitHints": "_headers",
    "RecordsPage": "_models",
    "RequestKind": "_backoff",
    "ResearchAccepted": "_models",
    "RetryBudget": "_backoff",
    "SeamlessClient": "seamless",
    "SeamlessKind": "_models",
    "SearchPage": "_models",
    "format_clock": "_headers",
    "hint_jitter": "_backoff",
    "parse_hints": "_headers",
    "retry_at": "_headers",
    "same_origin": "_client",
    "poll_interval": "_backoff",
    "TOKEN_PATH": "_oauth",
    "BearerAuth": "_oauth",
    "OAuthClient": "_oauth",
    "RefreshingAuth": "_oauth",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
