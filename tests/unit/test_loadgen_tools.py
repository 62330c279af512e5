"""Agent traffic: request classes with tools, tool_choice and response_format (the `agent-tools` scenario).

The scenario schema takes them strictly (one line per mistake, with path, value and fix); the request body
carries them as OpenAI spells them; and every answer is read the way an agent reads it: a missing or
malformed tool call, or JSON content that does not match its schema, is a failed request of its own kind
(``malformed_tool_call``, ``malformed_json``), streamed or not, and so counts in the SLO gate's error ratio.
The last tests run the whole scenario through Locust against the null server, well-formed and with
injected malformed answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from dsserve.loadgen.errors import ScenarioError
from dsserve.loadgen.gate import RunData, compute_figures, evaluate
from dsserve.loadgen.measure import RequestResult, StreamState, stream_problem
from dsserve.loadgen.pacing import RateProfile
from dsserve.loadgen.scenario import (
    RequestClass,
    Scenario,
    apply_overrides,
    load_scenario,
    parse_scenario,
)
from dsserve.loadgen.tools import TOOL_SETS, AnswerBuffer, AnswerCheck
from tests.conftest import REPO

SCENARIO = REPO / "loadtest" / "scenarios" / "agent-tools.yaml"
TOOLS = TOOL_SETS["agent-basic"]
WEATHER = {"city": "Paris", "unit": "celsius"}


def _data() -> dict[str, Any]:
    return yaml.safe_load(SCENARIO.read_text())


def _cls(name: str) -> RequestClass:
    return next(r for r in load_scenario("agent-tools").workload.requests if r.name == name)


def _check(name: str) -> AnswerCheck:
    check = AnswerCheck.for_class(_cls(name))
    assert check is not None
    return check


# ------------------------------------------------------------------------------------------ the scenario


def test_agent_tools_mixes_tool_turns_and_plain_chat() -> None:
    s = load_scenario("agent-tools")
    by_name = {r.name: r for r in s.workload.requests}
    assert set(by_name) == {"chat", "tool-required", "tool-named", "tool-auto", "json-answer"}
    assert by_name["chat"].tools is None and by_name["chat"].ignore_eos
    assert by_name["tool-required"].tool_choice == "required" and by_name["tool-required"].stream
    assert by_name["tool-named"].tool_choice == {"type": "function", "function": {"name": "get_weather"}}
    assert not by_name["tool-named"].stream  # both reading paths are exercised
    assert by_name["tool-auto"].tool_choice == "auto"
    fmt = by_name["json-answer"].response_format
    assert fmt is not None and fmt.type == "json_schema" and fmt.json_schema is not None
    assert fmt.json_schema.name == "weather_report" and fmt.json_schema.schema_["additionalProperties"] is False
    # every class that checks its answer lets the answer end where it is complete
    assert all(not r.ignore_eos for r in s.workload.requests if r.checks_answer)


def test_a_built_in_tool_set_resolves_to_its_definitions() -> None:
    rc = _cls("tool-required")
    assert rc.tools is not None
    assert [t.model_dump(mode="json", exclude_none=True) for t in rc.tools] == TOOLS
    # results.json records what was sent, and workers re-read it: the resolved form round-trips
    s = load_scenario("agent-tools")
    assert Scenario.model_validate(json.loads(json.dumps(s.model_dump(mode="json")))) == s


def _bounded(schema: dict[str, Any]) -> None:
    """Every value a guided decoder writes is bounded: enums, integer ranges, strings with maxLength or a
    length-bounded pattern (never both: vLLM refuses that pair for xgrammar)."""
    import re

    assert schema.get("additionalProperties") is False and set(schema["required"]) == set(schema["properties"])
    for prop in schema["properties"].values():
        bounded_pattern = re.fullmatch(r"\^.*\{\d+,\d+\}\$", prop.get("pattern", "")) is not None
        assert "enum" in prop or "maxLength" in prop or bounded_pattern or {"minimum", "maximum"} <= set(prop), prop
        assert not ("maxLength" in prop and "pattern" in prop), prop


def test_built_in_and_scenario_schemas_are_bounded() -> None:
    for tool in TOOLS:
        _bounded(tool["function"]["parameters"])
    fmt = _cls("json-answer").response_format
    assert fmt is not None and fmt.json_schema is not None
    _bounded(fmt.json_schema.schema_)


def _error(mutate: Callable[[dict[str, Any]], Any]) -> str:
    data = _data()
    mutate(data)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(data, where="a.yaml")
    return str(info.value)


def _req(d: dict[str, Any], name: str) -> dict[str, Any]:
    return next(r for r in d["workload"]["requests"] if r["name"] == name)


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda d: _req(d, "tool-required").update(tools="agent-basik"),
            (
                "a.yaml: workload.requests[1].tools: got 'agent-basik'; no built-in tool set of that name; "
                "did you mean 'agent-basic'?"
            ),
        ),
        (
            lambda d: _req(d, "tool-required").update(tools=[]),
            "workload.requests[1].tools: got []; an empty list (servers reject tools: [])",
        ),
        (
            lambda d: _req(d, "chat").update(api="completions", stream=True, tools="agent-basic", tool_choice="none"),
            "workload.requests[0].api: got 'completions'; tools and tool_choice need the chat API; use api: chat",
        ),
        (
            lambda d: _req(d, "chat").update(tool_choice="auto"),
            "workload.requests[0].tool_choice: got 'auto'; needs tools: a built-in set (agent-basic)",
        ),
        (
            lambda d: _req(d, "chat").update(parallel_tool_calls=False),
            "workload.requests[0].parallel_tool_calls: got False; needs tools",
        ),
        (
            lambda d: _req(d, "tool-required").update(tool_choice="any"),
            (
                "workload.requests[1].tool_choice: got 'any'; choose one of: auto, required, none, or a named function "
                "{type: function, function: {name: get_weather}}"
            ),
        ),
        (
            lambda d: _req(d, "tool-named").update(tool_choice={"function": "get_weather"}),
            "workload.requests[2].tool_choice: got {'function': 'get_weather'}; choose one of",
        ),
        (
            lambda d: _req(d, "tool-named").update(tool_choice={"type": "function", "function": {"name": "get_time"}}),
            (
                "workload.requests[2].tool_choice.function.name: got 'get_time'; names no tool of this class; "
                "choose one of: get_weather, search_docs"
            ),
        ),
        (
            lambda d: _req(d, "tool-required").update(ignore_eos=True),
            "workload.requests[1].ignore_eos: got True; a tool call or JSON answer ends when it is complete",
        ),
        (
            lambda d: _req(d, "json-answer").pop("ignore_eos"),
            "workload.requests[4].ignore_eos: got True; a tool call or JSON answer ends when it is complete",
        ),
        (
            lambda d: _req(d, "tool-required").update(response_format={"type": "json_object"}),
            (
                "workload.requests[1].response_format: got 'json_object'; a forced tool call (tool_choice required or "
                "named) answers with the call, not content"
            ),
        ),
        (
            lambda d: _req(d, "json-answer").update(response_format={"type": "json_schema"}),
            "workload.requests[4].response_format: got {'type': 'json_schema'}; type json_schema needs json_schema",
        ),
        (
            lambda d: _req(d, "json-answer").update(response_format={"type": "text"}),
            "workload.requests[4].response_format.type: got 'text'; choose one of: 'json_schema' or 'json_object'",
        ),
        (
            lambda d: _req(d, "json-answer")["response_format"]["json_schema"].update(schem={}),
            "workload.requests[4].response_format.json_schema.schem: unknown key; did you mean 'schema'?",
        ),
        (
            lambda d: _req(d, "json-answer")["response_format"]["json_schema"]["schema"]["properties"]["city"].update(
                maxLength=-1
            ),
            (
                "workload.requests[4].response_format.json_schema.schema.properties.city.maxLength: got -1; not valid "
                "JSON Schema: -1 is less than the minimum of 0; fix the schema"
            ),
        ),
        (
            lambda d: _req(d, "tool-required").update(tools=[{"function": {"name": "f", "paramters": {}}}]),
            "workload.requests[1].tools[0].function.paramters: unknown key; did you mean 'parameters'?",
        ),
        (
            lambda d: _req(d, "tool-required").update(tools=[{"function": {"name": "get weather"}}]),
            "workload.requests[1].tools[0].function.name: got 'get weather'; must be 1-64 letters, digits",
        ),
        (
            lambda d: _req(d, "tool-required").update(
                tools=[{"function": {"name": "f", "parameters": {"type": "string"}}}]
            ),
            "workload.requests[1].tools[0].function.parameters.type: got 'string'; arguments are a JSON object",
        ),
        (
            lambda d: _req(d, "tool-required").update(tools=[{"function": {"name": "f"}}, {"function": {"name": "f"}}]),
            "workload.requests[1].tools[1].function.name: got 'f'; tool names must be unique",
        ),
        (
            lambda d: _req(d, "tool-required").update(tools=[{"type": "retrieval", "function": {"name": "f"}}]),
            "workload.requests[1].tools[0].type: got 'retrieval'; choose one of: 'function'",
        ),
    ],
)
def test_tool_field_errors_name_path_value_and_fix(mutate: Callable[[dict[str, Any]], Any], expected: str) -> None:
    msg = _error(mutate)
    assert expected in msg, msg
    assert "\n" not in msg and "Traceback" not in msg


def test_tool_fields_take_overrides() -> None:
    data = apply_overrides(
        _data(),
        [
            "workload.requests.1.tool_choice=auto",
            "workload.requests.2.tool_choice.function.name=search_docs",
            "workload.requests.1.tools=agent-basic",
        ],
        where="a",
    )
    s = parse_scenario(data)
    assert s.workload.requests[1].tool_choice == "auto"
    assert s.workload.requests[2].tool_choice == {"type": "function", "function": {"name": "search_docs"}}


def test_inline_tools_need_only_a_name() -> None:
    data = _data()
    _req(data, "tool-required")["tools"] = [{"function": {"name": "ping"}}]
    rc = parse_scenario(data).workload.requests[1]
    assert rc.openai_fields()["tools"] == [
        {"type": "function", "function": {"name": "ping", "parameters": {"type": "object", "properties": {}}}}
    ]


# -------------------------------------------------------------------------------------- the request body


def _bodies() -> dict[str, dict[str, Any]]:
    """The body each request class sends, built by the generator's own pacer."""
    from dsserve.loadgen.coordinator import ProcessPacer, Ticket
    from dsserve.loadgen.prompts import build_pools, load_token_counter
    from dsserve.loadgen.target import RunConfig

    s = load_scenario("agent-tools")
    pools = build_pools(s, load_token_counter(None))
    config = RunConfig(
        scenario=s.model_dump(mode="json"),
        host="http://127.0.0.1:1",
        model="m",
        models={r.name: "m" for r in s.workload.requests},
        context_window=2048,
        pools={k: v.to_dict() for k, v in pools.items()},
        prompt_counter={},
        api_key_env=None,
        out_dir=".",
        engine={},
    )
    pacer = ProcessPacer(config, 0, 1, send=lambda *_: None)
    out = {}
    for i, rc in enumerate(s.workload.requests):
        req = pacer.request_for(Ticket(id=i, sched_s=0.0, cls_index=i, prompt_index=0, max_tokens=48))
        assert (req.check is None) == (not rc.checks_answer)
        out[rc.name] = json.loads(req.body)
    return out


