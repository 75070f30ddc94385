"""The advice catalogue: what jobrelay tells an agent about every failure and job outcome.

An error is a message to the model (STYLE.md principle 3): what happened, whether retrying
helps, when (computed from the response's own headers), the one next call, and what not to do.
The mapping is data: `CATALOGUE` holds one `CatalogueRow` per documented situation (UPSTREAMS.md
error tables and statuses, RETRY_POLICY.md section C.6), each with templates. A provider
contributes its rows, routes, vote clues and body readers as one `ProviderAdvice` table
(`register_provider_advice`); each provider's table is registered with the provider
(`JobProvider.advice`, by `providers.registry`), so nothing here names a provider.

Modules, one concept each: `table` (the typed shapes), `catalogue` (the generic rows),
`registry` (registration and the lookups), `clean` (untrusted text made safe), `facts`
(exceptions read into facts), `parse` (pasted input, the provider vote), `compose`
(templating), `explain` (the use cases), `present` (tool text, catalogue markdown,
`jobrelay explain`).
"""

from __future__ import annotations

from mcp_server.advice.clean import shown_status
from mcp_server.advice.explain import advise_error, advise_http, advise_job
from mcp_server.advice.present import (
    catalogue_markdown,
    explain_cli,
    one_of,
    render_text,
    wait_phrase,
)
from mcp_server.advice.registry import (
    CATALOGUE,
    provider_advice,
    register_provider_advice,
    unregister_provider_advice,
)
from mcp_server.advice.table import BodyReading, CatalogueRow, ProviderAdvice, Route, VoteClues

__all__ = [
    "CATALOGUE",
    "BodyReading",
    "CatalogueRow",
    "ProviderAdvice",
    "Route",
    "VoteClues",
    "advise_error",
    "advise_http",
    "advise_job",
    "catalogue_markdown",
    "explain_cli",
    "one_of",
    "provider_advice",
    "register_provider_advice",
    "render_text",
    "shown_status",
    "unregister_provider_advice",
    "wait_phrase",
]
