"""Agent traffic on real vLLM CPU: tool calls and JSON-schema output, streamed and not, through the OpenAI SDK.

The tiny model's weights are random, so it never *chooses* a tool; vLLM's guided decoding forces the
structure (`tool_choice` naming a function or "required", `response_format: json_schema`), and what comes
back must still be the right shape with arguments valid against the schema the request declared. The
schemas are bounded (enums, integer ranges, patterns) so a random model finishes them within max_tokens.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx
import jsonschema
import pytest
from openai import BadRequestError, OpenAI

from bench.grammar_compile import nested_one_of
from tests.e2e.conftest import RunningStack

pytestmark = pytest.mark.e2e

MODEL = "tiny-deepseek-v2"
WEATHER = {
    "type": "object",
    "additionalProperties": False,
    "required": ["city", "unit", "days"],
    "properties": {
        "city": {"type": "string", "enum": ["Paris", "Tokyo", "Lima"]},
        "unit": {"type": "string", "enum": ["c", "f"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
}
SEARCH = {
    "type": "object",
    "required": ["query", "top_k"],
    # a pattern, not only maxLength: the xgrammar installed lets a JSON string hold raw control characters
    # (U+0000-U+001F), which JSON parsers refuse, and the random model writes them (docs/agents.md)
    "properties": {
        "query": {"type": "string", "pattern": "^[a-z ]{1,12}$"},
        "top_k": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": "get_weather", "description": "Weather forecast", "parameters": WEATHER}},
    {"type": "function", "function": {"name": "search_docs", "description": "Search the docs", "parameters": SEARCH}},
]
SCHEMAS = {"get_weather": WEATHER, "search_docs": SEARCH}
MESSAGES: list[Any] = [{"role": "user", "content": "What is the weather in Paris this week?"}]


@pytest.fixture
def sdk(stack: RunningStack) -> OpenAI:
    return OpenAI(base_url=f"{stack.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def _assert_valid_call(name: str, arguments: str) -> None:
    assert name in SCHEMAS, name
    jsonschema.validate(json.loads(arguments), SCHEMAS[name])


def _streamed(chunks: Any) -> tuple[str, dict[int, dict[str, str]], str | None]:
    """(content, tool calls by index, finish_reason) put together from a stream, as the SDK's users do."""
    content, calls, finish = "", {}, None
    for chunk in chunks:
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for call in choice.delta.tool_calls or []:
                slot = calls.setdefault(call.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = call.id or slot["id"]
                if call.function is not None:
                    slot["name"] += call.function.name or ""
                    slot["arguments"] += call.function.arguments or ""
            finish = choice.finish_reason or finish
    return content, calls, finish


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_named_tool_choice_calls_that_function_with_valid_arguments(sdk: OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = dict(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        max_tokens=96,
        temperature=0,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    # OpenAI (and vLLM) finish a named tool choice with "stop"; "tool_calls" is for required and auto
    if not stream:
        choice = sdk.chat.completions.create(**kwargs).choices[0]
        calls = choice.message.tool_calls or []
        assert choice.finish_reason == "stop" and len(calls) == 1, choice
        assert calls[0].type == "function" and calls[0].id
        assert calls[0].function.name == "get_weather"
        _assert_valid_call(calls[0].function.name, calls[0].function.arguments)
        return
    _, streamed, finish = _streamed(sdk.chat.completions.create(**kwargs, stream=True))
    assert finish == "stop" and list(streamed) == [0], streamed
    assert streamed[0]["name"] == "get_weather" and streamed[0]["id"]
    _assert_valid_call(streamed[0]["name"], streamed[0]["arguments"])


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_required_tool_choice_returns_tool_calls(sdk: OpenAI, stream: bool) -> None:
    kwargs: dict[str, Any] = dict(
        model=MODEL,
        messages=MESSAGES,
        tools=TOOLS,
        tool_choice="required",
        parallel_tool_calls=False,
        max_tokens=128,
        temperature=0,
    )
    if not stream:
        choice = sdk.chat.completions.create(**kwargs).choices[0]
        calls = choice.message.tool_calls or []
        assert choice.finish_reason == "tool_calls" and len(calls) == 1, choice
        _assert_valid_call(calls[0].function.name, calls[0].function.arguments)
        return
    _, streamed, finish = _streamed(sdk.chat.completions.create(**kwargs, stream=True))
    assert finish == "tool_calls" and len(streamed) == 1, streamed
    call = next(iter(streamed.values()))
    _assert_valid_call(call["name"], call["arguments"])


def test_auto_tool_choice_is_served_by_the_parser(sdk: OpenAI) -> None:
    """local-cpu runs deepseek_v3 with auto tool choice on (model.parsers auto): `tool_choice: auto` is
    accepted, and whatever the random model writes comes back as an answer, a call only if well-formed."""
    choice = sdk.chat.completions.create(
        model=MODEL, messages=MESSAGES, tools=TOOLS, tool_choice="auto", max_tokens=16, temperature=0
    ).choices[0]
    for call in choice.message.tool_calls or []:
        _assert_valid_call(call.function.name, call.function.arguments)


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_json_schema_response_format_returns_a_valid_document(sdk: OpenAI, stream: bool) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "forecast", "schema": WEATHER}}
    kwargs: dict[str, Any] = dict(model=MODEL, messages=MESSAGES, response_format=fmt, max_tokens=96, temperature=0)
    if stream:
        content, calls, finish = _streamed(sdk.chat.completions.create(**kwargs, stream=True))
        assert not calls
    else:
        choice = sdk.chat.completions.create(**kwargs).choices[0]
        content, finish = choice.message.content or "", choice.finish_reason
    assert finish == "stop", content
    jsonschema.validate(json.loads(content), WEATHER)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"tool_choice": "required"}, "tool_choice"),  # tool_choice without tools
        ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "book_flight"}}}, "tool_choice"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "objectx"}}}},
            "response_format",
        ),
        ({"tools": TOOLS * 65}, "tools"),  # 130 tools, past api.max_tools (128)
    ],
    ids=["choice-without-tools", "unknown-tool", "invalid-schema", "too-many-tools"],
)
def test_bad_agent_requests_are_400_naming_the_param(sdk: OpenAI, body: dict[str, Any], param: str) -> None:
    with pytest.raises(BadRequestError) as info:
        sdk.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=8, **body)
    err = info.value.body
    assert isinstance(err, dict) and err.get("param") == param, err
    assert "Traceback" not in err["message"]


