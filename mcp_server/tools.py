"""The nine MCP tools (DESIGN.md section 1). Thin: parse, call `JobService`, render.

Docstrings here are read by the model on every `tools/list`: when to use the tool, what it
returns, what to call next, in a few sentences. Keep them short (the whole list is measured).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, SecretStr

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server.errors import JobRelayError
from mcp_server.jobs import Caller, InputProblem, Outcome, ProgressFn
from mcp_server.models import Advice, ErrorCode, ErrorInfo, JobState, Provider
from mcp_server.projection import project_search_item
from mcp_server.schemas import (
    CompanyTarget,
    ContactTarget,
    ExplainOutput,
    JobOutput,
    Kind,
    ListOutput,
    ResultPage,
    SearchFilters,
    SearchOutput,
    StatusOutput,
    UsageOutput,
    Workflow,
)

log = logging.getLogger(__name__)

#: Request headers that carry a tenant's own upstream keys over HTTP (never stored or echoed).
KEY_HEADERS: dict[Provider, str] = {
    "seamless": "X-Seamless-Api-Key",
    "agentseo": "X-AgentSEO-Api-Key",
}

_MAX_KEY_CHARS = 512

_Id = Annotated[str, Field(min_length=1, max_length=B.MAX_ID_CHARS)]
_Field = Annotated[str, Field(min_length=1, max_length=B.MAX_FIELD_CHARS)]
_HeaderName = Annotated[str, Field(max_length=B.MAX_CODE_CHARS)]
_HeaderValue = Annotated[str, Field(max_length=B.MAX_HEADER_CHARS)]

StateName = Literal["queued", "running", "succeeded", "failed", "not_found", "duplicate", "unknown"]

READ = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=True)
"""Reads that reach an upstream API."""
LOCAL = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
"""Reads of jobrelay's own state (ledger, limiter, catalogue): no upstream call."""
SPEND = ToolAnnotations(
    read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
)


def _runtime(ctx: Context[Any, Any]) -> Any:
    return ctx.request_context.lifespan_context


def caller_for(ctx: Context[Any, Any]) -> Caller:
    """The caller's keys: per-request headers over HTTP when sent, else the server's.

    Over HTTP (both protocol eras) the SDK hands the Starlette request to the tool as
    `ctx.request_context.request`; over stdio and in-process there is none. A header key is
    used for this call only: kept as a SecretStr, never stored, logged or echoed.
    """
    overrides: dict[Provider, SecretStr] = {}
    request = getattr(ctx.request_context, "request", None)
    headers = getattr(request, "headers", None)
    if headers is not None:
        for provider, name in KEY_HEADERS.items():
            value = headers.get(name)
            if not isinstance(value, str) or not value.strip():
                continue
            value = value.strip()
            if len(value) > _MAX_KEY_CHARS or not value.isprintable() or " " in value:
                raise InputProblem(
                    f"The {name} header does not hold a usable API key (printable "
                    f"characters without spaces, at most {_MAX_KEY_CHARS}).",
                    field=f"the {name} header",
                    provider=provider,
                )
            overrides[provider] = SecretStr(value)
    runtime = _runtime(ctx)
    caller: Caller = runtime.caller(overrides)
    return caller


def to_result(outcome: Outcome) -> CallToolResult:
    """Nulls are left out to save tokens, except inside `error`, whose shape is contract
    (DESIGN.md section 1: every key present, null when unknown)."""
    structured = outcome.output.model_dump(mode="json", exclude_none=True)
    error = getattr(outcome.output, "error", None)
    if isinstance(error, ErrorInfo):
        structured["error"] = error.model_dump(mode="json")
    return CallToolResult(
        content=[TextContent(type="text", text=outcome.text)],
        structured_content=structured,
        is_error=outcome.failed,
    )


