"""Every job answer's words and structured output: pure functions of a ledger row and the
provider's reading of it (`JobProvider`), plus the cache of finished jobs' renderings."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from mcp_server import _bounds as B
from mcp_server import advice as advice_mod
from mcp_server import render
from mcp_server._bounds import cut_strings, fit_items
from mcp_server.ledger import JobRecord
from mcp_server.models import Advice, ErrorCode, JobState, Progress
from mcp_server.projection import select_fields
from mcp_server.providers import JobProvider, LineFn, Outcome
from mcp_server.providers.registry import ProviderRegistry
from mcp_server.schemas import JobOutput, ResultPage

#: Finished jobs whose rendering is kept for repeated status checks and waits.
RENDER_CACHE_SIZE = 128

ADVISED = frozenset({JobState.FAILED, JobState.NOT_FOUND})
"""Terminal states whose result is advice rather than records."""

_ADVISED_ON_SIGHT = (JobState.FAILED, JobState.NOT_FOUND, JobState.DUPLICATE, JobState.UNKNOWN)


class Renderer:
    """A job row as a tool answer. Keeps the plain rendering of finished jobs."""

    def __init__(self, providers: ProviderRegistry, now: Callable[[], float]) -> None:
        self.providers = providers
        self._now = now
        self._rendered: OrderedDict[str, tuple[datetime, Outcome]] = OrderedDict()
        self.cache_size = RENDER_CACHE_SIZE

    def job_output(
        self, rec: JobRecord, *, warnings: Sequence[str] = (), with_results: bool = True
    ) -> JobOutput:
        p = self.providers.get(rec.provider)
        view = p.reader.view(rec)
        out = JobOutput(
            job_id=rec.job_id,
            provider=rec.provider,
            operation=rec.operation,
            state=rec.state,
            raw_status=rec.raw_status,
            sandbox=rec.sandbox,
            warnings=list(warnings) or None,
            credits_remaining=view.credits_remaining,
        )
        if view.items is not None:
            out.items = view.items
        if view.progress is not None:
            out.progress = view.progress
        if view.next_check_after_seconds is not None:
            out.next_check_after_seconds = view.next_check_after_seconds
        if rec.state.terminal:
            records = p.reader.result_records(rec)
            out.results_total = len(records)
            if with_results:
                out.results, _ = page_items(
                    p,
                    rec,
                    records[: B.DEFAULT_LIMIT_RESULT],
                    fields=None,
                    start=1,
                    budget=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
                )
        if rec.state in _ADVISED_ON_SIGHT or p.reader.needs_advice(rec):
            out.advice = self.job_advice(rec)  # e.g. "unrecognised upstream status X"
        return out

    def job_advice(self, rec: JobRecord) -> Advice:
        p = self.providers.get(rec.provider)
        if rec.state is JobState.UNKNOWN:
            if rec.error:
                try:
                    return checked(p, Advice.model_validate(rec.error), rec)
                except ValidationError:
                    pass
            return interrupted_submit_advice(p, rec)
        return p.reader.job_advice(rec, now=self._now())

    def render(
        self,
        rec: JobRecord,
        *,
        warnings: Sequence[str] = (),
        started: bool = False,
        problem: Advice | None = None,
    ) -> Outcome:
        """The job as a result. `problem`: why the latest check of a still-open job failed
        (e.g. the poll was rate limited); it replaces the usual next step.

        A succeeded job renders the same until its row changes, so its plain rendering is
        kept (`RENDER_CACHE_SIZE` jobs) and handed out again while the row's `updated_at` is
        the same: a status check of a finished job, or the many waiters of one job, skip
        merging and projecting its records each time. Every ledger write sets `updated_at`
        (microseconds, writes serialised), and only the small rendering is kept, not the
        record (a 100-target job decodes to about 1 MB). Outcomes are never mutated after
        this point.
        """
        cacheable = (
            rec.state is JobState.SUCCEEDED and not warnings and not started and problem is None
        )
        if cacheable:
            hit = self._rendered.get(rec.job_id)
            if hit is not None and hit[0] == rec.updated_at:
                self._rendered.move_to_end(rec.job_id)
                return hit[1]
        out = self.job_output(rec, warnings=warnings)
        if problem is not None and not rec.state.terminal:
            out.advice = problem
            if problem.retry_after_seconds:
                out.next_check_after_seconds = problem.retry_after_seconds
        p = self.providers.get(rec.provider)
        outcome = Outcome(
            out, job_text(p, rec, out, started=started, problem=problem, now=self._now())
        )
        if cacheable:
            self._rendered[rec.job_id] = (rec.updated_at, outcome)
            self._rendered.move_to_end(rec.job_id)
            while len(self._rendered) > self.cache_size:
                self._rendered.popitem(last=False)
        return outcome


def watched_odd(p: JobProvider, rec: JobRecord) -> bool:
    """An open job whose row still calls for advice (an undocumented upstream status, issue
    12.3): watched on, never shown as a job running normally."""
    return rec.state is not JobState.UNKNOWN and p.reader.needs_advice(rec)


def status_one_text(
    p: JobProvider, rec: JobRecord, out: JobOutput, *, problem: Advice | None, now: float
) -> str:
    """One job's status, no results: state, progress, counts, when to look again."""
    jid = rec.job_id
    lead = f"{p.reader.what(rec)} job {jid}"
    nothing_back = rec.state is JobState.DUPLICATE and not out.results_total
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not nothing_back:
        total = out.results_total or 0
        return (
            f"{lead} {rec.state.value}: {total} result(s). "
            f'Next: get_job_result(job_id="{jid}") to read them.'
        )
    if rec.state.terminal or rec.state is JobState.UNKNOWN:
        adv = out.advice or None
        if adv is not None:
            text = advice_mod.render_text(adv)
            return text if jid in text else f"{lead}: {text}"
        return f'{lead} ended {rec.state.value}. Next: get_job_result(job_id="{jid}").'
    return running_text(p, rec, out, problem=problem, now=now, lead=lead)


