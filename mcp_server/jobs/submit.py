"""Starting jobs: `start_seo_job` routed by workflow to the provider that serves it, and
`start_research` handed to the research provider. Money and durability rules:

- a credit-spending POST is preceded by a ledger row (intent) and followed by its completion;
  an ambiguous failure leaves the row `unknown` and the agent is told not to resubmit;
- the intent row, POST and completion run shielded from the tool call's cancellation
  (bounded by the call deadline): a client giving up mid-submit must not lose a paid job.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio

from mcp_server import _bounds as B
from mcp_server.errors import InputProblem, JobRelayError
from mcp_server.jobs.context import ServiceContext
from mcp_server.ledger import JobRecord, new_job_id
from mcp_server.models import JobState
from mcp_server.providers import (
    Caller,
    JobProvider,
    Outcome,
    ProgressFn,
    ResearchConnection,
    ResearchRequest,
    SeoConnection,
)


def seo_provider(ctx: ServiceContext, workflow: str) -> JobProvider:
    """The provider serving `workflow`, or the error naming the workflows there are."""
    provider = ctx.providers.for_workflow(workflow)
    if provider is None:
        allowed = ", ".join(ctx.providers.workflows())
        raise InputProblem(
            f"Unknown workflow {B.echo(workflow)}; allowed: {allowed}.", field="workflow"
        )
    return provider


async def start_seo(
    ctx: ServiceContext,
    caller: Caller,
    *,
    workflow: str,
    params: Mapping[str, Any],
    wait_seconds: float,
    progress: ProgressFn | None,
) -> Outcome:
    deadline = ctx.deadline(wait_seconds)  # the whole call, submit included
    provider = seo_provider(ctx, workflow)
    clean = provider.validate(workflow, params)
    # Shielded like research: a cancelled call still records the job it paid for.
    with anyio.CancelScope(shield=True):
        submitted = await _submit(ctx, caller, provider, workflow, clean)
    if isinstance(submitted, Outcome):
        return submitted
    record, state = submitted
    return await ctx.after_submit(
        caller,
        record.job_id,
        wait_seconds=0 if state.terminal else wait_seconds,
        deadline=deadline,
        progress=progress,
    )


async def _submit(
    ctx: ServiceContext,
    caller: Caller,
    provider: JobProvider,
    workflow: str,
    clean: dict[str, Any],
) -> Outcome | tuple[JobRecord, JobState]:
    tool = "start_seo_job"
    name = provider.name
    connection = ctx.connection(name)
    if not isinstance(connection, SeoConnection):  # pragma: no cover - a provider's bug
        raise TypeError(f"{name} serves workflows but its connection has no start()")
    record = await ctx.ledger.record_intent(
        JobRecord.new(
            job_id=new_job_id(name),
            provider=name,
            operation=f"seo:{workflow}",
            tenant=caller.tenant(name),
            sandbox=caller.sandbox.get(name, False),
            params={"workflow": workflow, "params": clean},
            targets=[],
            credits_requested=0,
        )
    )
    try:
        started = await connection.start(ctx, caller, workflow, clean)
    except JobRelayError as exc:
        return await ctx.submit_failed(record.job_id, exc, tool=tool)
    await ctx.ledger.complete_submit(
        record.job_id,
        upstream_ids=started.upstream_ids,
        state=started.state,
        raw_status=started.raw_status,
        snapshot=started.snapshot,
    )
    if started.final is not None:
        await ctx.ledger.update(record.job_id, **started.final)
    return record, started.state


def research_connection(ctx: ServiceContext) -> ResearchConnection:
    name = ctx.providers.research().name
    connection = ctx.connection(name)
    if not isinstance(connection, ResearchConnection):  # pragma: no cover - a provider's bug
        raise TypeError(f"{name} serves research but its connection cannot search/research")
    return connection


async def start_research(
    ctx: ServiceContext,
    caller: Caller,
    request: ResearchRequest,
    *,
    wait_seconds: float,
    progress: ProgressFn | None,
) -> Outcome:
    return await research_connection(ctx).start_research(
        ctx, caller, request, wait_seconds=wait_seconds, progress=progress
    )
