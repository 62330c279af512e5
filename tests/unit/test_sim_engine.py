"""The simulated engine speaks OpenAI like vLLM and paces tokens by the planner (no Ray Serve needed),
including agent traffic: tool calls, vLLM's tool_choice 400s, and JSON answers to response_format."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from dsserve.app import llm_configs_of, serving_args
from dsserve.config import load_spec, parse_spec
from dsserve.sim import SIM_CONFIG_KEY, SIMULATED_ENGINE_CLS
from dsserve.sim.answer import ToolParsing
from dsserve.sim.engine import (
    CHARS_PER_TOKEN,
    TOOL_CALL_CLOSE_TOKENS,
    TOOL_CALL_OPEN_TOKENS,
    SimulatedEngine,
    chat_prompt_tokens,
    estimate_tokens,
)
from dsserve.sim.timing import sim_inputs, timing_from_spec

REPO = Path(__file__).resolve().parents[2]
TWIN = REPO / "deploy/profiles/h800x8-deepseek-v2-lite.yaml"


def _sim_spec(**engine: Any) -> Any:
    data = yaml.safe_load(TWIN.read_text())
    data["name"] = "sim-test"
    data["engine"].update({"backend": "simulated", **engine})
    return parse_spec(data)


def _engine(spec: Any) -> SimulatedEngine:
    cfg = SimpleNamespace(
        model_id=spec.model.id, log_engine_metrics=False, experimental_configs={SIM_CONFIG_KEY: sim_inputs(spec)}
    )
    return SimulatedEngine(cfg)


def _chat(**kw: Any) -> Any:
    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

    body = {"model": "deepseek-v2-lite-chat", "messages": [{"role": "user", "content": "hello " * 40}]}
    body.update(kw)
    return ChatCompletionRequest(**body)


async def _collect(gen: Any) -> list[Any]:
    return [x async for x in gen]


def _run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_rendered_app_selects_the_simulated_engine_and_carries_the_modelled_layout() -> None:
    spec = _sim_spec()
    cfg = llm_configs_of(serving_args(spec))[0]
    assert cfg["runtime_env"]["env_vars"]["RAYLLM_VLLM_ENGINE_CLS"] == SIMULATED_ENGINE_CLS
    assert cfg["accelerator_config"] == {"kind": "cpu"} and "accelerator_type" not in cfg
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}]
    assert parse_spec(cfg["experimental_configs"][SIM_CONFIG_KEY]).hardware.accelerator == "h800"


def test_dp_attention_is_simulated_as_one_replica_per_rank_on_the_plain_builder() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml").read_text())
    data["engine"]["backend"] = "simulated"
    spec = parse_spec(data)
    args = serving_args(spec)
    assert args["data_parallel"] is False, "simulated ranks are plain replicas, not ray.serve.llm's DPServer"
    dep = llm_configs_of(args)[0]["deployment_config"]
    assert dep["num_replicas"] == spec.serving.replicas * spec.engine.data_parallel_size


def test_a_streamed_chat_has_vllm_chunks_usage_and_done_and_takes_at_least_the_modelled_time() -> None:
    spec = _sim_spec()
    timing = timing_from_spec(spec)

    async def go() -> tuple[list[str], float, SimulatedEngine]:
        eng = _engine(spec)
        await eng.start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        out = await _collect(eng.chat(_chat(max_tokens=8, stream=True, stream_options={"include_usage": True})))
        return out, loop.time() - t0, eng

    chunks, elapsed, eng = _run(go())
    assert all(isinstance(c, str) and c.startswith("data: ") for c in chunks)
    assert chunks[-1] == "data: [DONE]\n\n"
    bodies = [json.loads(c[6:]) for c in chunks[:-1]]
    assert bodies[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(b["system_fingerprint"] == "dsserve-simulated" for b in bodies)
    text = "".join(b["choices"][0]["delta"].get("content", "") for b in bodies if b["choices"])
    assert len(text.split()) == 8
    assert [b["choices"][0]["finish_reason"] for b in bodies if b["choices"]][-1] == "length"
    prompt = chat_prompt_tokens([{"role": "user", "content": "hello " * 40}])
    assert bodies[-1]["usage"] == {"prompt_tokens": prompt, "completion_tokens": 8, "total_tokens": prompt + 8}
    # Never faster than the model: one prefill step, then 7 decode steps of one sequence.
    modelled = timing.step_time_s(0, prompt, 0, prompt / 2) + sum(
        timing.step_time_s(1, 0, prompt + i, 0) for i in range(7)
    )
    assert elapsed >= modelled * 0.99
    assert eng.steps == 8


def test_a_plain_chat_returns_one_response_with_usage() -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(max_tokens=5)))

    (resp,) = _run(go())
    body = resp.model_dump()
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    assert len(body["choices"][0]["message"]["content"].split()) == 5


def test_a_stop_string_ends_the_answer_before_it() -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(max_tokens=50, stop=["engine"])))

    (resp,) = _run(go())
    choice = resp.model_dump()["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert "engine" not in choice["message"]["content"]
    assert choice["message"]["content"].strip().endswith("while the")


@pytest.mark.parametrize("kw, param", [({"max_tokens": 40_000}, "messages"), ({"n": 2}, "n")])
def test_requests_vllm_would_refuse_get_a_400_error_response(kw: dict[str, Any], param: str) -> None:
    async def go() -> list[Any]:
        eng = _engine(_sim_spec())
        await eng.start()
        return await _collect(eng.chat(_chat(**kw)))

    (err,) = _run(go())
    assert err.error.code == 400 and err.error.param == param


def test_a_client_that_stops_reading_frees_its_engine_slot_and_kv() -> None:
    async def go() -> SimulatedEngine:
        eng = _engine(_sim_spec())
        await eng.start()
        gen = eng.chat(_chat(max_tokens=1000, stream=True))
        async for _ in gen:
            if eng.scheduler and eng.scheduler.running:
                break
        await gen.aclose()
        return eng

    eng = _run(go())
    assert eng.scheduler is not None
    assert not eng.scheduler.has_work() and eng.scheduler.free_blocks == eng.scheduler.kv_blocks


def test_a_layout_that_does_not_fit_is_refused_at_start_like_vllm() -> None:
    data = yaml.safe_load((REPO / "deploy/profiles/h800x8-deepseek-v2.yaml").read_text())
    data["engine"].update({"backend": "simulated", "quantization": None, "kv_cache_dtype": "auto"})
    data["model"]["architecture"] = "deepseek-v3"
    data["engine"]["max_model_len"] = 4096
    from dsserve.errors import SpecError

    with pytest.raises(SpecError, match="would not start"):
        timing_from_spec(parse_spec(data))


def test_every_sim_profile_mirrors_its_gpu_twin() -> None:
    """sim-<twin>.yaml differs from deploy/profiles/<twin>.yaml only in name, description, backend and local API
    (host, keys)."""
    sims = sorted((REPO / "deploy/profiles").glob("sim-*.yaml"))
    assert sims, "no sim-*.yaml profiles"
    allowed = {
        ("name",),
        ("description",),
        ("engine", "backend"),
        ("api", "host"),
        ("api", "api_keys_env"),
        ("api", "api_keys_file"),
    }
    for path in sims:
        twin = REPO / "deploy/profiles" / path.name.removeprefix("sim-")
        assert twin.is_file(), f"{path.name} has no GPU twin {twin.name}"
        a = load_spec(path).model_dump()
        b = load_spec(twin).model_dump()
        assert a["engine"]["backend"] == "simulated"
        diffs = {
            (sec, key)
            for sec in a
            if isinstance(a[sec], dict)
            for key in set(a[sec]) | set(b[sec])
            if a[sec].get(key) != b[sec].get(key)
        }
        diffs |= {(sec,) for sec in a if not isinstance(a[sec], dict) and a[sec] != b[sec]}
        assert diffs <= allowed, f"{path.name} differs from {twin.name} in {sorted(diffs - allowed)}"


def test_sim_time_scale_multiplies_every_step_and_is_refused_on_the_real_engine() -> None:
    base, slow = timing_from_spec(_sim_spec()), timing_from_spec(_sim_spec(sim_time_scale=20))
    assert slow.step_time_s(4, 0, 500, 0) == pytest.approx(20 * base.step_time_s(4, 0, 500, 0))
    data = yaml.safe_load(TWIN.read_text())
    data["engine"]["sim_time_scale"] = 20
    from dsserve.errors import SpecError

    with pytest.raises(SpecError, match="engine.sim_time_scale"):
        parse_spec(data)


# -- agent traffic: tools, tool_choice, response_format (dsserve/sim/answer.py) -----------------------------

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 7},
    },
    "required": ["city", "unit", "days"],
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
    {
        "type": "function",
        "function": {
            "name": "search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "top_k": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
]
NAMED = {"type": "function", "function": {"name": "search"}}
TOOL_CALL_ID = re.compile(r"^chatcmpl-tool-[0-9a-f]{32}$")


def _parser_spec() -> Any:
    """The V2-Lite twin with DeepSeek's tool-call parser (auto tool choice follows, as in frontend_kwargs)."""
    data = yaml.safe_load(TWIN.read_text())
    data["name"] = "sim-test"
    data["engine"]["backend"] = "simulated"
    data["model"]["parsers"] = {"tool_call_parser": "deepseek_v3"}
    return parse_spec(data)


