"""The MCP server: `build_server(settings)` and the runtime its lifespan owns.

The lifespan opens, in order, the ledger, a task group for background loops (poll coalescers,
stream followers), the embedded sandbox on an ephemeral loopback port when a provider has no
key (a real server, not ASGITransport, so progress streams live), and the HTTP clients; it
closes them in reverse. Tools reach it as `ctx.request_context.lifespan_context`.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
import uvicorn
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError, UnexpectedToolError
from mcp.types import Resource as MCPResource
from mcp.types import Tool as MCPTool
from pydantic import SecretStr, ValidationError

from mcp_server import __version__, telemetry
from mcp_server import _bounds as B
from mcp_server._bounds import MAX_ARGUMENT_DEPTH
from mcp_server._clock import Clock, SystemClock
from mcp_server._gauges import start_sampling
from mcp_server._jsonrpc_guard import argument_depth
from mcp_server._schema import compact, inline_defs, share_repeats
from mcp_server.config import Settings, key_fingerprint, load_settings
from mcp_server.errors import InputProblem
from mcp_server.jobs import Caller, JobService
from mcp_server.ledger import Ledger, open_ledger
from mcp_server.limits import Limiter, make_leases, make_limiter
from mcp_server.mcptasks import TaskEngine, TaskEventBus, TasksExtension, direct_tool_calls
from mcp_server.providers import Connection, ProviderEnv, WebhookSpec, webhook_of
from mcp_server.providers.registry import ProviderRegistry, default_registry
from mcp_server.sharing import Fanout, Leases
from mcp_server.tasks import (
    SECRET_NAME,
    TASK_TOOLS,
    TASK_TTL_MS,
    JobTasks,
    LedgerTaskStore,
    tap,
)
from mcp_server.tool_results import (
    internal_error_result,
    invalid_arguments_result,
    unknown_tool_result,
)
from mcp_server.upstream import BackoffPolicy, RetryBudget

if TYPE_CHECKING:
    import httpx
    from mcp.types import CallToolResult, InputRequiredResult

    from mcp_server.bus import RedisSubscriptionBus
    from mcp_server.json_types import JSONObject
    from mcp_server.sandbox import SandboxState

log = logging.getLogger(__name__)

SANDBOX_KEY = "jobrelay-sandbox"
"""The key sent to the embedded sandbox when no real key is configured (any key works there)."""

INSTRUCTIONS = (
    "jobrelay starts and watches long-running Seamless.ai research (contacts/companies; costs "
    "credits) and AgentSEO jobs (SERP, keywords, local audits). Start a job, then wait_for_job "
    "until it finishes, then get_job_result. Every result says the one next step; follow it. "
    "If you lose a job id, list_jobs finds it. Never resubmit research to retry: check status."
)


@dataclass
class Runtime:
    """Everything the tools share for the server's lifetime: the composition root. Each
    registered provider gets its `Connection` (clients and watchers) from `connect`."""

    settings: Settings
    clock: Clock
    ledger: Ledger
    limiter: Limiter
    policy: BackoffPolicy
    task_group: anyio.abc.TaskGroup
    base_urls: Mapping[str, str]
    sandboxed: Mapping[str, bool]
    transports: Mapping[str, httpx.AsyncBaseTransport] = field(default_factory=dict)
    leases: Leases | None = None
    """Poll leases shared with the other processes of this ledger (None: this one polls alone)."""
    fanout: Fanout | None = None
    """Results and stream events shared with the other replicas (Redis), else None."""
    budgets: dict[str, RetryBudget] = field(default_factory=dict)
    providers: ProviderRegistry = field(default_factory=default_registry)
    connections: dict[str, Connection] = field(default_factory=dict)
    service: JobService = field(init=False)
    tasks: TaskEngine = field(init=False)
    """The MCP tasks runtime (`mcp_server.tasks`), set once the lifespan opened it."""

    def __post_init__(self) -> None:
        for p in self.providers:
            budget = self.budgets.setdefault(p.name, RetryBudget())
            self.connections[p.name] = p.connect(
                ProviderEnv(
                    settings=self.settings,
                    clock=self.clock,
                    limiter=self.limiter,
                    policy=self.policy,
                    budget=budget,
                    spawn=self.spawn,
                    base_url=self.base_urls[p.name],
                    sandboxed=self.sandboxed[p.name],
                    transport=self.transports.get(p.name),
                    key_for=self._keys.__getitem__,
                    leases=self.leases,
                    fanout=self.fanout,
                )
            )
        self.service = JobService(
            settings=self.settings,
            ledger=self.ledger,
            clock=self.clock,
            connections=self.connections,
            providers=self.providers,
        )
        # Metrics on: jobs by state and bucket fill, sampled in the background (issue 19).
        start_sampling(self.task_group, self.ledger, self.limiter, self.clock)

    # ---- callers and keys ---------------------------------------------------------------
    def effective_key(self, provider: str, override: SecretStr | None) -> SecretStr:
        if override is not None:
            return override
        configured = self.providers.get(provider).api_key(self.settings)
        if configured is not None:
            return configured
        return SecretStr(SANDBOX_KEY)

    def caller(self, overrides: Mapping[str, SecretStr] | None = None) -> Caller:
        """The tenants (key fingerprints) of a call: its jobs, clients and rate-limit buckets.

        A per-request key that is sent to the sandbox when the server itself has no key is
        partitioned by its own fingerprint all the same.
        """
        if not overrides and self._default_caller is not None:
            return self._default_caller  # the server's own keys: the same on every call
        overrides = overrides or {}
        keys = {p: self.effective_key(p, overrides.get(p)) for p in self.providers.names()}
        tenants = {p: key_fingerprint(k) for p, k in keys.items()}
        for provider, key in keys.items():
            known = self._keys.setdefault(tenants[provider], key)
            if not hmac.compare_digest(
                known.get_secret_value().encode(), key.get_secret_value().encode()
            ):
                # Two keys behind one fingerprint would share a ledger partition and a client
                # holding the other key: refuse rather than mix tenants.
                raise InputProblem(
                    "This API key cannot be told apart from another key in use on this "
                    "server; use a different key.",
                    field="the API key",
                    provider=provider,
                )
        caller = Caller(tenants=tenants, sandbox=dict(self.sandboxed))
        if not overrides:
            self._default_caller = caller
        return caller

    _keys: dict[str, SecretStr] = field(default_factory=dict)
    _default_caller: Caller | None = None

    def spawn(self, fn: Callable[[], Awaitable[None]]) -> None:
        async def run() -> None:
            try:
                await fn()
            except Exception:  # one loop's bug must never end the server and every wait
                log.exception("jobrelay: a background task failed")

        self.task_group.start_soon(run)


class _QuietUvicorn(uvicorn.Server):
    """uvicorn without its signal handlers: the jobrelay process owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@asynccontextmanager
