"""From a deployment spec to a Ray Serve application, on ``ray.serve.llm``.

Two steps, kept apart so that `dsserve up` and `serve deploy` run the very same thing:

1. :func:`serving_args` turns a :class:`DeploymentSpec` into plain data shaped like ray.serve.llm's
   ``LLMServingArgs`` (``llm_configs``, ``ingress_cls_config``, ...). This is what the rendered Ray Serve
   YAML carries under ``args:``.
2. :func:`build_openai_app` is the import path that YAML names. It resolves dsserve-only model sources
   (``tiny:<name>``, built offline on first use) to a directory, then hands everything to
   ``ray.serve.llm.build_openai_app``.

The stack owns only the knobs it must reason about (parallel sizes, placement, replicas, queues);
other engine arguments pass through verbatim, as in ray.serve.llm itself.
"""

from __future__ import annotations

import copy
from typing import Any

from dsserve.catalog import ACCELERATORS
from dsserve.config import TINY_SOURCE_PREFIX, DeploymentSpec

__all__ = [
    "INGRESS_CLS",
    "admission_limit",
    "build_app",
    "build_dp_openai_app",
    "build_openai_app",
    "import_path",
    "ray_cpus_needed",
    "serving_args",
    "uses_data_parallel",
]

INGRESS_CLS = "dsserve.ingress:DsserveIngress"


def _engine_kwargs(spec: DeploymentSpec) -> dict[str, Any]:
    eng = spec.engine
    kwargs: dict[str, Any] = {
        "tensor_parallel_size": eng.tensor_parallel_size,
        "pipeline_parallel_size": eng.pipeline_parallel_size,
        **({"data_parallel_size": eng.data_parallel_size} if eng.data_parallel_size > 1 else {}),
        "max_model_len": eng.max_model_len,
        "dtype": eng.dtype,
        "kv_cache_dtype": eng.kv_cache_dtype,
        "max_num_seqs": eng.max_num_seqs,
    }
    optional = {
        "enable_expert_parallel": eng.enable_expert_parallel or None,
        "quantization": eng.quantization,
        "gpu_memory_utilization": eng.gpu_memory_utilization,
        "max_num_batched_tokens": eng.max_num_batched_tokens,
        "enable_prefix_caching": eng.enable_prefix_caching,
    }
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    kwargs.update(copy.deepcopy(eng.extra_args))
    return kwargs


def _env_vars(spec: DeploymentSpec) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1"} if _is_local_source(spec.model.source) else {}
    if not spec.hardware.is_gpu:
        env["VLLM_CPU_KVCACHE_SPACE"] = f"{spec.engine.cpu.kvcache_space_gib:g}"
        ranks = spec.engine.tensor_parallel_size * spec.engine.pipeline_parallel_size
        bind = spec.engine.cpu.omp_threads_bind
        if bind == "auto" and ranks > 1:
            # One core per rank; vLLM's own "auto" refuses TP>1 on a single NUMA node.
            bind = "|".join(str(i) for i in range(ranks))
        if bind != "auto":
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
    return env


def _is_local_source(source: str) -> bool:
    return source.startswith((TINY_SOURCE_PREFIX, "/", "./", "../", "~"))


def _placement(spec: DeploymentSpec) -> dict[str, Any]:
    eng, hw = spec.engine, spec.hardware
    ranks = eng.tensor_parallel_size * eng.pipeline_parallel_size
    if hw.is_gpu:
        fits_one_node = ranks <= hw.gpus_per_node
        return {
            "bundles": [{"GPU": 1} for _ in range(ranks)],
            # STRICT_PACK keeps a TP group on one node's NVLink; only layouts that cannot fit may spill.
            "strategy": "STRICT_PACK" if fits_one_node else "PACK",
        }
    return {"bundles": [{"CPU": 1} for _ in range(ranks)], "strategy": "STRICT_PACK"}


def _deployment_config(spec: DeploymentSpec) -> dict[str, Any]:
    sv = spec.serving
    cfg: dict[str, Any] = {
        "max_ongoing_requests": sv.max_ongoing_requests,
        "max_queued_requests": sv.max_queued_requests,
    }
    if sv.autoscaling:
        cfg["autoscaling_config"] = {
            "min_replicas": sv.autoscaling.min_replicas,
            "max_replicas": sv.autoscaling.max_replicas,
            "target_ongoing_requests": sv.autoscaling.target_ongoing_requests,
        }
    else:
        cfg["num_replicas"] = sv.replicas
    if sv.router == "prefix_cache_affinity":
        cfg["request_router_config"] = {
            "request_router_class": "ray.serve.llm.request_router:PrefixCacheAffinityRouter"
        }
    return cfg


def _llm_config(spec: DeploymentSpec) -> dict[str, Any]:
    accel = ACCELERATORS[spec.hardware.accelerator]
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model.id, "model_source": spec.model.source},
        "accelerator_config": {"kind": "gpu" if accel.is_gpu else "cpu"},
        "placement_group_config": _placement(spec),
        "engine_kwargs": _engine_kwargs(spec),
        "deployment_config": _deployment_config(spec),
        "runtime_env": {"env_vars": _env_vars(spec)},
        "log_engine_metrics": spec.observability.log_engine_metrics,
        "experimental_configs": {"stream_batching_interval_ms": spec.serving.stream_batching_interval_ms},
    }
    if accel.ray_accelerator_type:
        cfg["accelerator_type"] = accel.ray_accelerator_type
    return cfg