def _answers(spec: Any, *requests: Any) -> list[list[Any]]:
    """Every request's outputs from one started engine."""

    async def go() -> list[list[Any]]:
        eng = _engine(spec)
        await eng.start()
        return [await _collect(eng.chat(r)) for r in requests]

    return _run(go())


def _events(chunks: list[str]) -> list[dict[str, Any]]:
    assert chunks[-1] == "data: [DONE]\n\n"
    return [json.loads(c[6:]) for c in chunks[:-1]]


def _schema_of(name: str) -> dict[str, Any]:
    return next(t["function"]["parameters"] for t in TOOLS if t["function"]["name"] == name)


def test_the_engine_reads_the_specs_tool_parser_from_the_sim_inputs() -> None:
    cfg = llm_configs_of(serving_args(_parser_spec()))[0]
    carried = parse_spec(cfg["experimental_configs"][SIM_CONFIG_KEY]).model.frontend_kwargs()
    assert carried["tool_call_parser"] == "deepseek_v3" and carried["enable_auto_tool_choice"] is True

    async def go() -> tuple[ToolParsing, ToolParsing]:
        with_parser, without = _engine(_parser_spec()), _engine(_sim_spec())
        await with_parser.start()
        await without.start()
        return with_parser.tool_parsing, without.tool_parsing

    on, off = _run(go())
    assert on.enabled and on.tool_call_parser == "deepseek_v3"
    assert not off.enabled, "DeepSeek-V2 has no tool-call parser of its own"


