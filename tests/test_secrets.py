"""Secrets hygiene across the product: full sessions over both transports, errors included,
with distinctive fake keys; none may appear in a tool result, resource, error or log line."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
import uvicorn
from conftest import TEST_EPOCH, call, http_serving, read
from mcp import Client, MCPError, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client

from mcp_server._clock import ScaledClock
from mcp_server.config import ConfigError, load_settings
from mcp_server.providers.seamless.settings import SeamlessSettings
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.server import build_server

pytestmark = pytest.mark.anyio

REPO = Path(__file__).resolve().parents[1]
SCALE = 200.0

SERVER_SEAMLESS = "FAKE-key-SEAMLESSFAKE-5c2e8a91d7b34f60e1"
SERVER_AGENTSEO = "ak-live-AGENTSEOFAKE-9b1f4e7c2a6d3085f2"
TENANT_SEAMLESS = "tk-live-TENANTSEAFAKE-3e7a1c9b5d2f8046"
TENANT_AGENTSEO = "tk-live-TENANTSEOFAKE-8d2f6b4a0c1e9375"
HTTP_TOKEN = "ht-live-HTTPTOKENFAKE-1a2b3c4d5e6f7a8b9c"
WRONG_TOKEN = "ht-live-WRONGTOKENFAKE-0f9e8d7c6b5a4938"
#: Distinctive middles: a key cut short or partly masked still shows one of these.
MARKERS = [
    "SEAMLESSFAKE",
    "AGENTSEOFAKE",
    "TENANTSEAFAKE",
    "TENANTSEOFAKE",
    "HTTPTOKENFAKE",
    "WRONGTOKENFAKE",
]


def assert_clean(where: str, text: str) -> None:
    for line in text.splitlines() or [text]:
        leaked = [m for m in [*MARKERS, "5c2e8a91d7b34f60"] if m in line]  # a tail leaks too
        assert not leaked, f"{leaked} leaked into {where}: {line[:300]}"


#: The test's own clients log their requests too (the SDK client stack is httpx2); only the
#: server's records count. The server's upstream clients use httpx and are kept.
_CLIENT_LOGGERS = ("mcp.client", "httpx2", "httpcore2")


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not record.name.startswith(_CLIENT_LOGGERS):
            self.lines.append(self.format(record))


@contextmanager
def every_log_line() -> Iterator[_Capture]:
    """Every record of every logger at DEBUG, formatted with tracebacks, for the block."""
    capture = _Capture()
    capture.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    loggers = [
        logging.getLogger(),
        logging.getLogger("uvicorn"),
        logging.getLogger("uvicorn.error"),
    ]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(capture)
        lg.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.removeHandler(capture)
            lg.setLevel(level)


@asynccontextmanager
async def upstream(state: SandboxState) -> AsyncIterator[dict[str, str]]:
    """The sandbox on loopback, configured like the real APIs: base URLs and the server keys."""
    config = uvicorn.Config(
        create_sandbox_app(state), host="127.0.0.1", port=0, log_level="warning", lifespan="off"
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve)
        with anyio.fail_after(10):
            while not server.started:  # noqa: ASYNC110  # uvicorn exposes a flag, not an event
                await anyio.sleep(0.005)
        root = f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
        try:
            yield {
                "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
                "AGENTSEO_BASE_URL": root + AGENTSEO_PREFIX,
                "SEAMLESS_API_KEY": SERVER_SEAMLESS,
                "AGENTSEO_API_KEY": SERVER_AGENTSEO,
                "JOBRELAY_MAX_WAIT_SECONDS": "300",
            }
        finally:
            server.should_exit = True


async def full_session(client: Client, state: SandboxState) -> list[str]:
    """Every tool and resource, and the failures an agent meets; returns all the text seen."""
    seen: list[str] = []

    async def tool(name: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
        result = await call(client, name, dict(arguments))
        seen.append(result.model_dump_json(by_alias=True))
        return result.structured_content or {}

    async def resource(uri: str) -> None:
        try:
            seen.append((await read(client, uri)).model_dump_json(by_alias=True))
        except MCPError as exc:
            seen.append(f"{exc} {exc.error.model_dump_json()}")

    seen.append((await client.list_tools()).model_dump_json())
    seen.append((await client.list_resource_templates()).model_dump_json())
    found = await tool("search_prospects", {"kind": "contacts", "query": "vp sales"})
    ids = [i["search_result_id"] for i in found["items"][:2]]
    research = await tool(
        "start_research", {"kind": "contacts", "search_result_ids": ids, "wait_seconds": 45}
    )
    await tool("start_research", {"kind": "contacts", "search_result_ids": ids})  # rerun warning
    seo = await tool(
        "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "fail-permanent"}}
    )
    await tool("wait_for_job", {"job_id": seo["job_id"], "wait_seconds": 45})  # failed upstream
    await tool("get_job_status", {"job_ids": [research["job_id"], seo["job_id"], "sea_nope"]})
    await tool("get_job_result", {"job_id": research["job_id"], "fields": ["email1", "phone1"]})
    await tool("list_jobs", {})
    await tool("get_usage", {})
    await tool("explain_error", {"http_status": 401, "provider": "seamless"})
    await resource(f"jobrelay://jobs/{research['job_id']}")
    await resource("jobrelay://jobs/sea_missing")
    await resource("jobrelay://errors/agentseo")
    await resource("jobrelay://usage")
    # Failures: bad arguments, unknown handles, an upstream that answers 5xx.
    await tool("start_research", {"kind": "people"})
    await tool("wait_for_job", {"job_id": "seo_unknown"})
    await tool("get_job_result", {"job_id": "sea_unknown"})
    state.faults.error_rate = 1.0
    try:
        await tool("search_prospects", {"kind": "companies", "query": "acme"})
        await tool("start_seo_job", {"workflow": "keyword_metrics", "params": {"keywords": ["a"]}})
    finally:
        state.faults.error_rate = 0.0
    assert any('"isError":true' in s for s in seen)  # the session did include failures
    return seen


def fresh_state() -> SandboxState:
    clock = ScaledClock(SCALE, epoch=TEST_EPOCH)
    return SandboxState(clock=clock, faults=Faults(time_scale=SCALE, job_seconds=0.0))


@pytest.mark.slow
async def test_no_key_leaks_from_a_full_stdio_session(tmp_path: Path) -> None:
    state = fresh_state()
    errlog = tmp_path / "stderr.txt"
    async with upstream(state) as env:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcp_server", "serve"],
            env={
                **{k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")},
                "JOBRELAY_DB": str(tmp_path / "jobs.db"),
                **env,
            },
            cwd=str(REPO),
        )
        with errlog.open("w") as err, anyio.fail_after(60):
            # The handshake era here; the 2026 era over stdio is in test_transport_stdio.py.
            async with Client(stdio_client(params, errlog=err), mode="legacy") as client:
                seen = await full_session(client, state)
    for i, text in enumerate(seen):
        assert_clean(f"stdio output #{i}", text)
    assert_clean("the server's stderr", errlog.read_text())


async def test_no_key_leaks_from_a_full_http_session_with_tenant_keys(tmp_path: Path) -> None:
    state = fresh_state()
    with every_log_line() as logs:
        async with upstream(state) as env:
            settings = load_settings(
                {"JOBRELAY_DB": str(tmp_path / "jobs.db"), "JOBRELAY_HTTP_TOKEN": HTTP_TOKEN, **env}
            )
            seen: list[str] = []
            async with http_serving(settings, state.clock, token=settings.http_token) as (
                url,
                _http,
                _stopped,
            ):
                tenant = {
                    "Authorization": f"Bearer {HTTP_TOKEN}",
                    "X-Seamless-Api-Key": TENANT_SEAMLESS,
                    "X-AgentSEO-Api-Key": TENANT_AGENTSEO,
                }
                with anyio.fail_after(60):
                    for mode, headers in (
                        ("auto", tenant),
                        ("legacy", {"Authorization": f"Bearer {HTTP_TOKEN}"}),
                    ):
                        async with (
                            httpx2.AsyncClient(headers=headers, timeout=30.0) as h,
                            Client(streamable_http_client(url, http_client=h), mode=mode) as c,
                        ):
                            seen += await full_session(c, state)
                    async with httpx2.AsyncClient() as raw:
                        for response in (
                            await raw.post(url, json={}, headers={"Authorization": WRONG_TOKEN}),
                            await raw.post(
                                url, json={}, headers={"Authorization": f"Bearer {WRONG_TOKEN}"}
                            ),
                            await raw.post(f"{url}?token={WRONG_TOKEN}", json={}),
                            await raw.post(
                                url, json={}, headers={"Host": "evil.example", **tenant}
                            ),
                        ):
                            seen.append(
                                f"{response.status_code} {response.headers} {response.text}"
                            )
    for i, text in enumerate(seen):
        assert_clean(f"http output #{i}", text)
    assert logs.lines  # the capture did see the session
    assert_clean("the log", "\n".join(logs.lines))


def _echo_keys(request: httpx.Request) -> httpx.Response:
    """An upstream that repeats the key it was sent, in body and headers: the worst case."""
    key = request.headers.get("token") or request.headers.get("x-api-key") or ""
    body = {"error": {"code": "unauthorized", "message": f"Invalid API key {key}"}, "key": key}
    return httpx.Response(401, json=body, headers={"x-echo": key, "x-request-id": f"req-{key}"})


async def test_an_upstream_that_echoes_the_key_cannot_make_us_leak_it(tmp_path: Path) -> None:
    settings = load_settings(
        {
            "JOBRELAY_DB": str(tmp_path / "jobs.db"),
            "SEAMLESS_API_KEY": SERVER_SEAMLESS,
            "AGENTSEO_API_KEY": SERVER_AGENTSEO,
        }
    )
    transport = httpx.MockTransport(_echo_keys)
    server = build_server(settings, transports={"seamless": transport, "agentseo": transport})
    seen: list[str] = []
    with every_log_line() as logs, anyio.fail_after(30):
        async with Client(server) as client:
            for name, arguments in (
                ("search_prospects", {"kind": "contacts", "query": "x"}),
                ("start_research", {"kind": "companies", "companies": [{"name": "Acme"}]}),
                ("start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}),
                ("get_usage", {}),
            ):
                result = await call(client, name, arguments)
                seen.append(result.model_dump_json(by_alias=True))
    assert sum('"isError":true' in s for s in seen) == 3
    assert '"auth_failed"' in seen[0]
    for i, text in enumerate(seen):
        assert_clean(f"result #{i}", text)
    assert_clean("the log", "\n".join(logs.lines))


def test_settings_never_show_keys(tmp_path: Path) -> None:
    env = {
        "SEAMLESS_API_KEY": SERVER_SEAMLESS,
        "AGENTSEO_API_KEY": SERVER_AGENTSEO,
        "JOBRELAY_HTTP_TOKEN": HTTP_TOKEN,
        "JOBRELAY_DB": str(tmp_path / "jobs.db"),
    }
    settings = load_settings(env)
    for shown in (repr(settings), str(settings), settings.model_dump_json(), f"{settings}"):
        assert_clean("Settings", shown)
    seamless = settings.of(SeamlessSettings)
    for shown in (repr(seamless), str(seamless), seamless.model_dump_json()):
        assert_clean("SeamlessSettings", shown)
    assert seamless.api_key is not None
    assert seamless.api_key.get_secret_value() == SERVER_SEAMLESS
    assert "**********" in repr(settings)
    assert "**********" in repr(seamless)
    assert SERVER_SEAMLESS in settings.secrets()  # what the logs redact
    with pytest.raises(ConfigError) as caught:
        load_settings({**env, "JOBRELAY_MAX_WAIT_SECONDS": "soon", "JOBRELAY_HTTP_TOKEN": " "})
    assert_clean("a configuration error", str(caught.value))


def test_settings_json_dump_for_support_masks_keys(tmp_path: Path) -> None:
    settings = load_settings(
        {"SEAMLESS_API_KEY": SERVER_SEAMLESS, "JOBRELAY_DB": str(tmp_path / "jobs.db")}
    )
    dumped = json.loads(settings.of(SeamlessSettings).model_dump_json())
    assert dumped["api_key"] == "**********"
