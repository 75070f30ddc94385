"""Seamless research: the guards before anything is spent, and the submit.

- targets are validated (`research_targets`) and their keys checked against the ledger:
  a rerun within `RERUN_WINDOW_DAYS` is refused unless `allow_rerun` (DESIGN.md 2.1);
- fresh evidence of 0 credits refuses locally (issue 20.2);
- a credit-spending POST is preceded by a ledger row (intent) and followed by its completion;
  an ambiguous failure leaves the row `unknown` and the agent is told not to resubmit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import anyio

from mcp_server import advice as advice_mod
from mcp_server.errors import BudgetExceeded, InputProblem, JobRelayError, OutcomeUnknown
from mcp_server.ledger import JobRecord, new_job_id
from mcp_server.models import Advice, ErrorCode, JobState
from mcp_server.providers.base import Caller, JobContext, Outcome, ProgressFn, ResearchRequest
from mcp_server.providers.seamless.states import MAX_TARGETS, NAME, Kind
from mcp_server.providers.seamless.targets import target_keys
from mcp_server.schemas import CompanyTarget, ContactTarget, JobOutput
from mcp_server.upstream import SeamlessClient, format_clock, retry_at

#: Warn in results when the org's research credits drop below this.
LOW_CREDITS_THRESHOLD = 25
#: A 0 from `X-PublicAPI-Credits` refuses research locally for this long at most; after it,
#: the next start_research asks Seamless again (its answer, a 422 or a 202, corrects it).
CREDITS_ZERO_TRUST_SECONDS = 300.0
#: A rerun within this many days is flagged before anything is spent.
RERUN_WINDOW_DAYS = 30


def research_targets(
    kind: Kind,
    search_result_ids: Sequence[str],
    contacts: Sequence[ContactTarget],
    companies: Sequence[CompanyTarget],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Validate research targets before anything is spent; return descriptors and labels."""
    if kind == "contacts" and companies:
        raise InputProblem(
            "companies=[...] goes with kind='companies'; for people use contacts=[...].",
            field="companies",
        )
    if kind == "companies" and contacts:
        raise InputProblem(
            "contacts=[...] goes with kind='contacts'; for companies use companies=[...].",
            field="contacts",
        )
    descriptors: list[dict[str, Any]] = []
    labels: list[str] = [f"searchResultId {s}" for s in search_result_ids]
    for c in contacts:
        d = c.model_dump(exclude_none=True)
        urls = c.linkedin_url or c.sales_nav_url or c.recruiter_url
        if not (urls or c.email or (c.name and (c.company or c.domain))):
            raise InputProblem(
                "Each contact needs linkedin_url, sales_nav_url, recruiter_url, email, or "
                "name plus company/domain "
                f"to be identifiable; got {d or 'an empty object'}.",
                field="contacts",
            )
        descriptors.append(d)
        labels.append(_contact_label(c))
    for co in companies:
        d = co.model_dump(exclude_none=True)
        if not (co.domain or co.name):
            raise InputProblem("Each company needs a domain or a name.", field="companies")
        descriptors.append(d)
        labels.append(co.domain or co.name or "company")
    requested = len(labels)
    if requested == 0:
        raise InputProblem(
            "Give search_result_ids (from search_prospects) or contacts/companies to research.",
            field="search_result_ids",
        )
    if requested > MAX_TARGETS:
        raise InputProblem(
            f"At most {MAX_TARGETS} targets per call; got {requested}. Split the list.",
            field="search_result_ids",
        )
    return descriptors, labels


def low_credit_warning(credits: int | None) -> list[str]:
    if credits is not None and credits < LOW_CREDITS_THRESHOLD:
        return [
            f"Only {credits} Seamless research credits left for the organisation; "
            "each researched target uses one."
        ]
    return []


