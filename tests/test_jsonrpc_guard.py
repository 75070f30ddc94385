"""One bad JSON-RPC message costs one answer (or one log line), never the session (issues 14.2,
14.3, 20.7): the guard on its own, then `jobrelay serve` over real stdio and loopback HTTP with
the SDK client and a raw one."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from conftest import TEST_EPOCH, http_serving
from hypothesis import given
from hypothesis import strategies as st
from mcp import Client, StdioServerParameters
from test_transport_stdio import REPO, RawStdio, server_env

from mcp_server._bounds import (
    MAX_ARGUMENT_DEPTH,
    MAX_INTEGER_DIGITS,
    MAX_MESSAGE_BYTES,
    MAX_MESSAGE_DEPTH,
)
from mcp_server._clock import ScaledClock
from mcp_server._jsonrpc_guard import (
    INVALID_PARAMS,
    INVALID_REQUEST,
    PARSE_ERROR,
    Checked,
    Refusal,
    check_message,
)
from mcp_server.config import load_settings
from mcp_server.sandbox import Faults, SandboxState

pytestmark = pytest.mark.anyio


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def nested_text(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def deep_contact(depth: int) -> dict[str, Any]:
    return {"name": "Ada Lovelace", "company": "Acme", "extra": nested(depth)}


def research_call(request_id: int, depth: int) -> str:
    """A start_research call whose contact's `extra` is nested `depth` levels (built as text:
    Python's json cannot encode 1,100 levels)."""
    call = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {
            "name": "start_research",
            "arguments": {"kind": "contacts", "contacts": [deep_contact(0)]},
        },
    }
    return json.dumps(call).replace('"extra": 1', '"extra": ' + nested_text(depth))


# (line, expected answer id, expected JSON-RPC error code; None = the tool's invalid_input)
BAD_LINES: dict[str, tuple[str, Any, int | None]] = {
    "1,100-deep params (6.7 kB)": (
        '{"jsonrpc":"2.0","id":10,"method":"ping","params":' + nested_text(1100) + "}",
        10,
        INVALID_REQUEST,
    ),
    "500-deep params": (
        '{"jsonrpc":"2.0","id":11,"method":"ping","params":' + nested_text(500) + "}",
        11,
        INVALID_REQUEST,
    ),
    "a batch array": ('[{"jsonrpc":"2.0","id":12,"method":"ping"}]', None, INVALID_REQUEST),
    "a lone-surrogate id": (
        '{"jsonrpc":"2.0","id":"\\ud800","method":"ping"}',
        None,
        INVALID_REQUEST,
    ),
    "invalid JSON": ('{"jsonrpc":"2.0","id":14,"method":', None, PARSE_ERROR),
    "params as a list": (
        '{"jsonrpc":"2.0","id":15,"method":"ping","params":[1]}',
        15,
        INVALID_PARAMS,
    ),
    "no jsonrpc": ('{"id":16,"method":"ping"}', 16, INVALID_REQUEST),
    "an id of 10^30": (
        '{"jsonrpc":"2.0","id":' + str(10**30) + ',"method":"ping"}',
        10**30,
        INVALID_REQUEST,
    ),
    "a 5,000-digit integer": (
        '{"jsonrpc":"2.0","id":18,"method":"ping","params":{"n":' + "7" * 5000 + "}}",
        18,
        INVALID_REQUEST,
    ),
    "arguments nested 250 deep": (research_call(19, 250), 19, None),
    "arguments nested 1,100 deep": (research_call(20, 1100), 20, None),
}


# ---- the guard on its own -------------------------------------------------------------------


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_each_bad_message_is_refused_with_the_right_answer(case: str) -> None:
    line, request_id, code = BAD_LINES[case]
    verdict = check_message(line)
    assert isinstance(verdict, Refusal)
    assert verdict.answer
    answer = verdict.response()
    assert answer["id"] == request_id
    if code is None:
        result = answer["result"]
        assert result["isError"] is True
        assert result["structuredContent"]["error"]["code"] == "invalid_input"
        text = result["content"][0]["text"]
        assert "start_research" in text
        assert "contacts.0.extra" in text
        assert f"nested deeper than {MAX_ARGUMENT_DEPTH} levels" in text
        assert len(text) < 400  # the path is cut, not 1,100 levels long
    else:
        assert answer["error"]["code"] == code
        assert len(answer["error"]["message"]) < 300


