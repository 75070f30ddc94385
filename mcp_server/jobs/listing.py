"""`list_jobs`: the ledger's jobs of the caller, newest first, and the one to act on."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from mcp_server import _bounds as B
from mcp_server import render
from mcp_server.jobs.context import ServiceContext
from mcp_server.ledger import JobRecord
from mcp_server.models import JobState
from mcp_server.providers import Caller, Outcome
from mcp_server.schemas import JobSummary, ListOutput

RESULT_READ = "result_read"
"""Snapshot key set once the agent was shown a finished job's results (wait or result)."""


async def list_jobs(
    ctx: ServiceContext,
    caller: Caller,
    *,
    provider: str | None,
    state: JobState | None,
    since_hours: float | None,
    limit: int,
) -> Outcome:
    rows: list[JobRecord] = []
    names = [provider] if provider else ctx.providers.names()
    for p in names:
        rows.extend(
            r
            for r in await ctx.ledger.list(
                tenant=caller.tenant(p),
                provider=p,
                state=state,
                since_hours=since_hours,
                limit=limit,
            )
        )
    # A second contact-research POST merged into its job is that job, not another one.
    rows = [r for r in rows if not (r.params.get("part_of") and r.state.terminal)]
    rows.sort(key=lambda r: r.created_at, reverse=True)
    rows = rows[:limit]
    summaries = [
        JobSummary(
            job_id=r.job_id,
            provider=r.provider,
            operation=r.operation,
            state=r.state,
            raw_status=r.raw_status,
            targets=len(r.upstream_ids) or r.credits_requested,
            created_at=r.created_at,
            result_read=was_read(r) if r.state.terminal else None,
            advice=list_advice(r),
        )
        for r in rows
    ]
    paid = frozenset(p.name for p in ctx.providers if p.paid_per_target)
    out = ListOutput(jobs=summaries, sandbox=any(caller.sandbox.values()))
    return Outcome(out, list_text(rows, now=ctx.utcnow(), paid_names=paid))


def list_advice(rec: JobRecord) -> str | None:
    if rec.state is JobState.UNKNOWN:
        return (
            "Outcome unknown: the request may have been accepted. Check with "
            f'get_job_status(job_ids=["{rec.job_id}"]) before resubmitting.'
            if rec.upstream_ids
            else "Outcome unknown: the submit may or may not have reached the API. "
            "Do not resubmit blindly; compare with the provider's dashboard or results."
        )
    if not rec.state.terminal:
        return f'Still running: wait_for_job(job_id="{rec.job_id}").'
    return None


def was_read(rec: JobRecord) -> bool:
    return bool((rec.snapshot or {}).get(RESULT_READ))


def _list_priority(rec: JobRecord, paid_names: frozenset[str]) -> int:
    """Which job the agent most likely needs: lower first. Paid research before SEO; within
    each, unfinished before unread results; outcome-unknown submits before SEO work."""
    paid = rec.provider in paid_names
    unread = rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not was_read(rec)
    running = not rec.state.terminal and rec.state is not JobState.UNKNOWN
    if running and paid:
        return 0
    if unread and paid:
        return 1
    if rec.state is JobState.UNKNOWN:
        return 2
    if running:
        return 3
    if unread:
        return 4
    return 9


def _list_line(rec: JobRecord, now: datetime, paid_names: frozenset[str]) -> str:
    parts = [rec.job_id, rec.operation.replace("seo:", "seo "), rec.state.value]
    if rec.provider in paid_names:
        parts.append(f"{len(rec.upstream_ids) or rec.credits_requested} target(s)")
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE):
        parts.append("results read" if was_read(rec) else "results NOT read yet")
    parts.append(render.ago((now - rec.created_at).total_seconds()))
    return " | ".join(parts)


def list_text(rows: Sequence[JobRecord], *, now: datetime, paid_names: frozenset[str]) -> str:
    if not rows:
        return (
            "No jobs in the ledger match. "
            "Next: start the job you need (start_research, start_seo_job)."
        )
    lines, _ = render.numbered(
        [{"r": i} for i in range(len(rows))],
        lambda d: _list_line(rows[int(d["r"])], now, paid_names),
        budget_tokens=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
    )
    body = [f"{len(rows)} job(s), newest first:", *lines]
    if len(lines) < len(rows):
        body.append(f"({len(rows) - len(lines)} more in structuredContent.jobs)")
    best = min(
        rows, key=lambda r: _list_priority(r, paid_names)
    )  # min keeps the newest among equals
    rank = _list_priority(best, paid_names)
    jid = best.job_id
    if rank in (0, 3):
        nxt = f'wait_for_job(job_id="{jid}") (still {best.state.value}).'
    elif rank in (1, 4):
        nxt = f'get_job_result(job_id="{jid}") (finished, results not read yet).'
    elif rank == 2:
        nxt = (
            f'get_job_status(job_ids=["{jid}"]) (submit outcome unknown) before resubmitting '
            "anything."
        )
    else:
        finished = [r for r in rows if r.state in (JobState.SUCCEEDED, JobState.DUPLICATE)]
        paid = [r for r in finished if r.provider in paid_names]
        if paid or finished:
            again = (paid or finished)[0]
            nxt = f'get_job_result(job_id="{again.job_id}") to read its results again.'
        else:
            nxt = f'get_job_status(job_ids=["{rows[0].job_id}"]) for its advice.'
    body.append(f"Next: {nxt}")
    return "\n".join(body)