async def _embedded_sandbox(
    tg: anyio.abc.TaskGroup, state: SandboxState | None, settings: Settings
) -> AsyncIterator[str]:
    """Serve `state` (else a sandbox keeping its jobs beside the ledger: a restarted server's
    still knows them, issue 14.7) on an ephemeral loopback port (0: two servers never race for
    one) for the server's lifetime. A server with no sandboxed provider never imports it."""
    from mcp_server.sandbox import JobFile, SandboxState, sandbox_path
    from mcp_server.sandbox.app import create_sandbox_app, sandbox_uvicorn_config

    state = state or SandboxState(jobs_file=JobFile(sandbox_path(settings.db_path)))
    config = sandbox_uvicorn_config(create_sandbox_app(state, spawn=tg), port=0)
    config.lifespan = "off"
    server = _QuietUvicorn(config)
    stopped = anyio.Event()

    async def serve() -> None:
        try:
            await server.serve()
        finally:
            stopped.set()

    tg.start_soon(serve)
    with anyio.fail_after(10):
        while not server.started:  # noqa: ASYNC110  # uvicorn exposes a flag, not an event
            await anyio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        # uvicorn must close its listening socket before the task group is cancelled,
        # or the socket leaks (ResourceWarning) on every shutdown.
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            await stopped.wait()
        # The task group is cancelled next, before uvicorn's own shutdown would close the
        # listening socket (its loop looks at should_exit every 0.1 s): close it now, so no
        # socket is left for the garbage collector (a ResourceWarning).
        for listener in server.servers:
            listener.close()


