"""`TasksExtension`: the SDK extension that speaks `io.modelcontextprotocol/tasks`.

It holds configuration only (which tools may become tasks, where to find the engine); all
state lives in the `TaskEngine` the server's lifespan opens, found per request through
`engine(ctx.lifespan_context)`. What the SDK's hooks allow, and what this does with them:

- `intercept_tool_call`: for the configured tools, and only when the request is on a
  2026-07-28 wire and its own client capabilities declare the extension, the application's
  starter may open a task; the call then answers `resultType: "task"` (the runner leaves
  extension result types unvalidated). Everything else runs the ordinary call untouched.
- `methods()`: `tasks/get`, `tasks/update`, `tasks/cancel`, bound to 2026-07-28 only (a
  handshake-era request for them is "Method not found").
- `subscriptions/listen` with `taskIds` cannot be reached through extension hooks: a
  `MethodBinding` may not name a spec method and the SDK's `ListenHandler` drops filter keys
  it does not know. `listen_middleware` (pass it to `MCPServer(middleware=[...])`) serves
  exactly the listen requests that carry `taskIds`; all others go on to the SDK's handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, TypeVar

from mcp.server.context import CallNext, HandlerResult, ServerMiddleware, ServerRequestContext
from mcp.server.extension import Extension, MethodBinding
from mcp.server.mcpserver import MCPServer, require_client_extension
from mcp.types import CallToolRequestParams, CallToolResult

from mcp_server.mcptasks._engine import TaskEngine
from mcp_server.mcptasks._listen import TaskListenMiddleware
from mcp_server.mcptasks._wire import (
    EXTENSION_ID,
    PROTOCOL_VERSIONS,
    TaskIdParams,
    UpdateTaskParams,
    detailed_task,
    task_fields,
)

_Server = TypeVar("_Server", bound=MCPServer[Any])

EngineOf = Callable[[Any], TaskEngine]
"""Finds the engine in the lifespan context, e.g. `lambda state: state.tasks`."""


def declares_tasks(ctx: ServerRequestContext[Any, Any]) -> bool:
    """Whether this request may be answered with a task: a 2026-07-28 request whose own
    client capabilities list the extension."""
    if ctx.protocol_version not in PROTOCOL_VERSIONS:
        return False
    capabilities = ctx.session.client_capabilities
    return bool(
        capabilities and capabilities.extensions and EXTENSION_ID in capabilities.extensions
    )


class TasksExtension(Extension):
    identifier = EXTENSION_ID

    def __init__(self, *, tools: Iterable[str], engine: EngineOf) -> None:
        self.task_tools = frozenset(tools)
        self._engine_of = engine

    @property
    def listen_middleware(self) -> ServerMiddleware[Any]:
        return TaskListenMiddleware(self._engine)

    def _engine(self, ctx: ServerRequestContext[Any, Any]) -> TaskEngine:
        return self._engine_of(ctx.lifespan_context)

    def methods(self) -> Sequence[MethodBinding]:
        return [
            MethodBinding(
                "tasks/get", TaskIdParams, self._get, protocol_versions=PROTOCOL_VERSIONS
            ),
            MethodBinding(
                "tasks/update", UpdateTaskParams, self._update, protocol_versions=PROTOCOL_VERSIONS
            ),
            MethodBinding(
                "tasks/cancel", TaskIdParams, self._cancel, protocol_versions=PROTOCOL_VERSIONS
            ),
        ]

    async def intercept_tool_call(
        self,
        params: CallToolRequestParams,
        ctx: ServerRequestContext[Any, Any],
        call_next: CallNext,
    ) -> HandlerResult:
        if params.name in self.task_tools and declares_tasks(ctx):
            begun = await self._engine(ctx).begin(ctx, params)
            if isinstance(begun, CallToolResult):
                return begun
            if begun is not None:
                return {"resultType": "task", **task_fields(begun)}
        return await call_next(ctx)

    async def _get(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        require_client_extension(ctx, EXTENSION_ID)
        engine = self._engine(ctx)
        record = await engine.current(await engine.visible(ctx, params.task_id))
        return {"resultType": "complete", **detailed_task(record)}

    async def _update(
        self, ctx: ServerRequestContext[Any, Any], params: UpdateTaskParams
    ) -> HandlerResult:
        """Acknowledge: this engine never asks for input, so every response answers a key that
        is not outstanding, which the extension says to ignore."""
        require_client_extension(ctx, EXTENSION_ID)
        await self._engine(ctx).visible(ctx, params.task_id)
        return {"resultType": "complete"}

    async def _cancel(
        self, ctx: ServerRequestContext[Any, Any], params: TaskIdParams
    ) -> HandlerResult:
        require_client_extension(ctx, EXTENSION_ID)
        engine = self._engine(ctx)
        await engine.cancel(await engine.visible(ctx, params.task_id))
        return {"resultType": "complete"}


def direct_tool_calls(server: _Server, extension: TasksExtension) -> _Server:
    """`tools/call` as one plain dispatcher instead of the SDK's interceptor chain.

    For an extension that overrides `intercept_tool_call`, the SDK wraps every tool call in
    four more coroutines and two closures (`compose_tool_call_handler`), all held for the
    whole call: ~1.5 KB per open `wait_for_job`, 1.5 MB at 1,000 (BENCHMARKS.md, scale). Here
    a call that may become a task goes through `extension.intercept_tool_call` as before, and
    every other call is the SDK's own handler's coroutine, nothing around it. Only for a server
    whose one intercepting extension is `extension` (jobrelay's). The SDK names the bare
    handler and the low-level server privately (`_lowlevel_server` is v2's name, MCP_SDK_V2.md
    section 8); tests/test_tasks*.py run task and plain calls through jobrelay's server.
    """
    bare: Callable[[ServerRequestContext[Any, Any], CallToolRequestParams], Any] | None
    bare = getattr(server, "_handle_call_tool", None)
    lowlevel = getattr(server, "_lowlevel_server", None)
    if bare is None or lowlevel is None or not hasattr(lowlevel, "add_request_handler"):
        # An SDK that renamed them: keep its own interceptor chain (same behaviour, ~1.5 KB
        # more per open call) rather than fail to start.
        return server

    def handle(
        ctx: ServerRequestContext[Any, Any], params: CallToolRequestParams
    ) -> Awaitable[HandlerResult]:
        if params.name in extension.task_tools and declares_tasks(ctx):
            return extension.intercept_tool_call(params, ctx, lambda inner: bare(inner, params))
        result: Awaitable[HandlerResult] = bare(ctx, params)
        return result

    lowlevel.add_request_handler("tools/call", CallToolRequestParams, handle)
    return server
