"""Seamless OAuth (DESIGN.md 5, issue 12.6): bearer access tokens, or a refresh token that
jobrelay trades for access tokens before they expire and once after a 401; the sandbox issues
and checks them; tokens never reach a message, a log line or a result."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from _waits import until_done
from conftest import TEST_EPOCH, call, loopback_sandbox, structured, text_of
from pydantic import SecretStr

from mcp_server._clock import ScaledClock
from mcp_server.config import ConfigError, Settings, load_settings
from mcp_server.doctor import diagnose
from mcp_server.errors import AuthenticationFailed, PermissionDenied, RequestNotSent
from mcp_server.limits import InMemoryLimiter
from mcp_server.providers.seamless.settings import SeamlessSettings
from mcp_server.sandbox import KEY_INSUFFICIENT_SCOPE, KEY_REVOKED, Faults, SandboxState
from mcp_server.sandbox import seamless as sandbox_seamless
from mcp_server.sandbox.app import SEAMLESS_PREFIX, create_sandbox_app
from mcp_server.upstream._backoff import BackoffPolicy, RetryBudget
from mcp_server.upstream._oauth import (
    TOKEN_PATH,
    BearerAuth,
    OAuthClient,
    RefreshingAuth,
    expiry,
)
from mcp_server.upstream.seamless import SeamlessClient
from tests import _openapi

pytestmark = pytest.mark.anyio

BASE = "http://sandbox.test" + SEAMLESS_PREFIX
SECRET = "client-secret-0123456789"
REFRESH = "refresh-token-0123456789"


class Recorder(httpx.AsyncBaseTransport):
    def __init__(self, state: SandboxState) -> None:
        self.inner = httpx.ASGITransport(create_sandbox_app(state))
        self.seen: list[tuple[httpx.Request, int, Any]] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        raw = await response.aread()
        self.seen.append((request, response.status_code, json.loads(raw) if raw else None))
        return httpx.Response(
            response.status_code, headers=response.headers, content=raw, request=request
        )

    def paths(self) -> list[str]:
        return [r.url.path.removeprefix(SEAMLESS_PREFIX) for r, _, _ in self.seen]


def _world() -> tuple[ScaledClock, SandboxState, Recorder]:
    clock = ScaledClock(1000.0, epoch=TEST_EPOCH)
    state = SandboxState(faults=Faults(time_scale=1000.0), clock=clock)
    return clock, state, Recorder(state)


def _refreshing(clock: ScaledClock, client_id: str = "jobrelay-app", refresh: str = REFRESH) -> Any:
    return RefreshingAuth(
        OAuthClient(client_id, SecretStr(SECRET), "https://app.example/callback"),
        SecretStr(refresh),
        token_url=BASE + TOKEN_PATH,
        now=clock.time,
    )


def _client(clock: ScaledClock, transport: Recorder, auth: httpx.Auth) -> SeamlessClient:
    return SeamlessClient(
        BASE,
        "oauth-client:jobrelay-app",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=transport,
        tenant="k_0123456789ab",
        auth=auth,
    )


async def test_a_refresh_token_is_traded_for_a_bearer_token_before_the_first_call() -> None:
    clock, _, transport = _world()
    auth = _refreshing(clock)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            await client.search("contacts", {}, limit=1)
            await client.search("contacts", {}, limit=1)
    assert transport.paths() == [TOKEN_PATH, "/search/contacts", "/search/contacts"]
    token_request = transport.seen[0][0]
    sent = json.loads(token_request.content)
    assert sent["grant_type"] == "refresh_token"
    assert sent["refresh_token"] == REFRESH
    assert "authorization" not in token_request.headers
    assert "token" not in token_request.headers
    search = transport.seen[1][0]
    assert search.headers["authorization"].startswith("Bearer sbx_at_")
    assert "token" not in search.headers  # never both kinds on one request
    assert auth.refreshes == 1


async def test_the_token_is_refreshed_before_it_expires() -> None:
    clock, _, transport = _world()
    auth = _refreshing(clock)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            await client.search("contacts", {}, limit=1)
            first = auth.token
            await clock.sleep(sandbox_seamless.TOKEN_SECONDS - 30)  # inside the margin
            await client.search("contacts", {}, limit=1)
    assert transport.paths() == [TOKEN_PATH, "/search/contacts", TOKEN_PATH, "/search/contacts"]
    assert auth.token is not first
    assert [status for _, status, _ in transport.seen] == [200, 200, 200, 200]


async def test_a_401_refreshes_once_and_resends() -> None:
    clock, state, transport = _world()
    auth = _refreshing(clock)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            await client.search("contacts", {}, limit=1)
            sandbox_seamless._org_of(state).tokens.clear()  # the API forgot the token
            page = await client.search("contacts", {}, limit=1)
    assert len(page.items) == 1
    assert transport.paths() == [
        TOKEN_PATH,
        "/search/contacts",
        "/search/contacts",  # 401
        TOKEN_PATH,
        "/search/contacts",
    ]
    assert [status for _, status, _ in transport.seen][2] == 401


async def test_a_refused_refresh_is_an_auth_failure_that_shows_no_secret(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, _, transport = _world()
    auth = _refreshing(clock, refresh=KEY_REVOKED)
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            with pytest.raises(AuthenticationFailed) as info:
                await client.research("contacts", contacts=[{"email": "a@b.example"}])
    assert transport.paths() == [TOKEN_PATH]  # the paid POST was never sent
    message = str(info.value)
    assert "not sent" in message
    assert "SEAMLESS_OAUTH_CLIENT_ID/_SECRET/_REFRESH_TOKEN" in message
    for secret in (SECRET, KEY_REVOKED):
        assert secret not in message
        assert secret not in caplog.text
    assert "sbx_at_" not in caplog.text


async def test_insufficient_scope_is_reachable_through_an_issued_token() -> None:
    clock, _, transport = _world()
    auth = _refreshing(clock, client_id=KEY_INSUFFICIENT_SCOPE)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            with pytest.raises(PermissionDenied) as info:
                await client.poll("contacts", ["abc"])
    assert (info.value.status, info.value.api_code) == (403, "insufficientScope")


async def test_a_fixed_access_token_is_sent_as_bearer_and_unknown_tokens_are_401() -> None:
    clock, state, transport = _world()
    issued = await _issue(transport)
    with anyio.fail_after(10):
        async with _client(clock, transport, BearerAuth(SecretStr(issued))) as client:
            await client.search("companies", {}, limit=1)
        async with _client(clock, transport, BearerAuth(SecretStr("made-up-token"))) as client:
            with pytest.raises(AuthenticationFailed) as info:
                await client.search("companies", {}, limit=1)
    assert transport.seen[1][0].headers["authorization"] == f"Bearer {issued}"
    assert transport.seen[-1][2] == {
        "message": "The access token is invalid or expired; get a new one from "
        "POST /oauth/accessToken."
    }
    assert "made-up-token" not in str(info.value)
    del state


async def _issue(transport: Recorder) -> str:
    async with httpx.AsyncClient(transport=transport, base_url=BASE) as http:
        r = await http.post(
            TOKEN_PATH,
            json={
                "client_id": "app",
                "client_secret": SECRET,
                "redirect_uri": "https://app.example/cb",
                "grant_type": "authorization_code",
                "code": "auth-code",
            },
        )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


async def test_the_token_exchange_is_the_published_request_and_answer() -> None:
    _openapi.spec()
    clock, _, transport = _world()
    auth = _refreshing(clock)
    with anyio.fail_after(10):
        async with _client(clock, transport, auth) as client:
            await client.search("contacts", {}, limit=1)
        await _issue(transport)
    for request, status, body in transport.seen:
        if request.url.path.endswith(TOKEN_PATH):
            _openapi.validate_request(TOKEN_PATH, "post", json.loads(request.content))
            _openapi.validate_response(TOKEN_PATH, "post", status, body)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_800_003_600, 1_800_003_600.0),
        (1_800_003_600_000, 1_800_003_600.0),
        (3600, 1_800_003_600.0),
    ],
)
def test_expires_at_is_read_whatever_its_unit(value: int, expected: float) -> None:
    assert expiry(value, 1_800_000_000.0) == expected


# ---- configuration and doctor -------------------------------------------------------------------


def test_the_refresh_flow_needs_all_its_variables_and_hides_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"SEAMLESS_OAUTH_CLIENT_ID": "app", "SEAMLESS_OAUTH_REFRESH_TOKEN": REFRESH})
    text = str(info.value)
    assert "SEAMLESS_OAUTH_CLIENT_SECRET" in text
    assert "SEAMLESS_OAUTH_REDIRECT_URI" in text
    assert REFRESH not in text


def test_oauth_settings_pick_one_auth_and_a_stable_fingerprint(
    make_settings: Callable[..., Settings],
) -> None:
    oauth = {
        "SEAMLESS_OAUTH_CLIENT_ID": "app",
        "SEAMLESS_OAUTH_CLIENT_SECRET": SECRET,
        "SEAMLESS_OAUTH_REFRESH_TOKEN": REFRESH,
        "SEAMLESS_OAUTH_REDIRECT_URI": "https://app.example/cb",
    }
    s = make_settings(**oauth)
    assert s.of(SeamlessSettings).auth == "oauth_refresh"
    assert not s.uses_sandbox("seamless")
    rotated = make_settings(**(oauth | {"SEAMLESS_OAUTH_REFRESH_TOKEN": "other-refresh-0123"}))
    assert rotated.api_key("seamless") == s.api_key("seamless")
    assert (
        make_settings(SEAMLESS_ACCESS_TOKEN="tok-0123456789").of(SeamlessSettings).auth
        == "access_token"
    )
    assert make_settings(SEAMLESS_API_KEY="k", **oauth).of(SeamlessSettings).auth == "api_key"
    assert SECRET not in repr(s)
    assert REFRESH not in repr(s)


# ---- through the server and doctor --------------------------------------------------------------


async def test_the_server_researches_with_oauth_and_never_shows_a_token(
    make_client: Callable[..., Any], sandbox_state: SandboxState
) -> None:
    async with loopback_sandbox(sandbox_state) as root:
        env = {
            "SEAMLESS_BASE_URL": root + SEAMLESS_PREFIX,
            "SEAMLESS_OAUTH_CLIENT_ID": "jobrelay-app",
            "SEAMLESS_OAUTH_CLIENT_SECRET": SECRET,
            "SEAMLESS_OAUTH_REFRESH_TOKEN": REFRESH,
            "SEAMLESS_OAUTH_REDIRECT_URI": "https://app.example/cb",
        }
        async with make_client(**env) as client:
            result = await until_done(
                client,
                await call(
                    client,
                    "start_research",
                    {
                        "kind": "contacts",
                        "contacts": [{"email": "a@b.example"}],
                        "wait_seconds": 30,
                    },
                ),
            )
            usage = await call(client, "get_usage", {})
    assert not result.is_error, text_of(result)
    assert structured(result)["state"] == "succeeded"
    assert structured(result).get("sandbox") is not True  # a live (OAuth) upstream
    issued = list(sandbox_seamless._org_of(sandbox_state).tokens)
    assert issued  # the sandbox issued the token the calls used
    for r in (result, usage):
        whole = text_of(r) + json.dumps(r.structured_content)
        for secret in (SECRET, REFRESH, *issued):
            assert secret not in whole
    assert sandbox_state.stats()["requests"]["seamless POST /oauth/accessToken"] == 1


async def test_doctor_names_the_seamless_auth_in_use(tmp_path: Path) -> None:
    env = {
        "JOBRELAY_DB": str(tmp_path / "jobs.sqlite3"),
        "SEAMLESS_BASE_URL": "http://127.0.0.1:9/x",
        "SEAMLESS_ACCESS_TOKEN": "access-token-0123456789",
    }
    with anyio.fail_after(10):
        text = (await diagnose(env, probe_timeout=0.5)).render()
    assert (
        "auth: OAuth access token (SEAMLESS_ACCESS_TOKEN, Authorization: Bearer set (ac...89))"
        in text
    )
    assert "access-token-0123456789" not in text
    env.pop("SEAMLESS_ACCESS_TOKEN")
    env |= {
        "SEAMLESS_OAUTH_CLIENT_ID": "jobrelay-app",
        "SEAMLESS_OAUTH_CLIENT_SECRET": SECRET,
        "SEAMLESS_OAUTH_REFRESH_TOKEN": REFRESH,
        "SEAMLESS_OAUTH_REDIRECT_URI": "https://app.example/cb",
    }
    with anyio.fail_after(10):
        text = (await diagnose(env, probe_timeout=0.5)).render()
    assert "auth: OAuth client jobrelay-app with a refresh token" in text
    assert SECRET not in text
    assert REFRESH not in text


class _TokenTrouble(httpx.AsyncBaseTransport):
    """The token endpoint fails (connection reset, or a 200 without a token); the API never
    sees the call."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.api_calls = 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith(TOKEN_PATH):
            if self.mode == "reset":
                raise httpx.ReadError("connection reset", request=request)
            return httpx.Response(200, json={"expires_at": 1}, request=request)
        self.api_calls += 1
        return httpx.Response(202, json={"success": True, "requestIds": ["r1"]}, request=request)


