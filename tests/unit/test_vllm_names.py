"""The names dsserve checks specs against, read from vLLM's source, equal vLLM's own objects; parsers and
frontend arguments in the spec."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from dsserve.app import llm_config
from dsserve.config import load_spec
from dsserve.errors import SpecError
from dsserve.vllm_names import (
    engine_arg_names,
    frontend_arg_names,
    kv_connector_names,
    reasoning_parser_names,
    tool_parser_names,
)

REPO = Path(__file__).resolve().parents[2]
LOCAL = REPO / "deploy/profiles/local-cpu.yaml"


def test_the_readers_equal_vllms_own_registries() -> None:
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.entrypoints.launchers.cli_args import FrontendArgs
    from vllm.reasoning import ReasoningParserManager
    from vllm.tool_parsers import ToolParserManager

    assert engine_arg_names() == {f.name for f in dataclasses.fields(AsyncEngineArgs)}
    assert frontend_arg_names() == {f.name for f in dataclasses.fields(FrontendArgs)}
    assert tool_parser_names() == set(ToolParserManager.list_registered())
    assert reasoning_parser_names() == set(ReasoningParserManager.list_registered())
    assert {"deepseek_v3", "deepseek_v31"} <= tool_parser_names()
    assert {"deepseek_r1", "deepseek_v3"} <= reasoning_parser_names()
    assert kv_connector_names() == set(KVConnectorFactory._registry)
    assert {"NixlConnector", "ExampleConnector", "LMCacheConnectorV1"} <= kv_connector_names()


def test_parsers_default_to_the_architectures_own() -> None:
    v3 = llm_config(load_spec(REPO / "deploy/profiles/h800x16-deepseek-v3.yaml"))["engine_kwargs"]
    assert v3["tool_call_parser"] == "deepseek_v3" and v3["enable_auto_tool_choice"] is True
    assert "reasoning_parser" not in v3
    tiny = llm_config(load_spec(LOCAL))["engine_kwargs"]  # the tiny model's tokenizer has V3's call tokens
    assert tiny["tool_call_parser"] == "deepseek_v3" and tiny["enable_auto_tool_choice"] is True
    for profile in ("h800x8-deepseek-v2.yaml", "h800x8-deepseek-llm-67b.yaml", "local-cpu-dense.yaml"):
        kwargs = llm_config(load_spec(REPO / "deploy/profiles" / profile))["engine_kwargs"]
        assert not {"tool_call_parser", "reasoning_parser", "enable_auto_tool_choice"} & set(kwargs), profile
    r1 = load_spec(REPO / "deploy/profiles/h800x16-deepseek-v3.yaml", ["model.architecture=deepseek-r1"])
    assert r1.model.frontend_kwargs() == {"reasoning_parser": "deepseek_r1"}


def test_a_profile_can_set_each_parser_and_turn_them_off() -> None:
    spec = load_spec(
        LOCAL,
        [
            "model.parsers.tool_call_parser=deepseek_v3",
            "model.parsers.reasoning_parser=deepseek_r1",
            "model.parsers.enable_auto_tool_choice=false",
            "model.parsers.chat_template=/t.jinja",
        ],
    )
    assert spec.model.frontend_kwargs() == {
        "tool_call_parser": "deepseek_v3",
        "enable_auto_tool_choice": False,
        "reasoning_parser": "deepseek_r1",
        "chat_template": "/t.jinja",
    }
    off = load_spec(REPO / "deploy/profiles/h800x16-deepseek-v3.yaml", ["model.parsers.tool_call_parser=null"])
    assert off.model.frontend_kwargs() == {}


def test_tool_grammar_settings_reach_vllm() -> None:
    """tool_strict_level is a frontend argument; native_tool_format false is vLLM's env switch, on every
    process of the replica (runtime_env)."""
    spec = load_spec(REPO / "deploy/profiles/h800x16-deepseek-v3.yaml", ["model.parsers.tool_strict_level=parameter"])
    cfg = llm_config(spec)
    assert cfg["engine_kwargs"]["tool_strict_level"] == "parameter"
    assert "VLLM_ENFORCE_STRICT_TOOL_CALLING" not in cfg["runtime_env"]["env_vars"]
    local = llm_config(load_spec(LOCAL))
    assert local["runtime_env"]["env_vars"]["VLLM_ENFORCE_STRICT_TOOL_CALLING"] == "0"
    assert local["engine_kwargs"]["structured_outputs_config"] == {
        "backend": "xgrammar",
        "disable_any_whitespace": True,
    }
    with pytest.raises(SpecError, match="model.parsers.tool_strict_level"):
        load_spec(LOCAL, ["model.parsers.tool_strict_level=strictest"])


@pytest.mark.parametrize(
    "sets,fragments",
    [
        (
            ["model.parsers.tool_call_parser=deepseek_v33"],
            [
                "model.parsers.tool_call_parser",
                "did you mean 'deepseek_v3'",
                "DeepSeek's are deepseek_v3, deepseek_v31",
                "vllm/tool_parsers/__init__.py",
            ],
        ),
        (["model.parsers.reasoning_parser=r1"], ["model.parsers.reasoning_parser", "deepseek_r1", "vllm/reasoning"]),
        (
            ["model.parsers.tool_call_parser=null", "model.parsers.enable_auto_tool_choice=true"],
            ["model.parsers.enable_auto_tool_choice", "tool-call parser"],
        ),
        (
            ["engine.extra_args.enable_auto_tool_choice=true"],
            ["owned by the spec", "model.parsers.enable_auto_tool_choice"],
        ),
        (["engine.extra_args.port=9000"], ["owned by the spec", "api.port"]),
        (
            ["engine.extra_args.max_log_lenn=3"],
            [
                "neither a vLLM engine argument nor a frontend argument",
                "'max_log_len'",
                "FrontendArgs",
                "vllm serve --help",
            ],
        ),
    ],
    ids=[
        "tool-parser",
        "reasoning-parser",
        "auto-choice-without-parser",
        "owned-frontend-arg",
        "owned-port",
        "unknown-arg",
    ],
)
def test_bad_parser_and_argument_names_are_refused_briefly(sets: list[str], fragments: list[str]) -> None:
    with pytest.raises(SpecError) as info:
        load_spec(LOCAL, sets)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    assert len(message) < 700, "the error names the closest few, not the whole list"


def test_frontend_arguments_pass_through_extra_args() -> None:
    """The issue's case: a frontend argument in extra_args validates and reaches ray.serve.llm's engine_kwargs."""
    spec = load_spec(LOCAL, ["engine.extra_args.max_log_len=100", "engine.extra_args.tool_parser_plugin=/p.py"])
    kwargs = llm_config(spec)["engine_kwargs"]
    assert kwargs["max_log_len"] == 100 and kwargs["tool_parser_plugin"] == "/p.py"
