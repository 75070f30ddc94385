"""`mcptasks.direct_tool_calls`: jobrelay's one `tools/call` dispatcher, and its fallback.

It reaches two names the MCP SDK keeps private (`_handle_call_tool`, `_lowlevel_server`). An
SDK release inside the `mcp>=2.3,<3` range that renamed them must not stop the server from
starting: it then keeps the SDK's own interceptor chain (the same behaviour, a little more
memory per open call).
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest

from mcp_server.mcptasks import TasksExtension, direct_tool_calls

pytestmark = pytest.mark.anyio


class _Recorder:
    def __init__(self) -> None:
        self.handlers: list[tuple[str, Any, Any]] = []

    def add_request_handler(self, method: str, params: Any, handler: Any) -> None:
        self.handlers.append((method, params, handler))


class _Server:
    """Just the two names `direct_tool_calls` reads, as today's SDK has them."""

    def __init__(self) -> None:
        self._lowlevel_server = _Recorder()

    async def _handle_call_tool(self, ctx: Any, params: Any) -> str:
        return f"bare:{params.name}:{ctx}"


class _Renamed:
    """An SDK whose private names changed: neither is there."""


def _extension() -> TasksExtension:
    return TasksExtension(tools={"wait_for_job"}, engine=lambda state: state.tasks)


def test_registers_one_dispatcher_for_tools_call() -> None:
    server = _Server()
    assert direct_tool_calls(server, _extension()) is server  # type: ignore[type-var]
    assert [method for method, _, _ in server._lowlevel_server.handlers] == ["tools/call"]


def test_an_sdk_without_the_private_names_keeps_its_own_chain() -> None:
    renamed = _Renamed()
    assert direct_tool_calls(renamed, _extension()) is renamed  # type: ignore[type-var]
    half = _Server()
    del half._lowlevel_server
    assert direct_tool_calls(half, _extension()) is half  # type: ignore[type-var]


async def test_a_plain_call_is_the_sdks_own_handler_with_nothing_around_it() -> None:
    from mcp.types import CallToolRequestParams

    server = _Server()
    direct_tool_calls(server, _extension())  # type: ignore[type-var]
    ((_, params_type, handler),) = server._lowlevel_server.handlers
    assert params_type is CallToolRequestParams
    with anyio.fail_after(5):
        answer = await handler("ctx", CallToolRequestParams(name="get_job_status", arguments={}))
    assert answer == "bare:get_job_status:ctx"
