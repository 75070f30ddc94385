"""Status checks and waits: provider-agnostic, through each provider's `Connection`."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime

from mcp_server import advice as advice_mod
from mcp_server import telemetry
from mcp_server.errors import JobRelayError, UnknownJob
from mcp_server.jobs.context import ServiceContext
from mcp_server.jobs.listing import RESULT_READ
from mcp_server.jobs.render import (
    Renderer,
    lean_status,
    said_once,
    status_one_text,
    status_text,
)
from mcp_server.ledger import JobRecord
from mcp_server.models import Advice, JobState
from mcp_server.providers import (
    Caller,
    Outcome,
    ProgressFn,
    PushConnection,
    PushOutcome,
    SharedFold,
    webhook_of,
)
from mcp_server.schemas import JobOutput, StatusOutput

log = logging.getLogger(__name__)

EARLY_PUSHES = 64
"""Pushes kept whose id no job of the trusted tenant held yet (a delivery can overtake the
submit's own ledger write); each is applied when that job is next waited on or checked."""
EARLY_PUSH_SECONDS = 600.0


def observe_push(
    provider: str, outcome: PushOutcome, seconds: float, lag: float | None = None
) -> None:
    """The one place a pushed result (webhook delivery) is measured: its outcome and lag
    (`telemetry.webhook_delivered`; `delivery_lag`) and how long it took from arrival to
    stored and published (logged)."""
    telemetry.webhook_delivered(outcome, lag, provider=provider)
    log.debug(
        "jobrelay: %s push %s in %.1f ms",
        provider,
        outcome,
        seconds * 1000,
        extra={"provider": provider},
    )


def delivery_lag(
    ctx: ServiceContext, rec: JobRecord, payload: Mapping[str, object]
) -> float | None:
    """Seconds from when the upstream finished `rec`'s job, as the delivery body says (its
    provider's `WebhookSpec.finished_field`), to now; None when the body says no such time,
    or one before the job's submit (then it is not this job's end)."""
    spec = webhook_of(ctx.provider(rec.provider))
    field = spec.finished_field if spec is not None else None
    value = payload.get(field) if field is not None else None
    if not isinstance(value, str):
        return None
    try:
        finished = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=UTC)
    if finished < rec.created_at:
        return None
    return max(0.0, (ctx.utcnow() - finished).total_seconds())


