"""Task records and the store they live in.

The store is the one thing an application must provide to make tasks durable: a task is
created in it before any work starts (the extension's "durably created before the
`CreateTaskResult`" rule), read back scoped to its owner, saved when its state changes, and
deleted once its ttl has run out. The store decides nothing: which changes are legal is
`TaskRecord.apply`'s business, and a store only has to refuse to overwrite a terminal record.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol, get_args

import anyio.lowlevel
from mcp.types import CallToolResult

TaskStatus = Literal["working", "input_required", "completed", "failed", "cancelled"]
"""The five statuses of the extension's `Task`."""

TERMINAL: frozenset[TaskStatus] = frozenset({"completed", "failed", "cancelled"})
"""Statuses a task never leaves."""

_SETTABLE = frozenset(get_args(TaskStatus)) - {"input_required"}


def tool_result_wire(result: CallToolResult | Mapping[str, Any]) -> dict[str, Any]:
    """A tool result as the wire carries it (camelCase, no nulls), for a completed task."""
    if isinstance(result, CallToolResult):
        return result.model_dump(by_alias=True, mode="json", exclude_none=True)
    return dict(result)


@dataclass(frozen=True, kw_only=True)
class TaskUpdate:
    """A change of a task's state, decided by the application.

    `None` keeps a field as it is, except `status_message` when the status changes: a new
    status starts with the message given here (or none), so a "40 % done" never outlives
    the work it described. `completed` needs the tool `result` (a `CallToolResult` or its
    wire dict); `failed` needs a JSON-RPC `error` (`{"code": int, "message": str}`), which the
    extension reserves for protocol-level faults: a tool that reports an error still
    completes, with `isError` in its result. `input_required` is not offered (this engine
    never asks the client for input, so it could never list the `inputRequests` it needs).
    """

    status: TaskStatus | None = None
    status_message: str | None = None
    result: CallToolResult | Mapping[str, Any] | None = None
    error: Mapping[str, Any] | None = None
    poll_interval_ms: int | None = None

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in _SETTABLE:
            raise ValueError(
                f"status {self.status!r} cannot be set; use one of {sorted(_SETTABLE)}"
            )
        if (self.result is not None) != (self.status == "completed"):
            raise ValueError("a result goes with status 'completed', and only with it")
        if (self.error is not None) != (self.status == "failed"):
            raise ValueError("an error goes with status 'failed', and only with it")
        if self.error is not None and not (
            isinstance(self.error.get("code"), int) and isinstance(self.error.get("message"), str)
        ):
            raise ValueError("error must be a JSON-RPC error: {'code': int, 'message': str}")
        if self.poll_interval_ms is not None and self.poll_interval_ms < 0:
            raise ValueError("poll_interval_ms must not be negative")


@dataclass(frozen=True, kw_only=True)
class TaskRecord:
    """One task as the store keeps it. Times are epoch seconds on the engine's clock."""

    task_id: str
    owner: str
    """Who may see the task (a tenant key); `""` when there is only one caller."""
    handle: str
    """The application's name for the work behind the task (e.g. a job id)."""
    tool: str
    status: TaskStatus = "working"
    status_message: str | None = None
    created_at: float
    updated_at: float
    ttl_ms: int | None
    """Lifetime from creation; `None` keeps the task until the application deletes it."""
    poll_interval_ms: int | None = None
    result: Mapping[str, Any] | None = None
    """The `CallToolResult` wire dict of a completed task."""
    error: Mapping[str, Any] | None = None
    """The JSON-RPC error of a failed task."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def expired(self, now: float) -> bool:
        return self.ttl_ms is not None and (now - self.created_at) * 1000 >= self.ttl_ms

    def apply(self, update: TaskUpdate, now: float) -> TaskRecord:
        """This record with `update` applied at `now`; a terminal record stays as it is."""
        if self.terminal:
            return self
        status = update.status or self.status
        if update.status is not None and update.status != self.status:
            message = update.status_message
        else:
            message = (
                self.status_message if update.status_message is None else update.status_message
            )
        return replace(
            self,
            status=status,
            status_message=message,
            result=None if update.result is None else tool_result_wire(update.result),
            error=None if update.error is None else dict(update.error),
            poll_interval_ms=(
                self.poll_interval_ms
                if update.poll_interval_ms is None
                else update.poll_interval_ms
            ),
            updated_at=now,
        )

    def same_state(self, other: TaskRecord) -> bool:
        """Equal in everything a client can see except the update time."""
        return replace(self, updated_at=0.0) == replace(other, updated_at=0.0)


class TaskStore(Protocol):
    """Where tasks live. Implement it over the application's durable storage.

    Every method is one atomic step; the engine never holds a store lock across calls.
    """

    async def create(self, record: TaskRecord) -> TaskRecord:
        """Insert `record`. If its `task_id` is stored already, return the stored record
        unchanged (a retried call finds its task instead of making a second one)."""
        ...

    async def get(self, task_id: str, owner: str | None) -> TaskRecord | None:
        """The record, or None when unknown or when `owner` is given and differs (a caller
        must not tell another owner's task from a missing one). `owner=None` is unscoped,
        for the application's own use."""
        ...

    async def save(self, record: TaskRecord) -> TaskRecord | None:
        """Replace the stored record with `record` unless the stored one is terminal; return
        what is stored afterwards, or None when the task is unknown (deleted meanwhile)."""
        ...

    async def delete_expired(self, now: float) -> int:
        """Delete every record whose ttl has run out at `now`; return how many."""
        ...


@dataclass
class InMemoryTaskStore:
    """A `TaskStore` in a dict: for tests and examples. Nothing survives the process."""

    records: dict[str, TaskRecord] = field(default_factory=dict)

    async def create(self, record: TaskRecord) -> TaskRecord:
        await anyio.lowlevel.checkpoint()
        return self.records.setdefault(record.task_id, record)

    async def get(self, task_id: str, owner: str | None) -> TaskRecord | None:
        await anyio.lowlevel.checkpoint()
        record = self.records.get(task_id)
        if record is None or (owner is not None and record.owner != owner):
            return None
        return record

    async def save(self, record: TaskRecord) -> TaskRecord | None:
        await anyio.lowlevel.checkpoint()
        stored = self.records.get(record.task_id)
        if stored is None or stored.terminal:
            return stored
        self.records[record.task_id] = record
        return record

    async def delete_expired(self, now: float) -> int:
        await anyio.lowlevel.checkpoint()
        gone = [task_id for task_id, record in self.records.items() if record.expired(now)]
        for task_id in gone:
            del self.records[task_id]
        return len(gone)
