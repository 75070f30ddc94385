"""Validate request and response bodies against Seamless's published OpenAPI file.

The file is read from `<repo>/../shared/reference/seamless-openapi.json` and never copied into
the project; `spec()` skips the calling test with the reason when it is absent.

Checking is strict where the published file is loose, as a strict fake of the API would be:
- an object schema with `properties` accepts no other keys (the file never says
  `additionalProperties: false`, but a field it does not name is a field the API ignores);
- OpenAPI 3.0 `nullable: true` becomes "or null"; `allOf` of objects is merged first;
- `format: date` / `date-time` are checked;
- enums whose description says their values are samples only (locations, technologies) are
  not enforced, because the API accepts values outside them.
"""

from __future__ import annotations

import copy
import json
from datetime import date, datetime
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import pytest

REFERENCE = Path(__file__).resolve().parents[1].parent / "shared" / "reference"
SPEC_FILE = REFERENCE / "seamless-openapi.json"
#: Properties whose enum lists sample values only (the file says so, or reuses that sample list).
SAMPLE_ENUMS = frozenset(
    {
        "contactState", "contactCountry", "contactZipCode",
        "companyState", "companyCountry", "companyZipCode", "technologies",
    }
)  # fmt: skip

_FORMATS = jsonschema.FormatChecker(formats=())


@_FORMATS.checks("date", raises=ValueError)
def _date(value: object) -> bool:
    if isinstance(value, str):
        date.fromisoformat(value)
    return True


@_FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if isinstance(value, str):
        if "T" not in value:
            raise ValueError("not a date-time")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    return True


@cache
def _load() -> dict[str, Any] | None:
    if not SPEC_FILE.is_file():
        return None
    loaded: dict[str, Any] = json.loads(SPEC_FILE.read_text(encoding="utf-8"))
    return loaded


def spec() -> dict[str, Any]:
    """The parsed OpenAPI document; skips the test when the reference file is absent."""
    loaded = _load()
    if loaded is None:
        pytest.skip(f"Seamless OpenAPI file not found at {SPEC_FILE} (shared reference absent)")
    return loaded


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    """Inline every `$ref` (local `#/...` pointers)."""
    if isinstance(node, list):
        return [_resolve(doc, n) for n in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target: Any = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part.replace("~1", "/").replace("~0", "~")]
        return _resolve(doc, target)
    return {k: _resolve(doc, v) for k, v in node.items()}


def _strict(node: Any, name: str = "") -> Any:
    """OpenAPI 3.0 schema -> strict JSON Schema (see the module docstring)."""
    if isinstance(node, list):
        return [_strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    parts = node.pop("allOf", None)
    if parts and all(isinstance(p, dict) and p.get("type", "object") == "object" for p in parts):
        props: dict[str, Any] = dict(node.get("properties") or {})
        required: list[str] = list(node.get("required") or [])
        for p in parts:
            props.update(p.get("properties") or {})
            required.extend(p.get("required") or [])
        node["type"] = "object"
        node["properties"] = props
        if required:
            node["required"] = required
    elif parts:
        node["allOf"] = parts
    if name in SAMPLE_ENUMS and node.get("type") == "array":
        node["items"] = {k: v for k, v in (node.get("items") or {}).items() if k != "enum"}
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in ("example", "examples", "description", "nullable", "default"):
            continue
        if key == "properties":
            out[key] = {k: _strict(v, k) for k, v in value.items()}
        elif key in ("items", "additionalProperties", "not"):
            out[key] = _strict(value) if isinstance(value, dict) else value
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [_strict(v) for v in value]
        else:
            out[key] = value
    if "properties" in out and "additionalProperties" not in node:
        out["additionalProperties"] = False
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
    return out


def _operation(path: str, method: str) -> dict[str, Any]:
    doc = spec()
    try:
        op: dict[str, Any] = doc["paths"][path][method.lower()]
    except KeyError:
        raise AssertionError(f"{method.upper()} {path} is not in the published API") from None
    return op


def request_schema(path: str, method: str = "post") -> dict[str, Any]:
    op = _operation(path, method)
    body = op.get("requestBody")
    if body is None:
        raise AssertionError(f"{method.upper()} {path} takes no request body")
    raw = body["content"]["application/json"]["schema"]
    return _strict(_resolve(spec(), copy.deepcopy(raw)))  # type: ignore[no-any-return]


def response_schema(path: str, method: str, status: int) -> dict[str, Any]:
    op = _operation(path, method)
    responses = op.get("responses") or {}
    answer = responses.get(str(status))
    if answer is None:
        raise AssertionError(
            f"{method.upper()} {path} does not document status {status} "
            f"(documented: {', '.join(sorted(responses))})"
        )
    raw = answer["content"]["application/json"]["schema"]
    return _strict(_resolve(spec(), copy.deepcopy(raw)))  # type: ignore[no-any-return]


def query_parameters(path: str, method: str = "get") -> dict[str, dict[str, Any]]:
    op = _operation(path, method)
    return {
        p["name"]: p for p in _resolve(spec(), op.get("parameters") or []) if p.get("in") == "query"
    }


def _check(schema: dict[str, Any], instance: Any, what: str) -> None:
    validator = jsonschema.Draft7Validator(schema, format_checker=_FORMATS)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [
            f"- at {'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message[:300]}"
            for e in errors[:10]
        ]
        raise AssertionError(f"{what} does not match the published schema:\n" + "\n".join(lines))


def validate_request(path: str, method: str, body: Any) -> None:
    """Fail with every mismatch (first 10) when `body` is not a documented request body."""
    _check(request_schema(path, method), body, f"request {method.upper()} {path}")


def validate_response(path: str, method: str, status: int, body: Any) -> None:
    """Fail with every mismatch (first 10) when `body` is not the documented response."""
    _check(
        response_schema(path, method, status), body, f"response {status} to {method.upper()} {path}"
    )


def validate_query(path: str, method: str, params: dict[str, list[str]]) -> None:
    """Query parameters (form style, comma-exploded arrays) against the documented ones."""
    documented = query_parameters(path, method)
    unknown = sorted(set(params) - set(documented))
    if unknown:
        raise AssertionError(f"{method.upper()} {path}: undocumented query parameters {unknown}")
    for name, p in documented.items():
        if p.get("required") and name not in params:
            raise AssertionError(f"{method.upper()} {path}: required query parameter {name}")
    for name, values in params.items():
        schema = _strict(documented[name].get("schema") or {})
        if len(values) != 1:
            raise AssertionError(f"{name} sent {len(values)} times; the API reads it once")
        value: Any = values[0]
        if schema.get("type") == "array":
            value = value.split(",")
        elif schema.get("type") == "integer":
            value = int(value)
        _check(schema, value, f"query parameter {name} of {method.upper()} {path}")
