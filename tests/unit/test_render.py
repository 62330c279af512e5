"""Ray Serve YAML: generated from the profiles, in sync with serve/, and accepted by ray.serve.llm itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from dsserve.app import import_path, llm_configs_of, serving_args
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


def rendered_llm_config(app: dict) -> Any:
    """The LLMConfig of a rendered application, validated the way its builder validates it."""
    from ray.llm._internal.serve.serving_patterns.data_parallel.builder import DPOpenAiServingArgs
    from ray.llm._internal.serve.serving_patterns.prefill_decode.builder import PDServingArgs
    from ray.serve.llm import LLMConfig, LLMServingArgs

    args = app["args"]
    if app["import_path"] == "dsserve.app:build_pd_openai_app":  # the decode pool: the one the ingress calls
        return PDServingArgs.model_validate(args).decode_config
    if app["import_path"] == "dsserve.app:build_direct_app":
        return LLMConfig.model_validate(args["llm_config"])
    if app["import_path"] == "dsserve.app:build_dp_openai_app":
        return DPOpenAiServingArgs.model_validate(args).llm_config
    return LLMServingArgs.model_validate(args).llm_configs[0]


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_ray_accepts_the_rendered_config(profile: Path) -> None:
    """Ray Serve's own schema and ray.serve.llm's config models validate what we render."""
    from ray.serve.schema import ServeDeploySchema

    doc = yaml.safe_load(render_serve_config(load_spec(profile), source="x"))
    ServeDeploySchema.model_validate(doc)
    spec = load_spec(profile)
    app = doc["applications"][0]
    assert app["import_path"] == import_path(spec)
    cfg = rendered_llm_config(app)
    assert cfg.model_id == spec.model.id
    engine = spec.pool("decode").engine if spec.disaggregation else spec.engine
    if spec.engine.backend == "simulated":  # the modelled layout travels to dsserve/sim, not to vLLM
        from dsserve.sim import SIM_CONFIG_KEY

        modelled = cfg.experimental_configs[SIM_CONFIG_KEY]["engine"]
        assert modelled.get("tensor_parallel_size", 1) == engine.tensor_parallel_size
    else:
        assert cfg.engine_kwargs["tensor_parallel_size"] == engine.tensor_parallel_size


def test_cpu_profile_uses_cpu_bundles_only() -> None:
    cfg = llm_configs_of(serving_args(load_spec(REPO / "deploy/profiles/local-cpu.yaml")))[0]
    assert cfg["accelerator_config"] == {"kind": "cpu"}
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}]
    assert "accelerator_type" not in cfg
    assert cfg["runtime_env"]["env_vars"]["VLLM_CPU_KVCACHE_SPACE"] == "1"


def test_tp2_on_cpu_binds_one_core_per_rank(local_cpu_data: dict) -> None:
    from dsserve.config import parse_spec

    local_cpu_data["engine"]["tensor_parallel_size"] = 2
    cfg = llm_configs_of(serving_args(parse_spec(local_cpu_data)))[0]
    assert cfg["placement_group_config"]["bundles"] == [{"CPU": 1}, {"CPU": 1}]
    assert cfg["runtime_env"]["env_vars"]["VLLM_CPU_OMP_THREADS_BIND"] == "0|1"


def test_gpu_profile_packs_tp_group_on_one_node() -> None:
    spec = load_spec(REPO / "deploy/profiles/h800x8-deepseek-llm-67b-tp8.yaml")
    cfg = llm_configs_of(serving_args(spec))[0]
    assert cfg["placement_group_config"] == {"bundles": [{"GPU": 1}] * 8, "strategy": "STRICT_PACK"}
    assert cfg["accelerator_config"] == {"kind": "gpu"}
    assert "accelerator_type" not in cfg  # Ray has no H800 accelerator constant
    assert cfg["engine_kwargs"]["gpu_memory_utilization"] == 0.9
    assert "VLLM_CPU_KVCACHE_SPACE" not in cfg["runtime_env"]["env_vars"]


def test_import_path_is_dsserve_builder() -> None:
    """Direct mode (the default): dsserve's builder on ray.serve.llm's direct streaming, dsserve's replica class.
    Ingress mode (LoRA): ray.serve.llm's OpenAI builder with dsserve's ingress class."""
    app = serve_config(load_spec(REPO / "deploy/profiles/local-cpu.yaml"))["applications"][0]
    assert app["import_path"] == "dsserve.app:build_direct_app"
    assert app["args"]["llm_config"]["server_cls"] == "dsserve.serving.direct:LLMServer"
    assert app["args"]["prefix_router"] is False and app["args"]["data_parallel"] is False
    lora = serve_config(load_spec(REPO / "deploy/profiles/local-cpu-lora.yaml"))["applications"][0]
    assert lora["import_path"] == "dsserve.app:build_openai_app"
    assert lora["args"]["ingress_cls_config"]["ingress_cls"] == "dsserve.serving.ingress:DsserveIngress"
    assert lora["args"]["ingress_deployment_config"]["num_replicas"] >= 1


def test_direct_mode_lets_the_pipeline_refuse_before_serve_queues() -> None:
    """Serve's own refusal is plain text: the engine deployment takes every request and the pipeline admits."""
    spec = load_spec(REPO / "deploy/profiles/local-cpu.yaml")
    cfg = serve_config(spec)["applications"][0]["args"]["llm_config"]
    dep = cfg["deployment_config"]
    assert dep["max_queued_requests"] == dep["max_ongoing_requests"], "a burst must not meet Serve's own limit"
    assert dep["backpressure_config"] == {"status_code": 503, "retry_after_s": 5}
    assert dep["max_ongoing_requests"] > cfg["experimental_configs"]["dsserve_api"]["max_inflight"]


