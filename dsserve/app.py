"""From a deployment spec to a Ray Serve application, on ``ray.serve.llm``.

Two steps, kept apart so that `dsserve up` and `serve deploy` run the very same thing:

1. :func:`serving_args` turns a :class:`DeploymentSpec` into plain data: in direct mode
   (``serving.gateway: direct``) one LLM config and the routing choice; in ingress mode data shaped like
   ray.serve.llm's ``LLMServingArgs`` (``llm_configs``, ``ingress_cls_config``, ...). This is what the
   rendered Ray Serve YAML carries under ``args:``.
2. The import path that YAML names (:func:`import_path`): :func:`build_direct_app` or
   :func:`build_openai_app` / :func:`build_dp_openai_app`. They resolve dsserve-only model sources
   (``tiny:<name>``, built offline on first use) and LoRA adapters (``tiny-lora:<recipe>``) to
   directories, then build on ray.serve.llm's own builders.

The request pipeline's settings (:func:`pipeline_settings`: keys, limits, admission) travel with the app:
to the ingress replicas as ``ingress_extra_kwargs``, or to the engine replicas in the LLM config's
``experimental_configs`` (direct mode, where each engine replica runs the pipeline).

The stack owns only the knobs it must reason about (parallel sizes, placement, replicas, queues);
other engine arguments pass through verbatim, as in ray.serve.llm itself.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from dsserve.catalog import ACCELERATORS
from dsserve.config import DeploymentSpec, Role
from dsserve.lora import LORA_CONFIG_KEY
from dsserve.model_source import TINY_SOURCE_KEY, AdapterSource, ModelSource
from dsserve.planner.drain import graceful_shutdown_timeout_s
from dsserve.serving.tree_bounds import eviction_kwargs
from dsserve.sim import SIM_KV_TRANSFER_KEY
from dsserve.sim.serving import SIM_BUNDLE, is_simulated, simulated_kv_transfer, simulated_llm_config

__all__ = [
    "INGRESS_CLS",
    "admission_limit",
    "build_app",
    "build_direct_app",
    "build_dp_openai_app",
    "build_openai_app",
    "build_pd_openai_app",
    "engine_replicas",
    "gateway_replicas",
    "import_path",
    "kv_transfer_config",
    "llm_config",
    "llm_configs_of",
    "pipeline_settings",
    "pool_llm_config",
    "ray_cpus_needed",
    "serving_args",
    "uses_data_parallel",
]

INGRESS_CLS = "dsserve.serving.ingress:DsserveIngress"
#: dsserve's LLMServer (LLMConfig.server_cls): first streamed chunk at once, local LoRA adapters
SERVER_CLS = "dsserve.serving.server:LLMServer"
#: dsserve's LLMServer in direct mode: vLLM's own OpenAI app behind the request pipeline
DIRECT_SERVER_CLS = "dsserve.serving.direct:LLMServer"
#: the prefix-affinity router (dsserve/serving/routing.py), named, not imported: importing Ray Serve here would
#: freeze its settings (read from the environment at import) before `dsserve up` has set them
ROUTER_CLASS = "dsserve.serving.routing:NonBlockingPrefixCacheAffinityRouter"
#: where the pipeline's settings ride to the engine replicas in direct mode (dsserve/serving/direct.py)
PIPELINE_CONFIG_KEY = "dsserve_api"
#: Serve's own queue in front of the pipeline, in direct mode: room for the requests the pipeline refuses
DIRECT_HEADROOM = 64
#: Retry-After of Serve's refusals while a direct-mode deployment has no engine replica (replacement: ~40-70 s
#: for the tiny CPU model, minutes for a large checkpoint)
DIRECT_RETRY_AFTER_S = 5


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
    if eng.speculative is not None:
        # acceptance_rate is the planner's assumption, not vLLM's
        kwargs["speculative_config"] = {
            "method": eng.speculative.method,
            "num_speculative_tokens": eng.speculative.num_speculative_tokens,
        }
    lora = spec.model.lora
    if lora is not None:
        kwargs.update(
            enable_lora=True,
            max_loras=lora.max_loras,
            max_lora_rank=lora.max_lora_rank,
            max_cpu_loras=lora.max_adapters_per_replica,
        )
    # tool-call and reasoning parsers, chat template: vLLM frontend arguments, which ray.serve.llm also takes in
    # engine_kwargs (VLLMEngineConfig.from_llm_config in ray/llm/_internal/serve/engines/vllm/vllm_models.py
    # splits them out by vLLM's FrontendArgs fields)
    kwargs.update(spec.model.frontend_kwargs())
    kwargs.update(copy.deepcopy(eng.extra_args))
    if spec.api.max_tokens is not None:
        # vLLM's own cap for a request that names no max_tokens (the pipeline refuses one that asks for more):
        # OpenAIServingChat/Completion take min(context left, override_generation_config["max_new_tokens"])
        # (vllm/entrypoints/serve/utils/api_utils.py get_max_tokens)
        override = dict(kwargs.get("override_generation_config") or {})
        override.setdefault("max_new_tokens", spec.api.max_tokens)
        kwargs["override_generation_config"] = override
    return kwargs


def _env_vars(spec: DeploymentSpec) -> dict[str, str]:
    env = {"HF_HUB_OFFLINE": "1"} if spec.model.source.is_local else {}
    # vLLM's own prompts-per-request cap (CompletionRequest's validator; 1024 by default) matches the pipeline's
    env["VLLM_MAX_COMPLETION_PROMPTS"] = str(spec.api.prompts_cap)
    if not spec.model.parsers.native_tool_format:
        # read when vLLM's tool parsers are imported (ToolParser.__init_subclass__ in
        # vllm/tool_parsers/abstract_tool_parser.py): required/named calls then take the JSON-schema grammar
        env["VLLM_ENFORCE_STRICT_TOOL_CALLING"] = "0"
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


def _placement(spec: DeploymentSpec) -> dict[str, Any]:
    """The placement group of one engine replica (one DP rank with DP attention): a bundle per vLLM rank.

    vLLM's Ray executor starts one worker per ``{"GPU": 1}`` bundle, so there is one bundle per TP x PP
    rank (16 for TP8 x PP2); bundles of 8 GPUs would give 8-GPU workers, which vLLM does not use.

    - The group fits one node: ``STRICT_PACK``, all ranks on one node, every collective on NVLink.
    - It does not (``hardware.nodes`` > 1, e.g. TP8 x PP2 on 2 x 8 GPUs): ``PACK``. ``STRICT_PACK`` cannot
      span nodes, and ``SPREAD``/``STRICT_SPREAD`` would scatter a TP group over nodes. ``PACK`` fills one
      node before it uses the next, so on idle 8-GPU nodes the 16 bundles land 8 + 8. vLLM orders its
      workers by node and gives consecutive ranks to a TP group (rank = pp_rank x TP + tp_rank), so each
      TP group stays inside one node and only pipeline-stage boundaries cross the network. Ray cannot pin
      bundle i to node j, so on a fragmented cluster ``PACK`` is best effort: a TP group can straddle two
      nodes and still run, with its all-reduces over the network. Give such a replica whole, free nodes.
    """
    eng, hw = spec.engine, spec.hardware
    ranks = eng.tensor_parallel_size * eng.pipeline_parallel_size
    if hw.is_gpu:
        fits_one_node = ranks <= hw.gpus_per_node
        return {
            "bundles": [{"GPU": 1} for _ in range(ranks)],
            "strategy": "STRICT_PACK" if fits_one_node else "PACK",
        }
    return {"bundles": [{"CPU": 1} for _ in range(ranks)], "strategy": "STRICT_PACK"}


def _deployment_config(spec: DeploymentSpec) -> dict[str, Any]:
    sv = spec.serving
    if sv.gateway == "direct":
        # The engine replica is the ingress: Serve must hand every request to the pipeline, which admits
        # this replica's share and answers the rest 503 (Serve's own refusal is plain text, before any app
        # code runs), so Serve's slots and queue are the share plus headroom. Admitted requests past
        # max_num_seqs wait in vLLM's scheduler. Serve counts a direct request as queued from its arrival
        # until its task starts, so a burst briefly queues many at once: a smaller queue limit refuses
        # requests the pipeline would admit (found at 64 concurrent streams). The same limit bounds the
        # other path: while no engine replica runs (the only one died and is being replaced), HAProxy sends
        # requests to Serve's proxy on the head node, whose router holds that many for the replacement and
        # refuses the rest at once with 503 + Retry-After.
        share = _direct_admission_share(spec)
        slots = (share if share is not None else 65536) + DIRECT_HEADROOM
        cfg: dict[str, Any] = {
            "max_ongoing_requests": slots,
            "max_queued_requests": slots,
            "backpressure_config": {"status_code": 503, "retry_after_s": DIRECT_RETRY_AFTER_S},
        }
    else:
        # The ingress's admission gate bounds what reaches this deployment (every replica's slots plus the
        # queue). Serve's router counts a request as queued until it is assigned, so under a burst its own
        # queue limit refuses requests the gate admitted (2 of 4 at serving.max_queued_requests 2, e2e);
        # its limit is therefore the whole admission limit, which the gate never lets it reach.
        limit = admission_limit(spec)
        cfg = {
            "max_ongoing_requests": sv.max_ongoing_requests,
            "max_queued_requests": -1 if limit is None else limit,
        }
    if sv.autoscaling:
        cfg["autoscaling_config"] = {
            "min_replicas": sv.autoscaling.min_replicas,
            "max_replicas": sv.autoscaling.max_replicas,
            "target_ongoing_requests": sv.autoscaling.target_ongoing_requests,
        }
    else:
        cfg["num_replicas"] = sv.replicas
    # Ray's default (20 s) would cut longer generations on SIGTERM, redeploy and downscale (planner/drain.py)
    cfg["graceful_shutdown_timeout_s"] = graceful_shutdown_timeout_s(spec)
    if sv.router == "prefix_cache_affinity":
        cfg["request_router_config"] = {
            "request_router_class": ROUTER_CLASS,  # upstream's router without its blocking ray.get calls
            # upstream keeps every prompt forever (do_eviction False): bounded from the spec
            "request_router_kwargs": eviction_kwargs(sv.prefix_tree_max_chars, engine_replicas(spec, at_most=True)),
        }
    return cfg


def _llm_config(spec: DeploymentSpec) -> dict[str, Any]:
    accel = ACCELERATORS[spec.hardware.accelerator]
    cfg: dict[str, Any] = {
        "model_loading_config": {"model_id": spec.model.id, "model_source": str(spec.model.source)},
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
    # dsserve's replica class: in direct mode vLLM's app behind the request pipeline (dsserve/serving/direct.py);
    # otherwise the first streamed chunk flushed at once and local LoRA adapters (dsserve/serving/server.py).
    # DP attention's builder uses its own DPServer and ignores server_cls.
    if spec.serving.gateway == "direct":
        cfg["server_cls"] = DIRECT_SERVER_CLS
        cfg["experimental_configs"][PIPELINE_CONFIG_KEY] = pipeline_settings(spec)
    else:
        cfg["server_cls"] = SERVER_CLS
    lora = spec.model.lora
    if lora is not None:
        # Adapters ride on Ray Serve model multiplexing (`model: <id>:<adapter>`), which lora_config turns
        # on; they load from local directories through dsserve's server class (dsserve/serving/lora_server.py says
        # why upstream's cloud-only loader cannot), which reads the adapter table from experimental_configs.
        cfg["lora_config"] = {"max_num_adapters_per_replica": lora.max_adapters_per_replica}
        cfg["experimental_configs"][LORA_CONFIG_KEY] = {
            "adapters": {name: str(source) for name, source in sorted(lora.adapters.items())},
            "dynamic_dir": lora.dynamic_dir,
        }
    return cfg


def uses_data_parallel(spec: DeploymentSpec) -> bool:
    """DP attention (data_parallel_size > 1) runs on ray.serve.llm's DP builder, whose args differ.

    A simulated engine models DP ranks as plain replicas (dsserve/sim/serving.py), so it never does.
    """
    return spec.engine.data_parallel_size > 1 and not is_simulated(spec)


def llm_config(spec: DeploymentSpec) -> dict[str, Any]:
    """The ray.serve.llm LLMConfig (as plain data) of this spec's engine, real or simulated."""
    cfg = _llm_config(spec)
    return simulated_llm_config(cfg, spec) if is_simulated(spec) else cfg


