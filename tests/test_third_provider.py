"""Issue 15 item 1's proof: a provider that lives only in the tests (`crunch_provider.py`)
is registered through the public extension point and runs start, status, wait, result and
the explanation of its failure through the real MCP tools, in process."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from pydantic import SecretStr

from mcp_server._clock import FakeClock, ScaledClock
from mcp_server.advice import provider_advice, register_provider_advice
from mcp_server.config import Settings, load_settings
from mcp_server.limits.base import SAFETY, WINDOW
from mcp_server.providers import default_registry, registered
from mcp_server.sandbox import SandboxState
from mcp_server.server import build_server
from tests.crunch_provider import (
    ADVICE,
    BASE_URL,
    NAME,
    START_LIMIT,
    STATUS_LIMIT,
    CrunchProvider,
    crunch_app,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def crunch_client(
    make_settings: Callable[..., Settings], clock: ScaledClock, sandbox_state: SandboxState
) -> AsyncIterator[Client]:
    with registered(CrunchProvider()):  # its advice table (ADVICE) registers with it
        assert provider_advice(NAME) is ADVICE
        server = build_server(
            make_settings(CRUNCH_API_KEY="crunch-test-key"),
            clock=clock,
            sandbox_state=sandbox_state,
            transports={NAME: httpx.ASGITransport(app=crunch_app())},
        )
        async with Client(server) as c:
            yield c
    assert provider_advice(NAME) is None  # and leaves with it


class _Counting(httpx.AsyncBaseTransport):
    """Counts the requests that reach the app, by method."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.sent: dict[str, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent[request.method] = self.sent.get(request.method, 0) + 1
        return await self.inner.handle_async_request(request)


def _text(result: Any) -> str:
    return str(result.content[0].text)


async def test_a_registered_provider_runs_through_the_mcp_tools(crunch_client: Client) -> None:
    with anyio.fail_after(30):
        tools = {t.name: t for t in (await crunch_client.list_tools()).tools}
        enum = tools["start_seo_job"].input_schema["properties"]["workflow"]["enum"]
        assert enum[-1] == "word_count"
        assert "serp_analysis" in enum

        started = await crunch_client.call_tool(
            "start_seo_job", {"workflow": "word_count", "params": {"text": "to be or not to be"}}
        )
        assert not started.is_error, _text(started)
        job_id = started.structured_content["job_id"]
        assert job_id.startswith("crn_")
        assert started.structured_content["provider"] == NAME
        assert f"Crunch word_count job {job_id} started" in _text(started)

        status = await crunch_client.call_tool("get_job_status", {"job_ids": [job_id]})
        assert status.structured_content["jobs"][0]["state"] == "running", _text(status)

        waited = await crunch_client.call_tool(
            "wait_for_job", {"job_id": job_id, "wait_seconds": 20}
        )
        assert waited.structured_content["state"] == "succeeded", _text(waited)
        assert "6 words, most often 'to'" in _text(waited)

        page = await crunch_client.call_tool("get_job_result", {"job_id": job_id})
        assert page.structured_content["items"][0]["top"] == "to", _text(page)
        assert page.structured_content["total"] == 1

        listed = await crunch_client.call_tool("list_jobs", {})
        assert [j["job_id"] for j in listed.structured_content["jobs"]] == [job_id]


async def test_a_failed_job_is_explained_from_the_providers_advice_table(
    crunch_client: Client,
) -> None:
    with anyio.fail_after(30):
        started = await crunch_client.call_tool(
            "start_seo_job", {"workflow": "word_count", "params": {"text": ""}}
        )
        job_id = started.structured_content["job_id"]
        waited = await crunch_client.call_tool(
            "wait_for_job", {"job_id": job_id, "wait_seconds": 20}
        )
        assert waited.structured_content["state"] == "failed"
        text = _text(waited)
        assert "params.text was empty" in text
        assert 'workflow="word_count"' in text
        advice = waited.structured_content["advice"]
        assert (advice["provider"], advice["title"]) == (NAME, "Crunch job failed")
        assert "empty_text" in advice["what_happened"]


async def test_a_pasted_crunch_429_is_explained_by_explain_error(crunch_client: Client) -> None:
    with anyio.fail_after(30):
        explained = await crunch_client.call_tool(
            "explain_error",
            {"http_status": 429, "headers": {"X-Crunch-Queue": "full", "Retry-After": "30"}},
        )
        assert not explained.is_error, _text(explained)
        advice = explained.structured_content["advice"]
        assert (advice["provider"], advice["title"]) == (NAME, "Crunch queue full")
        assert advice["retry_after_seconds"] == 30


