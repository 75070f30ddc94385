"""A toy MCP server with a slow tool, wired to `mcp_server.mcptasks` the way jobrelay will be.

`ToyApp` plays the application: its `jobs` dict is the durable state (jobrelay's ledger), its
`start` opens a task before any work (the ledger row written before the upstream POST), its
`resolve` maps a job to the task's state, and the test finishes jobs and reports them through
the engine's notifier, as jobrelay's watchers will. Nothing here sleeps: a job ends when the
test says so.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import jsonschema
import pytest
import uvicorn
from conftest import loopback_uvicorn
from mcp import Client, MCPError
from mcp.client.session import IncomingMessage
from mcp.server.context import ServerMiddleware, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp.types import (
    CLIENT_INFO_META_KEY,
    CallToolRequest,
    CallToolRequestParams,
    CallToolResult,
    Implementation,
    SubscriptionFilter,
    SubscriptionsAcknowledgedNotification,
    SubscriptionsListenRequest,
    SubscriptionsListenRequestParams,
    SubscriptionsListenResult,
    TextContent,
)
from pydantic import TypeAdapter

from mcp_server.mcptasks import (
    GetTaskRequest,
    InMemoryTaskStore,
    TaskCall,
    TaskEngine,
    TaskIdParams,
    TaskRecord,
    TasksClient,
    TasksExtension,
    TaskState,
    TaskUpdate,
)

SCHEMA_PATH = (
    Path(__file__).resolve().parents[3] / "shared" / "reference" / "mcp-ext-tasks.schema.json"
)
RAW = TypeAdapter(dict[str, Any])
POLL_MS = 7
"""The toy's pollIntervalMs: odd enough that a client honouring it is visible."""