def test_a_bad_notification_is_dropped_not_answered() -> None:
    verdict = check_message('{"jsonrpc":"2.0","method":"notifications/x","params":[1]}')
    assert isinstance(verdict, Refusal)
    assert not verdict.answer
    deep = '{"jsonrpc":"2.0","method":"notifications/x","params":' + nested_text(300) + "}"
    deep_verdict = check_message(deep)
    assert isinstance(deep_verdict, Refusal)
    assert not deep_verdict.answer


def test_the_limits_are_the_boundaries() -> None:
    """At a limit a message passes; one past it, it is refused."""

    def request(params: str) -> str:
        return '{"jsonrpc":"2.0","id":1,"method":"ping","params":' + params + "}"

    # the message object is level 1, params level 2
    assert isinstance(check_message(request(nested_text(MAX_MESSAGE_DEPTH - 1))), Checked)
    assert isinstance(check_message(request(nested_text(MAX_MESSAGE_DEPTH))), Refusal)
    digits = "9" * MAX_INTEGER_DIGITS
    assert isinstance(check_message(request('{"n":' + digits + "}")), Checked)
    assert isinstance(check_message(request('{"n":' + digits + "9}")), Refusal)
    assert isinstance(check_message(request('{"n":-' + digits + ".5e3}")), Checked)
    # arguments (1) > contacts (2) > a contact (3) > extra: 3 + its own depth
    assert isinstance(check_message(research_call(1, MAX_ARGUMENT_DEPTH - 3)), Checked)
    assert isinstance(check_message(research_call(1, MAX_ARGUMENT_DEPTH - 2)), Refusal)
    big = request('{"pad":"' + "x" * MAX_MESSAGE_BYTES + '"}')
    assert isinstance(check_message(big), Refusal)


def test_paired_surrogates_and_answers_pass() -> None:
    emoji = '{"jsonrpc":"2.0","id":"\\ud83d\\ude00","method":"ping","params":{"a":[],"b":{}}}'
    assert isinstance(check_message(emoji), Checked)
    assert isinstance(check_message('{"jsonrpc":"2.0","id":3,"result":{}}'), Checked)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**18), max_value=10**18)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)


@given(params=st.dictionaries(st.text(max_size=8), json_values, max_size=4))
def test_every_ordinary_request_passes_unchanged(params: dict[str, Any]) -> None:
    """The scanner agrees with `json` on every well-formed message within the limits."""
    message = {"jsonrpc": "2.0", "id": 7, "method": "tools/list", "params": params}
    for text in (json.dumps(message), json.dumps(message, indent=2, ensure_ascii=False)):
        verdict = check_message(text)
        assert isinstance(verdict, Checked), verdict
        assert verdict.message == json.loads(text)


@given(text=st.text(max_size=60))
def test_any_text_gets_a_verdict_and_never_raises(text: str) -> None:
    verdict = check_message(text)
    if isinstance(verdict, Checked):
        assert json.loads(text) == verdict.message
    else:
        json.dumps(verdict.response())  # always an answer that can be sent


# ---- stdio: `jobrelay serve` as a subprocess --------------------------------------------------


async def test_one_bad_line_never_ends_a_stdio_session(tmp_path: Path) -> None:
    """Each bad line gets its answer within a second, and a ping after it is still answered."""
    process = await anyio.open_process(
        [sys.executable, "-m", "mcp_server", "serve"],
        env=server_env(tmp_path / "jobs.db"),
        cwd=str(REPO),
    )
    async with process:
        raw = RawStdio(process)
        with anyio.fail_after(30):
            await raw.open()
        assert process.stdin is not None
        for ping_id, (case, (line, request_id, code)) in enumerate(BAD_LINES.items(), 1000):
            await process.stdin.send(line.encode() + b"\n")
            with anyio.fail_after(1):
                answer = await raw.receive()
            assert answer["id"] == request_id, case
            if code is None:
                assert answer["result"]["structuredContent"]["error"]["code"] == "invalid_input"
            else:
                assert answer["error"]["code"] == code, case
            with anyio.fail_after(1):
                assert (await raw.call(ping_id, "ping", {}))["result"] == {}, case
        # a line over the size limit is skipped as it streams in, then refused
        pad = b"x" * (MAX_MESSAGE_BYTES + 65536)
        await process.stdin.send(b'{"jsonrpc":"2.0","id":77,"method":"ping","params":{"p":"')
        await process.stdin.send(pad + b'"}}\n')
        with anyio.fail_after(2):
            answer = await raw.receive()
        assert answer["id"] is None
        assert answer["error"]["code"] == INVALID_REQUEST
        assert str(MAX_MESSAGE_BYTES) in answer["error"]["message"]
        with anyio.fail_after(1):
            assert (await raw.call(1999, "ping", {}))["result"] == {}
        # a bad notification: no answer, the next request is answered first
        await process.stdin.send(b'{"jsonrpc":"2.0","method":"notifications/x","params":[1]}\n')
        with anyio.fail_after(1):
            assert (await raw.call(2000, "ping", {}))["result"] == {}
        await process.stdin.aclose()
        with anyio.fail_after(15):
            await raw.rest_of_stdout()
            assert await process.wait() == 0


