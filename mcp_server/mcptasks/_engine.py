"""The tasks runtime: one `TaskEngine` per server lifetime, opened and closed by the lifespan.

The engine owns no work. The application starts the work behind a task (`start`), says what
its durable state means for the task (`resolve`, on each `tasks/get`), decides what
cancelling means (`cancel`), and reports changes it sees (`TaskNotifier.update`/`refresh`,
e.g. from the watchers it already runs). The engine keeps the records in the application's
`TaskStore`, scopes every read to the caller's owner key, and fans changes out to listen
streams through a `TaskEventBus`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Protocol

import anyio.streams.memory
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.context import ServerRequestContext
from mcp.server.subscriptions import SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp.types import INVALID_PARAMS, CallToolRequestParams, CallToolResult

from mcp_server.mcptasks._bus import InMemoryTaskEventBus, TaskEventBus
from mcp_server.mcptasks._ids import TaskIds
from mcp_server.mcptasks._store import TaskRecord, TaskStore, TaskUpdate

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 24 * 60 * 60 * 1000
DEFAULT_POLL_INTERVAL_MS = 5_000
CANCELLED_BY_CLIENT = TaskUpdate(
    status="cancelled", status_message="Cancelled at the client's request."
)

Starter = Callable[["TaskCall"], Awaitable[None]]
"""Starts the work behind a tool call: calls `call.open(handle)` to make it a task (the
record is stored before `open` returns) and returns promptly. Not opening a task lets the call
run as an ordinary `tools/call`; do that for arguments that are not valid (they arrive as the
client sent them, unchecked), so the tool answers with its own validation error. A starter whose
work ended before it became a task (refused before anything durable happened) hands its result
to `call.answer(result)` instead, so the call is not run a second time."""
Resolver = Callable[[TaskRecord], Awaitable[TaskUpdate | None]]
"""Maps the application's durable state to the task's (None: unchanged). Called for tasks that
are not terminal on every `tasks/get` and `TaskNotifier.refresh`; keep it to local reads."""
Canceller = Callable[[TaskRecord], Awaitable[TaskUpdate | None]]
"""Decides what `tasks/cancel` means for a task that is not terminal; returns the update to
store (None: acknowledge and change nothing, since cancellation is cooperative)."""
OwnerOf = Callable[[ServerRequestContext[Any, Any]], str]
"""The owner (tenant) key of a request; tasks are visible only to their owner."""


def owner_from_access_token(ctx: ServerRequestContext[Any, Any]) -> str:
    """The default owner: the OAuth client and subject of the request's token, else `""`."""
    del ctx
    token = get_access_token()
    return "" if token is None else f"{token.client_id}\x1f{token.subject or ''}"


class TaskNotifier(Protocol):
    """What the application calls when it learns that a task's work moved."""

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        """Store `update` and tell listeners if anything visible changed. None: unknown id."""
        ...

    async def refresh(self, task_id: str) -> TaskRecord | None:
        """Ask the resolver for the task's state and store it (same effect as a `tasks/get`)."""
        ...


def not_found() -> MCPError:
    return MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task not found")


@dataclass(kw_only=True)
class TaskCall:
    """A `tools/call` from a client that declared the extension, offered to the `Starter`."""

    tool: str
    arguments: Mapping[str, Any]
    owner: str
    context: ServerRequestContext[Any, Any]
    """The request (its `lifespan_context`, transport request, ...)."""
    task: TaskRecord | None = None
    """The task `open` stored, if any."""
    answered: CallToolResult | None = None
    """The ordinary result `answer` gave, if any."""
    _engine: TaskEngine = field(repr=False)

    def answer(self, result: CallToolResult) -> None:
        """Answer the call with an ordinary result, without a task (the work is over)."""
        if self.task is not None:
            raise RuntimeError("this call already opened a task")
        self.answered = result

    async def open(
        self,
        handle: str,
        *,
        status_message: str | None = None,
        poll_interval_ms: int | None = None,
        ttl_ms: int | None = None,
    ) -> TaskRecord:
        """Store a `working` task for `handle` and return it. One task per call. Reopening
        a handle the owner already used returns that task as stored (retries stay one task);
        use a fresh handle for fresh work. `ttl_ms`/`poll_interval_ms` default to the engine's."""
        if self.task is not None or self.answered is not None:
            raise RuntimeError("a tool call opens at most one task, and only if not answered")
        engine = self._engine
        now = engine.clock()
        record = TaskRecord(
            task_id=engine.ids.mint(self.owner, handle),
            owner=self.owner,
            handle=handle,
            tool=self.tool,
            status_message=status_message,
            created_at=now,
            updated_at=now,
            ttl_ms=engine.ttl_ms if ttl_ms is None else ttl_ms,
            poll_interval_ms=engine.poll_interval_ms
            if poll_interval_ms is None
            else poll_interval_ms,
        )
        self.task = await engine.store.create(record)
        return self.task


