"""The nine MCP tools (DESIGN.md section 1). Thin: parse, call `JobService`, render.

Docstrings here are read by the model on every `tools/list`: when to use the tool, what it
returns, what to call next, in a few sentences. Keep them short (the whole list is measured).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Annotated, Any, Literal

from mcp.server.mcpserver import Context, MCPServer
from mcp.types import CallToolResult, TextContent, ToolAnnotations
from pydantic import BaseModel, Field, SecretStr

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server import render
from mcp_server.errors import InputProblem, JobRelayError
from mcp_server.jobs import Caller, JobService, Outcome, ProgressFn
from mcp_server.models import Advice, ErrorCode, ErrorInfo, JobState
from mcp_server.projection import project_search_item
from mcp_server.providers import JobProvider
from mcp_server.providers.registry import default_registry
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

if TYPE_CHECKING:
    from mcp_server.server import Runtime

log = logging.getLogger(__name__)

_MAX_KEY_CHARS = 512

_Id = Annotated[str, Field(max_length=B.MAX_ID_CHARS)]
_JobId = Annotated[_Id, Field(description="Handle or upstream id")]
_Field = Annotated[str, Field(max_length=B.MAX_FIELD_CHARS)]
_HeaderName = Annotated[str, Field(max_length=B.MAX_CODE_CHARS)]
_HeaderValue = Annotated[str, Field(max_length=B.MAX_HEADER_CHARS)]

StateName = Literal["queued", "running", "succeeded", "failed", "not_found", "duplicate", "unknown"]

# Only hints that differ from the MCP defaults (readOnly false, destructive true, idempotent
# false, openWorld true) are sent: the tool list is measured. idempotentHint is meaningful only
# for tools that are not read-only, so reads leave it out.
READ = ToolAnnotations(read_only_hint=True)
"""Reads that reach an upstream API."""
LOCAL = ToolAnnotations(read_only_hint=True, open_world_hint=False)
"""Reads of jobrelay's own state (ledger, limiter, catalogue): no upstream call."""
SPEND = ToolAnnotations(destructive_hint=False)
"""Spends credits upstream; deletes nothing; not idempotent (a repeat pays again)."""


def _runtime(ctx: Context[Any, Any]) -> Runtime:
    runtime: Runtime = ctx.request_context.lifespan_context
    return runtime


def caller_for(ctx: Context[Any, Any]) -> Caller:
    """The caller's keys: per-request headers over HTTP when sent, else the server's.

    Over HTTP (both protocol eras) the SDK hands the Starlette request to the tool as
    `ctx.request_context.request`; over stdio and in-process there is none. A header key is
    used for this call only: kept as a SecretStr, never stored, logged or echoed.
    """
    return caller_from_request(_runtime(ctx), getattr(ctx.request_context, "request", None))


def caller_from_request(runtime: Runtime, request: object) -> Caller:
    """`caller_for` for any request (a tool's, or a `tasks/*` request's): the HTTP request's
    key headers if any, else the server's keys. Raises `InputProblem` for an unusable header."""
    overrides: dict[str, SecretStr] = {}
    headers = getattr(request, "headers", None)
    if headers is not None:
        # Each provider names the request header that carries a tenant's own key
        # (`JobProvider.key_header`; never stored or echoed).
        for provider, name in key_headers(runtime.providers).items():
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
    caller: Caller = runtime.caller(overrides)
    return caller


def key_headers(providers: Iterable[JobProvider]) -> dict[str, str]:
    """Provider name -> the request header that carries a caller's own key for it."""
    return {p.name: p.key_header for p in providers}


def to_result(outcome: Outcome) -> CallToolResult:
    """Nulls are left out to save tokens, except inside `error`, whose shape is contract
    (DESIGN.md section 1: every key present, null when unknown)."""
    structured = outcome.dumped
    if structured is None:
        structured = outcome.output.model_dump(mode="json", exclude_none=True)
        error = getattr(outcome.output, "error", None)
        if isinstance(error, ErrorInfo):
            structured["error"] = error.model_dump(mode="json")
        outcome.dumped = structured
    return CallToolResult(
        content=[TextContent(type="text", text=outcome.text)],
        structured_content=structured,
        is_error=outcome.failed,
    )


