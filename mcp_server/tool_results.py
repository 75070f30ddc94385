"""The tool results jobrelay answers on its own: bad arguments, an unknown tool, an internal error.

Shared by the server (tool calls) and the JSON-RPC guard (a refused message answered as a tool
result); it lives apart so neither imports the other.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mcp.types import CallToolResult, TextContent

from mcp_server import _bounds as B
from mcp_server.json_types import JSON
from mcp_server.models import ErrorCode, ErrorInfo

__all__ = ["internal_error_result", "invalid_arguments_result", "unknown_tool_result"]


def _schema_at(schema: Mapping[str, Any], loc: Sequence[Any]) -> Mapping[str, Any] | None:
    """The (compact) schema node an error location points at: names are properties, numbers
    are list items."""
    node: Any = schema
    for part in loc:
        if not isinstance(node, Mapping):
            return None
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            node = node.get("items")
        else:
            node = node.get("properties", {}).get(str(part))
    return node if isinstance(node, Mapping) else None


def _allowed(node: Mapping[str, Any] | None) -> str:
    values = node.get("enum") if node else None
    if isinstance(values, list) and values:
        return " (one of " + ", ".join(repr(v) for v in values) + ")"
    return ""


def _describe_problem(err: Mapping[str, Any], schema: Mapping[str, Any]) -> tuple[str, str]:
    """`(field, sentence fragment)` for one validation error, with the allowed names or
    values when the schema lists them."""
    loc = list(err.get("loc", ()))
    where = ".".join(str(p)[: B.ECHO_CHARS] for p in loc) or "arguments"
    kind = str(err.get("type", ""))
    msg = str(err.get("msg", "invalid"))
    if kind == "missing":
        return where, f"{where} is required{_allowed(_schema_at(schema, loc))}"
    if kind == "extra_forbidden":
        parent = _schema_at(schema, loc[:-1])
        names = sorted((parent or {}).get("properties", {}))
        known = f" (known: {', '.join(names)})" if names else ""
        return where, f"{where} is not a known {'argument' if len(loc) == 1 else 'field'}{known}"
    got = err.get("input")
    shown = f" (got {B.echo(got)})" if isinstance(got, str | int | float | bool) else ""
    return where, f"{where}: {msg[0].lower() + msg[1:]}{shown}"


def invalid_arguments_result(
    tool: str, errors: Sequence[Mapping[str, JSON]], schema: Mapping[str, JSON]
) -> CallToolResult:
    """isError `invalid_input` naming every bad field, what is allowed, and the one fix."""
    described = [_describe_problem(e, schema) for e in errors]
    field = described[0][0] if described else "the arguments"
    problems = "; ".join(d[1] for d in described) or "invalid arguments"
    if errors and errors[0].get("type") == "extra_forbidden":
        next_step = f"Call {tool} again without {field}."
    else:
        next_step = f"Call {tool} again with {field} fixed."
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, retryable=False, next_step=next_step)
    text = f"Invalid arguments for {tool}: {problems}. Next: {next_step} {_INVALID_DO_NOT}"
    return _error_result(text, error)


_INVALID_DO_NOT = "Do not retry unchanged: it is refused the same way, and nothing was sent."


def unknown_tool_result(tool: str, names: Sequence[str]) -> CallToolResult:
    next_step = f"Call one of: {', '.join(names)}."
    error = ErrorInfo(code=ErrorCode.INVALID_INPUT, retryable=False, next_step=next_step)
    return _error_result(f"jobrelay has no tool {B.echo(tool)}. Next: {next_step}", error)


def internal_error_result(tool: str) -> CallToolResult:
    next_step = (
        "try the call once more; if it fails again, find any job it started with list_jobs "
        "(the ledger keeps every started job) and report the problem."
    )
    error = ErrorInfo(code=ErrorCode.UPSTREAM_ERROR, retryable=True, next_step=next_step)
    return _error_result(f"jobrelay hit an internal error in {tool}. Next: {next_step}", error)


def _error_result(text: str, error: ErrorInfo) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=text)],
        structured_content={"error": error.model_dump(mode="json")},
        is_error=True,
    )