def build_server(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    sandbox_state: SandboxState | None = None,
    transports: Mapping[str, httpx.AsyncBaseTransport] | None = None,
) -> JobRelayServer:
    """The jobrelay MCP server. `clock`, `sandbox_state` and `transports` are for tests."""
    if settings is None:
        default_registry()  # the providers declare what their settings mean: before reading them
        settings = load_settings()
    clock = clock or SystemClock()
    bus: RedisSubscriptionBus | None = None
    if settings.redis_url is not None:  # notifications reach listeners on every replica
        from mcp_server.bus import RedisSubscriptionBus
        from mcp_server.limits import redis as redis_limits

        bus = RedisSubscriptionBus(
            redis_limits.redis_client(settings.redis_url.get_secret_value()),
            channel=f"{redis_limits.DEFAULT_PREFIX}:bus",  # the replicas of one prefix
            clock=clock,
        )

    @asynccontextmanager
    async def lifespan(_server: MCPServer[Runtime]) -> AsyncIterator[Runtime]:
        async with AsyncExitStack() as stack:
            ledger = tap(await stack.enter_async_context(open_ledger(settings, clock=clock)))
            if bus is not None:
                stack.push_async_callback(bus.aclose)  # after the task group has ended
            # Closed after the task group has ended too: a poll loop stopped by the shutdown
            # lets its lease go (`on_idle`) through these clients; the providers' clients, as a
            # stream follower reconnecting at shutdown would send on a closed one.
            limiter, leases = _shared_budget(stack, settings, clock)
            closing = await stack.enter_async_context(AsyncExitStack())
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            if bus is not None:
                await tg.start(bus.run)
            providers = default_registry()
            sandboxed = {p.name: p.sandboxed(settings) for p in providers}
            base_urls = {p.name: p.base_url(settings) for p in providers}
            if any(sandboxed.values()):
                root = await stack.enter_async_context(
                    _embedded_sandbox(tg, sandbox_state, settings)
                )
                served = []
                for p in providers:
                    if sandboxed[p.name]:
                        base_urls[p.name] = p.sandbox_url(root)
                        served.append(f"{p.service_name} ({p.sandbox_reason(settings)})")
                log.info(
                    "jobrelay: the embedded sandbox serves %s: simulated data, no API calls",
                    " and ".join(served),
                )
            runtime = Runtime(
                settings=settings,
                clock=clock,
                ledger=ledger,
                limiter=limiter,
                leases=leases,
                fanout=bus,
                policy=BackoffPolicy.from_settings(settings),
                task_group=tg,
                base_urls=base_urls,
                sandboxed=sandboxed,
                transports=dict(transports or {}),
                providers=providers,
            )
            for connection in runtime.connections.values():
                closing.push_async_callback(connection.aclose)
            # Task followers in a group of their own, ended before the clients close (a
            # follower that outlived them would send on a closed client).
            followers = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(followers.cancel_scope.cancel)
            runtime.tasks = await stack.enter_async_context(
                TaskEngine(
                    LedgerTaskStore(ledger.tasks),
                    start=job_tasks.start,
                    resolve=job_tasks.resolve,
                    cancel=job_tasks.cancel,
                    owner=job_tasks.owner,
                    secret=await ledger.tasks.secret(SECRET_NAME),
                    clock=clock.time,
                    ttl_ms=TASK_TTL_MS,
                    # With Redis, "task changed" and core notifications reach every replica.
                    bus=None if bus is None else _task_events(bus),
                    subscriptions=bus,
                )
            )
            job_tasks.attach(runtime, runtime.tasks, followers)
            if isinstance(_server, JobRelayServer):
                _server.runtime = runtime
                stack.callback(setattr, _server, "runtime", None)
            yield runtime

    extension = TasksExtension(tools=TASK_TOOLS, engine=lambda runtime: runtime.tasks)
    server = direct_tool_calls(
        JobRelayServer(
            "jobrelay",
            wait_cap=settings.max_wait_seconds,
            version=__version__,
            title="jobrelay",
            instructions=INSTRUCTIONS,
            lifespan=lifespan,
            log_level="WARNING",
            extensions=[extension],
            middleware=[extension.listen_middleware, *_observers(settings)],
            subscriptions=bus,
        ),
        extension,
    )
    _serve_webhook(server, settings)
    job_tasks = JobTasks(server)
    from mcp_server.resources import register_resources
    from mcp_server.tools import register_tools

    register_tools(server)
    register_resources(server)
    _drop_unused_tracing(server, os.environ)
    return server


def _serve_webhook(server: JobRelayServer, settings: Settings) -> None:
    """The first provider that declares a webhook and has its secret set: its route is served
    by the HTTP app (issue 18)."""
    for provider in default_registry():
        spec = webhook_of(provider)
        if spec is not None and (secret := spec.secret(settings)) is not None:
            server.webhook, server.webhook_secret = (provider.name, spec), secret
            return


def _task_events(bus: RedisSubscriptionBus) -> TaskEventBus:
    from mcp_server.bus import RedisTaskEvents

    return RedisTaskEvents(bus)