def running_text(
    p: JobProvider,
    rec: JobRecord,
    out: JobOutput,
    *,
    problem: Advice | None,
    now: float,
    lead: str,
) -> str:
    jid = rec.job_id
    pct = out.progress.percent if out.progress else None
    msg = out.progress.message if out.progress and out.progress.message else None
    where = f" ({pct:.0f}%{', ' + msg if msg else ''})" if pct is not None else ""
    if problem is None and out.advice is not None and watched_odd(p, rec):
        # Watched on, but never shown as a job running normally (issue 12.3).
        text = advice_mod.render_text(out.advice)
        return text if jid in text else f"{lead}: {text}"
    if problem is not None:
        return (
            f"{lead} is still {rec.state.value}{where}, but checking it failed: "
            f"{problem.what_happened} Next: {problem.next_step}"
            + (f" {problem.do_not}" if problem.do_not else "")
        )
    after = out.next_check_after_seconds
    update = f"; next update expected {advice_mod.wait_phrase(after, now)}" if after else ""
    return (
        f"{lead} is still {rec.state.value}{where}{update}. "
        f'Next: wait_for_job(job_id="{jid}"). Do not start it again: that pays twice.'
    )


def job_text(
    p: JobProvider,
    rec: JobRecord,
    out: JobOutput,
    *,
    started: bool,
    problem: Advice | None = None,
    now: float,
) -> str:
    """What happened, the results' rows when finished, and exactly one `Next:`."""
    jid = rec.job_id
    lead = f"{p.reader.what(rec)} job {jid}"
    nothing_back = rec.state is JobState.DUPLICATE and not out.results_total
    if rec.state in (JobState.SUCCEEDED, JobState.DUPLICATE) and not nothing_back:
        total = out.results_total or 0
        records = p.reader.result_records(rec)[: len(out.results or [])]
        shown_items, lines = page_items(
            p, rec, records, fields=None, start=1, budget=B.item_budget(B.DEFAULT_ANSWER_TOKENS)
        )
        shown = len(shown_items)
        if rec.state is JobState.DUPLICATE:
            note = " (already researched: existing records, no credit spent)"
        elif rec.raw_status and "," in rec.raw_status:
            note = f" ({rec.raw_status})"
        else:
            note = ""
        head = f"{lead} finished{note}: {total} result(s)"
        head += f", {shown} shown:" if lines else "."
        body = [head, *lines]
        if has_placeholder(out.results):
            body.append(PLACEHOLDER_NOTE.format(jid=jid))
        if total > shown:
            body.append(
                f'Next: get_job_result(job_id="{jid}", offset={shown}) for results '
                f"{shown + 1}-{min(total, shown + B.DEFAULT_LIMIT_RESULT)}."
            )
        else:
            body.append(fields_hint(rec) + " Next: use these results; nothing more to fetch.")
        text = "\n".join(body)
    elif rec.state.terminal or rec.state is JobState.UNKNOWN:
        adv = out.advice
        if adv is not None:
            text = advice_mod.render_text(adv)
            if jid not in text:
                text = f"{lead}: {text}"
        else:  # pragma: no cover - _job_output always advises these states
            text = f"{lead} ended {rec.state.value}. Next: list_jobs to review it."
    elif started and problem is None and not watched_odd(p, rec):
        n = len(rec.upstream_ids)
        detail = f" for {n} target(s)" if p.paid_per_target else ""
        credits = (
            f"; {out.credits_remaining} research credits left"
            if out.credits_remaining is not None
            else ""
        )
        text = (
            f"{lead} started{detail} ({rec.state.value}{credits}). "
            f'Next: wait_for_job(job_id="{jid}"). Do not start it again: that pays twice.'
        )
    else:
        text = running_text(p, rec, out, problem=problem, now=now, lead=lead)
    if out.warnings:
        text += "\nNote: " + " ".join(out.warnings)
    return text