@pytest.mark.parametrize("profile", [p for p in PROFILES if "lora" not in p.name], ids=lambda p: p.name)
def test_direct_app_builds_on_ray_serve_llm(profile: Path) -> None:
    """The builder the YAML names turns the args into Serve's application graph, without a cluster."""
    from dsserve.app import build_app

    spec = load_spec(profile)
    app = build_app(spec)
    deployment = app._bound_deployment
    if spec.disaggregation is not None:  # Ray's P/D graph: ingress -> decode pool -> prefill pool
        decode = deployment.init_kwargs["llm_deployments"][spec.model.id]._bound_deployment
        assert deployment.name == "DsserveIngress" and decode.name.startswith("Decode:")
        assert decode.init_kwargs["prefill_server"]._bound_deployment.name.startswith("Prefill:")
        return
    assert deployment.name.startswith(("LLMServer:", "DPServer:")), deployment.name
    if spec.serving.router == "prefix_cache_affinity":
        assert app._ingress_request_router is not None, "prefix affinity needs Serve's ingress request router"
    else:
        assert getattr(app, "_ingress_request_router", None) is None


def test_dp_attention_uses_ray_dp_builder_with_one_replica_per_rank() -> None:
    """DP8 + EP renders for ray.serve.llm's DP builder; Ray's own DPServer turns it into 8 gang replicas."""
    from ray.llm._internal.serve.serving_patterns.data_parallel.builder import DPOpenAiServingArgs
    from ray.serve.llm.deployment import DPServer

    spec = load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml")
    doc = serve_config(spec)
    app = doc["applications"][0]
    assert app["import_path"] == "dsserve.app:build_direct_app" and app["args"]["data_parallel"] is True
    cfg = rendered_llm_config(app)
    assert cfg.engine_kwargs["data_parallel_size"] == 8 and cfg.engine_kwargs["enable_expert_parallel"] is True
    options = DPServer.get_deployment_options(cfg)
    assert options["num_replicas"] == 8  # one Serve replica per DP rank
    assert options["gang_scheduling_config"].gang_size == 8
    assert options["placement_group_bundles"] == [{"GPU": 1, "CPU": 1}]  # one GPU per rank (TP1), replica CPU merged
    # admission counts every rank's engine slots; each rank's pipeline takes an eighth
    settings = cfg.experimental_configs["dsserve_api"]
    assert settings["max_inflight"] == 8 * 256 + 2048 and settings["replicas"] == 8
    ingress = serve_config(
        load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml", overrides=["serving.gateway=ingress"])
    )["applications"][0]
    assert ingress["import_path"] == "dsserve.app:build_dp_openai_app"
    assert DPOpenAiServingArgs.model_validate(ingress["args"]).llm_config.model_id == spec.model.id


# ---------------------------------------------------------------------------------------------- multi-node

TWO_NODE_TP_PP = REPO / "deploy/profiles/h800x16-deepseek-v3.yaml"
TWO_NODE_DP = REPO / "deploy/profiles/h800x16-deepseek-v3-dp16-ep.yaml"