def uses_data_parallel(spec: DeploymentSpec) -> bool:
    """DP attention (data_parallel_size > 1) runs on ray.serve.llm's DP builder, whose args differ."""
    return spec.engine.data_parallel_size > 1


def import_path(spec: DeploymentSpec) -> str:
    """The Serve import path for this spec's application."""
    return "dsserve.app:build_dp_openai_app" if uses_data_parallel(spec) else "dsserve.app:build_openai_app"


def serving_args(spec: DeploymentSpec) -> dict[str, Any]:
    """Plain-data builder args for this spec: what `serve deploy` YAML and `dsserve up` both use.

    Shaped like ray.serve.llm's ``LLMServingArgs`` (``llm_configs``), or for data-parallel attention like
    its ``DPOpenAiServingArgs`` (one ``llm_config``; each Serve replica is one DP rank, and
    ``num_replicas`` counts DP groups, gang-scheduled so a failed rank restarts its group).
    """
    llm = {"llm_config": _llm_config(spec)} if uses_data_parallel(spec) else {"llm_configs": [_llm_config(spec)]}
    return {
        **llm,
        "ingress_cls_config": {
            "ingress_cls": INGRESS_CLS,
            "ingress_extra_kwargs": {
                "api_keys_env": spec.api.api_keys_env,
                "max_inflight": admission_limit(spec),
                "max_body_bytes": spec.api.max_body_bytes,
            },
        },
        "ingress_deployment_config": {
            # ray.serve.llm defaults both to 1e9, i.e. no admission limit at the ingress at all.
            "max_ongoing_requests": max(2 * spec.serving.max_ongoing_requests, 256),
        },
    }


def admission_limit(spec: DeploymentSpec) -> int | None:
    """Requests the ingress admits at once: every replica's engine slots plus the deployment's queue.

    Past it a request gets 503 + Retry-After at once instead of waiting in an unbounded Python queue.
    None (unbounded) when the spec asks for an unbounded queue (max_queued_requests -1).
    """
    sv = spec.serving
    if sv.max_queued_requests < 0:
        return None
    replicas = sv.autoscaling.max_replicas if sv.autoscaling else sv.replicas
    engines = replicas * spec.engine.data_parallel_size  # each DP rank is a Serve replica with its own slots
    return engines * sv.max_ongoing_requests + sv.max_queued_requests


def ray_cpus_needed(spec: DeploymentSpec) -> int:
    """Logical CPUs a local Ray runtime must advertise so every replica's bundles and the ingress fit.

    Logical CPUs are scheduling tokens, not cores: the replica actor's own CPU merges into bundle 0, and
    the ingress, controller and proxy need room beside it.
    """
    eng, sv = spec.engine, spec.serving
    replicas = (sv.autoscaling.max_replicas if sv.autoscaling else sv.replicas) * eng.data_parallel_size
    per_replica = eng.tensor_parallel_size * eng.pipeline_parallel_size + 1
    return replicas * per_replica + 2


def _resolve_tiny_sources(llm_configs: list[Any]) -> None:
    """Replace ``tiny:<name>`` model sources with the built directory, building it if needed."""
    from dsserve.tiny_models import build_tiny_model

    for cfg in llm_configs:
        if not isinstance(cfg, dict):
            continue
        loading = cfg.get("model_loading_config", {})
        source = loading.get("model_source", "")
        if isinstance(source, str) and source.startswith(TINY_SOURCE_PREFIX):
            path, _ = build_tiny_model(source[len(TINY_SOURCE_PREFIX):])
            loading["model_source"] = str(path)


def build_openai_app(args: dict[str, Any]) -> Any:
    """Ray Serve import path for dsserve apps: resolve ``tiny:`` sources, then ray.serve.llm builds.

    Named in rendered YAML as ``dsserve.app:build_openai_app``; its args are :func:`serving_args`.
    """
    from ray.serve.llm import build_openai_app as upstream_build_openai_app

    args = copy.deepcopy(args)
    _resolve_tiny_sources(args.get("llm_configs", []))
    return upstream_build_openai_app(args)


def build_app(spec: DeploymentSpec) -> Any:
    """The Serve application for a spec, through the same builder its rendered YAML names."""
    builder = build_dp_openai_app if uses_data_parallel(spec) else build_openai_app
    return builder(serving_args(spec))


def build_dp_openai_app(args: dict[str, Any]) -> Any:
    """The data-parallel-attention twin of :func:`build_openai_app`, on ray.serve.llm's DP builder."""
    from ray.serve.llm import build_dp_openai_app as upstream_build_dp_openai_app

    args = copy.deepcopy(args)
    _resolve_tiny_sources([args.get("llm_config")])
    return upstream_build_dp_openai_app(args)