def _input_problem(exc: InputProblem, tool: str) -> Outcome:
    next_step = exc.next_step or f"Call {tool} again with {exc.field} fixed."
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, retryable=False, next_step=next_step)
    return Outcome(JobOutput(error=error), f"{exc.message} Next: {next_step}", failed=True)


async def _guard(
    ctx: Context[Any, Any], tool: str, run: Callable[[], Awaitable[Outcome]]
) -> CallToolResult:
    """Every expected failure becomes an isError result with advice; never a traceback."""
    try:
        return to_result(await run())
    except InputProblem as exc:
        return to_result(_input_problem(exc, tool))
    except JobRelayError as exc:
        return to_result(_runtime(ctx).service.failure(exc, tool=tool))


def _progress(ctx: Context[Any, Any]) -> ProgressFn:
    """MCP progress as percent of 100: sent only when the percent rises, because the
    protocol requires every notification's progress to increase (a no-op if not requested)."""
    last = [-1.0]

    async def report(percent: float, message: str | None) -> None:
        percent = round(min(100.0, max(0.0, percent)), 1)
        if percent <= last[0]:
            return
        last[0] = percent
        await ctx.report_progress(percent, 100, message)

    return report


def register_tools(server: MCPServer[Any]) -> None:
    @server.tool(title="Search prospects", annotations=READ)
    async def search_prospects(
        kind: Kind,
        ctx: Context[Any, Any],
        query: Annotated[
            str | None,
            Field(max_length=B.MAX_QUERY_CHARS, description="Free text, e.g. 'CTO fintech'"),
        ] = None,
        filters: SearchFilters | None = None,
        limit: Annotated[int, Field(ge=1, le=B.MAX_LIMIT_SEARCH)] = 10,
        next_token: Annotated[
            str | None, Field(max_length=B.MAX_TOKEN_CHARS, description="From the previous page")
        ] = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Search Seamless.ai contacts or companies (free, no contact details). Pass the hits'
        search_result_id values to start_research to get emails and phones."""

        async def run() -> Outcome:
            rt = _runtime(ctx)
            caller = caller_for(ctx)
            page = await rt.service.search(
                caller,
                kind=kind,
                query=query,
                filters=(filters.model_dump(exclude_none=True) if filters else {}),
                limit=limit,
                next_token=next_token,
            )
            items = [project_search_item(kind, _as_dict(i)) for i in page.items]
            out = SearchOutput(
                kind=kind,
                items=items,
                total=page.total,
                next_token=page.next_token,
                sandbox=caller.sandbox["seamless"],
            )
            return Outcome(out, _search_text(kind, items, page.total, page.next_token))

        return await _guard(ctx, "search_prospects", run)

    @server.tool(title="Start research", annotations=SPEND)
    async def start_research(
        kind: Kind,
        ctx: Context[Any, Any],
        search_result_ids: Annotated[
            list[_Id], Field(max_length=B.MAX_TARGETS, description="From search_prospects")
        ] = [],  # noqa: B006  # pydantic copies defaults; this is the schema's default
        contacts: Annotated[list[ContactTarget], Field(max_length=B.MAX_TARGETS)] = [],  # noqa: B006
        companies: Annotated[list[CompanyTarget], Field(max_length=B.MAX_TARGETS)] = [],  # noqa: B006
        allow_rerun: Annotated[
            bool, Field(description="Pay again for targets researched in the last 30 days")
        ] = False,
        wait_seconds: Annotated[float, Field(ge=0, le=B.MAX_WAIT_CAP)] = 0,
        job_change: Annotated[bool, Field(description="contacts: Seamless isJobChange")] = False,
        skip_dedup_check: Annotated[
            bool, Field(description="Research again targets Seamless did recently (paid)")
        ] = False,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Research contacts or companies on Seamless.ai for emails and phones (1 credit per
        target). One job_id covers all targets; then wait_for_job. Refuses targets already
        researched unless allow_rerun. Never resubmit to retry."""
        return await _guard(
            ctx,
            "start_research",
            lambda: _runtime(ctx).service.start_research(
                caller_for(ctx),
                kind=kind,
                search_result_ids=search_result_ids,
                contacts=contacts,
                companies=companies,
                allow_rerun=allow_rerun,
                wait_seconds=wait_seconds,
                progress=_progress(ctx),
                job_change=job_change,
                skip_dedup_check=skip_dedup_check,
            ),
        )

    @server.tool(title="Start SEO job", annotations=SPEND)
    async def start_seo_job(
        workflow: Workflow,
        params: Annotated[
            dict[str, Any],
            Field(
                description="serp_analysis: {keyword, location?}; keyword_metrics: {keywords: "
                "[...], location?}; local_audit: {domain or business_name, location, "
                "language?}; local_audit_batch: {targets: [1-50 of those]}"
            ),
        ],
        ctx: Context[Any, Any],
        wait_seconds: Annotated[float, Field(ge=0, le=B.MAX_WAIT_CAP)] = 0,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Start an AgentSEO job (SERP analysis, keyword metrics, local audits). Returns a
        job_id; then wait_for_job. Each start spends AgentSEO credits: never resubmit to
        retry."""
        return await _guard(
            ctx,
            "start_seo_job",
            lambda: _runtime(ctx).service.start_seo(
                caller_for(ctx),
                workflow=workflow,
                params=params,
                wait_seconds=wait_seconds,
                progress=_progress(ctx),
            ),
        )

    @server.tool(title="Job status", annotations=READ)
    async def get_job_status(
        job_ids: Annotated[
            list[_Id],
            Field(min_length=1, max_length=B.MAX_TARGETS, description="Job ids or upstream ids"),
        ],
        ctx: Context[Any, Any],
    ) -> Annotated[CallToolResult, StatusOutput]:
        """Status of one or many jobs now, without waiting (one upstream call per batch):
        state, progress, next_check_after_seconds. To wait, use wait_for_job."""
        return await _guard(
            ctx,
            "get_job_status",
            lambda: _runtime(ctx).service.status(caller_for(ctx), job_ids),
        )

    @server.tool(title="Wait for job", annotations=READ)
    async def wait_for_job(
        job_id: _Id,
        ctx: Context[Any, Any],
        wait_seconds: Annotated[float, Field(ge=0, le=B.MAX_WAIT_CAP)] = 30,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Wait, bounded and with progress, until a job finishes; returns compact results, or
        the state and when to call again. Safe to repeat: never re-runs the job."""
        return await _guard(
            ctx,
            "wait_for_job",
            lambda: _runtime(ctx).service.wait(
                caller_for(ctx), job_id, wait_seconds=wait_seconds, progress=_progress(ctx)
            ),
        )

    @server.tool(title="Job results", annotations=LOCAL)
    async def get_job_result(
        job_id: _Id,
        ctx: Context[Any, Any],
        fields: Annotated[
            list[_Field] | None,
            Field(
                max_length=B.MAX_FIELDS,
                description="Full-record fields instead of the compact view, e.g. email2",
            ),
        ] = None,
        offset: Annotated[int, Field(ge=0, le=B.MAX_OFFSET)] = 0,
        limit: Annotated[int, Field(ge=1, le=B.MAX_LIMIT_RESULT)] = B.DEFAULT_LIMIT_RESULT,
    ) -> Annotated[CallToolResult, ResultPage]:
        """Results of a finished job, paged (offset, limit): compact records by default, or
        the named fields of the full records."""
        return await _guard(
            ctx,
            "get_job_result",
            lambda: _runtime(ctx).service.result(
                caller_for(ctx), job_id, fields=fields, offset=offset, limit=limit
            ),
        )

    @server.tool(title="List jobs", annotations=LOCAL)
    async def list_jobs(
        ctx: Context[Any, Any],
        provider: Provider | None = None,
        state: StateName | None = None,
        since_hours: Annotated[float | None, Field(gt=0, le=B.MAX_SINCE_HOURS)] = None,
        limit: Annotated[int, Field(ge=1, le=B.MAX_LIMIT_LIST)] = 20,
    ) -> Annotated[CallToolResult, ListOutput]:
        """Jobs started through jobrelay, newest first, kept across restarts: how to find paid
        work again after losing a job_id."""
        return await _guard(
            ctx,
            "list_jobs",
            lambda: _runtime(ctx).service.list_jobs(
                caller_for(ctx),
                provider=provider,
                state=JobState(state) if state else None,
                since_hours=since_hours,
                limit=limit,
            ),
        )

    @server.tool(title="Explain error", annotations=LOCAL)
    async def explain_error(
        ctx: Context[Any, Any],
        provider: Literal["seamless", "agentseo", "auto"] = "auto",
        http_status: Annotated[
            int | None, Field(ge=B.MIN_HTTP_STATUS, le=B.MAX_HTTP_STATUS)
        ] = None,
        code: Annotated[str | None, Field(max_length=B.MAX_CODE_CHARS)] = None,
        headers: Annotated[
            dict[_HeaderName, _HeaderValue] | None, Field(max_length=B.MAX_HEADERS)
        ] = None,
        body: Annotated[str, Field(max_length=B.MAX_BODY_CHARS)] | dict[str, Any] | None = None,
        job_status: Annotated[str | None, Field(max_length=B.MAX_CODE_CHARS)] = None,
    ) -> Annotated[CallToolResult, ExplainOutput]:
        """Advice for a Seamless or AgentSEO HTTP status, error code, headers, body or job
        status: what happened, whether and when to retry, the one next step."""

        async def run() -> Outcome:
            rt = _runtime(ctx)
            if all(v is None for v in (http_status, code, headers, body, job_status)):
                raise InputProblem(
                    "Pass at least one of http_status, code, headers, body or job_status.",
                    field="http_status",
                    next_step="Call explain_error again with the status, code or body you saw.",
                )
            if isinstance(body, dict) and len(B.compact_json(body)) > B.MAX_BODY_CHARS:
                raise InputProblem(
                    f"body is longer than {B.MAX_BODY_CHARS:,} characters as JSON.",
                    field="body",
                    next_step="Call explain_error again with only the error part of the body.",
                )
            adv: Advice = advice_mod.advise_http(
                provider, http_status, code, headers, body, job_status, now=rt.clock.time()
            )
            return Outcome(ExplainOutput(advice=adv), advice_mod.render_text(adv))

        return await _guard(ctx, "explain_error", run)

    @server.tool(title="Usage", annotations=LOCAL)
    async def get_usage(ctx: Context[Any, Any]) -> Annotated[CallToolResult, UsageOutput]:
        """Rate-limit budgets per provider and bucket with time to reset, research credits
        last seen, and the daily credit budget."""

        async def run() -> Outcome:
            from mcp_server.usage import usage_outcome

            return await usage_outcome(_runtime(ctx), caller_for(ctx))

        return await _guard(ctx, "get_usage", run)


_WAIT_HERE = "0: return at once; else wait here like wait_for_job"


def _search_text(
    kind: Kind, items: list[dict[str, Any]], total: int | None, next_token: str | None
) -> str:
    if not items:
        return f"No {kind} match. Next: loosen the query or filters and search again."
    ids = ", ".join(f'"{i["search_result_id"]}"' for i in items[:2] if "search_result_id" in i)
    more = ", ..." if len(items) > 2 else ""
    counted = f"{len(items)} of {total}" if total and total > len(items) else f"{len(items)}"
    page = f' (next page: next_token="{next_token}")' if next_token else ""
    return (
        f'{counted} {kind} found{page}. Next: start_research(kind="{kind}", '
        f"search_result_ids=[{ids}{more}]) for emails and phones (1 credit per target)."
    )


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", by_alias=True)
    return dict(item) if isinstance(item, dict) else {}
