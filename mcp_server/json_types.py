"""The one name for "a JSON value" at the seams between jobrelay's packages.

Parameters agents send, upstream bodies, stored snapshots and results are JSON whose shape the
provider decides: `JSON` says so in a signature instead of a bare `Any` (issue 15 item 2: no
`Any` at a seam; `tests/test_architecture.py` allows this alias and nothing else). It is `Any`
underneath: each provider narrows the shapes it reads where it reads them (pydantic models in
`upstream/_models.py`, `coerce.py` for numbers), which a recursive union would only move into
casts at every read.
"""

from __future__ import annotations

from typing import Any, TypeAlias

__all__ = ["JSON", "JSONObject"]

JSON: TypeAlias = Any
"""A value `json.loads` returns: a dict, list, str, int, float, bool or None."""

JSONObject: TypeAlias = dict[str, JSON]
"""A JSON object."""