@pytest.mark.parametrize(
    "choice, name, finish, content",
    [
        (NAMED, "search", "stop", ""),  # OpenAI and vLLM: a named choice finishes "stop"
        ("required", "get_weather", "tool_calls", ""),
        ("auto", "get_weather", "tool_calls", None),
        (None, "get_weather", "tool_calls", None),  # tools without tool_choice mean auto
    ],
)
def test_a_tool_choice_gets_one_call_with_arguments_valid_against_the_tools_schema(
    choice: Any, name: str, finish: str, content: str | None
) -> None:
    import jsonschema

    kw: dict[str, Any] = {"tools": TOOLS, "max_tokens": 200}
    if choice is not None:
        kw["tool_choice"] = choice
    ((resp,),) = _answers(_parser_spec(), _chat(**kw))
    choice_ = resp.model_dump()["choices"][0]
    assert choice_["finish_reason"] == finish
    message = choice_["message"]
    assert message["role"] == "assistant" and message["content"] == content
    (call,) = message["tool_calls"]
    assert TOOL_CALL_ID.match(call["id"]) and call["type"] == "function" and call["function"]["name"] == name
    jsonschema.validate(json.loads(call["function"]["arguments"]), _schema_of(name))
    # tokens: the call's markup and name, ~4 characters of arguments per token, closing markup, EOS
    expected = (
        TOOL_CALL_OPEN_TOKENS
        + estimate_tokens(name)
        + estimate_tokens(call["function"]["arguments"])
        + TOOL_CALL_CLOSE_TOKENS
        + 1
    )
    assert resp.usage.completion_tokens == expected


