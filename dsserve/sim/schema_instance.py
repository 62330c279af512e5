"""A small, valid instance of a JSON schema, built deterministically.

The simulated engine answers ``response_format: json_schema`` and tool calls with JSON a client can
parse and validate, as a real engine under vLLM's structured outputs (xgrammar) would. It does not
search: it builds one value bottom-up, taking the least each keyword asks for.

- ``const`` and ``enum`` (the first value) win over everything else;
- ``$ref`` to a JSON pointer in the same document (``#/$defs/X``, ``#/definitions/X``, ``#``);
- ``allOf`` is merged into one schema; ``anyOf`` and ``oneOf`` take their first branch (merged with the
  keywords beside them). A ``oneOf`` whose first branch also matches a later one is not detected;
- ``type`` (the first listed, when several): objects get their ``required`` properties (more declared ones
  only up to ``minProperties``); arrays get ``minItems`` items (``prefixItems``/tuple ``items`` first),
  distinct when ``uniqueItems``; strings a word padded or cut to ``minLength``/``maxLength``, or a sample
  of a well-known ``format``; numbers the value nearest 0 within ``minimum``/``maximum`` (exclusive too)
  and ``multipleOf``;
- a schema with no type keyword is typed by its other keywords (``properties`` makes an object), and a
  schema that constrains nothing gets ``{}``.

Not modelled: ``pattern``, ``not``, ``if``/``then``/``else``, ``contains``, ``dependentRequired``,
``propertyNames``. A schema that cannot be satisfied this way (``false``, a ``$ref`` that resolves to
nothing, a cycle through required properties) raises :class:`SchemaInstanceError`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = ["SchemaInstanceError", "instance_of"]

MAX_DEPTH = 32  # deeper than any real tool schema; a cycle through required properties hits it
STRING_WORD = "simulated"
FORMAT_SAMPLES = {
    "date-time": "2025-01-01T00:00:00Z",
    "date": "2025-01-01",
    "time": "00:00:00Z",
    "duration": "PT1S",
    "email": "user@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "url": "https://example.com/",
    "uri-reference": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}
_COMBINATORS = ("anyOf", "oneOf")


class SchemaInstanceError(ValueError):
    """The schema has no instance this builder can make (or is not a schema)."""


def instance_of(schema: Mapping[str, Any] | bool | None) -> Any:
    """A value valid against ``schema``; the same value for the same schema every time."""
    if schema is None:
        return {}
    return _Builder(schema).build(schema, 0, 0)


class _Builder:
    """Holds the root document so ``$ref`` pointers resolve against it."""

    def __init__(self, root: Mapping[str, Any] | bool) -> None:
        self.root = root

    def build(self, schema: Mapping[str, Any] | bool, variant: int, depth: int) -> Any:
        """The instance of ``schema``; ``variant`` > 0 asks for a different value where one is cheap (uniqueItems)."""
        if depth > MAX_DEPTH:
            raise SchemaInstanceError(
                f"schema nests deeper than {MAX_DEPTH} levels (a $ref cycle through required properties?)"
            )
        schema = self.flatten(schema, depth)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            values = list(schema["enum"])
            if not values:
                raise SchemaInstanceError("enum is empty")
            return values[variant % len(values)]
        kind = _type_of(schema)
        if kind == "object":
            return self.object(schema, variant, depth)
        if kind == "array":
            return self.array(schema, variant, depth)
        if kind == "string":
            return _string(schema, variant)
        if kind in ("integer", "number"):
            return _number(schema, variant, integer=kind == "integer")
        if kind == "boolean":
            return variant % 2 == 1
        return None  # "null"

    def flatten(self, schema: Mapping[str, Any] | bool, depth: int) -> Mapping[str, Any]:
        """One plain schema: references resolved, allOf merged, the first anyOf/oneOf branch taken."""
        for _ in range(MAX_DEPTH):
            if schema is True:
                return {}
            if schema is False:
                raise SchemaInstanceError("the schema `false` has no instance")
            if not isinstance(schema, Mapping):
                raise SchemaInstanceError(f"not a schema: {schema!r}")
            if "$ref" in schema:
                rest = {k: v for k, v in schema.items() if k != "$ref"}
                target = self.resolve(str(schema["$ref"]))
                schema = _merge(self.flatten(target, depth) if isinstance(target, bool) else target, rest)
                continue
            if "allOf" in schema:
                rest = {k: v for k, v in schema.items() if k != "allOf"}
                for part in schema["allOf"]:
                    rest = _merge(rest, self.flatten(part, depth + 1))
                schema = rest
                continue
            key = next((k for k in _COMBINATORS if k in schema), None)
            if key is not None:
                branches = schema[key]
                if not branches:
                    raise SchemaInstanceError(f"{key} is empty")
                rest = {k: v for k, v in schema.items() if k != key}
                schema = _merge(rest, self.flatten(branches[0], depth + 1))
                continue
            return schema
        raise SchemaInstanceError(f"$ref chain longer than {MAX_DEPTH} links")

    def resolve(self, ref: str) -> Mapping[str, Any] | bool:
        """A JSON pointer into the root document (``#``, ``#/$defs/Name``, ``#/definitions/Name``)."""
        if not ref.startswith("#"):
            raise SchemaInstanceError(f"$ref {ref!r} points outside the schema; only local refs (#/...) resolve")
        node: Any = self.root
        for raw in [p for p in ref[1:].split("/") if p]:
            part = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, Mapping) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                raise SchemaInstanceError(f"$ref {ref!r} resolves to nothing in the schema")
        return node

    def object(self, schema: Mapping[str, Any], variant: int, depth: int) -> dict[str, Any]:
        props: Mapping[str, Any] = schema.get("properties") or {}
        names = list(dict.fromkeys(schema.get("required") or []))
        for name in props:  # optional properties only as far as minProperties asks
            if len(names) >= int(schema.get("minProperties", 0)):
                break
            if name not in names:
                names.append(name)
        extra = schema.get("additionalProperties", True)
        i = 0
        while len(names) < int(schema.get("minProperties", 0)):
            name = f"property{i}"
            i += 1
            if name not in names and name not in props:
                names.append(name)
        out: dict[str, Any] = {}
        for name in names:
            sub = props.get(name, extra if isinstance(extra, Mapping) else {})
            out[name] = self.build(sub, variant, depth + 1)
        return out

    def array(self, schema: Mapping[str, Any], variant: int, depth: int) -> list[Any]:
        prefix = schema.get("prefixItems")
        items = schema.get("items", {})
        if isinstance(items, list):  # draft 4-7 tuple form
            prefix, items = items, schema.get("additionalItems", {})
        prefix = list(prefix or [])
        count = max(int(schema.get("minItems", 0)), 0)
        out = []
        for i in range(count):
            sub = prefix[i] if i < len(prefix) else items
            out.append(
                self.build(
                    sub if sub is not None else {}, variant + i if schema.get("uniqueItems") else variant, depth + 1
                )
            )
        return out


