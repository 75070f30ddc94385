"""MCP tasks (`io.modelcontextprotocol/tasks`, SEP-2663, protocol 2026-07-28) for MCP SDK 2.3.

Self-contained: it imports the MCP SDK, anyio and pydantic, nothing from jobrelay. Wiring::

    tasks = TasksExtension(tools={"render"}, engine=lambda state: state.tasks)

    @asynccontextmanager
    async def lifespan(server):
        async with TaskEngine(store, start=start, resolve=resolve) as engine:
            yield State(tasks=engine)

    mcp = MCPServer("x", extensions=[tasks], middleware=[tasks.listen_middleware],
                    lifespan=lifespan)

The application implements a `TaskStore` (or uses `InMemoryTaskStore`), a `Starter` that
opens the task and starts the work, optionally a `Resolver` (durable state to task state on
`tasks/get`) and a `Canceller`, and calls the engine's `TaskNotifier` methods when the work
moves. Clients use `TasksClient` in `Client(extensions=[...])`.
"""

from mcp_server.mcptasks._bus import InMemoryTaskEventBus, TaskEventBus
from mcp_server.mcptasks._client import REQUEST_CANCELLED, TasksClient, cancel_task, get_task
from mcp_server.mcptasks._engine import (
    DEFAULT_POLL_INTERVAL_MS,
    DEFAULT_TTL_MS,
    Canceller,
    OwnerOf,
    Resolver,
    Starter,
    TaskCall,
    TaskEngine,
    TaskNotifier,
    owner_from_access_token,
)
from mcp_server.mcptasks._extension import TasksExtension, declares_tasks, direct_tool_calls
from mcp_server.mcptasks._store import (
    TERMINAL,
    InMemoryTaskStore,
    TaskRecord,
    TaskStatus,
    TaskStore,
    TaskUpdate,
)
from mcp_server.mcptasks._wire import (
    EXTENSION_ID,
    CancelTaskRequest,
    CreateTaskResult,
    GetTaskRequest,
    TaskIdParams,
    TaskState,
    UpdateTaskParams,
    UpdateTaskRequest,
)

__all__ = [
    "DEFAULT_POLL_INTERVAL_MS",
    "DEFAULT_TTL_MS",
    "EXTENSION_ID",
    "REQUEST_CANCELLED",
    "TERMINAL",
    "CancelTaskRequest",
    "Canceller",
    "CreateTaskResult",
    "GetTaskRequest",
    "InMemoryTaskEventBus",
    "InMemoryTaskStore",
    "OwnerOf",
    "Resolver",
    "Starter",
    "TaskCall",
    "TaskEngine",
    "TaskEventBus",
    "TaskIdParams",
    "TaskNotifier",
    "TaskRecord",
    "TaskState",
    "TaskStatus",
    "TaskStore",
    "TaskUpdate",
    "TasksClient",
    "TasksExtension",
    "UpdateTaskParams",
    "UpdateTaskRequest",
    "cancel_task",
    "declares_tasks",
    "direct_tool_calls",
    "get_task",
    "owner_from_access_token",
]