class Follower:
    """Finds jobs, checks them (status) and follows them (wait), sharing folds per job."""

    def __init__(self, ctx: ServiceContext, renderer: Renderer) -> None:
        self.ctx = ctx
        self.renderer = renderer
        self._folds: dict[str, SharedFold] = {}
        self._marked_read: set[str] = set()
        self._early: dict[tuple[str, str, str], tuple[float, float, Mapping[str, object]]] = {}
        """(provider, tenant, upstream id) -> (arrival on the clock and on the performance
        counter, payload): see `EARLY_PUSHES`."""

    async def get(self, caller: Caller, job_id: str) -> JobRecord:
        """A handle or a raw upstream id, scoped to the caller's tenant for that provider."""
        job_id = job_id.strip()
        ledger = self.ctx.ledger
        for provider in self.ctx.providers.for_handle(job_id):
            tenant = caller.tenant(provider.name)
            rec = await ledger.get(job_id, tenant=tenant)
            if rec is None:
                rec = await ledger.find_by_upstream_id(job_id, tenant=tenant)
            if rec is not None:
                return rec
        raise UnknownJob(f"No job {job_id!r} in this ledger (for this API key).", job_id=job_id)

    async def refresh_batch(
        self, caller: Caller, records: Sequence[JobRecord]
    ) -> tuple[dict[str, JobRecord], dict[str, JobRelayError]]:
        """Fresh records of the open jobs among `records` (shared calls per provider), and
        why any could not be checked."""
        fresh: dict[str, JobRecord] = {}
        problems: dict[str, JobRelayError] = {}
        for name in self.ctx.providers.names():
            mine = [r for r in records if r.provider == name]
            if not any(not r.state.terminal and r.upstream_ids for r in mine):
                continue
            got, failed = await self.ctx.connection(name).refresh(self.ctx, caller, mine)
            fresh.update(got)
            problems.update(failed)
        return fresh, problems

    async def status(self, caller: Caller, job_ids: Sequence[str]) -> Outcome:
        ctx = self.ctx
        found: dict[str, JobRecord] = {}
        unknown: dict[str, Advice] = {}
        for jid in dict.fromkeys(job_ids):
            try:
                found[jid] = await self._early_pushes(caller, await self.get(caller, jid))
            except UnknownJob as exc:
                unknown[jid] = ctx.advise(exc, tool="get_job_status")
        records = list({r.job_id: r for r in found.values()}.values())
        fresh, problems = await self.refresh_batch(caller, records)
        single = len(found) + len(unknown) == 1 or (len(records) == 1 and not unknown)
        outputs: list[JobOutput] = []
        seen: set[str] = set()
        texts: list[str] = []
        for jid in dict.fromkeys(job_ids):
            if jid in unknown:
                adv = unknown[jid]
                outputs.append(JobOutput(job_id=jid, error=adv.as_error()))
                texts.append(advice_mod.render_text(adv))
                continue
            rec = fresh.get(found[jid].job_id, found[jid])
            if rec.job_id in seen:
                continue
            seen.add(rec.job_id)
            problem = problems.get(rec.job_id)
            why = ctx.advise(problem, tool="get_job_status") if problem is not None else None
            out = self.renderer.job_output(rec, with_results=False)
            if why is not None and not rec.state.terminal:
                out.advice = why
                if why.retry_after_seconds:
                    out.next_check_after_seconds = why.retry_after_seconds
            p = ctx.provider(rec.provider)
            texts.append(status_one_text(p, rec, out, problem=why, now=ctx.now()))
            if single:
                outputs.append(out)
            else:
                odd = p.reader.view(rec).unrecognised_status if not rec.state.terminal else None
                outputs.append(lean_status(out, unrecognised=odd))
        nexts = [o.next_check_after_seconds for o in outputs if o.next_check_after_seconds]
        status_out = StatusOutput(
            jobs=outputs,
            next_check_after_seconds=min(nexts) if nexts else None,
            sandbox=any(caller.sandbox.values()),
        )
        all_unknown = all(o.error is not None for o in outputs)
        if all_unknown:
            status_out.error = outputs[0].error
        text = texts[0] if len(outputs) == 1 else status_text(outputs, now=ctx.now())
        if not single:
            status_out.next_steps = said_once(outputs)
        return Outcome(status_out, text, failed=all_unknown)

    async def wait(
        self,
        caller: Caller,
        job_id: str,
        *,
        wait_seconds: float,
        progress: ProgressFn | None,
        warnings: Sequence[str] = (),
        deadline: float | None = None,
    ) -> Outcome:
        ctx = self.ctx
        if deadline is None:
            deadline = ctx.deadline(wait_seconds)
        rec = await self._early_pushes(caller, await self.get(caller, job_id))
        if rec.state.terminal or not rec.upstream_ids:
            outcome = self.renderer.render(rec, warnings=warnings)
            await self.mark_read(rec)
            return outcome
        connection = ctx.connection(rec.provider)
        problem: JobRelayError | None
        if ctx.clock.monotonic() >= deadline:
            # No time left to follow anything (wait_seconds=0, or a slow submit): one look.
            try:
                fresh, problems = await connection.refresh(ctx, caller, [rec])
            except JobRelayError as exc:
                fresh, problems = {}, {rec.job_id: exc}
            rec, problem = fresh.get(rec.job_id, rec), problems.get(rec.job_id)
        else:
            async with self._shared_fold(rec.job_id) as fold:
                # Hold the job's shared record, not this call's own decoded copy: a research
                # job's row (params, per-target items) is ~100 KB, kept for the whole wait.
                rec = fold.rec = fold.fresher(rec)
                rec, problem = await connection.follow(
                    ctx, caller, rec, fold=fold, deadline=deadline, progress=progress
                )
        if problem is not None and not rec.state.terminal:
            adv = ctx.advise(problem, tool="wait_for_job")
            return self.renderer.render(rec, warnings=warnings, problem=adv)
        outcome = self.renderer.render(rec, warnings=warnings)
        await self.mark_read(rec)
        return outcome

    async def receive_push(
        self, caller: Caller, provider: str, upstream_id: str, payload: Mapping[str, object]
    ) -> PushOutcome:
        """A result `provider` pushed for `upstream_id` (a webhook delivery).

        Trusted only for `caller`'s tenant (the server's own key: whose dashboard holds the
        webhook); there it is folded under the job's shared fold, like a poll round, and
        published to its waiters. Another tenant's job is never changed by it: whoever
        watches that id here polls it early with that tenant's own key instead.
        """
        started = time.perf_counter()
        connection = self.ctx.connection(provider)
        outcome: PushOutcome = "unknown"
        lag: float | None = None
        if isinstance(connection, PushConnection):
            rec = await self.ctx.ledger.find_by_upstream_id(
                upstream_id, tenant=caller.tenant(provider)
            )
            if rec is None:
                outcome = "forwarded" if connection.push_hint(upstream_id) else "unknown"
                if outcome == "unknown":
                    self._keep_early((provider, caller.tenant(provider), upstream_id), payload)
            else:
                lag = delivery_lag(self.ctx, rec, payload)
                outcome = await self._fold_push(connection, caller, rec, upstream_id, payload)
        observe_push(provider, outcome, time.perf_counter() - started, lag)
        return outcome

    async def _fold_push(
        self,
        connection: PushConnection,
        caller: Caller,
        rec: JobRecord,
        upstream_id: str,
        payload: Mapping[str, object],
    ) -> PushOutcome:
        async with self._shared_fold(rec.job_id) as fold, fold.lock:
            fresh, outcome = await connection.receive_push(
                self.ctx, caller, fold.fresher(rec), upstream_id, payload
            )
            fold.rec = fold.fresher(fresh)
        return outcome

    def _keep_early(self, key: tuple[str, str, str], payload: Mapping[str, object]) -> None:
        now = self.ctx.clock.monotonic()
        for old, (at, _, _) in list(self._early.items()):
            if now - at > EARLY_PUSH_SECONDS or len(self._early) >= EARLY_PUSHES:
                del self._early[old]
        self._early[key] = (now, time.perf_counter(), payload)

    async def _early_pushes(self, caller: Caller, rec: JobRecord) -> JobRecord:
        """`rec` with the pushes that arrived before its ids were in the ledger folded in."""
        if not self._early or rec.state.terminal:
            return rec
        connection = self.ctx.connection(rec.provider)
        if not isinstance(connection, PushConnection):
            return rec
        tenant = caller.tenant(rec.provider)
        for upstream_id in rec.upstream_ids:
            early = self._early.pop((rec.provider, tenant, upstream_id), None)
            if early is not None and rec.tenant == tenant:
                outcome = await self._fold_push(connection, caller, rec, upstream_id, early[2])
                observe_push(rec.provider, outcome, time.perf_counter() - early[1])
                rec = await self.get(caller, rec.job_id)
        return rec

    async def mark_read(self, rec: JobRecord) -> None:
        """Note in the ledger that the agent was shown this finished job's results, so
        `list_jobs` can point at paid work nobody read yet. Only terminal rows are marked.
        A flag set in the row (`Ledger.flag`), not a rewrite of it: a finished research
        job's row is ~450 KB, which an update decodes and encodes again, at the moment its
        waiters render it (BENCHMARKS.md, "Scale peak RSS")."""
        if rec.state not in (JobState.SUCCEEDED, JobState.DUPLICATE):
            return
        snapshot = rec.snapshot or {}
        if snapshot.get(RESULT_READ) or rec.job_id in self._marked_read:
            return
        self._marked_read.add(rec.job_id)
        await self.ctx.ledger.flag(rec.job_id, RESULT_READ)

    def _shared_fold(self, job_id: str) -> _FoldUse:
        """The job's `SharedFold` while at least one waiter uses it."""
        return _FoldUse(self._folds, job_id)


class _FoldUse:
    """`async with` one job's `SharedFold`, dropped when its last user leaves. A class, not an
    `@asynccontextmanager`: every open wait holds one, and a generator's frame and wrapper
    cost ~0.5 KB per wait (BENCHMARKS.md, "Scale peak RSS")."""

    __slots__ = ("_fold", "_folds", "_job_id")

    def __init__(self, folds: dict[str, SharedFold], job_id: str) -> None:
        self._folds = folds
        self._job_id = job_id
        self._fold: SharedFold | None = None

    async def __aenter__(self) -> SharedFold:
        fold = self._folds.get(self._job_id)
        if fold is None:
            fold = self._folds[self._job_id] = SharedFold()
        fold.users += 1
        self._fold = fold
        return fold

    async def __aexit__(self, *exc: object) -> None:
        fold, self._fold = self._fold, None
        if fold is None:
            return
        fold.users -= 1
        if fold.users == 0 and self._folds.get(self._job_id) is fold:
            del self._folds[self._job_id]
