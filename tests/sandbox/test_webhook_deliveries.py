"""The sandbox's Seamless webhooks (`POST /_sandbox/webhooks`, DESIGN.md section 5): validated
settings, deliveries over loopback with drops and repeats, the same under the same seed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH, loopback_sandbox, loopback_uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mcp_server._clock import ScaledClock
from mcp_server.sandbox._state import Faults, SandboxState
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app

pytestmark = pytest.mark.anyio

SECRET = "sandbox-hook-secret-1234"


@pytest.mark.parametrize(
    ("body", "phrase"),
    [
        ({}, "url is required"),
        ({"url": "ftp://x", "secret": "s"}, "http"),
        ({"url": "http://127.0.0.1:1/h", "secret": ""}, "secret"),
        ({"url": "http://127.0.0.1:1/h", "secret": "s", "drop_rate": 2}, "drop_rate"),
        ({"url": "http://127.0.0.1:1/h", "secret": "s", "duplicate_rate": True}, "duplicate_rate"),
        ({"url": None, "bogus": 1}, "unknown key"),
    ],
)
async def test_bad_settings_are_refused_by_name(body: dict[str, Any], phrase: str) -> None:
    transport = httpx.ASGITransport(app=create_sandbox_app(SandboxState()))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as h:
        answer = await h.post("/_sandbox/webhooks", json=body)
    assert answer.status_code == 400
    assert phrase in answer.json()["error"]


async def test_without_a_task_group_deliveries_are_refused_and_null_turns_them_off() -> None:
    transport = httpx.ASGITransport(app=create_sandbox_app(SandboxState()))
    async with httpx.AsyncClient(transport=transport, base_url="http://sandbox") as h:
        on = await h.post("/_sandbox/webhooks", json={"url": "http://127.0.0.1:1/h", "secret": "s"})
        assert on.status_code == 409
        off = await h.post("/_sandbox/webhooks", json={"url": None})
        assert off.status_code == 200
        assert off.json()["url"] is None


@asynccontextmanager
async def receiver() -> AsyncIterator[tuple[str, list[tuple[str, str, str]]]]:
    """A webhook receiver on loopback recording (secret, event, apiResearchId)."""
    got: list[tuple[str, str, str]] = []

    async def hook(request: Request) -> Response:
        body = await request.json()
        got.append(
            (
                request.headers.get("x-seamless-webhook-secret", ""),
                request.headers.get("x-seamless-event", ""),
                str(body.get("apiResearchId")),
            )
        )
        return JSONResponse({"ok": True})

    import uvicorn

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with loopback_uvicorn(
        lambda port: uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    ) as root:
        yield root + "/hook", got


async def run_once(seed: int) -> tuple[list[str], dict[str, Any], list[tuple[str, str, str]]]:
    clock = ScaledClock(100.0, epoch=TEST_EPOCH)
    state = SandboxState(clock=clock, faults=Faults(time_scale=100.0, job_seconds=1.0, seed=seed))
    async with (
        receiver() as (hook, got),
        loopback_sandbox(state) as root,
        httpx.AsyncClient(base_url=root, timeout=10) as h,
    ):
        on = await h.post(
            "/_sandbox/webhooks",
            json={"url": hook, "secret": SECRET, "drop_rate": 0.4, "duplicate_rate": 0.5},
        )
        assert on.status_code == 200
        assert SECRET not in on.text
        companies = [{"companyName": f"Co {i}", "domain": f"co{i}.example"} for i in range(12)]
        companies.append({"companyName": "Missing Co", "domain": "missing.example"})
        posted = await h.post(
            f"{SEAMLESS_PREFIX}/companies/research",
            json={"companies": companies},
            headers={"Token": "any-key"},
        )
        ids: list[str] = posted.json()["requestIds"]
        with anyio.fail_after(10):
            while True:
                hooks = (await h.get("/_sandbox/stats")).json()["webhooks"]
                if hooks["scheduled"] == 0 and hooks["delivered"] == len(got) == (
                    hooks["sent"] + hooks["repeated"]
                ):
                    break
                await anyio.sleep(0.01)
    return ids, hooks, got


async def test_deliveries_drop_and_repeat_the_same_way_under_one_seed() -> None:
    first_ids, first, first_got = await run_once(seed=5)
    second_ids, second, second_got = await run_once(seed=5)
    # 12 targets end `done` (the missing one is never delivered): each is sent, or dropped.
    assert first["sent"] + first["dropped"] == 12
    assert first["dropped"] > 0
    assert first["repeated"] > 0
    assert first["failed"] == 0
    assert all(s == SECRET and e == "company-researched" for s, e, _ in first_got)
    assert {r for _, _, r in first_got} <= set(first_ids[:12])

    def pattern(ids: list[str], got: list[tuple[str, str, str]]) -> list[int]:
        return [sum(1 for *_, r in got if r == i) for i in ids]

    assert pattern(first_ids, first_got) == pattern(second_ids, second_got)
    assert {k: first[k] for k in ("sent", "repeated", "dropped")} == {
        k: second[k] for k in ("sent", "repeated", "dropped")
    }
