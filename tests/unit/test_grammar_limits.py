"""Grammar caps: tools per request, schema bytes and nesting, regex repetitions; the 400 names field and limit."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from bench.grammar_compile import nested_one_of
from dsserve.serving.body import ShapeLimits, request_shape
from dsserve.serving.errors import InvalidRequest
from dsserve.serving.grammar_limits import MAX_PATTERN_REPEAT, name_grammar_field

LIMITS = ShapeLimits(
    max_n=16, max_prompts=16, max_tokens=8192, max_messages=64, max_tools=4, max_schema_bytes=4096, max_schema_depth=12
)
WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 32}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}


def _tool(name: str, params: Any = WEATHER) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": params}}


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **extra}


def _refused(data: dict[str, Any]) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        request_shape(data, chat=True, limits=LIMITS)
    return info.value


def test_ordinary_agent_requests_pass() -> None:
    tools = [_tool(f"t{i}") for i in range(4)]
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    shape = request_shape(_chat(tools=tools, tool_choice="required", response_format=fmt), chat=True, limits=LIMITS)
    assert shape.weight == 1
    request_shape(_chat(structured_outputs={"regex": r"^\d{4}-\d{2}-\d{2}$"}), chat=True, limits=LIMITS)


def test_too_many_tools_names_tools_and_the_limit() -> None:
    err = _refused(_chat(tools=[_tool(f"t{i}") for i in range(5)]))
    assert err.param == "tools" and "api.max_tools" in str(err) and "got 5" in str(err)


@pytest.mark.parametrize("field", ["tools", "response_format", "structured_outputs"])
def test_a_pathological_one_of_is_refused_by_size_in_every_field(field: str) -> None:
    schema = nested_one_of(9)  # 28 KB, over this test's 4 KiB
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    body = {
        "tools": {"tools": [_tool("a"), _tool("b", schema)]},
        "response_format": {"response_format": fmt},
        "structured_outputs": {"structured_outputs": {"json": schema}},
    }[field]
    started = time.perf_counter()
    err = _refused(_chat(**body))
    assert time.perf_counter() - started < 0.5  # refused without compiling anything
    assert err.param == ("tools.1.function.parameters" if field == "tools" else field)
    assert "api.max_schema_bytes" in str(err) and "4096" in str(err)


def test_a_schema_sent_as_a_string_counts_its_bytes() -> None:
    err = _refused(_chat(structured_outputs={"json": json.dumps(nested_one_of(9))}))
    assert err.param == "structured_outputs"


def test_deep_nesting_is_refused_with_the_depth_limit() -> None:
    schema: dict[str, Any] = {"type": "integer"}
    for _ in range(8):  # 2 levels each (properties -> a): 17 levels, small in bytes
        schema = {"type": "object", "properties": {"a": schema}}
    err = _refused(_chat(tools=[_tool("deep", schema)]))
    assert err.param == "tools.0.function.parameters" and "api.max_schema_depth" in str(err)


def test_regex_repetitions_are_capped_across_the_request() -> None:
    err = _refused(
        _chat(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "^(a|b){3000}$"}},
            }
        )
    )
    assert err.param == "pattern" and str(MAX_PATTERN_REPEAT) in str(err)
    # many small ones add up: 2 x 600
    two = {"type": "object", "properties": {k: {"type": "string", "pattern": "^x{1,600}$"} for k in "ab"}}
    assert _refused(_chat(tools=[_tool("t", two)])).param == "pattern"
    # structured_outputs.regex counts; escaped braces are not quantifiers
    assert _refused(_chat(structured_outputs={"regex": "a{2000}"})).param == "pattern"
    request_shape(_chat(structured_outputs={"regex": r"\{2000\}"}), chat=True, limits=LIMITS)


def test_completions_carry_the_same_caps() -> None:
    with pytest.raises(InvalidRequest) as info:
        request_shape(
            {"model": "m", "prompt": "x", "structured_outputs": {"json": nested_one_of(9)}}, chat=False, limits=LIMITS
        )
    assert info.value.param == "structured_outputs"


def test_engine_grammar_errors_name_the_field_sent() -> None:
    body = json.dumps(
        {
            "error": {
                "message": "Failed to transform json schema into a grammar: Unsupported type",
                "type": "invalid_request_error",
                "param": None,
                "code": None,
            }
        }
    ).encode()
    named = json.loads(name_grammar_field(body, {"response_format": {"type": "json_schema"}}))
    assert named["error"]["param"] == "response_format"
    assert json.loads(name_grammar_field(body, {"tools": [1]}))["error"]["param"] == "tools"
    other = json.dumps({"error": {"message": "context too long", "param": None}}).encode()
    assert name_grammar_field(other, {"tools": [1]}) == other  # not a grammar error: unchanged


def test_the_compile_benchmark_writes_what_produced_its_figures(tmp_path: Any) -> None:
    """bench/grammar_compile.py, at a tiny size: each shape timed, with the machine and xgrammar version."""
    from bench.grammar_compile import main

    out = tmp_path / "g.json"
    assert main(["--levels", "2", "3", "--repeats", "10", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["xgrammar"] and report["machine"]["cores"] >= 1
    assert [r["shape"] for r in report["rows"]] == [
        "nested oneOf, 2 levels",
        "nested oneOf, 3 levels",
        "pattern ^(a|b){10}$",
    ]
    sizes = [r["schema_bytes"] for r in report["rows"][:2]]
    assert sizes[1] > 2 * sizes[0]  # each level holds the one below twice
    assert all(r["total_s"] >= r["compile_s"] >= 0 for r in report["rows"])
