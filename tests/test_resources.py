"""The MCP resources (issue 4, item 5): a job, the advice catalogue per provider, usage."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from conftest import call, read, structured
from mcp import Client, MCPError

from mcp_server import advice

pytestmark = pytest.mark.anyio


def _text_of(content: Any) -> str:
    text: str = content.text
    return text


def _text(resource: Any) -> str:
    [content] = resource.contents
    text: str = content.text
    return text


async def test_the_templates_and_usage_are_listed(client: Client) -> None:
    templates = {
        t.uri_template for t in (await client.list_resource_templates()).resource_templates
    }
    assert {"jobrelay://jobs/{job_id}", "jobrelay://errors/{provider}"} <= templates
    listed = {str(r.uri) for r in (await client.list_resources()).resources} | templates
    assert any(uri.startswith("jobrelay://usage") for uri in listed)


async def test_resources_list_names_the_concrete_resources_and_each_reads(
    client: Client,
) -> None:
    with anyio.fail_after(10):
        resources = (await client.list_resources()).resources
    by_uri = {str(r.uri): r for r in resources}
    assert set(by_uri) == {
        "jobrelay://errors/seamless",
        "jobrelay://errors/agentseo",
        "jobrelay://fields/seamless",
        "jobrelay://fields/agentseo",
        "jobrelay://usage",
    }
    for uri, resource in by_uri.items():
        assert resource.name
        assert resource.description
        [content] = (await read(client, uri)).contents
        assert content.mime_type == resource.mime_type, uri
        assert _text_of(content), uri
    usage = json.loads(_text_of((await read(client, "jobrelay://usage")).contents[0]))
    assert {p["provider"] for p in usage["providers"]} == {"seamless", "agentseo"}


async def test_a_job_resource_is_the_job_as_the_ledger_saw_it(client: Client) -> None:
    started = await call(
        client,
        "start_research",
        {"kind": "contacts", "contacts": [{"name": "Ada Lovelace", "company": "AE"}]}
        | {"wait_seconds": 30},
    )
    job_id = structured(started)["job_id"]
    resource = await read(client, f"jobrelay://jobs/{job_id}")
    [content] = resource.contents
    assert content.mime_type == "application/json"
    job = json.loads(_text(resource))
    assert (job["job_id"], job["state"], job["provider"]) == (job_id, "succeeded", "seamless")
    assert job["results"] == structured(started)["results"]


async def test_an_unknown_job_resource_is_an_error_naming_list_jobs(client: Client) -> None:
    with pytest.raises(MCPError) as raised:
        await read(client, "jobrelay://jobs/sea_nope")
    assert "list_jobs" in raised.value.message


@pytest.mark.parametrize("provider", ["seamless", "agentseo"])
async def test_the_error_catalogue_is_served_per_provider(client: Client, provider: Any) -> None:
    resource = await read(client, f"jobrelay://errors/{provider}")
    [content] = resource.contents
    assert content.mime_type == "text/markdown"
    text = _text(resource)
    assert text == advice.catalogue_markdown(provider)
    assert text.startswith("# jobrelay advice catalogue")
    codes = ("429", "401", "403") + (("422",) if provider == "seamless" else ("402",))
    for code in codes:
        assert code in text, code


async def test_an_unknown_provider_catalogue_is_an_error(client: Client) -> None:
    with pytest.raises(MCPError) as raised:
        await read(client, "jobrelay://errors/stripe")
    assert "seamless" in raised.value.message


async def test_the_usage_resource_matches_get_usage(client: Client) -> None:
    await call(client, "search_prospects", {"kind": "contacts", "limit": 1})
    from_tool = structured(await call(client, "get_usage", {}))
    resource = await read(client, "jobrelay://usage")
    [content] = resource.contents
    assert content.mime_type == "application/json"
    usage = json.loads(_text(resource))
    assert [p["provider"] for p in usage["providers"]] == ["seamless", "agentseo"]
    assert usage["providers"][0]["buckets"] == from_tool["providers"][0]["buckets"]


async def test_the_usage_resource_can_be_narrowed_to_one_provider(client: Client) -> None:
    usage = json.loads(_text(await read(client, "jobrelay://usage?provider=agentseo")))
    assert [p["provider"] for p in usage["providers"]] == ["agentseo"]
    with pytest.raises(MCPError):
        await read(client, "jobrelay://usage?provider=stripe")


async def test_fields_and_output_schemas_are_readable(client: Client) -> None:
    seamless = _text_of((await read(client, "jobrelay://fields/seamless")).contents[0])
    assert "## contacts" in seamless
    assert "`email2`" in seamless
    agentseo = _text_of((await read(client, "jobrelay://fields/agentseo")).contents[0])
    assert "`agent_workflow.decision`" in agentseo
    schema = json.loads(
        _text_of((await read(client, "jobrelay://schemas/wait_for_job")).contents[0])
    )
    assert {"job_id", "state", "results", "error"} <= set(schema["properties"])
