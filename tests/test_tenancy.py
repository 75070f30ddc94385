"""Per-request upstream keys over HTTP: each key is a tenant with its own jobs, usage and
rate-limit buckets, and a foreign handle reads exactly like one that does not exist."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx2
import pytest
from conftest import TEST_EPOCH, call, http_serving, read
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult

from mcp_server._clock import ScaledClock
from mcp_server.config import load_settings
from mcp_server.sandbox import Faults, SandboxState

pytestmark = [pytest.mark.anyio, pytest.mark.loopback]

MODES = ["auto", "legacy"]
SCALE = 200.0
WAIT = 300
"""Virtual seconds a call may wait for a job (1.5 s real): jobs take 6, even on a busy machine."""


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope: one server (building one takes ~0.3 s) hosts every tenant below."""
    return "asyncio"


@pytest.fixture(scope="module")
async def url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    """No server keys: every provider is served by the embedded sandbox."""
    scaled = ScaledClock(SCALE, epoch=TEST_EPOCH)
    state = SandboxState(clock=scaled, faults=Faults(time_scale=SCALE, job_seconds=6.0))
    settings = load_settings(
        {
            "JOBRELAY_DB": str(tmp_path_factory.mktemp("ten") / "jobs.db"),
            "JOBRELAY_MAX_WAIT_SECONDS": str(WAIT),
        }
    )
    async with http_serving(settings, scaled, state) as (url, _http, _stopped):
        yield url


def keys(name: str) -> dict[str, str]:
    return {
        "X-Seamless-Api-Key": f"seamless-key-of-{name}-0a1b2c3d",
        "X-AgentSEO-Api-Key": f"agentseo-key-of-{name}-4e5f6a7b",
    }


@asynccontextmanager
async def tenant(url: str, mode: str, headers: Mapping[str, str]) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers=dict(headers), timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        yield client


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return dict(result.structured_content)


def error_code(result: CallToolResult) -> str:
    assert result.is_error, result.content
    assert result.structured_content is not None
    code: str = result.structured_content["error"]["code"]
    return code


async def start_jobs(client: Client, name: str) -> tuple[str, str, str]:
    """A finished research job and a finished SEO job; also a raw Seamless requestId."""
    research = ok(
        await call(
            client,
            "start_research",
            {
                "kind": "companies",
                "companies": [{"name": f"Acme {name}", "domain": f"{name}.example"}],
                "wait_seconds": WAIT,
            },
        )
    )
    seo = ok(
        await call(
            client,
            "start_seo_job",
            {"workflow": "serp_analysis", "params": {"keyword": name}, "wait_seconds": WAIT},
        )
    )
    assert (research["state"], seo["state"]) == ("succeeded", "succeeded")
    return research["job_id"], seo["job_id"], research["items"][0]["request_id"]


async def assert_cannot_see(client: Client, handles: list[str]) -> None:
    listed = ok(await call(client, "list_jobs", {}))
    assert not {j["job_id"] for j in listed["jobs"]} & set(handles)
    status = await call(client, "get_job_status", {"job_ids": handles})
    assert status.is_error  # every id unknown
    assert status.structured_content is not None
    codes = [j["error"]["code"] for j in status.structured_content["jobs"]]
    assert codes == ["not_found"] * len(handles)
    for handle in handles:
        waited = await call(client, "wait_for_job", {"job_id": handle, "wait_seconds": 1})
        assert error_code(waited) == "not_found"
        page = await call(client, "get_job_result", {"job_id": handle})
        assert error_code(page) == "not_found"
        with pytest.raises(MCPError):
            await read(client, f"jobrelay://jobs/{handle}")


