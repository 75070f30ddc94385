"""The client half: `TasksClient` makes `Client.call_tool` wait out a task transparently.

Passing `TasksClient()` in `Client(extensions=[...])` declares the extension on every
2026-07-28 request and claims `resultType: "task"`: the SDK hands the `CreateTaskResult` to
`_poll`, which polls `tasks/get` at the server's `pollIntervalMs` and returns the task's tool
result as if the call had been ordinary. `get_task`/`cancel_task` serve a caller that handles
the task itself (`call_tool(..., allow_claimed=True)` returns the `CreateTaskResult`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
from mcp.client import ClaimContext, ClientExtension, ResultClaim
from mcp.client.extension import NotificationBinding
from mcp.client.session import ClientSession
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, CallToolResult, EmptyResult

from mcp_server.mcptasks._wire import (
    EXTENSION_ID,
    CancelTaskRequest,
    CreateTaskResult,
    GetTaskRequest,
    TaskIdParams,
    TaskState,
)

OnTask = Callable[[TaskState], Awaitable[None]]

REQUEST_CANCELLED = -32800
"""The code a cancelled task's call raises with (JSON-RPC's "request cancelled")."""


async def get_task(session: ClientSession, task_id: str) -> TaskState:
    return await session.send_request(
        GetTaskRequest(params=TaskIdParams(task_id=task_id)), TaskState
    )


async def cancel_task(session: ClientSession, task_id: str) -> None:
    await session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=task_id)), EmptyResult)


class TasksClient(ClientExtension):
    """`on_status` sees every polled state; `on_notification` every `notifications/tasks`
    (delivered when a listen stream with `taskIds` is open). `sleep` waits between polls."""

    identifier = EXTENSION_ID

    def __init__(
        self,
        *,
        on_status: OnTask | None = None,
        on_notification: OnTask | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        default_poll_ms: int = 1_000,
        max_poll_ms: int = 30_000,
    ) -> None:
        self._on_status = on_status
        self._on_notification = on_notification
        self._sleep = sleep
        self._default_poll_ms = default_poll_ms
        self._max_poll_ms = max_poll_ms

    def claims(self) -> Sequence[ResultClaim[Any]]:
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._poll)]

    def notifications(self) -> Sequence[NotificationBinding[Any]]:
        if self._on_notification is None:
            return ()
        return [
            NotificationBinding(
                method="notifications/tasks", params_type=TaskState, handler=self._on_notification
            )
        ]

    async def _poll(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        interval_ms = created.poll_interval_ms
        while True:
            state = await get_task(ctx.session, created.task_id)
            if self._on_status is not None:
                await self._on_status(state)
            if state.status == "completed":
                return CallToolResult.model_validate(state.result or {}, by_name=False)
            if state.status == "failed":
                error = state.error or {}
                raise MCPError(
                    code=int(error.get("code", INTERNAL_ERROR)),
                    message=str(error.get("message", state.status_message or "Task failed")),
                    data=error.get("data"),
                )
            if state.status == "cancelled":
                raise MCPError(REQUEST_CANCELLED, state.status_message or "Task cancelled")
            if state.poll_interval_ms is not None:
                interval_ms = state.poll_interval_ms
            wait_ms = self._default_poll_ms if interval_ms is None else interval_ms
            await self._sleep(min(wait_ms, self._max_poll_ms) / 1000)