PLACEHOLDER_NOTE = (
    '"<N more>", "<N items>" and "<N fields>" in the compact results mark entries left out; '
    'get_job_result(job_id="{jid}", fields=["<name>"]) returns them in full.'
)


def has_placeholder(items: Sequence[Mapping[str, Any]] | None) -> bool:
    return bool(items) and '"<' in B.compact_json(items)


def fields_hint(rec: JobRecord) -> str:
    return (
        f'Other fields: get_job_result(job_id="{rec.job_id}", fields=[...]); names at '
        f"jobrelay://fields/{rec.provider}."
    )


def lean_status(out: JobOutput, *, unrecognised: str | None = None) -> JobOutput:
    """A job inside a many-job status answer: state, progress, counts, next check.
    `unrecognised`: the job's undocumented upstream status (`JobView.unrecognised_status`)."""
    progress = (
        Progress(percent=out.progress.percent)
        if out.progress
        and out.progress.percent is not None
        and out.state
        and not out.state.terminal
        else None
    )
    return JobOutput(
        job_id=out.job_id,
        operation=out.operation,
        state=out.state,
        raw_status=(
            advice_mod.shown_status(unrecognised)
            if unrecognised and out.state is not None and not out.state.terminal
            else None
        ),
        progress=progress,
        results_total=out.results_total,
        next_check_after_seconds=out.next_check_after_seconds,
        next_step=out.advice.next_step if out.advice is not None else None,
        error=out.error,
    )


def said_once(outputs: Sequence[JobOutput]) -> list[str] | None:
    """A many-job status states each distinct next step once: jobs refer to it by index
    (`next_step_ref`), so 100 jobs failed alike carry one sentence, not 100 (issue 13.2)."""
    steps: dict[str, int] = {}
    for o in outputs:
        if o.next_step:
            o.next_step_ref = steps.setdefault(o.next_step, len(steps))
            o.next_step = None
    return list(steps) or None