def test_two_node_tp8_pp2_places_16_gpu_bundles_with_pack() -> None:
    """TP8 x PP2 on 2 x 8 GPUs: one {GPU: 1} bundle per rank, PACK (STRICT_PACK cannot span nodes)."""

    spec = load_spec(TWO_NODE_TP_PP)
    assert (spec.hardware.nodes, spec.hardware.gpus_per_node) == (2, 8)
    doc = yaml.safe_load(render_serve_config(spec, source="x"))
    cfg = rendered_llm_config(doc["applications"][0])
    assert cfg.placement_group_config == {"bundles": [{"GPU": 1}] * 16, "strategy": "PACK"}
    assert cfg.engine_kwargs["tensor_parallel_size"] == 8 and cfg.engine_kwargs["pipeline_parallel_size"] == 2
    # Ray's own reading of it: the placement group the Serve replica asks for is those 16 bundles, PACK
    # (the replica actor's CPU merged into bundle 0).
    from ray.serve.llm.deployment import LLMServer

    options = LLMServer.get_deployment_options(cfg)
    assert options["placement_group_strategy"] == "PACK"
    assert len(options["placement_group_bundles"]) == 16
    assert all(b.get("GPU") == 1 for b in options["placement_group_bundles"])


def test_one_node_layouts_stay_strict_pack(local_cpu_data: dict) -> None:

    for name in ("h800x8-deepseek-llm-67b.yaml", "h800x8-deepseek-v2.yaml", "h800x8-deepseek-v3-awq.yaml"):
        pg = llm_configs_of(serving_args(load_spec(REPO / "deploy/profiles" / name)))[0]["placement_group_config"]
        assert pg["strategy"] == "STRICT_PACK" and len(pg["bundles"]) <= 8
    # A two-node spec whose group still fits one node keeps it on one node.
    spec = load_spec(TWO_NODE_TP_PP, overrides=["engine.pipeline_parallel_size=1"])
    assert llm_configs_of(serving_args(spec))[0]["placement_group_config"]["strategy"] == "STRICT_PACK"


def test_two_node_serve_config_states_the_cluster_it_needs() -> None:
    text = render_serve_config(load_spec(TWO_NODE_TP_PP), source="deploy/profiles/h800x16-deepseek-v3.yaml")
    header = " ".join(line[1:].strip() for line in text.splitlines() if line.startswith("#"))
    assert "Ray cluster: 2 nodes x 8 H800 GPUs" in header
    assert "1 replica(s) x TP8 x PP2 = 16 GPUs" in header
    assert "16 {GPU: 1} bundles over 2 nodes, PACK" in header
    assert "each TP8 group stays on one node" in header
    assert "accelerator_type: none (Ray has no H800 constant)" in header
    # A GPU kind Ray knows is requested by accelerator_type, and the header says so.
    h100 = load_spec(TWO_NODE_TP_PP, overrides=["hardware.accelerator=h100"])
    text = render_serve_config(h100, source="x")
    assert "accelerator_type:H100" in text and "accelerator_type: H100" in text
    # CPU specs need no cluster: no topology lines.
    assert "Ray cluster:" not in render_serve_config(load_spec(REPO / "deploy/profiles/local-cpu.yaml"), source="x")


def test_two_node_dp16_renders_16_single_gpu_ranks_over_both_nodes() -> None:
    from ray.serve.llm.deployment import DPServer

    spec = load_spec(TWO_NODE_DP)
    app = serve_config(spec)["applications"][0]
    assert app["import_path"] == "dsserve.app:build_direct_app" and app["args"]["data_parallel"] is True
    cfg = rendered_llm_config(app)
    options = DPServer.get_deployment_options(cfg)
    assert options["num_replicas"] == 16 and options["gang_scheduling_config"].gang_size == 16
    assert options["placement_group_bundles"] == [{"GPU": 1, "CPU": 1}]
    text = render_serve_config(spec, source="x")
    assert "Ray cluster: 2 nodes x 8 H800 GPUs" in text and "DP16" in text


def test_two_node_helm_values_size_two_worker_pods() -> None:
    """Worker groups for two 8-GPU nodes, for TP8 x PP2 and for DP16 alike; one node is refused."""
    from dsserve.errors import SpecError
    from dsserve.render.helm_values import helm_values, worker_nodes_for

    for profile in (TWO_NODE_TP_PP, TWO_NODE_DP):
        spec = load_spec(profile)
        assert worker_nodes_for(spec, 1) == 2
        worker = helm_values(spec, source="x")["worker"]
        assert (worker["gpusPerPod"], worker["replicas"], worker["minReplicas"], worker["maxReplicas"]) == (8, 2, 2, 2)
        with pytest.raises(SpecError, match=r"serving.replicas: got 2; 2 replica\(s\) of 16 GPU\(s\) need 4 node"):
            helm_values(load_spec(profile, overrides=["serving.replicas=2"]), source="x")
    # DP8 on one node still needs exactly one.
    assert worker_nodes_for(load_spec(REPO / "deploy/profiles/h800x8-deepseek-v2-lite-dp8-ep.yaml"), 1) == 1