class TaskEngine:
    """The tasks runtime; implements `TaskNotifier`. Use as `async with TaskEngine(...)`.

    `subscriptions`: the SDK bus the server was built with (`MCPServer(subscriptions=...)`),
    so a listen stream that asks for task ids and core change notifications gets both; without
    it such a stream acknowledges (and gets) only its task ids.
    """

    def __init__(
        self,
        store: TaskStore,
        *,
        start: Starter,
        resolve: Resolver | None = None,
        cancel: Canceller | None = None,
        owner: OwnerOf = owner_from_access_token,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        ttl_ms: int | None = DEFAULT_TTL_MS,
        poll_interval_ms: int = DEFAULT_POLL_INTERVAL_MS,
        bus: TaskEventBus | None = None,
        subscriptions: SubscriptionBus | None = None,
        max_streams: int = 1024,
        max_task_ids: int = 256,
        max_buffered_events: int = 1024,
    ) -> None:
        if ttl_ms is not None and ttl_ms <= 0:
            raise ValueError("ttl_ms must be positive (None for tasks that never expire)")
        if poll_interval_ms < 0:
            raise ValueError("poll_interval_ms must not be negative")
        self.store = store
        self.ids = TaskIds(secret)
        self.clock = clock
        self.ttl_ms = ttl_ms
        self.poll_interval_ms = poll_interval_ms
        self.bus: TaskEventBus = InMemoryTaskEventBus() if bus is None else bus
        self.subscriptions = subscriptions
        self.max_streams = max_streams
        self.max_task_ids = max_task_ids
        self.max_buffered_events = max_buffered_events
        self.streams: set[anyio.streams.memory.MemoryObjectSendStream[Any]] = set()
        self._start = start
        self._resolve = resolve
        self._cancel = cancel
        self._owner = owner

    async def __aenter__(self) -> TaskEngine:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """End every open listen stream gracefully (each sends its final result)."""
        for stream in list(self.streams):
            stream.close()
        self.streams.clear()

    # -- TaskNotifier: the application's side -------------------------------------------------

    async def update(self, task_id: str, update: TaskUpdate) -> TaskRecord | None:
        record = await self.store.get(task_id, None)
        return None if record is None else await self._store_update(record, update)

    async def refresh(self, task_id: str) -> TaskRecord | None:
        record = await self.store.get(task_id, None)
        return None if record is None else await self.current(record)

    async def sweep(self) -> int:
        """Delete the tasks whose ttl ran out; schedule it as often as the store needs."""
        return await self.store.delete_expired(self.clock())

    # -- the protocol's side (used by the extension and the listen middleware) ------------------

    def owner_of(self, ctx: ServerRequestContext[Any, Any]) -> str:
        return self._owner(ctx)

    async def begin(
        self, ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> TaskRecord | CallToolResult | None:
        """Offer the call to the starter: the task it opened, the ordinary result it answered
        with, or None to run the call as usual."""
        call = TaskCall(
            tool=params.name,
            arguments=params.arguments or {},
            owner=self.owner_of(ctx),
            context=ctx,
            _engine=self,
        )
        await self._start(call)
        return call.task if call.answered is None else call.answered

    async def visible(self, ctx: ServerRequestContext[Any, Any], task_id: str) -> TaskRecord:
        """The caller's task, or the not-found error (also for another owner's task)."""
        record = await self.store.get(task_id, self.owner_of(ctx))
        if record is None:
            raise not_found()
        if record.expired(self.clock()):
            raise MCPError(code=INVALID_PARAMS, message="Failed to retrieve task: Task has expired")
        return record

    async def current(self, record: TaskRecord) -> TaskRecord:
        """`record` brought up to date by the resolver (stored, and published if it moved)."""
        if record.terminal or self._resolve is None:
            return record
        try:
            update = await self._resolve(record)
        except Exception:  # a resolver bug must not break polling: serve the stored state
            log.exception("task resolver failed for %s; answering the stored state", record.task_id)
            return record
        return record if update is None else await self._store_update(record, update)

    async def cancel(self, record: TaskRecord) -> None:
        if record.terminal:
            return
        update = CANCELLED_BY_CLIENT if self._cancel is None else await self._cancel(record)
        if update is not None:
            await self._store_update(record, update)

    async def _store_update(self, before: TaskRecord, update: TaskUpdate) -> TaskRecord:
        after = before.apply(update, self.clock())
        if after.same_state(before):
            return before
        stored = await self.store.save(after)
        if stored is None:  # deleted meanwhile (expired and swept)
            return before
        await self.bus.publish(stored.task_id)
        return stored