def _shared_budget(
    stack: AsyncExitStack, settings: Settings, clock: Clock
) -> tuple[Limiter, Leases | None]:
    """The rate buckets and poll leases the settings ask for, closed with `stack`."""
    limiter = make_limiter(settings, clock=clock)
    if (close_limiter := getattr(limiter, "aclose", None)) is not None:
        stack.push_async_callback(close_limiter)  # a shared limiter's connections
    leases = make_leases(settings, clock=clock)
    if leases is not None:
        stack.push_async_callback(leases.aclose)
    return limiter, leases


def _observers(settings: Settings) -> list[Any]:
    """The metrics/log-context middleware when metrics or JSON logs are on (issue 19)."""
    if not (telemetry.enabled() or settings.log_format == "json"):
        return []
    from mcp_server._operations import OperationMetrics

    return [OperationMetrics()]


def _drop_unused_tracing(server: MCPServer[Any], environ: Mapping[str, str]) -> None:
    """Remove the SDK's OpenTelemetry middleware unless tracing is configured: without an
    OpenTelemetry SDK and exporter its spans go nowhere, yet it costs every request a span, a
    context and attributes (~3.4 KB per in-flight call over HTTP: 3 MB of the 1,000-waits
    benchmark's peak). Any `OTEL_*` variable (what `opentelemetry-instrument` reads) keeps it."""
    if telemetry.tracing() or any(name.startswith("OTEL_") for name in environ):
        return
    server.middleware[:] = [
        m for m in server.middleware if type(m).__name__ != "OpenTelemetryMiddleware"
    ]


HEALTH_LEDGER_TIMEOUT = 2.0
"""Seconds (real time) a health check waits for the ledger (and Redis) before answering 503."""
HEALTH_PROBE_JOB = "healthz"
"""The id a health check looks up: a read of one indexed row that never exists."""