def test_auto_answers_a_tool_result_in_text_so_an_agent_loop_ends() -> None:
    call = {
        "id": "chatcmpl-tool-" + "0" * 32,
        "type": "function",
        "function": {"name": "get_weather", "arguments": "{}"},
    }
    turn = [
        {"role": "user", "content": "weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "chatcmpl-tool-" + "0" * 32, "content": "18 C, sunny"},
    ]
    ((resp,),) = _answers(_parser_spec(), _chat(messages=turn, tools=TOOLS, max_tokens=5))
    choice = resp.model_dump()["choices"][0]
    assert not choice["message"].get("tool_calls") and len(choice["message"]["content"].split()) == 5


@pytest.mark.parametrize(
    "choice, message",
    [
        ("auto", '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'),
        (None, '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'),
        ("required", 'tool_choice="required" requires --tool-call-parser to be set'),
        (NAMED, 'tool_choice=function "search" requires --tool-call-parser to be set'),
    ],
)
def test_without_a_tool_parser_tool_choices_get_vllms_400(choice: Any, message: str) -> None:
    kw: dict[str, Any] = {"tools": TOOLS}
    if choice is not None:
        kw["tool_choice"] = choice
    ((err,),) = _answers(_sim_spec(), _chat(**kw))
    assert err.error.code == 400 and err.error.message == message


@pytest.mark.parametrize("spec", [_sim_spec, _parser_spec])
def test_tool_choice_none_answers_in_text_and_the_tools_count_toward_the_prompt(spec: Any) -> None:
    ((resp,),) = _answers(spec(), _chat(tools=TOOLS, tool_choice="none", max_tokens=4))
    body = resp.model_dump()
    choice = body["choices"][0]
    assert choice["finish_reason"] == "length" and len(choice["message"]["content"].split()) == 4
    plain = chat_prompt_tokens([{"role": "user", "content": "hello " * 40}])
    assert body["usage"]["prompt_tokens"] == chat_prompt_tokens([{"role": "user", "content": "hello " * 40}], TOOLS)
    assert body["usage"]["prompt_tokens"] > plain + 50, "tool schemas are part of the prompt"


def _streamed_call(events: list[dict[str, Any]]) -> tuple[dict[str, Any], list[str], str]:
    """(the delta announcing the call, the arguments fragments, the finish reason) of a streamed tool call."""
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    calls = [d["tool_calls"][0] for d in deltas[1:] if d.get("tool_calls")]
    assert all(not d.get("content") for d in deltas[1:]), "a tool call streams no content"
    fragments = [c["function"]["arguments"] for c in calls[1:]]
    assert all(set(c) == {"index", "function"} and set(c["function"]) == {"arguments"} for c in calls[1:])
    return calls[0], fragments, [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1]


@pytest.mark.parametrize(
    "choice, name, finish",
    [(NAMED, "search", "stop"), ("required", "get_weather", "tool_calls"), ("auto", "get_weather", "tool_calls")],
)
def test_a_streamed_tool_call_has_vllms_deltas_one_fragment_per_token(choice: Any, name: str, finish: str) -> None:
    import jsonschema

    req = _chat(tools=TOOLS, tool_choice=choice, stream=True, stream_options={"include_usage": True})
    ((*chunks,), (plain,)) = _answers(_parser_spec(), req, _chat(tools=TOOLS, tool_choice=choice))
    events = _events(chunks)
    head, fragments, reason = _streamed_call(events)
    assert head["index"] == 0 and head["type"] == "function" and TOOL_CALL_ID.match(head["id"])
    assert head["function"] == {"name": name}, "vLLM's deepseek_v3 parser names the call before any arguments"
    assert reason == finish
    arguments = "".join(fragments)
    jsonschema.validate(json.loads(arguments), _schema_of(name))
    assert all(len(f) <= CHARS_PER_TOKEN for f in fragments) and len(fragments) == estimate_tokens(arguments)
    assert events[-1]["usage"]["completion_tokens"] == plain.usage.completion_tokens
    assert arguments == plain.model_dump()["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]


def test_a_tool_call_cut_by_max_tokens_finishes_length_as_vllm_reports_it() -> None:
    lead = TOOL_CALL_OPEN_TOKENS + estimate_tokens("get_weather")
    kw = {"tools": TOOLS, "tool_choice": "required", "max_tokens": lead + 3}
    (chunks, (plain,)) = _answers(_parser_spec(), _chat(stream=True, **kw), _chat(**kw))
    head, fragments, reason = _streamed_call(_events(chunks))
    assert reason == "length" and head["function"] == {"name": "get_weather"}
    assert len(fragments) == 3, "streamed: the arguments fragments generated before the tokens ran out"
    body = plain.model_dump()
    # not streamed: vLLM's parser finds no complete call in the cut text, so there is none
    assert body["choices"][0]["finish_reason"] == "length" and not body["choices"][0]["message"].get("tool_calls")
    assert body["usage"]["completion_tokens"] == lead + 3


def test_response_format_json_object_and_json_schema_stream_json_content_then_stop() -> None:
    import jsonschema

    schema_fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
    obj_fmt = {"type": "json_object"}
    outs = _answers(
        _sim_spec(),
        _chat(response_format=obj_fmt),
        _chat(response_format=schema_fmt),
        _chat(response_format=schema_fmt, stream=True, stream_options={"include_usage": True}),
        _chat(response_format=schema_fmt, max_tokens=3),
    )
    (obj,), (doc,), stream, (cut,) = outs
    obj_choice = obj.model_dump()["choices"][0]
    assert obj_choice["finish_reason"] == "stop" and isinstance(json.loads(obj_choice["message"]["content"]), dict)
    content = doc.model_dump()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), WEATHER)
    assert doc.usage.completion_tokens == estimate_tokens(content) + 1, "one token per ~4 characters, then EOS"
    events = _events(stream)
    assert "".join(e["choices"][0]["delta"].get("content", "") for e in events if e["choices"]) == content
    assert [e["choices"][0]["finish_reason"] for e in events if e["choices"]][-1] == "stop"
    assert events[-1]["usage"]["completion_tokens"] == doc.usage.completion_tokens
    cut_choice = cut.model_dump()["choices"][0]
    assert cut_choice["finish_reason"] == "length" and content.startswith(cut_choice["message"]["content"])


