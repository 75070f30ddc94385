"""What every ledger backend shares (they differ in storage only): `RowLedger`, the `Ledger`
over a backend's `JobRows`, and the rules of each write.

A backend provides two parts on one store: its `JobRows` (the job rows: insert, load-change-
store in one transaction, the reads) and a `TaskLedger` (the MCP task rows and secrets). The
rules live here, once: what an intent row is (`as_intent`), when the daily credit budget is
checked and how a refusal reads (`BudgetCheck`), what `complete_submit`, `fail_submit` and
`update` change, that terminal states stay terminal and the times (`stamped`), the argument
checks and time windows of the reads.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, Protocol

from mcp_server import telemetry
from mcp_server._clock import Clock
from mcp_server._duration import format_duration
from mcp_server.errors import BudgetExceeded
from mcp_server.ledger._codec import error_dict
from mcp_server.ledger.base import (
    CREDIT_BUDGET_PROVIDERS,
    RAW_OUTCOME_UNKNOWN,
    RAW_REJECTED,
    RAW_SUBMITTING,
    ErrorLike,
    JobRecord,
    JsonDict,
    TaskLedger,
    next_utc_midnight,
    utc_day_start,
)
from mcp_server.models import JobState

_log = logging.getLogger("mcp_server.ledger")

Change = Callable[[JobRecord], "JobRecord | None"]
"""What a write does to the stored record: the record to store, or None to keep it as it is."""


@dataclass(frozen=True, slots=True)
class BudgetCheck:
    """The daily credit budget check of one `record_intent` (a job of `provider`), run by the
    backend inside the transaction that inserts the row (so concurrent starts cannot overshoot
    it): sum the budgeted providers' spend since `day` for `sandbox`, then `check` it."""

    budget: int
    requested: int
    provider: str
    sandbox: bool
    day: datetime
    now: datetime

    def check(self, spent: int) -> None:
        """Raise `BudgetExceeded` when `requested` would take `spent` above the budget."""
        if spent + self.requested <= self.budget:
            return
        resets_at = next_utc_midnight(self.now)
        resets_in = (resets_at - self.now).total_seconds()
        raise BudgetExceeded(
            f"This research needs {self.requested} credit(s), but {spent} of today's budget of "
            f"{self.budget} (JOBRELAY_CREDIT_BUDGET) are already spent or reserved. The budget "
            f"resets at {resets_at:%Y-%m-%dT%H:%M:%SZ} (in {format_duration(resets_in)}).",
            provider=self.provider,
            spent=spent,
            budget=self.budget,
            requested=self.requested,
            resets_in=resets_in,
        )


@dataclass(frozen=True, slots=True)
class JobQuery:
    """`Ledger.list`'s filter, checked: the tenant's jobs, newest first, one page."""

    tenant: str
    provider: str | None
    state: JobState | None
    since: datetime | None
    limit: int
    offset: int


class JobRows(Protocol):
    """A backend's job rows. Every method is one transaction (reads: one snapshot)."""

    async def insert(self, record: JobRecord, budget: BudgetCheck | None) -> None:
        """Insert `record` durably, after `budget.check` of today's spend when given;
        `ValueError` when its handle is stored already."""
        ...

    async def mutate(self, job_id: str, change: Change, *, durable: bool) -> JobRecord:
        """Load the row for update (`UnknownJob` when absent), store `change(old)` unless it
        is None, return what is stored after. `durable`: the commit waits for the disk."""
        ...

    async def set_flag(self, job_id: str, key: str, now: datetime) -> None:
        """`snapshot[key] = true` and `updated_at = now` in one statement, the row neither
        loaded nor rewritten from Python (a missing job: nothing)."""
        ...

    async def get(self, job_id: str, tenant: str) -> JobRecord | None: ...

    async def by_upstream_id(self, upstream_id: str, tenant: str) -> JobRecord | None: ...

    async def lookup(self, ids: Sequence[str], tenant: str) -> dict[str, JobRecord]: ...

    async def select(self, query: JobQuery) -> builtins.list[JobRecord]: ...

    async def nonterminal(self, tenant: str | None) -> builtins.list[JobRecord]: ...

    async def counts(self) -> dict[tuple[str, JobState], int]:
        """Jobs by (provider, state), every tenant: one aggregate read."""
        ...

    async def spent(self, day: datetime, tenant: str | None, sandbox: bool | None) -> int:
        """Credits requested by the budgeted provider's jobs created on the UTC day from
        `day`, rejected submits excluded."""
        ...

    async def recent_targets(
        self, keys: Sequence[str], tenant: str, since: datetime, until: datetime
    ) -> dict[str, str]: ...

    async def close(self) -> None:
        """Close the store (the task rows share it); idempotent."""
        ...