async def test_bad_params_are_refused_by_the_provider_before_anything_is_sent(
    crunch_client: Client,
) -> None:
    with anyio.fail_after(30):
        refused = await crunch_client.call_tool(
            "start_seo_job", {"workflow": "word_count", "params": {"colour": "red"}}
        )
        assert refused.is_error
        assert "params.text" in _text(refused)
        listed = await crunch_client.call_tool("list_jobs", {})
        assert listed.structured_content["jobs"] == []


async def _read(client: Client, uri: str) -> str:
    result = await client.read_resource(uri)
    return str(result.contents[0].text)  # type: ignore[union-attr]


async def test_list_jobs_filters_and_explain_error_explains_it_by_name(
    crunch_client: Client,
) -> None:
    with anyio.fail_after(30):
        tools = {t.name: t for t in (await crunch_client.list_tools()).tools}
        listed_enum = tools["list_jobs"].input_schema["properties"]["provider"]
        assert NAME in str(listed_enum)
        explain_enum = tools["explain_error"].input_schema["properties"]["provider"]["enum"]
        assert explain_enum == ["seamless", "agentseo", NAME, "auto"]

        started = await crunch_client.call_tool(
            "start_seo_job", {"workflow": "word_count", "params": {"text": "a b a"}}
        )
        job_id = started.structured_content["job_id"]
        mine = await crunch_client.call_tool("list_jobs", {"provider": NAME})
        assert not mine.is_error, _text(mine)
        assert [j["job_id"] for j in mine.structured_content["jobs"]] == [job_id]
        others = await crunch_client.call_tool("list_jobs", {"provider": "agentseo"})
        assert others.structured_content["jobs"] == []

        explained = await crunch_client.call_tool(
            "explain_error", {"provider": NAME, "http_status": 429}
        )
        assert not explained.is_error, _text(explained)
        advice = explained.structured_content["advice"]
        assert (advice["provider"], advice["title"]) == (NAME, "Crunch queue full")


async def test_its_fields_hint_and_error_catalogue_are_real_resources(
    crunch_client: Client,
) -> None:
    with anyio.fail_after(30):
        listed = {str(r.uri) for r in (await crunch_client.list_resources()).resources}
        assert {f"jobrelay://errors/{NAME}", f"jobrelay://fields/{NAME}"} <= listed

        started = await crunch_client.call_tool(
            "start_seo_job", {"workflow": "word_count", "params": {"text": "a b a"}}
        )
        job_id = started.structured_content["job_id"]
        await crunch_client.call_tool("wait_for_job", {"job_id": job_id, "wait_seconds": 20})
        page = await crunch_client.call_tool(
            "get_job_result", {"job_id": job_id, "fields": ["colour"]}
        )
        hint = f"jobrelay://fields/{NAME}"
        assert hint in _text(page)  # the text points at a resource that exists:
        fields = await _read(crunch_client, hint)
        assert "## word_count" in fields
        assert "`words`" in fields
        catalogue = await _read(crunch_client, f"jobrelay://errors/{NAME}")
        assert "the counting queue is full" in catalogue


def test_its_advice_table_cannot_be_registered_twice() -> None:
    register_provider_advice(ADVICE)
    try:
        with pytest.raises(ValueError, match="already registered"), registered(CrunchProvider()):
            pass
        assert "word_count" not in default_registry().workflows()  # the provider left too
    finally:
        from mcp_server.advice import unregister_provider_advice

        unregister_provider_advice(NAME)


def test_without_registration_the_workflow_is_unknown() -> None:
    assert "word_count" not in default_registry().workflows()


def test_the_registry_refuses_a_provider_that_clashes() -> None:
    from mcp_server.providers import ProviderRegistry

    registry = ProviderRegistry()
    for provider in default_registry():
        registry.register(provider)
    registry.register(CrunchProvider())
    clashes: list[tuple[dict[str, Any], str]] = [
        ({"name": "crunch", "id_prefix": "crx_", "workflows": ("x",)}, "already registered"),
        ({"name": "crunch2", "id_prefix": "seo_", "workflows": ("x",)}, "id_prefix 'seo_'"),
        ({"name": "crunch2", "id_prefix": "crx_", "workflows": ("serp_analysis",)}, "agentseo"),
        ({"name": "Crunch!", "id_prefix": "crx_", "workflows": ("x",)}, "provider name"),
    ]
    for attrs, message in clashes:
        other = CrunchProvider()
        for key, value in attrs.items():
            setattr(other, key, value)
        with pytest.raises(ValueError, match=message):
            registry.register(other)
    assert registry.names() == ["seamless", "agentseo", "crunch"]
    assert [p.name for p in registry.for_handle("crn_0123456789abcdef")] == ["crunch"]
    assert registry.for_workflow("word_count") is not None
    registry.unregister("crunch")
    assert registry.for_workflow("word_count") is None


