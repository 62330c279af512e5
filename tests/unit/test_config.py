"""Spec validation: good profiles pass; each user mistake gets one clear line naming path, value and fix."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest

from dsserve.config import load_spec, parse_spec
from dsserve.errors import SpecError
from tests.conftest import PROFILES


@pytest.mark.parametrize("path", PROFILES, ids=lambda p: p.name)
def test_shipped_profiles_validate(path: Path) -> None:
    spec = load_spec(path)
    assert spec.name == path.stem or spec.name.startswith(path.stem.split("-tp")[0])


def test_defaults_fill_omitted_sections() -> None:
    spec = parse_spec(
        {"name": "x", "model": {"id": "m", "source": "tiny:tiny-deepseek-llm", "architecture": "tiny-deepseek-llm"}}
    )
    assert spec.hardware.accelerator == "cpu"
    assert spec.engine.tensor_parallel_size == 1
    assert spec.api.port == 8000


def _set(data: dict, dotted: str, value: Any) -> dict:
    out = copy.deepcopy(data)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node.setdefault(key, {})
    node[last] = value
    return out


def _delete(data: dict, dotted: str) -> dict:
    out = copy.deepcopy(data)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    del node[last]
    return out


# (id, how to break the default profile, fragments the message must contain)
BAD_INPUTS = [
    (
        "typo-key",
        lambda d: _set(d, "engine.tensor_paralel_size", 2),
        ["engine.tensor_paralel_size", "unknown key", "did you mean 'tensor_parallel_size'"],
    ),
    (
        "negative-tp",
        lambda d: _set(d, "engine.tensor_parallel_size", 0),
        ["engine.tensor_parallel_size", "got 0", "greater than or equal to 1"],
    ),
    (
        "tp-not-int",
        lambda d: _set(d, "engine.tensor_parallel_size", "eight"),
        ["engine.tensor_parallel_size", "'eight'", "whole number"],
    ),
    (
        "unknown-arch",
        lambda d: _set(d, "model.architecture", "deepseek-v4"),
        ["model.architecture", "'deepseek-v4'", "choose one of", "deepseek-v3"],
    ),
    (
        "unknown-accelerator",
        lambda d: _set(d, "hardware.accelerator", "h900"),
        ["hardware.accelerator", "'h900'", "did you mean"],
    ),
    ("missing-model", lambda d: _delete(d, "model"), ["model", "required but missing", "add it"]),
    ("bad-dtype", lambda d: _set(d, "engine.dtype", "bf16"), ["engine.dtype", "'bf16'", "bfloat16"]),
    (
        "gpu-mem-on-cpu",
        lambda d: _set(d, "engine.gpu_memory_utilization", 0.9),
        ["engine.gpu_memory_utilization", "0.9", "GPUs only", "kvcache_space_gib"],
    ),
    (
        "ep-on-dense",
        lambda d: _set(_set(d, "model.architecture", "tiny-deepseek-llm"), "engine.enable_expert_parallel", True),
        ["engine.enable_expert_parallel", "dense model", "set it to false"],
    ),
    (
        "too-long-context",
        lambda d: _set(d, "engine.max_model_len", 1_000_000),
        ["engine.max_model_len", "1000000", "at most 4096"],
    ),
    (
        "autoscaling-min-gt-max",
        lambda d: _set(d, "serving.autoscaling", {"min_replicas": 4, "max_replicas": 2}),
        ["serving.autoscaling", "min_replicas (4) is greater than max_replicas (2)"],
    ),
    ("port-out-of-range", lambda d: _set(d, "api.port", 70000), ["api.port", "70000", "less than or equal to 65535"]),
    (
        "api-key-literal",
        lambda d: _set(d, "api.api_keys_env", "sk-secret-123"),
        ["api.api_keys_env", "*name* of an environment variable"],
    ),
    (
        "owned-engine-arg",
        lambda d: _set(d, "engine.extra_args", {"tensor_parallel_size": 2}),
        ["engine.extra_args", "owned by the spec", "engine.tensor_parallel_size"],
    ),
    (
        "unknown-vllm-arg",
        lambda d: _set(d, "engine.extra_args", {"enforce_eagre": True}),
        ["engine.extra_args", "neither a vLLM engine argument nor a frontend argument", "did you mean 'enforce_eager'"],
    ),
    (
        "batched-below-len",
        lambda d: _set(d, "engine.max_num_batched_tokens", 512),
        ["engine.max_num_batched_tokens", "512", "enable_chunked_prefill"],
    ),
    (
        "gpu-without-gpus",
        lambda d: _set(d, "hardware.accelerator", "h800"),
        ["hardware.gpus_per_node", "got 0", "at least 1 GPU"],
    ),
    (
        "layout-too-big",
        lambda d: _set(
            _set(_set(d, "hardware.accelerator", "h800"), "hardware.gpus_per_node", 8),
            "engine.tensor_parallel_size",
            16,
        ),
        ["engine.tensor_parallel_size", "16 GPUs per replica", "cluster has 8"],
    ),
    ("bad-name", lambda d: _set(d, "name", "My_Deployment"), ["name", "DNS label"]),
    (
        "unknown-tiny",
        lambda d: _set(d, "model.source", "tiny:tiny-deepseek-v9"),
        ["model.source", "unknown tiny model", "tiny-deepseek-v2"],
    ),
    ("slo-percentile", lambda d: _set(d, "slo.percentile", 100), ["slo.percentile", "less than 100"]),
    (
        "dp-on-cpu",
        lambda d: _set(d, "engine.data_parallel_size", 2),
        ["engine.data_parallel_size", "vllm-cpu", "set it to 1"],
    ),
]


@pytest.mark.parametrize("case", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_path_value_and_fix(case, local_cpu_data) -> None:
    _, breaker, fragments = case
    with pytest.raises(SpecError) as info:
        parse_spec(breaker(local_cpu_data), where="local-cpu.yaml")
    message = str(info.value)
    assert message.startswith("local-cpu.yaml: "), message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "Traceback" not in message and "pydantic" not in message.lower()


def test_every_problem_is_reported_once(local_cpu_data) -> None:
    data = _set(_set(local_cpu_data, "api.port", -1), "serving.replicas", 0)
    message = str(pytest.raises(SpecError, parse_spec, data).value)
    lines = message.splitlines()
    assert len(lines) == 2 and any("api.port" in x for x in lines) and any("serving.replicas" in x for x in lines)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nmodel:\n  id: [unclosed\n")
    message = str(pytest.raises(SpecError, load_spec, bad).value)
    assert str(bad) in message and "not valid YAML at line" in message


def test_missing_file_suggests_a_profile(tmp_path: Path) -> None:
    message = str(pytest.raises(SpecError, load_spec, tmp_path / "nope.yaml").value)
    assert "no such file" in message and "deploy/profiles/local-cpu.yaml" in message


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    message = str(pytest.raises(SpecError, load_spec, bad).value)
    assert "top level must be a mapping" in message and "got list" in message


def test_vllm_arg_names_match_installed_vllm() -> None:
    """The ast-read engine argument names equal vLLM's own dataclass fields (the check is not a guess)."""
    import dataclasses

    from vllm.engine.arg_utils import AsyncEngineArgs

    from dsserve.vllm_names import engine_arg_names

    assert engine_arg_names() == {f.name for f in dataclasses.fields(AsyncEngineArgs)}