def _credits_refusal(ctx: JobContext, client: SeamlessClient) -> Outcome | None:
    """Refuse research locally only on fresh evidence of 0 credits (issue 20.2).

    The evidence is the last plausible `X-PublicAPI-Credits` (implausible values never get
    here): any newer Seamless answer replaces it, and after `CREDITS_ZERO_TRUST_SECONDS`
    the research call is sent anyway, so Seamless itself answers (a 422 spends nothing).
    The text says which answer said 0, and when.
    """
    seen = getattr(client, "credits_seen", None)
    if seen is None or seen.value != 0:
        return None
    age = max(0.0, ctx.clock.monotonic() - seen.mono)
    if age >= CREDITS_ZERO_TRUST_SECONDS:
        return None
    wait = math.ceil(CREDITS_ZERO_TRUST_SECONDS - age)
    at = retry_at(ctx.now(), wait)
    said = format_clock(datetime.fromtimestamp(seen.at, tz=UTC))
    adv = Advice(
        code=ErrorCode.CREDITS_EXHAUSTED,
        provider=NAME,
        title="Seamless research credits exhausted",
        what_happened=(
            f"Not sent, nothing spent: Seamless's answer to {seen.source} at {said} "
            f"({math.floor(age)} s ago, HTTP {seen.status}) said the organisation has 0 "
            "research credits (X-PublicAPI-Credits: 0)."
        ),
        retryable=True,
        retry_after_seconds=wait,
        retry_at=at,
        next_step=(
            "Tell the user to add Seamless research credits. Any newer Seamless answer "
            "replaces this number (search_prospects is free); without one, start_research "
            f"asks Seamless again after {format_clock(at)} (in {wait} s)."
        ),
        do_not="Do not call start_research in a loop: it is refused locally until then.",
    )
    return ctx.advice_failure(adv)


async def start_research(
    ctx: JobContext,
    caller: Caller,
    client: SeamlessClient,
    request: ResearchRequest,
    *,
    wait_seconds: float,
    progress: ProgressFn | None,
) -> Outcome:
    """Guards (targets, credits, reruns) before anything is spent, then the submit."""
    kind = request.kind
    search_result_ids = request.search_result_ids
    contacts = request.contacts
    companies = request.companies
    allow_rerun = request.allow_rerun
    job_change = request.job_change
    skip_dedup_check = request.skip_dedup_check
    deadline = ctx.deadline(wait_seconds)  # the whole call, submit included
    descriptors, labels = research_targets(kind, search_result_ids, contacts, companies)
    if job_change and not contacts:
        raise InputProblem(
            "job_change applies to contacts=[...] descriptors (Seamless isJobChange); "
            "leave it out for search_result_ids and companies.",
            field="job_change",
        )
    requested = len(labels)

    tenant = caller.tenant(NAME)
    keys = target_keys(
        kind,
        contacts=[c.model_dump(exclude_none=True) for c in contacts],
        companies=[c.model_dump(exclude_none=True) for c in companies],
        search_result_ids=list(search_result_ids),
    )
    now_dt = datetime.fromtimestamp(ctx.now(), tz=UTC)

    refusal = _credits_refusal(ctx, client)
    if refusal is not None:
        return refusal

    warnings: list[str] = []
    if keys:
        earlier = await ctx.ledger.recent_targets(
            keys, tenant=tenant, within_days=RERUN_WINDOW_DAYS, now=now_dt
        )
        jobs = ", ".join(sorted(set(earlier.values())))
        if earlier and not allow_rerun:
            interrupted = await _only_interrupted(ctx, earlier, tenant=tenant)
            if not (interrupted and kind == "contacts"):
                return _rerun_refusal(earlier, sandbox=caller.sandbox[NAME])
            # DESIGN 2.1: Seamless deduplicates contact research, so one resubmit of a
            # submit whose outcome is unknown is safe, with deduplication left on.
            warnings.append(
                f"Resubmitted {len(earlier)} target(s) of {jobs}, whose submit outcome is "
                "unknown: if that submit did arrive, Seamless answers duplicate at no cost."
            )
        elif earlier:
            warnings.append(
                f"Re-researching {len(earlier)} target(s) already researched in the last "
                f"{RERUN_WINDOW_DAYS} days, in {jobs} (allow_rerun=true): fresh research "
                "spends credits."
            )

    params: dict[str, Any] = {
        "kind": kind,
        "search_result_ids": list(search_result_ids),
        "targets": descriptors,
        "labels": labels,
    }
    # Intent row, POST and its completion run shielded from the tool call's cancellation
    # (bounded by the call deadline): a client giving up mid-submit must not leave a paid
    # job without its requestIds in the ledger.
    with anyio.CancelScope(shield=True):
        submitted = await _submit_research(
            ctx,
            caller,
            client,
            kind=kind,
            params=params,
            keys=keys,
            requested=requested,
            search_result_ids=search_result_ids,
            contacts=contacts,
            companies=companies,
            skip_dedup=skip_dedup_check,
            job_change=job_change,
        )
    if isinstance(submitted, Outcome):
        return submitted
    record, credits, part_warnings = submitted
    warnings.extend(part_warnings)
    warnings.extend(low_credit_warning(credits))
    return await ctx.after_submit(
        caller,
        record.job_id,
        wait_seconds=wait_seconds,
        deadline=deadline,
        progress=progress,
        warnings=warnings,
    )


