"""How a spec with ``engine.backend: simulated`` becomes a ``ray.serve.llm`` LLM config.

The simulated engine needs no accelerator, so its replicas ask Ray for one CPU bundle each and no
``accelerator_type``, whatever hardware the spec models. The layout it models (TP, PP, DP, EP on the
spec's accelerator) travels in ``experimental_configs.dsserve_simulator`` instead of the engine
arguments. Data-parallel attention is simulated as one Serve replica per DP rank on the plain
(non-DP) builder: each rank is an independent scheduler, which is what the planner's step times
already assume.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from dsserve.sim import SIM_CONFIG_KEY, SIMULATED_ENGINE_CLS
from dsserve.sim.timing import sim_inputs

if TYPE_CHECKING:
    from dsserve.config import DeploymentSpec

__all__ = ["is_simulated", "simulated_kv_transfer", "simulated_llm_config", "SIM_BUNDLE"]

SIM_BUNDLE = {"CPU": 1}
# kv_transfer_config: Ray's P/D builder requires it on both pools, and picks the connector backend by it
_ENGINE_KWARGS_KEPT = ("max_model_len", "max_num_seqs", "max_num_batched_tokens", "dtype", "kv_transfer_config")


def is_simulated(spec: DeploymentSpec) -> bool:
    return spec.engine.backend == "simulated"


def simulated_llm_config(cfg: dict[str, Any], spec: DeploymentSpec) -> dict[str, Any]:
    """Turn the real engine's LLM config for ``spec`` into the simulated engine's."""
    out = copy.deepcopy(cfg)
    out["accelerator_config"] = {"kind": "cpu"}
    out.pop("accelerator_type", None)
    out["placement_group_config"] = {"bundles": [dict(SIM_BUNDLE)], "strategy": "PACK"}
    out["engine_kwargs"] = {k: v for k, v in cfg.get("engine_kwargs", {}).items() if k in _ENGINE_KWARGS_KEPT}
    out["runtime_env"] = {"env_vars": {"RAYLLM_VLLM_ENGINE_CLS": SIMULATED_ENGINE_CLS}}
    dep = out.setdefault("deployment_config", {})
    if "num_replicas" in dep:
        dep["num_replicas"] = dep["num_replicas"] * spec.engine.data_parallel_size
    auto = dep.get("autoscaling_config")
    if auto:
        for key in ("min_replicas", "max_replicas"):
            auto[key] = auto[key] * spec.engine.data_parallel_size
    out.setdefault("experimental_configs", {})[SIM_CONFIG_KEY] = sim_inputs(spec)
    return out


def simulated_kv_transfer(spec: DeploymentSpec) -> dict[str, Any]:
    """The modelled KV transfer of a disaggregated spec, as the decode pool's simulated engines apply it
    (:class:`dsserve.planner.disagg.KvTransfer` as plain data)."""
    from dsserve.planner.disagg import transfer_for_spec

    t = transfer_for_spec(spec)
    return {"bytes_per_token": t.bytes_per_token, "bandwidth": t.bandwidth, "latency_s": t.latency_s, "link": t.link}


def engine_label(spec: DeploymentSpec) -> str:
    """How the CLI names the engine, so nobody mistakes simulated figures for measured ones."""
    eng, accel = spec.engine, spec.hardware.accelerator
    if is_simulated(spec):
        ranks = eng.tensor_parallel_size * eng.pipeline_parallel_size * eng.data_parallel_size
        return f"SIMULATED engine modelling {ranks} {accel.upper()} GPU(s) per replica, no GPU work"
    return f"real vLLM on {accel}"
