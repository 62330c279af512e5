"""Prefill/decode disaggregation from the spec: the pools, the rendered P/D app, the plan, and the simulated
handoff (scheduler and metrics). The served path is tests/e2e/test_disaggregation.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from dsserve.app import import_path, kv_transfer_config, llm_configs_of, serving_args
from dsserve.cli import main
from dsserve.config import load_spec
from dsserve.sim import SIM_CONFIG_KEY, SIM_KV_TRANSFER_KEY
from dsserve.sim.scheduler import Scheduler, SimRequest
from tests.conftest import REPO

PROFILES = REPO / "deploy" / "profiles"
PD_PROFILES = ["h800x8-deepseek-v2-pd", "h800x32-deepseek-v3-pd"]


def test_a_pool_is_the_engine_section_with_the_pools_fields_over_it() -> None:
    spec = load_spec(PROFILES / "h800x32-deepseek-v3-pd.yaml")
    prefill, decode = spec.pool("prefill"), spec.pool("decode")
    assert (prefill.engine.tensor_parallel_size, prefill.engine.pipeline_parallel_size) == (8, 2)
    assert (decode.engine.tensor_parallel_size, decode.engine.data_parallel_size) == (1, 16)
    assert decode.engine.max_num_seqs == 64 and prefill.engine.max_num_seqs == 256
    assert prefill.engine.speculative == decode.engine.speculative == spec.engine.speculative
    assert prefill.disaggregation is None and decode.serving.replicas == 1


def test_the_pd_app_renders_through_rays_pd_builder_with_the_connector_on_both_pools() -> None:
    spec = load_spec(PROFILES / "h800x8-deepseek-v2-pd.yaml")
    args = serving_args(spec)
    assert import_path(spec) == "dsserve.app:build_pd_openai_app"
    assert set(args) >= {"prefill_config", "decode_config", "ingress_cls_config", "ingress_deployment_config"}
    expected = {"kv_connector": "NixlConnector", "kv_role": "kv_both", "kv_buffer_device": "cuda"}
    for cfg in llm_configs_of(args):
        assert cfg["engine_kwargs"]["kv_transfer_config"] == expected == kv_transfer_config(spec)
        assert cfg["placement_group_config"] == {"bundles": [{"GPU": 1}] * 4, "strategy": "STRICT_PACK"}
    # Ray's own schema takes the args as they are
    from ray.llm._internal.serve.serving_patterns.prefill_decode.builder import PDServingArgs

    pd = PDServingArgs.model_validate(args)
    assert pd.prefill_config.model_id == pd.decode_config.model_id == "deepseek-v2-chat"


def test_connector_settings_reach_vllm_verbatim(tmp_path) -> None:
    spec = load_spec(
        PROFILES / "h800x8-deepseek-v2-pd.yaml",
        overrides=[
            "disaggregation.connector=ExampleConnector",
            "disaggregation.connector_config={shared_storage_path: /mnt/kv}",
            "disaggregation.decode.extra_args={max_logprobs: 5}",
        ],
    )
    args = serving_args(spec)
    kv = args["decode_config"]["engine_kwargs"]["kv_transfer_config"]
    assert kv["kv_connector"] == "ExampleConnector"
    assert kv["kv_connector_extra_config"] == {"shared_storage_path": "/mnt/kv"}
    assert args["decode_config"]["engine_kwargs"]["max_logprobs"] == 5
    assert "max_logprobs" not in args["prefill_config"]["engine_kwargs"]


def test_a_simulated_decode_pool_carries_the_modelled_transfer() -> None:
    spec = load_spec(PROFILES / "sim-h800x32-deepseek-v3-pd.yaml")
    args = serving_args(spec)
    decode, prefill = args["decode_config"], args["prefill_config"]
    transfer = decode["experimental_configs"][SIM_KV_TRANSFER_KEY]
    assert transfer["link"].startswith("scale-out fabric") and transfer["bandwidth"] == 40e9
    assert SIM_KV_TRANSFER_KEY not in prefill["experimental_configs"]
    # each pool simulates its own layout; DP ranks are replicas
    assert decode["experimental_configs"][SIM_CONFIG_KEY]["engine"]["data_parallel_size"] == 16
    assert decode["deployment_config"]["num_replicas"] == 16 and prefill["deployment_config"]["num_replicas"] == 1
    assert decode["engine_kwargs"]["kv_transfer_config"]["kv_connector"] == "NixlConnector"


@pytest.mark.parametrize("name", PD_PROFILES)
def test_plan_json_has_both_pools_the_transfer_and_the_mtp_assumption(name: str, capsys) -> None:
    assert main(["plan", str(PROFILES / f"{name}.yaml"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True
    assert data["prefill"]["fits"] and data["decode"]["fits"]
    assert data["prefill"]["qps"] > 0 and data["decode"]["qps"] > 0
    kv = data["kv_transfer"]
    assert kv["mean_prompt_s"] > kv["fixed_latency_s"] > 0
    assert kv["mean_prompt_bytes"] == pytest.approx(512 * kv["bytes_per_token_busiest_gpu"])
    parts = data["disaggregation"]["ttft_parts_s"]
    assert data["disaggregation"]["ttft_s"] == pytest.approx(sum(parts.values()))
    if name.endswith("v3-pd"):
        assert data["speculative"]["acceptance_rate_assumed"] == 0.85
        assert "scale-out" in kv["link"]
    else:
        assert data["speculative"] is None and kv["link"].startswith("NVLink")


def test_plan_text_prints_both_pools_and_the_transfer(capsys) -> None:
    main(["plan", str(PROFILES / "h800x8-deepseek-v2-pd.yaml")])
    out = capsys.readouterr().out
    assert "Prefill/decode disaggregation" in out
    assert "KV transfer: NVLink" in out and "best split of these 8 GPUs: 1P1D" in out


def test_validate_names_both_pools(capsys) -> None:
    assert main(["validate", str(PROFILES / "h800x32-deepseek-v3-pd.yaml")]) == 0
    out = capsys.readouterr().out
    assert "prefill TP8 PP2 DP1 +EP x 1, decode TP1 PP1 DP16 +EP x 1, KV over NixlConnector" in out


def test_the_transport_decides_the_link() -> None:
    from dsserve.planner.disagg import transfer_for_spec

    path = PROFILES / "h800x8-deepseek-v2-pd.yaml"
    auto = transfer_for_spec(load_spec(path, overrides=["disaggregation.transport=auto"]))
    rdma = transfer_for_spec(load_spec(path, overrides=["disaggregation.transport=rdma"]))
    tcp = transfer_for_spec(load_spec(path, overrides=["disaggregation.transport=tcp"]))
    assert auto.link.startswith("NVLink")  # both TP4 engines fit the one node
    assert auto.bandwidth > rdma.bandwidth > tcp.bandwidth
    assert "TCP" in tcp.link


# -- the simulated decode side: remote KV in the scheduler ----------------------------------------------------


def _scheduler() -> Scheduler:
    return Scheduler(max_num_seqs=8, max_num_batched_tokens=64, kv_blocks=100, block_tokens=16)


def test_a_decode_handoff_computes_only_the_last_prompt_token() -> None:
    sched = _scheduler()
    req = SimRequest("r", prompt_tokens=100, max_tokens=3, arrival=0.0, external_tokens=99)
    sched.add(req)
    step = sched.schedule(0.0)
    assert step is not None and step.work == ((req, 1),) and step.prefill_tokens == 1
    assert req.blocks == 7  # 100 tokens' KV held: 99 received + 1 computed
    result = sched.complete(step, 0.1)
    assert result.emitted == (req,) and req.prefill_computed == 1
    # an ordinary request computes its whole prompt
    plain = SimRequest("p", prompt_tokens=100, max_tokens=1, arrival=0.0)
    sched2 = _scheduler()
    sched2.add(plain)
    first = sched2.schedule(0.0)
    assert first is not None and first.prefill_tokens == 64


def test_a_preempted_handoff_recomputes_its_prompt_locally() -> None:
    sched = Scheduler(max_num_seqs=8, max_num_batched_tokens=256, kv_blocks=8, block_tokens=16)
    old = SimRequest("old", prompt_tokens=64, max_tokens=100, arrival=0.0)
    new = SimRequest("new", prompt_tokens=48, max_tokens=100, arrival=0.0, external_tokens=47)
    sched.add(old)
    sched.add(new)
    step = sched.schedule(0.0)
    assert step is not None and dict(step.work) == {old: 64, new: 1}
    sched.complete(step, 0.1)
    t = 0.1
    while new.preemptions == 0:  # decode until the cache runs out and the newest is preempted
        step = sched.schedule(t)
        assert step is not None
        t += 0.1
        sched.complete(step, t)
    assert new.num_computed == 0 and new.status == "waiting"
    sched.finish(old, "stop", t)  # room again
    step = sched.schedule(t)
    assert step is not None and dict(step.work)[new] == new.num_tokens  # its whole prompt and output, locally


# -- vLLM's KV-transfer metric names ---------------------------------------------------------------------------


def nixl_metric_names() -> set[str]:
    """The metric names vLLM's NIXL connector defines (vllm/.../nixl/stats.py NixlPromMetrics), from its source."""
    import ast
    from pathlib import Path

    import vllm

    source = Path(vllm.__file__).parent / "distributed/kv_transfer/kv_connector/v1/nixl/stats.py"
    return {
        kw.value.value
        for node in ast.walk(ast.parse(source.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        for kw in node.keywords
        if kw.arg == "name" and isinstance(kw.value, ast.Constant) and str(kw.value.value).startswith("vllm:nixl_")
    }


def test_the_simulated_transfer_records_into_vllms_own_nixl_metrics() -> None:
    """Through vLLM's NixlPromMetrics, bound here to a private prometheus registry to read the values back."""
    from functools import partial

    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

    from dsserve.sim.kv_transfer import TransferMetrics

    registry = CollectorRegistry()
    types = {t: partial(t, registry=registry) for t in (Counter, Gauge, Histogram)}
    metrics = TransferMetrics("m", {"kv_connector": "NixlConnector"}, metric_types=types)
    metrics.record(post_s=0.001, transfer_s=0.0005, nbytes=1e6, descriptors=120)
    metrics.record(post_s=0.001, transfer_s=0.002, nbytes=3e6, descriptors=360)
    labels = {"model_name": "m", "engine": "0"}
    value = registry.get_sample_value
    assert value("vllm:nixl_xfer_time_seconds_count", labels) == 2
    assert value("vllm:nixl_xfer_time_seconds_sum", labels) == pytest.approx(0.0025)
    assert value("vllm:nixl_bytes_transferred_sum", labels) == 4e6
    assert value("vllm:nixl_num_descriptors_sum", labels) == 480
    assert value("vllm:nixl_post_time_seconds_count", labels) == 2
    exported = {m.name for m in registry.collect()}
    assert {n.removeprefix("vllm:") for n in nixl_metric_names()} >= {e.removeprefix("vllm:") for e in exported}


# -- the simulated engines of both pools, driven directly ---------------------------------------------------------


def test_the_simulated_pools_hand_a_request_over_as_rays_orchestrator_drives_them() -> None:
    """Prefill answers with NIXL-shaped kv_transfer_params; decode waits the modelled transfer, then generates.

    ExampleConnector here: its Ray backend (DefaultConnectorBackend) sets up nothing outside a Serve replica,
    where NIXL's needs the replica context; the handoff the engines model is the same."""
    import asyncio
    import time

    from ray.llm._internal.serve.core.configs.openai_api_models import ChatCompletionRequest
    from ray.serve.llm import LLMConfig

    from dsserve.sim.engine import SimulatedEngine

    spec = load_spec(
        PROFILES / "sim-h800x8-deepseek-v2-pd.yaml",
        overrides=["disaggregation.connector=ExampleConnector", "observability.log_engine_metrics=false"],
    )
    args = serving_args(spec)
    prefill = SimulatedEngine(LLMConfig.model_validate(args["prefill_config"]))
    decode = SimulatedEngine(LLMConfig.model_validate(args["decode_config"]))
    assert prefill.transfer is None and decode.transfer is not None
    body = {"model": "deepseek-v2-chat", "messages": [{"role": "user", "content": "hello " * 400}]}

    async def go() -> tuple[Any, Any, float]:
        await prefill.start()
        await decode.start()
        first = ChatCompletionRequest(
            **body, max_tokens=1, kv_transfer_params={"do_remote_decode": True, "do_remote_prefill": False}
        )
        (handed,) = [x async for x in prefill.chat(first)]
        second = ChatCompletionRequest(**body, max_tokens=4, kv_transfer_params=handed.kv_transfer_params)
        t0 = time.monotonic()
        (out,) = [x async for x in decode.chat(second)]
        return handed, out, time.monotonic() - t0

    handed, out, took = asyncio.run(go())
    params = handed.kv_transfer_params
    assert params["do_remote_prefill"] is True and params["do_remote_decode"] is False
    assert params["remote_num_tokens"] == handed.usage.prompt_tokens and len(params["remote_block_ids"]) >= 1
    assert out.usage.completion_tokens == 4 and out.kv_transfer_params is None
    assert decode.transfer is not None
    assert took >= decode.transfer.seconds(out.usage.prompt_tokens - 1)


def test_both_pools_run_dsserves_replica_fixes_and_rays_builder_is_left_as_it_was() -> None:
    """Ray's P/D builder ignores server_cls; dsserve.serving.pd puts the fixes on its classes while it builds."""
    from ray.llm._internal.serve.serving_patterns.prefill_decode import builder, pd_server

    from dsserve.app import build_app
    from dsserve.serving.server import ReplicaFixes

    app = build_app(load_spec(PROFILES / "h800x8-deepseek-v2-pd.yaml"))
    decode = app._bound_deployment.init_kwargs["llm_deployments"]["deepseek-v2-chat"]._bound_deployment
    prefill = decode.init_kwargs["prefill_server"]._bound_deployment
    for deployment, upstream in ((decode, pd_server.PDDecodeServer), (prefill, pd_server.PDPrefillServer)):
        cls = deployment.func_or_class
        assert issubclass(cls, ReplicaFixes) and issubclass(cls, upstream), cls
    assert (decode.name, prefill.name) == ("Decode:deepseek-v2-chat", "Prefill:deepseek-v2-chat")
    assert builder.PDDecodeServer is pd_server.PDDecodeServer  # restored after the build
    assert builder.DPPDPrefillServer is pd_server.DPPDPrefillServer