async def _submit_research(
    ctx: JobContext,
    caller: Caller,
    client: SeamlessClient,
    *,
    kind: Kind,
    params: dict[str, Any],
    keys: list[str],
    requested: int,
    search_result_ids: Sequence[str],
    contacts: Sequence[ContactTarget],
    companies: Sequence[CompanyTarget],
    skip_dedup: bool,
    job_change: bool,
) -> Outcome | tuple[JobRecord, int | None, list[str]]:
    """Intent, POST, completion: the ledger row ends with the requestIds, `unknown`
    (ambiguous failure) or `failed` (provably rejected); an Outcome is a tool failure.

    Seamless takes `searchResultIds` or `contacts` in one contact-research POST, never
    both (UPSTREAMS.md 1). Given both, the ids go first under the job's own row and the
    descriptors in a second POST with an intent row of its own (`params.part_of` names
    the job): both rows are written before the first POST, so a restart between the two
    finds the second `submitting` (outcome unknown, never re-sent). Once accepted, its
    requestIds join the job's and the part row is closed as merged.
    """
    tool = "start_research"
    tenant = caller.tenant(NAME)
    labels: list[str] = params["labels"]
    ids = list(search_result_ids)
    split = kind == "contacts" and bool(ids) and bool(contacts)
    first_n = len(ids) if split else requested
    sandbox = caller.sandbox[NAME]
    part: JobRecord | None = None
    try:
        # Budget check and intent row in one transaction: concurrent starts can't overshoot.
        record = await ctx.ledger.record_intent(
            JobRecord.new(
                job_id=new_job_id(NAME),
                provider=NAME,
                operation=f"research_{kind}",
                tenant=tenant,
                sandbox=sandbox,
                params=params,
                targets=keys,
                credits_requested=first_n,
            ),
            budget=ctx.settings.credit_budget,
        )
    except BudgetExceeded as exc:
        return ctx.failure(exc, tool=tool)
    if split:
        try:
            part = await ctx.ledger.record_intent(
                JobRecord.new(
                    job_id=new_job_id(NAME),
                    provider=NAME,
                    operation=f"research_{kind}",
                    tenant=tenant,
                    sandbox=sandbox,
                    params={
                        "kind": kind,
                        "part_of": record.job_id,
                        "targets": params["targets"],
                        "labels": labels[len(ids) :],
                    },
                    credits_requested=requested - first_n,
                ),
                budget=ctx.settings.credit_budget,
            )
        except BudgetExceeded as exc:
            await ctx.ledger.fail_submit(
                record.job_id, error=ctx.error_dict(exc, tool), processed="no"
            )
            return ctx.failure(exc, tool=tool)
    try:
        accepted = await client.research(
            kind,
            search_result_ids=ids,
            contacts=[] if split else [wire_contact(c) for c in contacts],
            companies=[wire_company(c) for c in companies],
            is_job_change=job_change and not split and bool(contacts),
            skip_dedup=skip_dedup,
            deadline=ctx.call_deadline(),
        )
    except JobRelayError as exc:
        if part is not None:  # never sent: the first part failed
            await ctx.ledger.fail_submit(
                part.job_id, error=ctx.error_dict(exc, tool), processed="no"
            )
        return await ctx.submit_failed(record.job_id, exc, tool=tool)

    request_ids = list(accepted.request_ids)
    credits = accepted.credits
    items = _items(request_ids, labels)
    snapshot: dict[str, Any] = {"kind": kind, "items": items}
    await ctx.ledger.complete_submit(
        record.job_id,
        upstream_ids=request_ids,
        state=JobState.RUNNING,
        raw_status="researching",
        snapshot=snapshot,
        credits_seen=credits,
    )
    warnings: list[str] = []
    if part is not None:
        try:
            more = await client.research(
                kind,
                contacts=[wire_contact(c) for c in contacts],
                is_job_change=job_change,
                skip_dedup=skip_dedup,
                deadline=ctx.call_deadline(),
            )
        except JobRelayError as exc:
            await ctx.submit_failed(part.job_id, exc, tool=tool)
            adv = ctx.advise(exc, tool=tool)
            unknown = isinstance(exc, OutcomeUnknown)
            fate = (
                f"may or may not have been accepted (ledger row {part.job_id}); check "
                "list_jobs before sending them again"
                if unknown
                else "were not researched"
            )
            warnings.append(
                f"The {len(contacts)} contact descriptor(s), sent in a second request, "
                f"{fate}: {adv.what_happened}"
            )
        else:
            credits = more.credits if more.credits is not None else credits
            all_ids = request_ids + list(more.request_ids)
            snapshot["items"] = _items(all_ids, labels)
            await ctx.ledger.complete_submit(
                record.job_id,
                upstream_ids=all_ids,
                state=JobState.RUNNING,
                raw_status="researching",
                snapshot=snapshot,
                credits_seen=credits,
            )
            await ctx.ledger.update(
                part.job_id,
                state=JobState.SUCCEEDED,
                raw_status=f"merged into {record.job_id}",
                snapshot={"merged_into": record.job_id, "request_ids": list(more.request_ids)},
            )
    return record, credits, warnings


