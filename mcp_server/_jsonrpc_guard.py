"""A check of each incoming JSON-RPC message before the MCP SDK sees it (stdio and HTTP).

Why: what mcp 2.3.0 does by itself with a malformed message (verified on `jobrelay serve`):

- stdio (`mcp/server/stdio.py`): each line goes to pydantic's `validate_json`; a line that
  fails (invalid JSON, a batch array, `params` as a list, no `jsonrpc`, a lone-surrogate id,
  more than ~200 levels of nesting, integers Python will not parse) is handed to the session
  as an exception and **never answered**, whether or not it had an id: the client waits for
  its own timeout. Integers of any length are accepted as ids.
- Streamable HTTP: every such body does get a 400 with a JSON-RPC error, but mostly with
  `"id": null` and the parser's own wording ("Parse error: recursion limit exceeded",
  "4 validation errors for union[JSONRPCRequest, ...]"); tool arguments nested 250 deep are a
  parse error instead of the tool's `invalid_input`, and on 2026-07-28 the envelope problems
  are reported as a missing `params._meta` (checked 2025-06-18 and 2026-07-28 eras).
- jobrelay's own stdio bookkeeping used Python's `json`, which raises RecursionError (not
  ValueError) at ~1,000 levels: that killed the stdin reader thread, and the session went
  silent for good (issue 14.2).

So every message is scanned once, linearly and without recursion, before any parser runs:
size, nesting depth, digits of every number, lone UTF-16 surrogates, JSON syntax, then the
envelope (`jsonrpc`, `id`, `method`, `params`). A bad request costs one answer, a bad
notification one log line, and the session goes on:

- a problem inside a `tools/call`'s `arguments` is the tool's `invalid_input` result, naming
  the argument (the agent fixes its call);
- anything else is a JSON-RPC error (-32700 parse error, -32600 invalid request, -32602
  params not an object), with the request's id when it is usable, else `null`.

The limits are named in `_bounds` (message bounds). The SDK itself is not patched.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from mcp_server._bounds import (
    MAX_ARGUMENT_DEPTH,
    MAX_ECHOED_ID_CHARS,
    MAX_INTEGER_DIGITS,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_DEPTH,
)
from mcp_server.json_types import JSON, JSONObject

log = logging.getLogger(__name__)

PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600
INVALID_PARAMS: Final = -32602

_TOKEN = re.compile(
    r"""
    (?P<str>"[^"\\]*(?:\\.[^"\\]*)*")
    |(?P<num>-?(?P<int>[0-9]+)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)
    |(?P<punct>[{}\[\]:,])
    |(?P<lit>true|false|null)
    |(?P<ws>[ \t\r\n]+)
    |(?P<bad>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_SURROGATE = re.compile("[\ud800-\udfff]")
_ARGUMENTS: Final = ("params", "arguments")
_CAPTURED: Final = frozenset({("jsonrpc",), ("id",), ("method",), ("params", "name")})

Path = tuple[str | int, ...]


@dataclass
class _Scan:
    """What one linear pass over a message found."""

    syntax_error: str | None = None
    problems: list[tuple[Path, str]] = field(default_factory=list)
    scalars: dict[Path, str] = field(default_factory=dict)
    """Raw JSON text of the scalars at `_CAPTURED` paths (last one wins, as in `json`)."""


_MAX_WHERE_CHARS = 160


def _where(path: Path) -> str:
    """A path for a message, bounded (keys are the client's text, possibly huge)."""
    cut = bool(path) and path[-1] == "..."
    parts = [
        str(p) if len(str(p)) <= 40 else str(p)[:37] + "..." for p in path[: -1 if cut else None]
    ]
    text = (".".join(parts) + ("..." if cut else "")) or "the message"
    return text if len(text) <= _MAX_WHERE_CHARS else text[: _MAX_WHERE_CHARS - 3] + "..."


def _outer(path: Path, keep: int) -> Path:
    """The start of a too-deep path: where the nesting begins is what the sender can fix."""
    return path if len(path) <= keep + 4 else (*path[: keep + 4], "...")


def _has_surrogate(lexeme: str) -> bool:
    if "\\u" not in lexeme:
        return False
    try:
        return _SURROGATE.search(json.loads(lexeme)) is not None
    except ValueError:
        return False  # a broken escape: the full parse names it


def _scan(text: str) -> _Scan:  # noqa: PLR0915  # one state machine, kept whole
    scan = _Scan()
    stack: list[list[Any]] = []  # [opening char, current key or index]
    expect = "value"  # value | value_or_close | key | key_or_close | colon | after | end
    depth_reported = False
    args_depth_reported = False

    def here() -> Path:
        return tuple(frame[1] for frame in stack)

    def problem(path: Path, what: str) -> None:
        if len(scan.problems) < 3:
            scan.problems.append((path, what))

    for match in _TOKEN.finditer(text):
        kind = match.lastgroup
        lexeme = match.group()
        if kind == "ws":
            continue
        if kind == "bad" or expect == "end":
            scan.syntax_error = f"unexpected {lexeme[:1]!r} at character {match.start()}"
            return scan
        if expect in ("key", "key_or_close"):
            if lexeme == "}" and expect == "key_or_close":
                stack.pop()
                expect = "after" if stack else "end"
                continue
            if kind != "str":
                scan.syntax_error = f"expected a member name at character {match.start()}"
                return scan
            if _has_surrogate(lexeme):
                problem(here(), "a member name holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
            try:
                stack[-1][1] = json.loads(lexeme) if "\\" in lexeme else lexeme[1:-1]
            except ValueError:
                scan.syntax_error = f"a broken escape at character {match.start()}"
                return scan
            expect = "colon"
            continue
        if expect == "colon":
            if lexeme != ":":
                scan.syntax_error = f"expected ':' at character {match.start()}"
                return scan
            expect = "value"
            continue
        if expect == "after":
            top = stack[-1]
            if lexeme == ",":
                if top[0] == "[":
                    top[1] += 1
                    expect = "value"
                else:
                    expect = "key"
                continue
            if (lexeme == "}" and top[0] == "{") or (lexeme == "]" and top[0] == "["):
                stack.pop()
                expect = "after" if stack else "end"
                continue
            scan.syntax_error = f"expected ',' or a closing bracket at character {match.start()}"
            return scan
        # a value is expected
        if lexeme == "]" and expect == "value_or_close":
            stack.pop()
            expect = "after" if stack else "end"
            continue
        if lexeme in ("{", "["):
            depth = len(stack) + 1
            if depth > MAX_MESSAGE_DEPTH and not depth_reported:
                depth_reported = True
                problem(_outer(here(), 1), f"is nested deeper than {MAX_MESSAGE_DEPTH} levels")
            if (
                depth - 2 > MAX_ARGUMENT_DEPTH
                and not args_depth_reported
                and (stack[0][1], stack[1][1]) == _ARGUMENTS
            ):
                args_depth_reported = True
                problem(_outer(here(), 3), f"is nested deeper than {MAX_ARGUMENT_DEPTH} levels")
            stack.append([lexeme, None if lexeme == "{" else 0])
            expect = "key_or_close" if lexeme == "{" else "value_or_close"
            continue
        if kind == "str":
            if _has_surrogate(lexeme):
                problem(here(), "holds a lone UTF-16 surrogate (\\ud800-\\udfff)")
        elif kind == "num":
            digits = len(match.group("int"))
            if digits > MAX_INTEGER_DIGITS:
                problem(here(), f"is a number of {digits} digits (at most {MAX_INTEGER_DIGITS})")
        elif kind != "lit":
            scan.syntax_error = f"unexpected {lexeme!r} at character {match.start()}"
            return scan
        if len(stack) <= 2 and (path := here()) in _CAPTURED:
            scan.scalars[path] = lexeme
        expect = "after" if stack else "end"
    if stack or expect != "end":
        scan.syntax_error = "the message ends before its JSON does"
    return scan


@dataclass(frozen=True)
class Refusal:
    """How to answer (or drop) one refused message."""

    reason: str
    """What is wrong, for the answer and the log line (never the message's content)."""
    code: int = INVALID_REQUEST
    request_id: str | int | None = None
    answer: bool = True
    """False for a notification (or a client's response): dropped with a log line."""
    tool: str | None = None
    """Set when the problem is in a `tools/call`'s arguments: answered as `invalid_input`."""
    argument: str = ""
    """The argument at fault (`targets.0.contact.extra`), with `tool`."""
    problem: str = ""
    """What is wrong with it (`is nested deeper than 16 levels`), with `tool`."""

    def response(self) -> JSONObject:
        """The JSON-RPC answer (a tool result for argument problems, else an error)."""
        if self.tool is not None:
            from mcp_server.tool_results import invalid_arguments_result

            error = {"loc": (self.argument,), "type": "too_large", "msg": self.problem}
            result = invalid_arguments_result(self.tool, [error], {})
            return {
                "jsonrpc": "2.0",
                "id": self.request_id,
                "result": result.model_dump(by_alias=True, mode="json", exclude_none=True),
            }
        return {
            "jsonrpc": "2.0",
            "id": self.request_id,
            "error": {"code": self.code, "message": self.reason},
        }

    def log(self, transport: str) -> None:
        if self.answer:
            log.info("jobrelay %s: refused a request: %s", transport, self.reason)
        else:
            log.warning("jobrelay %s: dropped a malformed message: %s", transport, self.reason)


def _usable_id(raw: str | None) -> str | int | None:
    """The id to echo: a string without lone surrogates or an integer, in JSON text of at
    most MAX_ECHOED_ID_CHARS; else None (answered as `null`)."""
    if raw is None or len(raw) > MAX_ECHOED_ID_CHARS:
        return None
    if raw.startswith('"'):
        if _has_surrogate(raw):
            return None
        value = json.loads(raw)
        return value if isinstance(value, str) else None
    if re.fullmatch(r"-?[0-9]+", raw):
        return int(raw)
    return None


@dataclass(frozen=True)
class Checked:
    """A message that passed: the SDK may parse it. `message` is the parsed JSON-RPC object."""

    message: dict[str, Any]


def check_message(data: str | bytes) -> Checked | Refusal:
    """Check one JSON-RPC message (a stdio line or an HTTP body) before the SDK parses it.

    Never raises: this runs on hostile input at the edge of a session, and a bug here must
    cost one answer, not the session (the stdio reader thread would die with it).
    """
    try:
        return _check_message(data)
    except Exception:  # the per-message boundary; logged with its traceback
        log.exception("jobrelay: checking an incoming message failed")
        return Refusal("parse error: the message could not be checked", code=PARSE_ERROR)


def _check_message(data: str | bytes) -> Checked | Refusal:
    if len(data) > MAX_MESSAGE_BYTES:
        return Refusal(f"the message is larger than {MAX_MESSAGE_BYTES} bytes")
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return Refusal("the message is not valid UTF-8", code=PARSE_ERROR)
    else:
        text = data
    scan = _scan(text)
    raw_id = scan.scalars.get(("id",))
    request_id = _usable_id(raw_id)
    is_request = ("method",) in scan.scalars and raw_id is not None and raw_id != "null"
    if scan.syntax_error is not None:
        return Refusal(f"parse error: {scan.syntax_error}", code=PARSE_ERROR)
    if scan.problems:
        path, what = scan.problems[0]
        method = _string(scan.scalars.get(("method",)))
        if method == "tools/call" and path[:2] == _ARGUMENTS and len(path) > 2:
            tool = _string(scan.scalars.get(("params", "name"))) or "the tool"
            where = _where(path[2:])
            return Refusal(
                f"{where} {what}",
                request_id=request_id,
                answer=is_request,
                tool=tool,
                argument=where,
                problem=what.removeprefix("is "),
            )
        return Refusal(
            f"invalid request: {_where(path)} {what}", request_id=request_id, answer=is_request
        )
    return _check_envelope(json.loads(text), request_id)


def _string(raw: str | None) -> str | None:
    if raw is None or not raw.startswith('"'):
        return None
    value = json.loads(raw)
    return value if isinstance(value, str) else None


def _check_envelope(message: Any, request_id: str | int | None) -> Checked | Refusal:
    if isinstance(message, list):
        return Refusal(
            "invalid request: JSON-RPC batches (arrays) are not part of MCP: send each message "
            "on its own"
        )
    if not isinstance(message, dict):
        return Refusal("invalid request: a JSON-RPC message is a JSON object")
    has_id = "id" in message and message["id"] is not None
    raw_id = message.get("id")
    id_ok = isinstance(raw_id, str | int) and not isinstance(raw_id, bool)
    if not id_ok:
        request_id = None
    method = message.get("method")
    is_request = "method" in message and has_id
    if message.get("jsonrpc") != "2.0":
        return Refusal(
            'invalid request: "jsonrpc" must be "2.0"', request_id=request_id, answer=has_id
        )
    if "method" not in message:
        if has_id and id_ok and ("result" in message or "error" in message):
            return Checked(message)  # a client's answer to a server request
        return Refusal(
            'invalid request: a message needs a "method" (or is an answer with "result" or '
            '"error")',
            request_id=request_id,
            answer=has_id,
        )
    if not isinstance(method, str):
        return Refusal(
            'invalid request: "method" must be a string', request_id=request_id, answer=has_id
        )
    if "id" in message and not id_ok:
        return Refusal('invalid request: "id" must be a string or an integer')
    if "params" in message and not isinstance(message["params"], dict):
        return Refusal(
            'invalid params: "params" must be an object (MCP uses named parameters), got '
            + type(message["params"]).__name__,
            code=INVALID_PARAMS,
            request_id=request_id,
            answer=is_request,
        )
    return Checked(message)


def encode(answer: JSONObject) -> str:
    """One answer as compact JSON text (ASCII, so nothing needs the client's decoder)."""
    return json.dumps(answer, separators=(",", ":"))


def argument_depth(arguments: JSON) -> int:
    """Nesting levels of a tool's arguments (the arguments object is 1), without recursion."""
    deepest = 0
    pending: list[tuple[Any, int]] = [(arguments, 1)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth)
            if depth > MAX_ARGUMENT_DEPTH:
                return depth
            items: Sequence[Any] = list(value.values()) if isinstance(value, dict) else value
            pending.extend((item, depth + 1) for item in items)
    return deepest
