"""The one place that says how big things may be (issues 13, 14.4, 20.3).

Token estimate: an answer costs `len(compact JSON) / 3` tokens, rounded up. Compact JSON
means `json.dumps(value, separators=(",", ":"), ensure_ascii=False)`; a string is measured
as itself. Dividing by 3 (not 4) is deliberately conservative: JSON punctuation, ids and
e-mail addresses tokenise at fewer than 4 characters per token.

Answer bounds: an answer to a call with default arguments is at most `DEFAULT_ANSWER_TOKENS`;
no answer of any tool, for any legal arguments, exceeds `MAX_ANSWER_TOKENS`. Lists are cut at
item boundaries and the answer says how to get the rest.

Input bounds: every string, number and list an agent can send has a maximum here; the tool
schemas publish these numbers and the server refuses anything outside them with
`invalid_input` before the ledger or an upstream sees it. Inputs are echoed back only as a
short prefix (`echo`).

Message bounds: how large and deep one JSON-RPC message may be, checked by
`_jsonrpc_guard` before the MCP SDK parses it (issues 14.2, 14.3, 20.7).

Tool schemas, validation, result cutting, the message guard, tests and `tools/bench.py` all
import from here.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Final

from mcp_server.json_types import JSON

# ---- one JSON-RPC message (checked before the SDK parses it) --------------------------

MAX_MESSAGE_BYTES: Final = 1024 * 1024
"""1 MiB per JSON-RPC message (one stdio line, one HTTP body), a quarter of the SDK's HTTP
default: the largest legitimate call (100 research targets) is tens of kilobytes."""

MAX_MESSAGE_DEPTH: Final = 64
"""Nesting levels of objects and arrays in a whole message. The SDK's parser refuses about 200
(pydantic-core's recursion limit) without answering, Python's `json` about 1,000 with a
RecursionError; real MCP messages stay under 10."""

MAX_ARGUMENT_DEPTH: Final = 16
"""Nesting levels inside a tool call's `arguments` (the `arguments` object is level 1). The
deepest jobrelay argument (research targets) is 3 levels."""

MAX_INTEGER_DIGITS: Final = 19
"""Digits before the point in any JSON number, ids included: a 64-bit integer. Longer numbers
are refused by name (Python refuses to parse 4,300 digits or more; JavaScript clients lose
precision above 16)."""

MAX_ECHOED_ID_CHARS: Final = 256
"""A refused request's id is echoed in the error answer (so the client can match it) when its
JSON text is at most this long; a longer or unusable id is answered as `null`."""


# ---- the estimator ------------------------------------------------------------------------

CHARS_PER_TOKEN: Final = 3


def compact_json(value: object) -> str:
    """The compact JSON the estimator measures (non-JSON values via `str`)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def chars_to_tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def tokens(value: object) -> int:
    """Estimated tokens of `value`: a `str` as itself, anything else as compact JSON."""
    text = value if isinstance(value, str) else compact_json(value)
    return chars_to_tokens(len(text))


# ---- answer bounds ------------------------------------------------------------------------

DEFAULT_ANSWER_TOKENS: Final = 8_000
"""Any answer to a call with default arguments (text and structuredContent together)."""
MAX_ANSWER_TOKENS: Final = 20_000
"""Any answer at all, for any legal arguments."""
TOOL_LIST_TOKENS: Final = 2_500
"""The whole `tools/list` answer (descriptions and schemas of every tool)."""

ANSWER_OVERHEAD_TOKENS: Final = 1_000
"""Kept free in every answer for the envelope, the sentences and the advice."""


def item_budget(answer_tokens: int) -> int:
    """Tokens the listed items may use in one of the two blocks: an answer carries its items
    twice (the text block and structuredContent), plus `ANSWER_OVERHEAD_TOKENS`."""
    return (answer_tokens - ANSWER_OVERHEAD_TOKENS) // 2


# ---- input bounds -------------------------------------------------------------------------

MAX_ID_CHARS: Final = 128
"""A job id (`sea_...`, `seo_...`), an upstream id or a search_result_id."""
MAX_TOKEN_CHARS: Final = 2_048
"""An opaque paging cursor (`next_token`)."""
MAX_NAME_CHARS: Final = 200
"""A person's or company's name, a job title, a seniority, department, industry, location."""
MAX_DOMAIN_CHARS: Final = 253
"""A DNS name (RFC 1035)."""
MAX_EMAIL_CHARS: Final = 254
"""An e-mail address (RFC 5321 path limit)."""
MAX_URL_CHARS: Final = 2_048
"""A URL (LinkedIn profile)."""
MAX_QUERY_CHARS: Final = 500
"""Free search text, an SEO keyword."""
MAX_FIELD_CHARS: Final = 100
"""A result field name or dotted path (`email2`, `agent_workflow.decision`)."""
MAX_CODE_CHARS: Final = 100
"""An error code or job status given to `explain_error`."""
MAX_BODY_CHARS: Final = 20_000
"""A response body given to `explain_error` (as text or compact JSON)."""
MAX_HEADERS: Final = 50
MAX_HEADER_CHARS: Final = 1_000
"""A header value (names are bounded by `MAX_CODE_CHARS`)."""
MAX_PARAMS_CHARS: Final = 20_000
"""`start_seo_job` params as compact JSON."""

MAX_TARGETS: Final = 100
"""Research targets or search ids in one start, job ids in one status check."""
MAX_TERMS: Final = 50
"""Values in one search filter list."""
MAX_FIELDS: Final = 50
"""Field names in one `get_job_result`."""
MAX_KEYWORDS: Final = 1_000

MAX_LIMIT_SEARCH: Final = 50
MAX_LIMIT_RESULT: Final = 50
DEFAULT_LIMIT_RESULT: Final = 10
MAX_LIMIT_LIST: Final = 100
MAX_OFFSET: Final = 100_000
MAX_SINCE_HOURS: Final = 24 * 366
"""A year and a day: older rows are not worth listing."""
MAX_WAIT_SECONDS: Final = 45.0
"""Default server cap of any wait (`JOBRELAY_MAX_WAIT_SECONDS` may lower or raise it; the
published schema states the running server's cap)."""
MAX_WAIT_CAP: Final = 3_600.0
"""The largest `JOBRELAY_MAX_WAIT_SECONDS` accepted; argument models allow up to this and the
server refuses (and its schema states) anything above its own cap."""
MAX_HTTP_STATUS: Final = 599
MIN_HTTP_STATUS: Final = 100

ECHO_CHARS: Final = 60
"""Longest piece of an input repeated back in an answer."""


def echo(value: object, limit: int = ECHO_CHARS) -> str:
    """`repr`-like short prefix of an input for messages: never the whole of a long input."""
    text = value if isinstance(value, str) else compact_json(value)
    if len(text) <= limit:
        return repr(text) if isinstance(value, str) else text
    head = text[:limit]
    return f"{head!r}... ({len(text):,} chars)" if isinstance(value, str) else f"{head}..."


TRUNCATED: Final = "…[truncated {n:,} chars]"
"""Marker appended to a string field cut to fit (`{n}`: characters removed)."""
MAX_FIELD_VALUE_CHARS: Final = 2_000
"""Longest string value of a result record shown; longer ones are cut with `TRUNCATED`."""


MAX_TASK_STATUS_CHARS: Final = 300
"""Longest MCP task `statusMessage` (it quotes the upstream's progress message)."""


_MARKED = re.compile(r"…\[truncated ([\d,]+) chars\]$")


def cut_text(value: str, limit: int = MAX_FIELD_VALUE_CHARS) -> str:
    """`value` cut to `limit` characters plus the marker; cutting a cut value again keeps the
    count of the original's removed characters."""
    earlier = 0
    if m := _MARKED.search(value):
        earlier = int(m.group(1).replace(",", ""))
        value = value[: m.start()]
        if len(value) <= limit:
            return value + TRUNCATED.format(n=earlier)
    elif len(value) <= limit:
        return value
    return value[:limit] + TRUNCATED.format(n=len(value) - limit + earlier)


def cut_strings(value: JSON, limit: int = MAX_FIELD_VALUE_CHARS) -> JSON:
    """`value` with every string longer than `limit` cut and marked (nested lists/dicts)."""
    if isinstance(value, str):
        return cut_text(value, limit)
    if isinstance(value, dict):
        return {k: cut_strings(v, limit) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [cut_strings(v, limit) for v in value]
    return value


def fit_items(items: list[JSON], budget_tokens: int) -> tuple[list[JSON], bool]:
    """The longest prefix of `items` whose compact JSON fits `budget_tokens`; True if cut.

    A first item that alone exceeds the budget is kept with its strings cut shorter until it
    fits (never an empty page that points back at itself)."""
    out: list[Any] = []
    used = 2  # the brackets
    for item in items:
        cost = tokens(item) + 1
        if used + cost > budget_tokens:
            break
        out.append(item)
        used += cost
    if not out and items:
        first, limit = items[0], MAX_FIELD_VALUE_CHARS
        while tokens(first) > budget_tokens and limit > 20:
            limit //= 2
            first = cut_strings(items[0], limit)
        out = [first]
    return out, len(out) < len(items)
