"""Compact JSON schemas for `tools/list`: every tool schema is sent to the model on each
listing, so pydantic's titles, `default: null` and `anyOf [X, null]` noise is removed.

Input schemas keep everything a model needs to call correctly (types, enums, bounds,
descriptions, required). Output schemas keep the top-level fields and their types; nested
objects are just `object`. The server still validates results against the full models.
"""

from __future__ import annotations

from typing import Any

_NULL = {"type": "null"}


def _merge_nullable(node: dict[str, Any]) -> dict[str, Any]:
    options = node.get("anyOf")
    if not isinstance(options, list) or _NULL not in options:
        return node
    rest = [o for o in options if o != _NULL]
    if len(rest) != 1 or "type" not in rest[0] or not isinstance(rest[0]["type"], str):
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"}
    merged.update(rest[0])
    merged["type"] = [rest[0]["type"], "null"]
    return merged


def compact(node: Any) -> Any:
    """Drop titles and null defaults; fold `anyOf [X, null]` into `type: [X, "null"]`."""
    if isinstance(node, list):
        return [compact(v) for v in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title" and isinstance(value, str):
            continue
        if key == "default" and value is None:
            continue
        if key == "properties" and isinstance(value, dict):
            out[key] = {name: compact(prop) for name, prop in value.items()}
        else:
            out[key] = compact(value)
    return _merge_nullable(out)


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


def _non_null(prop: dict[str, Any]) -> dict[str, Any]:
    t = prop.get("type")
    if isinstance(t, list):
        rest = [x for x in t if x != "null"]
        prop = {**prop, "type": rest[0] if len(rest) == 1 else rest}
    return prop


def shallow_output(schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """Top-level fields and their types only: what an agent or host needs to read a result.

    Results are serialised without null fields, so no field is advertised as nullable.
    """
    if not schema:
        return schema
    defs = schema.get("$defs", {})
    props = schema.get("properties", {})
    out: dict[str, Any] = {
        "type": "object",
        "properties": {name: _non_null(_shallow_type(p, defs)) for name, p in props.items()},
    }
    if schema.get("required"):
        out["required"] = schema["required"]
    return out
