"""Ray Serve YAML: generated from the profiles, in sync with serve/, and accepted by ray.serve.llm itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dsserve.app import serving_args
from dsserve.config import load_spec
from dsserve.render.serve_config import render_serve_config, serve_config
from tests.conftest import PROFILES, REPO


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_serve_dir_is_in_sync_with_profiles(profile: Path) -> None:
    committed = REPO / "serve" / profile.name
    assert committed.is_file(), f"serve/{profile.name} is missing; run `make render`"
    rendered = render_serve_config(load_spec(profile), source=f"deploy/profiles/{profile.name}")
    assert committed.read_text() == rendered, f"serve/{profile.name} drifted from its profile; run `make render`"


def test_no_stray_serve_configs() -> None:
    assert {p.name for p in (REPO / "serve").glob("*.yaml")} == {p.name for p in PROFILES}


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_ray_accepts_the_rendered_config(profile: Path) -> None:
    """Ray Serve's own schema and ray.serve.llm's LLMServingArgs validate what we render."""
    from ray.serve.llm import LLMServingArgs
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(render_serve_config(load_spec(profile), source="x"))
    ServeDeploySchema.model_validate(doc)
    args = doc["applications"][0]["args"]
    spec = load_spec(profile)
    if spec.engine.data_parallel_size > 1:
        from ray.llm._internal.serve.serving_patterns.data_parallel.builder import DPOpenAiServingArgs

        cfg = DPOpenAiServingArgs.model_validate(args).llm_config
    else:
        cfg = LLMServingArgs.model_validate(args).llm_configs[0]
    assert cfg.model_id == spec.model.id
    assert cfg.engine_kwargs["tensor_parallel_size"] == spec.engine.tensor_parallel_size


def test_cpu_profile_uses_cpu_bundles_only() -> None:
    cfg = serving_args(load_spec(REPO / "deploy/profiles/local-cpu.yaml"))["llm_configs"][0]
    assert cfg["accelerator_config"] == {"kind": "cpu"}
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}]
    assert "accelerator_type" not in cfg
    assert cfg["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_tp2_on_cpu_binds_one_core_per_rank(local_cpu_data: dict) -> None:
    from dsserve.config import parse_spec

    local_cpu_data["engine"]["tensor_parallel_size"] = 2
    cfg = serving_args(parse_spec(local_cpu_data))["llm_configs"][0]
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}, {"CPU": 1}]
    assert cfg["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"


def test_gpu_profile_packs_tp_group_on_one_node() -> None:
    spec = load_spec(REPO / "deploy/profiles/h800-deepseek-llm-67b-tp8.yaml")
    cfg = serving_args(spec)["llm_configs"][0]
    assert cfg["placement_group_config"] == {"bundles": [{"GPU": 1}] * 8, "strategy": "STRICT_PACK"}
    assert cfg["accelerator_config"] == {"kind": "gpu"}
    assert "accelerator_type" not in cfg  # Ray has no H800 accelerator constant
    assert cfg["engine_kwargs"]["gpu_memory_utilization"] == 0.9
    assert "VLLM_CPU_KVCACHE_SPACE" not in cfg["runtime_env"]["env_vars"]


def test_import_path_is_dsserve_builder() -> None:
    doc = serve_config(load_spec(REPO / "deploy/profiles/local-cpu.yaml"))
    app = doc["applications"][0]
    assert app["import_path"] == "dsserve.app:build_openai_app"
    assert app["args"]["ingress_cls_config"]["ingress_cls"] == "dsserve.ingress:DsserveIngress"


def test_dp_attention_uses_ray_dp_builder_with_one_replica_per_rank() -> None:
    """DP8 + EP renders for ray.serve.llm's DP builder; Ray's own DPServer turns it into 8 gang replicas."""
    from ray.llm._internal.serve.serving_patterns.data_parallel.builder import DPOpenAiServingArgs
    from ray.serve.llm.deployment import DPServer

    spec = load_spec(REPO / "deploy/profiles/h800-deepseek-v2-lite-dp8-ep.yaml")
    doc = serve_config(spec)
    app = doc["applications"][0]
    assert app["import_path"] == "dsserve.app:build_dp_openai_app"
    cfg = DPOpenAiServingArgs.model_validate(app["args"]).llm_config
    assert cfg.engine_kwargs["data_parallel_size"] == 8 and cfg.engine_kwargs["enable_expert_parallel"] is True
    options = DPServer.get_deployment_options(cfg)
    assert options["num_replicas"] == 8  # one Serve replica per DP rank
    assert options["gang_scheduling_config"].gang_size == 8
    assert options["placement_group_bundles"] == [{"GPU": 1, "CPU": 1}]  # one GPU per rank (TP1), replica CPU merged
    # admission counts every rank's engine slots
    assert app["args"]["ingress_cls_config"]["ingress_extra_kwargs"]["max_inflight"] == 8 * 256 + 2048