def test_set_overrides_are_validated_like_the_file(tmp_path: Path) -> None:
    """`dsserve up --set`: YAML-typed values, missing sections created, and the spec's own errors."""
    from tests.conftest import REPO

    profile = REPO / "deploy/profiles/local-cpu.yaml"
    spec = load_spec(
        profile, ["api.port=8123", "engine.extra_args.enforce_eager=false", "serving.autoscaling.max_replicas=2"]
    )
    assert spec.api.port == 8123 and spec.engine.extra_args["enforce_eager"] is False
    assert spec.serving.autoscaling is not None and spec.serving.autoscaling.max_replicas == 2
    with pytest.raises(SpecError, match=r"api.prot: unknown key; did you mean 'port'"):
        load_spec(profile, ["api.prot=1"])
    with pytest.raises(SpecError, match=r"api.port is a value, not a section"):
        load_spec(profile, ["api.port.x=1"])
    with pytest.raises(SpecError, match=r"expected PATH=VALUE"):
        load_spec(profile, ["api.port"])


# --- cross-field rules: one named validator each, reported in definition order ------------------------


def _profile(name: str) -> dict:
    import yaml

    from tests.conftest import REPO

    return yaml.safe_load((REPO / "deploy" / "profiles" / f"{name}.yaml").read_text())


def _gpu_lora(d: dict) -> dict:
    d = _set(d, "model.lora", {"adapters": {"sql": "/models/loras/sql"}, "max_lora_rank": 64})
    return _set(d, "serving.gateway", "ingress")


