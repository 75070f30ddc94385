"""`jobrelay serve` over stdio, as a subprocess: the SDK client in both protocol eras, a
protocol-only stdout, and graceful shutdown (SIGTERM or end of input) in the middle of a wait."""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest
import uvicorn
from anyio.abc import Process
from anyio.streams.buffered import BufferedByteReceiveStream
from conftest import CONTRACT_TOOLS, TEST_EPOCH
from mcp import Client, StdioServerParameters
from mcp.types import CallToolResult

from mcp_server._clock import ScaledClock
from mcp_server.config import key_fingerprint
from mcp_server.ledger import SqliteLedger
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import AGENTSEO_PREFIX, SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.server import SANDBOX_KEY

pytestmark = [pytest.mark.anyio, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
TOOLS = set(CONTRACT_TOOLS)


def server_env(db: Path, **extra: str) -> dict[str, str]:
    """The child gets only what a host would give it (the SDK passes a minimal environment),
    plus coverage's variables so a measured run measures the child too."""
    measuring = {k: v for k, v in os.environ.items() if k.startswith("COVERAGE_")}
    return {**measuring, "JOBRELAY_DB": str(db), "PATH": os.environ.get("PATH", ""), **extra}


@asynccontextmanager
async def fast_upstream() -> AsyncIterator[dict[str, str]]:
    """A scaled sandbox on loopback, configured the way the real APIs are (base URL + key)."""
    clock = ScaledClock(200.0, epoch=TEST_EPOCH)
    # Jobs finish at once: the server polls on real time (Seamless every 2 s) in a subprocess.
    state = SandboxState(clock=clock, faults=Faults(time_scale=200.0, job_seconds=0.0))
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
                "SEAMLESS_API_KEY": "stdio-test-seamless-key",
                "AGENTSEO_API_KEY": "stdio-test-agentseo-key",
                "JOBRELAY_MAX_WAIT_SECONDS": "20",
            }
        finally:
            server.should_exit = True


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


async def test_every_tool_is_listed_and_callable_over_stdio(tmp_path: Path) -> None:
    """The 2026-07-28 era through the SDK client. The handshake era over stdio is spoken by
    the raw client below and by the full SDK session in test_secrets.py."""
    async with fast_upstream() as upstream:
        params = StdioServerParameters(
            command=sys.executable,
            args=["-m", "mcp_server", "serve"],
            env=server_env(tmp_path / "jobs.db", **upstream),
            cwd=str(REPO),
        )
        with anyio.fail_after(60):
            async with Client(params) as client:
                assert client.server_info is not None
                assert client.server_info.name == "jobrelay"
                listed = await client.list_tools()
                assert {t.name for t in listed.tools} == TOOLS

                found = ok(
                    await client.call_tool("search_prospects", {"kind": "companies", "query": "x"})
                )
                research = ok(
                    await client.call_tool(
                        "start_research",
                        {
                            "kind": "companies",
                            "search_result_ids": [found["items"][0]["search_result_id"]],
                            "wait_seconds": 20,
                        },
                    )
                )
                assert research["state"] == "succeeded"
                seo = ok(
                    await client.call_tool(
                        "start_seo_job",
                        {"workflow": "keyword_metrics", "params": {"keywords": ["a"]}},
                    )
                )
                ok(await client.call_tool("get_job_status", {"job_ids": [seo["job_id"]]}))
                waited = ok(
                    await client.call_tool(
                        "wait_for_job", {"job_id": seo["job_id"], "wait_seconds": 20}
                    )
                )
                assert waited["state"] == "succeeded"
                page = ok(await client.call_tool("get_job_result", {"job_id": research["job_id"]}))
                assert page["total"] == 1
                jobs = ok(await client.call_tool("list_jobs", {}))
                assert {j["job_id"] for j in jobs["jobs"]} == {research["job_id"], seo["job_id"]}
                ok(await client.call_tool("explain_error", {"http_status": 402}))
                usage = ok(await client.call_tool("get_usage", {}))
                assert usage["providers"][0]["sandbox"] is False


