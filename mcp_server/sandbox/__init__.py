"""The embedded sandbox: Starlette apps that imitate the Seamless.ai and AgentSEO APIs.

The public face of the package, for the server, the demo, the providers and the tests:

- `SandboxState` (virtual time, the seeded RNG, request counters) and its `Faults` knobs; the
  scenario keys (`KEY_INSUFFICIENT_CREDITS`, ... in `SCENARIO_KEYS`) that make the fakes answer
  with a documented error.
- `JobFile` and `sandbox_path`: the file beside the ledger where the embedded sandbox keeps its
  jobs, so a restarted server's sandbox still knows the jobs the ledger holds.
- `sample_research_records` and `sample_seo_results`: one generated record per research kind
  and one result per SEO workflow, in the shapes the APIs publish (the providers read their
  result field names from them).
- The apps themselves are `mcp_server.sandbox.app` (`create_sandbox_app`, the path prefixes,
  `serve_sandbox`), imported where they run.
"""

from __future__ import annotations

from mcp_server.sandbox._persist import JobFile, sandbox_path
from mcp_server.sandbox._state import (
    KEY_INSUFFICIENT_CREDITS,
    KEY_INSUFFICIENT_SCOPE,
    KEY_MISSING_LICENSE,
    KEY_REVOKED,
    SCENARIO_KEYS,
    Faults,
    SandboxState,
)

__all__ = [
    "KEY_INSUFFICIENT_CREDITS",
    "KEY_INSUFFICIENT_SCOPE",
    "KEY_MISSING_LICENSE",
    "KEY_REVOKED",
    "SCENARIO_KEYS",
    "Faults",
    "JobFile",
    "SandboxState",
    "sample_research_records",
    "sample_seo_results",
    "sandbox_path",
]

JsonObject = dict[str, object]


def sample_research_records() -> dict[str, JsonObject]:
    """One generated research record per kind (`contacts`, `companies`), as the API's."""
    from mcp_server.sandbox import _records as rec

    contact = rec.contact_record(
        rec.build_contact(0, rec.ContactSpec(key="x")), request_id="r", created_at=0.0
    )
    company = rec.company_record(
        rec.build_company(0, rec.CompanySpec(key="x")), request_id="r", created_at=0.0
    )
    return {"contacts": dict(contact), "companies": dict(company)}


def sample_seo_results() -> dict[str, JsonObject]:
    """One generated result per AgentSEO workflow, as the API's."""
    from mcp_server.sandbox import _seo_results as seo

    where = seo.Location(code=2840, name="United States")
    samples: dict[str, seo.WorkflowParams] = {
        "serp_analysis": seo.SerpParams(keyword="x", location=where),
        "keyword_metrics": seo.KeywordMetricsParams(keywords=("x",), location=where),
        "local_audit": seo.LocalAuditParams(domain="x.com", business_name="X", location=where),
    }
    return {
        name: dict(seo.generate_result(0, params, as_of=0.0)) for name, params in samples.items()
    }
