"""Tiny models: offline, deterministic, the right architecture, and a no-op the second time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dsserve.errors import ModelBuildError
from dsserve.tiny_models import TINY_MODELS, build_tiny_model, tiny_model_path


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {name: build_tiny_model(name, root)[0] for name in TINY_MODELS}


def _file_hashes(path: Path) -> dict[str, str]:
    return json.loads((path / "dsserve-tiny-model.json").read_text())["files"]


def test_second_build_is_a_noop(built: dict[str, Path]) -> None:
    for name, path in built.items():
        before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
        again, built_now = build_tiny_model(name, path.parent.parent)
        assert again == path and built_now is False
        assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before


def test_builds_are_byte_identical(built: dict[str, Path], tmp_path: Path) -> None:
    for name, path in built.items():
        other, built_now = build_tiny_model(name, tmp_path)
        assert built_now and other.name == path.name
        assert _file_hashes(other) == _file_hashes(path)
        assert "model.safetensors" in _file_hashes(path)


def test_deepseek_v2_has_real_mla_dims_and_moe(built: dict[str, Path]) -> None:
    cfg = json.loads((built["tiny-deepseek-v2"] / "config.json").read_text())
    assert cfg["architectures"] == ["DeepseekV2ForCausalLM"] and cfg["model_type"] == "deepseek_v2"
    assert (cfg["kv_lora_rank"], cfg["qk_rope_head_dim"]) == (512, 64)
    assert (cfg["n_routed_experts"], cfg["n_shared_experts"], cfg["num_experts_per_tok"]) == (8, 1, 2)
    assert cfg["dtype"] == "bfloat16"


def test_deepseek_llm_is_dense_gqa(built: dict[str, Path]) -> None:
    cfg = json.loads((built["tiny-deepseek-llm"] / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"]
    assert cfg["num_attention_heads"] == 4 and cfg["num_key_value_heads"] == 2
    assert "n_routed_experts" not in cfg


def test_tokenizer_has_bos_eos_and_chat_template(built: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(built["tiny-deepseek-v2"])
    assert tok.bos_token == "<|begin_of_sentence|>" and tok.eos_token == "<|end_of_sentence|>"
    text = tok.apply_chat_template([{"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<|begin_of_sentence|>User: Hi\n\nAssistant:"
    ids = tok("Hello, world")["input_ids"]
    assert tok.decode(ids) == "Hello, world"  # byte-level BPE round-trips


def test_cache_dir_follows_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DSSERVE_CACHE_DIR", str(tmp_path))
    assert tiny_model_path("tiny-deepseek-llm").parent == tmp_path / "models"


def test_unknown_name_is_a_clear_error() -> None:
    with pytest.raises(ModelBuildError, match="unknown tiny model 'tiny-gpt'; choose one of: tiny-deepseek-llm"):
        build_tiny_model("tiny-gpt")


def _weather_call_text(tok) -> str:  # tok: a transformers tokenizer
    """The assistant turn the chat template writes for one call: the text vLLM's parser reads."""
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    call = {"id": "a", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    text = tok.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": "Sure.", "tool_calls": [call]}],
        tools=tools,
        tokenize=False,
    )
    assert "- get_weather: " in text  # the tools are listed for the model
    return text.split("Assistant: ", 1)[1].removesuffix(tok.eos_token)


def test_tool_call_tokens_are_single_added_tokens_that_decoding_keeps(built: dict[str, Path]) -> None:
    from transformers import AutoTokenizer

    from dsserve.tiny_models import TOOL_TOKENS

    tok = AutoTokenizer.from_pretrained(built["tiny-deepseek-v2"])
    assert len(tok) == TINY_MODELS["tiny-deepseek-v2"].model_vocab_size
    for token in TOOL_TOKENS:
        ids = tok(token, add_special_tokens=False)["input_ids"]
        assert len(ids) == 1 and tok.decode(ids, skip_special_tokens=True) == token, token
    plain = AutoTokenizer.from_pretrained(built["tiny-deepseek-llm"])
    assert TOOL_TOKENS[0] not in plain.get_vocab()  # the dense model's chat format has no tool calls


def test_vllms_deepseek_v3_parser_reads_the_tiny_models_calls(built: dict[str, Path]) -> None:
    """The parser the default profile runs (model.parsers auto -> deepseek_v3), on a known token sequence,
    whole and token by token as a stream."""
    from transformers import AutoTokenizer
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.tool_parsers.deepseekv3_tool_parser import DeepSeekV3ToolParser

    tok = AutoTokenizer.from_pretrained(built["tiny-deepseek-v2"])
    text = _weather_call_text(tok)
    request = ChatCompletionRequest(
        model="m",
        messages=[{"role": "user", "content": "x"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    )
    whole = DeepSeekV3ToolParser(tok).extract_tool_calls(text, request)
    assert whole.tools_called and whole.content == "Sure."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in whole.tool_calls] == [
        ("get_weather", {"city": "Paris"})
    ]

    parser, ids = DeepSeekV3ToolParser(tok), tok(text, add_special_tokens=False)["input_ids"]
    names, args, previous = [], "", ""
    for i in range(len(ids)):
        current = tok.decode(ids[: i + 1])
        delta = parser.extract_tool_calls_streaming(
            previous, current, current[len(previous) :], ids[:i], ids[: i + 1], ids[i : i + 1], request
        )
        previous = current
        for call in (delta.tool_calls if delta is not None else None) or []:
            if call.function is not None and call.function.name:
                names.append(call.function.name)
            args += (call.function.arguments or "") if call.function is not None else ""
    assert names == ["get_weather"] and json.loads(args) == {"city": "Paris"}