# (validator, base profile, how to break exactly that rule, the line it must report)
CROSS_FIELD_RULES = [
    (
        "_sim_time_scale_needs_simulated_backend",
        "local-cpu",
        lambda d: _set(d, "engine.sim_time_scale", 50),
        "spec: engine.sim_time_scale: got 50.0; it scales the simulated engine's step times",
    ),
    (
        "_expert_parallel_needs_experts",
        "local-cpu-dense",
        lambda d: _set(d, "engine.enable_expert_parallel", True),
        "spec: engine.enable_expert_parallel: got True; tiny-deepseek-llm is a dense model",
    ),
    (
        "_context_within_architecture",
        "local-cpu",
        lambda d: _set(d, "engine.max_model_len", 1_000_000),
        "spec: engine.max_model_len: got 1000000; tiny-deepseek-v2 supports at most",
    ),
    (
        "_batch_holds_a_whole_prompt",
        "local-cpu",
        lambda d: _set(d, "engine.max_num_batched_tokens", 512),
        "spec: engine.max_num_batched_tokens: got 512; without chunked prefill",
    ),
    (
        "_gpu_nodes_have_gpus",
        "local-cpu",
        lambda d: _set(d, "hardware.accelerator", "h800"),
        "spec: hardware.gpus_per_node: got 0; a h800 deployment needs at least 1 GPU per node",
    ),
    (
        "_replica_fits_the_cluster",
        "h800x8-deepseek-v2-lite",
        lambda d: _set(d, "engine.tensor_parallel_size", 16),
        "spec: engine.tensor_parallel_size: got 16; TP x PP x DP = 16 GPUs per replica but the cluster has 8",
    ),
    (
        "_gpu_memory_utilization_only_on_gpus",
        "local-cpu",
        lambda d: _set(d, "engine.gpu_memory_utilization", 0.9),
        "spec: engine.gpu_memory_utilization: got 0.9; it applies to GPUs only",
    ),
    (
        "_cpu_nodes_have_no_gpus",
        "local-cpu",
        lambda d: _set(d, "hardware.gpus_per_node", 8),
        "spec: hardware.gpus_per_node: got 8; the accelerator is cpu",
    ),
    (
        "_no_data_parallel_on_cpu",
        "local-cpu",
        lambda d: _set(d, "engine.data_parallel_size", 2),
        "spec: engine.data_parallel_size: got 2; vllm-cpu 0.32.0 cannot run data parallel",
    ),
    (
        "_speculation_needs_an_mtp_module",
        "h800x8-deepseek-v2",
        lambda d: _set(d, "engine.speculative", {"method": "mtp"}),
        "spec: engine.speculative.method: got 'mtp'; deepseek-v2 has no multi-token-prediction module",
    ),
    (
        "_no_quantization_on_cpu",
        "local-cpu",
        lambda d: _set(d, "engine.quantization", "fp8"),
        "spec: engine.quantization: got 'fp8'; quantized kernels are GPU-only",
    ),
    (
        "_direct_gateway_needs_haproxy",
        "local-cpu",
        lambda d: _set(d, "serving.proxy", "python"),
        "spec: serving.gateway: got 'direct'; direct mode is HAProxy",
    ),
    (
        "_direct_gateway_has_no_gateway_replicas",
        "local-cpu",
        lambda d: _set(d, "serving.gateway_replicas", 2),
        "spec: serving.gateway_replicas: got 2; in direct mode every engine replica is a gateway replica",
    ),
    (
        "_gateway_keeps_up_with_the_slo",
        "local-cpu",
        lambda d: _set(d, "slo.target_qps", 100000),
        "spec: slo.target_qps: got 100000.0; 100000 req/s needs",
    ),
    (
        "_lora_needs_the_vllm_backend",
        "local-cpu-lora",
        lambda d: _set(d, "engine.backend", "simulated"),
        "spec: model.lora: engine.backend 'simulated' serves no LoRA adapters",
    ),
    (
        "_lora_without_data_parallel",
        "h800x8-deepseek-v2-lite",
        lambda d: _set(_gpu_lora(d), "engine.data_parallel_size", 2),
        "spec: model.lora: ray.serve.llm 2.60 serves data-parallel attention",
    ),
    (
        "_lora_on_cpu_needs_a_dense_model",
        "local-cpu",
        lambda d: _set(_set(d, "model.lora", {"dynamic_dir": "/srv/loras"}), "serving.gateway", "ingress"),
        "spec: model.lora: tiny-deepseek-v2 is a mixture-of-experts model",
    ),
    (
        "_adapters_fit_the_base_model",
        "local-cpu-lora",
        lambda d: _set(d, "model.lora.max_lora_rank", 1),
        "spec: model.lora.max_lora_rank: got 1; adapter sql-adapter has rank 8",
    ),
    (
        "_dynamic_dir_exists_on_cpu",
        "local-cpu-lora",
        lambda d: _set(d, "model.lora.dynamic_dir", "/nonexistent/dsserve-loras"),
        "spec: model.lora.dynamic_dir: got '/nonexistent/dsserve-loras'; no such directory on this machine",
    ),
    (
        "_lora_needs_the_ingress_gateway",
        "local-cpu-lora",
        lambda d: _set(d, "serving.gateway", "direct"),
        "spec: serving.gateway: got 'direct'; LoRA adapters are routed by Serve's model multiplexing",
    ),
    (
        "_disaggregation_connector_is_installed",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "disaggregation.connector", "NixlConector"),
        "spec: disaggregation.connector: got 'NixlConector'; the installed vLLM has no such KV connector; did you "
        "mean 'NixlConnector'",
    ),
    (
        "_disaggregation_needs_the_ingress_gateway",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "serving.gateway", "direct"),
        "spec: serving.gateway: got 'direct'; with disaggregation each request goes to a decode replica",
    ),
    (
        "_disaggregation_buffer_on_the_accelerator",
        "local-cpu-pd",
        lambda d: _set(d, "disaggregation.kv_buffer_device", "cuda"),
        "spec: disaggregation.kv_buffer_device: got 'cuda'; the accelerator is cpu",
    ),
    (
        "_disaggregation_sizes_its_own_pools",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "serving.replicas", 2),
        "spec: serving.replicas: got 2; a disaggregated deployment sizes each pool itself",
    ),
    (
        "_disaggregation_without_lora",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "model.lora", {"adapters": {"sql": "/models/loras/sql"}, "max_lora_rank": 64}),
        "spec: model.lora: Ray 2.60's P/D servers (PDPrefillServer/PDDecodeServer) do not use dsserve's local",
    ),
    (
        "_disaggregation_pools_share_the_kv_format",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "disaggregation.decode.kv_cache_dtype", "auto"),
        "spec: disaggregation.decode.kv_cache_dtype: got 'auto'; the prefill pool stores KV as fp8 and the decode "
        "pool as auto",
    ),
    (
        "_disaggregation_pools_follow_the_engine_rules",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "disaggregation.decode.tensor_parallel_size", 16),
        "spec: disaggregation.decode.tensor_parallel_size: got 16; TP x PP x DP = 16 GPUs per replica but the "
        "cluster has 8",
    ),
    (
        "_disaggregation_pools_fit_the_cluster",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(d, "disaggregation.decode.replicas", 2),
        "spec: disaggregation.decode.replicas: got 2; the prefill and decode pools need 12 GPUs together but the "
        "cluster has 8",
    ),
    (
        "_disaggregation_nvlink_within_a_node",
        "h800x8-deepseek-v2-pd",
        lambda d: _set(_set(d, "hardware.nodes", 2), "disaggregation.prefill.replicas", 2),
        "spec: disaggregation.transport: got 'nvlink'; both pools' engines do not fit one node of 8 GPUs",
    ),
]