def test_a_pathological_one_of_is_refused_before_the_engine_and_does_not_stall_it(stack: RunningStack) -> None:
    """vllm-project/vllm#54003: xgrammar compiles JSON schemas with no time limit, and a nested oneOf of
    225 KB takes 1.6 s, of 901 KB 30 s (bench/grammar_compile.py). The pipeline refuses it by size in milliseconds, and
    a plain request sent at the same time is answered as usual."""
    schema = nested_one_of(12)  # 225 KB, past api.max_schema_bytes (32 KiB)
    deep_schema: dict[str, Any] = {"type": "integer"}
    for _ in range(20):  # 41 levels of objects, a few hundred bytes: past api.max_schema_depth (32)
        deep_schema = {"type": "object", "properties": {"a": deep_schema}}
    plain: dict[str, Any] = {}

    def send_plain() -> None:
        started = time.monotonic()
        r = httpx.post(
            f"{stack.base_url}/v1/chat/completions",
            timeout=60,
            json={"model": MODEL, "messages": MESSAGES, "max_tokens": 8},
        )
        plain.update(status=r.status_code, seconds=time.monotonic() - started)

    thread = threading.Thread(target=send_plain)
    started = time.monotonic()
    with httpx.Client(base_url=stack.base_url, timeout=60) as c:
        thread.start()
        r = c.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MESSAGES,
                "max_tokens": 8,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            },
        )
        refused_after = time.monotonic() - started
        deep = c.post(
            "/v1/chat/completions",
            json={
                "model": MODEL,
                "messages": MESSAGES,
                "max_tokens": 8,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": deep_schema}}],
            },
        )
    thread.join(60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "response_format", r.text
    assert "api.max_schema_bytes" in r.json()["error"]["message"]
    assert refused_after < 5, refused_after  # refused on arrival, not after a compile
    assert deep.status_code == 400 and deep.json()["error"]["param"] == "tools.0.function.parameters", deep.text
    assert "api.max_schema_depth" in deep.json()["error"]["message"]
    assert plain.get("status") == 200, plain
