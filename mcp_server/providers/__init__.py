"""Job providers: the extension point (ARCHITECTURE.md, "Where to add a provider").

A provider implements `JobProvider` (static description and job semantics) and its
`connect` returns a `Connection` (wire clients, status, following; `SeoConnection` or
`ResearchConnection` for the start tool it serves). `register_provider` makes it available
to every server built afterwards.
"""

from mcp_server.providers.base import (
    ByNameSettings,
    Caller,
    Connection,
    JobContext,
    JobKind,
    JobProvider,
    JobReader,
    JobView,
    LineFn,
    Outcome,
    ProgressFn,
    ProviderEnv,
    PushConnection,
    PushOutcome,
    ResearchConnection,
    ResearchRequest,
    SeoConnection,
    SharedFold,
    Started,
    WebhookSpec,
    aggregate_state,
    webhook_of,
)
from mcp_server.providers.registry import (
    ProviderRegistry,
    default_registry,
    register_provider,
    registered,
    unregister_provider,
)

__all__ = [
    "ByNameSettings",
    "Caller",
    "Connection",
    "JobContext",
    "JobKind",
    "JobProvider",
    "JobReader",
    "JobView",
    "LineFn",
    "Outcome",
    "ProgressFn",
    "ProviderEnv",
    "ProviderRegistry",
    "PushConnection",
    "PushOutcome",
    "ResearchConnection",
    "ResearchRequest",
    "SeoConnection",
    "SharedFold",
    "Started",
    "WebhookSpec",
    "aggregate_state",
    "default_registry",
    "register_provider",
    "registered",
    "unregister_provider",
    "webhook_of",
]
