"""Input bounds (issues 14.4, 20.3): every argument is bounded in its published schema, and the
server refuses anything outside with a short `invalid_input` before the ledger or upstream."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import answer_tokens, assert_agent_safe, call, structured, text_of
from mcp import Client

from mcp_server import _bounds as B
from mcp_server.sandbox import SandboxState

pytestmark = pytest.mark.anyio

MEGA = "x" * 1_000_000


def _walk(node: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    out: list[tuple[str, dict[str, Any]]] = []
    if not isinstance(node, dict):
        return out
    out.append((where, node))
    for name, prop in (node.get("properties") or {}).items():
        out += _walk(prop, f"{where}.{name}")
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{where}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{where}{{}}")
    return out


async def test_every_argument_is_bounded_in_the_published_schema(client: Client) -> None:
    tools = (await client.list_tools()).tools
    for tool in tools:
        shared = list((tool.input_schema.get("$defs") or {}).items())
        nodes = _walk(tool.input_schema, tool.name) + [
            pair for name, d in shared for pair in _walk(d, f"{tool.name}.$defs.{name}")
        ]
        for where, node in nodes:
            types = node.get("type")
            types = types if isinstance(types, list) else [types]
            if "string" in types and "enum" not in node:
                assert isinstance(node.get("maxLength"), int), where
            if ("number" in types or "integer" in types) and "enum" not in node:
                assert "maximum" in node, where
                assert "minimum" in node or "exclusiveMinimum" in node, where
            if "array" in types:
                assert isinstance(node.get("maxItems"), int), where
    waits = [
        t.input_schema["properties"]["wait_seconds"]["maximum"]
        for t in tools
        if "wait_seconds" in t.input_schema["properties"]
    ]
    assert waits == [45, 45, 45]  # the server's default cap, not more


async def _refused(client: Client, tool: str, args: dict[str, Any], field: str) -> str:
    result = await call(client, tool, args)
    assert result.is_error, text_of(result)
    assert structured(result)["error"]["code"] == "invalid_input", text_of(result)
    text = text_of(result)
    assert field in text, text
    assert "internal error" not in text
    assert answer_tokens(result) < 500, answer_tokens(result)  # the input is never echoed whole
    assert_agent_safe(result)
    return text


async def test_out_of_range_numbers_are_invalid_input_not_internal_errors(client: Client) -> None:
    await _refused(client, "list_jobs", {"since_hours": 1e308}, "since_hours")
    await _refused(client, "list_jobs", {"since_hours": 0}, "since_hours")
    await _refused(client, "get_job_result", {"job_id": "sea_x", "offset": 10**30}, "offset")
    await _refused(client, "wait_for_job", {"job_id": "sea_x", "wait_seconds": 1e308}, "wait")
    await _refused(client, "explain_error", {"http_status": 10**20}, "http_status")
    await _refused(client, "search_prospects", {"kind": "contacts", "limit": 51}, "limit")


async def test_a_one_megabyte_contact_name_is_refused_before_ledger_or_upstream(
    client: Client, sandbox_state: SandboxState
) -> None:
    text = await _refused(
        client,
        "start_research",
        {"kind": "contacts", "contacts": [{"name": MEGA, "company": "Acme"}]},
        "contacts.0.name",
    )
    assert f"at most {B.MAX_NAME_CHARS} characters" in text
    assert not sandbox_state.requests  # nothing was sent upstream
    assert structured(await call(client, "list_jobs", {}))["jobs"] == []  # nor recorded


async def test_oversized_ids_fields_and_bodies_come_back_short(client: Client) -> None:
    await _refused(client, "wait_for_job", {"job_id": MEGA}, "job_id")
    await _refused(client, "get_job_status", {"job_ids": [MEGA]}, "job_ids.0")
    await _refused(client, "get_job_result", {"job_id": "sea_x", "fields": [MEGA]}, "fields.0")
    await _refused(client, "search_prospects", {"kind": "contacts", "query": MEGA}, "query")
    await _refused(client, "explain_error", {"body": MEGA}, "body")
    await _refused(client, "explain_error", {"body": {"message": MEGA}}, "body")
    await _refused(
        client,
        "start_seo_job",
        {"workflow": "serp_analysis", "params": {"keyword": MEGA}},
        "params",
    )
    await _refused(client, "list_jobs", {MEGA: 1}, "not a known argument")


def test_echo_keeps_a_short_prefix() -> None:
    assert B.echo("abc") == "'abc'"
    long = B.echo(MEGA)
    assert len(long) < 100
    assert "1,000,000 chars" in long


def test_fit_items_cuts_at_item_boundaries_and_never_returns_an_empty_page() -> None:
    items = [{"n": i, "pad": "y" * 300} for i in range(50)]
    kept, cut = B.fit_items(items, 1_000)
    assert cut
    assert 0 < len(kept) < 50
    assert kept == items[: len(kept)]
    assert B.tokens(kept) <= 1_000
    huge = [{"title": "t" * 5_000_000}]
    kept, cut = B.fit_items(huge, 1_000)
    assert len(kept) == 1
    assert not cut
    assert B.tokens(kept) <= 1_000
    assert "[truncated" in kept[0]["title"]
