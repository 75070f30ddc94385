"""Limits on one JSON-RPC message, checked before the MCP SDK parses it (`_jsonrpc_guard`).

Message-level limits only: how large, how deep, how long a number may be. Bounds on tool
arguments' values and on answers live with the tools (`_bounds`); the two may be folded
together later, so every name here says what it limits.
"""

from __future__ import annotations

from typing import Final

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
