"""Safe defaults of the HTTP transport: bearer token, DNS-rebinding protection (Host and Origin
allowlists), no credentials in URLs, body limit, refusal to expose the server without a token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from conftest import CONTRACT_TOOLS, TEST_EPOCH, call, http_serving
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp import Client, MCPError
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from mcp_server._clock import ScaledClock
from mcp_server._http_app import (
    LOOPBACK_HOSTS,
    LOOPBACK_ORIGINS,
    MAX_REQUEST_BODY_BYTES,
    GuardedApp,
    bind_refusal,
    host_allowed,
    host_allowlist,
    is_loopback,
    origin_allowed,
    origin_allowlist,
    parse_host,
)
from mcp_server.config import load_settings
from mcp_server.sandbox import Faults, SandboxState
from mcp_server.transport import serve

pytestmark = pytest.mark.anyio

TOKEN = "tok-4f1c9e7a2b8d4c6e9a1f3b5d7c9e1a3b"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
MCP_HEADERS = {"accept": "application/json, text/event-stream"}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope: one token-protected server (building one takes ~0.3 s) for the module."""
    return "asyncio"


@pytest.fixture(scope="module")
async def url(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[str]:
    scaled = ScaledClock(200.0, epoch=TEST_EPOCH)
    state = SandboxState(clock=scaled, faults=Faults(time_scale=200.0))
    settings = load_settings({"JOBRELAY_DB": str(tmp_path_factory.mktemp("sec") / "jobs.db")})
    async with http_serving(settings, scaled, state, token=TOKEN) as (url, _http, _stopped):
        yield url


async def post(url: str, headers: Mapping[str, str], body: Any = INITIALIZE) -> httpx.Response:
    async with httpx.AsyncClient() as http:
        return await http.post(url, json=body, headers={**MCP_HEADERS, **headers})


# ---- bearer token -----------------------------------------------------------------------------


async def test_a_request_without_the_token_gets_401_and_a_bearer_challenge(url: str) -> None:
    response = await post(url, {})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="jobrelay"'
    assert response.json()["error"] == "unauthorized"
    assert "JOBRELAY_HTTP_TOKEN" in response.json()["message"]


async def test_a_wrong_token_gets_401_invalid_token_and_is_never_echoed(url: str) -> None:
    wrong = "tok-WRONG-8c1d2e3f4a5b6c7d8e9f"
    response = await post(url, {"Authorization": f"Bearer {wrong}"})
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == 'Bearer realm="jobrelay", error="invalid_token"'
    assert wrong not in response.text
    assert wrong not in str(response.headers)


@pytest.mark.parametrize(
    "value",
    [
        f"Basic {TOKEN}",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        "Bearer",
        TOKEN,
    ],
)
async def test_anything_but_the_exact_bearer_token_is_refused(url: str, value: str) -> None:
    assert (await post(url, {"Authorization": value})).status_code == 401


async def test_the_right_token_reaches_the_mcp_endpoint(url: str) -> None:
    response = await post(url, AUTH)
    assert response.status_code == 200
    assert "mcp-session-id" in response.headers


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_the_sdk_client_works_with_the_token_in_both_eras(url: str, mode: str) -> None:
    async with (
        httpx2.AsyncClient(headers=AUTH, timeout=30.0) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode) as client,
    ):
        tools = await client.list_tools()
        assert {t.name for t in tools.tools} == set(CONTRACT_TOOLS)
        usage = await call(client, "get_usage", {})
        assert not usage.is_error


async def test_the_sdk_client_without_the_token_cannot_connect(url: str) -> None:
    statuses: list[int] = []

    async def record(response: httpx2.Response) -> None:
        statuses.append(response.status_code)

    with anyio.fail_after(30), pytest.raises(ExceptionGroup) as caught:
        async with (
            httpx2.AsyncClient(timeout=30.0, event_hooks={"response": [record]}) as http,
            Client(streamable_http_client(url, http_client=http)) as client,
        ):
            await client.list_tools()
    assert caught.group_contains(MCPError)
    assert set(statuses) == {401}  # refused by jobrelay's token check, every time