async def test_its_requests_are_limited_by_the_buckets_it_declares(
    make_settings: Callable[..., Settings], sandbox_state: SandboxState
) -> None:
    """Its `RATE_LIMITS` (declared in tests/crunch_provider.py; nothing under mcp_server/ names
    it) route and seed its buckets: `START_LIMIT` starts go out, the next is refused by our
    own limiter before anything is sent, and get_usage shows both buckets at their limits.
    Time stands still (`FakeClock`), so the refusal's wait is the whole window, exactly."""
    clock = FakeClock()
    transport = _Counting(httpx.ASGITransport(app=crunch_app()))
    with registered(CrunchProvider()):
        server = build_server(
            make_settings(CRUNCH_API_KEY="crunch-test-key"),
            clock=clock,
            sandbox_state=sandbox_state,
            transports={NAME: transport},
        )
        async with Client(server) as client:
            with anyio.fail_after(30):
                job_ids = []
                for _ in range(START_LIMIT):
                    started = await client.call_tool(
                        "start_seo_job", {"workflow": "word_count", "params": {"text": "a b"}}
                    )
                    assert not started.is_error, _text(started)
                    job_ids.append(started.structured_content["job_id"])
                status = await client.call_tool("get_job_status", {"job_ids": job_ids[:1]})
                assert not status.is_error, _text(status)

                refused = await client.call_tool(
                    "start_seo_job", {"workflow": "word_count", "params": {"text": "a b"}}
                )
                assert refused.is_error, _text(refused)
                error = refused.structured_content["error"]
                assert error["code"] == "local_rate_limited", error
                # the window (60 s) with the limiter's safety margin (0.96): 62.5 s, shown in
                # whole seconds rounded up
                assert error["retry_after_seconds"] == math.ceil(WINDOW / SAFETY), error
                assert transport.sent == {"POST": START_LIMIT, "GET": 1}  # nothing more sent

                usage = await client.call_tool("get_usage", {})
                assert not usage.is_error, _text(usage)
                (mine,) = [
                    p for p in usage.structured_content["providers"] if p["provider"] == NAME
                ]
                buckets = {b["bucket"]: (b["limit"], b["remaining"]) for b in mine["buckets"]}
                assert buckets == {
                    "start": (START_LIMIT, 0),
                    "status": (STATUS_LIMIT, STATUS_LIMIT - 1),
                }


def test_its_settings_are_read_from_the_variables_it_declares(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`SETTINGS` (tests/crunch_provider.py) names its variables, key variable and base URL;
    `mcp_server.config` reads them without naming the provider, with the same texts."""
    env = {"CRUNCH_API_KEY": "  k-1 ", "CRUNCH_BASE_URL": "http://127.0.0.1:9/v1"}
    assert load_settings(env).variable("CRUNCH_API_KEY") is None  # not registered: not read
    with registered(CrunchProvider()):
        settings = load_settings(env)
        assert settings.variable("crunch_api_key") == "k-1"
        assert settings.api_key(NAME) == SecretStr("k-1")
        assert settings.base_url(NAME) == "http://127.0.0.1:9/v1"
        assert CrunchProvider().base_url(settings) == "http://127.0.0.1:9/v1"

        bare = load_settings({"JOBRELAY_SANDBOX": "0", "CRUNCH_API_KEY": " "})  # blank: unset
        assert bare.api_key(NAME) is None
        assert bare.base_url(NAME) == BASE_URL
        assert bare.missing_key(NAME) == (
            "CRUNCH_API_KEY is not set and JOBRELAY_SANDBOX=0 turns the sandbox off. "
            "Fix: set CRUNCH_API_KEY, or unset JOBRELAY_SANDBOX to use the sandbox."
        )
        assert load_settings({}).sandbox_reason(NAME) == "no CRUNCH_API_KEY"

        monkeypatch.setenv("CRUNCH_API_KEY", "k-env")  # from the process environment too
        assert load_settings().api_key(NAME) == SecretStr("k-env")
    with pytest.raises(LookupError, match="no settings registered for provider 'crunch'"):
        settings.api_key(NAME)