def status_text(outputs: Sequence[JobOutput], *, now: float) -> str:
    """A batch: counts per state, one short line per job, then the one job to act on."""
    counts: dict[str, int] = {}
    for o in outputs:
        key = o.state.value if o.state is not None else "unknown id"
        counts[key] = counts.get(key, 0) + 1
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    rows = []
    for o in outputs:
        if o.state is None:
            rows.append(f"{B.echo(o.job_id or '', 40)}: unknown id")
            continue
        extra = f", {o.results_total} result(s)" if o.results_total is not None else ""
        if o.results_total == 0 and o.state in ADVISED:
            extra = ""  # "failed" / "not_found" already say nothing came back
        pct = (
            f", {o.progress.percent:.0f}%"
            if o.progress and o.progress.percent is not None and not o.state.terminal
            else ""
        )
        failed = (
            ", check failed"
            if o.next_step and not o.state.terminal and o.state is not JobState.UNKNOWN
            else ""
        )
        if o.raw_status:  # only an unrecognised status is kept in a many-job answer
            failed = ""
            state = f'unrecognised upstream status "{o.raw_status}" (still watched)'
        else:
            state = o.state.value
        rows.append(f"{o.job_id}: {o.operation} {state}{pct}{extra}{failed}")
    lines, _ = render.numbered(
        [{"row": r} for r in rows],
        lambda r: str(r["row"]),
        budget_tokens=B.item_budget(B.DEFAULT_ANSWER_TOKENS),
    )
    more = len(rows) - len(lines)
    lead = "\n".join([f"{len(outputs)} jobs: {summary}.", *lines])
    if more > 0:
        lead += f"\n({more} more in structuredContent.jobs)"
    open_jobs = [o for o in outputs if o.state is not None and not o.state.terminal]
    running = [o for o in open_jobs if o.state is not JobState.UNKNOWN]
    unchecked = [o for o in running if o.next_step and not o.raw_status]
    if unchecked:
        # The latest check failed (a stall, a 429, a degraded upstream): the job's advice in
        # short says when to look again (seconds and UTC time).
        return f"{lead}\n{len(unchecked)} could not be checked now. Next: {unchecked[0].next_step}"
    if running:
        soonest = min((o.next_check_after_seconds or 0 for o in running), default=0)
        when = f" (next update expected {advice_mod.wait_phrase(soonest, now)})" if soonest else ""
        return f'{lead}\nNext: wait_for_job(job_id="{running[0].job_id}"){when}.'
    if open_jobs:
        return (
            f'{lead}\nNext: get_job_status(job_ids=["{open_jobs[0].job_id}"]) for its advice '
            "(outcome unknown) before resubmitting anything."
        )
    done = [o for o in outputs if o.state in (JobState.SUCCEEDED, JobState.DUPLICATE)]
    if done:
        return f'{lead}\nNext: get_job_result(job_id="{done[0].job_id}").'
    ended = [o for o in outputs if o.state is not None]
    steps = {o.next_step for o in ended}
    if ended and len(steps) == 1 and None not in steps:
        return f"{lead}\nAll {len(ended)} ended alike. Next: {ended[0].next_step}"
    if ended:
        return f'{lead}\nNext: get_job_status(job_ids=["{ended[0].job_id}"]) for its advice.'
    return f"{lead}\nNext: list_jobs to find the right job ids."


