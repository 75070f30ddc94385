"""What each ledger write does to a record, shared by every backend (they differ in storage only).

`as_intent` is what `record_intent` stores; `WriteRules` holds the writes that address a job
(`complete_submit`, `fail_submit`, `update`) on top of a backend's `_mutate`, which loads the
row, applies the change, `stamped` (terminal states stay terminal; the times), and stores it.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Literal

from mcp_server import telemetry
from mcp_server.ledger._sqlite_rows import _error_dict
from mcp_server.ledger.base import (
    RAW_OUTCOME_UNKNOWN,
    RAW_REJECTED,
    RAW_SUBMITTING,
    ErrorLike,
    JobRecord,
    JsonDict,
)
from mcp_server.models import JobState

_log = logging.getLogger("mcp_server.ledger")


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


class WriteRules(ABC):
    """`complete_submit`, `fail_submit` and `update` for a backend that provides `_mutate`:
    load the row for update, apply `change`, `stamped`, store, all in one transaction
    (`durable`: the commit waits for the disk)."""

    @abstractmethod
    async def _mutate(
        self, job_id: str, change: Callable[[JobRecord], JobRecord], *, durable: bool
    ) -> JobRecord: ...

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

        return await self._mutate(job_id, change, durable=True)

    async def fail_submit(
        self, job_id: str, *, error: ErrorLike, processed: Literal["no", "maybe"]
    ) -> JobRecord:
        details = _error_dict(error)
        state = JobState.FAILED if processed == "no" else JobState.UNKNOWN
        raw = RAW_REJECTED if processed == "no" else RAW_OUTCOME_UNKNOWN

        def change(old: JobRecord) -> JobRecord:
            return old.model_copy(update={"state": state, "raw_status": raw, "error": details})

        return await self._mutate(job_id, change, durable=True)

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
        details = None if error is None else _error_dict(error)

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

        return await self._mutate(job_id, change, durable=False)


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
    stored = new.model_copy(
        update={
            "updated_at": now,
            "finished_at": (old.finished_at or now) if new.state.terminal else None,
            "next_check_at": None if new.state.terminal else new.next_check_at,
        }
    )
    paid = old.raw_status == RAW_SUBMITTING and new.raw_status not in (RAW_SUBMITTING, RAW_REJECTED)
    telemetry.job_written(old, stored, spent=paid)
    return stored
