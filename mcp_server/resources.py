"""MCP resources: a job by id, the advice catalogue per provider, and usage."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from mcp_server import advice as advice_mod
from mcp_server.advice import one_of
from mcp_server.errors import InputProblem, UnknownJob
from mcp_server.jobs import Caller
from mcp_server.providers import JobProvider, default_registry
from mcp_server.tools import caller_for


def concrete_resources(
    providers: Iterable[JobProvider] | None = None,
) -> list[tuple[str, str, str, str, str]]:
    """The resources that exist whatever the ledger holds, listed by resources/list (the
    templates alone leave it empty): (uri, name, title, description, MIME type), an errors and
    a fields resource per registered provider, then usage. Each is read through its template,
    so listing and reading cannot disagree."""
    found = list(default_registry() if providers is None else providers)
    errors = [
        (
            f"jobrelay://errors/{p.name}",
            f"errors-{p.name}",
            f"{p.service_name} error advice",
            f"Every documented {p.service_name} status, error code and job status, with "
            "recovery advice.",
            "text/markdown",
        )
        for p in found
    ]
    fields = [
        (
            f"jobrelay://fields/{p.name}",
            f"fields-{p.name}",
            f"{p.service_name} result fields",
            p.fields_description,
            "text/markdown",
        )
        for p in found
    ]
    usage = (
        "jobrelay://usage",
        "usage",
        "Usage and rate limits",
        "Rate-limit buckets, credits last seen and the daily credit budget, "
        + ("both APIs." if len(found) == 2 else "every API."),
        "application/json",
    )
    return [*errors, *fields, usage]


def _groups(provider: JobProvider) -> str:
    """`contacts, companies`; `per workflow` (a `start_seo_job` provider's groups)."""
    return "per workflow" if provider.kind == "seo" else ", ".join(provider.result_fields())


def _caller(ctx: Context[Any, Any]) -> Caller:
    """The request's caller; a malformed key header is refused as the tools refuse it (the
    SDK would turn any other exception into an opaque internal error)."""
    try:
        return caller_for(ctx)
    except InputProblem as exc:
        raise ResourceError(exc.message) from None


def register_resources(server: MCPServer[Any]) -> None:
    providers = default_registry()
    names = providers.names()
    errors_uris = " or ".join([f"jobrelay://errors/{names[0]}", *(f".../{n}" for n in names[1:])])
    fields_uris = " or ".join([f"jobrelay://fields/{names[0]}", *(f".../{n}" for n in names[1:])])

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
        description=f"Every documented status/code of {one_of(names)}, with recovery advice.",
        mime_type="text/markdown",
    )
    async def errors_resource(provider: str) -> str:
        if provider in names and advice_mod.provider_advice(provider) is not None:
            return advice_mod.catalogue_markdown(provider)
        raise ResourceError(f"Unknown provider; use {errors_uris}.")

    @server.resource(
        "jobrelay://fields/{provider}",
        title="Result field names",
        description="Field names get_job_result(fields=[...]) accepts: "
        + one_of([f"{p.name} ({_groups(p)})" for p in providers])
        + ".",
        mime_type="text/markdown",
    )
    async def fields_resource(provider: str) -> str:
        if provider not in names:
            raise ResourceError(f"Unknown provider; use {fields_uris}.")
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
        f"?provider={one_of(names)} for one API.",
        mime_type="application/json",
    )
    async def usage_resource(ctx: Context[Any, Any], provider: str = "") -> str:
        # A template (with an optional filter) rather than a static resource: the SDK injects
        # Context only into templates, and usage is per caller (keys may come per request).
        from mcp_server.usage import usage_outcome

        runtime = ctx.request_context.lifespan_context
        if provider and provider not in runtime.providers.names():
            raise ResourceError(f"Unknown provider; use ?provider={one_of(names)}.")
        only = [provider] if provider else None
        outcome = await usage_outcome(runtime, _caller(ctx), only=only)
        text: str = outcome.output.model_dump_json(exclude_none=True)
        return text


def fields_markdown(provider: str) -> str:
    """Field names `get_job_result(fields=[...])` accepts, as the provider lists them
    (`JobProvider.result_fields`)."""
    groups = default_registry().get(provider).result_fields()
    lines = [
        f"# get_job_result fields ({provider})",
        "",
        "Pass top-level names or dotted paths (`a.b`, `list.0`) as `fields`; the compact view "
        "is what you get without `fields`.",
    ]
    for name, paths in groups.items():
        lines += ["", f"## {name}", "", ", ".join(f"`{p}`" for p in paths)]
    return "\n".join(lines) + "\n"