def as_intent(record: JobRecord, now: datetime) -> JobRecord:
    """`record` as `record_intent` stores it: state `unknown`, raw status `submitting`."""
    return record.model_copy(
        update={
            "state": JobState.UNKNOWN,
            "raw_status": RAW_SUBMITTING,
            "created_at": now,
            "updated_at": now,
            "finished_at": None,
        }
    )


def stamped(old: JobRecord, new: JobRecord, now: datetime) -> JobRecord | None:
    """`new` with its times set, or None when it would reopen a finished job (a stale poll
    from another writer: dropped, so concurrent pollers never lose a result)."""
    if old.state.terminal and not new.state.terminal:
        _log.debug(
            "ignored stale %s for finished job %s",
            new.state.value,
            old.job_id,
            extra={"job_id": old.job_id, "provider": old.provider},
        )
        return None
    return new.model_copy(
        update={
            "updated_at": now,
            "finished_at": (old.finished_at or now) if new.state.terminal else None,
            "next_check_at": None if new.state.terminal else new.next_check_at,
        }
    )


def _spends(old: JobRecord, new: JobRecord) -> bool:
    """Whether the write `old` -> `new` ends a submit in a state that may have spent its
    credits (it left `submitting`, and not as a provable rejection)."""
    return old.raw_status == RAW_SUBMITTING and new.raw_status not in (
        RAW_SUBMITTING,
        RAW_REJECTED,
    )


async def _write(
    rows: JobRows,
    job_id: str,
    change: Callable[[JobRecord], JobRecord],
    now: datetime,
    *,
    durable: bool,
) -> JobRecord:
    """One write through `stamped`; what it changed is measured and logged once it committed
    (a rolled-back transaction counts nothing; a retried one counts its last attempt)."""
    written: list[tuple[JobRecord, JobRecord]] = []

    def apply(old: JobRecord) -> JobRecord | None:
        stored = stamped(old, change(old), now)
        written[:] = [] if stored is None else [(old, stored)]
        return stored

    result = await rows.mutate(job_id, apply, durable=durable)
    for old, stored in written:
        telemetry.job_written(old, stored, spent=_spends(old, stored))
        if old.state != stored.state:
            _log.debug(
                "job %s: %s -> %s",
                job_id,
                old.state.value,
                stored.state.value,
                extra={"job_id": job_id, "provider": stored.provider},
            )
    return result


def _now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.time(), UTC)