class FakeTime:
    """The engine's clock in tests: epoch seconds that move only when the test says."""

    def __init__(self, start: float = 1_790_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now


def toy_result(label: str) -> CallToolResult:
    """What `slow` returns, ordinary or as a task."""
    text = f"did {label}"
    return CallToolResult(
        content=[TextContent(type="text", text=text)], structured_content={"result": text}
    )


def owner_from_client_name(ctx: ServerRequestContext[Any, Any]) -> str:
    """Tenants in tests: the client's declared name (jobrelay will use its key fingerprints)."""
    info: dict[str, Any] = dict((ctx.meta or {}).get(CLIENT_INFO_META_KEY) or {})
    return str(info.get("name", ""))


@dataclass
class ToyApp:
    time: FakeTime = field(default_factory=FakeTime)
    store: InMemoryTaskStore = field(default_factory=InMemoryTaskStore)
    jobs: dict[str, CallToolResult | None] = field(default_factory=dict)
    """handle -> the job's result, None while it runs: the app's own durable state."""
    cancelled: list[str] = field(default_factory=list)
    engine: TaskEngine | None = None
    secret: bytes = b"toy-secret-0123456789abcdef"
    fixed_handle: str | None = None
    """Open every task under this one handle (a client retrying the same call)."""
    _handles: count[int] = field(default_factory=lambda: count(1))

    opened: list[TaskRecord] = field(default_factory=list)
    """Every task the starter opened, in order."""
    _taken: int = 0
    _opened_changed: anyio.Event = field(default_factory=anyio.Event)

    async def start(self, call: TaskCall) -> None:
        label = call.arguments.get("label")
        if not isinstance(label, str) or label == "inline":
            return  # declined: the call runs as an ordinary tools/call (and validates)
        handle = self.fixed_handle or f"job-{next(self._handles)}"
        self.jobs.setdefault(handle, None)
        self.opened.append(await call.open(handle, status_message="queued"))
        changed, self._opened_changed = self._opened_changed, anyio.Event()
        changed.set()

    async def resolve(self, record: TaskRecord) -> TaskUpdate | None:
        result = self.jobs.get(record.handle)
        if result is None:
            return TaskUpdate(status_message="running")
        return TaskUpdate(status="completed", result=result, status_message="done")

    async def cancel(self, record: TaskRecord) -> TaskUpdate:
        self.cancelled.append(record.handle)
        return TaskUpdate(
            status="cancelled",
            status_message="Stopped following the job; the upstream job itself cannot be stopped.",
        )

    def live(self) -> TaskEngine:
        assert self.engine is not None, "the toy server is not running"
        return self.engine

    async def finish(self, record: TaskRecord, label: str = "it") -> None:
        """The job ends; the watcher tells the engine (which re-resolves and publishes)."""
        self.jobs[record.handle] = toy_result(label)
        await self.live().refresh(record.task_id)

    async def next_opened(self) -> TaskRecord:
        """The next task the starter opened (waiting, bounded, until there is one)."""
        with anyio.fail_after(5):
            while len(self.opened) <= self._taken:
                await self._opened_changed.wait()
        self._taken += 1
        return self.opened[self._taken - 1]


def build_toy(
    app: ToyApp,
    *,
    ttl_ms: int | None = 60_000,
    middleware: Sequence[ServerMiddleware[Any]] = (),
    **engine_options: Any,
) -> MCPServer[TaskEngine]:
    """The toy server; `engine_options` go to its `TaskEngine` (limits, a bus, ...)."""
    bus = InMemorySubscriptionBus()
    tasks = TasksExtension(tools={"slow"}, engine=lambda engine: engine)

    @asynccontextmanager
    async def lifespan(server: MCPServer[TaskEngine]) -> AsyncIterator[TaskEngine]:
        async with TaskEngine(
            app.store,
            start=app.start,
            resolve=app.resolve,
            cancel=app.cancel,
            owner=owner_from_client_name,
            secret=app.secret,
            clock=app.time,
            ttl_ms=ttl_ms,
            poll_interval_ms=POLL_MS,
            subscriptions=bus,
            **engine_options,
        ) as engine:
            app.engine = engine
            try:
                yield engine
            finally:
                app.engine = None

    server = MCPServer(
        "toy",
        version="1.0.0",
        extensions=[tasks],
        middleware=[*middleware, tasks.listen_middleware],
        lifespan=lifespan,
        subscriptions=bus,
        log_level="WARNING",
    )

    @server.tool()
    async def slow(label: str) -> str:
        """Slow work; a task for clients that declare the tasks extension."""
        return f"did {label}"

    @server.tool()
    async def quick() -> str:
        """Never a task."""
        return "quick"

    @server.tool()
    async def touch_tools(ctx: Context[TaskEngine]) -> str:
        """Publishes a core tools/list_changed event (for mixed listen streams)."""
        await ctx.notify_tools_changed()
        return "touched"

    return server


# -- client side --------------------------------------------------------------------------------


class Naps:
    """`TasksClient(sleep=...)`: records the waits asked for, waits no real time."""

    def __init__(self) -> None:
        self.asked: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.asked.append(seconds)
        await anyio.lowlevel.checkpoint()


@dataclass
class Inbox:
    """What a client received on listen streams: acknowledgements and task notifications."""

    acks: list[SubscriptionFilter] = field(default_factory=list)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    other: list[str] = field(default_factory=list)
    _changed: anyio.Event = field(default_factory=anyio.Event)

    async def on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, SubscriptionsAcknowledgedNotification):
            self.acks.append(message.params.notifications)
        elif not isinstance(message, Exception):
            self.other.append(message.method)
        self.wake()

    async def on_task(self, state: TaskState) -> None:
        self.tasks.append(state.model_dump(by_alias=True, mode="json", exclude_unset=True))
        self.wake()

    def wake(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def wait_for(self, predicate: Callable[[Inbox], bool], within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while not predicate(self):
                await self._changed.wait()

    def statuses(self, task_id: str) -> list[str]:
        return [n["status"] for n in self.tasks if n["taskId"] == task_id]


def tasks_client(
    server_or_url: Any, name: str = "alice", *, inbox: Inbox | None = None, **kw: Any
) -> Client:
    """A client that declares the extension (named `name`, which the toy uses as the owner)."""
    inbox = inbox or Inbox()
    return Client(
        server_or_url,
        extensions=[TasksClient(on_notification=inbox.on_task, **kw)],
        client_info=Implementation(name=name, version="0"),
        message_handler=inbox.on_message,
    )


async def raw_call(client: Client, tool: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """`tools/call` answered as the wire carries it (the task handle is not resolved)."""
    request = CallToolRequest(params=CallToolRequestParams(name=tool, arguments=dict(arguments)))
    with anyio.fail_after(5):
        return await client.session.send_request(request, RAW)


async def raw_get(client: Client, task_id: str) -> dict[str, Any]:
    with anyio.fail_after(5):
        return await client.session.send_request(
            GetTaskRequest(params=TaskIdParams(task_id=task_id)), RAW
        )


@dataclass
class Listen:
    """One open listen stream: what the server acknowledged, and how the stream ended."""

    acked: SubscriptionFilter
    ended: anyio.Event
    result: list[SubscriptionsListenResult]


@asynccontextmanager
async def listening(client: Client, inbox: Inbox, **notifications: Any) -> AsyncIterator[Listen]:
    """Open a listen stream with the given filter (wire names, e.g. `taskIds=[...]`). The
    SDK's `Client.listen` cannot send `taskIds`, so this sends the raw request and reads the
    acknowledgement from the message handler. A refused request raises its `MCPError`."""
    request = SubscriptionsListenRequest(
        params=SubscriptionsListenRequestParams(
            notifications=SubscriptionFilter.model_validate(notifications)
        )
    )
    before = len(inbox.acks)
    ended = anyio.Event()
    results: list[SubscriptionsListenResult] = []
    refused: list[MCPError] = []

    async def run() -> None:
        try:
            results.append(await client.session.send_request(request, SubscriptionsListenResult))
        except MCPError as error:
            refused.append(error)
        ended.set()
        inbox.wake()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await inbox.wait_for(lambda box: len(box.acks) > before or bool(refused))
        if not refused:
            yield Listen(acked=inbox.acks[-1], ended=ended, result=results)
        tg.cancel_scope.cancel()
    if refused:
        raise refused[0]


# -- schema -------------------------------------------------------------------------------------


def schema_or_skip() -> dict[str, Any]:
    if not SCHEMA_PATH.exists():
        pytest.skip(f"the extension's schema is not at {SCHEMA_PATH} (../shared/reference/)")
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def assert_valid(definition: str, instance: Any) -> None:
    """`instance` conforms to `$defs/<definition>` of the extension's schema."""
    root = schema_or_skip()
    jsonschema.Draft202012Validator({**root, "$ref": f"#/$defs/{definition}"}).validate(instance)


def assert_notification_valid(params: Mapping[str, Any]) -> None:
    assert_valid(
        "TaskStatusNotification",
        {"jsonrpc": "2.0", "method": "notifications/tasks", "params": params},
    )


# -- HTTP ---------------------------------------------------------------------------------------


@asynccontextmanager
async def serving_http(server: MCPServer[Any]) -> AsyncIterator[str]:
    """`server` over Streamable HTTP on an ephemeral loopback port; yields its `/mcp` URL."""
    app = server.streamable_http_app()

    def config(port: int) -> uvicorn.Config:
        return uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")

    async with loopback_uvicorn(config) as root:
        yield f"{root}/mcp"