def test_request_bodies_carry_tools_tool_choice_and_response_format() -> None:
    b = _bodies()
    assert not {"tools", "tool_choice", "response_format", "parallel_tool_calls"} & set(b["chat"])
    assert b["chat"]["ignore_eos"] is True
    req = b["tool-required"]
    assert req["tools"] == TOOLS and req["tool_choice"] == "required" and req["parallel_tool_calls"] is False
    assert "ignore_eos" not in req and req["stream"] is True and req["stream_options"] == {"include_usage": True}
    assert req["messages"][0]["role"] == "user" and req["max_tokens"] == 48
    named = b["tool-named"]
    assert named["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert named["stream"] is False and "parallel_tool_calls" not in named
    assert b["tool-auto"]["tool_choice"] == "auto"
    fmt = b["json-answer"]["response_format"]
    assert "tools" not in b["json-answer"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == "weather_report"
    assert fmt["json_schema"]["schema"]["required"] == ["city", "temperature_c", "conditions"]
    assert "schema_" not in json.dumps(fmt)


# ------------------------------------------------------------------------- the answer check: not streamed


def _call(name: str = "get_weather", args: Any = None, call_id: str | None = "call-1") -> dict[str, Any]:
    arguments = args if isinstance(args, str) else json.dumps(WEATHER if args is None else args)
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": arguments}}
    if call_id is not None:
        out["id"] = call_id
    return out


def _message(*calls: dict[str, Any], content: str | None = None) -> dict[str, Any]:
    msg: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        msg["tool_calls"] = list(calls)
    return msg


@pytest.mark.parametrize(
    "cls, message, finish",
    [
        ("tool-required", _message(_call()), "tool_calls"),
        ("tool-required", _message(_call("search_docs", {"query": "ray serve", "top_k": 3})), "tool_calls"),
        ("tool-required", _message(_call(), _call("search_docs", {"query": "x", "top_k": 10}, "call-2")), "tool_calls"),
        ("tool-named", _message(_call()), "stop"),  # OpenAI and vLLM: "stop" for a named choice
        ("tool-named", _message(_call(), content=""), "tool_calls"),
        ("tool-auto", _message(content="It is sunny."), "stop"),  # auto: text is a fine answer
        ("tool-auto", _message(_call()), "tool_calls"),
        ("json-answer", _message(content='{"city": "Paris", "temperature_c": -3, "conditions": "snow"}'), "stop"),
        ("json-answer", _message(content=' {"city": "London", "temperature_c": 50, "conditions": "fog"}\n'), "stop"),
    ],
)
def test_well_formed_answers_pass(cls: str, message: dict[str, Any], finish: str) -> None:
    assert _check(cls).check_message(message, finish) is None


@pytest.mark.parametrize(
    "cls, message, finish, expected",
    [
        (
            "tool-required",
            _message(content="I would call get_weather."),
            "stop",
            "malformed_tool_call: no tool call in the answer (tool_choice required)",
        ),
        (
            "tool-named",
            _message(),
            "length",
            "malformed_tool_call: no tool call in the answer (tool_choice names 'get_weather') (finish_reason length",
        ),
        (
            "tool-required",
            _message(_call("get_time")),
            "tool_calls",
            "malformed_tool_call: tool call 0 names 'get_time', not a declared tool (get_weather, search_docs)",
        ),
        (
            "tool-named",
            _message(_call("search_docs", {"query": "x", "top_k": 1})),
            "stop",
            "malformed_tool_call: tool call 0 calls 'search_docs', but tool_choice names 'get_weather'",
        ),
        (
            "tool-required",
            _message(_call(args='{"city": "Paris", "unit": "cel')),
            "length",
            "malformed_tool_call: tool call 0 (get_weather) arguments are not JSON: Unterminated string",
        ),
        (
            "tool-required",
            _message(_call(args="")),
            "tool_calls",
            "malformed_tool_call: tool call 0 (get_weather) arguments are not JSON: empty",
        ),
        (
            "tool-required",
            _message(_call(args='{"city": NaN}')),
            "tool_calls",
            "malformed_tool_call: tool call 0 (get_weather) arguments are not JSON: NaN is not JSON",
        ),
        (
            "tool-required",
            _message(_call(args={"city": "Paris", "unit": "kelvin"})),
            "tool_calls",
            (
                "malformed_tool_call: tool call 0 (get_weather) arguments do not match its parameters: 'kelvin' is not "
                "one of ['celsius', 'fahrenheit'] at $.unit"
            ),
        ),
        (
            "tool-required",
            _message(_call(args={"city": "Paris"})),
            "tool_calls",
            "arguments do not match its parameters: 'unit' is a required property at $",
        ),
        (
            "tool-required",
            _message(_call("search_docs", {"query": "q" * 65, "top_k": 3})),
            "tool_calls",
            "tool call 0 (search_docs) arguments do not match its parameters: ",
        ),
        (
            "tool-required",
            _message(_call("search_docs", {"query": "q", "top_k": 11})),
            "tool_calls",
            "11 is greater than the maximum of 10 at $.top_k",
        ),
        (
            "tool-required",
            _message(_call(args={**WEATHER, "country": "FR"})),
            "tool_calls",
            "Additional properties are not allowed ('country' was unexpected) at $",
        ),
        ("tool-required", _message(_call(args="[1, 2]")), "tool_calls", "[1, 2] is not of type 'object' at $"),
        (
            "tool-required",
            _message(_call(), _call("nope", call_id="c2")),
            "tool_calls",
            "malformed_tool_call: tool call 1 names 'nope'",
        ),
        (
            "tool-required",
            _message(_call(call_id=None)),
            "tool_calls",
            "malformed_tool_call: tool call 0 (get_weather) has no id",
        ),
        (
            "tool-required",
            {"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]},
            "tool_calls",
            "malformed_tool_call: tool call 0 has no function object",
        ),
        (
            "tool-required",
            {"role": "assistant", "tool_calls": {"id": "c"}},
            "tool_calls",
            "malformed_tool_call: message.tool_calls is not a list",
        ),
        ("tool-required", None, "tool_calls", "malformed_tool_call: the choice has no message object"),
        (
            "tool-auto",
            _message(_call(args="{")),
            "tool_calls",
            "malformed_tool_call: tool call 0 (get_weather) arguments are not JSON",
        ),
        (
            "json-answer",
            _message(content="The weather in Paris is fine."),
            "stop",
            "malformed_json: the answer is not JSON: Expecting value",
        ),
        (
            "json-answer",
            _message(content='{"city": "Paris", "temperature_c": 20'),
            "length",
            "malformed_json: the answer is not JSON: Expecting ',' delimiter",
        ),
        ("json-answer", _message(content=None), "stop", "malformed_json: the answer is not JSON: empty"),
        (
            "json-answer",
            _message(content='{"city": "Rome", "temperature_c": 20, "conditions": "fog"}'),
            "stop",
            "malformed_json: the answer does not match json_schema 'weather_report': 'Rome' is not one of",
        ),
    ],
)
def test_malformed_answers_fail_with_their_kind(cls: str, message: Any, finish: str, expected: str) -> None:
    error = _check(cls).check_message(message, finish)
    assert error is not None and expected in error, error
    assert len(error) <= 300
    assert ("finish_reason length" in error) == (finish == "length")  # a cut-off answer says why


def test_tool_choice_none_and_json_object() -> None:
    data = _data()
    _req(data, "tool-auto")["tool_choice"] = "none"
    _req(data, "json-answer")["response_format"] = {"type": "json_object"}
    s = parse_scenario(data)
    none = AnswerCheck.for_class(s.workload.requests[3])
    assert none is not None and none.check_message(_message(content="text"), "stop") is None
    error = none.check_message(_message(_call()), "tool_calls")
    assert error is not None and error.startswith("malformed_tool_call: the answer calls 'get_weather' although")
    obj = AnswerCheck.for_class(s.workload.requests[4])
    assert obj is not None and obj.check_message(_message(content='{"any": ["thing"]}'), "stop") is None
    assert obj.check_message(_message(content="[1]"), "stop") == "malformed_json: the answer is not a JSON object"


def test_plain_classes_are_not_checked() -> None:
    assert AnswerCheck.for_class(_cls("chat")) is None


# ----------------------------------------------------------------------------- the answer check: streamed


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return json.dumps({"object": "chat.completion.chunk", "choices": choices, **extra})


def _tool_delta(
    index: int | None, call_id: str | None = None, name: str | None = None, args: str | None = None
) -> dict[str, Any]:
    fn: dict[str, Any] = {}
    if name is not None:
        fn["name"] = name
    if args is not None:
        fn["arguments"] = args
    d: dict[str, Any] = {"function": fn, "id": call_id}  # vLLM sends "id": null after the first delta
    if index is not None:
        d["index"] = index
    if call_id is not None:
        d["type"] = "function"
    return {"tool_calls": [d]}


def _stream(events: list[str]) -> StreamState:
    st = StreamState(t_send=0.0, answer=AnswerBuffer())
    for i, ev in enumerate([*events, _chunk(None, usage={"prompt_tokens": 5, "completion_tokens": 9}), "[DONE]"]):
        st.on_event(ev, 0.1 * (i + 1))
    return st


def _vllm_call_stream(args: str, finish: str = "tool_calls", name: str = "get_weather") -> list[str]:
    """vLLM's shape: a role chunk, the call's id and name with empty arguments, then argument fragments."""
    events = [_chunk({"role": "assistant", "content": ""}), _chunk(_tool_delta(0, "chatcmpl-tool-1", name, ""))]
    events += [_chunk(_tool_delta(0, args=args[i : i + 4])) for i in range(0, len(args), 4)]
    return [*events, _chunk({"content": ""}, finish)]


def test_streamed_tool_call_is_assembled_like_the_sdk() -> None:
    args = json.dumps({"query": "prefix caching", "top_k": 4})
    st = _stream(_vllm_call_stream(args, name="search_docs"))
    assert st.answer is not None
    [call] = st.answer.tool_calls()
    assert (call.index, call.id, call.name, call.arguments) == (0, "chatcmpl-tool-1", "search_docs", args)
    assert st.finish_reason == "tool_calls" and st.error is None
    assert st.first_token_at == pytest.approx(0.2)  # the first tool-call delta is the first token
    assert _check("tool-required").check_stream(st.answer, st.finish_reason) is None


def test_streamed_named_call_finishing_with_stop_passes() -> None:
    st = _stream(_vllm_call_stream(json.dumps(WEATHER), finish="stop"))
    assert st.answer is not None and _check("tool-named").check_stream(st.answer, "stop") is None


def test_parallel_streamed_calls_are_grouped_by_index() -> None:
    a, b = json.dumps(WEATHER), json.dumps({"query": "q", "top_k": 2})
    events = [
        _chunk(_tool_delta(0, "c0", "get_weather", a[:5])),
        _chunk(_tool_delta(1, "c1", "search_docs", "")),
        _chunk(_tool_delta(1, args=b[:7])),
        _chunk(_tool_delta(0, args=a[5:])),
        _chunk(_tool_delta(1, args=b[7:])),
    ]
    st = _stream(events)
    assert st.answer is not None
    calls = st.answer.tool_calls()
    assert [(c.id, c.name, c.arguments) for c in calls] == [("c0", "get_weather", a), ("c1", "search_docs", b)]
    assert _check("tool-required").check_stream(st.answer, "tool_calls") is None


@pytest.mark.parametrize(
    "cls, events, expected",
    [
        (
            "tool-required",
            _vllm_call_stream('{"city": "Paris", "unit": "celsius"')[:-1] + [_chunk({}, "length")],
            "malformed_tool_call: tool call 0 (get_weather) arguments are not JSON: Expecting ',' delimiter",
        ),
        (
            "tool-required",
            _vllm_call_stream('{"city": "Paris", "unit": "kelvin"}'),
            "'kelvin' is not one of ['celsius', 'fahrenheit'] at $.unit",
        ),
        (
            "tool-required",
            [_chunk({"content": "no call"}), _chunk({}, "stop")],
            "malformed_tool_call: no tool call in the answer (tool_choice required)",
        ),
        (
            "tool-named",
            _vllm_call_stream('{"query": "q", "top_k": 1}', "stop", name="search_docs"),
            "tool call 0 calls 'search_docs', but tool_choice names 'get_weather'",
        ),
        (
            "tool-required",
            [_chunk(_tool_delta(None, "c0", "get_weather", json.dumps(WEATHER)))],
            "malformed_tool_call: a delta.tool_calls entry has no index",
        ),
        (
            "tool-required",
            [_chunk(_tool_delta(0, None, "get_weather", json.dumps(WEATHER)))],
            "malformed_tool_call: tool call 0 (get_weather) has no id",
        ),
        (
            "tool-auto",
            _vllm_call_stream('{"city": "Paris", "unit": "celsius", "x": 1}'),
            "Additional properties are not allowed ('x' was unexpected)",
        ),
        (
            "json-answer",
            [
                _chunk({"content": '{"city": "Paris", '}),
                _chunk({"content": '"temperature_c": 99, '}),
                _chunk({"content": '"conditions": "fog"}'}),
                _chunk({}, "stop"),
            ],
            "malformed_json: the answer does not match json_schema 'weather_report': 99 is greater than the maximum",
        ),
        (
            "json-answer",
            [_chunk({"content": '{"city": '}), _chunk({}, "length")],
            "malformed_json: the answer is not JSON: Expecting value",
        ),
    ],
)
def test_malformed_streams_fail_with_their_kind(cls: str, events: list[str], expected: str) -> None:
    st = _stream(events)
    assert st.answer is not None
    error = _check(cls).check_stream(st.answer, st.finish_reason)
    assert error is not None and expected in error, error


def test_streamed_auto_text_and_json_content_pass() -> None:
    st = _stream(
        [
            _chunk({"role": "assistant", "content": ""}),
            _chunk({"content": "Sunny"}),
            _chunk({"content": " today."}, "stop"),
        ]
    )
    assert st.answer is not None and _check("tool-auto").check_stream(st.answer, "stop") is None
    doc = '{"city": "Beijing", "temperature_c": 31, "conditions": "sunny"}'
    st = _stream([_chunk({"content": doc[i : i + 9]}) for i in range(0, len(doc), 9)] + [_chunk({}, "stop")])
    assert st.answer is not None and st.answer.text() == doc
    assert _check("json-answer").check_stream(st.answer, "stop") is None


def test_plain_streams_collect_nothing() -> None:
    st = StreamState(t_send=0.0)
    st.on_event(_chunk({"content": "hello"}), 0.1)
    assert st.answer is None and st.text_chars == 5


# ------------------------------------------------------------------------------------------ the SLO gate


def _row(error: str | None, sent_s: float) -> RequestResult:
    return RequestResult(
        cls="tool-required",
        share=0,
        sched_s=sent_s,
        sent_s=sent_s,
        status=200,
        error=error,
        ttft_ms=10.0,
        e2e_ms=20.0,
        tpot_ms=1.0,
        output_tokens=9,
        prompt_tokens=5,
        prompt_tokens_client=4,
        max_tokens=48,
    )


def test_malformed_answers_count_in_the_error_ratio() -> None:
    s = load_scenario(
        "agent-tools", ["load.ramp_up_s=0", "load.duration_s=10", "load.arrivals=constant", "load.rate_rps=10"]
    )
    rows = [_row(None, i * 0.1) for i in range(96)]
    rows += [
        _row("malformed_tool_call: tool call 0 (get_weather) arguments are not JSON: empty", 9.6),
        _row("malformed_tool_call: no tool call in the answer (tool_choice required)", 9.7),
        _row("malformed_json: the answer is not JSON: empty", 9.8),
        _row("HTTP 500: boom", 9.9),
    ]
    data = RunData(
        profile=RateProfile.from_load(s.load),
        arrivals="constant",
        share_count=1,
        rows=rows,
        scheduled={0: {"window": 100, "total": 100}},
    )
    fig = compute_figures(data)
    req = fig["requests"]
    assert req["errors"] == {"malformed_tool_call": 2, "malformed_json": 1, "HTTP 500": 1}
    assert req["failed"] == 4 and req["error_ratio"] == pytest.approx(0.04)
    verdict = evaluate(fig, s.slo, s.generator, data=data)
    assert verdict.verdict == "fail"
    assert [c.name for c in verdict.checks if not c.passed] == ["error_ratio"]


# -------------------------------------------------------------- the whole scenario, through Locust


def _run(server_args: list[str], out: Path) -> tuple[int, dict[str, Any], list[dict[str, str]]]:
    import csv

    from dsserve.cli import main
    from dsserve.loadgen.null_server import NullServer

    with NullServer(*server_args) as server:
        rc = main(
            [
                "loadtest",
                "agent-tools",
                "--host",
                server.url,
                "--rate",
                "25",
                "--duration",
                "2",
                "--set",
                "load.ramp_up_s=0",
                "--set",
                "load.arrivals=constant",
                "--set",
                "generator.max_lag_p99_ms=250",
                "--out",
                str(out),
                "-q",
                "--timeout-s",
                "120",
            ]
        )
    results = json.loads((out / "results.json").read_text())
    rows = list(csv.DictReader((out / "requests.csv").open()))
    return rc, results, rows


def test_agent_tools_passes_against_well_formed_answers(tmp_path: Path) -> None:
    rc, r, rows = _run([], tmp_path)
    assert rc == 0, (r["checks"], r["figures"]["requests"]["errors"])
    req = r["figures"]["requests"]
    assert req["failed"] == 0 and req["ok"] == req["arrivals"] == 50
    by_class = r["figures"]["by_class"]
    assert set(by_class) == {"chat", "tool-required", "tool-named", "tool-auto", "json-answer"}, by_class
    assert all(v["failed"] == 0 for v in by_class.values())
    streamed_tools = [x for x in rows if x["cls"] == "tool-required"]
    assert streamed_tools and all(float(x["ttft_ms"]) > 0 for x in streamed_tools)  # first tool delta timed


def test_malformed_answers_fail_the_gate_end_to_end(tmp_path: Path) -> None:
    rc, r, rows = _run(["--malformed-every", "3"], tmp_path)
    assert rc == 1 and r["verdict"] == "fail"
    errors = r["figures"]["requests"]["errors"]
    assert set(errors) == {"malformed_tool_call", "malformed_json"}, errors
    structured = [x for x in rows if x["cls"] != "chat"]
    assert sum(errors.values()) == len(structured) // 3  # every third checked answer was cut short
    assert all(x["error"] == "" for x in rows if x["cls"] == "chat")
    assert {c["name"] for c in r["checks"] if not c["passed"]} == {"error_ratio"}


def test_a_forced_call_that_never_came_is_malformed_not_no_text() -> None:
    st = _stream([_chunk({"role": "assistant", "content": ""}), _chunk({}, "length")])
    assert st.token_events == 0  # no generated text reached the client
    problem = stream_problem(st, 8, False, 9, _check("tool-required"))
    assert problem is not None and problem.startswith("malformed_tool_call: no tool call in the answer"), problem
    assert stream_problem(st, 8, False, 9) == "no text: the stream carried no generated text"  # plain chat