def kv_transfer_config(spec: DeploymentSpec) -> dict[str, Any]:
    """vLLM's ``kv_transfer_config`` for both pools of a disaggregated spec.

    ``kv_both`` on each side, as Ray's P/D examples configure NIXL: the connector's role in a request comes
    from the ``kv_transfer_params`` the orchestrator stamps on it (``do_remote_decode`` for prefill,
    ``do_remote_prefill`` for decode; ray/llm/_internal/serve/engines/vllm/kv_transfer/base.py).
    """
    dis = spec.disaggregation
    if dis is None:
        raise ValueError(f"{spec.name} is not disaggregated")
    return {
        "kv_connector": dis.connector,
        "kv_role": "kv_both",
        "kv_buffer_device": dis.kv_buffer_device or ("cuda" if spec.hardware.is_gpu else "cpu"),
        **({"kv_connector_extra_config": copy.deepcopy(dis.connector_config)} if dis.connector_config else {}),
    }


def pool_llm_config(spec: DeploymentSpec, role: Role) -> dict[str, Any]:
    """The LLMConfig of one pool of a disaggregated spec: its own layout, replicas and the KV connector."""
    pool = spec.pool(role)
    cfg = _llm_config(pool)
    cfg["engine_kwargs"]["kv_transfer_config"] = kv_transfer_config(spec)
    # one drain for the whole deployment (the decode pool's): a prefill replica holds a request's first step
    cfg["deployment_config"]["graceful_shutdown_timeout_s"] = graceful_shutdown_timeout_s(spec)
    if not is_simulated(spec):
        return cfg
    sim = simulated_llm_config(cfg, pool)
    if role == "decode":
        sim["experimental_configs"][SIM_KV_TRANSFER_KEY] = simulated_kv_transfer(spec)
    return sim