async def test_health_check_needs_no_token_and_reveals_nothing(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.get(url.removesuffix("/mcp") + "/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"
    assert set(response.json()) == {"status", "ledger", "redis", "providers"}
    assert "server" not in response.headers


# ---- DNS-rebinding protection -------------------------------------------------------------


async def test_a_foreign_host_header_is_refused_with_421(url: str) -> None:
    response = await post(url, {**AUTH, "Host": "attacker.example"})
    assert response.status_code == 421
    assert response.json()["error"] == "invalid_host"
    assert "attacker.example" not in response.text


async def test_a_foreign_origin_is_refused_with_403(url: str) -> None:
    response = await post(url, {**AUTH, "Origin": "https://attacker.example"})
    assert response.status_code == 403
    assert response.json()["error"] == "invalid_origin"
    assert not any(k.startswith("access-control-") for k in response.headers)


async def test_a_browser_preflight_from_another_origin_is_refused(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.options(
            url,
            headers={
                "Origin": "https://attacker.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
    assert response.status_code == 403
    assert not any(k.startswith("access-control-") for k in response.headers)


async def test_a_loopback_origin_is_allowed(url: str) -> None:
    port = url.split(":")[2].split("/", maxsplit=1)[0]
    response = await post(url, {**AUTH, "Origin": f"http://localhost:{port}"})
    assert response.status_code == 200


async def test_credentials_in_the_url_are_refused_and_not_echoed(url: str) -> None:
    for param in ("token", "api_key", "X-Seamless-Api-Key", "access_token"):
        response = await post(f"{url}?{param}=s3cr3t-in-url-value", AUTH)
        assert response.status_code == 400, param
        assert response.json()["error"] == "credentials_in_url"
        assert "s3cr3t-in-url-value" not in response.text


# ---- body limit ---------------------------------------------------------------------------


async def test_a_declared_body_over_the_limit_gets_413(url: str) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            content=b"x" * (MAX_REQUEST_BODY_BYTES + 1),
            headers={**AUTH, **MCP_HEADERS, "content-type": "application/json"},
        )
    assert response.status_code == 413


async def test_a_streamed_body_over_the_limit_gets_413(url: str) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(MAX_REQUEST_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536

    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            content=chunks(),
            headers={**AUTH, **MCP_HEADERS, "content-type": "application/json"},
        )
    assert response.status_code == 413


# ---- the guard on its own (allowlists as configured) --------------------------------------


async def _inner_ok(scope: Scope, receive: Receive, send: Send) -> None:
    await PlainTextResponse("inner")(scope, receive, send)


@asynccontextmanager
async def guarded(
    *, token: str | None = None, hosts: tuple[str, ...] = (), origins: tuple[str, ...] = ()
) -> AsyncIterator[tuple[GuardedApp, httpx.AsyncClient]]:
    app = GuardedApp(
        _inner_ok,
        token=SecretStr(token) if token else None,
        allowed_hosts=host_allowlist("127.0.0.1", hosts),
        allowed_origins=origin_allowlist(origins),
    )
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8765") as c:
        yield app, c


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1:8765", 200),
        ("localhost:8765", 200),
        ("[::1]:8765", 200),
        ("mcp.example.com", 200),
        ("mcp.example.com:443", 200),
        ("MCP.Example.COM:8443", 200),
        ("example.com", 421),
        ("mcp.example.com.attacker.example", 421),
        ("attacker.example:8765", 421),
        ("10.0.0.5:8765", 421),
        # Parsed, not prefix-matched: the port is a number and the host exact.
        ("localhost:1.evil.example", 421),
        ("127.0.0.1:@evil.example", 421),
        ("127.0.0.1:8765@evil.example", 421),
        ("[::1]:1.evil.example", 421),
        ("[::1]evil.example", 421),
        ("127.0.0.1:", 421),
        ("127.0.0.1:99999", 421),
        ("localhost:*", 421),
        ("[0:0:0:0:0:0:0:1]:8765", 200),
    ],
)
async def test_configured_host_names_are_accepted_and_others_refused(
    host: str, status: int
) -> None:
    async with guarded(hosts=("mcp.example.com",)) as (_app, client):
        response = await client.get("/mcp", headers={"Host": host})
    assert response.status_code == status


@pytest.mark.parametrize(
    ("origin", "status"),
    [
        ("http://localhost:6274", 200),
        ("http://127.0.0.1:3000", 200),
        ("https://app.example.com", 200),
        ("https://app.example.com/", 200),
        ("http://app.example.com", 403),
        ("https://app.example.com.attacker.example", 403),
        ("https://attacker.example", 403),
        ("http://localhost.attacker.example", 403),
        ("null", 403),
        ("http://127.0.0.1:1@evil.example", 403),
        ("http://localhost:1.evil.example", 403),
        ("http://127.0.0.1:@evil.example", 403),
        ("http://[::1]:1@evil.example", 403),
        ("http://localhost:3000/path", 403),
        ("http://[::1]:3000", 200),
    ],
)
async def test_configured_origins_are_accepted_and_others_refused(origin: str, status: int) -> None:
    async with guarded(origins=("https://app.example.com",)) as (_app, client):
        response = await client.get("/mcp", headers={"Origin": origin})
    assert response.status_code == status


async def test_without_a_token_requests_pass_through_on_loopback() -> None:
    async with guarded() as (_app, client):
        response = await client.get("/mcp")
    assert (response.status_code, response.text) == (200, "inner")


async def test_during_shutdown_new_requests_get_503_and_health_says_so() -> None:
    async with guarded(token=TOKEN) as (app, client):
        app.begin_shutdown()
        refused = await client.get("/mcp", headers=AUTH)
        health = await client.get("/healthz")
        unauthenticated = await client.get("/mcp")
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert (health.status_code, health.json()) == (503, {"status": "shutting_down"})
    assert unauthenticated.status_code == 401  # shutting down reveals nothing before auth


LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")


@hypothesis_settings(max_examples=400)
@given(
    name=st.sampled_from(LOOPBACK_NAMES),
    tail=st.text(alphabet="0123456789:@.[]/#?*abcdefghijklmnopqrstuvwxyz-_ ", max_size=24),
)
def test_a_loopback_host_header_is_accepted_only_with_a_numeric_port(name: str, tail: str) -> None:
    """Whatever follows a loopback name, the Host header is accepted exactly when that is
    nothing or `:PORT` with PORT all digits up to 65535 (never a prefix match)."""
    value = name + tail
    expected = tail == "" or (
        tail.startswith(":") and tail[1:].isdigit() and len(tail) <= 6 and int(tail[1:]) <= 65535
    )
    assert host_allowed(value, LOOPBACK_HOSTS) is expected
    # An Origin is the same authority after http:// (one trailing slash tolerated).
    origin_expected = expected or (tail.endswith("/") and host_allowed(value[:-1], LOOPBACK_HOSTS))
    assert origin_allowed(f"http://{value}", LOOPBACK_ORIGINS) is origin_expected
    assert origin_allowed(f"https://{value}", LOOPBACK_ORIGINS) is False


@given(st.text(max_size=40))
def test_an_accepted_host_header_parses_to_an_exact_name_and_a_numeric_port(value: str) -> None:
    """Any Host header the loopback allowlist accepts is one of its names exactly, with no
    port or a port that is a number in range."""
    if not host_allowed(value, LOOPBACK_HOSTS):
        return
    parsed = parse_host(value)
    assert parsed is not None
    host, port = parsed
    assert host in LOOPBACK_NAMES
    assert port is None or (port.isdigit() and int(port) <= 65535)


def test_the_guard_repr_never_shows_the_token() -> None:
    app = GuardedApp(_inner_ok, token=SecretStr(TOKEN), allowed_hosts=[], allowed_origins=[])
    assert TOKEN not in repr(app)
    assert "token=set" in repr(app)


# ---- allowlists and refusal to expose ---------------------------------------------------


def test_the_bind_address_is_accepted_as_host_when_it_is_a_specific_ip() -> None:
    assert "10.1.2.3:*" in host_allowlist("10.1.2.3")
    assert "[fd00::1]:*" in host_allowlist("fd00::1")
    assert host_allowlist("0.0.0.0") == host_allowlist("127.0.0.1")  # noqa: S104
    assert host_allowlist("::") == host_allowlist("127.0.0.1")


@pytest.mark.parametrize("bad", ["http://mcp.example.com", "mcp.example.com/path", "a b", ""])
def test_a_malformed_allow_host_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--allow-host"):
        host_allowlist("127.0.0.1", [bad])


@pytest.mark.parametrize("bad", ["app.example.com", "ftp://app.example.com", "https://a/b", "*"])
def test_a_malformed_allow_origin_is_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="--allow-origin"):
        origin_allowlist([bad])


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),  # noqa: S104
        ("::", False),
        ("192.168.1.10", False),
        ("myhost.local", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_binding_beyond_loopback_needs_a_token() -> None:
    message = bind_refusal("0.0.0.0", None)  # noqa: S104
    assert message is not None
    assert "refusing to listen on 0.0.0.0 without JOBRELAY_HTTP_TOKEN" in message
    assert "--host 127.0.0.1" in message
    assert "Authorization: Bearer <token>" in message
    assert bind_refusal("0.0.0.0", SecretStr(TOKEN)) is None  # noqa: S104
    assert bind_refusal("127.0.0.1", None) is None
    assert bind_refusal("localhost", None) is None


def test_serve_refuses_to_bind_everywhere_without_a_token(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("JOBRELAY_HTTP_TOKEN", raising=False)
    monkeypatch.setenv("JOBRELAY_DB", str(tmp_path / "jobs.db"))
    code = serve(transport="http", host="0.0.0.0", port=0, sandbox=False)  # noqa: S104
    assert code == 2
    assert "refusing to listen on 0.0.0.0 without JOBRELAY_HTTP_TOKEN" in capsys.readouterr().err
    assert not (tmp_path / "jobs.db").exists()  # refused before anything was opened


def test_serve_refuses_a_malformed_allow_host(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JOBRELAY_DB", str(tmp_path / "jobs.db"))
    code = serve(
        transport="http", host="127.0.0.1", port=0, sandbox=False, allow_hosts=["https://x/"]
    )
    assert code == 2
    assert "--allow-host 'https://x/' is not a host name" in capsys.readouterr().err


@pytest.mark.slow
def test_the_cli_refuses_to_expose_the_server_without_a_token(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "JOBRELAY_HTTP_TOKEN"}
    env["JOBRELAY_DB"] = str(tmp_path / "jobs.db")
    done = subprocess.run(
        [sys.executable, "-m", "mcp_server", "serve", "--transport", "http", "--host", "0.0.0.0"],  # noqa: S104
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert "refusing to listen on 0.0.0.0 without JOBRELAY_HTTP_TOKEN" in done.stderr
    assert "Traceback" not in done.stderr


async def test_websocket_upgrades_are_closed_unserved() -> None:
    reached: list[str] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["type"])

    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "websocket.connect"}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    app = GuardedApp(inner, token=None, allowed_hosts=[], allowed_origins=[])
    await app({"type": "websocket", "path": "/mcp", "headers": []}, receive, send)
    assert sent == [{"type": "websocket.close", "code": 1008}]
    assert reached == []
