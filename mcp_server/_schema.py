"""Compact JSON schemas for `tools/list`: every tool schema is sent to the model on each
listing, so pydantic's titles, `default: null` and `anyOf [X, null]` noise is removed.

Input schemas keep everything a model needs to call correctly (types, enums, bounds,
descriptions, required). An optional argument is advertised as its plain type: leaving it
out is how a model says "none" (the server still accepts an explicit null). Output schemas
keep the top-level fields and their types; nested objects are just `object`. The server still
validates arguments and results against the full models.
"""

from __future__ import annotations

import json
from typing import Any

from mcp_server.json_types import JSON, JSONObject

_NULL = {"type": "null"}


def _fold_any_of(node: dict[str, Any]) -> dict[str, Any]:
    """`anyOf [X, null]` -> X; `anyOf [string, object]` -> `type: [string, object]`."""
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node
    rest = [o for o in options if o != _NULL]
    base = {k: v for k, v in node.items() if k != "anyOf"}
    if len(rest) == 1:
        return {**base, **rest[0]}
    if all(isinstance(o.get("type"), str) for o in rest):
        extras = [k for o in rest for k in o if k != "type"]
        if len(extras) == len(set(extras)):  # type-specific keywords (maxLength) merge safely
            merged: dict[str, Any] = {k: v for o in rest for k, v in o.items() if k != "type"}
            return {**base, **merged, "type": [o["type"] for o in rest]}
    return {**base, "anyOf": rest} if len(rest) != len(options) else node


def _drop_null_type(node: dict[str, Any]) -> dict[str, Any]:
    t = node.get("type")
    if isinstance(t, list) and "null" in t:
        rest = [x for x in t if x != "null"]
        return {**node, "type": rest[0] if len(rest) == 1 else rest}
    return node


def inline_defs(schema: JSONObject) -> JSONObject:
    """Replace `$ref`s to local `$defs` by the definitions themselves.

    Each tool uses each nested model once, so the `$defs` indirection only costs tokens and
    makes the schema harder for a model to read. Recursive models would keep their `$ref`
    (none of jobrelay's are).
    """
    defs = schema.get("$defs")
    if not isinstance(defs, dict):
        return schema

    def resolve(node: Any, seen: frozenset[str]) -> Any:
        if isinstance(node, list):
            return [resolve(v, seen) for v in node]
        if not isinstance(node, dict):
            return node
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            name = ref.removeprefix("#/$defs/")
            if name in defs and name not in seen:
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return {**resolve(defs[name], seen | {name}), **rest}
        return {k: resolve(v, seen) for k, v in node.items()}

    out = {k: resolve(v, frozenset()) for k, v in schema.items() if k != "$defs"}
    if "$ref" in json.dumps(out):
        out["$defs"] = defs  # something stayed referenced (recursion): keep the definitions
    return out


def compact(node: JSON) -> JSON:
    """Drop titles, null and empty-list defaults and `additionalProperties: true`; fold
    nullable unions."""
    if isinstance(node, list):
        return [compact(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and (value is None or value == [] or value is False or value == 0):
            # An optional argument's absence already means "none", "false" or "from the
            # start"; wait_seconds says what 0 means in its description.
            continue
        if key == "additionalProperties" and value in (True, False):
            # True is the JSON Schema default; False (pydantic's extra="forbid") is still
            # enforced by the server, which names the unknown field and the known ones.
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact(prop) for name, prop in value.items()}
        else:
            out[key] = compact(value)
    out = _drop_null_type(_fold_any_of(out))
    values = out.get("enum")
    kinds = {type(v) for v in values} if isinstance(values, list) and values else set()
    if (out.get("type"), kinds) in (("string", {str}), ("integer", {int})):
        del out["type"]  # an enum of strings (or integers) already says its type
    return out


def _shallow_type(prop: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    ref = prop.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1], {})
        if "enum" in target:
            return {"type": target.get("type", "string"), "enum": target["enum"]}
        return {"type": "object"}
    if "anyOf" in prop:
        types: list[str] = []
        for option in prop["anyOf"]:
            t = _shallow_type(option, defs).get("type", "object")
            for name in t if isinstance(t, list) else [t]:
                if name not in types:
                    types.append(name)
        return {"type": types[0] if len(types) == 1 else types}
    t = prop.get("type")
    if t is None:
        return {}
    shallow: dict[str, Any] = {"type": t}
    if "enum" in prop:
        shallow["enum"] = prop["enum"]
    return shallow


def shallow_output(schema: JSONObject | None) -> JSONObject | None:
    """Top-level fields and their types only: what an agent or host needs to read a result.

    Results are serialised without null fields, so no field is advertised as nullable.
    """
    if not schema:
        return schema
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: _drop_null_type(_shallow_type(p, defs)) for name, p in props.items()},
    }
    if schema.get("required"):
        out["required"] = schema["required"]
    return out


def share_repeats(schema: JSONObject, *, min_chars: int = 60, min_count: int = 3) -> JSONObject:
    """Move a subschema that appears `min_count` times or more (and is at least `min_chars` of
    JSON) into `$defs` once, referenced by `{"$ref": "#/$defs/<name>"}` where it was: the
    search filters repeat one "one value or a list" shape a dozen times."""
    counts: dict[str, int] = {}

    def visit(node: Any, top: bool) -> None:
        if isinstance(node, dict):
            if not top and "type" in node:
                key = json.dumps(node, sort_keys=True, separators=(",", ":"))
                counts[key] = counts.get(key, 0) + 1
            for value in node.values():
                visit(value, False)
        elif isinstance(node, list):
            for value in node:
                visit(value, False)

    visit(schema, True)
    shared = [k for k, n in counts.items() if n >= min_count and len(k) >= min_chars]
    if not shared:
        return schema
    names = {k: f"s{i}" for i, k in enumerate(shared)}

    def replace(node: Any, top: bool) -> Any:
        if isinstance(node, dict):
            if not top and "type" in node:
                key = json.dumps(node, sort_keys=True, separators=(",", ":"))
                if key in names:
                    return {"$ref": f"#/$defs/{names[key]}"}
            return {k: replace(v, False) for k, v in node.items()}
        if isinstance(node, list):
            return [replace(v, False) for v in node]
        return node

    out: dict[str, Any] = replace(schema, True)
    out["$defs"] = {name: json.loads(key) for key, name in names.items()}
    return out
