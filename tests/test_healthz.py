"""`GET /healthz` over real loopback HTTP (DESIGN.md section 5, issue 17.4)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import httpx
import pytest
from pydantic import SecretStr

from mcp_server._clock import ScaledClock
from mcp_server.config import Settings
from mcp_server.ledger import LedgerError
from mcp_server.server import JobRelayServer, build_server
from mcp_server.transport import GracefulClock, http_server
from tests.conftest import TEST_EPOCH, TEST_SCALE

pytestmark = pytest.mark.anyio

TOKEN = "healthz-test-token-0123456789abcdef"


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[str, JobRelayServer]]:
    """jobrelay over HTTP on an ephemeral loopback port, with a token; yields base URL, server."""
    from mcp_server._http_app import host_allowlist, origin_allowlist

    clock = GracefulClock(ScaledClock(TEST_SCALE, epoch=TEST_EPOCH))
    server = build_server(settings, clock=clock)
    listening = anyio.Event()
    http = http_server(
        server,
        clock,
        host="127.0.0.1",
        port=0,
        token=SecretStr(TOKEN),
        allowed_hosts=host_allowlist("127.0.0.1"),
        allowed_origins=origin_allowlist(),
        announce=lambda _port: listening.set(),
        handle_signals=False,
    )
    async with anyio.create_task_group() as tg:
        tg.start_soon(http.serve)
        with anyio.fail_after(10):
            await listening.wait()
        try:
            yield f"http://127.0.0.1:{http.port}", server
        finally:
            http.should_exit = True


async def test_healthz_answers_200_with_status_ledger_redis_providers_and_no_token(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(SEAMLESS_API_KEY="FAKE-key-secret-value-1234", JOBRELAY_SANDBOX="auto")
    async with serving(settings) as (base, _server), httpx.AsyncClient() as http:
        with anyio.fail_after(10):
            response = await http.get(f"{base}/healthz")  # no Authorization header
            refused = await http.post(f"{base}/mcp", json={})
    assert refused.status_code == 401  # the token is required everywhere else
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "ledger": "ok",
        "redis": "off",
        "providers": {"seamless": "upstream", "agentseo": "sandbox"},
    }
    text = response.text
    assert "FAKE-key" not in text  # no secret
    assert str(settings.db_path) not in text  # no path
    assert "server" not in response.headers  # no software banner


async def test_healthz_answers_503_when_the_ledger_does_not_answer(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async def broken(*_args: object, **_kwargs: object) -> None:
        raise LedgerError("disk gone", path=tmp_path, problem="io")

    async with serving(make_settings()) as (base, server), httpx.AsyncClient() as http:
        assert server.runtime is not None
        monkeypatch.setattr(server.runtime.ledger, "get", broken)
        with anyio.fail_after(10):
            response = await http.get(f"{base}/healthz")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["ledger"] == "unavailable"
    assert "disk gone" not in response.text  # the reason goes to the log, not the answer


async def test_healthz_answers_503_while_the_server_is_not_running() -> None:
    server = build_server(clock=ScaledClock(TEST_SCALE, epoch=TEST_EPOCH))
    ok, body = await server.health()
    assert (ok, body["status"]) == (False, "starting")


async def test_healthz_reports_redis_when_the_buckets_are_shared_there(
    make_settings: Callable[..., Settings], redis_url: str, postgres_schema_url: str
) -> None:
    settings = make_settings(JOBRELAY_REDIS_URL=redis_url, JOBRELAY_DB=postgres_schema_url)
    async with serving(settings) as (base, _server), httpx.AsyncClient() as http:
        with anyio.fail_after(10):
            response = await http.get(f"{base}/healthz")
    assert response.status_code == 200
    assert response.json()["redis"] == "ok"
    assert response.json()["ledger"] == "ok"
    assert redis_url not in response.text
    assert postgres_schema_url not in response.text


async def test_healthz_answers_503_when_redis_does_not_answer(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(JOBRELAY_REDIS_URL="redis://127.0.0.1:1/0")
    async with serving(settings) as (base, _server), httpx.AsyncClient() as http:
        with anyio.fail_after(20):
            response = await http.get(f"{base}/healthz")
    assert response.status_code == 503
    assert response.json()["redis"] == "unavailable"
    assert response.json()["status"] == "unavailable"
