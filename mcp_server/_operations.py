"""The MCP middleware behind `mcp.server.operation.duration` and the log lines' request id.

Installed by `server.build_server` only when metrics or JSON logs are on (nothing per request
otherwise). It sits inside the SDK's own OpenTelemetry middleware (which makes the span per
message, with the trace context from `params._meta`) and records what the MCP semantic
conventions name for the same operation: `mcp.method.name`, `gen_ai.tool.name` (and
`gen_ai.operation.name` = `execute_tool`) for tools, `mcp.protocol.version`, and `error.type`
plus `rpc.response.status_code` when it fails, as the SDK's span does.
"""

from __future__ import annotations

import time
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, CallToolResult
from pydantic import ValidationError

from mcp_server import telemetry

__all__ = ["OperationMetrics"]


class OperationMetrics:
    """Context-tier `ServerMiddleware`: times each inbound message; sets `REQUEST_ID`."""

    async def __call__(
        self, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        name = ctx.params.get("name") if ctx.params else None
        tool = name if ctx.method == "tools/call" and isinstance(name, str) else None
        token = telemetry.REQUEST_ID.set(None if ctx.request_id is None else str(ctx.request_id))
        error: str | None = None
        code: str | None = None
        start = time.perf_counter()
        try:
            result = await call_next(ctx)
        except MCPError as exc:
            error = code = str(exc.error.code)
            raise
        except ValidationError:
            error = code = str(INVALID_PARAMS)
            raise
        except Exception as exc:
            error = type(exc).__qualname__
            raise
        else:
            if tool is not None and _is_tool_error(result):
                error = "tool_error"
            return result
        finally:
            telemetry.REQUEST_ID.reset(token)
            telemetry.mcp_operation(
                ctx.method,
                tool=tool,
                protocol_version=ctx.protocol_version,
                error_type=error,
                status_code=code,
                seconds=time.perf_counter() - start,
            )


def _is_tool_error(result: HandlerResult) -> bool:
    """A tool result that reaches the wire as an error (the model, or the camelCase dict)."""
    if isinstance(result, CallToolResult):
        return result.is_error is True
    return isinstance(result, dict) and result.get("isError") is True
