"""The extension's wire shapes (`reference/mcp-ext-tasks.schema.json`, SEP-2663, 2026-07-28).

Server answers are built as dicts by `task_fields`/`detailed_task`, not dumped from models:
the SDK dumps models with `exclude_none`, which would drop the `ttlMs: null` an unlimited
task must carry (`ttlMs` is required and nullable). The models below are for parsing, on the
client side and for validating request params on the server side.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from mcp.types import Notification, Request, RequestParams, Result

from mcp_server.mcptasks._store import TaskRecord, TaskStatus

EXTENSION_ID = "io.modelcontextprotocol/tasks"
PROTOCOL_VERSIONS = frozenset({"2026-07-28"})
"""The wire versions that carry the extension (it does not exist on handshake-era wires)."""


def _iso(epoch: float) -> str:
    return (
        datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    )


def task_fields(record: TaskRecord) -> dict[str, Any]:
    """The `Task` object of `record`: what `CreateTaskResult` carries."""
    fields: dict[str, Any] = {
        "taskId": record.task_id,
        "status": record.status,
        "createdAt": _iso(record.created_at),
        "lastUpdatedAt": _iso(record.updated_at),
        "ttlMs": record.ttl_ms,
    }
    if record.status_message is not None:
        fields["statusMessage"] = record.status_message
    if record.poll_interval_ms is not None:
        fields["pollIntervalMs"] = record.poll_interval_ms
    return fields


def detailed_task(record: TaskRecord) -> dict[str, Any]:
    """The `DetailedTask` of `record`: what `tasks/get` and `notifications/tasks` carry."""
    fields = task_fields(record)
    if record.status == "completed":
        fields["result"] = dict(record.result or {})
    elif record.status == "failed":
        fields["error"] = dict(record.error or {"code": -32603, "message": "Task failed"})
    return fields


class TaskIdParams(RequestParams):
    task_id: str


class UpdateTaskParams(TaskIdParams):
    input_responses: dict[str, Any]


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    params: TaskIdParams
    name_param = "taskId"  # SEP-2663: the task id travels in the Mcp-Name header on HTTP


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    params: TaskIdParams
    name_param = "taskId"


class UpdateTaskRequest(Request[UpdateTaskParams, Literal["tasks/update"]]):
    method: Literal["tasks/update"] = "tasks/update"
    params: UpdateTaskParams
    name_param = "taskId"


class _Task(Result):
    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class TaskState(_Task):
    """A `DetailedTask` as a client reads it from `tasks/get` or `notifications/tasks`."""

    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class CreateTaskResult(_Task):
    """The `resultType: "task"` answer to `tools/call` (a `Task` plus the discriminator)."""

    result_type: Literal["task"] = "task"


class TaskStatusNotification(Notification[dict[str, Any], Literal["notifications/tasks"]]):
    """`notifications/tasks`; params stay a dict so a `ttlMs: null` survives the SDK's dump."""

    method: Literal["notifications/tasks"] = "notifications/tasks"
