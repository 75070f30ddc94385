"""MCP resources: a job by id, the advice catalogue per provider, and usage."""

from __future__ import annotations

import functools
import json
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from mcp_server import advice as advice_mod
from mcp_server.errors import InputProblem, UnknownJob
from mcp_server.jobs import Caller
from mcp_server.models import PROVIDERS
from mcp_server.tools import caller_for

#: The resources that exist whatever the ledger holds, listed by resources/list (the templates
#: alone leave it empty): (uri, name, title, description, MIME type). Each is read through its
#: template, so listing and reading cannot disagree.
CONCRETE_RESOURCES: tuple[tuple[str, str, str, str, str], ...] = (
    (
        "jobrelay://errors/seamless",
        "errors-seamless",
        "Seamless.ai error advice",
        "Every documented Seamless.ai status, error code and job status, with recovery advice.",
        "text/markdown",
    ),
    (
        "jobrelay://errors/agentseo",
        "errors-agentseo",
        "AgentSEO error advice",
        "Every documented AgentSEO status, error code and job status, with recovery advice.",
        "text/markdown",
    ),
    (
        "jobrelay://fields/seamless",
        "fields-seamless",
        "Seamless.ai result fields",
        "Field names get_job_result(fields=[...]) accepts for research contacts and companies.",
        "text/markdown",
    ),
    (
        "jobrelay://fields/agentseo",
        "fields-agentseo",
        "AgentSEO result fields",
        "Field names get_job_result(fields=[...]) accepts, per SEO workflow.",
        "text/markdown",
    ),
    (
        "jobrelay://usage",
        "usage",
        "Usage and rate limits",
        "Rate-limit buckets, credits last seen and the daily credit budget, both APIs.",
        "application/json",
    ),
)


def _caller(ctx: Context[Any, Any]) -> Caller:
    """The request's caller; a malformed key header is refused as the tools refuse it (the
    SDK would turn any other exception into an opaque internal error)."""
    try:
        return caller_for(ctx)
    except InputProblem as exc:
        raise ResourceError(exc.message) from None


def register_resources(server: MCPServer[Any]) -> None:
    @server.resource(
        "jobrelay://jobs/{job_id}",
        title="A job from the ledger",
        description="The job's state, progress and compact results, as get_job_status shows it.",
        mime_type="application/json",
    )
    async def job_resource(job_id: str, ctx: Context[Any, Any]) -> str:
        runtime = ctx.request_context.lifespan_context
        try:
            outcome = await runtime.service.describe(_caller(ctx), job_id)
        except UnknownJob as exc:
            raise ResourceError(f"No job {exc.job_id!r}; list_jobs shows the known ones.") from None
        text: str = outcome.output.model_dump_json(exclude_none=True)
        return text

    @server.resource(
        "jobrelay://errors/{provider}",
        title="Error advice catalogue",
        description="Every documented status/code of seamless or agentseo, with recovery advice.",
        mime_type="text/markdown",
    )
    async def errors_resource(provider: str) -> str:
        if provider == "seamless":
            return advice_mod.catalogue_markdown("seamless")
        if provider == "agentseo":
            return advice_mod.catalogue_markdown("agentseo")
        raise ResourceError("Unknown provider; use jobrelay://errors/seamless or .../agentseo.")

    @server.resource(
        "jobrelay://fields/{provider}",
        title="Result field names",
        description="Field names get_job_result(fields=[...]) accepts: seamless (contacts, "
        "companies) or agentseo (per workflow).",
        mime_type="text/markdown",
    )
    async def fields_resource(provider: str) -> str:
        if provider not in PROVIDERS:
            raise ResourceError("Unknown provider; use jobrelay://fields/seamless or .../agentseo.")
        return fields_markdown(provider)

    @server.resource(
        "jobrelay://schemas/{tool}",
        title="Output schema of a tool",
        description="The JSON schema of a tool's structuredContent (not repeated in tools/list).",
        mime_type="application/schema+json",
    )
    async def schema_resource(tool: str) -> str:
        from mcp_server.tools import OUTPUT_MODELS

        model = OUTPUT_MODELS.get(tool)
        if model is None:
            raise ResourceError("Unknown tool; use a name from tools/list.")
        return json.dumps(model.model_json_schema(), separators=(",", ":"))

    @server.resource(
        "jobrelay://usage{?provider}",
        title="Usage and rate limits",
        description="Rate-limit buckets, credits last seen and the daily credit budget; "
        "?provider=seamless or agentseo for one API.",
        mime_type="application/json",
    )
    async def usage_resource(ctx: Context[Any, Any], provider: str = "") -> str:
        # A template (with an optional filter) rather than a static resource: the SDK injects
        # Context only into templates, and usage is per caller (keys may come per request).
        from mcp_server.usage import usage_outcome

        runtime = ctx.request_context.lifespan_context
        if provider and provider not in runtime.providers.names():
            raise ResourceError("Unknown provider; use ?provider=seamless or agentseo.")
        only = [provider] if provider else None
        outcome = await usage_outcome(runtime, _caller(ctx), only=only)
        text: str = outcome.output.model_dump_json(exclude_none=True)
        return text


def _paths(record: Any, prefix: str = "", depth: int = 2) -> list[str]:
    """`name` and, one level down, `name.child` paths of a sample record."""
    out: list[str] = []
    if not isinstance(record, dict):
        return out
    for key, value in record.items():
        path = f"{prefix}{key}"
        out.append(path)
        if depth > 1 and isinstance(value, dict):
            out += _paths(value, path + ".", depth - 1)
    return out


@functools.cache
def fields_markdown(provider: str) -> str:
    """Field names `get_job_result(fields=[...])` accepts, from sample records of the
    embedded sandbox (same shapes as the APIs' records)."""
    from mcp_server.sandbox import _records as rec
    from mcp_server.sandbox import _seo_results as seo

    if provider == "seamless":
        contact = rec.contact_record(
            rec.build_contact(0, rec.ContactSpec(key="x")), request_id="r", created_at=0.0
        )
        company = rec.company_record(
            rec.build_company(0, rec.CompanySpec(key="x")), request_id="r", created_at=0.0
        )
        groups = {"contacts": _paths(contact), "companies": _paths(company)}
    else:
        where = seo.Location(code=2840, name="United States")
        samples: dict[str, Any] = {
            "serp_analysis": seo.SerpParams(keyword="x", location=where),
            "keyword_metrics": seo.KeywordMetricsParams(keywords=("x",), location=where),
            "local_audit": seo.LocalAuditParams(domain="x.com", business_name="X", location=where),
        }
        groups = {
            name: _paths(dict(seo.generate_result(0, params, as_of=0.0)))
            for name, params in samples.items()
        }
    lines = [
        f"# get_job_result fields ({provider})",
        "",
        "Pass top-level names or dotted paths (`a.b`, `list.0`) as `fields`; the compact view "
        "is what you get without `fields`.",
    ]
    for name, paths in groups.items():
        lines += ["", f"## {name}", "", ", ".join(f"`{p}`" for p in paths)]
    return "\n".join(lines) + "\n"