async def _only_interrupted(ctx: JobContext, earlier: Mapping[str, str], *, tenant: str) -> bool:
    """True when every earlier job is a submit whose outcome is unknown and that has no
    upstream id: nothing is known to have been researched."""
    for job_id in set(earlier.values()):
        rec = await ctx.ledger.get(job_id, tenant=tenant)
        if rec is None or rec.state is not JobState.UNKNOWN or rec.upstream_ids:
            return False
    return True


def _rerun_refusal(earlier: Mapping[str, str], *, sandbox: bool) -> Outcome:
    jobs = sorted(set(earlier.values()))
    first = jobs[0]
    targets = ", ".join(sorted(k.split(":", 1)[-1] for k in earlier)[:3])
    adv = Advice(
        code=None,
        provider=NAME,
        title="Already researched",
        what_happened=(
            f"Not started: {len(earlier)} target(s) ({targets}) were researched in the last "
            f"{RERUN_WINDOW_DAYS} days, in job(s) {', '.join(jobs[:5])}"
            f"{f' and {len(jobs) - 5} more' if len(jobs) > 5 else ''}. Nothing was spent. "
            "Fresh research of them needs allow_rerun=true and pays again."
        ),
        retryable=False,
        next_step=f'Read the earlier results with get_job_result(job_id="{first}").',
        do_not="Do not resubmit without allow_rerun: the same targets are refused again.",
    )
    out = JobOutput(advice=adv, sandbox=sandbox)
    return Outcome(out, advice_mod.render_text(adv))


def _contact_label(c: ContactTarget) -> str:
    if c.name and (c.company or c.domain):
        return f"{c.name} @ {c.company or c.domain}"
    return c.linkedin_url or c.sales_nav_url or c.recruiter_url or c.email or c.name or "contact"


def wire_contact(c: ContactTarget) -> dict[str, Any]:
    out = {
        "contactName": c.name,
        "companyName": c.company,
        "domain": c.domain,
        "title": c.title,
        "email": c.email,
        "liProfileUrl": c.linkedin_url,
        "liSalesNavUrl": c.sales_nav_url,
        "liRecruiterUrl": c.recruiter_url,
    }
    return {k: v for k, v in out.items() if v}


def wire_company(c: CompanyTarget) -> dict[str, Any]:
    out = {"companyName": c.name, "domain": c.domain}
    return {k: v for k, v in out.items() if v}


def _items(request_ids: Sequence[str], labels: Sequence[str]) -> list[dict[str, Any]]:
    """Per-target rows of a fresh research job: request ids in target order."""
    return [
        {
            "request_id": rid,
            "target": labels[i] if i < len(labels) else None,
            "raw_status": "researching",
        }
        for i, rid in enumerate(request_ids)
    ]