def page_text(
    rec: JobRecord,
    page: ResultPage,
    lines: Sequence[str],
    *,
    missing: Sequence[str],
    cut: bool,
    fields: Sequence[str] | None,
    limit: int,
    advice: Advice | None,
) -> str:
    jid = rec.job_id
    shown = len(page.items)
    extra = ""
    if fields:
        extra += ", fields=" + B.compact_json(list(fields))
    if limit != B.DEFAULT_LIMIT_RESULT:
        extra += f", limit={limit}"
    if page.total == 0:
        if advice is not None:
            return f"Job {jid} has no results. {advice_mod.render_text(advice)}"
        return (
            f"Job {jid} ended {rec.state.value} with no results. "
            "Next: start a new job if you still need the data."
        )
    if shown == 0:
        last = max(0, (page.total - 1) // limit * limit)
        return (
            f"Job {jid} has {page.total} result(s); offset {page.offset} is past the end. "
            f'Next: get_job_result(job_id="{jid}", offset={last}{extra}) for the last page.'
        )
    head = f"Job {jid}: results {page.offset + 1}-{page.offset + shown} of {page.total}"
    if cut:
        head += " (page cut to fit the size limit)"
    body = [head + ":", *lines]
    if missing:
        body.append(
            "Unknown fields: "
            + ", ".join(m if len(m) <= 40 else B.echo(m, 40) for m in missing[:10])
            + f"; fields_available (and jobrelay://fields/{rec.provider}) lists the names."
        )
    if has_placeholder(page.items) and not fields:
        body.append(PLACEHOLDER_NOTE.format(jid=jid))
    if page.next_offset is not None:
        body.append(f'Next: get_job_result(job_id="{jid}", offset={page.next_offset}{extra}).')
    elif fields:
        body.append("Next: use these results; nothing more to fetch.")
    else:
        body.append(fields_hint(rec) + " Next: use these results; nothing more to fetch.")
    return "\n".join(body)


def page_items(
    p: JobProvider,
    rec: JobRecord,
    window: Sequence[Mapping[str, Any]],
    *,
    fields: Sequence[str] | None,
    start: int,
    budget: int,
) -> tuple[list[dict[str, Any]], list[str]]:
    """One page of results for both blocks: structured items and their text lines, cut at
    the same item boundary so each block fits `budget` tokens (`_bounds.item_budget`).
    Oversized string fields are truncated with a marker, so a record is never unshowable."""
    if fields:
        items = [dict(select_fields(r, fields), **_item_key(r)) for r in window]
    else:
        items = [p.reader.project(rec, r) for r in window]
    items, _ = fit_items([cut_strings(i) for i in items], budget)
    line: LineFn
    sources: Sequence[Mapping[str, Any]] = items
    if fields:
        line = render.fields_line
    else:
        sources, line = p.reader.lines(rec, items, window)
    lines, shown = render.numbered(sources, line, start=start, budget_tokens=budget)
    return items[:shown], lines


def _item_key(record: Mapping[str, Any]) -> dict[str, Any]:
    key = "request_id" if "request_id" in record else "job_id"
    return {key: record.get(key)}


def checked(p: JobProvider, adv: Advice, rec: JobRecord) -> Advice:
    """An outcome-unknown submit seen through get_job_status, wait_for_job or get_job_result:
    this answer IS the check its advice asked for, and with no upstream id jobrelay can learn
    nothing more, so the one next step leaves the loop (issue 13.4)."""
    if rec.upstream_ids or adv.code is not ErrorCode.OUTCOME_UNKNOWN:
        return adv
    return adv.model_copy(
        update={
            "next_step": (
                f"Ask the user whether {rec.job_id}'s work shows in the {p.title} dashboard "
                "before starting it again."
            ),
            "do_not": (
                "Do not resubmit until then, and do not check this job again: jobrelay has no "
                "upstream id for it, so its answer will not change."
            ),
        }
    )


def interrupted_submit_advice(p: JobProvider, rec: JobRecord) -> Advice:
    """A row left `submitting` by a process that stopped between the ledger write and the
    API's answer: the POST may or may not have been processed."""
    return Advice(
        code=ErrorCode.OUTCOME_UNKNOWN,
        provider=rec.provider,
        title="Submit outcome unknown",
        what_happened=(
            f"jobrelay stopped while submitting {rec.job_id} to {p.title}; the request may or "
            "may not have been accepted, and no upstream id was recorded."
            f"{p.reader.resubmit_note(rec)}"
        ),
        retryable=False,
        next_step=(
            f"Ask the user whether {rec.job_id}'s work shows in the {p.title} dashboard before "
            "starting it again."
        ),
        do_not="Do not resubmit in a loop: each accepted submit can spend credits.",
    )
