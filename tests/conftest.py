from __future__ import annotations

import bisect
import importlib
import json
import re
import socket
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from mcp import Client
from pydantic import SecretStr

from mcp_server._clock import Clock, ScaledClock
from mcp_server.config import Settings, load_settings
from mcp_server.providers import default_registry
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.transport import HttpServer
from tests._services import (  # noqa: F401  (fixtures, and the hook that fails skips in CI)
    postgres_schema_url,
    pytest_runtest_call,
    pytest_runtest_makereport,
    redis_prefix,
    redis_url,
)

#: Virtual seconds per real second in end-to-end tests: a 6 s job takes 60 ms. Faster scales
#: turn a loaded machine's real processing (tens of ms per poll round) into many virtual
#: seconds, which can outlast a test's bounded wait.
TEST_SCALE = 100.0
#: The epoch every test clock starts at (2026-09-21 14:13:20 UTC): no test depends on the real
#: time of day or date. Tests about a particular instant pass their own epoch.
TEST_EPOCH = 1_790_000_000.0
#: The nine tools of the public contract (DESIGN.md), in the order the server lists them.
CONTRACT_TOOLS = (
    "search_prospects",
    "start_research",
    "start_seo_job",
    "get_job_status",
    "wait_for_job",
    "get_job_result",
    "list_jobs",
    "explain_error",
    "get_usage",
)
# httpcore (imported by httpx on a client's first request) and jsonschema (imported by the MCP
# client to check the first structured result) are imported here, once: at 100x virtual time
# their 0.1-0.4 s of import would otherwise land inside the first end-to-end test's waits.
for _module in ("httpcore", "jsonschema"):
    importlib.import_module(_module)

# The built-in providers register their handle prefixes (`sea_`, `seo_`) with the ledger;
# tests that use the ledger alone rely on them as the server does.
default_registry()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def clock() -> ScaledClock:
    return ScaledClock(TEST_SCALE, epoch=TEST_EPOCH)


@pytest.fixture
def sandbox_state(clock: ScaledClock) -> SandboxState:
    return SandboxState(clock=clock, faults=Faults(time_scale=TEST_SCALE, job_seconds=6.0))


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    def make(**env: str) -> Settings:
        base = {"JOBRELAY_DB": str(tmp_path / "jobs.sqlite3")}
        return load_settings(base | env)

    return make