class JobRelayServer(MCPServer[Runtime]):
    """MCPServer with compact tool schemas, and argument errors that name the field and the
    allowed values, as a tool result."""

    _input_schemas: dict[str, dict[str, Any]] | None = None

    def __init__(self, *args: Any, wait_cap: float = B.MAX_WAIT_SECONDS, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wait_cap = wait_cap
        """`JOBRELAY_MAX_WAIT_SECONDS`: the published and enforced maximum of `wait_seconds`."""
        self.runtime: Runtime | None = None
        """The runtime while the lifespan runs (for `health`); None before and after."""
        self.webhook: tuple[str, WebhookSpec] | None = None
        """The provider whose pushed results the HTTP app receives, and how (its
        `WebhookSpec`), when its secret is set; None: no webhook route."""
        self.webhook_secret: SecretStr | None = None

    async def receive_webhook(self, upstream_id: str, payload: Mapping[str, object]) -> str:
        """A delivery (already authenticated and parsed by the HTTP app): what it did
        (`PushOutcome`), or `starting` when the runtime is not up yet. Trusted for the
        server's own tenant of that provider only (see `Follower.receive_push`)."""
        runtime = self.runtime
        if runtime is None or self.webhook is None:
            return "starting"
        return await runtime.service.receive_push(
            runtime.caller(), self.webhook[0], upstream_id, payload
        )

    async def health(self) -> tuple[bool, JSONObject]:
        """`GET /healthz` (DESIGN.md section 5): whether this process can serve, and its
        `{status, ledger, redis, providers}`; names states only, never a key or a path."""
        runtime = self.runtime
        if runtime is None:
            return False, {
                "status": "starting",
                "ledger": "unknown",
                "redis": "off",
                "providers": {},
            }
        ledger = "ok"
        try:
            with anyio.fail_after(HEALTH_LEDGER_TIMEOUT):
                await runtime.ledger.get(HEALTH_PROBE_JOB, tenant=HEALTH_PROBE_JOB)
        except Exception:
            log.warning("jobrelay: health check: the ledger did not answer", exc_info=True)
            ledger = "unavailable"
        redis = "off"
        if (ping := getattr(runtime.limiter, "ping", None)) is not None:  # shared in Redis
            redis = "ok"
            try:
                with anyio.fail_after(HEALTH_LEDGER_TIMEOUT):
                    await ping()
            except Exception:
                log.warning("jobrelay: health check: Redis did not answer", exc_info=True)
                redis = "unavailable"
        providers = {
            p: "sandbox" if runtime.sandboxed[p] else "upstream" for p in runtime.providers.names()
        }
        ok = ledger == "ok" and redis != "unavailable"
        body = {
            "status": "ok" if ok else "unavailable",
            "ledger": ledger,
            "redis": redis,
            "providers": providers,
        }
        return ok, body

    async def list_tools(self) -> list[MCPTool]:
        tools = await super().list_tools()
        return [
            tool.model_copy(
                update={
                    "description": " ".join((tool.description or "").split()),
                    "input_schema": share_repeats(
                        self._with_wait_cap(compact(inline_defs(tool.input_schema)))
                    ),
                    # Not published: see docs/answers.md (they did not fit the tool-list
                    # budget); jobrelay://schemas/{tool} serves them, tests validate results.
                    "output_schema": None,
                }
            )
            for tool in tools
        ]

    def _with_wait_cap(self, schema: dict[str, Any]) -> dict[str, Any]:
        wait = schema.get("properties", {}).get("wait_seconds")
        if isinstance(wait, dict):
            wait["maximum"] = int(self.wait_cap) if self.wait_cap.is_integer() else self.wait_cap
        return schema

    async def list_resources(self) -> list[MCPResource]:
        """The static resources and the concrete ones behind the templates (errors, usage)."""
        from mcp_server.resources import concrete_resources

        listed = await super().list_resources()
        known = {str(r.uri) for r in listed}
        return listed + [
            MCPResource(uri=uri, name=name, title=title, description=text, mime_type=mime)
            for uri, name, title, text, mime in concrete_resources()
            if uri not in known
        ]

    async def _schemas(self) -> dict[str, dict[str, Any]]:
        """The published input schemas by tool name (tools are fixed once built)."""
        if self._input_schemas is None:
            self._input_schemas = {t.name: t.input_schema for t in await self.list_tools()}
        return self._input_schemas

    async def task_arguments(self, name: str, arguments: JSONObject) -> JSONObject | None:
        """The validated keyword arguments of a call that may become a task, or None when
        `call_tool` would refuse them (the ordinary call then answers with its own error)."""
        if await self._argument_problem(name, arguments) is not None:
            return None
        tool = self._tool_manager.get_tool(name)
        if tool is None:
            return None
        try:
            return tool.fn_metadata.validate_arguments(arguments)
        except ValidationError:
            return None

    async def _argument_problem(self, name: str, arguments: JSONObject) -> CallToolResult | None:
        """The isError result `call_tool` answers before the SDK validates, or None."""
        schemas = await self._schemas()
        schema = schemas.get(name)
        if schema is None:
            return unknown_tool_result(name, sorted(schemas))
        # The SDK ignores unknown top-level arguments; a misspelt `wait_seconds` would then
        # silently fall back to its default, so they are refused by name instead.
        known = schema.get("properties", {})
        extra = [k for k in arguments or {} if k not in known]
        if extra:
            return invalid_arguments_result(
                name,
                [{"loc": (k,), "type": "extra_forbidden", "msg": "unknown"} for k in extra[:5]],
                schema,
            )
        wait = (arguments or {}).get("wait_seconds")
        if isinstance(wait, int | float) and not isinstance(wait, bool) and wait > self.wait_cap:
            return invalid_arguments_result(
                name,
                [
                    {
                        "loc": ("wait_seconds",),
                        "type": "less_than_equal",
                        "msg": f"Input should be less than or equal to {self.wait_cap:g} "
                        "(the server's JOBRELAY_MAX_WAIT_SECONDS)",
                        "input": wait,
                    }
                ],
                schema,
            )
        depth = argument_depth(arguments or {})
        if depth > MAX_ARGUMENT_DEPTH:
            # Over stdio and HTTP the message guard answers this before the SDK parses it;
            # this covers in-process clients, so no tool ever walks such a structure.
            return invalid_arguments_result(
                name,
                [
                    {
                        "loc": (),
                        "type": "too_deep",
                        "msg": f"Nested deeper than {MAX_ARGUMENT_DEPTH} levels",
                    }
                ],
                schema,
            )
        return None

    async def call_tool(
        self, name: str, arguments: JSONObject, context: Context[Runtime, Any] | None = None
    ) -> CallToolResult | InputRequiredResult:
        problem = await self._argument_problem(name, arguments)
        if problem is not None:
            return problem
        schema = (await self._schemas())[name]
        try:
            return await super().call_tool(name, arguments, context)
        except UnexpectedToolError as exc:
            # A bug in jobrelay: the cause's traceback (not the SDK wrapper's) goes to stderr.
            log.error("tool %s crashed", name, exc_info=exc.__cause__ or exc)  # noqa: TRY400
            return internal_error_result(name)
        except ToolError as exc:
            if isinstance(exc.__cause__, ValidationError):
                return invalid_arguments_result(name, exc.__cause__.errors(), schema)
            raise
