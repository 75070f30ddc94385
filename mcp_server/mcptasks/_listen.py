"""`notifications/tasks` over `subscriptions/listen` with a `taskIds` filter.

The SDK's listen handler cannot carry them (its filter and event types are closed over the core
notifications) and extensions may not rebind `subscriptions/listen`, so this is a server
middleware: it takes over exactly the 2026-07-28 listen requests whose filter names `taskIds`
and passes everything else on. A stream it serves behaves like the SDK's: acknowledgement
first, every frame stamped with the subscription id, a bounded backlog that ends the stream
when a client stops reading, and a final result when the engine closes. It also carries the
core change notifications the same request asked for, when the engine knows the SDK bus.

Honoured task ids are those the caller owns and that have not expired; the acknowledgement
lists them, so an unknown id and another owner's id look the same. Right after the
acknowledgement each honoured task's current state is sent once, so a task that finished
between the client's last poll and its listen is not missed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, cast

import anyio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import require_client_extension
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import (
    SUBSCRIPTION_ID_META_KEY,
    ServerEvent,
    event_matches,
    event_to_notification,
)
from mcp.types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    ServerNotification,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsAcknowledgedNotificationParams,
    SubscriptionsListenRequestParams,
)
from pydantic import ValidationError

from mcp_server.mcptasks._engine import TaskEngine
from mcp_server.mcptasks._wire import (
    EXTENSION_ID,
    PROTOCOL_VERSIONS,
    TaskStatusNotification,
    detailed_task,
)

log = logging.getLogger(__name__)


def _asks_for_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    if ctx.method != "subscriptions/listen" or ctx.request_id is None:
        return False
    if ctx.protocol_version not in PROTOCOL_VERSIONS:
        return False  # the SDK answers "Method not found" on handshake-era wires
    notifications = (ctx.params or {}).get("notifications")
    return isinstance(notifications, Mapping) and "taskIds" in notifications


def _core_subset(requested: SubscriptionFilter) -> SubscriptionFilter:
    """The core kinds asked for, in the shape the SDK acknowledges them (falsy ones dropped)."""
    return SubscriptionFilter(
        tools_list_changed=requested.tools_list_changed or None,
        prompts_list_changed=requested.prompts_list_changed or None,
        resources_list_changed=requested.resources_list_changed or None,
        resource_subscriptions=list(requested.resource_subscriptions or ()) or None,
    )


class TaskListenMiddleware:
    """A `ServerMiddleware` serving listen streams that ask for `taskIds`."""

    def __init__(self, engine_of: Callable[[ServerRequestContext[Any, Any]], TaskEngine]) -> None:
        self._engine_of = engine_of

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        if not _asks_for_tasks(ctx):
            return await call_next(ctx)
        try:
            params = SubscriptionsListenRequestParams.model_validate(ctx.params, by_name=False)
        except ValidationError:
            raise MCPError(INVALID_PARAMS, "Invalid subscriptions/listen parameters") from None
        require_client_extension(ctx, EXTENSION_ID)
        engine = self._engine_of(ctx)
        task_ids = (params.notifications.model_extra or {}).get("taskIds")
        if not isinstance(task_ids, list) or not all(isinstance(t, str) for t in task_ids):
            raise MCPError(
                INVALID_PARAMS, "notifications.taskIds must be a list of task id strings"
            )
        if len(task_ids) > engine.max_task_ids:
            raise MCPError(
                INVALID_PARAMS,
                f"notifications.taskIds names {len(task_ids)} tasks; at most "
                f"{engine.max_task_ids} fit on one stream, open another for the rest",
            )
        if len(engine.streams) >= engine.max_streams:
            raise MCPError(INTERNAL_ERROR, "Subscription limit reached")
        return await _serve(engine, ctx, params.notifications, cast("list[str]", task_ids))


async def _serve(
    engine: TaskEngine,
    ctx: ServerRequestContext[Any, Any],
    requested: SubscriptionFilter,
    task_ids: list[str],
) -> HandlerResult:
    request_id = ctx.request_id
    owner = engine.owner_of(ctx)
    now = engine.clock()
    honored_ids: list[str] = []
    for task_id in dict.fromkeys(task_ids):
        record = await engine.store.get(task_id, owner)
        if record is not None and not record.expired(now):
            honored_ids.append(task_id)
            # Resolved as `tasks/get` would be (before this stream listens, so the change is
            # not sent twice): an application that resumes work on a read resumes it here too.
            await engine.current(record)
    watched = frozenset(honored_ids)
    core = _core_subset(requested) if engine.subscriptions is not None else SubscriptionFilter()
    uris = frozenset(core.resource_subscriptions or ())
    meta: dict[str, Any] = {SUBSCRIPTION_ID_META_KEY: request_id}
    send, receive = anyio.create_memory_object_stream[str | ServerEvent](engine.max_buffered_events)

    def push(item: str | ServerEvent) -> None:
        try:
            send.send_nowait(item)
        except anyio.ClosedResourceError:
            pass  # the stream is closing
        except anyio.WouldBlock:
            log.warning("task listen stream %r backlog full; ending the stream", request_id)
            engine.streams.discard(send)
            send.close()

    def on_task(task_id: str) -> None:
        if task_id in watched:
            push(task_id)

    def on_event(event: ServerEvent) -> None:
        if event_matches(core, uris, event):
            push(event)

    unsubscribes = [engine.bus.subscribe(on_task)]
    if engine.subscriptions is not None:
        unsubscribes.append(engine.subscriptions.subscribe(on_event))
    engine.streams.add(send)
    acknowledged = SubscriptionFilter.model_validate(
        {**core.model_dump(by_alias=True, exclude_none=True), "taskIds": honored_ids}
    )
    try:
        await ctx.session.send_notification(
            SubscriptionsAcknowledgedNotification(
                params=SubscriptionsAcknowledgedNotificationParams(
                    notifications=acknowledged, _meta=meta
                )
            ),
            related_request_id=request_id,
        )
        for task_id in honored_ids:
            await _send_task(engine, ctx, owner, task_id, meta)
        async for item in receive:
            if isinstance(item, str):
                await _send_task(engine, ctx, owner, item, meta)
            else:
                await ctx.session.send_notification(
                    event_to_notification(item, meta), related_request_id=request_id
                )
    finally:
        for unsubscribe in unsubscribes:
            unsubscribe()
        engine.streams.discard(send)
        send.close()
        receive.close()
    return {"resultType": "complete", "_meta": meta}


async def _send_task(
    engine: TaskEngine,
    ctx: ServerRequestContext[Any, Any],
    owner: str,
    task_id: str,
    meta: dict[str, Any],
) -> None:
    """Send what `tasks/get` would answer now; nothing for a task deleted or expired since."""
    record = await engine.store.get(task_id, owner)
    if record is None or record.expired(engine.clock()):
        return
    notification = TaskStatusNotification(params={**detailed_task(record), "_meta": meta})
    # The session's signature names the core notification union; it sends any Notification
    # model (it only dumps it), and `notifications/tasks` is the extension's own method.
    await ctx.session.send_notification(
        cast("ServerNotification", notification), related_request_id=ctx.request_id
    )
