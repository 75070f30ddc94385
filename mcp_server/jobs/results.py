"""`get_job_result`: a finished job's records, paged and projected, bounded."""

from __future__ import annotations

from collections.abc import Sequence

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server.jobs.following import Follower
from mcp_server.jobs.render import ADVISED, Renderer, page_items, page_text, watched_odd
from mcp_server.models import JobState
from mcp_server.projection import available_fields, unknown_fields
from mcp_server.providers import Caller, Outcome
from mcp_server.schemas import ResultPage


async def result_page(
    follower: Follower,
    renderer: Renderer,
    caller: Caller,
    job_id: str,
    *,
    fields: Sequence[str] | None,
    offset: int,
    limit: int,
) -> Outcome:
    rec = await follower.get(caller, job_id)
    sandbox = rec.sandbox
    if rec.state is JobState.UNKNOWN:  # the outcome-unknown advice, not "wait"
        adv = renderer.job_advice(rec)
        page = ResultPage(job_id=rec.job_id, state=rec.state, advice=adv, sandbox=sandbox)
        return Outcome(page, f"Job {rec.job_id} has no results. {advice_mod.render_text(adv)}")
    p = renderer.providers.get(rec.provider)
    if not rec.state.terminal:
        page = ResultPage(job_id=rec.job_id, state=rec.state, sandbox=sandbox)
        if watched_odd(p, rec):
            page.advice = renderer.job_advice(rec)  # "unrecognised upstream status X"
            text = f"Job {rec.job_id} has no result yet. {advice_mod.render_text(page.advice)}"
            return Outcome(page, text)
        text = (
            f"Job {rec.job_id} has no result yet (state {rec.state.value}). "
            f'Next: wait_for_job(job_id="{rec.job_id}").'
        )
        return Outcome(page, text)
    records = p.reader.result_records(rec)
    total = len(records)
    window = records[offset : offset + limit]
    asked_more = bool(fields) or limit > B.DEFAULT_LIMIT_RESULT
    budget = B.item_budget(B.MAX_ANSWER_TOKENS if asked_more else B.DEFAULT_ANSWER_TOKENS)
    items, lines = page_items(p, rec, window, fields=fields, start=offset + 1, budget=budget)
    missing = unknown_fields(window, list(fields)) if fields else []
    cut = len(items) < len(window)
    next_offset = offset + len(items) if offset + len(items) < total else None
    advice = renderer.job_advice(rec) if total == 0 and rec.state in ADVISED else None
    page = ResultPage(
        job_id=rec.job_id,
        state=rec.state,
        items=items,
        offset=offset,
        total=total,
        next_offset=next_offset,
        fields_available=available_fields(window) if missing else None,
        advice=advice,
        sandbox=sandbox,
    )
    text = page_text(
        rec, page, lines, missing=missing, cut=cut, fields=fields, limit=limit, advice=advice
    )
    if items:
        await follower.mark_read(rec)
    return Outcome(page, text)