def _input_problem(exc: InputProblem, tool: str) -> Outcome:
    next_step = exc.next_step or f"Call {tool} again with {exc.field} fixed."
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, retryable=False, next_step=next_step)
    text = (
        f"{exc.message} Next: {next_step} "
        "Do not retry unchanged: it is refused the same way, and nothing was sent."
    )
    return Outcome(JobOutput(error=error), text, failed=True)


def _guard(
    ctx: Context[Any, Any], tool: str, run: Callable[[], Awaitable[Outcome]]
) -> Awaitable[CallToolResult]:
    """Every expected failure becomes an isError result with advice; never a traceback.
    (`outcome_result`'s coroutine itself, not one around it: a wait holds every frame.)"""
    return outcome_result(_runtime(ctx).service, tool, run)


async def outcome_result(
    service: JobService, tool: str, run: Callable[[], Awaitable[Outcome]]
) -> CallToolResult:
    """`run`'s outcome as the tool's result, expected failures as isError advice (also what a
    task started in the background ends with, `mcp_server.tasks`)."""
    try:
        return to_result(await run())
    except InputProblem as exc:
        return to_result(_input_problem(exc, tool))
    except JobRelayError as exc:
        return to_result(service.failure(exc, tool=tool))


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
    @server.tool(annotations=READ)
    async def search_prospects(
        kind: Annotated[Kind, Field(description="What to find")],
        ctx: Context[Any, Any],
        query: Annotated[
            str | None,
            Field(max_length=B.MAX_QUERY_CHARS, description="Free text"),
        ] = None,
        filters: Annotated[SearchFilters | None, Field(description="All optional, ANDed")] = None,
        limit: Annotated[int, Field(ge=1, le=B.MAX_LIMIT_SEARCH, description="Hits per page")] = 10,
        next_token: Annotated[
            str | None, Field(max_length=B.MAX_TOKEN_CHARS, description="From the last page")
        ] = None,
    ) -> Annotated[CallToolResult, SearchOutput]:
        """Find Seamless contacts or companies; free, no emails or phones. Research hits
        with start_research. Example: search_prospects(kind='contacts', query='CTO')."""

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
                sandbox=caller.sandbox[rt.providers.research().name],
            )
            wait = min(B.MAX_WAIT_SECONDS, rt.settings.max_wait_seconds)  # within the schema
            text = _search_text(kind, items, page.total, page.next_token, wait=wait)
            return Outcome(out, text)

        return await _guard(ctx, "search_prospects", run)

    @server.tool(annotations=SPEND)
    async def start_research(
        kind: Annotated[Kind, Field(description="What to research")],
        ctx: Context[Any, Any],
        search_result_ids: Annotated[
            list[_Id], Field(max_length=B.MAX_TARGETS, description="From search_prospects")
        ] = [],  # noqa: B006  # pydantic copies defaults; this is the schema's default
        contacts: Annotated[
            list[ContactTarget],
            Field(
                max_length=B.MAX_TARGETS,
                description="Each: a profile URL, email, or name + company/domain",
            ),
        ] = [],  # noqa: B006
        companies: Annotated[
            list[CompanyTarget],
            Field(max_length=B.MAX_TARGETS, description="Each: domain (best) or name"),
        ] = [],  # noqa: B006
        allow_rerun: Annotated[bool, Field(description="Pay again for recent targets")] = False,
        wait_seconds: Annotated[float, Field(ge=0, le=B.MAX_WAIT_CAP, description=_WAIT_HERE)] = 0,
        job_change: Annotated[bool, Field(description="contacts: isJobChange")] = False,
        skip_dedup_check: Annotated[
            bool, Field(description="Redo recent Seamless research (paid)")
        ] = False,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Buy emails and phones: 1 credit per target, up to 100. Never call again to
        retry or check (pays twice); use wait_for_job. Example:
        start_research(kind='contacts', search_result_ids=['<id>'])."""
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

    async def start_seo_job(
        workflow: Annotated[Workflow, Field(description="Sets the params")],
        params: Annotated[
            dict[str, Any],
            Field(
                description="serp_analysis {keyword, location?}; keyword_metrics {keywords: "
                "[...], location?}; local_audit {domain or business_name, location, "
                "language?}; local_audit_batch {targets: [1-50 of those]}"
            ),
        ],
        ctx: Context[Any, Any],
        wait_seconds: Annotated[float, Field(ge=0, le=B.MAX_WAIT_CAP, description=_WAIT_HERE)] = 0,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Start an AgentSEO job (spends credits). Never resubmit to retry; use
        wait_for_job. Example:
        start_seo_job(workflow='serp_analysis', params={'keyword': 'crm'})."""
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

    # The workflow names come from the registered providers (the two built-in ones publish
    # exactly `schemas.Workflow`); the annotation is set before the SDK reads the signature.
    names = tuple(default_registry().names())
    start_seo_job.__annotations__["workflow"] = Annotated[
        Literal[default_registry().workflows()], Field(description="Sets the params")
    ]
    server.tool(annotations=SPEND)(start_seo_job)

    @server.tool(annotations=READ)
    async def get_job_status(
        job_ids: Annotated[
            list[_Id],
            Field(min_length=1, max_length=B.MAX_TARGETS, description="Handles or upstream ids"),
        ],
        ctx: Context[Any, Any],
    ) -> Annotated[CallToolResult, StatusOutput]:
        """State and counts of up to 100 jobs, never results. Follow one with
        wait_for_job; read with get_job_result. Example: get_job_status(job_ids=['<id>'])."""
        return await _guard(
            ctx,
            "get_job_status",
            lambda: _runtime(ctx).service.status(caller_for(ctx), job_ids),
        )

    @server.tool(annotations=READ)
    async def wait_for_job(
        job_id: _JobId,
        ctx: Context[Any, Any],
        wait_seconds: Annotated[
            float, Field(ge=0, le=B.MAX_WAIT_CAP, description="Longest wait here")
        ] = 30,
    ) -> Annotated[CallToolResult, JobOutput]:
        """Follow one job until it ends or wait_seconds pass: first results, or when to
        call again. Safe to repeat; never pays. Example: wait_for_job(job_id='<id>')."""
        return await _guard(
            ctx,
            "wait_for_job",
            lambda: _runtime(ctx).service.wait(
                caller_for(ctx), job_id, wait_seconds=wait_seconds, progress=_progress(ctx)
            ),
        )

    @server.tool(annotations=LOCAL)
    async def get_job_result(
        job_id: _JobId,
        ctx: Context[Any, Any],
        fields: Annotated[
            list[_Field] | None,
            Field(max_length=B.MAX_FIELDS, description="Names or dotted paths"),
        ] = None,
        offset: Annotated[int, Field(ge=0, le=B.MAX_OFFSET, description="From next_offset")] = 0,
        limit: Annotated[
            int, Field(ge=1, le=B.MAX_LIMIT_RESULT, description="Records per page")
        ] = B.DEFAULT_LIMIT_RESULT,
    ) -> Annotated[CallToolResult, ResultPage]:
        """Page a finished job's results, free. Named fields (jobrelay://fields/seamless,
        /agentseo) show '<N more>' entries whole.
        Example: get_job_result(job_id='<id>', fields=['email2'])."""
        return await _guard(
            ctx,
            "get_job_result",
            lambda: _runtime(ctx).service.result(
                caller_for(ctx), job_id, fields=fields, offset=offset, limit=limit
            ),
        )

    async def list_jobs(
        ctx: Context[Any, Any],
        provider: Annotated[str | None, Field(description="Only this API")] = None,
        state: Annotated[StateName | None, Field(description="Only this state")] = None,
        since_hours: Annotated[
            float | None,
            Field(gt=0, le=B.MAX_SINCE_HOURS, description="Started within N hours"),
        ] = None,
        limit: Annotated[int, Field(ge=1, le=B.MAX_LIMIT_LIST, description="Jobs to list")] = 20,
    ) -> Annotated[CallToolResult, ListOutput]:
        """Jobs started here, newest first, kept across restarts. Use it to find a lost
        job_id. Example: list_jobs()."""
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

    # The provider names come from the registry (the built-in two publish exactly
    # `models.Provider`), as start_seo_job's workflows do.
    list_jobs.__annotations__["provider"] = Annotated[
        Literal[names] | None, Field(description="Only this API")
    ]
    server.tool(annotations=LOCAL)(list_jobs)

    async def explain_error(
        ctx: Context[Any, Any],
        provider: Annotated[str, Field(description="auto: guessed")] = "auto",
        http_status: Annotated[
            int | None,
            Field(ge=B.MIN_HTTP_STATUS, le=B.MAX_HTTP_STATUS, description="HTTP status seen"),
        ] = None,
        code: Annotated[
            str | None, Field(max_length=B.MAX_CODE_CHARS, description="API error code")
        ] = None,
        headers: Annotated[
            dict[_HeaderName, _HeaderValue] | None,
            Field(max_length=B.MAX_HEADERS, description="Response headers"),
        ] = None,
        body: Annotated[
            Annotated[str, Field(max_length=B.MAX_BODY_CHARS)] | dict[str, Any] | None,
            Field(description="Response body"),
        ] = None,
        job_status: Annotated[
            str | None, Field(max_length=B.MAX_CODE_CHARS, description="e.g. failed")
        ] = None,
    ) -> Annotated[CallToolResult, ExplainOutput]:
        """Advice on a Seamless or AgentSEO error or job status met outside jobrelay.
        Says the cause, when to retry, the next step. Example:
        explain_error(http_status=429, headers={'Retry-After': '30'})."""

        async def run() -> Outcome:
            rt = _runtime(ctx)
            if all(v is None for v in (http_status, code, headers, body, job_status)):
                raise InputProblem(
                    "Pass at least one of http_status, code, headers, body or job_status.",
                    field="http_status",
                    next_step=(
                        "Call explain_error again with what you saw: its status, code and body."
                    ),
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

    explain_error.__annotations__["provider"] = Annotated[
        Literal[(*names, "auto")], Field(description="auto: guessed")
    ]
    server.tool(annotations=LOCAL)(explain_error)

    @server.tool(annotations=LOCAL)
    async def get_usage(ctx: Context[Any, Any]) -> Annotated[CallToolResult, UsageOutput]:
        """Rate limits, reset times, credits last seen, today's credit budget. Free;
        check before big research jobs. Example: get_usage()."""

        async def run() -> Outcome:
            from mcp_server.usage import usage_outcome

            return await usage_outcome(_runtime(ctx), caller_for(ctx))

        return await _guard(ctx, "get_usage", run)


OUTPUT_MODELS: dict[str, type[BaseModel]] = {
    "search_prospects": SearchOutput,
    "start_research": JobOutput,
    "start_seo_job": JobOutput,
    "get_job_status": StatusOutput,
    "wait_for_job": JobOutput,
    "get_job_result": ResultPage,
    "list_jobs": ListOutput,
    "explain_error": ExplainOutput,
    "get_usage": UsageOutput,
}
"""Each tool's structuredContent model. Their JSON schemas are not in tools/list (they did not
fit its token budget, docs/answers.md); jobrelay://schemas/{tool} serves them, and the tests
validate every result against them."""

_WAIT_HERE = "0: return at once"


def _search_text(
    kind: Kind,
    items: list[dict[str, Any]],
    total: int | None,
    next_token: str | None,
    *,
    wait: float,
) -> str:
    """Each hit on one line (so a text-only host can act on it), then one `Next:` that
    researches exactly the hits listed."""
    if not items:
        return f"No {kind} match. Next: loosen the query or filters and search again."
    lines, shown = render.numbered(
        items,
        render.search_line,
        budget_tokens=B.item_budget(B.DEFAULT_ANSWER_TOKENS) // 2,
    )
    ids = [i["search_result_id"] for i in items[:shown] if "search_result_id" in i]
    counted = f"{len(items)} of {total}" if total and total > len(items) else f"{len(items)}"
    page = f' More: search again with next_token="{next_token}".' if next_token else ""
    head = f"{counted} {kind} found (search is free; research costs 1 credit per target):"
    more = [f"({len(items) - shown} more in structuredContent.items)"] if shown < len(items) else []
    listed = ", ".join(f'"{i}"' for i in ids)
    nxt = (
        f'Next: start_research(kind="{kind}", search_result_ids=[{listed}], wait_seconds={wait:g}) '
        f"for the emails and phones of these {len(ids)}.{page}"
    )
    return "\n".join([head, *lines, *more, nxt])


def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, BaseModel):
        return item.model_dump(mode="json", by_alias=True)
    return dict(item) if isinstance(item, dict) else {}