@pytest.mark.parametrize(
    ("mode", "error", "says"),
    [
        ("reset", RequestNotSent, "could not get an OAuth access token"),
        ("empty", AuthenticationFailed, "without an access_token"),
    ],
)
async def test_a_failed_token_step_never_makes_a_paid_call_ambiguous(
    mode: str, error: type[Exception], says: str
) -> None:
    clock = ScaledClock(1000.0, epoch=TEST_EPOCH)
    transport = _TokenTrouble(mode)
    client = SeamlessClient(
        BASE,
        "oauth-client:app",
        clock=clock,
        limiter=InMemoryLimiter(clock),
        policy=BackoffPolicy(max_attempts=1),
        budget=RetryBudget(),
        transport=transport,
        tenant="k_0123456789ab",
        auth=_refreshing(clock),
    )
    with anyio.fail_after(10):
        async with client:
            with pytest.raises(error) as info:
                await client.research("contacts", contacts=[{"email": "a@b.example"}])
    assert says in str(info.value)
    assert SECRET not in str(info.value)
    assert REFRESH not in str(info.value)
    assert transport.api_calls == 0


async def test_issued_tokens_outlive_a_sandbox_restart(tmp_path: Path) -> None:
    from mcp_server.sandbox import JobFile

    path = tmp_path / "jobs.db-sandbox"
    clock = ScaledClock(1000.0, epoch=TEST_EPOCH)

    def transport() -> Recorder:
        state = SandboxState(faults=Faults(time_scale=1000.0), clock=clock, jobs_file=JobFile(path))
        return Recorder(state)

    token = await _issue(transport())
    again = transport()  # the next `jobrelay sandbox` process, same file
    with anyio.fail_after(10):
        async with _client(clock, again, BearerAuth(SecretStr(token))) as client:
            page = await client.search("contacts", {}, limit=1)
    assert len(page.items) == 1