def test_structured_outputs_and_completions_follow_the_schema_too() -> None:
    import jsonschema
    from ray.llm._internal.serve.core.configs.openai_api_models import CompletionRequest

    async def go() -> tuple[list[Any], list[Any]]:
        eng = _engine(_sim_spec())
        await eng.start()
        chat = await _collect(eng.chat(_chat(structured_outputs={"json": WEATHER})))
        comp = await _collect(
            eng.completions(
                CompletionRequest(
                    model="deepseek-v2-lite-chat",
                    prompt="Weather:",
                    response_format={"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}},
                )
            )
        )
        return chat, comp

    (chat,), (comp,) = _run(go())
    jsonschema.validate(json.loads(chat.model_dump()["choices"][0]["message"]["content"]), WEATHER)
    choice = comp.model_dump()["choices"][0]
    assert choice["finish_reason"] == "stop"
    jsonschema.validate(json.loads(choice["text"]), WEATHER)


def test_a_schema_with_no_instance_is_a_400_naming_the_parameter() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"$ref": "#/$defs/Missing"}}}
    ((err,),) = _answers(_sim_spec(), _chat(response_format=fmt))
    assert err.error.code == 400 and err.error.param == "response_format" and "Missing" in err.error.message


def test_an_answer_that_ends_at_eos_frees_its_slot_and_kv() -> None:
    async def go() -> SimulatedEngine:
        eng = _engine(_parser_spec())
        await eng.start()
        await _collect(eng.chat(_chat(tools=TOOLS, tool_choice=NAMED)))
        await _collect(eng.chat(_chat(response_format={"type": "json_object"}, stream=True)))
        return eng

    eng = _run(go())
    assert eng.scheduler is not None and not eng.scheduler.has_work()
    assert eng.scheduler.free_blocks == eng.scheduler.kv_blocks