def import_path(spec: DeploymentSpec) -> str:
    """The Serve import path for this spec's application."""
    if spec.disaggregation is not None:
        return "dsserve.app:build_pd_openai_app"
    if spec.serving.gateway == "direct":
        return "dsserve.app:build_direct_app"
    return "dsserve.app:build_dp_openai_app" if uses_data_parallel(spec) else "dsserve.app:build_openai_app"


def serving_args(spec: DeploymentSpec) -> dict[str, Any]:
    """Plain-data builder args for this spec: what `serve deploy` YAML and `dsserve up` both use.

    Direct mode: ``{"llm_config", "data_parallel", "prefix_router"[, "router_replicas"]}`` for
    :func:`build_direct_app`.
    Ingress mode: shaped like ray.serve.llm's ``LLMServingArgs`` (``llm_configs``), or for data-parallel
    attention like its ``DPOpenAiServingArgs`` (one ``llm_config``; each Serve replica is one DP rank, and
    ``num_replicas`` counts DP groups, gang-scheduled so a failed rank restarts its group).
    Disaggregated: shaped like its ``PDServingArgs`` (``prefill_config``, ``decode_config``).
    """
    if spec.serving.gateway == "direct":
        args: dict[str, Any] = {
            "llm_config": llm_config(spec),
            "data_parallel": uses_data_parallel(spec),
            "prefix_router": spec.serving.router == "prefix_cache_affinity",
        }
        if args["prefix_router"]:
            from dsserve.planner.gateway import plan_gateway

            args["router_replicas"] = plan_gateway(spec).router_replicas
        return args
    llm: dict[str, Any]
    if spec.disaggregation is not None:
        llm = {"prefill_config": pool_llm_config(spec, "prefill"), "decode_config": pool_llm_config(spec, "decode")}
    elif uses_data_parallel(spec):
        llm = {"llm_config": llm_config(spec)}
    else:
        llm = {"llm_configs": [llm_config(spec)]}
    return {
        **llm,
        "ingress_cls_config": {
            "ingress_cls": INGRESS_CLS,
            "ingress_extra_kwargs": pipeline_settings(spec),
        },
        "ingress_deployment_config": {
            # ray.serve.llm defaults this to 1e9. Ours lets every request the admission gate may admit reach
            # the gate (which answers 503 + Retry-After past it) instead of queueing unseen in Serve's router.
            "max_ongoing_requests": ingress_max_ongoing(spec),
            "num_replicas": gateway_replicas(spec),
            # the ingress holds a stream as long as the engine replica does
            "graceful_shutdown_timeout_s": graceful_shutdown_timeout_s(spec),
        },
    }