@pytest.mark.parametrize("rule", CROSS_FIELD_RULES, ids=[r[0] for r in CROSS_FIELD_RULES])
def test_each_cross_field_rule_reports_its_path_value_and_fix(rule) -> None:
    _, profile, breaker, expected = rule
    parse_spec(_profile(profile))  # the base is valid: the breaker alone trips the rule
    with pytest.raises(SpecError) as info:
        parse_spec(breaker(_profile(profile)))
    assert str(info.value).startswith(expected), str(info.value)
    assert len(str(info.value).splitlines()) == 1


def test_every_cross_field_rule_is_tested() -> None:
    from dsserve.config import DeploymentSpec

    assert [r[0] for r in CROSS_FIELD_RULES] == list(DeploymentSpec.__pydantic_decorators__.model_validators)


def test_the_first_broken_rule_in_order_is_the_one_reported(local_cpu_data) -> None:
    # quantization and data parallel are both refused on cpu; data parallel is checked first
    data = _set(_set(local_cpu_data, "engine.quantization", "fp8"), "engine.data_parallel_size", 2)
    assert str(pytest.raises(SpecError, parse_spec, data).value).startswith("spec: engine.data_parallel_size")
    data = _set(_set(local_cpu_data, "engine.sim_time_scale", 50), "engine.max_model_len", 1_000_000)
    assert str(pytest.raises(SpecError, parse_spec, data).value).startswith("spec: engine.sim_time_scale")
