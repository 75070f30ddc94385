"""The `/_sandbox` control endpoints and FaultMiddleware, through `create_sandbox_app`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, fields
from email.utils import parsedate_to_datetime
from typing import Any

import anyio
import httpx
import pytest

from mcp_server._clock import ScaledClock
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app

pytestmark = pytest.mark.anyio

EPOCH = 1_790_000_040.0
ROOT = "http://sandbox.test"
ALLOWED = sorted(f.name for f in fields(Faults))


def _state(**faults: Any) -> SandboxState:
    return SandboxState(faults=Faults(**faults), clock=ScaledClock(1.0, epoch=EPOCH))


@asynccontextmanager
async def _client(state: SandboxState) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_sandbox_app(state))
    async with httpx.AsyncClient(
        transport=transport, base_url=ROOT, headers={"Token": "test-key"}
    ) as client:
        yield client


async def _set_faults(client: httpx.AsyncClient, **faults: Any) -> httpx.Response:
    return await client.post("/_sandbox/faults", json=faults)


RESEARCH = f"{SEAMLESS_PREFIX}/contacts/research"
SEARCH = f"{SEAMLESS_PREFIX}/search/contacts"
POLL = f"{SEAMLESS_PREFIX}/contacts/research/poll"


# stats -------------------------------------------------------------------------------------


async def test_stats_count_requests_and_responses_by_route_template() -> None:
    state = _state()
    body = {"contacts": [{"email": "a@acme.test"}]}
    async with _client(state) as client:
        await client.post(SEARCH, json={})
        ids = (await client.post(RESEARCH, json=body)).json()["requestIds"]
        await client.post(RESEARCH, json=body)
        await client.get(POLL, params={"requestIds": ids[0]})
        await client.get(POLL, params={"requestIds": "other"})
        await client.post(RESEARCH, json={})
        await client.get(f"{SEAMLESS_PREFIX}/no/such/path")
        await client.post(SEARCH, json={}, headers={"Token": ""})
        stats = (await client.get("/_sandbox/stats")).json()
    assert stats["requests"] == {
        "seamless POST /search/contacts": 2,
        "seamless POST /contacts/research": 3,
        "seamless GET /contacts/research/poll": 2,
        "seamless GET /no/such/path": 1,
    }
    assert stats["responses"] == {
        "seamless POST /search/contacts 200": 1,
        "seamless POST /search/contacts 401": 1,
        "seamless POST /contacts/research 202": 2,
        "seamless POST /contacts/research 400": 1,
        "seamless GET /contacts/research/poll 200": 2,
        "seamless GET /no/such/path 404": 1,
    }
    assert stats["paid_posts"] == 2
    assert stats["duplicate_paid_posts"] == 1
    assert stats["faults"] == asdict(Faults())
    assert stats["virtual_time"] == pytest.approx(EPOCH, abs=5)


async def test_control_responses_carry_the_virtual_date() -> None:
    async with _client(_state()) as client:
        r = await client.get("/_sandbox/stats")
    assert len(r.headers.get_list("date")) == 1
    assert parsedate_to_datetime(r.headers["date"]).timestamp() == pytest.approx(EPOCH, abs=5)


# faults ------------------------------------------------------------------------------------


async def test_faults_accept_any_subset_and_return_the_whole_set() -> None:
    state = _state()
    async with _client(state) as client:
        r = await _set_faults(client, job_seconds=2.5, seed=9, seamless_rate_limit=5)
        search = await client.post(SEARCH, json={})
    assert r.status_code == 200
    assert r.json() == asdict(Faults(job_seconds=2.5, seed=9, seamless_rate_limit=5))
    assert state.faults.job_seconds == 2.5
    assert search.headers["x-ratelimit-limit"] == "5"


async def test_initial_credits_set_through_faults_show_in_the_credit_header() -> None:
    async with _client(_state()) as client:
        await client.post(RESEARCH, json={"contacts": [{"email": "a@acme.test"}]})
        await _set_faults(client, initial_credits=10)
        r = await client.post(SEARCH, json={})
    assert r.headers["x-publicapi-credits"] == "9"


async def test_unknown_fault_keys_are_rejected_naming_the_allowed_keys() -> None:
    state = _state()
    async with _client(state) as client:
        r = await _set_faults(client, bogus=1, job_seconds=1)
    assert r.status_code == 400
    assert r.json() == {"error": "invalid fault settings", "invalid": ["bogus"], "allowed": ALLOWED}
    assert state.faults.job_seconds == Faults().job_seconds


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"error_rate": 2}, "error_rate must be a number between 0 and 1"),
        ({"malformed_rate": -0.1}, "malformed_rate must be a number between 0 and 1"),
        ({"time_scale": 0}, "time_scale must be > 0"),
        ({"seamless_rate_limit": 0}, "seamless_rate_limit must be a positive integer"),
        ({"initial_credits": "many"}, "initial_credits must be a non-negative integer"),
    ],
)
async def test_invalid_fault_values_are_rejected_and_nothing_changes(
    settings: dict[str, Any], problem: str
) -> None:
    state = _state()
    async with _client(state) as client:
        r = await client.post("/_sandbox/faults", json={**settings, "latency_ms": 5})
    assert r.status_code == 400
    assert r.json() == {"error": "invalid fault settings", "invalid": [problem], "allowed": ALLOWED}
    assert state.faults == Faults()


@pytest.mark.parametrize("content", [b"[1]", b"{nope"])
async def test_faults_need_a_json_object(content: bytes) -> None:
    async with _client(_state()) as client:
        r = await client.post("/_sandbox/faults", content=content)
    assert r.status_code == 400
    assert r.json() == {"error": "body must be a JSON object"}


# reset -------------------------------------------------------------------------------------


async def test_reset_restores_defaults_and_zeroes_counters() -> None:
    state = _state(job_seconds=1, seamless_rate_limit=10)
    async with _client(state) as client:
        await client.post(RESEARCH, json={"contacts": [{"email": "a@acme.test"}]})
        await _set_faults(client, error_rate=0.5)
        r = await client.post("/_sandbox/reset")
        stats = (await client.get("/_sandbox/stats")).json()
        search = await client.post(SEARCH, json={})
    assert r.json() == {"reset": True}
    assert stats["requests"] == {}
    assert stats["responses"] == {}
    assert stats["paid_posts"] == 0
    assert stats["faults"] == asdict(Faults())
    assert search.headers["x-publicapi-credits"] == "1000"
    assert search.headers["x-ratelimit-limit"] == "60"


# FaultMiddleware ---------------------------------------------------------------------------


async def test_error_rate_answers_5xx_without_processing_and_counts_by_template() -> None:
    state = _state(error_rate=1.0)
    async with _client(state) as client:
        r = await client.post(RESEARCH, json={"contacts": [{"email": "a@acme.test"}]})
        await _set_faults(client, error_rate=0.0)
        after = await client.post(SEARCH, json={})
        stats = (await client.get("/_sandbox/stats")).json()
    assert r.status_code in (500, 502, 503)
    assert r.json() == {"message": "Internal server error"}  # Seamless's published 500 body
    assert stats["requests"]["seamless POST /contacts/research"] == 1
    assert stats["responses"][f"seamless POST /contacts/research {r.status_code}"] == 1
    assert stats["paid_posts"] == 0
    assert after.headers["x-publicapi-credits"] == "1000"
    assert after.headers["x-ratelimit-remaining"] == "59"  # the faulted call never counted


async def test_malformed_rate_cuts_2xx_json_bodies_but_not_errors() -> None:
    async with _client(_state(malformed_rate=1.0)) as client:
        ok = await client.post(SEARCH, json={"limit": 2})
        err = await client.post(SEARCH, json={"limit": 0})
    assert ok.status_code == 200
    assert int(ok.headers["content-length"]) == len(ok.content)
    with pytest.raises(json.JSONDecodeError):
        json.loads(ok.content)
    assert ok.headers["x-ratelimit-limit"] == "60"
    assert err.status_code == 400
    assert err.json()["code"] == "badRequest"


async def test_latency_delays_each_api_response_in_real_time() -> None:
    async with _client(_state(latency_ms=40)) as client:
        with anyio.fail_after(5):
            started = anyio.current_time()
            r = await client.post(SEARCH, json={})
            elapsed = anyio.current_time() - started
    assert r.status_code == 200
    assert elapsed >= 0.04