def llm_configs_of(args: dict[str, Any]) -> list[dict[str, Any]]:
    """The LLM configs in builder args of any shape (direct, ingress, data-parallel, disaggregated)."""
    if "decode_config" in args:
        return [args["prefill_config"], args["decode_config"]]
    return list(args.get("llm_configs") or [args["llm_config"]])


def pipeline_settings(spec: DeploymentSpec) -> dict[str, Any]:
    """The request pipeline's settings (dsserve/serving/pipeline.py ``PipelineSettings``) as plain data.

    Limits are the whole deployment's; each replica running the pipeline enforces its share.
    """
    return {
        "api_keys_env": spec.api.api_keys_env,
        "api_keys_file": spec.api.api_keys_file,
        "rate_limit": spec.api.rate_limit.model_dump() if spec.api.rate_limit else None,
        "max_inflight": admission_limit(spec),
        "max_body_bytes": spec.api.max_body_bytes,
        "max_n": spec.api.max_n,
        "max_prompts": spec.api.prompts_cap,
        "max_tokens": spec.api.max_tokens,
        "max_messages": spec.api.max_messages,
        "max_tools": spec.api.max_tools,
        "max_schema_bytes": spec.api.max_schema_bytes,
        "max_schema_depth": spec.api.max_schema_depth,
        "trust_forwarded_for": spec.serving.proxy == "haproxy",
        "replicas": engine_replicas(spec) if spec.serving.gateway == "direct" else gateway_replicas(spec),
    }


