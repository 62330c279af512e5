"""The simulator's JSON-schema instances validate against their schemas (checked with ``jsonschema``)."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest

from dsserve.sim.schema_instance import SchemaInstanceError, instance_of

D2020, D7, D4 = jsonschema.Draft202012Validator, jsonschema.Draft7Validator, jsonschema.Draft4Validator

SCHEMAS: dict[str, tuple[Any, Any]] = {
    "tool arguments": (
        {
            "type": "object",
            "properties": {
                "location": {"type": "string", "description": "City"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "verbose": {"type": "boolean"},
            },
            "required": ["location", "unit"],
            "additionalProperties": False,
        },
        D2020,
    ),
    "bounded numbers": (
        {
            "type": "object",
            "required": ["n", "x", "k", "neg"],
            "properties": {
                "n": {"type": "integer", "exclusiveMinimum": 5, "maximum": 10, "multipleOf": 3},
                "x": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
                "k": {"type": "integer", "minimum": 100},
                "neg": {"type": "number", "maximum": -2.5},
            },
        },
        D2020,
    ),
    "draft 4 exclusive flags": (
        {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "maximum": 3, "exclusiveMaximum": True},
        D4,
    ),
    "strings": (
        {
            "type": "object",
            "required": ["long", "short", "when", "mail", "id"],
            "properties": {
                "long": {"type": "string", "minLength": 30},
                "short": {"type": "string", "maxLength": 3},
                "when": {"type": "string", "format": "date-time"},
                "mail": {"type": "string", "format": "email"},
                "id": {"type": "string", "format": "uuid"},
            },
        },
        D2020,
    ),
    "unique arrays": (
        {
            "type": "object",
            "required": ["ints", "words", "objs"],
            "properties": {
                "ints": {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 1},
                    "minItems": 3,
                    "uniqueItems": True,
                },
                "words": {
                    "type": "array",
                    "items": {"type": "string", "maxLength": 4},
                    "minItems": 5,
                    "uniqueItems": True,
                },
                "objs": {
                    "type": "array",
                    "minItems": 2,
                    "uniqueItems": True,
                    "items": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]},
                },
            },
        },
        D2020,
    ),
    "tuples": (
        {"type": "array", "prefixItems": [{"type": "string"}, {"type": "integer"}, {"const": "end"}], "minItems": 3},
        D2020,
    ),
    "draft 7 tuple items": ({"type": "array", "items": [{"type": "boolean"}, {"type": "null"}], "minItems": 2}, D7),
    "$defs recursion": (
        {
            "$defs": {
                "Node": {
                    "type": "object",
                    "required": ["value"],
                    "properties": {
                        "value": {"type": "integer"},
                        "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                    },
                }
            },
            "$ref": "#/$defs/Node",
        },
        D2020,
    ),
    "definitions": (
        {
            "definitions": {"Unit": {"enum": ["kg", "lb"]}},
            "type": "object",
            "required": ["unit"],
            "properties": {"unit": {"$ref": "#/definitions/Unit"}},
        },
        D7,
    ),
    "anyOf / oneOf": (
        {
            "type": "object",
            "required": ["a", "b", "c"],
            "properties": {
                "a": {"anyOf": [{"type": "string", "minLength": 2}, {"type": "null"}]},
                "b": {"oneOf": [{"type": "integer", "minimum": 3}, {"type": "string"}]},
                "c": {"type": ["number", "null"], "minimum": 1.5},
            },
        },
        D2020,
    ),
    "allOf with siblings": (
        {
            "allOf": [
                {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
                {"properties": {"b": {"const": 3}}, "required": ["b"]},
            ]
        },
        D2020,
    ),
    "typed by keywords": (
        {"properties": {"p": {"minimum": 4}, "q": {"minLength": 2}, "r": {"minItems": 1}}, "required": ["p", "q", "r"]},
        D2020,
    ),
    "minProperties": (
        {
            "type": "object",
            "minProperties": 2,
            "properties": {"x": {"type": "string"}},
            "additionalProperties": {"type": "boolean"},
        },
        D2020,
    ),
    "nested objects": (
        {
            "type": "object",
            "required": ["user"],
            "properties": {
                "user": {
                    "type": "object",
                    "required": ["name", "address"],
                    "properties": {
                        "name": {"type": "string"},
                        "address": {
                            "type": "object",
                            "required": ["zip"],
                            "properties": {"zip": {"type": "string", "minLength": 5, "maxLength": 5}},
                        },
                    },
                }
            },
        },
        D2020,
    ),
    "empty schema": ({}, D2020),
}


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_the_instance_is_valid_against_its_schema(name: str) -> None:
    schema, validator = SCHEMAS[name]
    value = instance_of(schema)
    validator(schema, format_checker=validator.FORMAT_CHECKER).validate(value)
    assert instance_of(schema) == value, "deterministic: the same schema gives the same value"


def test_objects_hold_their_required_properties_only() -> None:
    schema = SCHEMAS["tool arguments"][0]
    assert instance_of(schema) == {"location": "simulated", "unit": "celsius"}
    assert instance_of(None) == {} and instance_of(True) == {}


@pytest.mark.parametrize(
    "schema, match",
    [
        (False, "false"),
        ({"$ref": "#/$defs/Nope"}, "resolves to nothing"),
        ({"$ref": "https://example.com/schema.json"}, "outside the schema"),
        (
            {
                "$defs": {"A": {"type": "object", "required": ["a"], "properties": {"a": {"$ref": "#/$defs/A"}}}},
                "$ref": "#/$defs/A",
            },
            "deeper than",
        ),
        ({"enum": []}, "enum is empty"),
    ],
)
def test_a_schema_without_a_buildable_instance_raises(schema: Any, match: str) -> None:
    with pytest.raises(SchemaInstanceError, match=match):
        instance_of(schema)