@pytest.mark.parametrize("mode", MODES)
async def test_a_tenant_never_sees_another_tenants_jobs(url: str, mode: str) -> None:
    async with tenant(url, mode, keys(f"alice-{mode}")) as alice:
        research, seo, request_id = await start_jobs(alice, f"alice-{mode}")
        own = ok(await call(alice, "list_jobs", {}))
        assert {j["job_id"] for j in own["jobs"]} == {research, seo}
        assert ok(await call(alice, "get_job_result", {"job_id": research}))["total"] == 1

    async with tenant(url, mode, keys(f"bob-{mode}")) as bob:
        await assert_cannot_see(bob, [research, seo, request_id])
    async with tenant(url, mode, {}) as server_key_user:
        await assert_cannot_see(server_key_user, [research, seo, request_id])
    # One provider's key is enough to be a different tenant for that provider's jobs.
    half = {"X-AgentSEO-Api-Key": keys(f"alice-{mode}")["X-AgentSEO-Api-Key"]}
    async with tenant(url, mode, half) as half_alice:
        listed = ok(await call(half_alice, "list_jobs", {}))
        assert [j["job_id"] for j in listed["jobs"]] == [seo]


@pytest.mark.parametrize("mode", MODES)
async def test_usage_and_rate_limit_buckets_are_per_tenant(url: str, mode: str) -> None:
    async with tenant(url, mode, keys(f"carol-{mode}")) as carol:
        await start_jobs(carol, f"carol-{mode}")
        mine = ok(await call(carol, "get_usage", {}))
    async with tenant(url, mode, keys(f"dave-{mode}")) as dave:
        fresh = ok(await call(dave, "get_usage", {}))

    def by_provider(usage: dict[str, Any]) -> dict[str, dict[str, Any]]:
        return {p["provider"]: p for p in usage["providers"]}

    assert by_provider(mine)["agentseo"]["buckets"]
    assert by_provider(mine)["seamless"]["credits_remaining"] is not None
    assert by_provider(fresh)["agentseo"].get("buckets", []) == []
    assert by_provider(fresh)["seamless"].get("credits_remaining") is None


async def test_a_tenant_key_goes_to_the_sandbox_when_the_server_has_none(url: str) -> None:
    """Scenario keys make the sandbox answer with that error: proof the header key was sent."""
    headers = {
        "X-Seamless-Api-Key": "sandbox-insufficient-credits",
        "X-AgentSEO-Api-Key": "sandbox-revoked",
    }
    async with tenant(url, "auto", headers) as broke:
        research = await call(
            broke,
            "start_research",
            {"kind": "companies", "companies": [{"name": "Acme", "domain": "acme.example"}]},
        )
        assert error_code(research) == "credits_exhausted"
        seo = await call(
            broke, "start_seo_job", {"workflow": "serp_analysis", "params": {"keyword": "x"}}
        )
        assert error_code(seo) == "permission_denied"
        assert "sandbox-insufficient-credits" not in str(research.model_dump())
        assert "sandbox-revoked" not in str(seo.model_dump())


async def test_a_malformed_key_header_is_refused_and_not_echoed(url: str) -> None:
    bad = "two words-9f8e7d6c5b4a"
    async with tenant(url, "auto", {"X-Seamless-Api-Key": bad}) as client:
        result = await call(client, "list_jobs", {})
        with anyio.fail_after(10):
            refusals = []
            for uri in ("jobrelay://usage", "jobrelay://jobs/sea_0000000000000000"):
                with pytest.raises(MCPError) as refused:
                    await read(client, uri)
                refusals.append(refused.value)
    assert error_code(result) == "invalid_input"
    assert "X-Seamless-Api-Key header" in str(result.content)
    assert bad not in str(result.model_dump())
    # Resources refuse it the same way: the header named, the value never echoed.
    for error in refusals:
        assert "X-Seamless-Api-Key header" in str(error), error
        assert bad not in str(error)


async def test_two_keys_behind_one_fingerprint_are_refused_not_mixed(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """48-bit fingerprints could in principle collide; a collision must never merge tenants."""
    monkeypatch.setattr("mcp_server.server.key_fingerprint", lambda _key: "k_collision")
    first = {"X-Seamless-Api-Key": "first-key-1111", "X-AgentSEO-Api-Key": "first-key-1111"}
    second = {"X-Seamless-Api-Key": "second-key-2222", "X-AgentSEO-Api-Key": "second-key-2222"}
    async with tenant(url, "auto", first) as one:
        ok(await call(one, "list_jobs", {}))
    async with tenant(url, "auto", second) as two:
        refused = await call(two, "list_jobs", {})
    assert error_code(refused) == "invalid_input"
    assert "second-key-2222" not in str(refused.model_dump())