class RawStdio:
    """A hand-written legacy client: every byte of the server's stdout is checked."""

    def __init__(self, process: Process) -> None:
        assert process.stdout is not None
        assert process.stdin is not None
        self.process = process
        self._out = BufferedByteReceiveStream(process.stdout)
        self.lines: list[dict[str, Any]] = []

    async def send(self, message: Mapping[str, Any]) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send(json.dumps(message).encode() + b"\n")

    async def receive(self) -> dict[str, Any]:
        line = await self._out.receive_until(b"\n", 1 << 24)
        message = json.loads(line)  # anything but JSON-RPC on stdout fails here
        assert message["jsonrpc"] == "2.0"
        self.lines.append(message)
        return dict(message)

    async def call(self, request_id: int, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        while True:
            message = await self.receive()
            if message.get("id") == request_id:
                return message

    async def open(self) -> None:
        init = await self.call(
            1,
            "initialize",
            {
                "protocolVersion": "2025-06-18",
                "capabilities": {},
                "clientInfo": {"name": "raw", "version": "1"},
            },
        )
        assert init["result"]["serverInfo"]["name"] == "jobrelay"
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})

    async def rest_of_stdout(self) -> None:
        """Everything until the server closes stdout: each line must be JSON-RPC."""
        while True:
            try:
                await self.receive()
            except (anyio.EndOfStream, anyio.IncompleteRead):
                return


@asynccontextmanager
async def raw_server(db: Path) -> AsyncIterator[tuple[RawStdio, Process]]:
    """`jobrelay serve` on the embedded sandbox (real time: a job takes 6 s)."""
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_server", "serve"], env=server_env(db), cwd=str(REPO)
    )
    async with process:
        raw = RawStdio(process)
        with anyio.fail_after(30):
            await raw.open()
        yield raw, process


async def start_and_wait(raw: RawStdio) -> str:
    """Start an SEO job and a wait on it; return once the wait is under way (first progress)."""
    started = await raw.call(
        2,
        "tools/call",
        {
            "name": "start_seo_job",
            "arguments": {"workflow": "serp_analysis", "params": {"keyword": "k"}},
        },
    )
    job_id: str = started["result"]["structuredContent"]["job_id"]
    await raw.send(
        {
            "jsonrpc": "2.0",
            "id": 3,
            "method": "tools/call",
            "params": {
                "name": "wait_for_job",
                "arguments": {"job_id": job_id, "wait_seconds": 40},
                "_meta": {"progressToken": "wait-3"},
            },
        }
    )
    while (await raw.receive()).get("method") != "notifications/progress":
        pass
    return job_id


async def answer_to_wait(raw: RawStdio) -> dict[str, Any]:
    while True:
        message = await raw.receive()
        if message.get("id") == 3:
            return message


async def stderr_of(process: Process) -> str:
    assert process.stderr is not None
    chunks: list[bytes] = []
    async for chunk in process.stderr:
        chunks.append(chunk)
    return b"".join(chunks).decode()


async def assert_kept_in_ledger(db: Path, job_id: str) -> None:
    assert not await anyio.Path(f"{db}-wal").exists()  # closed cleanly (WAL checkpointed)
    async with SqliteLedger.open(db) as ledger:
        record = await ledger.get(job_id, tenant=key_fingerprint(SANDBOX_KEY))
    assert record is not None
    assert record.upstream_ids


def assert_the_wait_ended_with_its_handle(answer: dict[str, Any], job_id: str) -> None:
    result = answer["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["job_id"] == job_id
    assert result["structuredContent"]["state"] in {"queued", "running"}
    assert f'wait_for_job(job_id="{job_id}")' in result["content"][0]["text"]


async def test_sigterm_mid_wait_answers_with_the_handle_and_exits_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    async with raw_server(db) as (raw, process):
        with anyio.fail_after(30):
            job_id = await start_and_wait(raw)
            process.send_signal(signal.SIGTERM)
            answer = await answer_to_wait(raw)
            await raw.rest_of_stdout()
            errors = await stderr_of(process)
            code = await process.wait()
    assert_the_wait_ended_with_its_handle(answer, job_id)
    assert code == 0
    assert "SIGTERM: finishing the calls in progress, then exiting" in errors
    assert "Traceback" not in errors
    assert "the embedded sandbox serves" in errors  # notices go to stderr, never stdout
    await assert_kept_in_ledger(db, job_id)


async def test_end_of_input_mid_wait_still_answers_then_exits(tmp_path: Path) -> None:
    db = tmp_path / "jobs.db"
    async with raw_server(db) as (raw, process):
        with anyio.fail_after(30):
            job_id = await start_and_wait(raw)
            assert process.stdin is not None
            await process.stdin.aclose()
            answer = await answer_to_wait(raw)
            await raw.rest_of_stdout()
            errors = await stderr_of(process)
            code = await process.wait()
    assert_the_wait_ended_with_its_handle(answer, job_id)
    assert code == 0
    assert "Traceback" not in errors
    await assert_kept_in_ledger(db, job_id)
    assert all(m.get("jsonrpc") == "2.0" for m in raw.lines)