def _merge(a: Mapping[str, Any], b: Mapping[str, Any] | bool) -> dict[str, Any]:
    """Both schemas' keywords in one (allOf, or a branch with its siblings): properties and required unite."""
    if b is True:
        return dict(a)
    if b is False or not isinstance(b, Mapping):
        raise SchemaInstanceError("a branch of the schema is `false` or not a schema")
    out = {**a, **b}
    if "properties" in a and "properties" in b:
        out["properties"] = {**a["properties"], **b["properties"]}
    if "required" in a and "required" in b:
        out["required"] = list(dict.fromkeys([*a["required"], *b["required"]]))
    if "type" in a and "type" in b:
        common = [
            t for t in _types(a["type"]) if t in _types(b["type"]) or (t == "integer" and "number" in _types(b["type"]))
        ]
        out["type"] = common or _types(b["type"])
    return out


def _types(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _type_of(schema: Mapping[str, Any]) -> str:
    """The type to build: the first declared, or the one the other keywords imply."""
    if "type" in schema:
        types = _types(schema["type"])
        return types[0] if types else "null"
    if any(k in schema for k in ("properties", "required", "additionalProperties", "minProperties")):
        return "object"
    if any(k in schema for k in ("items", "prefixItems", "minItems", "maxItems", "uniqueItems")):
        return "array"
    if any(k in schema for k in ("minLength", "maxLength", "pattern", "format")):
        return "string"
    if any(k in schema for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")):
        return "number"
    return "object"  # unconstrained: {} is as valid as anything, and is what tool arguments look like


def _string(schema: Mapping[str, Any], variant: int) -> str:
    base = FORMAT_SAMPLES.get(str(schema.get("format", "")), STRING_WORD)
    text = base if variant == 0 else f"{base}{variant}"
    low = int(schema.get("minLength", 0))
    high = schema.get("maxLength")
    while len(text) < low:
        text += base
    if high is not None and len(text) > int(high):
        text = text[-int(high) :] if variant else text[: int(high)]  # keep the variant's digits distinct
    return text


def _number(schema: Mapping[str, Any], variant: int, *, integer: bool) -> int | float:
    """The value nearest 0 inside the bounds (``variant`` grid steps above it), on the multipleOf grid."""
    low, high = _closed_bounds(schema, integer=integer)
    step = schema.get("multipleOf")
    nearest = _clamp(0, low, high)
    value = nearest + variant * (step or 1)
    if high is not None and value > high:
        value = nearest
    if step:
        value = math.ceil(value / step) * step
        if high is not None and value > high:
            value = math.floor(high / step) * step
    if integer:
        return math.ceil(value)
    return int(value) if float(value).is_integer() else value


def _clamp(value: float, low: float | None, high: float | None) -> float:
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def _closed_bounds(schema: Mapping[str, Any], *, integer: bool) -> tuple[float | None, float | None]:
    """Inclusive bounds: an exclusive one moves inward by 1 (integers) or by at most half the range (numbers)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(ex_low, bool):  # draft 4: a flag on minimum
        ex_low, low = (low, None) if ex_low else (None, low)
    if isinstance(ex_high, bool):
        ex_high, high = (high, None) if ex_high else (None, high)
    upper = high if high is not None else ex_high
    lower = low if low is not None else ex_low
    if ex_low is not None and (low is None or ex_low >= low):
        gap = 1.0 if upper is None else min(1.0, (upper - ex_low) / 2)
        low = math.floor(ex_low) + 1 if integer else ex_low + gap
    if ex_high is not None and (high is None or ex_high <= high):
        gap = 1.0 if lower is None else min(1.0, (ex_high - lower) / 2)
        high = math.ceil(ex_high) - 1 if integer else ex_high - gap
    if integer:
        low = math.ceil(low) if low is not None else None
        high = math.floor(high) if high is not None else None
    return low, high