def engine_replicas(spec: DeploymentSpec, *, at_most: bool = False) -> int:
    """Serve replicas of the engine deployment: one per replica, or per DP rank with DP attention.

    With autoscaling: the minimum (the count a deployment starts from), or the maximum with ``at_most``.
    Disaggregated: the decode pool's, the replicas requests are admitted to (each calls a prefill replica).
    """
    if spec.disaggregation is not None:
        return engine_replicas(spec.pool("decode"), at_most=at_most)
    sv = spec.serving
    if sv.autoscaling:
        replicas = sv.autoscaling.max_replicas if at_most else max(1, sv.autoscaling.min_replicas)
    else:
        replicas = sv.replicas
    return replicas * spec.engine.data_parallel_size


def gateway_replicas(spec: DeploymentSpec) -> int:
    """Replicas that terminate HTTP and run the pipeline: the engine replicas in direct mode, else the
    ingress replicas (``serving.gateway_replicas``, or as many as the planner says the target QPS needs)."""
    if spec.serving.gateway == "direct":
        return engine_replicas(spec)
    if spec.serving.gateway_replicas is not None:
        return spec.serving.gateway_replicas
    from dsserve.planner.gateway import plan_gateway

    return plan_gateway(spec).replicas


def _direct_admission_share(spec: DeploymentSpec) -> int | None:
    """One engine replica's share of the admission limit (all replicas running: the smallest share)."""
    limit = admission_limit(spec)
    if limit is None:
        return None
    return -(-limit // engine_replicas(spec, at_most=True))


def ingress_max_ongoing(spec: DeploymentSpec) -> int:
    """Requests one ingress replica takes at once: its admission share plus room to answer the overflow."""
    limit = admission_limit(spec)
    share = None if limit is None else -(-limit // gateway_replicas(spec))
    return max(256, (share if share is not None else 65536) + 64)


def admission_limit(spec: DeploymentSpec) -> int | None:
    """Sequences the deployment admits at once: every engine replica's slots plus the deployment's queue.

    Past it a request gets 503 + Retry-After at once instead of waiting in an unbounded Python queue.
    None (unbounded) when the spec asks for an unbounded queue (max_queued_requests -1). The replicas
    running the request pipeline each admit their share (dsserve/serving/shares.py).
    """
    sv = spec.serving
    if sv.max_queued_requests < 0:
        return None
    # each DP rank is a Serve replica with its own slots; disaggregated, the decode pool's replicas
    return engine_replicas(spec, at_most=True) * sv.max_ongoing_requests + sv.max_queued_requests


def ray_cpus_needed(spec: DeploymentSpec) -> int:
    """Logical CPUs a local Ray runtime must advertise so every replica's bundles and the ingress fit.

    Logical CPUs are scheduling tokens, not cores: the replica actor's own CPU merges into bundle 0, and
    the ingress, controller and proxy need room beside it.
    """
    ingress = 0 if spec.serving.gateway == "direct" else gateway_replicas(spec)
    pools = [spec.pool("prefill"), spec.pool("decode")] if spec.disaggregation is not None else [spec]
    return sum(_engine_cpus(pool) for pool in pools) + 2 + ingress


def _engine_cpus(spec: DeploymentSpec) -> int:
    eng = spec.engine
    per_replica = eng.tensor_parallel_size * eng.pipeline_parallel_size + 1
    if is_simulated(spec):
        per_replica = int(SIM_BUNDLE["CPU"]) + 1
    return engine_replicas(spec, at_most=True) * per_replica


def _resolve_tiny_sources(llm_configs: list[Any]) -> None:
    """Replace ``tiny:<name>`` model sources with the built directory, building it if needed.

    The builder runs where Serve's controller runs (the head); the replica may start on another node with
    its own disk (another pod). So the ``tiny:`` text also travels in ``experimental_configs``, and the
    replica builds the model again where it is missing (:func:`dsserve.serving.server.ensure_local_model`).
    """
    for cfg in llm_configs:
        if not isinstance(cfg, dict):
            continue
        loading = cfg.get("model_loading_config", {})
        source = loading.get("model_source", "")
        if isinstance(source, str) and source and (parsed := ModelSource.parse(source)).is_tiny:
            loading["model_source"] = str(parsed.resolve())
            cfg.setdefault("experimental_configs", {})[TINY_SOURCE_KEY] = source


def _resolve_lora_adapters(args: dict[str, Any]) -> None:
    """Resolve each model's LoRA adapter table to directories, and hand the tables to the ingress.

    ``tiny-lora:<recipe>`` adapters are built on first use, like ``tiny:`` models; ``~`` is expanded. The
    ingress gets ``lora_adapters`` ({base model id: table}) to list adapters on /v1/models and to answer
    an unknown adapter with an OpenAI 404 before anything is routed.
    """
    tables: dict[str, Any] = {}
    for cfg in args.get("llm_configs", []):
        if not isinstance(cfg, dict):
            continue
        table = (cfg.get("experimental_configs") or {}).get(LORA_CONFIG_KEY)
        if not table:
            continue
        adapters, tiny = {}, {}
        for name, source in (table.get("adapters") or {}).items():
            parsed = AdapterSource.parse(source)
            adapters[name] = str(parsed.resolve())
            if parsed.is_tiny:  # a replica on another disk builds its own copy (serving/lora_server.py)
                tiny[name] = source
        table["adapters"] = adapters
        if tiny:
            table["tiny_sources"] = tiny
        if table.get("dynamic_dir"):
            table["dynamic_dir"] = os.path.expanduser(table["dynamic_dir"])
        tables[cfg["model_loading_config"]["model_id"]] = copy.deepcopy(table)
    if tables:
        ingress = args.setdefault("ingress_cls_config", {})
        ingress.setdefault("ingress_extra_kwargs", {})["lora_adapters"] = tables


def build_openai_app(args: dict[str, Any]) -> Any:
    """Ray Serve import path for dsserve apps: resolve ``tiny:`` sources, then ray.serve.llm builds.

    Named in rendered YAML as ``dsserve.app:build_openai_app``; its args are :func:`serving_args`.
    """
    from ray.serve.llm import build_openai_app as upstream_build_openai_app

    args = copy.deepcopy(args)
    _resolve_tiny_sources(args.get("llm_configs", []))
    _resolve_lora_adapters(args)
    return upstream_build_openai_app(args)


def build_pd_openai_app(args: dict[str, Any]) -> Any:
    """The disaggregated twin of :func:`build_openai_app`, on ray.serve.llm's P/D builder (ingress ->
    ``PDDecodeServer`` -> ``PDPrefillServer``, ray/llm/_internal/serve/serving_patterns/prefill_decode/), with
    dsserve's replica fixes on both pools (:mod:`dsserve.serving.pd`)."""
    from ray.serve.llm import build_pd_openai_app as upstream_build_pd_openai_app

    from dsserve.serving.pd import pd_server_classes

    args = copy.deepcopy(args)
    _resolve_tiny_sources([args.get("prefill_config"), args.get("decode_config")])
    with pd_server_classes():  # Ray's P/D builder ignores server_cls (dsserve/serving/pd.py)
        return upstream_build_pd_openai_app(args)


def build_app(spec: DeploymentSpec) -> Any:
    """The Serve application for a spec, through the same builder its rendered YAML names."""
    if spec.disaggregation is not None:
        return build_pd_openai_app(serving_args(spec))
    if spec.serving.gateway == "direct":
        builder = build_direct_app
    else:
        builder = build_dp_openai_app if uses_data_parallel(spec) else build_openai_app
    return builder(serving_args(spec))


def build_direct_app(args: dict[str, Any]) -> Any:
    """Serve import path for direct mode: the engine deployment is the application's ingress.

    Built with ray.serve.llm's own direct-streaming builder (``core/ingress/builder.py``,
    ``_build_direct_streaming_llm_deployment``), with dsserve's replica class (vLLM's app behind the request
    pipeline; dsserve/serving/direct.py). With ``prefix_router`` HAProxy asks ray.serve.llm's ingress request
    router (``LLMRouter``) for each request's replica, which runs the deployment's request router (the
    prefix-affinity one); without it HAProxy balances by least connections itself.
    """
    from ray import serve
    from ray.llm._internal.serve.core.ingress.builder import _build_direct_streaming_llm_deployment
    from ray.llm._internal.serve.core.server.builder import build_llm_deployment
    from ray.serve.llm import LLMConfig

    from dsserve.serving.direct import DPServer, LLMServer

    args = copy.deepcopy(args)
    _resolve_tiny_sources([args.get("llm_config")])
    cfg = LLMConfig.model_validate(args["llm_config"])
    cls = DPServer if args.get("data_parallel") else LLMServer
    if not args.get("prefix_router"):
        # HAProxy balances the engine replicas itself; Serve refuses a request router on an ingress deployment
        # without an ingress request router (upstream's direct builder would set its round-robin one)
        return build_llm_deployment(cfg, deployment_cls=serve.ingress()(cls))
    deployment = _build_direct_streaming_llm_deployment(cfg, deployment_cls=cls)
    return deployment._with_ingress_request_router(_ingress_request_router(deployment, args.get("router_replicas", 1)))


def _ingress_request_router(server: Any, replicas: int) -> Any:
    """ray.serve.llm's ingress request router (``LLMRouter``) for ``server``, with ``replicas`` replicas.

    What ``core/ingress/builder.py`` ``_build_openai_ingress_request_router`` binds for a model without LoRA
    or KV-aware routing (the only kind direct mode serves), plus the replica count the planner sizes for
    the target QPS: upstream's always has one, and every request of the deployment asks it for a replica.
    """
    from ray import serve
    from ray.llm._internal.serve.core.ingress.router import LLMRouter

    return serve.deployment(
        LLMRouter, max_ongoing_requests=1000, num_replicas=max(1, replicas), ray_actor_options={"num_cpus": 0}
    ).bind(server=server, llm_config=None, base_model_id=None)


def build_dp_openai_app(args: dict[str, Any]) -> Any:
    """The data-parallel-attention twin of :func:`build_openai_app`, on ray.serve.llm's DP builder."""
    from ray.serve.llm import build_dp_openai_app as upstream_build_dp_openai_app

    args = copy.deepcopy(args)
    _resolve_tiny_sources([args.get("llm_config")])
    return upstream_build_dp_openai_app(args)
