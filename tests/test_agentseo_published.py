"""AgentSEO as published (issue 12.7): the business name goes in `domain`, `language` is passed
through, and a batch is limited the same in the tool, the client and the sandbox."""

from __future__ import annotations

import json
from typing import Any

import pytest
from _waits import until_done
from conftest import call, structured, text_of
from mcp import Client

from mcp_server.providers.agentseo.adapter import LocalAuditBatchParams
from mcp_server.sandbox import SandboxState
from mcp_server.sandbox import agentseo as sandbox_agentseo
from mcp_server.upstream.agentseo import MAX_BATCH_TARGETS

pytestmark = pytest.mark.anyio


def _sent(state: SandboxState, path: str) -> list[Any]:
    out = []
    for key in state.post_bodies:
        provider, where, body = key.split(" ", 2)
        if (provider, where) == ("agentseo", path):
            out.append(json.loads(body))
    return out


async def test_a_business_name_and_language_go_out_as_published(
    client: Client, sandbox_state: SandboxState
) -> None:
    result = await call(
        client,
        "start_seo_job",
        {
            "workflow": "local_audit",
            "params": {"business_name": "Joe's Pizza", "location": "Austin, TX", "language": "es"},
        },
    )
    assert not result.is_error, text_of(result)
    assert _sent(sandbox_state, "/audit/local") == [
        {"domain": "Joe's Pizza", "location": "Austin, TX", "language": "es"}
    ]


async def test_a_batch_answer_of_job_ids_becomes_one_handle(
    client: Client, sandbox_state: SandboxState
) -> None:
    targets = [
        {"domain": "acme.com", "location": "Austin, TX"},
        {"business_name": "Joe's Pizza", "location": "Austin, TX"},
    ]
    started = await call(
        client,
        "start_seo_job",
        {"workflow": "local_audit_batch", "params": {"targets": targets}, "wait_seconds": 30},
    )
    result = await until_done(client, started)
    assert not result.is_error, text_of(result)
    assert structured(result)["state"] == "succeeded"
    assert structured(result)["results_total"] == 2
    [sent] = _sent(sandbox_state, "/audit/local/batch")
    assert sent["targets"][1] == {"domain": "Joe's Pizza", "location": "Austin, TX"}


async def test_domain_and_business_name_together_are_refused(client: Client) -> None:
    result = await call(
        client,
        "start_seo_job",
        {
            "workflow": "local_audit",
            "params": {"domain": "a.com", "business_name": "A", "location": "Austin"},
        },
    )
    assert result.is_error
    assert structured(result)["error"]["code"] == "invalid_input"
    assert "not both" in text_of(result)


def test_the_batch_limit_is_one_number_everywhere() -> None:
    schema = LocalAuditBatchParams.model_json_schema()
    assert schema["properties"]["targets"]["maxItems"] == MAX_BATCH_TARGETS
    assert sandbox_agentseo.MAX_BATCH_TARGETS == MAX_BATCH_TARGETS


async def test_a_batch_over_the_limit_is_invalid_input_and_sends_nothing(
    client: Client, sandbox_state: SandboxState
) -> None:
    targets = [{"domain": f"s{i}.com", "location": "Austin"} for i in range(MAX_BATCH_TARGETS + 1)]
    result = await call(
        client, "start_seo_job", {"workflow": "local_audit_batch", "params": {"targets": targets}}
    )
    assert result.is_error
    assert structured(result)["error"]["code"] == "invalid_input"
    assert f"at most {MAX_BATCH_TARGETS}" in text_of(result)
    assert _sent(sandbox_state, "/audit/local/batch") == []