def test_the_direct_mode_app_answers_tool_calls_and_vllms_400() -> None:
    """Direct mode: the engine replica's own app (dsserve/sim/asgi.py) builds vLLM's request model from JSON."""
    import httpx

    body = {"model": "deepseek-v2-lite-chat", "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}

    async def go(spec: Any, extra: dict[str, Any]) -> tuple[int, str]:
        eng = _engine(spec)
        await eng.start()
        app = await eng.build_asgi_app()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
            r = await client.post("/v1/chat/completions", json={**body, **extra})
            return r.status_code, r.text

    status, text = _run(go(_sim_spec(), {}))
    assert status == 400 and '"auto" tool choice requires' in json.loads(text)["error"]["message"]
    status, text = _run(go(_parser_spec(), {"tool_choice": NAMED}))
    assert status == 200
    (call,) = json.loads(text)["choices"][0]["message"]["tool_calls"]
    assert call["function"]["name"] == "search" and json.loads(text)["choices"][0]["finish_reason"] == "stop"
    status, text = _run(go(_parser_spec(), {"tool_choice": "required", "stream": True}))
    events = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: {")]
    head, fragments, reason = _streamed_call(events)
    assert status == 200 and head["function"] == {"name": "get_weather"} and reason == "tool_calls"
    json.loads("".join(fragments))


def _mtp_spec(acceptance: float) -> Any:
    data = yaml.safe_load((REPO / "deploy/profiles/sim-h800x8-deepseek-v3-awq.yaml").read_text())
    data["engine"]["speculative"] = {"num_speculative_tokens": 2, "acceptance_rate": acceptance}
    return parse_spec(data)


def test_mtp_yields_several_tokens_a_step_and_stops_exactly_where_vllm_would() -> None:
    """With MTP on a V3 twin, a step can deliver several tokens: fewer engine steps than tokens, chunks
    carrying more than one word, the exact max_tokens, and a JSON answer that stops at its EOS even when
    drafts were accepted past it."""
    spec = _mtp_spec(0.95)
    assert timing_from_spec(spec).speculative_tokens == 2

    async def go() -> tuple[list[str], Any, int]:
        eng = _engine(spec)
        await eng.start()
        body = {"model": spec.model.id, "messages": [{"role": "user", "content": "hello " * 40}]}
        from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest

        chunks = await _collect(eng.chat(ChatCompletionRequest(**body, max_tokens=40, stream=True)))
        steps = eng.steps
        fmt = {"type": "json_schema", "json_schema": {"name": "weather", "schema": WEATHER}}
        (doc,) = await _collect(eng.chat(ChatCompletionRequest(**body, response_format=fmt)))
        return chunks, doc, steps

    chunks, doc, steps = _run(go())
    pieces = [e["choices"][0]["delta"].get("content", "") for e in _events(chunks) if e["choices"]]
    assert len("".join(pieces).split()) == 40
    assert max(len(p.split()) for p in pieces) > 1
    # one prefill step, then ~1 + 0.95 + 0.95^2 = 2.85 tokens a step for the other 39 (40 steps without MTP)
    assert steps < 25
    import jsonschema

    content = doc.model_dump()["choices"][0]["message"]["content"]
    jsonschema.validate(json.loads(content), WEATHER)
    assert doc.model_dump()["choices"][0]["finish_reason"] == "stop"
    assert doc.usage.completion_tokens == estimate_tokens(content) + 1


def test_without_an_mtp_module_the_spec_refuses_speculation() -> None:
    from dsserve.errors import SpecError

    data = yaml.safe_load(TWIN.read_text())
    data["engine"].update(backend="simulated", speculative={"num_speculative_tokens": 1})
    with pytest.raises(SpecError, match="no multi-token-prediction module"):
        parse_spec(data)