class RowLedger:
    """The `Ledger` over a backend's `JobRows` and `TaskLedger` (one store), on `clock`.
    Backends subclass it with their `open`."""

    def __init__(self, rows: JobRows, tasks: TaskLedger, clock: Clock) -> None:
        self._rows = rows
        self.tasks: TaskLedger = tasks
        self._clock = clock

    async def close(self) -> None:
        """Close the store (idempotent); later calls raise `LedgerError`."""
        await self._rows.close()

    # -- writes -----------------------------------------------------------------------------

    async def record_intent(self, record: JobRecord, *, budget: int | None = None) -> JobRecord:
        now = _now(self._clock)
        stored = as_intent(record, now)
        check = None
        if budget is not None and stored.provider in CREDIT_BUDGET_PROVIDERS:
            check = BudgetCheck(
                budget=budget,
                requested=stored.credits_requested,
                provider=stored.provider,
                sandbox=stored.sandbox,
                day=utc_day_start(now),
                now=now,
            )
        await self._rows.insert(stored, check)
        return stored

    async def complete_submit(
        self,
        job_id: str,
        *,
        upstream_ids: Sequence[str],
        state: JobState,
        raw_status: str | None,
        snapshot: JsonDict | None = None,
        result: JsonDict | None = None,
        credits_seen: int | None = None,
        next_check_at: datetime | None = None,
    ) -> JobRecord:
        if not upstream_ids:
            raise ValueError("an accepted submit has at least one upstream id")
        ids = list(dict.fromkeys(upstream_ids))

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(
                update={
                    "upstream_ids": ids,
                    "state": state,
                    "raw_status": raw_status,
                    "snapshot": old.snapshot if snapshot is None else snapshot,
                    "result": old.result if result is None else result,
                    "credits_seen": old.credits_seen if credits_seen is None else credits_seen,
                    "next_check_at": next_check_at,
                    "error": None,
                }
            )

        return await _write(self._rows, job_id, change, _now(self._clock), durable=True)

    async def fail_submit(
        self, job_id: str, *, error: ErrorLike, processed: Literal["no", "maybe"]
    ) -> JobRecord:
        details = error_dict(error)
        state = JobState.FAILED if processed == "no" else JobState.UNKNOWN
        raw = RAW_REJECTED if processed == "no" else RAW_OUTCOME_UNKNOWN

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(update={"state": state, "raw_status": raw, "error": details})

        return await _write(self._rows, job_id, change, _now(self._clock), durable=True)

    async def update(
        self,
        job_id: str,
        *,
        state: JobState,
        raw_status: str | None,
        snapshot: JsonDict | None = None,
        result: JsonDict | None = None,
        error: ErrorLike | None = None,
        credits_seen: int | None = None,
        next_check_at: datetime | None = None,
        add_warnings: Sequence[str] = (),
    ) -> JobRecord:
        details = None if error is None else error_dict(error)

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(
                update={
                    "state": state,
                    "raw_status": raw_status,
                    "snapshot": old.snapshot if snapshot is None else snapshot,
                    "result": old.result if result is None else result,
                    "error": old.error if details is None else details,
                    "credits_seen": old.credits_seen if credits_seen is None else credits_seen,
                    "next_check_at": old.next_check_at if next_check_at is None else next_check_at,
                    "warnings": list(dict.fromkeys([*old.warnings, *add_warnings])),
                }
            )

        return await _write(self._rows, job_id, change, _now(self._clock), durable=False)

    async def flag(self, job_id: str, key: str) -> None:
        if not key.isidentifier():
            raise ValueError(f"not a flag name: {key!r}")
        await self._rows.set_flag(job_id, key, _now(self._clock))

    # -- reads ------------------------------------------------------------------------------

    async def get(self, job_id: str, *, tenant: str) -> JobRecord | None:
        return await self._rows.get(job_id, tenant)

    async def find_by_upstream_id(self, upstream_id: str, *, tenant: str) -> JobRecord | None:
        return await self._rows.by_upstream_id(upstream_id, tenant)

    async def lookup(self, ids: Sequence[str], *, tenant: str) -> dict[str, JobRecord]:
        return await self._rows.lookup(ids, tenant)

    async def list(
        self,
        *,
        tenant: str,
        provider: str | None = None,
        state: JobState | None = None,
        since_hours: float | None = None,
        limit: int = 20,
        offset: int = 0,
        now: datetime | None = None,
    ) -> builtins.list[JobRecord]:
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        since = None
        if since_hours is not None:
            since = (now or _now(self._clock)) - timedelta(hours=since_hours)
        return await self._rows.select(JobQuery(tenant, provider, state, since, limit, offset))

    async def nonterminal(self, *, tenant: str | None = None) -> builtins.list[JobRecord]:
        return await self._rows.nonterminal(tenant)

    async def job_counts(self) -> dict[tuple[str, JobState], int]:
        return await self._rows.counts()

    async def credits_spent_today(
        self, *, tenant: str | None = None, sandbox: bool | None = None, now: datetime | None = None
    ) -> int:
        return await self._rows.spent(utc_day_start(now or _now(self._clock)), tenant, sandbox)

    async def recent_targets(
        self,
        keys: Sequence[str],
        *,
        tenant: str,
        within_days: float = 30,
        now: datetime | None = None,
    ) -> dict[str, str]:
        until = now or _now(self._clock)
        return await self._rows.recent_targets(
            keys, tenant, until - timedelta(days=within_days), until
        )