@pytest.fixture
async def client(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> AsyncIterator[Client]:
    """The jobrelay server in-process, on the embedded sandbox (real loopback), virtual time."""
    from mcp_server.server import build_server

    server = build_server(make_settings(), clock=clock, sandbox_state=sandbox_state)
    async with Client(server) as c:
        yield c


@pytest.fixture
def make_client(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> Callable[..., Any]:
    """`async with make_client(**env) as c`: like `client`, with extra settings (scenario keys,
    JOBRELAY_MAX_WAIT_SECONDS, ...), still on the shared clock and sandbox state."""
    from mcp_server.server import build_server

    @asynccontextmanager
    async def make(**env: str) -> AsyncIterator[Client]:
        server = build_server(make_settings(**env), clock=clock, sandbox_state=sandbox_state)
        async with Client(server) as c:
            yield c

    return make


@asynccontextmanager
async def loopback_sandbox(state: SandboxState) -> AsyncIterator[str]:
    """The sandbox as an external API on 127.0.0.1 (an ephemeral port); yields its root URL.

    For tests that must reach the upstream directly too (e.g. use up a rate window the way
    another user of the same org would) or point a separate jobrelay process at it.
    """
    from mcp_server.sandbox.app import create_sandbox_app, sandbox_uvicorn_config

    app = create_sandbox_app(state)
    async with loopback_uvicorn(lambda port: sandbox_uvicorn_config(app, port=port)) as url:
        yield url


@asynccontextmanager
async def loopback_uvicorn(config: Callable[[int], uvicorn.Config]) -> AsyncIterator[str]:
    """uvicorn with `config(port)` on an ephemeral 127.0.0.1 port; yields its root URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(config(port))
    with sock:
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: server.serve(sockets=[sock]))
            with anyio.fail_after(5):
                while not server.started:  # noqa: ASYNC110  # uvicorn exposes a flag only
                    await anyio.sleep(0.002)
            try:
                yield f"http://127.0.0.1:{port}"
            finally:
                server.should_exit = True


@asynccontextmanager
async def http_serving(
    settings: Settings,
    clock: Clock,
    state: SandboxState | None = None,
    *,
    token: SecretStr | str | None = None,
) -> AsyncIterator[tuple[str, HttpServer, anyio.Event]]:
    """jobrelay on an ephemeral loopback port, as `jobrelay serve --transport http` builds it
    (no signal handlers); yields its `/mcp` URL, the server, and an event set once it stopped.
    `state`: serve the embedded sandbox from it (else the settings' upstream URLs)."""
    from mcp_server._http_app import host_allowlist, origin_allowlist
    from mcp_server.server import build_server
    from mcp_server.transport import GracefulClock, http_server

    graceful = GracefulClock(clock)
    listening = anyio.Event()
    http = http_server(
        build_server(settings, clock=graceful, sandbox_state=state),
        graceful,
        host="127.0.0.1",
        port=0,
        token=SecretStr(token) if isinstance(token, str) else token,
        allowed_hosts=host_allowlist("127.0.0.1"),
        allowed_origins=origin_allowlist(),
        announce=lambda _port: listening.set(),
        handle_signals=False,
    )
    stopped = anyio.Event()

    async def run() -> None:
        await http.serve()
        stopped.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        with anyio.fail_after(10):
            await listening.wait()
        try:
            yield f"http://127.0.0.1:{http.port}/mcp", http, stopped
        finally:
            http.should_exit = True


def text_of(result: Any) -> str:
    """The text block an agent reads (hosts often forward only this)."""
    return "\n".join(getattr(block, "text", "") for block in result.content)


def structured(result: Any) -> dict[str, Any]:
    data = result.structured_content
    assert isinstance(data, dict), result
    return data


async def call(client: Client, tool: str, args: dict[str, Any], **kwargs: Any) -> Any:
    """One tool call, bounded in real time so a hang fails the test instead of stalling it.
    Its structuredContent is checked against the tool's output schema (DESIGN.md: "validated
    by an output schema"; not published in tools/list, see docs/answers.md)."""
    with anyio.fail_after(10):
        result = await client.call_tool(tool, args, **kwargs)
    assert_valid_output(tool, result)
    return result


def assert_valid_output(tool: str, result: Any) -> None:
    import jsonschema

    from mcp_server.tools import OUTPUT_MODELS

    model = OUTPUT_MODELS.get(tool)
    if model is not None and result.structured_content is not None:
        jsonschema.validate(result.structured_content, _output_schema(tool))


_SCHEMAS: dict[str, Any] = {}


def _output_schema(tool: str) -> Any:
    from mcp_server.tools import OUTPUT_MODELS

    if tool not in _SCHEMAS:
        _SCHEMAS[tool] = OUTPUT_MODELS[tool].model_json_schema()
    return _SCHEMAS[tool]


async def read(client: Client, uri: str) -> Any:
    """One resource read, bounded like `call`."""
    with anyio.fail_after(10):
        return await client.read_resource(uri)


ERROR_KEYS = {
    "code",
    "http_status",
    "retryable",
    "retry_after_seconds",
    "retry_at",
    "next_step",
    "provider",
    "request_id",
}
"""The structured `error` of every failing tool result (DESIGN.md section 1)."""

_EPOCH = re.compile(r"(?<![\w.])1[6-9]\d{8}(?:\.\d+)?(?![\w.])")
_NEVER = ("Traceback", 'File "', "None", "null", "Error executing tool", "Exception", "{}")


def assert_agent_safe(result: Any, secrets: Iterable[str] = ()) -> None:
    """What an agent reads is clean: one `Next:` step, no traceback, no Python `None`, no raw
    epoch used as a time, and no secret anywhere in the text or the structured part."""
    text = text_of(result)
    assert text.count("Next:") == 1, text
    for phrase in _NEVER:
        assert phrase not in text, (phrase, text)
    assert not _EPOCH.search(text), text
    whole = text + json.dumps(result.structured_content)
    for secret in secrets:
        assert secret not in whole, secret


def most_in_any(times: Iterable[float], length: float) -> int:
    """The largest number of `times` inside any half-open interval of `length`."""
    ordered = sorted(times)
    return max(
        (bisect.bisect_left(ordered, t + length) - n for n, t in enumerate(ordered)), default=0
    )


def answer_tokens(result: Any) -> int:
    """The project's estimate (`_bounds.tokens`) of one tool result as the client received it."""
    from mcp_server import _bounds

    return _bounds.tokens(result.model_dump(by_alias=True, mode="json", exclude_none=True))


#: `new_leases(clock, holder)`: one process's `sharing.Leases` on a test's shared store.
NewLeases = Callable[[Clock, str], Any]


@pytest.fixture(params=["sqlite", "redis"])
def new_leases(request: pytest.FixtureRequest, tmp_path: Path) -> NewLeases:
    """`new_leases(clock, holder)`: one process's leases on this test's shared store (the
    SQLite file, or a Redis key prefix of its own; skipped without Redis, failed in CI)."""
    from mcp_server.limits import SqliteLeases

    if request.param == "sqlite":
        path = tmp_path / "jobs.sqlite3"
        return lambda clock, holder: SqliteLeases(path, clock, holder=holder)
    import redis.asyncio

    from mcp_server.limits.redis import RedisLeases

    url = request.getfixturevalue("redis_url")
    prefix = request.getfixturevalue("redis_prefix")
    return lambda clock, holder: RedisLeases(
        redis.asyncio.Redis.from_url(url), clock, holder=holder, prefix=prefix
    )


@pytest.fixture(params=["memory", "sqlite"])
async def local_limiter(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[Callable[[Any], Any]]:
    """Builds a limiter on a test's fake clock, once in process and once on a shared SQLite
    ledger file (the two local backends); the SQLite ones are closed after the test."""
    from mcp_server.limits import InMemoryLimiter, SqliteLimiter

    made: list[SqliteLimiter] = []

    def build(clock: Any) -> InMemoryLimiter | SqliteLimiter:
        if request.param == "memory":
            return InMemoryLimiter(clock)
        shared = SqliteLimiter(tmp_path / "jobs.sqlite3", clock)
        made.append(shared)
        return shared

    yield build
    for shared in made:
        await shared.aclose()