async def test_deep_contact_gets_invalid_input_through_the_sdk_client_over_stdio(
    tmp_path: Path,
) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "mcp_server", "serve"],
        env=server_env(tmp_path / "jobs.db"),
        cwd=str(REPO),
    )
    with anyio.fail_after(30):
        async with Client(params) as client:
            with anyio.fail_after(1):
                result = await client.call_tool(
                    "start_research", {"kind": "contacts", "contacts": [deep_contact(250)]}
                )
            assert result.is_error
            assert result.structured_content is not None
            assert result.structured_content["error"]["code"] == "invalid_input"
            assert "contacts.0.extra" in result.content[0].text  # type: ignore[union-attr]
            with anyio.fail_after(5):
                assert [t.name for t in (await client.list_tools()).tools]


# ---- Streamable HTTP on loopback ------------------------------------------------------------


@pytest.fixture
async def served(tmp_path: Path) -> Any:
    clock = ScaledClock(200.0, epoch=TEST_EPOCH)
    state = SandboxState(clock=clock, faults=Faults(time_scale=200.0))
    settings = load_settings({"JOBRELAY_DB": str(tmp_path / "jobs.db")})
    async with http_serving(settings, clock, state) as (url, _http, _stopped):
        yield url


async def test_each_bad_body_gets_a_json_rpc_answer_over_http(served: str) -> None:
    headers = {
        "content-type": "application/json",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
    }
    async with httpx.AsyncClient() as http:
        for case, (line, request_id, code) in BAD_LINES.items():
            with anyio.fail_after(1):
                response = await http.post(served, content=line.encode(), headers=headers)
            answer = response.json()
            assert answer["id"] == request_id, case
            if code is None:
                assert response.status_code == 200
                assert answer["result"]["structuredContent"]["error"]["code"] == "invalid_input"
            else:
                assert response.status_code == 400, case
                assert answer["error"]["code"] == code, case


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_deep_contact_gets_invalid_input_through_the_sdk_client_over_http(
    served: str, mode: str
) -> None:
    with anyio.fail_after(30):
        async with Client(served, mode=mode) as client:  # type: ignore[arg-type]
            with anyio.fail_after(1):
                result = await client.call_tool(
                    "start_research", {"kind": "contacts", "contacts": [deep_contact(250)]}
                )
            assert result.is_error
            assert result.structured_content is not None
            assert result.structured_content["error"]["code"] == "invalid_input"
            with anyio.fail_after(5):
                assert [t.name for t in (await client.list_tools()).tools]


async def test_deep_arguments_in_process_are_invalid_input(client: Client) -> None:
    """No JSON on this path: the server's own depth check answers."""
    with anyio.fail_after(1):
        result = await client.call_tool(
            "list_jobs", {"since_hours": 1, "limit": nested(MAX_ARGUMENT_DEPTH + 1)}
        )
    assert result.is_error
    assert result.structured_content is not None
    assert result.structured_content["error"]["code"] == "invalid_input"


def test_a_bug_in_the_check_costs_one_answer_not_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from mcp_server import _jsonrpc_guard

    def broken(_text: str) -> Any:
        raise RecursionError("a bug")

    monkeypatch.setattr(_jsonrpc_guard, "_scan", broken)
    verdict = check_message('{"jsonrpc":"2.0","id":1,"method":"ping"}')
    assert isinstance(verdict, Refusal)
    assert verdict.response()["error"]["code"] == PARSE_ERROR
