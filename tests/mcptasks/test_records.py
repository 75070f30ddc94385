"""Records, updates, ids and the in-memory store, without a server."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from mcp.server.auth.middleware.auth_context import auth_context_var
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.types import CallToolResult, TextContent

from mcp_server.mcptasks import (
    InMemoryTaskStore,
    TaskCall,
    TaskEngine,
    TaskRecord,
    TaskUpdate,
    owner_from_access_token,
)
from mcp_server.mcptasks._ids import TaskIds
from mcp_server.mcptasks._wire import detailed_task, task_fields
from mcptasks.toy import assert_valid, schema_or_skip

pytestmark = pytest.mark.anyio

RESULT = CallToolResult(content=[TextContent(type="text", text="ok")], structured_content={"n": 1})


def record(**overrides: Any) -> TaskRecord:
    fields: dict[str, Any] = {
        "task_id": "t1",
        "owner": "alice",
        "handle": "job-1",
        "tool": "slow",
        "created_at": 1_790_000_000.0,
        "updated_at": 1_790_000_000.0,
        "ttl_ms": 60_000,
        "poll_interval_ms": 5_000,
    }
    return TaskRecord(**{**fields, **overrides})


messages = st.none() | st.text(max_size=20)
updates = st.one_of(
    st.builds(TaskUpdate, status=st.none() | st.just("working"), status_message=messages),
    st.builds(
        TaskUpdate, status=st.just("completed"), status_message=messages, result=st.just(RESULT)
    ),
    st.builds(
        TaskUpdate,
        status=st.just("failed"),
        status_message=messages,
        error=st.fixed_dictionaries({"code": st.integers(-32768, -32000), "message": st.text()}),
    ),
    st.builds(TaskUpdate, status=st.just("cancelled"), status_message=messages),
    st.builds(TaskUpdate, poll_interval_ms=st.integers(0, 60_000)),
)


@given(st.lists(updates, max_size=8))
def test_a_terminal_task_never_changes_and_every_state_fits_the_schema(
    steps: list[TaskUpdate],
) -> None:
    schema_or_skip()
    current = record(status_message="queued")
    for i, update in enumerate(steps, start=1):
        after = current.apply(update, now=current.created_at + i)
        if current.terminal:
            assert after is current
        else:
            assert after.status == (update.status or current.status)
            assert after.updated_at == current.created_at + i
            if update.status is not None and update.status != current.status:
                assert after.status_message == update.status_message  # a new status, a new message
            elif update.status_message is None:
                assert after.status_message == current.status_message
        assert_valid("DetailedTask", detailed_task(after))
        current = after


def test_a_completed_task_carries_the_tool_result_on_the_wire() -> None:
    done = record().apply(TaskUpdate(status="completed", result=RESULT), now=1_790_000_001.5)
    wire = detailed_task(done)
    assert wire["result"] == {
        "content": [{"type": "text", "text": "ok"}],
        "structuredContent": {"n": 1},
        "isError": False,
        "resultType": "complete",
    }
    assert wire["createdAt"] == "2026-09-21T14:13:20.000Z"
    assert wire["lastUpdatedAt"] == "2026-09-21T14:13:21.500Z"
    assert "result" not in task_fields(done)


@pytest.mark.parametrize(
    ("kwargs", "phrase"),
    [
        ({"status": "completed"}, "a result goes with status 'completed'"),
        ({"result": RESULT}, "a result goes with status 'completed'"),
        ({"status": "failed"}, "an error goes with status 'failed'"),
        ({"status": "failed", "error": {"message": "no code"}}, "must be a JSON-RPC error"),
        ({"status": "input_required"}, "cannot be set"),
        ({"poll_interval_ms": -1}, "must not be negative"),
    ],
)
def test_an_impossible_update_is_refused_with_what_to_fix(
    kwargs: dict[str, Any], phrase: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(phrase)):
        TaskUpdate(**kwargs)


@given(st.text(), st.text(), st.text(), st.text())
def test_ids_are_header_safe_and_differ_per_owner_and_handle(
    owner: str, handle: str, other_owner: str, other_handle: str
) -> None:
    ids = TaskIds(b"0123456789abcdef0123")
    owner, other_owner = owner.replace("\0", ""), other_owner.replace("\0", "")
    minted = ids.mint(owner, handle)
    assert re.fullmatch(r"[A-Za-z0-9_-]{24}", minted)
    assert ids.mint(owner, handle) == minted
    if (owner, handle) != (other_owner, other_handle):
        assert ids.mint(other_owner, other_handle) != minted


def test_ids_refuse_what_would_make_two_pairs_collide() -> None:
    ids = TaskIds(b"0123456789abcdef0123")
    with pytest.raises(ValueError, match="NUL"):
        ids.mint("a\0b", "c")  # would read like owner "a", handle "b\0c"
    with pytest.raises(ValueError, match="16 bytes"):
        TaskIds(b"short")


async def test_the_in_memory_store_scopes_reads_and_keeps_terminal_records() -> None:
    store = InMemoryTaskStore()
    first = await store.create(record())
    assert await store.create(record(handle="changed")) == first  # create is idempotent
    assert await store.get("t1", "alice") == first
    assert await store.get("t1", "bob") is None
    assert await store.get("t1", None) == first
    done = first.apply(TaskUpdate(status="cancelled"), now=first.created_at + 1)
    assert await store.save(done) == done
    assert await store.save(first) == done  # a terminal record is never overwritten
    assert await store.save(record(task_id="unknown")) is None
    assert await store.delete_expired(first.created_at + 59.999) == 0
    assert await store.delete_expired(first.created_at + 60) == 1
    assert await store.get("t1", None) is None


def test_engine_limits_are_checked_when_it_is_built() -> None:
    with pytest.raises(ValueError, match="ttl_ms must be positive"):
        TaskEngine(InMemoryTaskStore(), start=_never, ttl_ms=0)
    with pytest.raises(ValueError, match="poll_interval_ms must not be negative"):
        TaskEngine(InMemoryTaskStore(), start=_never, poll_interval_ms=-1)


async def _never(call: TaskCall) -> None:
    raise AssertionError("not called")


def test_the_default_owner_is_the_requests_oauth_identity() -> None:
    token = AccessToken(token="t", client_id="app", scopes=[], subject="alice")
    ctx: Any = object()
    assert owner_from_access_token(ctx) == ""
    reset = auth_context_var.set(AuthenticatedUser(token))
    try:
        assert owner_from_access_token(ctx) == "app\x1falice"
    finally:
        auth_context_var.reset(reset)


async def test_updating_an_unknown_task_is_none() -> None:
    engine = TaskEngine(InMemoryTaskStore(), start=_never)
    assert await engine.update("nope", TaskUpdate(status_message="x")) is None
    assert await engine.refresh("nope") is None
